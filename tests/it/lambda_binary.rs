//! The `facedetect-lambda` binary end to end through a Lambda Runtime API emulator, with the real
//! models: a direct invocation with concrexit's payload and an SQS event, answered on one warm
//! process (the models are loaded once, at start).

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::service_support::runtime_api::RuntimeApi;
use crate::service_support::*;
use serde_json::{Value, json};

fn seed_encodings(case: &str) -> Vec<Vec<f32>> {
    let path = common::crate_dir()
        .join("tests/fixtures/pkg")
        .join(case)
        .join("reference.json");
    let reference: common::Reference =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    reference.seed_encodings
}

fn assert_close(got: &[Vec<f64>], want: &[Vec<f32>]) -> f32 {
    assert!(
        !want.is_empty(),
        "a photo without faces proves nothing here"
    );
    assert_eq!(got.len(), want.len());
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((*a as f32 - b).abs());
        }
    }
    assert!(worst <= 1e-5, "max difference {worst}");
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_binary_answers_direct_and_sqs_invocations() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("t1.webp", common::pkg_fixture("images/large/t1.webp"));
    photos.add(
        "obama.webp",
        common::pkg_fixture("images/medium/obama.webp"),
    );
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "token-1");
    receiver.expect("reference", 2, "token-2");
    receiver.expect("photo", 3, "token-3");
    let (emulator, runtime_api) = RuntimeApi::start().await;

    let started = Instant::now();
    let _function = common::KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_facedetect-lambda"))
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "facedetection")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("FACEDETECT_WEIGHTS", common::weights_dir())
            // The test's servers are on loopback.
            .env("FACEDETECT_DESTINATIONS", "local")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let direct = json!({"api_url": format!("{api}/"), "sources": [
        source(1, "photo", &format!("{photo_base}/photo/t1.webp"), "token-1")]});
    emulator.invoke("direct", direct);
    let result = emulator
        .answer("direct", Duration::from_secs(300))
        .await
        .unwrap();
    let first = started.elapsed();
    assert_eq!(result["posted"], 1, "{result}");
    let worst_photo = assert_close(
        &receiver.delivered("photo", 1).unwrap(),
        &seed_encodings("large/t1"),
    );

    let record = |id: &str, body: Value| json!({"messageId": id, "eventSource": "aws:sqs", "body": body.to_string()});
    let sqs = json!({"Records": [
        record("good", json!({"api_url": api, "sources": [
            source(2, "reference", &format!("{photo_base}/photo/obama.webp"), "token-2")]})),
        record("bad", json!({"api_url": api, "sources": [
            source(3, "photo", &format!("{photo_base}/photo/missing.webp"), "token-3")]})),
    ]});
    let started = Instant::now();
    emulator.invoke("sqs", sqs);
    let result = emulator
        .answer("sqs", Duration::from_secs(300))
        .await
        .unwrap();
    let second = started.elapsed();
    assert_eq!(
        result,
        json!({"batchItemFailures": [{"itemIdentifier": "bad"}]})
    );
    let worst_reference = assert_close(
        &receiver.delivered("reference", 2).unwrap(),
        &seed_encodings("medium/obama"),
    );
    println!(
        "cold start + t1 (6 faces): {first:?}; warm SQS event: {second:?}; largest differences \
         {worst_photo:.2e} (photo), {worst_reference:.2e} (reference)"
    );
}
