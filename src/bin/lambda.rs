//! `facedetect-lambda`: the AWS Lambda function. Loads the models once per cold start, then
//! answers invocations (the original's payload, or SQS events carrying it) through the Lambda
//! Runtime API, logging JSON lines to stderr ([`concrexit_facedetection::service::lambda`]).

use concrexit_facedetection::logging::{self, LogFormat};
use concrexit_facedetection::service::lambda;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init(LogFormat::Json, "info")?;
    lambda::cold_start().await
}
