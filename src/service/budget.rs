//! The memory budget: photos are admitted to the memory-hungry stages against a budget derived
//! from the memory the process may use, instead of one photo per core, so that a large photo
//! waits for room, and a photo that can never fit fails on its own with a clear reason instead
//! of taking the process down.
//!
//! The budget is split in two pools. Downloaded bytes are reserved from the download pool
//! (the size limit before the response arrives, shrunk to the announced length once it has);
//! the working memory of decoding and detecting a photo, estimated from its header, is
//! reserved from the work pool. A source holds its download reservation while it waits for
//! work memory, but work reservations never wait for downloads, so no two sources can wait on
//! each other.
//!
//! A third, fixed pool ([`REQUEST_BYTES`], part of the memory kept back for everything but
//! photos) holds the invoke endpoint's accepted requests: their announced length while the body
//! is read and parsed, then what the parsed event holds, until the invocation ends. It is
//! reserved at once or not at all, so that a request is answered 429 rather than kept waiting,
//! and photos waiting on slow hosts never crowd it out.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Share of the budget for downloaded photos, in quarters; the rest is for decoding and
/// detection.
const DOWNLOAD_QUARTERS: u64 = 1;

/// The memory for accepted requests, all together: about ten of the largest (6 MiB) being read
/// at once.
pub const REQUEST_BYTES: u64 = 64 * 1024 * 1024;

const KIB: u64 = 1024;

fn kib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(KIB)
}

/// Memory reserved from a pool, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    permit: OwnedSemaphorePermit,
}

impl Reservation {
    /// The bytes reserved (rounded up to KiB).
    pub fn bytes(&self) -> u64 {
        self.permit.num_permits() as u64 * KIB
    }

    /// Gives back what exceeds `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        let keep = kib_ceil(bytes).max(1) as usize;
        let held = self.permit.num_permits();
        if keep < held {
            drop(self.permit.split(held - keep));
        }
    }
}

/// One pool of memory, in KiB permits.
#[derive(Debug)]
struct Pool {
    permits: Arc<Semaphore>,
    kib: u64,
}

impl Pool {
    fn new(bytes: u64) -> Self {
        let kib = (bytes / KIB).clamp(1, u64::from(u32::MAX));
        Self {
            permits: Arc::new(Semaphore::new(kib as usize)),
            kib,
        }
    }

    /// Waits for `bytes`, or `None` when they exceed the whole pool.
    async fn reserve(&self, bytes: u64) -> Option<Reservation> {
        let kib = kib_ceil(bytes).max(1);
        if kib > self.kib {
            return None;
        }
        // The semaphore is never closed.
        let permit = self
            .permits
            .clone()
            .acquire_many_owned(kib as u32)
            .await
            .ok()?;
        Some(Reservation { permit })
    }

    /// `bytes` at once, or `None` when there is no room now.
    fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let kib = u32::try_from(kib_ceil(bytes).max(1)).ok()?;
        let permit = self.permits.clone().try_acquire_many_owned(kib).ok()?;
        Some(Reservation { permit })
    }

    fn available_bytes(&self) -> u64 {
        self.permits.available_permits() as u64 * KIB
    }
}

/// The memory the service may use for photos.
#[derive(Debug)]
pub struct MemoryBudget {
    downloads: Pool,
    work: Pool,
    requests: Pool,
}

impl MemoryBudget {
    /// A budget of `bytes` in all.
    pub fn new(bytes: u64) -> Self {
        let downloads = bytes / 4 * DOWNLOAD_QUARTERS;
        Self {
            downloads: Pool::new(downloads),
            work: Pool::new(bytes - downloads),
            requests: Pool::new(REQUEST_BYTES),
        }
    }

    /// The bytes one photo's decoding and detection may use at most.
    pub fn work_limit(&self) -> u64 {
        self.work.kib * KIB
    }

    /// The most bytes downloaded photos may hold at once.
    pub fn download_limit(&self) -> u64 {
        self.downloads.kib * KIB
    }

    /// Reserves room for a download of at most `bytes`, capped to the whole download pool
    /// (so `None` only if the pool were closed, which it never is).
    pub async fn reserve_download(&self, bytes: u64) -> Option<Reservation> {
        self.downloads
            .reserve(bytes.min(self.download_limit()))
            .await
    }

    /// Reserves room for an accepted request of `bytes`, at once or `None` when there is no
    /// room now.
    pub fn try_reserve_request(&self, bytes: u64) -> Option<Reservation> {
        self.requests.try_reserve(bytes)
    }

    /// Reserves working memory, waiting for room; `None` when `bytes` exceed the whole pool.
    pub async fn reserve_work(&self, bytes: u64) -> Option<Reservation> {
        self.work.reserve(bytes).await
    }

    /// Bytes free in each pool now: (downloads, work).
    pub fn available(&self) -> (u64, u64) {
        (
            self.downloads.available_bytes(),
            self.work.available_bytes(),
        )
    }
}

/// The resident memory of this process now, in bytes (Linux; 0 where unknown).
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_shrink() {
        let budget = MemoryBudget::new(4 * 1024 * KIB);
        assert_eq!(budget.download_limit(), 1024 * KIB);
        assert_eq!(budget.work_limit(), 3 * 1024 * KIB);
        assert!(budget.reserve_work(3 * 1024 * KIB + 1).await.is_none());
        let mut first = budget.reserve_download(10 * 1024 * KIB).await.unwrap();
        assert_eq!(first.bytes(), 1024 * KIB, "capped to the pool");
        first.shrink_to(100 * KIB);
        assert_eq!(budget.available().0, 924 * KIB);
        let second = budget.reserve_work(2 * 1024 * KIB).await.unwrap();
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            budget.reserve_work(2 * 1024 * KIB),
        )
        .await;
        assert!(waiting.is_err(), "no room until the first is given back");
        drop(second);
        assert!(budget.reserve_work(2 * 1024 * KIB).await.is_some());
        // Requests take room from their own pool at once, or not at all, whatever downloads
        // hold.
        drop(first);
        let _all_downloads = budget.reserve_download(10 * 1024 * KIB).await.unwrap();
        assert_eq!(budget.available().0, 0);
        let request = budget
            .try_reserve_request(REQUEST_BYTES - 100 * KIB)
            .unwrap();
        assert!(budget.try_reserve_request(200 * KIB).is_none());
        drop(request);
        assert!(budget.try_reserve_request(REQUEST_BYTES).is_some());
    }
}
