//! Speed of the whole pipeline per photo (decode, detect, landmarks, chips, encodings), for
//! both detectors, on 1200x900 WebP photos like the ones concrexit sends.
//!
//! Run with `cargo bench --bench pipeline [-- PHOTO...]` (add `--profile dev` to reuse the
//! optimised dev build). Without arguments it uses the committed album-size fixtures
//! (tests/fixtures/pkg/images/large/*.webp). It prints one `RESULT` line per detector and
//! photo, which benches/reference_pipeline.py reads to put the numbers beside the original
//! Python pipeline's. `BENCH_RUNS` (default 3) sets the runs per photo; the median is kept.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use concrexit_facedetection::decode::{DecodeLimits, open_image};
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;

fn photos() -> Vec<PathBuf> {
    let given: Vec<PathBuf> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .map(PathBuf::from)
        .collect();
    if !given.is_empty() {
        return given;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pkg/images/large");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixtures")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    photos.sort();
    photos
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3);
    let detectors: Vec<Detector> = match std::env::var("BENCH_DETECTORS").as_deref() {
        Ok("hog") => vec![Detector::Hog],
        Ok("cnn") => vec![Detector::Cnn],
        _ => vec![Detector::Hog, Detector::Cnn],
    };
    let weights =
        WeightsLocation::Directory(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights"));
    let pipeline = FacePipeline::load(&weights, &Device::Cpu).expect("models");
    let photos = photos();
    for detector in detectors {
        let options = EncodeOptions {
            detector,
            ..EncodeOptions::default()
        };
        for photo in &photos {
            let mut times = Vec::with_capacity(runs);
            let mut faces = 0;
            for _ in 0..runs.max(1) {
                let start = Instant::now();
                let image = open_image(photo, &DecodeLimits::default()).expect("photo");
                faces = pipeline.encode(&image, &options).expect("encode").len();
                times.push(start.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            println!(
                "RESULT detector={} photo={} faces={faces} seconds={:.4}",
                format!("{detector:?}").to_lowercase(),
                photo.display(),
                times[times.len() / 2]
            );
        }
    }
}
