//! The scheduler role: turns the worker registry into run commands.
//!
//! It owns leader election over a JetStream KV lease, the fire loop, catch-up
//! after downtime, overlap policies, pause and resume, backfill and the
//! bookkeeping of manual triggers. It never executes a worker.
