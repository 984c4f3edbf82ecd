//! The dlib DNN model converter: the structure it reads, the tensors it writes, and the clear
//! errors it gives for anything else (truncated files, random bytes, other models).
//!
//! dlib's original model files are used from the reference Python environment when present;
//! the synthetic networks below are written byte by byte in dlib's format, so the reader is
//! tested without them too.

use crate::common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use concrexit_facedetection::convert::dlib_format::DlibReader;
use concrexit_facedetection::convert::dnn::{
    self, ConSpec, InputSpec, Layer, LayerSpec, LossSpec, NetworkSpec, PoolSpec,
};
use concrexit_facedetection::convert::{convert_bytes, mmod, resnet};
use concrexit_facedetection::error::FormatError;
use concrexit_facedetection::face::embedder::BLOCKS;

const RESNET: &str = "dlib_face_recognition_resnet_model_v1";
const MMOD: &str = "mmod_human_face_detector";

/// One of dlib's original model files, when it is at hand (see `common::dlib_model_file`).
fn dlib_model(name: &str) -> Option<Vec<u8>> {
    common::dlib_model_file(name).map(|path| std::fs::read(path).expect("readable model file"))
}

fn committed(name: &str) -> HashMap<String, Tensor> {
    let path = common::weights_dir().join(format!("{name}.safetensors"));
    candle_core::safetensors::load(&path, &Device::Cpu).expect("committed weights")
}

fn assert_same_tensors(a: &HashMap<String, Tensor>, b: &HashMap<String, Tensor>) {
    let mut names: Vec<_> = a.keys().collect();
    names.sort();
    let mut other: Vec<_> = b.keys().collect();
    other.sort();
    assert_eq!(names, other);
    for name in names {
        let (x, y) = (&a[name], &b[name]);
        assert_eq!(x.dims(), y.dims(), "{name}");
        assert_eq!(x.dtype(), y.dtype(), "{name}");
        let x = x.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        let y = y.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        assert_eq!(
            x.to_vec1::<f64>().unwrap(),
            y.to_vec1::<f64>().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn conversions_reproduce_the_committed_weights() {
    for (name, kind) in [
        (RESNET, "dlib face recognition resnet"),
        (MMOD, "dlib mmod face detector"),
    ] {
        let Some(bytes) = dlib_model(&format!("{name}.dat")) else {
            continue;
        };
        let (found, tensors) = convert_bytes(&bytes).expect("conversion");
        assert_eq!(found, kind);
        assert_same_tensors(&tensors, &committed(name));
    }
}

#[test]
fn resnet_weights_have_the_documented_tensors() {
    let tensors = committed(RESNET);
    let shape = |name: &str| tensors[name].dims().to_vec();
    assert_eq!(tensors.len(), 1 + 4 + 14 * 8 + 1);
    assert_eq!(shape("input.mean"), [3]);
    assert_eq!(shape("stem.conv.weight"), [32, 3, 7, 7]);
    assert_eq!(shape("stem.conv.bias"), [32]);
    assert_eq!(shape("stem.affine.gamma"), [32]);
    assert_eq!(shape("stem.affine.beta"), [32]);
    let mut in_channels = 32;
    for (i, (channels, _)) in BLOCKS.iter().copied().enumerate() {
        assert_eq!(
            shape(&format!("blocks.{i}.conv1.weight")),
            [channels, in_channels, 3, 3]
        );
        assert_eq!(
            shape(&format!("blocks.{i}.conv2.weight")),
            [channels, channels, 3, 3]
        );
        for part in ["conv1.bias", "conv2.bias", "affine1.gamma", "affine1.beta"] {
            assert_eq!(shape(&format!("blocks.{i}.{part}")), [channels]);
        }
        assert_eq!(shape(&format!("blocks.{i}.affine2.beta")), [channels]);
        in_channels = channels;
    }
    assert_eq!(shape("fc.weight"), [128, 256]);
    let mean = tensors["input.mean"].to_vec1::<f32>().unwrap();
    assert_eq!(mean, [122.782, 117.001, 104.298]);
}

#[test]
fn mmod_weights_have_the_documented_tensors() {
    let tensors = committed(MMOD);
    let shape = |name: &str| tensors[name].dims().to_vec();
    for (stage, (filters, channels)) in [
        ("downsampler.0", (16, 3)),
        ("downsampler.1", (32, 16)),
        ("downsampler.2", (32, 32)),
        ("rcon.0", (45, 32)),
        ("rcon.1", (45, 45)),
        ("rcon.2", (45, 45)),
    ] {
        assert_eq!(
            shape(&format!("{stage}.conv.weight")),
            [filters, channels, 5, 5]
        );
        for part in ["conv.bias", "affine.gamma", "affine.beta"] {
            assert_eq!(shape(&format!("{stage}.{part}")), [filters]);
        }
    }
    assert_eq!(shape("head.conv.weight"), [1, 45, 9, 9]);
    assert_eq!(shape("head.conv.bias"), [1]);
    let u32_value = |name: &str| tensors[name].to_vec1::<u32>().unwrap();
    assert_eq!(u32_value("input.pyramid_padding"), [10]);
    assert_eq!(u32_value("input.pyramid_outer_padding"), [11]);
    let windows = tensors["mmod.detector_windows"].to_vec2::<f32>().unwrap();
    assert_eq!(windows, [[80.0, 80.0]]);
    let nms = tensors["mmod.nms"].to_vec1::<f32>().unwrap();
    assert!(nms[0] > 0.0 && nms[0] < 1.0 && nms[1] == 1.0, "{nms:?}");
    assert_eq!(tensors.len(), 5 + 7 * 2 + 6 * 2);
}

/// Whether an error says that the file ended early (in a value, or before a tensor's data).
fn is_truncation(error: &FormatError) -> bool {
    matches!(error, FormatError::Truncated { .. }) || error.to_string().contains("does not fit")
}

fn expect_error(bytes: &[u8], what: &str) -> FormatError {
    match convert_bytes(bytes) {
        Ok((kind, _)) => panic!("{what}: read as a {kind} model"),
        Err(error) => {
            let message = error.to_string();
            assert!(!message.is_empty(), "{what}");
            error
        }
    }
}

#[test]
fn truncated_model_files_are_rejected() {
    for name in [RESNET, MMOD] {
        let Some(bytes) = dlib_model(&format!("{name}.dat")) else {
            continue;
        };
        for length in [0, 1, 7, 100, 5000, bytes.len() / 2, bytes.len() - 1] {
            let error = expect_error(&bytes[..length], "truncated file");
            assert!(is_truncation(&error), "{name} cut at {length}: {error}");
        }
    }
}

#[test]
fn trailing_data_is_rejected() {
    let Some(mut bytes) = dlib_model(&format!("{MMOD}.dat")) else {
        return;
    };
    bytes.push(0);
    let error = expect_error(&bytes, "trailing byte");
    assert!(error.to_string().contains("trailing"), "{error}");
}

#[test]
fn random_bytes_are_rejected() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for length in [1usize, 2, 16, 1000, 100_000] {
        for _ in 0..5 {
            let bytes: Vec<u8> = (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 24) as u8
                })
                .collect();
            expect_error(&bytes, "random bytes");
        }
    }
}

#[test]
fn each_network_reader_rejects_the_other_network() {
    let (Some(resnet_bytes), Some(mmod_bytes)) = (
        dlib_model(&format!("{RESNET}.dat")),
        dlib_model(&format!("{MMOD}.dat")),
    ) else {
        return;
    };
    let error = resnet::read(&mut DlibReader::new(&mmod_bytes)).unwrap_err();
    assert!(error.to_string().contains("loss_metric"), "{error}");
    let error = mmod::read(&mut DlibReader::new(&resnet_bytes)).unwrap_err();
    assert!(error.to_string().contains("loss_mmod_"), "{error}");
}

/// Writes values in dlib's serialization format.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn int(&mut self, value: i64) -> &mut Self {
        let magnitude = value.unsigned_abs();
        let bytes: Vec<u8> = magnitude.to_le_bytes().into_iter().collect();
        let size = bytes.iter().rposition(|&b| b != 0).map_or(1, |i| i + 1);
        let control = size as u8 | if value < 0 { 0x80 } else { 0 };
        self.0.push(control);
        self.0.extend(&bytes[..size]);
        self
    }

    /// `float_details`: an integer mantissa and a power-of-two exponent.
    fn float(&mut self, value: f64) -> &mut Self {
        if value == 0.0 {
            return self.int(0).int(0);
        }
        let bits = value.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i64 - 1075;
        let mantissa = ((bits & ((1 << 52) - 1)) | (1 << 52)) as i64;
        self.int(if value < 0.0 { -mantissa } else { mantissa })
            .int(exponent)
    }

    fn boolean(&mut self, value: bool) -> &mut Self {
        self.0.push(if value { b'1' } else { b'0' });
        self
    }

    fn string(&mut self, value: &str) -> &mut Self {
        self.int(value.len() as i64);
        self.0.extend(value.as_bytes());
        self
    }

    fn tensor(&mut self, shape: [i64; 4], data: &[f32]) -> &mut Self {
        self.int(2);
        for dim in shape {
            self.int(dim);
        }
        for value in data {
            self.0.extend(value.to_le_bytes());
        }
        self
    }

    fn empty_tensor(&mut self) -> &mut Self {
        self.tensor([0, 0, 0, 0], &[])
    }

    fn alias(&mut self, shape: [i64; 4]) -> &mut Self {
        self.int(1);
        for dim in shape {
            self.int(dim);
        }
        self
    }

    /// What follows a layer's details in a general `add_layer` (version 2).
    fn layer_state(&mut self) -> &mut Self {
        self.boolean(true).boolean(true).boolean(false);
        self.empty_tensor().empty_tensor().empty_tensor()
    }
}

/// `loss_metric<fc_no_bias<2, avg_pool_everything<add_prev1<skip2<tag2<relu<affine<affine<
/// con<2,3,3,1,1, tag1<input_rgb_image_sized<8>>>>>>>>>>>>`, with the inner affine stored as
/// `bn_con2`.
fn synthetic_spec() -> NetworkSpec {
    NetworkSpec {
        loss: LossSpec::Metric,
        layers: vec![
            LayerSpec::FcNoBias {
                outputs: 2,
                inputs: 2,
            },
            LayerSpec::AvgPool(PoolSpec { size: 0, stride: 1 }),
            LayerSpec::AddPrev,
            LayerSpec::Skip,
            LayerSpec::Tag,
            LayerSpec::Relu,
            LayerSpec::Affine(2),
            LayerSpec::Affine(2),
            LayerSpec::Con(ConSpec {
                filters: 2,
                channels: 3,
                size: 3,
                stride: 1,
            }),
            LayerSpec::Tag,
        ],
        input: InputSpec::RgbImageSized(8),
    }
}

fn con_filters() -> Vec<f32> {
    (0..2 * 3 * 3 * 3).map(|i| i as f32 * 0.5 - 3.0).collect()
}

/// The bytes of the synthetic network; `filters` is the filter count written in the con layer.
fn synthetic_bytes(filters: i64) -> Vec<u8> {
    let mut w = Writer::default();
    w.int(1).string("loss_metric_2").float(0.04).float(0.6);
    // Wrapper versions from the outside in: fc, avg_pool, add_prev, skip, tag, relu, affine,
    // affine, con, then the tag on the input layer.
    for version in [2, 2, 2, 1, 1, 2, 2, 2, 2, 2] {
        w.int(version);
    }
    w.string("input_rgb_image_sized")
        .float(122.782)
        .float(117.001)
        .float(104.298)
        .int(8)
        .int(8);
    // The tag on the input: cached output, gradient, stale flag, sample expansion factor.
    w.empty_tensor().empty_tensor().boolean(true).int(1);
    // con_4
    let mut params = con_filters();
    params.extend([0.25, -0.75]);
    w.string("con_4")
        .tensor([params.len() as i64, 1, 1, 1], &params)
        .int(filters)
        .int(3)
        .int(3)
        .int(1)
        .int(1)
        .int(1)
        .int(1)
        .alias([2, 3, 3, 3])
        .alias([1, 2, 1, 1]);
    w.float(1.0).float(1.0).float(1.0).float(0.0).layer_state();
    // bn_con2 where an affine layer is: gamma, beta; running means 1, -1; variances 3, 0.5.
    w.string("bn_con2")
        .tensor([4, 1, 1, 1], &[2.0, 0.5, 0.1, -0.2])
        .alias([1, 2, 1, 1])
        .alias([1, 2, 1, 1])
        .empty_tensor()
        .empty_tensor()
        .tensor([1, 2, 1, 1], &[1.0, -1.0])
        .tensor([1, 2, 1, 1], &[3.0, 0.5])
        .int(100)
        .int(1000);
    w.float(1.0).float(1.0).float(1.0).float(0.0).float(1e-5);
    w.layer_state();
    // affine_ (conv mode)
    w.string("affine_")
        .tensor([4, 1, 1, 1], &[1.5, -2.0, 0.0, 0.5])
        .alias([1, 2, 1, 1])
        .alias([1, 2, 1, 1])
        .int(0)
        .layer_state();
    w.string("relu_").layer_state();
    w.string("add_prev_").layer_state();
    w.string("avg_pool_2");
    for value in [0, 0, 1, 1, 0, 0] {
        w.int(value);
    }
    w.layer_state();
    // fc_3 without bias, weights stored [inputs, outputs].
    w.string("fc_3")
        .int(2)
        .int(2)
        .tensor([2, 2, 1, 1], &[1.0, 2.0, 3.0, 4.0])
        .alias([2, 2, 1, 1])
        .alias([0, 0, 0, 0])
        .int(1);
    w.float(1.0).float(1.0).float(1.0).float(0.0).boolean(true);
    w.layer_state();
    w.0
}

#[test]
fn reads_a_synthetic_network() {
    let bytes = synthetic_bytes(2);
    let mut reader = DlibReader::new(&bytes);
    let network = dnn::read_network(&mut reader, &synthetic_spec()).expect("synthetic network");
    assert!(reader.is_at_end());
    assert_eq!(network.input.mean, [122.782, 117.001, 104.298]);
    assert_eq!(network.layers.len(), 7);
    let Layer::Con { weight, bias } = &network.layers[0] else {
        panic!("expected the convolution first: {:?}", network.layers[0]);
    };
    assert_eq!(weight.shape, [2, 3, 3, 3]);
    assert_eq!(weight.data, con_filters());
    assert_eq!(bias, &[0.25, -0.75]);
    // bn_con folded: gamma / sqrt(var + eps), beta - gamma' * mean.
    let Layer::Affine { gamma, beta } = &network.layers[1] else {
        panic!("expected the folded bn_con: {:?}", network.layers[1]);
    };
    let eps = 1e-5f32;
    let expected_gamma = [2.0 / (3.0 + eps).sqrt(), 0.5 / (0.5 + eps).sqrt()];
    assert_eq!(gamma, &expected_gamma);
    assert_eq!(beta, &[0.1 - expected_gamma[0], -0.2 + expected_gamma[1]]);
    assert_eq!(
        network.layers[2],
        Layer::Affine {
            gamma: vec![1.5, -2.0],
            beta: vec![0.0, 0.5]
        }
    );
    assert!(network.layers[3..6].iter().all(|l| *l == Layer::Plain));
    // fc weights come out as [outputs, inputs].
    let Layer::Fc { weight } = &network.layers[6] else {
        panic!("expected the fc layer last: {:?}", network.layers[6]);
    };
    assert_eq!(weight.shape, [2, 2, 1, 1]);
    assert_eq!(weight.data, [1.0, 3.0, 2.0, 4.0]);
}

#[test]
fn every_truncation_of_a_synthetic_network_is_rejected() {
    let bytes = synthetic_bytes(2);
    for length in 0..bytes.len() {
        let mut reader = DlibReader::new(&bytes[..length]);
        match dnn::read_network(&mut reader, &synthetic_spec()) {
            Err(error) if is_truncation(&error) => {}
            other => panic!("cut at {length} of {}: {other:?}", bytes.len()),
        }
    }
}

#[test]
fn a_wrong_hyper_parameter_is_named_in_the_error() {
    let bytes = synthetic_bytes(3);
    let error = dnn::read_network(&mut DlibReader::new(&bytes), &synthetic_spec()).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("number of filters 2"), "{message}");
    assert!(message.contains('3'), "{message}");
}
