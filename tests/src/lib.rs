//! End-to-end tests of Loom: the real `loom` binary against a real
//! nats-server (started by `loom-testkit`). The tests live in `tests/`; this
//! library holds what they share.

use std::path::PathBuf;

/// The repository's root directory.
pub fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The example deployment's `loom.toml`.
pub fn example_config() -> PathBuf {
    repository().join("examples/value-first/loom.toml")
}
