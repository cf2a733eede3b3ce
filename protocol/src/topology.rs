//! The JetStream topology of a mesh, described as data: which streams,
//! consumers, key-value buckets and object stores exist, and with which
//! policies. The `broker` crate applies it; `loom init` prints it.
//!
//! Why these policies (DESIGN §3):
//!
//! - **Runs** (`<P>_RUNS`, `<prefix>.run.*`) use *interest* retention. A
//!   work-queue stream would allow only one consumer per subject, but two
//!   parties must read every run command: the agents (through one durable
//!   consumer per worker, shared by every agent that serves it) and the
//!   validator (one durable on all run subjects, to start each run's
//!   watchdog and to reject malformed or unknown runs). With interest
//!   retention a run stays stored until *both* have acknowledged it, so a run
//!   published before any agent is up waits for one, and a finished run is
//!   removed, so re-creating or upgrading a consumer never replays it. Because
//!   the consumers are durable and created by `loom init` (not by agents on
//!   start), interest exists before the first run is published. A run that
//!   exhausts its deliveries stays in the stream (JetStream keeps it for
//!   dead-lettering) until the validator moves it to the dead-letter stream.
//!   The duplicate window makes `Nats-Msg-Id: <worker>@<instant>` drop a fire
//!   published twice across a leader failover.
//! - **Results** (`<P>_RESULTS`: `<prefix>.result.*`, `<prefix>.verdict.*`,
//!   `<prefix>.skipped.*` and `<prefix>.cancel.*`) use *limits* retention for
//!   the configured history time: the run history that `loom runs` and the
//!   dashboard read, including the ledger of fires that did not run, and the
//!   cancel requests agents replay when they start.
//! - **Dead letters** (`<P>_DLQ`, `<prefix>.dlq.*`) use limits retention with
//!   a longer age: dead letters are evidence and are replayed from here.
//! - **Advisories** (`<P>_ADVISORIES`) capture JetStream's max-deliveries
//!   advisories for the run stream, which are otherwise fire-and-forget core
//!   messages lost while the validator is down.
//! - **Buckets**: the leader lease (entries expire after the lease TTL; limit
//!   markers let standbys see the expiry), per-worker state, run state,
//!   agent presence (entries expire when an agent dies), and the object
//!   store of enforcement bundles.
//!
//! Streams take their replica count from configuration: R1 on one machine,
//! R3 in a cluster.

use std::time::Duration;

use crate::subjects::{SubjectKind, Subjects};

/// Settings of a mesh that shape its topology (from `loom.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct MeshSettings {
    /// Subject prefix, e.g. `loom`; stream and bucket names derive from it.
    pub prefix: String,
    /// Replicas of every stream and bucket (1 or 3, typically).
    pub replicas: usize,
    /// How long an unconsumed run command is kept.
    pub runs_max_age: Duration,
    /// How long results, verdicts and run state are kept (the run history).
    pub history: Duration,
    /// How long dead letters are kept.
    pub dead_letter_max_age: Duration,
    /// The window within which a second publish of the same `Nats-Msg-Id` is
    /// dropped; must cover the longest leader failover.
    pub duplicate_window: Duration,
    /// TTL of the scheduler's leader lease.
    pub lease_ttl: Duration,
}

/// The per-worker part of the topology: its run consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConsumer {
    /// The worker's registry name.
    pub worker: String,
    /// How long an agent may hold a run without a progress ack before
    /// JetStream redelivers it to another agent.
    pub ack_wait: Duration,
    /// Deliveries before JetStream gives up on a run (attempts plus the
    /// redeliveries allowed for agents lost mid-run).
    pub max_deliver: i64,
    /// Runs of this worker in flight at once across the whole mesh.
    pub max_ack_pending: i64,
}

/// Retention policy of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Kept until every interested consumer acknowledged it (or max age).
    Interest,
    /// Kept until its max age.
    Limits,
}

/// One stream.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// Stream name, e.g. `LOOM_RUNS`.
    pub name: String,
    /// What it holds, for people reading `nats stream info`.
    pub description: String,
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// Retention policy.
    pub retention: Retention,
    /// Maximum age of a message.
    pub max_age: Duration,
    /// Duplicate window for `Nats-Msg-Id`.
    pub duplicate_window: Duration,
    /// Replica count.
    pub replicas: usize,
}

/// One durable pull consumer. A new consumer starts with every message still
/// stored: with interest retention those are exactly the runs not yet taken.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: String,
    /// Durable name.
    pub durable: String,
    /// What it is for.
    pub description: String,
    /// Subject filter.
    pub filter_subject: String,
    /// Ack wait.
    pub ack_wait: Duration,
    /// Max deliveries; -1 for unlimited.
    pub max_deliver: i64,
    /// Max unacknowledged messages in flight.
    pub max_ack_pending: i64,
}

/// One key-value bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSpec {
    /// Bucket name.
    pub name: String,
    /// What it holds.
    pub description: String,
    /// Revisions kept per key.
    pub history: i64,
    /// Entry TTL; zero for none.
    pub max_age: Duration,
    /// Replica count.
    pub replicas: usize,
    /// How long the marker of a TTL expiry stays (so watchers see it), if any.
    pub limit_markers: Option<Duration>,
}

/// One object store.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStoreSpec {
    /// Bucket name.
    pub name: String,
    /// What it holds.
    pub description: String,
    /// Replica count.
    pub replicas: usize,
}

/// Everything a mesh needs in JetStream.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Streams, in the order they must be created.
    pub streams: Vec<StreamSpec>,
    /// Durable consumers (their streams come first in `streams`).
    pub consumers: Vec<ConsumerSpec>,
    /// Key-value buckets.
    pub buckets: Vec<BucketSpec>,
    /// Object stores.
    pub object_stores: Vec<ObjectStoreSpec>,
}

/// The names of a mesh's streams, consumers and buckets, derived from its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
    upper: String,
}

impl Names {
    /// Names for the mesh with subject prefix `prefix`.
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_owned(),
            upper: prefix.to_ascii_uppercase().replace('-', "_"),
        }
    }

    /// `<P>_RUNS`.
    pub fn runs_stream(&self) -> String {
        format!("{}_RUNS", self.upper)
    }

    /// `<P>_RESULTS`.
    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.upper)
    }

    /// `<P>_DLQ`.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DLQ", self.upper)
    }

    /// `<P>_ADVISORIES`.
    pub fn advisories_stream(&self) -> String {
        format!("{}_ADVISORIES", self.upper)
    }

    /// The durable consumer of a worker's runs, shared by all its agents: `run-<worker>`.
    pub fn run_consumer(&self, worker: &str) -> String {
        format!("run-{worker}")
    }

    /// The validator's durable consumers (one per stream it reads): `validator`.
    pub fn validator_consumer(&self) -> String {
        "validator".to_owned()
    }

    /// Klaxon's durable consumer of dead letters: `klaxon`.
    pub fn klaxon_consumer(&self) -> String {
        "klaxon".to_owned()
    }

    /// Bucket of the scheduler's leader lease: `<prefix>_leader`.
    pub fn leader_bucket(&self) -> String {
        format!("{}_leader", self.prefix)
    }

    /// Bucket of per-worker state (paused, last fire, last verdict): `<prefix>_workers`.
    pub fn workers_bucket(&self) -> String {
        format!("{}_workers", self.prefix)
    }

    /// Bucket of run state: `<prefix>_runs`.
    pub fn runs_bucket(&self) -> String {
        format!("{}_runs", self.prefix)
    }

    /// Bucket of agent presence (what each agent serves and runs): `<prefix>_agents`.
    pub fn agents_bucket(&self) -> String {
        format!("{}_agents", self.prefix)
    }

    /// Bucket of workflow runs: `<prefix>_workflows`.
    pub fn workflows_bucket(&self) -> String {
        format!("{}_workflows", self.prefix)
    }

    /// The leader scheduler's durable consumer of workflow starts: `workflows`.
    pub fn workflow_consumer(&self) -> String {
        "workflows".to_owned()
    }

    /// Object store of enforcement bundles, keyed by digest: `<prefix>_enforcement`.
    pub fn enforcement_store(&self) -> String {
        format!("{}_enforcement", self.prefix)
    }
}

/// How long the marker left by a lease's expiry stays visible to watchers.
const LEASE_EXPIRY_MARKER: Duration = Duration::from_secs(5);

impl Topology {
    /// The topology of a mesh with these settings serving these workers.
    pub fn new(settings: &MeshSettings, workers: &[WorkerConsumer]) -> Topology {
        let names = Names::new(&settings.prefix);
        let subjects = Subjects::new(settings.prefix.clone());
        let replicas = settings.replicas;
        let stream =
            |name: String, description: &str, subjects: Vec<String>, retention, max_age| {
                StreamSpec {
                    name,
                    description: description.to_owned(),
                    subjects,
                    retention,
                    max_age,
                    duplicate_window: settings.duplicate_window.min(max_age),
                    replicas,
                }
            };
        let streams = vec![
            stream(
                names.runs_stream(),
                "Loom run commands, kept until an agent and the validator have both taken them",
                vec![subjects.all(SubjectKind::Run)],
                Retention::Interest,
                settings.runs_max_age,
            ),
            stream(
                names.results_stream(),
                "Loom run results, verdicts, skipped fires, cancel requests and workflow starts: the run history",
                vec![
                    subjects.all(SubjectKind::Result),
                    subjects.all(SubjectKind::Verdict),
                    subjects.all(SubjectKind::Skipped),
                    subjects.all(SubjectKind::Cancel),
                    subjects.all(SubjectKind::WorkflowStart),
                ],
                Retention::Limits,
                settings.history,
            ),
            stream(
                names.dead_letter_stream(),
                "Loom dead letters: runs that finally failed, with every attempt",
                vec![subjects.all(SubjectKind::DeadLetter)],
                Retention::Limits,
                settings.dead_letter_max_age,
            ),
            stream(
                names.advisories_stream(),
                "JetStream max-deliveries advisories of Loom's run consumers",
                vec![Subjects::max_deliveries_advisories(&names.runs_stream())],
                Retention::Limits,
                settings.history,
            ),
        ];

        let mut consumers: Vec<ConsumerSpec> = workers
            .iter()
            .map(|worker| ConsumerSpec {
                stream: names.runs_stream(),
                durable: names.run_consumer(&worker.worker),
                description: format!("runs of worker {}, shared by its agents", worker.worker),
                filter_subject: subjects.run(&worker.worker),
                ack_wait: worker.ack_wait,
                max_deliver: worker.max_deliver,
                max_ack_pending: worker.max_ack_pending,
            })
            .collect();
        let reader =
            |stream: String, durable: String, description: &str, filter: String| ConsumerSpec {
                stream,
                durable,
                description: description.to_owned(),
                filter_subject: filter,
                ack_wait: Duration::from_secs(30),
                max_deliver: -1,
                max_ack_pending: 10_000,
            };
        consumers.extend([
            reader(
                names.runs_stream(),
                names.validator_consumer(),
                "every run command, for the validator's watchdog",
                subjects.all(SubjectKind::Run),
            ),
            reader(
                names.results_stream(),
                names.validator_consumer(),
                "every run result, for the validator's verdicts",
                subjects.all(SubjectKind::Result),
            ),
            reader(
                names.advisories_stream(),
                names.validator_consumer(),
                "max-deliveries advisories, for agent_lost dead letters",
                Subjects::max_deliveries_advisories(&names.runs_stream()),
            ),
            reader(
                names.dead_letter_stream(),
                names.klaxon_consumer(),
                "every dead letter, for Klaxon's alerts",
                subjects.all(SubjectKind::DeadLetter),
            ),
            reader(
                names.results_stream(),
                names.klaxon_consumer(),
                "every verdict, for Klaxon to resolve alerts on recovery",
                subjects.all(SubjectKind::Verdict),
            ),
            reader(
                names.results_stream(),
                names.workflow_consumer(),
                "workflow starts, for the leader scheduler",
                subjects.all(SubjectKind::WorkflowStart),
            ),
        ]);

        let bucket = |name: String, description: &str, max_age, limit_markers| BucketSpec {
            name,
            description: description.to_owned(),
            history: 1,
            max_age,
            replicas,
            limit_markers,
        };
        let buckets = vec![
            bucket(
                names.leader_bucket(),
                "the scheduler leader lease",
                settings.lease_ttl,
                Some(LEASE_EXPIRY_MARKER),
            ),
            bucket(
                names.workers_bucket(),
                "per-worker state: paused, last fire, last verdict",
                Duration::ZERO,
                None,
            ),
            bucket(
                names.runs_bucket(),
                "run state: every run until its terminal verdict, then its history",
                settings.history,
                None,
            ),
            bucket(
                names.workflows_bucket(),
                "workflow runs: rounds, tasks, the strategist's decisions, answers",
                settings.history,
                None,
            ),
            bucket(
                names.agents_bucket(),
                "agent presence: what each agent serves and runs; entries expire when an agent dies",
                crate::state::PRESENCE_TTL,
                None,
            ),
        ];
        let object_stores = vec![ObjectStoreSpec {
            name: names.enforcement_store(),
            description: "enforcement bundles, named by their SHA-256 digest".to_owned(),
            replicas,
        }];
        Topology {
            streams,
            consumers,
            buckets,
            object_stores,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MeshSettings {
        MeshSettings {
            prefix: "loom".into(),
            replicas: 1,
            runs_max_age: Duration::from_secs(7 * 86400),
            history: Duration::from_secs(14 * 86400),
            dead_letter_max_age: Duration::from_secs(30 * 86400),
            duplicate_window: Duration::from_secs(120),
            lease_ttl: Duration::from_secs(5),
        }
    }

    fn worker(name: &str) -> WorkerConsumer {
        WorkerConsumer {
            worker: name.into(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            max_ack_pending: 1,
        }
    }

    #[test]
    fn streams_carry_the_contract_names_and_subjects() {
        let topology = Topology::new(&settings(), &[worker("a")]);
        let names: Vec<_> = topology.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["LOOM_RUNS", "LOOM_RESULTS", "LOOM_DLQ", "LOOM_ADVISORIES"]
        );
        assert_eq!(topology.streams[0].subjects, ["loom.run.*"]);
        assert_eq!(topology.streams[0].retention, Retention::Interest);
        assert_eq!(
            topology.streams[1].subjects,
            [
                "loom.result.*",
                "loom.verdict.*",
                "loom.skipped.*",
                "loom.cancel.*",
                "loom.workflow.start.*"
            ]
        );
        assert_eq!(topology.streams[2].subjects, ["loom.dlq.*"]);
        assert_eq!(
            topology.streams[3].subjects,
            ["$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.LOOM_RUNS.*"]
        );
    }

    #[test]
    fn every_worker_gets_one_durable_run_consumer_and_the_validator_sees_all_runs() {
        let topology = Topology::new(&settings(), &[worker("a"), worker("b-2")]);
        let run_consumers: Vec<_> = topology
            .consumers
            .iter()
            .filter(|c| c.stream == "LOOM_RUNS")
            .map(|c| (c.durable.as_str(), c.filter_subject.as_str()))
            .collect();
        assert_eq!(
            run_consumers,
            [
                ("run-a", "loom.run.a"),
                ("run-b-2", "loom.run.b-2"),
                ("validator", "loom.run.*")
            ]
        );
    }

    #[test]
    fn duplicate_window_never_exceeds_a_streams_max_age() {
        let mut settings = settings();
        settings.history = Duration::from_secs(60);
        settings.duplicate_window = Duration::from_secs(120);
        let topology = Topology::new(&settings, &[]);
        assert_eq!(
            topology.streams[1].duplicate_window,
            Duration::from_secs(60)
        );
        assert_eq!(
            topology.streams[0].duplicate_window,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn names_follow_the_prefix() {
        let topology = Topology::new(
            &MeshSettings {
                prefix: "acme-ops".into(),
                ..settings()
            },
            &[],
        );
        assert_eq!(topology.streams[0].name, "ACME_OPS_RUNS");
        assert_eq!(topology.streams[0].subjects, ["acme-ops.run.*"]);
        assert_eq!(topology.buckets[0].name, "acme-ops_leader");
        assert_eq!(topology.object_stores[0].name, "acme-ops_enforcement");
    }
}
