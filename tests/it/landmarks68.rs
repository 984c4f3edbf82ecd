//! dlib's 68-point shape predictor (face_recognition's default `large` landmark model) against
//! dlib: its points on the HOG detections of the committed photos, and the encodings
//! `face_recognition.face_encodings(img, model="large")` gives, whose chips are aligned by the
//! 68 points. The expected values are `landmarks68.json` beside each case's `decoded.png`
//! (tests/fixtures/pkg/make_landmarks68.py).
//!
//! The model is not committed: it is read from `shape_predictor_68_face_landmarks.dat` found
//! through `DLIB_MODELS_DIR` (see `common::dlib_model_file`; the tests skip without it, and fail
//! in CI), converted once into a cache under the target directory.
//!
//! `FACEDETECT_LANDMARKS68_CASES` (folders separated by `:`) adds the cases found in those
//! folders to the comparisons, to measure on photos that are not committed.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use concrexit_facedetection::convert::cache::{self, cached_shape_predictor};
use concrexit_facedetection::convert::convert_bytes;
use concrexit_facedetection::error::Error;
use concrexit_facedetection::face::alignment::face_chip;
use concrexit_facedetection::face::embedder::FaceEmbedder;
use concrexit_facedetection::face::landmarks::{Landmarks, ShapePredictor};
use concrexit_facedetection::geometry::{Point, Rect};
use concrexit_facedetection::weights::Model;
use serde::Deserialize;

const MODEL: &str = "shape_predictor_68_face_landmarks.dat";

/// How far an encoding may be from dlib's, in every component.
const SAME_NUMBERS: f32 = 1e-5;

#[derive(Deserialize)]
struct Expected {
    faces: Vec<ExpectedFace>,
    encodings: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct ExpectedFace {
    rect: [i64; 4],
    landmarks68: Vec<[i64; 2]>,
}

struct Case {
    name: String,
    dir: PathBuf,
    expected: Expected,
}

/// The cases under `root`: every folder below it (two levels deep at most) holding
/// `decoded.png` and `landmarks68.json`.
fn cases_under(root: &Path, depth: usize, cases: &mut Vec<Case>) {
    let json = root.join("landmarks68.json");
    if json.is_file() && root.join("decoded.png").is_file() {
        let text = std::fs::read_to_string(&json).expect("readable landmarks68.json");
        cases.push(Case {
            name: root.display().to_string(),
            dir: root.to_path_buf(),
            expected: serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", json.display())),
        });
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for dir in dirs.into_iter().filter(|d| d.is_dir() && depth > 0) {
        cases_under(&dir, depth - 1, cases);
    }
}

/// The committed cases, and those of `FACEDETECT_LANDMARKS68_CASES`.
fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases_under(
        &common::crate_dir().join("tests/fixtures/pkg"),
        2,
        &mut cases,
    );
    let committed = cases.len();
    assert!(committed >= 7, "the committed landmarks68.json files");
    if let Some(extra) = std::env::var_os("FACEDETECT_LANDMARKS68_CASES") {
        for root in std::env::split_paths(&extra) {
            cases_under(&root, 2, &mut cases);
        }
        println!(
            "{} cases from FACEDETECT_LANDMARKS68_CASES",
            cases.len() - committed
        );
    }
    cases
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("landmarks68-cache")
}

/// The 68-point predictor, converted into the test cache on first use; `None` (the test
/// skips) without dlib's model file.
fn predictor() -> Option<&'static ShapePredictor<68>> {
    static PREDICTOR: OnceLock<Option<ShapePredictor<68>>> = OnceLock::new();
    PREDICTOR
        .get_or_init(|| {
            let dat = common::dlib_model_file(MODEL)?;
            Some(
                cache::shape_predictor(&dat, Some(&cache_dir())).expect("the 68-point model loads"),
            )
        })
        .as_ref()
}

fn embedder() -> FaceEmbedder {
    let path = common::weights_dir().join("dlib_face_recognition_resnet_model_v1.safetensors");
    FaceEmbedder::from_file(&path, &Device::Cpu).expect("embedder weights")
}

fn decoded(case: &Case) -> image::RgbImage {
    image::open(case.dir.join("decoded.png"))
        .unwrap_or_else(|e| panic!("{}: {e}", case.name))
        .to_rgb8()
}

fn dlib_points(face: &ExpectedFace) -> Landmarks<68> {
    assert_eq!(face.landmarks68.len(), 68);
    std::array::from_fn(|k| Point::from(face.landmarks68[k]))
}

#[test]
fn points_match_dlib() {
    let Some(predictor) = predictor() else { return };
    let (mut faces, mut differing, mut largest) = (0usize, Vec::new(), 0i64);
    for case in cases() {
        let image = decoded(&case);
        for (i, face) in case.expected.faces.iter().enumerate() {
            faces += 1;
            let ours = predictor.predict(&image, Rect::from(face.rect));
            for (k, (expected, got)) in dlib_points(face).iter().zip(&ours).enumerate() {
                if expected != got {
                    let distance = (expected.x - got.x).abs().max((expected.y - got.y).abs());
                    largest = largest.max(distance);
                    differing.push(format!(
                        "{} face {i} point {k}: dlib {expected:?}, ours {got:?}",
                        case.name
                    ));
                }
            }
        }
    }
    println!(
        "{faces} faces, {} points: {} differ (largest {largest} px)",
        68 * faces,
        differing.len()
    );
    assert!(faces >= 10, "too few faces compared: {faces}");
    assert!(differing.is_empty(), "{differing:#?}");
}

#[test]
fn large_encodings_match_dlib() {
    let Some(predictor) = predictor() else { return };
    let embedder = embedder();
    let (mut faces, mut worst, mut worst_from_dlib_points) = (0usize, 0f32, 0f32);
    let mut failures = Vec::new();
    let max_difference = |a: &[f32], b: &[f32]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    for case in cases() {
        let image = decoded(&case);
        assert_eq!(case.expected.faces.len(), case.expected.encodings.len());
        for (i, (face, expected)) in case
            .expected
            .faces
            .iter()
            .zip(&case.expected.encodings)
            .enumerate()
        {
            faces += 1;
            let ours = predictor.predict(&image, Rect::from(face.rect));
            // dlib's own points isolate the alignment and the embedder from the predictor.
            let chips = [
                face_chip(&image, &ours),
                face_chip(&image, &dlib_points(face)),
            ];
            let encodings = embedder.embed(&chips).expect("embedding");
            let (error, from_dlib_points) = (
                max_difference(&encodings[0], expected),
                max_difference(&encodings[1], expected),
            );
            worst = worst.max(error);
            worst_from_dlib_points = worst_from_dlib_points.max(from_dlib_points);
            if error > SAME_NUMBERS || from_dlib_points > SAME_NUMBERS {
                failures.push(format!(
                    "{} face {i}: max abs difference {error:e} ({from_dlib_points:e} from dlib's points)",
                    case.name
                ));
            }
        }
    }
    println!(
        "{faces} faces: encodings within {worst:e} of dlib's ({worst_from_dlib_points:e} from dlib's points)"
    );
    assert!(faces >= 10, "too few faces compared: {faces}");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn converter_reads_the_68_point_model() {
    let Some(dat) = common::dlib_model_file(MODEL) else {
        return;
    };
    let bytes = std::fs::read(dat).unwrap();
    let (kind, tensors) = convert_bytes(&bytes).expect("the 68-point model converts");
    assert_eq!(kind, "dlib shape predictor");
    assert_eq!(tensors["initial_shape"].dims(), &[68, 2]);
    // 15 cascade levels of 500 depth-4 trees, 136 increments a leaf.
    assert_eq!(tensors["cascade.0.leaf_values"].dims(), &[500, 16, 136]);
    assert_eq!(tensors["cascade.0.split_threshold"].dims(), &[500, 15]);
    assert!(tensors.contains_key("cascade.14.deltas"));
    assert!(!tensors.contains_key("cascade.15.deltas"));
}

#[test]
fn copies_of_one_model_installed_at_different_times_share_one_converted_file() {
    let Some(dat) = common::dlib_model_file(MODEL) else {
        return;
    };
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("landmarks68-shared-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let cache = work.join("cache");
    // `bytes` as a model file in `venv`, installed `days` after the epoch.
    let install = |venv: &str, bytes: &[u8], days: u64| {
        let path = work.join(venv).join(MODEL);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(days * 86_400))
            .unwrap();
        path
    };
    // The model as two virtual environments hold it: the same file, installed a day apart.
    let mut bytes = std::fs::read(&dat).unwrap();
    let converted: Vec<PathBuf> = [("a", 1), ("b", 2)]
        .into_iter()
        .map(|(venv, days)| {
            cached_shape_predictor(&install(venv, &bytes, days), Some(&cache)).expect("converted")
        })
        .collect();
    assert_eq!(converted[0], converted[1]);
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // A file of the same name, size and modification time but other contents is not taken
    // for the model: its last byte changed, it is parsed again (and converted, or refused).
    *bytes.last_mut().unwrap() ^= 1;
    let changed = install("c", &bytes, 1);
    match cached_shape_predictor(&changed, Some(&cache)) {
        Ok(path) => assert_ne!(path, converted[0]),
        Err(error) => assert!(matches!(error, Error::Format { .. }), "{error:?}"),
    }
    std::fs::remove_dir_all(&work).unwrap();
}

#[test]
fn a_cached_conversion_is_converted_once_and_loads_like_the_dat() {
    let Some(dat) = common::dlib_model_file(MODEL) else {
        return;
    };
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("landmarks68-fresh-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);

    let start = std::time::Instant::now();
    let direct = cache::shape_predictor_uncached::<68>(&dat).expect("read from the .dat");
    let read_seconds = start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    let first = cache::shape_predictor::<68>(&dat, Some(&cache)).expect("convert");
    let convert_seconds = start.elapsed().as_secs_f64();
    let converted = cached_shape_predictor(&dat, Some(&cache)).expect("cached path");
    let modified = std::fs::metadata(&converted).unwrap().modified().unwrap();
    let start = std::time::Instant::now();
    let second = cache::shape_predictor::<68>(&dat, Some(&cache)).expect("cached");
    let cached_seconds = start.elapsed().as_secs_f64();
    println!(
        "the .dat read directly in {read_seconds:.3} s; converted into the cache in \
         {convert_seconds:.3} s; loaded from the cache in {cached_seconds:.3} s"
    );
    // The second load read the file the first wrote, and nothing else is left in the cache.
    assert_eq!(
        std::fs::metadata(&converted).unwrap().modified().unwrap(),
        modified
    );
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");

    let case = cases().into_iter().next().expect("a case");
    let image = decoded(&case);
    let rect = Rect::from(case.expected.faces[0].rect);
    let points = direct.predict(&image, rect);
    assert_eq!(first.predict(&image, rect), points);
    assert_eq!(second.predict(&image, rect), points);

    // The type's number of parts must be the model's.
    let error = ShapePredictor::<5>::from_file(&converted, &Device::Cpu)
        .err()
        .expect("a 68-point model is not a 5-point one");
    assert!(
        error.to_string().contains("68-point") && error.to_string().contains("5-point"),
        "{error}"
    );
    std::fs::remove_dir_all(&cache).unwrap();
}
