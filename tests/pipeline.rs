//! End to end against the original pipeline: `face_recognition.face_encodings(image)`.

mod common;

use candle_core::Device;
use concrexit_facedetection::decode::{DecodeLimits, open_image};
use concrexit_facedetection::geometry::Rect;
use concrexit_facedetection::pipeline::{EncodeOptions, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;

fn pipeline() -> FacePipeline {
    FacePipeline::load(
        &WeightsLocation::Directory(common::weights_dir()),
        &Device::Cpu,
    )
    .unwrap()
}

#[test]
fn encodings_from_reference_rects_match_dlib() {
    let pipeline = pipeline();
    let mut worst = 0f32;
    let mut faces = 0;
    for case in common::reference_cases() {
        let image = case.decoded();
        let reference = &case.reference.hog.faces;
        let rects: Vec<Rect> = reference.iter().map(|face| face.rect.into()).collect();
        let ours = pipeline.encode_at(&image, &rects).unwrap();
        for (index, (face, expected)) in ours.iter().zip(reference).enumerate() {
            let distance = common::euclidean(&face.encoding, &expected.descriptor);
            assert!(
                distance <= 1e-3,
                "{} face {index}: distance {distance} to dlib's descriptor",
                case.name
            );
            worst = worst.max(distance);
            faces += 1;
        }
    }
    println!("{faces} faces, largest distance to dlib's descriptor: {worst:e}");
}

#[test]
fn default_encode_on_decoded_pixels_matches_face_encodings() {
    let pipeline = pipeline();
    let mut worst = 0f32;
    for case in common::reference_cases() {
        let faces = pipeline
            .encode(&case.decoded(), &EncodeOptions::default())
            .unwrap();
        let expected = &case.reference.seed_encodings;
        assert_eq!(
            faces.len(),
            expected.len(),
            "{}: number of faces",
            case.name
        );
        for (index, (face, expected)) in faces.iter().zip(expected).enumerate() {
            let distance = common::euclidean(&face.encoding, expected);
            assert!(
                distance <= 1e-3,
                "{} face {index}: distance {distance}",
                case.name
            );
            worst = worst.max(distance);
        }
    }
    println!("largest distance to face_encodings: {worst:e}");
}

#[test]
fn default_encode_on_encoded_files_matches_face_encodings() {
    let pipeline = pipeline();
    let (mut faces, mut close) = (0, 0);
    for case in common::reference_cases() {
        let Some(source) = case.source_image() else {
            continue;
        };
        let image = open_image(&source, &DecodeLimits::default()).unwrap();
        let ours = pipeline.encode(&image, &EncodeOptions::default()).unwrap();
        let expected = &case.reference.seed_encodings;
        assert_eq!(ours.len(), expected.len(), "{}: number of faces", case.name);
        for (face, expected) in ours.iter().zip(expected) {
            faces += 1;
            if common::euclidean(&face.encoding, expected) <= 0.01 {
                close += 1;
            }
        }
    }
    println!("{close} of {faces} faces within 0.01 of face_encodings");
    assert!(close as f64 >= 0.99 * faces as f64, "{close} of {faces}");
}
