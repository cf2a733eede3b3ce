//! Unpacking a bundle archive into the local cache, after verifying it.
//!
//! The cache holds one directory per digest, `<cache_dir>/<digest>`, made
//! atomically (unpacked into a temporary directory, then renamed) so that a
//! crash never leaves a half-written bundle under a digest's name. A cached
//! copy is reused only after its digest has been recomputed: the cache is a
//! convenience, never a source of trust.

use std::fs;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::archive::{digest_of_dir, is_plain_relative, sha256_hex};
use super::{BundleError, Limits, LoadedBundle};

/// Verifies that `archive` has the digest `expected_digest`, then returns
/// its unpacked copy at `<cache_dir>/<digest>`: a cached copy if one is
/// there and still has that digest, otherwise a fresh one.
pub fn unpack(
    archive: &[u8],
    expected_digest: &str,
    cache_dir: &Path,
) -> Result<LoadedBundle, BundleError> {
    let digest = sha256_hex(archive);
    if !digest.eq_ignore_ascii_case(expected_digest) {
        return Err(BundleError::Corrupt {
            expected: expected_digest.to_owned(),
            actual: digest,
        });
    }
    // From here on `digest` is 64 lower-case hex digits, safe as a file name.
    let target = cache_dir.join(&digest);
    if target.exists() {
        if cached_copy_is_intact(&target, &digest) {
            return loaded(digest, target);
        }
        tracing::warn!(
            bundle = %target.display(),
            "cached enforcement bundle no longer matches its digest; unpacking it again"
        );
        remove_tree(&target)?;
    }

    fs::create_dir_all(cache_dir).map_err(BundleError::io(cache_dir))?;
    let staging = staging_dir(cache_dir, &digest);
    let unpacked = extract(archive, &staging).and_then(|()| {
        let actual = digest_of_dir(&staging)?;
        if actual == digest {
            Ok(())
        } else {
            Err(BundleError::Invalid {
                file: PathBuf::from(&digest),
                detail:
                    "is not a canonical bundle archive (its unpacked content has another digest)"
                        .to_owned(),
            })
        }
    });
    if let Err(error) = unpacked {
        let _ = remove_tree(&staging);
        return Err(error);
    }
    match fs::rename(&staging, &target) {
        Ok(()) => loaded(digest, target),
        Err(error) => {
            let _ = remove_tree(&staging);
            // Another unpack of the same digest may have won the race.
            if cached_copy_is_intact(&target, &digest) {
                loaded(digest, target)
            } else {
                Err(BundleError::Io {
                    path: target,
                    source: error,
                })
            }
        }
    }
}

fn loaded(digest: String, dir: PathBuf) -> Result<LoadedBundle, BundleError> {
    let limits = Limits::load(&dir)?;
    Ok(LoadedBundle {
        digest,
        dir,
        limits,
    })
}

fn cached_copy_is_intact(dir: &Path, digest: &str) -> bool {
    digest_of_dir(dir).is_ok_and(|actual| actual == digest)
}

/// A fresh, unique staging directory name inside `cache_dir`.
fn staging_dir(cache_dir: &Path, digest: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    cache_dir.join(format!(".unpack-{digest}-{}-{n}", std::process::id()))
}

/// Writes the entries of `archive` under `dir`, refusing any entry that is
/// not a plain file or directory with a plain relative path.
fn extract(archive: &[u8], dir: &Path) -> Result<(), BundleError> {
    let archive_name = || PathBuf::from("<archive>");
    let unreadable = |error: std::io::Error| BundleError::Invalid {
        file: archive_name(),
        detail: format!("cannot be read as a tar archive: {error}"),
    };
    fs::create_dir(dir).map_err(BundleError::io(dir))?;
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?.into_owned();
        if !is_plain_relative(&path) {
            return Err(BundleError::Invalid {
                file: path,
                detail: "is not a plain relative path".to_owned(),
            });
        }
        let full = dir.join(&path);
        let entry_type = entry.header().entry_type();
        if entry_type.is_dir() {
            fs::create_dir_all(&full).map_err(BundleError::io(&full))?;
        } else if entry_type.is_file() {
            if let Some(parent) = full.parent() {
                fs::create_dir_all(parent).map_err(BundleError::io(parent))?;
            }
            let mode = entry.header().mode().map_err(unreadable)?;
            let mut content = Vec::new();
            entry.read_to_end(&mut content).map_err(unreadable)?;
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if mode & 0o111 != 0 { 0o755 } else { 0o644 })
                .open(&full)
                .map_err(BundleError::io(&full))?;
            std::io::Write::write_all(&mut file, &content).map_err(BundleError::io(&full))?;
        } else {
            return Err(BundleError::Invalid {
                file: path,
                detail: "is neither a regular file nor a directory".to_owned(),
            });
        }
    }
    Ok(())
}

fn remove_tree(dir: &Path) -> Result<(), BundleError> {
    crate::tree::remove(dir).map_err(BundleError::io(dir))
}
