//! Error reports to Sentry from the real binaries: `facedetect-lambda` under the Runtime API
//! emulator and `facedetect serve`, with `SENTRY_DSN` pointed at a loopback stand-in for
//! Sentry's ingest (`POST /api/1/envelope/`). A failed source arrives as an event carrying its
//! pk and type, the environment and the release, and never its token or its signed URL's
//! query; an invocation still running near its deadline sends a warning, as the original's
//! `timeout_warning` did; without `SENTRY_DSN` nothing is sent.

use crate::common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

use crate::service_support::runtime_api::RuntimeApi;
use crate::service_support::*;

/// The envelopes Sentry's stand-in received, as text.
type Envelopes = Arc<Mutex<Vec<String>>>;

async fn ingest(State(envelopes): State<Envelopes>, body: axum::body::Bytes) -> &'static str {
    envelopes
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    "{}"
}

/// Starts the stand-in; returns what it received and the DSN that points at it.
async fn sentry() -> (Envelopes, String) {
    let envelopes = Envelopes::default();
    let router = Router::new()
        .route("/api/1/envelope/", post(ingest))
        .with_state(envelopes.clone());
    let addr = spawn_server(router).await;
    (envelopes, format!("http://publickey@{addr}/1"))
}

/// The event items (JSON) of the envelopes received so far: the line after each item header
/// of type `event`.
fn events(envelopes: &Envelopes) -> Vec<Value> {
    let mut found = Vec::new();
    for envelope in envelopes.lock().unwrap().iter() {
        let lines: Vec<&str> = envelope.lines().collect();
        for pair in lines.windows(2) {
            let header: Value = serde_json::from_str(pair[0]).unwrap_or(Value::Null);
            if header["type"] == "event" {
                found.push(serde_json::from_str(pair[1]).unwrap());
            }
        }
    }
    found
}

async fn wait_for_events(envelopes: &Envelopes, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let found = events(envelopes);
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    events(envelopes)
}

fn lambda(runtime_api: &str, dsn: Option<&str>) -> common::KillOnDrop {
    let mut command = Command::new(env!("CARGO_BIN_EXE_facedetect-lambda"));
    command
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env("AWS_LAMBDA_FUNCTION_NAME", "facedetection")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("FACEDETECT_WEIGHTS", common::weights_dir())
        .env("FACEDETECT_DESTINATIONS", "local")
        .env("SENTRY_ENVIRONMENT", "staging")
        .env_remove("SENTRY_DSN")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(dsn) = dsn {
        command.env("SENTRY_DSN", dsn);
    }
    common::KillOnDrop(command.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_reports_failed_sources_and_deadlines_to_sentry_without_secrets() {
    let (envelopes, dsn) = sentry().await;
    let (_photos, photo_base) = PhotoServer::start().await;
    let (_receiver, api) = Receiver::start().await;
    let (emulator, runtime_api) = RuntimeApi::start().await;
    let _function = lambda(&runtime_api, Some(&dsn));

    // A photo that is not there: the source fails at download. Its URL is signed, its token
    // secret.
    let url = format!("{photo_base}/photo/missing.webp?X-Amz-Signature=signature-secret");
    emulator.invoke(
        "missing",
        json!({"api_url": api, "sources": [source(41, "reference", &url, "token-secret-41")]}),
    );
    let answer = emulator.answer("missing", Duration::from_secs(300)).await;
    assert!(
        format!("{answer:?}").contains("SourcesFailed"),
        "{answer:?}"
    );
    // Flushed before the answer: the event is there already.
    let found = events(&envelopes);
    let event = found
        .iter()
        .find(|e| e["tags"]["pk"] == "41")
        .unwrap_or_else(|| panic!("no event for pk 41: {found:#?}"));
    assert_eq!(event["tags"]["type"], "reference", "{event:#}");
    assert_eq!(event["tags"]["stage"], "download", "{event:#}");
    assert_eq!(event["level"], "warning", "{event:#}");
    assert_eq!(event["environment"], "staging");
    assert_eq!(
        event["release"],
        format!("concrexit-facedetection@{}", env!("CARGO_PKG_VERSION"))
    );

    // A photo that never comes, on an invocation with 13 s to run: a warning before the
    // deadline, then the source fails at it.
    emulator.invoke_with_time(
        "slow",
        json!({"api_url": api, "sources": [source(42, "photo", &format!("{photo_base}/stall?token=x"), "token-secret-42")]}),
        Duration::from_secs(13),
    );
    let answer = emulator.answer("slow", Duration::from_secs(60)).await;
    assert!(answer.is_err(), "{answer:?}");
    let found = wait_for_events(&envelopes, 3).await;
    let warning = found
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .or_else(|| e["logentry"]["message"].as_str())
                .is_some_and(|m| m.contains("close to its timeout"))
        })
        .unwrap_or_else(|| panic!("no deadline warning: {found:#?}"));
    assert_eq!(warning["level"], "warning");
    assert_eq!(warning["tags"]["request_id"], "slow");
    assert!(found.iter().any(|e| e["tags"]["pk"] == "42"), "{found:#?}");

    let received = envelopes.lock().unwrap().join("\n");
    for secret in ["token-secret", "signature-secret", "token=x"] {
        assert!(
            !received.contains(secret),
            "{secret} reached Sentry: {received}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dsn_nothing_is_sent() {
    let (envelopes, _dsn) = sentry().await;
    let (_photos, photo_base) = PhotoServer::start().await;
    let (_receiver, api) = Receiver::start().await;
    let (emulator, runtime_api) = RuntimeApi::start().await;
    let _function = lambda(&runtime_api, None);
    let url = format!("{photo_base}/photo/missing.webp");
    emulator.invoke(
        "missing",
        json!({"api_url": api, "sources": [source(7, "photo", &url, "token-7")]}),
    );
    let answer = emulator.answer("missing", Duration::from_secs(300)).await;
    assert!(answer.is_err(), "{answer:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(envelopes.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reports_failed_sources_to_sentry() {
    let (envelopes, dsn) = sentry().await;
    let (_photos, photo_base) = PhotoServer::start().await;
    let (_receiver, api) = Receiver::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _serve = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_facedetect"))
            .args([
                "serve",
                "--port",
                &port.to_string(),
                "--destinations",
                "local",
            ])
            .env("FACEDETECT_WEIGHTS", common::weights_dir())
            .env("SENTRY_DSN", &dsn)
            .env("SENTRY_ENVIRONMENT", "local")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}/2015-03-31/functions/function/invocations");
    let url = format!("{photo_base}/photo/missing.webp?sig=signature-secret");
    let body = json!({"api_url": api, "sources": [source(5, "photo", &url, "token-secret-5")]});
    let client = reqwest::Client::new();
    let mut answered = false;
    for _ in 0..600 {
        if let Ok(response) = client.post(&endpoint).json(&body).send().await {
            answered = response.status().is_server_error() || response.status().is_success();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "serve did not answer");
    let found = wait_for_events(&envelopes, 1).await;
    let event = found
        .iter()
        .find(|e| e["tags"]["pk"] == "5")
        .unwrap_or_else(|| panic!("no event for pk 5: {found:#?}"));
    assert_eq!(event["tags"]["type"], "photo");
    assert_eq!(event["environment"], "local");
    let received = envelopes.lock().unwrap().join("\n");
    for secret in ["signature-secret", "token-secret"] {
        assert!(
            !received.contains(secret),
            "{secret} reached Sentry: {received}"
        );
    }
}
