//! The agent role: pulls the runs of the workers it serves and executes them.
//!
//! It owns the pull loop over each worker's durable consumer, progress acks
//! (heartbeats) while a worker runs, retries by NAK-with-delay and the
//! graceful drain on shutdown. It never decides a run's verdict.
