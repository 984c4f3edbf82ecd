//! The `facedetect` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use clap::{Parser, Subcommand};
use concrexit_facedetection::decode::{DecodeLimits, open_image};
use concrexit_facedetection::geometry::Rect;
use concrexit_facedetection::logging::{self, LogFormat};
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, Face, FacePipeline};
use concrexit_facedetection::service::batch::BatchInput;
use concrexit_facedetection::service::serve::ServeOptions;
use concrexit_facedetection::service::{self, Destinations, Service, ServiceConfig};
use concrexit_facedetection::weights::{WEIGHTS_ENV, WeightsLocation};
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "facedetect",
    version,
    about = "Face detection and dlib-compatible face encodings"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find the faces in photos and print one JSON line per photo with their encodings.
    Encode(EncodeArgs),
    /// Answer AWS Lambda Invoke API requests locally, as the Lambda function would
    /// (POST /2015-03-31/functions/{name}/invocations).
    Serve(ServeArgs),
    /// Run one payload, or one payload per line (JSON lines), as the Lambda function would.
    Batch(BatchArgs),
    /// Convert a dlib model file (.dat, .svm) into safetensors.
    ConvertDlib {
        /// The dlib model file.
        input: PathBuf,
        /// Where to write the safetensors file.
        output: PathBuf,
    },
}

#[derive(clap::Args)]
struct EncodeArgs {
    /// A face location as a dlib rectangle LEFT,TOP,RIGHT,BOTTOM (inclusive corners),
    /// instead of detection; repeat for more faces.
    #[arg(long = "rect", value_parser = parse_rect)]
    rects: Vec<Rect>,
    /// Treat each image as an aligned 150x150 face chip and only embed it.
    #[arg(long, conflicts_with = "rects")]
    aligned: bool,
    /// The face detector.
    #[arg(long, value_enum, default_value_t = DetectorArg::Hog)]
    detector: DetectorArg,
    /// How many times to double the image before detection (finds smaller faces).
    #[arg(long, default_value_t = 1)]
    upsample: u32,
    /// Average the encodings of this many randomly jittered chips (face_recognition's
    /// num_jitters; 1: no jitter).
    #[arg(long, default_value_t = 1)]
    jitters: u32,
    #[command(flatten)]
    models: ModelArgs,
    /// The photos (JPEG, PNG, WebP, GIF, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The port to listen on.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// The address to listen on (0.0.0.0 to accept connections from other hosts, which
    /// requires --secret).
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// A secret every request must present as `Authorization: Bearer <secret>`.
    #[arg(long, env = "FACEDETECT_SERVE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Where photos may be fetched from and encodings posted to: public, private (also
    /// private networks) or local (also this machine). Default: local when listening on
    /// loopback, public otherwise. Link-local addresses (cloud metadata) never.
    #[arg(long, env = "FACEDETECT_DESTINATIONS")]
    destinations: Option<Destinations>,
    /// The most invocations accepted and not finished; more are answered 429.
    #[arg(long, default_value_t = 16)]
    max_invocations: usize,
    /// Seconds to finish accepted Event work after Ctrl-C or SIGTERM.
    #[arg(long, default_value_t = 60)]
    shutdown_grace: u64,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(clap::Args)]
struct BatchArgs {
    /// The payload file, or - for stdin.
    input: String,
    /// How many payloads run at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// Where photos may be fetched from and encodings posted to: public, private or local.
    /// Link-local addresses (cloud metadata) never.
    #[arg(long, env = "FACEDETECT_DESTINATIONS", default_value = "local")]
    destinations: Destinations,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(clap::Args)]
struct ServiceArgs {
    /// The memory the process may use, in MiB: photos are admitted against it, and a photo
    /// that can never fit fails with a reason.
    #[arg(long, env = "FACEDETECT_MEMORY_MB", default_value_t = 2048)]
    memory_mb: u64,
    #[command(flatten)]
    models: ModelArgs,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Where to run the models (cuda: the first NVIDIA GPU; needs a build with the `cuda`
    /// feature and never falls back to the CPU).
    #[arg(long, value_enum, env = "FACEDETECT_DEVICE", default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// The weights: a directory, or a Hub repository as hf://owner/name[@revision]
    /// (default: the repository's weights/ folder).
    #[arg(long, env = WEIGHTS_ENV)]
    weights: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DetectorArg {
    /// dlib's HOG frontal face detector (the original service's).
    Hog,
    /// dlib's CNN (MMOD) face detector: better recall, much more computation.
    Cnn,
}

impl From<DetectorArg> for Detector {
    fn from(arg: DetectorArg) -> Self {
        match arg {
            DetectorArg::Hog => Detector::Hog,
            DetectorArg::Cnn => Detector::Cnn,
        }
    }
}

impl DeviceArg {
    /// Opens the device; an unavailable GPU is an error, never a fall-back to the CPU.
    fn open(self) -> anyhow::Result<Device> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => Device::new_cuda(0).context(
                "--device cuda: cannot open CUDA device 0 (no NVIDIA GPU, or its driver is not loaded)",
            ),
            #[cfg(not(feature = "cuda"))]
            DeviceArg::Cuda => anyhow::bail!(
                "--device cuda: this facedetect was built without the `cuda` feature; \
                 build it with scripts/build-cuda.sh (cargo build --release --features cuda)"
            ),
        }
    }
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<FacePipeline> {
        let device = self.device.open()?;
        let weights = match &self.weights {
            Some(text) => WeightsLocation::parse(text)?,
            None => WeightsLocation::discover()?,
        };
        FacePipeline::load(&weights, &device).context("loading the models")
    }
}

fn parse_rect(text: &str) -> Result<Rect, String> {
    let values: Vec<i64> = text
        .split(',')
        .map(|part| part.trim().parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    match values[..] {
        [left, top, right, bottom] if left <= right && top <= bottom => {
            Ok(Rect::new(left, top, right, bottom))
        }
        _ => Err(format!(
            "{text:?}: expected LEFT,TOP,RIGHT,BOTTOM with LEFT <= RIGHT and TOP <= BOTTOM"
        )),
    }
}

/// One line of `encode`'s output.
#[derive(Serialize)]
struct ImageFaces<'a> {
    image: &'a str,
    width: u32,
    height: u32,
    faces: Vec<FaceOutput>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum FaceOutput {
    Located(Face),
    Aligned { encoding: Vec<f32> },
}

fn encode(args: &EncodeArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.models.load()?;
    let options = EncodeOptions {
        detector: args.detector.into(),
        upsample: args.upsample,
        jitters: args.jitters,
    };
    let limits = DecodeLimits::default();
    let mut failures = 0;
    for path in &args.images {
        let result = open_image(path, &limits)
            .map_err(anyhow::Error::from)
            .and_then(|image| {
                let faces = if args.aligned {
                    pipeline
                        .embed_chips(std::slice::from_ref(&image))?
                        .into_iter()
                        .map(|encoding| FaceOutput::Aligned {
                            encoding: encoding.to_vec(),
                        })
                        .collect()
                } else if args.rects.is_empty() {
                    pipeline
                        .encode(&image, &options)?
                        .into_iter()
                        .map(FaceOutput::Located)
                        .collect()
                } else {
                    pipeline
                        .encode_at(&image, &args.rects)?
                        .into_iter()
                        .map(FaceOutput::Located)
                        .collect()
                };
                Ok(serde_json::to_string(&ImageFaces {
                    image: &path.to_string_lossy(),
                    width: image.width(),
                    height: image.height(),
                    faces,
                })?)
            });
        match result {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("{}: {error:#}", path.display());
                failures += 1;
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The service around the models, in a runtime of its own.
fn service(
    args: &ServiceArgs,
    destinations: Destinations,
) -> anyhow::Result<(tokio::runtime::Runtime, Arc<Service<FacePipeline>>)> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let pipeline = args.models.load()?;
    let mut config = ServiceConfig {
        memory_limit: args.memory_mb.saturating_mul(1024 * 1024),
        ..ServiceConfig::default()
    };
    config.http.destinations = destinations;
    let service = Service::new(Arc::new(pipeline), config)?;
    Ok((runtime, Arc::new(service)))
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    logging::init(LogFormat::Json, "info")?;
    let addr = std::net::SocketAddr::new(args.host, args.port);
    let options = ServeOptions {
        secret: args.secret.clone(),
        max_invocations: args.max_invocations,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
    };
    // Before the models load: refusing should be immediate.
    service::serve::check_listen(addr, &options)?;
    let destinations = args.destinations.unwrap_or(if args.host.is_loopback() {
        Destinations::Local
    } else {
        Destinations::Public
    });
    let (runtime, service) = service(&args.service, destinations)?;
    runtime
        .block_on(service::serve::run(addr, service, options))
        .with_context(|| format!("serving on {addr}"))?;
    Ok(ExitCode::SUCCESS)
}

fn batch(args: &BatchArgs) -> anyhow::Result<ExitCode> {
    // Failed sources and the summary are printed anyway: log only errors unless asked.
    logging::init(LogFormat::Text, "error")?;
    let (runtime, service) = service(&args.service, args.destinations)?;
    let input = BatchInput::from_arg(&args.input);
    let summary = runtime.block_on(service::batch::run(&service, &input, args.parallel))?;
    println!("{summary}");
    Ok(if summary.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Encode(args) => encode(&args),
        Command::Serve(args) => serve(&args),
        Command::Batch(args) => batch(&args),
        Command::ConvertDlib { input, output } => {
            let kind = concrexit_facedetection::convert::convert_file(&input, &output)
                .with_context(|| format!("converting {}", input.display()))?;
            eprintln!(
                "{}: {kind} model written to {}",
                input.display(),
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
