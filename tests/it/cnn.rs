//! The CNN face detector against dlib's `cnn_face_detection_model_v1` on the reference photos.

use crate::common;

use candle_core::Device;
use concrexit_facedetection::detect::cnn::{CnnFaceDetector, Detection};
use concrexit_facedetection::geometry::Rect;
use concrexit_facedetection::weights::Model;
use image::RgbImage;

/// Largest difference allowed between a confidence and dlib's.
const CONFIDENCE_TOLERANCE: f64 = 1e-3;

fn detector() -> CnnFaceDetector {
    let path = common::weights_dir().join("mmod_human_face_detector.safetensors");
    CnnFaceDetector::from_file(&path, &Device::Cpu).expect("CNN detector")
}

/// Compares detections with dlib's and returns the largest confidence difference.
fn compare(name: &str, found: &[Detection], expected: &[(Rect, f64)]) -> f64 {
    let found_rects: Vec<Rect> = found.iter().map(|d| d.0).collect();
    let expected_rects: Vec<Rect> = expected.iter().map(|d| d.0).collect();
    assert_eq!(found_rects, expected_rects, "{name}: rectangles");
    let mut worst = 0f64;
    for ((_, confidence), (_, score)) in found.iter().zip(expected) {
        let diff = (*confidence as f64 - score).abs();
        assert!(
            diff <= CONFIDENCE_TOLERANCE,
            "{name}: confidence {confidence} vs dlib's {score}"
        );
        worst = worst.max(diff);
    }
    worst
}

fn check_all(upsample: u32) {
    let detector = detector();
    let mut checked = 0;
    let mut worst = 0f64;
    for case in common::reference_cases() {
        let expected: Vec<(Rect, f64)> = match upsample {
            0 => match &case.reference.cnn_upsample0 {
                Some(dets) => dets.iter().map(|d| (Rect::from(d.rect), d.score)).collect(),
                None => continue,
            },
            _ => match &case.reference.cnn {
                Some(faces) => {
                    assert_eq!(faces.upsample, upsample);
                    faces
                        .faces
                        .iter()
                        .map(|f| (Rect::from(f.rect), f.score))
                        .collect()
                }
                None => continue,
            },
        };
        let found = detector
            .detect(&case.decoded(), upsample)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let diff = compare(&case.name, &found, &expected);
        println!(
            "{} upsample {upsample}: {} faces, max confidence difference {diff:.2e}",
            case.name,
            found.len()
        );
        worst = worst.max(diff);
        checked += 1;
    }
    println!("{checked} cases at upsample {upsample}, max confidence difference {worst:.2e}");
    assert!(checked > 0, "no reference case has CNN detections");
}

#[test]
fn detections_match_dlib_without_upsampling() {
    check_all(0);
}

#[test]
fn detections_match_dlib_with_one_upsampling() {
    check_all(1);
}

#[test]
fn a_batch_gives_the_same_detections_as_single_photos() {
    let detector = detector();
    // Two photos of one size and one of another, so that both batching and grouping by size
    // are used: a photo with faces, the same photo mirrored (same size, other pixels), and a
    // photo of another size with faces. The committed fixtures have all three.
    let cases: Vec<_> = common::reference_cases()
        .into_iter()
        .filter(|case| {
            case.reference
                .cnn_upsample0
                .as_ref()
                .is_some_and(|dets| !dets.is_empty())
        })
        .collect();
    let size = |case: &common::Case| (case.reference.width, case.reference.height);
    let first = cases.first().expect("a photo with CNN detections");
    let other = cases
        .iter()
        .find(|case| size(case) != size(first))
        .expect("a photo of another size with CNN detections");
    let first_image = first.decoded();
    let mirrored = image::imageops::flip_horizontal(&first_image);
    let images: Vec<RgbImage> = vec![first_image, mirrored, other.decoded()];
    let batch = detector.detect_batch(&images, 0).expect("batch");
    assert_eq!(batch.len(), images.len());
    let mut faces = 0;
    for (image, from_batch) in images.iter().zip(&batch) {
        let single = detector.detect(image, 0).expect("single");
        let rects: Vec<Rect> = single.iter().map(|d| d.0).collect();
        let batch_rects: Vec<Rect> = from_batch.iter().map(|d| d.0).collect();
        assert_eq!(rects, batch_rects);
        for (a, b) in single.iter().zip(from_batch) {
            assert!((a.1 - b.1).abs() < 1e-5, "{} vs {}", a.1, b.1);
        }
        faces += single.len();
    }
    assert!(faces > 0, "the batch should contain faces");
}

#[test]
fn degenerate_images_have_no_faces() {
    let detector = detector();
    for (width, height) in [(0, 0), (1, 1), (7, 3), (120, 90)] {
        let black = RgbImage::new(width, height);
        for upsample in [0, 1] {
            let found = detector.detect(&black, upsample).expect("detect");
            assert!(found.is_empty(), "{width}x{height}: {found:?}");
        }
    }
    assert!(
        detector
            .detect_batch(&[], 1)
            .expect("empty batch")
            .is_empty()
    );
}

/// Seconds per 1200x900 photo, one at a time and in a batch of two:
/// `cargo test --test cnn -- --ignored --nocapture speed`.
#[test]
#[ignore]
fn speed_on_a_1200x900_photo() {
    let detector = detector();
    let image = common::reference_cases()
        .into_iter()
        .find(|case| (case.reference.width, case.reference.height) == (1200, 900))
        .expect("a 1200x900 reference photo")
        .decoded();
    for upsample in [0, 1] {
        let start = std::time::Instant::now();
        detector.detect(&image, upsample).expect("detect");
        let single = start.elapsed().as_secs_f64();
        let start = std::time::Instant::now();
        detector
            .detect_batch(&[image.clone(), image.clone()], upsample)
            .expect("detect batch");
        let batch = start.elapsed().as_secs_f64() / 2.0;
        println!(
            "upsample {upsample}: {single:.2} s per photo alone, {batch:.2} s per photo in a batch of 2"
        );
    }
}
