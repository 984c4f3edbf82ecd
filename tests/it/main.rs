//! The integration tests, in one test binary so that the suite links candle, axum and reqwest
//! once: a module per topic, and the helpers they share.
//!
//! Each stage is checked against the original pipeline's outputs (tests/fixtures/pkg, and every
//! case of `../shared/reference` when it is present beside the repository); the service over
//! real HTTP on loopback; the binaries end to end as processes. `cargo test --test it MODULE`
//! runs one topic, e.g. `cargo test --test it hog::`.

// Shared helpers.
mod common;
mod service_support;

// The pipeline's stages.
mod alignment;
mod cnn;
mod decode;
mod device_batch;
mod embedder;
mod grey;
mod hog;
mod jitter;
mod kernels;
mod landmarks;
mod landmarks68;
mod layers;
mod pipeline;
mod plan;
mod pyramid;

// The models' files.
mod convert;
mod device;
mod weights;

// The command line, the service, the Lambda function and the backfill worker.
mod aws_errors;
mod backfill;
mod cli;
mod hardening;
mod lambda;
mod lambda_binary;
mod lambda_zip;
mod serve_auth;
mod service;
mod service_cli;
mod service_pipeline;
mod telemetry;

// The deployment files, and the README's examples.
mod cost_table;
mod deployment;
mod lint;
mod readme;
