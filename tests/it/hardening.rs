//! The service at its edges, over real HTTP on loopback with a fake face encoder: the
//! destination policy (link-local refused after DNS and on redirect hops), redirects (callbacks
//! never follow one, downloads send no Referer), error bodies read only in part, `Retry-After`
//! as a date, encoders that panic or return bad encodings, the memory budget, and the invoke
//! endpoint's admission (Origin, secret, bounded queue, 429), concurrency and shutdown.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::service_support::*;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, get, post};
use concrexit_facedetection::error::Report;
use concrexit_facedetection::service::serve::{self, ServeOptions};
use concrexit_facedetection::service::{
    Destinations, InvocationReport, Outcome, Payload, ServiceConfig, Stage, lambda,
};
use concrexit_facedetection::shutdown::{Shutdown, ShutdownTrigger};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::{Value, json};

fn assert_posted(report: &InvocationReport, index: usize) {
    assert!(
        matches!(report.sources[index].outcome, Outcome::Posted { .. }),
        "source {index}: {:?}",
        report.sources[index].outcome
    );
}

/// A resolver from a fixed table, recording the names it was asked for; names not in the
/// table do not resolve.
#[derive(Default)]
struct TableResolver {
    table: HashMap<String, Vec<SocketAddr>>,
    asked: Mutex<Vec<String>>,
}

impl Resolve for TableResolver {
    fn resolve(&self, name: Name) -> Resolving {
        self.asked.lock().unwrap().push(name.as_str().to_string());
        let found = self.table.get(name.as_str()).cloned();
        Box::pin(async move {
            let addrs = found.ok_or("no such name")?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

fn config_with_resolver(resolver: Arc<TableResolver>) -> ServiceConfig {
    let mut config = fast_config();
    config.http.resolver = resolver;
    config
}

#[tokio::test]
async fn link_local_is_refused_after_dns_and_on_every_redirect_hop() {
    if !common::in_own_netns("hardening::link_local_is_refused_after_dns_and_on_every_redirect_hop")
    {
        return;
    }
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let port = photo_base.rsplit(':').next().unwrap().to_string();
    // Redirects to the metadata service, by address and by a name that resolves to it.
    let hop_port = port.clone();
    let hops = Router::new()
        .route(
            "/to-metadata",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        )
        .route(
            "/to-metadata-name",
            get(move || {
                let location = format!("http://metadata.test:{hop_port}/photo/ok.png");
                async move { (StatusCode::FOUND, [(header::LOCATION, location)]) }
            }),
        );
    let hops = format!("http://{}", spawn_server(hops).await);

    let loopback = |port: &str| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    let resolver = Arc::new(TableResolver {
        table: HashMap::from([
            (
                "metadata.test".to_string(),
                vec!["169.254.169.254:80".parse().unwrap()],
            ),
            (
                "metadata6.test".to_string(),
                vec!["[fe80::a9fe:a9fe]:80".parse().unwrap()],
            ),
            (
                "aws6.test".to_string(),
                vec!["[fd00:ec2::254]:80".parse().unwrap()],
            ),
            // A name resolving to the metadata service and to the photo server: only the
            // allowed address is used.
            (
                "mixed.test".to_string(),
                vec!["169.254.169.254:80".parse().unwrap(), loopback(&port)],
            ),
            ("photos.test".to_string(), vec![loopback(&port)]),
        ]),
        asked: Mutex::default(),
    });
    let (receiver, api) = Receiver::start().await;
    let urls = [
        format!("http://metadata.test:{port}/photo/ok.png"),
        format!("http://metadata6.test:{port}/photo/ok.png"),
        format!("http://aws6.test:{port}/photo/ok.png"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::ffff:169.254.169.254]/latest/meta-data/".to_string(),
        "http://2852039166/latest/meta-data/".to_string(),
        format!("{hops}/to-metadata"),
        format!("{hops}/to-metadata-name"),
        format!("http://mixed.test:{port}/photo/ok.png"),
        format!("http://photos.test:{port}/photo/ok.png"),
    ];
    let sources: Vec<Value> = urls
        .iter()
        .enumerate()
        .map(|(pk, url)| {
            receiver.expect("photo", pk as u64, "t");
            source(pk as u64, "photo", url, "t")
        })
        .collect();
    let payload = Payload::from_value(&json!({"api_url": api, "sources": sources})).unwrap();
    let service = Arc::new(
        concrexit_facedetection::service::Service::new(
            Arc::new(FakeEncoder::default()),
            config_with_resolver(resolver.clone()),
        )
        .unwrap(),
    );
    let started = Instant::now();
    let report = service.run(&payload).await;
    let elapsed = started.elapsed();

    let link_local = "is a link-local address";
    assert_failed(
        &report,
        0,
        Stage::Download,
        "metadata.test resolves to 169.254.169.254 is a link-local",
    );
    assert_failed(
        &report,
        1,
        Stage::Download,
        "fe80::a9fe:a9fe is a link-local",
    );
    assert_failed(&report, 2, Stage::Download, "AWS's IPv6 metadata address");
    assert_failed(&report, 3, Stage::Download, link_local);
    assert_failed(&report, 4, Stage::Download, link_local);
    assert_failed(&report, 5, Stage::Download, link_local);
    assert_failed(
        &report,
        6,
        Stage::Download,
        "redirect to http://169.254.169.254/latest/meta-data/: 169.254.169.254 is a link-local",
    );
    assert_failed(
        &report,
        7,
        Stage::Download,
        "metadata.test resolves to 169.254.169.254",
    );
    assert_posted(&report, 8);
    assert_posted(&report, 9);
    for index in 0..8 {
        assert!(
            report.sources[index].download_attempts <= 1,
            "a refusal is final: {:?}",
            report.sources[index]
        );
    }
    // Nothing waited for a connection to the metadata service (800 ms per attempt).
    assert!(elapsed < Duration::from_millis(700), "took {elapsed:?}");
    let asked = resolver.asked.lock().unwrap().clone();
    assert!(
        asked.iter().all(|name| name.ends_with(".test")),
        "{asked:?}"
    );
    assert_eq!(
        photos.gauge.total(),
        2,
        "only the allowed downloads reached the server"
    );

    // The callback too: an api_url on the metadata service is refused.
    let payload = Payload::from_value(&json!({
        "api_url": "http://metadata.test", "sources": [source(1, "photo", &urls[9], "t")]}))
    .unwrap();
    let report = service.run(&payload).await;
    assert_failed(
        &report,
        0,
        Stage::Callback,
        "169.254.169.254 is a link-local",
    );
    assert_eq!(report.sources[0].callback_attempts, 1);

    // A public-only policy refuses this machine, before connecting.
    let mut config = fast_config();
    config.http.destinations = Destinations::Public;
    let (public_only, _) = fake_service(config, Duration::ZERO);
    let payload = Payload::from_value(&json!({
        "api_url": api, "sources": [source(1, "photo", &urls[9].replace("photos.test", "127.0.0.1"), "t")]}))
    .unwrap();
    let report = public_only.run(&payload).await;
    assert_failed(&report, 0, Stage::Download, "127.0.0.1 is on this machine");
}

/// Names that DNS64 or a hostile resolver answer with NAT64 addresses of private, loopback or
/// metadata addresses, or with special-purpose ranges, are refused under `public` before any
/// connection (in a network namespace of its own: nothing could leave the machine anyway).
#[tokio::test]
async fn nat64_and_reserved_addresses_are_refused_after_dns() {
    if !common::in_own_netns("hardening::nat64_and_reserved_addresses_are_refused_after_dns") {
        return;
    }
    let names = [
        (
            "nat64-private.test",
            "[64:ff9b::a00:1]:80",
            "64:ff9b::a00:1 is a private-network address",
        ),
        (
            "nat64-loopback.test",
            "[64:ff9b::7f00:1]:80",
            "64:ff9b::7f00:1 is on this machine",
        ),
        (
            "nat64-metadata.test",
            "[64:ff9b::a9fe:a9fe]:80",
            "64:ff9b::a9fe:a9fe is a link-local address",
        ),
        (
            "nat64-local-use.test",
            "[64:ff9b:1::5db8:d822]:80",
            "64:ff9b:1::5db8:d822 is a private-network address",
        ),
        (
            "benchmarking.test",
            "198.18.0.1:80",
            "198.18.0.1 is a benchmarking address (RFC 2544), not globally reachable",
        ),
        (
            "reserved.test",
            "240.0.0.1:80",
            "240.0.0.1 is a reserved address (240.0.0.0/4, RFC 1112), not globally reachable",
        ),
        (
            "ietf.test",
            "192.0.0.1:80",
            "192.0.0.1 is an IETF protocol assignment (RFC 6890), not globally reachable",
        ),
        (
            "documentation.test",
            "[2001:db8::1]:80",
            "2001:db8::1 is a documentation address (RFC 3849), not globally reachable",
        ),
    ];
    let resolver = Arc::new(TableResolver {
        table: names
            .iter()
            .map(|(name, addr, _)| (name.to_string(), vec![addr.parse().unwrap()]))
            .collect(),
        asked: Mutex::default(),
    });
    let mut config = config_with_resolver(resolver.clone());
    config.http.destinations = Destinations::Public;
    let (service, _) = fake_service(config, Duration::ZERO);
    let mut sources: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(pk, (name, ..))| source(pk as u64, "photo", &format!("http://{name}/p.png"), "t"))
        .collect();
    // The same addresses given as URL hosts skip DNS, and are refused all the same.
    sources.push(source(
        100,
        "photo",
        "http://[64:ff9b::a9fe:a9fe]/p.png",
        "t",
    ));
    sources.push(source(101, "photo", "http://198.18.0.1/p.png", "t"));
    let payload =
        Payload::from_value(&json!({"api_url": "https://api.example", "sources": sources}))
            .unwrap();
    let started = Instant::now();
    let report = service.run(&payload).await;
    for (index, (_, _, why)) in names.iter().enumerate() {
        assert_failed(&report, index, Stage::Download, why);
        assert_eq!(
            report.sources[index].download_attempts, 1,
            "a refusal is final"
        );
    }
    assert_failed(
        &report,
        names.len(),
        Stage::Download,
        "64:ff9b::a9fe:a9fe is a link-local",
    );
    assert_failed(
        &report,
        names.len() + 1,
        Stage::Download,
        "198.18.0.1 is a benchmarking",
    );
    // Nothing waited for a connection.
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(resolver.asked.lock().unwrap().len(), names.len());
}

/// A server whose callback route answers each pk with a redirect of status `pk` to `/target`,
/// and counts what reaches `/target`.
async fn redirecting_receiver() -> (String, Arc<AtomicUsize>) {
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    let router = Router::new()
        .route(
            "/api/facedetection/encodings/photo/{pk}/",
            post(|Path(pk): Path<u16>| async move {
                (
                    StatusCode::from_u16(pk).unwrap(),
                    [(header::LOCATION, "http://127.0.0.1:1/target?sig=secret")],
                )
            }),
        )
        .route(
            "/target",
            any(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                async { StatusCode::OK }
            }),
        );
    (format!("http://{}", spawn_server(router).await), reached)
}

#[tokio::test]
async fn callbacks_never_follow_redirects() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (api, reached) = redirecting_receiver().await;
    let statuses = [301u64, 302, 303, 307, 308];
    let url = format!("{photo_base}/photo/ok.png");
    let sources: Vec<Value> = statuses
        .iter()
        .map(|&status| source(status, "photo", &url, "t"))
        .collect();
    let payload = Payload::from_value(&json!({"api_url": api, "sources": sources})).unwrap();
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let report = service.run(&payload).await;
    for (index, status) in statuses.iter().enumerate() {
        assert_failed(
            &report,
            index,
            Stage::Callback,
            &format!(
                "HTTP {status} to http://127.0.0.1:1/target: callbacks never follow redirects"
            ),
        );
        assert_eq!(report.sources[index].callback_attempts, 1);
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn downloads_follow_redirects_without_a_referer() {
    let png_bytes = png(20, 20, 1);
    let router = Router::new()
        .route(
            "/start",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/photo?x=1")]) }),
        )
        .route(
            "/photo",
            get(move |headers: HeaderMap| {
                let png_bytes = png_bytes.clone();
                async move {
                    if headers.contains_key(header::REFERER) {
                        StatusCode::BAD_REQUEST.into_response()
                    } else {
                        png_bytes.into_response()
                    }
                }
            }),
        );
    let base = format!("http://{}", spawn_server(router).await);
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let payload = Payload::from_value(&json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{base}/start"), "t")]}))
    .unwrap();
    let report = service.run(&payload).await;
    assert_posted(&report, 0);
}

#[tokio::test]
async fn error_bodies_are_read_only_in_part() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    // 400 with a body that never ends.
    let router = Router::new().route(
        "/api/facedetection/encodings/photo/{pk}/",
        post(|| async {
            let chunk = Bytes::from("x".repeat(64 * 1024));
            let endless =
                futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            (StatusCode::BAD_REQUEST, Body::from_stream(endless))
        }),
    );
    let api = format!("http://{}", spawn_server(router).await);
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let payload = Payload::from_value(&json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/photo/ok.png"), "t")]}))
    .unwrap();
    let started = Instant::now();
    let report = service.run(&payload).await;
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    assert_failed(&report, 0, Stage::Callback, "HTTP 400: xxxx");
    assert_eq!(report.sources[0].callback_attempts, 1);
    match &report.sources[0].outcome {
        Outcome::Failed { error, .. } => {
            let error = Report(&**error).to_string();
            assert!(error.len() < 300, "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn retry_after_is_honoured_as_seconds_and_as_a_date() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    // The first post of each pk answers 503 with a Retry-After; pk 1 in seconds, pk 2 as a
    // date two seconds ahead. Records when each post came.
    let times: Arc<Mutex<HashMap<u64, Vec<Instant>>>> = Arc::default();
    let seen = times.clone();
    let router = Router::new().route(
        "/api/facedetection/encodings/photo/{pk}/",
        post(move |Path(pk): Path<u64>| {
            let seen = seen.clone();
            async move {
                let mut times = seen.lock().unwrap();
                let posts = times.entry(pk).or_default();
                posts.push(Instant::now());
                if posts.len() > 1 {
                    return StatusCode::OK.into_response();
                }
                let retry_after = match pk {
                    1 => "1".to_string(),
                    _ => httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2)),
                };
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, retry_after)],
                )
                    .into_response()
            }
        }),
    );
    let api = format!("http://{}", spawn_server(router).await);
    let mut config = fast_config();
    config.http.retry.max_delay = Duration::from_secs(5);
    let (service, _) = fake_service(config, Duration::ZERO);
    let url = format!("{photo_base}/photo/ok.png");
    let payload = Payload::from_value(&json!({"api_url": api, "sources": [
        source(1, "photo", &url, "t"), source(2, "photo", &url, "t")]}))
    .unwrap();
    let report = service.run(&payload).await;
    assert_posted(&report, 0);
    assert_posted(&report, 1);
    let times = times.lock().unwrap();
    for pk in [1, 2] {
        let posts = &times[&pk];
        assert_eq!(posts.len(), 2);
        let waited = posts[1] - posts[0];
        // A date has whole seconds: two seconds ahead is more than one from now.
        assert!(
            waited >= Duration::from_millis(950) && waited < Duration::from_secs(3),
            "pk {pk} waited {waited:?}"
        );
    }
}

#[tokio::test]
async fn encoders_that_panic_or_return_bad_encodings_fail_alone() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    for width in [
        misbehaving::PANIC_IN_DETECT,
        misbehaving::PANIC_IN_ENCODE,
        misbehaving::NAN_ENCODING,
    ] {
        photos.add(&format!("{width}.png"), png(width, 10, 1));
    }
    let (receiver, api) = Receiver::start().await;
    let names = ["ok", "13", "14", "16", "ok"];
    let sources: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(pk, name)| {
            receiver.expect("photo", pk as u64, "t");
            source(
                pk as u64,
                "photo",
                &format!("{photo_base}/photo/{name}.png"),
                "t",
            )
        })
        .collect();
    let payload = Payload::from_value(&json!({"api_url": api, "sources": sources})).unwrap();
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let report = service.run(&payload).await;
    assert_posted(&report, 0);
    assert_failed(
        &report,
        1,
        Stage::Detect,
        "panicked: fake detector exploded",
    );
    assert_failed(&report, 2, Stage::Encode, "panicked: fake encoder exploded");
    assert_failed(
        &report,
        3,
        Stage::Encode,
        "encoding 0 has a number that is not finite",
    );
    assert_posted(&report, 4);
    assert_eq!(receiver.delivered_count(), 2);
    assert!(receiver.refused.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_photo_too_large_for_the_budget_fails_alone() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    photos.add("huge.png", common::png_declaring(10_000, 10_000));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    receiver.expect("photo", 3, "t");
    let config = ServiceConfig {
        memory_limit: concrexit_facedetection::service::budget::resident_bytes()
            + 128 * 1024 * 1024
            + 400 * 1024 * 1024,
        ..fast_config()
    };
    let (service, _) = fake_service(config, Duration::ZERO);
    let work = service.budget().work_limit();
    let ok = format!("{photo_base}/photo/ok.png");
    let payload = Payload::from_value(&json!({"api_url": api, "sources": [
        source(1, "photo", &ok, "t"),
        source(2, "photo", &format!("{photo_base}/photo/huge.png"), "t"),
        source(3, "photo", &ok, "t")]}))
    .unwrap();
    let report = service.run(&payload).await;
    assert_posted(&report, 0);
    assert_posted(&report, 2);
    // The fake needs 8 bytes a pixel plus the RGB image, 11 in all; the PNG decoder 3 more
    // for its buffer, twice, plus RGB: 9. So the limit is the work budget over 11 bytes.
    let limit = work / 11;
    assert_failed(
        &report,
        1,
        Stage::Detect,
        &format!(
            "too large to detect at upsample 1: 100.0 MP, limit {:.1} MP",
            limit as f64 / 1e6
        ),
    );
}

async fn invoke(
    endpoint: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = reqwest::Client::new()
        .post(format!(
            "{endpoint}/2015-03-31/functions/function/invocations"
        ))
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn browsers_and_requests_without_the_secret_are_refused() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/photo/ok.png"), "t")]})
    .to_string();

    let open = format!(
        "http://{}",
        spawn_server(serve::router(service.clone(), &ServeOptions::default())).await
    );
    let (status, headers, _) = invoke(&open, &[("Origin", "https://evil.example")], &payload).await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-amzn-errortype"], "AccessDeniedException");

    let options = ServeOptions {
        secret: Some("s3cret-shared".to_string()),
        ..ServeOptions::default()
    };
    let guarded = format!(
        "http://{}",
        spawn_server(serve::router(service, &options)).await
    );
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "s3cret-shared")],
        vec![
            ("Authorization", "Bearer s3cret-shared"),
            ("Origin", "null"),
        ],
    ] {
        let (status, _, body) = invoke(&guarded, &headers, &payload).await;
        assert_eq!(status, 403, "{headers:?}: {body}");
    }
    assert_eq!(photos.gauge.total(), 0, "a refused request fetched a photo");
    let (status, _, body) = invoke(
        &guarded,
        &[("Authorization", "Bearer s3cret-shared")],
        &payload,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(receiver.delivered("photo", 1).is_some());

    // Listening beyond loopback needs the secret.
    let any: SocketAddr = "0.0.0.0:9000".parse().unwrap();
    let error = serve::check_listen(any, &ServeOptions::default()).unwrap_err();
    assert!(error.to_string().contains("without a secret"), "{error}");
    assert!(serve::check_listen(any, &options).is_ok());
    assert!(
        serve::check_listen("127.0.0.1:9000".parse().unwrap(), &ServeOptions::default()).is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invocations_are_bounded_concurrent_and_finished_on_shutdown() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    *photos.delay.lock().unwrap() = Duration::from_millis(400);
    let (receiver, api) = Receiver::start().await;
    for pk in 0..20 {
        receiver.expect("photo", pk, "t");
    }
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let options = ServeOptions {
        max_invocations: 3,
        shutdown_grace: Duration::from_secs(5),
        ..ServeOptions::default()
    };
    let (endpoint, stop, server) = serve_in_process(service, options).await;
    let ok = format!("{photo_base}/photo/ok.png");
    let payload =
        |pk: u64| json!({"api_url": api, "sources": [source(pk, "photo", &ok, "t")]}).to_string();

    // Three RequestResponse invocations at once run concurrently.
    let started = Instant::now();
    let results = futures::future::join_all((0..3).map(|pk| {
        let (endpoint, body) = (endpoint.clone(), payload(pk));
        async move { invoke(&endpoint, &[], &body).await }
    }))
    .await;
    for (status, _, body) in &results {
        assert_eq!(*status, 200, "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    assert!(photos.gauge.peak() >= 2, "invocations ran one at a time");

    // Three Event invocations fill the queue; the fourth is throttled as Lambda does.
    for pk in 3..6 {
        let (status, _, body) = invoke(
            &endpoint,
            &[("X-Amz-Invocation-Type", "Event")],
            &payload(pk),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, headers, body) = invoke(
        &endpoint,
        &[("X-Amz-Invocation-Type", "Event")],
        &payload(6),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(headers["x-amzn-errortype"], "TooManyRequestsException");
    let (status, _, _) = invoke(&endpoint, &[], &payload(7)).await;
    assert_eq!(status, 429, "RequestResponse is throttled too");
    wait_for(|| (3..6).all(|pk| receiver.delivered("photo", pk).is_some())).await;
    let (status, _, _) = invoke(
        &endpoint,
        &[("X-Amz-Invocation-Type", "Event")],
        &payload(8),
    )
    .await;
    assert_eq!(status, 202, "room again once the work is done");
    wait_for(|| receiver.delivered("photo", 8).is_some()).await;

    // Shutdown with Event work in flight: it is finished before the server returns.
    for pk in 9..11 {
        let (status, _, _) = invoke(
            &endpoint,
            &[("X-Amz-Invocation-Type", "Event")],
            &payload(pk),
        )
        .await;
        assert_eq!(status, 202);
    }
    assert!(receiver.delivered("photo", 9).is_none());
    stop.fire();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown within the grace")
        .unwrap()
        .unwrap();
    assert!(receiver.delivered("photo", 9).is_some() && receiver.delivered("photo", 10).is_some());
    assert!(
        reqwest::Client::new().get(&endpoint).send().await.is_err(),
        "still listening"
    );
}

#[tokio::test]
async fn shutdown_gives_up_on_event_work_after_the_grace() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    *photos.delay.lock().unwrap() = Duration::from_secs(3);
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    let mut config = fast_config();
    config.http.download_timeout = Duration::from_secs(10);
    let (service, _) = fake_service(config, Duration::ZERO);
    let options = ServeOptions {
        shutdown_grace: Duration::from_millis(300),
        ..ServeOptions::default()
    };
    let (endpoint, stop, server) = serve_in_process(service, options).await;
    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/photo/ok.png"), "t")]});
    let (status, _, _) = invoke(
        &endpoint,
        &[("X-Amz-Invocation-Type", "Event")],
        &payload.to_string(),
    )
    .await;
    assert_eq!(status, 202);
    let started = Instant::now();
    stop.fire();
    server.await.unwrap().unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(receiver.delivered("photo", 1).is_none());
}

#[tokio::test]
async fn too_many_sources_are_refused_with_the_limit() {
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let sources: Vec<Value> = (0..1001)
        .map(|pk| source(pk, "photo", "http://127.0.0.1:1/p.png", "t"))
        .collect();
    let endpoint = format!(
        "http://{}",
        spawn_server(serve::router(service, &ServeOptions::default())).await
    );
    let body = json!({"api_url": "http://127.0.0.1:1", "sources": sources}).to_string();
    let (status, headers, body) = invoke(&endpoint, &[], &body).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-amz-function-error"], "Unhandled");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["errorType"], "InvalidPayload");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("1001 sources, more than the limit of 1000"),
        "{error}"
    );
}

#[tokio::test]
async fn sqs_and_direct_invocations_share_the_limits() {
    if !common::in_own_netns("hardening::sqs_and_direct_invocations_share_the_limits") {
        return;
    }
    // A direct invocation through the handler with one source refused by the policy: the
    // report names it, the handler's error says why.
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let payload = json!({"api_url": "http://127.0.0.1:1", "sources": [
        source(1, "photo", "http://169.254.169.254/latest/meta-data/", "t")]});
    let error = lambda::handle(&service, &payload)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("sources[0] (photo 1): download: destination refused"),
        "{error}"
    );
}

/// A self-signed certificate for 127.0.0.1 and its key, made for these tests only
/// (`openssl req -x509 -newkey ec ... -days 36500`).
const TEST_CERT: &[u8] = include_bytes!("../fixtures/tls/cert.pem");
const TEST_KEY: &[u8] = include_bytes!("../fixtures/tls/key.pem");

/// Accepts TLS connections with the test certificate.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serves `router` over https on a loopback port; returns its base URL.
async fn spawn_https_server(router: Router) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert = CertificateDer::from_pem_slice(TEST_CERT).unwrap();
    let key = PrivateKeyDer::from_pem_slice(TEST_KEY).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("https://{}", tcp.local_addr().unwrap());
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    };
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

#[tokio::test]
async fn downloads_never_go_from_https_to_http() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let plain = format!("{photo_base}/photo/ok.png");
    let png_bytes = png(20, 20, 1);
    let router = Router::new()
        .route(
            "/to-http",
            get(move || {
                let location = plain.clone();
                async move { (StatusCode::FOUND, [(header::LOCATION, location)]) }
            }),
        )
        .route(
            "/to-https",
            get(|| async {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, "/photo")],
                )
            }),
        )
        .route(
            "/photo",
            get(move || {
                let png_bytes = png_bytes.clone();
                async move { png_bytes }
            }),
        );
    let https = spawn_https_server(router).await;
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    receiver.expect("photo", 2, "t");
    let mut config = fast_config();
    config.http.extra_roots = vec![reqwest::Certificate::from_pem(TEST_CERT).unwrap()];
    let (service, _) = fake_service(config, Duration::ZERO);
    let payload = Payload::from_value(&json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{https}/to-http"), "t"),
        source(2, "photo", &format!("{https}/to-https"), "t")]}))
    .unwrap();
    let report = service.run(&payload).await;
    assert_failed(
        &report,
        0,
        Stage::Download,
        &format!("redirect from https to {photo_base}/photo/ok.png"),
    );
    assert_eq!(report.sources[0].download_attempts, 1);
    assert_posted(&report, 1);
    assert_eq!(photos.gauge.total(), 0, "the http URL was fetched");
}

/// Resolves `panic.test` by panicking, and every other name to the loopback address.
struct PanickingResolver;

impl Resolve for PanickingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            if name == "panic.test" {
                panic!("resolver exploded");
            }
            let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
            Ok(Box::new(std::iter::once(addr)) as Addrs)
        })
    }
}

#[tokio::test]
async fn a_panic_in_the_async_part_fails_only_its_source() {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let port = photo_base.rsplit(':').next().unwrap().to_string();
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "t");
    receiver.expect("photo", 2, "t");
    let mut config = fast_config();
    config.http.resolver = Arc::new(PanickingResolver);
    let (service, _) = fake_service(config, Duration::ZERO);
    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &format!("http://panic.test:{port}/photo/ok.png"), "t"),
        source(2, "photo", &format!("http://fine.test:{port}/photo/ok.png"), "t")]});
    let error = lambda::handle(&service, &payload)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(
            "1 of 2 sources failed: sources[0] (photo 1): download: panicked: resolver exploded"
        ),
        "{error}"
    );
    assert!(receiver.delivered("photo", 2).is_some());
}

/// The invoke endpoint in this process on a free loopback port: its URL, the sender that shuts
/// it down, and the server's task.
async fn serve_in_process(
    service: Arc<concrexit_facedetection::service::Service<FakeEncoder>>,
    options: ServeOptions,
) -> (
    String,
    ShutdownTrigger,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (stop, shutdown) = Shutdown::new();
    let server = tokio::spawn(serve::serve_until(listener, service, options, shutdown));
    (endpoint, stop, server)
}
