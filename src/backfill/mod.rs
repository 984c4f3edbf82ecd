//! The album backfill: re-processing a whole photo archive on a machine with a GPU.
//!
//! `facedetect enqueue` ([`enqueue`]) turns a payload file into SQS messages;
//! `facedetect worker` ([`worker`]) takes them from the queue and runs their sources through
//! the service layer with the pipeline batched across photos for the device
//! ([`crate::pipeline::device_batch`]), stopping cleanly on a [`crate::shutdown`] signal;
//! [`aws`] sets up the SQS client and says its errors in a line.

pub mod aws;
pub mod enqueue;
pub mod worker;
