//! The pipeline batched across photos (pipeline::device_batch) against the per-photo pipeline:
//! the same rectangles and scores, encodings within 1e-5 on the CPU, whatever the grouping of
//! photos into batches; and on a CUDA device (when there is one) against the CPU within 1e-4.

use crate::common;

use std::sync::Arc;

use candle_core::Device;
use concrexit_facedetection::decode::{DecodeLimits, open_image};
use concrexit_facedetection::pipeline::device_batch::{BatchSizes, DeviceBatcher, cuda_device};
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
            device_memory_mb: None,
            in_flight: 8,
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
            device_memory_mb: None,
            in_flight: 8,
        },
    );
}

/// On a CUDA device the batched pipeline finds the CPU's rectangles with encodings within 1e-4.
#[test]
fn batched_pipeline_on_cuda_matches_the_cpu() {
    let device = match cuda_device(0) {
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

/// Marks the lines of faces that [`tensor_path_child`] prints.
const FACES_LINE: &str = "FACES ";

/// The 600x600 fixtures: one shape, so that they share passes.
fn same_shape_photos() -> Vec<(String, RgbImage)> {
    let limits = DecodeLimits::default();
    let dir = common::crate_dir().join("tests/fixtures/pkg/images/medium");
    ["obama.webp", "biden.webp", "t1.webp", "astronaut.webp"]
        .iter()
        .map(|name| {
            (
                name.to_string(),
                open_image(&dir.join(name), &limits).unwrap(),
            )
        })
        .collect()
}

/// The detectors and upsamplings the tensor path is checked at (the CNN at upsample 0 keeps
/// its CPU convolutions short).
const TENSOR_CASES: [(Detector, u32); 2] = [(Detector::Hog, 1), (Detector::Cnn, 0)];

/// Run by [`batched_tensor_path_equals_the_kernels`] in a child process with
/// `FACEDETECT_CPU_KERNELS=none`: the batched pipeline on the candle tensor path, the CNN's
/// photos in one pass, each photo's faces printed as a JSON line.
#[test]
#[ignore = "run in a child process by batched_tensor_path_equals_the_kernels"]
fn tensor_path_child() {
    assert!(
        !concrexit_facedetection::models_use_kernels(&Device::Cpu).unwrap(),
        "FACEDETECT_CPU_KERNELS=none must turn the kernels off"
    );
    let pipeline = pipeline(&Device::Cpu);
    let photos = same_shape_photos();
    let images: Vec<RgbImage> = photos.iter().map(|(_, image)| image.clone()).collect();
    // All four photos through the network in one pass, as on a GPU.
    let one_pass = pipeline.cnn().detect_batch(&images, 0).unwrap();
    for (name, detections) in photos.iter().map(|(name, _)| name).zip(&one_pass) {
        let rects: Vec<_> = detections
            .iter()
            .map(|(rect, score)| (rect, score))
            .collect();
        println!(
            "{FACES_LINE}{}",
            serde_json::json!({"case": "cnn-pass", "photo": name, "detections": rects})
        );
    }
    for (detector, upsample) in TENSOR_CASES {
        let sizes = BatchSizes {
            detect: 4,
            embed: 64,
            device_memory_mb: None,
            in_flight: 8,
        };
        let batcher = DeviceBatcher::new(Arc::clone(&pipeline), detector, upsample, sizes).unwrap();
        for ((name, _), faces) in photos.iter().zip(batched(&batcher, &photos)) {
            println!(
                "{FACES_LINE}{}",
                serde_json::json!({"case": format!("{detector:?}"), "photo": name, "faces": faces})
            );
        }
    }
}

/// The batched pipeline on the candle tensor path (the code a GPU runs, here on the CPU
/// device in a child process with `FACEDETECT_CPU_KERNELS=none`) against the per-photo
/// pipeline on the kernels: the same rectangles and landmarks, scores within 1e-4, encodings
/// within 1e-5; and the CNN's one pass over four photos finds each photo's faces.
#[test]
fn batched_tensor_path_equals_the_kernels() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "device_batch::tensor_path_child",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FACEDETECT_CPU_KERNELS", "none")
        .env("FACEDETECT_WEIGHTS", common::weights_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        // The harness may print the test's name on the same line as the first one.
        .filter_map(|line| line.split_once(FACES_LINE).map(|(_, json)| json))
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let kernels = pipeline(&Device::Cpu);
    let photos = same_shape_photos();
    let find = |case: &str, photo: &str| {
        lines
            .iter()
            .find(|line| line["case"] == case && line["photo"] == photo)
            .unwrap_or_else(|| panic!("the child printed no {case} line for {photo}"))
    };
    let mut faces_compared = 0;
    let mut worst = 0f64;
    for (name, image) in &photos {
        let detections = kernels.cnn().detect(image, 0).unwrap();
        let got = &find("cnn-pass", name)["detections"];
        let got = got.as_array().unwrap();
        assert_eq!(got.len(), detections.len(), "{name}: CNN faces in one pass");
        for (want, got) in detections.iter().zip(got) {
            assert_eq!(serde_json::json!(want.0), got[0], "{name}: CNN rectangle");
            let score = got[1].as_f64().unwrap();
            assert!(
                (score - f64::from(want.1)).abs() < 1e-4,
                "{name}: CNN score"
            );
        }
        for (detector, upsample) in TENSOR_CASES {
            let options = EncodeOptions {
                detector,
                upsample,
                jitters: 1,
            };
            let want = serde_json::json!(kernels.encode(image, &options).unwrap());
            let got = &find(&format!("{detector:?}"), name)["faces"];
            let (want, got) = (want.as_array().unwrap(), got.as_array().unwrap());
            assert_eq!(want.len(), got.len(), "{name} {detector:?}: faces");
            for (w, g) in want.iter().zip(got) {
                assert_eq!(w["rect"], g["rect"], "{name} {detector:?}: rectangle");
                assert_eq!(
                    w["landmarks"], g["landmarks"],
                    "{name} {detector:?}: landmarks"
                );
                let (ws, gs) = (w["score"].as_f64().unwrap(), g["score"].as_f64().unwrap());
                assert!(
                    (ws - gs).abs() < 1e-4,
                    "{name} {detector:?}: score {ws} vs {gs}"
                );
                let values = |face: &serde_json::Value| -> Vec<f64> {
                    face["encoding"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_f64().unwrap())
                        .collect()
                };
                for (a, b) in values(w).iter().zip(values(g)) {
                    worst = worst.max((a - b).abs());
                }
                faces_compared += 1;
            }
        }
    }
    println!("tensor path: {faces_compared} faces, largest encoding difference {worst:.2e}");
    assert!(
        faces_compared >= 4,
        "too few faces compared: {faces_compared}"
    );
    assert!(worst <= 1e-5, "largest encoding difference {worst}");
}
