//! Legacy net and solver upgrades (Caffe's upgrade_proto.cpp): V0 nets with padding layers, data
//! transformation fields, V1 layers, input fields, the BatchNorm param fix and solver_type.
use caffe_rs::format::transcode::parse_text;
use caffe_rs::format::upgrade::{
    self, UpgradeStep, net_needs_upgrade, upgrade_net, upgrade_net_reporting, upgrade_solver,
};
use caffe_rs::proto::{
    BlobShape, LayerParameter, NetParameter, ParamSpec, SolverParameter, V1LayerParameter,
    solver_parameter::SolverType,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/legacy");

fn text_net(src: &str) -> NetParameter {
    parse_text(src, "test.prototxt", "caffe.NetParameter").unwrap_or_else(|e| panic!("{e:#}"))
}

fn fixture(name: &str) -> NetParameter {
    let path = format!("{FIXTURES}/{name}");
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse_text(&src, &path, "caffe.NetParameter").unwrap_or_else(|e| panic!("{e:#}"))
}

fn upgraded(mut n: NetParameter) -> (NetParameter, upgrade::UpgradeReport) {
    let report = upgrade_net_reporting(&mut n).unwrap_or_else(|e| panic!("{e:#}"));
    (n, report)
}

#[test]
fn v0_lenet_with_padding_layer() {
    let v0 = fixture("v0_lenet.prototxt");
    assert!(upgrade::net_needs_v0_to_v1_upgrade(&v0));
    let (net, report) = upgraded(v0);
    assert_eq!(
        report.steps,
        [UpgradeStep::V0ToV1, UpgradeStep::V1ToV2, UpgradeStep::Input]
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert!(report.changed);
    assert_eq!(net, fixture("v0_lenet_upgraded.prototxt"));
    assert!(!net_needs_upgrade(&net));
}

#[test]
fn v0_data_layers_and_padding_before_pooling() {
    let (net, report) = upgraded(fixture("v0_data.prototxt"));
    assert_eq!(report.steps, [UpgradeStep::V0ToV1, UpgradeStep::V1ToV2]);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("'relu'") && report.warnings[0].contains("num_output"));
    assert_eq!(net, fixture("v0_data_upgraded.prototxt"));
}

#[test]
fn v0_upgrade_keeps_only_what_caffe_keeps() {
    // UpgradeV0Net rebuilds the net from name, layers, input, input_dim and force_backward; other
    // net fields (here state and debug_info) are dropped, as in Caffe.
    let (net, _) = upgraded(text_net(
        r#"
        name: "n" force_backward: true debug_info: true state { phase: TRAIN }
        input: "x" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4
        layers { layer { name: "r" type: "relu" } bottom: "x" top: "y" }
    "#,
    ));
    assert_eq!(net.name(), "n");
    assert_eq!(net.force_backward, Some(true));
    assert_eq!(net.state, None);
    assert_eq!(net.debug_info, None);
    assert_eq!(net.layer.len(), 2);
    assert_eq!(net.layer[0].r#type(), "Input");
    assert_eq!(net.layer[1].r#type(), "ReLU");
}

#[test]
fn v0_errors_name_the_layer() {
    let err = |src: &str| {
        let mut n = text_net(src);
        format!("{:#}", upgrade_net(&mut n).unwrap_err())
    };
    let e = err(
        r#"input: "x" layers { layer { name: "odd" type: "frobnicate" } bottom: "x" top: "y" }"#,
    );
    assert!(
        e.contains("'odd'") && e.contains("unknown V0 layer type 'frobnicate'"),
        "{e}"
    );
    let e = err(r#"
        input: "x"
        layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "xp" }
        layers { layer { name: "r" type: "relu" } bottom: "xp" top: "y" }
    "#);
    assert!(
        e.contains("layer #1 'r'") && e.contains("#0 'p'") && e.contains("'relu'"),
        "{e}"
    );
    let e = err(r#"
        input: "x"
        layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "xp" }
        layers { layer { name: "c" type: "conv" } bottom: "xp" bottom: "x" top: "y" }
    "#);
    assert!(e.contains("'c'") && e.contains("single bottom"), "{e}");
    let e = err(r#"layers { layer { name: "c" type: "conv" } bottom: "nowhere" top: "y" }"#);
    assert!(e.contains("'c'") && e.contains("'nowhere'"), "{e}");
}

#[test]
fn v1_params_rules_and_every_param_message() {
    let (net, report) = upgraded(text_net(
        r#"
        name: "v1"
        layers {
          name: "c" type: CONVOLUTION bottom: "a" top: "b"
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
          param: "shared_w" param: "shared_b" blob_share_mode: PERMISSIVE
          loss_weight: 0.5
          include { phase: TRAIN stage: "s" }
          exclude { not_stage: "t" }
          convolution_param { num_output: 3 kernel_size: 3 }
        }
        layers { name: "e" type: ELTWISE bottom: "b" bottom: "b" top: "e" eltwise_param { operation: MAX } }
        layers { name: "th" type: THRESHOLD bottom: "e" top: "th" threshold_param { threshold: 0.5 } }
        layers { name: "sl" type: SLICE bottom: "th" top: "s1" top: "s2" slice_param { slice_point: 1 } }
        layers { name: "l" type: SOFTMAX_LOSS bottom: "s1" bottom: "s2" loss_param { ignore_label: 3 } }
        layers { name: "untyped" }
    "#,
    ));
    assert_eq!(report.steps, [UpgradeStep::V1ToV2]);
    let expected = text_net(
        r#"
        name: "v1"
        layer {
          name: "c" type: "Convolution" bottom: "a" top: "b"
          loss_weight: 0.5
          param { name: "shared_w" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 1 }
          param { name: "shared_b" lr_mult: 2 decay_mult: 0 }
          include { phase: TRAIN stage: "s" }
          exclude { not_stage: "t" }
          convolution_param { num_output: 3 kernel_size: 3 }
        }
        layer { name: "e" type: "Eltwise" bottom: "b" bottom: "b" top: "e" eltwise_param { operation: MAX } }
        layer { name: "th" type: "Threshold" bottom: "e" top: "th" threshold_param { threshold: 0.5 } }
        layer { name: "sl" type: "Slice" bottom: "th" top: "s1" top: "s2" slice_param { slice_point: 1 } }
        layer { name: "l" type: "SoftmaxWithLoss" bottom: "s1" bottom: "s2" loss_param { ignore_label: 3 } }
        layer { name: "untyped" }
    "#,
    );
    assert_eq!(net, expected);
}

#[test]
fn v1_type_names() {
    use caffe_rs::proto::v1_layer_parameter::LayerType;
    let expected = [
        (LayerType::None, ""),
        (LayerType::Absval, "AbsVal"),
        (LayerType::Bnll, "BNLL"),
        (LayerType::Hdf5Data, "HDF5Data"),
        (LayerType::Im2col, "Im2col"),
        (LayerType::Lrn, "LRN"),
        (LayerType::Mvn, "MVN"),
        (LayerType::Relu, "ReLU"),
        (LayerType::SoftmaxLoss, "SoftmaxWithLoss"),
        (LayerType::Tanh, "TanH"),
        (
            LayerType::SigmoidCrossEntropyLoss,
            "SigmoidCrossEntropyLoss",
        ),
        (LayerType::Deconvolution, "Deconvolution"),
    ];
    for (t, name) in expected {
        assert_eq!(upgrade::upgrade_v1_layer_type(t), name);
    }
    // An enum value the schema does not know is an error naming the layer.
    let mut n = NetParameter {
        layers: vec![V1LayerParameter {
            name: Some("weird".into()),
            r#type: Some(999),
            ..Default::default()
        }],
        ..Default::default()
    };
    let e = format!("{:#}", upgrade_net(&mut n).unwrap_err());
    assert!(e.contains("layer #0 'weird'") && e.contains("999"), "{e}");
}

#[test]
fn v1_next_to_v2_layers_drops_the_v2_ones_with_a_warning() {
    let (net, report) = upgraded(text_net(
        r#"
        layer { name: "new" type: "ReLU" }
        layers { name: "old" type: RELU }
    "#,
    ));
    assert_eq!(net.layer.len(), 1);
    assert_eq!(net.layer[0].name(), "old");
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
}

#[test]
fn data_transformation_fields_move_to_transform_param() {
    let v1 = text_net(
        r#"
        layers { name: "d" type: DATA top: "a"
                 data_param { source: "db" batch_size: 4 scale: 0.1 mean_file: "m.binaryproto" crop_size: 3 mirror: true } }
        layers { name: "i" type: IMAGE_DATA top: "b" image_data_param { source: "l.txt" scale: 2 } }
        layers { name: "w" type: WINDOW_DATA top: "c" }
        layers { name: "r" type: RELU bottom: "a" top: "a" }
    "#,
    );
    assert!(upgrade::net_needs_data_upgrade(&v1));
    let (net, report) = upgraded(v1);
    assert_eq!(
        report.steps,
        [UpgradeStep::DataTransformation, UpgradeStep::V1ToV2]
    );
    // Like Caffe's CONVERT_LAYER_TRANSFORM_PARAM, every data layer visited gets a data parameter
    // and a transform_param, even when empty ("w").
    let expected = text_net(
        r#"
        layer { name: "d" type: "Data" top: "a"
                transform_param { scale: 0.1 mean_file: "m.binaryproto" crop_size: 3 mirror: true }
                data_param { source: "db" batch_size: 4 } }
        layer { name: "i" type: "ImageData" top: "b" transform_param { scale: 2 } image_data_param { source: "l.txt" } }
        layer { name: "w" type: "WindowData" top: "c" transform_param { } window_data_param { } }
        layer { name: "r" type: "ReLU" bottom: "a" top: "a" }
    "#,
    );
    assert_eq!(net, expected);
    assert!(net.layer[2].window_data_param.is_some() && net.layer[2].transform_param.is_some());
}

#[test]
fn input_fields_become_an_input_layer() {
    // input_dim: 4 values per input.
    let (n, report) = upgraded(text_net(
        r#"
        input: "data" input: "label"
        input_dim: 8 input_dim: 1 input_dim: 28 input_dim: 28
        input_dim: 8 input_dim: 1 input_dim: 1 input_dim: 1
        layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
    "#,
    ));
    assert_eq!(report.steps, [UpgradeStep::Input]);
    assert_eq!(
        n,
        text_net(
            r#"
        layer { name: "input" type: "Input" top: "data" top: "label"
                input_param { shape { dim: 8 dim: 1 dim: 28 dim: 28 } shape { dim: 8 dim: 1 dim: 1 dim: 1 } } }
        layer { name: "r" type: "ReLU" bottom: "data" top: "r" }
    "#
        )
    );
    // input_shape wins over input_dim.
    let (n, _) = upgraded(text_net(
        r#"
        input: "x" input_shape { dim: 2 dim: 5 } input_dim: 9 input_dim: 9 input_dim: 9 input_dim: 9
        layer { name: "r" type: "ReLU" bottom: "x" top: "x" }
    "#,
    ));
    assert_eq!(
        n.layer[0].input_param.as_ref().unwrap().shape,
        [BlobShape { dim: vec![2, 5] }]
    );
    assert!(n.input.is_empty() && n.input_shape.is_empty() && n.input_dim.is_empty());
    // An input without shapes (old caffemodels) is simply dropped.
    let (n, report) = upgraded(text_net(
        r#"input: "data" layer { name: "r" type: "ReLU" }"#,
    ));
    assert_eq!(report.steps, [UpgradeStep::Input]);
    assert_eq!(n, text_net(r#"layer { name: "r" type: "ReLU" }"#));
    // Too few shapes for the inputs is an error naming the input.
    let mut n = text_net(
        r#"input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 5"#,
    );
    let e = format!("{:#}", upgrade_net(&mut n).unwrap_err());
    assert!(e.contains("'b'") && e.contains("input_dim"), "{e}");
    let mut n = text_net(r#"input: "a" input: "b" input_shape { dim: 1 }"#);
    let e = format!("{:#}", upgrade_net(&mut n).unwrap_err());
    assert!(e.contains("'b'") && e.contains("input_shape"), "{e}");
}

#[test]
fn batch_norm_with_three_params_gets_zero_multipliers() {
    let (n, report) = upgraded(text_net(
        r#"
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                param { name: "m" lr_mult: 1 } param { decay_mult: 5 } param { share_mode: PERMISSIVE } }
        layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "x" param { lr_mult: 1 } param { lr_mult: 1 } }
        layer { name: "s" type: "Scale" param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 1 } }
    "#,
    ));
    assert_eq!(report.steps, [UpgradeStep::BatchNorm]);
    assert!(report.changed);
    let zero = |name: Option<&str>, share_mode: Option<i32>| ParamSpec {
        name: name.map(String::from),
        share_mode,
        lr_mult: Some(0.0),
        decay_mult: Some(0.0),
    };
    assert_eq!(
        n.layer[0].param,
        [zero(Some("m"), None), zero(None, None), zero(None, Some(1))]
    );
    // Only BatchNorm layers with exactly three params are touched.
    assert_eq!(
        n.layer[1]
            .param
            .iter()
            .map(|p| p.lr_mult)
            .collect::<Vec<_>>(),
        [Some(1.0), Some(1.0)]
    );
    assert!(n.layer[2].param.iter().all(|p| p.lr_mult == Some(1.0)));
    // Already fixed: Caffe still runs the pass, but nothing changes.
    let mut fixed = n.clone();
    assert!(net_needs_upgrade(&fixed));
    assert!(!upgrade_net(&mut fixed).unwrap());
    assert_eq!(fixed, n);
}

#[test]
fn modern_net_is_left_alone() {
    let modern = NetParameter {
        name: Some("m".into()),
        layer: vec![LayerParameter {
            name: Some("r".into()),
            r#type: Some("ReLU".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let (n, report) = upgraded(modern.clone());
    assert_eq!(n, modern);
    assert!(report.steps.is_empty() && !report.changed);
}

fn solver(src: &str) -> SolverParameter {
    parse_text(src, "solver.prototxt", "caffe.SolverParameter").unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn solver_type_enum_becomes_type_string() {
    for (old, new) in [
        ("SGD", "SGD"),
        ("NESTEROV", "Nesterov"),
        ("ADAGRAD", "AdaGrad"),
        ("RMSPROP", "RMSProp"),
        ("ADADELTA", "AdaDelta"),
        ("ADAM", "Adam"),
    ] {
        let mut s = solver(&format!("base_lr: 0.1 solver_type: {old}"));
        assert!(upgrade::solver_needs_type_upgrade(&s));
        assert!(upgrade_solver(&mut s).unwrap());
        assert_eq!(s.r#type.as_deref(), Some(new));
        assert_eq!(s.solver_type, None);
        assert_eq!(s.base_lr, Some(0.1));
    }
    // Nothing to do.
    let mut s = solver(r#"type: "Adam""#);
    assert!(!upgrade_solver(&mut s).unwrap());
    assert_eq!(s.r#type(), "Adam");
    // Both fields: an error in Caffe even when they agree.
    let mut s = solver(r#"type: "Adam" solver_type: ADAM"#);
    let e = format!("{:#}", upgrade_solver(&mut s).unwrap_err());
    assert!(
        e.contains("solver_type") && e.contains("ADAM") && e.contains("\"Adam\""),
        "{e}"
    );
    let mut s = SolverParameter {
        solver_type: Some(17),
        ..Default::default()
    };
    assert!(upgrade_solver(&mut s).is_err());
    assert_eq!(SolverType::Adam as i32, 5);
}
