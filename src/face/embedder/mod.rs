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
//!
//! On the CPU the network runs as `resnet` on the kernels' direct convolution; elsewhere (or
//! with `FACEDETECT_CPU_KERNELS=none`) as candle tensor operations.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::face::encoding::{ENCODING_LEN, Encoding};
use crate::kernels::conv::{Activations, Conv};
use crate::nn;
use crate::plan::{ItemCost, PassLimits, plan_passes};
use crate::weights::Model;

mod resnet;

use resnet::{Block, ResNet};

/// Side of the square chips the network takes.
pub const CHIP_SIZE: u32 = 150;
/// The stem's convolution: output channels, filter size and stride.
pub const STEM_CONV: (usize, usize, usize) = (32, 7, 2);
/// The stem's max pooling: window size and stride.
pub const STEM_POOL: (usize, usize) = (3, 2);
/// Filter size of the residual blocks' convolutions.
pub const BLOCK_CONV_SIZE: usize = 3;
/// Channels and stride of each residual block's first convolution, in forward order: three
/// `ares<32>`, `ares_down<64>` and three `ares<64>`, `ares_down<128>` and two `ares<128>`,
/// `ares_down<256>` and two `ares<256>`, and a final `ares_down<256>`.
pub const BLOCKS: [(usize, usize); 14] = [
    (32, 1),
    (32, 1),
    (32, 1),
    (64, 2),
    (64, 1),
    (64, 1),
    (64, 1),
    (128, 2),
    (128, 1),
    (128, 1),
    (256, 2),
    (256, 1),
    (256, 1),
    (256, 2),
];
/// Chips embedded together (dlib uses 16 too); bounds memory on photos with many faces.
pub const EMBED_BATCH: usize = 16;
/// Chips per forward pass on the CPU (measured fastest per chip on a 2-core machine).
const CPU_SLICE: usize = 4;
/// Size of the gathered convolution windows multiplied at once on the CPU.
const CPU_COLUMNS_BYTES: usize = 1 << 20;

/// The windows of a square window operation (convolution or pooling) on a square input, with
/// dlib's placement: output `o` covers inputs `o * stride - padding ..` of `size` (dlib pads
/// only stride-1 windows, by `size / 2`). For each output position, row-major, the indices of
/// its `size * size` inputs among the `side * side` input positions; padding reads as zero
/// (`u32::MAX` in `index_select`).
#[derive(Debug, Clone)]
struct Windows {
    /// [out_side * out_side * size * size] u32.
    indices: Tensor,
    in_side: usize,
    out_side: usize,
    taps: usize,
}

impl Windows {
    fn new(
        in_side: usize,
        size: usize,
        stride: usize,
        padding: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let Some(out_side) = nn::output_len(in_side, size, stride, padding) else {
            candle_core::bail!("a {size}x{size} window does not fit a {in_side}x{in_side} input");
        };
        let position = |out: usize, offset: usize| {
            (out * stride + offset)
                .checked_sub(padding)
                .filter(|&i| i < in_side)
        };
        let mut indices = Vec::with_capacity(out_side * out_side * size * size);
        for oy in 0..out_side {
            for ox in 0..out_side {
                for dy in 0..size {
                    for dx in 0..size {
                        indices.push(match (position(oy, dy), position(ox, dx)) {
                            (Some(y), Some(x)) => (y * in_side + x) as u32,
                            _ => u32::MAX,
                        });
                    }
                }
            }
        }
        Ok(Self {
            indices: Tensor::from_vec(indices, out_side * out_side * size * size, device)?,
            in_side,
            out_side,
            taps: size * size,
        })
    }

    /// Gathers the windows of `count` output positions from `first` on of an NHWC tensor:
    /// [N, count, size^2, C].
    fn gather(&self, x: &Tensor, first: usize, count: usize) -> candle_core::Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        if (h, w) != (self.in_side, self.in_side) {
            candle_core::bail!("expected a {0}x{0} input, got {h}x{w}", self.in_side);
        }
        let indices = self
            .indices
            .narrow(0, first * self.taps, count * self.taps)?;
        x.reshape((n, h * w, c))?
            .index_select(&indices, 1)?
            .reshape((n, count, self.taps, c))
    }

    fn positions(&self) -> usize {
        self.out_side * self.out_side
    }
}

/// A square convolution with dlib's default padding for its stride followed by dlib's
/// `affine` layer (folded into the filters and bias by [`nn::conv_affine`]), computed as one
/// matrix product over gathered windows on channels-last tensors.
#[derive(Debug, Clone)]
struct ConvAffine {
    /// [size * size * in_channels, out_channels], rows ordered (dy, dx, channel).
    weight: Tensor,
    /// [out_channels].
    bias: Tensor,
    windows: Windows,
}

impl ConvAffine {
    /// A `size`x`size` convolution with `stride` on `in_side`x`in_side` inputs.
    fn load(
        (in_channels, out_channels): (usize, usize),
        (size, stride): (usize, usize),
        in_side: usize,
        conv: VarBuilder,
        affine: VarBuilder,
    ) -> candle_core::Result<Self> {
        let (weight, bias) =
            nn::conv_affine(&conv, Some(&affine), (in_channels, out_channels), size)?;
        let weight = weight
            .permute((2, 3, 1, 0))?
            .reshape((size * size * in_channels, out_channels))?
            .contiguous()?;
        let padding = nn::default_padding(size, stride);
        let windows = Windows::new(in_side, size, stride, padding, conv.device())?;
        Ok(Self {
            weight,
            bias,
            windows,
        })
    }

    /// NHWC in, NHWC out. On the CPU the output positions are computed in groups whose
    /// gathered windows fill at most [`CPU_COLUMNS_BYTES`], so that the matrix product works
    /// from cache (measured on one core: 15 GFLOP/s for a 20736 x 147 by 147 x 32 product,
    /// 55 GFLOP/s for 2048 rows of it).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, _, _, channels) = x.dims4()?;
        let positions = self.windows.positions();
        let row_bytes = self.windows.taps * channels * std::mem::size_of::<f32>();
        let group = if x.device().is_cpu() {
            (CPU_COLUMNS_BYTES / (row_bytes * n)).clamp(1, positions)
        } else {
            positions
        };
        let outputs = (0..positions)
            .step_by(group)
            .map(|first| {
                let count = group.min(positions - first);
                self.windows
                    .gather(x, first, count)?
                    .reshape((n * count, ()))?
                    .matmul(&self.weight)?
                    .broadcast_add(&self.bias)?
                    .reshape((n, count, ()))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let side = self.windows.out_side;
        Tensor::cat(&outputs, 1)?.reshape((n, side, side, ()))
    }
}

/// Square pooling without padding on NHWC tensors: the maximum or the mean of each window.
#[derive(Debug, Clone)]
struct Pool {
    windows: Windows,
    max: bool,
}

impl Pool {
    fn new(
        in_side: usize,
        size: usize,
        stride: usize,
        max: bool,
        device: &Device,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            windows: Windows::new(in_side, size, stride, 0, device)?,
            max,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let gathered = self.windows.gather(x, 0, self.windows.positions())?;
        let pooled = if self.max {
            gathered.max(2)?
        } else {
            gathered.mean(2)?
        };
        let side = self.windows.out_side;
        pooled.reshape((x.dim(0)?, side, side, ()))
    }
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

/// One residual block (`ares`, or `ares_down` with its 2x2/2 average-pooled shortcut).
#[derive(Debug, Clone)]
struct ResidualBlock {
    first: ConvAffine,
    second: ConvAffine,
    shortcut_pool: Option<Pool>,
    out_side: usize,
}

impl ResidualBlock {
    fn load(
        (in_channels, channels): (usize, usize),
        stride: usize,
        in_side: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let first = ConvAffine::load(
            (in_channels, channels),
            (BLOCK_CONV_SIZE, stride),
            in_side,
            vb.pp("conv1"),
            vb.pp("affine1"),
        )?;
        let side = first.windows.out_side;
        let second = ConvAffine::load(
            (channels, channels),
            (BLOCK_CONV_SIZE, 1),
            side,
            vb.pp("conv2"),
            vb.pp("affine2"),
        )?;
        let shortcut_pool = (stride == 2)
            .then(|| Pool::new(in_side, 2, 2, false, vb.device()))
            .transpose()?;
        let shortcut_side = shortcut_pool
            .as_ref()
            .map_or(in_side, |pool| pool.windows.out_side);
        Ok(Self {
            first,
            second,
            shortcut_pool,
            out_side: side.max(shortcut_side),
        })
    }

    /// NHWC in, NHWC out.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.first.forward(x)?.relu()?;
        let y = self.second.forward(&y)?;
        let shortcut = match &self.shortcut_pool {
            Some(pool) => pool.forward(x)?,
            None => x.clone(),
        };
        add_zero_padded(&y, &shortcut)?.relu()
    }
}

/// dlib's face recognition ResNet.
#[derive(Debug, Clone)]
pub struct FaceEmbedder {
    /// Channel means of the input layer, [3].
    mean: Tensor,
    network: Network,
    device: Device,
}

/// The layers, as the device runs them.
#[derive(Debug, Clone)]
enum Network {
    /// On the CPU, [`resnet`] on the kernels of [`crate::kernels`], with the weights packed
    /// for them (and only so: each layer's tensors are dropped once packed).
    Kernels(ResNet),
    /// On other devices, candle tensors.
    Tensors(Box<TensorNetwork>),
}

#[derive(Debug, Clone)]
struct TensorNetwork {
    stem: ConvAffine,
    stem_pool: Pool,
    blocks: Vec<ResidualBlock>,
    /// [256, 128] (in, out).
    fc: Tensor,
}

impl Model for FaceEmbedder {
    /// Loads the weights written by the converter (`dlib_face_recognition_resnet_model_v1`):
    /// for the CPU kernels on the CPU (unless [`crate::kernels::models_use_kernels`] says
    /// otherwise), as tensors on other devices.
    fn load(vb: VarBuilder) -> Result<Self> {
        let kernels = crate::kernels::models_use_kernels(vb.device())?;
        Self::load_network(vb, kernels)
    }
}

impl FaceEmbedder {
    /// Loads the network for the CPU kernels (`kernels`) or as tensors on the device.
    fn load_network(vb: VarBuilder, kernels: bool) -> Result<Self> {
        let mean = vb.get(3, "input.mean")?;
        let channels = BLOCKS.last().map_or(STEM_CONV.0, |&(channels, _)| channels);
        let fc = vb
            .get((ENCODING_LEN, channels), "fc.weight")?
            .t()?
            .contiguous()?;
        let network = if kernels {
            Network::Kernels(kernel_network(&vb, &mean, &fc)?)
        } else {
            Network::Tensors(Box::new(TensorNetwork::load(&vb, fc)?))
        };
        Ok(Self {
            mean,
            network,
            device: vb.device().clone(),
        })
    }
}

impl TensorNetwork {
    fn load(vb: &VarBuilder, fc: Tensor) -> Result<Self> {
        let (stem_channels, stem_size, stem_stride) = STEM_CONV;
        let stem = ConvAffine::load(
            (3, stem_channels),
            (stem_size, stem_stride),
            CHIP_SIZE as usize,
            vb.pp("stem.conv"),
            vb.pp("stem.affine"),
        )?;
        let (pool_size, pool_stride) = STEM_POOL;
        let stem_pool = Pool::new(
            stem.windows.out_side,
            pool_size,
            pool_stride,
            true,
            vb.device(),
        )?;
        let mut side = stem_pool.windows.out_side;
        let mut in_channels = stem_channels;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (index, &(channels, stride)) in BLOCKS.iter().enumerate() {
            let vb = vb.pp(format!("blocks.{index}"));
            let block = ResidualBlock::load((in_channels, channels), stride, side, vb)?;
            side = block.out_side;
            blocks.push(block);
            in_channels = channels;
        }
        Ok(Self {
            stem,
            stem_pool,
            blocks,
            fc,
        })
    }

    fn forward_slice(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = self.stem.forward(x)?.relu()?;
        let mut x = self.stem_pool.forward(&x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // avg_pool_everything, then fc_no_bias.
        x.mean((1, 2))?.matmul(&self.fc)
    }
}

/// The network for the CPU kernels, each convolution packed from its tensors as it loads.
fn kernel_network(vb: &VarBuilder, mean: &Tensor, fc: &Tensor) -> Result<ResNet> {
    let conv = |(conv, affine): (String, String), channels, (size, stride)| -> Result<Conv> {
        let (weight, bias) = nn::conv_affine(&vb.pp(conv), Some(&vb.pp(affine)), channels, size)?;
        Ok(Conv::from_tensors(&weight, &bias, stride)?)
    };
    let names = |prefix: &str, index: &str| {
        (
            format!("{prefix}.conv{index}"),
            format!("{prefix}.affine{index}"),
        )
    };
    let (stem_channels, stem_size, stem_stride) = STEM_CONV;
    let stem = conv(
        names("stem", ""),
        (3, stem_channels),
        (stem_size, stem_stride),
    )?;
    let mut in_channels = stem_channels;
    let mut blocks = Vec::with_capacity(BLOCKS.len());
    for (index, &(channels, stride)) in BLOCKS.iter().enumerate() {
        let block = format!("blocks.{index}");
        blocks.push(Block {
            first: conv(
                names(&block, "1"),
                (in_channels, channels),
                (BLOCK_CONV_SIZE, stride),
            )?,
            second: conv(
                names(&block, "2"),
                (channels, channels),
                (BLOCK_CONV_SIZE, 1),
            )?,
            downsample: stride == 2,
        });
        in_channels = channels;
    }
    let means = mean.to_vec1::<f32>()?;
    Ok(ResNet {
        mean: [means[0], means[1], means[2]],
        stem,
        stem_pool: STEM_POOL,
        blocks,
        fc: fc.flatten_all()?.to_vec1::<f32>()?,
        fc_outputs: ENCODING_LEN,
    })
}

impl FaceEmbedder {
    /// The network's input for a batch of 150x150 chips, channels-last: [N, 150, 150, 3],
    /// `(pixel - mean) / 256`.
    fn input_nhwc(&self, chips: &[RgbImage]) -> Result<Tensor> {
        check_chips(chips)?;
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

    /// Encodings of 150x150 chips, computed in batches of [`EMBED_BATCH`].
    pub fn embed(&self, chips: &[RgbImage]) -> Result<Vec<Encoding>> {
        let mut encodings = Vec::with_capacity(chips.len());
        for batch in chips.chunks(EMBED_BATCH) {
            encodings.extend(self.embed_batch(batch)?);
        }
        Ok(encodings)
    }

    /// The buffers of a tensor pass over one chip ([`crate::plan`]), from the architecture the
    /// tensor network is built from: each layer's gathered windows `[positions, taps,
    /// channels]`, its output (the product, the bias added, the pieces joined) and its input,
    /// beside the batch's chips.
    pub fn chip_cost() -> ItemCost {
        let input = u64::from(CHIP_SIZE * CHIP_SIZE) * 3;
        let (mut largest, mut peak) = (input, 0);
        let mut layer = |in_elements: u64, gathered: u64, output: u64| {
            largest = largest.max(gathered).max(output);
            peak = peak.max(input + in_elements + gathered + 3 * output);
        };
        // A window operation on a square input of `side` and `channels`: (out side, gathered).
        let windows = |side: usize, size: usize, stride: usize, padding: usize, channels: usize| {
            let out = nn::output_len(side, size, stride, padding).unwrap_or(0);
            (out, (out * out * size * size * channels) as u64)
        };
        let square = |side: usize, channels: usize| (side * side * channels) as u64;

        let (stem_channels, stem_size, stem_stride) = STEM_CONV;
        let (side, gathered) = windows(CHIP_SIZE as usize, stem_size, stem_stride, 0, 3);
        layer(input, gathered, square(side, stem_channels));
        let (pool_size, pool_stride) = STEM_POOL;
        let (mut side, gathered) = windows(side, pool_size, pool_stride, 0, stem_channels);
        layer(
            square(side, stem_channels),
            gathered,
            square(side, stem_channels),
        );
        let mut in_channels = stem_channels;
        for &(channels, stride) in &BLOCKS {
            let in_elements = square(side, in_channels);
            let padding = nn::default_padding(BLOCK_CONV_SIZE, stride);
            let (out, gathered) = windows(side, BLOCK_CONV_SIZE, stride, padding, in_channels);
            layer(in_elements, gathered, square(out, channels));
            let (_, gathered) = windows(out, BLOCK_CONV_SIZE, 1, 1, channels);
            layer(square(out, channels), gathered, square(out, channels));
            let shortcut = if stride == 2 {
                let (pooled, gathered) = windows(side, 2, 2, 0, in_channels);
                layer(in_elements, gathered, square(pooled, in_channels));
                pooled
            } else {
                side
            };
            side = out.max(shortcut);
            in_channels = channels;
        }
        ItemCost {
            largest_buffer_elements: largest,
            device_bytes: peak * std::mem::size_of::<f32>() as u64,
        }
    }

    /// Encodings of 150x150 chips in passes within `limits` ([`crate::plan`]): as many
    /// chips per forward pass as candle's limits and the device-memory budget allow.
    pub fn embed_within(&self, chips: &[RgbImage], limits: &PassLimits) -> Result<Vec<Encoding>> {
        if let Network::Kernels(_) = &self.network {
            return self.embed_batch(chips);
        }
        let mut encodings = Vec::with_capacity(chips.len());
        let mut rest = chips;
        for pass in plan_passes(chips.len(), Self::chip_cost(), limits)? {
            let (now, later) = rest.split_at(pass.items);
            encodings.extend(self.embed_batch(now)?);
            rest = later;
        }
        Ok(encodings)
    }

    /// Encodings of one batch of 150x150 chips, in one forward pass (on a GPU, large
    /// batches of chips from many photos; see the batched pipeline, `pipeline::device_batch`).
    pub fn embed_batch(&self, chips: &[RgbImage]) -> Result<Vec<Encoding>> {
        if let Network::Kernels(network) = &self.network {
            check_chips(chips)?;
            return Ok(network
                .forward(chips)
                .chunks_exact(ENCODING_LEN)
                .map(|encoding| {
                    let values: [f32; ENCODING_LEN] = encoding.try_into().expect("whole encodings");
                    Encoding::from(values)
                })
                .collect());
        }
        let output = self.forward_nhwc(&self.input_nhwc(chips)?)?;
        output
            .to_vec2::<f32>()?
            .into_iter()
            .map(|row| {
                <[f32; ENCODING_LEN]>::try_from(row)
                    .map(Encoding::from)
                    .map_err(|row| Error::InvalidInput(format!("encoding of {}", row.len())))
            })
            .collect()
    }

    /// Channels-last normalised chips [N, 150, 150, 3] to encodings [N, 128]. Tensors on the
    /// CPU (the kernels' reference in tests) run large batches in slices of [`CPU_SLICE`]
    /// chips, which keeps the gathered windows small enough to stay in cache and in reused
    /// memory.
    fn forward_nhwc(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let network = match &self.network {
            Network::Kernels(network) => return forward_kernels(network, x),
            Network::Tensors(network) => network,
        };
        let n = x.dim(0)?;
        if !x.device().is_cpu() || n <= CPU_SLICE {
            return network.forward_slice(x);
        }
        let slices = (0..n)
            .step_by(CPU_SLICE)
            .map(|start| network.forward_slice(&x.narrow(0, start, CPU_SLICE.min(n - start))?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&slices, 0)
    }
}

/// [`FaceEmbedder::forward_nhwc`] with the CPU kernels: the tensor's values in, a tensor out.
fn forward_kernels(network: &ResNet, x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    let mut input = Activations::zeros(n, h, w, c, network.stem.padding());
    let values = x.flatten_all()?.to_vec1::<f32>()?;
    for (position, values) in values.chunks_exact(c).enumerate() {
        let (image, y, x) = (position / (h * w), position / w % h, position % w);
        input.at_mut(image, y, x).copy_from_slice(values);
    }
    let output = network.forward_activations(input);
    Tensor::from_vec(output, (n, ENCODING_LEN), x.device())
}

/// Refuses chips that are not 150x150.
fn check_chips(chips: &[RgbImage]) -> Result<()> {
    match chips
        .iter()
        .find(|chip| chip.dimensions() != (CHIP_SIZE, CHIP_SIZE))
    {
        Some(chip) => Err(Error::InvalidInput(format!(
            "face chips must be {CHIP_SIZE}x{CHIP_SIZE}, got {}x{}",
            chip.width(),
            chip.height()
        ))),
        None => Ok(()),
    }
}

impl Module for FaceEmbedder {
    /// Normalised chips [N, 3, 150, 150] to encodings [N, 128].
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_nhwc(&x.permute((0, 2, 3, 1))?.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_dlib_output_sizes_and_padding() {
        let device = Device::Cpu;
        // The stem and the pooling after it: 150 -> 72 -> 35.
        assert_eq!(Windows::new(150, 7, 2, 0, &device).unwrap().out_side, 72);
        assert_eq!(Windows::new(72, 3, 2, 0, &device).unwrap().out_side, 35);
        // At 8x8 the strided convolution gives 3x3 but the pooled shortcut 4x4.
        assert_eq!(Windows::new(8, 3, 2, 0, &device).unwrap().out_side, 3);
        assert_eq!(Windows::new(8, 2, 2, 0, &device).unwrap().out_side, 4);
        // A padded 3x3 window at the top-left corner reads zeros outside the input.
        let windows = Windows::new(4, 3, 1, 1, &device).unwrap();
        let first: Vec<u32> = windows.indices.narrow(0, 0, 9).unwrap().to_vec1().unwrap();
        let m = u32::MAX;
        assert_eq!(first, [m, m, m, m, 0, 1, m, 4, 5]);
    }

    #[test]
    fn cpu_kernels_and_tensors_agree() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let path = root
            .join("weights")
            .join(crate::weights::files::FACE_EMBEDDER);
        let load = |kernels| {
            let vb = crate::weights::open(&path, &Device::Cpu).expect("weights");
            FaceEmbedder::load_network(vb, kernels).expect("embedder")
        };
        let chip = |seed: u32| {
            RgbImage::from_fn(CHIP_SIZE, CHIP_SIZE, |x, y| {
                let v = |k: u32| ((x * k + y * (k + seed) + x * y / 7) % 251) as u8;
                image::Rgb([v(3), v(7), v(11)])
            })
        };
        let chips = [chip(1), chip(2), chip(5), chip(9), chip(4)];
        let kernels = load(true).embed(&chips).expect("kernels");
        let tensors = load(false).embed(&chips).expect("tensors");
        let worst = kernels
            .iter()
            .flatten()
            .zip(tensors.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-6, "largest difference {worst}");
    }

    #[test]
    fn adding_tensors_of_different_shapes_zero_pads_the_smaller_at_the_end() {
        let device = Device::Cpu;
        let a = Tensor::new(&[[[[1f32], [2.]], [[3.], [4.]]]], &device).unwrap();
        let b = Tensor::new(&[[[[10f32, 20.]]]], &device).unwrap();
        // a: [1, 2, 2, 1], b: [1, 1, 1, 2] -> [1, 2, 2, 2]
        let sum = add_zero_padded(&a, &b).unwrap();
        assert_eq!(sum.dims(), [1, 2, 2, 2]);
        let values: Vec<f32> = sum.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(values, [11., 20., 2., 0., 3., 0., 4., 0.]);
    }
}
