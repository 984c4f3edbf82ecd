//! dlib's DNN layer rules (dlib/dnn/layers.h) shared by the two networks, the face embedder
//! and the CNN face detector.
//!
//! Each network keeps the convolution kernel measured fastest for its shapes (gathered windows
//! times filters for the embedder's small inputs; candle's convolution, and a shifted product for
//! the single-filter head, for the detector's large ones); what dlib fixes for both is here: the
//! default padding of a window, the output size it gives, and the folding of an `affine` layer
//! into the convolution before it.

use candle_core::Tensor;
use candle_nn::VarBuilder;

/// dlib's default padding of `con_`, `max_pool_` and `avg_pool_`: half the window (`size / 2`)
/// when the stride is 1, none otherwise.
pub const fn default_padding(size: usize, stride: usize) -> usize {
    if stride == 1 { size / 2 } else { 0 }
}

/// The output length along one axis of a `size` window moved by `stride` over `input` values
/// padded by `padding` on each side, or `None` when the window does not fit.
pub fn output_len(input: usize, size: usize, stride: usize, padding: usize) -> Option<usize> {
    (input + 2 * padding)
        .checked_sub(size)
        .map(|extra| extra / stride + 1)
}

/// The weight `[filters, in_channels, size, size]` and bias `[filters]` of a square
/// convolution, with the per-channel `affine` layer that follows it folded in when given:
/// `(conv(x) + b) * gamma + beta = conv_{w * gamma}(x) + (b * gamma + beta)`.
pub fn conv_affine(
    conv: &VarBuilder,
    affine: Option<&VarBuilder>,
    (in_channels, filters): (usize, usize),
    size: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let weight = conv.get((filters, in_channels, size, size), "weight")?;
    let bias = conv.get(filters, "bias")?;
    let Some(affine) = affine else {
        return Ok((weight, bias));
    };
    let gamma = affine.get(filters, "gamma")?;
    let beta = affine.get(filters, "beta")?;
    let weight = weight.broadcast_mul(&gamma.reshape((filters, 1, 1, 1))?)?;
    let bias = ((bias * &gamma)? + beta)?;
    Ok((weight, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_output_sizes_follow_dlib() {
        assert_eq!(default_padding(3, 1), 1);
        assert_eq!(default_padding(9, 1), 4);
        assert_eq!(default_padding(7, 2), 0);
        // The embedder's stem: 150 -> 72 (7x7/2), then 35 (3x3/2 max pooling).
        assert_eq!(output_len(150, 7, 2, 0), Some(72));
        assert_eq!(output_len(72, 3, 2, 0), Some(35));
        // A padded stride-1 window keeps the size; a window larger than its input does not fit.
        assert_eq!(output_len(35, 3, 1, 1), Some(35));
        assert_eq!(output_len(4, 9, 1, 0), None);
    }
}
