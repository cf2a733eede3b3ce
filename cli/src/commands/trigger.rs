//! `loom trigger`: run a worker now, and optionally wait for its verdict.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use futures::StreamExt;
use loom_protocol::codec::decode;
use loom_protocol::{Verdict, VerdictKind};

use crate::args::{Global, TriggerArgs};
use crate::exit::Usage;
use crate::mesh::{connect, load_config};

/// Publishes the run; prints its id alone on the first line.
pub async fn run(global: &Global, args: &TriggerArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let mut params = BTreeMap::new();
    for param in &args.params {
        let Some((name, value)) = param.split_once('=') else {
            return Err(Usage(format!("--param {param:?} is not NAME=VALUE")).into());
        };
        params.insert(name.to_owned(), value.to_owned());
    }
    // Refuse an unknown or disabled worker before touching the network.
    let worker = loom_scheduler::operator::find_worker(&config, &args.worker)?;
    let broker = connect(&config, "trigger").await?;
    // Listen for the verdict before the run exists, so it cannot be missed.
    let mut verdicts = if args.wait {
        Some(
            broker
                .client()
                .subscribe(broker.subjects().verdict(&worker.name))
                .await?,
        )
    } else {
        None
    };
    let command = loom_scheduler::operator::trigger(&broker, &config, &args.worker, params).await?;
    println!("{}", command.run_id);
    let Some(verdicts) = verdicts.as_mut() else {
        broker.close().await;
        return Ok(());
    };
    let deadline = command.deadline.unwrap_or_else(chrono::Utc::now);
    let wait = (deadline - chrono::Utc::now()).to_std().unwrap_or_default()
        + std::time::Duration::from_secs(5);
    let mut progress = Progress::new();
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(500));
    let verdict = tokio::time::timeout(wait, async {
        loop {
            tokio::select! {
                message = verdicts.next() => {
                    let message = message?;
                    if let Ok(verdict) = decode::<Verdict>("verdict", &message.payload)
                        && verdict.run_id == command.run_id
                    {
                        return Some(verdict);
                    }
                }
                _ = ticks.tick() => {
                    // Presence is best effort: a failed read shows "queued".
                    let agents = loom_validator::status::agents(&broker).await.unwrap_or_default();
                    let agent = loom_validator::status::running_on(&agents, command.run_id);
                    progress.show(agent.map(|a| a.id.as_str()));
                }
            }
        }
    })
    .await
    .ok()
    .flatten();
    progress.finish();
    broker.close().await;
    match verdict {
        Some(verdict) => {
            println!(
                "{} after {} attempt(s): {}",
                verdict.verdict.as_str(),
                verdict.attempts,
                verdict.reason
            );
            if verdict.verdict == VerdictKind::Valid {
                Ok(())
            } else {
                anyhow::bail!(
                    "run {} of {} ended {}",
                    command.run_id,
                    worker.name,
                    verdict.verdict.as_str()
                )
            }
        }
        None => anyhow::bail!(
            "run {} of {} got no verdict by its deadline {deadline}",
            command.run_id,
            worker.name
        ),
    }
}

/// The run's phase on stderr while `--wait` waits: one line rewritten in
/// place on a terminal ("queued 2s", "running on agent-1 (5s)"), one line per
/// change of phase otherwise. Stdout keeps only the run id and the verdict.
struct Progress {
    terminal: bool,
    queued_at: Instant,
    running: Option<(String, Instant)>,
    shown: Option<String>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            queued_at: Instant::now(),
            running: None,
            shown: None,
        }
    }

    /// Shows the phase, given the agent running the run (if one does).
    fn show(&mut self, agent: Option<&str>) {
        if let Some(agent) = agent
            && self.running.as_ref().is_none_or(|(id, _)| id != agent)
        {
            self.running = Some((agent.to_owned(), Instant::now()));
        }
        let (phase, since) = match &self.running {
            Some((agent, since)) => (format!("running on {agent}"), *since),
            None => ("queued".to_owned(), self.queued_at),
        };
        let mut stderr = std::io::stderr();
        if self.terminal {
            let elapsed = since.elapsed().as_secs();
            let _ = write!(stderr, "\r\x1b[2K{phase} ({elapsed}s)");
            let _ = stderr.flush();
            self.shown = Some(phase);
        } else if self.shown.as_ref() != Some(&phase) {
            let _ = writeln!(stderr, "{phase}");
            self.shown = Some(phase);
        }
    }

    /// Ends the updating line before the verdict prints.
    fn finish(&self) {
        if self.terminal && self.shown.is_some() {
            let mut stderr = std::io::stderr();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}
