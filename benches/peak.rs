//! This CPU's peak single-precision rate with fused multiply-adds on every core: the roofline
//! that benches/layers.py holds each convolution against. Each thread runs twelve independent
//! chains of FMAs (enough to keep both FMA units busy through their latency) on AVX2 registers
//! (8 lanes, the width of the convolution kernel) and, when the CPU has it, on AVX-512 (16).
//!
//! ```sh
//! cargo bench --bench peak      # PEAK isa=avx2 threads=2 gflops=258 ...
//! ```

/// FMAs per chain and thread; about a second on a recent core.
#[cfg(target_arch = "x86_64")]
const ITERATIONS: u64 = 200_000_000;
/// Independent chains per thread.
#[cfg(target_arch = "x86_64")]
const CHAINS: usize = 12;

/// A kernel: FMA chains of the given length; returns their sum.
#[cfg(target_arch = "x86_64")]
type Chains = fn(u64) -> f32;

/// Runs `kernel` on every core at once; returns the threads and GFLOP/s, counting an FMA of
/// `lanes` lanes as 2 * lanes operations.
#[cfg(target_arch = "x86_64")]
fn measure(lanes: usize, kernel: Chains) -> (usize, f64) {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let start = std::time::Instant::now();
    let sink: f32 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| scope.spawn(move || kernel(ITERATIONS)))
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).sum()
    });
    let seconds = start.elapsed().as_secs_f64();
    // The chains' results are used, so that none of the work can be left out.
    assert!(sink.is_finite());
    let flops = (threads * CHAINS * lanes * 2) as f64 * ITERATIONS as f64;
    (threads, flops / seconds / 1e9)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use std::arch::x86_64::*;

    /// Twelve AVX2 FMA chains, `iterations` long each.
    #[target_feature(enable = "avx2,fma")]
    fn chains_avx2(iterations: u64) -> f32 {
        let (b, c) = (_mm256_set1_ps(0.9999), _mm256_set1_ps(0.0001));
        let mut sums = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iterations {
            for sum in &mut sums {
                *sum = _mm256_fmadd_ps(*sum, b, c);
            }
        }
        let mut total = _mm256_setzero_ps();
        for sum in sums {
            total = _mm256_add_ps(total, sum);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds the eight floats the unaligned store writes.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        lanes.iter().sum()
    }

    /// Twelve AVX-512 FMA chains, `iterations` long each.
    #[target_feature(enable = "avx512f")]
    fn chains_avx512(iterations: u64) -> f32 {
        let (b, c) = (_mm512_set1_ps(0.9999), _mm512_set1_ps(0.0001));
        let mut sums = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iterations {
            for sum in &mut sums {
                *sum = _mm512_fmadd_ps(*sum, b, c);
            }
        }
        let mut total = _mm512_setzero_ps();
        for sum in sums {
            total = _mm512_add_ps(total, sum);
        }
        _mm512_reduce_add_ps(total)
    }

    pub fn avx2(iterations: u64) -> f32 {
        assert!(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"));
        // SAFETY: the CPU has AVX2 and FMA, checked just above.
        unsafe { chains_avx2(iterations) }
    }

    pub fn avx512(iterations: u64) -> f32 {
        assert!(is_x86_feature_detected!("avx512f"));
        // SAFETY: the CPU has AVX-512 F, checked just above.
        unsafe { chains_avx512(iterations) }
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        let mut kernels: Vec<(&str, usize, Chains)> = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            kernels.push(("avx2", 8, x86::avx2));
        }
        if is_x86_feature_detected!("avx512f") {
            kernels.push(("avx512", 16, x86::avx512));
        }
        for (isa, lanes, kernel) in kernels {
            let (threads, gflops) = measure(lanes, kernel);
            println!("PEAK isa={isa} threads={threads} gflops={gflops:.0}");
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("PEAK: only measured on x86-64");
}
