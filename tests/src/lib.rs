//! End-to-end tests of Loom against a real nats-server; they live in `tests/`.
