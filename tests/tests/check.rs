//! `loom check` on the example deployment and on broken configurations.

use loom_testkit::loom_command;
use loom_tests::example_config;
use serde_json::Value;

fn check_json(from: &str) -> Value {
    let output = loom_command()
        .args(["check", "--json", "--from", from, "--config"])
        .arg(example_config())
        .output()
        .expect("run loom check");
    assert!(
        output.status.success(),
        "loom check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json output")
}

fn worker<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["name"] == name)
        .unwrap_or_else(|| panic!("no worker {name}"))
}

fn fires(report: &Value, name: &str) -> Vec<String> {
    worker(report, name)["next_fires"]
        .as_array()
        .expect("fires")
        .iter()
        .map(|f| f["utc"].as_str().expect("utc").to_owned())
        .collect()
}

#[test]
fn the_example_has_twelve_workers_with_their_flags() {
    let report = check_json("2026-11-23T00:00:00Z");
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 12);
    let disabled: Vec<&str> = workers
        .iter()
        .filter(|w| w["enabled"] == false)
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    assert_eq!(disabled, ["media-linkedin-events"]);
    for w in workers {
        assert_eq!(w["timezone"], "America/Chicago", "{}", w["name"]);
        assert_eq!(
            w["next_fires"].as_array().expect("fires").len(),
            3,
            "{}",
            w["name"]
        );
    }
}

#[test]
fn the_example_fires_at_the_right_instants() {
    // Monday 23 November 2026, Chicago on CST (UTC-6).
    let report = check_json("2026-11-23T00:00:00Z");
    assert_eq!(
        fires(&report, "pattern-memory-analyzer"),
        [
            "2026-11-23T09:00:00Z",
            "2026-11-24T09:00:00Z",
            "2026-11-25T09:00:00Z"
        ]
    );
    assert_eq!(
        fires(&report, "staleness-detector"),
        [
            "2026-11-29T10:00:00Z",
            "2026-12-06T10:00:00Z",
            "2026-12-13T10:00:00Z"
        ]
    );
    assert_eq!(
        fires(&report, "content-queue-scanner"),
        [
            "2026-11-23T09:00:00Z",
            "2026-11-30T09:00:00Z",
            "2026-12-07T09:00:00Z"
        ]
    );
    assert_eq!(
        fires(&report, "media-linkedin-events"),
        [
            "2026-11-30T00:00:00Z",
            "2026-12-07T00:00:00Z",
            "2026-12-14T00:00:00Z"
        ]
    );
    let local = worker(&report, "media-post-production")["next_fires"][0]["local"]
        .as_str()
        .expect("local");
    assert_eq!(local, "2026-11-23T16:00:00-06:00");
}

#[test]
fn fires_follow_chicago_across_the_fall_back() {
    // 1 November 2026 02:00 CDT -> 01:00 CST: a daily 06:00 moves from 11:00Z to 12:00Z.
    let report = check_json("2026-10-30T12:00:00Z");
    assert_eq!(
        fires(&report, "relationship-sentinel"),
        [
            "2026-10-31T11:00:00Z",
            "2026-11-01T12:00:00Z",
            "2026-11-02T12:00:00Z"
        ]
    );
}

#[test]
fn the_text_report_shows_descriptions_flags_and_both_times() {
    let output = loom_command()
        .args(["check", "--from", "2026-11-23T00:00:00Z", "--config"])
        .arg(example_config())
        .output()
        .expect("run loom check");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("12 workers, 11 enabled"), "{text}");
    assert!(text.contains("media-linkedin-events  [disabled]"), "{text}");
    assert!(text.contains("staleness-detector  [enabled]"), "{text}");
    assert!(
        text.contains("2026-11-29 04:00:00 CST  2026-11-29T10:00:00Z"),
        "{text}"
    );
}

fn broken(registry: &str) -> (tempfile::TempDir, std::process::Output) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("loom.toml"),
        "registry = \"workers.toml\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("workers.toml"), registry).expect("write");
    let output = loom_command()
        .current_dir(dir.path())
        .args(["check", "--config", "loom.toml"])
        .output()
        .expect("run loom check");
    (dir, output)
}

#[test]
fn a_broken_registry_exits_2_with_one_clear_sentence() {
    let (dir, output) = broken(
        "[workers.staleness-detector]\nschedule = \"0 4 * * Sun\"\ntimezone = \"America/Chicgo\"\ncommand = [\"true\"]\n",
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let registry = dir.path().join("workers.toml");
    assert_eq!(
        stderr.trim(),
        format!(
            "loom: {}: worker \"staleness-detector\": timezone \"America/Chicgo\" is not an IANA time zone (did you mean \"America/Chicago\"?)",
            registry.display()
        )
    );
    assert!(
        output.stdout.is_empty(),
        "nothing is printed for an invalid config"
    );
}

#[test]
fn a_missing_config_file_exits_2() {
    let output = loom_command()
        .args(["check", "--config", "/nonexistent/loom.toml"])
        .output()
        .expect("run loom check");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim(),
        "loom: /nonexistent/loom.toml: cannot read the file: no such file"
    );
}

#[test]
fn config_comes_from_loom_config_too() {
    let output = loom_command()
        .env("LOOM_CONFIG", example_config())
        .args(["check", "--json"])
        .output()
        .expect("run loom check");
    assert!(output.status.success());
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["workers"].as_array().expect("workers").len(), 12);
}

/// `loom check --json | true`: whatever reads the output is gone before
/// loom writes; loom ends as Unix tools do (by SIGPIPE), without a panic
/// message.
#[test]
fn a_closed_pipe_ends_a_listing_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let output = loom_command()
        .args(["check", "--json", "--config"])
        .arg(example_config())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run loom check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(nix::sys::signal::Signal::SIGPIPE as i32),
        "ended by SIGPIPE: {:?}, {stderr}",
        output.status
    );
}
