//! Speed of the face embedder on the CPU: aligned chips encoded in one process, as the
//! pipeline encodes them (`FacePipeline::embed_chips`, in batches).
//!
//! ```sh
//! cargo bench --bench embedder -- [--chips 64] [--runs 5]
//! ```
//!
//! The chips are the committed reference chips (tests/fixtures/pkg/orig/*/chip_*.png),
//! repeated to make `--chips`. Every run prints one line
//!
//! ```text
//! RUN chips=64 wall_s=0.512 cpu_s=0.950
//! ```
//!
//! with the run's wall-clock time and the CPU time (user + system, all threads) the process
//! spent in it. benches/side_by_side.py runs this beside dlib's embedder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use concrexit_facedetection::pipeline::FacePipeline;
use concrexit_facedetection::weights::WeightsLocation;

mod support;
use support::process_cpu_seconds;

fn chips(root: &Path) -> Vec<image::RgbImage> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("fixtures")
        .flatten()
        .flat_map(|case| {
            std::fs::read_dir(case.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("chip_") && name.ends_with(".png"))
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| image::open(path).expect("chip").to_rgb8())
        .collect()
}

fn main() {
    // RUST_LOG=concrexit_facedetection::kernels=debug logs every convolution's time and speed.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut count = 64;
    let mut runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--chips" => count = value("--chips"),
            "--runs" => runs = value("--runs"),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let weights = WeightsLocation::Directory(crate_dir.join("weights"));
    let pipeline = FacePipeline::load(&weights, &Device::Cpu).expect("models");
    let chips = chips(&crate_dir.join("tests/fixtures/pkg/orig"));
    assert!(!chips.is_empty(), "no chips");
    let batch: Vec<_> = chips.iter().cycle().take(count).cloned().collect();
    pipeline.embed_chips(&batch).expect("warm-up");
    for _ in 0..runs {
        let cpu = process_cpu_seconds();
        let start = Instant::now();
        pipeline.embed_chips(&batch).expect("embedding");
        println!(
            "RUN chips={count} wall_s={:.4} cpu_s={:.3}",
            start.elapsed().as_secs_f64(),
            process_cpu_seconds() - cpu
        );
    }
}
