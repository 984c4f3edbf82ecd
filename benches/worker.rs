//! Throughput of `facedetect worker` on this machine's CPU (HOG, upsample 1, every core busy):
//! photos per second from a real SQS-compatible queue (moto's server on loopback) through
//! download, decoding, detection, encoding and the callback, on 1200x900 WebP photos like the
//! ones concrexit sends.
//!
//! Run with `cargo bench --bench worker` (add `--profile dev` to reuse the optimised dev
//! build). Needs `moto_server` on PATH or in `FACEDETECT_MOTO_SERVER`. The committed album-size
//! fixtures (tests/fixtures/pkg/images/large/*.webp) are served by a loopback photo host, each
//! under many URLs, `BENCH_PHOTOS` sources in all (default 90) in messages of 20; a loopback
//! receiver answers every callback. The clock runs from the worker's "worker started" line
//! (models loaded) to the last callback. It prints one `RESULT` line, which
//! benches/reference_worker.py reads to put the number beside the original pipeline's.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde_json::json;

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::main]
async fn main() {
    let sources: usize = std::env::var("BENCH_PHOTOS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(90);
    let Some(moto) = std::env::var_os("FACEDETECT_MOTO_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("moto_server"))
                .find(|path| path.is_file())
        })
    else {
        eprintln!(
            "moto_server not found: pip install 'moto[server]' or set FACEDETECT_MOTO_SERVER"
        );
        std::process::exit(2);
    };

    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut photos: Vec<PathBuf> =
        std::fs::read_dir(crate_dir.join("tests/fixtures/pkg/images/large"))
            .expect("fixtures")
            .flatten()
            .map(|entry| entry.path())
            .collect();
    photos.sort();
    let photos: Arc<Vec<Vec<u8>>> = Arc::new(
        photos
            .iter()
            .map(|path| std::fs::read(path).expect("a fixture"))
            .collect(),
    );
    let photo_base = serve(
        Router::new()
            .route(
                "/photo/{index}",
                get(
                    |State(photos): State<Arc<Vec<Vec<u8>>>>, Path(index): Path<usize>| async move {
                        photos[index % photos.len()].clone()
                    },
                ),
            )
            .with_state(Arc::clone(&photos)),
    )
    .await;
    let received = Arc::new(AtomicUsize::new(0));
    let api = serve(
        Router::new()
            .route(
                "/api/facedetection/encodings/{kind}/{pk}/",
                post(|State(received): State<Arc<AtomicUsize>>| async move {
                    received.fetch_add(1, Ordering::SeqCst);
                    "{}"
                }),
            )
            .with_state(Arc::clone(&received)),
    )
    .await;

    let port = free_port();
    let _moto = Killed(
        Command::new(moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts"),
    );
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let sqs = aws_sdk_sqs::Client::new(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "bench", "bench", None, None, "bench",
            ))
            .load()
            .await,
    );
    let queue = sqs
        .create_queue()
        .queue_name("bench")
        .send()
        .await
        .expect("a queue")
        .queue_url
        .expect("its URL");
    let bodies: Vec<String> = (0..sources)
        .collect::<Vec<_>>()
        .chunks(20)
        .map(|pks| {
            let sources: Vec<_> = pks
                .iter()
                .map(|pk| {
                    json!({"pk": pk, "type": "photo", "photo_url": format!("{photo_base}/photo/{pk}"),
                           "token": format!("token-{pk}")})
                })
                .collect();
            json!({"api_url": api, "sources": sources}).to_string()
        })
        .collect();
    for batch in bodies.chunks(10) {
        let entries = batch
            .iter()
            .enumerate()
            .map(|(i, body)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .expect("an entry")
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(&queue)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("messages sent");
    }

    let mut worker = Killed(
        Command::new(env!("CARGO_BIN_EXE_facedetect"))
            .args([
                "worker",
                "--queue-url",
                &queue,
                "--visibility-timeout",
                "120",
                // The photo host and the receiver listen on loopback.
                "--destinations",
                "local",
            ])
            .env("FACEDETECT_WEIGHTS", crate_dir.join("weights"))
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "bench")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_REGION", "eu-west-1")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the worker starts"),
    );
    let (started_sender, started) = std::sync::mpsc::channel();
    let stderr = worker.0.stderr.take().expect("stderr");
    // A failed source would be retried after a backoff and spoil the measurement: it ends the
    // run instead.
    let failed = Arc::new(AtomicBool::new(false));
    let failure_seen = failed.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"worker started\"") {
                let _ = started_sender.send(Instant::now());
            } else if line.contains("\"source failed\"") {
                eprintln!("{line}");
                failure_seen.store(true, Ordering::SeqCst);
            }
        }
    });
    let start = started
        .recv_timeout(Duration::from_secs(300))
        .expect("the worker started");
    while received.load(Ordering::SeqCst) < sources {
        assert!(
            worker.0.try_wait().expect("the worker's status").is_none(),
            "the worker exited"
        );
        assert!(
            !failed.load(Ordering::SeqCst),
            "a source failed (its log line is above)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "RESULT photos={sources} seconds={seconds:.3} photos_per_second={:.3} cores={cores}",
        sources as f64 / seconds
    );
}
