//! `loom dlq`: dead letters.

use serde_json::json;

use crate::args::{DlqCommand, Global};
use crate::exit::Usage;
use crate::mesh::{connect, load_config};
use crate::output::print_json;

/// Runs one `loom dlq` subcommand.
pub async fn run(global: &Global, command: &DlqCommand) -> anyhow::Result<()> {
    let config = load_config(global)?;
    let broker = connect(&config, "dlq").await?;
    let outcome = run_with(&broker, &config, command).await;
    broker.close().await;
    outcome
}

async fn run_with(
    broker: &loom_broker::Broker,
    config: &loom_config::Config,
    command: &DlqCommand,
) -> anyhow::Result<()> {
    use loom_validator::history;
    match command {
        DlqCommand::List { worker, json } => {
            let letters = history::dead_letters(broker, worker.as_deref()).await?;
            if *json {
                print_json(&json!(letters));
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!(
                    "{:<36}  {:<24}  {:<20}  {:<22}  {:<8}  description",
                    "run", "worker", "dead at (UTC)", "reason", "replayed"
                );
                for letter in letters {
                    println!(
                        "{:<36}  {:<24}  {:<20}  {:<22}  {:<8}  {}",
                        letter.run_id,
                        letter.worker,
                        letter.dead_at.format("%Y-%m-%d %H:%M:%S"),
                        letter.reason.as_str(),
                        if letter.replayed_by.is_some() {
                            "yes"
                        } else {
                            "no"
                        },
                        letter.description
                    );
                }
            }
        }
        DlqCommand::Show { run_id } => {
            let letter = history::dead_letter(broker, *run_id).await?;
            print_json(&json!(letter));
        }
        DlqCommand::Replay {
            run_id,
            worker,
            all,
        } => {
            let letters = match (run_id, worker, all) {
                (Some(run_id), _, _) => vec![history::dead_letter(broker, *run_id).await?],
                (None, Some(worker), _) => history::dead_letters(broker, Some(worker)).await?,
                (None, None, true) => history::dead_letters(broker, None).await?,
                (None, None, false) => {
                    return Err(
                        Usage("dlq replay needs a run id, --worker W or --all".to_owned()).into(),
                    );
                }
            };
            let single = run_id.is_some();
            let mut replayed = 0;
            for letter in letters {
                if letter.replayed_by.is_some() && !single {
                    continue;
                }
                if letter.command.is_none() && !single {
                    continue;
                }
                let command = history::replay(broker, config, &letter).await?;
                println!(
                    "{}  replays {} ({})",
                    command.run_id, letter.run_id, letter.worker
                );
                replayed += 1;
            }
            if !single {
                println!("{replayed} dead letter(s) replayed");
            }
        }
        DlqCommand::Purge { worker } => {
            let purged = history::purge(broker, worker.as_deref()).await?;
            println!("{purged} dead-letter message(s) deleted");
        }
    }
    Ok(())
}
