//! Hand-written CPU kernels for the hot loops of the pipeline. candle's tensor operations
//! remain the path on other devices; on the CPU these do the same arithmetic in plain Rust,
//! each with a portable version and vector versions (SSE4.1, AVX2, FMA) chosen at run time
//! with `is_x86_feature_detected!`.

pub mod conv;
pub mod fhog;
pub mod resize;
pub mod resnet;
