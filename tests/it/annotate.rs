//! `facedetect encode --annotate`: the drawn photo has the photo's size, differs from it only
//! near the faces the JSON line reports, and shows every face's rectangle.

use std::path::Path;
use std::process::Command;

use concrexit_facedetection::decode::{DecodeLimits, open_image};
use serde_json::Value;

use crate::common;

/// How far from a face's rectangle a drawn pixel may be: the lines' width on the sides, and
/// above, the score's label.
const SIDE_MARGIN: i64 = 5;
const LABEL_MARGIN: i64 = 48;
/// How far from a landmark.
const LANDMARK_MARGIN: i64 = 5;

fn annotate(dir: &Path, images: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_facedetect"))
        .arg("encode")
        .arg("--annotate")
        .arg(dir)
        .args(images)
        .env_remove("FACEDETECT_WEIGHTS")
        .output()
        .expect("facedetect runs")
}

/// Whether (x, y) is near something drawn for `face` (a face of the JSON line).
fn near_face(face: &Value, x: i64, y: i64) -> bool {
    let rect: Vec<i64> = serde_json::from_value(face["rect"].clone()).unwrap();
    let [left, top, right, bottom] = rect[..] else {
        panic!("a rectangle has four numbers")
    };
    let in_box = x >= left - SIDE_MARGIN
        && x <= right + SIDE_MARGIN
        && y >= top - LABEL_MARGIN
        && y <= bottom + SIDE_MARGIN;
    let landmarks: Vec<[i64; 2]> = serde_json::from_value(face["landmarks"].clone()).unwrap();
    in_box
        || landmarks
            .iter()
            .any(|[lx, ly]| (x - lx).abs() <= LANDMARK_MARGIN && (y - ly).abs() <= LANDMARK_MARGIN)
}

#[test]
fn the_drawing_differs_from_the_photo_only_near_the_faces() {
    let photo = common::crate_dir().join("tests/fixtures/pkg/images/medium/t1.webp");
    let dir = tempfile_dir("annotate");
    let output = annotate(&dir, &[&photo]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");
    let faces = line["faces"].as_array().unwrap();
    assert!(faces.len() >= 2, "t1 has several faces: {line}");

    let original = open_image(&photo, &DecodeLimits::default()).unwrap();
    let drawn = image::open(dir.join("t1.png")).unwrap().to_rgb8();
    assert_eq!(drawn.dimensions(), original.dimensions());

    let mut changed = 0;
    for (x, y, pixel) in drawn.enumerate_pixels() {
        if pixel != original.get_pixel(x, y) {
            changed += 1;
            let (x, y) = (i64::from(x), i64::from(y));
            assert!(
                faces.iter().any(|face| near_face(face, x, y)),
                "({x}, {y}) changed, far from every face"
            );
        }
    }
    // Every face's rectangle is drawn: its corners that lie in the photo have changed.
    for face in faces {
        let rect: Vec<i64> = serde_json::from_value(face["rect"].clone()).unwrap();
        for (x, y) in [(rect[0], rect[3]), (rect[2], rect[3]), (rect[2], rect[1])] {
            if (0..i64::from(drawn.width())).contains(&x)
                && (0..i64::from(drawn.height())).contains(&y)
            {
                let (x, y) = (x as u32, y as u32);
                assert_ne!(drawn.get_pixel(x, y), original.get_pixel(x, y), "{face}");
            }
        }
    }
    assert!(changed > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_landing_pages_picture_is_what_annotate_draws() {
    let photo = common::crate_dir().join("tests/fixtures/pkg/images/medium/t1.webp");
    let dir = tempfile_dir("annotate-docs");
    let output = annotate(&dir, &[&photo]);
    assert!(output.status.success());
    let drawn = image::open(dir.join("t1.png")).unwrap().to_rgb8();
    let committed = image::open(common::crate_dir().join("docs/images/t1-annotated.png"))
        .unwrap()
        .to_rgb8();
    assert!(
        drawn == committed,
        "docs/images/t1-annotated.png is stale: copy {} there",
        dir.join("t1.png").display()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn two_photos_of_one_name_are_refused_before_any_work() {
    let fixtures = common::crate_dir().join("tests/fixtures/pkg/images");
    let dir = tempfile_dir("annotate-names");
    let output = annotate(
        &dir,
        &[
            &fixtures.join("medium/t1.webp"),
            &fixtures.join("large/t1.webp"),
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("two photos would be drawn into"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    std::fs::remove_dir_all(&dir).ok();
}

/// A fresh directory under the system's temporary one, for one test.
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("facedetect-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}
