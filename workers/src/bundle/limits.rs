//! The `limits.toml` of an enforcement bundle: what a run may consume.
//!
//! This module only parses and validates the file; applying the limits
//! (setrlimit in the child, the output cap in the executor) is the
//! executor's job.

use std::path::Path;

use serde::Deserialize;

use super::BundleError;

/// The name of the limits file at the root of a bundle.
pub const LIMITS_FILE: &str = "limits.toml";

/// Resource limits of an enforcement bundle (DESIGN §7). Every key is
/// optional; an absent key means "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPU seconds (RLIMIT_CPU): the process gets SIGXCPU past it and
    /// SIGKILL one second later.
    pub cpu_seconds: Option<u64>,
    /// Address space in bytes (RLIMIT_AS): allocations past it fail.
    pub memory_bytes: Option<u64>,
    /// Open file descriptors (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// Bytes written to stdout and stderr together; past it the executor
    /// terminates the run's process group.
    pub max_output_bytes: Option<u64>,
    /// When set, the only worker `env` keys and secrets a run may be given.
    pub allowed_env: Option<Vec<String>>,
}

impl Limits {
    /// Parses and validates the text of a `limits.toml`; `file` names it in
    /// errors.
    pub fn parse(text: &str, file: &Path) -> Result<Limits, BundleError> {
        let invalid = |detail: String| BundleError::Invalid {
            file: file.to_path_buf(),
            detail,
        };
        let limits: Limits =
            toml::from_str(text).map_err(|error| invalid(error.message().to_owned()))?;
        for (key, value) in [
            ("cpu_seconds", limits.cpu_seconds),
            ("memory_bytes", limits.memory_bytes),
            ("open_files", limits.open_files),
            ("max_output_bytes", limits.max_output_bytes),
        ] {
            if value == Some(0) {
                return Err(invalid(format!("{key} must be a positive number")));
            }
        }
        for name in limits.allowed_env.iter().flatten() {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(invalid(format!(
                    "allowed_env entry {name:?} is not an environment variable name"
                )));
            }
        }
        Ok(limits)
    }

    /// Reads the limits of the bundle at `dir`: its `limits.toml`, or no
    /// limits when the file is absent.
    pub fn load(dir: &Path) -> Result<Limits, BundleError> {
        let file = dir.join(LIMITS_FILE);
        match std::fs::read_to_string(&file) {
            Ok(text) => Limits::parse(&text, &file),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Limits::default()),
            Err(error) => Err(BundleError::Invalid {
                file,
                detail: format!("cannot be read: {error}"),
            }),
        }
    }

    /// Whether a worker may be given the variable `name`.
    pub fn allows_env(&self, name: &str) -> bool {
        match &self.allowed_env {
            Some(allowed) => allowed.iter().any(|allowed| allowed == name),
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Limits, BundleError> {
        Limits::parse(text, Path::new("bundle/limits.toml"))
    }

    #[test]
    fn every_key_parses() {
        let limits = parse(
            "cpu_seconds = 5\nmemory_bytes = 1048576\nopen_files = 64\n\
             max_output_bytes = 1000\nallowed_env = [\"REPORT_DIR\"]\n",
        )
        .unwrap();
        assert_eq!(limits.cpu_seconds, Some(5));
        assert_eq!(limits.memory_bytes, Some(1_048_576));
        assert_eq!(limits.open_files, Some(64));
        assert_eq!(limits.max_output_bytes, Some(1000));
        assert!(limits.allows_env("REPORT_DIR"));
        assert!(!limits.allows_env("OTHER"));
    }

    #[test]
    fn empty_file_means_no_limits() {
        let limits = parse("").unwrap();
        assert_eq!(limits, Limits::default());
        assert!(limits.allows_env("ANYTHING"));
    }

    #[test]
    fn unknown_key_is_refused() {
        let error = parse("cpu_secs = 5\n").unwrap_err();
        assert!(matches!(error, BundleError::Invalid { .. }), "{error}");
        assert!(error.to_string().contains("bundle/limits.toml"), "{error}");
        assert!(error.to_string().contains("cpu_secs"), "{error}");
    }

    #[test]
    fn zero_and_negative_numbers_are_refused() {
        let error = parse("memory_bytes = 0\n").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("memory_bytes must be a positive number"),
            "{error}"
        );
        assert!(matches!(
            parse("open_files = -1\n"),
            Err(BundleError::Invalid { .. })
        ));
        assert!(matches!(
            parse("cpu_seconds = \"5\"\n"),
            Err(BundleError::Invalid { .. })
        ));
    }

    #[test]
    fn bad_allowed_env_entry_is_refused() {
        assert!(matches!(
            parse("allowed_env = [\"A=B\"]\n"),
            Err(BundleError::Invalid { .. })
        ));
        assert!(matches!(
            parse("allowed_env = [\"\"]\n"),
            Err(BundleError::Invalid { .. })
        ));
    }
}
