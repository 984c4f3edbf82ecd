//! Face chips against dlib's `get_face_chip(img, shape, 150, 0.25)`: chips cut with our own
//! landmarks (from the reference detections) compared with the chips dlib saved.

use crate::common;

use candle_core::Device;
use concrexit_facedetection::face::alignment::{
    FACE_CHIP_PADDING, face_chip, get_face_chip_details,
};
use concrexit_facedetection::face::embedder::CHIP_SIZE;
use concrexit_facedetection::face::landmarks::ShapePredictor;
use concrexit_facedetection::geometry::{Point, Rect};
use concrexit_facedetection::weights::Model;

fn load_predictor() -> ShapePredictor {
    let path = common::weights_dir().join("shape_predictor_5_face_landmarks.safetensors");
    ShapePredictor::from_file(&path, &Device::Cpu).expect("shape predictor")
}

/// Mean and largest absolute difference over all channels of two equally sized images.
fn difference(a: &image::RgbImage, b: &image::RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let (sum, max) = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .fold((0u64, 0u8), |(sum, max), (&x, &y)| {
            let d = x.abs_diff(y);
            (sum + u64::from(d), max.max(d))
        });
    (sum as f64 / a.as_raw().len() as f64, max)
}

#[test]
fn chips_match_dlib() {
    let predictor = load_predictor();
    let mut worst_mean = (0.0, String::new());
    let mut worst_max = (0u8, String::new());
    let (mut chips, mut exact, mut seconds) = (0usize, 0usize, 0.0);
    // Chips more than twice smaller than their face go through dlib's image pyramid.
    let mut pyramid_chips = 0;
    let mut failures = Vec::new();
    for case in common::reference_cases() {
        let image = case.decoded();
        let detectors = [Some(&case.reference.hog), case.reference.cnn.as_ref()];
        for (detector, faces) in ["hog", "cnn"].iter().zip(detectors) {
            let Some(faces) = faces else { continue };
            for (i, face) in faces.faces.iter().enumerate() {
                let landmarks = predictor.predict(&image, Rect::from(face.rect));
                let details = get_face_chip_details(&landmarks, CHIP_SIZE, FACE_CHIP_PADDING);
                let side = details.rect.right - details.rect.left + 1.0;
                pyramid_chips += usize::from(side / 2.0 > f64::from(CHIP_SIZE));
                let start = std::time::Instant::now();
                let chip = face_chip(&image, &landmarks);
                seconds += start.elapsed().as_secs_f64();
                let expected = case.chip(detector, i);
                // dlib's own landmarks isolate the alignment from the landmark predictor.
                let reference_landmarks: [Point; 5] =
                    std::array::from_fn(|k| Point::from(face.landmarks5[k]));
                let from_reference = face_chip(&image, &reference_landmarks);
                let (mean, max) = difference(&chip, &expected);
                let (reference_mean, reference_max) = difference(&from_reference, &expected);
                if reference_mean > 0.5 || reference_max > 2 {
                    failures.push(format!(
                        "{} {detector} face {i} from dlib's landmarks: mean {reference_mean:.4}, max {reference_max}",
                        case.name
                    ));
                }
                let name = format!("{} {detector} face {i}", case.name);
                chips += 1;
                exact += usize::from(max == 0);
                if mean > worst_mean.0 {
                    worst_mean = (mean, name.clone());
                }
                if max > worst_max.0 {
                    worst_max = (max, name.clone());
                }
                if mean > 0.5 || max > 2 {
                    failures.push(format!("{name}: mean {mean:.4}, max {max}"));
                }
            }
        }
    }
    println!(
        "{chips} chips ({pyramid_chips} through the pyramid), {exact} identical; worst mean {:.4} ({}), worst max {} ({}); {:.3} ms per chip",
        worst_mean.0,
        worst_mean.1,
        worst_max.0,
        worst_max.1,
        1e3 * seconds / chips.max(1) as f64
    );
    assert!(chips > 0);
    assert!(
        failures.is_empty(),
        "chips differ from dlib's: {failures:#?}"
    );
}

#[test]
fn chip_details_follow_the_landmarks() {
    // An upright face: the chip is axis-aligned, centred between eyes and nose, and scaled so
    // that the eye corners land where dlib's mean face has them.
    let landmarks = [
        Point { x: 186, y: 121 },
        Point { x: 143, y: 124 },
        Point { x: 38, y: 121 },
        Point { x: 81, y: 124 },
        Point { x: 112, y: 204 },
    ];
    let details = get_face_chip_details(&landmarks, CHIP_SIZE, FACE_CHIP_PADDING);
    assert_eq!((details.rows, details.cols), (150, 150));
    assert!(details.angle.abs() < 0.01, "angle {}", details.angle);
    let width = details.rect.right - details.rect.left + 1.0;
    let height = details.rect.bottom - details.rect.top + 1.0;
    assert!((width - height).abs() < 1e-9);
    // The outer eye corners are 148 px apart in the image and 0.739 * 150 / 1.5 in the chip.
    let expected = 148.0 / (0.7389923975203 / 1.5);
    assert!(
        (width - expected).abs() / expected < 0.01,
        "width {width}, expected {expected}"
    );
}

#[test]
fn synthetic_chips_match_dlib() {
    // A textured 300x200 image and faces chosen to exercise rotation, upsampling, the image
    // pyramid and the black outside of the image. The expected chips are what dlib 20.0.1's
    // `get_face_chip(img, shape, 150, 0.25)` returned for them.
    let image = image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([
            ((x * 7 + y * 3) % 256) as u8,
            ((x * y) % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let cases: [(&str, [[i64; 2]; 5]); 3] = [
        (
            "corner",
            [[182, 33], [104, -2], [-77, -108], [-5, -62], [-27, 108]],
        ),
        (
            "small",
            [[162, 89], [154, 92], [133, 97], [142, 95], [152, 109]],
        ),
        (
            "upright",
            [[203, 68], [178, 69], [114, 68], [140, 69], [159, 117]],
        ),
    ];
    let dir = common::crate_dir().join("tests/fixtures/synthetic");
    for (name, points) in cases {
        let expected = image::open(dir.join(format!("chip_{name}.png")))
            .expect("synthetic chip fixture")
            .to_rgb8();
        let chip = face_chip(&image, &points.map(Point::from));
        let (mean, max) = difference(&chip, &expected);
        println!("synthetic {name}: mean {mean:.4}, max {max}");
        assert!(mean <= 0.5 && max <= 2, "{name}: mean {mean:.4}, max {max}");
    }
}
