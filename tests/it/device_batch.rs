//! The pipeline batched across photos (backfill::device_batch) against the per-photo pipeline:
//! the same rectangles and scores, encodings within 1e-5 on the CPU, whatever the grouping of
//! photos into batches; and on a CUDA device (when there is one) against the CPU within 1e-4.

use crate::common;

use std::sync::Arc;

use candle_core::Device;
use concrexit_facedetection::backfill::device_batch::{BatchSizes, DeviceBatcher};
use concrexit_facedetection::decode::{DecodeLimits, open_image};
use concrexit_facedetection::pipeline::{Detector, EncodeOptions, Face, FacePipeline};
use concrexit_facedetection::weights::WeightsLocation;
use image::RgbImage;

fn pipeline(device: &Device) -> Arc<FacePipeline> {
    let weights = WeightsLocation::parse(&common::weights_dir().to_string_lossy()).unwrap();
    Arc::new(FacePipeline::load(&weights, device).unwrap())
}

/// The committed 1200x900 album photos (all one size, so CNN batches really form), and a
/// 600x600 one of another size.
fn photos() -> Vec<(String, RgbImage)> {
    let limits = DecodeLimits::default();
    let dir = common::crate_dir().join("tests/fixtures/pkg/images");
    [
        "large/t1.webp",
        "large/obama.webp",
        "large/biden.webp",
        "large/obama2.webp",
        "medium/astronaut.webp",
    ]
    .iter()
    .map(|name| {
        (
            name.to_string(),
            open_image(&dir.join(name), &limits).unwrap(),
        )
    })
    .collect()
}

/// Every photo through the batcher from its own thread at once, so that they meet in batches.
fn batched(batcher: &DeviceBatcher, photos: &[(String, RgbImage)]) -> Vec<Vec<Face>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = photos
            .iter()
            .map(|(_, image)| scope.spawn(|| batcher.encode(image).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Same rectangles, landmarks and scores; returns the largest encoding difference.
fn compare(name: &str, got: &[Face], want: &[Face], score_tolerance: f64) -> f32 {
    assert_eq!(
        got.iter().map(|f| f.rect).collect::<Vec<_>>(),
        want.iter().map(|f| f.rect).collect::<Vec<_>>(),
        "{name}: rectangles"
    );
    let mut worst = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.landmarks, w.landmarks, "{name}: landmarks");
        let (gs, ws) = (g.score.unwrap(), w.score.unwrap());
        assert!(
            (gs - ws).abs() <= score_tolerance,
            "{name}: score {gs} vs {ws}"
        );
        for (a, b) in g.encoding.iter().zip(&w.encoding) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

fn check_cpu(detector: Detector, upsample: u32, sizes: BatchSizes) {
    let pipeline = pipeline(&Device::Cpu);
    let photos = photos();
    let options = EncodeOptions {
        detector,
        upsample,
        jitters: 1,
    };
    let per_photo: Vec<Vec<Face>> = photos
        .iter()
        .map(|(_, image)| pipeline.encode(image, &options).unwrap())
        .collect();
    assert!(
        per_photo.iter().map(Vec::len).sum::<usize>() >= 5,
        "too few faces to compare"
    );
    let batcher = DeviceBatcher::new(Arc::clone(&pipeline), detector, upsample, sizes).unwrap();
    let got = batched(&batcher, &photos);
    let mut worst = 0f32;
    for (((name, _), got), want) in photos.iter().zip(&got).zip(&per_photo) {
        worst = worst.max(compare(name, got, want, 1e-5));
    }
    println!("{detector:?} upsample {upsample}: largest encoding difference {worst:.2e}");
    assert!(worst <= 1e-5, "largest encoding difference {worst}");
}

#[test]
fn batched_hog_equals_the_per_photo_pipeline_on_the_cpu() {
    check_cpu(
        Detector::Hog,
        1,
        BatchSizes {
            detect: 4,
            embed: 64,
        },
    );
}

#[test]
fn batched_cnn_equals_the_per_photo_pipeline_on_the_cpu() {
    // Upsample 0 keeps the batch of four 1200x900 photos within 1 GB on the CPU.
    check_cpu(
        Detector::Cnn,
        0,
        BatchSizes {
            detect: 4,
            embed: 7,
        },
    );
}

/// On a CUDA device the batched pipeline finds the CPU's rectangles with encodings within 1e-4.
#[test]
fn batched_pipeline_on_cuda_matches_the_cpu() {
    let device = match Device::new_cuda(0) {
        Ok(device) => device,
        Err(error) => {
            eprintln!("skipped: no CUDA device ({error})");
            return;
        }
    };
    let cpu = pipeline(&Device::Cpu);
    let gpu = pipeline(&device);
    let photos = photos();
    for (detector, upsample) in [(Detector::Hog, 1), (Detector::Cnn, 1)] {
        let options = EncodeOptions {
            detector,
            upsample,
            jitters: 1,
        };
        let batcher = DeviceBatcher::new(
            Arc::clone(&gpu),
            detector,
            upsample,
            BatchSizes::for_device(&device),
        )
        .unwrap();
        let got = batched(&batcher, &photos);
        let mut worst = 0f32;
        for ((name, image), got) in photos.iter().zip(&got) {
            let want = cpu.encode(image, &options).unwrap();
            worst = worst.max(compare(name, got, &want, 1e-3));
        }
        println!("CUDA {detector:?}: largest encoding difference {worst:.2e}");
        assert!(worst <= 1e-4, "largest encoding difference {worst}");
    }
}
