//! Caffe's own recipes, run unchanged: the prototxt files of ../shared/caffe_models are copied verbatim
//! into a temporary directory laid out like a Caffe checkout (their paths are relative to the working
//! directory), the datasets they expect are made from small real images with our own
//! `convert_imageset` / `compute_image_mean`, and `caffe-rs train` runs them from that directory.
//! Long runs are shortened the way a Caffe user would: SIGINT with `-sigint_effect stop` once the log
//! shows what we want to check (Caffe then snapshots and exits cleanly).
//!
//! The recipes ask for `solver_mode: GPU`. Like `CUDA_VISIBLE_DEVICES=` for Caffe, the CPU-mode runs
//! hide the GPU adapters from the process (`WGPU_BACKEND=none`); caffe-rs then trains in CPU mode
//! after one warning, as it does on a machine without a GPU. The GPU-mode run passes `-gpu 0`.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use caffe_rs::proto::{BlobProto, LayerParameter, NetParameter, Phase};

/// Environment that hides every GPU adapter (CPU mode for `solver_mode: GPU` recipes).
const CPU_ONLY: &[(&str, &str)] = &[("WGPU_BACKEND", "none")];

fn caffe_models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/caffe_models")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A temporary Caffe checkout; removed when the test passes, kept (and named) when it fails.
struct Checkout {
    root: PathBuf,
}

impl Checkout {
    fn new(name: &str) -> Checkout {
        let root = std::env::temp_dir()
            .join(format!("caffe-rs-recipes-{}", std::process::id()))
            .join(name);
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Checkout { root }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Copies every file of `caffe_models/<rel>` verbatim to `<root>/<rel>`.
    fn copy_recipe(&self, rel: &str) {
        let from = caffe_models().join(rel);
        let to = self.path(rel);
        std::fs::create_dir_all(&to).unwrap();
        for e in std::fs::read_dir(&from).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                let dest = to.join(p.file_name().unwrap());
                std::fs::copy(&p, &dest).unwrap();
                assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&dest).unwrap());
            }
        }
    }

    /// Runs a caffe-rs command from the checkout and returns its stdout; panics with stderr on failure.
    fn caffe(&self, args: &[&str]) -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_caffe-rs"))
            .args(args)
            .current_dir(&self.root)
            .envs(CPU_ONLY.iter().copied())
            .output()
            .expect("run caffe-rs");
        assert!(
            o.status.success(),
            "caffe-rs {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `caffe-rs train` from the checkout; `stop` sees the log so far after each line and returns true
    /// once the run may be stopped (then SIGINT is sent once). Panics if the run takes longer than
    /// `limit`, fails, or ends before `stop` was satisfied.
    fn train(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        limit: Duration,
        stop: impl Fn(&Log) -> bool,
    ) -> Log {
        let start = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_caffe-rs"))
            .arg("train")
            .args(args)
            .current_dir(&self.root)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run caffe-rs train");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // Reads to the end (never stops early, so the child never blocks on a full pipe).
        let reader = std::thread::spawn(move || {
            let mut stderr = BufReader::new(stderr);
            let mut buf = Vec::new();
            while stderr.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                let _ = tx.send(line);
                buf.clear();
            }
        });
        let mut log = Log::default();
        let mut signalled = false;
        loop {
            let left = limit.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    eprintln!("{line}");
                    if env == CPU_ONLY && line.contains("] Using ") && !line.contains("Using CPU") {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!("WGPU_BACKEND=none did not hide the GPU adapters: {line}");
                    }
                    log.lines.push(line);
                    if !signalled && stop(&log) {
                        let pid = child.id().to_string();
                        let s = Command::new("kill")
                            .args(["-INT", &pid])
                            .status()
                            .expect("run kill");
                        assert!(s.success(), "kill -INT {pid} failed");
                        signalled = true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "caffe-rs train {} took longer than {limit:?}",
                        args.join(" ")
                    );
                }
            }
        }
        reader.join().unwrap();
        let status = child.wait().unwrap();
        log.secs = start.elapsed().as_secs_f64();
        eprintln!("caffe-rs train {} ran {:.1} s", args.join(" "), log.secs);
        assert!(
            status.success(),
            "caffe-rs train {} failed ({status})",
            args.join(" ")
        );
        assert!(
            signalled,
            "the run ended before reaching the point where it should be stopped"
        );
        assert!(
            log.has("Optimization stopped early."),
            "SIGINT did not stop the run early"
        );
        log
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("recipe checkout kept at {}", self.root.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.root);
            // The per-process parent goes with its last checkout.
            let _ = std::fs::remove_dir(self.root.parent().unwrap());
        }
    }
}

/// The stderr log of a training run.
#[derive(Default)]
struct Log {
    lines: Vec<String>,
    secs: f64,
}

impl Log {
    fn has(&self, text: &str) -> bool {
        self.lines.iter().any(|l| l.contains(text))
    }

    /// `Iteration N (x iter/s, ...), loss = X` lines as (N, X).
    fn losses(&self) -> Vec<(u32, f32)> {
        self.lines
            .iter()
            .filter_map(|l| {
                let rest = &l[l.find("] Iteration ")? + "] Iteration ".len()..];
                let (iter, rest) = rest.split_once(" (")?;
                let loss = rest.split_once("), loss = ")?.1;
                Some((iter.parse().ok()?, loss.trim().parse().ok()?))
            })
            .collect()
    }

    /// `Test net output #k: name = v` lines as (iteration of the test, name, v).
    fn tests(&self) -> Vec<(u32, String, f32)> {
        let mut iter = None;
        let mut out = Vec::new();
        for l in &self.lines {
            if let Some(i) = l.find("] Iteration ")
                && let Some(rest) = l[i + "] Iteration ".len()..].strip_suffix(", Testing net (#0)")
            {
                iter = rest.parse().ok();
            } else if let Some(i) = l.find("Test net output #") {
                let (_, rest) = l[i..].split_once(": ").unwrap();
                let (name, value) = rest.split_once(" = ").unwrap();
                let value = value.split(' ').next().unwrap().parse().unwrap();
                out.push((
                    iter.expect("test output before 'Testing net'"),
                    name.to_string(),
                    value,
                ));
            }
        }
        out
    }

    /// The caffemodel of the snapshot Caffe writes when the run stops.
    fn snapshot(&self) -> &str {
        self.lines
            .iter()
            .find_map(|l| l.split("Snapshotting to binary proto file ").nth(1))
            .expect("no snapshot in the log")
    }

    fn test_output(&self, iter: u32, name: &str) -> Option<f32> {
        self.tests()
            .into_iter()
            .find(|(i, n, _)| *i == iter && n == name)
            .map(|t| t.2)
    }
}

/// xorshift64*: reproducible noise for the generated images and weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Ten well separated colours (RGB).
const PALETTE: [[u8; 3]; 10] = [
    [220, 30, 30],
    [30, 200, 40],
    [40, 60, 230],
    [240, 220, 30],
    [30, 210, 220],
    [210, 40, 210],
    [250, 250, 250],
    [10, 10, 10],
    [250, 140, 20],
    [120, 60, 20],
];

/// A `size`x`size` RGB picture of class `class`: grey noise with a square of the class's colour (and,
/// beyond ten classes, a second colour in its centre) at a random place and size.
fn pattern_image(size: usize, class: usize, rng: &mut Rng) -> Vec<u8> {
    let mut img = vec![0u8; size * size * 3];
    for p in img.chunks_mut(3) {
        let g = 90.0 + 80.0 * rng.unit();
        for (c, v) in p.iter_mut().enumerate() {
            *v = (g + 20.0 * rng.unit() - 10.0 * c as f32) as u8;
        }
    }
    let side = size * 2 / 5 + rng.below(size / 5 + 1);
    let (x0, y0) = (rng.below(size - side + 1), rng.below(size - side + 1));
    let colour = PALETTE[class % 10];
    let inner = PALETTE[(class / 10 + class + 3) % 10];
    for y in y0..y0 + side {
        for x in x0..x0 + side {
            let centre = class >= 10
                && (y - y0) * 3 >= side
                && (y - y0) * 3 < 2 * side
                && (x - x0) * 3 >= side
                && (x - x0) * 3 < 2 * side;
            let c = if centre { inner } else { colour };
            for k in 0..3 {
                let noise = 24.0 * rng.unit() - 12.0;
                img[(y * size + x) * 3 + k] = (c[k] as f32 + noise).clamp(0.0, 255.0) as u8;
            }
        }
    }
    img
}

fn write_png(path: &Path, size: usize, rgb: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut enc = png::Encoder::new(file, size as u32, size as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(rgb).unwrap();
}

/// Writes `count` pattern images of `classes` classes (round-robin) under `<checkout>/<folder>` and a
/// list file `<checkout>/<list>` whose lines are `<prefix><file> <label>`.
#[allow(clippy::too_many_arguments)]
fn make_images(
    co: &Checkout,
    folder: &str,
    list: &str,
    prefix: &str,
    count: usize,
    classes: usize,
    size: usize,
    seed: u64,
) {
    let mut rng = Rng(seed);
    let mut lines = String::new();
    for i in 0..count {
        let class = i % classes;
        let name = format!("{i:04}_{class}.png");
        write_png(
            &co.path(folder).join(&name),
            size,
            &pattern_image(size, class, &mut rng),
        );
        lines.push_str(&format!("{prefix}{name} {class}\n"));
    }
    let list = co.path(list);
    std::fs::create_dir_all(list.parent().unwrap()).unwrap();
    std::fs::write(list, lines).unwrap();
}

/// Checks the shared shape of a learning run: the loss fell and the test at `iter` beats `min_accuracy`.
fn assert_learned(log: &Log, iter: u32, min_accuracy: f32) {
    let losses = log.losses();
    let first = losses.first().expect("no loss line").1;
    let last = losses
        .iter()
        .find(|(i, _)| *i == iter)
        .expect("no loss line at the test iteration")
        .1;
    let accuracy = log.test_output(iter, "accuracy").expect("no test accuracy");
    assert!(losses.iter().all(|(_, l)| l.is_finite()), "{losses:?}");
    assert!(last < 0.5 * first, "loss did not fall: {losses:?}");
    assert!(
        accuracy > min_accuracy,
        "test accuracy at iteration {iter} is {accuracy}"
    );
    eprintln!(
        "loss {first} -> {last}, test accuracy {accuracy} at iteration {iter}, {:.1} s",
        log.secs
    );
}

/// The stop condition "the test at iteration `iter` has printed its outputs".
fn tested_at(iter: u32, outputs: usize) -> impl Fn(&Log) -> bool {
    move |log: &Log| log.tests().iter().filter(|(i, _, _)| *i == iter).count() >= outputs
}

/// The stop condition "the loss line of iteration `iter` was printed".
fn iteration_logged(iter: u32) -> impl Fn(&Log) -> bool {
    move |log: &Log| {
        log.lines
            .last()
            .is_some_and(|l| l.contains(&format!("] Iteration {iter} (")) && l.contains("loss = "))
    }
}

/// examples/mnist with its two LMDBs made from the scikit-learn digits, resized to MNIST's 28x28.
fn mnist_checkout(name: &str) -> Checkout {
    let co = Checkout::new(name);
    co.copy_recipe("examples/mnist");
    let digits = format!("{}/", fixtures().join("digits").display());
    for (list, db) in [
        ("train.txt", "examples/mnist/mnist_train_lmdb"),
        ("test.txt", "examples/mnist/mnist_test_lmdb"),
    ] {
        let list = format!("{digits}{list}");
        co.caffe(&[
            "convert_imageset",
            "-gray",
            "-resize_width",
            "28",
            "-resize_height",
            "28",
            &digits,
            &list,
            db,
        ]);
    }
    co
}

#[test]
fn lenet_solver_learns_the_digits_in_cpu_mode() {
    let co = mnist_checkout("lenet_cpu");
    let log = co.train(
        &[
            "-solver",
            "examples/mnist/lenet_solver.prototxt",
            "-sigint_effect",
            "stop",
        ],
        CPU_ONLY,
        Duration::from_secs(900),
        tested_at(500, 2),
    );
    assert!(log.has("running in CPU mode"));
    assert_learned(&log, 500, 0.5);
    // SIGINT lands in iteration 500 or 501; Caffe snapshots where it stopped.
    let snapshot = log.snapshot();
    assert!(
        snapshot.starts_with("examples/mnist/lenet_iter_50"),
        "{snapshot}"
    );
    assert!(co.path(snapshot).exists());
}

#[test]
fn lenet_solver_runs_in_gpu_mode() {
    let co = mnist_checkout("lenet_gpu");
    let log = co.train(
        &[
            "-solver",
            "examples/mnist/lenet_solver.prototxt",
            "-gpu",
            "0",
            "-sigint_effect",
            "stop",
        ],
        &[],
        Duration::from_secs(600),
        iteration_logged(0),
    );
    assert!(
        !log.has("running in CPU mode") && !log.has("Using CPU"),
        "no GPU adapter: install mesa-vulkan-drivers"
    );
    let accuracy = log
        .test_output(0, "accuracy")
        .expect("no test at iteration 0");
    assert!(
        (0.0..=0.5).contains(&accuracy),
        "an untrained net scores {accuracy}"
    );
    let loss = log.losses()[0].1;
    assert!(loss.is_finite() && loss > 1.0 && loss < 5.0, "loss {loss}");
    let snapshot = log.snapshot();
    assert!(
        snapshot.starts_with("examples/mnist/lenet_iter_"),
        "{snapshot}"
    );
    assert!(co.path(snapshot).exists());
}

/// `caffe-rs test` of `model` with `weights` from the checkout: the mean of each output ("Loss" and
/// the `name = value` lines after the batches).
fn score(co: &Checkout, model: &str, weights: &str, iterations: u32) -> (f32, f32) {
    let o = Command::new(env!("CARGO_BIN_EXE_caffe-rs"))
        .args([
            "test",
            "-model",
            model,
            "-weights",
            weights,
            "-iterations",
            &iterations.to_string(),
        ])
        .current_dir(&co.root)
        .envs(CPU_ONLY.iter().copied())
        .output()
        .expect("run caffe-rs test");
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "caffe-rs test failed:\n{log}");
    let value = |key: &str| -> f32 {
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no '{key}' in\n{log}"));
        line.split(key)
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (value("] accuracy = "), value("] Loss: "))
}

#[test]
fn cifar10_quick_solver_learns_coloured_patterns() {
    let co = Checkout::new("cifar10");
    co.copy_recipe("examples/cifar10");
    let root = format!("{}/", co.root.display());
    make_images(
        &co,
        "data/cifar10/train",
        "data/cifar10/train.txt",
        "data/cifar10/train/",
        1000,
        10,
        32,
        1,
    );
    make_images(
        &co,
        "data/cifar10/test",
        "data/cifar10/test.txt",
        "data/cifar10/test/",
        200,
        10,
        32,
        2,
    );
    co.caffe(&[
        "convert_imageset",
        "-shuffle",
        &root,
        "data/cifar10/train.txt",
        "examples/cifar10/cifar10_train_lmdb",
    ]);
    co.caffe(&[
        "convert_imageset",
        &root,
        "data/cifar10/test.txt",
        "examples/cifar10/cifar10_test_lmdb",
    ]);
    co.caffe(&[
        "compute_image_mean",
        "examples/cifar10/cifar10_train_lmdb",
        "examples/cifar10/mean.binaryproto",
    ]);
    // The recipe's first test comes at iteration 500, several minutes on two CPU cores: stop after
    // the loss line of iteration 100 instead (Caffe snapshots on the way out) and score that snapshot
    // on the recipe's own test net, over the whole test set.
    let log = co.train(
        &[
            "-solver",
            "examples/cifar10/cifar10_quick_solver.prototxt",
            "-sigint_effect",
            "stop",
        ],
        CPU_ONLY,
        Duration::from_secs(1800),
        iteration_logged(100),
    );
    let losses = log.losses();
    let (first, last) = (
        losses[0].1,
        losses.iter().find(|(i, _)| *i == 100).unwrap().1,
    );
    assert!(
        losses.iter().all(|(_, l)| l.is_finite()) && last < 0.5 * first,
        "loss did not fall: {losses:?}"
    );
    let initial = log
        .test_output(0, "accuracy")
        .expect("no test at iteration 0");
    let (accuracy, test_loss) = score(
        &co,
        "examples/cifar10/cifar10_quick_train_test.prototxt",
        log.snapshot(),
        2,
    );
    assert!(
        accuracy > 0.2,
        "test accuracy of {} is {accuracy} (at iteration 0: {initial})",
        log.snapshot()
    );
    assert!(
        test_loss < log.test_output(0, "loss").unwrap(),
        "test loss {test_loss}"
    );
    eprintln!(
        "cifar10: loss {first} -> {last}; test accuracy {initial} -> {accuracy} (loss {test_loss}); {:.1} s",
        log.secs
    );
}

/// A CaffeNet caffemodel (bvlc_reference_caffenet's layers and shapes, fc8 included) with random weights.
fn random_caffenet(path: &Path) -> NetParameter {
    let deploy = caffe_models().join("models/bvlc_reference_caffenet/deploy.prototxt");
    let net = caffe_rs::format::read_net_prototxt(&deploy).unwrap();
    let state = caffe_rs::net::state::make_state(&net, Phase::Test, 0, &[]);
    let graph =
        caffe_rs::net::NetGraph::build(&net, &state, caffe_rs::net::Strictness::Strict).unwrap();
    let mut rng = Rng(7);
    let mut caffenet = NetParameter {
        name: Some("CaffeNet".into()),
        ..Default::default()
    };
    for node in graph.layers.iter().filter(|n| !n.param_defs.is_empty()) {
        let mut layer = LayerParameter {
            name: Some(node.name().into()),
            r#type: Some(node.type_name().into()),
            ..Default::default()
        };
        for def in &node.param_defs {
            let count: usize = def.shape.iter().product();
            // LeCun-uniform weights keep the activations in range; biases small.
            let fan_in = if def.shape.len() > 1 {
                count / def.shape[0]
            } else {
                1
            };
            let a = if def.shape.len() > 1 {
                (3.0 / fan_in as f32).sqrt()
            } else {
                0.01
            };
            let data = (0..count).map(|_| a * (2.0 * rng.unit() - 1.0)).collect();
            layer
                .blobs
                .push(BlobProto::from_shape_data(&def.shape, data));
        }
        caffenet.layer.push(layer);
    }
    let names: Vec<_> = caffenet
        .layer
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"
        ]
    );
    caffe_rs::format::caffemodel::write_net_binary(path, &caffenet).unwrap();
    caffenet
}

/// The row of `layer` in `inspect`'s table (columns: index, name, type, ...).
fn layer_row<'a>(table: &'a str, layer: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(layer))
        .unwrap_or_else(|| panic!("no row for {layer} in\n{table}"))
}

#[test]
fn finetune_flickr_style_loads_caffenet_and_trains() {
    let co = Checkout::new("flickr_style");
    co.copy_recipe("models/finetune_flickr_style");
    co.copy_recipe("models/bvlc_reference_caffenet");
    let root = format!("{}/", co.root.display());
    // Image lists as Caffe's assemble_data.py writes them: paths relative to the working directory.
    make_images(
        &co,
        "data/flickr_style/images",
        "data/flickr_style/train.txt",
        "data/flickr_style/images/",
        20,
        20,
        256,
        3,
    );
    make_images(
        &co,
        "data/flickr_style/images_test",
        "data/flickr_style/test.txt",
        "data/flickr_style/images_test/",
        10,
        20,
        256,
        4,
    );
    // The ImageNet mean the recipe subtracts, computed over our own images.
    co.caffe(&[
        "convert_imageset",
        &root,
        "data/flickr_style/train.txt",
        "data/ilsvrc12/mean_source_lmdb",
    ]);
    co.caffe(&[
        "compute_image_mean",
        "data/ilsvrc12/mean_source_lmdb",
        "data/ilsvrc12/imagenet_mean.binaryproto",
    ]);
    let weights = "models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel";
    let caffenet = random_caffenet(&co.path(weights));

    // The fine-tuning plan: every CaffeNet layer but fc8 is loaded, fc8_flickr starts from its filler.
    let plan = co.caffe(&[
        "inspect",
        "-model",
        "models/finetune_flickr_style/train_val.prototxt",
        "-weights",
        weights,
    ]);
    for layer in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"] {
        let row = layer_row(&plan, layer);
        assert!(
            row.contains("loaded") && !row.contains("initialised"),
            "{layer}: {row}"
        );
    }
    let row = layer_row(&plan, "fc8_flickr");
    assert!(row.contains("initialised by gaussian"), "{row}");
    assert!(
        plan.contains("layers of the file the net ignores: fc8"),
        "{plan}"
    );

    // The solver tests at iteration 0 (test_initialization defaults to true): 100 batches of 50
    // CaffeNet forwards before the first training step; a SIGINT during that test would stop the run
    // before any step, so the run is stopped after the loss line of iteration 0 (one step).
    let log = co.train(
        &[
            "-solver",
            "models/finetune_flickr_style/solver.prototxt",
            "-weights",
            weights,
            "-sigint_effect",
            "stop",
        ],
        CPU_ONLY,
        Duration::from_secs(1800),
        iteration_logged(0),
    );
    assert!(
        log.has("Ignoring source layer fc8"),
        "fc8 of CaffeNet should be skipped"
    );
    let complaints: Vec<_> = log
        .lines
        .iter()
        .filter(|l| l.starts_with('W') || l.starts_with('E'))
        .collect();
    assert!(complaints.is_empty(), "{complaints:?}");
    let losses = log.losses();
    assert!(
        !losses.is_empty() && losses.iter().all(|(_, l)| l.is_finite()),
        "{losses:?}"
    );
    let initial = log
        .test_output(0, "accuracy")
        .expect("no test at iteration 0");
    // The snapshot written on the way out holds CaffeNet's weights after one small SGD step (the
    // recipe's gaussian fillers would be far from them), and a fresh fc8_flickr.
    let tuned = caffe_rs::format::caffemodel::read_net_binary(&co.path(log.snapshot())).unwrap();
    for layer in &caffenet.layer[..7] {
        let after = tuned
            .layer
            .iter()
            .find(|l| l.name() == layer.name())
            .expect("layer in the snapshot");
        for (a, b) in layer.blobs.iter().zip(&after.blobs) {
            assert_eq!(a.data.len(), b.data.len(), "{}", layer.name());
            let moved = a
                .data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| (x - y).abs())
                .sum::<f32>();
            let size = a.data.iter().map(|x| x.abs()).sum::<f32>();
            assert!(
                moved < 0.1 * size,
                "{}: moved by {moved} (of {size}): not loaded from the caffemodel?",
                layer.name()
            );
        }
    }
    assert!(tuned.layer.iter().any(|l| l.name() == "fc8_flickr"));
    eprintln!(
        "flickr fine-tuning: test accuracy {initial} at iteration 0, losses {losses:?}, {:.1} s",
        log.secs
    );
}

#[test]
fn googlenet_quick_solver_trains() {
    let co = Checkout::new("googlenet");
    co.copy_recipe("models/bvlc_googlenet");
    let root = format!("{}/", co.root.display());
    make_images(
        &co,
        "data/ilsvrc12/train",
        "data/ilsvrc12/train.txt",
        "data/ilsvrc12/train/",
        40,
        4,
        256,
        5,
    );
    make_images(
        &co,
        "data/ilsvrc12/val",
        "data/ilsvrc12/val.txt",
        "data/ilsvrc12/val/",
        10,
        4,
        256,
        6,
    );
    co.caffe(&[
        "convert_imageset",
        "-shuffle",
        &root,
        "data/ilsvrc12/train.txt",
        "examples/imagenet/ilsvrc12_train_lmdb",
    ]);
    co.caffe(&[
        "convert_imageset",
        &root,
        "data/ilsvrc12/val.txt",
        "examples/imagenet/ilsvrc12_val_lmdb",
    ]);
    let log = co.train(
        &[
            "-solver",
            "models/bvlc_googlenet/quick_solver.prototxt",
            "-sigint_effect",
            "stop",
        ],
        CPU_ONLY,
        Duration::from_secs(900),
        iteration_logged(0),
    );
    let losses = log.losses();
    assert!(
        !losses.is_empty() && losses.iter().all(|(_, l)| l.is_finite()),
        "{losses:?}"
    );
    let snapshot = log.snapshot();
    assert!(
        snapshot.starts_with("models/bvlc_googlenet/bvlc_googlenet_quick_iter_"),
        "{snapshot}"
    );
    assert!(co.path(snapshot).exists());
    eprintln!("googlenet: losses {losses:?}, {:.1} s", log.secs);
}
