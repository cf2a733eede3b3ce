//! `loom pause` and `loom resume`.

use crate::args::{Global, PauseArgs, WorkerArg};
use crate::commands::parse_when;
use crate::mesh::{connect, load_config};

/// Pauses a worker.
pub async fn pause(global: &Global, args: &PauseArgs) -> anyhow::Result<()> {
    let config = load_config(global)?;
    loom_scheduler::operator::find_worker(&config, &args.worker)?;
    let until = args.until.as_deref().map(parse_when).transpose()?;
    let broker = connect(&config, "pause").await?;
    let pause =
        loom_scheduler::operator::pause(&broker, &config, &args.worker, until, &args.note).await?;
    broker.close().await;
    match pause.until {
        Some(until) => println!("paused {} until {until}", args.worker),
        None => println!("paused {} until resumed", args.worker),
    }
    Ok(())
}

/// Resumes a worker.
pub async fn resume(global: &Global, args: &WorkerArg) -> anyhow::Result<()> {
    let config = load_config(global)?;
    loom_scheduler::operator::find_worker(&config, &args.worker)?;
    let broker = connect(&config, "resume").await?;
    let was_paused = loom_scheduler::operator::resume(&broker, &config, &args.worker).await?;
    broker.close().await;
    if was_paused {
        println!("resumed {}", args.worker);
    } else {
        println!("{} was not paused", args.worker);
    }
    Ok(())
}
