//! dlib's CNN face detector (`cnn_face_detection_model_v1`, the MMOD network of
//! `mmod_human_face_detector.dat`).
//!
//! The photo is upsampled `upsample` times with `pyramid_up`, packed into a tiled 5/6-rate
//! image pyramid ([`crate::tiled_pyramid`]), and scanned by a fully convolutional network:
//! three stride-2 5x5 convolutions, three 5x5 convolutions with 45 filters (each followed
//! by dlib's `affine` and `relu`) and a 9x9 single-filter head. As dlib's `loss_mmod_`,
//! every positive output is a detection of the sliding window centred on the input position
//! it maps to; the windows are mapped back through the pyramid, sorted by score, pruned by
//! non-maximum suppression and mapped down by the upsampling.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::geometry::Rect;
use crate::tiled_pyramid::{DRect, TiledPyramid};

/// A convolution followed by dlib's per-channel `affine` layer and optionally a `relu`.
/// The affine transform is folded into the convolution's weights and bias.
struct ConvLayer {
    weight: Tensor,
    bias: Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    relu: bool,
}

impl ConvLayer {
    /// dlib's `con_<filters, k, k, stride, stride>` pads by `k / 2` when the stride is 1
    /// and not at all otherwise.
    fn load(
        vb: VarBuilder,
        in_channels: usize,
        filters: usize,
        kernel: usize,
        stride: usize,
        affine: bool,
    ) -> Result<Self> {
        let conv = vb.pp("conv");
        let mut weight = conv.get((filters, in_channels, kernel, kernel), "weight")?;
        let mut bias = conv.get(filters, "bias")?;
        if affine {
            let affine = vb.pp("affine");
            let gamma = affine.get(filters, "gamma")?;
            let beta = affine.get(filters, "beta")?;
            weight = weight.broadcast_mul(&gamma.reshape((filters, 1, 1, 1))?)?;
            bias = ((bias * &gamma)? + beta)?;
        }
        Ok(Self {
            weight,
            bias: bias.reshape((1, filters, 1, 1))?,
            kernel,
            stride,
            padding: if stride == 1 { kernel / 2 } else { 0 },
            relu: affine,
        })
    }

    /// dlib's `map_output_to_input` of a convolution.
    fn output_to_input(&self, p: f64) -> f64 {
        p * self.stride as f64 - self.padding as f64 + (self.kernel / 2) as f64
    }
}

impl Module for ConvLayer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x
            .conv2d(&self.weight, self.padding, self.stride, 1, 1)?
            .broadcast_add(&self.bias)?;
        if self.relu { y.relu() } else { Ok(y) }
    }
}

/// dlib's `test_box_overlap`: two boxes overlap when the intersection covers more than
/// `iou` of their bounding box, or more than `covered` of either box.
#[derive(Debug, Clone, Copy)]
struct BoxOverlap {
    iou: f64,
    covered: f64,
}

impl BoxOverlap {
    fn overlaps(&self, a: &Rect, b: &Rect) -> bool {
        let inner = Rect::new(
            a.left.max(b.left),
            a.top.max(b.top),
            a.right.min(b.right),
            a.bottom.min(b.bottom),
        )
        .area() as f64;
        if inner == 0.0 {
            return false;
        }
        let outer = Rect::new(
            a.left.min(b.left),
            a.top.min(b.top),
            a.right.max(b.right),
            a.bottom.max(b.bottom),
        )
        .area() as f64;
        inner / outer > self.iou
            || inner / a.area() as f64 > self.covered
            || inner / b.area() as f64 > self.covered
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

/// A face found by [`CnnFaceDetector`]: dlib's `mmod_rectangle`.
pub type Detection = (Rect, f32);

impl CnnFaceDetector {
    pub fn load(vb: VarBuilder) -> Result<Self> {
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
        for (i, filters) in [16, 32, 32].into_iter().enumerate() {
            layers.push(ConvLayer::load(
                vb.pp(format!("downsampler.{i}")),
                channels,
                filters,
                5,
                2,
                true,
            )?);
            channels = filters;
        }
        for i in 0..3 {
            layers.push(ConvLayer::load(
                vb.pp(format!("rcon.{i}")),
                channels,
                45,
                5,
                1,
                true,
            )?);
            channels = 45;
        }
        layers.push(ConvLayer::load(
            vb.pp("head"),
            channels,
            windows.len(),
            9,
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

    /// Runs the network on a batch of tiled pyramids `[n, 3, rows, cols]` and returns the
    /// detector's score map `[n, windows, rows', cols']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }

    /// Detects faces in one photo, best first.
    pub fn detect(&self, image: &RgbImage, upsample: u32) -> Result<Vec<Detection>> {
        Ok(self
            .detect_batch(std::slice::from_ref(image), upsample)?
            .pop()
            .unwrap_or_default())
    }

    /// Detects faces in several photos. Photos of the same size go through the network
    /// together as one batch.
    pub fn detect_batch(&self, images: &[RgbImage], upsample: u32) -> Result<Vec<Vec<Detection>>> {
        let mut results = vec![Vec::new(); images.len()];
        let mut sizes: Vec<(u32, u32)> = images.iter().map(|i| i.dimensions()).collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let indices: Vec<usize> = (0..images.len())
                .filter(|&i| images[i].dimensions() == size)
                .collect();
            let upsampled: Vec<RgbImage> = indices
                .iter()
                .map(|&i| upsample_image(&images[i], upsample))
                .collect();
            let found = self.detect_same_size(&upsampled)?;
            for (index, detections) in indices.into_iter().zip(found) {
                results[index] = detections
                    .into_iter()
                    .map(|(rect, score)| (rect_down(rect, upsample), score))
                    .collect();
            }
        }
        Ok(results)
    }

    /// Runs the detector on photos that all have the same size, without upsampling.
    fn detect_same_size(&self, images: &[RgbImage]) -> Result<Vec<Vec<Detection>>> {
        let Some(first) = images.first() else {
            return Ok(Vec::new());
        };
        let (width, height) = first.dimensions();
        let pyramid = TiledPyramid::new(
            height as usize,
            width as usize,
            self.padding,
            self.outer_padding,
        );
        if pyramid.levels.is_empty() {
            return Ok(vec![Vec::new(); images.len()]);
        }
        let plane = 3 * pyramid.rows * pyramid.cols;
        let mut data = vec![0f32; images.len() * plane];
        for (image, out) in images.iter().zip(data.chunks_exact_mut(plane)) {
            pyramid.fill(image, self.mean, out);
        }
        let input = Tensor::from_vec(
            data,
            (images.len(), 3, pyramid.rows, pyramid.cols),
            &self.device,
        )?;
        let scores = self.forward(&input)?.to_device(&Device::Cpu)?;
        let (_, channels, rows, cols) = scores.dims4()?;
        let scores = scores.flatten_all()?.to_vec1::<f32>()?;
        Ok(scores
            .chunks_exact(channels * rows * cols)
            .map(|sample| self.to_detections(&pyramid, sample, rows, cols))
            .collect())
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
                    let window = DRect::centered(x, y, width, height);
                    candidates.push((pyramid.to_image_space(window).round(), score));
                }
            }
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));

        let mut kept: Vec<Detection> = Vec::new();
        for (rect, score) in candidates {
            if !kept
                .iter()
                .any(|(other, _)| self.nms.overlaps(other, &rect))
            {
                kept.push((rect, score));
            }
        }
        kept
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

fn upsample_image(image: &RgbImage, times: u32) -> RgbImage {
    let mut image = image.clone();
    for _ in 0..times {
        image = pyramid_up(&image);
    }
    image
}

/// dlib's `pyramid_up(img, pyramid_down<2>)` on an RGB image: a bilinear resize to
/// `2w + 2` x `2h + 1` with the arithmetic of dlib's SSE `resize_image` for RGB images.
fn pyramid_up(image: &RgbImage) -> RgbImage {
    let (in_nc, in_nr) = (image.width() as i64, image.height() as i64);
    if in_nc == 0 || in_nr == 0 {
        return RgbImage::new(0, 0);
    }
    let (out_nc, out_nr) = (2 * in_nc + 2, 2 * in_nr + 1);
    let mut out = RgbImage::new(out_nc as u32, out_nr as u32);
    let x_scale = (in_nc - 1) as f64 / (out_nc - 1) as f64;
    let y_scale = (in_nr - 1) as f64 / (out_nr - 1) as f64;
    let at = |x: i64, y: i64| image.get_pixel(x as u32, y as u32).0.map(f32::from);
    let mut y = -y_scale;
    for r in 0..out_nr {
        y += y_scale;
        let top = y.floor() as i64;
        let bottom = (top + 1).min(in_nr - 1);
        let tb_frac = y - top as f64;
        let (tb, inv_tb) = (tb_frac as f32, (1.0 - tb_frac) as f32);
        let x0 = -4.0 * x_scale;
        let step = (4.0 * x_scale) as f32;
        let mut xs = [0, 1, 2, 3].map(|i| (x0 + i as f64 * x_scale) as f32);
        let mut c = 0;
        loop {
            for x in &mut xs {
                *x += step;
            }
            let left = xs.map(|x| x as i32 as i64);
            if left[3] + 1 >= in_nc || c + 4 > out_nc {
                break;
            }
            for i in 0..4 {
                let lr = xs[i] - left[i] as f32;
                let inv_lr = 1.0 - lr;
                let (tl, tr) = (at(left[i], top), at(left[i] + 1, top));
                let (bl, br) = (at(left[i], bottom), at(left[i] + 1, bottom));
                let pixel = std::array::from_fn(|ch| {
                    (inv_tb * inv_lr * tl[ch]
                        + inv_tb * lr * tr[ch]
                        + tb * inv_lr * bl[ch]
                        + tb * lr * br[ch]) as i32 as u8
                });
                out.put_pixel((c + i as i64) as u32, r as u32, image::Rgb(pixel));
            }
            c += 4;
        }
        let mut x = -x_scale + c as f64 * x_scale;
        for c in c..out_nc {
            x += x_scale;
            let left = x.floor() as i64;
            let right = (left + 1).min(in_nc - 1);
            let lr = x - left as f64;
            let (tl, tr) = (at(left, top), at(right, top));
            let (bl, br) = (at(left, bottom), at(right, bottom));
            let pixel = std::array::from_fn(|ch| {
                let upper = (1.0 - lr) * tl[ch] as f64 + lr * tr[ch] as f64;
                let lower = (1.0 - lr) * bl[ch] as f64 + lr * br[ch] as f64;
                ((1.0 - tb_frac) * upper + tb_frac * lower) as u8
            });
            out.put_pixel(c as u32, r as u32, image::Rgb(pixel));
        }
    }
    out
}

/// Maps a rectangle of an image upsampled `levels` times back to the original image, as
/// `pyramid_down<2>::rect_down` followed by rounding.
fn rect_down(rect: Rect, levels: u32) -> Rect {
    if levels == 0 {
        return rect;
    }
    let mut r = DRect::from(rect);
    for _ in 0..levels {
        r = DRect {
            left: r.left / 2.0 - 1.25,
            top: r.top / 2.0 - 0.75,
            right: r.right / 2.0 - 1.25,
            bottom: r.bottom / 2.0 - 0.75,
        };
    }
    r.round()
}
