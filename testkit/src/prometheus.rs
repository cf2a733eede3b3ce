//! A real Prometheus and promtool (Debian's `prometheus` package), for the
//! alert rule tests.
