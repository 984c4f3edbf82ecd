//! Hand-written CPU kernels for the hot loops of the pipeline: primitives only (the direct
//! convolution, FHOG's orientation histograms, dlib's bilinear resize) and the choice of
//! instruction set, which is made here and nowhere else. candle's tensor operations remain the
//! path on other devices; on the CPU these do the same arithmetic in plain Rust, each with a
//! portable version and vector versions (SSE4.1, AVX2 with FMA, AVX-512) chosen at run time:
//! [`Isa::current`] is the widest instruction set the CPU has, unless `FACEDETECT_CPU_KERNELS`
//! (`portable`, `sse4.1`, `avx2`, `avx512`) names a narrower one, so that each version can be
//! run, compared and ruled out on any machine.
//!
//! A vector kernel is written once, generic over [`lanes::Lanes`] (the register width), and
//! instantiated per instruction set. Loops outside this module that the compiler vectorises by
//! itself are written once for any number of float lanes ([`Widths`]) and run by
//! [`run_widest`], which compiles them for the widest instruction set allowed.
//!
//! `FACEDETECT_CPU_KERNELS=none` turns the models' kernels off ([`models_use_kernels`]): the
//! CNN detector, the HOG detector's filter scoring and the embedder then run candle's tensor
//! operations on the CPU device, the very code a GPU runs, so that path is tested on machines
//! without one. The host-side loops (image pyramid, FHOG) run as they do beside a GPU, at the
//! widest instruction set. Any other value is refused when a model loads.

pub mod conv;
pub mod histograms;
#[cfg(target_arch = "x86_64")]
pub(crate) mod lanes;
pub mod resize;

use std::sync::OnceLock;

use candle_core::Device;

use crate::error::{Error, Result};

/// The environment variable that caps the instruction set of the kernels, or turns the
/// models' kernels off.
pub const ISA_VARIABLE: &str = "FACEDETECT_CPU_KERNELS";

/// The values [`ISA_VARIABLE`] takes.
pub const SETTINGS: &str = "none, portable, sse4.1, avx2, avx512";

/// What [`ISA_VARIABLE`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setting {
    /// Unset: the kernels at the widest instruction set the CPU has.
    Widest,
    /// `none`: the models on the CPU device run candle's tensor operations.
    Tensors,
    /// The kernels at most at this instruction set.
    Cap(Isa),
}

impl Setting {
    fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "none" => Some(Self::Tensors),
            other => Isa::from_name(other).map(Self::Cap),
        }
    }

    /// The process's setting, read once; an unknown value is an error naming the valid ones.
    fn current() -> std::result::Result<Self, &'static str> {
        static CURRENT: OnceLock<std::result::Result<Setting, String>> = OnceLock::new();
        CURRENT
            .get_or_init(|| match std::env::var(ISA_VARIABLE) {
                Err(_) => Ok(Self::Widest),
                Ok(name) => Self::parse(&name).ok_or(name),
            })
            .as_ref()
            .copied()
            .map_err(String::as_str)
    }
}

/// Whether the models on `device` run on the kernels: on the CPU device unless
/// `FACEDETECT_CPU_KERNELS=none`; never on another device. Every model asks when it loads,
/// so an unknown value of the variable fails the load with the list of valid ones.
pub fn models_use_kernels(device: &Device) -> Result<bool> {
    match Setting::current() {
        Err(name) => Err(Error::InvalidInput(format!(
            "{ISA_VARIABLE}={name:?} is not one of {SETTINGS}"
        ))),
        Ok(setting) => Ok(device.is_cpu() && setting != Setting::Tensors),
    }
}

/// A loop written once for any number of float lanes, which [`run_widest`] runs at the width
/// of the widest instruction set allowed.
pub trait Widths {
    /// Runs the loop `LANES` floats at a time (4, 8 or 16), for the compiler to vectorise.
    /// Implementations are `#[inline(always)]`, so that the loop is compiled inside
    /// [`run_widest`]'s wrapper for the instruction set, with its instructions.
    fn run<const LANES: usize>(self);
}

/// Runs `kernel` 16 lanes at a time with AVX-512, 8 with AVX2, and otherwise 4 (SSE's width,
/// which every x86-64 CPU has), as [`Isa::current`] allows.
pub fn run_widest<K: Widths>(kernel: K) {
    #[cfg(target_arch = "x86_64")]
    {
        let isa = Isa::current();
        if isa >= Isa::Avx512 {
            // SAFETY: the CPU supports AVX-512 F and BW (`Isa::current`).
            return unsafe { run_avx512(kernel) };
        }
        if isa >= Isa::Avx2 {
            // SAFETY: the CPU supports AVX2 (`Isa::current`).
            return unsafe { run_avx2(kernel) };
        }
    }
    kernel.run::<4>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn run_avx512<K: Widths>(kernel: K) {
    kernel.run::<16>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn run_avx2<K: Widths>(kernel: K) {
    kernel.run::<8>()
}

/// The vector instructions a kernel may use, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust, whatever the compiler makes of it for the target's baseline.
    Portable,
    /// SSE4.1.
    Sse41,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F and BW (with AVX2 and FMA).
    Avx512,
}

impl Isa {
    /// The instruction set the kernels use in this process: what the CPU has, capped by
    /// `FACEDETECT_CPU_KERNELS`. A kernel may use a level's instructions only when this is at
    /// least that level, which guarantees that the CPU has them. (Other targets run the
    /// portable code only.)
    #[cfg(target_arch = "x86_64")]
    pub fn current() -> Self {
        static CURRENT: OnceLock<Isa> = OnceLock::new();
        // With `none`, or a value the models refuse when they load, the host-side loops run
        // as they do beside a GPU.
        *CURRENT.get_or_init(|| match Setting::current() {
            Ok(Setting::Cap(cap)) => cap.min(Self::detected()),
            _ => Self::detected(),
        })
    }

    /// The widest instruction set this CPU has.
    #[cfg(target_arch = "x86_64")]
    fn detected() -> Self {
        let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        if avx2
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
        {
            return Self::Avx512;
        }
        if avx2 {
            return Self::Avx2;
        }
        if std::is_x86_feature_detected!("sse4.1") {
            return Self::Sse41;
        }
        Self::Portable
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "portable" => Some(Self::Portable),
            "sse4.1" | "sse41" => Some(Self::Sse41),
            "avx2" => Some(Self::Avx2),
            "avx512" | "avx-512" => Some(Self::Avx512),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_order() {
        assert_eq!(Isa::from_name("portable"), Some(Isa::Portable));
        assert_eq!(Setting::parse(" AVX2 "), Some(Setting::Cap(Isa::Avx2)));
        assert_eq!(Setting::parse("None"), Some(Setting::Tensors));
        assert_eq!(Setting::parse("avx"), None);
        assert_eq!(Isa::from_name("sse4.1"), Some(Isa::Sse41));
        assert_eq!(Isa::from_name("avx512"), Some(Isa::Avx512));
        assert_eq!(Isa::from_name("neon"), None);
        assert!(Isa::Portable < Isa::Sse41 && Isa::Sse41 < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
    }
}
