//! `loom trigger`: run a worker now, and optionally wait for its verdict.

use std::collections::BTreeMap;

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
    let verdict = tokio::time::timeout(wait, async {
        while let Some(message) = verdicts.next().await {
            if let Ok(verdict) = decode::<Verdict>("verdict", &message.payload)
                && verdict.run_id == command.run_id
            {
                return Some(verdict);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
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
