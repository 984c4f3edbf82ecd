//! The CNN detector's tiled pyramid written on the device that runs the network.
//!
//! Only the photo, upsampled and 8-bit (13 MB for a 1200x900 photo upsampled once), is copied to
//! the device; [`PyramidFill`] then writes the normalised tiled pyramid (190 MB of floats)
//! straight into the batch's input tensor: level 0 as dlib's input layer gives it, each level
//! below from the one above with the positions and weights of
//! [`LevelResize`](crate::detect::tiled_pyramid::LevelResize), the one place
//! that computes them, so the device's pyramid is the CPU's value for value. On the CPU the
//! same op runs [`TiledPyramid::fill`]; on a CUDA device, kernels compiled by NVRTC at first
//! use, one launch per level (each level reads the one before), with every rounding written
//! out (`__fmul_rn`, `__fadd_rn`, ...) so that nothing is contracted into a fused multiply-add.

use candle_core::{CpuStorage, InplaceOp2, Layout};
use image::RgbImage;

use crate::detect::tiled_pyramid::TiledPyramid;
#[cfg(feature = "cuda")]
use crate::detect::tiled_pyramid::{ColumnTap, LevelResize, RowTap};

/// Writes one photo's tiled pyramid into sample `photo` of a contiguous `[n, 3, rows, cols]`
/// f32 tensor that is zero outside the levels, from the photo as a contiguous u8 tensor of
/// `height * width * 3` values (RGB, row by row).
pub struct PyramidFill<'a> {
    pub pyramid: &'a TiledPyramid,
    /// The photo's (width, height), upsampled as the pyramid's level 0.
    pub size: (u32, u32),
    /// The input layer's channel means.
    pub mean: [f32; 3],
    /// The sample of the batch to write.
    pub photo: usize,
}

impl PyramidFill<'_> {
    /// Where sample `photo` starts in a destination of layout `layout`, checking its shape.
    fn destination(&self, layout: &Layout) -> candle_core::Result<usize> {
        let plane = self.pyramid.rows * self.pyramid.cols;
        match layout.dims() {
            &[n, 3, rows, cols]
                if layout.is_contiguous()
                    && self.photo < n
                    && (rows, cols) == (self.pyramid.rows, self.pyramid.cols) =>
            {
                Ok(layout.start_offset() + self.photo * 3 * plane)
            }
            dims => candle_core::bail!(
                "pyramid fill: expected a contiguous [n > {}, 3, {}, {}] tensor, got {dims:?}",
                self.photo,
                self.pyramid.rows,
                self.pyramid.cols
            ),
        }
    }

    /// The photo's values in a source of layout `layout`, checking its size.
    fn check_source(&self, layout: &Layout) -> candle_core::Result<usize> {
        let (width, height) = self.size;
        let expected = width as usize * height as usize * 3;
        let first = self.pyramid.levels.first();
        let fits = first.is_some_and(|level| {
            (level.width(), level.height()) == (i64::from(width), i64::from(height))
        });
        if !layout.is_contiguous() || layout.shape().elem_count() != expected || !fits {
            candle_core::bail!(
                "pyramid fill: expected a contiguous {width}x{height} RGB photo that is the \
                 pyramid's first level, got {:?}",
                layout.dims()
            );
        }
        Ok(layout.start_offset())
    }
}

impl InplaceOp2 for PyramidFill<'_> {
    fn name(&self) -> &'static str {
        "tiled-pyramid-fill"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_layout: &Layout,
        src: &CpuStorage,
        src_layout: &Layout,
    ) -> candle_core::Result<()> {
        let start = self.destination(dst_layout)?;
        let offset = self.check_source(src_layout)?;
        let (CpuStorage::F32(out), CpuStorage::U8(photo)) = (dst, src) else {
            candle_core::bail!("pyramid fill: expected an f32 batch and a u8 photo");
        };
        let (width, height) = self.size;
        let len = width as usize * height as usize * 3;
        let image = RgbImage::from_raw(width, height, photo[offset..offset + len].to_vec())
            .ok_or_else(|| candle_core::Error::Msg("pyramid fill: photo size".into()))?;
        let plane = self.pyramid.rows * self.pyramid.cols;
        self.pyramid
            .fill(&image, self.mean, &mut out[start..start + 3 * plane]);
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        dst: &mut candle_core::CudaStorage,
        dst_layout: &Layout,
        src: &candle_core::CudaStorage,
        src_layout: &Layout,
    ) -> candle_core::Result<()> {
        let start = self.destination(dst_layout)?;
        let offset = self.check_source(src_layout)?;
        cuda::fill(self, dst, start, src, offset)
    }
}

/// The kernels, in CUDA C. The structs mirror [`RowTap`] and [`ColumnTap`] (`repr(C)`,
/// 16 bytes each). Every operation rounds as the CPU's does: no contraction, IEEE division.
#[cfg(any(test, feature = "cuda"))]
const SOURCE: &str = r#"
struct RowTap { unsigned int top; unsigned int bottom; double weight; };
struct ColumnTap { unsigned int left; unsigned int right; float weight; unsigned int grouped; };

// Level 0: (pixel - mean) / 256 at (top + y, left + x) of each channel's plane.
extern "C" __global__ void pyramid_level0(
const unsigned char* photo, float* out, unsigned int width, unsigned int height,
unsigned int top, unsigned int left, unsigned int cols, unsigned long long plane,
float mean0, float mean1, float mean2)
{
unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
if (i >= width * height) return;
unsigned int y = i / width, x = i % width;
unsigned long long at = (unsigned long long)(top + y) * cols + left + x;
float means[3] = {mean0, mean1, mean2};
for (int c = 0; c < 3; ++c) {
    float value = (float)photo[3ull * i + c];
    out[c * plane + at] = __fdiv_rn(__fsub_rn(value, means[c]), 256.0f);
}
}

// One level from the one above it, every channel: one thread per output value.
extern "C" __global__ void pyramid_resize(
float* out, unsigned long long plane, unsigned int cols,
const RowTap* rows, unsigned int out_rows, const ColumnTap* columns, unsigned int out_cols,
unsigned int src_top, unsigned int src_left, unsigned int dst_top, unsigned int dst_left)
{
unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
if (i >= 3u * out_rows * out_cols) return;
unsigned int channel = i / (out_rows * out_cols);
unsigned int r = i / out_cols % out_rows, c = i % out_cols;
RowTap row = rows[r];
ColumnTap column = columns[c];
float* p = out + channel * plane;
unsigned long long top = (unsigned long long)(src_top + row.top) * cols + src_left;
unsigned long long bottom = (unsigned long long)(src_top + row.bottom) * cols + src_left;
float tl = p[top + column.left], tr = p[top + column.right];
float bl = p[bottom + column.left], br = p[bottom + column.right];
float lr = column.weight;
float value;
if (column.grouped) {
    float tb = __double2float_rn(row.weight);
    float inv_tb = __double2float_rn(__dsub_rn(1.0, row.weight));
    float inv_lr = __fsub_rn(1.0f, lr);
    float sum = __fadd_rn(__fmul_rn(__fmul_rn(inv_tb, inv_lr), tl), __fmul_rn(__fmul_rn(inv_tb, lr), tr));
    sum = __fadd_rn(sum, __fmul_rn(__fmul_rn(tb, inv_lr), bl));
    value = __fadd_rn(sum, __fmul_rn(__fmul_rn(tb, lr), br));
} else {
    float inv_lr = __fsub_rn(1.0f, lr);
    double upper = (double)__fadd_rn(__fmul_rn(inv_lr, tl), __fmul_rn(lr, tr));
    double lower = (double)__fadd_rn(__fmul_rn(inv_lr, bl), __fmul_rn(lr, br));
    value = __double2float_rn(__dadd_rn(__dmul_rn(__dsub_rn(1.0, row.weight), upper),
                                        __dmul_rn(row.weight, lower)));
}
p[(unsigned long long)(dst_top + r) * cols + dst_left + c] = value;
}
"#;

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::OnceLock;

    use candle_core::CudaStorage;
    use cudarc::driver::{LaunchConfig, PushKernelArg};

    use super::{ColumnTap, LevelResize, PyramidFill, RowTap, SOURCE};

    const MODULE: &str = "facedetect_tiled_pyramid";

    fn error(context: &str, error: impl std::fmt::Display) -> candle_core::Error {
        candle_core::Error::Msg(format!("pyramid fill: {context}: {error}"))
    }

    /// The kernels' PTX, compiled once per process.
    fn ptx() -> candle_core::Result<&'static str> {
        static PTX: OnceLock<Result<String, String>> = OnceLock::new();
        PTX.get_or_init(|| {
            let options = cudarc::nvrtc::CompileOptions {
                fmad: Some(false),
                ..Default::default()
            };
            cudarc::nvrtc::compile_ptx_with_opts(SOURCE, options)
                .map(|ptx| ptx.to_src())
                .map_err(|e| e.to_string())
        })
        .as_deref()
        .map_err(|e| error("compiling the kernels", e))
    }

    /// The bytes of `repr(C)` taps, for copying to the device.
    fn bytes<T: Copy>(values: &[T]) -> &[u8] {
        // SAFETY: RowTap and ColumnTap are `repr(C)` with no padding (16 bytes of plain
        // integers and floats each); any byte of them may be read.
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), std::mem::size_of_val(values)) }
    }

    pub(super) fn fill(
        op: &PyramidFill,
        dst: &mut CudaStorage,
        start: usize,
        src: &CudaStorage,
        offset: usize,
    ) -> candle_core::Result<()> {
        const _: () = assert!(std::mem::size_of::<RowTap>() == 16);
        const _: () = assert!(std::mem::size_of::<ColumnTap>() == 16);
        let device = dst.device.clone();
        let ptx = ptx()?;
        let pyramid = op.pyramid;
        let plane = (pyramid.rows * pyramid.cols) as u64;
        let cols = pyramid.cols as u32;
        let photo = src.as_cuda_slice::<u8>()?.slice(offset..);
        let out = dst.as_cuda_slice_mut::<f32>()?;
        let mut out = out.slice_mut(start..start + 3 * plane as usize);

        let Some(first) = pyramid.levels.first() else {
            return Ok(());
        };
        let (width, height) = op.size;
        let level0 = device.get_or_load_custom_func("pyramid_level0", MODULE, ptx)?;
        let mut launch = level0.builder();
        let (top, left) = (first.top as u32, first.left as u32);
        let [mean0, mean1, mean2] = op.mean;
        launch
            .arg(&photo)
            .arg(&mut out)
            .arg(&width)
            .arg(&height)
            .arg(&top)
            .arg(&left);
        launch
            .arg(&cols)
            .arg(&plane)
            .arg(&mean0)
            .arg(&mean1)
            .arg(&mean2);
        // SAFETY: the arguments match the kernel's parameters; every index it writes lies in
        // `out` (the photo's three planes) and every index it reads in `photo`.
        unsafe { launch.launch(LaunchConfig::for_num_elems(width * height)) }
            .map_err(|e| error("level 0", e))?;

        let resize = device.get_or_load_custom_func("pyramid_resize", MODULE, ptx)?;
        for level in pyramid.resizes() {
            let LevelResize {
                src,
                dst,
                rows,
                columns,
            } = &level;
            let rows_on_device = device.clone_htod(bytes(rows))?;
            let columns_on_device = device.clone_htod(bytes(columns))?;
            let (out_rows, out_cols) = (rows.len() as u32, columns.len() as u32);
            let (src_top, src_left) = (src.top as u32, src.left as u32);
            let (dst_top, dst_left) = (dst.top as u32, dst.left as u32);
            let mut launch = resize.builder();
            launch.arg(&mut out).arg(&plane).arg(&cols);
            launch.arg(&rows_on_device).arg(&out_rows);
            launch.arg(&columns_on_device).arg(&out_cols);
            launch
                .arg(&src_top)
                .arg(&src_left)
                .arg(&dst_top)
                .arg(&dst_left);
            // SAFETY: as above; the taps index inside the source level, which lies in `out`,
            // and the kernel writes only the destination level. Launches on one stream run in
            // order, so each level is complete before the next reads it.
            unsafe { launch.launch(LaunchConfig::for_num_elems(3 * out_rows * out_cols)) }
                .map_err(|e| error("a level", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::process::Command;

    use super::*;
    use crate::detect::tiled_pyramid::{ColumnTap, LevelResize, RowTap};

    /// Runs the CUDA kernels' bodies on the CPU: compiled as C++ with the rounding intrinsics
    /// spelled as plain IEEE operations and no contraction, one call per thread index.
    const HARNESS: &str = r#"
#include <cstdio>
#include <vector>
struct Dim { unsigned int x; };
static Dim blockIdx = {0}, blockDim = {1}, threadIdx = {0};
#define __global__
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline float __double2float_rn(double a) { return (float)a; }
#include "kernels.cu"
template <typename T> static T take(FILE* f) { T v; if (fread(&v, sizeof v, 1, f) != 1) throw 1; return v; }
int main(int, char** argv) {
    FILE* in = fopen(argv[1], "rb");
    unsigned int width = take<unsigned int>(in), height = take<unsigned int>(in);
    unsigned int rows = take<unsigned int>(in), cols = take<unsigned int>(in);
    unsigned int top = take<unsigned int>(in), left = take<unsigned int>(in);
    unsigned int levels = take<unsigned int>(in);
    float m0 = take<float>(in), m1 = take<float>(in), m2 = take<float>(in);
    std::vector<unsigned char> photo(3ull * width * height);
    if (fread(photo.data(), 1, photo.size(), in) != photo.size()) return 2;
    unsigned long long plane = (unsigned long long)rows * cols;
    std::vector<float> out(3 * plane, 0.0f);
    for (unsigned int i = 0; i < width * height; ++i) {
        threadIdx.x = i;
        pyramid_level0(photo.data(), out.data(), width, height, top, left, cols, plane, m0, m1, m2);
    }
    for (unsigned int level = 0; level < levels; ++level) {
        unsigned int src_top = take<unsigned int>(in), src_left = take<unsigned int>(in);
        unsigned int dst_top = take<unsigned int>(in), dst_left = take<unsigned int>(in);
        unsigned int out_rows = take<unsigned int>(in), out_cols = take<unsigned int>(in);
        std::vector<RowTap> row_taps(out_rows);
        std::vector<ColumnTap> column_taps(out_cols);
        if (fread(row_taps.data(), sizeof(RowTap), out_rows, in) != out_rows) return 2;
        if (fread(column_taps.data(), sizeof(ColumnTap), out_cols, in) != out_cols) return 2;
        for (unsigned int i = 0; i < 3 * out_rows * out_cols; ++i) {
            threadIdx.x = i;
            pyramid_resize(out.data(), plane, cols, row_taps.data(), out_rows, column_taps.data(),
                           out_cols, src_top, src_left, dst_top, dst_left);
        }
    }
    fwrite(out.data(), sizeof(float), out.size(), stdout);
    return 0;
}
"#;

    fn words(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The kernels write exactly [`TiledPyramid::fill`]'s values, on odd sizes, from the same
    /// taps the device gets.
    #[test]
    fn the_cuda_kernels_compute_the_cpu_pyramid() {
        let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
        let dir = std::env::temp_dir().join(format!("facedetect-pyramid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kernels.cu"), SOURCE).unwrap();
        std::fs::write(dir.join("harness.cpp"), HARNESS).unwrap();
        let harness = dir.join("harness");
        let built = Command::new(&compiler)
            .args(["-O1", "-ffp-contract=off", "-o"])
            .arg(&harness)
            .arg(dir.join("harness.cpp"))
            .output();
        match built {
            Err(error) => {
                eprintln!("skipped: no C++ compiler ({compiler}: {error})");
                return;
            }
            Ok(output) => assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
        let mean = [122.782, 117.001, 104.298];
        for (width, height) in [(37u32, 23u32), (101, 67), (64, 61), (9, 40)] {
            let image = RgbImage::from_fn(width, height, |x, y| {
                let v = |k: u32| ((x * k + y * (k + 5) + x * y / 7) % 251) as u8;
                image::Rgb([v(3), v(7), v(11)])
            });
            let pyramid = TiledPyramid::new(height as usize, width as usize, 10, 11);
            let resizes = pyramid.resizes();
            let first = pyramid.levels[0];
            let mut input = words(&[
                width,
                height,
                pyramid.rows as u32,
                pyramid.cols as u32,
                first.top as u32,
                first.left as u32,
                resizes.len() as u32,
            ]);
            input.extend(mean.iter().flat_map(|m: &f32| m.to_le_bytes()));
            input.extend(image.as_raw());
            for LevelResize {
                src,
                dst,
                rows,
                columns,
            } in &resizes
            {
                input.extend(words(&[
                    src.top as u32,
                    src.left as u32,
                    dst.top as u32,
                    dst.left as u32,
                    rows.len() as u32,
                    columns.len() as u32,
                ]));
                for RowTap {
                    top,
                    bottom,
                    weight,
                } in rows
                {
                    input.extend(words(&[*top, *bottom]));
                    input.extend(weight.to_le_bytes());
                }
                for ColumnTap {
                    left,
                    right,
                    weight,
                    grouped,
                } in columns
                {
                    input.extend(words(&[*left, *right]));
                    input.extend(weight.to_le_bytes());
                    input.extend(grouped.to_le_bytes());
                }
            }
            let path = dir.join("input.bin");
            std::fs::File::create(&path)
                .and_then(|mut file| file.write_all(&input))
                .unwrap();
            let output = Command::new(&harness).arg(&path).output().unwrap();
            assert!(
                output.status.success(),
                "the harness failed on {width}x{height}"
            );
            let got: Vec<f32> = output
                .stdout
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let mut want = vec![0f32; 3 * pyramid.rows * pyramid.cols];
            pyramid.fill(&image, mean, &mut want);
            assert_eq!(got.len(), want.len(), "{width}x{height}");
            let differing = want
                .iter()
                .zip(&got)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differing, 0, "{width}x{height}: values differ");
            assert!(
                resizes.len() > 1,
                "{width}x{height}: too few levels to check"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The op on the CPU device writes each photo's pyramid into its own sample of the batch.
    #[test]
    fn the_op_fills_its_sample_of_the_batch() {
        use candle_core::{DType, Device, Tensor};
        let image = RgbImage::from_fn(31, 19, |x, y| image::Rgb([x as u8 * 7, y as u8 * 11, 90]));
        let pyramid = TiledPyramid::new(19, 31, 10, 11);
        let mean = [100.0, 110.0, 120.0];
        let batch =
            Tensor::zeros((2, 3, pyramid.rows, pyramid.cols), DType::F32, &Device::Cpu).unwrap();
        let photo = Tensor::from_vec(image.as_raw().clone(), 31 * 19 * 3, &Device::Cpu).unwrap();
        let fill = PyramidFill {
            pyramid: &pyramid,
            size: (31, 19),
            mean,
            photo: 1,
        };
        batch.inplace_op2(&photo, &fill).unwrap();
        let values = batch.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let sample = 3 * pyramid.rows * pyramid.cols;
        let mut want = vec![0f32; sample];
        pyramid.fill(&image, mean, &mut want);
        assert!(
            values[..sample].iter().all(|&v| v == 0.0),
            "sample 0 untouched"
        );
        assert_eq!(&values[sample..], &want[..]);
        let wrong = PyramidFill {
            pyramid: &pyramid,
            size: (30, 19),
            mean,
            photo: 1,
        };
        assert!(batch.inplace_op2(&photo, &wrong).is_err());
    }
}
