//! Decodes photos (JPEG, PNG, WebP, GIF, BMP) into 8-bit RGB, as face_recognition's
//! `load_image_file` does with PIL's `convert('RGB')`: alpha is dropped, grey and palette
//! images are expanded to RGB, 16-bit samples are reduced to 8 bits.
//!
//! JPEGs are decoded by libjpeg-turbo's decoder (through mozjpeg, without SIMD) and still WebPs
//! by libwebp (through libwebp-sys, with its SSE2 or NEON code), the decoders PIL uses, so the
//! pixels are identical to the original service's. Other formats, CMYK JPEGs and animated
//! WebPs (their first frame) go through the `image` crate.
//!
//! Unlike the original, the EXIF orientation of a photo is applied, so a sideways phone photo
//! is turned upright before detection. The pixel count is checked against a limit from the
//! header, before any pixel is decoded; [`read_header`] gives the size and the memory decoding
//! will take, so that a caller can budget for it before decoding.

use std::io::Cursor;
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use mozjpeg_sys::{J_COLOR_SPACE, JWRN_JPEG_EOF, jpeg_common_struct, jpeg_error_mgr};

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

fn decode_error(error: impl std::fmt::Display) -> Error {
    Error::Decode(error.to_string())
}

/// What a photo's header says, read without decoding any pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub width: u32,
    pub height: u32,
    /// Bytes per pixel of the format the decoder produces before conversion to RGB8.
    pub bytes_per_pixel: u8,
}

impl ImageHeader {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// The most memory decoding takes: the decoder's buffer, a rotated copy of it (EXIF
    /// orientation) and the RGB8 image.
    pub fn decode_bytes(&self) -> u64 {
        self.pixels() * (2 * u64::from(self.bytes_per_pixel) + 3)
    }
}

/// A decoder for the photo, with its header checked against the limits.
fn open_decoder<'a>(
    bytes: &'a [u8],
    limits: &DecodeLimits,
) -> Result<(ImageFormat, impl ImageDecoder + 'a, ImageHeader)> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(decode_error)?;
    let format = reader
        .format()
        .ok_or_else(|| Error::Decode("not a JPEG, PNG, WebP, GIF or BMP image".to_string()))?;
    let decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    let header = ImageHeader {
        width,
        height,
        bytes_per_pixel: decoder.color_type().bytes_per_pixel(),
    };
    let pixels = header.pixels();
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
    Ok((format, decoder, header))
}

/// Reads a photo's header, checking it against the limits, without decoding any pixel.
pub fn read_header(bytes: &[u8], limits: &DecodeLimits) -> Result<ImageHeader> {
    open_decoder(bytes, limits).map(|(_, _, header)| header)
}

/// Decodes an encoded photo into RGB8 pixels.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    let (format, mut decoder, _) = open_decoder(bytes, limits)?;
    let orientation = decoder.orientation().map_err(decode_error)?;
    let decoded = match format {
        ImageFormat::Jpeg => decode_jpeg_like_libjpeg(bytes)?,
        ImageFormat::WebP => decode_webp_like_libwebp(bytes)?,
        _ => None,
    };
    let mut image = match decoded {
        Some(rgb) => DynamicImage::ImageRgb8(rgb),
        None => DynamicImage::from_decoder(decoder).map_err(decode_error)?,
    };
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

/// Decodes a still WebP (lossy or lossless, alpha dropped) to RGB with libwebp's default
/// settings (fancy upsampling, in-loop filtering), as PIL does, straight into the image's
/// buffer. Returns `None` for an animation.
fn decode_webp_like_libwebp(bytes: &[u8]) -> Result<Option<RgbImage>> {
    use libwebp_sys::{VP8StatusCode, WEBP_CSP_MODE, WebPDecoderConfig, WebPRGBABuffer};
    let failed = |status: VP8StatusCode| {
        Error::Decode(match status {
            VP8StatusCode::VP8_STATUS_NOT_ENOUGH_DATA => {
                "truncated WebP: the data ends before the image does".to_string()
            }
            VP8StatusCode::VP8_STATUS_OUT_OF_MEMORY => "out of memory decoding WebP".to_string(),
            other => format!("corrupt WebP data ({other:?})"),
        })
    };
    let mut config = WebPDecoderConfig::new()
        .map_err(|()| Error::Decode("libwebp refused its decoder configuration".to_string()))?;
    // SAFETY: `bytes` is a valid slice and `config.input` a valid features struct.
    let status =
        unsafe { libwebp_sys::WebPGetFeatures(bytes.as_ptr(), bytes.len(), &mut config.input) };
    if status != VP8StatusCode::VP8_STATUS_OK {
        return Err(failed(status));
    }
    if config.input.has_animation != 0 {
        return Ok(None);
    }
    let size = |value: i32| u32::try_from(value).map_err(decode_error);
    let (width, height) = (size(config.input.width)?, size(config.input.height)?);
    let stride = width as usize * 3;
    let mut pixels = vec![0u8; stride * height as usize];
    config.output.colorspace = WEBP_CSP_MODE::MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA = WebPRGBABuffer {
        rgba: pixels.as_mut_ptr(),
        stride: c_int::try_from(stride).map_err(decode_error)?,
        size: pixels.len(),
    };
    // SAFETY: the output buffer is `pixels`, `stride` bytes a row for `height` rows, which
    // libwebp checks against the header before writing; it outlives the call.
    let status = unsafe { libwebp_sys::WebPDecode(bytes.as_ptr(), bytes.len(), &mut config) };
    // SAFETY: releases what libwebp allocated beside the external buffer (nothing, normally).
    unsafe { libwebp_sys::WebPFreeDecBuffer(&mut config.output) };
    if status != VP8StatusCode::VP8_STATUS_OK {
        return Err(failed(status));
    }
    Ok(RgbImage::from_raw(width, height, pixels))
}

/// Why libjpeg stopped; carried out of the C decoder by unwinding.
struct JpegFailure(String);

fn libjpeg_message_code(cinfo: &jpeg_common_struct) -> c_int {
    // SAFETY: libjpeg calls the handlers below with its error manager installed.
    unsafe { cinfo.err.as_ref() }.map_or(-1, |err| err.msg_code)
}

/// libjpeg's fatal-error handler must not return: it unwinds to `decode_jpeg_like_libjpeg`.
extern "C-unwind" fn libjpeg_error_exit(cinfo: &mut jpeg_common_struct) {
    let code = libjpeg_message_code(cinfo);
    resume_unwind(Box::new(JpegFailure(format!(
        "corrupt JPEG data (libjpeg error {code})"
    ))));
}

/// libjpeg's warnings: data that ends before the image does is an error, as it is for PIL;
/// the other warnings (extraneous bytes and the like) are ignored, as PIL ignores them.
extern "C-unwind" fn libjpeg_emit_message(cinfo: &mut jpeg_common_struct, level: c_int) {
    if level < 0 && libjpeg_message_code(cinfo) == JWRN_JPEG_EOF as c_int {
        resume_unwind(Box::new(JpegFailure(
            "truncated JPEG: the data ends before the image does".to_string(),
        )));
    }
}

fn libjpeg_error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_std_error initialises every field of the zeroed error manager.
    let mut manager: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { mozjpeg_sys::jpeg_std_error(&mut manager) };
    manager.error_exit = Some(libjpeg_error_exit);
    manager.emit_message = Some(libjpeg_emit_message);
    manager
}

/// Decodes a YCbCr or greyscale JPEG to RGB with libjpeg-turbo's default settings (ISLOW
/// IDCT, fancy upsampling), exactly as PIL does. Returns `None` for colour spaces that
/// libjpeg cannot convert to RGB itself (CMYK, YCCK).
fn decode_jpeg_like_libjpeg(bytes: &[u8]) -> Result<Option<RgbImage>> {
    let decoded = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Option<RgbImage>> {
        let decompress = mozjpeg::Decompress::with_err(libjpeg_error_manager()).from_mem(bytes)?;
        if matches!(
            decompress.color_space(),
            J_COLOR_SPACE::JCS_CMYK | J_COLOR_SPACE::JCS_YCCK
        ) {
            return Ok(None);
        }
        let mut started = decompress.rgb()?;
        let (width, height) = (started.width(), started.height());
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        let size = |value: usize| u32::try_from(value).map_err(std::io::Error::other);
        Ok(RgbImage::from_raw(size(width)?, size(height)?, pixels))
    }));
    match decoded {
        Ok(Ok(Some(image))) => Ok(Some(image)),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::Decode(
            "truncated JPEG: the data ends before the image does".to_string(),
        )),
        Ok(Err(error)) => Err(decode_error(error)),
        Err(payload) => Err(Error::Decode(match payload.downcast::<JpegFailure>() {
            Ok(failure) => failure.0,
            Err(_) => "corrupt JPEG data".to_string(),
        })),
    }
}
