//! The host's share of a photo when the models run on a GPU, measured on the CPU: what the
//! CNN path at upsample 1 does around the device for each 1200x900 album photo (decoding, the
//! upsampling, the 8-bit photo's bytes made ready for the copy to the device, and after
//! detection the landmarks and aligned chips).
//!
//! ```sh
//! cargo bench --bench host -- [--rounds 5]
//! ```
//!
//! Runs the committed 1200x900 WebP fixtures `--rounds` times on one thread (the work of one
//! photo is what one of a GPU machine's cores does for it) and prints one line per stage and a
//! total, in CPU milliseconds per photo:
//!
//! ```text
//! HOST stage=decode cpu_ms_per_photo=14.1
//! HOST stage=total cpu_ms_per_photo=41.0 photos_per_second_on_16_cores=390
//! ```
//!
//! The detector's rectangles come from one untimed CNN run per photo. A GPU's 300 photos/s on
//! 16 cores leaves the host at most about 50 ms of CPU per photo.

use std::path::PathBuf;

use candle_core::Device;
use concrexit_facedetection::decode::{DecodeLimits, decode_image};
use concrexit_facedetection::detect::pyramid;
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;

mod support;
use support::process_cpu_seconds;

/// Cores of the GPU machine the total is scaled to.
const CORES: f64 = 16.0;

fn main() {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            rounds = args
                .next()
                .and_then(|v| v.parse().ok())
                .expect("--rounds needs a number");
        }
    }
    // One thread: each stage's CPU time is one core's.
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global()
        .expect("one thread");
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let weights = WeightsLocation::Directory(crate_dir.join("weights"));
    let pipeline = FacePipeline::load(&weights, &Device::Cpu).expect("models");
    let limits = DecodeLimits::default();
    let mut photos: Vec<PathBuf> =
        std::fs::read_dir(crate_dir.join("tests/fixtures/pkg/images/large"))
            .expect("fixtures")
            .flatten()
            .map(|entry| entry.path())
            .collect();
    photos.sort();
    let files: Vec<Vec<u8>> = photos
        .iter()
        .map(|p| std::fs::read(p).expect("photo"))
        .collect();
    let options = EncodeOptions {
        detector: Detector::Cnn,
        upsample: 1,
        jitters: 1,
    };
    let rects: Vec<Vec<_>> = files
        .iter()
        .map(|bytes| {
            let image = decode_image(bytes, &limits).expect("decode");
            let faces = pipeline.detect(&image, &options).expect("detect");
            faces.into_iter().map(|(rect, _)| rect).collect()
        })
        .collect();

    let stages = ["decode", "upsample", "upload", "landmarks_and_chips"];
    let mut cpu = [0f64; 4];
    let mut count = 0usize;
    let mut bytes_kept = 0usize;
    for _ in 0..rounds {
        for (bytes, rects) in files.iter().zip(&rects) {
            let t0 = process_cpu_seconds();
            let image = decode_image(bytes, &limits).expect("decode");
            let t1 = process_cpu_seconds();
            let upsampled = pyramid::upsample(&image, options.upsample);
            let t2 = process_cpu_seconds();
            // What goes to the device: the upsampled photo's bytes.
            let raw = upsampled.into_raw();
            bytes_kept += raw.len();
            let t3 = process_cpu_seconds();
            let (_, chips) = pipeline.align(&image, rects);
            let t4 = process_cpu_seconds();
            std::hint::black_box(chips);
            for (total, (start, end)) in
                cpu.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3), (t3, t4)])
            {
                *total += end - start;
            }
            count += 1;
        }
    }
    for (stage, seconds) in stages.iter().zip(cpu) {
        println!(
            "HOST stage={stage} cpu_ms_per_photo={:.1}",
            seconds * 1000.0 / count as f64
        );
    }
    let total_ms = cpu.iter().sum::<f64>() * 1000.0 / count as f64;
    println!(
        "HOST stage=total cpu_ms_per_photo={total_ms:.1} photos_per_second_on_{CORES}_cores={:.0} upload_mb_per_photo={:.1}",
        CORES * 1000.0 / total_ms,
        bytes_kept as f64 / count as f64 / 1e6
    );
}
