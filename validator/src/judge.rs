//! Judging a run's last attempt: its outcome, its enforcement digest, and
//! its output against the worker's contract. Pure functions of values, so
//! every rule is tested with data.

use std::path::Path;

use loom_config::{OutputFormat, Worker};
use loom_protocol::{DeadLetterReason, Outcome, RunResult, VerdictKind};

/// A verdict and one sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// The verdict.
    pub verdict: VerdictKind,
    /// Why.
    pub reason: String,
}

impl Judgement {
    fn new(verdict: VerdictKind, reason: impl Into<String>) -> Self {
        Judgement {
            verdict,
            reason: reason.into(),
        }
    }

    /// The dead letter reason this judgement calls for; `None` for valid
    /// and cancelled runs (a cancellation is an operator's act, not a failure).
    pub fn dead_letter_reason(&self, result: &RunResult) -> Option<DeadLetterReason> {
        match self.verdict {
            VerdictKind::Valid | VerdictKind::Cancelled => None,
            VerdictKind::InvalidOutput => Some(DeadLetterReason::InvalidOutput),
            VerdictKind::TimedOut => Some(DeadLetterReason::TimedOut),
            VerdictKind::EnforcementViolation => Some(DeadLetterReason::EnforcementViolation),
            VerdictKind::Lost => Some(DeadLetterReason::Lost),
            VerdictKind::Rejected => Some(DeadLetterReason::Rejected),
            VerdictKind::Failed if result.outcome == Outcome::EnforcementUnavailable => {
                Some(DeadLetterReason::EnforcementUnavailable)
            }
            VerdictKind::Failed => Some(DeadLetterReason::Failed),
        }
    }
}

/// Judges the last attempt of a run of `worker` (`None` when the registry no
/// longer has it: only the outcome counts then). `expected_digest` is the
/// enforcement digest the run was scheduled with (or, for a run published
/// without one, the bundle's current digest).
pub fn judge(
    worker: Option<&Worker>,
    result: &RunResult,
    expected_digest: Option<&str>,
) -> Judgement {
    match result.outcome {
        Outcome::Cancelled => {
            let why = last_line(&result.stderr_tail);
            let reason = if why.starts_with("cancelled") {
                why
            } else {
                "cancelled".to_owned()
            };
            return Judgement::new(VerdictKind::Cancelled, reason);
        }
        Outcome::TimedOut => {
            let limit = worker
                .map(|w| format!(" of {}", humantime::format_duration(w.timeout)))
                .unwrap_or_default();
            return Judgement::new(
                VerdictKind::TimedOut,
                format!(
                    "attempt {} ran past its timeout{limit} and was terminated",
                    result.attempt
                ),
            );
        }
        Outcome::EnforcementUnavailable => {
            return Judgement::new(
                VerdictKind::Failed,
                format!(
                    "enforcement unavailable: {}",
                    first_line(&result.stderr_tail, "the bundle could not be loaded")
                ),
            );
        }
        Outcome::Failed => {
            let how = match result.exit_code {
                Some(code) => format!("exited {code}"),
                None => "did not exit normally".to_owned(),
            };
            let why = last_line(&result.stderr_tail);
            let why = if why.is_empty() {
                String::new()
            } else {
                format!(": {why}")
            };
            return Judgement::new(
                VerdictKind::Failed,
                format!("attempt {} {how}{why}", result.attempt),
            );
        }
        Outcome::Succeeded => {}
    }
    if let Some(expected) = expected_digest {
        let actual = result.enforcement_digest.as_deref().unwrap_or("none");
        if actual != expected {
            let detail = if actual.ends_with("+modified") {
                "the worker modified its enforcement bundle".to_owned()
            } else {
                format!("it ran with enforcement digest {actual}, not the scheduled {expected}")
            };
            return Judgement::new(VerdictKind::EnforcementViolation, detail);
        }
    }
    let Some(worker) = worker else {
        return Judgement::new(
            VerdictKind::Valid,
            "exited 0 (the worker is no longer in the registry; no contract checked)",
        );
    };
    match check_output(worker, result) {
        Ok(summary) => Judgement::new(VerdictKind::Valid, summary),
        Err(problem) => Judgement::new(VerdictKind::InvalidOutput, problem),
    }
}

/// Checks stdout against the worker's output contract: `Ok` with a short
/// summary of the output, or `Err` with what breaks the contract.
pub fn check_output(worker: &Worker, result: &RunResult) -> Result<String, String> {
    let contract = &worker.output;
    if result.stdout_bytes > contract.max_bytes {
        return Err(format!(
            "stdout is {} bytes, more than output.max_bytes ({})",
            result.stdout_bytes, contract.max_bytes
        ));
    }
    match contract.format {
        OutputFormat::Text => Ok("exited 0".to_owned()),
        OutputFormat::StatusLine => {
            let line = last_line(&result.stdout_tail);
            if line.is_empty() {
                return Err(
                    "stdout is empty; the last line must be `STATUS: <word> [detail]`".to_owned(),
                );
            }
            match parse_status_line(&line) {
                Some(_) => Ok(line),
                None => Err(format!(
                    "the last line of stdout is {:?}, not `STATUS: <word> [detail]`",
                    truncate(&line, 120)
                )),
            }
        }
        OutputFormat::Json => {
            if result.stdout_bytes > result.stdout_tail.len() as u64 {
                return Err(format!(
                    "stdout is {} bytes, more than the agent keeps ({}), so it cannot be checked as one JSON object",
                    result.stdout_bytes,
                    result.stdout_tail.len()
                ));
            }
            let value: serde_json::Value = serde_json::from_str(result.stdout_tail.trim())
                .map_err(|e| format!("stdout is not one JSON object: {e}"))?;
            if !value.is_object() {
                return Err(format!(
                    "stdout is JSON but not an object (it is {})",
                    kind_of(&value)
                ));
            }
            if let Some(schema) = &contract.schema {
                check_schema(schema, &value)?;
            }
            Ok("one JSON object matching the contract".to_owned())
        }
    }
}

/// `STATUS: <word> [detail]` → (word, detail).
pub fn parse_status_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim().strip_prefix("STATUS:")?.trim_start();
    let (word, detail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let valid = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == ':');
    valid.then_some((word.trim_end_matches(':'), detail.trim()))
}

fn check_schema(schema_file: &Path, value: &serde_json::Value) -> Result<(), String> {
    let text = std::fs::read_to_string(schema_file).map_err(|e| {
        format!(
            "the output schema {} cannot be read: {e}",
            schema_file.display()
        )
    })?;
    let schema: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the output schema {} is not JSON: {e}",
            schema_file.display()
        )
    })?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        format!(
            "the output schema {} is not a valid JSON Schema: {e}",
            schema_file.display()
        )
    })?;
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(3)
        .map(|error| {
            let path = error.instance_path().to_string();
            let field = if path.is_empty() {
                "the output".to_owned()
            } else {
                format!("field {path}")
            };
            format!("{field}: {error}")
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "stdout does not match the output schema: {}",
            problems.join("; ")
        ))
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The last non-empty line of `text`, trimmed.
pub fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .to_owned()
}

fn first_line(text: &str, fallback: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(fallback)
        .to_owned()
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use uuid::Uuid;

    fn worker(format: &str, extra: &str) -> Worker {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("schema.json"),
            r#"{"type":"object","required":["count"],"properties":{"count":{"type":"integer","minimum":0}}}"#,
        )
        .expect("schema");
        let file = dir.path().join("loom.toml");
        std::fs::write(
            &file,
            format!("[workers.w]\ncommand = [\"true\"]\ntimeout = \"10m\"\n{extra}\n[workers.w.output]\nformat = \"{format}\"\nmax_bytes = 100\n"),
        )
        .expect("write");
        let config = loom_config::Loader::new(Some(file))
            .with_env(Vec::<(String, String)>::new())
            .load()
            .expect("config");
        let worker = config.registry.get("w").expect("w").clone();
        // Keep the schema file alive for the test's duration.
        std::mem::forget(dir);
        worker
    }

    fn result(outcome: Outcome, exit_code: Option<i32>, stdout: &str) -> RunResult {
        RunResult {
            v: 1,
            run_id: Uuid::nil(),
            worker: "w".into(),
            attempt: 3,
            agent_id: "a".into(),
            started_at: Utc::now(),
            finished_at: Utc::now(),
            outcome,
            exit_code,
            stdout_tail: stdout.into(),
            stderr_tail: "boom\nreal reason\n".into(),
            stdout_bytes: stdout.len() as u64,
            stderr_bytes: 16,
            cpu_ms: 0,
            max_rss_kb: 0,
            enforcement_digest: None,
            cost: Default::default(),
            last_attempt: true,
        }
    }

    fn verdict(worker: &Worker, result: &RunResult) -> (VerdictKind, String) {
        let judgement = judge(Some(worker), result, None);
        (judgement.verdict, judgement.reason)
    }

    #[test]
    fn status_line_contract() {
        let w = worker("status-line", "");
        let ok = result(
            Outcome::Succeeded,
            Some(0),
            "working\nSTATUS: ok 3 stale documents\n\n",
        );
        assert_eq!(
            verdict(&w, &ok),
            (VerdictKind::Valid, "STATUS: ok 3 stale documents".into())
        );
        let missing = result(Outcome::Succeeded, Some(0), "done\n");
        assert_eq!(
            verdict(&w, &missing),
            (
                VerdictKind::InvalidOutput,
                "the last line of stdout is \"done\", not `STATUS: <word> [detail]`".into()
            )
        );
        let empty = result(Outcome::Succeeded, Some(0), "");
        assert_eq!(verdict(&w, &empty).0, VerdictKind::InvalidOutput);
        let malformed = result(Outcome::Succeeded, Some(0), "STATUS:\n");
        assert_eq!(verdict(&w, &malformed).0, VerdictKind::InvalidOutput);
    }

    #[test]
    fn status_lines_parse_word_and_detail() {
        assert_eq!(parse_status_line("STATUS: ok"), Some(("ok", "")));
        assert_eq!(
            parse_status_line("STATUS: warn 2 of 5 stale"),
            Some(("warn", "2 of 5 stale"))
        );
        assert_eq!(
            parse_status_line("STATUS: CLARIFICATION_NEEDED: which repo?"),
            Some(("CLARIFICATION_NEEDED", "which repo?"))
        );
        assert_eq!(parse_status_line("status: ok"), None);
        assert_eq!(parse_status_line("STATUS: !!"), None);
    }

    #[test]
    fn json_contract_with_schema_names_the_failing_field() {
        let w = worker("json", "");
        // No schema configured: any single object is valid.
        let ok = result(Outcome::Succeeded, Some(0), "{\"count\": 3}\n");
        assert_eq!(verdict(&w, &ok).0, VerdictKind::Valid);
        let two = result(Outcome::Succeeded, Some(0), "{\"a\":1}\n{\"b\":2}\n");
        assert!(
            verdict(&w, &two)
                .1
                .starts_with("stdout is not one JSON object: trailing characters"),
            "{:?}",
            verdict(&w, &two)
        );
        let array = result(Outcome::Succeeded, Some(0), "[1]");
        assert_eq!(
            verdict(&w, &array).1,
            "stdout is JSON but not an object (it is an array)"
        );

        let mut with_schema = w.clone();
        with_schema.output.schema = Some(
            std::env::temp_dir().join(format!("loom-judge-schema-{}.json", std::process::id())),
        );
        std::fs::write(
            with_schema.output.schema.as_ref().expect("path"),
            r#"{"type":"object","required":["count"],"properties":{"count":{"type":"integer","minimum":0}}}"#,
        )
        .expect("schema");
        let wrong = result(Outcome::Succeeded, Some(0), "{\"count\": \"three\"}");
        let (kind, reason) = verdict(&with_schema, &wrong);
        assert_eq!(kind, VerdictKind::InvalidOutput);
        assert!(
            reason.starts_with("stdout does not match the output schema: field /count: "),
            "{reason}"
        );
        let missing = result(Outcome::Succeeded, Some(0), "{}");
        assert!(
            verdict(&with_schema, &missing)
                .1
                .contains("\"count\" is a required property"),
            "{:?}",
            verdict(&with_schema, &missing)
        );
        assert_eq!(
            verdict(
                &with_schema,
                &result(Outcome::Succeeded, Some(0), "{\"count\": 4}")
            )
            .0,
            VerdictKind::Valid
        );
    }

    #[test]
    fn max_bytes_is_part_of_the_contract() {
        let w = worker("text", "");
        let mut big = result(Outcome::Succeeded, Some(0), "x");
        big.stdout_bytes = 5000;
        assert_eq!(
            verdict(&w, &big),
            (
                VerdictKind::InvalidOutput,
                "stdout is 5000 bytes, more than output.max_bytes (100)".into()
            )
        );
    }

    #[test]
    fn outcomes_map_to_verdicts() {
        let w = worker("text", "");
        assert_eq!(
            verdict(&w, &result(Outcome::Failed, Some(1), "")),
            (
                VerdictKind::Failed,
                "attempt 3 exited 1: real reason".into()
            )
        );
        assert_eq!(
            verdict(&w, &result(Outcome::TimedOut, None, "")),
            (
                VerdictKind::TimedOut,
                "attempt 3 ran past its timeout of 10m and was terminated".into()
            )
        );
        assert_eq!(
            verdict(&w, &result(Outcome::Cancelled, None, "")).0,
            VerdictKind::Cancelled
        );
        let unavailable = result(Outcome::EnforcementUnavailable, None, "");
        let judgement = judge(Some(&w), &unavailable, None);
        assert_eq!(judgement.verdict, VerdictKind::Failed);
        assert_eq!(
            judgement.dead_letter_reason(&unavailable),
            Some(DeadLetterReason::EnforcementUnavailable)
        );
    }

    #[test]
    fn a_different_digest_is_an_enforcement_violation() {
        let w = worker("text", "");
        let mut ran = result(Outcome::Succeeded, Some(0), "");
        ran.enforcement_digest = Some("b".repeat(64));
        let judgement = judge(Some(&w), &ran, Some(&"a".repeat(64)));
        assert_eq!(judgement.verdict, VerdictKind::EnforcementViolation);
        ran.enforcement_digest = Some(format!("{}+modified", "a".repeat(64)));
        assert_eq!(
            judge(Some(&w), &ran, Some(&"a".repeat(64))).reason,
            "the worker modified its enforcement bundle"
        );
        ran.enforcement_digest = Some("a".repeat(64));
        assert_eq!(
            judge(Some(&w), &ran, Some(&"a".repeat(64))).verdict,
            VerdictKind::Valid
        );
    }

    #[test]
    fn cancelled_and_valid_runs_are_not_dead_lettered() {
        let w = worker("text", "");
        for outcome in [Outcome::Succeeded, Outcome::Cancelled] {
            let r = result(outcome, Some(0), "");
            assert_eq!(judge(Some(&w), &r, None).dead_letter_reason(&r), None);
        }
    }
}
