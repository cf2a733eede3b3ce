//! Repository hygiene: every Rust source file opens with a `//!` doc saying
//! what it owns (the crate and module map of ARCHITECTURE.md depends on it),
//! and the documents the README promises exist.

use std::path::{Path, PathBuf};

use loom_tests::repository;

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(
                name.as_ref(),
                "target" | ".git" | ".tools" | ".loom" | "examples"
            ) && !name.starts_with('.')
            {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&repository(), &mut files);
    assert!(files.len() > 20, "found only {} Rust files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            !text
                .lines()
                .find(|line| !line.trim().is_empty())
                .is_some_and(|line| line.starts_with("//!"))
        })
        .map(|file| {
            file.strip_prefix(repository())
                .unwrap_or(file)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` doc: {missing:?}"
    );
}

#[test]
fn every_crate_of_the_design_exists() {
    for crate_dir in [
        "protocol",
        "config",
        "broker",
        "scheduler",
        "agent",
        "workers",
        "validator",
        "klaxon",
        "cli",
        "testkit",
        "tests",
    ] {
        assert!(
            repository().join(crate_dir).join("Cargo.toml").is_file(),
            "missing crate {crate_dir}"
        );
    }
    for document in ["README.md", "ARCHITECTURE.md"] {
        assert!(repository().join(document).is_file(), "missing {document}");
    }
}
