//! The log sink: one structured event per alert, `warn` when firing and
//! `info` when resolved, captured by a subscriber of the test's own (alone
//! in its test binary, so no other test's events mix in).

mod support;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use chrono::TimeDelta;
use loom_klaxon::Alert;
use loom_klaxon::sinks::{self, RetryPolicy};
use loom_protocol::DeadLetterReason;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use support::{dead_letter, t0};

type Events = Arc<Mutex<Vec<(Level, BTreeMap<String, String>)>>>;

/// Records every event's level and fields.
struct Capture {
    events: Events,
}

struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(BTreeMap::new());
        event.record(&mut fields);
        self.events
            .lock()
            .expect("events")
            .push((*event.metadata().level(), fields.0));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

#[tokio::test]
async fn firing_logs_a_warning_and_resolved_an_info_event_with_the_alert_fields() {
    let events = Events::default();
    let _guard = tracing::subscriber::set_default(Capture {
        events: events.clone(),
    });
    let sink = sinks::build(&loom_config::Sink::Log).unwrap();
    assert_eq!(sink.name(), "log");

    let letter = dead_letter("staleness-detector", DeadLetterReason::Missed, t0());
    let firing = Alert::firing(&letter, 3, 1, t0());
    let attempts = sink
        .deliver_with_retries(&firing, RetryPolicy::default(), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(attempts, 1);
    sink.deliver(&Alert::resolved(&firing, t0() + TimeDelta::minutes(1)))
        .await
        .unwrap();

    let events = events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:#?}");
    for ((level, fields), (expected_level, message)) in events.iter().zip([
        (Level::WARN, "alert firing"),
        (Level::INFO, "alert resolved"),
    ]) {
        assert_eq!(*level, expected_level);
        assert_eq!(fields["message"], message);
        assert_eq!(fields["worker"], "staleness-detector");
        assert_eq!(fields["reason"], "missed");
        assert_eq!(fields["severity"], "critical");
        assert_eq!(fields["run_id"], letter.run_id.to_string());
        assert_eq!(
            fields["summary"],
            "worker staleness-detector missed a scheduled run: exit 1 after 3 attempts"
        );
        assert_eq!(fields["consecutive_failures"], "3");
        assert_eq!(fields["suppressed"], "1");
    }
}
