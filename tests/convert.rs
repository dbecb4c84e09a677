//! `caffe-rs convert`: caffemodel <-> safetensors (format::safetensors).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use caffe_rs::format::safetensors::{
    DType, ExportOptions, NameScheme, caffemodel_bytes_to_safetensors, caffemodel_to_safetensors,
    fold_bn_net, net_to_safetensors, safetensors_to_caffemodel, safetensors_to_caffemodel_bytes,
    safetensors_to_net, sha256_hex,
};
use caffe_rs::format::transcode::{parse_text, read_text_file};
use caffe_rs::format::upgrade::upgrade_net;
use caffe_rs::proto::{BlobProto, LayerParameter, NetParameter};
use prost::Message;
use safetensors::{Dtype, SafeTensors};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

fn decode(bytes: &[u8]) -> NetParameter {
    let mut net = NetParameter::decode(bytes).expect("decodes");
    upgrade_net(&mut net).expect("upgrades");
    net
}

fn read_model(path: &Path) -> NetParameter {
    let mut net: NetParameter = read_text_file(path, "caffe.NetParameter").expect("prototxt");
    upgrade_net(&mut net).expect("upgrades");
    net
}

fn parse_model(text: &str) -> NetParameter {
    parse_text(text, "test.prototxt", "caffe.NetParameter").expect("prototxt")
}

fn golden_cases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(GOLDEN)
        .expect("golden dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("weights.caffemodel").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("caffe-rs-convert-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Every layer of `orig` with blobs is in `back` with the same blob shapes and bit-identical data.
fn assert_same_blobs(orig: &NetParameter, back: &NetParameter, case: &str) {
    let by_name: HashMap<&str, &LayerParameter> =
        back.layer.iter().map(|l| (l.name(), l)).collect();
    let mut n = 0;
    for l in orig.layer.iter().filter(|l| !l.blobs.is_empty()) {
        let b = by_name
            .get(l.name())
            .unwrap_or_else(|| panic!("{case}: layer {} missing after round trip", l.name()));
        assert_eq!(
            l.blobs.len(),
            b.blobs.len(),
            "{case}: {} blob count",
            l.name()
        );
        for (i, (x, y)) in l.blobs.iter().zip(&b.blobs).enumerate() {
            assert_eq!(x.dims(), y.dims(), "{case}: {}.{i} shape", l.name());
            let xb: Vec<u32> = x.values_f32().iter().map(|v| v.to_bits()).collect();
            let yb: Vec<u32> = y.values_f32().iter().map(|v| v.to_bits()).collect();
            assert!(xb == yb, "{case}: {}.{i} data differs", l.name());
            n += 1;
        }
    }
    let with_blobs = back.layer.iter().filter(|l| !l.blobs.is_empty()).count();
    assert_eq!(
        with_blobs,
        orig.layer.iter().filter(|l| !l.blobs.is_empty()).count(),
        "{case}: layer count"
    );
    assert!(n > 0 || orig.layer.iter().all(|l| l.blobs.is_empty()));
}

fn tensor_f32(st: &SafeTensors<'_>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("tensor {name} missing"));
    let v = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => t
            .data()
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        d => panic!("unexpected dtype {d:?}"),
    };
    (t.shape().to_vec(), v)
}

fn layer<'a>(net: &'a NetParameter, name: &str) -> &'a LayerParameter {
    net.layer
        .iter()
        .find(|l| l.name() == name)
        .unwrap_or_else(|| panic!("layer {name} missing"))
}

#[test]
fn every_golden_caffemodel_round_trips_bit_exactly_in_f32() {
    let cases = golden_cases();
    assert!(
        cases.len() >= 30,
        "found only {} golden caffemodels",
        cases.len()
    );
    for dir in &cases {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(dir.join("weights.caffemodel")).unwrap();
        let orig = decode(&bytes);
        let (st, report) = caffemodel_bytes_to_safetensors(&bytes, &ExportOptions::default())
            .unwrap_or_else(|e| panic!("{case}: export: {e:#}"));
        assert_eq!(report.source_sha256, sha256_hex(&bytes));
        // raw names, shapes exactly as stored
        let parsed = SafeTensors::deserialize(&st).expect("valid safetensors");
        for l in orig.layer.iter() {
            for (i, b) in l.blobs.iter().enumerate() {
                let t = parsed
                    .tensor(&format!("{}.{i}", l.name()))
                    .expect("raw tensor");
                assert_eq!(t.shape(), b.dims().as_slice(), "{case}: {}.{i}", l.name());
                assert_eq!(t.dtype(), Dtype::F32);
            }
        }
        // without the net
        let (back, _) =
            safetensors_to_net(&st, None, None).unwrap_or_else(|e| panic!("{case}: import: {e:#}"));
        assert_same_blobs(&orig, &back, &case);
        // with the net: the streamed caffemodel decodes to the materialized NetParameter
        let model = read_model(&dir.join("net.prototxt"));
        let (with_model, report) = safetensors_to_net(&st, Some(&model), None)
            .unwrap_or_else(|e| panic!("{case}: import with model: {e:#}"));
        assert!(
            report.unused.is_empty(),
            "{case}: unused {:?}",
            report.unused
        );
        assert_same_blobs(&orig, &with_model, &case);
        let (cm, _) = safetensors_to_caffemodel_bytes(&st, Some(&model), None).unwrap();
        assert_eq!(
            NetParameter::decode(cm.as_slice()).unwrap(),
            with_model,
            "{case}"
        );
        let (cm, _) = safetensors_to_caffemodel_bytes(&st, None, None).unwrap();
        assert_eq!(NetParameter::decode(cm.as_slice()).unwrap(), back, "{case}");
        // and the layer parameters come from the net
        for l in &with_model.layer {
            assert_eq!(l.r#type(), layer(&model, l.name()).r#type());
        }
    }
}

#[test]
fn files_are_written_atomically_and_metadata_has_the_sha256() {
    let dir = tmp_dir("files");
    let src = Path::new(GOLDEN).join("lenet/weights.caffemodel");
    let model_path = Path::new(GOLDEN).join("lenet/net.prototxt");
    let model_text = std::fs::read_to_string(&model_path).unwrap();
    let st_path = dir.join("lenet.safetensors");
    let opts = ExportOptions {
        model: Some(read_model(&model_path)),
        model_text: Some(model_text.clone()),
        ..Default::default()
    };
    let report = caffemodel_to_safetensors(&src, &st_path, &opts).unwrap();
    let src_bytes = std::fs::read(&src).unwrap();
    let st_bytes = std::fs::read(&st_path).unwrap();
    assert_eq!(report.bytes_written, st_bytes.len() as u64);
    let (_, meta) = SafeTensors::read_metadata(&st_bytes).unwrap();
    let meta = meta.metadata().clone().expect("__metadata__");
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(&src_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(meta["source_sha256"], want);
    assert_eq!(meta["format"], "caffe-rs");
    assert_eq!(meta["names"], "raw");
    assert_eq!(meta["prototxt"], model_text);

    let cm_path = dir.join("lenet.caffemodel");
    let model = read_model(&model_path);
    let imported = safetensors_to_caffemodel(&st_path, &cm_path, Some(&model), None).unwrap();
    assert_eq!(imported.metadata["source_sha256"], want);
    assert_eq!(imported.layers.len(), 4);
    let back = decode(&std::fs::read(&cm_path).unwrap());
    assert_same_blobs(&decode(&src_bytes), &back, "lenet files");
    // only the two outputs remain in the directory (no temporary files)
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["lenet.caffemodel", "lenet.safetensors"]);
    // a failed conversion leaves nothing behind
    let bad = dir.join("bad.caffemodel");
    std::fs::write(&bad, b"\x0a\xff\xff\xff\xff\x0f garbage").unwrap();
    assert!(caffemodel_to_safetensors(&bad, &dir.join("bad.safetensors"), &opts).is_err());
    assert!(!dir.join("bad.safetensors").exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pytorch_names_divide_running_stats() {
    let dir = Path::new(GOLDEN).join("resnet_block_test");
    let bytes = std::fs::read(dir.join("weights.caffemodel")).unwrap();
    let orig = decode(&bytes);
    let model = read_model(&dir.join("net.prototxt"));
    let opts = ExportOptions {
        names: NameScheme::Pytorch,
        ..Default::default()
    };
    let (st, report) = caffemodel_bytes_to_safetensors(&bytes, &opts).unwrap();
    let parsed = SafeTensors::deserialize(&st).unwrap();
    for name in parsed.names() {
        let suffix = name.rsplit('.').next().unwrap();
        assert!(
            ["weight", "bias", "running_mean", "running_var"].contains(&suffix),
            "unexpected tensor {name}"
        );
    }
    assert_eq!(report.tensors.len(), parsed.len());
    let mut bn_layers = 0;
    for l in &orig.layer {
        let name = l.name();
        match l.r#type() {
            "BatchNorm" => {
                bn_layers += 1;
                let b2 = l.blobs[2].data[0];
                let factor = if b2 == 0.0 { 0.0 } else { 1.0 / b2 };
                for (i, suffix) in ["running_mean", "running_var"].iter().enumerate() {
                    let (shape, v) = tensor_f32(&parsed, &format!("{name}.{suffix}"));
                    let want: Vec<f32> = l.blobs[i].data.iter().map(|x| x * factor).collect();
                    assert_eq!(shape, vec![want.len()]);
                    assert_eq!(v, want, "{name}.{suffix}");
                }
                assert!(parsed.tensor(&format!("{name}.2")).is_err());
            }
            "Scale" => {
                let (_, g) = tensor_f32(&parsed, &format!("{name}.weight"));
                let (_, b) = tensor_f32(&parsed, &format!("{name}.bias"));
                assert_eq!(g, l.blobs[0].data);
                assert_eq!(b, l.blobs[1].data);
            }
            "Convolution" => {
                let (shape, w) = tensor_f32(&parsed, &format!("{name}.weight"));
                assert_eq!(shape, l.blobs[0].dims());
                assert_eq!(w, l.blobs[0].data);
                assert!(
                    parsed.tensor(&format!("{name}.bias")).is_err(),
                    "bias_term false"
                );
            }
            "InnerProduct" => {
                let (shape, _) = tensor_f32(&parsed, &format!("{name}.weight"));
                assert_eq!(shape.len(), 2);
                let (shape, _) = tensor_f32(&parsed, &format!("{name}.bias"));
                assert_eq!(shape.len(), 1);
            }
            _ => assert!(l.blobs.is_empty()),
        }
    }
    assert_eq!(bn_layers, 6);
    // the scale factor really is not 1 in this golden, so the division was exercised
    assert!(
        orig.layer
            .iter()
            .any(|l| l.r#type() == "BatchNorm" && l.blobs[2].data[0] != 1.0)
    );

    // back with the net: BatchNorm blobs are [mean, var, 1]
    let (back, report) = safetensors_to_net(&st, Some(&model), None).unwrap();
    assert!(report.unused.is_empty());
    let bn = layer(&back, "conv1_bn");
    let orig_bn = layer(&orig, "conv1_bn");
    assert_eq!(bn.blobs.len(), 3);
    assert_eq!(bn.blobs[2].data, vec![1.0]);
    let f = 1.0 / orig_bn.blobs[2].data[0];
    let want: Vec<f32> = orig_bn.blobs[0].data.iter().map(|x| x * f).collect();
    assert_eq!(bn.blobs[0].data, want);
    assert_eq!(
        layer(&back, "conv1").blobs[0].data,
        layer(&orig, "conv1").blobs[0].data
    );
    assert_eq!(
        layer(&back, "fc").blobs[1].data,
        layer(&orig, "fc").blobs[1].data
    );
    // PyTorch-style names without the net are refused by name
    let err = safetensors_to_net(&st, None, None).unwrap_err().to_string();
    assert!(err.contains("is not a raw `<layer>.<i>` name"), "{err}");
}

#[test]
fn half_precision_exports_stay_within_their_precision() {
    let bytes = std::fs::read(Path::new(GOLDEN).join("lenet/weights.caffemodel")).unwrap();
    let orig = decode(&bytes);
    for (dtype, st_dtype, rel) in [
        (DType::F16, Dtype::F16, 2f32.powi(-11)),
        (DType::BF16, Dtype::BF16, 2f32.powi(-8)),
    ] {
        let opts = ExportOptions {
            dtype,
            ..Default::default()
        };
        let (st, _) = caffemodel_bytes_to_safetensors(&bytes, &opts).unwrap();
        let parsed = SafeTensors::deserialize(&st).unwrap();
        let mut checked = 0;
        for l in orig.layer.iter() {
            for (i, b) in l.blobs.iter().enumerate() {
                let name = format!("{}.{i}", l.name());
                assert_eq!(parsed.tensor(&name).unwrap().dtype(), st_dtype);
                let (shape, v) = tensor_f32(&parsed, &name);
                assert_eq!(shape, b.dims());
                for (x, y) in b.data.iter().zip(&v) {
                    let tol = (x.abs() * rel).max(2f32.powi(-24));
                    assert!((x - y).abs() <= tol, "{dtype:?} {name}: {x} vs {y}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 400_000);
        // and back: f32 blobs holding the rounded values
        let (back, _) = safetensors_to_net(&st, None, None).unwrap();
        let (_, v) = tensor_f32(&parsed, "conv1.0");
        assert_eq!(layer(&back, "conv1").blobs[0].data, v);
    }
    let meta = {
        let opts = ExportOptions {
            dtype: DType::BF16,
            ..Default::default()
        };
        let (st, _) = caffemodel_bytes_to_safetensors(&bytes, &opts).unwrap();
        SafeTensors::read_metadata(&st)
            .unwrap()
            .1
            .metadata()
            .clone()
            .unwrap()
    };
    assert_eq!(meta["dtype"], "bf16");
}

fn legacy_blob(n: i32, c: i32, h: i32, w: i32, data: Vec<f32>) -> BlobProto {
    BlobProto {
        num: Some(n),
        channels: Some(c),
        height: Some(h),
        width: Some(w),
        data,
        ..Default::default()
    }
}

#[test]
fn legacy_v1_and_v0_caffemodels_export_with_their_stored_shapes() {
    use caffe_rs::proto::{V0LayerParameter, V1LayerParameter, v1_layer_parameter::LayerType};
    let mut r = Lcg(5);
    let (w, b) = (r.vec(2 * 3 * 4), r.vec(2));
    let v1 = NetParameter {
        layers: vec![V1LayerParameter {
            name: Some("fc".into()),
            r#type: Some(LayerType::InnerProduct as i32),
            blobs: vec![
                legacy_blob(1, 1, 2, 12, w.clone()),
                legacy_blob(1, 1, 1, 2, b.clone()),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let (st, _) =
        caffemodel_bytes_to_safetensors(&v1.encode_to_vec(), &ExportOptions::default()).unwrap();
    let parsed = SafeTensors::deserialize(&st).unwrap();
    assert_eq!(tensor_f32(&parsed, "fc.0"), (vec![1, 1, 2, 12], w.clone()));
    assert_eq!(tensor_f32(&parsed, "fc.1"), (vec![1, 1, 1, 2], b.clone()));
    let opts = ExportOptions {
        names: NameScheme::Pytorch,
        ..Default::default()
    };
    let (st, _) = caffemodel_bytes_to_safetensors(&v1.encode_to_vec(), &opts).unwrap();
    let parsed = SafeTensors::deserialize(&st).unwrap();
    assert_eq!(tensor_f32(&parsed, "fc.weight"), (vec![2, 12], w.clone()));
    assert_eq!(tensor_f32(&parsed, "fc.bias"), (vec![2], b.clone()));

    // V0 (`layers { layer { ... } }`): decoded and upgraded instead of scanned
    let v0 = NetParameter {
        layers: vec![V1LayerParameter {
            layer: Some(V0LayerParameter {
                name: Some("conv".into()),
                r#type: Some("conv".into()),
                num_output: Some(2),
                kernelsize: Some(2),
                blobs: vec![
                    legacy_blob(2, 1, 2, 3, r.vec(12)),
                    legacy_blob(1, 1, 1, 2, r.vec(2)),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (st, report) =
        caffemodel_bytes_to_safetensors(&v0.encode_to_vec(), &ExportOptions::default()).unwrap();
    assert_eq!(report.tensors, ["conv.0", "conv.1"]);
    let (back, _) = safetensors_to_net(&st, None, None).unwrap();
    let mut want = v0.clone();
    upgrade_net(&mut want).unwrap();
    assert_same_blobs(&want, &back, "v0");

    // unpacked (non-packed) float data and double_data are accepted too
    let mut bytes = Vec::new();
    let blob = [
        &[0x3a, 0x02, 0x08, 0x02][..],
        &[0x2d],
        &1.5f32.to_le_bytes(),
        &[0x2d],
        &(-2f32).to_le_bytes(),
    ]
    .concat();
    let layer = [&[0x0a, 0x01, b'p', 0x3a, blob.len() as u8][..], &blob].concat();
    bytes.extend_from_slice(&[0xa2, 0x06, layer.len() as u8]);
    bytes.extend_from_slice(&layer);
    let doubles = BlobProto {
        shape: None,
        double_data: vec![0.25, 4.0],
        ..Default::default()
    };
    let net = NetParameter {
        layer: vec![blobs_layer("q", "Scale", vec![])],
        ..Default::default()
    };
    let mut net = net;
    net.layer[0].blobs.push(BlobProto {
        shape: Some(caffe_rs::proto::BlobShape { dim: vec![2] }),
        ..doubles
    });
    bytes.extend(net.encode_to_vec());
    let (st, _) = caffemodel_bytes_to_safetensors(&bytes, &ExportOptions::default()).unwrap();
    let parsed = SafeTensors::deserialize(&st).unwrap();
    assert_eq!(tensor_f32(&parsed, "p.0"), (vec![2], vec![1.5, -2.0]));
    assert_eq!(tensor_f32(&parsed, "q.0"), (vec![2], vec![0.25, 4.0]));
}

// ---------------------------------------------------------------------------------------------
// BatchNorm folding

const BN_NET: &str = r#"
name: "bn_net"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 3 } }
layer { name: "bn1" type: "BatchNorm" bottom: "ip1" top: "ip1" batch_norm_param { eps: 0.001 } }
layer { name: "sc1" type: "Scale" bottom: "ip1" top: "ip1" scale_param { bias_term: true } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 5 bias_term: false transpose: true } }
layer { name: "bn2" type: "BatchNorm" bottom: "ip2" top: "bn2" }
layer { name: "relu2" type: "ReLU" bottom: "bn2" top: "bn2" }
layer { name: "ip3" type: "InnerProduct" bottom: "bn2" top: "ip3" inner_product_param { num_output: 3 } }
layer { name: "bn3" type: "BatchNorm" bottom: "ip3" top: "bn3" }
layer { name: "other" type: "ReLU" bottom: "ip3" top: "other" }
layer { name: "out" type: "Concat" bottom: "bn3" bottom: "other" top: "out" }
"#;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
    fn positive(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next().abs() + 0.1).collect()
    }
}

fn blobs_layer(name: &str, ty: &str, blobs: Vec<(Vec<usize>, Vec<f32>)>) -> LayerParameter {
    LayerParameter {
        name: Some(name.into()),
        r#type: Some(ty.into()),
        blobs: blobs
            .into_iter()
            .map(|(s, d)| BlobProto::from_shape_data(&s, d))
            .collect(),
        ..Default::default()
    }
}

fn bn_weights() -> NetParameter {
    let mut r = Lcg(7);
    let bn = |r: &mut Lcg, name: &str, c: usize, factor: f32| {
        let mean: Vec<f32> = r.vec(c).iter().map(|v| v * factor).collect();
        let var: Vec<f32> = r.positive(c).iter().map(|v| v * factor).collect();
        blobs_layer(
            name,
            "BatchNorm",
            vec![(vec![c], mean), (vec![c], var), (vec![1], vec![factor])],
        )
    };
    NetParameter {
        name: Some("bn_net".into()),
        layer: vec![
            blobs_layer(
                "ip1",
                "InnerProduct",
                vec![(vec![3, 4], r.vec(12)), (vec![3], r.vec(3))],
            ),
            bn(&mut r, "bn1", 3, 2.5),
            blobs_layer(
                "sc1",
                "Scale",
                vec![(vec![3], r.vec(3)), (vec![3], r.vec(3))],
            ),
            blobs_layer("ip2", "InnerProduct", vec![(vec![3, 5], r.vec(15))]),
            bn(&mut r, "bn2", 5, 0.5),
            blobs_layer(
                "ip3",
                "InnerProduct",
                vec![(vec![3, 5], r.vec(15)), (vec![3], r.vec(3))],
            ),
            bn(&mut r, "bn3", 3, 1.0),
        ],
        ..Default::default()
    }
}

/// y[n] = sum_k W x[k] (+ b): W [N, K], or [K, N] when transposed.
fn ip(x: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, transpose: bool) -> Vec<f32> {
    let k = x.len();
    (0..n)
        .map(|o| {
            let s: f32 = (0..k)
                .map(|i| {
                    x[i] * if transpose {
                        w[i * n + o]
                    } else {
                        w[o * k + i]
                    }
                })
                .sum();
            s + b.map_or(0.0, |b| b[o])
        })
        .collect()
}

fn batchnorm(x: &[f32], l: &LayerParameter, eps: f32) -> Vec<f32> {
    let f = 1.0 / l.blobs[2].data[0];
    x.iter()
        .enumerate()
        .map(|(c, v)| (v - l.blobs[0].data[c] * f) / (l.blobs[1].data[c] * f + eps).sqrt())
        .collect()
}

#[test]
fn fold_bn_rewrites_the_net_and_the_weights() {
    let model = parse_model(BN_NET);
    let weights = bn_weights();
    let (mut net, mut folded) = (model.clone(), weights.clone());
    let pairs = fold_bn_net(&mut net, &mut folded).unwrap();
    assert_eq!(
        pairs,
        vec![
            ("ip1".to_string(), "bn1".to_string()),
            ("ip2".to_string(), "bn2".to_string())
        ]
    );
    let names: Vec<&str> = net.layer.iter().map(|l| l.name()).collect();
    assert_eq!(
        names,
        ["data", "ip1", "ip2", "relu2", "ip3", "bn3", "other", "out"]
    );
    assert_eq!(layer(&net, "ip1").top, ["ip1"]);
    assert_eq!(layer(&net, "ip2").top, ["bn2"]);
    assert_eq!(
        layer(&net, "ip2")
            .inner_product_param
            .as_ref()
            .unwrap()
            .bias_term,
        Some(true)
    );
    assert_eq!(
        layer(&net, "ip3"),
        layer(&model, "ip3"),
        "ip3 feeds two layers: untouched"
    );
    let wnames: Vec<&str> = folded.layer.iter().map(|l| l.name()).collect();
    assert_eq!(wnames, ["ip1", "ip2", "ip3", "bn3"]);
    assert_eq!(layer(&folded, "ip2").blobs.len(), 2);
    assert_eq!(layer(&folded, "ip2").blobs[1].dims(), vec![5]);
    assert_eq!(layer(&folded, "ip3"), layer(&weights, "ip3"));

    // numerically: the folded chain computes what the original one does
    let x = Lcg(99).vec(4);
    let w = |net: &NetParameter, l: &str, i: usize| layer(net, l).blobs[i].data.clone();
    let orig = {
        let h = ip(
            &x,
            &w(&weights, "ip1", 0),
            Some(&w(&weights, "ip1", 1)),
            3,
            false,
        );
        let h = batchnorm(&h, layer(&weights, "bn1"), 0.001);
        let (g, b) = (w(&weights, "sc1", 0), w(&weights, "sc1", 1));
        let h: Vec<f32> = h.iter().enumerate().map(|(c, v)| v * g[c] + b[c]).collect();
        let h = ip(&h, &w(&weights, "ip2", 0), None, 5, true);
        batchnorm(&h, layer(&weights, "bn2"), 1e-5)
    };
    let fast = {
        let h = ip(
            &x,
            &w(&folded, "ip1", 0),
            Some(&w(&folded, "ip1", 1)),
            3,
            false,
        );
        ip(
            &h,
            &w(&folded, "ip2", 0),
            Some(&w(&folded, "ip2", 1)),
            5,
            true,
        )
    };
    for (a, b) in orig.iter().zip(&fast) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + a.abs()),
            "{orig:?} vs {fast:?}"
        );
    }

    // the export with -fold_bn
    let opts = ExportOptions {
        fold_bn: true,
        model: Some(model),
        ..Default::default()
    };
    let (st, report) = net_to_safetensors(&weights, &opts).unwrap();
    assert_eq!(report.folded, pairs);
    assert_eq!(
        report.tensors,
        [
            "ip1.0", "ip1.1", "ip2.0", "ip2.1", "ip3.0", "ip3.1", "bn3.0", "bn3.1", "bn3.2"
        ]
    );
    let (_, meta) = SafeTensors::read_metadata(&st).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["folded_bn"], "ip1:bn1,ip2:bn2");
    let folded_model = parse_model(&meta["prototxt"]);
    assert_eq!(folded_model, net);
    let parsed = SafeTensors::deserialize(&st).unwrap();
    assert_eq!(tensor_f32(&parsed, "ip2.1").1, w(&folded, "ip2", 1));
    // folding needs the net
    let opts = ExportOptions {
        fold_bn: true,
        ..Default::default()
    };
    let err = net_to_safetensors(&weights, &opts).unwrap_err().to_string();
    assert!(err.contains("-model"), "{err}");
}

#[test]
fn fold_bn_on_the_resnet_block() {
    let dir = Path::new(GOLDEN).join("resnet_block_test");
    let mut net = read_model(&dir.join("net.prototxt"));
    let mut weights = decode(&std::fs::read(dir.join("weights.caffemodel")).unwrap());
    let orig = weights.clone();
    let pairs = fold_bn_net(&mut net, &mut weights).unwrap();
    let convs: Vec<&str> = pairs.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        convs,
        ["conv1", "res2a", "res2b", "res3a", "res3b", "res3proj"]
    );
    assert!(
        net.layer
            .iter()
            .all(|l| l.r#type() != "BatchNorm" && l.r#type() != "Scale")
    );
    assert_eq!(layer(&net, "conv1").top, ["conv1_bn"]);
    assert_eq!(
        layer(&net, "conv1")
            .convolution_param
            .as_ref()
            .unwrap()
            .bias_term,
        Some(true)
    );
    assert_eq!(layer(&net, "add2").bottom, ["conv1_bn", "res2b_bn"]);
    assert_eq!(layer(&net, "res2a").bottom, ["conv1_bn"]);
    // one output channel by hand
    let (w0, bn, sc) = (
        layer(&orig, "res3a"),
        layer(&orig, "res3a_bn"),
        layer(&orig, "res3a_scale"),
    );
    let f = 1.0 / bn.blobs[2].data[0];
    let per = w0.blobs[0].data.len() / 16;
    let c = 5;
    let a = sc.blobs[0].data[c] as f64 / ((bn.blobs[1].data[c] * f) as f64 + 1e-5).sqrt();
    let got = layer(&weights, "res3a");
    assert_eq!(got.blobs[0].dims(), w0.blobs[0].dims());
    for i in c * per..(c + 1) * per {
        let want = (w0.blobs[0].data[i] as f64 * a) as f32;
        assert_eq!(got.blobs[0].data[i], want);
    }
    let want_b = ((-(bn.blobs[0].data[c] * f) as f64) * a + sc.blobs[1].data[c] as f64) as f32;
    assert_eq!(got.blobs[1].data[c], want_b);
    assert!(
        weights
            .layer
            .iter()
            .all(|l| !l.name().ends_with("_bn") && !l.name().ends_with("_scale"))
    );
}

// ---------------------------------------------------------------------------------------------
// refusals

const CONV_NET: &str = r#"
name: "conv_net"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: 2 } }
"#;

fn expected(name: &str) -> Option<Vec<Vec<usize>>> {
    match name {
        "conv1" => Some(vec![vec![20, 3, 5, 5], vec![20]]),
        "ip" => Some(vec![vec![2, 320], vec![2]]),
        _ => None,
    }
}

fn conv_weights(cin: usize) -> NetParameter {
    let mut r = Lcg(3);
    NetParameter {
        layer: vec![
            blobs_layer(
                "conv1",
                "Convolution",
                vec![
                    (vec![20, cin, 5, 5], r.vec(20 * cin * 25)),
                    (vec![20], r.vec(20)),
                ],
            ),
            // legacy 4-D InnerProduct weight: fits [2, 320]
            blobs_layer(
                "ip",
                "InnerProduct",
                vec![(vec![1, 1, 2, 320], r.vec(640)), (vec![2], r.vec(2))],
            ),
        ],
        ..Default::default()
    }
}

#[test]
fn shape_mismatch_is_refused_by_tensor_name() {
    let model = parse_model(CONV_NET);
    let (st, _) = net_to_safetensors(&conv_weights(1), &ExportOptions::default()).unwrap();
    let err = safetensors_to_net(&st, Some(&model), Some(&expected)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tensor conv1.0 has shape [20, 1, 5, 5] but layer conv1 (Convolution) expects [20, 3, 5, 5]"
    );
    let dir = tmp_dir("mismatch");
    std::fs::write(dir.join("w.safetensors"), &st).unwrap();
    let err = safetensors_to_caffemodel(
        &dir.join("w.safetensors"),
        &dir.join("w.caffemodel"),
        Some(&model),
        Some(&expected),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("tensor conv1.0 has shape [20, 1, 5, 5]"),
        "{err:#}"
    );
    assert!(!dir.join("w.caffemodel").exists());
    std::fs::remove_dir_all(&dir).unwrap();

    // fitting shapes take the net's shapes (legacy [1, 1, 2, 320] -> [2, 320])
    let (st, _) = net_to_safetensors(&conv_weights(3), &ExportOptions::default()).unwrap();
    let (net, report) = safetensors_to_net(&st, Some(&model), Some(&expected)).unwrap();
    assert_eq!(layer(&net, "ip").blobs[0].dims(), vec![2, 320]);
    assert_eq!(layer(&net, "conv1").r#type(), "Convolution");
    assert_eq!(
        report.layers,
        [("conv1".to_string(), 2), ("ip".to_string(), 2)]
    );

    // a missing blob is refused too
    let mut w = conv_weights(3);
    w.layer[0].blobs.pop();
    let (st, _) = net_to_safetensors(&w, &ExportOptions::default()).unwrap();
    let err = safetensors_to_net(&st, Some(&model), Some(&expected))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "layer conv1 (Convolution) expects 2 blobs but the file has 1 (conv1.0)"
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let opts = ExportOptions::default();
    for bytes in [
        &b""[..],
        b"garbage",
        b"\x0a\x05ab",
        b"\xa2\x06\x05\x3a\x03\x2a\x01\x00",
    ] {
        assert!(
            caffemodel_bytes_to_safetensors(bytes, &opts).is_err(),
            "{bytes:?}"
        );
    }
    // a blob whose shape does not match its data
    let mut w = conv_weights(3);
    w.layer[1].blobs[1].data.push(1.0);
    let err = net_to_safetensors(&w, &opts).unwrap_err();
    assert!(format!("{err:#}").contains("layer 'ip' blob 1"), "{err:#}");
    for bytes in [
        &b""[..],
        b"12345678",
        b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":1}        ",
    ] {
        assert!(safetensors_to_net(bytes, None, None).is_err());
    }
    // a name that matches nothing in the net
    let (st, _) = net_to_safetensors(&conv_weights(3), &opts).unwrap();
    let other = parse_model("layer { name: \"x\" type: \"ReLU\" bottom: \"a\" top: \"a\" }");
    let err = safetensors_to_net(&st, Some(&other), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("none of the 4 tensors"), "{err}");
    assert!("f8".parse::<DType>().is_err());
    assert!("onnx".parse::<NameScheme>().is_err());
}

/// `cargo test --release --test convert -- --ignored --nocapture convert_speed`
#[test]
#[ignore]
fn convert_speed() {
    let dir = tmp_dir("speed");
    let layers = 10;
    let per = 6_400_000; // 10 x 25.6 MB = 256 MB
    let mut r = Lcg(1);
    let chunk = r.vec(per);
    let net = NetParameter {
        name: Some("big".into()),
        layer: (0..layers)
            .map(|i| {
                blobs_layer(
                    &format!("fc{i}"),
                    "InnerProduct",
                    vec![(vec![6400, 1000], chunk.clone()), (vec![6400], r.vec(6400))],
                )
            })
            .collect(),
        ..Default::default()
    };
    let src = dir.join("big.caffemodel");
    std::fs::write(&src, net.encode_to_vec()).unwrap();
    drop(net);
    let size = std::fs::metadata(&src).unwrap().len() as f64 / 1e6;
    let st = dir.join("big.safetensors");
    let back = dir.join("back.caffemodel");
    for dtype in [DType::F32, DType::F32, DType::F16] {
        let opts = ExportOptions {
            dtype,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        caffemodel_to_safetensors(&src, &st, &opts).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "caffemodel -> safetensors ({dtype:?}): {size:.0} MB in {s:.3} s = {:.0} MB/s",
            size / s
        );
    }
    // phases, in memory
    let t = std::time::Instant::now();
    let bytes = std::fs::read(&src).unwrap();
    println!("  read: {:.3} s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let _ = sha256_hex(&bytes);
    println!("  sha256: {:.3} s", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let (out, _) = caffemodel_bytes_to_safetensors(&bytes, &ExportOptions::default()).unwrap();
    println!(
        "  in-memory export (sha + scan + copy): {:.3} s",
        t.elapsed().as_secs_f64()
    );
    drop((bytes, out));
    if Path::new("/dev/shm").is_dir() {
        let shm = std::path::PathBuf::from(format!(
            "/dev/shm/caffe-rs-speed-{}.safetensors",
            std::process::id()
        ));
        for _ in 0..2 {
            let t = std::time::Instant::now();
            caffemodel_to_safetensors(&src, &shm, &ExportOptions::default()).unwrap();
            let s = t.elapsed().as_secs_f64();
            println!(
                "caffemodel -> safetensors on tmpfs: {size:.0} MB in {s:.3} s = {:.0} MB/s",
                size / s
            );
        }
        let shm_back = shm.with_extension("caffemodel");
        for _ in 0..2 {
            let t = std::time::Instant::now();
            safetensors_to_caffemodel(&shm, &shm_back, None, None).unwrap();
            let s = t.elapsed().as_secs_f64();
            println!(
                "safetensors -> caffemodel on tmpfs: {size:.0} MB in {s:.3} s = {:.0} MB/s",
                size / s
            );
        }
        let _ = std::fs::remove_file(&shm);
        let _ = std::fs::remove_file(&shm_back);
    }
    let hwm = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM"))
            .unwrap_or("VmHWM: ?")
            .to_string()
    };
    let opts = ExportOptions::default();
    // "5" resets the peak RSS (Linux), so the peak below is the conversion's own
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    println!("  before export: {}", hwm());
    caffemodel_to_safetensors(&src, &st, &opts).unwrap();
    println!("  peak during export (the mapped input counts): {}", hwm());
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    safetensors_to_caffemodel(&st, &back, None, None).unwrap();
    println!("  peak during import (the mapped input counts): {}", hwm());
    for _ in 0..2 {
        let t = std::time::Instant::now();
        safetensors_to_caffemodel(&st, &back, None, None).unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "safetensors -> caffemodel: {size:.0} MB in {s:.3} s = {:.0} MB/s",
            size / s
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
