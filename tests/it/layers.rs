//! The library's layers, as `src/lib.rs` draws them: a module uses only modules of the layers
//! below its own, so the tree has no import cycle and nothing reaches upwards. Read from the
//! sources: every `crate::` path outside comments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers of `src/lib.rs`, lowest first.
const LAYERS: &[&[&str]] = &[
    &["error", "geometry", "nn", "redact", "shutdown"],
    &["telemetry"],
    &["logging", "plan", "weights", "kernels", "decode"],
    &["detect"],
    &["face"],
    &["convert", "pipeline"],
    &["service", "annotate"],
    &["backfill"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer of src/lib.rs"))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The crate's top-level modules each file uses, outside comments.
fn uses(src: &Path) -> BTreeMap<String, Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut uses: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first).with_extension("");
        let module = module.to_string_lossy().to_string();
        if ["lib", "main", "bin"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (at, _) in code.match_indices("crate::") {
                let used: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // `crate::{a, b}` and friends name no module here.
                if !used.is_empty() && used != module {
                    uses.entry(module.clone())
                        .or_default()
                        .push((used, relative.to_path_buf()));
                }
            }
        }
    }
    uses
}

#[test]
fn modules_use_only_the_layers_below_their_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut upward = Vec::new();
    for (module, used) in uses(&src) {
        for (dependency, file) in used {
            let dependency = match dependency.as_str() {
                // The crate root's re-exports.
                "Error" | "Result" => "error".to_string(),
                _ => dependency,
            };
            if layer_of(&dependency) >= layer_of(&module) {
                upward.push(format!("{} uses crate::{dependency}", file.display()));
            }
        }
    }
    assert!(upward.is_empty(), "{upward:#?}");
}

#[test]
fn every_module_of_lib_rs_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.trim().strip_suffix(';'))
        .filter_map(|line| line.rsplit_once("mod ").map(|(_, name)| name))
        .collect();
    assert!(modules.contains(&"pipeline"), "{modules:?}");
    let layered: usize = LAYERS.iter().map(|layer| layer.len()).sum();
    assert_eq!(modules.len(), layered, "{modules:?}");
    for module in modules {
        layer_of(module);
    }
}
