//! Device passes planned under candle's 32-bit limits and a device-memory budget.
//!
//! On a GPU every model runs as candle tensor operations, and candle's CUDA backend indexes
//! with 32-bit integers: its kernels are launched with `LaunchConfig::for_num_elems(el as u32)`
//! (an output of more than 2^32 elements is written only in part, the rest left uninitialised,
//! with no error: huggingface/candle issue 3604), elementwise kernels loop over `unsigned int`
//! indices, strided copies use 32-bit offsets and cuBLAS takes `i32` sizes. A pass whose
//! buffers stay below [`MAX_BUFFER_ELEMENTS`] (2^31) is safe from all of them.
//!
//! Every buffer of a pass grows with the number of items (photos for the CNN detector, chips
//! for the embedder) in it, so each model states the buffers of a pass over one item
//! ([`ItemCost`], from its loaded layers) and [`plan_passes`] splits whatever is waiting into
//! passes as large as the limits allow. An item that does not fit a pass alone is refused
//! with an error, never run into a wrong answer.

use serde::Serialize;

use crate::error::{Error, Result};

/// The most elements any one buffer of a device pass may hold: 2^31, the smallest of candle's
/// CUDA limits (`unsigned int` loops, 32-bit strided offsets, cuBLAS's `i32` sizes; its kernel
/// launches break at 2^32, huggingface/candle issue 3604). A buffer of exactly this many
/// elements is already too large.
pub const MAX_BUFFER_ELEMENTS: u64 = 1 << 31;

/// The buffers of a pass over one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ItemCost {
    /// Elements of the largest single buffer (all buffers grow with the items in a pass).
    pub largest_buffer_elements: u64,
    /// Device bytes the pass holds at its peak, weights excluded.
    pub device_bytes: u64,
}

/// What one pass may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassLimits {
    /// Elements of one buffer, below [`MAX_BUFFER_ELEMENTS`].
    pub max_buffer_elements: u64,
    /// Device memory for the pass's buffers, if limited.
    pub device_bytes: Option<u64>,
}

impl Default for PassLimits {
    /// candle's element limit alone.
    fn default() -> Self {
        Self {
            max_buffer_elements: MAX_BUFFER_ELEMENTS,
            device_bytes: None,
        }
    }
}

impl PassLimits {
    /// candle's element limit and a device-memory budget of `megabytes` (MiB).
    pub fn with_device_memory_mb(megabytes: Option<u64>) -> Self {
        Self {
            device_bytes: megabytes.map(|mb| mb.saturating_mul(1024 * 1024)),
            ..Self::default()
        }
    }

    /// How many items of `cost` one pass may hold (at least 1), or an error saying which limit
    /// a single item already exceeds.
    pub fn items_per_pass(&self, cost: ItemCost) -> Result<usize> {
        let by_elements = (self.max_buffer_elements - 1) / cost.largest_buffer_elements.max(1);
        let by_bytes = self
            .device_bytes
            .map_or(u64::MAX, |budget| budget / cost.device_bytes.max(1));
        if by_elements == 0 {
            return Err(Error::InvalidInput(format!(
                "too large for one device pass: its largest buffer would hold {} elements, \
                 candle's CUDA kernels index at most {} (2^31)",
                cost.largest_buffer_elements, self.max_buffer_elements
            )));
        }
        if by_bytes == 0 {
            return Err(Error::InvalidInput(format!(
                "too large for one device pass: it needs {} MiB of device memory, the budget is \
                 {} MiB",
                cost.device_bytes.div_ceil(1 << 20),
                self.device_bytes.unwrap_or(0) >> 20
            )));
        }
        Ok(usize::try_from(by_elements.min(by_bytes)).unwrap_or(usize::MAX))
    }
}

/// One planned pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pass {
    /// Items in the pass: photos of the CNN detector, chips of the embedder.
    pub items: usize,
    /// Elements of its largest buffer.
    pub largest_buffer_elements: u64,
    /// Device bytes it holds at its peak, weights excluded.
    pub device_bytes: u64,
}

/// Splits `items` items of `cost` each into passes within `limits`, as few as possible and
/// the largest first.
pub fn plan_passes(items: usize, cost: ItemCost, limits: &PassLimits) -> Result<Vec<Pass>> {
    if items == 0 {
        return Ok(Vec::new());
    }
    let per_pass = limits.items_per_pass(cost)?;
    let mut passes = Vec::with_capacity(items.div_ceil(per_pass));
    let mut left = items;
    while left > 0 {
        let items = per_pass.min(left);
        let n = items as u64;
        passes.push(Pass {
            items,
            largest_buffer_elements: cost.largest_buffer_elements * n,
            device_bytes: cost.device_bytes * n,
        });
        left -= items;
    }
    Ok(passes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const COST: ItemCost = ItemCost {
        largest_buffer_elements: 400_000_000,
        device_bytes: 2_000_000_000,
    };

    #[test]
    fn passes_stay_below_two_to_the_31_elements() {
        let passes = plan_passes(16, COST, &PassLimits::default()).unwrap();
        // 5 x 400 M = 2.0 G < 2^31 = 2.147 G; 6 would be 2.4 G.
        assert_eq!(
            passes.iter().map(|p| p.items).collect::<Vec<_>>(),
            [5, 5, 5, 1]
        );
        assert!(
            passes
                .iter()
                .all(|p| p.largest_buffer_elements < MAX_BUFFER_ELEMENTS)
        );
    }

    #[test]
    fn a_device_memory_budget_splits_further() {
        let limits = PassLimits::with_device_memory_mb(Some(8 * 1024));
        let passes = plan_passes(16, COST, &limits).unwrap();
        assert!(passes.iter().all(|p| p.device_bytes <= 8 << 30));
        assert_eq!(passes[0].items, 4);
        assert_eq!(passes.iter().map(|p| p.items).sum::<usize>(), 16);
    }

    #[test]
    fn an_item_that_cannot_fit_alone_is_refused() {
        let huge = ItemCost {
            largest_buffer_elements: MAX_BUFFER_ELEMENTS,
            device_bytes: 1,
        };
        let error = plan_passes(1, huge, &PassLimits::default()).unwrap_err();
        assert!(error.to_string().contains("2^31"), "{error}");
        let limits = PassLimits::with_device_memory_mb(Some(1024));
        let error = plan_passes(1, COST, &limits).unwrap_err();
        assert!(error.to_string().contains("budget is 1024 MiB"), "{error}");
        assert_eq!(plan_passes(0, huge, &limits).unwrap(), Vec::new());
    }
}
