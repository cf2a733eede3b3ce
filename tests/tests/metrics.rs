//! Each role exports the metrics DESIGN §9 gives it (plus the ones the
//! alert rules in `deploy/prometheus` join on), each family with its HELP
//! and TYPE lines, and none of another role's; the counters move when runs
//! happen. The four roles run as separate processes on one real
//! nats-server, each with its own `/metrics`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use loom_protocol::VerdictKind;
use loom_tests::{Mesh, Role, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// `tick` runs every second and is valid; `flaky` fails twice (one retry),
/// becomes a dead letter and an alert; `off` is disabled, so each of its
/// fires is skipped. Klaxon alerts to its default sink, the log.
const CONFIG: &str = r#"
[agent]
ack_wait = "2s"
drain_timeout = "2s"
[validator]
slack = "1s"
[workers.tick]
command = ["true"]
schedule = "@every 1s"
[workers.flaky]
command = ["/bin/sh", "-c", "echo 'no such table' >&2; exit 3"]
retries = 1
backoff = { initial = "1s", max = "1s", jitter = 0.0 }
[workers.off]
command = ["true"]
schedule = "@every 1s"
enabled = false
"#;

/// Each role's families: (name, TYPE). The names are DESIGN §9's, spelled
/// out here so that renaming one in the code breaks this test.
const SCHEDULER: &[(&str, &str)] = &[
    ("loom_runs_scheduled_total", "counter"),
    ("loom_fires_skipped_total", "counter"),
    ("loom_worker_next_run_timestamp_seconds", "gauge"),
    ("loom_worker_interval_seconds", "gauge"),
    ("loom_scheduler_is_leader", "gauge"),
];
const AGENT: &[(&str, &str)] = &[
    ("loom_runs_started_total", "counter"),
    ("loom_runs_finished_total", "counter"),
    ("loom_run_duration_seconds", "histogram"),
    ("loom_run_start_lag_seconds", "histogram"),
    ("loom_run_retries_total", "counter"),
    ("loom_agent_inflight_runs", "gauge"),
    ("loom_agent_serving", "gauge"),
];
const VALIDATOR: &[(&str, &str)] = &[
    ("loom_verdicts_total", "counter"),
    ("loom_dead_letters_total", "counter"),
    ("loom_worker_last_success_timestamp_seconds", "gauge"),
    ("loom_worker_open_runs", "gauge"),
];
const KLAXON: &[(&str, &str)] = &[("loom_klaxon_alerts_sent_total", "counter")];

/// Families two roles export: the validator counts run commands of every
/// trigger but `schedule` (the scheduler's), and the scheduler writes the
/// dead letters of missed fires.
const SHARED: &[&str] = &["loom_runs_scheduled_total", "loom_dead_letters_total"];

/// One scrape, parsed.
struct Scrape {
    help: HashMap<String, String>,
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Scrape {
    fn of(role: &Role) -> Scrape {
        Scrape::parse(&role.metrics())
    }

    /// Parses the text exposition format, as far as Loom's metrics use it.
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape {
            help: HashMap::new(),
            types: HashMap::new(),
            samples: Vec::new(),
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                scrape.help.insert(name.to_owned(), help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                scrape.types.insert(name.to_owned(), kind.to_owned());
            } else if !line.is_empty() && !line.starts_with('#') {
                scrape.samples.push(parse_sample(line));
            }
        }
        scrape
    }

    /// Whether `family` has a sample (a histogram's through its `_count`).
    fn has(&self, family: &str) -> bool {
        self.samples.iter().any(|sample| {
            sample.name == family
                || sample
                    .name
                    .strip_prefix(family)
                    .is_some_and(|suffix| ["_bucket", "_sum", "_count"].contains(&suffix))
        })
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|sample| {
                sample.name == name
                    && labels.iter().all(|(label, value)| {
                        sample.labels.get(*label).map(String::as_str) == Some(*value)
                    })
            })
            .map(|sample| sample.value)
    }

    /// Every Loom family this scrape exports (by HELP line).
    fn loom_families(&self) -> Vec<&str> {
        let mut families: Vec<&str> = self
            .help
            .keys()
            .map(String::as_str)
            .filter(|name| name.starts_with("loom_") && *name != "loom_build_info")
            .collect();
        families.sort_unstable();
        families
    }
}

/// `name{a="b",c="d"} value` (labels optional).
fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("a sample line without a value: {line:?}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|error| panic!("a sample value that is not a number ({error}): {line:?}"));
    let Some((name, labels)) = series.split_once('{') else {
        return Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        };
    };
    let mut parsed = BTreeMap::new();
    let mut rest = labels
        .strip_suffix('}')
        .unwrap_or_else(|| panic!("unterminated labels: {line:?}"));
    while !rest.is_empty() {
        let (label, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("a label without a quoted value: {line:?}"));
        let mut label_value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => label_value.push('\n'),
                    Some((_, escaped)) => label_value.push(escaped),
                    None => panic!("a dangling escape: {line:?}"),
                },
                Some((index, '"')) => break index,
                Some((_, other)) => label_value.push(other),
                None => panic!("an unterminated label value: {line:?}"),
            }
        };
        parsed.insert(label.to_owned(), label_value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    Sample {
        name: name.to_owned(),
        labels: parsed,
        value,
    }
}

/// Waits until `role`'s scrape satisfies `check`; the scrape.
async fn scrape_until(role: &Role, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(WAIT, what, || async {
        let scrape = Scrape::of(role);
        check(&scrape).then_some(scrape)
    })
    .await
}

/// Asserts `scrape` has every family of `owned` (with HELP, TYPE and a
/// sample) and no family that only other roles export.
fn assert_owns(role: &str, scrape: &Scrape, owned: &[(&str, &str)]) {
    for (family, kind) in owned {
        let help = scrape.help.get(*family).map(String::as_str).unwrap_or("");
        assert!(!help.trim().is_empty(), "{role}: no HELP line for {family}");
        assert_eq!(
            scrape.types.get(*family).map(String::as_str),
            Some(*kind),
            "{role}: TYPE of {family}"
        );
        assert!(scrape.has(family), "{role}: no sample of {family}");
    }
    let all: Vec<&str> = [SCHEDULER, AGENT, VALIDATOR, KLAXON]
        .iter()
        .flat_map(|families| families.iter().map(|(family, _)| *family))
        .collect();
    for family in scrape.loom_families() {
        let mine = owned.iter().any(|(owned, _)| *owned == family) || SHARED.contains(&family);
        assert!(
            mine || !all.contains(&family),
            "{role} exports {family}, a family of another role"
        );
    }
}

#[tokio::test]
async fn each_role_exports_its_metrics_and_they_move_when_runs_happen() {
    let mesh = Mesh::new(CONFIG).await;
    // The agent first: with no scheduler yet and nothing triggered, no run
    // exists, and an idle agent already exports its gauges.
    let mut agent = mesh.spawn(&["agent"], &[]);
    agent.ready().await;
    let idle = scrape_until(&agent, "the idle agent serving tick", |s| {
        s.value("loom_agent_serving", &[("worker", "tick")]) == Some(1.0)
    })
    .await;
    assert_eq!(
        idle.value("loom_agent_inflight_runs", &[]),
        Some(0.0),
        "an idle agent exports 0 runs in flight"
    );
    assert!(idle.help.contains_key("loom_agent_inflight_runs"));
    assert_eq!(
        idle.value("loom_runs_started_total", &[]),
        None,
        "no run yet"
    );

    let mut scheduler = mesh.spawn(&["scheduler"], &[]);
    let mut validator = mesh.spawn(&["validator"], &[]);
    let mut klaxon = mesh.spawn(&["klaxon"], &[]);
    for role in [&mut scheduler, &mut validator, &mut klaxon] {
        role.ready().await;
    }

    // `tick` runs: the scheduler counts its fires, the validator its valid
    // verdicts. Both counters move while we watch.
    let scheduled = |scrape: &Scrape| {
        scrape.value(
            "loom_runs_scheduled_total",
            &[("worker", "tick"), ("trigger", "schedule")],
        )
    };
    let valid = |scrape: &Scrape| {
        scrape.value(
            "loom_verdicts_total",
            &[("worker", "tick"), ("verdict", "valid")],
        )
    };
    let started = |scrape: &Scrape| scrape.value("loom_runs_started_total", &[("worker", "tick")]);
    let first_scheduled = scheduled(
        &scrape_until(&scheduler, "a scheduled fire of tick", |s| {
            scheduled(s).is_some()
        })
        .await,
    )
    .unwrap_or_default();
    let first_valid = valid(
        &scrape_until(&validator, "a valid verdict of tick", |s| {
            valid(s).is_some()
        })
        .await,
    )
    .unwrap_or_default();
    let first_started =
        started(&scrape_until(&agent, "a started run of tick", |s| started(s).is_some()).await)
            .unwrap_or_default();
    assert!(first_scheduled >= 1.0 && first_valid >= 1.0 && first_started >= 1.0);
    scrape_until(&scheduler, "runs_scheduled_total to increase", |s| {
        scheduled(s).is_some_and(|now| now > first_scheduled)
    })
    .await;
    scrape_until(
        &validator,
        "verdicts_total{verdict=valid} to increase",
        |s| valid(s).is_some_and(|now| now > first_valid),
    )
    .await;
    scrape_until(&agent, "runs_started_total to increase", |s| {
        started(s).is_some_and(|now| now > first_started)
    })
    .await;

    // `flaky` fails, is retried once, fails again: a dead letter, an alert.
    let run_id = mesh.trigger("flaky", &[]);
    let verdict = mesh.verdict_of("flaky", run_id, WAIT).await;
    assert_eq!(verdict.verdict, VerdictKind::Failed);

    let scheduler_scrape = scrape_until(&scheduler, "a leader with every family", |s| {
        s.value("loom_scheduler_is_leader", &[]) == Some(1.0)
            && s.value(
                "loom_fires_skipped_total",
                &[("worker", "off"), ("reason", "disabled")],
            )
            .is_some()
    })
    .await;
    assert_owns("scheduler", &scheduler_scrape, SCHEDULER);
    assert_eq!(
        scheduler_scrape.value("loom_worker_interval_seconds", &[("worker", "tick")]),
        Some(1.0),
        "tick fires every second"
    );
    let now = chrono::Utc::now().timestamp() as f64;
    let next_run = scheduler_scrape
        .value(
            "loom_worker_next_run_timestamp_seconds",
            &[("worker", "tick")],
        )
        .expect("tick's next run");
    assert!(
        (next_run - now).abs() < 60.0,
        "tick's next run {next_run} is not about now ({now})"
    );
    for unscheduled in ["flaky", "off"] {
        assert_eq!(
            scheduler_scrape.value(
                "loom_worker_next_run_timestamp_seconds",
                &[("worker", unscheduled)]
            ),
            None,
            "{unscheduled} has no schedule that fires, so no next run"
        );
    }

    let agent_scrape = scrape_until(&agent, "a retry of flaky", |s| {
        s.value("loom_run_retries_total", &[("worker", "flaky")]) == Some(1.0)
    })
    .await;
    assert_owns("agent", &agent_scrape, AGENT);
    for worker in ["tick", "flaky"] {
        assert_eq!(
            agent_scrape.value("loom_agent_serving", &[("worker", worker)]),
            Some(1.0),
            "the agent serves {worker}"
        );
    }
    assert_eq!(
        agent_scrape.value("loom_runs_started_total", &[("worker", "flaky")]),
        Some(2.0),
        "flaky ran twice"
    );
    assert_eq!(
        agent_scrape.value(
            "loom_runs_finished_total",
            &[("worker", "flaky"), ("outcome", "failed")]
        ),
        Some(2.0)
    );
    assert!(
        agent_scrape
            .value("loom_run_duration_seconds_count", &[("worker", "flaky")])
            .is_some_and(|count| count >= 2.0)
    );
    assert!(
        agent_scrape
            .value("loom_run_start_lag_seconds_count", &[("worker", "tick")])
            .is_some_and(|count| count >= 1.0)
    );

    let validator_scrape = scrape_until(&validator, "flaky's dead letter", |s| {
        s.value(
            "loom_dead_letters_total",
            &[("worker", "flaky"), ("reason", "failed")],
        ) == Some(1.0)
    })
    .await;
    assert_owns("validator", &validator_scrape, VALIDATOR);
    assert_eq!(
        validator_scrape.value(
            "loom_verdicts_total",
            &[("worker", "flaky"), ("verdict", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        validator_scrape.value(
            "loom_runs_scheduled_total",
            &[("worker", "flaky"), ("trigger", "manual")]
        ),
        Some(1.0),
        "the validator counts the manual run"
    );
    let last_success = validator_scrape
        .value(
            "loom_worker_last_success_timestamp_seconds",
            &[("worker", "tick")],
        )
        .expect("tick's last success");
    assert!(
        (last_success - now).abs() < 120.0,
        "tick's last success {last_success} is not about now ({now})"
    );
    assert!(
        validator_scrape
            .value("loom_worker_open_runs", &[("worker", "tick")])
            .is_some()
    );
    assert_eq!(
        validator_scrape.value(
            "loom_worker_last_success_timestamp_seconds",
            &[("worker", "flaky")]
        ),
        None,
        "flaky never succeeded"
    );

    let klaxon_scrape = scrape_until(&klaxon, "flaky's alert sent to the log sink", |s| {
        s.value("loom_klaxon_alerts_sent_total", &[("sink", "log")])
            .is_some_and(|sent| sent >= 1.0)
    })
    .await;
    assert_owns("klaxon", &klaxon_scrape, KLAXON);
}

#[test]
fn the_exposition_parser_reads_labels_escapes_and_histograms() {
    let scrape = Scrape::parse(
        "# HELP loom_x A test.\n# TYPE loom_x counter\nloom_x{worker=\"a\\\"b\",reason=\"c,d\"} 3\n\
         # HELP loom_h A histogram.\n# TYPE loom_h histogram\nloom_h_count{worker=\"a\"} 2\nloom_g 1.5\n",
    );
    assert_eq!(
        scrape.value("loom_x", &[("worker", "a\"b"), ("reason", "c,d")]),
        Some(3.0)
    );
    assert_eq!(scrape.value("loom_x", &[("worker", "b")]), None);
    assert!(scrape.has("loom_h") && !scrape.has("loom_y"));
    assert_eq!(scrape.value("loom_g", &[]), Some(1.5));
    assert_eq!(
        scrape.types.get("loom_h").map(String::as_str),
        Some("histogram")
    );
    assert_eq!(scrape.loom_families(), ["loom_h", "loom_x"]);
}
