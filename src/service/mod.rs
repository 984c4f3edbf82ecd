//! The service around the face pipeline: the original Lambda function's payload and callback
//! contract, shared by the Lambda function, the local invoke endpoint and the batch command.
//!
//! For every source of a payload the photo is downloaded, decoded, its faces found and encoded
//! with the original's settings (HOG, upsample 1, no jitter), and the encodings posted to
//! `{api_url}/api/facedetection/encodings/{type}/{pk}/`. Sources are independent: one that
//! fails, or even panics, never stops the others, and each ends in an [`Outcome`]. Downloads
//! run concurrently (at most [`ServiceConfig::max_in_flight`] at once); the CPU work runs on at
//! most [`ServiceConfig::cpu_workers`] blocking threads, each photo admitted against the
//! [`budget::MemoryBudget`] with the memory its header says it will need, so that memory stays
//! within the limit whatever the payload, and a photo that can never fit fails on its own.
//! With a deadline (Lambda's), sources are not started when too little time is left, and work
//! still running just before the deadline is reported as failed, so the invocation always
//! answers.
//!
//! The Lambda handler (`lambda`) is built with the `lambda` feature; the batch command and the
//! local invoke endpoint (`batch`, `serve`) with `cli`, which the Lambda binary leaves out.

#[cfg(feature = "cli")]
pub mod batch;
pub mod budget;
pub mod client;
pub mod destination;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod outcome;
pub mod payload;
pub use crate::redact;
#[cfg(feature = "cli")]
pub mod serve;
#[cfg(feature = "cli")]
pub mod sigv4;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::Semaphore;

use crate::decode::{DecodeLimits, ImageHeader, decode_image, read_header};
use crate::error::Report;
use crate::face::Encoding;
use crate::pipeline::FaceEncoder;

pub use budget::MemoryBudget;
pub use client::{FetchError, HttpConfig, RetryPolicy};
pub use destination::Destinations;
pub use outcome::{InvocationReport, Outcome, SourceError, SourceReport, Stage, Timings};
pub use payload::{MAX_SOURCES, Payload, PayloadError, Source, SourceType, Token};

/// Time kept before an invocation's deadline to answer with the report.
const ANSWER_TIME: Duration = Duration::from_secs(1);

/// The memory a process may use when nothing says otherwise.
pub const DEFAULT_MEMORY_LIMIT: u64 = 2048 * 1024 * 1024;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub http: HttpConfig,
    pub decode: DecodeLimits,
    /// The most sources downloading or being processed at once, over all invocations.
    pub max_in_flight: usize,
    /// The most photos decoded and encoded at once.
    pub cpu_workers: usize,
    /// The memory the whole process may use, in bytes.
    pub memory_limit: u64,
    /// The part of it kept for everything but photos: the runtime, HTTP, queued payloads.
    pub memory_reserve: u64,
    /// With a deadline, sources are not started when less than this is left.
    pub deadline_margin: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            http: HttpConfig::default(),
            decode: DecodeLimits::default(),
            max_in_flight: (2 * cores).max(8),
            cpu_workers: cores,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            memory_reserve: 128 * 1024 * 1024,
            deadline_margin: Duration::from_secs(10),
        }
    }
}

impl ServiceConfig {
    /// The settings of a process that may use `memory_mb` MiB and fetch from and post to
    /// `destinations`; the rest as [`ServiceConfig::default`].
    pub fn new(memory_mb: u64, destinations: Destinations) -> Self {
        let mut config = Self {
            memory_limit: memory_mb.saturating_mul(1024 * 1024),
            ..Self::default()
        };
        config.http.destinations = destinations;
        config
    }

    /// The same with `photos` sources in flight and as many photos encoded at once: the
    /// batched pipeline's [`BatchSizes::in_flight`](crate::pipeline::BatchSizes::in_flight),
    /// enough to keep its device fed.
    pub fn with_in_flight(self, photos: usize) -> Self {
        Self {
            max_in_flight: photos,
            cpu_workers: photos,
            ..self
        }
    }
}

/// Why the service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("HTTP client: {0}")]
    Http(#[from] FetchError),
    #[error("invalid setting: {0}")]
    Config(String),
}

/// Processes payloads with one face encoder; share it in an `Arc`.
pub struct Service<E> {
    encoder: Arc<E>,
    http: client::Http,
    decode: DecodeLimits,
    in_flight: Semaphore,
    cpu: Arc<Semaphore>,
    budget: MemoryBudget,
    deadline_margin: Duration,
}

/// The outcome of the stages before the callback.
struct Encoded {
    encodings: Vec<Encoding>,
}

/// A failed stage and why.
struct StageError(Stage, Box<SourceError>);

impl StageError {
    fn new(stage: Stage, error: SourceError) -> Self {
        Self(stage, Box::new(error))
    }

    /// The error of `stage`, as `map_err` takes it.
    fn at<E: Into<SourceError>>(stage: Stage) -> impl FnOnce(E) -> Self {
        move |error| Self::new(stage, error.into())
    }
}

/// What processing one source recorded along the way, shared with the blocking part so that
/// it survives a panic or the deadline.
#[derive(Default)]
struct Trace {
    stage: Option<Stage>,
    timings: Timings,
    download_attempts: u32,
    callback_attempts: u32,
}

type SharedTrace = Arc<Mutex<Trace>>;

fn with_trace<T>(trace: &SharedTrace, f: impl FnOnce(&mut Trace) -> T) -> T {
    f(&mut trace.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The message of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

impl<E: FaceEncoder> Service<E> {
    pub fn new(encoder: Arc<E>, config: ServiceConfig) -> Result<Self, ServiceError> {
        if config.max_in_flight == 0 || config.cpu_workers == 0 {
            return Err(ServiceError::Config(
                "max_in_flight and cpu_workers must be at least 1".to_string(),
            ));
        }
        let resident = budget::resident_bytes();
        let used = resident.saturating_add(config.memory_reserve);
        let mib = |bytes: u64| bytes / (1024 * 1024);
        let photos = config.memory_limit.saturating_sub(used);
        if photos < 64 * 1024 * 1024 {
            return Err(ServiceError::Config(format!(
                "a memory limit of {} MiB leaves {} MiB for photos ({} MiB in use, {} MiB \
                 reserved); allow more memory",
                mib(config.memory_limit),
                mib(photos),
                mib(resident),
                mib(config.memory_reserve)
            )));
        }
        let budget = MemoryBudget::new(photos);
        tracing::info!(
            memory_limit_mib = mib(config.memory_limit),
            resident_mib = mib(resident),
            download_budget_mib = mib(budget.download_limit()),
            work_budget_mib = mib(budget.work_limit()),
            destinations = %config.http.destinations,
            "service ready"
        );
        Ok(Self {
            encoder,
            http: client::Http::new(config.http)?,
            decode: config.decode,
            in_flight: Semaphore::new(config.max_in_flight),
            cpu: Arc::new(Semaphore::new(config.cpu_workers)),
            budget,
            deadline_margin: config.deadline_margin,
        })
    }

    /// The memory budget photos are admitted against.
    pub fn budget(&self) -> &MemoryBudget {
        &self.budget
    }

    /// Processes every source of a payload and reports each one's outcome.
    pub async fn run(&self, payload: &Payload) -> InvocationReport {
        self.run_until(payload, None, &|_| {}).await
    }

    /// As [`Service::run`], calling `observe` as each source finishes.
    pub async fn run_observed(
        &self,
        payload: &Payload,
        observe: &(dyn Fn(&SourceReport) + Sync),
    ) -> InvocationReport {
        self.run_until(payload, None, observe).await
    }

    /// As [`Service::run_observed`], finishing before `deadline`: sources are not started
    /// when less than the deadline margin is left, and those still running just before the
    /// deadline are reported as failed.
    pub async fn run_until(
        &self,
        payload: &Payload,
        deadline: Option<Instant>,
        observe: &(dyn Fn(&SourceReport) + Sync),
    ) -> InvocationReport {
        let started = Instant::now();
        let reports = futures::future::join_all(payload.sources.iter().enumerate().map(
            |(index, source)| async move {
                let report = self.process(payload, index, source, deadline).await;
                observe(&report);
                report
            },
        ))
        .await;
        let report = InvocationReport::new(reports);
        tracing::info!(
            sources = report.sources.len(),
            posted = report.posted,
            already_processed = report.already_processed,
            failed = report.failed,
            total_ms = started.elapsed().as_secs_f64() * 1000.0,
            "payload done"
        );
        report
    }

    async fn process(
        &self,
        payload: &Payload,
        index: usize,
        source: &Source,
        deadline: Option<Instant>,
    ) -> SourceReport {
        let trace = SharedTrace::default();
        let work = AssertUnwindSafe(self.stages(payload, source, deadline, &trace)).catch_unwind();
        let finished = match deadline {
            Some(deadline) => {
                let stop = deadline.checked_sub(ANSWER_TIME).unwrap_or(deadline);
                tokio::time::timeout_at(stop.into(), work).await.ok()
            }
            None => Some(work.await),
        };
        let stage = with_trace(&trace, |t| t.stage.unwrap_or(Stage::Download));
        let outcome = match finished {
            Some(Ok(outcome)) => outcome,
            Some(Err(panic)) => {
                Outcome::failed(stage, SourceError::Panicked(panic_message(&*panic)))
            }
            None => Outcome::failed(stage, SourceError::DeadlineReached),
        };
        let report = with_trace(&trace, |t| SourceReport {
            index,
            pk: source.pk,
            kind: source.kind,
            outcome,
            download_attempts: t.download_attempts,
            callback_attempts: t.callback_attempts,
            timings: t.timings.clone(),
        });
        log_source(source, &report);
        report
    }

    async fn stages(
        &self,
        payload: &Payload,
        source: &Source,
        deadline: Option<Instant>,
        trace: &SharedTrace,
    ) -> Outcome {
        match self.encode_source(source, deadline, trace).await {
            Ok(encoded) => self.deliver(payload, source, &encoded, trace).await,
            Err(StageError(stage, error)) => Outcome::Failed {
                stage,
                error: error.into(),
                faces: None,
            },
        }
    }

    /// Download, decode, detect and encode, holding an in-flight permit throughout.
    async fn encode_source(
        &self,
        source: &Source,
        deadline: Option<Instant>,
        trace: &SharedTrace,
    ) -> Result<Encoded, StageError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| StageError::new(Stage::Download, SourceError::Closed))?;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < self.deadline_margin {
                return Err(StageError::new(
                    Stage::Download,
                    SourceError::NotStarted {
                        left,
                        margin: self.deadline_margin,
                    },
                ));
            }
        }

        with_trace(trace, |t| t.stage = Some(Stage::Download));
        let started = Instant::now();
        let download = self.http.download(&source.photo_url, &self.budget).await;
        with_trace(trace, |t| {
            t.download_attempts = download.attempts;
            t.timings.record(Stage::Download, started.elapsed());
            t.stage = Some(Stage::Decode);
        });
        let (bytes, download_reservation) =
            download.result.map_err(StageError::at(Stage::Download))?;

        let header = read_header(&bytes, &self.decode).map_err(StageError::at(Stage::Decode))?;
        let needed = self.work_bytes(&header);
        let Some(work_reservation) = self.budget.reserve_work(needed).await else {
            return Err(StageError::new(Stage::Detect, self.too_large(&header)));
        };
        let cpu = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StageError::new(Stage::Decode, SourceError::Closed))?;
        let encoder = self.encoder.clone();
        let limits = self.decode.clone();
        let shared = trace.clone();
        let work = tokio::task::spawn_blocking(move || {
            let _held = (cpu, work_reservation);
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                encode_photo(&*encoder, (bytes, download_reservation), &limits, &shared)
            }))
            .unwrap_or_else(|panic| {
                let stage = with_trace(&shared, |t| t.stage.unwrap_or(Stage::Decode));
                Err(StageError::new(
                    stage,
                    SourceError::Panicked(panic_message(&*panic)),
                ))
            })
        });
        work.await.map_err(StageError::at(Stage::Decode))?
    }

    /// The memory decoding and detection will take on a photo with this header.
    fn work_bytes(&self, header: &ImageHeader) -> u64 {
        let detect =
            (3 * header.pixels()).saturating_add(self.encoder.working_bytes(header.pixels()));
        header.decode_bytes().max(detect)
    }

    /// Why a photo can never fit the budget: its size and the largest that would.
    fn too_large(&self, header: &ImageHeader) -> SourceError {
        let limit = self.budget.work_limit();
        let fits = |pixels: u64| {
            let square = ImageHeader {
                width: u32::try_from(pixels).unwrap_or(u32::MAX),
                height: 1,
                ..*header
            };
            self.work_bytes(&square) <= limit
        };
        let (mut low, mut high) = (0u64, header.pixels());
        while low + 1 < high {
            let mid = low + (high - low) / 2;
            if fits(mid) {
                low = mid;
            } else {
                high = mid;
            }
        }
        SourceError::TooLarge {
            task: self.encoder.task(),
            pixels: header.pixels(),
            limit_pixels: low,
            budget: limit,
        }
    }

    async fn deliver(
        &self,
        payload: &Payload,
        source: &Source,
        encoded: &Encoded,
        trace: &SharedTrace,
    ) -> Outcome {
        with_trace(trace, |t| t.stage = Some(Stage::Callback));
        let url = payload.callback_url(source);
        let body = client::CallbackBody {
            token: &source.token,
            encodings: &encoded.encodings,
        };
        let started = Instant::now();
        let delivery = self.http.post_encodings(&url, &body).await;
        with_trace(trace, |t| {
            t.timings.record(Stage::Callback, started.elapsed());
            t.callback_attempts = delivery.attempts;
        });
        let faces = encoded.encodings.len();
        match delivery.result {
            Ok(client::Delivery::Accepted) => Outcome::Posted { faces },
            Ok(client::Delivery::AlreadyProcessed) => Outcome::AlreadyProcessed { faces },
            Err(error) => Outcome::Failed {
                stage: Stage::Callback,
                error: Arc::new(error.into()),
                faces: Some(faces),
            },
        }
    }
}

/// Decode, detect and encode one photo on the current thread, checking that every encoding is
/// what concrexit accepts (finite numbers). The downloaded bytes and their reservation are
/// given back as soon as the photo is decoded.
fn encode_photo<E: FaceEncoder>(
    encoder: &E,
    download: (bytes::Bytes, budget::Reservation),
    limits: &DecodeLimits,
    trace: &SharedTrace,
) -> Result<Encoded, StageError> {
    let step = |stage: Stage, started: Instant, next: Option<Stage>| {
        with_trace(trace, |t| {
            t.timings.record(stage, started.elapsed());
            t.stage = next;
        })
    };
    let started = Instant::now();
    let image = decode_image(&download.0, limits).map_err(StageError::at(Stage::Decode))?;
    drop(download);
    step(Stage::Decode, started, Some(Stage::Detect));

    let started = Instant::now();
    let faces = encoder
        .detect(&image)
        .map_err(StageError::at(Stage::Detect))?;
    step(Stage::Detect, started, Some(Stage::Encode));

    let started = Instant::now();
    let encodings = encoder
        .encode(&image, faces)
        .map_err(StageError::at(Stage::Encode))?;
    step(Stage::Encode, started, Some(Stage::Encode));

    if let Some(index) = encodings.iter().position(|encoding| !encoding.is_finite()) {
        return Err(StageError::new(
            Stage::Encode,
            SourceError::NotFinite { index },
        ));
    }
    Ok(Encoded { encodings })
}

/// One log line per source: its outcome and the time each stage took. No token, no query string.
fn log_source(source: &Source, report: &SourceReport) {
    let (faces, stage, error) = match &report.outcome {
        Outcome::Posted { faces } | Outcome::AlreadyProcessed { faces } => {
            (Some(*faces), None, None)
        }
        Outcome::Failed {
            stage,
            error,
            faces,
        } => (
            *faces,
            Some(stage.as_str()),
            Some(Report(&**error).to_string()),
        ),
    };
    let error = error.as_deref();
    let t = &report.timings;
    let photo_url = redact::loggable_url(&source.photo_url);
    // One set of fields for both levels; the absent ones (`None`) are left out of the line.
    macro_rules! source_event {
        ($level:expr, $message:literal) => {
            tracing::event!(
                $level,
                index = report.index,
                pk = report.pk,
                r#type = report.kind.as_str(),
                photo_url,
                outcome = report.outcome.name(),
                faces,
                stage,
                error,
                download_attempts = report.download_attempts,
                callback_attempts = report.callback_attempts,
                download_ms = t.download_ms,
                decode_ms = t.decode_ms,
                detect_ms = t.detect_ms,
                encode_ms = t.encode_ms,
                callback_ms = t.callback_ms,
                $message
            )
        };
    }
    if report.outcome.is_failure() {
        source_event!(tracing::Level::WARN, "source failed");
    } else {
        source_event!(tracing::Level::INFO, "source done");
    }
}
