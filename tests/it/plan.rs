//! `facedetect plan`: the device passes of the CNN detector for photos of one size, every
//! buffer below candle's 2^31-element limit and every pass within the device-memory budget.

use crate::common;

use serde_json::Value;
use std::process::Command;

/// 2^31, the most elements a buffer of a device pass may reach (exclusive).
const LIMIT: u64 = 1 << 31;

fn plan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_facedetect"))
        .arg("plan")
        .args(args)
        .env("FACEDETECT_WEIGHTS", common::weights_dir())
        .env_remove("FACEDETECT_DEVICE_MEMORY_MB")
        .output()
        .expect("facedetect runs")
}

fn planned(args: &[&str]) -> Value {
    let output = plan(args);
    assert!(
        output.status.success(),
        "plan {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON document")
}

/// The photos of each pass; checks that every pass is within the limits.
fn passes(plan: &Value, budget_mb: Option<u64>) -> Vec<u64> {
    plan["passes"]
        .as_array()
        .expect("passes")
        .iter()
        .map(|pass| {
            let largest = pass["largest_buffer_elements"].as_u64().unwrap();
            assert!(largest < LIMIT, "a buffer of {largest} elements: {plan}");
            if let Some(mb) = budget_mb {
                let bytes = pass["device_bytes"].as_u64().unwrap();
                assert!(bytes <= mb << 20, "{bytes} bytes over {mb} MiB: {plan}");
            }
            pass["photos"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn sixteen_album_photos_at_upsample_1_are_split() {
    for algorithm in ["im2col", "implicit-gemm"] {
        let plan = planned(&[
            "--size",
            "1200x900",
            "--upsample",
            "1",
            "--photos",
            "16",
            "--algorithm",
            algorithm,
        ]);
        let photos = passes(&plan, None);
        assert_eq!(photos.iter().sum::<u64>(), 16, "{plan}");
        if algorithm == "im2col" {
            // About 393 million gathered elements a photo: five a pass.
            assert_eq!(photos, [5, 5, 5, 1], "{plan}");
        }
        assert_eq!(plan["pyramid"]["cols"], 2424, "{plan}");
    }
}

#[test]
fn sixteen_album_photos_at_upsample_0_take_one_pass() {
    let plan = planned(&[
        "--size",
        "1200x900",
        "--upsample",
        "0",
        "--photos",
        "16",
        "--algorithm",
        "im2col",
    ]);
    assert_eq!(passes(&plan, None), [16], "{plan}");
}

#[test]
fn an_l4_budget_bounds_every_pass() {
    // An L4 has 24 GB; leave room for the CUDA context, cuDNN, the weights and the embedder.
    // cuDNN's passes need about 0.74 GB a photo, so 28 fit where 2^31 would allow 34.
    let plan = planned(&[
        "--size",
        "1200x900",
        "--upsample",
        "1",
        "--photos",
        "32",
        "--device-memory-mb",
        "20000",
    ]);
    assert_eq!(plan["algorithm"], "implicit-gemm");
    assert_eq!(passes(&plan, Some(20_000)), [28, 4], "{plan}");
    let unlimited = planned(&["--size", "1200x900", "--upsample", "1", "--photos", "32"]);
    assert_eq!(passes(&unlimited, None), [32], "{unlimited}");
    let chips = plan["embedder"]["chips_per_pass"].as_u64().unwrap();
    assert!(chips >= 256, "{plan}");
}

#[test]
fn a_photo_that_cannot_fit_is_refused_with_a_reason() {
    // 100 megapixels: over the CNN detector's limit before any pass is planned.
    let output = plan(&["--size", "10000x10000", "--upsample", "0"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("more than the CNN detector's 16 megapixels"),
        "{stderr}"
    );
    // A photo that fits the detector but not the budget.
    let output = plan(&["--size", "1200x900", "--device-memory-mb", "512"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the budget is 512 MiB"), "{stderr}");
    let output = plan(&["--size", "1200by900"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("expected WIDTHxHEIGHT"));
}
