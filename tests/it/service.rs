//! The service over real HTTP on loopback, with a fake face encoder: payload validation,
//! failure handling, retries, concurrency limits, the invoke endpoint and the Lambda handler.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::service_support::*;
use concrexit_facedetection::decode::{DecodeLimits, decode_image};
use concrexit_facedetection::service::lambda::{self, FunctionError};
use concrexit_facedetection::service::{
    InvocationReport, Outcome, Payload, ServiceConfig, Stage, serve,
};
use serde_json::{Value, json};

fn outcome_of(report: &InvocationReport, index: usize) -> &Outcome {
    &report.sources[index].outcome
}

#[tokio::test]
async fn malformed_payloads_are_refused_whole_naming_index_and_field() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("a.png", png(40, 30, 10));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "tok-1");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let good = source(1, "photo", &format!("{photo_base}/photo/a.png"), "tok-1");
    let with_bad = |field: &str, value: Value| {
        let mut bad = good.clone();
        match value {
            Value::Null => {
                bad.as_object_mut().unwrap().remove(field);
            }
            value => bad[field] = value,
        }
        json!({"api_url": api, "sources": [good, good, bad]})
    };
    let cases = [
        (
            json!([1, 2]),
            "payload must be a JSON object, found an array",
        ),
        (
            json!("text"),
            "payload must be a JSON object, found a string",
        ),
        (json!(null), "payload must be a JSON object, found null"),
        (json!({"sources": [good]}), "`api_url`: missing"),
        (
            json!({"api_url": 5, "sources": [good]}),
            "`api_url`: expected a string, found an integer",
        ),
        (
            json!({"api_url": "thalia", "sources": [good]}),
            "`api_url`: not a URL",
        ),
        (
            json!({"api_url": "ftp://thalia.nu", "sources": [good]}),
            "`api_url`: only http and https",
        ),
        (json!({"api_url": api}), "`sources`: missing"),
        (
            json!({"api_url": api, "sources": {"0": good}}),
            "`sources`: expected an array, found an object",
        ),
        (
            json!({"api_url": api, "sources": []}),
            "`sources`: the list is empty",
        ),
        (
            json!({"api_url": api, "sources": [good, 3]}),
            "sources[1].*: expected an object, found an integer",
        ),
        (with_bad("pk", Value::Null), "sources[2].pk: missing"),
        (
            with_bad("pk", json!("1")),
            "sources[2].pk: expected an integer, found a string",
        ),
        (
            with_bad("pk", json!(1.5)),
            "sources[2].pk: expected a non-negative integer, found 1.5",
        ),
        (
            with_bad("pk", json!(-3)),
            "sources[2].pk: expected a non-negative integer, found -3",
        ),
        (
            with_bad("pk", json!(true)),
            "sources[2].pk: expected an integer, found a boolean",
        ),
        (with_bad("type", Value::Null), "sources[2].type: missing"),
        (
            with_bad("type", json!("album")),
            "sources[2].type: expected \"photo\" or \"reference\", found \"album\"",
        ),
        (
            with_bad("type", json!(1)),
            "sources[2].type: expected a string, found an integer",
        ),
        (
            with_bad("photo_url", Value::Null),
            "sources[2].photo_url: missing",
        ),
        (
            with_bad("photo_url", json!(["x"])),
            "sources[2].photo_url: expected a string, found an array",
        ),
        (
            with_bad("photo_url", json!("")),
            "sources[2].photo_url: is empty",
        ),
        (with_bad("token", Value::Null), "sources[2].token: missing"),
        (
            with_bad("token", json!(12)),
            "sources[2].token: expected a string, found an integer",
        ),
    ];
    for (payload, expected) in cases {
        let error = lambda::handle(&service, &payload).await.unwrap_err();
        assert!(matches!(error, FunctionError::InvalidPayload(_)), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(expected),
            "{payload}: {message:?} lacks {expected:?}"
        );
        assert!(!message.contains("tok-1"), "token in {message:?}");
    }
    assert_eq!(photos.gauge.total(), 0, "a photo was downloaded");
    assert_eq!(receiver.attempts("photo", 1), 0, "a callback was posted");
    assert!(Payload::from_json(b"{not json").is_err());
}

#[tokio::test]
async fn photo_and_reference_are_posted_with_float_encodings() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("a.png", png(40, 30, 10));
    photos.add("b.jpg", jpeg(64, 48));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 11, "tok-a");
    receiver.expect("reference", 12, "tok-b");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let payload = json!({"api_url": api, "sources": [
        source(11, "photo", &format!("{photo_base}/photo/a.png"), "tok-a"),
        source(12, "reference", &format!("{photo_base}/redirect/b.jpg"), "tok-b"),
    ]});
    let result = lambda::handle(&service, &payload).await.unwrap();
    assert_eq!(result["posted"], 2, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    let first = &result["sources"][0];
    assert_eq!(first["outcome"], "posted");
    assert_eq!(first["faces"], 1);
    for stage in [
        "download_ms",
        "decode_ms",
        "detect_ms",
        "encode_ms",
        "callback_ms",
    ] {
        assert!(first["timings"][stage].as_f64().is_some(), "{first}");
    }
    for (kind, pk, name) in [("photo", 11, "a.png"), ("reference", 12, "b.jpg")] {
        let bytes = photos.files.lock().unwrap()[name].clone();
        let image = decode_image(&bytes, &DecodeLimits::default()).unwrap();
        // Each f32 is written in its shortest form, which reads back as the same f32.
        let delivered: Vec<Vec<f32>> = receiver
            .delivered(kind, pk)
            .unwrap()
            .iter()
            .map(|e| e.iter().map(|&x| x as f32).collect())
            .collect();
        assert_eq!(delivered, vec![FakeEncoder::encoding_of(&image)]);
    }
    assert!(receiver.refused.lock().unwrap().is_empty());
}

#[tokio::test]
async fn every_bad_photo_fails_alone_and_the_others_are_posted() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    photos.add("garbage.jpg", b"<html>not an image</html>".repeat(10));
    let mut truncated = jpeg(200, 150);
    truncated.truncate(truncated.len() / 2);
    photos.add("header-cut.jpg", truncated[..120].to_vec());
    photos.add("truncated.jpg", truncated);
    photos.add("huge.png", common::png_declaring(30000, 30000));
    photos.add("big.png", vec![0x89; 6 * 1024 * 1024]);
    let (receiver, api) = Receiver::start().await;
    let urls = [
        "/photo/ok.png",
        "/photo/missing.jpg",
        "/photo/garbage.jpg",
        "/photo/truncated.jpg",
        "/photo/huge.png",
        "/stall",
        "/loop",
        "/redirect-to-file",
        "/photo/big.png",
        "/endless",
        "/photo/ok.png",
        "/photo/header-cut.jpg",
        "/redirect-to-ftp",
    ];
    let mut sources = Vec::new();
    for (pk, url) in urls.iter().enumerate() {
        receiver.expect("photo", pk as u64, &format!("tok-{pk}"));
        sources.push(source(
            pk as u64,
            "photo",
            &format!("{photo_base}{url}"),
            &format!("tok-{pk}"),
        ));
    }
    sources.push(source(99, "photo", "file:///etc/passwd", "tok-99"));
    receiver.expect("photo", 99, "tok-99");
    let payload = Payload::from_value(&json!({"api_url": api, "sources": sources})).unwrap();
    let (service, _) = fake_service(fast_config(), Duration::ZERO);

    let started = Instant::now();
    let report = service.run(&payload).await;
    let elapsed = started.elapsed();

    assert!(matches!(
        outcome_of(&report, 0),
        Outcome::Posted { faces: 1 }
    ));
    assert!(matches!(
        outcome_of(&report, 10),
        Outcome::Posted { faces: 1 }
    ));
    assert_failed(&report, 1, Stage::Download, "HTTP 404");
    assert_eq!(
        report.sources[1].download_attempts, 1,
        "a 404 is not retried"
    );
    assert_failed(&report, 2, Stage::Decode, "not a JPEG, PNG");
    // A JPEG cut in its image data is refused, as the README says (PIL would fill the rest
    // with grey); one cut inside its header cannot be decoded at all.
    assert_failed(
        &report,
        3,
        Stage::Decode,
        "truncated JPEG: the data ends before the image does",
    );
    assert_failed(&report, 11, Stage::Decode, "");
    assert_failed(&report, 4, Stage::Decode, "30000x30000 is 900000000 pixels");
    assert_failed(&report, 5, Stage::Download, "timed out");
    assert_eq!(
        report.sources[5].download_attempts, 3,
        "a timeout is retried"
    );
    assert_failed(&report, 6, Stage::Download, "too many redirects");
    // A Location that is not an http(s) URL is not followed.
    assert_failed(&report, 7, Stage::Download, "HTTP 302");
    assert_failed(
        &report,
        12,
        Stage::Download,
        "redirect to ftp://127.0.0.1/photo.jpg: only http and https",
    );
    assert_failed(
        &report,
        8,
        Stage::Download,
        "larger than the limit of 5242880 bytes",
    );
    assert_failed(
        &report,
        9,
        Stage::Download,
        "larger than the limit of 5242880 bytes",
    );
    assert_failed(&report, 13, Stage::Download, "only http and https");
    assert_eq!((report.posted, report.failed), (2, 12));
    assert_eq!(receiver.delivered_count(), 2);
    // Three attempts of 0.8 s at most with short backoff, concurrently with everything else.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    println!(
        "bad photos: {elapsed:?} for {} sources",
        report.sources.len()
    );
}

#[tokio::test]
async fn transient_download_failures_are_retried() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    photos
        .flaky_left
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let payload = Payload::from_value(&json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/flaky/ok.png"), "t")]}))
    .unwrap();
    let report = service.run(&payload).await;
    assert!(
        matches!(outcome_of(&report, 0), Outcome::Posted { .. }),
        "{report:?}"
    );
    assert_eq!(report.sources[0].download_attempts, 3);
}

#[tokio::test]
async fn callback_failing_twice_with_500_is_delivered_on_the_third_attempt_once() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t1");
    receiver.fail_with("photo", 1, vec![Fault::Status(500), Fault::Status(500)]);
    receiver.expect("photo", 2, "t2");
    receiver.fail_with(
        "photo",
        2,
        vec![Fault::Status(429), Fault::Slow(Duration::from_secs(2))],
    );
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let url = format!("{photo_base}/photo/ok.png");
    let payload = Payload::from_value(&json!({"api_url": api, "sources": [
        source(1, "photo", &url, "t1"), source(2, "photo", &url, "t2")]}))
    .unwrap();
    let report = service.run(&payload).await;
    for (index, pk) in [(0, 1), (1, 2)] {
        assert!(
            matches!(outcome_of(&report, index), Outcome::Posted { faces: 1 }),
            "{report:?}"
        );
        assert_eq!(report.sources[index].callback_attempts, 3);
        assert_eq!(receiver.attempts("photo", pk), 3);
        assert_eq!(receiver.delivered("photo", pk).map(|e| e.len()), Some(1));
    }
    assert_eq!(report.posted, 2);
}

#[tokio::test]
async fn callback_403_and_404_are_not_retried_and_a_repeat_counts_as_done() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "right");
    receiver.expect("reference", 2, "r2");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let url = format!("{photo_base}/photo/ok.png");
    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &url, "wrong"),
        source(2, "reference", &url, "r2"),
        source(3, "photo", &url, "unknown-pk"),
    ]});
    let error = lambda::handle(&service, &payload).await.unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("2 of 3 sources failed"), "{message}");
    assert!(
        message.contains("sources[0] (photo 1): callback: HTTP 403"),
        "{message}"
    );
    assert!(
        message.contains("sources[2] (photo 3): callback: HTTP 404"),
        "{message}"
    );
    assert!(
        !message.contains("wrong") && !message.contains("unknown-pk"),
        "{message}"
    );
    assert_eq!(receiver.attempts("photo", 1), 1);
    assert_eq!(receiver.attempts("photo", 3), 1);
    assert!(
        receiver.delivered("reference", 2).is_some(),
        "the good source was posted"
    );

    // The same reference again: concrexit answers 400 "This object is not processing.".
    let again = json!({"api_url": api, "sources": [source(2, "reference", &url, "r2")]});
    let result = lambda::handle(&service, &again).await.unwrap();
    assert_eq!(
        result["sources"][0]["outcome"], "already_processed",
        "{result}"
    );
    assert_eq!(result["already_processed"], 1);
    assert_eq!(receiver.attempts("reference", 2), 2);
}

#[tokio::test]
async fn api_url_with_trailing_slash() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("reference", 5, "t");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let payload = json!({"api_url": format!("{api}/"), "sources": [
        source(5, "reference", &format!("{photo_base}/photo/ok.png"), "t")]});
    lambda::handle(&service, &payload).await.unwrap();
    assert!(receiver.delivered("reference", 5).is_some());
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_sources_are_all_posted_with_bounded_concurrency() {
    let (photos, photo_base) = PhotoServer::start().await;
    *photos.delay.lock().unwrap() = Duration::from_millis(20);
    for i in 0..10 {
        photos.add(&format!("p{i}.jpg"), jpeg(600, 400 + i));
    }
    let (receiver, api) = Receiver::start().await;
    let sources: Vec<Value> = (0..200u64)
        .map(|pk| {
            receiver.expect("photo", pk, &format!("t{pk}"));
            let url = format!("{photo_base}/photo/p{}.jpg", pk % 10);
            source(pk, "photo", &url, &format!("t{pk}"))
        })
        .collect();
    let config = ServiceConfig {
        max_in_flight: 6,
        cpu_workers: 2,
        ..fast_config()
    };
    let (service, encoding) = fake_service(config, Duration::from_millis(5));
    let payload = Payload::from_value(&json!({"api_url": api, "sources": sources})).unwrap();
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let report = service.run(&payload).await;
    let elapsed = started.elapsed();
    let rss_after = peak_rss_kib();
    assert_eq!(report.posted, 200, "{}", report.failure_summary());
    assert_eq!(receiver.delivered_count(), 200);
    assert_eq!(photos.gauge.total(), 200);
    let (downloads, encodes) = (photos.gauge.peak(), encoding.peak());
    assert!(
        downloads > 1 && downloads <= 6,
        "{downloads} downloads at once"
    );
    assert!(
        encodes > 1 && encodes <= 2,
        "{encodes} photos encoded at once"
    );
    println!(
        "200 sources: {elapsed:?}; peak downloads at once {downloads}, encodes at once {encodes}; \
         peak RSS {rss_before} -> {rss_after} KiB"
    );
}

#[tokio::test]
async fn sqs_records_failing_are_reported_for_retry() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t1");
    receiver.expect("photo", 2, "t2");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let ok = format!("{photo_base}/photo/ok.png");
    let record = |id: &str, body: Value| {
        json!({"messageId": id, "receiptHandle": "h", "body": body.to_string(),
               "eventSource": "aws:sqs", "awsRegion": "eu-west-1", "attributes": {},
               "messageAttributes": {}})
    };
    let event = json!({"Records": [
        record("m-good", json!({"api_url": api, "sources": [source(1, "photo", &ok, "t1")]})),
        record("m-invalid", json!({"api_url": api, "sources": []})),
        record("m-partial", json!({"api_url": api, "sources": [
            source(2, "photo", &ok, "t2"),
            source(3, "photo", &format!("{photo_base}/photo/nope.png"), "t3")]})),
    ]});
    let result = lambda::handle(&service, &event).await.unwrap();
    assert_eq!(
        result,
        json!({"batchItemFailures": [{"itemIdentifier": "m-invalid"}, {"itemIdentifier": "m-partial"}]})
    );
    assert!(receiver.delivered("photo", 1).is_some());
    assert!(receiver.delivered("photo", 2).is_some());
}

async fn invoke(
    endpoint: &str,
    invocation_type: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .post(format!(
            "{endpoint}/2015-03-31/functions/function/invocations"
        ))
        .body(body.to_string());
    if let Some(kind) = invocation_type {
        request = request.header("X-Amz-Invocation-Type", kind);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn invoke_endpoint_request_response_and_event() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t1");
    receiver.expect("photo", 2, "t2");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let endpoint = format!(
        "http://{}",
        spawn_server(serve::router(service, &serve::ServeOptions::default())).await
    );
    let ok = format!("{photo_base}/photo/ok.png");

    let payload = json!({"api_url": api, "sources": [source(1, "photo", &ok, "t1")]});
    let (status, headers, body) = invoke(&endpoint, None, &payload.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("x-amz-function-error").is_none());
    let result: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(result["posted"], 1, "{result}");

    // A failed source: Lambda's function-error answer, after the others were posted.
    let payload = json!({"api_url": api, "sources": [
        source(2, "photo", &ok, "t2"), source(3, "photo", &format!("{photo_base}/photo/x"), "t3")]});
    let (status, headers, body) =
        invoke(&endpoint, Some("RequestResponse"), &payload.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["errorType"], "SourcesFailed", "{error}");
    assert!(receiver.delivered("photo", 2).is_some());

    let (status, _, body) = invoke(&endpoint, None, r#"{"api_url": 1}"#).await;
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, error["errorType"].as_str()),
        (200, Some("InvalidPayload"))
    );
    let (status, headers, _) = invoke(&endpoint, None, "{nope").await;
    assert_eq!(status, 400);
    assert_eq!(
        headers["x-amzn-errortype"],
        "InvalidRequestContentException"
    );
    let (status, _, _) = invoke(&endpoint, Some("Sideways"), "{}").await;
    assert_eq!(status, 400);
    let (status, _, _) = invoke(&endpoint, Some("DryRun"), "{}").await;
    assert_eq!(status, 204);

    // Event: 202 at once, the work happens afterwards.
    *photos.delay.lock().unwrap() = Duration::from_millis(300);
    receiver.expect("reference", 4, "t4");
    let payload = json!({"api_url": api, "sources": [source(4, "reference", &ok, "t4")]});
    let started = Instant::now();
    let (status, _, body) = invoke(&endpoint, Some("Event"), &payload.to_string()).await;
    assert_eq!((status, body.as_str()), (202, ""));
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "Event waited for the work"
    );
    assert!(receiver.delivered("reference", 4).is_none());
    wait_for(|| receiver.delivered("reference", 4).is_some()).await;
}

/// concrexit's own client: boto3's `invoke(..., InvocationType="Event")` with
/// `AWS_ENDPOINT_URL_LAMBDA` pointing at the endpoint. Needs a Python with boto3: the one in
/// `FACEDETECT_TEST_PYTHON`, else `python3`; skipped when neither has boto3, unless
/// `FACEDETECT_REQUIRE_BOTO3` is set.
#[tokio::test]
async fn boto3_invokes_the_local_endpoint() {
    let python = std::env::var("FACEDETECT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_boto3 = std::process::Command::new(&python)
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_boto3 {
        assert!(
            std::env::var_os("FACEDETECT_REQUIRE_BOTO3").is_none(),
            "{python} has no boto3"
        );
        eprintln!("skipped: {python} has no boto3 (set FACEDETECT_TEST_PYTHON)");
        return;
    }
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 8, "t8");
    receiver.expect("reference", 9, "t9");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let endpoint = format!(
        "http://{}",
        spawn_server(serve::router(
            Arc::clone(&service),
            &serve::ServeOptions::default()
        ))
        .await
    );
    let ok = format!("{photo_base}/photo/ok.png");
    let event = json!({"api_url": api, "sources": [source(8, "photo", &ok, "t8")]});
    let sync = json!({"api_url": api, "sources": [source(9, "reference", &ok, "t9")]});
    let script = r#"
import json, os, sys, boto3
client = boto3.client("lambda")
arn = "arn:aws:lambda:eu-west-1:123456789012:function:concrexit-facedetection"
r = client.invoke(FunctionName=arn, InvocationType="Event", Payload=sys.argv[1])
assert r["StatusCode"] == 202, r
r = client.invoke(FunctionName=arn, Payload=sys.argv[2].encode())
assert r["StatusCode"] == 200 and "FunctionError" not in r, r
print(json.dumps(json.loads(r["Payload"].read())))
"#;
    let (event, sync) = (event.to_string(), sync.to_string());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .args(["-c", script, &event, &sync])
            .env("AWS_ENDPOINT_URL_LAMBDA", &endpoint)
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_DEFAULT_REGION", "eu-west-1")
            .env_remove("AWS_PROFILE")
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["posted"], 1, "{result}");
    wait_for(|| receiver.delivered("photo", 8).is_some()).await;
    assert!(receiver.delivered("reference", 9).is_some());
}

#[tokio::test]
async fn batch_runs_json_lines_and_a_pretty_printed_payload() {
    use concrexit_facedetection::service::batch::{self, BatchInput};

    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    let ok = format!("{photo_base}/photo/ok.png");
    let mut lines = String::new();
    for pk in 0..6u64 {
        receiver.expect("photo", pk, "t");
        let line = json!({"api_url": api, "sources": [source(pk, "photo", &ok, "t")]});
        lines.push_str(&format!("{line}\n\n"));
    }
    lines.push_str("{\"api_url\": 3}\n");
    let missing = format!("{photo_base}/photo/missing.png");
    lines.push_str(
        &json!({"api_url": api, "sources": [source(50, "photo", &missing, "t")]}).to_string(),
    );
    let dir = std::env::temp_dir().join(format!("facedetect-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("payloads.jsonl");
    std::fs::write(&file, lines).unwrap();
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let summary = batch::run(&service, &BatchInput::File(file.clone()), 4)
        .await
        .unwrap();
    assert_eq!(
        (summary.payloads, summary.invalid_payloads, summary.sources),
        (8, 1, 7)
    );
    assert_eq!((summary.posted, summary.failed, summary.faces), (6, 1, 6));
    assert!(!summary.is_success());
    println!("batch summary: {summary}");

    // One payload spread over several lines is one payload, not lines.
    receiver.expect("reference", 60, "t");
    let pretty = serde_json::to_string_pretty(
        &json!({"api_url": api, "sources": [source(60, "reference", &ok, "t")]}),
    )
    .unwrap();
    std::fs::write(&file, pretty).unwrap();
    let summary = batch::run(&service, &BatchInput::File(file), 4)
        .await
        .unwrap();
    assert_eq!((summary.payloads, summary.posted), (1, 1));
    assert!(summary.is_success());
    std::fs::remove_dir_all(dir).unwrap();
}
