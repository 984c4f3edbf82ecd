//! The `facedetect serve` and `facedetect batch` commands with the real models: the README's
//! curl command against the local invoke endpoint, and a JSON-lines file through batch.

use crate::common;

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

    let (_server, port) = start_serve(&[]).await;

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

/// Starts `facedetect serve` with `args` on a free port and waits until it listens.
async fn start_serve(args: &[&str]) -> (common::KillOnDrop, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = common::KillOnDrop(
        facedetect()
            .args(["serve", "--port", &port.to_string()])
            .args(args)
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
    (server, port)
}

/// SIGTERM (a container stopping) while Event invocations are being worked on: `serve` stops
/// accepting, finishes the work it accepted (every photo is posted) and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_accepted_event_work_and_exits_0() {
    let (photos, photo_base) = PhotoServer::start().await;
    // Each photo answers after a second, so that the work is surely in flight at SIGTERM.
    *photos.delay.lock().unwrap() = Duration::from_secs(1);
    let (receiver, api) = Receiver::start().await;
    let names = ["t1.webp", "obama.webp", "biden.webp"];
    let mut sources = Vec::new();
    for (pk, name) in (1..).zip(names) {
        photos.add(name, common::pkg_fixture(&format!("images/large/{name}")));
        receiver.expect("photo", pk, &format!("token-{pk}"));
        sources.push(source(
            pk,
            "photo",
            &format!("{photo_base}/photo/{name}"),
            &format!("token-{pk}"),
        ));
    }
    let (mut server, port) = start_serve(&[]).await;
    let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/function/invocations");
    let response = reqwest::Client::new()
        .post(&url)
        .header("X-Amz-Invocation-Type", "Event")
        .body(json!({"api_url": api, "sources": sources}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        receiver.delivered_count(),
        0,
        "posted before the photos were served"
    );

    server.terminate();
    let signalled = Instant::now();
    let status = server
        .exit_within(Duration::from_secs(120))
        .await
        .expect("serve still running 120 s after SIGTERM");
    println!("exited {:?} after SIGTERM", signalled.elapsed());
    assert!(status.success(), "serve exited with {status}");
    for (pk, name) in (1..).zip(names) {
        assert!(
            receiver.delivered("photo", pk).is_some(),
            "{name} was accepted but not posted before exit"
        );
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening after exit"
    );
}

/// The peak resident memory of a process so far, in bytes (Linux).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// A real 10000x10000 PNG (100 megapixels, within the decode limit; 1.2 GB once upsampled).
fn png_10000x10000() -> Vec<u8> {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let image = image::RgbImage::from_pixel(10_000, 10_000, image::Rgb([90, 120, 150]));
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Default, FilterType::Sub)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_survives_a_photo_too_large_for_its_memory_budget() {
    const MEMORY_MB: u64 = 1024;
    let (photos, photo_base) = PhotoServer::start().await;
    let t1 = common::pkg_fixture("images/large/t1.webp");
    // A photo with faces that fits the budget, but only one like it at a time: t1 enlarged to
    // 2400x1800 (4.3 megapixels).
    let enlarged = image::load_from_memory(&t1)
        .unwrap()
        .resize_exact(2400, 1800, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let mut big = std::io::Cursor::new(Vec::new());
    enlarged
        .write_to(&mut big, image::ImageFormat::Jpeg)
        .unwrap();
    photos.add("t1.webp", t1);
    photos.add("big.jpg", big.into_inner());
    photos.add("huge.png", png_10000x10000());
    let (receiver, api) = Receiver::start().await;
    for pk in 1..=3 {
        receiver.expect("photo", pk, &format!("token-{pk}"));
    }
    let (server, port) = start_serve(&["--memory-mb", &MEMORY_MB.to_string()]).await;

    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/photo/t1.webp"), "token-1"),
        source(2, "photo", &format!("{photo_base}/photo/huge.png"), "token-2"),
        source(3, "photo", &format!("{photo_base}/photo/big.jpg"), "token-3")]});
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
        ))
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let error: Value = response.json().await.unwrap();
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("1 of 3 sources failed: sources[1] (photo 2): detect: too large to detect with the HOG detector at upsample 1: 100.0 MP, limit "),
        "{message}"
    );
    assert_eq!(receiver.delivered("photo", 1).unwrap().len(), 6);
    assert!(!receiver.delivered("photo", 3).unwrap().is_empty());

    let peak = peak_rss(server.0.id());
    println!(
        "serve --memory-mb {MEMORY_MB}: peak RSS {} MiB; {message}",
        peak / (1024 * 1024)
    );
    assert!(
        peak <= MEMORY_MB * 1024 * 1024,
        "peak RSS {} MiB over the {MEMORY_MB} MiB budget",
        peak / (1024 * 1024)
    );
}

#[test]
fn serve_refuses_to_listen_beyond_loopback_without_a_secret() {
    let output = facedetect()
        .args(["serve", "--host", "0.0.0.0", "--port", "0"])
        .env_remove("FACEDETECT_SERVE_SECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without a secret"),
        "{stderr}"
    );
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
    // Source 4's photo has a face, but concrexit does not know the source: its callback fails.
    let lines = [
        json!({"api_url": api, "sources": [source(1, "reference", &ok, "t1")]}),
        json!({"api_url": api, "sources": [source(2, "reference", &ok, "t2"),
            source(3, "reference", &format!("{photo_base}/photo/gone.webp"), "t3")]}),
        json!({"api_url": api, "sources": [source(4, "reference", &ok, "t4")]}),
    ]
    .map(|line| line.to_string())
    .join("\n\n");

    let output = tokio::task::spawn_blocking(move || {
        common::run_with_stdin(
            facedetect().args(["batch", "-"]).env("RUST_LOG", "info"),
            &lines,
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.trim(),
        "3 payloads (0 invalid), 4 sources: 2 posted, 0 already processed, 2 failed; 3 faces found"
    );
    // Each failure with the line of its payload in the input (blank lines counted).
    assert!(
        stderr.contains("line 3: sources[1] (reference 3): download: HTTP 404"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 5: sources[0] (reference 4): callback: HTTP 404"),
        "{stderr}"
    );
    // RUST_LOG=info: the failure lines, and the JSON log lines the README promises, one per
    // source.
    let mut logged = Vec::new();
    for line in stderr.lines().filter(|line| !line.starts_with("line ")) {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a failure line nor JSON ({e}): {line}"));
        if let Some(pk) = event["pk"].as_u64() {
            logged.push((pk, event["outcome"].as_str().unwrap().to_string()));
        }
    }
    logged.sort();
    assert_eq!(
        logged,
        [(1, "posted"), (2, "posted"), (3, "failed"), (4, "failed")]
            .map(|(pk, outcome)| (pk, outcome.to_string()))
    );
    assert!(receiver.delivered("reference", 1).is_some());
    assert!(receiver.delivered("reference", 2).is_some());
}
