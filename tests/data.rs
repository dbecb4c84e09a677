//! Data layers and dataset tools against real Caffe's outputs in ../shared/golden (data_lmdb,
//! imagedata, the solver cases' digits_lmdb), plus round trips and bad-input errors.
//!
//! Paths inside the golden prototxts are relative to the case folder; the tests rewrite them to
//! absolute paths instead of changing the working directory (tests run in parallel threads).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use caffe_rs::data::db::{self, Backend};
use caffe_rs::data::image::{self, Image};
use caffe_rs::engine::Engine;
use caffe_rs::engine::cpu::CpuEngine;
use caffe_rs::layers::testing::{LayerCase, run_layer};
use caffe_rs::layers::{Blob, Ctx, Layer};
use caffe_rs::proto::{BlobProto, Datum, LayerParameter, NetParameter, Phase, data_parameter};
use caffe_rs::rng::Rng;
use caffe_rs::tools::compute_image_mean::{ComputeImageMeanArgs, compute_mean};
use caffe_rs::tools::convert_imageset::{ConvertImagesetArgs, run as convert_imageset};
use prost::Message;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

fn golden(rel: &str) -> String {
    format!("{GOLDEN}/{rel}")
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn read_tensors(path: &str) -> Tensors {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let vals = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name.to_string(), (view.shape().to_vec(), vals))
        })
        .collect()
}

/// A scratch directory unique to one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caffe_rs_data_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The first layer of a golden case's net.prototxt, with its file paths made absolute.
fn case_layer(case: &str) -> LayerParameter {
    let dir = golden(case);
    let src = std::fs::read_to_string(format!("{dir}/net.prototxt")).unwrap();
    let net: NetParameter =
        caffe_rs::format::transcode::parse_text(&src, "net.prototxt", "caffe.NetParameter")
            .unwrap();
    let mut layer = net.layer[0].clone();
    if let Some(t) = layer.transform_param.as_mut()
        && let Some(m) = t.mean_file.as_mut()
    {
        *m = format!("{dir}/{m}");
    }
    if let Some(d) = layer.data_param.as_mut() {
        d.source = Some(format!("{dir}/{}", d.source()));
    }
    if let Some(d) = layer.image_data_param.as_mut() {
        d.source = Some(format!("{dir}/{}", d.source()));
        d.root_folder = Some(format!("{dir}/{}", d.root_folder()));
    }
    layer
}

fn run(param: &LayerParameter, phase: Phase) -> anyhow::Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let mut eng = CpuEngine::new();
    let case = LayerCase {
        param: param.clone(),
        phase,
        bottoms: vec![],
        params: None,
    };
    Ok(run_layer(&mut eng, &case, None, None)?.tops)
}

/// Runs `forwards` forward passes of one layer, returning the tops after each.
fn run_many(
    param: &LayerParameter,
    phase: Phase,
    forwards: usize,
) -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
    run_forwards(param, phase, forwards, true)
}

fn run_forwards(
    param: &LayerParameter,
    phase: Phase,
    forwards: usize,
    download: bool,
) -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
    let mut param = param.clone();
    param.phase = Some(phase as i32);
    let mut layer: Box<dyn Layer> = caffe_rs::layers::create(&param)?;
    let shapes = layer.reshape(&[])?;
    let mut eng = CpuEngine::new();
    let tops: Vec<Blob> = shapes
        .tops
        .iter()
        .map(|sh| {
            let n: usize = sh.iter().product();
            Blob {
                shape: sh.clone(),
                data: eng.alloc(n),
                diff: eng.alloc(n),
            }
        })
        .collect();
    let mut rng = Rng::new(1701);
    let mut out = Vec::new();
    for _ in 0..forwards {
        let mut cx = Ctx {
            eng: &mut eng,
            bottoms: &[],
            tops: &tops,
            params: &[],
            phase,
            rng: &mut rng,
            param_grads: &[],
        };
        layer.forward(&mut cx)?;
        if download {
            out.push(tops.iter().map(|t| eng.download(t.data())).collect());
        }
    }
    Ok(out)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn read_db(backend: Backend, path: &str) -> Vec<(String, Datum)> {
    let mut c = db::open_cursor(backend, path).unwrap();
    let mut out = Vec::new();
    while c.valid() {
        out.push((
            String::from_utf8_lossy(c.key()).into_owned(),
            Datum::decode(c.value()).unwrap(),
        ));
        c.next().unwrap();
    }
    out
}

fn err_of<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn data_layer_matches_real_caffe() {
    let param = case_layer("data_lmdb");
    let tops = run(&param, Phase::Test).unwrap();
    let want = read_tensors(&golden("data_lmdb/data.safetensors"));
    let (shape, data) = &want["output.data"];
    assert_eq!(&tops[0].0, shape);
    let diff = max_abs_diff(&tops[0].1, data);
    assert!(diff <= 1e-6, "Data output differs by {diff}");
    assert_eq!(tops[1].1, want["output.label"].1);
}

#[test]
fn image_data_layer_matches_real_caffe() {
    let param = case_layer("imagedata");
    let tops = run(&param, Phase::Test).unwrap();
    let want = read_tensors(&golden("imagedata/data.safetensors"));
    let (shape, data) = &want["output.data"];
    assert_eq!(&tops[0].0, shape);
    let diff = max_abs_diff(&tops[0].1, data);
    // 1e-6 when our resize matches OpenCV's exactly; case.json allows one uint8 step.
    assert!(diff <= 1e-6, "ImageData output differs by {diff}");
    assert_eq!(tops[1].1, want["output.label"].1);
}

#[test]
fn real_lmdb_reads_as_documented() {
    let recs = read_db(Backend::Lmdb, &golden("data_lmdb/img_lmdb"));
    let want = read_tensors(&golden("data_lmdb/data.safetensors"));
    let (_, raw) = &want["lmdb_raw"];
    assert_eq!(recs.len(), 12);
    for (i, (key, d)) in recs.iter().enumerate() {
        assert_eq!(key, &format!("{i:08}_img_{i:03}.png"));
        assert_eq!(
            (d.channels(), d.height(), d.width(), d.encoded()),
            (3, 20, 20, false)
        );
        assert_eq!(d.label() as f32, want["lmdb_label"].1[i]);
        let px: Vec<f32> = d.data().iter().map(|&v| v as f32).collect();
        assert_eq!(px, raw[i * 1200..(i + 1) * 1200]);
    }
}

#[test]
fn convert_imageset_matches_real_lmdb() {
    let dir = scratch("convert");
    let out = s(&dir.join("lmdb"));
    let args = ConvertImagesetArgs {
        root_folder: golden("data_lmdb/images/"),
        list_file: golden("data_lmdb/list.txt"),
        db_name: out.clone(),
        resize_height: 20,
        resize_width: 20,
        ..Default::default()
    };
    convert_imageset(&args).unwrap();
    let ours = read_db(Backend::Lmdb, &out);
    let real = read_db(Backend::Lmdb, &golden("data_lmdb/img_lmdb"));
    assert_eq!(ours.len(), real.len());
    let mut differing = 0;
    for ((k1, d1), (k2, d2)) in ours.iter().zip(&real) {
        assert_eq!(k1, k2);
        assert_eq!(
            (d1.channels, d1.height, d1.width, d1.label, d1.encoded),
            (d2.channels, d2.height, d2.width, d2.label, d2.encoded)
        );
        for (a, b) in d1.data().iter().zip(d2.data()) {
            assert!(a.abs_diff(*b) <= 1, "{k1}: pixel {a} vs {b}");
            differing += usize::from(a != b);
        }
    }
    assert_eq!(
        differing, 0,
        "{differing} pixels differ by 1 from OpenCV's resize"
    );
    // Byte-identical records.
    let raw_ours: Vec<Vec<u8>> = ours.iter().map(|(_, d)| d.encode_to_vec()).collect();
    let raw_real: Vec<Vec<u8>> = real.iter().map(|(_, d)| d.encode_to_vec()).collect();
    assert_eq!(raw_ours, raw_real);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compute_image_mean_matches_real_caffe() {
    let blob = compute_mean(Backend::Lmdb, &golden("data_lmdb/img_lmdb")).unwrap();
    let real = BlobProto::decode(
        std::fs::read(golden("data_lmdb/mean.binaryproto"))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    assert_eq!(
        (blob.num, blob.channels, blob.height, blob.width),
        (real.num, real.channels, real.height, real.width)
    );
    for (a, b) in blob.data.iter().zip(&real.data) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
    }
    // Through the tool entry point, writing the file.
    let dir = scratch("mean");
    let out = s(&dir.join("mean.binaryproto"));
    let args = ComputeImageMeanArgs {
        input_db: golden("data_lmdb/img_lmdb"),
        output_file: Some(out.clone()),
        backend: "lmdb".into(),
    };
    caffe_rs::tools::compute_image_mean::run(&args).unwrap();
    let written = BlobProto::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
    assert_eq!(written, blob);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn digits_lmdb_feeds_the_data_layer() {
    let path = golden("solver_sgd_step/digits_lmdb");
    let recs = read_db(Backend::Lmdb, &path);
    assert_eq!(recs.len(), 512);
    assert_eq!(recs[511].0, "00000511");
    let mut param = case_layer("data_lmdb");
    param.transform_param = Some(caffe_rs::proto::TransformationParameter {
        scale: Some(0.00390625),
        ..Default::default()
    });
    param.data_param = Some(caffe_rs::proto::DataParameter {
        source: Some(path),
        batch_size: Some(16),
        backend: Some(data_parameter::Db::Lmdb as i32),
        ..Default::default()
    });
    // 33 batches of 16 = 528 records: wraps around after record 511.
    let outs = run_many(&param, Phase::Train, 33).unwrap();
    for (b, tops) in outs.iter().enumerate() {
        assert_eq!(tops[0].len(), 16 * 64);
        for i in 0..16 {
            let (_, d) = &recs[(b * 16 + i) % 512];
            let want: Vec<f32> = d.data().iter().map(|&v| v as f32 * 0.00390625).collect();
            assert_eq!(
                tops[0][i * 64..(i + 1) * 64],
                want[..],
                "batch {b} item {i}"
            );
            assert_eq!(tops[1][i], d.label() as f32);
        }
    }
}

#[test]
fn sharded_data_layer_reads_its_share() {
    let path = golden("solver_sgd_step/digits_lmdb");
    let recs = read_db(Backend::Lmdb, &path);
    let mut param = case_layer("data_lmdb");
    param.transform_param = None;
    param.data_param = Some(caffe_rs::proto::DataParameter {
        source: Some(path),
        batch_size: Some(4),
        backend: Some(data_parameter::Db::Lmdb as i32),
        ..Default::default()
    });
    caffe_rs::data::set_thread_shard(caffe_rs::data::Shard { rank: 1, count: 2 });
    let outs = run_many(&param, Phase::Train, 1);
    caffe_rs::data::set_thread_shard(caffe_rs::data::Shard::default());
    let labels = &outs.unwrap()[0][1];
    let want: Vec<f32> = [1, 3, 5, 7]
        .iter()
        .map(|&i| recs[i].1.label() as f32)
        .collect();
    assert_eq!(labels, &want);
}

#[test]
fn leveldb_written_by_our_tool_is_read_back() {
    let dir = scratch("leveldb");
    let out = s(&dir.join("ldb"));
    let args = ConvertImagesetArgs {
        root_folder: golden("data_lmdb/images/"),
        list_file: golden("data_lmdb/list.txt"),
        db_name: out.clone(),
        resize_height: 20,
        resize_width: 20,
        backend: "leveldb".into(),
        ..Default::default()
    };
    convert_imageset(&args).unwrap();
    let ours = read_db(Backend::LevelDb, &out);
    let real = read_db(Backend::Lmdb, &golden("data_lmdb/img_lmdb"));
    assert_eq!(ours, real);
    // The Data layer on it gives real Caffe's output.
    let mut param = case_layer("data_lmdb");
    if let Some(d) = param.data_param.as_mut() {
        d.source = Some(out);
        d.backend = Some(data_parameter::Db::Leveldb as i32);
    }
    let tops = run(&param, Phase::Test).unwrap();
    let want = read_tensors(&golden("data_lmdb/data.safetensors"));
    assert!(max_abs_diff(&tops[0].1, &want["output.data"].1) <= 1e-6);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn encoded_records_decode_to_the_same_batch() {
    let dir = scratch("encoded");
    let want = read_tensors(&golden("data_lmdb/data.safetensors"));
    for (name, encode_type, resize) in [("png_native", "", 0), ("png_resized", "png", 20)] {
        let out = s(&dir.join(name));
        let args = ConvertImagesetArgs {
            root_folder: golden("data_lmdb/images/"),
            list_file: golden("data_lmdb/list.txt"),
            db_name: out.clone(),
            resize_height: resize,
            resize_width: resize,
            encoded: true,
            encode_type: encode_type.into(),
            ..Default::default()
        };
        convert_imageset(&args).unwrap();
        let recs = read_db(Backend::Lmdb, &out);
        assert_eq!(recs.len(), 12);
        assert!(recs.iter().all(|(_, d)| d.encoded()));
        if resize == 0 {
            // Without resizing the file bytes are stored as they are.
            let first = std::fs::read(golden("data_lmdb/images/img_000.png")).unwrap();
            assert_eq!(recs[0].1.data(), &first[..]);
        } else {
            let mut param = case_layer("data_lmdb");
            if let Some(d) = param.data_param.as_mut() {
                d.source = Some(out);
            }
            let tops = run(&param, Phase::Test).unwrap();
            assert!(
                max_abs_diff(&tops[0].1, &want["output.data"].1) <= 1e-6,
                "{name}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_phase_crops_and_mirrors_inside_the_image() {
    // TRAIN: random crop offsets and mirroring; every output must be some crop of the record.
    let mut param = case_layer("data_lmdb");
    if let Some(t) = param.transform_param.as_mut() {
        t.mean_file = None;
        t.scale = None;
        t.mirror = Some(true);
    }
    let recs = read_db(Backend::Lmdb, &golden("data_lmdb/img_lmdb"));
    let outs = run_many(&param, Phase::Train, 2).unwrap();
    let mut offsets = std::collections::HashSet::new();
    for tops in &outs {
        for (i, (_, d)) in recs.iter().enumerate() {
            let got = &tops[0][i * 768..(i + 1) * 768];
            let px = d.data();
            let found = (0..=4)
                .flat_map(|h| (0..=4).map(move |w| (h, w)))
                .flat_map(|o| [(o, false), (o, true)])
                .find(|&((ho, wo), mirror)| {
                    (0..3).all(|c| {
                        (0..16).all(|y| {
                            (0..16).all(|x| {
                                let sx = if mirror { 15 - x } else { x };
                                got[(c * 16 + y) * 16 + x]
                                    == px[(c * 20 + y + ho) * 20 + wo + sx] as f32
                            })
                        })
                    })
                });
            offsets.insert(found.unwrap_or_else(|| panic!("item {i} is not a crop of its record")));
        }
    }
    assert!(offsets.len() > 3, "crops are not random: {offsets:?}");
}

#[test]
fn memory_data_layer_serves_fed_batches() {
    let mut param = LayerParameter {
        name: Some("mem_test_layer".into()),
        r#type: Some("MemoryData".into()),
        top: vec!["data".into(), "label".into()],
        ..Default::default()
    };
    param.memory_data_param = Some(caffe_rs::proto::MemoryDataParameter {
        batch_size: Some(2),
        channels: Some(1),
        height: Some(1),
        width: Some(3),
    });
    caffe_rs::data::feed_memory_data(
        "mem_test_layer",
        (0..12).map(|v| v as f32).collect(),
        vec![0.0, 1.0, 2.0, 3.0],
    );
    let outs = run_many(&param, Phase::Test, 3).unwrap();
    assert_eq!(outs[0][0], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    assert_eq!(outs[1][1], vec![2.0, 3.0]);
    assert_eq!(outs[2][1], vec![0.0, 1.0]);
}

#[test]
fn hdf5_output_then_hdf5_data_round_trip() {
    let dir = scratch("hdf5");
    let h5 = s(&dir.join("out.h5"));
    let data: Vec<f32> = (0..5 * 2 * 3).map(|v| v as f32 * 0.5 - 3.0).collect();
    let label: Vec<f32> = vec![4.0, 3.0, 2.0, 1.0, 0.0];
    let out_param = LayerParameter {
        name: Some("out".into()),
        r#type: Some("HDF5Output".into()),
        bottom: vec!["data".into(), "label".into()],
        hdf5_output_param: Some(caffe_rs::proto::Hdf5OutputParameter {
            file_name: Some(h5.clone()),
        }),
        ..Default::default()
    };
    let case = LayerCase {
        param: out_param,
        phase: Phase::Test,
        bottoms: vec![(vec![5, 2, 3], data.clone()), (vec![5], label.clone())],
        params: None,
    };
    run_layer(&mut CpuEngine::new(), &case, None, None).unwrap();
    let (shape, values) = caffe_rs::data::hdf5::read_dataset(&h5, "data").unwrap();
    assert_eq!((shape, values), (vec![5, 2, 3, 1], data.clone()));

    let list = dir.join("files.txt");
    std::fs::write(&list, format!("{h5}\n{h5}\n")).unwrap();
    let in_param = LayerParameter {
        name: Some("h5".into()),
        r#type: Some("HDF5Data".into()),
        top: vec!["data".into(), "label".into()],
        hdf5_data_param: Some(caffe_rs::proto::Hdf5DataParameter {
            source: Some(s(&list)),
            batch_size: Some(4),
            shuffle: Some(false),
        }),
        ..Default::default()
    };
    // Two files of 5 rows read 4 at a time: rows 0-3, 4 0 1 2 (second file), 3 4 0 1 (first again).
    let outs = run_many(&in_param, Phase::Train, 3).unwrap();
    let rows = [[0, 1, 2, 3], [4, 0, 1, 2], [3, 4, 0, 1]];
    for (b, tops) in outs.iter().enumerate() {
        let want: Vec<f32> = rows[b]
            .iter()
            .flat_map(|&r| data[r * 6..(r + 1) * 6].to_vec())
            .collect();
        assert_eq!(tops[0], want, "batch {b}");
        assert_eq!(
            tops[1],
            rows[b].iter().map(|&r| label[r]).collect::<Vec<_>>()
        );
    }
    // Shuffled: every batch is still rows of the file.
    let mut shuffled = in_param.clone();
    if let Some(p) = shuffled.hdf5_data_param.as_mut() {
        p.shuffle = Some(true);
    }
    let outs = run_many(&shuffled, Phase::Train, 5).unwrap();
    let mut seen = std::collections::HashSet::new();
    for tops in &outs {
        for (i, &l) in tops[1].iter().enumerate() {
            let r = 4 - l as usize;
            assert_eq!(tops[0][i * 6..(i + 1) * 6], data[r * 6..(r + 1) * 6]);
            seen.insert(r);
        }
    }
    assert_eq!(seen.len(), 5);
    // A dataset that is not in the file: the error names file and dataset.
    let mut wrong = in_param.clone();
    wrong.top = vec!["pixels".into()];
    let err = err_of(run(&wrong, Phase::Test));
    assert!(err.contains(&h5) && err.contains("pixels"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------------------------
// Bad input: each error names the file or record.

#[test]
fn missing_source_is_reported_at_reshape() {
    let mut param = case_layer("data_lmdb");
    if let Some(d) = param.data_param.as_mut() {
        d.source = Some("/nonexistent/train_lmdb".into());
    }
    let mut layer = caffe_rs::layers::create(&param).unwrap();
    let err = err_of(layer.reshape(&[]));
    assert!(
        err.starts_with("data source \"/nonexistent/train_lmdb\""),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");

    let mut param = case_layer("imagedata");
    if let Some(d) = param.image_data_param.as_mut() {
        d.source = Some("/nonexistent/list.txt".into());
    }
    let err = err_of(caffe_rs::layers::create(&param).unwrap().reshape(&[]));
    assert!(
        err.starts_with("data source \"/nonexistent/list.txt\""),
        "{err}"
    );
}

#[test]
fn empty_database_is_an_error() {
    let dir = scratch("empty");
    let path = s(&dir.join("empty_lmdb"));
    db::create_writer(Backend::Lmdb, &path)
        .unwrap()
        .close()
        .unwrap();
    let mut param = case_layer("data_lmdb");
    if let Some(d) = param.data_param.as_mut() {
        d.source = Some(path.clone());
    }
    let err = err_of(run(&param, Phase::Test));
    assert!(err.contains(&path) && err.contains("is empty"), "{err}");
    let err = err_of(compute_mean(Backend::Lmdb, &path));
    assert!(err.contains(&path) && err.contains("is empty"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_lmdb(path: &str, records: &[(&str, Datum)]) {
    let mut w = db::create_writer(Backend::Lmdb, path).unwrap();
    for (k, d) in records {
        w.put(k.as_bytes(), &d.encode_to_vec()).unwrap();
    }
    w.close().unwrap();
}

fn raw_datum(c: i32, h: i32, w: i32, bytes: usize) -> Datum {
    Datum {
        channels: Some(c),
        height: Some(h),
        width: Some(w),
        data: Some(vec![7; bytes]),
        label: Some(1),
        float_data: vec![],
        encoded: Some(false),
    }
}

#[test]
fn wrong_size_datum_names_the_record() {
    let dir = scratch("wrongsize");
    let path = s(&dir.join("db"));
    write_lmdb(
        &path,
        &[
            ("00000000_good", raw_datum(1, 4, 4, 16)),
            ("00000001_bad", raw_datum(1, 4, 4, 10)),
        ],
    );
    let param = LayerParameter {
        name: Some("data".into()),
        r#type: Some("Data".into()),
        top: vec!["data".into(), "label".into()],
        data_param: Some(caffe_rs::proto::DataParameter {
            source: Some(path.clone()),
            batch_size: Some(2),
            backend: Some(data_parameter::Db::Lmdb as i32),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = err_of(run(&param, Phase::Test));
    assert!(
        err.contains("00000001_bad") && err.contains("10 bytes"),
        "{err}"
    );
    // A record of another size than the first one.
    let path2 = s(&dir.join("db2"));
    write_lmdb(
        &path2,
        &[("a", raw_datum(1, 4, 4, 16)), ("b", raw_datum(1, 5, 5, 25))],
    );
    let mut param2 = param.clone();
    if let Some(d) = param2.data_param.as_mut() {
        d.source = Some(path2);
    }
    let err = err_of(run(&param2, Phase::Test));
    assert!(err.contains("record \"b\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_image_names_the_file() {
    let dir = scratch("corrupt");
    std::fs::write(dir.join("bad.png"), b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    std::fs::write(dir.join("text.jpg"), b"hello").unwrap();
    std::fs::copy(golden("imagedata/images/img_000.png"), dir.join("good.png")).unwrap();
    for (list, bad) in [
        ("good.png 1\nbad.png 2\n", "bad.png"),
        ("text.jpg 0\n", "text.jpg"),
    ] {
        std::fs::write(dir.join("list.txt"), list).unwrap();
        let mut param = case_layer("imagedata");
        if let Some(d) = param.image_data_param.as_mut() {
            d.source = Some(s(&dir.join("list.txt")));
            d.root_folder = Some(format!("{}/", s(&dir)));
            d.batch_size = Some(2);
        }
        let err = err_of(run(&param, Phase::Test));
        assert!(err.contains(bad), "{err}");
    }
    // An encoded Datum that does not decode.
    let path = s(&dir.join("db"));
    let bad = Datum {
        data: Some(b"garbage".to_vec()),
        encoded: Some(true),
        label: Some(0),
        ..Default::default()
    };
    write_lmdb(&path, &[("00000000_x.jpg", bad)]);
    let mut param = case_layer("data_lmdb");
    if let Some(d) = param.data_param.as_mut() {
        d.source = Some(path);
    }
    let err = err_of(run(&param, Phase::Test));
    assert!(err.contains("00000000_x.jpg"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn list_line_without_label_names_the_line() {
    let dir = scratch("nolabel");
    std::fs::write(dir.join("list.txt"), "img_000.png 1\nimg_001.png\n").unwrap();
    let mut param = case_layer("imagedata");
    if let Some(d) = param.image_data_param.as_mut() {
        d.source = Some(s(&dir.join("list.txt")));
    }
    let err = err_of(run(&param, Phase::Test));
    assert!(
        err.contains("list.txt:2") && err.contains("no label"),
        "{err}"
    );
    let args = ConvertImagesetArgs {
        root_folder: golden("data_lmdb/images/"),
        list_file: s(&dir.join("list.txt")),
        db_name: s(&dir.join("db")),
        ..Default::default()
    };
    let err = err_of(convert_imageset(&args));
    assert!(err.contains("list.txt:2"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn crop_larger_than_image_is_an_error() {
    let mut param = case_layer("data_lmdb");
    if let Some(t) = param.transform_param.as_mut() {
        t.crop_size = Some(32);
        t.mean_file = None;
    }
    let err = err_of(run(&param, Phase::Test));
    assert!(
        err.contains("crop_size 32") && err.contains("00000000_img_000.png"),
        "{err}"
    );
    let mut param = case_layer("imagedata");
    if let Some(t) = param.transform_param.as_mut() {
        t.crop_size = Some(32);
        t.mean_file = None;
    }
    let err = err_of(run(&param, Phase::Test));
    assert!(
        err.contains("crop_size 32") && err.contains("img_000.png"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------------
// Benchmark: `cargo test --release --test data -- --ignored --nocapture`.

/// User + system CPU time of this process so far (Linux /proc; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A 256x256 colour JPEG (quality 95) with smooth structure and texture, ~35 KB like photos.
fn synthetic_jpeg(i: usize) -> Vec<u8> {
    let (h, w) = (256, 256);
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            let v = ((x as f32 / 20.0 + i as f32).sin() * 60.0
                + (y as f32 / 13.0).cos() * 60.0
                + 128.0) as u8;
            data.extend_from_slice(&[v, (x + y / 2) as u8 ^ (i as u8), ((x * y) >> 8) as u8]);
        }
    }
    image::encode(&Image::new(h, w, 3, data).unwrap(), "jpg").unwrap()
}

#[test]
#[ignore]
fn bench_decode_transform_256_jpeg_crop227_mirror() {
    let dir = scratch("bench");
    let path = s(&dir.join("jpeg_lmdb"));
    let n = 256;
    let mut w = db::create_writer(Backend::Lmdb, &path).unwrap();
    for i in 0..n {
        let d = Datum {
            data: Some(synthetic_jpeg(i)),
            label: Some(i as i32 % 10),
            encoded: Some(true),
            ..Default::default()
        };
        w.put(format!("{i:08}").as_bytes(), &d.encode_to_vec())
            .unwrap();
    }
    w.close().unwrap();
    let param = LayerParameter {
        name: Some("data".into()),
        r#type: Some("Data".into()),
        top: vec!["data".into(), "label".into()],
        transform_param: Some(caffe_rs::proto::TransformationParameter {
            crop_size: Some(227),
            mirror: Some(true),
            mean_value: vec![104.0, 117.0, 123.0],
            ..Default::default()
        }),
        data_param: Some(caffe_rs::proto::DataParameter {
            source: Some(path),
            batch_size: Some(64),
            backend: Some(data_parameter::Db::Lmdb as i32),
            ..Default::default()
        }),
        ..Default::default()
    };
    let batches = 40;
    let _ = run_many(&param, Phase::Train, 1).unwrap();
    let cpu0 = cpu_seconds();
    let t = std::time::Instant::now();
    run_forwards(&param, Phase::Train, batches, false).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let images = (batches * 64) as f64;
    println!(
        "Data layer, 256x256 JPEG records, crop 227 + mirror: {:.0} images/s wall ({} images in {secs:.2}s), \
         {:.2} ms of CPU per image ({:.0} images/s per busy core)",
        images / secs,
        images,
        cpu * 1e3 / images,
        images / cpu
    );
    let _ = std::fs::remove_dir_all(&dir);
}
