//! The CPU kernels' versions against each other: `facedetect encode` run with
//! `FACEDETECT_CPU_KERNELS` capped at each instruction set (portable, SSE4.1, AVX2) finds the
//! same faces as with the widest one this CPU has, with encodings within 1e-5, on both
//! detectors and on aligned chips. A version the CPU lacks runs as the widest it has, so on
//! any machine each run is valid and the versions it has are compared.
//!
//! `FACEDETECT_CPU_KERNELS=none` runs the models as candle tensor operations on the CPU
//! device, the code a GPU runs: the same faces as the kernels, scores within 1e-4, encodings
//! within 1e-5. An unknown value is refused.

use crate::common;

use serde_json::Value;
use std::process::Command;

/// The largest difference allowed between two versions' encodings.
const TOLERANCE: f64 = 1e-5;

/// `facedetect encode ARGS` with the kernels capped at `isa` (`None`: the widest), one JSON
/// object per photo.
fn encode(isa: Option<&str>, args: &[String]) -> Vec<Value> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_facedetect"));
    command
        .arg("encode")
        .args(args)
        .env("FACEDETECT_WEIGHTS", common::weights_dir())
        .env_remove("FACEDETECT_CPU_KERNELS");
    if let Some(isa) = isa {
        command.env("FACEDETECT_CPU_KERNELS", isa);
    }
    let output = command.output().expect("facedetect runs");
    assert!(
        output.status.success(),
        "facedetect encode with {isa:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn faces(photo: &Value) -> &Vec<Value> {
    photo["faces"].as_array().expect("faces")
}

/// The largest difference allowed between the scores of the tensor path and the kernels.
const TENSOR_SCORE_TOLERANCE: f64 = 1e-4;

/// The same photos, the same rectangles and landmarks, scores within `score_tolerance`,
/// encodings within [`TOLERANCE`].
fn assert_same_faces(isa: &str, expected: &[Value], actual: &[Value], score_tolerance: f64) {
    assert_eq!(expected.len(), actual.len(), "{isa}: photos");
    let mut compared = 0;
    for (want, got) in expected.iter().zip(actual) {
        let photo = &want["image"];
        assert_eq!(photo, &got["image"]);
        assert_eq!(
            faces(want).len(),
            faces(got).len(),
            "{isa}: faces in {photo}"
        );
        for (a, b) in faces(want).iter().zip(faces(got)) {
            assert_eq!(a["rect"], b["rect"], "{isa}: a rectangle in {photo}");
            assert_eq!(
                a["landmarks"], b["landmarks"],
                "{isa}: landmarks in {photo}"
            );
            if let (Some(x), Some(y)) = (a["score"].as_f64(), b["score"].as_f64()) {
                assert!(
                    (x - y).abs() < score_tolerance,
                    "{isa}: a score in {photo}: {x} {y}"
                );
            }
            let encoding = |face: &Value| -> Vec<f64> {
                face["encoding"]
                    .as_array()
                    .expect("encoding")
                    .iter()
                    .map(|v| v.as_f64().expect("a number"))
                    .collect()
            };
            let (a, b) = (encoding(a), encoding(b));
            assert_eq!(a.len(), 128);
            let worst = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                worst < TOLERANCE,
                "{isa}: an encoding in {photo} differs by {worst:e}"
            );
            compared += 1;
        }
    }
    assert!(compared > 0, "no faces compared");
}

fn fixture(path: &str) -> String {
    common::crate_dir()
        .join("tests/fixtures/pkg")
        .join(path)
        .display()
        .to_string()
}

fn check_every_isa(args: &[String]) {
    let widest = encode(None, args);
    for isa in ["portable", "sse4.1", "avx2"] {
        assert_same_faces(isa, &widest, &encode(Some(isa), args), TOLERANCE);
    }
}

#[test]
fn every_instruction_set_finds_the_same_faces_with_hog() {
    let photos = ["t1.webp", "obama.webp", "biden.webp"];
    check_every_isa(&photos.map(|name| fixture(&format!("images/large/{name}"))));
}

#[test]
fn every_instruction_set_finds_the_same_faces_with_the_cnn() {
    check_every_isa(&[
        "--detector".into(),
        "cnn".into(),
        fixture("images/large/t1.webp"),
    ]);
}

#[test]
fn every_instruction_set_encodes_aligned_chips_alike() {
    let chips: Vec<String> = std::fs::read_dir(common::crate_dir().join("tests/fixtures/pkg/orig"))
        .expect("fixtures")
        .flat_map(|case| std::fs::read_dir(case.expect("entry").path()).expect("case"))
        .map(|file| file.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("chip_"))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(!chips.is_empty(), "no chips among the fixtures");
    let mut args = vec!["--aligned".to_string()];
    args.extend(chips);
    check_every_isa(&args);
}

/// The tensor path against the widest kernels.
fn check_tensor_path(args: &[String]) {
    let kernels = encode(None, args);
    let tensors = encode(Some("none"), args);
    assert_same_faces("none", &kernels, &tensors, TENSOR_SCORE_TOLERANCE);
}

fn medium_photos() -> Vec<String> {
    ["obama.webp", "biden.webp", "t1.webp", "astronaut.webp"]
        .iter()
        .map(|name| fixture(&format!("images/medium/{name}")))
        .collect()
}

#[test]
fn the_tensor_path_finds_the_same_faces_with_hog() {
    check_tensor_path(&medium_photos());
}

#[test]
fn the_tensor_path_finds_the_same_faces_with_the_cnn() {
    // Upsample 0 keeps the tensor path's CPU convolutions short.
    let mut args = vec![
        "--detector".into(),
        "cnn".into(),
        "--upsample".into(),
        "0".into(),
    ];
    args.extend(medium_photos());
    check_tensor_path(&args);
}

#[test]
fn the_tensor_path_encodes_aligned_chips_alike() {
    let chips = ["orig/t1/chip_hog_0.png", "orig/astronaut/chip_hog_1.png"];
    let mut args = vec!["--aligned".to_string()];
    args.extend(chips.map(fixture));
    check_tensor_path(&args);
}

#[test]
fn an_unknown_setting_is_refused_with_the_valid_ones() {
    let output = Command::new(env!("CARGO_BIN_EXE_facedetect"))
        .arg("encode")
        .arg(fixture("images/medium/obama.webp"))
        .env("FACEDETECT_WEIGHTS", common::weights_dir())
        .env("FACEDETECT_CPU_KERNELS", "avx3")
        .output()
        .expect("facedetect runs");
    assert!(!output.status.success(), "a typo must not run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "FACEDETECT_CPU_KERNELS=\"avx3\" is not one of none, portable, sse4.1, avx2, avx512"
        ),
        "{stderr}"
    );
}
