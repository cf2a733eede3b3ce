//! Loading: `loom.toml`, then `LOOM_*` environment variables, then overrides
//! (command-line flags), merged by figment; then the registry file; then
//! validation.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Error as FigmentError, Figment, Metadata, Profile, Provider};
use serde::Serialize;

use crate::error::{ConfigError, Origin};
use crate::raw::{RawConfig, RawRegistry};
use crate::settings::Config;
use crate::validate::{Sources, validate};

/// Registries of at least this many workers are copied out of the loading
/// thread's memory (smaller ones are not worth the copy).
const COMPACT_FROM: usize = 1_000;

/// The prefix of the environment variables that override `loom.toml`.
pub const ENV_PREFIX: &str = "LOOM_";

/// `LOOM_*` variables that are not configuration keys: the config path, the
/// log filter, the test harness's server path, and the variables the agent
/// sets for worker processes (a `loom` command run from inside a worker must
/// not mistake them for settings).
const NOT_SETTINGS: &[&str] = &[
    "CONFIG",
    "LOG",
    "NATS_SERVER",
    "RUN_ID",
    "WORKER",
    "ATTEMPT",
    "SCHEDULED_AT",
    "TRIGGER",
    "ENFORCEMENT_DIR",
    "ENFORCEMENT_DIGEST",
];
const NOT_SETTINGS_PREFIXES: &[&str] = &["PARAM_"];

const ENV_PROVIDER_NAME: &str = "LOOM_ environment variables";
const OVERRIDE_PROVIDER_NAME: &str = "command-line overrides";

/// Builds a [`Config`] from a file, the environment and overrides.
#[derive(Debug, Clone, Default)]
pub struct Loader {
    file: Option<PathBuf>,
    env: Option<Vec<(String, String)>>,
    overrides: Vec<(String, Value)>,
}

impl Loader {
    /// A loader reading `file` (if any) and the process environment.
    pub fn new(file: Option<PathBuf>) -> Self {
        Loader {
            file,
            env: None,
            overrides: Vec::new(),
        }
    }

    /// Reads these variables instead of the process environment.
    pub fn with_env<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.env = Some(
            vars.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// Sets a dotted key (e.g. `agent.concurrency`) above file and environment,
    /// as a command-line flag does.
    pub fn with_override(mut self, key: &str, value: impl Serialize) -> Self {
        let value = Value::serialize(value).unwrap_or_else(|_| Value::from(String::new()));
        self.overrides.push((key.to_owned(), value));
        self
    }

    /// Loads and validates.
    ///
    /// Parsing a large registry makes several times its final size in
    /// short-lived memory. It runs on a thread of its own, so that memory
    /// sits in that thread's allocator arena and is released whole when the
    /// thread ends; a large registry is then copied into the caller's memory,
    /// compact. (Parsed in place, the workers would sit scattered among the
    /// freed memory and keep all of it resident: 100,000 workers held about
    /// 360 MB instead of about 70 MB.)
    pub fn load(&self) -> Result<Config, ConfigError> {
        let loaded = std::thread::scope(|scope| {
            scope
                .spawn(|| self.load_here())
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        });
        let mut config = loaded?;
        if config.registry.len() >= COMPACT_FROM {
            config.registry = config.registry.compacted();
        }
        Ok(config)
    }

    fn load_here(&self) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = &self.file {
            check_readable(file)?;
            figment = figment.merge(Toml::file_exact(file));
        }
        let vars = match &self.env {
            Some(vars) => vars.clone(),
            None => std::env::vars().collect(),
        };
        figment = figment.merge(EnvProvider::from_vars(vars));
        figment = figment.merge(OverrideProvider(self.overrides.clone()));

        let raw: RawConfig = figment
            .extract()
            .map_err(|error| convert(error, self.file.as_deref()))?;

        let base_dir = match &self.file {
            Some(file) => file.parent().map(Path::to_path_buf).unwrap_or_default(),
            None => PathBuf::new(),
        };
        let registry = match &raw.registry {
            Some(path) => {
                let file = absolute(&path.relative());
                check_readable(&file)?;
                let registry: RawRegistry = Figment::from(Toml::file_exact(&file))
                    .extract()
                    .map_err(|error| convert(error, Some(&file)))?;
                Some((file, registry))
            }
            None => None,
        };
        let sources = Sources {
            figment: &figment,
            file: self.file.clone(),
            base_dir: absolute(&base_dir),
        };
        validate(raw, registry, &sources)
    }
}

/// Loads `file` (or no file) with the process environment.
pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
    Loader::new(file.map(Path::to_path_buf)).load()
}

/// `path` made absolute against the current directory (not resolved: it may
/// not exist yet).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match std::env::current_dir() {
        Ok(dir) => dir.join(path),
        Err(_) => path.to_path_buf(),
    }
}

fn check_readable(file: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(file)
        .and_then(|meta| {
            if meta.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("it is not a regular file"))
            }
        })
        .map_err(|error| ConfigError::Unreadable {
            file: file.to_path_buf(),
            detail: match error.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_owned(),
                _ => error.to_string(),
            },
        })
}

/// Where a setting came from, from figment's metadata.
pub(crate) fn origin_of(metadata: Option<&Metadata>, path: &[String]) -> Origin {
    let Some(metadata) = metadata else {
        return Origin::Override;
    };
    if metadata.name == ENV_PROVIDER_NAME {
        return Origin::Env(env_var_name(path));
    }
    if metadata.name == OVERRIDE_PROVIDER_NAME {
        return Origin::Override;
    }
    match &metadata.source {
        Some(figment::Source::File(file)) => Origin::File(file.clone()),
        _ => Origin::Override,
    }
}

fn env_var_name(path: &[String]) -> String {
    format!("{ENV_PREFIX}{}", path.join("__").to_ascii_uppercase())
}

/// Turns figment's error into one of ours, naming file, worker (or
/// workflow) and field.
fn convert(error: FigmentError, file: Option<&Path>) -> ConfigError {
    use figment::error::Kind;
    let origin = origin_of(error.metadata.as_ref(), &error.path);
    let file_of_origin = match &origin {
        Origin::File(file) => file.clone(),
        _ => file.map(Path::to_path_buf).unwrap_or_default(),
    };
    let path = error.path.clone();
    let detail = match &error.kind {
        Kind::Message(message) if path.is_empty() => {
            return syntax_error(file_of_origin, message);
        }
        Kind::UnknownField(field, expected) => {
            let hint = crate::error::closest(field, expected.iter().copied())
                .map(|near| format!("; did you mean `{near}`?"))
                .unwrap_or_else(|| format!("; expected one of {}", list(expected)));
            return keyed(origin, &path, &format!("is not a known field{hint}"));
        }
        Kind::UnknownVariant(found, expected) => {
            format!("{found:?} is not one of {}", list(expected))
        }
        Kind::MissingField(field) => {
            let mut path = path.clone();
            path.push(field.to_string());
            return keyed(origin, &path, "is required");
        }
        Kind::InvalidType(actual, expected) => format!("must be {expected}, not {actual}"),
        Kind::InvalidValue(actual, expected) => format!("must be {expected}, not {actual}"),
        other => other.to_string(),
    };
    keyed(origin, &path, &detail)
}

fn keyed(origin: Origin, path: &[String], detail: &str) -> ConfigError {
    if let [first, worker, field @ ..] = path
        && first == "workers"
        && let Origin::File(file) = &origin
    {
        return ConfigError::Worker {
            file: file.clone(),
            worker: worker.clone(),
            field: if field.is_empty() {
                "definition".to_owned()
            } else {
                field.join(".")
            },
            detail: detail.to_owned(),
        };
    }
    if let [first, workflow, field @ ..] = path
        && first == "workflows"
        && let Origin::File(file) = &origin
    {
        return ConfigError::Workflow {
            file: file.clone(),
            workflow: workflow.clone(),
            field: if field.is_empty() {
                "definition".to_owned()
            } else {
                field.join(".")
            },
            detail: detail.to_owned(),
        };
    }
    ConfigError::Setting {
        origin,
        key: path.join("."),
        detail: detail.to_owned(),
    }
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|item| format!("`{item}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A TOML parse error as one sentence: `line 3, column 1: duplicate key ...`.
fn syntax_error(file: PathBuf, message: &str) -> ConfigError {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let position = first.strip_prefix("TOML parse error at ").unwrap_or(first);
    let reasons: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('|') && !line.contains(" | "))
        .skip(1)
        .filter(|line| {
            !line
                .chars()
                .all(|c| c.is_ascii_digit() || c == '|' || c == ' ')
        })
        .collect();
    // A worker (or workflow) table written twice is the duplicate-worker
    // (or duplicate-workflow) error.
    if let Some(duplicate) = reasons.iter().find_map(|reason| {
        reason
            .strip_prefix("duplicate key `")
            .and_then(|rest| rest.strip_suffix("` in table `workers`"))
    }) {
        return ConfigError::DuplicateWorker {
            worker: duplicate.to_owned(),
            first: file.clone(),
            second: file,
        };
    }
    if let Some(duplicate) = reasons.iter().find_map(|reason| {
        reason
            .strip_prefix("duplicate key `")
            .and_then(|rest| rest.strip_suffix("` in table `workflows`"))
    }) {
        return ConfigError::DuplicateWorkflow {
            workflow: duplicate.to_owned(),
            first: file.clone(),
            second: file,
        };
    }
    let reason = reasons.last().copied().unwrap_or("invalid TOML");
    ConfigError::Syntax {
        file,
        detail: format!("invalid TOML at {position}: {reason}"),
    }
}

/// `LOOM_*` variables as a figment provider: `LOOM_AGENT__CONCURRENCY=4`
/// sets `agent.concurrency`. Values are read like figment's own `Env`
/// (`4` is a number, `[a, b]` a list).
struct EnvProvider {
    dict: Dict,
}

impl EnvProvider {
    fn from_vars(vars: Vec<(String, String)>) -> Self {
        let mut dict = Dict::new();
        for (name, text) in vars {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if NOT_SETTINGS.contains(&key)
                || NOT_SETTINGS_PREFIXES.iter().any(|p| key.starts_with(p))
                || key.is_empty()
            {
                continue;
            }
            let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            let value: Value = text.parse().unwrap_or_else(|_| Value::from(text.clone()));
            insert(&mut dict, &path, value);
        }
        EnvProvider { dict }
    }
}

impl Provider for EnvProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_PROVIDER_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, FigmentError> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Overrides given in code (command-line flags).
struct OverrideProvider(Vec<(String, Value)>);

impl Provider for OverrideProvider {
    fn metadata(&self) -> Metadata {
        Metadata::named(OVERRIDE_PROVIDER_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, FigmentError> {
        let mut dict = Dict::new();
        for (key, value) in &self.0 {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            insert(&mut dict, &path, value.clone());
        }
        Ok(Profile::Default.collect(dict))
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}
