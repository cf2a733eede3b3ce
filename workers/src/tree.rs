//! Directory trees on the local disk: read-only copies, and removal of
//! trees whose directories a worker (or the read-only copy) left without
//! write permission.
//!
//! Nothing here follows symbolic links.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

/// Removes the tree at `path` (a missing tree is not an error), first making
/// every directory in it writable.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    make_writable(path);
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Gives the owner full access to every directory under `path`, so that the
/// tree can be removed. Best effort: removal reports what still fails.
pub(crate) fn make_writable(path: &Path) {
    let Ok(metadata) = fs::symlink_metadata(path) else {
        return;
    };
    if !metadata.is_dir() {
        return;
    }
    let mode = metadata.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(items) = fs::read_dir(path) {
        for item in items.flatten() {
            make_writable(&item.path());
        }
    }
}

/// Copies the tree `from` to `to` (which must not exist) read-only: files
/// 0444, or 0555 when any executable bit is set, directories 0555. Symbolic
/// links and special files are refused.
pub(crate) fn copy_read_only(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    for item in fs::read_dir(from)? {
        let item = item?;
        let source = item.path();
        let target = to.join(item.file_name());
        let file_type = item.file_type()?;
        if file_type.is_dir() {
            copy_read_only(&source, &target)?;
        } else if file_type.is_file() {
            fs::copy(&source, &target)?;
            let executable = fs::metadata(&source)?.permissions().mode() & 0o111 != 0;
            let mode = if executable { 0o555 } else { 0o444 };
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a regular file or directory", source.display()),
            ));
        }
    }
    // Last, once everything inside is written.
    fs::set_permissions(to, fs::Permissions::from_mode(0o555))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_copy_has_read_only_modes_and_can_be_removed() {
        let temp = tempfile::tempdir().unwrap();
        let from = temp.path().join("from");
        fs::create_dir_all(from.join("sub")).unwrap();
        fs::write(from.join("rules.txt"), "rule").unwrap();
        fs::write(from.join("sub/check.sh"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(from.join("sub/check.sh"), fs::Permissions::from_mode(0o700)).unwrap();

        let to = temp.path().join("to");
        copy_read_only(&from, &to).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&to), 0o555);
        assert_eq!(mode(&to.join("sub")), 0o555);
        assert_eq!(mode(&to.join("rules.txt")), 0o444);
        assert_eq!(mode(&to.join("sub/check.sh")), 0o555);
        assert_eq!(fs::read_to_string(to.join("rules.txt")).unwrap(), "rule");

        remove(&to).unwrap();
        assert!(!to.exists());
        remove(&to).unwrap();
    }
}
