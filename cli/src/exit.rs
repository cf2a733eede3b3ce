//! Errors become exit codes here, and only here.

use loom_broker::{ConnectError, EmbeddedError, TopologyError};
use loom_config::ConfigError;
use loom_scheduler::operator::OperatorError;
use loom_validator::history::HistoryError;

/// The command failed.
pub const FAILURE: u8 = 1;
/// Bad configuration or usage (clap also exits 2 on bad arguments).
pub const BAD_CONFIG: u8 = 2;
/// NATS could not be reached or refused a request.
pub const BROKER: u8 = 3;
/// The embedded nats-server is missing or did not start.
pub const EMBEDDED: u8 = 4;
/// An address or data directory is already in use.
pub const IN_USE: u8 = 5;

/// An address or directory another process holds.
#[derive(Debug, thiserror::Error)]
pub enum InUse {
    /// The HTTP listen address.
    #[error("http.listen {address}: {detail}")]
    Address {
        /// The address.
        address: String,
        /// The operating system's words.
        detail: String,
    },
    /// The data directory of another `loom up`.
    #[error("data dir {dir} is in use by another `loom up` (pid {pid})")]
    DataDir {
        /// The directory.
        dir: String,
        /// The process holding it.
        pid: i32,
    },
}

/// A usage error found after argument parsing (e.g. an unknown worker name).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The exit code for an error, from the first typed cause in its chain.
pub fn code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if cause.is::<ConfigError>() || cause.is::<Usage>() {
            return BAD_CONFIG;
        }
        if let Some(operator) = cause.downcast_ref::<OperatorError>() {
            return if operator.is_usage() {
                BAD_CONFIG
            } else {
                BROKER
            };
        }
        if let Some(history) = cause.downcast_ref::<HistoryError>() {
            return if history.is_usage() {
                BAD_CONFIG
            } else {
                BROKER
            };
        }
        if cause.is::<ConnectError>() || cause.is::<TopologyError>() {
            return BROKER;
        }
        if let Some(embedded) = cause.downcast_ref::<EmbeddedError>() {
            return match embedded {
                EmbeddedError::PortInUse { .. } => IN_USE,
                _ => EMBEDDED,
            };
        }
        if cause.is::<InUse>() {
            return IN_USE;
        }
    }
    FAILURE
}

/// The error and its causes as one line.
pub fn describe(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
