//! Finds the model weights: a local directory or a Hugging Face Hub repository.
//!
//! Without configuration the weights committed in the repository's `weights/` folder are used
//! (found relative to the working directory or to the crate the binary was built from). A
//! deployment can instead point `FACEDETECT_WEIGHTS` (or a `--weights` flag) at another
//! directory, or at a Hub repository written `hf://owner/name[@revision]`, which is resolved
//! through hf-hub's cache (`HF_HUB_CACHE`/`HF_HOME`); with `HF_HUB_OFFLINE=1` only the cache
//! is consulted.
//!
//! Every model loads the same way ([`Model`]): from a [`VarBuilder`] over the tensors the
//! converter wrote, which [`open`] maps from a safetensors file.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{Error, Result};

/// The environment variable naming the weights location.
pub const WEIGHTS_ENV: &str = "FACEDETECT_WEIGHTS";

/// The file name of each converted model.
pub mod files {
    pub const FACE_EMBEDDER: &str = "dlib_face_recognition_resnet_model_v1.safetensors";
    pub const SHAPE_PREDICTOR: &str = "shape_predictor_5_face_landmarks.safetensors";
    pub const HOG_DETECTOR: &str = "frontal_face_detector.safetensors";
    pub const CNN_DETECTOR: &str = "mmod_human_face_detector.safetensors";
}

/// A model built from the tensors the converter wrote (see [`crate::convert`]).
pub trait Model: Sized {
    /// Builds the model from its tensors.
    fn load(vb: VarBuilder) -> Result<Self>;

    /// Loads the model from a safetensors file onto `device`.
    fn from_file(path: &Path, device: &Device) -> Result<Self> {
        Self::load(open(path, device)?)
    }
}

/// A [`VarBuilder`] over the `f32` view of a memory-mapped safetensors file on `device`.
pub fn open(path: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    // SAFETY: the map is read while the models copy their tensors out of it, and weights files
    // are written once (by the converter or a Hub download) and never modified in place.
    Ok(unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device)? })
}

/// Where the model files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsLocation {
    Directory(PathBuf),
    HubRepository {
        repo_id: String,
        revision: Option<String>,
    },
}

impl WeightsLocation {
    /// Parses `hf://owner/name[@revision]` or a directory path.
    pub fn parse(text: &str) -> Result<Self> {
        let Some(repo) = text.strip_prefix("hf://") else {
            return Ok(Self::Directory(PathBuf::from(text)));
        };
        let (repo_id, revision) = match repo.split_once('@') {
            Some((repo_id, revision)) => (repo_id, Some(revision.to_string())),
            None => (repo, None),
        };
        match repo_id.split_once('/') {
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self::HubRepository {
                    repo_id: repo_id.to_string(),
                    revision,
                })
            }
            _ => Err(Error::Weights(format!(
                "{text:?} is not a Hub repository of the form hf://owner/name[@revision]"
            ))),
        }
    }

    /// The location given as `text` (a directory or `hf://owner/name[@revision]`), else
    /// [`WeightsLocation::discover`]'s.
    pub fn given_or_discovered(text: Option<&str>) -> Result<Self> {
        match text {
            Some(text) => Self::parse(text),
            None => Self::discover(),
        }
    }

    /// The location given by `FACEDETECT_WEIGHTS`, else the repository's `weights/` folder.
    pub fn discover() -> Result<Self> {
        if let Ok(text) = std::env::var(WEIGHTS_ENV) {
            return Self::parse(&text);
        }
        let candidates = [
            PathBuf::from("weights"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("weights"),
        ];
        candidates
            .into_iter()
            .find(|dir| dir.join(files::FACE_EMBEDDER).is_file())
            .map(Self::Directory)
            .ok_or_else(|| {
                Error::Weights(format!(
                    "no weights/ folder found; set {WEIGHTS_ENV} to a directory or hf://owner/name"
                ))
            })
    }

    /// The local path of one model file, downloading it into the Hub cache when needed.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        match self {
            Self::Directory(dir) => {
                let path = dir.join(name);
                if path.is_file() {
                    Ok(path)
                } else {
                    Err(Error::Weights(format!("{} does not exist", path.display())))
                }
            }
            Self::HubRepository { repo_id, revision } => {
                download_from_hub(repo_id, revision.clone(), name.to_string())
            }
        }
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|value| matches!(value.as_str(), "1" | "true" | "TRUE" | "yes"))
}

/// Resolves a file through hf-hub on a thread of its own, so that it works both from
/// synchronous code and from inside an async runtime.
fn download_from_hub(repo_id: &str, revision: Option<String>, filename: String) -> Result<PathBuf> {
    let (owner, name) = repo_id
        .split_once('/')
        .map(|(owner, name)| (owner.to_string(), name.to_string()))
        .ok_or_else(|| Error::Weights(format!("invalid Hub repository {repo_id:?}")))?;
    let local_files_only = offline();
    let describe = format!("{filename} from hf://{repo_id}");
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::Weights(format!("starting a runtime: {e}")))?;
                runtime.block_on(async move {
                    let client =
                        hf_hub::HFClient::new().map_err(|e| Error::Weights(e.to_string()))?;
                    client
                        .model(owner, name)
                        .download_file()
                        .filename(filename)
                        .maybe_revision(revision)
                        .local_files_only(local_files_only)
                        .send()
                        .await
                        .map_err(|e| Error::Weights(e.to_string()))
                })
            })
            .join()
            .map_err(|_| Error::Weights("the download thread panicked".to_string()))?
    })
    .map_err(|e| Error::Weights(format!("{describe}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert_eq!(
            WeightsLocation::parse("hf://org/models@v1").unwrap(),
            WeightsLocation::HubRepository {
                repo_id: "org/models".to_string(),
                revision: Some("v1".to_string())
            }
        );
        assert_eq!(
            WeightsLocation::parse("/opt/weights").unwrap(),
            WeightsLocation::Directory(PathBuf::from("/opt/weights"))
        );
        assert!(WeightsLocation::parse("hf://no-name").is_err());
    }
}
