//! Subject names of the mesh (DESIGN §3) and the rules for the tokens in them.
//!
//! Every subject starts with a configurable prefix (default `loom`) so that
//! several meshes can share one NATS account. Stream, bucket and consumer
//! names derive from the same prefix, see [`crate::topology`].

use std::fmt;

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "loom";

/// Builds and parses the subjects of one mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// Why a name cannot be used as a subject token (a worker name, a prefix, a label).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The name is empty.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than [`MAX_TOKEN_LEN`].
    #[error("is {0} characters long; at most {MAX_TOKEN_LEN} are allowed")]
    TooLong(usize),
    /// The name holds a character outside `A-Z a-z 0-9 _ -`.
    #[error("contains {0:?}; only letters, digits, '-' and '_' are allowed")]
    BadCharacter(char),
}

/// The longest name accepted as a token (worker names end up in consumer and
/// key names, which JetStream limits).
pub const MAX_TOKEN_LEN: usize = 64;

/// Checks that `name` can be one subject token and part of a consumer, stream
/// or bucket name: ASCII letters, digits, `-` and `_`, at most
/// [`MAX_TOKEN_LEN`] characters. Dots, wildcards and spaces would change the
/// meaning of a subject, so they are refused.
pub fn validate_token(name: &str) -> Result<(), TokenError> {
    if name.is_empty() {
        return Err(TokenError::Empty);
    }
    if name.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong(name.len()));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        Some(bad) => Err(TokenError::BadCharacter(bad)),
        None => Ok(()),
    }
}

/// The kinds of per-worker subject of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// `<prefix>.run.<worker>`: run commands.
    Run,
    /// `<prefix>.result.<worker>`: run results.
    Result,
    /// `<prefix>.verdict.<worker>`: verdicts.
    Verdict,
    /// `<prefix>.dlq.<worker>`: dead letters.
    DeadLetter,
    /// `<prefix>.skipped.<worker>`: the ledger of fires that did not run.
    Skipped,
    /// `<prefix>.cancel.<worker>`: requests to cancel runs.
    Cancel,
    /// `<prefix>.workflow.start.<workflow>`: requests to start a workflow run
    /// (the last token names a workflow, not a worker).
    WorkflowStart,
}

impl SubjectKind {
    /// The subject token that names this kind.
    pub fn token(self) -> &'static str {
        match self {
            SubjectKind::Run => "run",
            SubjectKind::Result => "result",
            SubjectKind::Verdict => "verdict",
            SubjectKind::DeadLetter => "dlq",
            SubjectKind::Skipped => "skipped",
            SubjectKind::Cancel => "cancel",
            SubjectKind::WorkflowStart => "workflow.start",
        }
    }
}

impl Subjects {
    /// Subjects under `prefix`. The prefix must be a valid token
    /// ([`validate_token`]); configuration checks that before building this.
    pub fn new(prefix: impl Into<String>) -> Self {
        Subjects {
            prefix: prefix.into(),
        }
    }

    /// The prefix, e.g. `loom`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.<kind>.<worker>`.
    pub fn for_worker(&self, kind: SubjectKind, worker: &str) -> String {
        format!("{}.{}.{}", self.prefix, kind.token(), worker)
    }

    /// `<prefix>.<kind>.*`: every worker's subject of this kind.
    pub fn all(&self, kind: SubjectKind) -> String {
        format!("{}.{}.*", self.prefix, kind.token())
    }

    /// `<prefix>.run.<worker>`.
    pub fn run(&self, worker: &str) -> String {
        self.for_worker(SubjectKind::Run, worker)
    }

    /// `<prefix>.result.<worker>`.
    pub fn result(&self, worker: &str) -> String {
        self.for_worker(SubjectKind::Result, worker)
    }

    /// `<prefix>.verdict.<worker>`.
    pub fn verdict(&self, worker: &str) -> String {
        self.for_worker(SubjectKind::Verdict, worker)
    }

    /// `<prefix>.dlq.<worker>`.
    pub fn dead_letter(&self, worker: &str) -> String {
        self.for_worker(SubjectKind::DeadLetter, worker)
    }

    /// `<prefix>.skipped.<worker>`.
    pub fn skipped(&self, worker: &str) -> String {
        self.for_worker(SubjectKind::Skipped, worker)
    }

    /// `<prefix>.cancel.<worker>`.
    pub fn cancel(&self, worker: &str) -> String {
        self.for_worker(SubjectKind::Cancel, worker)
    }

    /// `<prefix>.workflow.start.<workflow>`.
    pub fn workflow_start(&self, workflow: &str) -> String {
        self.for_worker(SubjectKind::WorkflowStart, workflow)
    }

    /// The worker token of a subject of the given kind, if `subject` is one.
    ///
    /// The token is returned as it appears, valid or not: a run published on
    /// `loom.run.no such worker` still has to be dead-lettered on its own token.
    pub fn worker_of<'s>(&self, kind: SubjectKind, subject: &'s str) -> Option<&'s str> {
        let rest = subject.strip_prefix(self.prefix.as_str())?;
        let rest = rest.strip_prefix('.')?;
        let rest = rest.strip_prefix(kind.token())?;
        let worker = rest.strip_prefix('.')?;
        (!worker.is_empty() && !worker.contains('.')).then_some(worker)
    }

    /// The subject JetStream publishes max-deliveries advisories on for the
    /// consumers of `stream`: `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.*`.
    pub fn max_deliveries_advisories(stream: &str) -> String {
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*")
    }
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new(DEFAULT_PREFIX)
    }
}

impl fmt::Display for Subjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.>", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_every_subject_of_design_section_3() {
        let subjects = Subjects::default();
        assert_eq!(
            subjects.run("staleness-detector"),
            "loom.run.staleness-detector"
        );
        assert_eq!(subjects.result("w"), "loom.result.w");
        assert_eq!(subjects.verdict("w"), "loom.verdict.w");
        assert_eq!(subjects.dead_letter("w"), "loom.dlq.w");
        assert_eq!(subjects.all(SubjectKind::Run), "loom.run.*");
        assert_eq!(Subjects::new("acme").run("w"), "acme.run.w");
    }

    #[test]
    fn parses_the_worker_token_back() {
        let subjects = Subjects::default();
        assert_eq!(
            subjects.worker_of(SubjectKind::Run, "loom.run.w-1"),
            Some("w-1")
        );
        assert_eq!(subjects.worker_of(SubjectKind::Run, "loom.result.w"), None);
        assert_eq!(subjects.worker_of(SubjectKind::Run, "loom.run."), None);
        assert_eq!(subjects.worker_of(SubjectKind::Run, "loom.run.a.b"), None);
        assert_eq!(subjects.worker_of(SubjectKind::Run, "loomx.run.w"), None);
        assert_eq!(subjects.worker_of(SubjectKind::Run, "acme.run.w"), None);
    }

    #[test]
    fn tokens_refuse_what_would_change_a_subject() {
        assert_eq!(validate_token("media-pre_production2"), Ok(()));
        assert_eq!(validate_token(""), Err(TokenError::Empty));
        assert_eq!(validate_token("a.b"), Err(TokenError::BadCharacter('.')));
        assert_eq!(validate_token("a b"), Err(TokenError::BadCharacter(' ')));
        assert_eq!(validate_token("a*"), Err(TokenError::BadCharacter('*')));
        assert_eq!(validate_token(">"), Err(TokenError::BadCharacter('>')));
        assert_eq!(
            validate_token(&"x".repeat(65)),
            Err(TokenError::TooLong(65))
        );
    }
}
