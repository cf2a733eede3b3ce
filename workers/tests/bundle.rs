//! Enforcement bundles: deterministic packing, verification on unpack, the
//! re-verified cache, and the read-only copy in run directories whose
//! modification is detected after the run.

#![allow(clippy::unwrap_used)] // Reason: test helpers; a failure here is the test's failure.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

use loom_protocol::Outcome;
use loom_workers::{BundleError, Limits, digest_of_dir, pack, unpack};
use support::{Harness, command, worker, write_tree};

const FILES: &[(&str, &str, bool)] = &[
    (
        "limits.toml",
        "cpu_seconds = 60\nmax_output_bytes = 1048576\n",
        false,
    ),
    ("rules/no-deletes.txt", "never delete documents\n", false),
    ("rules/nested/deep.txt", "deep\n", false),
    ("bin/check.sh", "#!/bin/sh\nexit 0\n", true),
];

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, seconds_ago: u64) {
    let file = fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
        .unwrap();
}

#[test]
fn packing_is_deterministic_across_mtimes_and_modes() {
    let temp = tempfile::tempdir().unwrap();
    let first = temp.path().join("a/standard");
    let second = temp.path().join("b/standard");
    write_tree(&first, FILES);
    // Written in another order, with other modes and times.
    for file in FILES.iter().rev() {
        write_tree(&second, &[*file]);
    }
    set_mode(&first.join("rules/no-deletes.txt"), 0o600);
    set_mode(&second.join("rules/no-deletes.txt"), 0o664);
    set_mode(&first.join("bin/check.sh"), 0o700);
    set_mode(&second.join("bin/check.sh"), 0o755);
    set_mode(&second.join("rules"), 0o700);
    set_mtime(&first.join("limits.toml"), 3600);
    set_mtime(&second.join("limits.toml"), 60);

    let a = pack(&first).unwrap();
    let b = pack(&second).unwrap();
    assert_eq!(a.archive, b.archive);
    assert_eq!(a.digest, b.digest);
    assert_eq!(a.digest.len(), 64);
    assert!(
        a.digest
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(a.name, "standard");
    assert_eq!(a.limits.cpu_seconds, Some(60));
    assert_eq!(a.limits.max_output_bytes, Some(1_048_576));
    assert_eq!(digest_of_dir(&first).unwrap(), a.digest);
}

#[test]
fn content_names_and_the_executable_bit_change_the_digest() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("bundle");
    write_tree(&dir, FILES);
    let original = digest_of_dir(&dir).unwrap();

    fs::write(
        dir.join("rules/no-deletes.txt"),
        "never delete documents!\n",
    )
    .unwrap();
    let edited = digest_of_dir(&dir).unwrap();
    assert_ne!(edited, original);

    set_mode(&dir.join("rules/no-deletes.txt"), 0o755);
    let executable = digest_of_dir(&dir).unwrap();
    assert_ne!(executable, edited);

    fs::create_dir(dir.join("empty")).unwrap();
    assert_ne!(digest_of_dir(&dir).unwrap(), executable);
}

#[test]
fn a_long_path_packs_and_unpacks() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("bundle");
    let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(120));
    write_tree(&dir, &[(long.as_str(), "long", false)]);
    let packed = pack(&dir).unwrap();
    let loaded = unpack(&packed.archive, &packed.digest, &temp.path().join("cache")).unwrap();
    assert_eq!(fs::read_to_string(loaded.dir.join(&long)).unwrap(), "long");
}

#[test]
fn symlinks_missing_dirs_and_bad_limits_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let missing = pack(&temp.path().join("nope")).unwrap_err();
    assert!(matches!(missing, BundleError::Missing { .. }), "{missing}");

    let dir = temp.path().join("linked");
    write_tree(&dir, FILES);
    std::os::unix::fs::symlink("/etc/passwd", dir.join("rules/passwd")).unwrap();
    let error = pack(&dir).unwrap_err();
    assert!(matches!(error, BundleError::Invalid { .. }), "{error}");
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert!(error.to_string().contains("rules/passwd"), "{error}");

    let dir = temp.path().join("bad-limits");
    write_tree(&dir, &[("limits.toml", "cpu_seconds = 0\n", false)]);
    let error = pack(&dir).unwrap_err();
    assert!(error.to_string().contains("limits.toml"), "{error}");
    assert!(
        error
            .to_string()
            .contains("cpu_seconds must be a positive number"),
        "{error}"
    );

    let dir = temp.path().join("unknown-key");
    write_tree(&dir, &[("limits.toml", "gpu_seconds = 5\n", false)]);
    assert!(matches!(pack(&dir), Err(BundleError::Invalid { .. })));
}

#[test]
fn unpack_verifies_and_round_trips() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("standard");
    write_tree(&dir, FILES);
    let packed = pack(&dir).unwrap();
    let cache = temp.path().join("cache");

    let loaded = unpack(&packed.archive, &packed.digest, &cache).unwrap();
    assert_eq!(loaded.digest, packed.digest);
    assert_eq!(loaded.dir, cache.join(&packed.digest));
    assert_eq!(loaded.limits, packed.limits);
    assert_eq!(digest_of_dir(&loaded.dir).unwrap(), packed.digest);
    for (path, content, _) in FILES {
        assert_eq!(&fs::read_to_string(loaded.dir.join(path)).unwrap(), content);
    }
    let mode = fs::metadata(loaded.dir.join("bin/check.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111);
    // Nothing but the bundle is left in the cache.
    let names: Vec<_> = fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(&packed.digest)]);
}

#[test]
fn a_flipped_byte_is_detected() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("standard");
    write_tree(&dir, FILES);
    let packed = pack(&dir).unwrap();
    let mut archive = packed.archive.clone();
    archive[600] ^= 0x01;
    let error = unpack(&archive, &packed.digest, &temp.path().join("cache")).unwrap_err();
    match error {
        BundleError::Corrupt { expected, actual } => {
            assert_eq!(expected, packed.digest);
            assert_ne!(actual, packed.digest);
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(!temp.path().join("cache").join(&packed.digest).exists());
}

#[test]
fn a_digest_mismatch_is_detected() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("standard");
    write_tree(&dir, FILES);
    let packed = pack(&dir).unwrap();
    let wrong = "0".repeat(64);
    let error = unpack(&packed.archive, &wrong, &temp.path().join("cache")).unwrap_err();
    assert!(
        matches!(&error, BundleError::Corrupt { expected, actual } if *expected == wrong && *actual == packed.digest),
        "{error}"
    );
    // A digest that is not even hex never becomes a path.
    let error = unpack(&packed.archive, "../../etc", &temp.path().join("cache")).unwrap_err();
    assert!(matches!(error, BundleError::Corrupt { .. }));
}

#[test]
fn the_cache_is_reused_only_after_re_verification() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("standard");
    write_tree(&dir, FILES);
    let packed = pack(&dir).unwrap();
    let cache = temp.path().join("cache");
    let first = unpack(&packed.archive, &packed.digest, &cache).unwrap();
    let inode = fs::metadata(first.dir.join("limits.toml")).unwrap().ino();

    // Intact: reused as it is.
    let again = unpack(&packed.archive, &packed.digest, &cache).unwrap();
    assert_eq!(
        fs::metadata(again.dir.join("limits.toml")).unwrap().ino(),
        inode
    );

    // Tampered: replaced by a fresh, verified copy.
    fs::write(
        first.dir.join("rules/no-deletes.txt"),
        "delete everything\n",
    )
    .unwrap();
    fs::write(first.dir.join("extra.txt"), "planted\n").unwrap();
    let repaired = unpack(&packed.archive, &packed.digest, &cache).unwrap();
    assert_eq!(
        fs::read_to_string(repaired.dir.join("rules/no-deletes.txt")).unwrap(),
        "never delete documents\n"
    );
    assert!(!repaired.dir.join("extra.txt").exists());
    assert_eq!(digest_of_dir(&repaired.dir).unwrap(), packed.digest);
}

/// Builds a tar with one regular entry whose raw name and mtime are given.
fn raw_tar(name: &[u8], mtime: u64) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_size(2);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, &b"hi"[..]).unwrap();
    builder.into_inner().unwrap()
}

#[test]
fn unsafe_or_non_canonical_archives_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let cache = temp.path().join("cache");

    let escaping = raw_tar(b"../evil.txt", 0);
    let digest = sha256_hex(&escaping);
    let error = unpack(&escaping, &digest, &cache).unwrap_err();
    assert!(matches!(error, BundleError::Invalid { .. }), "{error}");
    assert!(!temp.path().join("evil.txt").exists());

    let stamped = raw_tar(b"rules.txt", 1_700_000_000);
    let digest = sha256_hex(&stamped);
    let error = unpack(&stamped, &digest, &cache).unwrap_err();
    assert!(error.to_string().contains("canonical"), "{error}");
    assert!(!cache.join(&digest).exists());

    let canonical = raw_tar(b"rules.txt", 0);
    let digest = sha256_hex(&canonical);
    let loaded = unpack(&canonical, &digest, &cache).unwrap();
    assert_eq!(loaded.limits, Limits::default());
    // Only the bundles are left: no staging directories.
    assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[tokio::test]
async fn the_run_gets_a_read_only_copy_of_its_bundle() {
    let harness = Harness::with(|settings| settings.keep_run_dirs = true);
    let bundle = harness.bundle(FILES);
    let script = "echo \"$LOOM_ENFORCEMENT_DIR\"; echo \"$LOOM_ENFORCEMENT_DIGEST\"; \
                  cat \"$LOOM_ENFORCEMENT_DIR/rules/no-deletes.txt\"";
    let worker = worker(&["/bin/sh", "-c", script]);
    let command = command();
    let execution = harness
        .run_with(&worker, &command, Some(&bundle), &BTreeMap::new())
        .await;
    assert_eq!(execution.outcome, Outcome::Succeeded, "{execution:?}");
    assert!(!execution.bundle_modified);

    let copy = harness.executor.run_dir(&command, 1).join("enforcement");
    assert_eq!(
        execution.stdout_tail,
        format!(
            "{}\n{}\nnever delete documents\n",
            copy.display(),
            bundle.digest
        )
    );
    let mode = |path: &str| fs::metadata(copy.join(path)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(""), 0o555);
    assert_eq!(mode("rules"), 0o555);
    assert_eq!(mode("rules/nested"), 0o555);
    assert_eq!(mode("limits.toml"), 0o444);
    assert_eq!(mode("rules/no-deletes.txt"), 0o444);
    assert_eq!(mode("bin/check.sh"), 0o555);
    assert_eq!(digest_of_dir(&copy).unwrap(), bundle.digest);
}

#[tokio::test]
async fn a_worker_that_modifies_its_bundle_is_caught() {
    let harness = Harness::new();
    let bundle = harness.bundle(FILES);
    let attacks = [
        "chmod u+w \"$LOOM_ENFORCEMENT_DIR/rules/no-deletes.txt\" && \
         echo 'deletes are fine' >> \"$LOOM_ENFORCEMENT_DIR/rules/no-deletes.txt\"",
        "chmod u+w \"$LOOM_ENFORCEMENT_DIR\" && touch \"$LOOM_ENFORCEMENT_DIR/planted\"",
        "chmod u+w \"$LOOM_ENFORCEMENT_DIR/rules\" && rm -f \"$LOOM_ENFORCEMENT_DIR/rules/no-deletes.txt\"",
        "chmod a+x \"$LOOM_ENFORCEMENT_DIR/limits.toml\"",
    ];
    for attack in attacks {
        let worker = worker(&["/bin/sh", "-c", attack]);
        let command = command();
        let execution = harness
            .run_with(&worker, &command, Some(&bundle), &BTreeMap::new())
            .await;
        assert_eq!(
            execution.outcome,
            Outcome::Succeeded,
            "{attack}: {execution:?}"
        );
        assert!(execution.bundle_modified, "not caught: {attack}");
        // The read-only run directory was still removed.
        assert!(!harness.executor.run_dir(&command, 1).exists(), "{attack}");
    }
    // The cached bundle itself is untouched.
    assert_eq!(digest_of_dir(&bundle.dir).unwrap(), bundle.digest);
}
