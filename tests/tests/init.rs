//! `loom init` against a real nats-server: idempotent, and clear when the
//! server cannot be reached.

use std::collections::BTreeMap;
use std::path::Path;

use futures::TryStreamExt;
use loom_testkit::{NatsServer, loom_command};
use loom_tests::example_config;
use serde_json::Value;

fn init(url: &str, config: &Path, extra: &[&str]) -> std::process::Output {
    loom_command()
        .env("LOOM_NATS__URL", url)
        .args(["init", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .expect("run loom init")
}

/// Every stream's and consumer's configuration as the server reports it.
async fn snapshot(url: &str) -> BTreeMap<String, Value> {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = js.stream_names().try_collect().await.expect("stream names");
    let mut snapshot = BTreeMap::new();
    for name in names {
        let stream = js.get_stream(&name).await.expect("stream");
        let config = serde_json::to_value(&stream.cached_info().config).expect("json");
        snapshot.insert(format!("stream {name}"), config);
        let consumers: Vec<String> = stream
            .consumer_names()
            .try_collect()
            .await
            .expect("consumers");
        for consumer in consumers {
            let info = stream
                .consumer_info(&consumer)
                .await
                .expect("consumer info");
            let config = serde_json::to_value(&info.config).expect("json");
            snapshot.insert(format!("consumer {name}/{consumer}"), config);
        }
    }
    snapshot
}

#[tokio::test]
async fn init_twice_leaves_the_same_topology() {
    let server = NatsServer::start();
    let first = init(&server.url(), &example_config(), &["--json"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report: Value = serde_json::from_slice(&first.stdout).expect("json");
    let applied = report["applied"].as_array().expect("applied");
    assert!(
        applied.iter().all(|item| item["action"] == "created"),
        "{report}"
    );
    let before = snapshot(&server.url()).await;

    let expected_streams = [
        "LOOM_RUNS",
        "LOOM_RESULTS",
        "LOOM_DLQ",
        "LOOM_ADVISORIES",
        "KV_loom_leader",
        "KV_loom_workers",
        "KV_loom_runs",
        "OBJ_loom_enforcement",
    ];
    for stream in expected_streams {
        assert!(
            before.contains_key(&format!("stream {stream}")),
            "missing {stream}: {:?}",
            before.keys()
        );
    }
    // One shared durable consumer per worker, plus the validator's view of every run.
    assert!(before.contains_key("consumer LOOM_RUNS/run-staleness-detector"));
    assert!(before.contains_key("consumer LOOM_RUNS/validator"));
    assert_eq!(
        before
            .keys()
            .filter(|k| k.starts_with("consumer LOOM_RUNS/run-"))
            .count(),
        12
    );
    assert_eq!(before["stream LOOM_RUNS"]["retention"], "interest");

    let second = init(&server.url(), &example_config(), &[]);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(text.contains("0 created, 0 updated"), "{text}");
    let after = snapshot(&server.url()).await;
    assert_eq!(before, after, "a second init changed the topology");
}

#[tokio::test]
async fn init_updates_a_changed_consumer_in_place_and_reports_stale_ones() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("loom.toml");
    std::fs::write(
        &config,
        "[workers.a]\ncommand = [\"true\"]\n[workers.b]\ncommand = [\"true\"]\n",
    )
    .expect("write");
    assert!(init(&server.url(), &config, &[]).status.success());

    // `a` gets more retries (a new max_deliver); `b` leaves the registry.
    std::fs::write(&config, "[workers.a]\ncommand = [\"true\"]\nretries = 5\n").expect("write");
    let output = init(&server.url(), &config, &[]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("LOOM_RUNS/run-a                  updated"),
        "{text}"
    );
    assert!(
        text.contains("LOOM_RUNS/run-b                  stale"),
        "{text}"
    );
    let after = snapshot(&server.url()).await;
    assert_eq!(after["consumer LOOM_RUNS/run-a"]["max_deliver"], 5 + 1 + 2);
    assert!(
        after.contains_key("consumer LOOM_RUNS/run-b"),
        "stale consumers stay without --prune"
    );

    let output = init(&server.url(), &config, &["--prune"]);
    assert!(output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("LOOM_RUNS/run-b                  deleted")
    );
    assert!(
        !snapshot(&server.url())
            .await
            .contains_key("consumer LOOM_RUNS/run-b")
    );
}

#[test]
fn init_against_an_unreachable_server_exits_3() {
    let port = loom_testkit::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let output = init(&url, &example_config(), &[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr.lines().last().expect("an error line");
    assert!(
        line.starts_with(&format!(
            "loom: cannot reach the mesh: cannot connect to NATS at {url}: "
        )),
        "{stderr}"
    );
}

#[test]
fn init_without_a_url_or_running_loom_up_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("loom.toml");
    std::fs::write(&config, "").expect("write");
    let output = loom_command()
        .args(["init", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("nats.url is not set and no `loom up` is running with data dir"),
        "{stderr}"
    );
}
