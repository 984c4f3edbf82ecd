//! Log output of both binaries: JSON lines (one object per event, as CloudWatch expects from the
//! Lambda function) or plain text, on stderr, filtered by `RUST_LOG` (or a default level when it
//! is unset). Panics are logged through it too (an error event with the message and the
//! location), so that they are JSON lines like the rest instead of the default hook's plain text.
//! With `SENTRY_DSN` set, errors, failed sources and panics also go to Sentry
//! ([`crate::telemetry`]).

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
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(crate::telemetry::layers());
    std::panic::set_hook(Box::new(log_panic));
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

/// The panic hook: one error event with the panic's message, where it happened and the thread.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    let location = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()));
    let thread = std::thread::current();
    tracing::error!(
        panic = %message,
        location,
        thread = thread.name().unwrap_or("unnamed"),
        "panic"
    );
}
