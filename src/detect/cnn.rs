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

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::detect::nms::BoxOverlap;
use crate::detect::pyramid::{self, rect_from_upsampled};
use crate::detect::tiled_pyramid::TiledPyramid;
use crate::error::{Error, Result};
use crate::geometry::{DPoint, DRect, Rect};
use crate::kernels::conv::{Activations, Conv, forward_banded, forward_chain};
use crate::nn;
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
    /// On the CPU, the same layer for the kernels of [`crate::kernels`].
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
    ) -> Result<Self> {
        let affine_vb = affine.then(|| vb.pp("affine"));
        let (weight, bias) = nn::conv_affine(
            &vb.pp("conv"),
            affine_vb.as_ref(),
            (in_channels, filters),
            size,
        )?;
        let padding = nn::default_padding(size, stride);
        let cpu = if weight.device().is_cpu() {
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
            x.conv2d(&self.weight, self.padding, self.stride, 1, 1)?
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

/// Bytes of host memory [`CnnFaceDetector::prepare`] holds per pixel of the upsampled photo: the
/// tiled pyramid's three float planes (about 3.7 times the upsampled photo's pixels: 15.8 M for
/// a 1200x900 photo at upsample 1) and the upsampled photo itself, rounded up. On a GPU the
/// network's activations are in device memory, so this is what a prepared photo costs the host.
pub const INPUT_BYTES_PER_UPSAMPLED_PIXEL: u64 = 52;

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
    /// The tiled pyramid's three planes `[1, 3, rows, cols]`, already on the detector's device.
    Planes(Tensor),
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
    fn load(vb: VarBuilder) -> Result<Self> {
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
}

impl CnnFaceDetector {
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
            check_size(image, upsample)?;
        }
        let inputs = images
            .iter()
            .map(|image| self.prepare(image, upsample))
            .collect::<Result<Vec<_>>>()?;
        self.detect_prepared(&inputs)
    }

    /// Detects faces in prepared photos: those of the same shape go through the network
    /// together, one pass per shape.
    pub fn detect_prepared(&self, inputs: &[CnnInput]) -> Result<Vec<Vec<Detection>>> {
        let mut results = vec![Vec::new(); inputs.len()];
        let mut shapes: Vec<(usize, usize)> = inputs.iter().filter_map(CnnInput::shape).collect();
        shapes.sort_unstable();
        shapes.dedup();
        for shape in shapes {
            let indices: Vec<usize> = (0..inputs.len())
                .filter(|&i| inputs[i].shape() == Some(shape))
                .collect();
            let batch: Vec<&CnnInput> = indices.iter().map(|&i| &inputs[i]).collect();
            for (&index, scores) in indices.iter().zip(self.score_maps(&batch)?) {
                results[index] = self.detections(&inputs[index], &scores);
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
        check_size(image, upsample)?;
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
            let mut planes = vec![0f32; 3 * pyramid.rows * pyramid.cols];
            pyramid.fill(upsampled.as_ref().unwrap_or(image), self.mean, &mut planes);
            Some(NetworkInput::Planes(Tensor::from_vec(
                planes,
                (1, 3, pyramid.rows, pyramid.cols),
                &self.device,
            )?))
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
                    NetworkInput::Planes(_) => Err(Error::InvalidInput(
                        "a CNN input prepared for another device".to_string(),
                    )),
                })
                .collect();
        }
        let samples = samples
            .iter()
            .map(|sample| match sample {
                NetworkInput::Planes(planes) => Ok(planes),
                NetworkInput::Image(_) => Err(Error::InvalidInput(
                    "a CNN input prepared for the CPU kernels".to_string(),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let input = match samples[..] {
            [] => return Ok(Vec::new()),
            [single] => single.clone(),
            _ => Tensor::cat(&samples, 0)?,
        };
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
fn check_size(image: &RgbImage, upsample: u32) -> Result<()> {
    let pixels = u64::from(image.width()) * u64::from(image.height());
    if pixels.saturating_mul(4u64.saturating_pow(upsample)) > MAX_PIXELS {
        return Err(Error::InvalidInput(format!(
            "{}x{} upsampled {upsample} times is more than the CNN detector's {} megapixels",
            image.width(),
            image.height(),
            MAX_PIXELS / 1_000_000
        )));
    }
    Ok(())
}
