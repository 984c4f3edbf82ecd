//! Speed of the face embedder on CPU: encodings per second for batches of 1 and 16 chips.
//!
//! Run with `cargo bench --bench embedder` (add `--profile dev` to reuse the optimised dev
//! build). It prints one `RESULT` line per batch size, which benches/reference_embedder.py
//! reads to put the numbers beside dlib's. The chips are the committed reference chips
//! (tests/fixtures/pkg/orig/*/chip_*.png), repeated to fill a batch. Besides wall-clock
//! times it reports the process's CPU time per face, which stays meaningful when other
//! programs share the cores (`RAYON_NUM_THREADS=1` avoids counting idle spinning).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::Device;
use concrexit_facedetection::face::embedder::FaceEmbedder;
use concrexit_facedetection::weights::Model;

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

/// CPU time this process has used (all threads), from /proc/self/stat; None elsewhere.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which ends with the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks; 100 per second on Linux.
    Some((user + system) / 100.0)
}

fn main() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let weights = crate_dir.join("weights/dlib_face_recognition_resnet_model_v1.safetensors");
    let embedder = FaceEmbedder::from_file(&weights, &Device::Cpu).expect("weights");
    let chips = chips(&crate_dir.join("tests/fixtures/pkg/orig"));
    assert!(!chips.is_empty(), "no chips");
    let budget = Duration::from_secs(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    );
    println!(
        "face embedder on CPU, {} threads",
        candle_core::utils::get_num_threads()
    );
    for batch_size in [1usize, 16] {
        let batch: Vec<_> = chips.iter().cycle().take(batch_size).cloned().collect();
        embedder.embed(&batch).expect("warm-up");
        let mut times = Vec::new();
        let cpu_start = process_cpu_seconds();
        let start = Instant::now();
        while start.elapsed() < budget || times.len() < 3 {
            let run = Instant::now();
            embedder.embed(&batch).expect("embedding");
            times.push(run.elapsed().as_secs_f64());
        }
        let cpu_ms_per_face = cpu_start
            .zip(process_cpu_seconds())
            .map(|(start, end)| {
                let faces = (times.len() * batch_size) as f64;
                format!("{:.2}", (end - start) * 1000.0 / faces)
            })
            .unwrap_or_else(|| "n/a".to_string());
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let best = times[0];
        let per_face_ms = median * 1000.0 / batch_size as f64;
        println!(
            "RESULT batch={batch_size} runs={} median_ms={:.1} best_ms={:.1} ms_per_face={per_face_ms:.2} faces_per_s={:.1} cpu_ms_per_face={cpu_ms_per_face}",
            times.len(),
            median * 1000.0,
            best * 1000.0,
            1000.0 / per_face_ms
        );
    }
}
