//! The `facedetect serve` and `facedetect batch` commands with the real models: the README's
//! curl command against the local invoke endpoint, and a JSON-lines file through batch.

use crate::common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::service_support::*;
use serde_json::{Value, json};

fn facedetect() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_facedetect"));
    command.env("FACEDETECT_WEIGHTS", common::weights_dir());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_readme_curl_command() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("t1.webp", common::pkg_fixture("images/large/t1.webp"));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "token-1");

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = common::KillOnDrop(
        facedetect()
            .args(["serve", "--port", &port.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/photo/t1.webp"), "token-1")]});
    let url = format!("http://localhost:{port}/2015-03-31/functions/function/invocations");
    let body = match Command::new("curl")
        .args(["-sS", "-XPOST", &url, "-d", &payload.to_string()])
        .output()
    {
        Ok(output) => {
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        }
        // No curl here: the same request from Rust.
        Err(_) => reqwest::Client::new()
            .post(&url)
            .body(payload.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    };
    let result: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(result["posted"], 1, "{result}");
    assert_eq!(result["sources"][0]["faces"], 6, "{result}");
    assert_eq!(receiver.delivered("photo", 1).unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_json_lines_from_stdin_and_summarises() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add(
        "obama.webp",
        common::pkg_fixture("images/medium/obama.webp"),
    );
    let (receiver, api) = Receiver::start().await;
    receiver.expect("reference", 1, "t1");
    receiver.expect("reference", 2, "t2");
    let ok = format!("{photo_base}/photo/obama.webp");
    let lines = [
        json!({"api_url": api, "sources": [source(1, "reference", &ok, "t1")]}),
        json!({"api_url": api, "sources": [source(2, "reference", &ok, "t2"),
            source(3, "reference", &format!("{photo_base}/photo/gone.webp"), "t3")]}),
    ]
    .map(|line| line.to_string())
    .join("\n");

    let mut child = facedetect()
        .args(["batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        "2 payloads (0 invalid), 3 sources: 2 posted, 0 already processed, 1 failed; 2 faces"
    );
    assert!(
        stderr.contains("sources[1] (reference 3): download: HTTP 404"),
        "{stderr}"
    );
    assert!(receiver.delivered("reference", 1).is_some());
    assert!(receiver.delivered("reference", 2).is_some());
}
