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
