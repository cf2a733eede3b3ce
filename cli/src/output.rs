//! Logging set-up and small helpers for what commands print.

use crate::args::{Global, LogFormat};

/// Installs the tracing subscriber: logs go to stderr, filtered by `--log`.
pub fn init_tracing(global: &Global, role: bool) {
    let log = global
        .log
        .clone()
        .unwrap_or_else(|| if role { "info" } else { "warn" }.to_owned());
    // The NATS client's own connection chatter stays quiet unless asked for:
    // Loom logs connection changes itself.
    let directives = if log.contains("async_nats") {
        log
    } else {
        format!("{log},async_nats=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}
