//! Grey images, as face_recognition's `load_image_file(path, mode="L")` gives them, against
//! dlib (tests/fixtures/pkg/make_grey.py): dlib's binding scans a grey image as grey, so its
//! pyramid is resized by dlib's grey `resize_image`, which rounds where the RGB one
//! truncates. The HOG rectangles must be dlib's, and the committed cases include photos where
//! scanning the RGB image of the same samples finds other rectangles.

use std::path::{Path, PathBuf};

use candle_core::Device;
use concrexit_facedetection::detect::hog::HogDetector;
use concrexit_facedetection::detect::pyramid::PyramidImage;
use concrexit_facedetection::geometry::Rect;
use concrexit_facedetection::weights::Model;
use image::{GrayImage, RgbImage};
use serde::Deserialize;

use crate::common;

#[derive(Deserialize)]
struct Expected {
    width: u32,
    height: u32,
    hog: Vec<HogRun>,
    resize: Vec<Resize>,
}

#[derive(Deserialize)]
struct HogRun {
    upsample: u32,
    rects: Vec<[i64; 4]>,
}

#[derive(Deserialize)]
struct Resize {
    crop: [u32; 4],
    width: u32,
    height: u32,
    png: String,
}

/// The committed cases: each folder under tests/fixtures/pkg/{orig,large,medium} with
/// `decoded.png` and `grey.json`.
fn cases() -> Vec<(PathBuf, Expected)> {
    let root = common::crate_dir().join("tests/fixtures/pkg");
    let mut cases = Vec::new();
    for set in ["orig", "large", "medium"] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(set))
            .expect("fixture folder")
            .flatten()
            .map(|entry| entry.path())
            .filter(|dir| dir.join("grey.json").is_file() && dir.join("decoded.png").is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            let text = std::fs::read_to_string(dir.join("grey.json")).expect("grey.json");
            let expected =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            cases.push((dir, expected));
        }
    }
    assert!(cases.len() >= 7, "the committed grey.json files");
    cases
}

/// PIL's `convert("L")` of an RGB image (ITU-R 601-2 luma in 16-bit fixed point), which
/// make_grey.py checks against PIL itself.
fn pil_grey(rgb: &RgbImage) -> GrayImage {
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0.map(u32::from);
        image::Luma([((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16) as u8])
    })
}

fn grey_of(dir: &Path) -> GrayImage {
    let rgb = image::open(dir.join("decoded.png"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .to_rgb8();
    pil_grey(&rgb)
}

fn detector() -> HogDetector {
    let path = common::weights_dir().join("frontal_face_detector.safetensors");
    HogDetector::from_file(&path, &Device::Cpu).expect("detector")
}

fn rects(found: &[(Rect, f64)]) -> Vec<[i64; 4]> {
    found
        .iter()
        .map(|(r, _)| [r.left, r.top, r.right, r.bottom])
        .collect()
}

#[test]
fn grey_hog_rectangles_are_dlibs() {
    let detector = detector();
    let (mut runs, mut rgb_differs) = (0, 0);
    for (dir, expected) in cases() {
        let grey = grey_of(&dir);
        assert_eq!(grey.dimensions(), (expected.width, expected.height));
        let rgb_of_grey = RgbImage::from_fn(grey.width(), grey.height(), |x, y| {
            image::Rgb([grey.get_pixel(x, y).0[0]; 3])
        });
        for run in &expected.hog {
            let found = detector.detect(&grey, run.upsample).expect("detect");
            assert_eq!(
                rects(&found),
                run.rects,
                "{} at upsample {}",
                dir.display(),
                run.upsample
            );
            let as_rgb = detector.detect(&rgb_of_grey, run.upsample).expect("detect");
            rgb_differs += usize::from(rects(&as_rgb) != run.rects);
            runs += 1;
        }
    }
    println!("{runs} runs identical; the RGB image of the samples differs in {rgb_differs}");
    // The cases must tell the grey resize from the RGB one.
    assert!(
        rgb_differs >= 3,
        "only {rgb_differs} runs tell grey from RGB"
    );
}

#[test]
fn grey_resizes_are_dlibs_pixel_for_pixel() {
    let (mut sizes, mut rgb_differs) = (0, 0);
    for (dir, expected) in cases() {
        if expected.resize.is_empty() {
            continue;
        }
        let grey = grey_of(&dir);
        for resize in &expected.resize {
            let [left, top, width, height] = resize.crop;
            let crop = image::imageops::crop_imm(&grey, left, top, width, height).to_image();
            let dlib = image::open(dir.join(&resize.png))
                .expect("resize png")
                .to_luma8();
            let ours = crop.resize_bilinear(resize.width, resize.height);
            let wrong = ours
                .pixels()
                .zip(dlib.pixels())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(ours.dimensions(), dlib.dimensions());
            assert_eq!(wrong, 0, "{} {}: pixels differ", dir.display(), resize.png);
            let rgb_crop = RgbImage::from_fn(width, height, |x, y| {
                image::Rgb([crop.get_pixel(x, y).0[0]; 3])
            });
            let as_rgb = rgb_crop.resize_bilinear(resize.width, resize.height);
            rgb_differs += usize::from(
                as_rgb
                    .pixels()
                    .zip(dlib.pixels())
                    .any(|(a, b)| a.0[0] != b.0[0]),
            );
            sizes += 1;
        }
    }
    assert!(sizes >= 12, "the committed resizes");
    assert!(
        rgb_differs >= sizes / 2,
        "the RGB resize differs on only {rgb_differs} of {sizes}"
    );
}
