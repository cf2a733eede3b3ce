//! The Alertmanager sink against the real Alertmanager: a firing alert
//! becomes active with Loom's labels, and the resolved one ends it.

mod support;

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use loom_klaxon::group;
use loom_klaxon::sinks::{self, RetryPolicy};
use loom_protocol::DeadLetterReason;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use support::{Alertmanager, dead_letter};

/// The alerts Alertmanager lists at `path` (`/api/v2/alerts?...`).
async fn alerts(alertmanager: &Alertmanager, query: &str) -> Vec<Value> {
    let response = reqwest::get(format!("{}/api/v2/alerts{query}", alertmanager.url()))
        .await
        .expect("GET /api/v2/alerts");
    assert!(response.status().is_success(), "{}", response.status());
    response
        .json::<Vec<Value>>()
        .await
        .expect("a JSON array of alerts")
}

fn is_ours(alert: &Value, worker: &str) -> bool {
    alert["labels"]["alertname"] == "LoomRunFailed" && alert["labels"]["worker"] == worker
}

/// Polls until `check` holds for the listing at `query`, for at most 10 s.
async fn eventually(
    alertmanager: &Alertmanager,
    query: &str,
    what: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = alerts(alertmanager, query).await;
        if check(&listed) {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: Alertmanager lists {listed:#?}\nits log:\n{}",
            alertmanager.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_firing_alert_becomes_active_and_its_resolution_ends_it() {
    let alertmanager = Alertmanager::start();
    let sink = sinks::build(&loom_config::Sink::Alertmanager {
        url: alertmanager.url(),
    })
    .unwrap();
    assert_eq!(sink.name(), "alertmanager");
    let policy = RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
        max_attempts: 3,
    };
    let cancel = CancellationToken::new();

    let started = Utc::now() - TimeDelta::minutes(2);
    let letter = dead_letter("staleness-detector", DeadLetterReason::AgentLost, started);
    let (state, firing) =
        group::on_dead_letter(None, &letter, 3, 3, Duration::from_secs(3600), started);
    let firing = firing.expect("the third failure notifies");
    let attempts = sink
        .deliver_with_retries(&firing, policy, &cancel)
        .await
        .unwrap_or_else(|error| panic!("{error}\nits log:\n{}", alertmanager.log()));
    assert_eq!(attempts, 1);

    let listed = eventually(
        &alertmanager,
        "?active=true",
        "the firing alert is active",
        |listed| {
            listed.iter().any(|alert| {
                is_ours(alert, "staleness-detector") && alert["status"]["state"] == "active"
            })
        },
    )
    .await;
    let alert = listed
        .iter()
        .find(|alert| is_ours(alert, "staleness-detector"))
        .unwrap();
    assert_eq!(
        alert["labels"],
        serde_json::json!({
            "alertname": "LoomRunFailed",
            "worker": "staleness-detector",
            "reason": "agent_lost",
            "severity": "critical",
        })
    );
    assert_eq!(alert["annotations"]["summary"], firing.summary.as_str());
    assert_eq!(
        alert["annotations"]["description"],
        firing.description.as_str()
    );
    assert_eq!(alert["annotations"]["run_id"], firing.run_id.to_string());
    let starts_at: chrono::DateTime<Utc> = alert["startsAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        starts_at.timestamp_millis(),
        firing.starts_at.timestamp_millis()
    );

    let resolved = group::on_recovery(state, Utc::now()).expect("a notified group resolves");
    sink.deliver_with_retries(&resolved, policy, &cancel)
        .await
        .unwrap_or_else(|error| panic!("{error}\nits log:\n{}", alertmanager.log()));
    eventually(
        &alertmanager,
        "?active=true",
        "the resolved alert is no longer active",
        |listed| {
            !listed
                .iter()
                .any(|alert| is_ours(alert, "staleness-detector"))
        },
    )
    .await;
}

#[tokio::test]
async fn an_alert_alertmanager_refuses_is_not_retried() {
    let alertmanager = Alertmanager::start();
    let sink = sinks::build(&loom_config::Sink::Alertmanager {
        url: format!("{}/", alertmanager.url()),
    })
    .unwrap();
    // Alertmanager refuses an alert that ends before it starts with a 400
    // (the model never makes one; this forces a refusal).
    let letter = dead_letter("bad", DeadLetterReason::Failed, Utc::now());
    let mut alert = loom_klaxon::Alert::firing(&letter, 1, 0, Utc::now());
    alert.ends_at = Some(alert.starts_at - TimeDelta::minutes(1));
    let error = sink
        .deliver_with_retries(&alert, RetryPolicy::default(), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert!(
        error.to_string().starts_with(&format!(
            "alertmanager sink: {}/api/v2/alerts answered 400",
            alertmanager.url()
        )),
        "{error}"
    );
}
