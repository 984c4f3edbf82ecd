//! Hand-written CPU kernels for the hot loops of the pipeline. candle's tensor operations
//! remain the path on other devices; on the CPU these do the same arithmetic in plain Rust,
//! each with a portable version and vector versions (SSE4.1, AVX2 with FMA, AVX-512) chosen at
//! run time: [`Isa::current`] is the widest instruction set the CPU has, unless
//! `FACEDETECT_CPU_KERNELS` (`portable`, `sse4.1`, `avx2`, `avx512`) names a narrower one, so
//! that each version can be run, compared and ruled out on any machine.

pub mod conv;
pub mod fhog;
pub mod resize;
pub mod resnet;

use std::sync::OnceLock;

/// The environment variable that caps the instruction set of the kernels.
pub const ISA_VARIABLE: &str = "FACEDETECT_CPU_KERNELS";

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
    /// least that level, which guarantees that the CPU has them.
    pub fn current() -> Self {
        static CURRENT: OnceLock<Isa> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let detected = Self::detected();
            match std::env::var(ISA_VARIABLE) {
                Ok(name) => match Self::from_name(&name) {
                    Some(cap) => cap.min(detected),
                    None => {
                        tracing::warn!(
                            value = %name,
                            "{ISA_VARIABLE} is not one of portable, sse4.1, avx2, avx512; ignored"
                        );
                        detected
                    }
                },
                Err(_) => detected,
            }
        })
    }

    /// The widest instruction set this CPU has.
    fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
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
        }
        Self::Portable
    }

    fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
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
        assert_eq!(Isa::from_name(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("sse4.1"), Some(Isa::Sse41));
        assert_eq!(Isa::from_name("avx512"), Some(Isa::Avx512));
        assert_eq!(Isa::from_name("neon"), None);
        assert!(Isa::Portable < Isa::Sse41 && Isa::Sse41 < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
    }
}
