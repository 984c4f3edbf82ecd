//! Reads dlib's `shape_predictor` serialization (an ensemble of regression trees, Kazemi &
//! Sullivan 2014) and turns a landmark model of any number of parts into tensors: dlib's
//! 5-point and 68-point face landmark models alike. The number of parts is the mean shape's;
//! every leaf and anchor index is checked against it.
//!
//! The file holds a version (1), the mean shape as a column of x,y pairs in the `[0,1]` square
//! of the detection rectangle, one forest of regression trees per cascade level (each split a
//! pair of feature pixel indices and a threshold, each leaf a shape increment), and per cascade
//! level the feature pixels as an anchor landmark index plus an offset from it.
//!
//! Tensors written, for a model with `C` cascade levels, `T` trees per level, `S` splits and
//! `S + 1` leaves per tree, `P` feature pixels per level and `N` parts:
//! - `initial_shape`: f32 `[N, 2]`
//! - `cascade.{c}.split_feature_a`, `cascade.{c}.split_feature_b`: u32 `[T, S]`
//! - `cascade.{c}.split_threshold`: f32 `[T, S]`
//! - `cascade.{c}.leaf_values`: f32 `[T, S + 1, 2 N]`
//! - `cascade.{c}.anchor_idx`: u32 `[P]`
//! - `cascade.{c}.deltas`: f32 `[P, 2]`

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use crate::convert::dlib_format::DlibReader;
use crate::error::FormatError;

type Result<T> = std::result::Result<T, FormatError>;

/// One regression tree: its splits in breadth-first order and its leaf increments.
struct Tree {
    feature_a: Vec<u32>,
    feature_b: Vec<u32>,
    thresholds: Vec<f32>,
    leaves: Vec<f32>,
}

/// Reads a whole `shape_predictor` and returns its tensors.
pub fn read(reader: &mut DlibReader) -> Result<HashMap<String, Tensor>> {
    reader.expect_int(1, "shape_predictor version")?;

    let initial_shape = reader.read_matrix()?;
    if initial_shape.cols != 1 || initial_shape.rows % 2 != 0 {
        return Err(reader.error(format!(
            "expected the shape predictor's initial shape as a column of x,y pairs, found a {}x{} matrix",
            initial_shape.rows, initial_shape.cols
        )));
    }
    let num_parts = initial_shape.rows / 2;
    if num_parts == 0 {
        return Err(reader.error("a shape predictor with no parts".to_string()));
    }

    let num_cascades = reader.read_usize()?;
    let mut forests = Vec::with_capacity(num_cascades.min(1024));
    let mut splits_per_tree = None;
    for cascade in 0..num_cascades {
        let num_trees = reader.read_usize()?;
        let mut trees = Vec::with_capacity(num_trees.min(65536));
        for _ in 0..num_trees {
            let tree = read_tree(reader, num_parts)?;
            let splits = tree.thresholds.len();
            if *splits_per_tree.get_or_insert(splits) != splits {
                return Err(reader.error(format!(
                    "cascade {cascade}: a tree with {splits} splits among trees with {} splits; \
                     every tree must have the same depth",
                    splits_per_tree.unwrap_or_default()
                )));
            }
            trees.push(tree);
        }
        forests.push(trees);
    }

    let anchors_count = reader.read_usize()?;
    if anchors_count != num_cascades {
        return Err(reader.error(format!(
            "expected anchor indices for {num_cascades} cascade levels, found {anchors_count}"
        )));
    }
    let mut anchors = Vec::with_capacity(num_cascades);
    for _ in 0..num_cascades {
        let count = reader.read_usize()?;
        let mut anchor = Vec::with_capacity(count.min(65536));
        for _ in 0..count {
            let index = reader.read_usize()?;
            if index >= num_parts {
                return Err(reader.error(format!(
                    "anchor landmark index {index} is not below {num_parts}"
                )));
            }
            anchor.push(index as u32);
        }
        anchors.push(anchor);
    }

    let deltas_count = reader.read_usize()?;
    if deltas_count != num_cascades {
        return Err(reader.error(format!(
            "expected feature pixel offsets for {num_cascades} cascade levels, found {deltas_count}"
        )));
    }
    let mut deltas = Vec::with_capacity(num_cascades);
    for anchor in &anchors {
        let count = reader.read_usize()?;
        if count != anchor.len() {
            return Err(reader.error(format!(
                "expected {} feature pixel offsets, found {count}",
                anchor.len()
            )));
        }
        let mut offsets = Vec::with_capacity(2 * count);
        for _ in 0..2 * count {
            offsets.push(reader.read_f32()?);
        }
        deltas.push(offsets);
    }

    let mut tensors = HashMap::new();
    let device = &Device::Cpu;
    let offset = reader.position();
    let to_tensor = |result: candle_core::Result<Tensor>| {
        result.map_err(|error| FormatError::Invalid {
            offset,
            message: format!("building a tensor: {error}"),
        })
    };
    tensors.insert(
        "initial_shape".to_string(),
        to_tensor(Tensor::from_vec(initial_shape.data, (num_parts, 2), device))?,
    );
    for (cascade, ((trees, anchor), offsets)) in
        forests.into_iter().zip(anchors).zip(deltas).enumerate()
    {
        let num_pixels = anchor.len() as u32;
        if let Some(index) = trees
            .iter()
            .flat_map(|tree| tree.feature_a.iter().chain(&tree.feature_b))
            .find(|&&index| index >= num_pixels)
        {
            return Err(reader.error(format!(
                "cascade {cascade}: split feature index {index} is not below its {num_pixels} feature pixels"
            )));
        }
        let num_trees = trees.len();
        let splits = splits_per_tree.unwrap_or_default();
        let name = |field: &str| format!("cascade.{cascade}.{field}");
        let concat_u32 = |field: fn(&Tree) -> &Vec<u32>| -> Vec<u32> {
            trees
                .iter()
                .flat_map(|tree| field(tree).iter().copied())
                .collect()
        };
        tensors.insert(
            name("split_feature_a"),
            to_tensor(Tensor::from_vec(
                concat_u32(|t| &t.feature_a),
                (num_trees, splits),
                device,
            ))?,
        );
        tensors.insert(
            name("split_feature_b"),
            to_tensor(Tensor::from_vec(
                concat_u32(|t| &t.feature_b),
                (num_trees, splits),
                device,
            ))?,
        );
        let thresholds: Vec<f32> = trees
            .iter()
            .flat_map(|t| t.thresholds.iter().copied())
            .collect();
        tensors.insert(
            name("split_threshold"),
            to_tensor(Tensor::from_vec(thresholds, (num_trees, splits), device))?,
        );
        let leaves: Vec<f32> = trees
            .iter()
            .flat_map(|t| t.leaves.iter().copied())
            .collect();
        tensors.insert(
            name("leaf_values"),
            to_tensor(Tensor::from_vec(
                leaves,
                (num_trees, splits + 1, 2 * num_parts),
                device,
            ))?,
        );
        let num_pixels = anchor.len();
        tensors.insert(
            name("anchor_idx"),
            to_tensor(Tensor::from_vec(anchor, num_pixels, device))?,
        );
        tensors.insert(
            name("deltas"),
            to_tensor(Tensor::from_vec(offsets, (num_pixels, 2), device))?,
        );
    }
    Ok(tensors)
}

/// Reads one regression tree and checks that it is complete: `2^d - 1` splits and `2^d`
/// leaves of one increment per coordinate of the `num_parts` landmarks.
fn read_tree(reader: &mut DlibReader, num_parts: usize) -> Result<Tree> {
    let num_splits = reader.read_usize()?;
    if !(num_splits + 1).is_power_of_two() {
        return Err(reader.error(format!(
            "a regression tree with {num_splits} splits is not a complete binary tree"
        )));
    }
    let mut tree = Tree {
        feature_a: Vec::with_capacity(num_splits.min(65536)),
        feature_b: Vec::with_capacity(num_splits.min(65536)),
        thresholds: Vec::with_capacity(num_splits.min(65536)),
        leaves: Vec::new(),
    };
    for _ in 0..num_splits {
        tree.feature_a.push(read_u32(reader)?);
        tree.feature_b.push(read_u32(reader)?);
        tree.thresholds.push(reader.read_f32()?);
    }
    let num_leaves = reader.read_usize()?;
    if num_leaves != num_splits + 1 {
        return Err(reader.error(format!(
            "a regression tree with {num_splits} splits has {num_leaves} leaves, expected {}",
            num_splits + 1
        )));
    }
    tree.leaves.reserve(num_leaves.min(65536) * 2 * num_parts);
    for _ in 0..num_leaves {
        let leaf = reader.read_matrix()?;
        if leaf.rows != 2 * num_parts || leaf.cols != 1 {
            return Err(reader.error(format!(
                "expected a leaf of {} shape increments, found a {}x{} matrix",
                2 * num_parts,
                leaf.rows,
                leaf.cols
            )));
        }
        tree.leaves.extend(leaf.data);
    }
    Ok(tree)
}

fn read_u32(reader: &mut DlibReader) -> Result<u32> {
    let value = reader.read_usize()?;
    u32::try_from(value).map_err(|_| reader.error(format!("feature index {value} out of range")))
}
