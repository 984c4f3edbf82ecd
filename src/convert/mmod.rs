//! Converter of dlib's CNN face detector (`mmod_human_face_detector.dat`).
//!
//! The file holds the network of tools/python/src/cnn_face_detector.cpp:
//! `loss_mmod<con<1,9,9,1,1, rcon5<rcon5<rcon5<downsampler<input_rgb_image_pyramid<pyramid_down<6>>>>>>>>`
//! where `downsampler` is three 5x5/2 convolutions (16, 32, 32 filters) each followed by affine
//! and relu, and `rcon5` a 5x5/1 convolution of 45 filters with affine and relu. The stored
//! `bn_con` layers are folded into affine transforms as dlib does when loading them.
//!
//! Tensors:
//! - `input.mean` `[3]` f32: R, G, B averages subtracted before dividing by 256;
//!   `input.pyramid_padding` `[1]` u32 and `input.pyramid_outer_padding` `[1]` u32: the gaps of
//!   dlib's tiled image pyramid.
//! - `downsampler.{0,1,2}.conv.weight|bias`, `downsampler.{i}.affine.gamma|beta`,
//!   `rcon.{0,1,2}.conv.weight|bias`, `rcon.{i}.affine.gamma|beta` (forward order),
//!   `head.conv.weight` `[1, 45, 9, 9]`, `head.conv.bias` `[1]`. Convolutions are [out, in, kh, kw].
//! - `mmod.detector_windows` [n, 2] f32: width and height of each detector window, in input
//!   tensor pixels (one window per output channel).
//! - `mmod.nms` `[2]` f32: `overlaps_nms` IoU threshold and percent-covered threshold used to
//!   suppress overlapping detections.
//!
//! The file's other `mmod_options` only matter for training, except `assume_image_pyramid` and
//! bounding-box regression, which are checked to be `yes` and off.
//!
//! The architecture's sizes are the detector's ([`crate::detect::cnn`]): the file is checked
//! against the network that reads it.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::dnn::{
    self, ConSpec, InputSpec, LayerSpec, Loss, LossSpec, NetworkSpec, insert_layer, insert_vector,
    layers_by_kind,
};
use crate::convert::dlib_format::DlibReader;
use crate::detect::cnn::{DOWNSAMPLER_FILTERS, FILTER_SIZE, HEAD_SIZE, RCON_FILTERS};
use crate::error::FormatError;

/// The expected network, layers listed from the output side.
fn spec() -> NetworkSpec {
    let mut forward = Vec::new();
    let stages = DOWNSAMPLER_FILTERS
        .iter()
        .map(|&filters| (filters, 2))
        .chain(RCON_FILTERS.iter().map(|&filters| (filters, 1)));
    let mut channels = 3;
    for (filters, stride) in stages {
        forward.extend([
            LayerSpec::Con(ConSpec {
                filters,
                channels,
                size: FILTER_SIZE,
                stride,
            }),
            LayerSpec::Affine(filters),
            LayerSpec::Relu,
        ]);
        channels = filters;
    }
    forward.push(LayerSpec::Con(ConSpec {
        filters: 1,
        channels,
        size: HEAD_SIZE,
        stride: 1,
    }));
    forward.reverse();
    NetworkSpec {
        loss: LossSpec::Mmod,
        layers: forward,
        input: InputSpec::RgbImagePyramid,
    }
}

fn invalid(message: String) -> FormatError {
    FormatError::Invalid { offset: 0, message }
}

/// Reads the whole detector file and names its tensors.
pub fn read(reader: &mut DlibReader) -> Result<HashMap<String, Tensor>, FormatError> {
    let network = dnn::read_network(reader, &spec())?;
    let Loss::Mmod(options) = network.loss else {
        return Err(reader.error("expected the loss_mmod layer"));
    };
    if options.detector_windows.len() != 1 {
        return Err(reader.error(format!(
            "expected one detector window for the single output channel, found {}",
            options.detector_windows.len()
        )));
    }
    let Some((padding, outer_padding)) = network.input.pyramid_padding else {
        return Err(reader.error("expected an image pyramid input"));
    };
    let mut tensors = HashMap::new();
    insert_vector(&mut tensors, "input.mean", &network.input.mean)?;
    for (name, value) in [
        ("input.pyramid_padding", padding),
        ("input.pyramid_outer_padding", outer_padding),
    ] {
        let value = Tensor::from_slice(&[value], 1, &Device::Cpu)
            .map_err(|error| invalid(format!("{name}: {error}")))?;
        tensors.insert(name.to_string(), value);
    }
    let windows: Vec<f32> = options
        .detector_windows
        .iter()
        .flat_map(|window| [window.width as f32, window.height as f32])
        .collect();
    let windows = Tensor::from_vec(windows, (options.detector_windows.len(), 2), &Device::Cpu)
        .map_err(|error| invalid(format!("mmod.detector_windows: {error}")))?;
    tensors.insert("mmod.detector_windows".to_string(), windows);
    insert_vector(
        &mut tensors,
        "mmod.nms",
        &[options.nms.0 as f32, options.nms.1 as f32],
    )?;

    let [convs, affines, _] = layers_by_kind(&network.layers);
    let stage_names: Vec<String> = (0..DOWNSAMPLER_FILTERS.len())
        .map(|i| format!("downsampler.{i}"))
        .chain((0..RCON_FILTERS.len()).map(|i| format!("rcon.{i}")))
        .collect();
    let conv_names = stage_names
        .iter()
        .map(|stage| format!("{stage}.conv"))
        .chain(std::iter::once("head.conv".to_string()));
    for (name, layer) in conv_names.zip(convs) {
        insert_layer(&mut tensors, &name, layer)?;
    }
    for (stage, layer) in stage_names.iter().zip(affines) {
        insert_layer(&mut tensors, &format!("{stage}.affine"), layer)?;
    }
    Ok(tensors)
}
