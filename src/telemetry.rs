//! Log output through `tracing`: human-readable text or one JSON object per line.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. `RUST_LOG` overrides the default level
/// ([`crate::config::DEFAULT_LOG_FILTER`]).
pub fn init(format: LogFormat) {
    init_with_default(format, crate::config::DEFAULT_LOG_FILTER);
}

/// Installs the global subscriber of `ignis serve`: `filter` is the configuration's `RUST_LOG`
/// (from the environment or `.env`, already checked), else the default level.
pub fn init_with_filter(format: LogFormat, filter: Option<&str>) {
    match filter.map(EnvFilter::try_new) {
        Some(Ok(f)) => install(format, f),
        _ => install(format, EnvFilter::new(crate::config::DEFAULT_LOG_FILTER)),
    }
}

/// Installs the global subscriber with `default` as the level when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    install(format, filter);
}

fn install(format: LogFormat, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second install (tests) is harmless: the first subscriber stays.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
