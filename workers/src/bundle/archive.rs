//! The canonical archive of a bundle directory, and its digest.
//!
//! The archive is a tar whose bytes depend only on the bundle's content:
//! entries sorted by path, mtime 0, uid/gid 0 with no user or group names,
//! directories 0755, files 0644 or 0755 (the executable bit is the only
//! mode bit kept). So two copies of a bundle with different timestamps,
//! owners or modes have the same digest, and a copy that was changed does
//! not. Symbolic links, devices and other special files are refused.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BundleError, Limits, PackedBundle};

/// One entry of a bundle, relative to its root.
#[derive(Debug)]
enum Entry {
    Directory(PathBuf),
    File { path: PathBuf, executable: bool },
}

impl Entry {
    fn path(&self) -> &Path {
        match self {
            Entry::Directory(path) | Entry::File { path, .. } => path,
        }
    }
}

/// Packs the bundle directory `bundle_dir` into its canonical archive and
/// validates its `limits.toml`. Deterministic: the same content gives the
/// same bytes and so the same digest.
pub fn pack(bundle_dir: &Path) -> Result<PackedBundle, BundleError> {
    if !fs::metadata(bundle_dir).is_ok_and(|metadata| metadata.is_dir()) {
        return Err(BundleError::Missing {
            dir: bundle_dir.to_path_buf(),
        });
    }
    let limits = Limits::load(bundle_dir)?;
    let archive = canonical_archive(bundle_dir)?;
    let name = bundle_dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(PackedBundle {
        name,
        digest: sha256_hex(&archive),
        archive,
        limits,
    })
}

/// The digest of `dir`'s canonical archive: what [`pack`] would name it.
pub fn digest_of_dir(dir: &Path) -> Result<String, BundleError> {
    pack(dir).map(|packed| packed.digest)
}

/// Lower-case hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn canonical_archive(root: &Path) -> Result<Vec<u8>, BundleError> {
    let mut entries = Vec::new();
    collect(root, Path::new(""), &mut entries)?;
    entries.sort_by(|a, b| a.path().cmp(b.path()));

    let mut builder = tar::Builder::new(Vec::new());
    for entry in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let written = match entry {
            Entry::Directory(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, std::io::empty())
            }
            Entry::File { path, executable } => {
                let full = root.join(path);
                let content = fs::read(&full).map_err(|error| BundleError::Invalid {
                    file: full.clone(),
                    detail: format!("cannot be read: {error}"),
                })?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(if *executable { 0o755 } else { 0o644 });
                header.set_size(content.len() as u64);
                builder.append_data(&mut header, path, content.as_slice())
            }
        };
        written.map_err(|error| BundleError::Invalid {
            file: root.join(entry.path()),
            detail: format!("cannot be archived: {error}"),
        })?;
    }
    builder.into_inner().map_err(BundleError::io(root))
}

/// Adds every entry under `root/relative` to `entries`, refusing anything
/// that is neither a regular file nor a directory.
fn collect(root: &Path, relative: &Path, entries: &mut Vec<Entry>) -> Result<(), BundleError> {
    let dir = root.join(relative);
    for item in fs::read_dir(&dir).map_err(BundleError::io(&dir))? {
        let item = item.map_err(BundleError::io(&dir))?;
        let name = item.file_name();
        let full = dir.join(&name);
        if name.to_str().is_none() {
            return Err(BundleError::Invalid {
                file: full,
                detail: "has a name that is not UTF-8".to_owned(),
            });
        }
        let path = relative.join(&name);
        let metadata = fs::symlink_metadata(&full).map_err(BundleError::io(&full))?;
        let file_type = metadata.file_type();
        if file_type.is_dir() {
            entries.push(Entry::Directory(path.clone()));
            collect(root, &path, entries)?;
        } else if file_type.is_file() {
            let executable = metadata.permissions().mode() & 0o111 != 0;
            entries.push(Entry::File { path, executable });
        } else if file_type.is_symlink() {
            return Err(BundleError::Invalid {
                file: full,
                detail: "is a symbolic link, which bundles may not contain".to_owned(),
            });
        } else {
            return Err(BundleError::Invalid {
                file: full,
                detail: "is not a regular file or directory".to_owned(),
            });
        }
    }
    Ok(())
}

/// Whether `path` is a relative path of plain names (no `..`, no root), as
/// every entry of a canonical archive is.
pub(crate) fn is_plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|component| matches!(component, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn plain_relative_paths() {
        assert!(is_plain_relative(Path::new("a/b.txt")));
        assert!(!is_plain_relative(Path::new("../a")));
        assert!(!is_plain_relative(Path::new("/etc/passwd")));
        assert!(!is_plain_relative(Path::new("a/../../b")));
        assert!(!is_plain_relative(Path::new("")));
    }
}
