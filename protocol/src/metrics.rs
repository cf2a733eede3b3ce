//! Prometheus metrics of the mesh (DESIGN §9): names, help texts, labels
//! and buckets, in one place. The names are part of the public contract.
//!
//! Each family is registered in the process's default registry the first
//! time a role touches it, so a process exports the families of the roles
//! it runs (`loom up` all of them) and two roles in one process share a
//! family instead of colliding. Labels come from bounded sets (worker names,
//! reasons, outcomes), never run ids.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

/// `loom_runs_scheduled_total{worker,trigger}`: run commands that entered the mesh.
pub const RUNS_SCHEDULED_TOTAL: &str = "loom_runs_scheduled_total";
/// `loom_fires_skipped_total{worker,reason}`: fires that did not run.
pub const FIRES_SKIPPED_TOTAL: &str = "loom_fires_skipped_total";
/// `loom_runs_started_total{worker}`: attempts started by agents.
pub const RUNS_STARTED_TOTAL: &str = "loom_runs_started_total";
/// `loom_runs_finished_total{worker,outcome}`: attempts finished.
pub const RUNS_FINISHED_TOTAL: &str = "loom_runs_finished_total";
/// `loom_run_duration_seconds{worker}`: attempt wall time (histogram).
pub const RUN_DURATION_SECONDS: &str = "loom_run_duration_seconds";
/// `loom_run_start_lag_seconds{worker}`: start minus scheduled instant (histogram).
pub const RUN_START_LAG_SECONDS: &str = "loom_run_start_lag_seconds";
/// `loom_run_retries_total{worker}`: attempts after the first.
pub const RUN_RETRIES_TOTAL: &str = "loom_run_retries_total";
/// `loom_verdicts_total{worker,verdict}`.
pub const VERDICTS_TOTAL: &str = "loom_verdicts_total";
/// `loom_dead_letters_total{worker,reason}`.
pub const DEAD_LETTERS_TOTAL: &str = "loom_dead_letters_total";
/// `loom_worker_last_success_timestamp_seconds{worker}`.
pub const WORKER_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "loom_worker_last_success_timestamp_seconds";
/// `loom_worker_next_run_timestamp_seconds{worker}`.
pub const WORKER_NEXT_RUN_TIMESTAMP_SECONDS: &str = "loom_worker_next_run_timestamp_seconds";
/// `loom_scheduler_is_leader`: 1 on the leader, 0 on standbys.
pub const SCHEDULER_IS_LEADER: &str = "loom_scheduler_is_leader";
/// `loom_agent_inflight_runs`: runs executing on this agent.
pub const AGENT_INFLIGHT_RUNS: &str = "loom_agent_inflight_runs";
/// `loom_worker_interval_seconds{worker}`: the gap between the worker's next
/// two fires (leader scheduler), for "overdue" alert rules.
pub const WORKER_INTERVAL_SECONDS: &str = "loom_worker_interval_seconds";
/// `loom_worker_open_runs{worker}`: runs without a verdict yet (validator).
pub const WORKER_OPEN_RUNS: &str = "loom_worker_open_runs";
/// `loom_agent_serving{worker}`: 1 for each worker this agent serves.
pub const AGENT_SERVING: &str = "loom_agent_serving";
/// `loom_klaxon_alerts_sent_total{sink}`.
pub const KLAXON_ALERTS_SENT_TOTAL: &str = "loom_klaxon_alerts_sent_total";
/// `loom_klaxon_delivery_failures_total{sink}`: alerts a sink never took.
pub const KLAXON_DELIVERY_FAILURES_TOTAL: &str = "loom_klaxon_delivery_failures_total";

fn register<C: prometheus::core::Collector + Clone + 'static>(collector: C) -> C {
    // Registering can only fail for a duplicate name, which these statics rule out.
    let _ = prometheus::default_registry().register(Box::new(collector.clone()));
    collector
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // The options are constants of this module; they are valid.
    register(
        IntCounterVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| panic!("metric {name}: {e}")),
    )
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .unwrap_or_else(|e| panic!("metric {name}: {e}")),
    )
}

/// A gauge with one value per worker, for fleets of any size: the values
/// sit in a plain map (a name and a number per worker) and become a metric
/// family only when scraped. (A labelled gauge of the prometheus crate keeps
/// a full descriptor per worker, about half a kilobyte each.)
pub struct WorkerGauge {
    desc: Desc,
    values: RwLock<HashMap<std::sync::Arc<str>, f64>>,
}

impl WorkerGauge {
    fn new(name: &str, help: &str) -> WorkerGauge {
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            vec!["worker".to_owned()],
            HashMap::new(),
        )
        .unwrap_or_else(|e| panic!("metric {name}: {e}"));
        WorkerGauge {
            desc,
            values: RwLock::new(HashMap::new()),
        }
    }

    /// Sets `worker`'s value.
    pub fn set(&self, worker: &str, value: f64) {
        if let Ok(mut values) = self.values.write() {
            match values.get_mut(worker) {
                Some(slot) => *slot = value,
                None => {
                    values.insert(std::sync::Arc::from(worker), value);
                }
            }
        }
    }

    /// Sets `worker`'s value, sharing the caller's name instead of copying it.
    pub fn set_shared(&self, worker: &std::sync::Arc<str>, value: f64) {
        if let Ok(mut values) = self.values.write() {
            match values.get_mut(worker.as_ref()) {
                Some(slot) => *slot = value,
                None => {
                    values.insert(worker.clone(), value);
                }
            }
        }
    }

    /// Removes `worker`'s value.
    pub fn remove(&self, worker: &str) {
        if let Ok(mut values) = self.values.write() {
            values.remove(worker);
        }
    }

    /// Removes every value.
    pub fn reset(&self) {
        if let Ok(mut values) = self.values.write() {
            values.clear();
        }
    }

    /// `worker`'s value, if it has one.
    pub fn get(&self, worker: &str) -> Option<f64> {
        self.values.read().ok()?.get(worker).copied()
    }
}

impl Collector for WorkerGauge {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Ok(values) = self.values.read() else {
            return Vec::new();
        };
        if values.is_empty() {
            return Vec::new();
        }
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::GAUGE);
        let mut workers: Vec<(&std::sync::Arc<str>, &f64)> = values.iter().collect();
        workers.sort_by(|a, b| a.0.cmp(b.0));
        for (worker, value) in workers {
            let mut label = LabelPair::default();
            label.set_name("worker".to_owned());
            label.set_value(worker.to_string());
            let mut gauge = Gauge::default();
            gauge.set_value(*value);
            let mut metric = Metric::from_gauge(gauge);
            metric.set_label(vec![label]);
            family.mut_metric().push(metric);
        }
        vec![family]
    }
}

/// A per-worker gauge registered in the default registry. Leaked once per
/// process: the registry needs an owned collector and the roles a shared one.
fn worker_gauge(name: &'static str, help: &'static str) -> &'static WorkerGauge {
    let gauge: &'static WorkerGauge = Box::leak(Box::new(WorkerGauge::new(name, help)));
    let _ = prometheus::default_registry().register(Box::new(CollectorRef(gauge)));
    gauge
}

/// Registers a `&'static` collector.
struct CollectorRef(&'static WorkerGauge);

impl Collector for CollectorRef {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}")))
}

/// Run commands that entered the mesh, by worker and trigger. The scheduler
/// counts the fires it publishes (`trigger="schedule"`); the validator counts
/// every other trigger as it sees the command, so each run counts once.
pub static RUNS_SCHEDULED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        RUNS_SCHEDULED_TOTAL,
        "Run commands that entered the mesh, by worker and trigger.",
        &["worker", "trigger"],
    )
});

/// Fires that did not run, by worker and reason (overlap, dst_gap, paused,
/// missed, disabled, catch_up).
pub static FIRES_SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        FIRES_SKIPPED_TOTAL,
        "Scheduled fires that did not run, by worker and reason.",
        &["worker", "reason"],
    )
});

/// Attempts started by agents.
pub static RUNS_STARTED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        RUNS_STARTED_TOTAL,
        "Run attempts started by agents, by worker.",
        &["worker"],
    )
});

/// Attempts finished, by outcome.
pub static RUNS_FINISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        RUNS_FINISHED_TOTAL,
        "Run attempts finished, by worker and outcome.",
        &["worker", "outcome"],
    )
});

/// Attempt wall time.
pub static RUN_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        RUN_DURATION_SECONDS,
        "Wall time of run attempts, in seconds, by worker.",
        &["worker"],
        vec![
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            3600.0, 7200.0,
        ],
    )
});

/// Start minus scheduled instant.
pub static RUN_START_LAG: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        RUN_START_LAG_SECONDS,
        "Time from a run's scheduled instant to its worker process starting, in seconds, by worker.",
        &["worker"],
        vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            60.0, 300.0, 900.0, 3600.0,
        ],
    )
});

/// Attempts after the first.
pub static RUN_RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        RUN_RETRIES_TOTAL,
        "Run attempts after the first, by worker.",
        &["worker"],
    )
});

/// Verdicts given.
pub static VERDICTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        VERDICTS_TOTAL,
        "Terminal verdicts, by worker and verdict.",
        &["worker", "verdict"],
    )
});

/// Dead letters written.
pub static DEAD_LETTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        DEAD_LETTERS_TOTAL,
        "Dead letters written, by worker and reason.",
        &["worker", "reason"],
    )
});

/// Last valid run per worker.
pub static WORKER_LAST_SUCCESS: LazyLock<&'static WorkerGauge> = LazyLock::new(|| {
    worker_gauge(
        WORKER_LAST_SUCCESS_TIMESTAMP_SECONDS,
        "Unix time of each worker's last run with verdict valid.",
    )
});

/// Next fire per worker, exported by the leader scheduler only.
pub static WORKER_NEXT_RUN: LazyLock<&'static WorkerGauge> = LazyLock::new(|| {
    worker_gauge(
        WORKER_NEXT_RUN_TIMESTAMP_SECONDS,
        "Unix time of each enabled worker's next fire (leader scheduler only).",
    )
});

/// Gap between each worker's next two fires, exported by the leader.
pub static WORKER_INTERVAL: LazyLock<&'static WorkerGauge> = LazyLock::new(|| {
    worker_gauge(
        WORKER_INTERVAL_SECONDS,
        "Seconds between each worker's next two fires (leader scheduler only).",
    )
});

/// Runs without a verdict, per worker, as the validator sees them.
pub static WORKER_OPEN: LazyLock<&'static WorkerGauge> = LazyLock::new(|| {
    worker_gauge(
        WORKER_OPEN_RUNS,
        "Runs of each worker that have no verdict yet.",
    )
});

/// The workers this agent serves.
pub static AGENT_SERVES: LazyLock<&'static WorkerGauge> = LazyLock::new(|| {
    worker_gauge(
        AGENT_SERVING,
        "1 for each worker this agent pulls runs for.",
    )
});

/// Whether this scheduler leads.
pub static SCHEDULER_LEADER: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        SCHEDULER_IS_LEADER,
        "1 if this scheduler holds the leader lease, else 0.",
    )
});

/// Runs executing on this agent.
pub static AGENT_INFLIGHT: LazyLock<IntGauge> =
    LazyLock::new(|| gauge(AGENT_INFLIGHT_RUNS, "Runs executing on this agent now."));

/// Alerts sent, by sink.
pub static KLAXON_ALERTS_SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        KLAXON_ALERTS_SENT_TOTAL,
        "Alert notifications delivered, by sink.",
        &["sink"],
    )
});

/// Alerts a sink never took, after all retries.
pub static KLAXON_DELIVERY_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        KLAXON_DELIVERY_FAILURES_TOTAL,
        "Alert notifications a sink did not take after every retry, by sink.",
        &["sink"],
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_gauge_exports_one_series_per_worker_and_forgets_removed_ones() {
        let gauge = WorkerGauge::new("loom_test_worker_gauge", "A test gauge.");
        gauge.set("b", 2.0);
        gauge.set("a", 1.0);
        gauge.set("b", 3.0);
        let family = &gauge.collect()[0];
        assert_eq!(family.name(), "loom_test_worker_gauge");
        let series: Vec<(String, f64)> = family
            .get_metric()
            .iter()
            .map(|m| {
                (
                    m.get_label()[0].value().to_owned(),
                    m.get_gauge().get_value(),
                )
            })
            .collect();
        assert_eq!(series, [("a".to_owned(), 1.0), ("b".to_owned(), 3.0)]);
        gauge.remove("a");
        assert_eq!(gauge.collect()[0].get_metric().len(), 1);
        gauge.reset();
        assert!(gauge.collect().is_empty(), "no family without values");
    }
}
