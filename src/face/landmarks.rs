//! Face landmarks: dlib's `shape_predictor` (an ensemble of regression trees, Kazemi &
//! Sullivan 2014) run on an RGB image, for a model of any number of parts: dlib's 5-point
//! `shape_predictor_5_face_landmarks` (the pipeline's) and its 68-point
//! `shape_predictor_68_face_landmarks` (face_recognition's default `large` model).
//!
//! Starting from the mean shape placed in the detection rectangle, each cascade level samples
//! grey values at feature pixels positioned relative to the current shape, walks its trees on
//! pixel differences and adds the leaf increments to the shape. This reproduces dlib's
//! arithmetic: the similarity transform from the mean to the current shape (the identity for
//! a one-part model) cast to `f32`, feature positions computed in `f32` and mapped to the image
//! in `f64`, rounded to pixels with `floor(v + 0.5)`, the grey value of an RGB pixel as
//! `(r + g + b) / 3` in integers, zero outside the image, and the final parts rounded the same
//! way.
//!
//! The number of parts is the type's parameter ([`ShapePredictor<N>`], 5 unless given), so
//! that landmarks are arrays ([`Landmarks<N>`]) and loading a model of another size is an
//! error rather than a panic later. The weights come through a candle [`VarBuilder`] from the
//! safetensors written by [`crate::convert::shape_predictor`]; the tree walk itself is branchy
//! scalar code, so they are kept as plain vectors.
//!
//! dlib's 68-point model is not committed (99 MB): `convert::cache` reads it from the `.dat` of
//! the `face_recognition_models` package, converting it once into a cache directory and
//! loading the converted file on later calls.

use candle_core::DType;
use candle_nn::VarBuilder;
use image::RgbImage;

use crate::error::{Error, Result};
use crate::geometry::{AffineTransform, DPoint, Point, Rect, find_similarity_transform};
use crate::weights::Model;

/// The landmarks of one face, in the order of the model's parts. For dlib's 5-point model
/// (the default): the outer and inner corner of the eye on the image's right (the person's
/// left eye), the outer and inner corner of the eye on the image's left, and the base of the
/// nose. For the 68-point model: the iBUG 300-W points (jaw 0-16, eyebrows 17-26, nose 27-35,
/// eyes 36-47, mouth 48-67).
pub type Landmarks<const N: usize = 5> = [Point; N];

/// A shape as dlib stores it: (x, y) per part in the detection rectangle's unit square.
type Shape<const N: usize> = [[f32; 2]; N];

/// One cascade level: its feature pixels and its forest of complete regression trees.
struct Cascade {
    /// Landmark each feature pixel is anchored to.
    anchor_idx: Vec<usize>,
    /// Offset of each feature pixel from its anchor in the mean shape.
    deltas: Vec<[f32; 2]>,
    /// Trees in the forest.
    trees: usize,
    /// Splits per tree (`2^depth - 1`); trees have `splits + 1` leaves.
    splits: usize,
    /// Per tree, its splits in breadth-first order.
    nodes: Vec<Split>,
    /// Per tree and leaf, one increment per shape coordinate.
    leaf_values: Vec<f32>,
}

/// A tree node: go to the left child when the feature difference `a - b` exceeds the
/// threshold.
struct Split {
    feature_a: usize,
    feature_b: usize,
    threshold: f32,
}

/// dlib's `shape_predictor` for a model of `N` parts (5 unless given).
pub struct ShapePredictor<const N: usize = 5> {
    initial_shape: Shape<N>,
    cascades: Vec<Cascade>,
}

impl<const N: usize> Model for ShapePredictor<N> {
    /// Loads the tensors written by the converter; a model of other than `N` parts is an
    /// error.
    fn load(vb: VarBuilder) -> Result<Self> {
        let initial = vb.get_unchecked_dtype("initial_shape", DType::F32)?;
        match *initial.dims() {
            [parts, 2] if parts == N && N > 0 => {}
            [parts, 2] => {
                return Err(Error::Weights(format!(
                    "a {parts}-point shape predictor where a {N}-point one is expected"
                )));
            }
            ref dims => {
                return Err(Error::Weights(format!(
                    "shape predictor: initial_shape has shape {dims:?}, expected [{N}, 2]"
                )));
            }
        }
        let initial = initial.to_vec2::<f32>()?;
        let initial_shape: Shape<N> = std::array::from_fn(|i| [initial[i][0], initial[i][1]]);

        let mut cascades = Vec::new();
        while vb.contains_tensor(&format!("cascade.{}.leaf_values", cascades.len())) {
            cascades.push(load_cascade(
                &vb.pp(format!("cascade.{}", cascades.len())),
                N,
            )?);
        }
        if cascades.is_empty() {
            return Err(Error::Weights(
                "shape predictor: no cascade levels (cascade.0.leaf_values)".to_string(),
            ));
        }
        Ok(Self {
            initial_shape,
            cascades,
        })
    }
}

impl<const N: usize> ShapePredictor<N> {
    /// The landmarks of the face in `rect` (a detection; it may extend past the image).
    pub fn predict(&self, image: &RgbImage, rect: Rect) -> Landmarks<N> {
        let to_image = unnormalizing_transform(rect);
        let mut shape = self.initial_shape;
        let (mut features, mut leaves) = (Vec::new(), Vec::new());
        for cascade in &self.cascades {
            self.feature_pixel_values(image, &to_image, &shape, cascade, &mut features);
            // The features are fixed for the whole level, so every tree can be walked first;
            // the leaf increments are then added in tree order as dlib does, with their
            // (cache-missing) loads free to overlap.
            let leaf_len = 2 * N;
            leaves.clear();
            leaves.extend((0..cascade.trees).map(|tree| {
                (tree * (cascade.splits + 1) + cascade.leaf(tree, &features)) * leaf_len
            }));
            for &start in &leaves {
                for (value, increment) in shape
                    .as_flattened_mut()
                    .iter_mut()
                    .zip(&cascade.leaf_values[start..start + leaf_len])
                {
                    *value += increment;
                }
            }
        }
        std::array::from_fn(|i| to_image.apply(shape_point(&shape, i)).round())
    }

    /// The landmarks of every face in `rects`, in order.
    pub fn predict_batch(&self, image: &RgbImage, rects: &[Rect]) -> Vec<Landmarks<N>> {
        rects
            .iter()
            .map(|&rect| self.predict(image, rect))
            .collect()
    }

    /// The grey values at a cascade level's feature pixels, placed relative to `shape`.
    fn feature_pixel_values(
        &self,
        image: &RgbImage,
        to_image: &AffineTransform,
        shape: &Shape<N>,
        cascade: &Cascade,
        features: &mut Vec<f32>,
    ) {
        // dlib keeps a one-part shape's offsets as they are (the identity).
        let m = if N == 1 {
            [[1.0, 0.0], [0.0, 1.0]]
        } else {
            let from: [DPoint; N] = std::array::from_fn(|i| shape_point(&self.initial_shape, i));
            let to: [DPoint; N] = std::array::from_fn(|i| shape_point(shape, i));
            find_similarity_transform(&from, &to)
                .m
                .map(|row| row.map(|v| v as f32))
        };

        let (width, height) = (i64::from(image.width()), i64::from(image.height()));
        let pixels = image.as_raw();
        features.clear();
        features.extend(cascade.anchor_idx.iter().zip(&cascade.deltas).map(
            |(&anchor, &[dx, dy])| {
                let [ax, ay] = shape[anchor];
                let x = m[0][0] * dx + m[0][1] * dy + ax;
                let y = m[1][0] * dx + m[1][1] * dy + ay;
                let p = to_image
                    .apply(DPoint::new(f64::from(x), f64::from(y)))
                    .round();
                if (0..width).contains(&p.x) && (0..height).contains(&p.y) {
                    let offset = 3 * (p.y * width + p.x) as usize;
                    let sum: u32 = pixels[offset..offset + 3]
                        .iter()
                        .map(|&c| u32::from(c))
                        .sum();
                    (sum / 3) as f32
                } else {
                    0.0
                }
            },
        ));
    }
}

impl Cascade {
    /// Walks tree `tree` on the feature values and returns the index of the leaf reached.
    fn leaf(&self, tree: usize, features: &[f32]) -> usize {
        let splits = &self.nodes[tree * self.splits..(tree + 1) * self.splits];
        let mut node = 0;
        while let Some(split) = splits.get(node) {
            let difference = features[split.feature_a] - features[split.feature_b];
            node = if difference > split.threshold {
                2 * node + 1
            } else {
                2 * node + 2
            };
        }
        node - self.splits
    }
}

/// Loads one cascade level of a model of `num_parts` parts.
fn load_cascade(vb: &VarBuilder, num_parts: usize) -> Result<Cascade> {
    let invalid =
        |message: String| Error::Weights(format!("shape predictor {}: {message}", vb.prefix()));
    let u32s = |name: &str| -> Result<(Vec<usize>, Vec<usize>)> {
        let tensor = vb.get_unchecked_dtype(name, DType::U32)?;
        let dims = tensor.dims().to_vec();
        let values = tensor.flatten_all()?.to_vec1::<u32>()?;
        Ok((values.into_iter().map(|v| v as usize).collect(), dims))
    };
    let f32s = |name: &str| -> Result<(Vec<f32>, Vec<usize>)> {
        let tensor = vb.get_unchecked_dtype(name, DType::F32)?;
        let dims = tensor.dims().to_vec();
        Ok((tensor.flatten_all()?.to_vec1::<f32>()?, dims))
    };

    let (anchor_idx, anchor_dims) = u32s("anchor_idx")?;
    let (deltas, deltas_dims) = f32s("deltas")?;
    let num_pixels = anchor_idx.len();
    if anchor_dims != [num_pixels] || deltas_dims != [num_pixels, 2] {
        return Err(invalid(format!(
            "anchor_idx {anchor_dims:?} and deltas {deltas_dims:?} do not describe the same pixels"
        )));
    }
    if anchor_idx.iter().any(|&a| a >= num_parts) {
        return Err(invalid(format!("anchor index not below {num_parts}")));
    }

    let (feature_a, a_dims) = u32s("split_feature_a")?;
    let (feature_b, b_dims) = u32s("split_feature_b")?;
    let (thresholds, t_dims) = f32s("split_threshold")?;
    let (leaf_values, leaf_dims) = f32s("leaf_values")?;
    let [trees, splits] = t_dims[..] else {
        return Err(invalid(format!(
            "split_threshold has shape {t_dims:?}, expected [trees, splits]"
        )));
    };
    if a_dims != t_dims || b_dims != t_dims || leaf_dims != [trees, splits + 1, 2 * num_parts] {
        return Err(invalid(format!(
            "inconsistent tree shapes: split_feature_a {a_dims:?}, split_feature_b {b_dims:?}, \
             split_threshold {t_dims:?}, leaf_values {leaf_dims:?}"
        )));
    }
    if !(splits + 1).is_power_of_two() {
        return Err(invalid(format!(
            "{splits} splits is not a complete binary tree"
        )));
    }
    if feature_a.iter().chain(&feature_b).any(|&f| f >= num_pixels) {
        return Err(invalid(format!(
            "split feature index not below {num_pixels}"
        )));
    }
    Ok(Cascade {
        anchor_idx,
        deltas: deltas.chunks_exact(2).map(|d| [d[0], d[1]]).collect(),
        trees,
        splits,
        nodes: feature_a
            .into_iter()
            .zip(feature_b)
            .zip(thresholds)
            .map(|((feature_a, feature_b), threshold)| Split {
                feature_a,
                feature_b,
                threshold,
            })
            .collect(),
        leaf_values,
    })
}

/// Point `i` of a shape.
fn shape_point<const N: usize>(shape: &Shape<N>, i: usize) -> DPoint {
    let [x, y] = shape[i];
    DPoint::new(f64::from(x), f64::from(y))
}

/// The map from the unit square to `rect`: (0,0) to its top-left and (1,1) to its
/// bottom-right corner. dlib's `unnormalizing_tform` fits this through three corners; the fit
/// is exact, so it is written down directly.
fn unnormalizing_transform(rect: Rect) -> AffineTransform {
    // dlib passes the corners through `f32`.
    let corner = |v: i64| f64::from(v as f32);
    let (left, top) = (corner(rect.left), corner(rect.top));
    AffineTransform {
        m: [
            [corner(rect.right) - left, 0.0],
            [0.0, corner(rect.bottom) - top],
        ],
        b: [left, top],
    }
}
