//! The 5-point shape predictor against dlib: landmarks from the reference detections on the
//! decoded photos, and the converter's handling of dlib's model file (the 68-point model's
//! are in `landmarks68`).

use crate::common;

use candle_core::{DType, Device};
use concrexit_facedetection::convert::convert_bytes;
use concrexit_facedetection::face::landmarks::ShapePredictor;
use concrexit_facedetection::geometry::{Point, Rect};
use concrexit_facedetection::weights::Model;

fn load_predictor() -> ShapePredictor {
    let path = common::weights_dir().join("shape_predictor_5_face_landmarks.safetensors");
    ShapePredictor::from_file(&path, &Device::Cpu).expect("shape predictor")
}

#[test]
fn landmarks_match_dlib() {
    let predictor = load_predictor();
    let (mut points, mut flips, mut faces) = (0usize, Vec::new(), 0usize);
    let mut seconds = 0.0;
    for case in common::reference_cases() {
        let image = case.decoded();
        let detectors = [Some(&case.reference.hog), case.reference.cnn.as_ref()];
        for (detector, faces_of) in ["hog", "cnn"].iter().zip(detectors) {
            let Some(faces_of) = faces_of else { continue };
            let rects: Vec<Rect> = faces_of.faces.iter().map(|f| Rect::from(f.rect)).collect();
            let start = std::time::Instant::now();
            let predicted = predictor.predict_batch(&image, &rects);
            seconds += start.elapsed().as_secs_f64();
            for (i, (face, ours)) in faces_of.faces.iter().zip(&predicted).enumerate() {
                faces += 1;
                for (k, (&expected, &got)) in face.landmarks5.iter().zip(ours).enumerate() {
                    points += 1;
                    let expected = Point::from(expected);
                    if expected != got {
                        let distance = (expected.x - got.x).abs().max((expected.y - got.y).abs());
                        flips.push(distance);
                        println!(
                            "{} {detector} face {i} point {k}: dlib {expected:?}, ours {got:?}",
                            case.name
                        );
                    }
                }
            }
        }
    }
    println!(
        "{faces} faces, {points} points: {} differ (largest {} px); {:.3} ms per face",
        flips.len(),
        flips.iter().max().copied().unwrap_or(0),
        1e3 * seconds / faces.max(1) as f64
    );
    assert!(faces > 0);
    assert!(
        flips.iter().all(|&d| d <= 1),
        "a landmark is more than 1 px off"
    );
    assert!(
        flips.len() <= 3,
        "{} landmarks differ by a rounding flip",
        flips.len()
    );
}

#[test]
fn committed_weights_are_the_converted_model() {
    let Some(path) = common::dlib_model_file("shape_predictor_5_face_landmarks.dat") else {
        return;
    };
    let bytes = std::fs::read(path).unwrap();
    let (kind, tensors) = convert_bytes(&bytes).expect("the 5-point model converts");
    assert_eq!(kind, "dlib shape predictor");
    let committed = candle_core::safetensors::load(
        common::weights_dir().join("shape_predictor_5_face_landmarks.safetensors"),
        &Device::Cpu,
    )
    .expect("committed weights");
    assert_eq!(tensors.len(), committed.len());
    for (name, tensor) in &tensors {
        let other = &committed[name];
        assert_eq!(tensor.dims(), other.dims(), "{name}");
        assert_eq!(tensor.dtype(), other.dtype(), "{name}");
        let difference = (tensor.to_dtype(DType::F64).unwrap()
            - other.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
        assert_eq!(difference, 0.0, "{name}");
    }
    // 15 cascade levels of 500 depth-4 trees over 800 feature pixels.
    assert_eq!(committed["cascade.0.leaf_values"].dims(), &[500, 16, 10]);
    assert_eq!(committed["cascade.0.deltas"].dims(), &[800, 2]);
    assert!(committed.contains_key("cascade.14.deltas"));
    assert!(!committed.contains_key("cascade.15.deltas"));
}

#[test]
fn detections_past_the_image_border_match_dlib() {
    // Feature pixels outside the image read as zero. Expected points: dlib 20.0.1's
    // `shape_predictor_5_face_landmarks` on the same synthetic image and rectangles.
    let predictor = load_predictor();
    let image = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([(x * 3 % 256) as u8, (y * 5 % 256) as u8, 90])
    });
    let cases: [(Rect, [[i64; 2]; 5]); 4] = [
        (
            Rect::new(-40, -30, 20, 25),
            [[14, -1], [5, -3], [-19, -10], [-9, -8], [-5, 13]],
        ),
        (
            Rect::new(50, 40, 120, 110),
            [[104, 69], [94, 68], [70, 64], [80, 65], [82, 87]],
        ),
        (
            Rect::new(1000, 1000, 1100, 1100),
            [
                [1075, 1037],
                [1060, 1038],
                [1024, 1037],
                [1040, 1038],
                [1050, 1068],
            ],
        ),
        (Rect::new(5, 5, 5, 5), [[5, 5]; 5]),
    ];
    let rects: Vec<Rect> = cases.iter().map(|(rect, _)| *rect).collect();
    let batch = predictor.predict_batch(&image, &rects);
    for ((rect, expected), got) in cases.iter().zip(&batch) {
        assert_eq!(got.map(<[i64; 2]>::from), *expected, "{rect:?}");
        assert_eq!(*got, predictor.predict(&image, *rect));
    }
}
