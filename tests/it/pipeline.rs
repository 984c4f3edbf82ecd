//! End to end against the original pipeline: `face_recognition.face_encodings(image)`.

use crate::common;

use candle_core::Device;
use concrexit_facedetection::decode::{DecodeLimits, open_image};
use concrexit_facedetection::geometry::Rect;
use concrexit_facedetection::pipeline::per_photo::FACE_GROUP;
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, FacePipeline};
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
    assert!(faces > 0, "no face was compared");
}

/// A photo with more faces than one group ([`FACE_GROUP`]) is encoded group by group, each
/// face still dlib's: the reference faces of a case repeated across three groups.
#[test]
fn faces_beyond_one_group_are_encoded_as_dlib_encodes_them() {
    let pipeline = pipeline();
    let cases = common::reference_cases();
    let case = cases
        .iter()
        .find(|case| !case.reference.hog.faces.is_empty())
        .expect("a reference case with faces");
    let image = case.decoded();
    let reference = &case.reference.hog.faces;
    let rects: Vec<Rect> = reference.iter().map(|face| face.rect.into()).collect();
    let many: Vec<Rect> = rects
        .iter()
        .copied()
        .cycle()
        .take(2 * FACE_GROUP + 3)
        .collect();
    let alone = pipeline.encode_at(&image, &rects).unwrap();
    let grouped = pipeline.encode_at(&image, &many).unwrap();
    assert_eq!(grouped.len(), many.len());
    for (index, face) in grouped.iter().enumerate() {
        let expected = &reference[index % rects.len()].descriptor;
        let distance = common::euclidean(&face.encoding, expected);
        assert!(
            distance <= 1e-3,
            "{} face {index}: {distance} from dlib's",
            case.name
        );
        assert_eq!(
            face.encoding,
            alone[index % rects.len()].encoding,
            "face {index}"
        );
        assert_eq!(face.rect, many[index]);
    }
}

#[test]
fn default_encode_on_decoded_pixels_matches_face_encodings() {
    let pipeline = pipeline();
    let mut worst = 0f32;
    let mut compared = 0;
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
            compared += 1;
        }
    }
    println!("{compared} faces, largest distance to face_encodings: {worst:e}");
    assert!(compared > 0, "no face was compared");
}

/// The largest difference of one value allowed against `face_encodings` on the encoded photo:
/// decoding is bit-exact, so only float rounding in the network remains.
const SAME_NUMBERS: f32 = 1e-5;

#[test]
fn default_encode_on_encoded_files_matches_face_encodings() {
    let pipeline = pipeline();
    let (mut photos, mut faces, mut worst) = (0, 0, 0f32);
    for case in common::reference_cases() {
        let Some(source) = case.source_image() else {
            continue;
        };
        photos += 1;
        let image = open_image(&source, &DecodeLimits::default()).unwrap();
        let ours = pipeline.encode(&image, &EncodeOptions::default()).unwrap();
        let expected = &case.reference.seed_encodings;
        assert_eq!(ours.len(), expected.len(), "{}: number of faces", case.name);
        for (index, (face, expected)) in ours.iter().zip(expected).enumerate() {
            let diff = face
                .encoding
                .iter()
                .zip(expected)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                diff <= SAME_NUMBERS,
                "{} face {index}: largest difference {diff}",
                case.name
            );
            worst = worst.max(diff);
            faces += 1;
        }
    }
    println!("{photos} encoded photos, {faces} faces, largest difference {worst:e}");
    assert!(faces > 0, "no face was compared");
}

/// face_recognition's `num_jitters=10` on pkg/orig/t1, made with the reference environment as
/// a fresh process's first call:
/// `face_recognition.face_encodings(load_image_file("decoded.png"), num_jitters=10)`.
const JITTERED_REFERENCE: &str = "tests/fixtures/pkg/orig/t1/face_encodings_num_jitters_10.json";

/// Six faces jittered ten times each from one generator: dlib's draws, face after face.
#[test]
fn jittered_encodings_are_dlibs_jittered_encodings() {
    let pipeline = pipeline();
    let case = common::crate_dir().join("tests/fixtures/pkg/orig/t1");
    let image = image::open(case.join("decoded.png")).unwrap().to_rgb8();
    let dlib_jittered: Vec<Vec<f32>> = serde_json::from_str(
        &std::fs::read_to_string(common::crate_dir().join(JITTERED_REFERENCE)).unwrap(),
    )
    .unwrap();
    let options = EncodeOptions {
        jitters: 10,
        ..EncodeOptions::default()
    };
    let jittered = pipeline.encode(&image, &options).unwrap();
    let again = pipeline.encode(&image, &options).unwrap();
    assert_eq!(jittered.len(), dlib_jittered.len());
    let mut worst: f32 = 0.0;
    for (index, (ours, expected)) in jittered.iter().zip(&dlib_jittered).enumerate() {
        let far = ours
            .encoding
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(
            far < 1e-5,
            "face {index}: {far} from dlib's jittered encoding"
        );
        worst = worst.max(far);
    }
    println!(
        "{} faces within {worst:e} of dlib's jittered encodings",
        jittered.len()
    );
    assert_eq!(
        jittered.iter().map(|f| &f.encoding).collect::<Vec<_>>(),
        again.iter().map(|f| &f.encoding).collect::<Vec<_>>(),
        "every call starts from a fresh generator"
    );
}

#[test]
fn cnn_detector_encodes_the_faces_dlib_finds() {
    let pipeline = pipeline();
    let options = EncodeOptions {
        detector: Detector::Cnn,
        ..EncodeOptions::default()
    };
    let mut checked = 0;
    // The smaller photos keep this quick; tests/cnn.rs checks the detections on all of them.
    for case in common::reference_cases() {
        let Some(cnn) = &case.reference.cnn else {
            continue;
        };
        if case.reference.width * case.reference.height > 800_000 {
            continue;
        }
        let faces = pipeline.encode(&case.decoded(), &options).unwrap();
        assert_eq!(faces.len(), cnn.faces.len(), "{}", case.name);
        for (face, expected) in faces.iter().zip(&cnn.faces) {
            assert_eq!(<[i64; 4]>::from(face.rect), expected.rect, "{}", case.name);
            let distance = common::euclidean(&face.encoding, &expected.descriptor);
            assert!(distance <= 1e-3, "{}: {distance}", case.name);
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn degenerate_images_give_no_faces_or_a_clear_error() {
    let pipeline = pipeline();
    for detector in [Detector::Hog, Detector::Cnn] {
        let options = EncodeOptions {
            detector,
            ..EncodeOptions::default()
        };
        for (width, height) in [(1, 1), (3, 2), (50, 40), (640, 480)] {
            let black = image::RgbImage::new(width, height);
            let faces = pipeline.encode(&black, &options).unwrap();
            assert!(faces.is_empty(), "{detector:?} {width}x{height}");
        }
    }
    // The CNN detector refuses what it could not hold in memory, before allocating it.
    let huge = image::RgbImage::new(5000, 4000);
    let options = EncodeOptions {
        detector: Detector::Cnn,
        ..EncodeOptions::default()
    };
    let error = pipeline.encode(&huge, &options).unwrap_err().to_string();
    assert!(error.contains("megapixels"), "{error}");
}
