//! The environment of a worker process (DESIGN §6): built from nothing, so
//! that a run sees exactly what its registry entry and its run command
//! give it and nothing of the agent's own environment.
//!
//! Pure: this module decides the variables and the refusals; it does not
//! start anything.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::SecondsFormat;
use loom_config::Worker;
use loom_protocol::RunCommand;

use crate::bundle::LoadedBundle;

/// The variable naming the run's read-only copy of its enforcement bundle.
pub const ENFORCEMENT_DIR_VAR: &str = "LOOM_ENFORCEMENT_DIR";
/// The variable holding the digest of the run's enforcement bundle.
pub const ENFORCEMENT_DIGEST_VAR: &str = "LOOM_ENFORCEMENT_DIGEST";

/// Why a run is not started, for a reason that another attempt would not
/// change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The worker declares a secret the agent's environment does not have.
    #[error("secret {secret:?} of worker {worker:?} is not set in the agent's environment")]
    MissingSecret {
        /// The secret's variable name.
        secret: String,
        /// The worker.
        worker: String,
    },
    /// The enforcement bundle's `allowed_env` does not list a variable the
    /// worker would be given.
    #[error("enforcement bundle {bundle} does not allow variable {variable:?}")]
    VariableNotAllowed {
        /// The first hex digits of the bundle's digest.
        bundle: String,
        /// The variable.
        variable: String,
    },
    /// The worker's command has no program.
    #[error("worker {worker:?} has an empty command")]
    EmptyCommand {
        /// The worker.
        worker: String,
    },
    /// The program does not exist, is not executable or is not a program.
    #[error("cannot start {program:?} for worker {worker:?}: {detail}")]
    CannotStart {
        /// The program, as the registry names it.
        program: String,
        /// The worker.
        worker: String,
        /// The operating system's error.
        detail: String,
    },
}

/// What a worker's environment is built from besides the worker and the
/// run command.
#[derive(Debug, Clone, Copy)]
pub struct EnvironmentBase<'a> {
    /// `PATH`.
    pub path: &'a str,
    /// `LANG`.
    pub lang: &'a str,
    /// `HOME`: the run directory.
    pub home: &'a Path,
    /// The run's copy of its enforcement bundle and the bundle, if any.
    pub enforcement: Option<(&'a Path, &'a LoadedBundle)>,
}

/// `LOOM_PARAM_<NAME>`: the param name upper-cased, every character outside
/// `A-Z0-9` replaced by `_` (one `_` per character, so `ünïcode` becomes
/// `LOOM_PARAM__N_CODE`).
pub fn param_env_name(name: &str) -> String {
    let mut variable = String::with_capacity("LOOM_PARAM_".len() + name.len());
    variable.push_str("LOOM_PARAM_");
    variable.extend(name.chars().map(|c| {
        let upper = c.to_ascii_uppercase();
        if upper.is_ascii_uppercase() || upper.is_ascii_digit() {
            upper
        } else {
            '_'
        }
    }));
    variable
}

/// The complete environment of one attempt, or why it must not start.
///
/// Layers, later ones winning: `PATH`, `HOME`, `LANG`, `TZ`; the worker's
/// `env` (which may override `PATH`, `LANG` or `TZ`); its secrets, taken from
/// `secrets`; then the `LOOM_*` variables, which nothing overrides. Two
/// params that mangle to the same variable: the one whose name sorts last
/// wins.
pub fn build(
    base: EnvironmentBase<'_>,
    worker: &Worker,
    command: &RunCommand,
    attempt: u32,
    secrets: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, Refusal> {
    if let Some((_, bundle)) = base.enforcement {
        let limits = &bundle.limits;
        let given = worker.env.keys().chain(worker.secrets.iter());
        if let Some(variable) = given.into_iter().find(|name| !limits.allows_env(name)) {
            return Err(Refusal::VariableNotAllowed {
                bundle: bundle.short_digest().to_owned(),
                variable: variable.clone(),
            });
        }
    }

    let mut environment = BTreeMap::new();
    environment.insert("PATH".to_owned(), base.path.to_owned());
    environment.insert("HOME".to_owned(), base.home.display().to_string());
    environment.insert("LANG".to_owned(), base.lang.to_owned());
    environment.insert("TZ".to_owned(), worker.timezone.name().to_owned());
    environment.extend(worker.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    for secret in &worker.secrets {
        let Some(value) = secrets.get(secret) else {
            return Err(Refusal::MissingSecret {
                secret: secret.clone(),
                worker: worker.name.to_string(),
            });
        };
        environment.insert(secret.clone(), value.clone());
    }
    for (name, value) in &command.params {
        environment.insert(param_env_name(name), value.clone());
    }
    environment.insert("LOOM_RUN_ID".to_owned(), command.run_id.to_string());
    environment.insert("LOOM_WORKER".to_owned(), worker.name.to_string());
    environment.insert("LOOM_ATTEMPT".to_owned(), attempt.to_string());
    environment.insert(
        "LOOM_SCHEDULED_AT".to_owned(),
        command
            .scheduled_at
            .to_rfc3339_opts(SecondsFormat::AutoSi, true),
    );
    environment.insert(
        "LOOM_TRIGGER".to_owned(),
        command.trigger.as_str().to_owned(),
    );
    if let Some((dir, bundle)) = base.enforcement {
        environment.insert(ENFORCEMENT_DIR_VAR.to_owned(), dir.display().to_string());
        environment.insert(ENFORCEMENT_DIGEST_VAR.to_owned(), bundle.digest.clone());
    }
    Ok(environment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_names_are_mangled() {
        assert_eq!(param_env_name("days"), "LOOM_PARAM_DAYS");
        assert_eq!(param_env_name("dry-run"), "LOOM_PARAM_DRY_RUN");
        assert_eq!(param_env_name("ünïcode"), "LOOM_PARAM__N_CODE");
        assert_eq!(param_env_name("a.b c9"), "LOOM_PARAM_A_B_C9");
        assert_eq!(param_env_name(""), "LOOM_PARAM_");
    }

    #[test]
    fn refusal_messages_name_the_variable_and_worker() {
        let missing = Refusal::MissingSecret {
            secret: "HUBSPOT_TOKEN".to_owned(),
            worker: "w".to_owned(),
        };
        assert_eq!(
            missing.to_string(),
            "secret \"HUBSPOT_TOKEN\" of worker \"w\" is not set in the agent's environment"
        );
        let not_allowed = Refusal::VariableNotAllowed {
            bundle: "0123456789ab".to_owned(),
            variable: "X".to_owned(),
        };
        assert_eq!(
            not_allowed.to_string(),
            "enforcement bundle 0123456789ab does not allow variable \"X\""
        );
    }

    proptest::proptest! {
        #[test]
        fn mangled_names_are_valid_variable_names(name in ".*") {
            let variable = param_env_name(&name);
            proptest::prop_assert!(variable.starts_with("LOOM_PARAM_"));
            proptest::prop_assert!(variable
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
            proptest::prop_assert_eq!(variable.chars().count(), "LOOM_PARAM_".len() + name.chars().count());
        }
    }
}
