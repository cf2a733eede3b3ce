//! Enforcement bundles (DESIGN §7): packing a bundle directory into its
//! canonical archive, naming it by the archive's SHA-256 digest, and
//! unpacking a verified copy into a local cache.
//!
//! This module does not fetch bundles (the agent reads them from the object
//! store) and does not put them in run directories (the executor does, in
//! [`crate::rundir`]).

mod archive;
mod cache;
mod limits;

use std::path::PathBuf;

pub use archive::{digest_of_dir, pack};
pub use cache::unpack;
pub use limits::{LIMITS_FILE, Limits};

/// How many hex digits of a digest are shown in messages.
pub const DIGEST_PREFIX_LEN: usize = 12;

/// A bundle directory packed into its canonical archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedBundle {
    /// The bundle's name: the name of its directory.
    pub name: String,
    /// Lower-case hex SHA-256 of `archive`.
    pub digest: String,
    /// The canonical tar archive: entries sorted by path, mtime 0, uid/gid
    /// 0, modes 0644/0755.
    pub archive: Vec<u8>,
    /// The bundle's validated `limits.toml` (no limits when absent).
    pub limits: Limits,
}

/// A verified bundle unpacked in the local cache, ready to be copied into
/// run directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedBundle {
    /// Lower-case hex SHA-256 of the bundle's canonical archive.
    pub digest: String,
    /// The verified, unpacked copy: `<cache_dir>/<digest>`.
    pub dir: PathBuf,
    /// The bundle's limits.
    pub limits: Limits,
}

impl LoadedBundle {
    /// The first hex digits of the digest, for messages.
    pub fn short_digest(&self) -> &str {
        short_digest(&self.digest)
    }
}

/// Why a bundle could not be packed, verified or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The bundle directory does not exist or is not a directory.
    #[error("enforcement bundle directory {} does not exist or is not a directory", dir.display())]
    Missing {
        /// The directory looked for.
        dir: PathBuf,
    },
    /// The archive (or a cached copy) does not have the expected digest.
    #[error("enforcement bundle has digest {actual} where {expected} was expected")]
    Corrupt {
        /// The digest asked for.
        expected: String,
        /// The digest of what was found.
        actual: String,
    },
    /// A file of the bundle is not acceptable: a bad `limits.toml`, a
    /// symbolic link or device, an unreadable file, an unsafe archive entry.
    #[error("enforcement bundle file {}: {detail}", file.display())]
    Invalid {
        /// The file (or archive entry) at fault.
        file: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Reading or writing the file system failed.
    #[error("enforcement bundle i/o on {}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BundleError {
        let path = path.into();
        move |source| BundleError::Io { path, source }
    }
}

/// The first [`DIGEST_PREFIX_LEN`] characters of a digest.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..DIGEST_PREFIX_LEN).unwrap_or(digest)
}
