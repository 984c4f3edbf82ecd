//! Log output of both binaries: JSON lines (one object per event, as CloudWatch expects from the
//! Lambda function) or plain text, on stderr, filtered by `RUST_LOG` (or a default level when it
//! is unset).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::TryInitError;

/// The shape of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Installs the global log subscriber, writing to stderr.
pub fn init(format: LogFormat, default_filter: &str) -> Result<(), TryInitError> {
    init_with_writer(format, default_filter, std::io::stderr)
}

/// Installs the global log subscriber, writing to `writer`.
pub fn init_with_writer<W>(
    format: LogFormat,
    default_filter: &str,
    writer: W,
) -> Result<(), TryInitError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init(),
    }
}
