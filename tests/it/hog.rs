//! dlib's HOG frontal face detector against the reference outputs: the same rectangles in the
//! same order and confidences within 1e-3, with and without upsampling, plus degenerate inputs.

use crate::common;

use candle_core::{DType, Device};
use concrexit_facedetection::detect::hog::HogDetector;
use concrexit_facedetection::geometry::Rect;
use concrexit_facedetection::weights::Model;
use image::{Rgb, RgbImage};

fn detector() -> HogDetector {
    let path = common::weights_dir().join("frontal_face_detector.safetensors");
    HogDetector::from_file(&path, &Device::Cpu).expect("detector")
}

/// Compares one detector run with dlib's; returns the largest confidence difference.
fn check(case: &str, ours: &[(Rect, f64)], dlib: &[(Rect, f64)]) -> f64 {
    let ours_rects: Vec<Rect> = ours.iter().map(|d| d.0).collect();
    let dlib_rects: Vec<Rect> = dlib.iter().map(|d| d.0).collect();
    assert_eq!(
        ours_rects, dlib_rects,
        "{case}: rectangles (ours vs dlib), scores {ours:?} vs {dlib:?}"
    );
    ours.iter()
        .zip(dlib)
        .map(|(a, b)| (a.1 - b.1).abs())
        .fold(0.0, f64::max)
}

#[test]
fn detections_match_dlib_on_every_reference_case() {
    let detector = detector();
    let mut worst: f64 = 0.0;
    let mut faces = 0;
    let cases = common::reference_cases();
    for case in &cases {
        let image = case.decoded();
        let reference = &case.reference;
        let expected: Vec<(Rect, f64)> = reference
            .hog
            .faces
            .iter()
            .map(|f| (Rect::from(f.rect), f.score))
            .collect();
        let found = detector.detect(&image, 1).expect("detect");
        let diff = check(&format!("{} upsample 1", case.name), &found, &expected);
        let expected0: Vec<(Rect, f64)> = reference
            .hog_upsample0
            .iter()
            .map(|d| (Rect::from(d.rect), d.score))
            .collect();
        let found0 = detector.detect(&image, 0).expect("detect");
        let diff0 = check(&format!("{} upsample 0", case.name), &found0, &expected0);
        println!(
            "{}: {} faces (upsample 1), {} (upsample 0), max score difference {:.2e} / {:.2e}",
            case.name,
            found.len(),
            found0.len(),
            diff,
            diff0
        );
        worst = worst.max(diff).max(diff0);
        faces += found.len() + found0.len();
    }
    println!(
        "{} cases, {faces} detections, max score difference {worst:.3e}",
        cases.len()
    );
    assert!(worst < 1e-3, "score difference {worst}");
}

#[test]
fn degenerate_images_have_no_faces() {
    let detector = detector();
    for (width, height) in [(0, 0), (1, 1), (3, 2), (40, 30), (79, 79), (100, 100)] {
        let image = RgbImage::from_pixel(width, height, Rgb([90, 120, 200]));
        for upsample in [0, 1, 2] {
            let found = detector.detect(&image, upsample).expect("detect");
            assert!(
                found.is_empty(),
                "{width}x{height} upsample {upsample}: {found:?}"
            );
        }
    }
    let black = RgbImage::new(640, 480);
    assert!(detector.detect(&black, 1).expect("detect").is_empty());
}

/// Peak resident memory of this process so far, in bytes (Linux), if known.
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn iou(a: &Rect, b: &Rect) -> f64 {
    let inner = a.intersect(b).area() as f64;
    inner / ((a.area() + b.area()) as f64 - inner)
}

#[test]
fn big_image_is_scanned_in_bounded_memory() {
    // A 4000x3000 image: a reference face pasted into a textured background. The pyramid's
    // sampling grid differs from that of the face alone, so the face is found at nearly, not
    // exactly, the same place.
    let detector = detector();
    let cases = common::reference_cases();
    let case = cases
        .iter()
        .find(|c| !c.reference.hog_upsample0.is_empty())
        .expect("a case with a face at upsample 0");
    let face = case.decoded();
    let mut big = RgbImage::from_fn(4000, 3000, |x, y| {
        let v = ((x * 7 + y * 13) % 23) as u8 * 4 + 60;
        Rgb([v, v, v])
    });
    image::imageops::replace(&mut big, &face, 1000, 800);
    let found = detector.detect(&big, 0).expect("detect");
    for d in &case.reference.hog_upsample0 {
        let r = Rect::from(d.rect);
        let expected = Rect::new(r.left + 1000, r.top + 800, r.right + 1000, r.bottom + 800);
        assert!(
            found.iter().any(|(rect, _)| iou(rect, &expected) > 0.7),
            "{expected:?} not among {found:?}"
        );
    }
    if let Some(peak) = peak_memory() {
        println!("peak resident memory {} MiB", peak >> 20);
        assert!(peak < 2 << 30, "peak resident memory {peak} bytes");
    }
}

#[test]
fn converter_reproduces_the_committed_weights() {
    let Some(shared) = common::shared_reference() else {
        println!("shared reference data absent: skipped");
        return;
    };
    let bytes = std::fs::read(shared.join("frontal_face_detector.svm")).expect("detector file");
    let (kind, converted) =
        concrexit_facedetection::convert::convert_bytes(&bytes).expect("convert");
    assert_eq!(kind, "dlib HOG frontal face detector");
    let committed = candle_core::safetensors::load(
        common::weights_dir().join("frontal_face_detector.safetensors"),
        &Device::Cpu,
    )
    .expect("committed weights");
    let mut names: Vec<&String> = converted.keys().collect();
    names.sort();
    let mut committed_names: Vec<&String> = committed.keys().collect();
    committed_names.sort();
    assert_eq!(names, committed_names);
    for name in names {
        let (a, b) = (&converted[name], &committed[name]);
        assert_eq!(a.dims(), b.dims(), "{name}");
        let flat = |t: &candle_core::Tensor| {
            t.to_dtype(DType::F64)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f64>())
                .expect("values")
        };
        assert_eq!(flat(a), flat(b), "{name}");
    }
    // The separable factors kept per filter (nonzero row filters): numpy's SVD of the five
    // filters' 31 planes, with dlib's cut-off max(1e-4, 0.001 * largest), keeps 61, 58, 54, 66
    // and 66.
    let rows = &converted["row_filters"];
    let (count, planes, rank, width) = rows.dims4().expect("4-d");
    let values = rows
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values");
    let kept: Vec<usize> = (0..count)
        .map(|d| {
            (0..planes * rank)
                .filter(|slot| {
                    let start = (d * planes * rank + slot) * width;
                    values[start..start + width].iter().any(|&v| v != 0.0)
                })
                .count()
        })
        .collect();
    assert_eq!(kept, [61, 58, 54, 66, 66]);
}
