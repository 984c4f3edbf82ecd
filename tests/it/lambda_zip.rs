//! The Lambda zip built by scripts/build-lambda-zip.sh, run as Lambda runs it: unpacked into an
//! empty folder that stands for /var/task, its `bootstrap` started there with nothing but
//! Lambda's environment (no `FACEDETECT_WEIGHTS`: the weights must be in the zip) under a Lambda
//! Runtime API emulator, then invoked with the original's payload. Prints the init duration
//! (start until the first poll for an invocation, Lambda's "Init Duration"), the first
//! invocation's duration, the CPU time per photo of a 20-photo batch and the peak resident
//! memory: the numbers behind the function's memory size.
//!
//! The zip is `FACEDETECT_LAMBDA_ZIP`, else target/lambda/facedetect-lambda/bootstrap.zip. Without
//! it the test is skipped with a message, unless `FACEDETECT_REQUIRE_LAMBDA_ZIP=1`.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::service_support::runtime_api::RuntimeApi;
use crate::service_support::*;
use serde_json::json;

/// Sources per invocation in concrexit's batches.
const BATCH: u64 = 20;

fn lambda_zip() -> Option<PathBuf> {
    let zip = std::env::var_os("FACEDETECT_LAMBDA_ZIP").map_or_else(
        || common::crate_dir().join("target/lambda/facedetect-lambda/bootstrap.zip"),
        PathBuf::from,
    );
    if zip.is_file() {
        return Some(zip);
    }
    assert!(
        std::env::var("FACEDETECT_REQUIRE_LAMBDA_ZIP").as_deref() != Ok("1"),
        "{} not found, and FACEDETECT_REQUIRE_LAMBDA_ZIP=1",
        zip.display()
    );
    eprintln!(
        "SKIPPED: {} not found (scripts/build-lambda-zip.sh builds it)",
        zip.display()
    );
    None
}

/// CPU seconds (user and system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which ends with the last ')': utime and stime are the 12th
    // and 13th, in clock ticks.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let per_second = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    let per_second: f64 = String::from_utf8(per_second.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    ticks / per_second
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zips_bootstrap_answers_the_originals_payload() {
    let Some(zip) = lambda_zip() else {
        return;
    };
    let task_root =
        std::env::temp_dir().join(format!("facedetect-lambda-zip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&task_root);
    std::fs::create_dir_all(&task_root).unwrap();
    // Python's zipfile, as CI has Python anyway; it drops the mode bits, which Lambda sets.
    let unzip = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&zip)
        .arg(&task_root)
        .status()
        .unwrap();
    assert!(unzip.success(), "cannot unpack {}", zip.display());
    let bootstrap = task_root.join("bootstrap");
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (photos, photo_base) = PhotoServer::start().await;
    let album: Vec<String> =
        std::fs::read_dir(common::crate_dir().join("tests/fixtures/pkg/images/large"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    for name in &album {
        photos.add(name, common::pkg_fixture(&format!("images/large/{name}")));
    }
    let (receiver, api) = Receiver::start().await;
    receiver.expect("photo", 1, "123abc");
    for pk in 2..=BATCH + 1 {
        receiver.expect("photo", pk, &format!("token-{pk}"));
    }
    let (emulator, runtime_api) = RuntimeApi::start().await;

    let started = Instant::now();
    let function = common::KillOnDrop(
        Command::new(&bootstrap)
            .current_dir(&task_root)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", &runtime_api)
            .env(
                "AWS_LAMBDA_FUNCTION_NAME",
                "concrexit-test-facedetection-lambda",
            )
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("LAMBDA_TASK_ROOT", &task_root)
            // The photo host and concrexit stand-in listen on loopback, which
            // the deployed function refuses by default.
            .env("FACEDETECT_DESTINATIONS", "local")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let initialised = emulator.initialised(Duration::from_secs(120)).await;
    let init = initialised - started;

    // The original README's payload, with this test's photo host and concrexit stand-in.
    let payload = json!({
        "api_url": api,
        "sources": [{
            "pk": 1,
            "type": "photo",
            "photo_url": format!("{photo_base}/photo/t1.webp"),
            "token": "123abc",
        }],
    });
    let invoked = Instant::now();
    emulator.invoke("original", payload);
    let result = emulator
        .answer("original", Duration::from_secs(300))
        .await
        .unwrap_or_else(|error| panic!("the function failed: {error}"));
    let duration = invoked.elapsed();
    assert_eq!(result["posted"], 1, "{result}");
    assert_eq!(result["failed"], 0, "{result}");

    let delivered = receiver.delivered("photo", 1).unwrap();
    let reference: common::Reference = serde_json::from_str(
        &std::fs::read_to_string(
            common::crate_dir().join("tests/fixtures/pkg/large/t1/reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(delivered.len(), reference.seed_encodings.len());
    let worst = delivered
        .iter()
        .zip(&reference.seed_encodings)
        .flat_map(|(got, want)| got.iter().zip(want).map(|(a, b)| (*a as f32 - b).abs()))
        .fold(0f32, f32::max);
    assert!(
        worst <= 0.01,
        "largest difference from the original {worst}"
    );

    // A batch as concrexit sends them (20 sources), album photos at 1200x900: the CPU time per
    // photo through the whole service, and the memory a full batch needs.
    let pid = function.0.id();
    let cpu_before = cpu_seconds(pid);
    let sources: Vec<_> = (2..=BATCH + 1)
        .map(|pk| {
            let name = &album[(pk as usize) % album.len()];
            source(
                pk,
                "photo",
                &format!("{photo_base}/photo/{name}"),
                &format!("token-{pk}"),
            )
        })
        .collect();
    let batch_started = Instant::now();
    emulator.invoke("batch", json!({"api_url": api, "sources": sources}));
    let result = emulator
        .answer("batch", Duration::from_secs(600))
        .await
        .unwrap_or_else(|error| panic!("the function failed: {error}"));
    let batch_duration = batch_started.elapsed();
    assert_eq!(result["posted"], BATCH, "{result}");
    let cpu_per_photo = (cpu_seconds(pid) - cpu_before) / BATCH as f64;

    let rss = peak_rss_mb(pid);
    let _ = std::fs::remove_dir_all(&task_root);
    println!(
        "{}: {} bytes; init {init:?}; first invocation (t1, {} faces) {duration:?}; {BATCH} \
         photos {batch_duration:?}, {:.0} ms CPU per photo; peak RSS {rss:.0} MB; largest \
         difference {worst:.2e}",
        zip.display(),
        std::fs::metadata(&zip).unwrap().len(),
        delivered.len(),
        cpu_per_photo * 1000.0
    );
}
