//! dlib's CNN face detector (`cnn_face_detection_model_v1`, the MMOD network of
//! `mmod_human_face_detector.dat`).
//!
//! The photo is upsampled `upsample` times with `pyramid_up`, packed into a tiled 5/6-rate
//! image pyramid ([`crate::detect::tiled_pyramid`]), and scanned by a fully convolutional network:
//! three stride-2 5x5 convolutions, three 5x5 convolutions with 45 filters (each followed
//! by dlib's `affine` and `relu`) and a 9x9 single-filter head. As dlib's `loss_mmod_`,
//! every positive output is a detection of the sliding window centred on the input position
//! it maps to; the windows are mapped back through the pyramid, sorted by score, pruned by
//! non-maximum suppression and mapped down by the upsampling.

use candle_core::conv::CudnnFwdAlgo;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use serde::Serialize;

use crate::detect::nms::BoxOverlap;
use crate::detect::pyramid::{self, rect_from_upsampled};
use crate::detect::pyramid_fill::PyramidFill;
use crate::detect::tiled_pyramid::TiledPyramid;
use crate::error::{Error, Result};
use crate::geometry::{DPoint, DRect, Rect};
use crate::kernels::{
    self,
    conv::{Activations, Conv, forward_banded, forward_chain},
};
use crate::nn;
use crate::plan::{ItemCost, Pass, PassLimits, plan_passes};
use crate::weights::Model;

/// Filters of the `downsampler`'s three convolutions (stride 2), forward order.
pub const DOWNSAMPLER_FILTERS: [usize; 3] = [16, 32, 32];
/// Filters of the three `rcon5` convolutions (stride 1), forward order.
pub const RCON_FILTERS: [usize; 3] = [45, 45, 45];
/// Filter size of the `downsampler`'s and `rcon5`'s convolutions.
pub const FILTER_SIZE: usize = 5;
/// Filter size of the head, one filter per detector window (`con<1,9,9,1,1>`).
pub const HEAD_SIZE: usize = 9;

/// Output rows of the last strided layer computed per band on the CPU: the bands of the
/// earlier layers then hold 67 and 137 rows, of which the neighbouring bands' windows share
/// 3 and 9 (recomputed), and take about 16 MB for a 1200x900 photo upsampled once.
const CPU_BAND_ROWS: usize = 32;

/// A square convolution followed by dlib's per-channel `affine` layer and `relu` (or
/// neither, for the head), on NCHW tensors. The affine transform is folded into the filters
/// and bias ([`nn::conv_affine`]).
struct ConvLayer {
    /// Layers with many filters: [filters, in_channels, size, size]. Layers with few
    /// filters: [size * size * filters, in_channels], rows ordered (dy, dx, filter).
    weight: Tensor,
    /// [filters, 1, 1].
    bias: Tensor,
    filters: usize,
    size: usize,
    stride: usize,
    padding: usize,
    relu: bool,
    /// The same layer for the kernels of [`crate::kernels`], when they run the models.
    cpu: Option<Conv>,
}

impl ConvLayer {
    /// dlib's `con_<filters, size, size, stride, stride>`, with its default padding.
    fn load(
        vb: VarBuilder,
        in_channels: usize,
        filters: usize,
        size: usize,
        stride: usize,
        affine: bool,
        kernels: bool,
    ) -> Result<Self> {
        let affine_vb = affine.then(|| vb.pp("affine"));
        let (weight, bias) = nn::conv_affine(
            &vb.pp("conv"),
            affine_vb.as_ref(),
            (in_channels, filters),
            size,
        )?;
        let padding = nn::default_padding(size, stride);
        let cpu = if kernels {
            Some(Conv::from_tensors(&weight, &bias, stride)?)
        } else {
            None
        };
        let weight = if Self::shifts_outputs(filters, stride) {
            weight
                .permute((2, 3, 0, 1))?
                .reshape((size * size * filters, in_channels))?
        } else {
            weight
        };
        Ok(Self {
            weight: weight.contiguous()?,
            bias: bias.reshape((filters, 1, 1))?,
            filters,
            size,
            stride,
            padding,
            relu: affine,
            cpu,
        })
    }

    /// Layers with many filters are candle convolutions. With few filters, gathering every
    /// window (im2col) would copy far more data than the product computes, so such stride-1
    /// layers (the 9x9 head) apply every tap's filters to every input position in one product
    /// and add up the shifted results instead.
    fn shifts_outputs(filters: usize, stride: usize) -> bool {
        stride == 1 && filters < 8
    }

    /// The buffers this layer adds to a pass over one photo whose input is `(channels,
    /// rows, cols)`, with the device's convolution `algorithm`, or `None` when the filter does
    /// not fit the input. The input itself is counted by the caller.
    fn buffers(
        &self,
        (channels, rows, cols): (u64, u64, u64),
        algorithm: ConvAlgorithm,
    ) -> Option<LayerBuffers> {
        let out_rows = self.output_len(rows as usize)? as u64;
        let out_cols = self.output_len(cols as usize)? as u64;
        let (filters, taps) = (self.filters as u64, (self.size * self.size) as u64);
        let output = filters * out_rows * out_cols;
        let (largest, peak) = if Self::shifts_outputs(self.filters, self.stride) {
            // Padded twice (rows, then columns), every tap's products, then the running sum,
            // the next tap and their sum.
            let pad = 2 * self.padding as u64;
            let padded_rows = channels * (rows + pad) * cols;
            let padded = channels * (rows + pad) * (cols + pad);
            let products = taps * filters * (rows + pad) * (cols + pad);
            (
                padded.max(products),
                padded_rows + padded + products + 3 * output,
            )
        } else {
            // The gathered windows (im2col), the product, its transposition into place; then
            // the bias added and the relu, each a new buffer.
            let gathered = match algorithm {
                ConvAlgorithm::Im2col => out_rows * out_cols * channels * taps,
                ConvAlgorithm::ImplicitGemm | ConvAlgorithm::Direct => 0,
            };
            (gathered, gathered + 2 * output)
        };
        Some(LayerBuffers {
            output: (filters, out_rows, out_cols),
            largest: largest.max(output),
            peak,
        })
    }

    /// dlib's `map_output_to_input` of a convolution.
    fn output_to_input(&self, p: f64) -> f64 {
        p * self.stride as f64 - self.padding as f64 + (self.size / 2) as f64
    }

    /// The output length along one axis, or `None` when the filter does not fit the input.
    fn output_len(&self, input: usize) -> Option<usize> {
        nn::output_len(input, self.size, self.stride, self.padding)
    }

    fn out_size(&self, input: usize) -> candle_core::Result<usize> {
        self.output_len(input).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "a {0}x{0} filter does not fit the input",
                self.size
            ))
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = if Self::shifts_outputs(self.filters, self.stride) {
            self.forward_shifted(x)?
        } else {
            // cuDNN (the `cuda` build) runs the convolution as an implicit GEMM, which needs
            // no gathered windows; other backends ignore the choice (see `ConvAlgorithm`).
            x.conv2d_with_algo(
                &self.weight,
                self.padding,
                self.stride,
                1,
                1,
                Some(CudnnFwdAlgo::ImplicitGemm),
            )?
            .broadcast_add(&self.bias)?
        };
        if self.relu { y.relu() } else { Ok(y) }
    }

    /// Multiplies every input position by the filters of every tap, then adds up, for each
    /// output position, the products of the tap that reads each input around it.
    fn forward_shifted(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (size, p) = (self.size, self.padding);
        let (out_h, out_w) = (self.out_size(h)?, self.out_size(w)?);
        let (hp, wp) = (h + 2 * p, w + 2 * p);
        let x = x
            .pad_with_zeros(2, p, p)?
            .pad_with_zeros(3, p, p)?
            .reshape((n, c, hp * wp))?;
        // [n, taps * filters, hp, wp]: zero where the input is padding.
        let products = self.weight.broadcast_left(n)?.matmul(&x)?.reshape((
            n,
            size * size * self.filters,
            hp,
            wp,
        ))?;
        let mut sum: Option<Tensor> = None;
        for dy in 0..size {
            for dx in 0..size {
                let tap = products
                    .narrow(1, (dy * size + dx) * self.filters, self.filters)?
                    .narrow(2, dy, out_h)?
                    .narrow(3, dx, out_w)?
                    .contiguous()?;
                sum = Some(match sum {
                    None => tap,
                    Some(sum) => (sum + tap)?,
                });
            }
        }
        let sum = sum.ok_or_else(|| candle_core::Error::Msg("empty filter".into()))?;
        sum.broadcast_add(&self.bias)
    }
}

/// How a device computes the detector's convolutions, which decides the buffers of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConvAlgorithm {
    /// candle's CUDA convolution without cuDNN: every window gathered into a matrix (im2col),
    /// multiplied by the filters, the product transposed into place.
    Im2col,
    /// cuDNN's implicit GEMM (the `cuda` build): no gathered matrix and no workspace.
    ImplicitGemm,
    /// candle's direct convolution on the CPU device.
    Direct,
}

impl ConvAlgorithm {
    /// The algorithm that runs on `device` in this build.
    pub fn on(device: &Device) -> Self {
        match device {
            Device::Cpu => Self::Direct,
            _ if cfg!(feature = "cuda") => Self::ImplicitGemm,
            _ => Self::Im2col,
        }
    }
}

/// What one layer adds to a pass over one photo, in elements.
struct LayerBuffers {
    /// The layer's output (channels, rows, cols).
    output: (u64, u64, u64),
    /// Its largest buffer.
    largest: u64,
    /// The elements it holds at its peak besides its input.
    peak: u64,
}

/// The MMOD CNN face detector.
pub struct CnnFaceDetector {
    mean: [f32; 3],
    padding: usize,
    outer_padding: usize,
    layers: Vec<ConvLayer>,
    /// Width and height of each sliding window, one per output channel.
    windows: Vec<(f64, f64)>,
    nms: BoxOverlap,
    device: Device,
}

/// The most pixels the detector takes after upsampling. Its activations need about 230 bytes
/// per input pixel, so this bounds a detection to about 4 GB; a 1200x900 album photo
/// upsampled once is 4.3 megapixels.
pub const MAX_PIXELS: u64 = 16_000_000;

/// Bytes of host memory [`CnnFaceDetector::prepare`] holds per pixel of the upsampled photo on a
/// device: the upsampled photo while it is copied over (the device writes the tiled pyramid
/// itself), rounded up. On a GPU the network's activations are in device memory, so this is
/// what a prepared photo costs the host.
pub const INPUT_BYTES_PER_UPSAMPLED_PIXEL: u64 = 4;

/// A face found by [`CnnFaceDetector`]: dlib's `mmod_rectangle`.
pub type Detection = (Rect, f32);

/// A photo made ready for the network by [`CnnFaceDetector::prepare`].
pub struct CnnInput {
    pyramid: TiledPyramid,
    upsample: u32,
    /// What the network reads, or `None` when the photo is too small for the network's
    /// filters (it holds no face).
    network_input: Option<NetworkInput>,
}

/// The network's input for one photo.
enum NetworkInput {
    /// The upsampled photo, 8-bit RGB `[height * width * 3]`, already on the detector's
    /// device, and its (width, height): the device writes the tiled pyramid from it into the
    /// batch's input ([`PyramidFill`]).
    Photo(Tensor, (u32, u32)),
    /// On the CPU, the upsampled photo: the kernels fill the tiled pyramid (channels-last)
    /// when they run, so that it only takes memory while they do.
    Image(RgbImage),
}

impl CnnInput {
    /// The tiled pyramid's (rows, cols), or `None` when the photo is too small to hold a face.
    pub fn shape(&self) -> Option<(usize, usize)> {
        self.network_input
            .as_ref()
            .map(|_| (self.pyramid.rows, self.pyramid.cols))
    }
}

/// The detector's scores for one input, `[windows, rows, cols]`.
struct ScoreMap {
    scores: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl Model for CnnFaceDetector {
    /// Loads the converted `mmod_human_face_detector`: for the CPU kernels on the CPU (unless
    /// [`crate::kernels::models_use_kernels`] says otherwise), as tensors on other devices.
    fn load(vb: VarBuilder) -> Result<Self> {
        let kernels = kernels::models_use_kernels(vb.device())?;
        Self::load_with(vb, kernels)
    }
}

impl CnnFaceDetector {
    /// Loads the network for the CPU kernels (`kernels`) or as tensors on the device.
    fn load_with(vb: VarBuilder, kernels: bool) -> Result<Self> {
        let device = vb.device().clone();
        let scalars = |name: &str, len: usize| -> Result<Vec<f32>> {
            Ok(vb.get(len, name)?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
        };
        let mean = scalars("input.mean", 3)?;
        let padding = scalars("input.pyramid_padding", 1)?[0] as usize;
        let outer_padding = scalars("input.pyramid_outer_padding", 1)?[0] as usize;
        let nms = scalars("mmod.nms", 2)?;

        let windows_tensor = vb.get_unchecked("mmod.detector_windows")?;
        let windows: Vec<(f64, f64)> = match windows_tensor.dims() {
            [n, 2] if *n > 0 => windows_tensor
                .to_dtype(DType::F64)?
                .to_vec2::<f64>()?
                .into_iter()
                .map(|w| (w[0], w[1]))
                .collect(),
            dims => {
                return Err(Error::Weights(format!(
                    "mmod.detector_windows must be [n, 2] with n > 0, found {dims:?}"
                )));
            }
        };

        let mut layers = Vec::new();
        let mut channels = 3;
        let downsampler = DOWNSAMPLER_FILTERS
            .iter()
            .enumerate()
            .map(|(i, &filters)| (format!("downsampler.{i}"), filters, 2));
        let rcon = RCON_FILTERS
            .iter()
            .enumerate()
            .map(|(i, &filters)| (format!("rcon.{i}"), filters, 1));
        for (name, filters, stride) in downsampler.chain(rcon) {
            layers.push(ConvLayer::load(
                vb.pp(name),
                channels,
                filters,
                FILTER_SIZE,
                stride,
                true,
                kernels,
            )?);
            channels = filters;
        }
        layers.push(ConvLayer::load(
            vb.pp("head"),
            channels,
            windows.len(),
            HEAD_SIZE,
            1,
            false,
            kernels,
        )?);

        Ok(Self {
            mean: [mean[0], mean[1], mean[2]],
            padding,
            outer_padding,
            layers,
            windows,
            nms: BoxOverlap {
                iou: nms[0] as f64,
                covered: nms[1] as f64,
            },
            device,
        })
    }

    /// Runs the network on a batch of tiled pyramids `[n, 3, rows, cols]` and returns the
    /// detector's score map `[n, windows, rows', cols']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Detects faces in one photo, best first.
    pub fn detect(&self, image: &RgbImage, upsample: u32) -> Result<Vec<Detection>> {
        Ok(self
            .detect_batch(std::slice::from_ref(image), upsample)?
            .pop()
            .unwrap_or_default())
    }

    /// Detects faces in several photos. Photos of the same size go through the network
    /// together as one batch, so memory grows with the number of photos given at once
    /// (about 0.25 GB per 1200x900 photo at upsample 0 and 1 GB at upsample 1). A photo of
    /// more than [`MAX_PIXELS`] after upsampling is refused.
    pub fn detect_batch(&self, images: &[RgbImage], upsample: u32) -> Result<Vec<Vec<Detection>>> {
        for image in images {
            check_size(image.width(), image.height(), upsample)?;
        }
        let inputs = images
            .iter()
            .map(|image| self.prepare(image, upsample))
            .collect::<Result<Vec<_>>>()?;
        self.detect_prepared(&inputs)
    }

    /// The buffers of a pass of the network over one tiled pyramid of `(rows, cols)` with the
    /// convolution `algorithm`, from the loaded layers; `None` when the photo is too small for
    /// the network (it holds no face and never goes through it). A pass over `n` photos holds
    /// `n` times these.
    pub fn photo_cost(
        &self,
        (rows, cols): (usize, usize),
        algorithm: ConvAlgorithm,
    ) -> Option<ItemCost> {
        let input = 3 * rows as u64 * cols as u64;
        // The uploaded 8-bit photo (smaller than a quarter of the pyramid's floats) stays
        // alive beside the batch's input.
        let mut peak = input + input / 4;
        let mut largest = input;
        let mut shape = (3, rows as u64, cols as u64);
        for layer in &self.layers {
            let buffers = layer.buffers(shape, algorithm)?;
            let layer_input = shape.0 * shape.1 * shape.2;
            peak = peak.max(input / 4 + layer_input + buffers.peak);
            largest = largest.max(buffers.largest);
            shape = buffers.output;
        }
        Some(ItemCost {
            largest_buffer_elements: largest,
            device_bytes: peak * std::mem::size_of::<f32>() as u64,
        })
    }

    /// The tiled pyramid's (rows, cols) for a `width` x `height` photo upsampled `upsample`
    /// times, as [`Self::prepare`] lays it out.
    pub fn pyramid_shape(&self, (width, height): (u32, u32), upsample: u32) -> (usize, usize) {
        let (width, height) = pyramid::upsampled_size((width, height), upsample);
        let pyramid = TiledPyramid::new(
            height as usize,
            width as usize,
            self.padding,
            self.outer_padding,
        );
        (pyramid.rows, pyramid.cols)
    }

    /// The passes that `photos` photos of `width` x `height` at `upsample` take on this
    /// detector's device within `limits` ([`crate::plan`]); an error when one photo alone
    /// does not fit, or is refused by [`MAX_PIXELS`].
    pub fn plan(
        &self,
        (width, height): (u32, u32),
        upsample: u32,
        photos: usize,
        algorithm: ConvAlgorithm,
        limits: &PassLimits,
    ) -> Result<Vec<Pass>> {
        check_size(width, height, upsample)?;
        let shape = self.pyramid_shape((width, height), upsample);
        match self.photo_cost(shape, algorithm) {
            Some(cost) => plan_passes(photos, cost, limits),
            None => Ok(Vec::new()),
        }
    }

    /// Detects faces in prepared photos: those of the same shape go through the network
    /// together, in passes within candle's 32-bit limits ([`crate::plan`]).
    pub fn detect_prepared(&self, inputs: &[CnnInput]) -> Result<Vec<Vec<Detection>>> {
        self.detect_prepared_within(inputs, &PassLimits::default())
    }

    /// [`Self::detect_prepared`] with a device-memory budget in `limits` as well.
    pub fn detect_prepared_within(
        &self,
        inputs: &[CnnInput],
        limits: &PassLimits,
    ) -> Result<Vec<Vec<Detection>>> {
        let mut results = vec![Vec::new(); inputs.len()];
        let mut shapes: Vec<(usize, usize)> = inputs.iter().filter_map(CnnInput::shape).collect();
        shapes.sort_unstable();
        shapes.dedup();
        for shape in shapes {
            let indices: Vec<usize> = (0..inputs.len())
                .filter(|&i| inputs[i].shape() == Some(shape))
                .collect();
            let algorithm = ConvAlgorithm::on(&self.device);
            let cost = self.photo_cost(shape, algorithm).ok_or_else(|| {
                Error::InvalidInput("a photo too small for the CNN detector".to_string())
            })?;
            let passes = plan_passes(indices.len(), cost, limits)?;
            let mut indices = indices.as_slice();
            for pass in passes {
                let (now, later) = indices.split_at(pass.items);
                let batch: Vec<&CnnInput> = now.iter().map(|&i| &inputs[i]).collect();
                for (&index, scores) in now.iter().zip(self.score_maps(&batch)?) {
                    results[index] = self.detections(&inputs[index], &scores);
                }
                indices = later;
            }
        }
        Ok(results)
    }

    /// The CPU half of a detection before the network: the photo upsampled `upsample` times,
    /// packed into the tiled pyramid, normalised and copied to the detector's device (on a
    /// GPU, callers on many threads thus share the copying; on the CPU only the upsampled photo
    /// is kept, the kernels pack it when they run). Inputs of the same
    /// [`shape`](CnnInput::shape) go through the network together in [`Self::detect_prepared`].
    /// A photo of more than [`MAX_PIXELS`] after upsampling is refused.
    pub fn prepare(&self, image: &RgbImage, upsample: u32) -> Result<CnnInput> {
        check_size(image.width(), image.height(), upsample)?;
        let upsampled = (upsample > 0).then(|| pyramid::upsample(image, upsample));
        let (width, height) = upsampled.as_ref().unwrap_or(image).dimensions();
        let pyramid = TiledPyramid::new(
            height as usize,
            width as usize,
            self.padding,
            self.outer_padding,
        );
        // dlib refuses inputs too small for the network's filters; they hold no face.
        let fits = self
            .layers
            .iter()
            .try_fold((pyramid.rows, pyramid.cols), |(h, w), layer| {
                Some((layer.output_len(h)?, layer.output_len(w)?))
            });
        let network_input = if pyramid.levels.is_empty() || fits.is_none() {
            None
        } else if self.kernel_layers().is_some() {
            Some(NetworkInput::Image(
                upsampled.unwrap_or_else(|| image.clone()),
            ))
        } else {
            let photo = upsampled.unwrap_or_else(|| image.clone());
            let size = photo.dimensions();
            let values = photo.into_raw();
            let len = values.len();
            Some(NetworkInput::Photo(
                Tensor::from_vec(values, len, &self.device)?,
                size,
            ))
        };
        Ok(CnnInput {
            pyramid,
            upsample,
            network_input,
        })
    }

    /// Runs the network on prepared inputs that all have the same shape, as one batch on the
    /// detector's device, and returns each one's score map.
    fn score_maps(&self, inputs: &[&CnnInput]) -> Result<Vec<ScoreMap>> {
        let mut samples = Vec::with_capacity(inputs.len());
        let mut shape = None;
        for input in inputs {
            let (Some(network_input), Some(input_shape)) = (&input.network_input, input.shape())
            else {
                return Err(Error::InvalidInput(
                    "a photo too small for the CNN detector has no score map".to_string(),
                ));
            };
            if *shape.get_or_insert(input_shape) != input_shape {
                return Err(Error::InvalidInput(format!(
                    "CNN inputs of different shapes in one batch: {shape:?} and {input_shape:?}"
                )));
            }
            samples.push(network_input);
        }
        if let Some(layers) = self.kernel_layers() {
            return samples
                .iter()
                .zip(inputs)
                .map(|(sample, input)| match sample {
                    NetworkInput::Image(image) => {
                        Ok(self.score_map_cpu(&layers, &input.pyramid, image))
                    }
                    NetworkInput::Photo(..) => Err(Error::InvalidInput(
                        "a CNN input prepared for another device".to_string(),
                    )),
                })
                .collect();
        }
        let Some((rows, cols)) = shape else {
            return Ok(Vec::new());
        };
        // The batch's input, zero outside the levels, each photo's pyramid written into it on
        // the device.
        let input = Tensor::zeros((samples.len(), 3, rows, cols), DType::F32, &self.device)?;
        for (photo, (sample, input_photo)) in samples.iter().zip(inputs).enumerate() {
            let NetworkInput::Photo(pixels, size) = sample else {
                return Err(Error::InvalidInput(
                    "a CNN input prepared for the CPU kernels".to_string(),
                ));
            };
            let fill = PyramidFill {
                pyramid: &input_photo.pyramid,
                size: *size,
                mean: self.mean,
                photo,
            };
            input.inplace_op2(pixels, &fill)?;
        }
        let scores = self.forward(&input)?.to_device(&Device::Cpu)?;
        let (_, channels, rows, cols) = scores.dims4()?;
        let scores = scores.flatten_all()?.to_vec1::<f32>()?;
        Ok(scores
            .chunks_exact(channels * rows * cols)
            .map(|sample| ScoreMap {
                scores: sample.to_vec(),
                rows,
                cols,
            })
            .collect())
    }

    /// The layers for the CPU kernels, when the detector runs on the CPU.
    fn kernel_layers(&self) -> Option<Vec<(&Conv, bool)>> {
        self.layers
            .iter()
            .map(|layer| Some((layer.cpu.as_ref()?, layer.relu)))
            .collect()
    }

    /// One photo's score map with the CPU kernels. The tiled pyramid is written
    /// channels-last; the strided layers at the start, whose outputs are the largest, run in
    /// bands of rows (see [`crate::kernels::conv::forward_banded`]); the pyramid is dropped
    /// before the rest run on two reused buffers.
    fn score_map_cpu(
        &self,
        layers: &[(&Conv, bool)],
        pyramid: &TiledPyramid,
        image: &RgbImage,
    ) -> ScoreMap {
        // The first layer is a strided one, which reads no border.
        let mut input = Activations::zeros(1, pyramid.rows, pyramid.cols, 3, 0);
        pyramid.fill_channels_last(image, self.mean, &mut input.data);
        let strided = layers
            .iter()
            .take_while(|(conv, _)| conv.stride() > 1)
            .count();
        let (head, rest) = layers.split_at(strided);
        let pad = rest.first().map_or(0, |(conv, _)| conv.padding());
        let fits = "the layers fit (checked by prepare)";
        let reduced = if head.is_empty() {
            input
        } else {
            forward_banded(head, &input, CPU_BAND_ROWS, pad).expect(fits)
        };
        let scores = forward_chain(rest, reduced).expect(fits);
        ScoreMap {
            scores: scores.to_planes(0),
            rows: scores.height,
            cols: scores.width,
        }
    }

    /// The CPU half of a detection after the network: the faces an input's score map holds,
    /// best first, in the coordinates of the photo given to [`Self::prepare`].
    fn detections(&self, input: &CnnInput, scores: &ScoreMap) -> Vec<Detection> {
        self.to_detections(&input.pyramid, &scores.scores, scores.rows, scores.cols)
            .into_iter()
            .map(|(rect, score)| (rect_from_upsampled(rect, input.upsample), score))
            .collect()
    }

    /// dlib's `loss_mmod_::to_label` with `adjust_threshold` 0 for one sample's score map.
    fn to_detections(
        &self,
        pyramid: &TiledPyramid,
        scores: &[f32],
        rows: usize,
        cols: usize,
    ) -> Vec<Detection> {
        let mut candidates = Vec::new();
        for (k, &(width, height)) in self.windows.iter().enumerate() {
            for r in 0..rows {
                for c in 0..cols {
                    let score = scores[(k * rows + r) * cols + c];
                    if score <= 0.0 {
                        continue;
                    }
                    let (x, y) = self.output_to_input(c as f64, r as f64);
                    let window = DRect::centered(DPoint::new(x, y), width, height);
                    candidates.push((pyramid.to_image_space(window).round(), score));
                }
            }
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        self.nms.suppress(candidates)
    }

    /// The position in the input tensor that an output position is computed around.
    fn output_to_input(&self, mut x: f64, mut y: f64) -> (f64, f64) {
        for layer in self.layers.iter().rev() {
            x = layer.output_to_input(x);
            y = layer.output_to_input(y);
        }
        (x, y)
    }
}

/// Refuses a photo that is more than [`MAX_PIXELS`] once upsampled `upsample` times.
fn check_size(width: u32, height: u32, upsample: u32) -> Result<()> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels.saturating_mul(4u64.saturating_pow(upsample)) > MAX_PIXELS {
        return Err(Error::InvalidInput(format!(
            "{width}x{height} upsampled {upsample} times is more than the CNN detector's {} \
             megapixels",
            MAX_PIXELS / 1_000_000
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{files, open};

    fn load(kernels: bool) -> CnnFaceDetector {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("weights")
            .join(files::CNN_DETECTOR);
        let vb = open(&path, &Device::Cpu).expect("weights");
        CnnFaceDetector::load_with(vb, kernels).expect("detector")
    }

    fn photo(name: &str) -> RgbImage {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pkg/images")
            .join(name);
        image::open(path).expect("fixture").to_rgb8()
    }

    /// The candle tensor path (what a GPU runs) against the CPU kernels: the same score map
    /// within 1e-4 at every position, the same faces. Small photos, so that the tensor path's
    /// slower CPU convolution keeps the test short.
    #[test]
    fn tensor_path_scores_as_the_kernels_do() {
        let (kernels, tensors) = (load(true), load(false));
        for (name, upsample) in [("orig/Tom_Hanks_54745.png", 1), ("medium/obama.webp", 0)] {
            let image = photo(name);
            let on_kernels = kernels.prepare(&image, upsample).expect("prepare");
            let on_tensors = tensors.prepare(&image, upsample).expect("prepare");
            assert_eq!(on_kernels.shape(), on_tensors.shape(), "{name}");
            let want = kernels
                .score_maps(&[&on_kernels])
                .expect("kernels")
                .remove(0);
            let got = tensors
                .score_maps(&[&on_tensors])
                .expect("tensors")
                .remove(0);
            assert_eq!((want.rows, want.cols), (got.rows, got.cols), "{name}");
            let worst = want
                .scores
                .iter()
                .zip(&got.scores)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-4, "{name}: score maps differ by {worst}");
            let faces = kernels.detections(&on_kernels, &want);
            assert!(!faces.is_empty(), "{name}: no face");
            let rects = |faces: &[Detection]| faces.iter().map(|f| f.0).collect::<Vec<_>>();
            assert_eq!(
                rects(&faces),
                rects(&tensors.detections(&on_tensors, &got)),
                "{name}"
            );
        }
    }

    /// Photos of one shape go through the tensor path in one pass, each with the faces it
    /// has alone.
    #[test]
    fn a_batched_pass_finds_each_photos_faces() {
        let tensors = load(false);
        let photos = [photo("medium/obama.webp"), photo("medium/astronaut.webp")];
        let alone: Vec<_> = photos
            .iter()
            .map(|image| tensors.detect(image, 0).expect("detect"))
            .collect();
        let together = tensors.detect_batch(&photos, 0).expect("detect_batch");
        for (one, batched) in alone.iter().zip(&together) {
            assert!(!one.is_empty());
            assert_eq!(one.len(), batched.len());
            for (a, b) in one.iter().zip(batched) {
                assert_eq!(a.0, b.0);
                assert!((a.1 - b.1).abs() < 1e-4, "{} {}", a.1, b.1);
            }
        }
    }

    /// Buffers of a pass over a 1200x900 album photo upsampled once, from the loaded layers:
    /// the second strided layer's gathered windows are the largest with im2col (about 393
    /// million elements), which 2^31 allows five times; cuDNN's implicit GEMM gathers none.
    #[test]
    fn pass_buffers_follow_the_layers() {
        let detector = load(true);
        let shape = detector.pyramid_shape((1200, 900), 1);
        let im2col = detector.photo_cost(shape, ConvAlgorithm::Im2col).unwrap();
        let implicit = detector
            .photo_cost(shape, ConvAlgorithm::ImplicitGemm)
            .unwrap();
        assert!(
            (380_000_000..400_000_000).contains(&im2col.largest_buffer_elements),
            "{im2col:?}"
        );
        assert!(implicit.largest_buffer_elements < im2col.largest_buffer_elements / 4);
        assert!(implicit.device_bytes < im2col.device_bytes);
        let passes = detector
            .plan(
                (1200, 900),
                1,
                16,
                ConvAlgorithm::Im2col,
                &PassLimits::default(),
            )
            .unwrap();
        assert_eq!(
            passes.iter().map(|p| p.items).collect::<Vec<_>>(),
            [5, 5, 5, 1]
        );
    }
}
