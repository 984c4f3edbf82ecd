//! `facedetect-lambda`: the AWS Lambda function. Loads the models once per cold start, then
//! answers invocations (the original's payload, or SQS events carrying it) through the Lambda
//! Runtime API, logging JSON lines to stderr.

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use concrexit_facedetection::logging::{self, LogFormat};
use concrexit_facedetection::pipeline::FacePipeline;
use concrexit_facedetection::service::Service;
use concrexit_facedetection::service::lambda::{lambda_config, run_lambda};
use concrexit_facedetection::weights::WeightsLocation;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init(LogFormat::Json, "info")?;
    let started = Instant::now();
    let weights = WeightsLocation::discover()?;
    let pipeline = FacePipeline::load(&weights, &Device::Cpu)?;
    tracing::info!(
        load_ms = started.elapsed().as_secs_f64() * 1000.0,
        "models loaded"
    );
    let service = Service::new(Arc::new(pipeline), lambda_config()?)?;
    run_lambda(Arc::new(service)).await
}
