//! The `facedetect` command line: the JSON contract other tools rely on.

use crate::common;

use std::process::Command;

use serde_json::Value;

fn facedetect(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_facedetect"))
        .args(args)
        .env_remove("FACEDETECT_WEIGHTS")
        .output()
        .expect("facedetect runs")
}

fn json_lines(output: &std::process::Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_f64().expect("a number") as f32)
        .collect()
}

#[test]
fn encode_with_known_rects_prints_the_contract() {
    let case_dir = common::crate_dir().join("tests/fixtures/pkg/orig/t1");
    let reference: common::Reference =
        serde_json::from_str(&std::fs::read_to_string(case_dir.join("reference.json")).unwrap())
            .unwrap();
    let image = case_dir.join("decoded.png");
    let image = image.to_str().unwrap();
    let faces = &reference.hog.faces[..2];
    let rect_args: Vec<String> = faces
        .iter()
        .map(|f| {
            let [l, t, r, b] = f.rect;
            format!("--rect={l},{t},{r},{b}")
        })
        .collect();
    let mut args = vec!["encode"];
    args.extend(rect_args.iter().map(String::as_str));
    args.push(image);
    let output = facedetect(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(line["image"], image);
    assert_eq!(line["width"], reference.width);
    assert_eq!(line["height"], reference.height);
    let out_faces = line["faces"].as_array().unwrap();
    assert_eq!(out_faces.len(), 2);
    for (ours, expected) in out_faces.iter().zip(faces) {
        assert_eq!(ours["rect"], serde_json::json!(expected.rect));
        assert_eq!(ours["landmarks"], serde_json::json!(expected.landmarks5));
        assert!(ours.get("score").is_none(), "no score for given rects");
        let encoding = floats(&ours["encoding"]);
        assert_eq!(encoding.len(), 128);
        assert!(common::euclidean(&encoding, &expected.descriptor) <= 1e-3);
    }
    // Every encoding value is written as a JSON float (concrexit refuses integers).
    let text = String::from_utf8_lossy(&output.stdout);
    let encoding_text = text.split("\"encoding\":[").nth(1).unwrap();
    let first_values = encoding_text.split(']').next().unwrap();
    assert!(
        first_values
            .split(',')
            .all(|v| v.contains('.') || v.contains('e'))
    );
}

#[test]
fn encode_accepts_rects_left_of_or_above_the_image() {
    // dlib's detection of the face cut by the left border starts 56 pixels left of the image;
    // the plain `--rect L,T,R,B` syntax takes it as well as `--rect=L,T,R,B`.
    let case_dir = common::crate_dir().join("tests/fixtures/pkg/orig/obama_partial_face");
    let reference: common::Reference =
        serde_json::from_str(&std::fs::read_to_string(case_dir.join("reference.json")).unwrap())
            .unwrap();
    let face = &reference.hog.faces[0];
    let [l, t, r, b] = face.rect;
    assert!(l < 0, "the fixture's face starts left of the image");
    let rect = format!("{l},{t},{r},{b}");
    let image = case_dir.join("decoded.png");
    let image = image.to_str().unwrap();
    let plain = facedetect(&["encode", "--rect", &rect, image]);
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let with_equals = facedetect(&["encode", &format!("--rect={rect}"), image]);
    assert_eq!(plain.stdout, with_equals.stdout);
    let faces = json_lines(&plain)[0]["faces"].as_array().unwrap().clone();
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0]["rect"], serde_json::json!(face.rect));
    assert_eq!(faces[0]["landmarks"], serde_json::json!(face.landmarks5));
    assert!(common::euclidean(&floats(&faces[0]["encoding"]), &face.descriptor) <= 1e-3);
}

#[test]
fn encode_detects_faces_and_reports_scores() {
    let image = common::crate_dir().join("tests/fixtures/pkg/images/medium/obama.webp");
    let output = facedetect(&["encode", image.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: common::Reference = serde_json::from_str(
        &std::fs::read_to_string(
            common::crate_dir().join("tests/fixtures/pkg/medium/obama/reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let faces = json_lines(&output)[0]["faces"].as_array().unwrap().clone();
    assert!(!faces.is_empty());
    assert_eq!(faces.len(), reference.seed_encodings.len());
    for (face, (expected, detection)) in faces
        .iter()
        .zip(reference.seed_encodings.iter().zip(&reference.hog.faces))
    {
        assert!((face["score"].as_f64().unwrap() - detection.score).abs() <= 1e-3);
        // The same numbers as the original service's, within float printing.
        let worst = floats(&face["encoding"])
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "largest difference {worst}");
    }
}

#[test]
fn encode_aligned_embeds_chips() {
    let case_dir = common::crate_dir().join("tests/fixtures/pkg/orig/astronaut");
    let reference: common::Reference =
        serde_json::from_str(&std::fs::read_to_string(case_dir.join("reference.json")).unwrap())
            .unwrap();
    let chip = case_dir.join("chip_hog_0.png");
    let output = facedetect(&["encode", "--aligned", chip.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = &json_lines(&output)[0];
    let faces = line["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0].as_object().unwrap().len(), 1, "only the encoding");
    let encoding = floats(&faces[0]["encoding"]);
    let expected = &reference.hog.faces[0].descriptor_from_chip;
    assert!(common::euclidean(&encoding, expected) <= 1e-3);
}

#[test]
fn bad_images_fail_with_a_message_and_the_others_still_print() {
    let dir = std::env::temp_dir().join(format!("facedetect-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("not-a-photo.jpg");
    std::fs::write(&bad, b"hello").unwrap();
    let good = common::crate_dir().join("tests/fixtures/pkg/orig/astronaut/chip_hog_0.png");
    let output = facedetect(&[
        "encode",
        "--aligned",
        bad.to_str().unwrap(),
        good.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not-a-photo.jpg") && stderr.contains("not a JPEG"),
        "{stderr}"
    );
    assert_eq!(
        json_lines(&output).len(),
        1,
        "the good image is still encoded"
    );

    let missing = facedetect(&[
        "encode",
        bad.with_file_name("missing.png").to_str().unwrap(),
    ]);
    assert!(!missing.status.success());
    // The reason once, after the file's name.
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("missing.png"), "{stderr}");
    let photo = common::crate_dir().join("tests/fixtures/pkg/images/medium/biden.webp");
    let not_a_chip = facedetect(&["encode", "--aligned", photo.to_str().unwrap()]);
    assert!(!not_a_chip.status.success());
    assert!(String::from_utf8_lossy(&not_a_chip.stderr).contains("150x150"));
    let bad_rect = facedetect(&["encode", "--rect", "1,2,3", good.to_str().unwrap()]);
    assert!(!bad_rect.status.success());
    assert!(String::from_utf8_lossy(&bad_rect.stderr).contains("LEFT,TOP,RIGHT,BOTTOM"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn first_face_encoding(output: &std::process::Output) -> Vec<f32> {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    floats(&json_lines(output)[0]["faces"][0]["encoding"])
}

/// `--jitters` with `--rect` is face_recognition's `num_jitters` with `known_face_locations`:
/// the same jittered encoding as detection gives that face, not the plain one.
#[test]
fn jitters_apply_with_rect_as_with_detection() {
    let image = common::crate_dir().join("tests/fixtures/pkg/images/medium/obama.webp");
    let image = image.to_str().unwrap();
    let detected = facedetect(&["encode", "--jitters", "4", image]);
    let jittered_detection = first_face_encoding(&detected);
    let rect = json_lines(&detected)[0]["faces"][0]["rect"].clone();
    let rect = format!("{},{},{},{}", rect[0], rect[1], rect[2], rect[3]);
    let plain = first_face_encoding(&facedetect(&["encode", "--rect", &rect, image]));
    let jittered = first_face_encoding(&facedetect(&[
        "encode",
        "--jitters",
        "4",
        "--rect",
        &rect,
        image,
    ]));
    assert_eq!(jittered, jittered_detection, "--rect with --jitters 4");
    let moved = common::euclidean(&jittered, &plain);
    // Jittering moves the encoding, but far less than the 0.49 between two people.
    assert!(
        moved > 1e-3 && moved < 0.2,
        "jittered {moved} from the plain encoding"
    );
}

#[test]
fn jitters_apply_with_aligned_chips() {
    let case_dir = common::crate_dir().join("tests/fixtures/pkg/orig/astronaut");
    let chip = case_dir.join("chip_hog_0.png");
    let chip = chip.to_str().unwrap();
    let plain = first_face_encoding(&facedetect(&["encode", "--aligned", chip]));
    let jittered = first_face_encoding(&facedetect(&[
        "encode",
        "--aligned",
        "--jitters",
        "4",
        chip,
    ]));
    let again = first_face_encoding(&facedetect(&[
        "encode",
        "--aligned",
        "--jitters",
        "4",
        chip,
    ]));
    assert_eq!(jittered, again, "the jitter is seeded");
    let moved = common::euclidean(&jittered, &plain);
    assert!(
        moved > 1e-3 && moved < 0.2,
        "jittered {moved} from the plain encoding"
    );
}

/// Options that would change nothing are refused in one line, with the reason, before any
/// work.
#[test]
fn options_without_effect_are_refused_with_a_reason() {
    let image = common::crate_dir().join("tests/fixtures/pkg/images/medium/obama.webp");
    let image = image.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["encode", "--rect", "1,2,3,4", "--detector", "cnn", image],
            "--detector has no effect with --rect",
        ),
        (
            &["encode", "--rect", "1,2,3,4", "--upsample", "2", image],
            "--upsample has no effect with --rect",
        ),
        (
            &["encode", "--aligned", "--upsample", "0", image],
            "--upsample has no effect with --aligned",
        ),
        (
            &["encode", "--aligned", "--detector", "hog", image],
            "--detector has no effect with --aligned",
        ),
    ];
    for (args, reason) in cases {
        let output = facedetect(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    // The same options where they do something are accepted.
    let output = facedetect(&["encode", "--detector", "hog", "--upsample", "0", image]);
    assert!(output.status.success());
    // bench-device: --embed-seconds times nothing without --embed-sizes.
    let output = facedetect(&["bench-device", ".", "--embed-seconds", "5"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--embed-sizes"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn unreadable_inputs_fail_in_one_line_naming_them_once() {
    let good = common::crate_dir().join("tests/fixtures/pkg/images/medium/obama.webp");
    let url = "https://example.org/photo.jpg";
    let output = facedetect(&["encode", "missing.png", url, good.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "missing.png: No such file or directory (os error 2)",
            "https://example.org/photo.jpg: encode reads files; use batch or serve for URLs",
        ],
        "{stderr}"
    );
    assert_eq!(
        json_lines(&output).len(),
        1,
        "the good image is still encoded"
    );

    // convert-dlib on a photo: not a dlib model, and which ones it reads.
    let out =
        std::env::temp_dir().join(format!("facedetect-cli-{}.safetensors", std::process::id()));
    let output = facedetect(&[
        "convert-dlib",
        good.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(!out.exists());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches("obama.webp").count(), 1, "{stderr}");
    for expected in [
        "is not a dlib model this converter reads",
        "face recognition ResNet",
        "shape predictor (5- or 68-point)",
        "MMOD face detector",
        "HOG frontal face detector",
        ".dat",
        ".svm",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    let output = facedetect(&["convert-dlib", "missing.dat", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(stderr.matches("missing.dat").count(), 1, "{stderr}");
}

/// The rest of the audit: values that would make an option mean nothing are refused.
#[test]
fn meaningless_values_are_refused() {
    let cases: [(&[&str], &str); 4] = [
        // The HOG detector takes no batches; on the CPU the size changes nothing else.
        (
            &[
                "worker",
                "--queue-url",
                "http://127.0.0.1:9/000000000000/q",
                "--batch-size",
                "4",
            ],
            "--batch-size has no effect with the HOG detector",
        ),
        // Beyond loopback without a (real) secret, so that a regression fails instead of
        // serving.
        (
            &[
                "serve",
                "--host",
                "0.0.0.0",
                "--port",
                "0",
                "--max-invocations",
                "0",
            ],
            "must be at least 1",
        ),
        (&["batch", "-", "--parallel", "0"], "must be at least 1"),
        (
            &["serve", "--host", "0.0.0.0", "--port", "0", "--secret", ""],
            "the secret is empty",
        ),
    ];
    for (args, reason) in cases {
        let output = facedetect(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
