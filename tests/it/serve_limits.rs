//! `facedetect serve` against misbehaving peers, as a process on loopback: clients that send
//! their request head a byte at a time, wrongly signed requests whose body never finishes, a
//! half-open connection and an unfinished call at SIGTERM, payloads carrying megabytes of
//! ignored data under a small `--memory-mb`, a caller that hangs up, and payloads naming NAT64
//! and reserved addresses (in a network namespace of its own).

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use serde_json::{Value, json};

use crate::service_support::*;

const INVOKE_PATH: &str = "/2015-03-31/functions/function/invocations";

/// `facedetect serve` on a free port with `args`, its log (JSON lines) in a file.
struct Serve {
    process: common::KillOnDrop,
    port: u16,
    log: PathBuf,
}

impl Serve {
    async fn start(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::env::temp_dir().join(format!(
            "facedetect-serve-limits-{}-{port}.log",
            std::process::id()
        ));
        let process = common::KillOnDrop(
            Command::new(env!("CARGO_BIN_EXE_facedetect"))
                .env("FACEDETECT_WEIGHTS", common::weights_dir())
                .args(["serve", "--port", &port.to_string()])
                .args(args)
                .stderr(std::fs::File::create(&log).unwrap())
                .stdout(Stdio::null())
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
        Self { process, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}{INVOKE_PATH}", self.port)
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The peak resident memory of the process so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.process.0.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kib * 1024
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Whether the server has closed `stream`, waiting at most `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(within.max(Duration::from_millis(1))))
        .unwrap();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// The status line of the answer on `stream`, read within `within`.
fn status_line(stream: &mut TcpStream, within: Duration) -> String {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or("").to_string()
}

/// A photo without faces on a loopback photo server and a receiver for its callback: the
/// payload of one source.
async fn one_photo(
    delay: Duration,
) -> (std::sync::Arc<PhotoServer>, std::sync::Arc<Receiver>, Value) {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    *photos.delay.lock().unwrap() = delay;
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/photo/ok.png"), "t")]});
    (photos, receiver, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_and_connections_bounded() {
    let serve = Serve::start(&["--header-timeout", "1", "--max-connections", "4"]).await;
    let (_photos, receiver, payload) = one_photo(Duration::ZERO).await;
    // Six clients sending a request head a byte every 100 ms: four are served at a time.
    let started = Instant::now();
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let mut stream = serve.connect();
            std::thread::spawn(move || {
                let head = format!("POST {INVOKE_PATH} HTTP/1.1\r\nHost: a\r\nX-Slow: ");
                for byte in head.bytes().chain(std::iter::repeat(b'a')) {
                    if stream.write_all(&[byte]).is_err()
                        || closed_within(&mut stream, Duration::from_millis(100))
                    {
                        return started.elapsed();
                    }
                    assert!(started.elapsed() < Duration::from_secs(20), "never cut off");
                }
                unreachable!()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // A request arriving meanwhile is served once room is made.
    let response = reqwest::Client::new()
        .post(serve.url())
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    let served_after = started.elapsed();
    assert_eq!(response.status(), 200);
    assert!(receiver.delivered("photo", 1).is_some());
    let mut closed: Vec<Duration> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    closed.sort();
    println!(
        "slow heads closed after {closed:?}; a normal request answered after {served_after:?}"
    );
    // Each is closed about a second after it was accepted: four at once, then the rest.
    assert!(closed[0] >= Duration::from_millis(900), "{closed:?}");
    assert!(closed[3] < Duration::from_millis(2500), "{closed:?}");
    assert!(closed[5] < Duration::from_millis(4500), "{closed:?}");
    assert!(
        served_after < Duration::from_millis(4500),
        "{served_after:?}"
    );
    assert!(serve.log().contains("connection closed"), "{}", serve.log());
}

/// The head of a request signed with a wrong secret (well formed and freshly dated), announcing
/// a body of `length` bytes.
fn wrongly_signed_head(port: u16, length: usize) -> String {
    let url = format!("http://127.0.0.1:{port}{INVOKE_PATH}");
    let host = format!("127.0.0.1:{port}");
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let identity = Credentials::new("AKIDATTACKER", "not-the-secret", None, None, "tests").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("lambda")
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let body = vec![b'x'; length];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(&body),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut head = format!(
        "POST {INVOKE_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    );
    for (name, value) in instructions.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongly_signed_unfinished_bodies_never_keep_out_the_bearer() {
    const SECRET: &str = "the-real-secret";
    let serve = Serve::start(&[
        "--secret",
        SECRET,
        "--max-invocations",
        "2",
        "--body-timeout",
        "3",
    ])
    .await;
    let (_photos, receiver, payload) = one_photo(Duration::ZERO).await;
    // Eight (four times --max-invocations) send a wrongly signed head and one byte of the
    // thousand they announce, and stay.
    let mut attackers: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = serve.connect();
            let head = wrongly_signed_head(serve.port, 1000);
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(b"{").unwrap();
            stream
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(serve.url())
        .header("Authorization", format!("Bearer {SECRET}"))
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = response.status();
    let body = response.text().await.unwrap();
    println!("with 8 unfinished wrongly signed requests open: bearer request {status} in {took:?}");
    assert_eq!(status, 200, "{body}");
    assert!(receiver.delivered("photo", 1).is_some());
    // The attackers are answered 408 once the body timeout is over, and closed.
    let started = Instant::now();
    for stream in &mut attackers {
        let line = status_line(stream, Duration::from_secs(6));
        assert!(line.starts_with("HTTP/1.1 408"), "{line:?}");
        assert!(closed_within(stream, Duration::from_secs(2)));
    }
    println!(
        "attackers answered 408 and closed within {:?}",
        started.elapsed()
    );
    // A completed wrongly signed request is refused as ever.
    let mut stream = serve.connect();
    let head = wrongly_signed_head(serve.port, 2);
    stream.write_all(format!("{head}{{}}").as_bytes()).unwrap();
    let line = status_line(&mut stream, Duration::from_secs(5));
    assert!(line.starts_with("HTTP/1.1 403"), "{line:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_the_grace_at_most_whatever_the_clients_do() {
    let (photos, _receiver, payload) = one_photo(Duration::from_secs(30)).await;
    let mut serve = Serve::start(&["--shutdown-grace", "2"]).await;
    // Half a request head, kept open; and a RequestResponse call whose photo takes 30 s.
    let mut half_open = serve.connect();
    half_open
        .write_all(format!("POST {INVOKE_PATH} HTTP/1.1\r\nHost: a\r\n").as_bytes())
        .unwrap();
    let call = tokio::spawn(
        reqwest::Client::new()
            .post(serve.url())
            .body(payload.to_string())
            .send(),
    );
    wait_for(|| photos.gauge.total() >= 1).await;
    serve.process.terminate();
    let signalled = Instant::now();
    let status = serve
        .process
        .exit_within(Duration::from_secs(10))
        .await
        .expect("serve still running 10 s after SIGTERM");
    let took = signalled.elapsed();
    println!(
        "--shutdown-grace 2, a half-open connection and an unfinished call: exited {status} {took:?} after SIGTERM"
    );
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "{took:?}: the grace was not given"
    );
    assert!(closed_within(&mut half_open, Duration::from_secs(1)));
    assert!(
        call.await.unwrap().is_err(),
        "the unfinished call was answered"
    );
    let log = serve.log();
    assert!(log.contains("shutdown grace over"), "{log}");

    // A second signal ends it at once, however long the grace.
    let mut serve = Serve::start(&["--shutdown-grace", "60"]).await;
    let _call = tokio::spawn(
        reqwest::Client::new()
            .post(serve.url())
            .body(payload.to_string())
            .send(),
    );
    wait_for(|| photos.gauge.total() >= 2).await;
    serve.process.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        serve.process.0.try_wait().unwrap().is_none(),
        "exited before the grace"
    );
    serve.process.terminate();
    let again = Instant::now();
    serve
        .process
        .exit_within(Duration::from_secs(5))
        .await
        .expect("serve still running 5 s after a second SIGTERM");
    println!("second SIGTERM: exited {:?} after it", again.elapsed());
    assert!(
        again.elapsed() < Duration::from_secs(1),
        "{:?}",
        again.elapsed()
    );
    assert!(serve.log().contains("second signal"), "{}", serve.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_fields_are_never_held_in_memory() {
    const MEMORY_MB: u64 = 512;
    // Photos that take 2 s, so that every invocation is still unfinished when the last is
    // accepted.
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    *photos.delay.lock().unwrap() = Duration::from_secs(2);
    let (receiver, api) = Receiver::start().await;
    let serve = Serve::start(&["--memory-mb", &MEMORY_MB.to_string()]).await;
    let before = serve.peak_rss();
    // A valid payload and an ignored field of just under 6 MiB: three million numbers, each a
    // node of a parsed JSON tree.
    let padding = format!("[{}0]", "0,".repeat(3_000_000));
    let client = reqwest::Client::new();
    for pk in 1..=16u64 {
        receiver.expect("photo", pk, "t");
        let payload = json!({"api_url": api, "sources": [
            source(pk, "photo", &format!("{photo_base}/photo/ok.png"), "t")]});
        let mut body = payload.to_string();
        body.pop();
        body.push_str(&format!(",\"ignored\":{padding}}}"));
        assert!(body.len() < 6 * 1024 * 1024);
        let response = client
            .post(serve.url())
            .header("X-Amz-Invocation-Type", "Event")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
    }
    assert!(
        receiver.delivered_count() < 16,
        "the invocations ended too soon to tell"
    );
    let peak = serve.peak_rss();
    println!(
        "16 Event invocations with a {:.1} MiB ignored field under --memory-mb {MEMORY_MB}: peak RSS {} MiB (at start {} MiB)",
        padding.len() as f64 / (1024.0 * 1024.0),
        peak / (1024 * 1024),
        before / (1024 * 1024)
    );
    // Each body is held only while it is read and parsed: far below one parsed tree each.
    assert!(
        peak < before + 128 * 1024 * 1024,
        "peak RSS {} MiB, {} MiB at start",
        peak / (1024 * 1024),
        before / (1024 * 1024)
    );
    // The payloads were read whole: their photos are posted.
    wait_for(|| receiver.delivered("photo", 1).is_some()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_hangs_up_does_not_cancel_its_invocation() {
    let (photos, receiver, payload) = one_photo(Duration::from_secs(1)).await;
    let serve = Serve::start(&[]).await;
    let body = payload.to_string();
    let mut stream = serve.connect();
    stream
        .write_all(
            format!(
                "POST {INVOKE_PATH} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
    wait_for(|| photos.gauge.total() >= 1).await;
    // The caller gives up (a read timeout) while the photo is being fetched.
    drop(stream);
    wait_for(|| receiver.delivered("photo", 1).is_some()).await;
    // Its source is logged as any other's.
    let started = Instant::now();
    loop {
        let log = serve.log();
        let done = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|line| line["message"] == "source done" && line["pk"] == 1);
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no source line:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Under `public`, photo URLs on NAT64 addresses of private, loopback and metadata addresses
/// and on special-purpose ranges are refused before any connection is tried; the test runs in
/// a network namespace of its own, so that nothing could leave the machine if they were not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nat64_and_reserved_addresses_are_refused_before_any_connection() {
    if !common::in_own_netns(
        "serve_limits::nat64_and_reserved_addresses_are_refused_before_any_connection",
    ) {
        return;
    }
    let serve = Serve::start(&["--destinations", "public"]).await;
    let refused = [
        (
            "[64:ff9b::a9fe:a9fe]",
            "64:ff9b::a9fe:a9fe is a link-local address",
        ),
        (
            "[64:ff9b::a00:1]",
            "64:ff9b::a00:1 is a private-network address",
        ),
        ("[64:ff9b::7f00:1]", "64:ff9b::7f00:1 is on this machine"),
        (
            "[64:ff9b:1::a00:1]",
            "64:ff9b:1::a00:1 is a private-network address",
        ),
        ("198.18.0.1", "198.18.0.1 is a benchmarking address"),
        ("240.0.0.1", "240.0.0.1 is a reserved address"),
        ("192.0.0.1", "192.0.0.1 is an IETF protocol assignment"),
        ("192.0.2.1", "192.0.2.1 is a documentation address"),
        ("[2001:db8::1]", "2001:db8::1 is a documentation address"),
        ("[100::1]", "100::1 is reserved by the IETF"),
    ];
    let sources: Vec<Value> = refused
        .iter()
        .enumerate()
        .map(|(pk, (host, _))| source(pk as u64, "photo", &format!("http://{host}/p.jpg"), "t"))
        .collect();
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(serve.url())
        .body(json!({"api_url": "https://api.example", "sources": sources}).to_string())
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let error: Value = response.json().await.unwrap();
    let message = error["errorMessage"].as_str().unwrap();
    assert!(message.starts_with("10 of 10 sources failed"), "{message}");
    for (pk, (_, why)) in refused.iter().enumerate() {
        assert!(
            message.contains(&format!(
                "sources[{pk}] (photo {pk}): download: destination refused: {why}"
            )),
            "{why}: {message}"
        );
    }
    assert!(took < Duration::from_secs(1), "{took:?}");
}
