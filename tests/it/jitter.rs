//! face_recognition's `num_jitters` against dlib (tests/fixtures/pkg/make_jitters.py): the
//! jittered chips are dlib's `jitter_image` pixel for pixel, drawn from dlib's generator in
//! dlib's order, and the jittered encodings are face_recognition's within the embedder's
//! tolerance, including a second call that continues the generator.

use candle_core::Device;
use concrexit_facedetection::face::jitter::{DlibRand, jitter_chip};
use concrexit_facedetection::pipeline::{EncodeOptions, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;
use image::RgbImage;
use serde::Deserialize;

use crate::common;

/// Encodings this far from dlib's in any number fail: the embedder's own tolerance.
const TOLERANCE: f32 = 1e-5;

#[derive(Deserialize)]
struct Jitters {
    calls: Vec<Call>,
}

#[derive(Deserialize)]
struct Call {
    num_jitters: u32,
    encodings: Vec<Vec<f32>>,
}

fn case_file(name: &str) -> std::path::PathBuf {
    common::crate_dir()
        .join("tests/fixtures/pkg/orig/obama")
        .join(name)
}

fn rgb(name: &str) -> RgbImage {
    image::open(case_file(name)).expect(name).to_rgb8()
}

#[test]
fn jittered_chips_are_dlibs() {
    let chip = rgb("chip_hog_0.png");
    let strip = rgb("jitter_strip.png");
    assert_eq!(strip.height() % chip.height(), 0);
    let mut rng = DlibRand::new();
    for k in 0..strip.height() / chip.height() {
        let dlib =
            image::imageops::crop_imm(&strip, 0, k * chip.height(), chip.width(), chip.height())
                .to_image();
        let ours = jitter_chip(&chip, &mut rng);
        let wrong = ours
            .pixels()
            .zip(dlib.pixels())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(
            wrong, 0,
            "jittered chip {k}: {wrong} pixels differ from dlib's"
        );
    }
}

#[test]
fn jittered_encodings_are_face_recognitions() {
    let expected: Jitters = serde_json::from_str(
        &std::fs::read_to_string(case_file("jitters.json")).expect("jitters.json"),
    )
    .expect("jitters.json parses");
    let weights = WeightsLocation::Directory(common::weights_dir());
    let pipeline = FacePipeline::load(&weights, &Device::Cpu).expect("pipeline");
    let image = rgb("decoded.png");
    let faces = pipeline
        .encode(&image, &EncodeOptions::default())
        .expect("encode");
    let rects: Vec<_> = faces.iter().map(|face| face.rect).collect();
    let (_, chips) = pipeline.align(&image, &rects);
    // One generator for both calls, as face_recognition's encoder keeps its own.
    let mut rng = DlibRand::new();
    let mut worst: f32 = 0.0;
    for call in &expected.calls {
        let ours = pipeline
            .embed_chips_jittered(&chips, call.num_jitters, &mut rng)
            .expect("embed");
        assert_eq!(ours.len(), call.encodings.len());
        for (a, b) in ours.iter().zip(&call.encodings) {
            let far = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                far < TOLERANCE,
                "num_jitters={}: {far} from dlib",
                call.num_jitters
            );
            worst = worst.max(far);
        }
    }
    println!("jittered encodings within {worst:e} of face_recognition's");
}
