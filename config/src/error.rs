//! Configuration errors: each one sentence that names the file, the worker
//! or workflow, and the field (or the environment variable) to fix.

use std::fmt;
use std::path::PathBuf;

use crate::plan::TaskPlanError;

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// An environment variable, by full name (`LOOM_AGENT__CONCURRENCY`).
    Env(String),
    /// A command-line flag or an override given in code.
    Override,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(file) => write!(f, "{}", file.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Override => f.write_str("command line"),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A file named in the configuration does not exist or cannot be read.
    #[error("{}: cannot read the file: {detail}", file.display())]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// The operating system's words.
        detail: String,
    },
    /// A file is not valid TOML.
    #[error("{}: {detail}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// Where and what, e.g. `line 3, column 1: duplicate key`.
        detail: String,
    },
    /// A setting outside the registry is wrong.
    #[error("{origin}: {key} {detail}")]
    Setting {
        /// Where the setting came from.
        origin: Origin,
        /// Dotted key, e.g. `agent.concurrency`.
        key: String,
        /// What is wrong, phrased to follow the key.
        detail: String,
    },
    /// A field of a worker is wrong.
    #[error("{}: worker {worker:?}: {field} {detail}", file.display())]
    Worker {
        /// The file the worker is defined in.
        file: PathBuf,
        /// The worker's name.
        worker: String,
        /// The field, dotted for nested ones (`backoff.initial`), or `name`.
        field: String,
        /// What is wrong, phrased to follow the field.
        detail: String,
    },
    /// Two definitions of the same worker.
    #[error(
        "{}: worker {worker:?} is defined twice (also in {})",
        second.display(),
        first.display()
    )]
    DuplicateWorker {
        /// The worker's name.
        worker: String,
        /// Where it was defined first.
        first: PathBuf,
        /// Where it was defined again.
        second: PathBuf,
    },
    /// A field of a workflow is wrong.
    #[error("{}: workflow {workflow:?}: {field} {detail}", file.display())]
    Workflow {
        /// The file the workflow is defined in.
        file: PathBuf,
        /// The workflow's name.
        workflow: String,
        /// The field, dotted for nested ones, or `name`.
        field: String,
        /// What is wrong, phrased to follow the field.
        detail: String,
    },
    /// A workflow's tasks cannot be planned: empty, a cycle, an unknown
    /// worker, a duplicate id, a missing dependency or a bad id.
    #[error("{}: workflow {workflow:?}: {problem}", file.display())]
    WorkflowTasks {
        /// The file the workflow is defined in.
        file: PathBuf,
        /// The workflow's name.
        workflow: String,
        /// What is wrong with the tasks.
        problem: TaskPlanError,
    },
    /// Two definitions of the same workflow.
    #[error(
        "{}: workflow {workflow:?} is defined twice (also in {})",
        second.display(),
        first.display()
    )]
    DuplicateWorkflow {
        /// The workflow's name.
        workflow: String,
        /// Where it was defined first.
        first: PathBuf,
        /// Where it was defined again.
        second: PathBuf,
    },
}

impl ConfigError {
    /// The worker an error is about, if any.
    pub fn worker(&self) -> Option<&str> {
        match self {
            ConfigError::Worker { worker, .. } | ConfigError::DuplicateWorker { worker, .. } => {
                Some(worker)
            }
            _ => None,
        }
    }

    /// The workflow an error is about, if any.
    pub fn workflow(&self) -> Option<&str> {
        match self {
            ConfigError::Workflow { workflow, .. }
            | ConfigError::WorkflowTasks { workflow, .. }
            | ConfigError::DuplicateWorkflow { workflow, .. } => Some(workflow),
            _ => None,
        }
    }

    /// The field or key an error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Worker { field, .. } | ConfigError::Workflow { field, .. } => Some(field),
            ConfigError::WorkflowTasks { .. } => Some("tasks"),
            ConfigError::Setting { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|candidate| {
            (
                edit_distance(&word, &candidate.to_ascii_lowercase()),
                candidate,
            )
        })
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_near_misses() {
        let zones = ["America/Chicago", "America/Chihuahua", "Europe/Berlin"];
        assert_eq!(closest("America/Chicgo", zones), Some("America/Chicago"));
        assert_eq!(closest("Mars/Olympus", zones), None);
        assert_eq!(
            closest("tmezone", ["timezone", "timeout"]),
            Some("timezone")
        );
    }
}
