//! The face pipeline batched across photos for a device: many sources' photos share each trip
//! through the device, as the backfill worker needs to keep a GPU busy.
//!
//! The per-photo pipeline ([`FacePipeline::encode`]) runs each photo's network passes on their
//! own, which leaves a GPU idle between small launches. Here every photo stays on the CPU
//! thread that handles its source for the work that is fastest there, and only the network
//! passes are gathered, from all threads, into batches, in the manner of
//! text-embeddings-inference's queue and backend (one thread owns each batched model and
//! takes whatever is waiting):
//! - decoding: on the calling thread (the service's blocking threads);
//! - the CNN detector: upsampling and the copy of the 8-bit photo to the device on the calling
//!   thread ([`CnnFaceDetector::prepare`](crate::detect::cnn::CnnFaceDetector::prepare)); on
//!   the model's thread, batches of up to [`BatchSizes::detect`] photos, split by input shape
//!   and into passes within candle's 32-bit limits and the device-memory budget
//!   ([`crate::plan`]), each pass's tiled pyramids written by the device
//!   ([`crate::detect::pyramid_fill`]), the score maps turned back into rectangles (a short
//!   scan and dlib's non-max suppression);
//! - the HOG detector: on the calling thread with the pipeline's device, i.e. the filter
//!   scoring as matrix products on a GPU and the separable kernel on the CPU (see
//!   [`crate::detect::hog`]); the image pyramid and FHOG stay on the CPU;
//! - landmarks and chip extraction: on the calling thread (CPU);
//! - the embedder: chips of many photos together in batches of up to [`BatchSizes::embed`],
//!   split into passes as the CNN's are.
//!
//! Every thread issues its device work on one stream ([`cuda_device`]), so an upload made on a
//! caller's thread is complete before the pass that reads it.
//!
//! A batch is whatever waits when the model's thread becomes free, up to the batch size: no
//! timer holds work back. Under load the queues fill while the device works, so batches grow
//! by themselves; a lone photo goes through alone at once.
//!
//! The results are the per-photo pipeline's: the same rectangles, and encodings equal up to
//! the float rounding of a different grouping into batches (tests check 1e-5 on the CPU and
//! 1e-4 on a GPU).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use candle_core::Device;
use image::RgbImage;
use serde::Serialize;

use super::per_photo::{ENCODE_BYTES, Face, FacePipeline};
use super::{Detector, EncodeOptions, FaceEncoder};
use crate::detect::cnn::{CnnInput, ConvAlgorithm, Detection, INPUT_BYTES_PER_UPSAMPLED_PIXEL};
use crate::error::{BatchError, Error, Result};
use crate::face::Encoding;
use crate::face::embedder::EMBED_BATCH;
use crate::face::landmarks::Landmarks;
use crate::geometry::Rect;
use crate::plan::PassLimits;

/// CUDA device `ordinal` with one stream shared by every thread. candle's
/// `Device::new_cuda` gives each host thread a stream of its own, with no ordering between
/// them: a photo uploaded on a caller's thread could then be read by the model's thread before
/// the copy is done. On one stream, work runs in the order it was issued.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda_with_stream(ordinal).map_err(|source| Error::NoCudaDevice { ordinal, source })
}

/// How much work the model threads take at once, and how many photos are in flight to feed
/// them. Each batch is then split into device passes by [`crate::plan`]: every buffer below
/// candle's 32-bit limits and, when `device_memory_mb` is set, the pass within that budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSizes {
    /// Photos gathered for the CNN detector at once. A 1200x900 photo's pass needs about
    /// 0.74 GB of device memory at upsample 1 with cuDNN's implicit GEMM (2.1 GB with im2col)
    /// and a quarter of that at upsample 0; `facedetect plan` prints the figures for any size.
    pub detect: usize,
    /// Face chips gathered for the embedder at once (about 5.6 MB of device memory each).
    pub embed: usize,
    /// The device memory (MiB) a pass may use; unlimited when `None`.
    pub device_memory_mb: Option<u64>,
    /// Photos downloaded, decoded and encoded at once: the service's sources in flight and
    /// its blocking threads.
    pub in_flight: usize,
}

/// What was chosen of [`BatchSizes`] (`facedetect worker`'s options); `None` takes the
/// device's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchChoice {
    pub detect: Option<usize>,
    pub embed: Option<usize>,
    pub device_memory_mb: Option<u64>,
    pub in_flight: Option<usize>,
}

impl BatchSizes {
    /// Sizes for `device`: large batches on a GPU, with four batches' worth of photos in
    /// flight to keep it fed; on the CPU one photo at a time through the CNN (batching gains
    /// nothing there and costs memory), chips in the per-photo pipeline's batches of 16, and
    /// two photos in flight per core (one downloading while the other is encoded).
    pub fn for_device(device: &Device) -> Self {
        Self::chosen(device, &BatchChoice::default())
    }

    /// The device's defaults with what was chosen in their place.
    pub fn chosen(device: &Device, choice: &BatchChoice) -> Self {
        let (detect, embed) = if device.is_cpu() {
            (1, EMBED_BATCH)
        } else {
            (16, 256)
        };
        let detect = choice.detect.unwrap_or(detect);
        let in_flight = choice.in_flight.unwrap_or_else(|| {
            if device.is_cpu() {
                2 * std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                4 * detect
            }
        });
        Self {
            detect,
            embed: choice.embed.unwrap_or(embed),
            device_memory_mb: choice.device_memory_mb,
            in_flight,
        }
    }
}

/// The batched pipeline: detect and encode photos from many threads at once.
pub struct DeviceBatcher {
    pipeline: Arc<FacePipeline>,
    detector: Detector,
    upsample: u32,
    cnn: BatchQueue<CnnInput, Vec<Detection>>,
    embedder: BatchQueue<RgbImage, Encoding>,
    /// A photo's faces are aligned and embedded this many at a time (the embedder's batch),
    /// so that their number bounds time, never memory.
    face_group: usize,
    limits: PassLimits,
}

impl DeviceBatcher {
    /// Starts the model threads. `detector` and `upsample` are as for
    /// [`crate::pipeline::EncodeOptions`]; there is no jitter.
    pub fn new(
        pipeline: Arc<FacePipeline>,
        detector: Detector,
        upsample: u32,
        sizes: BatchSizes,
    ) -> Result<Self> {
        if sizes.detect == 0 || sizes.embed == 0 {
            return Err(Error::InvalidInput(
                "batch sizes must be at least 1".to_string(),
            ));
        }
        let limits = PassLimits::with_device_memory_mb(sizes.device_memory_mb);
        let cnn = {
            let pipeline = Arc::clone(&pipeline);
            BatchQueue::spawn("cnn-detector", sizes.detect, move |inputs| {
                pipeline.cnn().detect_prepared_within(&inputs, &limits)
            })?
        };
        let embedder = {
            let pipeline = Arc::clone(&pipeline);
            BatchQueue::spawn("embedder", sizes.embed, move |chips| {
                pipeline.embedder().embed_within(&chips, &limits)
            })?
        };
        Ok(Self {
            pipeline,
            detector,
            upsample,
            cnn,
            embedder,
            face_group: sizes.embed,
            limits,
        })
    }

    /// The faces in `image` with their detector scores, best first, as
    /// [`FacePipeline::detect`] finds them.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<(Rect, f64)>> {
        match self.detector {
            Detector::Hog => self.pipeline.detect(image, &self.options()),
            Detector::Cnn => {
                let input = self.pipeline.cnn().prepare(image, self.upsample)?;
                let Some(shape) = input.shape() else {
                    return Ok(Vec::new());
                };
                // A photo that cannot go through the device even alone fails here, alone.
                let cnn = self.pipeline.cnn();
                if let Some(cost) = cnn.photo_cost(shape, ConvAlgorithm::on(cnn.device())) {
                    self.limits.items_per_pass(cost)?;
                }
                let detections = self.cnn.run(vec![input])?.pop().unwrap_or_default();
                Ok(detections
                    .into_iter()
                    .map(|(rect, score)| (rect, f64::from(score)))
                    .collect())
            }
        }
    }

    fn options(&self) -> EncodeOptions {
        EncodeOptions {
            detector: self.detector,
            upsample: self.upsample,
            jitters: 1,
        }
    }

    /// Landmarks, chips and encodings of the faces at `rects`, the chips embedded together
    /// with other photos'.
    pub fn encode_at(&self, image: &RgbImage, rects: &[Rect]) -> Result<Vec<Face>> {
        let (landmarks, encodings) = self.encode_in_groups(image, rects)?;
        Ok(Face::at(rects, landmarks, encodings))
    }

    /// The landmarks and encodings of the faces at `rects`, a group of faces at a time.
    fn encode_in_groups(
        &self,
        image: &RgbImage,
        rects: &[Rect],
    ) -> Result<(Vec<Landmarks>, Vec<Encoding>)> {
        let mut landmarks = Vec::with_capacity(rects.len());
        let mut encodings = Vec::with_capacity(rects.len());
        for group in rects.chunks(self.face_group) {
            let (group_landmarks, chips) = self.pipeline.align(image, group);
            encodings.extend(self.embedder.run(chips)?);
            landmarks.extend(group_landmarks);
        }
        Ok((landmarks, encodings))
    }

    /// Detects and encodes: what [`FacePipeline::encode`] returns without jitter.
    pub fn encode(&self, image: &RgbImage) -> Result<Vec<Face>> {
        let (rects, scores): (Vec<Rect>, Vec<f64>) = self.detect(image)?.into_iter().unzip();
        let mut faces = self.encode_at(image, &rects)?;
        for (face, score) in faces.iter_mut().zip(scores) {
            face.score = Some(score);
        }
        Ok(faces)
    }

    /// What the batched models did since the batcher started.
    pub fn stats(&self) -> BatcherStats {
        BatcherStats {
            cnn: self.cnn.stats(),
            embedder: self.embedder.stats(),
        }
    }

    /// The pipeline whose models the batches run.
    pub fn pipeline(&self) -> &FacePipeline {
        &self.pipeline
    }
}

/// The service's stages: detection, then landmarks, chips and embedding.
impl FaceEncoder for DeviceBatcher {
    type Faces = Vec<Rect>;

    fn task(&self) -> String {
        self.options().task()
    }

    /// The per-photo pipeline's, except for the CNN detector on a GPU, whose activations are
    /// in device memory: the host then holds the prepared input until it is copied over.
    fn working_bytes(&self, pixels: u64) -> u64 {
        let options = self.options();
        if options.detector == Detector::Cnn && !self.pipeline.cnn().device().is_cpu() {
            let upsampled = pixels.saturating_mul(4u64.saturating_pow(self.upsample));
            upsampled
                .saturating_mul(INPUT_BYTES_PER_UPSAMPLED_PIXEL)
                .max(ENCODE_BYTES)
        } else {
            FacePipeline::working_bytes(pixels, &options)
        }
    }

    fn detect(&self, image: &RgbImage) -> Result<Vec<Rect>> {
        Ok(DeviceBatcher::detect(self, image)?
            .into_iter()
            .map(|(rect, _score)| rect)
            .collect())
    }

    fn encode(&self, image: &RgbImage, rects: Vec<Rect>) -> Result<Vec<Encoding>> {
        Ok(self.encode_in_groups(image, &rects)?.1)
    }
}

/// Work of one caller: its items and where to send their results.
struct Job<I, O> {
    items: Vec<I>,
    reply: mpsc::SyncSender<std::result::Result<Vec<O>, BatchError>>,
}

/// A queue in front of one model thread. Callers block in [`BatchQueue::run`] while the
/// thread runs their items together with whatever else is waiting, up to `max_items` per
/// batch (a single caller's items may exceed it: they are never split).
struct BatchQueue<I, O> {
    sender: mpsc::Sender<Job<I, O>>,
    stats: Arc<QueueCounters>,
}

/// What a model thread did so far: batches run, items in them, time spent running them.
#[derive(Default)]
struct QueueCounters {
    batches: AtomicU64,
    items: AtomicU64,
    busy_nanos: AtomicU64,
}

/// What one model of the batcher did: with the wall time of a run, `busy_seconds` tells
/// whether the model's thread was the bottleneck (busy all along) or waited for photos.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct QueueStats {
    pub batches: u64,
    pub items: u64,
    pub busy_seconds: f64,
}

/// [`QueueStats`] of both batched models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct BatcherStats {
    pub cnn: QueueStats,
    pub embedder: QueueStats,
}

impl<I: Send + 'static, O: Send + 'static> BatchQueue<I, O> {
    fn spawn(
        name: &str,
        max_items: usize,
        mut process: impl FnMut(Vec<I>) -> Result<Vec<O>> + Send + 'static,
    ) -> Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job<I, O>>();
        let stats = Arc::new(QueueCounters::default());
        let counters = Arc::clone(&stats);
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut waiting: Option<Job<I, O>> = None;
                // Ends when every sender is gone, i.e. the batcher was dropped.
                while let Some(first) = waiting.take().or_else(|| receiver.recv().ok()) {
                    let mut count = first.items.len();
                    let mut jobs = vec![first];
                    while count < max_items {
                        match receiver.try_recv() {
                            Ok(job) if count + job.items.len() > max_items => {
                                waiting = Some(job);
                                break;
                            }
                            Ok(job) => {
                                count += job.items.len();
                                jobs.push(job);
                            }
                            Err(_) => break,
                        }
                    }
                    let started = Instant::now();
                    run_batch(&mut process, jobs);
                    counters.batches.fetch_add(1, Ordering::Relaxed);
                    counters.items.fetch_add(count as u64, Ordering::Relaxed);
                    counters.busy_nanos.fetch_add(
                        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
                        Ordering::Relaxed,
                    );
                }
            })
            .map_err(|source| BatchError::Spawn {
                name: name.to_string(),
                source: Arc::new(source),
            })?;
        Ok(Self { sender, stats })
    }

    fn stats(&self) -> QueueStats {
        QueueStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            items: self.stats.items.load(Ordering::Relaxed),
            busy_seconds: self.stats.busy_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
        }
    }

    /// Runs `items` in the next batch and waits for their results, in order.
    fn run(&self, items: Vec<I>) -> std::result::Result<Vec<O>, BatchError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, results) = mpsc::sync_channel(1);
        self.sender
            .send(Job { items, reply })
            .map_err(|_| BatchError::Stopped)?;
        results.recv().map_err(|_| BatchError::Stopped)?
    }
}

/// Runs the items of `jobs` as one batch and hands every job its share of the results, or
/// the batch's error. A panic in the model fails the batch, not the thread.
fn run_batch<I, O>(process: &mut impl FnMut(Vec<I>) -> Result<Vec<O>>, jobs: Vec<Job<I, O>>) {
    let mut replies = Vec::with_capacity(jobs.len());
    let mut items = Vec::new();
    for job in jobs {
        replies.push((job.reply, job.items.len()));
        items.extend(job.items);
    }
    let expected = items.len();
    let outcome = match catch_unwind(AssertUnwindSafe(|| process(items))) {
        Ok(Ok(results)) if results.len() == expected => Ok(results),
        Ok(Ok(results)) => Err(BatchError::ResultCount {
            got: results.len(),
            expected,
        }),
        Ok(Err(error)) => Err(BatchError::Failed(Arc::new(error))),
        Err(_) => Err(BatchError::Panicked),
    };
    match outcome {
        Ok(results) => {
            let mut results = results.into_iter();
            for (reply, count) in replies {
                // A caller that went away no longer needs its results.
                let _ = reply.send(Ok(results.by_ref().take(count).collect()));
            }
        }
        Err(error) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn waiting_callers_share_batches_within_the_limit() {
        let (sizes_sender, sizes) = mpsc::channel();
        let queue = Arc::new(
            BatchQueue::spawn("test", 4, move |items: Vec<u32>| {
                sizes_sender.send(items.len()).unwrap();
                // Slow enough that the other callers queue up behind the first batch.
                std::thread::sleep(Duration::from_millis(50));
                Ok(items.into_iter().map(|x| x * 10).collect())
            })
            .unwrap(),
        );
        let callers: Vec<_> = (0..9u32)
            .map(|i| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || queue.run(vec![i, i + 100]))
            })
            .collect();
        for (i, caller) in (0..9u32).zip(callers) {
            assert_eq!(
                caller.join().unwrap().unwrap(),
                vec![i * 10, (i + 100) * 10]
            );
        }
        drop(queue);
        let sizes: Vec<usize> = sizes.iter().collect();
        assert_eq!(sizes.iter().sum::<usize>(), 18);
        assert!(sizes.iter().all(|&n| n <= 4), "{sizes:?}");
        assert!(sizes.contains(&4), "no batch was shared: {sizes:?}");
    }

    #[test]
    fn a_failing_or_panicking_batch_fails_its_callers_only() {
        let queue = BatchQueue::spawn("test", 8, |items: Vec<i32>| {
            if items.contains(&-1) {
                panic!("bad item");
            }
            if items.contains(&-2) {
                return Err(Error::InvalidInput("refused".to_string()));
            }
            Ok(items)
        })
        .unwrap();
        let error = |items: Vec<i32>| queue.run(items).unwrap_err().to_string();
        assert!(error(vec![-1]).contains("panicked"));
        assert!(error(vec![-2]).contains("refused"));
        assert_eq!(queue.run(vec![1, 2]).unwrap(), vec![1, 2]);
        assert_eq!(queue.run(Vec::new()).unwrap(), Vec::<i32>::new());
    }
}
