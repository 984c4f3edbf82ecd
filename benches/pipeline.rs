//! Speed of the whole pipeline (decode, detect, landmarks, chips, encodings) on photos in one
//! process, as `facedetect encode` runs it (each photo decoded while the one before it is
//! encoded), for either detector.
//!
//! ```sh
//! cargo bench --bench pipeline -- [--detector hog|cnn] [--upsample N] [--runs N] [PHOTO...]
//! ```
//!
//! Without photos it uses the committed album-size fixtures (tests/fixtures/pkg/images/large,
//! 1200x900 WebP as concrexit sends them). The models are loaded once; then every run encodes
//! every photo and prints one line
//!
//! ```text
//! RUN detector=hog photos=9 faces=8 wall_s=1.234 cpu_s=2.100
//! ```
//!
//! with the run's wall-clock time and the CPU time (user + system, all threads) the process
//! spent in it. benches/side_by_side.py runs this beside the original pipeline.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use concrexit_facedetection::decode::{DecodeLimits, open_image};
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;

mod support;
use support::process_cpu_seconds;

fn main() {
    // RUST_LOG=concrexit_facedetection::kernels=debug logs every convolution's time and speed.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut detector = Detector::Hog;
    let mut upsample = 1;
    let mut runs = 3;
    let mut photos: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value"))
        };
        match arg.as_str() {
            "--detector" => {
                detector = match value("--detector").as_str() {
                    "hog" => Detector::Hog,
                    "cnn" => Detector::Cnn,
                    other => panic!("unknown detector {other}"),
                }
            }
            "--upsample" => upsample = value("--upsample").parse().expect("--upsample N"),
            "--runs" => runs = value("--runs").parse().expect("--runs N"),
            // cargo bench passes --bench.
            flag if flag.starts_with("--") => {}
            photo => photos.push(PathBuf::from(photo)),
        }
    }
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    if photos.is_empty() {
        let dir = crate_dir.join("tests/fixtures/pkg/images/large");
        photos = std::fs::read_dir(dir)
            .expect("fixtures")
            .flatten()
            .map(|entry| entry.path())
            .collect();
        photos.sort();
    }
    let weights = WeightsLocation::Directory(crate_dir.join("weights"));
    let pipeline = FacePipeline::load(&weights, &Device::Cpu).expect("models");
    let options = EncodeOptions {
        detector,
        upsample,
        ..EncodeOptions::default()
    };
    let name = format!("{detector:?}").to_lowercase();
    for _ in 0..runs {
        let cpu = process_cpu_seconds();
        let start = Instant::now();
        let mut faces = 0;
        // As `facedetect encode` does: the next photo is decoded while this one is encoded.
        std::thread::scope(|scope| {
            let (decoded_sender, decoded) = std::sync::mpsc::sync_channel(1);
            let photos = &photos;
            scope.spawn(move || {
                for photo in photos {
                    let image = open_image(photo, &DecodeLimits::default()).expect("photo");
                    if decoded_sender.send(image).is_err() {
                        break;
                    }
                }
            });
            for image in decoded {
                faces += pipeline.encode(&image, &options).expect("encode").len();
            }
        });
        println!(
            "RUN detector={name} photos={} faces={faces} wall_s={:.4} cpu_s={:.3}",
            photos.len(),
            start.elapsed().as_secs_f64(),
            process_cpu_seconds() - cpu
        );
    }
}
