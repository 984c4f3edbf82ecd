//! Decoding matches PIL's `convert('RGB')` (what face_recognition's `load_image_file` does).

use crate::common;

use std::path::Path;

use concrexit_facedetection::decode::{DecodeLimits, decode_image, open_image, read_header};

/// (max abs difference, share of differing samples) between two RGB images of equal size.
fn difference(ours: &image::RgbImage, theirs: &image::RgbImage) -> (u8, f64) {
    assert_eq!(ours.dimensions(), theirs.dimensions());
    let differing = ours
        .as_raw()
        .iter()
        .zip(theirs.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    let max = ours
        .as_raw()
        .iter()
        .zip(theirs.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    (max, differing as f64 / ours.as_raw().len() as f64)
}

/// The error of a decode that must fail (without printing the image if it did not).
fn decode_failure(bytes: &[u8], limits: &DecodeLimits) -> String {
    match decode_image(bytes, limits) {
        Ok(image) => panic!("decoded a {:?} image from bad input", image.dimensions()),
        Err(error) => error.to_string(),
    }
}

fn expected(path: &Path) -> image::RgbImage {
    let name = format!(
        "{}.expected.png",
        path.file_name().unwrap().to_string_lossy()
    );
    image::open(path.with_file_name(name)).unwrap().to_rgb8()
}

#[test]
fn every_format_decodes_like_pil() {
    let dir = common::crate_dir().join("tests/fixtures/formats");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".png") && name.contains(".expected") || name.ends_with(".py") {
            continue;
        }
        let ours =
            open_image(&path, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        // PIL clips 16-bit grey to 0..255 instead of scaling it (a white image); we scale,
        // so that image must equal the 8-bit grey one it was made from.
        let reference = match name.as_str() {
            "gray16.png" => expected(&dir.join("gray8.png")),
            _ => expected(&path),
        };
        let (max, share) = difference(&ours, &reference);
        println!(
            "{name}: max difference {max}, {:.3}% of samples differ",
            share * 100.0
        );
        // 16-bit RGB: PIL keeps the high byte, we round; CMYK: PIL's conversion formula
        // differs by rounding. Everything else must be identical.
        let allowed = match name.as_str() {
            "rgb16.png" | "cmyk.jpg" => 1,
            _ => 0,
        };
        assert!(max <= allowed, "{name}: max difference {max} > {allowed}");
        checked += 1;
    }
    assert_eq!(checked, 17);
}

#[test]
fn reference_photos_decode_exactly_like_pil() {
    let mut checked = 0;
    for case in common::reference_cases() {
        let Some(source) = case.source_image() else {
            continue;
        };
        checked += 1;
        let ours = open_image(&source, &DecodeLimits::default()).unwrap();
        let (max, share) = difference(&ours, &case.decoded());
        assert_eq!(
            max,
            0,
            "{}: {:.3}% of samples differ, by up to {max}",
            case.name,
            share * 100.0
        );
    }
    assert!(checked > 0, "no reference photo was decoded");
}

/// Still WebPs are decoded by libwebp; image-webp, a decoder written independently of it, must
/// give the same samples for every committed WebP (lossy and lossless, with and without alpha,
/// and the album sets at both of concrexit's sizes).
#[test]
fn webp_decodes_as_image_webp_does() {
    let root = common::crate_dir().join("tests/fixtures");
    let dirs = [
        "formats",
        "pkg/images/large",
        "pkg/images/medium",
        "pkg/images/photo_large",
    ];
    let mut checked = 0;
    for dir in dirs {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|ext| ext != "webp") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let ours = decode_image(&bytes, &DecodeLimits::default()).unwrap();
            let theirs = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP)
                .unwrap()
                .into_rgb8();
            let (max, share) = difference(&ours, &theirs);
            assert_eq!(
                max,
                0,
                "{}: {:.3}% of samples differ, by up to {max}",
                path.display(),
                share * 100.0
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 25);
}

#[test]
fn exif_orientation_is_applied() {
    let path = common::crate_dir().join("tests/fixtures/formats/rotated.exif6.jpg");
    let ours = open_image(&path, &DecodeLimits::default()).unwrap();
    // stored 96x72, shown rotated by 90 degrees
    assert_eq!(ours.dimensions(), (72, 96));
}

#[test]
fn bad_input_gives_clear_errors() {
    let limits = DecodeLimits::default();
    let not_image = decode_failure(b"<html>not an image</html>", &limits);
    assert!(not_image.to_string().contains("not a JPEG"), "{not_image}");

    let jpeg =
        std::fs::read(common::crate_dir().join("tests/fixtures/formats/baseline.jpg")).unwrap();
    let truncated = decode_failure(&jpeg[..jpeg.len() / 2], &limits);
    assert!(truncated.to_string().contains("truncated"), "{truncated}");

    let mut corrupt = jpeg.clone();
    for byte in &mut corrupt[200..400] {
        *byte = 0xFF;
    }
    let corrupt = decode_failure(&corrupt, &limits);
    assert!(corrupt.to_lowercase().contains("jpeg"), "{corrupt}");

    let webp =
        std::fs::read(common::crate_dir().join("tests/fixtures/formats/lossy.webp")).unwrap();
    let truncated = decode_failure(&webp[..webp.len() / 2], &limits);
    assert!(truncated.to_string().contains("truncated"), "{truncated}");
    // The VP8 start code after the frame tag (a corrupt bitstream beyond the headers decodes
    // to some picture, as it does for PIL).
    let corrupt = decode_failure(&patched_fixture("lossy.webp", 23, &[0, 0, 0]), &limits);
    assert!(corrupt.to_lowercase().contains("webp"), "{corrupt}");

    // A PNG header declaring 30000x30000 pixels is refused before any pixel is decoded.
    let huge = common::png_declaring(30_000, 30_000);
    let refused = decode_failure(&huge, &limits);
    assert!(
        refused.to_string().contains("more than the limit"),
        "{refused}"
    );
    let small_limit = DecodeLimits { max_pixels: 1000 };
    decode_failure(&jpeg, &small_limit);
}

/// A committed format fixture with bytes `at..` replaced by `patch`.
fn patched_fixture(name: &str, at: usize, patch: &[u8]) -> Vec<u8> {
    let mut bytes = std::fs::read(
        common::crate_dir()
            .join("tests/fixtures/formats")
            .join(name),
    )
    .unwrap();
    bytes[at..at + patch.len()].copy_from_slice(patch);
    bytes
}

/// The lossless WebP fixture with its VP8L header declaring `width` x `height` (at most
/// 16383 each, as image-webp reads it; the alpha bit kept).
fn webp_declaring(width: u32, height: u32) -> Vec<u8> {
    let bits = (width - 1) | (height - 1) << 14 | 1 << 28;
    patched_fixture("lossless_alpha.webp", 21, &bits.to_le_bytes())
}

/// The GIF fixture with a logical screen of `width` x `height`.
fn gif_declaring(width: u16, height: u16) -> Vec<u8> {
    let mut size = width.to_le_bytes().to_vec();
    size.extend_from_slice(&height.to_le_bytes());
    patched_fixture("palette.gif", 6, &size)
}

/// The 24-bit BMP fixture with its header declaring `width` x `height`.
fn bmp_declaring(width: i32, height: i32) -> Vec<u8> {
    let mut size = width.to_le_bytes().to_vec();
    size.extend_from_slice(&height.to_le_bytes());
    patched_fixture("rgb.bmp", 18, &size)
}

#[test]
fn pixel_limits_hold_for_every_format_before_decoding() {
    let limits = DecodeLimits::default();
    for (name, bytes, declared) in [
        ("WebP", webp_declaring(16000, 16000), "16000x16000"),
        ("GIF", gif_declaring(65535, 65535), "65535x65535"),
        ("BMP", bmp_declaring(30000, 30000), "30000x30000"),
        ("PNG", common::png_declaring(30000, 30000), "30000x30000"),
    ] {
        for error in [
            decode_failure(&bytes, &limits),
            read_header(&bytes, &limits).unwrap_err().to_string(),
        ] {
            assert!(
                error.contains(declared) && error.contains("more than the limit"),
                "{name}: {error}"
            );
        }
    }
    // Within the limit the same headers are read as declared.
    let header = read_header(&webp_declaring(300, 200), &limits).unwrap();
    assert_eq!((header.width, header.height), (300, 200));
    let header = read_header(&bmp_declaring(300, 200), &limits).unwrap();
    assert_eq!(
        (header.width, header.height, header.bytes_per_pixel),
        (300, 200, 3)
    );
}
