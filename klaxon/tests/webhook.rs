//! The webhook sink against a real HTTP receiver (axum on a loopback port):
//! the body and headers a receiver gets, the signature checked the way a
//! receiver would check it, and retries over real failures.

mod support;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::TimeDelta;
use hmac::{Hmac, Mac};
use loom_klaxon::sinks::{self, RetryPolicy, SinkError, SinkKind};
use loom_klaxon::{Alert, group};
use loom_protocol::DeadLetterReason;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use support::{dead_letter, free_port, t0};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone, Default)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    /// Statuses to answer, in order; 200 once they run out.
    answers: Arc<Mutex<VecDeque<StatusCode>>>,
}

/// A webhook receiver on a loopback port.
struct Receiver {
    address: SocketAddr,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(answers: &[u16]) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Receiver::serve(listener, answers)
    }

    fn serve(listener: tokio::net::TcpListener, answers: &[u16]) -> Receiver {
        let shared = Shared::default();
        shared.answers.lock().expect("answers").extend(
            answers
                .iter()
                .map(|code| StatusCode::from_u16(*code).expect("a status code")),
        );
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let address = listener.local_addr().expect("the receiver's address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the receiver serves");
        });
        Receiver {
            address,
            shared,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    shared
        .received
        .lock()
        .expect("received")
        .push(Received { headers, body });
    let answer = shared.answers.lock().expect("answers").pop_front();
    answer.unwrap_or(StatusCode::OK)
}

fn webhook(url: &str, secret: Option<&str>) -> SinkKind {
    sinks::build(&loom_config::Sink::Webhook {
        url: url.to_owned(),
        secret: secret.map(str::to_owned),
    })
    .expect("a webhook sink")
}

fn fast_policy(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(100),
        max_attempts,
    }
}

fn firing_alert() -> Alert {
    let letter = dead_letter("staleness-detector", DeadLetterReason::Failed, t0());
    Alert::firing(&letter, 3, 2, t0() - TimeDelta::minutes(30))
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("an ASCII header")
}

/// The signature computed independently of the sink, as a receiver would.
fn expected_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

#[tokio::test]
async fn a_firing_alert_arrives_with_its_fields_headers_and_signature() {
    let receiver = Receiver::start(&[]).await;
    let sink = webhook(&receiver.url(), Some("s3cret"));
    let alert = firing_alert();
    sink.deliver(&alert).await.unwrap();

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(header(request, "content-type"), "application/json");
    assert_eq!(
        header(request, "user-agent"),
        format!("loom/{}", env!("CARGO_PKG_VERSION"))
    );
    let delivery: Uuid = header(request, "x-loom-delivery").parse().unwrap();
    assert!(!delivery.is_nil());
    assert_eq!(
        header(request, "x-loom-signature"),
        expected_signature("s3cret", &request.body)
    );
    assert_ne!(
        header(request, "x-loom-signature"),
        expected_signature("other", &request.body)
    );

    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "status",
            "worker",
            "reason",
            "severity",
            "summary",
            "description",
            "run_id",
            "starts_at",
            "ends_at",
            "consecutive_failures",
            "suppressed",
            "dead_letter",
        ])
    );
    assert_eq!(body["status"], "firing");
    assert_eq!(body["worker"], "staleness-detector");
    assert_eq!(body["reason"], "failed");
    assert_eq!(body["severity"], "warning");
    assert_eq!(
        body["summary"],
        "worker staleness-detector failed: exit 1 after 3 attempts"
    );
    assert_eq!(body["description"], alert.description.as_str());
    assert_eq!(body["run_id"], alert.run_id.to_string());
    assert_eq!(body["starts_at"], "2025-01-05T09:30:00Z");
    assert_eq!(body["ends_at"], serde_json::Value::Null);
    assert_eq!(body["consecutive_failures"], 3);
    assert_eq!(body["suppressed"], 2);
    let letter: loom_protocol::DeadLetter =
        serde_json::from_value(body["dead_letter"].clone()).unwrap();
    assert_eq!(Some(letter), alert.dead_letter);
}

#[tokio::test]
async fn a_resolved_alert_without_a_secret_is_unsigned_and_has_an_end() {
    let receiver = Receiver::start(&[]).await;
    let sink = webhook(&receiver.url(), None);
    let letter = dead_letter("indexer", DeadLetterReason::Lost, t0());
    let (state, _) = group::on_dead_letter(None, &letter, 1, 1, Duration::from_secs(60), t0());
    let resolved = group::on_recovery(state, t0() + TimeDelta::minutes(5)).unwrap();
    sink.deliver(&resolved).await.unwrap();

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].headers.get("x-loom-signature").is_none());
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["severity"], "critical");
    assert_eq!(body["reason"], "lost");
    assert_eq!(body["starts_at"], "2025-01-05T10:00:00Z");
    assert_eq!(body["ends_at"], "2025-01-05T10:05:00Z");
    assert_eq!(body["dead_letter"], serde_json::Value::Null);
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_delivery_id() {
    let receiver = Receiver::start(&[500, 500]).await;
    let sink = webhook(&receiver.url(), Some("s3cret"));
    let attempts = sink
        .deliver_with_retries(&firing_alert(), fast_policy(5), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(attempts, 3);

    let received = receiver.received();
    assert_eq!(received.len(), 3);
    let deliveries: BTreeSet<&str> = received
        .iter()
        .map(|request| header(request, "x-loom-delivery"))
        .collect();
    assert_eq!(
        deliveries.len(),
        1,
        "one delivery id across retries: {deliveries:?}"
    );
    for request in &received {
        assert_eq!(request.body, received[0].body, "the same body on every try");
        assert_eq!(
            header(request, "x-loom-signature"),
            expected_signature("s3cret", &request.body)
        );
    }
}

#[tokio::test]
async fn too_many_requests_is_retried() {
    let receiver = Receiver::start(&[429]).await;
    let sink = webhook(&receiver.url(), None);
    let attempts = sink
        .deliver_with_retries(&firing_alert(), fast_policy(5), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn a_client_error_is_not_retried() {
    let receiver = Receiver::start(&[400]).await;
    let sink = webhook(&receiver.url(), None);
    let error = sink
        .deliver_with_retries(&firing_alert(), fast_policy(5), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SinkError::Status { status: 400, .. }),
        "{error:?}"
    );
    assert!(!error.is_transient());
    assert_eq!(error.sink(), "webhook");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "webhook sink: {} answered 400 Bad Request",
            receiver.url()
        )),
        "{text}"
    );
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn retries_stop_after_max_attempts_with_the_last_error() {
    let receiver = Receiver::start(&[503, 503, 503, 503]).await;
    let sink = webhook(&receiver.url(), None);
    let error = sink
        .deliver_with_retries(&firing_alert(), fast_policy(3), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(error, SinkError::Status { status: 503, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn a_receiver_that_comes_up_late_gets_the_alert_once() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let sink = webhook(&url, None);
    let alert = firing_alert();
    let policy = RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(100),
        max_attempts: 40,
    };
    let cancel = CancellationToken::new();
    let delivery =
        tokio::spawn(async move { sink.deliver_with_retries(&alert, policy, &cancel).await });

    // Refused connections first: the port is closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !delivery.is_finished(),
        "delivery ended while nobody listened"
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the same port");
    let receiver = Receiver::serve(listener, &[]);

    let attempts = tokio::time::timeout(Duration::from_secs(5), delivery)
        .await
        .expect("delivered in time")
        .unwrap()
        .unwrap();
    assert!(attempts >= 2, "attempts {attempts}");
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_transient_request_error() {
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let error = webhook(&url, None)
        .deliver(&firing_alert())
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            SinkError::Request {
                transient: true,
                ..
            }
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "webhook sink: request to {url} failed: cannot connect"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn cancelling_stops_the_retries_at_once() {
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let sink = webhook(&url, None);
    let alert = firing_alert();
    let cancel = CancellationToken::new();
    let policy = RetryPolicy {
        initial: Duration::from_secs(30),
        max: Duration::from_secs(30),
        max_attempts: 8,
    };
    let started = Instant::now();
    let delivery = {
        let cancel = cancel.clone();
        tokio::spawn(async move { sink.deliver_with_retries(&alert, policy, &cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    cancel.cancel();
    let error = tokio::time::timeout(Duration::from_secs(5), delivery)
        .await
        .expect("stopped in time")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(error, SinkError::Cancelled { attempts: 1, .. }),
        "{error:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Already cancelled: nothing is attempted.
    let error = webhook(&url, None)
        .deliver_with_retries(&firing_alert(), policy, &cancel)
        .await
        .unwrap_err();
    assert!(
        matches!(error, SinkError::Cancelled { attempts: 0, .. }),
        "{error:?}"
    );
}
