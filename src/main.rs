//! The `caffe-rs` command line: Caffe's flag spellings normalised, then dispatch into tools/.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use caffe_rs::proto::Phase;
use caffe_rs::solver::SignalEffect;
use caffe_rs::tools;

#[derive(Parser)]
#[command(
    name = "caffe-rs",
    version,
    about = "Caffe's toolchain in one Rust binary: train, test, time and inspect Caffe models",
    long_about = "Caffe's toolchain in one Rust binary. Flags follow Caffe: -solver x, -solver=x, --solver x and --solver=x all work."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct NetStateArgs {
    /// Network phase (TRAIN or TEST)
    #[arg(long, default_value = "TEST", value_parser = parse_phase)]
    phase: Phase,
    /// Network level
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    level: i32,
    /// Network stages, comma-separated
    #[arg(long, value_delimiter = ',')]
    stage: Vec<String>,
}

#[derive(Subcommand)]
#[command(rename_all = "snake_case")]
enum Command {
    /// Print a net's layers: shapes, parameters, multiply-adds; with -weights the fine-tuning plan
    Inspect {
        /// The model definition (.prototxt)
        #[arg(long)]
        model: PathBuf,
        /// Trained weights (.caffemodel), comma-separated for several
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Output format: table, json or dot
        #[arg(long, default_value = "table")]
        format: String,
        #[command(flatten)]
        state: NetStateArgs,
    },
    /// Train or fine-tune a model (Caffe's `caffe train`)
    Train {
        /// The solver definition (.prototxt)
        #[arg(long)]
        solver: PathBuf,
        /// Weights to fine-tune from (.caffemodel), comma-separated
        #[arg(long)]
        weights: Option<String>,
        /// A .solverstate to resume training from
        #[arg(long)]
        snapshot: Option<PathBuf>,
        /// GPU device ids: 0, 0,1 or all (default: the solver's solver_mode)
        #[arg(long)]
        gpu: Option<String>,
        /// Network level of the train net
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        level: i32,
        /// Network stages of the train net, comma-separated
        #[arg(long, value_delimiter = ',')]
        stage: Vec<String>,
        /// What SIGINT does: stop, snapshot or none
        #[arg(long = "sigint_effect", default_value = "stop")]
        sigint_effect: SignalEffect,
        /// What SIGHUP does: stop, snapshot or none
        #[arg(long = "sighup_effect", default_value = "snapshot")]
        sighup_effect: SignalEffect,
    },
    /// Score a model over a number of batches (Caffe's `caffe test`)
    Test {
        /// The model definition (.prototxt)
        #[arg(long)]
        model: PathBuf,
        /// Trained weights (.caffemodel), comma-separated for several
        #[arg(long)]
        weights: Option<String>,
        /// Number of batches
        #[arg(long, default_value_t = 50)]
        iterations: i32,
        /// GPU mode on these adapters (0, 0,1 or all; indices of device_query); CPU mode without it
        #[arg(long)]
        gpu: Option<String>,
        /// Network level
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        level: i32,
        /// Network stages, comma-separated
        #[arg(long, value_delimiter = ',')]
        stage: Vec<String>,
    },
    /// Benchmark a model's per-layer forward and backward time (Caffe's `caffe time`)
    Time {
        /// The model definition (.prototxt)
        #[arg(long)]
        model: PathBuf,
        /// Trained weights (.caffemodel), comma-separated for several
        #[arg(long)]
        weights: Option<String>,
        /// Number of timed iterations
        #[arg(long, default_value_t = 50)]
        iterations: i32,
        /// GPU mode on these adapters (0, 0,1 or all; indices of device_query); CPU mode without it
        #[arg(long)]
        gpu: Option<String>,
        /// Network phase (TRAIN or TEST)
        #[arg(long, default_value = "TRAIN", value_parser = parse_phase)]
        phase: Phase,
        /// Network level
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        level: i32,
        /// Network stages, comma-separated
        #[arg(long, value_delimiter = ',')]
        stage: Vec<String>,
        /// Time forwards only, keeping nothing for a backward (a deployed net's inference time;
        /// not in Caffe)
        #[arg(long = "forward_only", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
        forward_only: bool,
    },
    /// Run a net on tensors from a safetensors file and write every blob (and gradients)
    Forward {
        /// The model definition (.prototxt)
        #[arg(long)]
        model: PathBuf,
        /// Trained weights (.caffemodel), comma-separated for several
        #[arg(long)]
        weights: Option<String>,
        /// Tensors named input.<blob> (and top_diff.<blob> with -backward)
        #[arg(long)]
        input: Option<PathBuf>,
        /// Where to write output.<blob> (bottom_diff.<blob>, param_diff.<layer>.<i>)
        #[arg(long)]
        output: PathBuf,
        /// Only these blobs, comma-separated
        #[arg(long, value_delimiter = ',')]
        blobs: Vec<String>,
        /// Also run backward
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
        backward: bool,
        /// GPU mode on these adapters (0, 0,1 or all; indices of device_query); CPU mode without it
        #[arg(long)]
        gpu: Option<String>,
        #[command(flatten)]
        state: NetStateArgs,
    },
    /// List the GPU adapters (Caffe's `caffe device_query`)
    DeviceQuery {
        /// GPU mode on these adapters (0, 0,1 or all; indices of device_query); CPU mode without it
        #[arg(long)]
        gpu: Option<String>,
    },
    /// Convert weights: .caffemodel -> .safetensors, or .safetensors -> .caffemodel (with -model)
    Convert {
        input: PathBuf,
        output: PathBuf,
        /// The net (deploy .prototxt): needed for -fold_bn and to check shapes when importing
        #[arg(long)]
        model: Option<PathBuf>,
        /// Tensor names: raw (<layer>.<i>) or pytorch (<layer>.weight, .bias, ...)
        #[arg(long, default_value = "raw")]
        names: caffe_rs::format::safetensors::NameScheme,
        /// Fold BatchNorm (+Scale) into the preceding Convolution / InnerProduct
        #[arg(long = "fold_bn", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
        fold_bn: bool,
        /// f32, f16 or bf16
        #[arg(long, default_value = "f32")]
        dtype: caffe_rs::format::safetensors::DType,
    },
    /// Convert a set of images and a list file into an LMDB/LevelDB of Datum records
    ConvertImageset {
        /// Folder prefixed to every path of the list (keep the trailing /)
        root_folder: String,
        /// Lines of "path label"
        list_file: String,
        db_name: String,
        /// Read the images as greyscale
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
        gray: bool,
        /// Shuffle the order of the images
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
        shuffle: bool,
        /// lmdb or leveldb
        #[arg(long, default_value = "lmdb")]
        backend: String,
        #[arg(long = "resize_width", default_value_t = 0)]
        resize_width: i32,
        #[arg(long = "resize_height", default_value_t = 0)]
        resize_height: i32,
        /// Check that all records have the same size
        #[arg(long = "check_size", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
        check_size: bool,
        /// Store the encoded image
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
        encoded: bool,
        /// png or jpg (with -encoded)
        #[arg(long = "encode_type", default_value = "")]
        encode_type: String,
    },
    /// Compute the mean image of a database into a .binaryproto
    ComputeImageMean {
        input_db: String,
        output_file: Option<String>,
        #[arg(long, default_value = "lmdb")]
        backend: String,
    },
    /// Train LeNet on the bundled digits, snapshot, convert and inspect it (the README demo)
    Demo {
        /// The folder holding the digits and the recipe
        #[arg(long, default_value = "fixtures/digits")]
        data: PathBuf,
        /// Output folder (the working directory of the run)
        #[arg(long, default_value = "demo_output")]
        dir: PathBuf,
        /// GPU mode on these adapters (0, 0,1 or all; indices of device_query); CPU mode without it
        #[arg(long)]
        gpu: Option<String>,
    },
    /// Plot training curves (loss, lr, test outputs) from a train log, as plot_training_log.py
    Plot {
        /// The log: the stderr of `caffe train` or `caffe-rs train` (real Caffe's logs too)
        log: PathBuf,
        /// The picture: .svg, or .png (rasterised by rsvg-convert when installed)
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// Also write parse_log.py's tables to <prefix>.train and <prefix>.test
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Horizontal axis: iterations or seconds
        #[arg(long = "x_axis", short = 'x', default_value = "iterations")]
        x_axis: tools::plot::XAxis,
    },
    /// Upgrade a V0/V1 net (.prototxt or .caffemodel) or a solver file to the current format
    Upgrade { input: PathBuf, output: PathBuf },
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    match s.to_ascii_uppercase().as_str() {
        "TRAIN" => Ok(Phase::Train),
        "TEST" => Ok(Phase::Test),
        _ => Err(format!("unknown phase \"{s}\" (expected TRAIN or TEST)")),
    }
}

/// Caffe (gflags) accepts `-flag value` and `-flag=value`; clap wants `--flag`.
fn normalise_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    args.enumerate()
        .map(|(i, a)| {
            let bytes = a.as_bytes();
            if i > 0 && bytes.len() > 2 && bytes[0] == b'-' && bytes[1].is_ascii_alphabetic() {
                format!("-{a}")
            } else {
                a
            }
        })
        .collect()
}

/// CPU mode unless `-gpu` is given, as in Caffe's test/time tools.
fn engine(gpu: Option<&str>) -> Result<Box<dyn caffe_rs::engine::Engine>> {
    match gpu {
        Some(list) => tools::engine_for_gpu_flag(list),
        None => Ok(Box::new(caffe_rs::engine::cpu::CpuEngine::new())),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Inspect {
            model,
            weights,
            format,
            state,
        } => {
            let out = tools::inspect::run(&tools::inspect::InspectArgs {
                model,
                weights,
                phase: state.phase,
                level: state.level,
                stages: state.stage,
                format,
            })?;
            print!("{out}");
        }
        Command::Train {
            solver,
            weights,
            snapshot,
            gpu,
            level,
            stage,
            sigint_effect,
            sighup_effect,
        } => {
            tools::train::run(&tools::train::TrainArgs {
                solver,
                weights,
                snapshot,
                gpu,
                level,
                stages: stage,
                sigint_effect,
                sighup_effect,
            })?;
        }
        Command::Test {
            model,
            weights,
            iterations,
            gpu,
            level,
            stage,
        } => {
            let mut eng = engine(gpu.as_deref())?;
            tools::test::run(
                eng.as_mut(),
                &tools::test::TestArgs {
                    model,
                    weights,
                    iterations,
                    level,
                    stages: stage,
                },
            )?;
        }
        Command::Time {
            model,
            weights,
            iterations,
            gpu,
            phase,
            level,
            stage,
            forward_only,
        } => {
            let mut eng = engine(gpu.as_deref())?;
            tools::time::run(
                eng.as_mut(),
                &tools::time::TimeArgs {
                    model,
                    weights,
                    iterations,
                    phase,
                    level,
                    stages: stage,
                    gpu: gpu.is_some(),
                    forward_only,
                },
            )?;
        }
        Command::Forward {
            model,
            weights,
            input,
            output,
            blobs,
            backward,
            gpu,
            state,
        } => {
            let mut eng = engine(gpu.as_deref())?;
            let opts = tools::forward::ForwardOptions {
                phase: state.phase,
                level: state.level,
                stages: state.stage,
                backward,
                blobs,
                ..Default::default()
            };
            let n = tools::forward::run(
                eng.as_mut(),
                &tools::forward::ForwardArgs {
                    model,
                    weights,
                    input,
                    output: output.clone(),
                    opts,
                },
            )?;
            eprintln!("Wrote {n} tensors to {}", output.display());
        }
        Command::DeviceQuery { gpu } => {
            print!("{}", tools::device_query::report(gpu.as_deref())?);
        }
        Command::Convert {
            input,
            output,
            model,
            names,
            fold_bn,
            dtype,
        } => {
            for line in tools::convert::run(&tools::convert::ConvertArgs {
                input,
                output,
                model,
                names,
                fold_bn,
                dtype,
            })? {
                eprintln!("{line}");
            }
        }
        Command::ConvertImageset {
            root_folder,
            list_file,
            db_name,
            gray,
            shuffle,
            backend,
            resize_width,
            resize_height,
            check_size,
            encoded,
            encode_type,
        } => {
            tools::convert_imageset::run(&tools::convert_imageset::ConvertImagesetArgs {
                root_folder,
                list_file,
                db_name,
                gray,
                shuffle,
                backend,
                resize_width,
                resize_height,
                check_size,
                encoded,
                encode_type,
                seed: None,
            })?;
        }
        Command::ComputeImageMean {
            input_db,
            output_file,
            backend,
        } => {
            tools::compute_image_mean::run(&tools::compute_image_mean::ComputeImageMeanArgs {
                input_db,
                output_file,
                backend,
            })?;
        }
        Command::Demo { data, dir, gpu } => {
            tools::demo::run(&tools::demo::DemoArgs { data, dir, gpu })?;
        }
        Command::Plot {
            log,
            output,
            csv,
            x_axis,
        } => {
            let report = tools::plot::run(&tools::plot::PlotArgs {
                log,
                output,
                csv,
                x_axis,
            })?;
            eprintln!("{report}");
        }
        Command::Upgrade { input, output } => {
            let report = tools::upgrade::run(&input, &output)?;
            eprintln!("{report}");
        }
    }
    Ok(())
}

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid" when it is unset (CI, ssh, cron); give
/// them a private directory so GPU mode stays quiet.
fn ensure_runtime_dir() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("caffe-rs-runtime-{user}"));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

fn main() -> ExitCode {
    ensure_runtime_dir();
    let cli = match Cli::try_parse_from(normalise_flags(std::env::args())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
