//! Text format: the nom parser (format::text) and the descriptor-driven transcoder/writer
//! (format::transcode), against every prototxt in ../shared plus malformed inputs.

use std::path::{Path, PathBuf};

use caffe_rs::format::text::{self, Scalar, Span, Value};
use caffe_rs::format::transcode::{
    dynamic_to_text, parse_text, read_text_file, text_to_dynamic, to_text,
};
use caffe_rs::proto::caffe::{NetParameter, SolverParameter, pooling_parameter::PoolMethod};
use prost::Message;
use prost_reflect::{DynamicMessage, MessageDescriptor};

const NET: &str = "caffe.NetParameter";
const SOLVER: &str = "caffe.SolverParameter";

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

fn descriptor(full_name: &str) -> MessageDescriptor {
    caffe_rs::proto::descriptor_pool()
        .get_message_by_name(full_name)
        .unwrap_or_else(|| panic!("{full_name} missing from the descriptor pool"))
}

fn find_prototxt(dir: &Path, out: &mut Vec<PathBuf>, names: Option<&[&str]>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            find_prototxt(&p, out, names);
        } else if p.extension().is_some_and(|e| e == "prototxt") {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if names.is_none_or(|ns| ns.contains(&name)) {
                out.push(p);
            }
        }
    }
}

fn all_shared_prototxt() -> Vec<PathBuf> {
    let mut files = Vec::new();
    find_prototxt(&shared().join("caffe_models"), &mut files, None);
    find_prototxt(
        &shared().join("golden"),
        &mut files,
        Some(&["net.prototxt", "solver.prototxt", "train.prototxt"]),
    );
    files
}

fn type_for(path: &Path) -> &'static str {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.contains("solver") { SOLVER } else { NET }
}

/// parse -> write -> parse gives the same message (both as DynamicMessage and as bytes).
fn round_trip(src: &str, label: &str, full_name: &str) -> DynamicMessage {
    let desc = descriptor(full_name);
    let first = text_to_dynamic(src, label, &desc).unwrap_or_else(|e| panic!("{e:#}"));
    let written = dynamic_to_text(&first);
    let second = text_to_dynamic(&written, &format!("{label} (rewritten)"), &desc)
        .unwrap_or_else(|e| panic!("{e:#}\n--- rewritten text ---\n{written}"));
    assert_eq!(first, second, "{label}: round trip changed the message");
    assert_eq!(first.encode_to_vec(), second.encode_to_vec(), "{label}");
    assert_eq!(
        dynamic_to_text(&second),
        written,
        "{label}: writer is not stable"
    );
    first
}

#[test]
fn every_shared_prototxt_parses_and_round_trips() {
    let files = all_shared_prototxt();
    assert!(
        files.len() >= 100,
        "found only {} prototxt files under {}",
        files.len(),
        shared().display()
    );
    for path in &files {
        let full_name = type_for(path);
        let src =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let msg = round_trip(&src, &path.display().to_string(), full_name);
        assert!(
            msg.fields().next().is_some(),
            "{}: parsed to an empty message",
            path.display()
        );
        // The generated types agree with the dynamic message.
        let bytes = msg.encode_to_vec();
        if full_name == NET {
            let net: NetParameter = read_text_file(path, NET).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(net.encode_to_vec(), bytes, "{}", path.display());
            let again: NetParameter = parse_text(&to_text(&net, NET), "rewritten", NET)
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(again, net, "{}", path.display());
        } else {
            let solver: SolverParameter =
                read_text_file(path, SOLVER).unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(solver.encode_to_vec(), bytes, "{}", path.display());
            let again: SolverParameter = parse_text(&to_text(&solver, SOLVER), "rewritten", SOLVER)
                .unwrap_or_else(|e| panic!("{e:#}"));
            assert_eq!(again, solver, "{}", path.display());
        }
    }
}

#[test]
fn googlenet_layers_are_all_there() {
    let path = shared().join("caffe_models/models/bvlc_googlenet/train_val.prototxt");
    let net: NetParameter = read_text_file(&path, NET).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(net.name(), "GoogleNet");
    assert!(net.layer.len() > 150, "{} layers", net.layer.len());
    let conv = net
        .layer
        .iter()
        .find(|l| l.name() == "conv1/7x7_s2")
        .expect("conv1/7x7_s2");
    let cp = conv.convolution_param.as_ref().expect("convolution_param");
    assert_eq!(cp.num_output, Some(64));
    assert_eq!(cp.kernel_size, vec![7]);
}

/// Time the GoogLeNet parse (run with `cargo test --release --test text_format -- --ignored --nocapture`).
#[test]
#[ignore]
fn time_googlenet_parse() {
    let path = shared().join("caffe_models/models/bvlc_googlenet/train_val.prototxt");
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let desc = descriptor(NET);
    let n = 200;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(text::parse(&src).map(|f| f.len()).unwrap_or(0));
    }
    let tree = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(text_to_dynamic(&src, "g", &desc).is_ok());
    }
    let dynamic = t.elapsed() / n;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let net: NetParameter = parse_text(&src, "g", NET).unwrap_or_default();
        std::hint::black_box(net.layer.len());
    }
    let typed = t.elapsed() / n;
    println!(
        "GoogLeNet train_val.prototxt ({} lines): text tree {tree:?}, DynamicMessage {dynamic:?}, NetParameter {typed:?}",
        src.lines().count()
    );
    assert!(typed.as_millis() < 5);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: exact line:col and message.

fn net_error(src: &str) -> String {
    match parse_text::<NetParameter>(src, "bad.prototxt", NET) {
        Ok(m) => panic!("parsed without error: {m:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn solver_error(src: &str) -> String {
    match parse_text::<SolverParameter>(src, "bad_solver.prototxt", SOLVER) {
        Ok(m) => panic!("parsed without error: {m:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_error(got: &str, file: &str, line: u32, col: u32, message: &str) {
    let prefix = format!("{file}:{line}:{col}: ");
    assert!(
        got.starts_with(&prefix) && got.contains(message),
        "got:  {got}\nwant: {prefix}...{message}..."
    );
}

fn net_err(src: &str, line: u32, col: u32, message: &str) {
    assert_error(&net_error(src), "bad.prototxt", line, col, message);
}

fn solver_err(src: &str, line: u32, col: u32, message: &str) {
    assert_error(
        &solver_error(src),
        "bad_solver.prototxt",
        line,
        col,
        message,
    );
}

#[test]
fn bad_unknown_field() {
    net_err(
        "name: \"n\"\nlayer {\n  name: \"a\"\n    insanity_param { x: 1 }\n}\n",
        4,
        5,
        "message caffe.LayerParameter has no field named \"insanity_param\"",
    );
}

#[test]
fn bad_unknown_top_level_solver_field() {
    solver_err(
        "base_lr: 0.1\nsolver_typo: SGD\n",
        2,
        1,
        "message caffe.SolverParameter has no field named \"solver_typo\"",
    );
}

#[test]
fn bad_unknown_enum_value() {
    net_err(
        "layer {\n  pooling_param {\n    pool: MAXX\n  }\n}\n",
        3,
        11,
        "unknown value \"MAXX\" for enum caffe.PoolingParameter.PoolMethod (expected MAX, AVE, STOCHASTIC)",
    );
}

#[test]
fn bad_unknown_enum_number() {
    net_err(
        "layer { pooling_param { pool: 7 } }",
        1,
        31,
        "unknown number 7 for enum caffe.PoolingParameter.PoolMethod",
    );
}

#[test]
fn bad_unclosed_block() {
    net_err(
        "name: \"n\"\n\nlayer {\n  name: \"a\"\n  convolution_param {\n    num_output: 1\n  }\n",
        8,
        1,
        "expected \"}\" to close \"layer\" opened at 3:1",
    );
}

#[test]
fn bad_mismatched_closer() {
    net_err(
        "layer <\n  name: \"a\"\n}\n",
        3,
        1,
        "expected \">\" to close \"layer\" opened at 1:1, got \"}\"",
    );
}

#[test]
fn bad_unclosed_string() {
    net_err(
        "name: \"n\"\nlayer { name: \"conv1 }\n",
        2,
        15,
        "unterminated string",
    );
}

#[test]
fn bad_unclosed_string_at_eof() {
    net_err("name: 'abc", 1, 7, "unterminated string");
}

#[test]
fn bad_escape() {
    net_err("name: \"a\\qb\"", 1, 9, "invalid escape sequence \"\\q\"");
}

#[test]
fn bad_missing_value() {
    net_err(
        "layer {\n  name:\n}\n",
        3,
        1,
        "expected a value after \":\"",
    );
}

#[test]
fn bad_missing_value_at_eof() {
    solver_err("base_lr:", 1, 9, "expected a value after \":\"");
}

#[test]
fn bad_int32_out_of_range() {
    solver_err(
        "max_iter: 5000000000",
        1,
        11,
        "value 5000000000 out of range for int32 field \"max_iter\"",
    );
}

#[test]
fn bad_uint32_out_of_range() {
    net_err(
        "layer {\n  convolution_param { num_output: 5000000000 }\n}",
        2,
        35,
        "value 5000000000 out of range for uint32 field \"num_output\"",
    );
}

#[test]
fn bad_negative_for_uint32() {
    net_err(
        "layer { inner_product_param { num_output: -1 } }",
        1,
        43,
        "value -1 out of range for uint32 field \"num_output\"",
    );
}

#[test]
fn bad_int64_out_of_range() {
    solver_err(
        "random_seed: -99999999999999999999",
        1,
        14,
        "value -99999999999999999999 out of range for int64 field \"random_seed\"",
    );
}

#[test]
fn bad_float_in_int_field() {
    solver_err(
        "max_iter: 1.5",
        1,
        11,
        "expected an integer for field \"max_iter\", got \"1.5\"",
    );
}

#[test]
fn bad_string_in_int_field() {
    net_err(
        "layer { convolution_param { num_output: \"64\" } }",
        1,
        41,
        "expected an integer for field \"num_output\", got a string",
    );
}

#[test]
fn bad_identifier_in_int_field() {
    solver_err(
        "display: abc",
        1,
        10,
        "expected an integer for field \"display\", got \"abc\"",
    );
}

#[test]
fn bad_string_in_float_field() {
    solver_err(
        "base_lr: \"0.1\"",
        1,
        10,
        "expected a number for field \"base_lr\", got a string",
    );
}

#[test]
fn bad_identifier_in_string_field() {
    net_err(
        "layer {\n  type: Convolution\n}",
        2,
        9,
        "expected a string for field \"type\", got \"Convolution\"",
    );
}

#[test]
fn bad_bool() {
    net_err(
        "force_backward: yes",
        1,
        17,
        "expected \"true\" or \"false\" for field \"force_backward\", got \"yes\"",
    );
}

#[test]
fn bad_message_field_given_scalar() {
    net_err(
        "layer {\n  convolution_param: 5\n}",
        2,
        22,
        "field \"convolution_param\" is a message; expected \"{\"",
    );
}

#[test]
fn bad_scalar_field_given_block() {
    net_err(
        "layer {\n  convolution_param {\n    num_output { value: 3 }\n  }\n}",
        3,
        16,
        "field \"num_output\" is a uint32 field, not a message",
    );
}

#[test]
fn bad_duplicate_non_repeated_field() {
    net_err(
        "name: \"a\"\nforce_backward: true\nname: \"b\"\n",
        3,
        1,
        "non-repeated field \"name\" is specified multiple times",
    );
}

#[test]
fn bad_duplicate_non_repeated_message() {
    net_err(
        "layer {\n  convolution_param { num_output: 1 }\n  convolution_param { bias_term: false }\n}",
        3,
        3,
        "non-repeated field \"convolution_param\" is specified multiple times",
    );
}

#[test]
fn bad_stray_closing_brace() {
    net_err(
        "layer {\n  name: \"a\"\n}\n}\n",
        4,
        1,
        "unexpected \"}\" with no open block",
    );
}

#[test]
fn bad_unexpected_character() {
    net_err(
        "layer {\n  name: \"a\"\n  @top: \"x\"\n}",
        3,
        3,
        "unexpected character '@'",
    );
}

#[test]
fn bad_unexpected_character_as_value() {
    solver_err("base_lr: $1", 1, 10, "unexpected character '$'");
}

#[test]
fn bad_list_missing_comma() {
    net_err(
        "layer {\n  convolution_param { kernel_size: [3 5] }\n}",
        2,
        39,
        "expected \",\" or \"]\" in list \"kernel_size\"",
    );
}

#[test]
fn bad_list_trailing_comma() {
    solver_err(
        "stepvalue: [100, 200, ]",
        1,
        23,
        "expected a value in list \"stepvalue\"",
    );
}

#[test]
fn bad_list_unclosed() {
    solver_err(
        "stepvalue: [100, 200\n",
        2,
        1,
        "expected \"]\" to close list \"stepvalue\" opened at 1:12",
    );
}

#[test]
fn bad_list_for_non_repeated_field() {
    net_err(
        "name: [\"a\", \"b\"]",
        1,
        7,
        "field \"name\" is not repeated",
    );
}

#[test]
fn bad_scalar_in_message_list() {
    net_err(
        "layer [ { name: \"a\" }, 3 ]",
        1,
        24,
        "field \"layer\" is a message; expected \"{\"",
    );
}

#[test]
fn bad_scalar_list_without_colon() {
    solver_err(
        "stepvalue [1, 2]",
        1,
        11,
        "expected \":\" after field name \"stepvalue\"",
    );
}

#[test]
fn bad_missing_colon_before_scalar() {
    net_err(
        "name \"n\"",
        1,
        6,
        "expected \":\" or \"{\" after field name \"name\"",
    );
}

#[test]
fn bad_octal_literal() {
    solver_err(
        "max_iter: 08",
        1,
        11,
        "numbers starting with a leading zero must be in octal",
    );
}

#[test]
fn bad_number_glued_to_identifier() {
    solver_err(
        "max_iter: 10k",
        1,
        13,
        "need space between number and identifier",
    );
}

#[test]
fn bad_extension_name() {
    net_err(
        "[caffe.ext]: 1",
        1,
        1,
        "extension and Any field names in [brackets] are not supported",
    );
}

#[test]
fn bad_error_deep_inside_nesting() {
    net_err(
        "layer {\n  convolution_param {\n    weight_filler {\n      type: 5\n    }\n  }\n}\n",
        4,
        13,
        "expected a string for field \"type\", got \"5\"",
    );
}

#[test]
fn bad_solver_mode() {
    solver_err(
        "solver_mode: TPU",
        1,
        14,
        "unknown value \"TPU\" for enum caffe.SolverParameter.SolverMode (expected CPU, GPU)",
    );
}

#[test]
fn missing_file_names_the_path() {
    let path = Path::new("/nonexistent/dir/missing_solver.prototxt");
    let e = read_text_file::<SolverParameter>(path, SOLVER).expect_err("missing file");
    assert!(
        format!("{e:#}").contains("/nonexistent/dir/missing_solver.prototxt"),
        "{e:#}"
    );
}

#[test]
fn read_text_file_labels_errors_with_the_path() {
    let dir = std::env::temp_dir().join(format!("caffe_rs_text_format_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join("train_val.prototxt");
    std::fs::write(&path, "name: \"x\"\nlayer {\n  insanity_param {}\n}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let e = read_text_file::<NetParameter>(&path, NET).expect_err("bad field");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        format!("{e:#}"),
        format!(
            "{}:3:3: message caffe.LayerParameter has no field named \"insanity_param\"",
            path.display()
        )
    );
}

#[test]
fn unknown_message_type_is_an_error() {
    let e = parse_text::<NetParameter>("", "x", "caffe.Nope").expect_err("unknown type");
    assert!(format!("{e:#}").contains("caffe.Nope"));
}

// ---------------------------------------------------------------------------------------------
// Accepted syntax and semantics.

fn net(src: &str) -> NetParameter {
    parse_text(src, "t.prototxt", NET).unwrap_or_else(|e| panic!("{e:#}"))
}

fn solver(src: &str) -> SolverParameter {
    parse_text(src, "t.prototxt", SOLVER).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn escapes_and_concatenation() {
    let n = net(r#"name: "a\tb\n" 'c\x41\101\'' "\"\\\?\a\b\f\v\r" "\u00e9""#);
    assert_eq!(n.name(), "a\tb\ncAA'\"\\?\x07\x08\x0c\x0b\ré");
    let n = net("name: \"multi\"\n  # a comment between parts\n  \"line\"");
    assert_eq!(n.name(), "multiline");
}

#[test]
fn integer_forms() {
    assert_eq!(solver("max_iter: 0x10").max_iter(), 16);
    assert_eq!(solver("max_iter: 0X1f").max_iter(), 31);
    assert_eq!(solver("max_iter: 010").max_iter(), 8);
    assert_eq!(solver("max_iter: 0").max_iter(), 0);
    assert_eq!(solver("max_iter: -2147483648").max_iter(), i32::MIN);
    assert_eq!(solver("random_seed: -1").random_seed(), -1);
    assert_eq!(
        solver("random_seed: 9223372036854775807").random_seed(),
        i64::MAX
    );
    assert_eq!(
        solver("stepvalue: [1, 0x2, 03]\nstepvalue: 4").stepvalue,
        vec![1, 2, 3, 4]
    );
}

#[test]
fn float_forms() {
    assert_eq!(solver("base_lr: 1.").base_lr(), 1.0);
    assert_eq!(solver("base_lr: .5").base_lr(), 0.5);
    assert_eq!(solver("base_lr: 1.f").base_lr(), 1.0);
    assert_eq!(solver("base_lr: 2.5F").base_lr(), 2.5);
    assert_eq!(solver("base_lr: 1e-3").base_lr(), 1e-3);
    assert_eq!(solver("base_lr: 1.5E+2").base_lr(), 150.0);
    assert_eq!(solver("base_lr: 3").base_lr(), 3.0);
    assert_eq!(solver("base_lr: -2").base_lr(), -2.0);
    assert_eq!(solver("base_lr: inf").base_lr(), f32::INFINITY);
    assert_eq!(solver("base_lr: -inf").base_lr(), f32::NEG_INFINITY);
    assert_eq!(solver("base_lr: -Infinity").base_lr(), f32::NEG_INFINITY);
    assert!(solver("base_lr: NaN").base_lr().is_nan());
    assert_eq!(solver("base_lr: 1e100").base_lr(), f32::INFINITY);
}

#[test]
fn bool_forms() {
    for (text, want) in [
        ("true", true),
        ("false", false),
        ("t", true),
        ("f", false),
        ("True", true),
        ("False", false),
        ("1", true),
        ("0", false),
    ] {
        assert_eq!(
            net(&format!("force_backward: {text}")).force_backward,
            Some(want),
            "{text}"
        );
    }
}

#[test]
fn enum_by_name_and_number() {
    let n = net("layer { pooling_param { pool: AVE } } layer { pooling_param { pool: 2 } }");
    assert_eq!(
        n.layer[0].pooling_param.as_ref().map(|p| p.pool()),
        Some(PoolMethod::Ave)
    );
    assert_eq!(
        n.layer[1].pooling_param.as_ref().map(|p| p.pool()),
        Some(PoolMethod::Stochastic)
    );
}

#[test]
fn separators_comments_and_angle_blocks() {
    let n = net(
        "# leading comment\nname: 'n'; force_backward: true,\nlayer < name: 'a'; top: 'x', >\nlayer: { name: 'b' };\n# trailing comment without newline",
    );
    assert_eq!(n.name(), "n");
    assert_eq!(n.layer.len(), 2);
    assert_eq!(n.layer[0].top, vec!["x".to_string()]);
    assert_eq!(n.layer[1].name(), "b");
}

#[test]
fn lists() {
    let n = net(
        "layer [ { name: 'a' top: ['x', 'y'] }, < name: 'b' bottom: [] > ]\nlayer: [{name: 'c'}]\nlayer []",
    );
    assert_eq!(
        n.layer.iter().map(|l| l.name()).collect::<Vec<_>>(),
        vec!["a", "b", "c"]
    );
    assert_eq!(n.layer[0].top, vec!["x", "y"]);
    assert!(n.layer[1].bottom.is_empty());
}

#[test]
fn explicit_defaults_keep_presence() {
    // bias_term defaults to true and pool to MAX: written explicitly they are still "set".
    let n =
        net("layer { convolution_param { bias_term: true } pooling_param { pool: MAX pad: 0 } }");
    let cp = n.layer[0]
        .convolution_param
        .as_ref()
        .expect("convolution_param");
    assert_eq!(cp.bias_term, Some(true));
    let pp = n.layer[0].pooling_param.as_ref().expect("pooling_param");
    assert_eq!(pp.pool, Some(PoolMethod::Max as i32));
    assert_eq!(pp.pad, Some(0));
    let text = to_text(&n, NET);
    assert!(
        text.contains("bias_term: true") && text.contains("pool: MAX") && text.contains("pad: 0"),
        "{text}"
    );
    let desc = descriptor(NET);
    let d =
        text_to_dynamic("force_backward: false", "t", &desc).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(d.has_field_by_name("force_backward"));
    assert_eq!(dynamic_to_text(&d), "force_backward: false\n");
}

#[test]
fn writer_layout_matches_protobuf_text_format() {
    let n = net(
        r#"layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
             param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
             convolution_param { num_output: 20 kernel_size: 5 stride: 1
               weight_filler { type: "xavier" } } }
           force_backward: true
           name: "Le\"Net\n""#,
    );
    let want = r#"name: "Le\"Net\n"
force_backward: true
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
    weight_filler {
      type: "xavier"
    }
  }
}
"#;
    assert_eq!(to_text(&n, NET), want);
}

#[test]
fn writer_floats_are_shortest_round_trip() {
    let s = solver(
        "base_lr: 0.1 momentum: 0.9 weight_decay: 0.0005 delta: 1e-8 gamma: 100000 power: 1000000 clip_gradients: 0.333333343",
    );
    let text = to_text(&s, SOLVER);
    for want in [
        "base_lr: 0.1\n",
        "momentum: 0.9\n",
        "weight_decay: 0.0005\n",
        "delta: 1e-08\n",
        "gamma: 100000\n",
        "power: 1e+06\n",
        "clip_gradients: 0.33333334\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert_eq!(
        parse_text::<SolverParameter>(&text, "w", SOLVER).ok(),
        Some(s)
    );
    let s = solver("base_lr: -inf momentum: inf");
    let text = to_text(&s, SOLVER);
    assert!(
        text.contains("base_lr: -inf\n") && text.contains("momentum: inf\n"),
        "{text}"
    );
    assert_eq!(
        parse_text::<SolverParameter>(&text, "w", SOLVER).ok(),
        Some(s)
    );
}

#[test]
fn writer_escapes_strings() {
    let n = net("name: \"tab\\there 'q' \\\"dq\\\" back\\\\slash \\001 é\"");
    let text = to_text(&n, NET);
    assert_eq!(
        text,
        "name: \"tab\\there \\'q\\' \\\"dq\\\" back\\\\slash \\001 \\303\\251\"\n"
    );
    assert_eq!(net(&text), n);
}

#[test]
fn writer_prints_enums_by_name_and_skips_unset() {
    let s = solver("solver_mode: CPU type: \"Adam\"");
    assert_eq!(to_text(&s, SOLVER), "solver_mode: CPU\ntype: \"Adam\"\n");
    assert_eq!(to_text(&SolverParameter::default(), SOLVER), "");
}

#[test]
fn tree_has_spans_on_names_and_values() {
    let fields = text::parse("name: \"n\"\nlayer {\n  top: [\"a\", \"b\"]\n}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fields[0].name_span, Span { line: 1, col: 1 });
    assert_eq!(
        fields[0].value,
        Value::Scalar(Scalar::Str(b"n".to_vec()), Span { line: 1, col: 7 })
    );
    assert_eq!(fields[1].value.span(), Span { line: 2, col: 7 });
    let Value::Message(inner, _) = &fields[1].value else {
        panic!("not a message")
    };
    assert_eq!(inner[0].name_span, Span { line: 3, col: 3 });
    let Value::List(items, span) = &inner[0].value else {
        panic!("not a list")
    };
    assert_eq!(*span, Span { line: 3, col: 8 });
    assert_eq!(items[1].span(), Span { line: 3, col: 14 });
}

#[test]
fn text_error_display() {
    let e = text::parse("a {\n").expect_err("unclosed");
    assert_eq!(
        e.to_string(),
        "2:1: expected \"}\" to close \"a\" opened at 1:1, got end of input"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().starts_with("2:1:"));
}

#[test]
fn hostile_inputs_do_not_panic() {
    let desc = descriptor(NET);
    let inputs = [
        "layer {".repeat(5000),
        "a: [".repeat(5000),
        "\"".to_string(),
        "name: \"\\".to_string(),
        "name: \"\\x".to_string(),
        "name: \"\\u12".to_string(),
        "name: \"\\777\"".to_string(),
        "name: 0x".to_string(),
        "name: -".to_string(),
        "name: - ".to_string(),
        "-".to_string(),
        ":".to_string(),
        "layer { layer".to_string(),
        "\u{feff}name: \"bom\"".to_string(),
        "name: \"é\" é".to_string(),
        "\0".to_string(),
        "layer { bottom: [".to_string(),
        "layer { bottom: [{".to_string(),
        "input_dim: 1e".to_string(),
        "input_dim: 99999999999999999999999999999999999999999999999999".to_string(),
    ];
    for src in &inputs {
        let _ = text_to_dynamic(src, "hostile", &desc);
    }
}

#[test]
fn bad_hex_in_float_field() {
    solver_err(
        "base_lr: 0x10",
        1,
        10,
        "expected a decimal number for field \"base_lr\", got \"0x10\"",
    );
}

/// A file written by Caffe's own C++ TextFormat printer is reproduced byte for byte.
#[test]
fn writer_matches_caffe_output_byte_for_byte() {
    let path = shared().join("golden/legacy_v1/upgraded_by_caffe.prototxt");
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let n: NetParameter =
        parse_text(&src, "upgraded_by_caffe.prototxt", NET).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(to_text(&n, NET), src);
}
