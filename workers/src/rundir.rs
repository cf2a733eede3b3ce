//! Run directories: `<run_root>/<run_id>-<attempt>/`, the worker's working
//! directory and `HOME`, made fresh for each attempt, holding the read-only
//! copy of the enforcement bundle under `enforcement/`.
//!
//! Read-only modes do not stop a worker running as root (as agents do in
//! containers), so the copy is checked against its digest after the run:
//! detection after the fact is what makes "workers cannot write to the
//! bundle" hold.

use std::io;
use std::path::{Path, PathBuf};

use crate::bundle::{LoadedBundle, digest_of_dir};
use crate::tree;

/// The name of the bundle copy inside a run directory.
pub const ENFORCEMENT_SUBDIR: &str = "enforcement";

/// Why a run directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A leftover directory of the same attempt could not be removed.
    #[error("cannot remove the leftover run directory {}: {source}", dir.display())]
    Leftover {
        /// The run directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The run directory could not be created.
    #[error("cannot create the run directory {}: {source}", dir.display())]
    Create {
        /// The run directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The bundle could not be copied into the run directory.
    #[error("cannot copy enforcement bundle {} into {}: {source}", from.display(), to.display())]
    CopyBundle {
        /// The cached bundle.
        from: PathBuf,
        /// The copy being made.
        to: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The run's copy of the bundle does not have the bundle's digest.
    #[error("the copy of enforcement bundle {digest} in {} does not match its digest", dir.display())]
    CopyMismatch {
        /// The bundle's digest.
        digest: String,
        /// The copy.
        dir: PathBuf,
    },
}

/// A prepared run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    /// The directory itself (absolute when the run root is).
    pub path: PathBuf,
    /// The read-only bundle copy, when the run has a bundle.
    pub enforcement: Option<PathBuf>,
}

/// The run directory of one attempt: `<run_root>/<run_id>-<attempt>`.
pub fn path_for(run_root: &Path, run_id: &impl std::fmt::Display, attempt: u32) -> PathBuf {
    run_root.join(format!("{run_id}-{attempt}"))
}

/// The bundle copy's path inside the run directory `dir`.
pub fn enforcement_path(dir: &Path) -> PathBuf {
    dir.join(ENFORCEMENT_SUBDIR)
}

/// Makes `dir` fresh (removing a leftover first) and, with a bundle, copies
/// it read-only to `dir/enforcement` and checks the copy's digest.
pub fn prepare(dir: &Path, bundle: Option<&LoadedBundle>) -> Result<RunDir, RunDirError> {
    tree::remove(dir).map_err(|source| RunDirError::Leftover {
        dir: dir.to_path_buf(),
        source,
    })?;
    std::fs::create_dir_all(dir).map_err(|source| RunDirError::Create {
        dir: dir.to_path_buf(),
        source,
    })?;
    let enforcement = match bundle {
        Some(bundle) => {
            let copy = enforcement_path(dir);
            tree::copy_read_only(&bundle.dir, &copy).map_err(|source| RunDirError::CopyBundle {
                from: bundle.dir.clone(),
                to: copy.clone(),
                source,
            })?;
            if !copy_matches(&copy, &bundle.digest) {
                return Err(RunDirError::CopyMismatch {
                    digest: bundle.digest.clone(),
                    dir: copy,
                });
            }
            Some(copy)
        }
        None => None,
    };
    Ok(RunDir {
        path: dir.to_path_buf(),
        enforcement,
    })
}

/// Creates `dir` empty, for a run without a bundle, if it can be done with
/// one mkdir: false when a leftover is in the way or the run root is
/// missing, for [`prepare`] to deal with.
pub fn create_empty(dir: &Path) -> bool {
    std::fs::create_dir(dir).is_ok()
}

/// Whether the bundle copy at `copy` still has the digest `digest`. A copy
/// that cannot be packed any more (a file made unreadable, a symbolic link
/// added) does not match.
pub fn copy_matches(copy: &Path, digest: &str) -> bool {
    digest_of_dir(copy).is_ok_and(|actual| actual == digest)
}

/// Removes a run directory, making it writable first. Failure is logged,
/// not returned: a leftover directory is removed by the next attempt.
///
/// The directory is held open while it is removed, so that the filesystem
/// frees it when that handle closes, after the run root's lock is released.
/// On a filesystem mounted with `discard` (ext4 on many cloud disks),
/// freeing a directory waits for the disk; done under the lock, it would
/// stall the making and removing of every other run directory meanwhile.
pub fn remove(dir: &Path) {
    let held = std::fs::File::open(dir).ok();
    if let Err(error) = tree::remove(dir) {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a run directory");
    }
    drop(held);
}
