//! Test doubles for the service tests, all over real HTTP on loopback: a photo server with
//! misbehaving routes, a callback receiver that validates bodies exactly as concrexit does, and
//! a fake face encoder that records how many photos it works on at once.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concrexit_facedetection::error::Report;
use concrexit_facedetection::face::Encoding;
use concrexit_facedetection::pipeline::FaceEncoder;
use concrexit_facedetection::service::{
    Destinations, HttpConfig, InvocationReport, Outcome, RetryPolicy, Service, ServiceConfig, Stage,
};
use image::{ImageFormat, RgbImage};
use serde_json::{Value, json};

pub mod runtime_api;

/// Asserts that source `index` of `report` failed at `stage` with an error (its whole chain)
/// that contains `needle`.
pub fn assert_failed(report: &InvocationReport, index: usize, stage: Stage, needle: &str) {
    match &report.sources[index].outcome {
        Outcome::Failed {
            stage: s, error, ..
        } => {
            let error = Report(&**error).to_string();
            assert_eq!(*s, stage, "source {index}: {error}");
            assert!(
                error.contains(needle),
                "source {index}: {error:?} lacks {needle:?}"
            );
        }
        other => panic!("source {index}: expected a failure, got {other:?}"),
    }
}

/// Serves `router` on a loopback port for the rest of the test.
pub async fn spawn_server(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// Counts requests in progress and the most seen at once.
#[derive(Default)]
pub struct Gauge {
    now: AtomicUsize,
    pub peak: AtomicUsize,
    pub total: AtomicUsize,
}

impl Gauge {
    pub fn enter(self: &Arc<Self>) -> GaugeGuard {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self.clone())
    }
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

pub struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A small PNG of one colour.
pub fn png(width: u32, height: u32, shade: u8) -> Vec<u8> {
    let image = RgbImage::from_pixel(width, height, image::Rgb([shade, 255 - shade, 7]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 99]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Jpeg).unwrap();
    bytes.into_inner()
}

/// The photo server: `/photo/{name}` serves registered files; other routes misbehave.
#[derive(Default)]
pub struct PhotoServer {
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    pub gauge: Arc<Gauge>,
    /// How long `/photo/{name}` waits before answering.
    pub delay: Mutex<Duration>,
    pub flaky_left: AtomicUsize,
}

impl PhotoServer {
    pub async fn start() -> (Arc<Self>, String) {
        let server = Arc::new(Self::default());
        let router = Router::new()
            .route("/photo/{name}", get(photo))
            .route("/stall", get(stall))
            .route("/loop", get(redirect_loop))
            .route("/redirect-to-file", get(redirect_to_file))
            .route("/redirect-to-ftp", get(redirect_to_ftp))
            .route("/redirect/{name}", get(redirect_to_photo))
            .route("/flaky/{name}", get(flaky))
            .route("/endless", get(endless))
            .with_state(server.clone());
        let addr = spawn_server(router).await;
        (server, format!("http://{addr}"))
    }

    pub fn add(&self, name: &str, bytes: Vec<u8>) {
        self.files.lock().unwrap().insert(name.to_string(), bytes);
    }
}

async fn photo(State(server): State<Arc<PhotoServer>>, Path(name): Path<String>) -> Response {
    let _in = server.gauge.enter();
    let delay = *server.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let file = server.files.lock().unwrap().get(&name).cloned();
    match file {
        Some(bytes) => bytes.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn stall(State(server): State<Arc<PhotoServer>>) -> Response {
    let _in = server.gauge.enter();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    StatusCode::OK.into_response()
}

async fn redirect_loop() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/loop")]).into_response()
}

async fn redirect_to_file() -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, "file:///etc/passwd")],
    )
        .into_response()
}

async fn redirect_to_ftp() -> Response {
    (
        StatusCode::FOUND,
        [(header::LOCATION, "ftp://127.0.0.1/photo.jpg")],
    )
        .into_response()
}

async fn redirect_to_photo(Path(name): Path<String>) -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, format!("/photo/{name}"))],
    )
        .into_response()
}

/// Answers 503 while `flaky_left` is positive, then serves the photo.
async fn flaky(State(server): State<Arc<PhotoServer>>, Path(name): Path<String>) -> Response {
    let left = server.flaky_left.load(Ordering::SeqCst);
    if left > 0 {
        server.flaky_left.store(left - 1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    photo(State(server), Path(name)).await
}

/// A body that never ends, without a Content-Length.
async fn endless() -> Response {
    let chunk = Bytes::from(vec![0u8; 64 * 1024]);
    let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
    Body::from_stream(stream).into_response()
}

/// A scripted answer of the callback receiver for one attempt.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    Status(u16),
    /// Waits this long before answering normally.
    Slow(Duration),
}

/// A source as concrexit knows it: (type, pk).
pub type SourceKey = (String, u64);

/// The callback receiver: validates bodies as concrexit does.
#[derive(Default)]
pub struct Receiver {
    /// (type, pk) -> token of every source concrexit knows.
    pub tokens: Mutex<HashMap<SourceKey, String>>,
    /// Accepted encodings per source.
    pub delivered: Mutex<HashMap<SourceKey, Vec<Vec<f64>>>>,
    /// Posts received per source, answered or not.
    pub attempts: Mutex<HashMap<SourceKey, usize>>,
    /// Answers to give before the normal one, per source.
    pub faults: Mutex<HashMap<SourceKey, Vec<Fault>>>,
    /// Bodies refused with 400 and why.
    pub refused: Mutex<Vec<String>>,
}

impl Receiver {
    pub async fn start() -> (Arc<Self>, String) {
        let receiver = Arc::new(Self::default());
        let router = Router::new()
            .route("/api/facedetection/encodings/{kind}/{pk}/", post(receive))
            .with_state(receiver.clone());
        let addr = spawn_server(router).await;
        (receiver, format!("http://{addr}"))
    }

    pub fn expect(&self, kind: &str, pk: u64, token: &str) {
        self.tokens
            .lock()
            .unwrap()
            .insert((kind.to_string(), pk), token.to_string());
    }

    pub fn fail_with(&self, kind: &str, pk: u64, faults: Vec<Fault>) {
        self.faults
            .lock()
            .unwrap()
            .insert((kind.to_string(), pk), faults);
    }

    pub fn delivered(&self, kind: &str, pk: u64) -> Option<Vec<Vec<f64>>> {
        self.delivered
            .lock()
            .unwrap()
            .get(&(kind.to_string(), pk))
            .cloned()
    }

    pub fn attempts(&self, kind: &str, pk: u64) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .get(&(kind.to_string(), pk))
            .copied()
            .unwrap_or(0)
    }

    pub fn delivered_count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
}

fn refuse(receiver: &Receiver, why: String) -> Response {
    receiver.refused.lock().unwrap().push(why.clone());
    (StatusCode::BAD_REQUEST, Json(json!({"encodings": [why]}))).into_response()
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path((kind, pk)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(pk) = pk.parse::<u64>() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let key = (kind.clone(), pk);
    *receiver
        .attempts
        .lock()
        .unwrap()
        .entry(key.clone())
        .or_default() += 1;
    let fault = {
        let mut faults = receiver.faults.lock().unwrap();
        faults
            .get_mut(&key)
            .and_then(|list| (!list.is_empty()).then(|| list.remove(0)))
    };
    match fault {
        Some(Fault::Status(status)) => {
            return StatusCode::from_u16(status).unwrap().into_response();
        }
        Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    let Some(token) = receiver.tokens.lock().unwrap().get(&key).cloned() else {
        return (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response();
    };
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(&body) else {
        return refuse(&receiver, "body is not a JSON object".into());
    };
    if body.get("token").and_then(Value::as_str) != Some(token.as_str()) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"detail": "You do not have permission to perform this action."})),
        )
            .into_response();
    }
    let Some(Value::Array(encodings)) = body.get("encodings") else {
        return refuse(&receiver, "encodings is not a list".into());
    };
    let mut parsed = Vec::new();
    for encoding in encodings {
        let Value::Array(values) = encoding else {
            return refuse(&receiver, "an encoding is not a list".into());
        };
        if values.len() != 128 {
            return refuse(
                &receiver,
                format!("an encoding has {} values", values.len()),
            );
        }
        let mut floats = Vec::new();
        for value in values {
            // A number written without a decimal point or exponent is an int to Django.
            match value {
                Value::Number(n) if n.is_f64() => floats.push(n.as_f64().unwrap()),
                other => return refuse(&receiver, format!("{other} is not a float")),
            }
        }
        parsed.push(floats);
    }
    let mut delivered = receiver.delivered.lock().unwrap();
    if delivered.contains_key(&key) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!(["This object is not processing."])),
        )
            .into_response();
    }
    delivered.insert(key, parsed);
    (StatusCode::OK, Json(json!({}))).into_response()
}

/// Photo widths that make the fake encoder misbehave.
pub mod misbehaving {
    /// Panics in `detect`.
    pub const PANIC_IN_DETECT: u32 = 13;
    /// Panics in `encode`.
    pub const PANIC_IN_ENCODE: u32 = 14;
    /// Returns an encoding with a NaN.
    pub const NAN_ENCODING: u32 = 16;
}

/// A stand-in for the face pipeline: one "face" per photo whose encoding is made from the
/// photo's mean colour and size, so each photo's encoding is known to the test. Photos of the
/// widths in [`misbehaving`] make it panic or return bad encodings.
#[derive(Default)]
pub struct FakeEncoder {
    pub gauge: Arc<Gauge>,
    pub work: Duration,
}

/// The working memory the fake claims per pixel.
pub const FAKE_BYTES_PER_PIXEL: u64 = 8;

impl FakeEncoder {
    /// The encoding the fake makes for a photo.
    pub fn encoding_of(image: &RgbImage) -> Vec<f32> {
        let n = (image.width() * image.height()) as f32;
        let mut mean = [0f32; 3];
        for pixel in image.pixels() {
            for c in 0..3 {
                mean[c] += f32::from(pixel[c]) / n;
            }
        }
        (0..128)
            .map(|i| match i {
                0..=2 => mean[i] / 255.0,
                3 => image.width() as f32,
                4 => image.height() as f32,
                // Whole numbers, to check they are still written as floats.
                _ => (i % 4) as f32,
            })
            .collect()
    }
}

impl FaceEncoder for FakeEncoder {
    type Faces = usize;

    fn task(&self) -> String {
        "detect at upsample 1".to_string()
    }

    fn working_bytes(&self, pixels: u64) -> u64 {
        FAKE_BYTES_PER_PIXEL * pixels
    }

    fn detect(&self, image: &RgbImage) -> concrexit_facedetection::Result<usize> {
        let _busy = self.gauge.enter();
        std::thread::sleep(self.work);
        if image.width() == misbehaving::PANIC_IN_DETECT {
            panic!("fake detector exploded");
        }
        Ok(1)
    }

    fn encode(
        &self,
        image: &RgbImage,
        faces: usize,
    ) -> concrexit_facedetection::Result<Vec<Encoding>> {
        let mut encoding = Self::encoding_of(image);
        match image.width() {
            misbehaving::PANIC_IN_ENCODE => panic!("fake encoder exploded"),
            misbehaving::NAN_ENCODING => encoding[7] = f32::NAN,
            _ => {}
        }
        let encoding: [f32; 128] = encoding.try_into().expect("128 numbers");
        Ok(vec![Encoding::from(encoding); faces])
    }
}

/// Settings with short timeouts and delays, so failure tests finish fast.
pub fn fast_config() -> ServiceConfig {
    ServiceConfig {
        http: HttpConfig {
            download_timeout: Duration::from_millis(800),
            callback_timeout: Duration::from_millis(800),
            max_download_bytes: 5 * 1024 * 1024,
            max_redirects: 5,
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(20),
                max_delay: Duration::from_millis(100),
            },
            // The test servers are on loopback.
            destinations: Destinations::Local,
            ..HttpConfig::default()
        },
        ..ServiceConfig::default()
    }
}

pub fn fake_service(
    config: ServiceConfig,
    work: Duration,
) -> (Arc<Service<FakeEncoder>>, Arc<Gauge>) {
    let encoder = Arc::new(FakeEncoder {
        gauge: Arc::default(),
        work,
    });
    let gauge = encoder.gauge.clone();
    (Arc::new(Service::new(encoder, config).unwrap()), gauge)
}

pub fn source(pk: u64, kind: &str, photo_url: &str, token: &str) -> Value {
    json!({"pk": pk, "type": kind, "photo_url": photo_url, "token": token})
}

/// Polls `done` until it holds; fails after 10 seconds.
pub async fn wait_for(done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gave up waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
