//! Converter of dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`).
//!
//! The file holds dlib's `anet_type` (tools/python/src/face_recognition.cpp): a 7x7/2
//! convolution stem with affine, relu and 3x3/2 max pooling, 14 residual blocks (three of 32
//! channels; a downsampling block and three of 64; a downsampling block and two of 128; a
//! downsampling block and two of 256; a final downsampling block of 256), average pooling over
//! everything and a 128-output fully connected layer without bias, under `loss_metric`.
//!
//! Tensors: `input.mean` `[3]`; `stem.conv.weight|bias`, `stem.affine.gamma|beta`;
//! `blocks.{i}.conv1|conv2.weight|bias` and `blocks.{i}.affine1|affine2.gamma|beta` for
//! i = 0..13 in forward order; `fc.weight` `[128, 256]` (out, in). Convolution weights are
//! [out, in, kh, kw].
//!
//! The architecture's sizes are the embedder's ([`crate::face::embedder`]): the file is checked
//! against the network that reads it.

use std::collections::HashMap;

use candle_core::Tensor;

use super::dnn::{
    self, ConSpec, InputSpec, LayerSpec, LossSpec, NetworkSpec, PoolSpec, insert_layer,
    insert_vector, layers_by_kind,
};
use crate::convert::dlib_format::DlibReader;
use crate::error::FormatError;
use crate::face::ENCODING_LEN;
use crate::face::embedder::{BLOCK_CONV_SIZE, BLOCKS, CHIP_SIZE, STEM_CONV, STEM_POOL};

/// The expected network: dlib's `anet_type`, layers listed from the output side.
fn spec() -> NetworkSpec {
    // Forward order first, reversed at the end.
    let (stem_channels, stem_size, stem_stride) = STEM_CONV;
    let (pool_size, pool_stride) = STEM_POOL;
    let mut forward = vec![
        LayerSpec::Con(ConSpec {
            filters: stem_channels,
            channels: 3,
            size: stem_size,
            stride: stem_stride,
        }),
        LayerSpec::Affine(stem_channels),
        LayerSpec::Relu,
        LayerSpec::MaxPool(PoolSpec {
            size: pool_size,
            stride: pool_stride,
        }),
    ];
    let mut channels = stem_channels;
    for (filters, stride) in BLOCKS {
        // block<N, affine, stride, tag1<x>>
        forward.push(LayerSpec::Tag);
        forward.extend([
            LayerSpec::Con(ConSpec {
                filters,
                channels,
                size: BLOCK_CONV_SIZE,
                stride,
            }),
            LayerSpec::Affine(filters),
            LayerSpec::Relu,
            LayerSpec::Con(ConSpec {
                filters,
                channels: filters,
                size: BLOCK_CONV_SIZE,
                stride: 1,
            }),
            LayerSpec::Affine(filters),
        ]);
        if stride == 2 {
            // add_prev2<avg_pool<2,2,2,2, skip1<tag2<block>>>>
            forward.extend([
                LayerSpec::Tag,
                LayerSpec::Skip,
                LayerSpec::AvgPool(PoolSpec { size: 2, stride: 2 }),
            ]);
        }
        forward.extend([LayerSpec::AddPrev, LayerSpec::Relu]);
        channels = filters;
    }
    forward.extend([
        LayerSpec::AvgPool(PoolSpec { size: 0, stride: 1 }),
        LayerSpec::FcNoBias {
            outputs: ENCODING_LEN,
            inputs: channels,
        },
    ]);
    forward.reverse();
    NetworkSpec {
        loss: LossSpec::Metric,
        layers: forward,
        input: InputSpec::RgbImageSized(CHIP_SIZE as usize),
    }
}

/// Reads the whole ResNet file and names its tensors.
pub fn read(reader: &mut DlibReader) -> Result<HashMap<String, Tensor>, FormatError> {
    let network = dnn::read_network(reader, &spec())?;
    let mut tensors = HashMap::new();
    insert_vector(&mut tensors, "input.mean", &network.input.mean)?;
    let [convs, affines, fcs] = layers_by_kind(&network.layers);
    for layer in fcs {
        insert_layer(&mut tensors, "fc", layer)?;
    }
    let names = std::iter::once("stem.conv".to_string())
        .chain((0..BLOCKS.len()).flat_map(|i| [1, 2].map(|j| format!("blocks.{i}.conv{j}"))));
    for (name, layer) in names.zip(convs) {
        insert_layer(&mut tensors, &name, layer)?;
    }
    let names = std::iter::once("stem.affine".to_string())
        .chain((0..BLOCKS.len()).flat_map(|i| [1, 2].map(|j| format!("blocks.{i}.affine{j}"))));
    for (name, layer) in names.zip(affines) {
        insert_layer(&mut tensors, &name, layer)?;
    }
    Ok(tensors)
}
