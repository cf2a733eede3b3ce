//! Loading `loom.toml` and the registry: defaults, precedence, and the error
//! each kind of bad input gets.

use std::path::{Path, PathBuf};
use std::time::Duration;

use loom_config::{CatchUp, ConfigError, Loader, Origin, OutputFormat, Overlap};

/// A config directory with `loom.toml` and `workers.toml`.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new(loom_toml: &str, workers_toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("loom.toml"), loom_toml).expect("write loom.toml");
        std::fs::write(dir.path().join("workers.toml"), workers_toml).expect("write workers.toml");
        Files { dir }
    }

    fn registry(workers_toml: &str) -> Self {
        Files::new("registry = \"workers.toml\"\n", workers_toml)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn loader(&self) -> Loader {
        Loader::new(Some(self.path("loom.toml"))).with_env(Vec::<(String, String)>::new())
    }

    fn load(&self) -> Result<loom_config::Config, ConfigError> {
        self.loader().load()
    }

    fn error(&self) -> ConfigError {
        self.load().expect_err("the config should be refused")
    }
}

const ONE_WORKER: &str = r#"
[workers.report]
schedule = "0 4 * * SUN"
timezone = "America/Chicago"
command = ["bin/report.sh", "--days", "30"]
"#;

fn worker_error(error: &ConfigError) -> (&Path, &str, &str) {
    match error {
        ConfigError::Worker {
            file,
            worker,
            field,
            ..
        } => (file.as_path(), worker.as_str(), field.as_str()),
        other => panic!("expected a worker error, got {other:?}"),
    }
}

#[test]
fn defaults_fill_everything_left_out() {
    let files = Files::registry(ONE_WORKER);
    let config = files.load().expect("loads");
    assert_eq!(config.prefix, "loom");
    assert!(
        config.nats.urls.is_empty(),
        "no url means the embedded server"
    );
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:9810");
    assert_eq!(config.data_dir, files.path(".loom"));
    assert_eq!(config.scheduler.lease_ttl, Duration::from_secs(5));
    assert_eq!(config.agent.ack_wait, Duration::from_secs(30));
    assert_eq!(config.streams.replicas, 1);

    let worker = config.registry.get("report").expect("worker");
    assert!(worker.enabled);
    assert_eq!(worker.timeout, Duration::from_secs(3600));
    assert_eq!(worker.retries, 2);
    assert_eq!(worker.overlap, Overlap::Skip);
    assert_eq!(worker.catch_up, CatchUp::Last);
    assert_eq!(worker.starting_deadline, Duration::from_secs(3600));
    assert_eq!(worker.output.format, OutputFormat::Text);
    assert_eq!(worker.output.max_bytes, 1 << 20);
    assert_eq!(worker.timezone, chrono_tz::America::Chicago);
    assert_eq!(*worker.source, files.path("workers.toml"));
}

#[test]
fn command_paths_are_relative_to_the_registry_file() {
    let files = Files::registry(
        r#"
[workers.a]
command = ["bin/a.sh", "x/y"]
[workers.b]
command = ["python3", "-c", "print(1)"]
[workers.c]
command = ["/usr/bin/true"]
"#,
    );
    let config = files.load().expect("loads");
    let a = config.registry.get("a").expect("a");
    assert_eq!(PathBuf::from(&a.command[0]), files.path("bin/a.sh"));
    assert_eq!(a.command[1], "x/y", "only the program is resolved");
    assert_eq!(config.registry.get("b").expect("b").command[0], "python3");
    assert_eq!(
        config.registry.get("c").expect("c").command[0],
        "/usr/bin/true"
    );
}

#[test]
fn workers_may_be_inline_in_loom_toml() {
    let files = Files::new(
        r#"
[workers.inline]
command = ["true"]
"#,
        "",
    );
    let config = files.load().expect("loads");
    let worker = config.registry.get("inline").expect("worker");
    assert_eq!(*worker.source, files.path("loom.toml"));
    assert!(worker.schedule.is_none(), "no schedule: manual only");
    assert_eq!(worker.schedule_description(), "manual only");
}

#[test]
fn a_bad_cron_names_file_worker_and_field() {
    let files = Files::registry(
        r#"
[workers.report]
schedule = "0 4 * *"
command = ["true"]
"#,
    );
    let error = files.error();
    assert_eq!(
        worker_error(&error),
        (files.path("workers.toml").as_path(), "report", "schedule")
    );
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "{}: worker \"report\": schedule \"0 4 * *\"",
            files.path("workers.toml").display()
        )),
        "{text}"
    );
}

#[test]
fn an_unknown_time_zone_is_refused_with_a_suggestion() {
    let files = Files::registry(
        r#"
[workers.staleness-detector]
schedule = "@daily"
timezone = "America/Chicgo"
command = ["true"]
"#,
    );
    let error = files.error();
    assert_eq!(worker_error(&error).2, "timezone");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: worker \"staleness-detector\": timezone \"America/Chicgo\" is not an IANA time zone (did you mean \"America/Chicago\"?)",
            files.path("workers.toml").display()
        )
    );
}

#[test]
fn a_worker_defined_twice_in_one_file_is_refused() {
    let files = Files::registry(
        r#"
[workers.a]
command = ["true"]
[workers.a]
command = ["false"]
"#,
    );
    match files.error() {
        ConfigError::DuplicateWorker { worker, .. } => assert_eq!(worker, "a"),
        other => panic!("expected a duplicate worker, got {other:?}"),
    }
}

#[test]
fn a_worker_defined_inline_and_in_the_registry_is_refused() {
    let files = Files::new(
        "registry = \"workers.toml\"\n[workers.a]\ncommand = [\"true\"]\n",
        "[workers.a]\ncommand = [\"false\"]\n",
    );
    let error = files.error();
    assert_eq!(
        error,
        ConfigError::DuplicateWorker {
            worker: "a".into(),
            first: files.path("loom.toml"),
            second: files.path("workers.toml"),
        }
    );
    let expected = format!(
        "is defined twice (also in {})",
        files.path("loom.toml").display()
    );
    assert!(error.to_string().ends_with(&expected), "{error}");
}

#[test]
fn an_empty_command_is_refused() {
    let files = Files::registry("[workers.a]\ncommand = []\n");
    let error = files.error();
    assert_eq!(worker_error(&error).2, "command");
    assert!(error.to_string().contains("command is empty"), "{error}");
}

#[test]
fn a_missing_command_is_refused() {
    let files = Files::registry("[workers.a]\nschedule = \"@daily\"\n");
    let error = files.error();
    assert_eq!(
        worker_error(&error),
        (files.path("workers.toml").as_path(), "a", "command")
    );
    assert!(
        error
            .to_string()
            .ends_with("worker \"a\": command is required"),
        "{error}"
    );
}

#[test]
fn a_negative_duration_is_refused() {
    let files = Files::registry("[workers.a]\ncommand = [\"true\"]\ntimeout = \"-5s\"\n");
    let error = files.error();
    assert_eq!(worker_error(&error).2, "timeout");
    assert!(
        error
            .to_string()
            .ends_with("timeout \"-5s\" must not be negative"),
        "{error}"
    );

    let files = Files::registry("[workers.a]\ncommand = [\"true\"]\nstarting_deadline = -5\n");
    assert_eq!(worker_error(&files.error()).2, "starting_deadline");

    let files =
        Files::registry("[workers.a]\ncommand = [\"true\"]\nbackoff = { initial = \"soon\" }\n");
    let error = files.error();
    assert_eq!(worker_error(&error).2, "backoff.initial");
    assert!(
        error.to_string().contains("\"soon\" is not a duration"),
        "{error}"
    );
}

#[test]
fn an_unknown_field_is_refused_with_a_suggestion() {
    let files = Files::registry("[workers.a]\ncommand = [\"true\"]\ntmezone = \"UTC\"\n");
    let error = files.error();
    assert_eq!(
        worker_error(&error),
        (files.path("workers.toml").as_path(), "a", "tmezone")
    );
    assert!(
        error
            .to_string()
            .ends_with("tmezone is not a known field; did you mean `timezone`?"),
        "{error}"
    );

    let files = Files::new("[agnet]\nconcurrency = 2\n", "");
    let error = files.error();
    assert_eq!(error.field(), Some("agnet"));
}

#[test]
fn an_unknown_choice_lists_the_choices() {
    let files = Files::registry("[workers.a]\ncommand = [\"true\"]\noverlap = \"queue\"\n");
    let error = files.error();
    assert_eq!(worker_error(&error).2, "overlap");
    assert!(
        error
            .to_string()
            .contains("\"queue\" is not one of `forbid`, `buffer_one`, `skip`, `replace`, `allow`"),
        "{error}"
    );
}

#[test]
fn a_bad_worker_name_is_refused() {
    let files = Files::registry("[workers.\"a.b\"]\ncommand = [\"true\"]\n");
    assert_eq!(worker_error(&files.error()).2, "name");
}

#[test]
fn concurrency_needs_overlap_allow() {
    let files = Files::registry("[workers.a]\ncommand = [\"true\"]\nconcurrency = 3\n");
    assert_eq!(worker_error(&files.error()).2, "concurrency");
    let files = Files::registry(
        "[workers.a]\ncommand = [\"true\"]\nconcurrency = 3\noverlap = \"allow\"\n",
    );
    let config = files.load().expect("loads");
    let consumer = config
        .registry
        .get("a")
        .expect("a")
        .consumer(Duration::from_secs(30));
    assert_eq!(consumer.max_ack_pending, 3);
    assert_eq!(consumer.max_deliver, 2 + 1 + 2);
}

#[test]
fn an_enforcement_bundle_must_exist() {
    let files = Files::registry("[workers.a]\ncommand = [\"true\"]\nenforcement = \"standard\"\n");
    let error = files.error();
    assert_eq!(worker_error(&error).2, "enforcement");
    assert!(
        error.to_string().contains("enforcement.dir is not set"),
        "{error}"
    );

    let files = Files::new(
        "registry = \"workers.toml\"\n[enforcement]\ndir = \"enforcement\"\n",
        "[workers.a]\ncommand = [\"true\"]\nenforcement = \"standard\"\n",
    );
    let error = files.error();
    assert!(
        error.to_string().contains("has no bundle directory at"),
        "{error}"
    );
    std::fs::create_dir_all(files.path("enforcement/standard")).expect("mkdir");
    assert!(files.load().is_ok());
}

#[test]
fn a_missing_registry_file_is_named() {
    let files = Files::new("registry = \"nowhere.toml\"\n", "");
    assert_eq!(
        files.error(),
        ConfigError::Unreadable {
            file: files.path("nowhere.toml"),
            detail: "no such file".into()
        }
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let error = Loader::new(Some(PathBuf::from("/nonexistent/loom.toml")))
        .with_env(Vec::<(String, String)>::new())
        .load()
        .expect_err("missing");
    assert_eq!(
        error.to_string(),
        "/nonexistent/loom.toml: cannot read the file: no such file"
    );
}

#[test]
fn invalid_toml_names_the_line() {
    let files = Files::registry("[workers.a\ncommand = [\"true\"]\n");
    let error = files.error();
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: invalid TOML at line 1, column 11: expected `.`, `]`",
            files.path("workers.toml").display()
        )
    );
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let files = Files::new(
        "[agent]\nconcurrency = 2\n[scheduler]\nlease_ttl = \"4s\"\n",
        "",
    );
    let config = files
        .loader()
        .with_env([
            ("LOOM_AGENT__CONCURRENCY", "6"),
            ("LOOM_NATS__URL", "nats://10.0.0.1:4222"),
        ])
        .load()
        .expect("loads");
    assert_eq!(config.agent.concurrency.get(), 6);
    assert_eq!(config.nats.urls, ["nats://10.0.0.1:4222"]);
    assert_eq!(config.scheduler.lease_ttl, Duration::from_secs(4));

    let config = files
        .loader()
        .with_env([("LOOM_AGENT__CONCURRENCY", "6")])
        .with_override("agent.concurrency", 9)
        .load()
        .expect("loads");
    assert_eq!(config.agent.concurrency.get(), 9);
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let files = Files::new("", "");
    let error = files
        .loader()
        .with_env([("LOOM_AGENT__CONCURRENCY", "0")])
        .load()
        .expect_err("refused");
    assert_eq!(
        error,
        ConfigError::Setting {
            origin: Origin::Env("LOOM_AGENT__CONCURRENCY".into()),
            key: "agent.concurrency".into(),
            detail: "must be at least 1".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "environment variable LOOM_AGENT__CONCURRENCY: agent.concurrency must be at least 1"
    );

    let error = files
        .loader()
        .with_env([("LOOM_AGENT__CONCURRENCY", "many")])
        .load()
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "environment variable LOOM_AGENT__CONCURRENCY: agent.concurrency must be u32, not string \"many\""
    );
}

#[test]
fn worker_contract_variables_are_not_settings() {
    // A `loom` command run inside a worker sees these; they must not be read as config keys.
    let files = Files::new("", "");
    let config = files
        .loader()
        .with_env([
            ("LOOM_RUN_ID", "x"),
            ("LOOM_WORKER", "w"),
            ("LOOM_PARAM_DAYS", "7"),
            ("LOOM_CONFIG", "/etc/loom.toml"),
        ])
        .load();
    assert!(config.is_ok(), "{config:?}");
}

#[test]
fn settings_errors_name_the_file_and_key() {
    let files = Files::new("[streams]\nduplicate_window = \"5s\"\n", "");
    let error = files.error();
    assert_eq!(error.field(), Some("streams.duplicate_window"));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: streams.duplicate_window (5s) must be at least twice scheduler.lease_ttl (5s) to cover a leader failover",
            files.path("loom.toml").display()
        )
    );
    let files = Files::new("[http]\nlisten = \"nowhere\"\n", "");
    assert_eq!(files.error().field(), Some("http.listen"));
    let files = Files::new(
        "[nats]\ntoken = \"t\"\nuser = \"u\"\npassword = \"p\"\n",
        "",
    );
    assert!(
        files.error().to_string().ends_with(
            "nats.user cannot be combined with nats.token; choose one way to authenticate"
        )
    );
}

#[test]
fn agent_workers_must_be_in_the_registry() {
    let files = Files::new(
        "registry = \"workers.toml\"\n[agent]\nworkers = [\"reprot\"]\n",
        ONE_WORKER,
    );
    let error = files.error();
    assert!(
        error.to_string().ends_with(
            "agent.workers names \"reprot\", which is not in the registry; did you mean \"report\"?"
        ),
        "{error}"
    );
}

#[test]
fn topology_has_a_run_consumer_per_worker() {
    let files = Files::registry(ONE_WORKER);
    let config = files.load().expect("loads");
    let topology = config.topology();
    assert!(
        topology
            .consumers
            .iter()
            .any(|c| c.durable == "run-report" && c.filter_subject == "loom.run.report")
    );
}

#[test]
fn retry_delays_grow_cap_and_spread() {
    let files = Files::registry(
        "[workers.a]\ncommand = [\"true\"]\nbackoff = { initial = \"10s\", max = \"60s\", factor = 3.0, jitter = 0.5 }\n",
    );
    let config = files.load().expect("loads");
    let worker = config.registry.get("a").expect("a");
    let middle = 0.5; // no spread
    assert_eq!(worker.retry_delay(1, middle), Duration::from_secs(10));
    assert_eq!(worker.retry_delay(2, middle), Duration::from_secs(30));
    assert_eq!(
        worker.retry_delay(3, middle),
        Duration::from_secs(60),
        "capped"
    );
    assert_eq!(worker.retry_delay(9, middle), Duration::from_secs(60));
    assert_eq!(worker.retry_delay(1, 0.0), Duration::from_secs(5), "-50%");
    assert_eq!(worker.retry_delay(1, 1.0), Duration::from_secs(15), "+50%");
}

#[test]
fn run_deadline_covers_every_attempt() {
    let files = Files::registry(
        "[workers.a]\ncommand = [\"true\"]\ntimeout = \"10m\"\nretries = 2\nstarting_deadline = \"1h\"\nbackoff = { initial = \"1m\", max = \"1m\", jitter = 0.0 }\n",
    );
    let config = files.load().expect("loads");
    let worker = config.registry.get("a").expect("a");
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("t")
        .with_timezone(&chrono::Utc);
    let deadline = worker.run_deadline(at, Duration::from_secs(30), Duration::from_secs(60));
    // 1h start + 3 x 10m + 2 x 1m backoff + 3 x 30s ack waits + 1m slack = 1h + 30m + 2m + 1m30s + 1m.
    assert_eq!((deadline - at).num_seconds(), 3600 + 1800 + 120 + 90 + 60);
}
