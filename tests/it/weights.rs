//! Weights are found in a directory or resolved offline from a prepared Hugging Face cache.

use std::path::Path;

use concrexit_facedetection::weights::{WeightsLocation, files};

/// Lays out a Hub cache for `owner/name` the way huggingface_hub and hf-hub write it.
fn prepare_hub_cache(cache: &Path, owner: &str, name: &str, file: &str, contents: &[u8]) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join(format!("models--{owner}--{name}"));
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    std::fs::write(snapshot.join(file), contents).unwrap();
}

#[test]
fn resolves_directories_and_offline_hub_caches() {
    // It sets the Hub's environment variables: in a process of its own.
    if !crate::common::in_own_process("weights::resolves_directories_and_offline_hub_caches") {
        return;
    }
    // A directory: present and missing files.
    let dir = std::env::temp_dir().join(format!("facedetect-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(files::HOG_DETECTOR), b"weights").unwrap();
    let location = WeightsLocation::parse(dir.to_str().unwrap()).unwrap();
    assert_eq!(
        location.file(files::HOG_DETECTOR).unwrap(),
        dir.join(files::HOG_DETECTOR)
    );
    let missing = location.file(files::CNN_DETECTOR).unwrap_err().to_string();
    assert!(missing.contains("does not exist"), "{missing}");

    // A Hub repository, offline, from the cache (this process owns its environment).
    let cache = dir.join("hub");
    prepare_hub_cache(
        &cache,
        "concrexit",
        "facedetection",
        files::HOG_DETECTOR,
        b"from hub",
    );
    // SAFETY: the only test in this process, and no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_HUB_CACHE", &cache);
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let hub = WeightsLocation::parse("hf://concrexit/facedetection").unwrap();
    let path = hub.file(files::HOG_DETECTOR).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"from hub");
    let not_cached = hub.file(files::CNN_DETECTOR).unwrap_err().to_string();
    assert!(not_cached.contains(files::CNN_DETECTOR), "{not_cached}");

    std::fs::remove_dir_all(&dir).unwrap();
}
