//! Shared helpers for the integration tests: where the reference data lives and how to read it.
//!
//! Reference cases are folders holding `decoded.png`, `reference.json` and `chip_*.png` made by
//! the original pipeline. The committed fixtures (tests/fixtures/pkg) are always used; when the
//! project's shared reference data is present beside the repository (`../shared/reference`),
//! every case there is used instead, so CI checks all of them.

pub mod moto;

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Reference {
    pub width: u32,
    pub height: u32,
    pub seed_encodings: Vec<Vec<f32>>,
    pub hog: DetectorFaces,
    pub cnn: Option<DetectorFaces>,
    pub hog_upsample0: Vec<Detection>,
    pub cnn_upsample0: Option<Vec<Detection>>,
}

#[derive(Debug, Deserialize)]
pub struct DetectorFaces {
    pub upsample: u32,
    pub faces: Vec<ReferenceFace>,
}

#[derive(Debug, Deserialize)]
pub struct ReferenceFace {
    pub rect: [i64; 4],
    pub score: f64,
    pub landmarks5: Vec<[i64; 2]>,
    pub descriptor: Vec<f32>,
    pub descriptor_from_chip: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub struct Detection {
    pub rect: [i64; 4],
    pub score: f64,
}

/// One reference case: a folder with decoded.png, reference.json and the chips.
#[derive(Debug)]
pub struct Case {
    /// e.g. "pkg/orig/t1"
    pub name: String,
    pub dir: PathBuf,
    pub reference: Reference,
}

impl Case {
    pub fn decoded(&self) -> image::RgbImage {
        image::open(self.dir.join("decoded.png"))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
            .to_rgb8()
    }

    pub fn chip(&self, detector: &str, index: usize) -> image::RgbImage {
        let path = self.dir.join(format!("chip_{detector}_{index}.png"));
        image::open(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8()
    }

    /// The encoded photo this case was made from (JPEG, PNG or WebP): `<set>/images/<variant>/<stem>.*`.
    pub fn source_image(&self) -> Option<PathBuf> {
        let stem = self.dir.file_name()?.to_str()?;
        let variant_dir = self.dir.parent()?;
        let variant = variant_dir.file_name()?;
        let images = variant_dir.parent()?.join("images").join(variant);
        std::fs::read_dir(images)
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.file_stem().and_then(|s| s.to_str()) == Some(stem))
    }
}

/// For a test that changes what the whole process shares (environment variables, the global
/// log subscriber): `true` in a run of this test binary for that test alone, where the test goes
/// on; elsewhere it starts such a run, fails when the test failed there, and returns `false`
/// (the caller then returns). `test` is the name the harness lists (`module::function`).
pub fn in_own_process(test: &str) -> bool {
    const ALONE: &str = "FACEDETECT_TEST_ALONE";
    if std::env::var_os(ALONE).is_some_and(|name| name == test) {
        return true;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture"])
        .env(ALONE, test)
        .output()
        .expect("the test binary runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in a process of its own:\n{stdout}\n{stderr}"
    );
    false
}

/// For a test that names addresses beyond this machine (metadata services, reserved ranges):
/// `true` in a run of this test binary for that test alone inside a network namespace of its
/// own with loopback only (`unshare --net`, then `ip link set lo up`), where nothing can leave
/// the machine whatever the code under test does; elsewhere it starts such a run, fails when
/// the test failed there, and returns `false` (the caller then returns). Without namespaces
/// (no `unshare`, or not allowed) the test is skipped with a message, unless
/// `FACEDETECT_REQUIRE_NETNS` is set (CI sets it).
pub fn in_own_netns(test: &str) -> bool {
    const ISOLATED: &str = "FACEDETECT_TEST_NETNS";
    if std::env::var_os(ISOLATED).is_some_and(|name| name == test) {
        return true;
    }
    // As root a namespace of its own; otherwise inside a user namespace, where allowed.
    let flags = [&["--net"][..], &["--map-root-user", "--net"][..]]
        .into_iter()
        .find(|flags| {
            std::process::Command::new("unshare")
                .args(*flags)
                .args(["sh", "-c", "ip link set lo up"])
                .output()
                .is_ok_and(|output| output.status.success())
        });
    let Some(flags) = flags else {
        assert!(
            std::env::var_os("FACEDETECT_REQUIRE_NETNS").is_none(),
            "{test}: no network namespace (unshare --net and ip link set lo up failed)"
        );
        eprintln!("skipped {test}: no network namespace (unshare --net) to run it in");
        return false;
    };
    let exe = std::env::current_exe().expect("the test binary");
    let output = std::process::Command::new("unshare")
        .args(flags)
        .args(["sh", "-c", r#"ip link set lo up && exec "$0" "$@""#])
        .arg(exe)
        .args([test, "--exact", "--nocapture"])
        .env(ISOLATED, test)
        .output()
        .expect("unshare runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in a network namespace of its own:\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
    false
}

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shared reference data beside the repository, when present.
pub fn shared_reference() -> Option<PathBuf> {
    let dir = crate_dir().join("../shared/reference");
    dir.join("pkg").is_dir().then_some(dir)
}

/// One of dlib's original model files from PyPI's face-recognition-models 0.3.0, looked up in
/// `DLIB_MODELS_DIR` (set by .ci/run) or in a local reference environment. Tests that need
/// them skip without; in CI (`CI=true`) their absence is a failure.
pub fn dlib_model_file(name: &str) -> Option<PathBuf> {
    let dirs = [
        std::env::var_os("DLIB_MODELS_DIR").map(PathBuf::from),
        Some(PathBuf::from(
            "/tmp/refenv/lib/python3.11/site-packages/face_recognition_models/models",
        )),
    ];
    let found = dirs
        .into_iter()
        .flatten()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "{name} not found: set DLIB_MODELS_DIR (.ci/run installs face-recognition-models)"
        );
        eprintln!("skipped: {name} not found (set DLIB_MODELS_DIR)");
    }
    found
}

pub fn weights_dir() -> PathBuf {
    crate_dir().join("weights")
}

fn cases_under(root: &Path, set: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    for variant in ["orig", "large", "medium"] {
        let Ok(entries) = std::fs::read_dir(root.join(set).join(variant)) else {
            continue;
        };
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let json = dir.join("reference.json");
            if !json.is_file() || !dir.join("decoded.png").is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&json).expect("readable reference.json");
            let reference: Reference =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json.display()));
            let name = format!(
                "{set}/{variant}/{}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            );
            cases.push(Case {
                name,
                dir,
                reference,
            });
        }
    }
    cases
}

/// Every reference case available: all of ../shared/reference when present, otherwise the
/// committed fixtures.
pub fn reference_cases() -> Vec<Case> {
    let cases = match shared_reference() {
        Some(shared) => {
            let mut cases = cases_under(&shared, "pkg");
            cases.extend(cases_under(&shared, "repo"));
            cases
        }
        None => cases_under(&crate_dir().join("tests/fixtures"), "pkg"),
    };
    assert!(!cases.is_empty(), "no reference cases found");
    cases
}

pub fn euclidean(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// A small PNG file declaring `width` x `height` RGB pixels: a valid header and a first
/// compressed chunk of zero rows, as a decompression bomb starts.
pub fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    // zlib: one stored block of 1000 zero bytes.
    let mut data = vec![0x78, 0x01, 0x00, 0xe8, 0x03, 0x17, 0xfc];
    data.extend_from_slice(&[0; 1000]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, body) in [(b"IHDR", header), (b"IDAT", data), (b"IEND", Vec::new())] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(&body);
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&chunk);
        bytes.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    bytes
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A child process (a server or function under test) killed when the test ends, however it
/// ends.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// Sends the process SIGTERM, as a container runtime stopping it does.
    pub fn terminate(&self) {
        let pid = self.0.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is still running.
    pub async fn exit_within(
        &mut self,
        limit: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status);
            }
            if started.elapsed() >= limit {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bytes of a committed pkg fixture, e.g. `images/large/t1.webp`.
pub fn pkg_fixture(path: &str) -> Vec<u8> {
    std::fs::read(crate_dir().join("tests/fixtures/pkg").join(path)).unwrap()
}

/// Runs `command` with `input` on its stdin; its output once it has exited.
pub fn run_with_stdin(command: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}
