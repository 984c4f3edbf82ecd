//! How the batched pipeline's device work for photos of one size splits into passes
//! (`facedetect plan`): the CNN detector's passes, each with its photos, largest buffer and
//! device bytes, and the embedder's chips per pass, from the loaded layers and
//! [`crate::plan`]'s limits. Figures, not measurements: a GPU check compares them with a run.

use serde::Serialize;

use crate::detect::cnn::{CnnFaceDetector, ConvAlgorithm};
use crate::error::Result;
use crate::face::embedder::FaceEmbedder;
use crate::plan::{ItemCost, MAX_BUFFER_ELEMENTS, PassLimits};

/// The passes for `photos` photos of `size` (width, height) at `upsample`.
#[derive(Debug, Clone, Serialize)]
pub struct DevicePlan {
    pub size: (u32, u32),
    pub upsample: u32,
    pub photos: usize,
    pub algorithm: ConvAlgorithm,
    pub device_memory_mb: Option<u64>,
    pub max_buffer_elements: u64,
    /// The CNN's input pyramid of one photo.
    pub pyramid: PyramidShape,
    pub passes: Vec<PlannedPass>,
    pub embedder: EmbedderPlan,
}

/// Rows and columns of a tiled pyramid.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PyramidShape {
    pub rows: usize,
    pub cols: usize,
}

/// One pass of the CNN detector.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PlannedPass {
    pub photos: usize,
    pub largest_buffer_elements: u64,
    pub device_bytes: u64,
}

/// What one chip costs the embedder, and how many fit a pass.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct EmbedderPlan {
    pub chip: ItemCost,
    pub chips_per_pass: usize,
}

impl DevicePlan {
    /// Plans the passes on the loaded CNN detector's layers.
    pub fn new(
        cnn: &CnnFaceDetector,
        size: (u32, u32),
        upsample: u32,
        photos: usize,
        algorithm: ConvAlgorithm,
        device_memory_mb: Option<u64>,
    ) -> Result<Self> {
        let limits = PassLimits::with_device_memory_mb(device_memory_mb);
        let passes = cnn
            .plan(size, upsample, photos, algorithm, &limits)?
            .iter()
            .map(|pass| PlannedPass {
                photos: pass.items,
                largest_buffer_elements: pass.largest_buffer_elements,
                device_bytes: pass.device_bytes,
            })
            .collect();
        let (rows, cols) = cnn.pyramid_shape(size, upsample);
        let chip = FaceEmbedder::chip_cost();
        Ok(Self {
            size,
            upsample,
            photos,
            algorithm,
            device_memory_mb,
            max_buffer_elements: MAX_BUFFER_ELEMENTS,
            pyramid: PyramidShape { rows, cols },
            passes,
            embedder: EmbedderPlan {
                chip,
                chips_per_pass: limits.items_per_pass(chip)?,
            },
        })
    }
}
