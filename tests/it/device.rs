//! `--device cuda` never falls back to the CPU: a build without the `cuda` feature refuses it,
//! from the flag or from FACEDETECT_DEVICE, with an error that says so, before any photo is read.

use std::process::Command;

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_on_a_build_without_the_feature_is_refused() {
    let photo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pkg/images/large/t1.webp"
    );
    let facedetect = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_facedetect"));
        command.env_remove("FACEDETECT_DEVICE");
        command
    };
    let by_flag = facedetect()
        .args(["encode", "--device", "cuda", photo])
        .output()
        .expect("facedetect runs");
    let by_env = facedetect()
        .args(["encode", photo])
        .env("FACEDETECT_DEVICE", "cuda")
        .output()
        .expect("facedetect runs");
    for output in [by_flag, by_env] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(output.stdout.is_empty(), "nothing is encoded on the CPU");
        assert!(
            stderr.contains("--device cuda: this facedetect was built without the `cuda` feature"),
            "{stderr}"
        );
    }
}

/// The GPU check on a machine without a usable GPU (or given a binary without the `cuda`
/// feature) stops at its smoke step within 30 seconds: exit status 2, one line on stderr that
/// says why, and the same reason in summary.json.
#[test]
fn the_gpu_check_stops_at_once_with_a_reason_without_a_gpu() {
    let out = std::env::temp_dir().join(format!("facedetect-gpu-check-{}", std::process::id()));
    let started = std::time::Instant::now();
    let output = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gpu-check.sh"))
        .arg(env!("CARGO_BIN_EXE_facedetect"))
        .arg(&out)
        .env_remove("GPU_CHECK_SECONDS")
        .output()
        .expect("bash runs");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(elapsed.as_secs() < 30, "took {elapsed:?}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    let reason = lines[0]
        .strip_prefix("gpu-check: smoke: ")
        .unwrap_or_else(|| panic!("not a smoke reason: {stderr}"));
    assert!(reason.len() > 10, "{stderr}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).expect("summary.json"))
            .expect("JSON");
    assert_eq!(summary["smoke"]["ok"], false);
    assert_eq!(summary["smoke"]["reason"], reason);
    let _ = std::fs::remove_dir_all(&out);
}
