//! The face embedder against dlib: every chip made by dlib's `get_face_chip` must give the
//! descriptor dlib's `compute_face_descriptor` gave for it, within 1e-4 in every component.

use crate::common;

use candle_core::Device;
use concrexit_facedetection::face::embedder::FaceEmbedder;
use concrexit_facedetection::weights::Model;

const TOLERANCE: f32 = 1e-4;

fn embedder() -> FaceEmbedder {
    let path = common::weights_dir().join("dlib_face_recognition_resnet_model_v1.safetensors");
    FaceEmbedder::from_file(&path, &Device::Cpu).expect("embedder weights")
}

/// Every reference chip with its expected descriptor, named `case/detector_index`.
fn reference_chips() -> Vec<(String, image::RgbImage, Vec<f32>)> {
    let mut chips = Vec::new();
    for case in common::reference_cases() {
        let detectors = [
            ("hog", Some(&case.reference.hog)),
            ("cnn", case.reference.cnn.as_ref()),
        ];
        for (detector, faces) in detectors {
            let Some(faces) = faces else { continue };
            for (index, face) in faces.faces.iter().enumerate() {
                chips.push((
                    format!("{}/{detector}_{index}", case.name),
                    case.chip(detector, index),
                    face.descriptor_from_chip.clone(),
                ));
            }
        }
    }
    assert!(!chips.is_empty(), "no reference chips");
    chips
}

#[test]
fn descriptors_of_dlib_chips_match_dlib() {
    let embedder = embedder();
    let chips = reference_chips();
    let mut worst = (0f32, String::new());
    // Batches of up to 16, as dlib's face_recognition runs them.
    for batch in chips.chunks(16) {
        let images: Vec<_> = batch.iter().map(|(_, chip, _)| chip.clone()).collect();
        let descriptors = embedder.embed(&images).expect("embedding");
        for ((name, _, expected), actual) in batch.iter().zip(&descriptors) {
            assert_eq!(expected.len(), actual.len(), "{name}");
            let error = expected
                .iter()
                .zip(actual)
                .map(|(e, a)| (e - a).abs())
                .fold(0f32, f32::max);
            if error > worst.0 {
                worst = (error, name.clone());
            }
            assert!(error <= TOLERANCE, "{name}: max abs error {error}");
        }
    }
    println!(
        "{} chips: max abs error {:e} ({})",
        chips.len(),
        worst.0,
        worst.1
    );
}

#[test]
fn a_single_chip_gives_the_same_descriptor_as_in_a_batch() {
    let embedder = embedder();
    let chips: Vec<_> = reference_chips().into_iter().take(3).collect();
    let images: Vec<_> = chips.iter().map(|(_, chip, _)| chip.clone()).collect();
    let batch = embedder.embed(&images).expect("batch");
    for (image, from_batch) in images.iter().zip(&batch) {
        let single = embedder.embed(std::slice::from_ref(image)).expect("single");
        let error = single[0]
            .iter()
            .zip(from_batch)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(error <= 1e-6, "batch and single differ by {error}");
    }
}

#[test]
fn chips_of_the_wrong_size_are_rejected() {
    let embedder = embedder();
    let chip = image::RgbImage::new(100, 150);
    assert!(embedder.embed(&[chip]).is_err());
}

#[test]
fn the_module_forward_on_planar_input_matches_embed() {
    use candle_core::Module;

    let embedder = embedder();
    let chips: Vec<_> = reference_chips().into_iter().take(6).collect();
    let images: Vec<_> = chips.iter().map(|(_, chip, _)| chip.clone()).collect();
    let input = embedder.input_tensor(&images).expect("input");
    assert_eq!(input.dims(), [6, 3, 150, 150]);
    let output = embedder.forward(&input).expect("forward");
    assert_eq!(output.dims(), [6, 128]);
    let rows = output.to_vec2::<f32>().expect("rows");
    for ((name, _, expected), actual) in chips.iter().zip(&rows) {
        let error = expected
            .iter()
            .zip(actual)
            .map(|(e, a)| (e - a).abs())
            .fold(0f32, f32::max);
        assert!(error <= TOLERANCE, "{name}: max abs error {error}");
    }
}
