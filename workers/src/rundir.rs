//! Run directories: `<run_root>/<run_id>-<attempt>/`, the worker's working
//! directory and `HOME`, empty at the start of each attempt (mode 0700),
//! holding the read-only copy of the enforcement bundle under
//! `enforcement/`.
//!
//! Emptied run directories are kept as [`Spares`] and renamed into place for
//! the next attempt, so that a run makes and frees no directory of its own.
//! Making directories is what a busy agent's file system pays most for: on
//! ext4 without a journal, each mkdir scans past every inode freed in the
//! last half minute, and on disks mounted with `discard` every freed
//! directory block is a discard. A worker sees no difference: its directory
//! is empty, has mode 0700 and the path of its attempt.
//!
//! Read-only modes do not stop a worker running as root (as agents do in
//! containers), so the copy is checked against its digest after the run:
//! detection after the fact is what makes "workers cannot write to the
//! bundle" hold.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bundle::{LoadedBundle, digest_of_dir};
use crate::tree;

/// The name of the bundle copy inside a run directory.
pub const ENFORCEMENT_SUBDIR: &str = "enforcement";

/// The mode of a run directory: its worker's alone.
pub const RUN_DIR_MODE: u32 = 0o700;

/// How spare run directories are named in the run root:
/// `.spare-<agent pid>-<n>`.
const SPARE_PREFIX: &str = ".spare-";

/// Numbers spares across every pool of the process, so that two executors
/// on one run root never name two spares alike.
static SPARES_NAMED: AtomicU64 = AtomicU64::new(0);

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

/// Makes `dir` fresh (removing a leftover first, then taking a spare or
/// creating it) and, with a bundle, copies it read-only to `dir/enforcement`
/// and checks the copy's digest.
pub fn prepare(
    dir: &Path,
    bundle: Option<&LoadedBundle>,
    spares: &Spares,
) -> Result<RunDir, RunDirError> {
    tree::remove(dir).map_err(|source| RunDirError::Leftover {
        dir: dir.to_path_buf(),
        source,
    })?;
    if !spares.take(dir) {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(|source| RunDirError::Create {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        create_dir(dir).map_err(|source| RunDirError::Create {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
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

/// Makes `dir` an empty run directory, for a run without a bundle, if it
/// can be done with one rename of a spare or one mkdir: false when a
/// leftover is in the way or the run root is missing, for [`prepare`] to
/// deal with.
pub fn create_empty(dir: &Path, spares: &Spares) -> bool {
    spares.take(dir) || create_dir(dir).is_ok()
}

fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(RUN_DIR_MODE).create(dir)
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
fn remove(dir: &Path) {
    let held = std::fs::File::open(dir).ok();
    if let Err(error) = tree::remove(dir) {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a run directory");
    }
    drop(held);
}

/// Empty run directories kept for the next attempts, named
/// `<run_root>/.spare-<pid>-<n>`, at most `capacity` of them (an agent keeps
/// one per run slot). Every failure to rename or empty one falls back to
/// making and removing directories, so a spare lost to anything (an
/// operator cleaning the run root, another agent's start) costs only speed.
#[derive(Debug)]
pub struct Spares {
    run_root: PathBuf,
    capacity: usize,
    idle: Mutex<Vec<PathBuf>>,
}

impl Spares {
    /// A pool for `run_root`, keeping at most `capacity` spares. Removes the
    /// spares that agents no longer running left in the run root (and any of
    /// an earlier process with this one's pid, as after a container restart).
    pub fn new(run_root: &Path, capacity: usize) -> Spares {
        remove_stale_spares(run_root);
        Spares {
            run_root: run_root.to_path_buf(),
            capacity,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Renames a spare to `dir`; false when there is none or the rename
    /// fails (the spare is then forgotten).
    pub fn take(&self, dir: &Path) -> bool {
        let Some(spare) = self.lock().pop() else {
            return false;
        };
        match std::fs::rename(&spare, dir) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(spare = %spare.display(), dir = %dir.display(), %error, "cannot reuse a spare run directory");
                let _ = tree::remove(&spare);
                false
            }
        }
    }

    /// After an attempt: keeps `dir` as a spare, emptied and given its mode
    /// back, or removes it when the pool is full or it cannot be emptied
    /// (it is no longer a directory, say, or holds what cannot be removed).
    pub fn give_back(&self, dir: &Path) {
        if self.lock().len() < self.capacity {
            let n = SPARES_NAMED.fetch_add(1, Ordering::Relaxed);
            let spare = self
                .run_root
                .join(format!("{SPARE_PREFIX}{}-{n}", std::process::id()));
            // Renamed first: a rename never follows a symbolic link, so what
            // is emptied below is whatever the worker left at its path.
            if std::fs::rename(dir, &spare).is_ok() {
                if empty_run_dir(&spare).is_ok() {
                    let mut idle = self.lock();
                    if idle.len() < self.capacity {
                        idle.push(spare);
                        return;
                    }
                }
                remove(&spare);
                return;
            }
        }
        remove(dir);
    }

    /// [`Spares::give_back`] for a run directory left empty, with its mode
    /// untouched: true when it is now a spare; false, with nothing done,
    /// when it needs emptying (or the pool is full), for `give_back` on a
    /// thread that may block.
    pub fn give_back_if_empty(&self, dir: &Path) -> bool {
        let untouched = std::fs::symlink_metadata(dir).is_ok_and(|metadata| {
            metadata.is_dir() && metadata.permissions().mode() & 0o7777 == RUN_DIR_MODE
        });
        let empty = || std::fs::read_dir(dir).is_ok_and(|mut items| items.next().is_none());
        if !untouched || !empty() || self.lock().len() >= self.capacity {
            return false;
        }
        self.give_back(dir);
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        // The list is valid whatever a panicking holder was doing.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        for spare in self.lock().drain(..) {
            let _ = std::fs::remove_dir(&spare);
        }
    }
}

/// Empties the run directory `dir` (which must be a directory itself, not a
/// link to one) and gives it [`RUN_DIR_MODE`] again.
fn empty_run_dir(dir: &Path) -> io::Result<()> {
    let metadata = std::fs::symlink_metadata(dir)?;
    if !metadata.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    if metadata.permissions().mode() & 0o7777 != RUN_DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(RUN_DIR_MODE))?;
    }
    for item in std::fs::read_dir(dir)? {
        tree::remove(&item?.path())?;
    }
    Ok(())
}

/// Removes the spares in `run_root` of this process's pid and of pids that
/// are not running. Best effort: a spare another agent is about to take
/// only costs it a mkdir.
fn remove_stale_spares(run_root: &Path) {
    let Ok(items) = std::fs::read_dir(run_root) else {
        return;
    };
    let own = std::process::id();
    for item in items.flatten() {
        let name = item.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(SPARE_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let running = pid != own && Path::new("/proc").join(pid.to_string()).exists();
        if !running {
            let _ = tree::remove(&item.path());
        }
    }
}
