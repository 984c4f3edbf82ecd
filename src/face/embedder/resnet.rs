//! The face recognition ResNet on the CPU: the layers of [`super`] (which describes the network
//! and dlib's rules for it: `max_pool`, `avg_pool` shortcuts, `add_prev` of unequal shapes,
//! `fc_no_bias`) on channels-last buffers, with the direct convolution of
//! [`crate::kernels::conv`] and plain loops for the pooling, the residual additions and the
//! final linear map. The affine layers are folded into the convolutions by the embedder.

use image::RgbImage;
use rayon::prelude::*;

use crate::kernels::conv::{Activations, Conv};
use crate::nn;

/// One residual block: two 3x3 convolutions, the first with the block's stride, and the
/// shortcut (the input, 2x2/2 average-pooled when the block downsamples).
#[derive(Debug, Clone)]
pub struct Block {
    pub first: Conv,
    pub second: Conv,
    pub downsample: bool,
}

/// The network, weights packed for the kernels.
#[derive(Debug, Clone)]
pub struct ResNet {
    /// Channel means of the input layer.
    pub mean: [f32; 3],
    /// The stem: convolution and relu, then max pooling (window size and stride).
    pub stem: Conv,
    pub stem_pool: (usize, usize),
    pub blocks: Vec<Block>,
    /// The final linear map, `[inputs][outputs]`.
    pub fc: Vec<f32>,
    pub fc_outputs: usize,
}

impl ResNet {
    /// The descriptors of 150x150 chips, `fc_outputs` floats each, one after the other.
    pub fn forward(&self, chips: &[RgbImage]) -> Vec<f32> {
        let Some(first) = chips.first() else {
            return Vec::new();
        };
        let (width, height) = (first.width() as usize, first.height() as usize);
        let mut x = Activations::zeros(chips.len(), height, width, 3, self.stem.padding());
        for (n, chip) in chips.iter().enumerate() {
            assert_eq!(chip.dimensions(), first.dimensions(), "chips of one size");
            for (y, row) in chip.rows().enumerate() {
                for (x_pos, pixel) in row.enumerate() {
                    for ((v, &p), m) in x
                        .at_mut(n, y, x_pos)
                        .iter_mut()
                        .zip(&pixel.0)
                        .zip(self.mean)
                    {
                        *v = (f32::from(p) - m) / 256.0;
                    }
                }
            }
        }
        self.forward_activations(x)
    }

    /// The descriptors of normalised chips (`(pixel - mean) / 256`, channels-last), with the
    /// border the stem needs.
    pub fn forward_activations(&self, x: Activations) -> Vec<f32> {
        let mut stem = Activations::default();
        self.stem
            .reset_output(&x, 0, &mut stem)
            .expect("chips large enough for the stem");
        self.stem.forward(&x, &mut stem, true);
        let first_pad = self.blocks.first().map_or(0, |b| b.first.padding());
        let (size, stride) = self.stem_pool;
        let mut x = pool(&stem, size, stride, Pooling::Max, first_pad);

        let mut middle = Activations::default();
        let mut residual = Activations::default();
        for (i, block) in self.blocks.iter().enumerate() {
            block
                .first
                .reset_output(&x, block.second.padding(), &mut middle)
                .expect("input large enough for the block");
            block.first.forward(&x, &mut middle, true);
            block
                .second
                .reset_output(&middle, 0, &mut residual)
                .expect("input large enough for the block");
            block.second.forward(&middle, &mut residual, false);
            let pad = self.blocks.get(i + 1).map_or(0, |b| b.first.padding());
            x = if block.downsample {
                // dlib's ares_down: the shortcut is a 2x2/2 average pooling.
                add_relu(&residual, &pool(&x, 2, 2, Pooling::Mean, 0), pad)
            } else {
                add_relu(&residual, &x, pad)
            };
        }
        self.head(&x)
    }

    /// Average over all positions, then the linear map without bias.
    fn head(&self, x: &Activations) -> Vec<f32> {
        let inputs = self.fc.len() / self.fc_outputs;
        assert_eq!(x.channels, inputs, "channels into the linear map");
        let positions = (x.height * x.width) as f32;
        let mut out = vec![0f32; x.batch * self.fc_outputs];
        for (n, out) in out.chunks_exact_mut(self.fc_outputs).enumerate() {
            let mut mean = vec![0f32; inputs];
            for y in 0..x.height {
                for x_pos in 0..x.width {
                    for (m, v) in mean.iter_mut().zip(x.at(n, y, x_pos)) {
                        *m += v;
                    }
                }
            }
            for (m, weights) in mean.iter().zip(self.fc.chunks_exact(self.fc_outputs)) {
                let m = m / positions;
                for (o, w) in out.iter_mut().zip(weights) {
                    *o += m * w;
                }
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Max,
    Mean,
}

/// `size`x`size` pooling with `stride`, no padding, into a buffer with a border `pad` wide.
fn pool(x: &Activations, size: usize, stride: usize, kind: Pooling, pad: usize) -> Activations {
    let side = |input| nn::output_len(input, size, stride, 0).expect("a window that fits");
    let shape = (x.batch, side(x.height), side(x.width), x.channels);
    build(shape, pad, |n, oy, ox, target| {
        let window = (0..size)
            .flat_map(|dy| (0..size).map(move |dx| (dy, dx)))
            .map(|(dy, dx)| x.at(n, oy * stride + dy, ox * stride + dx));
        match kind {
            Pooling::Max => {
                target.fill(f32::NEG_INFINITY);
                for values in window {
                    for (t, &v) in target.iter_mut().zip(values) {
                        *t = t.max(v);
                    }
                }
            }
            Pooling::Mean => {
                for values in window {
                    for (t, &v) in target.iter_mut().zip(values) {
                        *t += v;
                    }
                }
                let count = (size * size) as f32;
                for t in target.iter_mut() {
                    *t /= count;
                }
            }
        }
    })
}

/// `relu(a + b)` as dlib's `add_prev` adds tensors of different shapes: the result has the
/// larger size in every dimension and each operand counts as zero where it has no values.
fn add_relu(a: &Activations, b: &Activations, pad: usize) -> Activations {
    let shape = (
        a.batch,
        a.height.max(b.height),
        a.width.max(b.width),
        a.channels.max(b.channels),
    );
    build(shape, pad, |n, y, x, target| {
        for t in [a, b] {
            if y < t.height && x < t.width {
                for (sum, v) in target.iter_mut().zip(t.at(n, y, x)) {
                    *sum += v;
                }
            }
        }
        for sum in target.iter_mut() {
            *sum = sum.max(0.0);
        }
    })
}

/// New activations of shape `(batch, height, width, channels)` inside a zero border `pad`
/// wide, the channels of each position, which start at zero, set by `fill(n, y, x, channels)`;
/// the images in parallel.
fn build(
    (batch, height, width, channels): (usize, usize, usize, usize),
    pad: usize,
    fill: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
) -> Activations {
    let mut out = Activations::zeros(batch, height, width, channels, pad);
    let image_len = out.image_len();
    let row_len = out.padded_width() * channels;
    out.data
        .par_chunks_exact_mut(image_len)
        .enumerate()
        .for_each(|(n, image)| {
            for y in 0..height {
                for x in 0..width {
                    let start = (y + pad) * row_len + (x + pad) * channels;
                    fill(n, y, x, &mut image[start..start + channels]);
                }
            }
        });
    out
}
