//! The service around the face pipeline: the original Lambda function's payload and callback
//! contract, shared by the Lambda function, the local invoke endpoint and the batch command.
//!
//! For every source of a payload the photo is downloaded, decoded, its faces found and encoded
//! with the original's settings (HOG, upsample 1, no jitter), and the encodings posted to
//! `{api_url}/api/facedetection/encodings/{type}/{pk}/`. Sources are independent: one that
//! fails never stops the others, and each ends in an [`Outcome`]. Downloads run concurrently and
//! the CPU work runs on a bounded number of blocking threads; at most
//! [`ServiceConfig::max_in_flight`] sources hold photo bytes or pixels at any time, so memory
//! stays bounded whatever the payload's size.

pub mod batch;
pub mod function;
pub mod http;
pub mod outcome;
pub mod payload;
pub mod serve;

use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use tokio::sync::Semaphore;

use crate::decode::{DecodeLimits, decode_image};
use crate::geometry::Rect;
use crate::pipeline::{EncodeOptions, FacePipeline};

pub use http::{FetchError, HttpConfig, RetryPolicy};
pub use outcome::{InvocationReport, Outcome, SourceReport, Stage, Timings};
pub use payload::{Payload, PayloadError, Source, SourceType, Token};

/// Length of a face encoding.
pub const ENCODING_LEN: usize = 128;

/// Turns a decoded photo into face encodings, in two timed steps.
pub trait FaceEncoder: Send + Sync + 'static {
    /// What detection found, handed to [`FaceEncoder::encode`].
    type Faces: Send;

    /// Finds the faces in the photo.
    fn detect(&self, image: &RgbImage) -> crate::Result<Self::Faces>;

    /// Computes one encoding per face found.
    fn encode(&self, image: &RgbImage, faces: Self::Faces) -> crate::Result<Vec<Vec<f32>>>;
}

/// The face pipeline with the original service's settings: HOG, upsample 1, no jitter.
impl FaceEncoder for FacePipeline {
    type Faces = Vec<Rect>;

    fn detect(&self, image: &RgbImage) -> crate::Result<Vec<Rect>> {
        let detections = FacePipeline::detect(self, image, &EncodeOptions::default())?;
        Ok(detections.into_iter().map(|(rect, _score)| rect).collect())
    }

    fn encode(&self, image: &RgbImage, rects: Vec<Rect>) -> crate::Result<Vec<Vec<f32>>> {
        let faces = self.encode_at(image, &rects)?;
        Ok(faces.into_iter().map(|face| face.encoding).collect())
    }
}

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub http: HttpConfig,
    pub decode: DecodeLimits,
    /// The most sources downloading or being processed at once, over all invocations.
    pub max_in_flight: usize,
    /// The most photos decoded and encoded at once.
    pub cpu_workers: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            http: HttpConfig::default(),
            decode: DecodeLimits::default(),
            max_in_flight: (2 * cores).max(8),
            cpu_workers: cores,
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
    http: http::Http,
    decode: DecodeLimits,
    in_flight: Semaphore,
    cpu: Arc<Semaphore>,
}

/// The outcome of the stages before the callback.
struct Encoded {
    encodings: Vec<Vec<f32>>,
}

/// What processing one source recorded along the way.
#[derive(Default)]
struct Trace {
    timings: Timings,
    download_attempts: u32,
    callback_attempts: u32,
}

impl<E: FaceEncoder> Service<E> {
    pub fn new(encoder: Arc<E>, config: ServiceConfig) -> Result<Self, ServiceError> {
        if config.max_in_flight == 0 || config.cpu_workers == 0 {
            return Err(ServiceError::Config(
                "max_in_flight and cpu_workers must be at least 1".to_string(),
            ));
        }
        Ok(Self {
            encoder,
            http: http::Http::new(config.http)?,
            decode: config.decode,
            in_flight: Semaphore::new(config.max_in_flight),
            cpu: Arc::new(Semaphore::new(config.cpu_workers)),
        })
    }

    /// Processes every source of a payload and reports each one's outcome.
    pub async fn run(&self, payload: &Payload) -> InvocationReport {
        self.run_observed(payload, &|_| {}).await
    }

    /// As [`Service::run`], calling `observe` as each source finishes.
    pub async fn run_observed(
        &self,
        payload: &Payload,
        observe: &(dyn Fn(&SourceReport) + Sync),
    ) -> InvocationReport {
        let started = Instant::now();
        let reports = futures::future::join_all(payload.sources.iter().enumerate().map(
            |(index, source)| async move {
                let report = self.process(payload, index, source).await;
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

    async fn process(&self, payload: &Payload, index: usize, source: &Source) -> SourceReport {
        let mut trace = Trace::default();
        let outcome = match self.encode_source(source, &mut trace).await {
            Ok(encoded) => self.deliver(payload, source, &encoded, &mut trace).await,
            Err((stage, error)) => Outcome::Failed { stage, error },
        };
        let report = SourceReport {
            index,
            pk: source.pk,
            kind: source.kind,
            outcome,
            download_attempts: trace.download_attempts,
            callback_attempts: trace.callback_attempts,
            timings: trace.timings,
        };
        log_source(source, &report);
        report
    }

    /// Download, decode, detect and encode, holding an in-flight permit throughout.
    async fn encode_source(
        &self,
        source: &Source,
        trace: &mut Trace,
    ) -> Result<Encoded, (Stage, String)> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|e| (Stage::Download, e.to_string()))?;

        let started = Instant::now();
        let download = self.http.download(&source.photo_url).await;
        trace.download_attempts = download.attempts;
        trace.timings.record(Stage::Download, started.elapsed());
        let bytes = download
            .result
            .map_err(|e| (Stage::Download, e.to_string()))?;

        let cpu = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| (Stage::Decode, e.to_string()))?;
        let encoder = self.encoder.clone();
        let limits = self.decode.clone();
        let work = tokio::task::spawn_blocking(move || {
            let _cpu = cpu;
            let mut timings = Timings::default();
            let result = encode_photo(&*encoder, &bytes, &limits, &mut timings);
            (result, timings)
        });
        let (result, timings) = work
            .await
            .map_err(|e| (Stage::Encode, format!("encoding task failed: {e}")))?;
        trace.timings.decode_ms = timings.decode_ms;
        trace.timings.detect_ms = timings.detect_ms;
        trace.timings.encode_ms = timings.encode_ms;
        result
    }

    async fn deliver(
        &self,
        payload: &Payload,
        source: &Source,
        encoded: &Encoded,
        trace: &mut Trace,
    ) -> Outcome {
        let url = payload.callback_url(source);
        let body = http::CallbackBody {
            token: &source.token,
            encodings: &encoded.encodings,
        };
        let started = Instant::now();
        let delivery = self.http.post_encodings(&url, &body).await;
        trace.timings.record(Stage::Callback, started.elapsed());
        trace.callback_attempts = delivery.attempts;
        let faces = encoded.encodings.len();
        match delivery.result {
            Ok(http::Delivery::Accepted) => Outcome::Posted { faces },
            Ok(http::Delivery::AlreadyProcessed) => Outcome::AlreadyProcessed { faces },
            Err(error) => Outcome::Failed {
                stage: Stage::Callback,
                error: error.to_string(),
            },
        }
    }
}

/// Decode, detect and encode one photo on the current thread, checking that every encoding is
/// what concrexit accepts (128 finite numbers).
fn encode_photo<E: FaceEncoder>(
    encoder: &E,
    bytes: &[u8],
    limits: &DecodeLimits,
    timings: &mut Timings,
) -> Result<Encoded, (Stage, String)> {
    let started = Instant::now();
    let image = decode_image(bytes, limits).map_err(|e| (Stage::Decode, e.to_string()))?;
    timings.record(Stage::Decode, started.elapsed());

    let started = Instant::now();
    let faces = encoder
        .detect(&image)
        .map_err(|e| (Stage::Detect, e.to_string()))?;
    timings.record(Stage::Detect, started.elapsed());

    let started = Instant::now();
    let encodings = encoder
        .encode(&image, faces)
        .map_err(|e| (Stage::Encode, e.to_string()))?;
    timings.record(Stage::Encode, started.elapsed());

    for (i, encoding) in encodings.iter().enumerate() {
        if encoding.len() != ENCODING_LEN || !encoding.iter().all(|x| x.is_finite()) {
            return Err((
                Stage::Encode,
                format!(
                    "encoding {i} is not {ENCODING_LEN} finite numbers (length {})",
                    encoding.len()
                ),
            ));
        }
    }
    Ok(Encoded { encodings })
}

/// One log line per source: its outcome and the time each stage took. No token, no query string.
fn log_source(source: &Source, report: &SourceReport) {
    let (faces, stage, error) = match &report.outcome {
        Outcome::Posted { faces } | Outcome::AlreadyProcessed { faces } => {
            (Some(*faces), None, None)
        }
        Outcome::Failed { stage, error } => (None, Some(stage.as_str()), Some(error.as_str())),
    };
    let t = &report.timings;
    let photo_url = http::loggable_url(&source.photo_url);
    if report.outcome.is_failure() {
        tracing::warn!(
            index = report.index,
            pk = report.pk,
            r#type = report.kind.as_str(),
            photo_url,
            outcome = report.outcome.name(),
            stage,
            error,
            download_attempts = report.download_attempts,
            callback_attempts = report.callback_attempts,
            download_ms = t.download_ms,
            decode_ms = t.decode_ms,
            detect_ms = t.detect_ms,
            encode_ms = t.encode_ms,
            callback_ms = t.callback_ms,
            "source failed"
        );
    } else {
        tracing::info!(
            index = report.index,
            pk = report.pk,
            r#type = report.kind.as_str(),
            photo_url,
            outcome = report.outcome.name(),
            faces,
            download_attempts = report.download_attempts,
            callback_attempts = report.callback_attempts,
            download_ms = t.download_ms,
            decode_ms = t.decode_ms,
            detect_ms = t.detect_ms,
            encode_ms = t.encode_ms,
            callback_ms = t.callback_ms,
            "source done"
        );
    }
}
