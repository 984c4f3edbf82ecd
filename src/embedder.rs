//! The face embedder: dlib's face recognition ResNet (`anet_type` of
//! tools/python/src/face_recognition.cpp) as a candle module.
//!
//! A 150x150 aligned face chip becomes 128 numbers, exactly as
//! `face_recognition_model_v1.compute_face_descriptor` computes them:
//! - input (`input_rgb_image_sized<150>`): `(pixel - channel mean) / 256`, planar RGB;
//! - stem: 7x7 convolution with stride 2 and no padding, affine, relu, 3x3 max pooling with
//!   stride 2 and no padding (dlib pads only stride-1 windows, by half their size);
//! - 14 residual blocks: 3x3 convolution (stride 1 or 2), affine, relu, 3x3 convolution,
//!   affine, plus the shortcut, relu. A downsampling block's shortcut is a 2x2/2 average pooling
//!   of its input; dlib's `add_prev` adds tensors of different shapes by zero-padding the
//!   smaller one at the end of each dimension (more channels, and a 4x4 shortcut beside a 3x3
//!   block output at 256 channels, which makes the following blocks work on 4x4);
//! - average over all positions and a 128x256 linear map without bias (`loss_metric` returns
//!   this output unchanged).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use image::RgbImage;

use crate::convert::resnet::BLOCKS;
use crate::error::{Error, Result};

/// Side of the square chips the network takes.
pub const CHIP_SIZE: u32 = 150;
/// Length of a face descriptor.
pub const DESCRIPTOR_LEN: usize = 128;

/// dlib's `affine` layer in convolution mode: `x * gamma[c] + beta[c]`.
#[derive(Debug, Clone)]
struct Affine {
    gamma: Tensor,
    beta: Tensor,
}

impl Affine {
    fn load(channels: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            gamma: vb.get(channels, "gamma")?.reshape((1, channels, 1, 1))?,
            beta: vb.get(channels, "beta")?.reshape((1, channels, 1, 1))?,
        })
    }
}

impl Module for Affine {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_mul(&self.gamma)?.broadcast_add(&self.beta)
    }
}

/// A square convolution with dlib's default padding for its stride.
fn conv(
    in_channels: usize,
    out_channels: usize,
    size: usize,
    stride: usize,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    let padding = if stride == 1 { size / 2 } else { 0 };
    let config = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    candle_nn::conv2d(in_channels, out_channels, size, config, vb)
}

/// Adds two NCHW tensors as dlib's `tt::add` does: the result has the larger size in every
/// dimension, and each operand counts as zero where it has no values.
fn add_zero_padded(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let target = a
        .dims()
        .iter()
        .zip(b.dims())
        .map(|(x, y)| *x.max(y))
        .collect::<Vec<_>>();
    let pad = |t: &Tensor| -> candle_core::Result<Tensor> {
        let mut t = t.clone();
        for (dim, &size) in target.iter().enumerate() {
            let missing = size - t.dim(dim)?;
            if missing > 0 {
                t = t.pad_with_zeros(dim, 0, missing)?;
            }
        }
        Ok(t)
    };
    pad(a)? + pad(b)?
}

/// One residual block (`ares` or `ares_down`).
#[derive(Debug, Clone)]
struct ResidualBlock {
    conv1: Conv2d,
    affine1: Affine,
    conv2: Conv2d,
    affine2: Affine,
    downsample: bool,
}

impl ResidualBlock {
    fn load(
        in_channels: usize,
        channels: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            conv1: conv(in_channels, channels, 3, stride, vb.pp("conv1"))?,
            affine1: Affine::load(channels, vb.pp("affine1"))?,
            conv2: conv(channels, channels, 3, 1, vb.pp("conv2"))?,
            affine2: Affine::load(channels, vb.pp("affine2"))?,
            downsample: stride == 2,
        })
    }
}

impl Module for ResidualBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.conv1.forward(x)?;
        let y = self.affine1.forward(&y)?.relu()?;
        let y = self.conv2.forward(&y)?;
        let y = self.affine2.forward(&y)?;
        let shortcut = if self.downsample {
            x.avg_pool2d_with_stride(2, 2)?
        } else {
            x.clone()
        };
        add_zero_padded(&y, &shortcut)?.relu()
    }
}

/// dlib's face recognition ResNet.
#[derive(Debug, Clone)]
pub struct FaceEmbedder {
    /// Channel means of the input layer, [1, 3, 1, 1].
    mean: Tensor,
    stem_conv: Conv2d,
    stem_affine: Affine,
    blocks: Vec<ResidualBlock>,
    /// [128, 256] (out, in).
    fc: Tensor,
    device: Device,
}

impl FaceEmbedder {
    /// Loads the weights written by the converter (`dlib_face_recognition_resnet_model_v1`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let mean = vb.get(3, "input.mean")?.reshape((1, 3, 1, 1))?;
        let stem_conv = conv(3, 32, 7, 2, vb.pp("stem.conv"))?;
        let stem_affine = Affine::load(32, vb.pp("stem.affine"))?;
        let mut in_channels = 32;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (index, &(channels, stride)) in BLOCKS.iter().enumerate() {
            let vb = vb.pp(format!("blocks.{index}"));
            blocks.push(ResidualBlock::load(in_channels, channels, stride, vb)?);
            in_channels = channels;
        }
        let fc = vb.get((DESCRIPTOR_LEN, in_channels), "fc.weight")?;
        Ok(Self {
            mean,
            stem_conv,
            stem_affine,
            blocks,
            fc,
            device: vb.device().clone(),
        })
    }

    /// Loads the embedder from a safetensors file onto `device`.
    pub fn from_file(path: &std::path::Path, device: &Device) -> Result<Self> {
        // SAFETY: the weights file is not modified while it is mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device)? };
        Self::load(vb)
    }

    /// The network's input for a batch of 150x150 chips: [N, 3, 150, 150],
    /// `(pixel - mean) / 256`.
    pub fn input_tensor(&self, chips: &[RgbImage]) -> Result<Tensor> {
        if let Some(chip) = chips
            .iter()
            .find(|chip| chip.dimensions() != (CHIP_SIZE, CHIP_SIZE))
        {
            return Err(Error::InvalidInput(format!(
                "face chips must be {CHIP_SIZE}x{CHIP_SIZE}, got {}x{}",
                chip.width(),
                chip.height()
            )));
        }
        let side = CHIP_SIZE as usize;
        let pixels: Vec<u8> = chips
            .iter()
            .flat_map(|chip| chip.as_raw().iter().copied())
            .collect();
        let input = Tensor::from_vec(pixels, (chips.len(), side, side, 3), &self.device)?
            .permute((0, 3, 1, 2))?
            .to_dtype(DType::F32)?
            .broadcast_sub(&self.mean)?;
        Ok((input / 256.0)?)
    }

    /// Descriptors of a batch of 150x150 chips.
    pub fn embed(&self, chips: &[RgbImage]) -> Result<Vec<[f32; DESCRIPTOR_LEN]>> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let output = self.forward(&self.input_tensor(chips)?)?;
        let rows = output.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        rows.into_iter()
            .map(|row| {
                <[f32; DESCRIPTOR_LEN]>::try_from(row)
                    .map_err(|row| Error::InvalidInput(format!("descriptor of {}", row.len())))
            })
            .collect()
    }
}

impl Module for FaceEmbedder {
    /// [N, 3, 150, 150] normalised chips to [N, 128] descriptors.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.stem_conv.forward(x)?;
        let mut x = self
            .stem_affine
            .forward(&x)?
            .relu()?
            .max_pool2d_with_stride(3, 2)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let pooled = x.mean((2, 3))?;
        pooled.matmul(&self.fc.t()?)
    }
}
