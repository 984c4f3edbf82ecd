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
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::convert::resnet::BLOCKS;
use crate::error::{Error, Result};

/// Side of the square chips the network takes.
pub const CHIP_SIZE: u32 = 150;
/// Length of a face descriptor.
pub const DESCRIPTOR_LEN: usize = 128;

/// Where each output position of a square window operation reads its input: for every output
/// row and column, the `size * size` input positions of its window (row-major), as indices
/// into the `height * width` input positions, or `u32::MAX` (read as zero) in the padding.
struct Windows {
    indices: Vec<u32>,
    out_height: usize,
    out_width: usize,
}

impl Windows {
    /// dlib's window placement: output `o` covers inputs `o * stride - padding ..` of `size`.
    fn new(
        height: usize,
        width: usize,
        size: usize,
        stride: usize,
        padding: usize,
    ) -> candle_core::Result<Self> {
        if height + 2 * padding < size || width + 2 * padding < size {
            candle_core::bail!("a {size}x{size} window does not fit a {height}x{width} input");
        }
        let out_height = (height + 2 * padding - size) / stride + 1;
        let out_width = (width + 2 * padding - size) / stride + 1;
        let position = |out: usize, offset: usize, limit: usize| {
            (out * stride + offset)
                .checked_sub(padding)
                .filter(|&i| i < limit)
        };
        let mut indices = Vec::with_capacity(out_height * out_width * size * size);
        for oy in 0..out_height {
            for ox in 0..out_width {
                for dy in 0..size {
                    for dx in 0..size {
                        let index = match (position(oy, dy, height), position(ox, dx, width)) {
                            (Some(y), Some(x)) => u32::try_from(y * width + x)
                                .map_err(|_| candle_core::Error::Msg("input too large".into()))?,
                            _ => u32::MAX,
                        };
                        indices.push(index);
                    }
                }
            }
        }
        Ok(Self {
            indices,
            out_height,
            out_width,
        })
    }

    /// Gathers the windows of an NHWC tensor: [N, out_h * out_w, size * size, C].
    fn gather(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let ids = Tensor::new(self.indices.as_slice(), x.device())?;
        let windows = self.indices.len() / (self.out_height * self.out_width);
        x.reshape((n, h * w, c))?
            .index_select(&ids, 1)?
            .reshape((n, self.out_height * self.out_width, windows, c))
    }
}

/// A square convolution with dlib's default padding for its stride (`size / 2` for stride 1,
/// none otherwise) followed by dlib's `affine` layer, computed as one matrix product over
/// gathered windows on channels-last tensors. The affine scale and shift are folded into the
/// filters and bias: `(conv(x) + b) * gamma + beta = conv_{w * gamma}(x) + (b * gamma + beta)`.
#[derive(Debug, Clone)]
struct ConvAffine {
    /// [size * size * in_channels, out_channels], rows ordered (dy, dx, channel).
    weight: Tensor,
    /// [out_channels].
    bias: Tensor,
    size: usize,
    stride: usize,
}

impl ConvAffine {
    fn load(
        in_channels: usize,
        out_channels: usize,
        size: usize,
        stride: usize,
        conv: VarBuilder,
        affine: VarBuilder,
    ) -> candle_core::Result<Self> {
        let weight = conv.get((out_channels, in_channels, size, size), "weight")?;
        let bias = conv.get(out_channels, "bias")?;
        let gamma = affine.get(out_channels, "gamma")?;
        let beta = affine.get(out_channels, "beta")?;
        let weight = weight
            .permute((2, 3, 1, 0))?
            .reshape((size * size * in_channels, out_channels))?
            .broadcast_mul(&gamma)?
            .contiguous()?;
        let bias = ((bias * &gamma)? + beta)?;
        Ok(Self {
            weight,
            bias,
            size,
            stride,
        })
    }

    /// NHWC in, NHWC out.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, h, w, _) = x.dims4()?;
        let padding = if self.stride == 1 { self.size / 2 } else { 0 };
        let windows = Windows::new(h, w, self.size, self.stride, padding)?;
        let columns = windows.gather(x)?;
        let (_, positions, taps, channels) = columns.dims4()?;
        columns
            .reshape((n * positions, taps * channels))?
            .matmul(&self.weight)?
            .broadcast_add(&self.bias)?
            .reshape((n, windows.out_height, windows.out_width, ()))
    }
}

/// Square pooling without padding on an NHWC tensor: the maximum or the mean of each window.
fn pool(x: &Tensor, size: usize, stride: usize, max: bool) -> candle_core::Result<Tensor> {
    let (n, h, w, _) = x.dims4()?;
    let windows = Windows::new(h, w, size, stride, 0)?;
    let gathered = windows.gather(x)?;
    let pooled = if max {
        gathered.max(2)?
    } else {
        gathered.mean(2)?
    };
    pooled.reshape((n, windows.out_height, windows.out_width, ()))
}

/// Adds two tensors as dlib's `tt::add` does: the result has the larger size in every
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
    first: ConvAffine,
    second: ConvAffine,
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
            first: ConvAffine::load(
                in_channels,
                channels,
                3,
                stride,
                vb.pp("conv1"),
                vb.pp("affine1"),
            )?,
            second: ConvAffine::load(channels, channels, 3, 1, vb.pp("conv2"), vb.pp("affine2"))?,
            downsample: stride == 2,
        })
    }

    /// NHWC in, NHWC out.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.first.forward(x)?.relu()?;
        let y = self.second.forward(&y)?;
        let shortcut = if self.downsample {
            pool(x, 2, 2, false)?
        } else {
            x.clone()
        };
        add_zero_padded(&y, &shortcut)?.relu()
    }
}

/// dlib's face recognition ResNet.
#[derive(Debug, Clone)]
pub struct FaceEmbedder {
    /// Channel means of the input layer, [3].
    mean: Tensor,
    stem: ConvAffine,
    blocks: Vec<ResidualBlock>,
    /// [256, 128] (in, out).
    fc: Tensor,
    device: Device,
}

impl FaceEmbedder {
    /// Loads the weights written by the converter (`dlib_face_recognition_resnet_model_v1`).
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let mean = vb.get(3, "input.mean")?;
        let stem = ConvAffine::load(3, 32, 7, 2, vb.pp("stem.conv"), vb.pp("stem.affine"))?;
        let mut in_channels = 32;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (index, &(channels, stride)) in BLOCKS.iter().enumerate() {
            let vb = vb.pp(format!("blocks.{index}"));
            blocks.push(ResidualBlock::load(in_channels, channels, stride, vb)?);
            in_channels = channels;
        }
        let fc = vb
            .get((DESCRIPTOR_LEN, in_channels), "fc.weight")?
            .t()?
            .contiguous()?;
        Ok(Self {
            mean,
            stem,
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

    /// The network's input for a batch of 150x150 chips, channels-last: [N, 150, 150, 3],
    /// `(pixel - mean) / 256`.
    fn input_nhwc(&self, chips: &[RgbImage]) -> Result<Tensor> {
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
            .to_dtype(DType::F32)?
            .broadcast_sub(&self.mean)?;
        Ok((input / 256.0)?)
    }

    /// The network's input for a batch of 150x150 chips as [`Module::forward`] takes it:
    /// [N, 3, 150, 150], `(pixel - mean) / 256`.
    pub fn input_tensor(&self, chips: &[RgbImage]) -> Result<Tensor> {
        Ok(self.input_nhwc(chips)?.permute((0, 3, 1, 2))?)
    }

    /// Descriptors of a batch of 150x150 chips.
    pub fn embed(&self, chips: &[RgbImage]) -> Result<Vec<[f32; DESCRIPTOR_LEN]>> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let output = self.forward_nhwc(&self.input_nhwc(chips)?)?;
        output
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                <[f32; DESCRIPTOR_LEN]>::try_from(row)
                    .map_err(|row| Error::InvalidInput(format!("descriptor of {}", row.len())))
            })
            .collect()
    }

    /// Channels-last normalised chips [N, 150, 150, 3] to descriptors [N, 128].
    fn forward_nhwc(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.stem.forward(x)?.relu()?;
        let mut x = pool(&x, 3, 2, true)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // avg_pool_everything, then fc_no_bias.
        x.mean((1, 2))?.matmul(&self.fc)
    }
}

impl Module for FaceEmbedder {
    /// Normalised chips [N, 3, 150, 150] to descriptors [N, 128].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_nhwc(&x.permute((0, 2, 3, 1))?.contiguous()?)
    }
}
