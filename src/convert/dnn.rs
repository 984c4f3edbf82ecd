//! Reader of dlib's DNN network serialization (dlib/dnn/core.h, layers.h, input.h, loss.h).
//!
//! dlib's network files are not self-describing: the C++ type of the network decides what is
//! read. A network `loss<L0<L1<...<Ln<input>>>>>` is written as the loss layer's version and
//! details, then one wrapper version per layer from the outermost (`L0`) inwards, then the input
//! layer, then each layer's details and training state from the innermost (`Ln`) outwards. Tag
//! and skip layers (`tagN`, `skipN`) are wrappers with only a version; `add_prev` names its tag
//! in the type alone. So a reader is driven by a [`NetworkSpec`] that spells the expected type
//! out, and every hyper-parameter found in the file (filter counts and sizes, strides, paddings,
//! pooling windows, channel counts, fc sizes, versions) is checked against it.
//!
//! Neither supported model uses dlib's `repeat` layer, so specs cannot express it.
//!
//! The reader returns the parameters in forward order (input side first). Batch-normalisation
//! layers stored where the network has an `affine` layer (`bn_con2`) are folded into an affine
//! transform exactly as dlib's `affine_(const bn_&)` does: `gamma / sqrt(var + eps)` and
//! `beta - gamma' * mean`, in f32.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::convert::dlib_format::{DlibReader, DlibTensor};
use crate::error::FormatError;
use crate::nn::default_padding;

type Result<T> = std::result::Result<T, FormatError>;

/// A square convolution `con<filters, size, size, stride, stride>` with dlib's default padding
/// (`size / 2` for stride 1, none otherwise) on an input of `channels` channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConSpec {
    pub filters: usize,
    pub channels: usize,
    pub size: usize,
    pub stride: usize,
}

impl ConSpec {
    /// dlib's default padding rule of `con_`, `max_pool_` and `avg_pool_`.
    pub fn padding(&self) -> usize {
        default_padding(self.size, self.stride)
    }
}

/// A square pooling window `max_pool<size, size, stride, stride>` / `avg_pool<...>` with
/// dlib's default padding; size 0 pools over the whole input (`avg_pool_everything`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSpec {
    pub size: usize,
    pub stride: usize,
}

impl PoolSpec {
    pub fn padding(&self) -> usize {
        default_padding(self.size, self.stride)
    }
}

/// One layer of the expected network type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerSpec {
    Con(ConSpec),
    /// `affine` in conv mode over this many channels (also accepts a stored `bn_con`).
    Affine(usize),
    Relu,
    MaxPool(PoolSpec),
    AvgPool(PoolSpec),
    /// `add_prev<tag>`: the tag is part of the type only.
    AddPrev,
    /// `tagN`.
    Tag,
    /// `skipN`.
    Skip,
    /// `fc_no_bias<outputs>` over `inputs` values.
    FcNoBias {
        outputs: usize,
        inputs: usize,
    },
}

/// The expected input layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputSpec {
    /// `input_rgb_image_sized<size>`.
    RgbImageSized(usize),
    /// `input_rgb_image_pyramid<pyramid_down<N>>`.
    RgbImagePyramid,
}

/// The expected loss layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossSpec {
    Metric,
    Mmod,
}

/// A network type: loss, layers from the output side (as written in C++), input.
#[derive(Debug, Clone)]
pub struct NetworkSpec {
    pub loss: LossSpec,
    pub layers: Vec<LayerSpec>,
    pub input: InputSpec,
}

/// The parameters of one layer, in candle's layouts.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// Weight `[filters, channels, size, size]` (dlib's filter layout is the same) and bias.
    Con {
        weight: DlibTensor,
        bias: Vec<f32>,
    },
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    /// Weight `[outputs, inputs]` (dlib stores `[inputs, outputs]`).
    Fc {
        weight: DlibTensor,
    },
    /// A layer without parameters.
    Plain,
}

/// The input layer's values.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Average red, green and blue subtracted before dividing by 256.
    pub mean: [f32; 3],
    /// `pyramid_padding` and `pyramid_outer_padding` of an image-pyramid input.
    pub pyramid_padding: Option<(u32, u32)>,
}

/// A detector window of `loss_mmod`: the window size in the input tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorWindow {
    pub width: u32,
    pub height: u32,
}

/// The `mmod_options` that detection needs.
#[derive(Debug, Clone, PartialEq)]
pub struct MmodOptions {
    pub detector_windows: Vec<DetectorWindow>,
    /// `overlaps_nms`: (iou_thresh, percent_covered_thresh).
    pub nms: (f64, f64),
}

/// The loss layer's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Loss {
    Metric,
    Mmod(MmodOptions),
}

/// A network read from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub loss: Loss,
    pub input: Input,
    /// Parameters in forward order: `layers[0]` is applied to the input.
    pub layers: Vec<Layer>,
}

/// Reads a whole network of type `spec`.
pub fn read_network(reader: &mut DlibReader, spec: &NetworkSpec) -> Result<Network> {
    reader.expect_int(1, "add_loss_layer version")?;
    let loss = match spec.loss {
        LossSpec::Metric => read_loss_metric(reader)?,
        LossSpec::Mmod => Loss::Mmod(read_loss_mmod(reader)?),
    };
    let Some((innermost, _)) = spec.layers.split_last() else {
        return Err(reader.error("a network needs at least one layer"));
    };
    // Wrapper versions, outermost first.
    let last = spec.layers.len() - 1;
    let mut versions = Vec::with_capacity(spec.layers.len());
    for (index, layer) in spec.layers.iter().enumerate() {
        let on_input = index == last;
        let (what, allowed) = wrapper_versions(layer, on_input);
        versions.push(read_version(reader, what, allowed)?);
    }
    let input = read_input(reader, spec.input)?;
    let mut layers = Vec::with_capacity(spec.layers.len());
    // The layer directly on the input keeps different training state.
    let innermost_version = versions[last];
    if *innermost == LayerSpec::Tag {
        read_tensor_state(reader, 2)?;
        reader.read_bool()?;
        if innermost_version >= 2 {
            reader.read_usize()?;
        }
    } else {
        layers.push(read_layer(reader, innermost)?);
        read_bools(reader, 3)?;
        read_tensor_state(reader, 3)?;
        if innermost_version >= 3 {
            reader.read_usize()?;
        }
    }
    for (layer, &version) in spec.layers[..last].iter().zip(&versions).rev() {
        if matches!(layer, LayerSpec::Tag | LayerSpec::Skip) {
            continue;
        }
        layers.push(read_layer(reader, layer)?);
        read_bools(reader, 3)?;
        read_tensor_state(reader, if version >= 2 { 3 } else { 2 })?;
    }
    Ok(Network {
        loss,
        input,
        layers,
    })
}

/// Which wrapper versions dlib accepts for a layer (the layer on the input differs).
fn wrapper_versions(layer: &LayerSpec, on_input: bool) -> (&'static str, &'static [i64]) {
    match (layer, on_input) {
        (LayerSpec::Tag, false) => ("add_tag_layer version", &[1]),
        (LayerSpec::Tag, true) => ("add_tag_layer version", &[1, 2]),
        (LayerSpec::Skip, _) => ("add_skip_layer version", &[1]),
        (_, false) => ("add_layer version", &[1, 2]),
        (_, true) => ("add_layer version", &[2, 3]),
    }
}

fn read_version(reader: &mut DlibReader, what: &str, allowed: &[i64]) -> Result<i64> {
    let offset = reader.position();
    let version = reader.read_int()?;
    if allowed.contains(&version) {
        Ok(version)
    } else {
        Err(FormatError::Unexpected {
            offset,
            expected: format!("{what} {allowed:?}"),
            found: version.to_string(),
        })
    }
}

/// Reads a layer's version string and checks it is one of `allowed`.
fn read_tag(reader: &mut DlibReader, allowed: &[&str]) -> Result<String> {
    let offset = reader.position();
    let found = reader.read_string().map_err(|error| match error {
        FormatError::Invalid { message, .. } => FormatError::Unexpected {
            offset,
            expected: format!("one of {allowed:?}"),
            found: format!("no string ({message})"),
        },
        other => other,
    })?;
    if allowed.contains(&found.as_str()) {
        Ok(found)
    } else {
        Err(FormatError::Unexpected {
            offset,
            expected: format!("one of {allowed:?}"),
            found,
        })
    }
}

fn read_bools(reader: &mut DlibReader, count: usize) -> Result<()> {
    for _ in 0..count {
        reader.read_bool()?;
    }
    Ok(())
}

/// Training state (gradients, cached outputs) that inference does not need.
fn read_tensor_state(reader: &mut DlibReader, count: usize) -> Result<()> {
    for _ in 0..count {
        reader.read_tensor()?;
    }
    Ok(())
}

fn read_doubles(reader: &mut DlibReader, count: usize) -> Result<()> {
    for _ in 0..count {
        reader.read_f64()?;
    }
    Ok(())
}

/// Reads an integer and checks it equals `expected`.
fn expect_value(reader: &mut DlibReader, expected: usize, what: &str) -> Result<()> {
    let offset = reader.position();
    let found = reader.read_int()?;
    if usize::try_from(found).is_ok_and(|found| found == expected) {
        Ok(())
    } else {
        Err(FormatError::Unexpected {
            offset,
            expected: format!("{what} {expected}"),
            found: found.to_string(),
        })
    }
}

/// An `alias_tensor` (version 1: four dimensions) that must have the given shape.
fn expect_alias(reader: &mut DlibReader, shape: [usize; 4], what: &str) -> Result<()> {
    let offset = reader.position();
    reader.expect_int(1, "alias_tensor version")?;
    let mut found = [0usize; 4];
    for dim in &mut found {
        *dim = reader.read_usize()?;
    }
    if found == shape {
        Ok(())
    } else {
        Err(FormatError::Unexpected {
            offset,
            expected: format!("{what} of shape {shape:?}"),
            found: format!("{found:?}"),
        })
    }
}

/// A parameter tensor holding exactly `count` values.
fn read_params(reader: &mut DlibReader, count: usize, what: &str) -> Result<Vec<f32>> {
    let offset = reader.position();
    let tensor = reader.read_tensor()?;
    if tensor.data.len() == count {
        Ok(tensor.data)
    } else {
        Err(FormatError::Unexpected {
            offset,
            expected: format!("{what} with {count} parameters"),
            found: format!("{} parameters", tensor.data.len()),
        })
    }
}

fn expect_false(reader: &mut DlibReader, what: &str) -> Result<()> {
    let offset = reader.position();
    if reader.read_bool()? {
        Err(FormatError::Invalid {
            offset,
            message: format!("{what} is not supported"),
        })
    } else {
        Ok(())
    }
}

fn read_layer(reader: &mut DlibReader, spec: &LayerSpec) -> Result<Layer> {
    match *spec {
        LayerSpec::Con(con) => read_con(reader, con),
        LayerSpec::Affine(channels) => read_affine(reader, channels),
        LayerSpec::Relu => {
            if read_tag(reader, &["relu_", "relu_2"])? == "relu_2" {
                expect_false(reader, "a disabled relu layer")?;
            }
            Ok(Layer::Plain)
        }
        LayerSpec::MaxPool(pool) => {
            read_tag(reader, &["max_pool_2"])?;
            read_pool_geometry(reader, pool)?;
            Ok(Layer::Plain)
        }
        LayerSpec::AvgPool(pool) => {
            read_tag(reader, &["avg_pool_2"])?;
            read_pool_geometry(reader, pool)?;
            Ok(Layer::Plain)
        }
        LayerSpec::AddPrev => {
            read_tag(reader, &["add_prev_"])?;
            Ok(Layer::Plain)
        }
        LayerSpec::FcNoBias { outputs, inputs } => read_fc_no_bias(reader, outputs, inputs),
        LayerSpec::Tag | LayerSpec::Skip => {
            Err(reader.error("tag and skip layers have no details"))
        }
    }
}

fn read_pool_geometry(reader: &mut DlibReader, pool: PoolSpec) -> Result<()> {
    expect_value(reader, pool.size, "pooling window rows")?;
    expect_value(reader, pool.size, "pooling window columns")?;
    expect_value(reader, pool.stride, "pooling stride y")?;
    expect_value(reader, pool.stride, "pooling stride x")?;
    expect_value(reader, pool.padding(), "pooling padding y")?;
    expect_value(reader, pool.padding(), "pooling padding x")
}

fn read_con(reader: &mut DlibReader, con: ConSpec) -> Result<Layer> {
    let version = read_tag(reader, &["con_4", "con_5", "con_6"])?;
    let filter_count = con.filters * con.channels * con.size * con.size;
    let params = read_params(reader, filter_count + con.filters, "con parameters")?;
    expect_value(reader, con.filters, "number of filters")?;
    expect_value(reader, con.size, "filter rows")?;
    expect_value(reader, con.size, "filter columns")?;
    expect_value(reader, con.stride, "stride y")?;
    expect_value(reader, con.stride, "stride x")?;
    expect_value(reader, con.padding(), "padding y")?;
    expect_value(reader, con.padding(), "padding x")?;
    let shape = [con.filters, con.channels, con.size, con.size];
    expect_alias(reader, shape, "filters")?;
    expect_alias(reader, [1, con.filters, 1, 1], "biases")?;
    read_doubles(reader, 4)?;
    if version != "con_4" {
        let offset = reader.position();
        if !reader.read_bool()? {
            return Err(FormatError::Invalid {
                offset,
                message: "a convolution without bias is not supported".to_string(),
            });
        }
    }
    if version == "con_6" {
        expect_false(reader, "a convolution with fused relu")?;
    }
    let mut weight = params;
    let bias = weight.split_off(filter_count);
    Ok(Layer::Con {
        weight: DlibTensor {
            shape,
            data: weight,
        },
        bias,
    })
}

fn read_affine(reader: &mut DlibReader, channels: usize) -> Result<Layer> {
    let version = read_tag(reader, &["affine_", "affine_2", "bn_con2"])?;
    if version == "bn_con2" {
        return read_bn_as_affine(reader, channels);
    }
    let mut gamma = read_params(reader, 2 * channels, "affine parameters")?;
    expect_alias(reader, [1, channels, 1, 1], "affine gamma")?;
    expect_alias(reader, [1, channels, 1, 1], "affine beta")?;
    reader.expect_int(0, "affine layer mode (CONV_MODE)")?;
    if version == "affine_2" {
        expect_false(reader, "a disabled affine layer")?;
    }
    let beta = gamma.split_off(channels);
    Ok(Layer::Affine { gamma, beta })
}

/// A `bn_con` layer folded into the affine transform it computes at inference.
fn read_bn_as_affine(reader: &mut DlibReader, channels: usize) -> Result<Layer> {
    let mut gamma = read_params(reader, 2 * channels, "bn_con parameters")?;
    let beta = gamma.split_off(channels);
    expect_alias(reader, [1, channels, 1, 1], "bn_con gamma")?;
    expect_alias(reader, [1, channels, 1, 1], "bn_con beta")?;
    // means and invstds of the last training batch
    read_tensor_state(reader, 2)?;
    let running_means = read_params(reader, channels, "bn_con running means")?;
    let running_variances = read_params(reader, channels, "bn_con running variances")?;
    // num_updates, running_stats_window_size
    reader.read_usize()?;
    reader.read_usize()?;
    // learning-rate and weight-decay multipliers
    read_doubles(reader, 4)?;
    let eps = reader.read_f32()?;
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&running_variances)
        .map(|(g, var)| g / (var + eps).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&scale)
        .zip(&running_means)
        .map(|((b, g), mean)| b - g * mean)
        .collect();
    Ok(Layer::Affine {
        gamma: scale,
        beta: shift,
    })
}

fn read_fc_no_bias(reader: &mut DlibReader, outputs: usize, inputs: usize) -> Result<Layer> {
    let version = read_tag(reader, &["fc_2", "fc_3"])?;
    expect_value(reader, outputs, "fc outputs")?;
    expect_value(reader, inputs, "fc inputs")?;
    let params = read_params(reader, inputs * outputs, "fc weights")?;
    expect_alias(reader, [inputs, outputs, 1, 1], "fc weights")?;
    // The unused bias alias of an fc_no_bias layer.
    let offset = reader.position();
    reader.expect_int(1, "alias_tensor version")?;
    for _ in 0..4 {
        reader.read_usize()?;
    }
    let bias_mode_offset = reader.position();
    if reader.read_int()? != 1 {
        return Err(FormatError::Unexpected {
            offset: bias_mode_offset,
            expected: "fc bias mode FC_NO_BIAS (1)".to_string(),
            found: format!("another bias mode (bias alias at byte {offset})"),
        });
    }
    read_doubles(reader, 4)?;
    if version == "fc_3" {
        reader.read_bool()?;
    }
    // dlib computes `input [n, inputs] x weights [inputs, outputs]`; store [outputs, inputs].
    let data = (0..outputs)
        .flat_map(|o| params.iter().skip(o).step_by(outputs).copied())
        .collect();
    Ok(Layer::Fc {
        weight: DlibTensor {
            shape: [outputs, inputs, 1, 1],
            data,
        },
    })
}

fn read_mean(reader: &mut DlibReader) -> Result<[f32; 3]> {
    Ok([reader.read_f32()?, reader.read_f32()?, reader.read_f32()?])
}

fn read_input(reader: &mut DlibReader, spec: InputSpec) -> Result<Input> {
    match spec {
        InputSpec::RgbImageSized(size) => {
            read_tag(reader, &["input_rgb_image_sized"])?;
            let mean = read_mean(reader)?;
            expect_value(reader, size, "input rows")?;
            expect_value(reader, size, "input columns")?;
            Ok(Input {
                mean,
                pyramid_padding: None,
            })
        }
        InputSpec::RgbImagePyramid => {
            let version = read_tag(
                reader,
                &["input_rgb_image_pyramid", "input_rgb_image_pyramid2"],
            )?;
            let mean = read_mean(reader)?;
            // The first version used fixed paddings of 10 and 11 pixels.
            let padding = if version == "input_rgb_image_pyramid2" {
                (read_u32(reader)?, read_u32(reader)?)
            } else {
                (10, 11)
            };
            Ok(Input {
                mean,
                pyramid_padding: Some(padding),
            })
        }
    }
}

fn read_u32(reader: &mut DlibReader) -> Result<u32> {
    let value = reader.read_usize()?;
    u32::try_from(value).map_err(|_| reader.error(format!("value {value} out of range")))
}

fn read_loss_metric(reader: &mut DlibReader) -> Result<Loss> {
    // The margin and distance threshold only matter for training.
    if read_tag(reader, &["loss_metric_", "loss_metric_2"])? == "loss_metric_2" {
        reader.read_f32()?;
        reader.read_f32()?;
    }
    Ok(Loss::Metric)
}

fn read_loss_mmod(reader: &mut DlibReader) -> Result<MmodOptions> {
    read_tag(reader, &["loss_mmod_"])?;
    let version = read_version(reader, "mmod_options version", &[1, 2, 3, 4])?;
    let detector_windows = if version == 1 {
        vec![read_window_size(reader)?]
    } else {
        let count = reader.read_usize()?;
        if count > 1_000_000 {
            return Err(reader.error(format!("{count} detector windows")));
        }
        (0..count)
            .map(|_| {
                let window_version =
                    read_version(reader, "detector_window_details version", &[1, 2])?;
                let window = read_window_size(reader)?;
                if window_version == 2 {
                    reader.read_string()?;
                }
                Ok(window)
            })
            .collect::<Result<_>>()?
    };
    // loss_per_false_alarm, loss_per_missed_target, truth_match_iou_threshold
    read_doubles(reader, 3)?;
    let nms = (reader.read_f64()?, reader.read_f64()?);
    // overlaps_ignore
    read_doubles(reader, 2)?;
    if version >= 3 {
        let offset = reader.position();
        let assume_image_pyramid = reader.read_u8()?;
        if assume_image_pyramid != 1 {
            return Err(FormatError::Unexpected {
                offset,
                expected: "assume_image_pyramid = yes (1)".to_string(),
                found: assume_image_pyramid.to_string(),
            });
        }
    }
    if version >= 4 {
        expect_false(reader, "bounding box regression")?;
        reader.read_f64()?;
    }
    Ok(MmodOptions {
        detector_windows,
        nms,
    })
}

fn read_window_size(reader: &mut DlibReader) -> Result<DetectorWindow> {
    Ok(DetectorWindow {
        width: read_u32(reader)?,
        height: read_u32(reader)?,
    })
}

fn tensor(data: &[f32], shape: &[usize]) -> Result<Tensor> {
    Tensor::from_slice(data, shape, &Device::Cpu).map_err(|error| FormatError::Invalid {
        offset: 0,
        message: format!("cannot build a tensor of shape {shape:?}: {error}"),
    })
}

/// Adds a vector of f32 values as the tensor `name`.
pub fn insert_vector(
    tensors: &mut HashMap<String, Tensor>,
    name: &str,
    values: &[f32],
) -> Result<()> {
    tensors.insert(name.to_string(), tensor(values, &[values.len()])?);
    Ok(())
}

/// The layers with parameters, by kind, each in forward order: convolutions, affine layers and
/// fc layers.
pub fn layers_by_kind(layers: &[Layer]) -> [Vec<&Layer>; 3] {
    let mut kinds: [Vec<&Layer>; 3] = Default::default();
    for layer in layers {
        match layer {
            Layer::Con { .. } => kinds[0].push(layer),
            Layer::Affine { .. } => kinds[1].push(layer),
            Layer::Fc { .. } => kinds[2].push(layer),
            Layer::Plain => {}
        }
    }
    kinds
}

/// Adds a layer's parameters under `name`: `.weight` and `.bias` of a convolution, `.gamma`
/// and `.beta` of an affine layer, `.weight` of an fc layer.
pub fn insert_layer(
    tensors: &mut HashMap<String, Tensor>,
    name: &str,
    layer: &Layer,
) -> Result<()> {
    let mut insert = |suffix: &str, value: Tensor| {
        tensors.insert(format!("{name}.{suffix}"), value);
    };
    match layer {
        Layer::Con { weight, bias } => {
            insert("weight", tensor(&weight.data, &weight.shape)?);
            insert("bias", tensor(bias, &[bias.len()])?);
        }
        Layer::Affine { gamma, beta } => {
            insert("gamma", tensor(gamma, &[gamma.len()])?);
            insert("beta", tensor(beta, &[beta.len()])?);
        }
        Layer::Fc { weight } => insert("weight", tensor(&weight.data, &weight.shape[..2])?),
        Layer::Plain => {}
    }
    Ok(())
}
