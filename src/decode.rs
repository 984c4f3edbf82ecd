//! Decodes photos (JPEG, PNG, WebP, GIF, BMP) into 8-bit RGB, as face_recognition's
//! `load_image_file` does with PIL's `convert('RGB')`: alpha is dropped, grey and palette
//! images are expanded to RGB, 16-bit samples are reduced to 8 bits.
//!
//! Unlike the original, the EXIF orientation of a photo is applied, so a sideways phone photo
//! is turned upright before detection. The pixel count is checked against a limit from the
//! header, before any pixel is decoded.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

/// Limits applied before decoding.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    /// The largest accepted width x height.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
        }
    }
}

/// Decodes an encoded photo into RGB8 pixels.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Decode(e.to_string()))?;
    if reader.format().is_none() {
        return Err(Error::Decode(
            "not a JPEG, PNG, WebP, GIF or BMP image".to_string(),
        ));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| Error::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::Decode(format!(
            "{width}x{height} is {pixels} pixels, more than the limit of {}",
            limits.max_pixels
        )));
    }
    if pixels == 0 {
        return Err(Error::Decode(format!(
            "{width}x{height} image has no pixels"
        )));
    }
    let orientation = decoder
        .orientation()
        .map_err(|e| Error::Decode(e.to_string()))?;
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| Error::Decode(e.to_string()))?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// Reads and decodes a photo file.
pub fn open_image(path: &std::path::Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes, limits)
}
