//! How one run executes: the subprocess executor, the enforcement loader and
//! limits, and the worker process contract (DESIGN §6).
//!
//! This crate knows nothing about NATS: it is handed a run command and a
//! worker definition and gives back what happened.
