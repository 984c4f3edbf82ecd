//! The Lambda function's runtime loop end to end through a Lambda Runtime API emulator, with a
//! fake face encoder: a direct payload, an SQS event, a failing invocation, and the JSON logs
//! (one line per source with its timings; no token, no signed query string).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::service_support::runtime_api::RuntimeApi;
use crate::service_support::*;
use concrexit_facedetection::logging::{LogFormat, init_with_writer};
use concrexit_facedetection::service::lambda::run_lambda;
use serde_json::{Value, json};

/// Log output collected in memory, and shown (through the test harness's capture) when the
/// test fails: the panic hook logs assertion failures here too.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<Value> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_runtime_loop_direct_sqs_and_failure() {
    // It installs the global log subscriber and sets the runtime's environment variables: in a
    // process of its own.
    if !crate::common::in_own_process("lambda::lambda_runtime_loop_direct_sqs_and_failure") {
        return;
    }
    let logs = Logs::default();
    let writer = logs.clone();
    init_with_writer(LogFormat::Json, "info", move || writer.clone()).unwrap();

    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(32, 24, 3));
    let (receiver, api) = Receiver::start().await;
    for pk in 1..=4 {
        receiver.expect("photo", pk, &format!("secret-token-{pk}"));
    }
    let (emulator, runtime_api) = RuntimeApi::start().await;
    // SAFETY: the only test in this process; set before the runtime reads them.
    unsafe {
        std::env::set_var("AWS_LAMBDA_RUNTIME_API", &runtime_api);
        std::env::set_var("AWS_LAMBDA_FUNCTION_NAME", "facedetection");
        std::env::set_var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024");
        std::env::set_var("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    }
    photos.add("panic.png", png(misbehaving::PANIC_IN_DETECT, 10, 3));
    let mut config = fast_config();
    // A source stalls past the deadline; the margin leaves time to start the others.
    config.http.download_timeout = Duration::from_secs(30);
    config.deadline_margin = Duration::from_secs(2);
    let (service, _) = fake_service(config, Duration::ZERO);
    tokio::spawn(run_lambda(service));

    let ok = format!("{photo_base}/photo/ok.png?sig=signed-query");
    let direct = json!({"api_url": api, "sources": [source(1, "photo", &ok, "secret-token-1")]});
    emulator.invoke("direct", direct);
    let result = emulator
        .answer("direct", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(result["posted"], 1, "{result}");
    assert!(receiver.delivered("photo", 1).is_some());

    let sqs = json!({"Records": [
        {"messageId": "m1", "eventSource": "aws:sqs", "body": json!({"api_url": api, "sources": [
            source(2, "photo", &ok, "secret-token-2")]}).to_string()},
        {"messageId": "m2", "eventSource": "aws:sqs", "body": json!({"api_url": api, "sources": [
            source(3, "photo", &format!("{photo_base}/photo/missing.png"), "secret-token-3")]}).to_string()},
    ]});
    emulator.invoke("sqs", sqs);
    let result = emulator
        .answer("sqs", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        result,
        json!({"batchItemFailures": [{"itemIdentifier": "m2"}]})
    );
    assert!(receiver.delivered("photo", 2).is_some());

    // Source 4 is posted, 5 fails at the callback: the invocation fails after posting 4.
    let failing = json!({"api_url": api, "sources": [
        source(4, "photo", &ok, "secret-token-4"),
        source(5, "photo", &ok, "secret-token-5")]});
    emulator.invoke("failing", failing);
    let error = emulator
        .answer("failing", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(error["errorType"], "SourcesFailed", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("sources[1] (photo 5): callback: HTTP 404"),
        "{error}"
    );
    assert!(receiver.delivered("photo", 4).is_some());

    emulator.invoke("invalid", json!({"api_url": api, "sources": []}));
    let error = emulator
        .answer("invalid", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(error["errorType"], "InvalidPayload", "{error}");

    // A panicking encoder: that source fails at its stage, the others are posted, and the
    // panic is a JSON log line like every other.
    receiver.expect("photo", 6, "secret-token-6");
    let panicking = json!({"api_url": api, "sources": [
        source(6, "photo", &ok, "secret-token-6"),
        source(7, "photo", &format!("{photo_base}/photo/panic.png"), "secret-token-7")]});
    emulator.invoke("panicking", panicking);
    let error = emulator
        .answer("panicking", Duration::from_secs(10))
        .await
        .unwrap_err();
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("sources[1] (photo 7): detect: panicked: fake detector exploded"),
        "{error}"
    );
    assert!(receiver.delivered("photo", 6).is_some());

    // The deadline: with less time left than the margin, no source starts; a source still
    // running just before the deadline is stopped, and the invocation answers in time.
    receiver.expect("photo", 8, "secret-token-8");
    let late = json!({"api_url": api, "sources": [source(8, "photo", &ok, "secret-token-8")]});
    emulator.invoke_with_time("late", late, Duration::from_millis(1500));
    let error = emulator
        .answer("late", Duration::from_secs(10))
        .await
        .unwrap_err();
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("sources[0] (photo 8): download: not started: ")
            && message.contains("s left before the invocation's deadline"),
        "{error}"
    );
    assert!(receiver.delivered("photo", 8).is_none());
    receiver.expect("photo", 9, "secret-token-9");
    let stalling = json!({"api_url": api, "sources": [
        source(9, "photo", &ok, "secret-token-9"),
        source(10, "photo", &format!("{photo_base}/stall"), "secret-token-10")]});
    let started = std::time::Instant::now();
    emulator.invoke_with_time("stalling", stalling, Duration::from_secs(4));
    let error = emulator
        .answer("stalling", Duration::from_secs(10))
        .await
        .unwrap_err();
    let answered = started.elapsed();
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains(
            "sources[1] (photo 10): download: stopped: the invocation's deadline was reached"
        ),
        "{error}"
    );
    assert!(
        answered < Duration::from_secs(4),
        "answered after {answered:?}"
    );
    assert!(receiver.delivered("photo", 9).is_some());

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        !text.contains("secret-token"),
        "a token was logged:\n{text}"
    );
    assert!(
        !text.contains("signed-query"),
        "a signed URL was logged:\n{text}"
    );
    let lines = logs.lines();
    let per_source: Vec<&Value> = lines
        .iter()
        .filter(|line| line.get("pk").is_some())
        .collect();
    assert_eq!(per_source.len(), 10, "{text}");
    let panicked = per_source
        .iter()
        .find(|line| line["pk"] == 7)
        .expect("a line for the panicking source");
    assert_eq!(panicked["stage"], "detect", "{panicked}");
    assert_eq!(panicked["error"], "panicked: fake detector exploded");
    let hook = lines
        .iter()
        .find(|line| line["panic"] == "fake detector exploded")
        .unwrap_or_else(|| panic!("the panic is not a JSON line:\n{text}"));
    assert!(
        hook["location"]
            .as_str()
            .unwrap()
            .contains("service_support"),
        "{hook}"
    );
    for line in &per_source {
        assert!(line["span"]["requestId"].is_string(), "{line}");
        // Every source that was downloaded says how long that took.
        let downloaded = line["download_attempts"].as_u64().unwrap() > 0;
        assert_eq!(line["download_ms"].is_f64(), downloaded, "{line}");
        if line["outcome"] == "posted" {
            for stage in ["decode_ms", "detect_ms", "encode_ms", "callback_ms"] {
                assert!(line[stage].is_f64(), "{stage} missing: {line}");
            }
        } else {
            assert!(line["error"].is_string(), "{line}");
        }
    }
    println!("per-source log line: {}", per_source[0]);
}
