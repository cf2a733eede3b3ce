//! Workflows in the registry (DESIGN §10): defaults, levels, inline and file
//! definitions, and the exact error each kind of bad workflow gets.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use loom_config::{ConfigError, DstGap, Loader, MAX_ROUNDS_CEILING, TaskPlanError, WorkflowTask};

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

    /// `workers.toml` holding three workers, then `workflows`.
    fn registry(workflows: &str) -> Self {
        Files::new(
            "registry = \"workers.toml\"\n",
            &format!("{WORKERS}{workflows}"),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn load(&self) -> Result<loom_config::Config, ConfigError> {
        Loader::new(Some(self.path("loom.toml")))
            .with_env(Vec::<(String, String)>::new())
            .load()
    }

    fn error(&self) -> ConfigError {
        self.load().expect_err("the config should be refused")
    }

    /// The error's text with the registry file's path written `workers.toml`.
    fn message(&self) -> String {
        self.error().to_string().replace(
            &self.path("workers.toml").display().to_string(),
            "workers.toml",
        )
    }
}

const WORKERS: &str = r#"
[workers.fetch]
command = ["true"]
[workers.summarise]
command = ["true"]
[workers.planner]
command = ["true"]
"#;

#[test]
fn defaults_fill_everything_left_out() {
    let files = Files::registry(
        r#"
[workflows.digest]
tasks = [{ id = "a", worker = "fetch" }]
"#,
    );
    let config = files.load().expect("loads");
    let workflow = config.registry.workflow("digest").expect("workflow");
    assert_eq!(workflow.name, "digest");
    assert_eq!(workflow.source, files.path("workers.toml"));
    assert_eq!(workflow.description, "");
    assert!(workflow.schedule.is_none(), "no schedule: manual only");
    assert_eq!(workflow.schedule_description(), "manual only");
    assert_eq!(workflow.timezone, chrono_tz::UTC);
    assert!(workflow.enabled);
    assert_eq!(workflow.strategist, None);
    assert_eq!(workflow.max_rounds, 5);
    assert_eq!(workflow.task_retries, 1);
    assert_eq!(
        workflow.tasks,
        [WorkflowTask {
            id: "a".into(),
            worker: "fetch".into(),
            depends_on: vec![],
            params: BTreeMap::new(),
        }]
    );
    assert_eq!(workflow.levels, [["a"]]);
}

#[test]
fn every_key_is_read() {
    let files = Files::registry(
        r#"
[workflows.digest]
description = "Morning digest"
schedule = "30 6 * * 1-5"
timezone = "Europe/Berlin"
enabled = false
jitter = "5m"
dst_gap = "skip"
dst_repeat = "both"
strategist = "planner"
max_rounds = 10
task_retries = 3
tasks = [
  { id = "news", worker = "fetch", params = { source = "news" } },
  { id = "mail", worker = "fetch", params = { source = "mail" } },
  { id = "sum", worker = "summarise", depends_on = ["news", "mail"] },
]
"#,
    );
    let config = files.load().expect("loads");
    let workflow = config.registry.workflow("digest").expect("workflow");
    assert_eq!(workflow.description, "Morning digest");
    assert_eq!(workflow.timezone, chrono_tz::Europe::Berlin);
    assert!(!workflow.enabled);
    let schedule = workflow.schedule.as_ref().expect("scheduled");
    assert_eq!(schedule.expression(), "30 6 * * 1-5");
    assert_eq!(schedule.timezone(), chrono_tz::Europe::Berlin);
    assert_eq!(schedule.jitter(), Duration::from_secs(300));
    assert_eq!(schedule.dst_gap(), DstGap::Skip);
    assert_eq!(workflow.strategist.as_deref(), Some("planner"));
    assert_eq!(workflow.max_rounds, MAX_ROUNDS_CEILING);
    assert_eq!(workflow.task_retries, 3);
    let ids: Vec<&str> = workflow.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["news", "mail", "sum"], "definition order");
    assert_eq!(workflow.levels, [vec!["news", "mail"], vec!["sum"]]);
    let news = workflow.task("news").expect("news");
    assert_eq!(news.params.get("source").map(String::as_str), Some("news"));
    assert_eq!(
        workflow.task("sum").expect("sum").depends_on,
        ["news", "mail"]
    );
}

#[test]
fn workflows_may_be_inline_in_loom_toml_and_are_name_ordered() {
    let files = Files::new(
        r#"
registry = "workers.toml"
[workflows.zeta]
tasks = [{ id = "a", worker = "fetch" }]
"#,
        &format!("{WORKERS}\n[workflows.alpha]\ntasks = [{{ id = \"a\", worker = \"fetch\" }}]\n"),
    );
    let config = files.load().expect("loads");
    let names: Vec<&str> = config
        .registry
        .workflows()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(names, ["alpha", "zeta"]);
    assert_eq!(
        config.registry.workflow("zeta").expect("zeta").source,
        files.path("loom.toml")
    );
    assert!(config.registry.workflow("nope").is_none());
    assert_eq!(config.registry.len(), 3, "len counts workers");
}

#[test]
fn a_compacted_registry_keeps_its_workflows() {
    let files = Files::registry("[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n");
    let config = files.load().expect("loads");
    let compacted = config.registry.compacted();
    let workflow = compacted.workflow("w").expect("carried over");
    assert_eq!(workflow.levels, [["a"]]);
    assert_eq!(compacted.workflows().count(), 1);
}

#[test]
fn a_cycle_is_named() {
    let files = Files::registry(
        r#"
[workflows.w]
tasks = [
  { id = "c", worker = "fetch", depends_on = ["b"] },
  { id = "a", worker = "fetch", depends_on = ["c"] },
  { id = "b", worker = "fetch", depends_on = ["a"] },
]
"#,
    );
    assert_eq!(
        files.error(),
        ConfigError::WorkflowTasks {
            file: files.path("workers.toml"),
            workflow: "w".into(),
            problem: TaskPlanError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()]),
        }
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": tasks form a cycle: a → b → c → a"
    );
}

#[test]
fn a_task_naming_an_unknown_worker_is_refused() {
    let files = Files::registry(
        "[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\" }, { id = \"b\", worker = \"nope\" }]\n",
    );
    assert_eq!(files.error().field(), Some("tasks"));
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": task \"b\" names worker \"nope\", which is not in the registry"
    );
}

#[test]
fn an_unknown_strategist_is_refused_with_a_suggestion() {
    let files = Files::registry(
        "[workflows.w]\nstrategist = \"planer\"\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    let error = files.error();
    assert_eq!(error.workflow(), Some("w"));
    assert_eq!(error.field(), Some("strategist"));
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": strategist names worker \"planer\", which is not in the registry; did you mean \"planner\"?"
    );
    let files = Files::registry(
        "[workflows.w]\nstrategist = \"oracle\"\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": strategist names worker \"oracle\", which is not in the registry"
    );
}

#[test]
fn a_duplicate_task_id_is_refused() {
    let files = Files::registry(
        "[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\" }, { id = \"a\", worker = \"summarise\" }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": task id \"a\" is used by more than one task"
    );
}

#[test]
fn a_dependency_on_a_missing_task_is_refused() {
    let files = Files::registry(
        "[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\", depends_on = [\"fetch\"] }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": task \"a\" depends on \"fetch\", which is not among the tasks"
    );
}

#[test]
fn a_bad_task_id_is_refused() {
    let files = Files::registry("[workflows.w]\ntasks = [{ id = \"a.b\", worker = \"fetch\" }]\n");
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": task id \"a.b\" is not valid: use letters, digits, '-' and '_', at most 64 characters"
    );
}

#[test]
fn max_rounds_must_be_between_one_and_the_ceiling() {
    let files = Files::registry(
        "[workflows.w]\nmax_rounds = 11\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    assert_eq!(files.error().field(), Some("max_rounds"));
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": max_rounds 11 is more than the hard ceiling, 10"
    );
    let files = Files::registry(
        "[workflows.w]\nmax_rounds = 0\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": max_rounds must be at least 1"
    );
}

#[test]
fn task_retries_are_bounded() {
    let files = Files::registry(
        "[workflows.w]\ntask_retries = 101\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": task_retries 101 is more than the most allowed, 100"
    );
}

#[test]
fn an_empty_task_list_is_refused() {
    for tasks in ["tasks = []\n", "description = \"nothing yet\"\n"] {
        let files = Files::registry(&format!("[workflows.w]\n{tasks}"));
        assert_eq!(
            files.message(),
            "workers.toml: workflow \"w\": tasks is empty; a workflow needs at least one task",
            "{tasks}"
        );
    }
}

#[test]
fn a_bad_workflow_name_is_refused() {
    let files =
        Files::registry("[workflows.\"a.b\"]\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n");
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"a.b\": name \"a.b\" contains '.'; only letters, digits, '-' and '_' are allowed (it is a subject token)"
    );
}

#[test]
fn schedule_and_timezone_are_checked_like_a_workers() {
    let files = Files::registry(
        "[workflows.w]\nschedule = \"0 25 * * *\"\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    assert_eq!(files.error().field(), Some("schedule"));
    let files = Files::registry(
        "[workflows.w]\ntimezone = \"America/Chicgo\"\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": timezone \"America/Chicgo\" is not an IANA time zone (did you mean \"America/Chicago\"?)"
    );
}

#[test]
fn an_unknown_key_names_the_workflow() {
    let files = Files::registry(
        "[workflows.w]\nmax_round = 3\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
    );
    let error = files.error();
    assert_eq!(error.workflow(), Some("w"));
    assert_eq!(error.field(), Some("max_round"));
    assert!(
        error.to_string().contains("did you mean `max_rounds`?"),
        "{error}"
    );
    let files = Files::registry(
        "[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\", needs = [\"b\"] }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": tasks.0.needs is not a known field; expected one of `id`, `worker`, `depends_on`, `params`"
    );
    let files = Files::registry(
        "[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\", params = { n = 3 } }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": tasks.0.params.n must be a string, not signed int `3`"
    );
    let files = Files::registry("[workflows.w]\ntasks = [{ worker = \"fetch\" }]\n");
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\": tasks.0.id is required"
    );
}

#[test]
fn a_workflow_defined_twice_is_refused() {
    let files = Files::new(
        "registry = \"workers.toml\"\n[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n",
        &format!("{WORKERS}[workflows.w]\ntasks = [{{ id = \"b\", worker = \"fetch\" }}]\n"),
    );
    assert_eq!(
        files.error(),
        ConfigError::DuplicateWorkflow {
            workflow: "w".into(),
            first: files.path("loom.toml"),
            second: files.path("workers.toml"),
        }
    );
    let files = Files::registry(
        "[workflows.w]\ntasks = [{ id = \"a\", worker = \"fetch\" }]\n[workflows.w]\ntasks = [{ id = \"b\", worker = \"fetch\" }]\n",
    );
    assert_eq!(
        files.message(),
        "workers.toml: workflow \"w\" is defined twice (also in workers.toml)"
    );
}
