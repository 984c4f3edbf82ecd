//! `serve --secret`: the bearer form (curl) and AWS Signature Version 4 with the secret as the
//! AWS secret access key (boto3, as concrexit invokes), over real HTTP on loopback.
//!
//! Requests are signed here with the AWS SDK's own signer (`aws-sigv4`), and by boto3 itself
//! running the README's Docker Compose snippet: the `facedetection` service's command and
//! environment start `facedetect serve`, the `concrexit` service's environment configures
//! boto3. boto3 needs a Python with it: `FACEDETECT_TEST_PYTHON`, else `python3`; skipped
//! without, unless `FACEDETECT_REQUIRE_BOTO3` is set.

use crate::common;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4::SigningParams;
use concrexit_facedetection::service::serve::{self, ServeOptions};
use serde_json::{Value, json};

use crate::service_support::*;

const SECRET: &str = "s3cret-for-tests";

/// An invoke endpoint with the fake encoder and `SECRET`, on loopback.
async fn endpoint() -> (String, Arc<Receiver>, String, String) {
    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("ok.png", png(20, 20, 1));
    let (receiver, api) = Receiver::start().await;
    let (service, _) = fake_service(fast_config(), Duration::ZERO);
    let options = ServeOptions {
        secret: Some(SECRET.to_string()),
        ..ServeOptions::default()
    };
    let addr = spawn_server(serve::router(service, &options)).await;
    (
        format!("http://{addr}"),
        receiver,
        api,
        format!("{photo_base}/photo/ok.png"),
    )
}

/// A request to `url` signed as boto3 signs an Invoke call: SigV4 for `lambda`, at `time`,
/// with `secret` as the secret access key.
fn signed(
    url: &str,
    body: &str,
    secret: &str,
    time: SystemTime,
    extra: &[(&str, &str)],
) -> reqwest::Request {
    let uri: axum::http::Uri = url.parse().unwrap();
    let host = uri.authority().unwrap().to_string();
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    let identity = Credentials::new("AKIDTESTS", secret, None, None, "tests").into();
    let params = SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("lambda")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let client = reqwest::Client::new();
    let mut request = client.post(url).body(body.to_string());
    for (name, value) in headers.iter().filter(|(name, _)| *name != "host") {
        request = request.header(*name, *value);
    }
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    request.build().unwrap()
}

async fn send(request: reqwest::Request) -> (u16, String, String) {
    let response = reqwest::Client::new().execute(request).await.unwrap();
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

#[tokio::test]
async fn sigv4_with_the_secret_is_accepted_and_anything_else_refused() {
    let (base, receiver, api, photo) = endpoint().await;
    let url = format!(
        "{base}/2015-03-31/functions/arn%3Aaws%3Alambda%3Aeu-west-1%3A000000000000%3Afunction%3Afacedetection/invocations"
    );
    let now = SystemTime::now();
    receiver.expect("photo", 1, "t1");
    let body = json!({"api_url": api, "sources": [source(1, "photo", &photo, "t1")]}).to_string();

    let (status, _, text) = send(signed(&url, &body, SECRET, now, &[])).await;
    assert_eq!(status, 200, "{text}");
    let result: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(result["posted"], 1, "{result}");
    assert!(receiver.delivered("photo", 1).is_some());

    // Signed with another secret, dated too far from now either way, or changed after
    // signing: refused before anything runs.
    let refusals = [
        (
            "wrong secret",
            signed(&url, &body, "not-the-secret", now, &[]),
            "signature does not match",
        ),
        (
            "6 minutes old",
            signed(&url, &body, SECRET, now - Duration::from_secs(360), &[]),
            "more than 5 minutes",
        ),
        (
            "6 minutes ahead",
            signed(&url, &body, SECRET, now + Duration::from_secs(360), &[]),
            "more than 5 minutes",
        ),
        (
            "signed Event, sent as RequestResponse",
            {
                let mut request = signed(
                    &url,
                    &body,
                    SECRET,
                    now,
                    &[("x-amz-invocation-type", "Event")],
                );
                request
                    .headers_mut()
                    .insert("x-amz-invocation-type", "RequestResponse".parse().unwrap());
                request
            },
            "signature does not match",
        ),
        (
            "body changed",
            {
                let mut request = signed(&url, &body, SECRET, now, &[]);
                *request.body_mut() = Some(body.replace("t1", "t2").into());
                request
            },
            "signature does not match",
        ),
        (
            "DryRun with the wrong secret",
            signed(
                &url,
                "",
                "not-the-secret",
                now,
                &[("x-amz-invocation-type", "DryRun")],
            ),
            "signature does not match",
        ),
    ];
    for (what, request, why) in refusals {
        let (status, kind, text) = send(request).await;
        assert_eq!(
            (status, kind.as_str()),
            (403, "AccessDeniedException"),
            "{what}: {text}"
        );
        assert!(text.contains(why), "{what}: {text}");
    }
    // Within 5 minutes is accepted (DryRun: nothing runs).
    let (status, _, text) = send(signed(
        &url,
        "",
        SECRET,
        now - Duration::from_secs(240),
        &[("x-amz-invocation-type", "DryRun")],
    ))
    .await;
    assert_eq!(status, 204, "{text}");
    assert_eq!(receiver.attempts("photo", 1), 1, "a refused request ran");

    // The bearer form stays; no credential at all is refused.
    let client = reqwest::Client::new();
    let response = client
        .post(&url)
        .header("x-amz-invocation-type", "DryRun")
        .bearer_auth(SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = client.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(response.status(), 403);
    let response = client.post(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(response.status(), 403);
}

/// The README's Docker Compose snippet: services -> name -> section -> entries (`command` as
/// one entry).
fn compose_snippet() -> BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>> {
    let readme = std::fs::read_to_string(common::crate_dir().join("README.md")).unwrap();
    let start = readme
        .find("<!-- readme-test: compose -->\n```yaml\n")
        .expect("the README's compose snippet");
    let block = &readme[start..];
    let block = &block[block.find("```yaml\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    let mut services: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    let (mut service, mut section) = (String::new(), String::new());
    for line in block.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        let (key, value) = text
            .split_once(':')
            .map_or((text, ""), |(k, v)| (k.trim(), v.trim()));
        match indent {
            2 => service = key.to_string(),
            4 if !value.is_empty() => {
                section = key.to_string();
                services
                    .entry(service.clone())
                    .or_default()
                    .entry(section.clone())
                    .or_default()
                    .insert(String::new(), value.to_string());
            }
            4 => section = key.to_string(),
            6 => {
                services
                    .entry(service.clone())
                    .or_default()
                    .entry(section.clone())
                    .or_default()
                    .insert(key.to_string(), value.to_string());
            }
            _ => {}
        }
    }
    services
}

fn python_with_boto3() -> Option<String> {
    let python = std::env::var("FACEDETECT_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_boto3 = Command::new(&python)
        .args(["-c", "import boto3"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_boto3 {
        assert!(
            std::env::var_os("FACEDETECT_REQUIRE_BOTO3").is_none(),
            "{python} has no boto3"
        );
        eprintln!("skipped: {python} has no boto3 (set FACEDETECT_TEST_PYTHON)");
        return None;
    }
    Some(python)
}

/// boto3 configured as the README's compose snippet configures concrexit, against `facedetect
/// serve` started as the snippet starts it: the right secret is accepted (and the photo's
/// encodings posted), a wrong one is `AccessDeniedException`, an unsigned request refused. The
/// log names the access key id and never the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_signs_with_the_secret_as_the_readme_compose_snippet_configures_it() {
    let Some(python) = python_with_boto3() else {
        return;
    };
    let compose = compose_snippet();
    let server = &compose["facedetection"];
    let concrexit = &compose["concrexit"]["environment"];
    let secret = &server["environment"]["FACEDETECT_SERVE_SECRET"];
    assert_eq!(&concrexit["AWS_SECRET_ACCESS_KEY"], secret);

    let (photos, photo_base) = PhotoServer::start().await;
    photos.add("t1.webp", common::pkg_fixture("images/large/t1.webp"));
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "token-1");

    // The snippet's command and environment; on loopback, another port and `local`
    // destinations (the test's photo host and receiver are on loopback).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let command: Vec<String> = server["command"][""]
        .split_whitespace()
        .map(|word| {
            if word == "9000" {
                port.to_string()
            } else {
                word.to_string()
            }
        })
        .collect();
    assert_eq!(command[0], "target/release/facedetect");
    assert!(command.contains(&"0.0.0.0".to_string()), "{command:?}");
    let log =
        std::env::temp_dir().join(format!("facedetect-serve-auth-{}.log", std::process::id()));
    let mut serve = Command::new(env!("CARGO_BIN_EXE_facedetect"));
    serve
        .args(&command[1..])
        .env_remove("FACEDETECT_WEIGHTS")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (name, value) in &server["environment"] {
        serve.env(name, value);
    }
    serve.env("FACEDETECT_DESTINATIONS", "local");
    let _server = common::KillOnDrop(serve.spawn().unwrap());
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "serve did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let payload = json!({"api_url": api, "sources": [
        source(1, "photo", &format!("{photo_base}/photo/t1.webp"), "token-1")]})
    .to_string();
    let script = r#"
import json, sys, boto3, botocore
from botocore.config import Config
arn = sys.argv[1]
def invoke(keys={}, **config):
    config = Config(retries={"max_attempts": 1}, **config)
    client = boto3.session.Session(**keys).client("lambda", config=config)
    try:
        r = client.invoke(FunctionName=arn, Payload=sys.argv[2].encode())
        return {"StatusCode": r["StatusCode"], "Payload": json.loads(r["Payload"].read())}
    except botocore.exceptions.ClientError as e:
        return {"Error": e.response["Error"]["Code"], "Message": e.response["Error"]["Message"]}
right = invoke()
wrong = invoke({"aws_access_key_id": "concrexit-dev", "aws_secret_access_key": "not-the-secret"})
unsigned = invoke(signature_version=botocore.UNSIGNED)
print(json.dumps({"right": right, "wrong": wrong, "unsigned": unsigned}))
"#;
    let mut boto3 = Command::new(&python);
    boto3.args([
        "-c",
        script,
        &concrexit["FACEDETECTION_LAMBDA_ARN"],
        &payload,
    ]);
    for name in [
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
    ] {
        boto3.env_remove(name);
    }
    for (name, value) in concrexit {
        boto3.env(name, value);
    }
    boto3.env(
        "AWS_ENDPOINT_URL_LAMBDA",
        format!("http://127.0.0.1:{port}"),
    );
    let output = tokio::task::spawn_blocking(move || boto3.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(results["right"]["StatusCode"], 200, "{results}");
    assert_eq!(results["right"]["Payload"]["posted"], 1, "{results}");
    assert_eq!(receiver.delivered("photo", 1).unwrap().len(), 6);
    assert_eq!(
        results["wrong"]["Error"], "AccessDeniedException",
        "{results}"
    );
    assert_eq!(
        results["unsigned"]["Error"], "AccessDeniedException",
        "{results}"
    );
    assert_eq!(receiver.attempts("photo", 1), 1, "a refused request ran");

    let log = std::fs::read_to_string(&log).unwrap();
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("facedetect-serve-auth-{}.log", std::process::id())),
    );
    assert!(
        log.contains(&format!(
            "\"access_key_id\":\"{}\"",
            concrexit["AWS_ACCESS_KEY_ID"]
        )),
        "{log}"
    );
    assert!(
        !log.contains(secret.as_str()),
        "the secret is in the log:\n{log}"
    );
}
