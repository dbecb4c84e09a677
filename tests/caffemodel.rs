//! Binary protobuf files against the goldens made by real Caffe: every caffemodel, solverstate and
//! mean file reads; legacy V1 models upgrade to exactly what Caffe's own upgrade tools wrote;
//! writing reproduces Caffe's bytes; truncated and corrupted files fail cleanly with an offset.
use std::path::{Path, PathBuf};

use caffe_rs::format::caffemodel::{
    self, BlobValues, NET_PARAMETER, TrainedWeights, WeightsFile, check_wire_format, decode_binary,
    decode_net_bytes, decode_net_bytes_raw, read_blob_proto, read_net_binary, read_net_binary_raw,
    read_solver_state, write_atomic, write_blob_proto, write_net_binary, write_solver_state,
};
use caffe_rs::format::transcode::parse_text;
use caffe_rs::format::upgrade;
use caffe_rs::proto::{BlobProto, BlobShape, LayerParameter, NetParameter, SolverState};
use prost::Message;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/golden");

fn golden(rel: &str) -> PathBuf {
    Path::new(GOLDEN).join(rel)
}

fn files_with_extension(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_with_extension(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

/// A fresh empty directory under the target dir (removed at the start of the next run).
fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("caffemodel_tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Deterministic xorshift64* generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn every_golden_caffemodel_reads() {
    let mut files = Vec::new();
    files_with_extension(Path::new(GOLDEN), "caffemodel", &mut files);
    assert!(
        files.len() >= 50,
        "expected the golden caffemodels, found {}",
        files.len()
    );
    for path in &files {
        let net = read_net_binary(path).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!net.layer.is_empty(), "{}: no layers", path.display());
        assert!(
            net.layers.is_empty(),
            "{}: V1 layers left after upgrade",
            path.display()
        );
        assert!(!upgrade::net_needs_v1_to_v2_upgrade(&net));
        for layer in &net.layer {
            for blob in &layer.blobs {
                let count: usize = blob.dims().iter().product();
                assert_eq!(
                    count,
                    blob.data.len(),
                    "{}: layer {:?}",
                    path.display(),
                    layer.name
                );
            }
        }
    }
}

#[test]
fn writing_reproduces_caffes_bytes() {
    // C++ protobuf and prost both write fields in field-number order with packed floats, so a
    // model read and written back is byte-identical to the file Caffe wrote.
    let dir = scratch_dir("bytes");
    let mut files = Vec::new();
    files_with_extension(Path::new(GOLDEN), "caffemodel", &mut files);
    for (i, path) in files.iter().enumerate() {
        let raw = read_net_binary_raw(path).unwrap();
        let out = dir.join(format!("{i}.caffemodel"));
        write_net_binary(&out, &raw).unwrap();
        let original = std::fs::read(path).unwrap();
        let written = std::fs::read(&out).unwrap();
        assert!(
            original == written,
            "{}: written bytes differ from Caffe's",
            path.display()
        );
        assert_eq!(raw.encode_to_vec(), original, "{}", path.display());
        assert_eq!(read_net_binary_raw(&out).unwrap(), raw);
    }
}

#[test]
fn legacy_v1_caffemodel_upgrades_to_caffes_result() {
    let legacy = golden("legacy_v1/weights.caffemodel");
    let raw = read_net_binary_raw(&legacy).unwrap();
    assert!(
        raw.layer.is_empty() && !raw.layers.is_empty(),
        "the fixture is a V1 net"
    );
    assert!(upgrade::net_needs_upgrade(&raw));

    let ours = read_net_binary(&legacy).unwrap();
    let caffes = read_net_binary_raw(&golden("legacy_v1/upgraded_by_caffe.caffemodel")).unwrap();
    assert!(!upgrade::net_needs_upgrade(&caffes));
    assert_eq!(ours, caffes);
    // And therefore the same bytes as Caffe's upgrade_net_proto_binary wrote.
    let dir = scratch_dir("legacy");
    write_net_binary(&dir.join("up.caffemodel"), &ours).unwrap();
    assert!(
        std::fs::read(dir.join("up.caffemodel")).unwrap()
            == std::fs::read(golden("legacy_v1/upgraded_by_caffe.caffemodel")).unwrap()
    );
}

#[test]
fn legacy_v1_blobs_equal_the_modern_twin() {
    let legacy = read_net_binary(&golden("legacy_v1/weights.caffemodel")).unwrap();
    let modern = read_net_binary(&golden("lenet/weights.caffemodel")).unwrap();
    let learned = |net: &NetParameter| -> Vec<(String, Vec<BlobProto>)> {
        net.layer
            .iter()
            .filter(|l| !l.blobs.is_empty())
            .map(|l| (l.name().to_string(), l.blobs.clone()))
            .collect()
    };
    let (a, b) = (learned(&legacy), learned(&modern));
    assert_eq!(a.len(), 4);
    assert_eq!(
        a.iter().map(|x| &x.0).collect::<Vec<_>>(),
        b.iter().map(|x| &x.0).collect::<Vec<_>>()
    );
    for ((name, old), (_, new)) in a.iter().zip(&b) {
        assert_eq!(old.len(), new.len(), "{name}");
        for (i, (o, n)) in old.iter().zip(new).enumerate() {
            assert!(
                o.data
                    .iter()
                    .map(|v| v.to_bits())
                    .eq(n.data.iter().map(|v| v.to_bits()))
            );
            // Legacy blobs keep their 4-D num/channels/height/width as stored...
            let od = o.dims();
            assert_eq!(od.len(), 4, "{name}.{i}");
            assert!(o.shape.is_none());
            // ...whose trailing dims are the modern shape (1x1xOUTxIN for InnerProduct weights,
            // 1x1x1xN for biases).
            let nd = n.dims();
            assert_eq!(od[4 - nd.len()..], nd[..], "{name}.{i}");
            assert!(
                od[..4 - nd.len()].iter().all(|&d| d == 1),
                "{name}.{i}: {od:?}"
            );
        }
    }
}

#[test]
fn legacy_v1_prototxt_upgrades_to_caffes_result() {
    let src = std::fs::read_to_string(golden("legacy_v1/net.prototxt")).unwrap();
    let mut net: NetParameter = parse_text(&src, "net.prototxt", NET_PARAMETER).unwrap();
    assert!(!net.layers.is_empty() && !net.input_dim.is_empty());
    let report = upgrade::upgrade_net_reporting(&mut net).unwrap();
    assert!(report.changed);
    assert_eq!(
        report.steps,
        [upgrade::UpgradeStep::V1ToV2, upgrade::UpgradeStep::Input]
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let expected_src =
        std::fs::read_to_string(golden("legacy_v1/upgraded_by_caffe.prototxt")).unwrap();
    let expected: NetParameter =
        parse_text(&expected_src, "upgraded_by_caffe.prototxt", NET_PARAMETER).unwrap();
    assert_eq!(net, expected);
}

#[test]
fn modern_nets_need_no_upgrade() {
    let path = golden("lenet/weights.caffemodel");
    let mut net = read_net_binary_raw(&path).unwrap();
    let before = net.clone();
    assert!(!upgrade::net_needs_upgrade(&net));
    assert!(!upgrade::upgrade_net(&mut net).unwrap());
    assert_eq!(net, before);
}

#[test]
fn solverstates_read() {
    let mut files = Vec::new();
    files_with_extension(Path::new(GOLDEN), "solverstate", &mut files);
    assert!(files.len() >= 10, "found {}", files.len());
    for path in &files {
        let state = read_solver_state(path).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(state.iter() > 0, "{}", path.display());
        assert!(!state.history.is_empty(), "{}", path.display());
        assert!(
            state.learned_net().ends_with(".caffemodel"),
            "{}",
            path.display()
        );
    }
    // Adam keeps two history blobs per learnable param.
    let adam = read_solver_state(&golden("solver_adam/snapshot_iter_20.solverstate")).unwrap();
    let model = read_net_binary(&golden("solver_adam/snapshot_iter_20.caffemodel")).unwrap();
    let params: usize = model.layer.iter().map(|l| l.blobs.len()).sum();
    assert_eq!(adam.iter(), 20);
    assert_eq!(adam.history.len(), 2 * params);
}

#[test]
fn mean_files_read() {
    for rel in ["data_lmdb/mean.binaryproto", "imagedata/mean.binaryproto"] {
        let blob = read_blob_proto(&golden(rel)).unwrap_or_else(|e| panic!("{e:#}"));
        let dims = blob.dims();
        assert_eq!(dims.len(), 4, "{rel}: {dims:?}");
        assert_eq!(dims[0], 1);
        assert_eq!(dims.iter().product::<usize>(), blob.data.len(), "{rel}");
        assert!(
            blob.data
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0 && *v <= 255.0)
        );
    }
}

#[test]
fn round_trips() {
    let dir = scratch_dir("round_trips");
    // NetParameter with V1 layers, modern layers and every header field.
    let mut net = read_net_binary_raw(&golden("legacy_v1/weights.caffemodel")).unwrap();
    let modern = read_net_binary_raw(&golden("resnet_block_train/weights.caffemodel")).unwrap();
    net.layer = modern.layer.clone();
    net.input = vec!["data".into()];
    net.input_shape = vec![BlobShape {
        dim: vec![1, 3, 8, 8],
    }];
    net.input_dim = vec![1, 3, 8, 8];
    net.force_backward = Some(true);
    net.debug_info = Some(false);
    net.state = Some(Default::default());
    let path = dir.join("net.caffemodel");
    write_net_binary(&path, &net).unwrap();
    assert_eq!(read_net_binary_raw(&path).unwrap(), net);
    assert_eq!(std::fs::read(&path).unwrap(), net.encode_to_vec());

    let blob = BlobProto {
        double_data: vec![1.5, -2.25],
        ..BlobProto::from_shape_data(&[2, 1], vec![0.5, f32::MIN_POSITIVE])
    };
    write_blob_proto(&dir.join("b.binaryproto"), &blob).unwrap();
    assert_eq!(read_blob_proto(&dir.join("b.binaryproto")).unwrap(), blob);

    let state = SolverState {
        iter: Some(7),
        learned_net: Some("x_iter_7.caffemodel".into()),
        history: vec![blob.clone(), blob],
        current_step: Some(2),
    };
    write_solver_state(&dir.join("s.solverstate"), &state).unwrap();
    assert_eq!(
        read_solver_state(&dir.join("s.solverstate")).unwrap(),
        state
    );

    // Overwriting replaces the file and leaves no temporary files behind.
    write_solver_state(&dir.join("s.solverstate"), &SolverState::default()).unwrap();
    assert!(std::fs::read(dir.join("s.solverstate")).unwrap().is_empty());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn atomic_write_failure_leaves_nothing() {
    let dir = scratch_dir("atomic");
    let missing = dir.join("no/such/dir/x.caffemodel");
    let err = write_atomic(&missing, b"abc").unwrap_err();
    assert!(format!("{err:#}").contains("x.caffemodel"), "{err:#}");
    // A failing producer leaves the old file intact and no temporary file.
    let target = dir.join("keep.bin");
    write_atomic(&target, b"old").unwrap();
    let err = caffemodel::write_atomic_with(&target, |w| {
        std::io::Write::write_all(w, b"half")?;
        Err(std::io::Error::other("producer failed"))
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("producer failed"));
    assert_eq!(std::fs::read(&target).unwrap(), b"old");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // Writing over a directory fails.
    std::fs::create_dir(dir.join("d")).unwrap();
    assert!(write_atomic(&dir.join("d"), b"x").is_err());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

fn small_model() -> Vec<u8> {
    std::fs::read(golden("solver_adam/init.caffemodel")).unwrap()
}

#[test]
fn every_truncation_fails_cleanly() {
    let bytes = small_model();
    let full = decode_net_bytes(&bytes, "init.caffemodel").unwrap();
    let mut errors = 0;
    for len in 0..bytes.len() {
        assert_eq!(
            decode_net_bytes_raw(&bytes[..len], "init.caffemodel").ok(),
            NetParameter::decode(&bytes[..len]).ok().filter(|_| len > 0)
        );
        match decode_net_bytes(&bytes[..len], "init.caffemodel") {
            Ok(net) => assert_ne!(net, full, "prefix {len}"),
            Err(e) => {
                errors += 1;
                let msg = format!("{e:#}");
                assert!(msg.starts_with("init.caffemodel"), "{msg}");
                assert!(
                    msg.contains("at byte") || msg.contains("is empty"),
                    "prefix {len}: no offset in {msg}"
                );
            }
        }
    }
    assert!(
        errors > bytes.len() * 9 / 10,
        "{errors} errors for {} prefixes",
        bytes.len()
    );
}

#[test]
fn truncated_file_error_names_file_and_offset() {
    let bytes = std::fs::read(golden("lenet/weights.caffemodel")).unwrap();
    let dir = scratch_dir("truncated");
    let path = dir.join("weights.caffemodel");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = format!("{:#}", read_net_binary(&path).unwrap_err());
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("truncated or corrupt protobuf at byte "),
        "{msg}"
    );
    // Half of lenet ends inside ip1's weights: the outermost field that runs past the end is
    // that layer, named in the path.
    assert!(msg.contains("(layer[") && msg.contains("'ip1'"), "{msg}");
    assert!(msg.contains("runs past the end of the file"), "{msg}");

    // Damage inside a blob: make the data field of ip2's weight blob claim more bytes than its
    // blob holds.
    let net = NetParameter::decode(bytes.as_slice()).unwrap();
    assert!(net.layer.iter().any(|l| l.name() == "ip2"));
    let mut damaged = bytes.clone();
    let data_len = 10 * 500 * 4u64;
    let mut needle = vec![0x2a]; // field 5 (data), length-delimited
    prost::encoding::encode_varint(data_len, &mut needle);
    let at = damaged
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap();
    let mut longer = vec![0x2a];
    prost::encoding::encode_varint(data_len + 64, &mut longer);
    assert_eq!(longer.len(), needle.len());
    damaged[at..at + needle.len()].copy_from_slice(&longer);
    let msg = format!(
        "{:#}",
        decode_net_bytes(&damaged, "w.caffemodel").unwrap_err()
    );
    assert!(
        msg.starts_with(&format!(
            "w.caffemodel: truncated or corrupt protobuf at byte {at} (layer["
        )),
        "{msg}"
    );
    assert!(
        msg.contains("'ip2' > blobs[0]): length-delimited field 5 (data) of caffe.BlobProto"),
        "{msg}"
    );
    assert!(
        msg.contains("runs past the end of its enclosing message (needs 20064 bytes"),
        "{msg}"
    );
}

/// Flip 1-3 random bytes of `bytes`, `rounds` times, and check every reader: no panic, the fast
/// decoders agree with prost's, and whenever prost rejects the bytes the error carries an offset.
fn corrupt_and_check(bytes: &[u8], rounds: usize, seed: u64) -> (usize, usize) {
    fn located<M: Message + Default>(
        damaged: &[u8],
        result: anyhow::Result<M>,
        full_name: &str,
    ) -> bool {
        match result {
            Ok(_) => true,
            Err(e) => {
                let msg = format!("{e:#}");
                if M::decode(damaged).is_err() {
                    assert!(msg.contains("at byte"), "{msg}");
                    assert!(check_wire_format(damaged, full_name).is_err(), "{msg}");
                }
                false
            }
        }
    }
    let mut rng = Rng(seed);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..rounds {
        let mut damaged = bytes.to_vec();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(damaged.len());
            damaged[i] = rng.next() as u8;
        }
        let d = damaged.as_slice();
        // Compared through their encodings: flipped bytes make NaNs, which are != themselves.
        let enc = |m: Option<NetParameter>| m.map(|m| m.encode_to_vec());
        assert!(enc(decode_net_bytes_raw(d, "x").ok()) == enc(NetParameter::decode(d).ok()));
        let enc = |m: Option<SolverState>| m.map(|m| m.encode_to_vec());
        assert!(
            enc(caffemodel::decode_solver_state_bytes(d, "x").ok())
                == enc(SolverState::decode(d).ok())
        );
        let enc = |m: Option<BlobProto>| m.map(|m| m.encode_to_vec());
        assert!(
            enc(caffemodel::decode_blob_proto_bytes(d, "x").ok()) == enc(BlobProto::decode(d).ok())
        );
        // The streaming reader accepts and rejects exactly the same bytes, with the same errors.
        match (
            decode_net_bytes(d, "fuzz.caffemodel"),
            WeightsFile::from_bytes(d.to_vec(), "fuzz.caffemodel").and_then(|w| w.to_net()),
        ) {
            (Ok(a), Ok(b)) => assert!(a.encode_to_vec() == b.encode_to_vec()),
            (Err(a), Err(b)) => assert_eq!(format!("{a:#}"), format!("{b:#}")),
            (a, b) => panic!("full decode {:?} vs streaming {:?}", a.is_ok(), b.is_ok()),
        }
        if located(d, decode_net_bytes(d, "fuzz.caffemodel"), NET_PARAMETER) {
            ok += 1;
        } else {
            err += 1;
        }
        located(
            d,
            caffemodel::decode_solver_state_bytes(d, "x.solverstate"),
            caffemodel::SOLVER_STATE,
        );
        located(
            d,
            caffemodel::decode_blob_proto_bytes(d, "x.binaryproto"),
            caffemodel::BLOB_PROTO,
        );
        let _ = decode_binary::<BlobProto>(d, "x.binaryproto", caffemodel::BLOB_PROTO);
        let cut = &d[..rng.below(d.len())];
        let _ = decode_net_bytes(cut, "t.caffemodel");
        let _ = caffemodel::decode_solver_state_bytes(cut, "t.solverstate");
    }
    (ok, err)
}

#[test]
fn random_corruption_never_panics() {
    let (ok, err) = corrupt_and_check(&small_model(), 4000, 0x9E37_79B9_7F4A_7C15);
    assert!(ok > 0 && err > 0, "ok {ok}, err {err}");
    let state = std::fs::read(golden("solver_adam/snapshot_iter_10.solverstate")).unwrap();
    corrupt_and_check(&state, 1000, 7);
    let mean = std::fs::read(golden("data_lmdb/mean.binaryproto")).unwrap();
    corrupt_and_check(&mean, 1000, 11);
    let legacy = std::fs::read(golden("legacy_v1/weights.caffemodel")).unwrap();
    corrupt_and_check(&legacy[..4096.min(legacy.len())], 500, 13);
}

#[test]
fn walker_accepts_what_prost_accepts() {
    let mut files = Vec::new();
    files_with_extension(Path::new(GOLDEN), "caffemodel", &mut files);
    for path in files.iter().take(20) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            check_wire_format(&bytes, NET_PARAMETER),
            Ok(()),
            "{}",
            path.display()
        );
    }
    // Unknown fields (including groups) are skipped like prost skips them.
    let mut bytes = Vec::new();
    prost::encoding::encode_key(77, prost::encoding::WireType::StartGroup, &mut bytes);
    prost::encoding::encode_key(3, prost::encoding::WireType::Varint, &mut bytes);
    prost::encoding::encode_varint(300, &mut bytes);
    prost::encoding::encode_key(77, prost::encoding::WireType::EndGroup, &mut bytes);
    prost::encoding::encode_key(99, prost::encoding::WireType::ThirtyTwoBit, &mut bytes);
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    let layer = LayerParameter {
        name: Some("a".into()),
        ..Default::default()
    };
    prost::encoding::message::encode(100, &layer, &mut bytes);
    assert!(NetParameter::decode(bytes.as_slice()).is_ok());
    assert_eq!(check_wire_format(&bytes, NET_PARAMETER), Ok(()));
    assert_eq!(decode_net_bytes(&bytes, "u").unwrap().layer, vec![layer]);
}

#[test]
fn walker_pinpoints_problems() {
    let check = |bytes: &[u8], offset: usize, needle: &str| {
        assert!(NetParameter::decode(bytes).is_err());
        let e = check_wire_format(bytes, NET_PARAMETER).unwrap_err();
        assert_eq!(e.offset, offset, "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    };
    // force_backward (bool) sent as length-delimited.
    check(
        &[0x2a, 0x00],
        0,
        "field 5 (force_backward) of caffe.NetParameter has wire type length-delimited where varint is expected",
    );
    // Invalid UTF-8 in the name.
    check(
        &[0x0a, 0x02, b'a', 0xff],
        3,
        "string field 1 (name) of caffe.NetParameter is not valid UTF-8",
    );
    // Field number 0.
    check(&[0x00], 0, "invalid field number 0");
    // Wire type 7.
    check(&[0x0f], 0, "invalid wire type 7");
    // Stray end-group.
    check(&[0x0c], 0, "unexpected end-group tag");
    // Overlong varint.
    check(
        &[
            0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ],
        0,
        "malformed varint",
    );
    // Packed floats that are not a whole number of floats, inside layer 'x' > blobs[0].
    let mut blob = Vec::new();
    blob.extend_from_slice(&[0x2a, 0x03, 0, 0, 0]);
    let mut layer = Vec::new();
    layer.extend_from_slice(&[0x0a, 0x01, b'x', 0x3a, blob.len() as u8]);
    layer.extend_from_slice(&blob);
    let mut net = vec![0xa2, 0x06, layer.len() as u8];
    net.extend_from_slice(&layer);
    let e = check_wire_format(&net, NET_PARAMETER).unwrap_err();
    assert_eq!(e.path, "layer[0] 'x' > blobs[0]");
    assert_eq!(e.offset, 3 + 5 + 2);
    assert!(
        e.detail
            .contains("packed field 5 (data) of caffe.BlobProto holds 3 bytes"),
        "{e}"
    );
    assert!(NetParameter::decode(net.as_slice()).is_err());
}

#[test]
fn text_and_empty_files_are_not_binary_nets() {
    let dir = scratch_dir("not_binary");
    let proto = golden("lenet/net.prototxt");
    let msg = format!("{:#}", read_net_binary(&proto).unwrap_err());
    assert!(
        msg.contains("net.prototxt is not a binary NetParameter (is it a text .prototxt?)"),
        "{msg}"
    );
    let empty = dir.join("empty.caffemodel");
    std::fs::write(&empty, b"").unwrap();
    let msg = format!("{:#}", read_net_binary(&empty).unwrap_err());
    assert!(msg.contains("empty.caffemodel is empty (0 bytes)"), "{msg}");
    let msg = format!("{:#}", read_blob_proto(&empty).unwrap_err());
    assert!(msg.contains("not a binary BlobProto"), "{msg}");
    let msg = format!(
        "{:#}",
        read_net_binary(&dir.join("missing.caffemodel")).unwrap_err()
    );
    assert!(
        msg.contains("cannot open") && msg.contains("missing.caffemodel"),
        "{msg}"
    );
    // A solverstate given as weights is rejected with an offset.
    let msg = format!(
        "{:#}",
        read_net_binary(&golden("solver_adam/snapshot_iter_10.solverstate")).unwrap_err()
    );
    assert!(
        msg.contains("truncated or corrupt protobuf at byte 0"),
        "{msg}"
    );
}

/// Throughput of `read_net_binary` on a ~250 MB model (run with
/// `cargo test --release --test caffemodel -- --ignored --nocapture read_throughput`).
#[test]
#[ignore]
fn read_throughput() {
    let dir = scratch_dir("throughput");
    let path = dir.join("big.caffemodel");
    let net = big_net(250);
    let t = std::time::Instant::now();
    write_net_binary(&path, &net).unwrap();
    let write_s = t.elapsed().as_secs_f64();
    let mb = std::fs::metadata(&path).unwrap().len() as f64 / 1e6;
    println!(
        "wrote {mb:.0} MB in {write_s:.3} s ({:.0} MB/s)",
        mb / write_s
    );
    drop(net);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let read = read_net_binary(&path).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert_eq!(read.layer.len(), 4);
    }
    println!(
        "read_net_binary: {mb:.0} MB in {best:.3} s = {:.0} MB/s (best of 5, warm)",
        mb / best
    );
    std::fs::remove_file(&path).unwrap();
}

fn big_net(megabytes: usize) -> NetParameter {
    let floats = megabytes * 1_000_000 / 4;
    let sizes = [floats / 2, floats / 4, floats / 8, floats / 8];
    let layer = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| LayerParameter {
            name: Some(format!("fc{i}")),
            r#type: Some("InnerProduct".into()),
            blobs: vec![
                BlobProto::from_shape_data(
                    &[n / 1000, 1000],
                    (0..n / 1000 * 1000).map(|k| k as f32 * 1e-3).collect(),
                ),
                BlobProto::from_shape_data(&[n / 1000], vec![0.5; n / 1000]),
            ],
            ..Default::default()
        })
        .collect();
    NetParameter {
        name: Some("big".into()),
        layer,
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------------------------
// WeightsFile: the streaming reader against the full decode

/// `net` with every blob's values left out, as `WeightsFile::net` gives it.
fn without_values(mut net: NetParameter) -> NetParameter {
    for layer in &mut net.layer {
        for blob in &mut layer.blobs {
            blob.data.clear();
            blob.diff.clear();
            blob.double_data.clear();
            blob.double_diff.clear();
        }
    }
    net
}

/// The streamed file agrees with `read_net_binary` on structure and on every blob's values.
fn assert_streams_like_full_decode(w: &WeightsFile, full: &NetParameter, what: &str) {
    assert_eq!(w.net(), &without_values(full.clone()), "{what}: header");
    for (i, layer) in full.layer.iter().enumerate() {
        for (j, blob) in layer.blobs.iter().enumerate() {
            let values = w.blob_values(i, j).unwrap();
            let want = blob.values_f32();
            assert_eq!(values.len(), want.len(), "{what}: layer {i} blob {j}");
            let mut next = 0;
            let mut got = Vec::new();
            values.for_each_chunk(&mut |offset, piece| {
                assert_eq!(offset, next, "{what}: chunks out of order");
                next += piece.len();
                got.extend_from_slice(piece);
            });
            assert!(
                got.iter()
                    .map(|v| v.to_bits())
                    .eq(want.iter().map(|v| v.to_bits())),
                "{what}: values of layer {i} blob {j}"
            );
        }
    }
    let whole = w.to_net().unwrap();
    assert!(
        whole.encode_to_vec() == full.encode_to_vec(),
        "{what}: to_net"
    );
}

#[test]
fn weights_file_streams_every_golden_caffemodel() {
    let mut files = Vec::new();
    files_with_extension(Path::new(GOLDEN), "caffemodel", &mut files);
    assert!(files.len() >= 50);
    let mut streamed = 0;
    for path in &files {
        let full = read_net_binary(path).unwrap();
        let w = WeightsFile::open(path).unwrap_or_else(|e| panic!("{e:#}"));
        assert_streams_like_full_decode(&w, &full, &path.display().to_string());
        for (i, layer) in full.layer.iter().enumerate() {
            for j in 0..layer.blobs.len() {
                if let BlobValues::Stored { .. } = w.blob_values(i, j).unwrap() {
                    streamed += 1;
                }
            }
        }
    }
    assert!(streamed > 100, "only {streamed} blobs read from the file");
}

#[test]
fn weights_file_streams_legacy_v1_layers() {
    let path = golden("legacy_v1/weights.caffemodel");
    assert!(!read_net_binary_raw(&path).unwrap().layers.is_empty());
    let full = read_net_binary(&path).unwrap();
    let w = WeightsFile::open(&path).unwrap();
    assert!(w.net().layers.is_empty() && !w.net().layer.is_empty());
    assert_streams_like_full_decode(&w, &full, "legacy_v1");
    let first = w
        .net()
        .layer
        .iter()
        .position(|l| !l.blobs.is_empty())
        .unwrap();
    assert!(matches!(
        w.blob_values(first, 0).unwrap(),
        BlobValues::Stored { .. }
    ));
    // Legacy 4-D InnerProduct shapes survive (the copy rules need them).
    let ip = w
        .net()
        .layer
        .iter()
        .find(|l| l.r#type() == "InnerProduct")
        .unwrap();
    assert!(ip.blobs[0].shape.is_none() && ip.blobs[0].num.is_some());
}

fn blob_key(field: u32, wire: prost::encoding::WireType, out: &mut Vec<u8>) {
    prost::encoding::encode_key(field, wire, out);
}

/// A BlobProto message written by hand: `shape`, then the given value fields.
fn hand_blob(shape: &[i64], fields: &dyn Fn(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = Vec::new();
    prost::encoding::message::encode(
        7,
        &BlobShape {
            dim: shape.to_vec(),
        },
        &mut b,
    );
    fields(&mut b);
    b
}

fn packed_floats(field: u32, values: &[f32], out: &mut Vec<u8>) {
    use prost::encoding::WireType;
    blob_key(field, WireType::LengthDelimited, out);
    prost::encoding::encode_varint(values.len() as u64 * 4, out);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// A net of one layer "l" holding the given blob messages (as field `blob_field` of a message in
/// field `layer_field` of the NetParameter).
fn hand_net(layer_field: u32, name_field: u32, blob_field: u32, blobs: &[Vec<u8>]) -> Vec<u8> {
    use prost::encoding::WireType;
    let mut layer = Vec::new();
    blob_key(name_field, WireType::LengthDelimited, &mut layer);
    prost::encoding::encode_varint(1, &mut layer);
    layer.push(b'l');
    for b in blobs {
        blob_key(blob_field, WireType::LengthDelimited, &mut layer);
        prost::encoding::encode_varint(b.len() as u64, &mut layer);
        layer.extend_from_slice(b);
    }
    let mut net = Vec::new();
    blob_key(layer_field, WireType::LengthDelimited, &mut net);
    prost::encoding::encode_varint(layer.len() as u64, &mut net);
    net.extend_from_slice(&layer);
    net
}

#[test]
fn weights_file_reads_packed_unpacked_and_double_blobs() {
    use prost::encoding::WireType;
    let vals: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
    let blobs = vec![
        // Packed data, with a diff that is not copied.
        hand_blob(&[2, 3], &|b| {
            packed_floats(5, &vals, b);
            packed_floats(6, &[9.0; 6], b);
        }),
        // Packed data in two runs.
        hand_blob(&[6], &|b| {
            packed_floats(5, &vals[..2], b);
            packed_floats(5, &vals[2..], b);
        }),
        // Unpacked data.
        hand_blob(&[3, 2], &|b| {
            for v in &vals {
                blob_key(5, WireType::ThirtyTwoBit, b);
                b.extend_from_slice(&v.to_le_bytes());
            }
        }),
        // Packed then unpacked data.
        hand_blob(&[6], &|b| {
            packed_floats(5, &vals[..4], b);
            for v in &vals[4..] {
                blob_key(5, WireType::ThirtyTwoBit, b);
                b.extend_from_slice(&v.to_le_bytes());
            }
        }),
        // double_data, packed and unpacked.
        hand_blob(&[1, 6], &|b| {
            blob_key(8, WireType::LengthDelimited, b);
            prost::encoding::encode_varint(32, b);
            for v in &vals[..4] {
                b.extend_from_slice(&(f64::from(*v) + 1e-9).to_le_bytes());
            }
            for v in &vals[4..] {
                blob_key(8, WireType::SixtyFourBit, b);
                b.extend_from_slice(&f64::from(*v).to_le_bytes());
            }
        }),
        // Both data and double_data: data wins.
        hand_blob(&[6], &|b| {
            packed_floats(5, &vals, b);
            blob_key(8, WireType::SixtyFourBit, b);
            b.extend_from_slice(&7f64.to_le_bytes());
        }),
        // Legacy 4-D dims, no values at all.
        {
            let mut b = Vec::new();
            for (f, v) in [(1u32, 1u64), (2, 1), (3, 2), (4, 3)] {
                blob_key(f, WireType::Varint, &mut b);
                prost::encoding::encode_varint(v, &mut b);
            }
            b
        },
    ];
    // V2 `layer` (field 100, blobs 7) and V1 `layers` (field 2, blobs 6; name is field 4).
    for (what, bytes) in [
        ("v2", hand_net(100, 1, 7, &blobs)),
        ("v1", hand_net(2, 4, 6, &blobs)),
    ] {
        let full = decode_net_bytes(&bytes, what).unwrap();
        assert_eq!(full.layer[0].blobs.len(), blobs.len(), "{what}");
        let w = WeightsFile::from_bytes(bytes.clone(), what).unwrap();
        assert_streams_like_full_decode(&w, &full, what);
        assert!(matches!(
            w.blob_values(0, 0).unwrap(),
            BlobValues::Stored { .. }
        ));
        assert_eq!(w.blob_values(0, 1).unwrap().to_vec(), vals);
        assert_eq!(w.blob_values(0, 2).unwrap().to_vec(), vals);
        assert_eq!(w.blob_values(0, 3).unwrap().to_vec(), vals);
        assert_eq!(w.blob_values(0, 5).unwrap().to_vec(), vals);
        assert!(w.blob_values(0, 6).unwrap().is_empty());
    }
}

#[test]
fn weights_file_streams_v0_layers() {
    // A V0 net: `layers { layer { name type blobs } }`, with a padding layer folded by the upgrade.
    let text = r#"
        name: "v0"
        input: "data"
        input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
        layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "padded" }
        layers {
          layer {
            name: "conv" type: "conv" num_output: 2 kernelsize: 3
            blobs { num: 2 channels: 1 height: 3 width: 3 data: [1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9] }
            blobs { num: 1 channels: 1 height: 1 width: 2 data: [0.5, -0.5] }
          }
          bottom: "padded" top: "conv"
        }
        layers {
          layer {
            name: "ip" type: "innerproduct" num_output: 1
            blobs { num: 1 channels: 1 height: 1 width: 2 double_data: [0.25, 0.75] }
          }
          bottom: "conv" top: "ip"
        }
    "#;
    let raw: NetParameter = parse_text(text, "v0.prototxt", NET_PARAMETER).unwrap();
    let bytes = raw.encode_to_vec();
    let full = decode_net_bytes(&bytes, "v0").unwrap();
    assert!(full.layers.is_empty());
    let w = WeightsFile::from_bytes(bytes, "v0").unwrap();
    assert_streams_like_full_decode(&w, &full, "v0");
    assert!(w.net().layer.iter().all(|l| l.name() != "pad"));
    let conv = w
        .net()
        .layer
        .iter()
        .position(|l| l.name() == "conv")
        .unwrap();
    assert!(matches!(
        w.blob_values(conv, 0).unwrap(),
        BlobValues::Stored { .. }
    ));
    assert_eq!(w.blob_values(conv, 1).unwrap().to_vec(), vec![0.5, -0.5]);
}

#[test]
fn weights_file_chunks_large_blobs_from_a_mapped_file() {
    // 2.5 M floats: more than one chunk, and a file large enough to be mapped.
    let n = 2_500_000usize;
    let values: Vec<f32> = (0..n)
        .map(|i| (i % 1000) as f32 * 0.001 - i as f32)
        .collect();
    let net = NetParameter {
        layer: vec![LayerParameter {
            name: Some("big".into()),
            blobs: vec![
                BlobProto::from_shape_data(&[n], values.clone()),
                BlobProto::from_shape_data(&[3], vec![1.0, 2.0, 3.0]),
            ],
            ..Default::default()
        }],
        ..Default::default()
    };
    let dir = scratch_dir("weights_file_chunks");
    let path = dir.join("big.caffemodel");
    write_net_binary(&path, &net).unwrap();
    let w = WeightsFile::open(&path).unwrap();
    let got = w.blob_values(0, 0).unwrap();
    assert_eq!(got.len(), n);
    let mut pieces = 0;
    let mut next = 0;
    got.for_each_chunk(&mut |offset, piece| {
        assert_eq!(offset, next);
        assert!(piece.len() <= 1 << 20);
        assert!(piece.iter().zip(&values[offset..]).all(|(a, b)| a == b));
        next += piece.len();
        pieces += 1;
    });
    assert_eq!((next, pieces), (n, 3));
    // Released pages read back the same.
    assert_eq!(w.blob_values(0, 0).unwrap().to_vec(), values);
    assert_eq!(w.blob_values(0, 1).unwrap().to_vec(), vec![1.0, 2.0, 3.0]);
    assert_eq!(w.to_net().unwrap(), net);
}

#[test]
fn weights_file_errors_match_read_net_binary() {
    // Truncated: the error names the file and where decoding stops.
    let bytes = std::fs::read(golden("lenet/weights.caffemodel")).unwrap();
    let dir = scratch_dir("weights_file_errors");
    let path = dir.join("weights.caffemodel");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let want = format!("{:#}", read_net_binary(&path).unwrap_err());
    let got = format!("{:#}", WeightsFile::open(&path).err().unwrap());
    assert_eq!(got, want);
    assert!(got.contains(&path.display().to_string()), "{got}");
    assert!(
        got.contains("truncated or corrupt protobuf at byte "),
        "{got}"
    );
    // Every prefix of a small model: the same outcome as the full decode.
    let small = small_model();
    for len in 0..small.len() {
        let full = decode_net_bytes(&small[..len], "init.caffemodel");
        let streamed = WeightsFile::from_bytes(small[..len].to_vec(), "init.caffemodel")
            .and_then(|w| w.to_net());
        match (full, streamed) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "prefix {len}"),
            (Err(a), Err(b)) => assert_eq!(format!("{a:#}"), format!("{b:#}"), "prefix {len}"),
            (a, b) => panic!("prefix {len}: {:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
    }
    // Empty, missing, a text prototxt.
    let empty = dir.join("empty.caffemodel");
    std::fs::write(&empty, b"").unwrap();
    for p in [
        empty,
        dir.join("missing.caffemodel"),
        golden("lenet/net.prototxt"),
    ] {
        assert_eq!(
            format!("{:#}", WeightsFile::open(&p).err().unwrap()),
            format!("{:#}", read_net_binary(&p).unwrap_err())
        );
    }
}
