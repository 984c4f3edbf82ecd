//! Direct convolution of channels-last activations, for the CPU paths of the face embedder and
//! the CNN face detector.
//!
//! dlib's `con_` layer computes, for every output position and filter, the dot product of the
//! filter with the input window (zero outside the input), plus the bias; dlib pads only
//! stride-1 windows, by half their size. Here the affine layer that follows each convolution
//! is already folded into the filters and bias (see the models), so one pass gives
//! `conv + affine (+ relu)`.
//!
//! The activations are channels-last and surrounded by a zero border ([`Activations`]), so a
//! window is `size` runs of `size * channels` consecutive floats and no index is ever
//! clamped. The filters are packed at load time in blocks of [`BLOCK`] output channels,
//! ordered (dy, dx, input channel, output channel). A kernel call computes [`TILE`] output
//! positions of one block: per window element it loads the block's weights once (two AVX
//! registers) and multiplies them with the element of each of the six windows, keeping the
//! 6 x 16 sums in twelve registers for the whole window (the shape of the inner kernels of
//! BLIS and `gemm`, without copying windows into a matrix first). Positions are enumerated
//! across images and rows, so the small deep layers of the embedder fill tiles too. The
//! position tiles and blocks are spread over rayon's threads.
//!
//! Every output is summed in the same order whatever the kernel: the window elements in
//! (dy, dx, channel) order from zero, then the bias. The AVX2 kernel fuses each multiply-add
//! (FMA); the portable one rounds the product first, so the two differ by float rounding only.
//!
//! A layer with a single filter (the CNN's 9x9 head) would waste fifteen of sixteen lanes
//! that way; it takes [`Conv::forward_single`], which vectorises along each run of the window
//! instead.

use candle_core::Tensor;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::kernels::Isa;
use crate::nn;

/// Output channels computed by one kernel call.
pub const BLOCK: usize = 16;
/// Output positions computed by one kernel call.
const TILE: usize = 6;
/// Output positions of a single-filter layer computed together, sharing the filter's loads.
const SINGLE_TILE: usize = 4;

/// Channels-last activations of a batch of images: per image `height x width` positions of
/// `channels` floats, inside a zero border `pad` positions wide.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activations {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub pad: usize,
    pub data: Vec<f32>,
}

impl Activations {
    /// All zeros.
    pub fn zeros(batch: usize, height: usize, width: usize, channels: usize, pad: usize) -> Self {
        let mut activations = Self::default();
        activations.reset(batch, height, width, channels, pad);
        activations
    }

    /// Gives the buffer a new shape, all zeros, reusing its allocation.
    pub fn reset(
        &mut self,
        batch: usize,
        height: usize,
        width: usize,
        channels: usize,
        pad: usize,
    ) {
        (self.batch, self.height, self.width, self.channels, self.pad) =
            (batch, height, width, channels, pad);
        let len = batch * self.image_len();
        self.data.clear();
        self.data.resize(len, 0.0);
    }

    /// Positions per padded row.
    pub fn padded_width(&self) -> usize {
        self.width + 2 * self.pad
    }

    /// Floats per image, border included.
    pub fn image_len(&self) -> usize {
        (self.height + 2 * self.pad) * self.padded_width() * self.channels
    }

    /// Offset of channel 0 of position (`y`, `x`) of image `n`; `y` and `x` may reach into the
    /// border (from `-pad`).
    pub fn offset(&self, n: usize, y: isize, x: isize) -> usize {
        let pad = self.pad as isize;
        n * self.image_len()
            + ((y + pad) as usize * self.padded_width() + (x + pad) as usize) * self.channels
    }

    /// Image `n` as `channels` planes of `height x width` floats.
    pub fn to_planes(&self, n: usize) -> Vec<f32> {
        let mut planes = vec![0f32; self.channels * self.height * self.width];
        for y in 0..self.height {
            for x in 0..self.width {
                for (c, &value) in self.at(n, y, x).iter().enumerate() {
                    planes[(c * self.height + y) * self.width + x] = value;
                }
            }
        }
        planes
    }

    /// The channels of position (`y`, `x`) of image `n`.
    pub fn at(&self, n: usize, y: usize, x: usize) -> &[f32] {
        let start = self.offset(n, y as isize, x as isize);
        &self.data[start..start + self.channels]
    }

    /// The channels of position (`y`, `x`) of image `n`, to write.
    pub fn at_mut(&mut self, n: usize, y: usize, x: usize) -> &mut [f32] {
        let start = self.offset(n, y as isize, x as isize);
        let channels = self.channels;
        &mut self.data[start..start + channels]
    }
}

/// A square convolution with dlib's padding rule, its filters packed for the kernels.
#[derive(Debug, Clone)]
pub struct Conv {
    size: usize,
    stride: usize,
    in_channels: usize,
    out_channels: usize,
    /// `[blocks][size][size][in_channels][BLOCK]`, zero past `out_channels`; for a single
    /// filter `[size][size][in_channels]`.
    weights: Vec<f32>,
    /// `[blocks * BLOCK]`, zero past `out_channels`.
    bias: Vec<f32>,
}

/// A pointer that may be shared between the threads that write disjoint parts of a buffer.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: the tasks that share it write disjoint elements (see `Conv::forward`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer, through a method so that closures capture the whole (Sync) wrapper.
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

impl Conv {
    /// A convolution from filters `[out][in][size][size]` (dlib's and candle's layout) and a
    /// bias per filter.
    pub fn new(
        weight: &[f32],
        bias: &[f32],
        (out_channels, in_channels): (usize, usize),
        (size, stride): (usize, usize),
    ) -> Self {
        assert_eq!(weight.len(), out_channels * in_channels * size * size);
        assert_eq!(bias.len(), out_channels);
        assert!(out_channels > 0 && in_channels > 0 && size > 0 && stride > 0);
        let blocks = out_channels.div_ceil(BLOCK);
        let lanes = if out_channels == 1 { 1 } else { BLOCK };
        let mut weights = Vec::with_capacity(blocks * size * size * in_channels * lanes);
        for block in 0..blocks {
            for tap in 0..size * size {
                for c in 0..in_channels {
                    weights.extend((block * lanes..(block + 1) * lanes).map(|o| {
                        if o < out_channels {
                            weight[(o * in_channels + c) * size * size + tap]
                        } else {
                            0.0
                        }
                    }));
                }
            }
        }
        let mut bias = bias.to_vec();
        bias.resize(blocks * lanes, 0.0);
        Self {
            size,
            stride,
            in_channels,
            out_channels,
            weights,
            bias,
        }
    }

    /// [`Self::new`] from candle tensors (see [`crate::nn::conv_affine`]).
    pub fn from_tensors(
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
    ) -> candle_core::Result<Self> {
        let (out_channels, in_channels, size, _) = weight.dims4()?;
        Ok(Self::new(
            &weight.flatten_all()?.to_vec1::<f32>()?,
            &bias.to_vec1::<f32>()?,
            (out_channels, in_channels),
            (size, stride),
        ))
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// dlib's default padding (see [`nn::default_padding`]).
    pub fn padding(&self) -> usize {
        nn::default_padding(self.size, self.stride)
    }

    /// The output length along an axis of `input` positions; `None` when the filter does not
    /// fit.
    pub fn output_len(&self, input: usize) -> Option<usize> {
        nn::output_len(input, self.size, self.stride, self.padding())
    }

    /// Shapes `output` (zeroed, reusing its memory) for the result of this convolution of
    /// `input`, with a zero border `pad` wide; `None` when the filter does not fit.
    pub fn reset_output(
        &self,
        input: &Activations,
        pad: usize,
        output: &mut Activations,
    ) -> Option<()> {
        let height = self.output_len(input.height)?;
        let width = self.output_len(input.width)?;
        output.reset(input.batch, height, width, self.out_channels, pad);
        Some(())
    }

    /// Writes `conv(input) + bias`, with relu if asked, into the inside of `output`, which
    /// must have the shape [`Self::reset_output`] gives it. The input's border must be at
    /// least [`Self::padding`] wide.
    ///
    /// Logs the time and speed of each call at debug level (target
    /// `concrexit_facedetection::kernels::conv`).
    pub fn forward(&self, input: &Activations, output: &mut Activations, relu: bool) {
        self.forward_rows((input, 0), (output, 0), relu)
    }

    /// [`Self::forward`] for a band of rows: `output` receives the output rows from
    /// `first_row` on (as many as it has), computed from `input`, which holds the input rows
    /// from `input_row` on (all that those windows need, border included).
    pub fn forward_rows(
        &self,
        input: (&Activations, usize),
        output: (&mut Activations, usize),
        relu: bool,
    ) {
        let start = std::time::Instant::now();
        let (output, first_row) = output;
        self.forward_using(Kernel::detect(), input, (output, first_row), relu);
        let seconds = start.elapsed().as_secs_f64();
        let positions = output.batch * output.height * output.width;
        let flops =
            2.0 * (positions * self.size * self.size * self.in_channels * self.out_channels) as f64;
        tracing::debug!(
            size = self.size,
            stride = self.stride,
            in_channels = self.in_channels,
            out_channels = self.out_channels,
            positions,
            ms = seconds * 1e3,
            gflops_per_s = flops / seconds / 1e9,
            "convolution"
        );
    }

    /// [`Self::forward`] with the given kernel.
    fn forward_using(
        &self,
        kernel: Kernel,
        (input, input_row): (&Activations, usize),
        (output, first_row): (&mut Activations, usize),
        relu: bool,
    ) {
        assert_eq!(input.channels, self.in_channels, "input channels");
        assert!(input.pad >= self.padding(), "input border too narrow");
        assert_eq!(
            (output.batch, output.channels),
            (input.batch, self.out_channels),
            "output shape"
        );
        assert_eq!(Some(output.width), self.output_len(input.width));
        let geometry = Geometry::new(self, (input, input_row), (output, first_row));
        if geometry.positions == 0 {
            return;
        }
        if self.out_channels == 1 {
            return self.forward_single(kernel, &geometry, input, output, relu);
        }
        let tiles = geometry.positions.div_ceil(TILE);
        let blocks = self.out_channels.div_ceil(BLOCK);
        // Enough tasks to share between the threads, each of at least about a million
        // multiply-adds when there is that much work.
        let tile_macs = TILE * geometry.window * BLOCK;
        let per_task = (tiles * blocks / (8 * rayon::current_num_threads()))
            .clamp(1, (1 << 20) / tile_macs + 1);
        let chunks = tiles.div_ceil(per_task);
        let out = SharedMut(output.data.as_mut_ptr());
        let out_len = output.data.len();
        (0..chunks * blocks).into_par_iter().for_each(|task| {
            let (chunk, block) = (task / blocks, task % blocks);
            let first = chunk * per_task * TILE;
            let last = ((chunk + 1) * per_task * TILE).min(geometry.positions);
            // SAFETY: `out` holds `out_len` floats; a task writes the channels of its block
            // at its positions, which no other task writes.
            unsafe {
                self.forward_block(
                    kernel,
                    &geometry,
                    &input.data,
                    (first, last),
                    block,
                    relu,
                    (out.ptr(), out_len),
                )
            };
        });
    }

    /// Computes positions `first..last` of one block of filters.
    ///
    /// # Safety
    /// `out` must point to `out_len` writable floats, of which no other thread accesses the
    /// ones at these positions and in this block.
    #[allow(clippy::too_many_arguments)]
    unsafe fn forward_block(
        &self,
        kernel: Kernel,
        geometry: &Geometry,
        input: &[f32],
        (first, last): (usize, usize),
        block: usize,
        relu: bool,
        (out, out_len): (*mut f32, usize),
    ) {
        let window = geometry.window;
        let weights = &self.weights[block * window * BLOCK..(block + 1) * window * BLOCK];
        let bias: &[f32; BLOCK] = (&self.bias[block * BLOCK..(block + 1) * BLOCK])
            .try_into()
            .expect("a whole block");
        let valid = (self.out_channels - block * BLOCK).min(BLOCK);
        let mut cursor = geometry.cursor(first);
        for start in (first..last).step_by(TILE) {
            let mut bases = [0usize; TILE];
            let mut outputs = [0usize; TILE];
            for p in 0..TILE {
                // A short last tile repeats its last position (computed and stored twice).
                if p > 0 && start + p < last {
                    cursor.advance(geometry);
                }
                bases[p] = cursor.input;
                outputs[p] = cursor.output + block * BLOCK;
            }
            if start + TILE < last {
                cursor.advance(geometry);
            }
            let tile = Tile {
                input,
                bases,
                taps: &geometry.taps,
                channels: self.in_channels,
                weights,
                bias,
                relu,
            };
            let mut sums = [[0f32; BLOCK]; TILE];
            kernel.run(&tile, &mut sums);
            for (sums, &at) in sums.iter().zip(&outputs) {
                assert!(at + valid <= out_len, "output position out of range");
                // SAFETY: in bounds (just checked), and this task's alone.
                unsafe { std::ptr::copy_nonoverlapping(sums.as_ptr(), out.add(at), valid) };
            }
        }
    }

    /// [`Self::forward`] for a single filter: each window row is one run of
    /// `size * channels` floats, dotted with the filter's row several lanes at a time.
    fn forward_single(
        &self,
        kernel: Kernel,
        geometry: &Geometry,
        input: &Activations,
        output: &mut Activations,
        relu: bool,
    ) {
        let run = self.size * self.in_channels;
        let row_stride = input.padded_width() * input.channels;
        let per_task = (geometry.positions / (8 * rayon::current_num_threads())).clamp(64, 4096);
        let out = SharedMut(output.data.as_mut_ptr());
        let out_len = output.data.len();
        let bias = self.bias[0];
        (0..geometry.positions.div_ceil(per_task))
            .into_par_iter()
            .for_each(|chunk| {
                let first = chunk * per_task;
                let last = (first + per_task).min(geometry.positions);
                let mut cursor = geometry.cursor(first);
                for start in (first..last).step_by(SINGLE_TILE) {
                    let mut bases = [0usize; SINGLE_TILE];
                    let mut outputs = [0usize; SINGLE_TILE];
                    for p in 0..SINGLE_TILE {
                        if p > 0 && start + p < last {
                            cursor.advance(geometry);
                        }
                        bases[p] = cursor.input;
                        outputs[p] = cursor.output;
                    }
                    if start + SINGLE_TILE < last {
                        cursor.advance(geometry);
                    }
                    let mut sums = [0f32; SINGLE_TILE];
                    for dy in 0..self.size {
                        let rows = bases.map(|b| b + dy * row_stride);
                        let filter = &self.weights[dy * run..(dy + 1) * run];
                        kernel.dot(&input.data, rows, filter, &mut sums);
                    }
                    for (sum, &at) in sums.iter().zip(&outputs) {
                        let value = sum + bias;
                        let value = if relu { value.max(0.0) } else { value };
                        assert!(at < out_len, "output position out of range");
                        // SAFETY: in bounds (just checked); each position belongs to one task.
                        unsafe { *out.ptr().add(at) = value };
                    }
                }
            });
    }
}

/// Where the windows and outputs of a convolution lie in the buffers.
struct Geometry {
    /// Output positions in all images.
    positions: usize,
    out_height: usize,
    out_width: usize,
    /// Floats in one window.
    window: usize,
    /// Offset of each (dy, dx) run of channels from the window's first float.
    taps: Vec<usize>,
    /// Input floats between horizontally and vertically adjacent windows.
    step_x: usize,
    step_y: usize,
    /// Offsets of the window of position (0, 0) of image 0, and per image.
    input_origin: usize,
    input_image: usize,
    /// Output floats between horizontally adjacent positions, from row to row, per image.
    out_step_x: usize,
    out_row: usize,
    out_image: usize,
    out_origin: usize,
}

impl Geometry {
    /// The geometry of output rows `first_row..` (all of `output`'s rows) computed from
    /// `input`, whose row 0 is row `input_row` of the whole input.
    fn new(
        conv: &Conv,
        (input, input_row): (&Activations, usize),
        (output, first_row): (&Activations, usize),
    ) -> Self {
        let c = input.channels;
        let row = input.padded_width() * c;
        let taps = (0..conv.size)
            .flat_map(|dy| (0..conv.size).map(move |dx| dy * row + dx * c))
            .collect();
        let padding = conv.padding() as isize;
        // The first window's top row, relative to `input`'s first row.
        let top = (first_row * conv.stride) as isize - padding - input_row as isize;
        assert!(top >= -(input.pad as isize), "rows above the input");
        let bottom = top + ((output.height.max(1) - 1) * conv.stride + conv.size) as isize;
        assert!(
            bottom <= (input.height + input.pad) as isize,
            "rows below the input"
        );
        Self {
            positions: output.batch * output.height * output.width,
            out_height: output.height,
            out_width: output.width,
            window: conv.size * conv.size * c,
            taps,
            step_x: conv.stride * c,
            step_y: conv.stride * row,
            input_origin: input.offset(0, top, -padding),
            input_image: input.image_len(),
            out_step_x: output.channels,
            out_row: output.padded_width() * output.channels,
            out_image: output.image_len(),
            out_origin: output.offset(0, 0, 0),
        }
    }

    /// A cursor on output position `index` (image, row and column in that order).
    fn cursor(&self, index: usize) -> Cursor {
        let per_image = self.out_height * self.out_width;
        let (n, rest) = (index / per_image, index % per_image);
        let (y, x) = (rest / self.out_width, rest % self.out_width);
        Cursor {
            x,
            y,
            input: self.input_origin + n * self.input_image + y * self.step_y + x * self.step_x,
            output: self.out_origin + n * self.out_image + y * self.out_row + x * self.out_step_x,
            row_input: self.input_origin + n * self.input_image + y * self.step_y,
            row_output: self.out_origin + n * self.out_image + y * self.out_row,
        }
    }
}

/// An output position and the offsets of its window and its output.
struct Cursor {
    x: usize,
    y: usize,
    input: usize,
    output: usize,
    /// The offsets at the start of the position's row.
    row_input: usize,
    row_output: usize,
}

impl Cursor {
    /// Moves to the next position.
    fn advance(&mut self, g: &Geometry) {
        self.x += 1;
        if self.x < g.out_width {
            self.input += g.step_x;
            self.output += g.out_step_x;
            return;
        }
        self.x = 0;
        self.y += 1;
        if self.y < g.out_height {
            self.row_input += g.step_y;
            self.row_output += g.out_row;
        } else {
            // The first row of the next image.
            self.y = 0;
            self.row_input += g.input_image - (g.out_height - 1) * g.step_y;
            self.row_output += g.out_image - (g.out_height - 1) * g.out_row;
        }
        self.input = self.row_input;
        self.output = self.row_output;
    }
}

/// The inputs of one kernel call: `TILE` windows and one block of filters.
struct Tile<'a> {
    input: &'a [f32],
    /// The first float of each window.
    bases: [usize; TILE],
    /// Offset of each (dy, dx) run of `channels` floats from a window's first float, in
    /// increasing order.
    taps: &'a [usize],
    channels: usize,
    /// `[taps][channels][BLOCK]`.
    weights: &'a [f32],
    bias: &'a [f32; BLOCK],
    relu: bool,
}

impl Tile<'_> {
    /// Panics unless every window lies inside the input and the weights cover the window.
    fn check(&self) {
        let extent = self.taps.last().map_or(0, |t| t + self.channels);
        assert!(
            self.bases.iter().all(|b| b + extent <= self.input.len()),
            "window out of range"
        );
        assert_eq!(self.weights.len(), self.taps.len() * self.channels * BLOCK);
    }
}

/// The kernels the CPU can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if Isa::current() >= Isa::Avx2 {
            return Self::Avx2;
        }
        Self::Portable
    }

    /// `sums[p][o] = relu?(bias[o] + sum over the window of input * weight)`.
    fn run(self, tile: &Tile, sums: &mut [[f32; BLOCK]; TILE]) {
        tile.check();
        match self {
            Self::Portable => tile_portable(tile, sums),
            // SAFETY: the CPU has AVX2 and FMA (`detect`: `Isa::current`), and the windows and weights are in
            // range (`check`).
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { x86::tile_avx2(tile, sums) },
        }
    }

    /// `sums[p] += dot(input[rows[p]..][..filter.len()], filter)`.
    fn dot(
        self,
        input: &[f32],
        rows: [usize; SINGLE_TILE],
        filter: &[f32],
        sums: &mut [f32; SINGLE_TILE],
    ) {
        assert!(
            rows.iter().all(|r| r + filter.len() <= input.len()),
            "run out of range"
        );
        match self {
            Self::Portable => dot_portable(input, rows, filter, sums),
            // SAFETY: the CPU has AVX2 and FMA, and the runs are in range (just checked).
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => unsafe { x86::dot_avx2(input, rows, filter, sums) },
        }
    }
}

fn tile_portable(tile: &Tile, sums: &mut [[f32; BLOCK]; TILE]) {
    let mut weights = tile.weights.chunks_exact(BLOCK);
    for &tap in tile.taps {
        for c in 0..tile.channels {
            let w = weights.next().expect("weights cover the window");
            for (sum, base) in sums.iter_mut().zip(tile.bases) {
                let x = tile.input[base + tap + c];
                for (s, w) in sum.iter_mut().zip(w) {
                    *s += x * w;
                }
            }
        }
    }
    for sum in sums.iter_mut() {
        for (s, b) in sum.iter_mut().zip(tile.bias) {
            *s += b;
            if tile.relu {
                *s = s.max(0.0);
            }
        }
    }
}

fn dot_portable(
    input: &[f32],
    rows: [usize; SINGLE_TILE],
    filter: &[f32],
    sums: &mut [f32; SINGLE_TILE],
) {
    for (sum, row) in sums.iter_mut().zip(rows) {
        let run = &input[row..row + filter.len()];
        *sum += run.iter().zip(filter).map(|(x, w)| x * w).sum::<f32>();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, SINGLE_TILE, TILE, Tile};
    use std::arch::x86_64::*;

    /// [`super::tile_portable`] with the six times two sums in AVX registers and fused
    /// multiply-adds.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and `tile.check()` must hold.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_avx2(tile: &Tile, sums: &mut [[f32; BLOCK]; TILE]) {
        let input = tile.input.as_ptr();
        let mut w = tile.weights.as_ptr();
        let b = tile.bases;
        let mut acc = [[_mm256_setzero_ps(); 2]; TILE];
        for &tap in tile.taps {
            // SAFETY (whole loop): the windows and weights are in range (`check`).
            unsafe {
                let run = input.add(tap);
                for c in 0..tile.channels {
                    let w0 = _mm256_loadu_ps(w);
                    let w1 = _mm256_loadu_ps(w.add(8));
                    w = w.add(BLOCK);
                    for p in 0..TILE {
                        let x = _mm256_broadcast_ss(&*run.add(b[p] + c));
                        acc[p][0] = _mm256_fmadd_ps(x, w0, acc[p][0]);
                        acc[p][1] = _mm256_fmadd_ps(x, w1, acc[p][1]);
                    }
                }
            }
        }
        // SAFETY: the bias block holds 16 floats.
        let (b0, b1) = unsafe {
            (
                _mm256_loadu_ps(tile.bias.as_ptr()),
                _mm256_loadu_ps(tile.bias.as_ptr().add(8)),
            )
        };
        let zero = _mm256_setzero_ps();
        for (acc, sum) in acc.iter().zip(sums.iter_mut()) {
            let mut lo = _mm256_add_ps(acc[0], b0);
            let mut hi = _mm256_add_ps(acc[1], b1);
            if tile.relu {
                lo = _mm256_max_ps(lo, zero);
                hi = _mm256_max_ps(hi, zero);
            }
            // SAFETY: `sum` holds 16 floats.
            unsafe {
                _mm256_storeu_ps(sum.as_mut_ptr(), lo);
                _mm256_storeu_ps(sum.as_mut_ptr().add(8), hi);
            }
        }
    }

    /// [`super::dot_portable`] eight lanes at a time, with fused multiply-adds.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, and every run must lie inside `input`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(
        input: &[f32],
        rows: [usize; SINGLE_TILE],
        filter: &[f32],
        sums: &mut [f32; SINGLE_TILE],
    ) {
        let len = filter.len();
        let whole = len / 8 * 8;
        let mut acc = [_mm256_setzero_ps(); SINGLE_TILE];
        // SAFETY: the runs lie inside `input` (the caller's contract), `whole <= len`.
        unsafe {
            let x = input.as_ptr();
            for j in (0..whole).step_by(8) {
                let w = _mm256_loadu_ps(filter.as_ptr().add(j));
                for p in 0..SINGLE_TILE {
                    let v = _mm256_loadu_ps(x.add(rows[p] + j));
                    acc[p] = _mm256_fmadd_ps(v, w, acc[p]);
                }
            }
        }
        for p in 0..SINGLE_TILE {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[p]) };
            let tail: f32 = input[rows[p] + whole..rows[p] + len]
                .iter()
                .zip(&filter[whole..])
                .map(|(x, w)| x * w)
                .sum();
            sums[p] += lanes.iter().sum::<f32>() + tail;
        }
    }
}

/// Runs convolutions one after the other (each followed by relu where asked), from `input`,
/// whose border must suit the first. Two buffers serve all the layers in turn, each output
/// getting the border the next layer needs. `None` when a filter does not fit.
pub fn forward_chain(layers: &[(&Conv, bool)], input: Activations) -> Option<Activations> {
    let mut current = input;
    let mut spare = Activations::default();
    for (i, &(conv, relu)) in layers.iter().enumerate() {
        let pad = layers.get(i + 1).map_or(0, |(next, _)| next.padding());
        conv.reset_output(&current, pad, &mut spare)?;
        conv.forward(&current, &mut spare, relu);
        std::mem::swap(&mut current, &mut spare);
    }
    Some(current)
}

/// Runs convolutions one after the other like [`forward_chain`], but in bands of the last
/// layer's output rows, so that only a band of each intermediate output exists at a time:
/// for a large input, whose first layers have the largest outputs, this bounds memory to
/// the input, the result (with a border `pad` wide) and a few bands. Each band recomputes the
/// few intermediate rows that the windows of neighbouring bands share, and the result is the
/// same as [`forward_chain`]'s. `None` when a filter does not fit.
pub fn forward_banded(
    layers: &[(&Conv, bool)],
    input: &Activations,
    band_rows: usize,
    pad: usize,
) -> Option<Activations> {
    let (&(last, _), _) = layers.split_last()?;
    // Rows of every layer's output (index 0: the input).
    let mut heights = vec![input.height];
    let mut width = input.width;
    for (conv, _) in layers {
        heights.push(conv.output_len(*heights.last()?)?);
        width = conv.output_len(width)?;
    }
    let mut output =
        Activations::zeros(input.batch, *heights.last()?, width, last.out_channels, pad);
    let mut bands: Vec<Activations> = layers.iter().map(|_| Activations::default()).collect();
    for first in (0..output.height).step_by(band_rows.max(1)) {
        // The rows each layer must produce, from the last layer back.
        let mut rows = vec![0..0; layers.len()];
        let mut needed = first..(first + band_rows).min(output.height);
        for (i, (conv, _)) in layers.iter().enumerate().rev() {
            rows[i] = needed.clone();
            let (stride, padding) = (conv.stride, conv.padding());
            let top = (needed.start * stride).saturating_sub(padding);
            let bottom = ((needed.end - 1) * stride + conv.size - padding).min(heights[i]);
            needed = top..bottom;
        }
        for (i, &(conv, relu)) in layers.iter().enumerate() {
            let (previous, rest) = bands.split_at_mut(i);
            let (source, source_row) = match i {
                0 => (input, 0),
                _ => (&previous[i - 1], rows[i - 1].start),
            };
            let border = layers.get(i + 1).map_or(0, |(next, _)| next.padding());
            let band = &mut rest[0];
            band.reset(
                input.batch,
                rows[i].len(),
                width_of(layers, input.width, i)?,
                conv.out_channels,
                border,
            );
            conv.forward_rows((source, source_row), (band, rows[i].start), relu);
        }
        // The last band into the result.
        let band = &bands[layers.len() - 1];
        for n in 0..input.batch {
            for (y, row) in rows[layers.len() - 1].clone().enumerate() {
                let from = band.offset(n, y as isize, 0);
                let to = output.offset(n, row as isize, 0);
                let len = width * last.out_channels;
                output.data[to..to + len].copy_from_slice(&band.data[from..from + len]);
            }
        }
    }
    Some(output)
}

/// The width of layer `index`'s output for an input `width` wide.
fn width_of(layers: &[(&Conv, bool)], width: usize, index: usize) -> Option<usize> {
    layers[..=index]
        .iter()
        .try_fold(width, |w, (conv, _)| conv.output_len(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random value in [-1, 1).
    fn noise(i: usize) -> f32 {
        let x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// dlib's convolution done the obvious way, in double precision.
    fn reference(
        input: &Activations,
        weight: &[f32],
        bias: &[f32],
        (out_channels, size, stride): (usize, usize, usize),
        relu: bool,
    ) -> Vec<f64> {
        let padding = if stride == 1 { size / 2 } else { 0 };
        let c_in = input.channels;
        let out_h = (input.height + 2 * padding - size) / stride + 1;
        let out_w = (input.width + 2 * padding - size) / stride + 1;
        let mut out = Vec::new();
        for n in 0..input.batch {
            for oy in 0..out_h {
                for ox in 0..out_w {
                    for o in 0..out_channels {
                        let mut sum = f64::from(bias[o]);
                        for dy in 0..size {
                            for dx in 0..size {
                                let y = (oy * stride + dy) as isize - padding as isize;
                                let x = (ox * stride + dx) as isize - padding as isize;
                                if y < 0
                                    || x < 0
                                    || y >= input.height as isize
                                    || x >= input.width as isize
                                {
                                    continue;
                                }
                                let pixel = input.at(n, y as usize, x as usize);
                                for c in 0..c_in {
                                    let w = weight[((o * c_in + c) * size + dy) * size + dx];
                                    sum += f64::from(w) * f64::from(pixel[c]);
                                }
                            }
                        }
                        out.push(if relu { sum.max(0.0) } else { sum });
                    }
                }
            }
        }
        out
    }

    fn check(shape: (usize, usize, usize, usize), layer: (usize, usize, usize), extra_pad: usize) {
        let (batch, height, width, c_in) = shape;
        let (c_out, size, stride) = layer;
        let weight: Vec<f32> = (0..c_out * c_in * size * size)
            .map(|i| noise(i) * 0.3)
            .collect();
        let bias: Vec<f32> = (0..c_out).map(|i| noise(i + 7777)).collect();
        let conv = Conv::new(&weight, &bias, (c_out, c_in), (size, stride));
        let mut input = Activations::zeros(batch, height, width, c_in, conv.padding() + extra_pad);
        for n in 0..batch {
            for y in 0..height {
                for x in 0..width {
                    for (c, v) in input.at_mut(n, y, x).iter_mut().enumerate() {
                        *v = noise(((n * height + y) * width + x) * c_in + c + 99);
                    }
                }
            }
        }
        for relu in [false, true] {
            let expected = reference(&input, &weight, &bias, (c_out, size, stride), relu);
            let kernels = [Kernel::Portable, Kernel::detect()];
            for kernel in kernels {
                let mut output = Activations::default();
                conv.reset_output(&input, 1, &mut output).expect("fits");
                conv.forward_using(kernel, (&input, 0), (&mut output, 0), relu);
                let mut got = Vec::new();
                for n in 0..batch {
                    for y in 0..output.height {
                        for x in 0..output.width {
                            got.extend(output.at(n, y, x).iter().map(|&v| f64::from(v)));
                        }
                    }
                }
                assert_eq!(got.len(), expected.len());
                let worst = got
                    .iter()
                    .zip(&expected)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(worst < 1e-4, "{kernel:?} {shape:?} {layer:?}: {worst}");
                // The border stays zero.
                let inside: f64 = got.iter().map(|v| v.abs()).sum();
                let all: f64 = output.data.iter().map(|v| f64::from(v.abs())).sum();
                assert!(
                    (inside - all).abs() <= 1e-6 * all.max(1.0),
                    "border written"
                );
            }
        }
    }

    #[test]
    fn matches_the_obvious_convolution() {
        // The embedder's and the CNN's shapes, small: padded and strided, partial blocks and
        // tiles, positions spanning images, a single filter.
        check((2, 9, 11, 3), (16, 5, 2), 0);
        check((1, 13, 10, 16), (32, 5, 2), 1);
        check((2, 7, 7, 32), (45, 5, 1), 0);
        check((3, 4, 4, 45), (1, 9, 1), 0);
        check((2, 5, 6, 20), (64, 3, 1), 2);
        check((2, 8, 8, 24), (40, 3, 2), 0);
        check((1, 12, 12, 3), (32, 7, 2), 0);
    }

    #[test]
    fn chain_gives_each_layer_the_border_it_needs() {
        let layer = |c_out, c_in, size, stride, seed| {
            let weight: Vec<f32> = (0..c_out * c_in * size * size)
                .map(|i| noise(i + seed) * 0.2)
                .collect();
            let bias: Vec<f32> = (0..c_out).map(|i| noise(i + seed + 1)).collect();
            Conv::new(&weight, &bias, (c_out, c_in), (size, stride))
        };
        let (a, b) = (layer(16, 3, 5, 2, 1), layer(8, 16, 3, 1, 2));
        let mut input = Activations::zeros(1, 21, 17, 3, 0);
        for (i, v) in input.data.iter_mut().enumerate() {
            *v = noise(i);
        }
        let chained = forward_chain(&[(&a, true), (&b, false)], input.clone()).expect("fits");
        let mut middle = Activations::default();
        a.reset_output(&input, 1, &mut middle).expect("fits");
        a.forward(&input, &mut middle, true);
        let mut last = Activations::default();
        b.reset_output(&middle, 0, &mut last).expect("fits");
        b.forward(&middle, &mut last, false);
        assert_eq!(chained, last);
        // In bands, with a stride-1 layer last: the same values inside any border.
        let (c, d) = (layer(8, 16, 3, 2, 4), layer(8, 8, 3, 1, 6));
        let mut tall = Activations::zeros(2, 61, 23, 3, 0);
        for (i, v) in tall.data.iter_mut().enumerate() {
            *v = noise(i + 5);
        }
        let layers = [(&a, true), (&c, true), (&d, false)];
        let whole = forward_chain(&layers, tall.clone()).expect("fits");
        for band_rows in [1, 2, 5, 100] {
            let banded = forward_banded(&layers, &tall, band_rows, 2).expect("fits");
            assert_eq!(
                (banded.height, banded.width, banded.pad),
                (whole.height, whole.width, 2)
            );
            for n in 0..2 {
                for y in 0..whole.height {
                    for x in 0..whole.width {
                        assert_eq!(banded.at(n, y, x), whole.at(n, y, x), "band {band_rows}");
                    }
                }
            }
        }
        assert!(
            forward_chain(
                &[(&layer(4, 3, 9, 1, 3), false)],
                Activations::zeros(1, 2, 2, 3, 4)
            )
            .is_some()
        );
        assert!(forward_chain(&[(&a, false)], Activations::zeros(1, 4, 4, 3, 0)).is_none());
    }
}
