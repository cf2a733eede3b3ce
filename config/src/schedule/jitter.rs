//! Owns the deterministic per-key jitter: a fixed offset in whole seconds, derived from a key
//! (usually the worker name) with SHA-256, so every scheduler process computes the same spread.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// The jitter offset in whole seconds for `key` with maximum spread `jitter`:
/// (first 8 bytes of SHA-256(key) as a big-endian u64) % (jitter whole seconds + 1).
/// Zero when `jitter` is under one second. (A jitter beyond `i64::MAX - 1` seconds is treated
/// as that, so the offset always fits an `i64`.)
pub(crate) fn offset_secs(jitter: Duration, key: &str) -> u64 {
    let max = jitter.as_secs().min(i64::MAX as u64 - 1);
    if max == 0 {
        return 0;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) % (max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // SHA-256("") = e3b0c44298fc1c14...; 0xe3b0c44298fc1c14 % 61 computed independently.
        let expected = 0xe3b0_c442_98fc_1c14_u64 % 61;
        assert_eq!(offset_secs(Duration::from_secs(60), ""), expected);
    }

    #[test]
    fn sub_second_jitter_is_zero() {
        assert_eq!(offset_secs(Duration::from_millis(999), "worker"), 0);
        assert_eq!(offset_secs(Duration::ZERO, "worker"), 0);
    }

    #[test]
    fn fractional_part_is_ignored() {
        assert_eq!(
            offset_secs(Duration::from_millis(30_900), "nightly-report"),
            offset_secs(Duration::from_secs(30), "nightly-report")
        );
    }
}
