//! The validator role: gives every run a verdict.
//!
//! It owns output contracts, verdicts, the watchdog that turns silence into
//! `lost`, dead-lettering and run history queries. It never executes a worker.
