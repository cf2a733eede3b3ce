//! Klaxon, the alert manager: turns dead letters into alerts.
//!
//! It owns alert sinks (log, webhook, Alertmanager), grouping, repeat
//! intervals and resolution on recovery. It never decides what failed.
