//! The `facedetect` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use candle_core::Device;
use clap::{Parser, Subcommand};
use concrexit_facedetection::annotate::Annotator;
use concrexit_facedetection::backfill::{aws, enqueue, worker};
use concrexit_facedetection::detect::cnn::{CnnFaceDetector, ConvAlgorithm};
use concrexit_facedetection::geometry::Rect;
use concrexit_facedetection::logging::{self, LogFormat};
use concrexit_facedetection::pipeline::device_plan::DevicePlan;
use concrexit_facedetection::pipeline::files::{FaceOutput, FileTask, ImageFaces, encode_files};
use concrexit_facedetection::pipeline::{
    BatchChoice, BatchSizes, Detector, DeviceBatcher, DeviceKind, EncodeOptions, Face, FaceEncoder,
    FacePipeline, PhotoEncoder, throughput,
};
use concrexit_facedetection::service::batch::BatchInput;
use concrexit_facedetection::service::serve::{self, ServeOptions};
use concrexit_facedetection::service::{self, Destinations, Service, ServiceConfig};
use concrexit_facedetection::shutdown::Signals;
use concrexit_facedetection::weights::{Model, WEIGHTS_ENV, WeightsLocation, files};

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
    /// Take payloads from an SQS queue and process their photos batched through the device
    /// (the album backfill).
    Worker(WorkerArgs),
    /// Send payloads to an SQS queue for the worker, split into messages of a few sources.
    Enqueue(EnqueueArgs),
    /// Measure the batched pipeline on a folder of photos: photos/s (decoding included) and
    /// the embedder's chips/s by batch size, as JSON lines.
    BenchDevice(BenchDeviceArgs),
    /// Print how the CNN detector's and the embedder's work is split into device passes for
    /// photos of one size: each pass's photos, largest buffer and device bytes, as JSON.
    Plan(PlanArgs),
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
    /// A face location as a dlib rectangle LEFT,TOP,RIGHT,BOTTOM (inclusive corners, which
    /// may lie outside the image), instead of detection; repeat for more faces.
    #[arg(long = "rect", value_parser = parse_rect, allow_hyphen_values = true)]
    rects: Vec<Rect>,
    /// Treat each image as an aligned 150x150 face chip and only embed it.
    #[arg(long, conflicts_with = "rects")]
    aligned: bool,
    /// The face detector [default: hog]; not with --rect or --aligned, which detect nothing.
    #[arg(long, value_enum)]
    detector: Option<DetectorArg>,
    /// How many times to double the image before detection (finds smaller faces) [default:
    /// 1]; not with --rect or --aligned, which detect nothing.
    #[arg(long)]
    upsample: Option<u32>,
    /// Average the encodings of this many randomly jittered chips (face_recognition's
    /// num_jitters; 1: no jitter), with detection, --rect and --aligned alike.
    #[arg(long, default_value_t = 1)]
    jitters: u32,
    /// Also write each photo with its faces drawn (rectangle, landmarks, the detector's
    /// score) into this directory, as NAME.png for the photo NAME.jpg.
    #[arg(long, value_name = "DIR", conflicts_with = "aligned")]
    annotate: Option<PathBuf>,
    #[command(flatten)]
    models: ModelArgs,
    /// The photo files (JPEG, PNG, WebP, GIF, BMP).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

impl EncodeArgs {
    /// Refuses options that would have no effect with the others given.
    fn check(&self) -> anyhow::Result<()> {
        let given = if self.aligned {
            Some(("--aligned", "each image is already an aligned face chip"))
        } else if !self.rects.is_empty() {
            Some(("--rect", "the faces' locations are given"))
        } else {
            None
        };
        if let Some((mode, why)) = given {
            for (option, set) in [
                ("--detector", self.detector.is_some()),
                ("--upsample", self.upsample.is_some()),
            ] {
                if set {
                    anyhow::bail!("{option} has no effect with {mode}: {why}, nothing is detected");
                }
            }
        }
        Ok(())
    }

    /// Where `--annotate` writes each photo's drawing, in the order of `images`; the directory
    /// is made here. Two photos of the same name would overwrite each other: refused.
    fn annotated_paths(&self) -> anyhow::Result<Option<Vec<PathBuf>>> {
        let Some(dir) = &self.annotate else {
            return Ok(None);
        };
        let mut paths = Vec::with_capacity(self.images.len());
        for image in &self.images {
            let stem = image
                .file_stem()
                .with_context(|| format!("{}: not a file name", image.display()))?;
            let path = dir.join(stem).with_extension("png");
            if paths.contains(&path) {
                anyhow::bail!(
                    "--annotate: two photos would be drawn into {}: give photos of different names",
                    path.display()
                );
            }
            paths.push(path);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
        Ok(Some(paths))
    }
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
    /// A secret every request must present: as `Authorization: Bearer <secret>`, or as the
    /// AWS secret access key of a Signature Version 4 signature (boto3; any access key id).
    #[arg(long, env = "FACEDETECT_SERVE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Where photos may be fetched from and encodings posted to: public, private (also
    /// private networks) or local (also this machine). Default: local when listening on
    /// loopback, public otherwise. Link-local addresses (cloud metadata) never.
    #[arg(long, env = "FACEDETECT_DESTINATIONS")]
    destinations: Option<Destinations>,
    /// The most invocations accepted and not finished; more are answered 429.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    max_invocations: usize,
    /// Seconds to finish the requests in progress and the accepted work after Ctrl-C or
    /// SIGTERM, at most; a second signal exits at once.
    #[arg(long, default_value_t = 60)]
    shutdown_grace: u64,
    /// Seconds a client may take to send a request's head; idle connections are closed after
    /// as long.
    #[arg(long, default_value_t = 10, value_parser = at_least_one_second)]
    header_timeout: u64,
    /// Seconds a client may take to send a request's body (at most 6 MiB) after its head.
    #[arg(long, default_value_t = 30, value_parser = at_least_one_second)]
    body_timeout: u64,
    /// The most connections open at once; further ones wait to be accepted.
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    max_connections: usize,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(clap::Args)]
struct BatchArgs {
    /// The payload file, or - for stdin.
    input: String,
    /// How many payloads run at once.
    #[arg(long, default_value_t = 4, value_parser = at_least_one)]
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
    detection: DetectionArgs,
    #[command(flatten)]
    models: ModelArgs,
}

/// How faces are found in every photo.
#[derive(clap::Args)]
struct DetectionArgs {
    /// The face detector.
    #[arg(long, value_enum, default_value_t = DetectorArg::Hog)]
    detector: DetectorArg,
    /// How many times to double each photo before detection.
    #[arg(long, default_value_t = 1)]
    upsample: u32,
}

impl DetectionArgs {
    fn options(&self) -> EncodeOptions {
        EncodeOptions::detecting(self.detector.into(), self.upsample)
    }
}

#[derive(clap::Args)]
struct WorkerArgs {
    /// The queue's URL.
    #[arg(long, env = "FACEDETECT_QUEUE_URL")]
    queue_url: String,
    #[command(flatten)]
    service: ServiceArgs,
    /// Where photos may be fetched from and encodings posted to: public, private (in a VPC)
    /// or local. Link-local addresses (cloud metadata) never.
    #[arg(long, env = "FACEDETECT_DESTINATIONS", default_value = "private")]
    destinations: Destinations,
    #[command(flatten)]
    batching: BatchingArgs,
    /// Seconds a held message stays invisible past each heartbeat (default: the queue's
    /// VisibilityTimeout).
    #[arg(long, value_name = "SECS")]
    visibility_timeout: Option<u64>,
    /// The most messages held at once.
    #[arg(long, default_value_t = 20)]
    max_messages: usize,
    /// Seconds before a message with a failed source is retried after its first receive,
    /// doubled with each receive, at most the visibility timeout.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    retry_backoff: u64,
    /// After SIGTERM or SIGINT, seconds the messages in flight may still run before they are
    /// released. Keep it below the container's stop timeout.
    #[arg(long, value_name = "SECS", default_value_t = 90)]
    shutdown_timeout: u64,
    /// Seconds a held message may go without progress (none of its sources, nor of the
    /// messages received before it, finishing) before its work is given up and it is made
    /// visible again.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    stall_timeout: u64,
}

/// How photos share the device.
#[derive(clap::Args)]
struct BatchingArgs {
    /// Photos per pass of the CNN detector (default: 16 on CUDA, 1 on the CPU).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Face chips per pass of the embedder (default: 256 on CUDA, 16 on the CPU).
    #[arg(long)]
    embed_batch: Option<usize>,
    /// Photos downloaded, decoded and encoded at once (default: 4 x batch size on CUDA,
    /// 2 x cores on the CPU).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Device memory (MiB) one pass of a model may use; batches are split into passes that
    /// fit it (`facedetect plan` shows how). Default: no limit beyond candle's 32-bit one.
    #[arg(long, env = "FACEDETECT_DEVICE_MEMORY_MB", value_name = "MIB")]
    device_memory_mb: Option<u64>,
}

impl BatchingArgs {
    fn sizes(&self, device: &Device) -> BatchSizes {
        BatchSizes::chosen(
            device,
            &BatchChoice {
                detect: self.batch_size,
                embed: self.embed_batch,
                device_memory_mb: self.device_memory_mb,
                in_flight: self.concurrency,
            },
        )
    }

    /// Refuses `--batch-size` where it would change nothing: the HOG detector takes photos
    /// one at a time, so the size only matters through the default concurrency on CUDA.
    fn check(&self, detector: Detector, device: &Device) -> anyhow::Result<()> {
        if detector == Detector::Hog
            && self.batch_size.is_some()
            && (device.is_cpu() || self.concurrency.is_some())
        {
            anyhow::bail!(
                "--batch-size has no effect with the HOG detector: it sets the photos per pass \
                 of the CNN detector (--detector cnn); use --concurrency for photos in flight"
            );
        }
        Ok(())
    }
}

#[derive(clap::Args)]
struct EnqueueArgs {
    /// The payload file (one JSON document or JSON lines), or - for stdin.
    input: String,
    /// The queue's URL.
    #[arg(long, env = "FACEDETECT_QUEUE_URL")]
    queue_url: String,
    /// The most sources in one message.
    #[arg(long, default_value_t = 20)]
    sources_per_message: usize,
}

#[derive(clap::Args)]
struct PlanArgs {
    /// The photos' size as WIDTHxHEIGHT, e.g. 1200x900.
    #[arg(long, value_parser = parse_size)]
    size: (u32, u32),
    /// How many times each photo is doubled before detection.
    #[arg(long, default_value_t = 1)]
    upsample: u32,
    /// How many photos of this size wait for the device at once.
    #[arg(long, default_value_t = 1)]
    photos: usize,
    /// Device memory (MiB) one pass may use (default: no limit beyond candle's 32-bit one).
    #[arg(long, env = "FACEDETECT_DEVICE_MEMORY_MB", value_name = "MIB")]
    device_memory_mb: Option<u64>,
    /// How the device computes the convolutions (the `cuda` build: cuDNN's implicit GEMM).
    #[arg(long, value_enum, default_value_t = AlgorithmArg::ImplicitGemm)]
    algorithm: AlgorithmArg,
    /// The weights, as for `encode`.
    #[arg(long, env = WEIGHTS_ENV)]
    weights: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum AlgorithmArg {
    /// cuDNN's implicit GEMM: no gathered windows.
    ImplicitGemm,
    /// candle's CUDA convolution without cuDNN: windows gathered into a matrix.
    Im2col,
}

#[derive(clap::Args)]
struct BenchDeviceArgs {
    /// A folder of photos.
    dir: PathBuf,
    #[command(flatten)]
    detection: DetectionArgs,
    #[command(flatten)]
    models: ModelArgs,
    #[command(flatten)]
    batching: BatchingArgs,
    /// Photos to time, cycling through the folder's.
    #[arg(long, default_value_t = 200)]
    photos: usize,
    /// Start no photo after this many seconds (the result counts the photos done).
    #[arg(long, default_value_t = 60.0)]
    max_seconds: f64,
    /// Embedder batch sizes to time, comma-separated (e.g. 16,64,256; default: none).
    #[arg(long, value_delimiter = ',')]
    embed_sizes: Vec<usize>,
    /// Seconds to time each embedder batch size for, at least [default: 2]; needs
    /// --embed-sizes.
    #[arg(long, requires = "embed_sizes")]
    embed_seconds: Option<f64>,
    /// Write each distinct photo's faces from the batched run here, as JSON lines like
    /// `encode` prints.
    #[arg(long)]
    faces: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Where to run the models (cuda: the first NVIDIA GPU; needs a build with the `cuda`
    /// feature and never falls back to the CPU).
    #[arg(long, value_enum, env = "FACEDETECT_DEVICE", default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// The weights: a directory, or a Hub repository as `hf://owner/name[@revision]`
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

impl From<DeviceArg> for DeviceKind {
    fn from(arg: DeviceArg) -> Self {
        match arg {
            DeviceArg::Cpu => DeviceKind::Cpu,
            DeviceArg::Cuda => DeviceKind::Cuda,
        }
    }
}

impl ModelArgs {
    fn device(&self) -> anyhow::Result<Device> {
        DeviceKind::from(self.device)
            .open()
            .context("--device cuda")
    }

    fn weights(&self) -> anyhow::Result<WeightsLocation> {
        Ok(WeightsLocation::given_or_discovered(
            self.weights.as_deref(),
        )?)
    }

    fn load(&self) -> anyhow::Result<FacePipeline> {
        self.load_on(&self.device()?)
    }

    fn load_on(&self, device: &Device) -> anyhow::Result<FacePipeline> {
        FacePipeline::load(&self.weights()?, device).context("loading the models")
    }
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let parsed = text
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match parsed {
        Some((width, height)) if width > 0 && height > 0 => Ok((width, height)),
        _ => Err(format!(
            "{text:?}: expected WIDTHxHEIGHT in pixels, e.g. 1200x900"
        )),
    }
}

/// A count that 0 would make meaningless (nothing could ever run).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn at_least_one_second(text: &str) -> Result<u64, String> {
    at_least_one(text).map(|n| n as u64)
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

/// What `encode` says about a photo it could not do: the reason, after the photo's name once.
fn photo_error(path: &std::path::Path, error: concrexit_facedetection::Error) -> anyhow::Error {
    match error {
        concrexit_facedetection::Error::Io { source, .. } => anyhow::Error::new(source),
        other => anyhow::Error::new(other),
    }
    .context(path.display().to_string())
}

fn encode(args: &EncodeArgs) -> anyhow::Result<ExitCode> {
    args.check()?;
    let pipeline = args.models.load()?;
    let task = if args.aligned {
        FileTask::Aligned {
            jitters: args.jitters,
        }
    } else if !args.rects.is_empty() {
        FileTask::At {
            rects: args.rects.clone(),
            jitters: args.jitters,
        }
    } else {
        FileTask::Detect(EncodeOptions {
            detector: args.detector.unwrap_or(DetectorArg::Hog).into(),
            upsample: args.upsample.unwrap_or(1),
            jitters: args.jitters,
        })
    };
    let annotated_paths = args.annotated_paths()?;
    let annotator = annotated_paths.as_ref().map(|_| Annotator::new());
    let mut failures = 0;
    let mut index = 0;
    encode_files(&pipeline, &args.images, &task, |path, result| {
        let annotated_path = annotated_paths.as_ref().map(|paths| &paths[index]);
        index += 1;
        let line = result
            .map_err(|error| photo_error(path, error))
            .and_then(|(image, faces)| {
                if let (Some(annotator), Some(annotated_path)) = (&annotator, annotated_path) {
                    draw_faces(annotator, &image, &faces, annotated_path)?;
                }
                Ok(serde_json::to_string(&faces)?)
            });
        match line {
            Ok(line) => println!("{line}"),
            Err(error) => {
                eprintln!("{error:#}");
                failures += 1;
            }
        }
    });
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes `image` with the located faces of `faces` drawn to `path`.
fn draw_faces(
    annotator: &Annotator,
    image: &image::RgbImage,
    faces: &ImageFaces,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let located: Vec<Face> = faces
        .faces
        .iter()
        .filter_map(|face| match face {
            FaceOutput::Located(face) => Some(face.clone()),
            FaceOutput::Aligned { .. } => None,
        })
        .collect();
    annotator
        .annotate(image, &located)
        .save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// The service around `encoder`, in a runtime of its own.
fn service<E: FaceEncoder>(
    encoder: E,
    config: ServiceConfig,
) -> anyhow::Result<(tokio::runtime::Runtime, Arc<Service<E>>)> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let service = Service::new(Arc::new(encoder), config)?;
    Ok((runtime, Arc::new(service)))
}

/// The per-photo pipeline with the service's options, on the CPU or the device chosen.
fn photo_encoder(args: &ServiceArgs) -> anyhow::Result<PhotoEncoder> {
    Ok(PhotoEncoder::new(
        Arc::new(args.models.load()?),
        args.detection.options(),
    ))
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    if args.secret.as_deref() == Some("") {
        anyhow::bail!(
            "the secret is empty (--secret or FACEDETECT_SERVE_SECRET): give one, or leave it unset"
        );
    }
    logging::init(LogFormat::Json, "info")?;
    let addr = std::net::SocketAddr::new(args.host, args.port);
    let options = ServeOptions {
        secret: args.secret.clone(),
        max_invocations: args.max_invocations,
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace),
        header_timeout: std::time::Duration::from_secs(args.header_timeout),
        body_timeout: std::time::Duration::from_secs(args.body_timeout),
        max_connections: args.max_connections,
    };
    // Before the models load: refusing should be immediate.
    serve::check_listen(addr, &options)?;
    let destinations = args
        .destinations
        .unwrap_or_else(|| serve::default_destinations(args.host));
    let config = ServiceConfig::new(args.service.memory_mb, destinations);
    let (runtime, service) = service(photo_encoder(&args.service)?, config)?;
    let served = runtime.block_on(serve::run(addr, service, options));
    // Work past the grace is dropped, not waited for: a photo still being detected would
    // otherwise hold the exit.
    runtime.shutdown_background();
    served.with_context(|| format!("serving on {addr}"))?;
    Ok(ExitCode::SUCCESS)
}

fn batch(args: &BatchArgs) -> anyhow::Result<ExitCode> {
    // Failed sources and the summary are printed anyway: log only errors unless asked
    // (RUST_LOG=info: a JSON line per source, as the other entry points log).
    logging::init(LogFormat::Json, "error")?;
    let config = ServiceConfig::new(args.service.memory_mb, args.destinations);
    let (runtime, service) = service(photo_encoder(&args.service)?, config)?;
    let input = BatchInput::from_arg(&args.input);
    let summary = runtime.block_on(service::batch::run(&service, &input, args.parallel))?;
    println!("{summary}");
    Ok(if summary.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The batched pipeline on the models of `models`, and the device it runs on.
fn device_batcher(
    models: &ModelArgs,
    batching: &BatchingArgs,
    options: EncodeOptions,
) -> anyhow::Result<(DeviceBatcher, Device, BatchSizes)> {
    let device = models.device()?;
    batching.check(options.detector, &device)?;
    let pipeline = Arc::new(models.load_on(&device)?);
    let sizes = batching.sizes(&device);
    let batcher = DeviceBatcher::new(pipeline, options.detector, options.upsample, sizes)?;
    Ok((batcher, device, sizes))
}

fn run_worker(args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    logging::init(
        LogFormat::Json,
        "info,aws_config=warn,aws_runtime=warn,aws_smithy_runtime=warn,aws_sdk_sqs=warn",
    )?;
    let options = args.service.detection.options();
    let (batcher, device, sizes) = device_batcher(&args.service.models, &args.batching, options)?;
    let config = ServiceConfig::new(args.service.memory_mb, args.destinations)
        .with_in_flight(sizes.in_flight);
    let worker_config = worker::WorkerConfig {
        queue_url: args.queue_url.clone(),
        visibility_timeout: args.visibility_timeout.map(std::time::Duration::from_secs),
        max_messages: args.max_messages,
        retry_backoff: std::time::Duration::from_secs(args.retry_backoff),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_timeout),
        stall_timeout: std::time::Duration::from_secs(args.stall_timeout),
    };
    tracing::info!(
        detector = ?options.detector,
        upsample = options.upsample,
        memory_mb = args.service.memory_mb,
        device = ?device,
        batch_size = sizes.detect,
        embed_batch = sizes.embed,
        concurrency = sizes.in_flight,
        "models loaded"
    );
    let (runtime, service) = service(batcher, config)?;
    let result = runtime.block_on(async {
        let signals = Signals::install().context("installing the signal handlers")?;
        let sqs = aws::sqs_client().await?;
        Ok::<_, anyhow::Error>(worker::run(sqs, service, worker_config, signals).await?)
    });
    // Encodings still running for released messages are abandoned, not awaited.
    runtime.shutdown_background();
    result?;
    Ok(ExitCode::SUCCESS)
}

fn run_enqueue(args: &EnqueueArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let input = BatchInput::from_arg(&args.input);
    let summary = runtime.block_on(async {
        let sqs = aws::sqs_client().await?;
        Ok::<_, anyhow::Error>(
            enqueue::run(&sqs, &args.queue_url, &input, args.sources_per_message).await?,
        )
    })?;
    println!(
        "{} payloads sent as {} messages ({} sources)",
        summary.payloads, summary.messages, summary.sources
    );
    Ok(ExitCode::SUCCESS)
}

fn bench_device(args: &BenchDeviceArgs) -> anyhow::Result<ExitCode> {
    let files = throughput::read_photos(&args.dir)?;
    let options = args.detection.options();
    let (batcher, _device, sizes) = device_batcher(&args.models, &args.batching, options)?;
    let (photos, faces) = throughput::photo_throughput(
        &batcher,
        &files,
        args.photos,
        sizes.in_flight,
        std::time::Duration::from_secs_f64(args.max_seconds),
    )?;
    let device = DeviceKind::from(args.models.device);
    println!(
        "{}",
        serde_json::json!({
            "kind": "photos",
            "detector": options.detector,
            "upsample": options.upsample,
            "device": device,
            "batch_size": sizes.detect,
            "embed_batch": sizes.embed,
            "result": photos,
        })
    );
    if let Some(path) = &args.faces {
        let mut lines = String::new();
        for (image_path, image, found) in &faces {
            let line = ImageFaces::located(image_path, image, found.clone());
            lines.push_str(&serde_json::to_string(&line)?);
            lines.push('\n');
        }
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    let chips: Vec<image::RgbImage> = faces
        .iter()
        .flat_map(|(_, image, found)| {
            let rects: Vec<Rect> = found.iter().map(|face| face.rect).collect();
            batcher.pipeline().align(image, &rects).1
        })
        .collect();
    for &batch in &args.embed_sizes {
        let result = throughput::embed_throughput(
            &batcher,
            &chips,
            batch,
            std::time::Duration::from_secs_f64(args.embed_seconds.unwrap_or(2.0)),
        )?;
        println!(
            "{}",
            serde_json::json!({"kind": "embed", "device": device, "result": result})
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The device passes for photos of one size, as JSON.
fn plan(args: &PlanArgs) -> anyhow::Result<ExitCode> {
    let weights = WeightsLocation::given_or_discovered(args.weights.as_deref())?;
    let cnn = CnnFaceDetector::from_file(&weights.file(files::CNN_DETECTOR)?, &Device::Cpu)
        .context("loading the CNN detector")?;
    let algorithm = match args.algorithm {
        AlgorithmArg::ImplicitGemm => ConvAlgorithm::ImplicitGemm,
        AlgorithmArg::Im2col => ConvAlgorithm::Im2col,
    };
    let plan = DevicePlan::new(
        &cnn,
        args.size,
        args.upsample,
        args.photos,
        algorithm,
        args.device_memory_mb,
    )?;
    println!("{}", serde_json::to_string(&plan)?);
    Ok(ExitCode::SUCCESS)
}

/// Errors end the command with one line on stderr: what went wrong and its causes, in order.
fn main() -> ExitCode {
    #[cfg(feature = "cuda")]
    forbid_tf32();
    let result = run();
    // Whatever was reported to Sentry leaves before the process does.
    concrexit_facedetection::telemetry::flush(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Encode(args) => encode(&args),
        Command::Serve(args) => serve(&args),
        Command::Batch(args) => batch(&args),
        Command::Worker(args) => run_worker(&args),
        Command::Enqueue(args) => run_enqueue(&args),
        Command::BenchDevice(args) => bench_device(&args),
        Command::Plan(args) => plan(&args),
        Command::ConvertDlib { input, output } => {
            // Its errors name the file they are about.
            let kind = concrexit_facedetection::convert::convert_file(&input, &output)?;
            eprintln!(
                "{}: {kind} model written to {}",
                input.display(),
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// cuDNN and cuBLAS may run f32 convolutions and products on TF32 tensor cores on compute
/// capability 8.0 and later (about 1e-3 relative error): too coarse for encodings that must
/// match the stored dlib ones. `NVIDIA_TF32_OVERRIDE=0`, which both libraries read when they
/// initialise, keeps them to full f32 (FMA) arithmetic.
#[cfg(feature = "cuda")]
fn forbid_tf32() {
    // SAFETY: the first thing `main` does, while the process has a single thread.
    unsafe { std::env::set_var("NVIDIA_TF32_OVERRIDE", "0") }
}
