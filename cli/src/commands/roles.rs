//! Starting each role on a [`Runtime`]: shared by `loom up` and the
//! single-role commands.

use crate::runtime::Runtime;

/// Starts the scheduler role.
pub fn spawn_scheduler(runtime: &Runtime) {
    let (broker, config, shutdown) = (
        runtime.broker.clone(),
        runtime.config.clone(),
        runtime.shutdown.clone(),
    );
    runtime.spawn_role("scheduler", async move {
        Ok(loom_scheduler::run(broker, config, shutdown).await?)
    });
}

/// Starts the agent role.
pub fn spawn_agent(runtime: &Runtime, options: loom_agent::AgentOptions) {
    let (broker, config, shutdown) = (
        runtime.broker.clone(),
        runtime.config.clone(),
        runtime.shutdown.clone(),
    );
    runtime.spawn_role("agent", async move {
        loom_agent::run(broker, config, options, shutdown).await;
        Ok(())
    });
}

/// Starts the validator role.
pub fn spawn_validator(runtime: &Runtime) {
    let (broker, config, shutdown) = (
        runtime.broker.clone(),
        runtime.config.clone(),
        runtime.shutdown.clone(),
    );
    runtime.spawn_role("validator", async move {
        Ok(loom_validator::run(broker, config, shutdown).await?)
    });
}

/// Starts Klaxon.
pub fn spawn_klaxon(runtime: &Runtime) {
    let (broker, config, shutdown) = (
        runtime.broker.clone(),
        runtime.config.clone(),
        runtime.shutdown.clone(),
    );
    runtime.spawn_role("klaxon", async move {
        Ok(loom_klaxon::run(broker, config, shutdown).await?)
    });
}
