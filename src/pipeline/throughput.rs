//! Throughput of the batched pipeline ([`DeviceBatcher`]) on a folder of photos: photos per
//! second with decoding included, and chips per second of the embedder by batch size. This is
//! what `facedetect bench-device` prints and the GPU check records.
//!
//! The photos are read into memory first (no disk in the timing), then `concurrency` threads
//! each take the next photo, decode it, detect and encode its faces, as the worker's blocking
//! threads do; the batcher gathers their device work. The first `concurrency` photos warm the
//! device up (kernel loading, allocations) and are not timed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;

use super::device_batch::{BatcherStats, DeviceBatcher, QueueStats};
use crate::decode::{DecodeLimits, decode_image};
use crate::error::{Error, Result};
use crate::pipeline::Face;

/// The photo files of a folder (by extension), sorted by name, with their bytes.
pub fn read_photos(dir: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["jpg", "jpeg", "png", "webp", "gif", "bmp"]
                    .contains(&e.to_ascii_lowercase().as_str())
            })
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(Error::InvalidInput(format!(
            "no photos (jpg, png, webp, gif, bmp) in {}",
            dir.display()
        )));
    }
    paths
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            Ok((path, bytes))
        })
        .collect()
}

/// Mean milliseconds per photo of each stage, as seen by one thread (waits for the device
/// included).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageMeans {
    pub decode_ms: f64,
    pub detect_ms: f64,
    pub encode_ms: f64,
}

/// The result of a timed run over photos.
#[derive(Debug, Clone, Serialize)]
pub struct PhotoThroughput {
    pub photos: usize,
    pub distinct_photos: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub photos_per_second: f64,
    pub faces: usize,
    pub mean: StageMeans,
    /// What the batched models did in the timed run.
    pub batches: BatcherStats,
}

/// One photo with its faces.
pub type FoundFaces = (PathBuf, RgbImage, Vec<Face>);
/// The faces of each distinct photo, from the timed run (the batched results).
pub type PhotoFaces = Vec<FoundFaces>;

/// Runs `photos` photos (cycling through `files`) through `batcher` on `concurrency` threads,
/// after an untimed warm-up; no photo is started after `budget` (the count is then what was
/// done). Returns the timing and the faces of each distinct photo.
pub fn photo_throughput(
    batcher: &DeviceBatcher,
    files: &[(PathBuf, Vec<u8>)],
    photos: usize,
    concurrency: usize,
    budget: Duration,
) -> Result<(PhotoThroughput, PhotoFaces)> {
    let concurrency = concurrency.max(1);
    let warm_up = concurrency.min(photos.max(1));
    run_photos(batcher, files, warm_up, concurrency, Duration::MAX)?;
    let before = batcher.stats();
    let started = Instant::now();
    let (photos, faces, means, found) = run_photos(batcher, files, photos, concurrency, budget)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok((
        PhotoThroughput {
            photos,
            distinct_photos: files.len().min(photos),
            concurrency,
            seconds,
            photos_per_second: photos as f64 / seconds,
            faces,
            mean: means,
            batches: since(before, batcher.stats()),
        },
        found,
    ))
}

/// Photos done, faces found, stage means and the faces of each distinct photo.
type PhotoRun = (usize, usize, StageMeans, PhotoFaces);

fn run_photos(
    batcher: &DeviceBatcher,
    files: &[(PathBuf, Vec<u8>)],
    photos: usize,
    concurrency: usize,
    budget: Duration,
) -> Result<PhotoRun> {
    let started = Instant::now();
    let limits = DecodeLimits::default();
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let found: Mutex<Vec<Option<FoundFaces>>> = Mutex::new(vec![None; files.len()]);
    let totals: Mutex<(usize, usize, [Duration; 3])> = Mutex::new((0, 0, [Duration::ZERO; 3]));
    std::thread::scope(|scope| {
        for _ in 0..concurrency {
            scope.spawn(|| {
                loop {
                    if started.elapsed() > budget {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= photos {
                        return;
                    }
                    let (path, bytes) = &files[i % files.len()];
                    let t0 = Instant::now();
                    let result = decode_image(bytes, &limits).and_then(|image| {
                        let t1 = Instant::now();
                        let detections = batcher.detect(&image)?;
                        let t2 = Instant::now();
                        let rects: Vec<_> = detections.iter().map(|(rect, _)| *rect).collect();
                        let mut faces = batcher.encode_at(&image, &rects)?;
                        for (face, (_, score)) in faces.iter_mut().zip(&detections) {
                            face.score = Some(*score);
                        }
                        Ok((image, faces, [t1 - t0, t2 - t1, t2.elapsed()]))
                    });
                    match result {
                        Ok((image, faces, times)) => {
                            let mut totals = lock(&totals);
                            totals.0 += 1;
                            totals.1 += faces.len();
                            for (total, time) in totals.2.iter_mut().zip(times) {
                                *total += time;
                            }
                            drop(totals);
                            if i < files.len() {
                                lock(&found)[i] = Some((path.clone(), image, faces));
                            }
                        }
                        Err(error) => {
                            lock(&first_error).get_or_insert(Error::InvalidInput(format!(
                                "{}: {error}",
                                path.display()
                            )));
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = lock(&first_error).take() {
        return Err(error);
    }
    let (done, faces, times) = *lock(&totals);
    let mean = |d: Duration| d.as_secs_f64() * 1000.0 / done.max(1) as f64;
    let found = lock(&found).drain(..).flatten().collect();
    Ok((
        done,
        faces,
        StageMeans {
            decode_ms: mean(times[0]),
            detect_ms: mean(times[1]),
            encode_ms: mean(times[2]),
        },
        found,
    ))
}

/// The counts of `after` less those of `before`.
fn since(before: BatcherStats, after: BatcherStats) -> BatcherStats {
    let less = |b: QueueStats, a: QueueStats| QueueStats {
        batches: a.batches - b.batches,
        items: a.items - b.items,
        busy_seconds: a.busy_seconds - b.busy_seconds,
    };
    BatcherStats {
        cnn: less(before.cnn, after.cnn),
        embedder: less(before.embedder, after.embedder),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The embedder's speed at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedThroughput {
    pub batch: usize,
    pub chips: usize,
    pub seconds: f64,
    pub chips_per_second: f64,
}

/// Embeds batches of `batch` chips (cycling through `chips`) directly with the embedder
/// for at least `min_time` and two batches, after one untimed batch.
pub fn embed_throughput(
    batcher: &DeviceBatcher,
    chips: &[RgbImage],
    batch: usize,
    min_time: Duration,
) -> Result<EmbedThroughput> {
    if chips.is_empty() || batch == 0 {
        return Err(Error::InvalidInput(
            "no face chips to embed (the photos have no faces?)".to_string(),
        ));
    }
    let input: Vec<RgbImage> = chips.iter().cycle().take(batch).cloned().collect();
    let embedder = batcher.pipeline().embedder();
    embedder.embed_batch(&input)?;
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 2 || started.elapsed() < min_time {
        embedder.embed_batch(&input)?;
        rounds += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(EmbedThroughput {
        batch,
        chips: rounds * batch,
        seconds,
        chips_per_second: (rounds * batch) as f64 / seconds,
    })
}
