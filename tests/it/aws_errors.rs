//! The backfill commands' AWS failures said in one line a person can act on, without the AWS
//! SDK's internals: an endpoint that cannot be reached is named, missing credentials or region
//! say what to set, and SQS's own errors are given by their code. No AWS needed; the last test
//! uses moto's server as SQS.

use crate::common;

use std::net::TcpListener;
use std::process::Command;

/// `facedetect` with no AWS settings from the environment of the test run (no profile, no
/// configuration files, no instance metadata).
fn facedetect(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_facedetect"));
    command
        .args(args)
        .env("FACEDETECT_WEIGHTS", common::weights_dir());
    for name in [
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SQS",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "FACEDETECT_QUEUE_URL",
        "RUST_LOG",
    ] {
        command.env_remove(name);
    }
    command
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn payload_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "facedetect-aws-errors-{}.jsonl",
        std::process::id()
    ));
    let payload = r#"{"api_url": "http://127.0.0.1:8000", "sources": [{"pk": 1, "type": "photo", "photo_url": "http://127.0.0.1:8001/t1.webp", "token": "t"}]}"#;
    std::fs::write(&path, payload).unwrap();
    path
}

/// The command's stderr, which must be one line, and its failure.
fn one_line_failure(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for internal in [
        "DispatchFailure",
        "ConnectorError",
        "SdkError",
        "Caused by",
        "source:",
    ] {
        assert!(!stderr.contains(internal), "{internal} in: {stderr}");
    }
    stderr
}

#[test]
fn enqueue_names_the_endpoint_it_cannot_reach() {
    let payloads = payload_file();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let stderr = one_line_failure(
        facedetect(&[
            "enqueue",
            payloads.to_str().unwrap(),
            "--queue-url",
            &format!("{endpoint}/000000000000/facedetection"),
        ])
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "eu-west-1"),
    );
    assert!(
        stderr.contains(&format!("could not reach {endpoint}")),
        "{stderr}"
    );
    let _ = std::fs::remove_file(payloads);
}

#[test]
fn worker_names_the_endpoint_it_cannot_reach() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let stderr = one_line_failure(
        facedetect(&[
            "worker",
            "--queue-url",
            &format!("{endpoint}/000000000000/facedetection"),
        ])
        .env("AWS_ENDPOINT_URL_SQS", &endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "eu-west-1")
        // Only the error, not the log lines before it.
        .env("RUST_LOG", "off"),
    );
    assert!(
        stderr.contains(&format!("could not reach {endpoint}")),
        "{stderr}"
    );
}

#[test]
fn missing_credentials_and_region_say_what_to_set() {
    let payloads = payload_file();
    let queue = format!(
        "http://127.0.0.1:{}/000000000000/facedetection",
        closed_port()
    );
    let stderr = one_line_failure(
        facedetect(&["enqueue", payloads.to_str().unwrap(), "--queue-url", &queue])
            .env("AWS_REGION", "eu-west-1"),
    );
    assert!(
        stderr.contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"),
        "{stderr}"
    );

    let stderr = one_line_failure(
        facedetect(&["enqueue", payloads.to_str().unwrap(), "--queue-url", &queue])
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing"),
    );
    assert!(
        stderr.contains("no AWS region configured: set AWS_REGION"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(payloads);
}

/// What SQS answers is given by its code and message. Needs moto's server (`common::moto`).
#[test]
fn enqueue_gives_sqs_answers_by_their_code() {
    let Some(moto) = common::moto::MotoServer::start() else {
        return;
    };
    let endpoint = &moto.endpoint;
    let payloads = payload_file();
    let stderr = one_line_failure(
        facedetect(&[
            "enqueue",
            payloads.to_str().unwrap(),
            "--queue-url",
            &format!("{endpoint}/000000000000/no-such-queue"),
        ])
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "eu-west-1"),
    );
    assert!(
        stderr.contains(&format!(
            "{endpoint} answered AWS.SimpleQueueService.NonExistentQueue: "
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_file(payloads);
}
