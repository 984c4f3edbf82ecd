//! Photo files through the per-photo pipeline, as `facedetect encode` runs them: each photo is
//! decoded on a thread of its own while the one before it is encoded, and comes out as an
//! [`ImageFaces`], the JSON line `encode` prints. A photo that cannot be read or encoded fails
//! alone.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use super::{EncodeOptions, Face, FacePipeline};
use crate::decode::{DecodeLimits, open_image};
use crate::error::{Error, Result};
use crate::face::Encoding;
use crate::face::jitter::DlibRand;
use crate::geometry::Rect;

/// What to do with each photo.
#[derive(Debug, Clone, PartialEq)]
pub enum FileTask {
    /// Detect the faces and encode each (face_recognition's `face_encodings(image)`).
    Detect(EncodeOptions),
    /// Encode the faces at these locations (`known_face_locations`), each the mean of
    /// `jitters` jittered chips.
    At { rects: Vec<Rect>, jitters: u32 },
    /// The photo is an aligned 150x150 chip: embed it, the mean of `jitters` jittered copies.
    Aligned { jitters: u32 },
}

/// One photo's faces: a line of `facedetect encode`'s output.
#[derive(Debug, Clone, Serialize)]
pub struct ImageFaces {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub faces: Vec<FaceOutput>,
}

/// A face of [`ImageFaces`]: located in the photo, or the photo itself as a chip.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum FaceOutput {
    Located(Face),
    Aligned { encoding: Encoding },
}

impl ImageFaces {
    /// The faces found in `image`, read from `path`.
    pub fn located(path: &Path, image: &RgbImage, faces: Vec<Face>) -> Self {
        Self {
            image: path.to_string_lossy().into_owned(),
            width: image.width(),
            height: image.height(),
            faces: faces.into_iter().map(FaceOutput::Located).collect(),
        }
    }
}

/// Runs `task` on every file of `paths`, in order, handing each photo's result (the decoded
/// photo and its faces) to `each` as soon as it is done.
pub fn encode_files(
    pipeline: &FacePipeline,
    paths: &[PathBuf],
    task: &FileTask,
    mut each: impl FnMut(&Path, Result<(RgbImage, ImageFaces)>),
) {
    let limits = DecodeLimits::default();
    std::thread::scope(|scope| {
        let (decoded_sender, decoded) = std::sync::mpsc::sync_channel(1);
        scope.spawn(move || {
            for path in paths {
                if decoded_sender
                    .send((path, open_photo(path, &limits)))
                    .is_err()
                {
                    break;
                }
            }
        });
        for (path, image) in decoded {
            let encoded = image.and_then(|image| {
                let faces = encode_image(pipeline, path, &image, task)?;
                Ok((image, faces))
            });
            each(path, encoded);
        }
    });
}

fn open_photo(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let text = path.to_string_lossy();
    if text.starts_with("http://") || text.starts_with("https://") {
        return Err(Error::UrlGiven);
    }
    open_image(path, limits)
}

fn encode_image(
    pipeline: &FacePipeline,
    path: &Path,
    image: &RgbImage,
    task: &FileTask,
) -> Result<ImageFaces> {
    let faces = match task {
        FileTask::Detect(options) => pipeline.encode(image, options)?,
        FileTask::At { rects, jitters } => pipeline.encode_at_jittered(image, rects, *jitters)?,
        FileTask::Aligned { jitters } => {
            let encodings = pipeline.embed_chips_jittered(
                std::slice::from_ref(image),
                *jitters,
                &mut DlibRand::new(),
            )?;
            return Ok(ImageFaces {
                faces: encodings
                    .into_iter()
                    .map(|encoding| FaceOutput::Aligned { encoding })
                    .collect(),
                ..ImageFaces::located(path, image, Vec::new())
            });
        }
    };
    Ok(ImageFaces::located(path, image, faces))
}
