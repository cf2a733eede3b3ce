//! Stage two of loading: raw values become typed, checked settings, and
//! every problem becomes one [`ConfigError`] naming where to fix it.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use loom_protocol::subjects::{DEFAULT_PREFIX, validate_token};

use crate::error::{ConfigError, closest};
use crate::load::{absolute, origin_of};
use crate::raw::{
    DurationText, OneOrMany, RawConfig, RawRegistry, RawSink, RawWorker, RawWorkflow,
};
use crate::schedule::{DstGap, DstRepeat, Schedule};
use crate::settings::*;

/// Defaults, in one place; the field docs in [`crate::raw`] repeat them.
pub mod defaults {
    use std::time::Duration;

    /// `http.listen`.
    pub const HTTP_LISTEN: &str = "127.0.0.1:9810";
    /// `data_dir`, relative to the config file.
    pub const DATA_DIR: &str = ".loom";
    /// `streams.replicas`.
    pub const REPLICAS: u32 = 1;
    /// `streams.runs_max_age`.
    pub const RUNS_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
    /// `streams.history`.
    pub const HISTORY: Duration = Duration::from_secs(14 * 86_400);
    /// `streams.dead_letter_max_age`.
    pub const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
    /// `streams.duplicate_window`.
    pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
    /// `scheduler.lease_ttl`.
    pub const LEASE_TTL: Duration = Duration::from_secs(5);
    /// `agent.ack_wait`.
    pub const ACK_WAIT: Duration = Duration::from_secs(30);
    /// `agent.drain_timeout`.
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
    /// `validator.slack`.
    pub const SLACK: Duration = Duration::from_secs(60);
    /// `klaxon.repeat_interval`.
    pub const REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);
    /// A worker's `timeout`.
    pub const TIMEOUT: Duration = Duration::from_secs(3600);
    /// A worker's `retries`.
    pub const RETRIES: u32 = 2;
    /// A worker's `backoff.initial`.
    pub const BACKOFF_INITIAL: Duration = Duration::from_secs(30);
    /// A worker's `backoff.max`.
    pub const BACKOFF_MAX: Duration = Duration::from_secs(1800);
    /// A worker's `backoff.factor`.
    pub const BACKOFF_FACTOR: f64 = 2.0;
    /// A worker's `backoff.jitter`.
    pub const BACKOFF_JITTER: f64 = 0.2;
    /// A worker's `starting_deadline`.
    pub const STARTING_DEADLINE: Duration = Duration::from_secs(3600);
    /// A worker's `output.max_bytes`.
    pub const OUTPUT_MAX_BYTES: u64 = 1 << 20;
    /// A workflow's `max_rounds`.
    pub const MAX_ROUNDS: u32 = 5;
    /// A workflow's `task_retries`.
    pub const TASK_RETRIES: u32 = 1;
}

/// The most retries a worker may ask for (and the most `task_retries` a
/// workflow may).
pub const MAX_RETRIES: u32 = 100;

/// What validation needs to know about where values came from.
pub(crate) struct Sources<'a> {
    /// The merged providers, to find which one set a key.
    pub figment: &'a Figment,
    /// The config file, if any.
    pub file: Option<PathBuf>,
    /// The config file's directory (absolute), base of relative paths.
    pub base_dir: PathBuf,
}

impl Sources<'_> {
    fn setting(&self, key: &str, detail: impl Into<String>) -> ConfigError {
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        ConfigError::Setting {
            origin: origin_of(self.figment.find_metadata(key), &path),
            key: key.to_owned(),
            detail: detail.into(),
        }
    }

    fn duration(
        &self,
        key: &str,
        value: &Option<DurationText>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(text) => parse_duration(text).map_err(|detail| self.setting(key, detail)),
        }
    }

    fn positive_duration(
        &self,
        key: &str,
        value: &Option<DurationText>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let duration = self.duration(key, value, default)?;
        if duration.is_zero() {
            return Err(self.setting(key, "must be more than zero"));
        }
        Ok(duration)
    }
}

/// Parses `"30s"`, `"1h30m"`, `"7d"`; refuses negative values with a clear word.
pub fn parse_duration(text: &DurationText) -> Result<Duration, String> {
    let written = text.0.trim();
    if written.starts_with('-') {
        return Err(format!("{written:?} must not be negative"));
    }
    humantime::parse_duration(written).map_err(|_| {
        format!("{written:?} is not a duration (write e.g. \"30s\", \"10m\", \"1h30m\", \"7d\")")
    })
}

/// Turns the raw configuration (and registry file) into a [`Config`].
pub(crate) fn validate(
    raw: RawConfig,
    registry_file: Option<(PathBuf, RawRegistry)>,
    sources: &Sources<'_>,
) -> Result<Config, ConfigError> {
    let prefix = raw
        .prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_PREFIX.to_owned());
    validate_token(&prefix).map_err(|e| sources.setting("prefix", format!("{prefix:?} {e}")))?;

    let nats = nats(&raw, sources)?;
    let listen_text = raw
        .http
        .listen
        .clone()
        .unwrap_or_else(|| defaults::HTTP_LISTEN.to_owned());
    let http = HttpSettings {
        listen: socket_address(&listen_text).ok_or_else(|| {
            sources.setting(
                "http.listen",
                format!("{listen_text:?} is not an address and port (e.g. \"127.0.0.1:9810\")"),
            )
        })?,
    };
    let data_dir = match &raw.data_dir {
        Some(dir) => absolute(&dir.relative()),
        None => sources.base_dir.join(defaults::DATA_DIR),
    };

    let replicas = raw.streams.replicas.unwrap_or(defaults::REPLICAS);
    if !(1..=5).contains(&replicas) {
        return Err(sources.setting(
            "streams.replicas",
            format!("{replicas} must be between 1 and 5"),
        ));
    }
    let scheduler = SchedulerSettings {
        lease_ttl: sources.positive_duration(
            "scheduler.lease_ttl",
            &raw.scheduler.lease_ttl,
            defaults::LEASE_TTL,
        )?,
    };
    if scheduler.lease_ttl < Duration::from_secs(1) {
        return Err(sources.setting("scheduler.lease_ttl", "must be at least 1s"));
    }
    let streams = StreamSettings {
        replicas: replicas as usize,
        runs_max_age: sources.positive_duration(
            "streams.runs_max_age",
            &raw.streams.runs_max_age,
            defaults::RUNS_MAX_AGE,
        )?,
        history: sources.positive_duration(
            "streams.history",
            &raw.streams.history,
            defaults::HISTORY,
        )?,
        dead_letter_max_age: sources.positive_duration(
            "streams.dead_letter_max_age",
            &raw.streams.dead_letter_max_age,
            defaults::DEAD_LETTER_MAX_AGE,
        )?,
        duplicate_window: sources.positive_duration(
            "streams.duplicate_window",
            &raw.streams.duplicate_window,
            defaults::DUPLICATE_WINDOW,
        )?,
    };
    if streams.duplicate_window < scheduler.lease_ttl * 2 {
        return Err(sources.setting(
            "streams.duplicate_window",
            format!(
                "({}) must be at least twice scheduler.lease_ttl ({}) to cover a leader failover",
                humantime::format_duration(streams.duplicate_window),
                humantime::format_duration(scheduler.lease_ttl)
            ),
        ));
    }

    let enforcement = EnforcementSettings {
        dir: raw
            .enforcement
            .dir
            .as_ref()
            .map(|dir| absolute(&dir.relative())),
    };

    // The registry: inline workers and workflows (from loom.toml) and the
    // registry file.
    let mut raw_workers: Vec<(Arc<Path>, String, RawWorker)> = Vec::new();
    let mut raw_workflows: Vec<(PathBuf, String, RawWorkflow)> = Vec::new();
    let config_file = sources
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("loom.toml"));
    let shared_config_file: Arc<Path> = Arc::from(config_file.as_path());
    for (name, worker) in raw.workers {
        raw_workers.push((shared_config_file.clone(), name, worker));
    }
    for (name, workflow) in raw.workflows {
        raw_workflows.push((config_file.clone(), name, workflow));
    }
    let registry_path = registry_file.as_ref().map(|(file, _)| file.clone());
    if let Some((file, registry)) = registry_file {
        let shared_file: Arc<Path> = Arc::from(file.as_path());
        for (name, worker) in registry.workers {
            raw_workers.push((shared_file.clone(), name, worker));
        }
        for (name, workflow) in registry.workflows {
            raw_workflows.push((file.clone(), name, workflow));
        }
    }
    let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
    for (file, name, raw_worker) in raw_workers {
        if let Some(existing) = workers.get(&name) {
            return Err(ConfigError::DuplicateWorker {
                worker: name,
                first: existing.source.to_path_buf(),
                second: file.to_path_buf(),
            });
        }
        let worker = worker(&file, &name, raw_worker, &enforcement)?;
        workers.insert(name, worker);
    }
    // Workflows name workers, so they are checked once every worker is known.
    let mut workflows: BTreeMap<String, Workflow> = BTreeMap::new();
    for (file, name, raw_workflow) in raw_workflows {
        if let Some(existing) = workflows.get(&name) {
            return Err(ConfigError::DuplicateWorkflow {
                workflow: name,
                first: existing.source.clone(),
                second: file,
            });
        }
        let workflow = workflow(&file, &name, raw_workflow, &workers)?;
        workflows.insert(name, workflow);
    }
    let registry = Registry::new(registry_path, workers.into_values()).with_workflows(workflows);

    let agent = agent(&raw.agent, &registry, sources)?;
    let validator = ValidatorSettings {
        slack: sources.duration("validator.slack", &raw.validator.slack, defaults::SLACK)?,
    };
    let klaxon = klaxon(&raw.klaxon, sources)?;

    Ok(Config {
        file: sources.file.clone(),
        prefix,
        nats,
        http,
        data_dir,
        streams,
        scheduler,
        agent,
        validator,
        klaxon,
        enforcement,
        registry,
    })
}

fn socket_address(text: &str) -> Option<SocketAddr> {
    if let Ok(address) = SocketAddr::from_str(text) {
        return Some(address);
    }
    // Host names such as `localhost:9810`: the first address they resolve to.
    text.to_socket_addrs().ok()?.next()
}

fn nats(raw: &RawConfig, sources: &Sources<'_>) -> Result<NatsSettings, ConfigError> {
    let urls = match &raw.nats.url {
        None => Vec::new(),
        Some(OneOrMany::One(url)) => vec![url.clone()],
        Some(OneOrMany::Many(urls)) => urls.clone(),
    };
    for url in &urls {
        if url.trim().is_empty() || url.contains(char::is_whitespace) {
            return Err(sources.setting(
                "nats.url",
                format!("{url:?} is not a server URL (e.g. \"nats://127.0.0.1:4222\")"),
            ));
        }
    }
    let nats = &raw.nats;
    let mut chosen: Vec<&str> = Vec::new();
    if nats.creds.is_some() {
        chosen.push("nats.creds");
    }
    if nats.nkey.is_some() {
        chosen.push("nats.nkey");
    }
    if nats.token.is_some() {
        chosen.push("nats.token");
    }
    if nats.user.is_some() || nats.password.is_some() {
        chosen.push("nats.user");
    }
    if chosen.len() > 1 {
        return Err(sources.setting(
            chosen[1],
            format!(
                "cannot be combined with {}; choose one way to authenticate",
                chosen[0]
            ),
        ));
    }
    let auth = if let Some(creds) = &nats.creds {
        NatsAuth::CredentialsFile(absolute(&creds.relative()))
    } else if let Some(nkey) = &nats.nkey {
        let seed = if nkey.starts_with("SU") {
            nkey.clone()
        } else {
            let file = absolute(&sources.base_dir.join(nkey));
            std::fs::read_to_string(&file)
                .map_err(|e| {
                    sources.setting(
                        "nats.nkey",
                        format!("{}: cannot read the seed file: {e}", file.display()),
                    )
                })?
                .trim()
                .to_owned()
        };
        NatsAuth::NKey(seed)
    } else if let Some(token) = &nats.token {
        NatsAuth::Token(token.clone())
    } else {
        match (&nats.user, &nats.password) {
            (Some(user), Some(password)) => NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            },
            (Some(_), None) => return Err(sources.setting("nats.user", "needs nats.password too")),
            (None, Some(_)) => return Err(sources.setting("nats.password", "needs nats.user too")),
            (None, None) => NatsAuth::None,
        }
    };
    let tls = &nats.tls;
    let client = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some((absolute(&cert.relative()), absolute(&key.relative()))),
        (Some(_), None) => return Err(sources.setting("nats.tls.cert", "needs nats.tls.key too")),
        (None, Some(_)) => return Err(sources.setting("nats.tls.key", "needs nats.tls.cert too")),
        (None, None) => None,
    };
    let ca = tls.ca.as_ref().map(|ca| absolute(&ca.relative()));
    let tls = (ca.is_some() || client.is_some()).then_some(TlsSettings { ca, client });
    Ok(NatsSettings { urls, auth, tls })
}

fn agent(
    raw: &crate::raw::RawAgent,
    registry: &Registry,
    sources: &Sources<'_>,
) -> Result<AgentSettings, ConfigError> {
    for label in &raw.labels {
        validate_token(label)
            .map_err(|e| sources.setting("agent.labels", format!("label {label:?} {e}")))?;
    }
    for name in &raw.workers {
        if registry.get(name).is_none() {
            let hint = closest(name, registry.workers().map(|w| &*w.name))
                .map(|near| format!("; did you mean {near:?}?"))
                .unwrap_or_default();
            return Err(sources.setting(
                "agent.workers",
                format!("names {name:?}, which is not in the registry{hint}"),
            ));
        }
    }
    let concurrency = match raw.concurrency {
        None => std::thread::available_parallelism()
            .ok()
            .and_then(|n| NonZeroU32::new(u32::try_from(n.get()).unwrap_or(1)))
            .unwrap_or(NonZeroU32::MIN),
        Some(n) => NonZeroU32::new(n)
            .ok_or_else(|| sources.setting("agent.concurrency", "must be at least 1"))?,
    };
    Ok(AgentSettings {
        id: raw.id.clone(),
        labels: raw.labels.clone(),
        workers: raw.workers.clone(),
        concurrency,
        ack_wait: sources.positive_duration("agent.ack_wait", &raw.ack_wait, defaults::ACK_WAIT)?,
        drain_timeout: sources.duration(
            "agent.drain_timeout",
            &raw.drain_timeout,
            defaults::DRAIN_TIMEOUT,
        )?,
    })
}

fn klaxon(
    raw: &crate::raw::RawKlaxon,
    sources: &Sources<'_>,
) -> Result<KlaxonSettings, ConfigError> {
    let http_url = |url: &str| -> Result<String, ConfigError> {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url.to_owned())
        } else {
            Err(sources.setting(
                "klaxon.sinks",
                format!("url {url:?} must start with http:// or https://"),
            ))
        }
    };
    let sinks = match &raw.sinks {
        None => vec![Sink::Log],
        Some(sinks) => sinks
            .iter()
            .map(|sink| {
                Ok(match sink {
                    RawSink::Log => Sink::Log,
                    RawSink::Webhook { url, secret } => Sink::Webhook {
                        url: http_url(url)?,
                        secret: secret.clone(),
                    },
                    RawSink::Alertmanager { url } => Sink::Alertmanager {
                        url: http_url(url)?,
                    },
                })
            })
            .collect::<Result<_, ConfigError>>()?,
    };
    Ok(KlaxonSettings {
        sinks,
        repeat_interval: sources.positive_duration(
            "klaxon.repeat_interval",
            &raw.repeat_interval,
            defaults::REPEAT_INTERVAL,
        )?,
    })
}

/// Checks one worker definition from `file`.
fn worker(
    file: &Arc<Path>,
    name: &str,
    raw: RawWorker,
    enforcement: &EnforcementSettings,
) -> Result<Worker, ConfigError> {
    let fail = |field: &str, detail: String| ConfigError::Worker {
        file: file.to_path_buf(),
        worker: name.to_owned(),
        field: field.to_owned(),
        detail,
    };
    let duration = |field: &str, value: &Option<DurationText>, default: Duration| match value {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|detail| fail(field, detail)),
    };
    validate_token(name)
        .map_err(|e| fail("name", format!("{name:?} {e} (it is a subject token)")))?;
    let registry_dir = file.parent().map(Path::to_path_buf).unwrap_or_default();

    let timezone = timezone(raw.timezone.as_deref()).map_err(|detail| fail("timezone", detail))?;
    let schedule = schedule(
        raw.schedule.as_deref(),
        timezone,
        raw.dst_gap,
        raw.dst_repeat,
        duration("jitter", &raw.jitter, Duration::ZERO)?,
        name,
    )
    .map_err(|detail| fail("schedule", detail))?;

    let Some(program) = raw.command.first() else {
        return Err(fail("command", "is empty; give the program and its arguments, e.g. [\"bin/report.sh\", \"--days\", \"7\"]".to_owned()));
    };
    if program.trim().is_empty() {
        return Err(fail(
            "command",
            "starts with an empty program name".to_owned(),
        ));
    }
    let mut command = raw.command.clone();
    if program.contains('/') && Path::new(program).is_relative() {
        command[0] = absolute(&registry_dir.join(program)).display().to_string();
    }

    let timeout = duration("timeout", &raw.timeout, defaults::TIMEOUT)?;
    if timeout.is_zero() {
        return Err(fail("timeout", "must be more than zero".to_owned()));
    }
    let retries = raw.retries.unwrap_or(defaults::RETRIES);
    if retries > MAX_RETRIES {
        return Err(fail(
            "retries",
            format!("{retries} is more than the most allowed, {MAX_RETRIES}"),
        ));
    }

    let raw_backoff = raw.backoff.unwrap_or_default();
    let backoff = Backoff {
        initial: duration(
            "backoff.initial",
            &raw_backoff.initial,
            defaults::BACKOFF_INITIAL,
        )?,
        max: duration("backoff.max", &raw_backoff.max, defaults::BACKOFF_MAX)?,
        factor: raw_backoff.factor.unwrap_or(defaults::BACKOFF_FACTOR),
        jitter: raw_backoff.jitter.unwrap_or(defaults::BACKOFF_JITTER),
    };
    if backoff.max < backoff.initial {
        return Err(fail(
            "backoff.max",
            format!(
                "({}) is shorter than backoff.initial ({})",
                humantime::format_duration(backoff.max),
                humantime::format_duration(backoff.initial)
            ),
        ));
    }
    if !(backoff.factor.is_finite() && backoff.factor >= 1.0) {
        return Err(fail(
            "backoff.factor",
            format!("{} must be 1.0 or more", backoff.factor),
        ));
    }
    if !(0.0..=1.0).contains(&backoff.jitter) {
        return Err(fail(
            "backoff.jitter",
            format!("{} must be between 0.0 and 1.0", backoff.jitter),
        ));
    }

    let overlap = raw.overlap.unwrap_or_default();
    let concurrency = match raw.concurrency {
        None => NonZeroU32::MIN,
        Some(n) => NonZeroU32::new(n)
            .ok_or_else(|| fail("concurrency", "must be at least 1".to_owned()))?,
    };
    if concurrency.get() > 1 && overlap != Overlap::Allow {
        return Err(fail(
            "concurrency",
            format!(
                "{concurrency} needs overlap = \"allow\"; other overlap policies run one at a time"
            ),
        ));
    }

    for label in &raw.labels {
        validate_token(label).map_err(|e| fail("labels", format!("label {label:?} {e}")))?;
    }
    for variable in raw.env.keys() {
        check_variable_name(variable).map_err(|detail| fail("env", detail))?;
    }
    for variable in &raw.secrets {
        check_variable_name(variable).map_err(|detail| fail("secrets", detail))?;
    }

    if let Some(bundle) = &raw.enforcement {
        validate_token(bundle).map_err(|e| fail("enforcement", format!("{bundle:?} {e}")))?;
        match &enforcement.dir {
            None => {
                return Err(fail(
                    "enforcement",
                    format!(
                        "{bundle:?} names a bundle, but enforcement.dir is not set in loom.toml"
                    ),
                ));
            }
            Some(dir) if !dir.join(bundle).is_dir() => {
                return Err(fail(
                    "enforcement",
                    format!(
                        "{bundle:?} has no bundle directory at {}",
                        dir.join(bundle).display()
                    ),
                ));
            }
            Some(_) => {}
        }
    }

    let raw_output = raw.output.unwrap_or_default();
    let format = raw_output.format.unwrap_or_default();
    let max_bytes = raw_output.max_bytes.unwrap_or(defaults::OUTPUT_MAX_BYTES);
    if max_bytes == 0 {
        return Err(fail("output.max_bytes", "must be at least 1".to_owned()));
    }
    let schema = match &raw_output.schema {
        None => None,
        Some(_) if format != OutputFormat::Json => {
            return Err(fail(
                "output.schema",
                "applies only with output.format = \"json\"".to_owned(),
            ));
        }
        Some(path) => {
            let schema = absolute(&registry_dir.join(path));
            if !schema.is_file() {
                return Err(fail(
                    "output.schema",
                    format!("{path:?} does not exist (looked at {})", schema.display()),
                ));
            }
            Some(schema)
        }
    };

    Ok(Worker {
        name: Arc::from(name),
        source: file.clone(),
        description: raw.description,
        schedule,
        timezone,
        command,
        enabled: raw.enabled.unwrap_or(true),
        timeout,
        retries,
        backoff,
        overlap,
        concurrency,
        catch_up: raw.catch_up.unwrap_or_default(),
        starting_deadline: duration(
            "starting_deadline",
            &raw.starting_deadline,
            defaults::STARTING_DEADLINE,
        )?,
        labels: raw.labels,
        env: raw.env,
        secrets: raw.secrets,
        enforcement: raw.enforcement,
        alert_after: NonZeroU32::new(raw.alert_after.unwrap_or(1))
            .ok_or_else(|| fail("alert_after", "must be at least 1".to_owned()))?,
        output: OutputContract {
            format,
            max_bytes,
            schema,
        },
    })
}

/// Checks one workflow definition from `file`, against the registry's workers.
fn workflow(
    file: &Path,
    name: &str,
    raw: RawWorkflow,
    workers: &BTreeMap<String, Worker>,
) -> Result<Workflow, ConfigError> {
    let fail = |field: &str, detail: String| ConfigError::Workflow {
        file: file.to_path_buf(),
        workflow: name.to_owned(),
        field: field.to_owned(),
        detail,
    };
    validate_token(name)
        .map_err(|e| fail("name", format!("{name:?} {e} (it is a subject token)")))?;

    let timezone = timezone(raw.timezone.as_deref()).map_err(|detail| fail("timezone", detail))?;
    let jitter = match &raw.jitter {
        None => Duration::ZERO,
        Some(text) => parse_duration(text).map_err(|detail| fail("jitter", detail))?,
    };
    let schedule = schedule(
        raw.schedule.as_deref(),
        timezone,
        raw.dst_gap,
        raw.dst_repeat,
        jitter,
        name,
    )
    .map_err(|detail| fail("schedule", detail))?;

    let tasks: Vec<WorkflowTask> = raw
        .tasks
        .into_iter()
        .map(|task| WorkflowTask {
            id: task.id,
            worker: task.worker,
            depends_on: task.depends_on,
            params: task.params,
        })
        .collect();
    let levels = plan_levels(&tasks, |worker| workers.contains_key(worker)).map_err(|problem| {
        ConfigError::WorkflowTasks {
            file: file.to_path_buf(),
            workflow: name.to_owned(),
            problem,
        }
    })?;

    if let Some(strategist) = &raw.strategist
        && !workers.contains_key(strategist)
    {
        let hint = closest(strategist, workers.keys().map(String::as_str))
            .map(|near| format!("; did you mean {near:?}?"))
            .unwrap_or_default();
        return Err(fail(
            "strategist",
            format!("names worker {strategist:?}, which is not in the registry{hint}"),
        ));
    }

    let max_rounds = raw.max_rounds.unwrap_or(defaults::MAX_ROUNDS);
    if max_rounds == 0 {
        return Err(fail("max_rounds", "must be at least 1".to_owned()));
    }
    if max_rounds > MAX_ROUNDS_CEILING {
        return Err(fail(
            "max_rounds",
            format!("{max_rounds} is more than the hard ceiling, {MAX_ROUNDS_CEILING}"),
        ));
    }
    let task_retries = raw.task_retries.unwrap_or(defaults::TASK_RETRIES);
    if task_retries > MAX_RETRIES {
        return Err(fail(
            "task_retries",
            format!("{task_retries} is more than the most allowed, {MAX_RETRIES}"),
        ));
    }

    Ok(Workflow {
        name: name.to_owned(),
        source: file.to_path_buf(),
        description: raw.description,
        schedule,
        timezone,
        enabled: raw.enabled.unwrap_or(true),
        tasks,
        levels,
        strategist: raw.strategist,
        max_rounds,
        task_retries,
    })
}

/// A `timezone` as written (UTC when absent), or what is wrong with it,
/// phrased to follow the field.
fn timezone(zone: Option<&str>) -> Result<chrono_tz::Tz, String> {
    let Some(zone) = zone else {
        return Ok(chrono_tz::UTC);
    };
    zone.parse::<chrono_tz::Tz>().map_err(|_| {
        let hint = closest(zone, chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name()))
            .map(|near| format!(" (did you mean {near:?}?)"))
            .unwrap_or_default();
        format!("{zone:?} is not an IANA time zone{hint}")
    })
}

/// A `schedule` as written (none when absent), with the settings that shape
/// it; `jitter_key` is the worker's or workflow's name.
fn schedule(
    expression: Option<&str>,
    timezone: chrono_tz::Tz,
    dst_gap: Option<DstGap>,
    dst_repeat: Option<DstRepeat>,
    jitter: Duration,
    jitter_key: &str,
) -> Result<Option<Schedule>, String> {
    let Some(expression) = expression else {
        return Ok(None);
    };
    Schedule::parse(
        expression,
        timezone,
        dst_gap.unwrap_or_default(),
        dst_repeat.unwrap_or_default(),
        jitter,
        jitter_key,
    )
    .map(Some)
    .map_err(|e| e.to_string())
}

/// Environment variable names a worker may set: `[A-Za-z_][A-Za-z0-9_]*`,
/// not in Loom's own `LOOM_` namespace.
fn check_variable_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("{name:?} is not a valid environment variable name"));
    }
    if name.starts_with("LOOM_") {
        return Err(format!("{name:?} is in Loom's own LOOM_ namespace"));
    }
    Ok(())
}
