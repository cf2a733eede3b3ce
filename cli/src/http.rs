//! The HTTP server every role runs on `http.listen`: `/healthz` (200 while
//! the process is alive), `/readyz` (200 once connected to NATS with the
//! topology in place, 503 otherwise) and `/metrics` (Prometheus text), plus
//! whatever routes the caller merges in (the dashboard and JSON API of
//! [`crate::api`] for the validator and `loom up`). It starts before the
//! broker connects; [`Health`] is where the connection shows up.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use loom_broker::Broker;
use prometheus::{Encoder, TextEncoder};
use tokio_util::sync::CancellationToken;

use crate::exit::InUse;

/// What `/readyz` reports on.
#[derive(Debug, Default)]
pub struct Health {
    broker: OnceLock<Broker>,
    topology_ready: AtomicBool,
}

impl Health {
    /// Not ready: no broker yet, topology not checked.
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Records the broker connection whose state readiness follows.
    pub fn set_broker(&self, broker: Broker) {
        let _ = self.broker.set(broker);
    }

    /// The broker connection, once there is one.
    pub fn broker(&self) -> Option<&Broker> {
        self.broker.get()
    }

    /// Records that the topology is in place.
    pub fn set_topology_ready(&self) {
        self.topology_ready.store(true, Ordering::SeqCst);
    }

    /// Why the process is not ready, or `None` when it is.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        match self.broker.get() {
            None => Some("not connected to NATS yet"),
            Some(broker) if !broker.is_connected() => Some("disconnected from NATS"),
            Some(_) if !self.topology_ready.load(Ordering::SeqCst) => {
                Some("topology not in place yet")
            }
            Some(_) => None,
        }
    }
}

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    registry: prometheus::Registry,
}

/// Binds the listen address, so that a taken port is reported before
/// anything else starts.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, InUse> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| InUse::Address {
            address: address.to_string(),
            detail: match error.kind() {
                std::io::ErrorKind::AddrInUse => "the address is already in use".to_owned(),
                _ => error.to_string(),
            },
        })
}

/// Serves the probes, the metrics and the routes of `extra` until
/// `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    registry: prometheus::Registry,
    extra: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { health, registry })
        .merge(extra);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.not_ready_reason() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&state.registry.gather(), &mut body) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        ),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain".to_owned())],
            error.to_string().into_bytes(),
        ),
    }
}
