//! dlib's image pyramid resizing, pixel for pixel: `pyramid_up` and `pyramid_down<6>` on crops
//! of pkg photos, against dlib 20.0.1's own outputs (tests/fixtures/pyramid, made with
//! `dlib.resize_image` at the size `dlib.pyramid_down(2).rect_up` gives, and
//! `dlib.pyramid_down(6)`).

use std::path::PathBuf;

use concrexit_facedetection::detect::pyramid::{PyramidDown, pyramid_up};
use image::RgbImage;

fn fixture(name: &str) -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pyramid")
        .join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// Number of differing channel values and the largest difference.
fn compare(ours: &RgbImage, dlib: &RgbImage) -> (usize, u8) {
    assert_eq!(ours.dimensions(), dlib.dimensions(), "image size");
    ours.as_raw()
        .iter()
        .zip(dlib.as_raw())
        .filter(|(a, b)| a != b)
        .fold((0, 0), |(count, max), (a, b)| {
            (count + 1, max.max(a.abs_diff(*b)))
        })
}

const CASES: [&str; 5] = ["a", "b", "c", "d", "e"];

#[test]
fn pyramid_up_matches_dlib() {
    for case in CASES {
        let input = fixture(&format!("{case}_input.png"));
        let (differing, max) = compare(&pyramid_up(&input), &fixture(&format!("{case}_up.png")));
        assert_eq!(
            differing, 0,
            "{case}: {differing} values differ, by up to {max}"
        );
    }
}

#[test]
fn pyramid_down_6_matches_dlib() {
    let pyr = PyramidDown::new(6);
    for case in CASES {
        let input = fixture(&format!("{case}_input.png"));
        let (differing, max) = compare(
            &pyr.downsample(&input),
            &fixture(&format!("{case}_down6.png")),
        );
        assert_eq!(
            differing, 0,
            "{case}: {differing} values differ, by up to {max}"
        );
    }
}
