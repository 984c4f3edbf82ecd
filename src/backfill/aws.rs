//! The AWS side of the backfill commands: the SQS client from the standard environment, and
//! AWS SDK errors said in one line that a person can act on, without the SDK's internals.
//!
//! [`sqs_client`] checks before the first request that a region and credentials are there
//! (the SDK would otherwise try the instance metadata service and fail with "failed to load
//! IMDS session token"). [`describe`] turns an SDK error into what happened: which endpoint
//! could not be reached, what the service answered (its error code and message), or which
//! setting is missing.
//!
//! Every SQS call has a deadline: [`CONNECT_TIMEOUT`] to open a connection, [`ATTEMPT_TIMEOUT`]
//! for one attempt and [`OPERATION_TIMEOUT`] for the call with the SDK's retries; a call that
//! needs other bounds (the worker's long poll, its heartbeats) overrides them with [`timeouts`].

use std::error::Error as StdError;
use std::sync::OnceLock;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

/// What to set when no credentials are found.
pub const NO_CREDENTIALS: &str = "no AWS credentials found: set AWS_ACCESS_KEY_ID and \
     AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (on AWS the instance's or task's role provides them)";

/// What to set when no region is configured.
pub const NO_REGION: &str = "no AWS region configured: set AWS_REGION (or AWS_DEFAULT_REGION), \
     or a region in AWS_PROFILE's configuration";

/// The longest opening a connection to SQS may take (the AWS SDK's own default).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);
/// The longest one attempt of an SQS call may take: SQS answers in milliseconds, so an
/// attempt this slow is a stalled connection, and is retried.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an SQS call may take, the SDK's retries (three attempts) included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The SQS endpoint requests go to, for errors; set by [`sqs_client`].
static ENDPOINT: OnceLock<String> = OnceLock::new();

/// Why the AWS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    #[error("{NO_REGION}")]
    NoRegion,
    #[error("{NO_CREDENTIALS}{}", if .0.is_empty() { String::new() } else { format!(" ({})", .0) })]
    NoCredentials(String),
}

/// An SQS client configured from the standard AWS environment (region, credentials chain,
/// `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_SQS`), once a region and credentials are known to be
/// there.
pub async fn sqs_client() -> Result<Client, AwsSetupError> {
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let region = config.region().ok_or(AwsSetupError::NoRegion)?.to_string();
    let provider = config
        .credentials_provider()
        .ok_or_else(|| AwsSetupError::NoCredentials("no credentials provider".to_string()))?;
    match provider.provide_credentials().await {
        Ok(_) => {}
        // Nothing in the chain had any: the list of what was tried says no more than that.
        Err(CredentialsError::CredentialsNotLoaded(_)) => {
            return Err(AwsSetupError::NoCredentials(String::new()));
        }
        // A source that is there but broken (a profile without keys, a role that cannot be
        // assumed): its reason.
        Err(error) => return Err(AwsSetupError::NoCredentials(root_cause(&error))),
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL_SQS")
        .ok()
        .filter(|url| !url.is_empty())
        .or_else(|| config.endpoint_url().map(str::to_string))
        .unwrap_or_else(|| format!("https://sqs.{region}.amazonaws.com"));
    let _ = ENDPOINT.set(endpoint);
    let sqs = aws_sdk_sqs::config::Builder::from(&config)
        .timeout_config(timeouts(ATTEMPT_TIMEOUT, OPERATION_TIMEOUT))
        .build();
    Ok(Client::from_conf(sqs))
}

/// Timeouts of an SQS call: at most `attempt` for each attempt, `operation` in all (retries
/// included), and [`CONNECT_TIMEOUT`] to connect. For one call, pass
/// `aws_sdk_sqs::Config::builder().timeout_config(timeouts(..))` to its
/// `customize().config_override(..)`.
pub fn timeouts(attempt: Duration, operation: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .operation_timeout(operation)
        .build()
}

/// The SQS endpoint the client sends to, as far as it is known.
fn endpoint() -> &'static str {
    ENDPOINT.get().map_or("the SQS endpoint", String::as_str)
}

/// One line saying what went wrong with an SQS request and, where it can, what to do.
pub fn describe<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    if chain(error).any(|cause| cause.downcast_ref::<CredentialsError>().is_some()) {
        return format!("{NO_CREDENTIALS} ({})", root_cause(error));
    }
    match error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            match (service_error.code(), service_error.message()) {
                (Some(code), Some(message)) => format!("{} answered {code}: {message}", endpoint()),
                (Some(code), None) => format!("{} answered {code}", endpoint()),
                _ => format!("{} answered an error: {}", endpoint(), root_cause(error)),
            }
        }
        SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
            format!("could not reach {}: {}", endpoint(), root_cause(error))
        }
        SdkError::TimeoutError(_) => format!("no answer from {} in time", endpoint()),
        SdkError::ResponseError(_) => format!(
            "unreadable answer from {}: {}",
            endpoint(),
            root_cause(error)
        ),
        _ if root_cause(error).contains("region") => NO_REGION.to_string(),
        _ => format!("request to {} failed: {}", endpoint(), root_cause(error)),
    }
}

/// An error and its sources, outermost first.
fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// The innermost error's message, the one that says what happened ("Connection refused"),
/// on one line.
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let text = chain(error)
        .last()
        .map(|cause| cause.to_string())
        .unwrap_or_default();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}
