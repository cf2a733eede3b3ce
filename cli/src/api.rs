//! The JSON API of `docs/api.md` and the dashboard that uses it, merged into
//! the HTTP server of the validator and of `loom up`.
//!
//! Handlers are thin: each calls what the matching command calls
//! (`loom status`, `loom runs`, `loom dlq`, `loom trigger`, `loom pause`,
//! `loom resume`: `loom_validator::status` and `history`,
//! `loom_scheduler::operator`; `loom workflow`: `loom_scheduler::workflow::requests`) and turns its answer into JSON and its error
//! into a status code with `{"error": "<one sentence>"}`. Nothing here
//! decides anything about runs. The server starts before the broker
//! connects, so every handler first asks [`Health`] for the connection and
//! answers 503 until there is one.
//!
//! The dashboard is three static files compiled into the binary; it fetches
//! nothing but this API. Requests that change something are refused when a
//! browser says they come from another origin, so a page elsewhere cannot
//! trigger workers through a visitor's browser.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use loom_broker::Broker;
use loom_config::Config;
use loom_scheduler::operator::{self, OperatorError};
use loom_validator::history::{self, HistoryError};
use loom_validator::status;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Mutex, watch};
use uuid::Uuid;

use crate::http::Health;

mod workflows;

/// How long one `/api/workers` answer is served again: every open dashboard
/// polls it every 2 s, and each fresh answer reads the whole run history.
const OVERVIEW_TTL: Duration = Duration::from_secs(2);

/// How long a request may wait for NATS before it answers 504.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

/// How many runs `/api/runs` answers without `limit`.
const DEFAULT_RUNS_LIMIT: usize = 50;

const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const STYLE_CSS: &str = include_str!("../assets/dashboard/style.css");

/// The dashboard may load only its own files and talk only to this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard and the JSON API, reading the broker from `health` once it
/// is connected and the registry from `config`.
pub fn router(health: Arc<Health>, config: watch::Receiver<Arc<Config>>) -> Router {
    let api = Api {
        health,
        config,
        overview: Arc::default(),
    };
    Router::new()
        .route("/", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .route("/api/workers", get(workers))
        .route("/api/runs", get(runs))
        .route("/api/dlq", get(dead_letters))
        .route("/api/dlq/{run_id}/replay", post(replay))
        .route("/api/workers/{name}/trigger", post(trigger))
        .route("/api/workers/{name}/pause", post(pause))
        .route("/api/workers/{name}/resume", post(resume))
        .route("/api/workflows", get(workflows::list))
        .route("/api/workflows/{name}/start", post(workflows::start))
        .route("/api/workflow-runs/{run_id}", get(workflows::show))
        .route(
            "/api/workflow-runs/{run_id}/answer",
            post(workflows::answer),
        )
        .fallback(not_found)
        .with_state(api)
}

#[derive(Clone)]
struct Api {
    health: Arc<Health>,
    config: watch::Receiver<Arc<Config>>,
    overview: Arc<Mutex<Option<CachedOverview>>>,
}

/// An `/api/workers` answer, serialized once.
struct CachedOverview {
    at: Instant,
    /// The configuration it was read with: a reload reads it again.
    config: Arc<Config>,
    body: Bytes,
}

impl Api {
    /// The connection, or 503 (as `/readyz` words it) while there is none:
    /// a request would only wait for the client to reconnect.
    fn broker(&self) -> Result<Broker, ApiError> {
        match self.health.broker() {
            None => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not connected to NATS yet",
            )),
            Some(broker) if !broker.is_connected() => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "disconnected from NATS",
            )),
            Some(broker) => Ok(broker.clone()),
        }
    }

    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// Drops the cached overview, so the next one shows what an action did.
    async fn forget_overview(&self) {
        *self.overview.lock().await = None;
    }
}

/// An answer other than 2xx: a status and one sentence.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A failure of the broker: 503 while disconnected, 502 when connected
    /// NATS refused or failed the request.
    fn broker(broker: &Broker, error: impl std::fmt::Display) -> ApiError {
        let status = if broker.is_connected() {
            StatusCode::BAD_GATEWAY
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        ApiError::new(status, error.to_string())
    }

    fn history(broker: &Broker, error: HistoryError) -> ApiError {
        match error {
            HistoryError::AlreadyReplayed { .. } => {
                ApiError::new(StatusCode::CONFLICT, error.to_string())
            }
            HistoryError::NoDeadLetter(_) | HistoryError::UnknownRun(_) => {
                ApiError::new(StatusCode::NOT_FOUND, error.to_string())
            }
            error if error.is_usage() => ApiError::bad_request(error.to_string()),
            error => ApiError::broker(broker, error),
        }
    }

    fn operator(broker: Option<&Broker>, error: OperatorError) -> ApiError {
        match error {
            OperatorError::UnknownWorker { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, error.to_string())
            }
            OperatorError::Disabled(..) => ApiError::new(StatusCode::CONFLICT, error.to_string()),
            // The operator's text names the command line flag.
            OperatorError::PastUntil(until) => {
                ApiError::bad_request(format!("until {until} is not in the future"))
            }
            error if error.is_usage() => ApiError::bad_request(error.to_string()),
            error => ApiError::failed(broker, error),
        }
    }

    /// A request the broker failed: as [`ApiError::broker`] when connected
    /// (502 or 503), 502 when the request never got a connection.
    fn failed(broker: Option<&Broker>, error: impl std::fmt::Display) -> ApiError {
        match broker {
            Some(broker) => ApiError::broker(broker, error),
            None => ApiError::new(StatusCode::BAD_GATEWAY, error.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        no_store(&mut response);
        response
    }
}

/// `future`, or 504 when NATS takes longer than [`BROKER_TIMEOUT`].
async fn within<T>(future: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::time::timeout(BROKER_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("NATS did not answer within {}s", BROKER_TIMEOUT.as_secs()),
            ))
        })
}

/// A JSON answer that browsers and proxies do not keep.
fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let mut response = (status, axum::Json(value)).into_response();
    no_store(&mut response);
    response
}

fn no_store(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Refuses a request a browser sent from a page of another origin: the
/// `Origin` header, when there is one, must name this server's `Host`.
/// Clients that are not browsers (curl, scripts) send no `Origin`.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    match (origin_host, host) {
        (Some(origin), Some(host)) if origin.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "requests from pages of another origin are refused",
        )),
    }
}

/// The optional JSON body of an action; empty means all defaults.
fn parse_body<T: DeserializeOwned + Default>(body: &Bytes, shape: &str) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("the request body is not {shape}: {error}")))
}

/// The query of a request, or 400 saying it is not `shape`.
fn parse_query<T>(query: Result<Query<T>, QueryRejection>, shape: &str) -> Result<T, ApiError> {
    query.map(|Query(query)| query).map_err(|rejection| {
        ApiError::bad_request(format!(
            "the query is not {shape}: {}",
            rejection.body_text()
        ))
    })
}

/// The one variable segment of a request's path (a name or an id), or 400.
fn path_segment(segment: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    segment
        .map(|Path(segment)| segment)
        .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
}

/// The run id of a path, or 400 saying it is not `what` (a UUID).
fn parse_run_id(run_id: Result<Path<String>, PathRejection>, what: &str) -> Result<Uuid, ApiError> {
    let run_id = path_segment(run_id)?;
    run_id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{run_id:?} is not {what} (a hyphenated UUID)")))
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidated each time: a new binary serves new files.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response();
    if content_type.starts_with("text/html") {
        response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

async fn index() -> Response {
    static_file("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> Response {
    static_file("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> Response {
    static_file("text/css; charset=utf-8", STYLE_CSS)
}

async fn not_found(uri: Uri) -> Response {
    if uri.path().starts_with("/api/") || uri.path() == "/api" {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "{} is not an endpoint of the API (see docs/api.md)",
                uri.path()
            ),
        )
        .into_response()
    } else {
        (StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

/// `GET /api/workers`: the overview, read at most once per [`OVERVIEW_TTL`]
/// whatever the number of dashboards (they wait for one read in flight).
async fn workers(State(api): State<Api>) -> Result<Response, ApiError> {
    let broker = api.broker()?;
    let config = api.config();
    let mut cached = api.overview.lock().await;
    if let Some(hit) = cached.as_ref()
        && hit.at.elapsed() < OVERVIEW_TTL
        && Arc::ptr_eq(&hit.config, &config)
    {
        return Ok(json_bytes(hit.body.clone()));
    }
    let overview = within(async {
        status::overview(&broker, &config)
            .await
            .map_err(|error| ApiError::history(&broker, error))
    })
    .await?;
    let body =
        Bytes::from(serde_json::to_vec(&overview).map_err(|error| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
        })?);
    *cached = Some(CachedOverview {
        at: Instant::now(),
        config,
        body: body.clone(),
    });
    Ok(json_bytes(body))
}

fn json_bytes(body: Bytes) -> Response {
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    no_store(&mut response);
    response
}

#[derive(Debug, Deserialize)]
struct RunsQuery {
    worker: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/runs?worker=W&limit=N`.
async fn runs(
    State(api): State<Api>,
    query: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = parse_query(query, "worker=<name>&limit=<number>")?;
    let Some(name) = query.worker else {
        return Err(ApiError::bad_request("the query needs worker=<name>"));
    };
    let config = api.config();
    operator::find_worker(&config, &name).map_err(|error| ApiError::operator(None, error))?;
    let broker = api.broker()?;
    let limit = query.limit.unwrap_or(DEFAULT_RUNS_LIMIT);
    let runs = within(async {
        status::worker_runs(&broker, &name, limit)
            .await
            .map_err(|error| ApiError::history(&broker, error))
    })
    .await?;
    Ok(json_response(StatusCode::OK, &runs))
}

#[derive(Debug, Deserialize)]
struct DlqQuery {
    worker: Option<String>,
}

/// `GET /api/dlq?worker=W`. A worker outside the registry (one removed, or
/// a name a rejected message carried) is filtered here rather than in a
/// subject, so any name is safe to ask for.
async fn dead_letters(
    State(api): State<Api>,
    query: Result<Query<DlqQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = parse_query(query, "worker=<name>")?;
    let broker = api.broker()?;
    let config = api.config();
    let worker = query.worker.as_deref();
    let registered = worker.filter(|name| config.registry.get(name).is_some());
    let mut letters = within(async {
        status::dead_letters_newest_first(&broker, registered)
            .await
            .map_err(|error| ApiError::history(&broker, error))
    })
    .await?;
    if let Some(worker) = worker {
        letters.retain(|letter| letter.worker == worker);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "dead_letters": letters }),
    ))
}

/// `POST /api/dlq/<run_id>/replay`, as `loom dlq replay <run_id>`.
async fn replay(
    State(api): State<Api>,
    headers: HeaderMap,
    run_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let run_id = parse_run_id(run_id, "a run id")?;
    let broker = api.broker()?;
    let config = api.config();
    let command = within(async {
        let letter = history::dead_letter(&broker, run_id)
            .await
            .map_err(|error| ApiError::history(&broker, error))?;
        history::replay(&broker, &config, &letter)
            .await
            .map_err(|error| ApiError::history(&broker, error))
    })
    .await?;
    tracing::info!(run_id = %run_id, replay = %command.run_id, worker = %command.worker, "dead letter replayed from the API");
    api.forget_overview().await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "run_id": command.run_id }),
    ))
}

/// The body of a trigger or a workflow start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamsBody {
    #[serde(default)]
    params: BTreeMap<String, String>,
}

/// `POST /api/workers/<name>/trigger`, as `loom trigger <name>`.
async fn trigger(
    State(api): State<Api>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let name = path_segment(name)?;
    let body: ParamsBody = parse_body(&body, r#"{"params": {"name": "value"}}"#)?;
    let config = api.config();
    // Refuse an unknown or disabled worker before touching the network.
    operator::find_worker(&config, &name).map_err(|error| ApiError::operator(None, error))?;
    let broker = api.broker()?;
    let command = within(async {
        operator::trigger(&broker, &config, &name, body.params)
            .await
            .map_err(|error| ApiError::operator(Some(&broker), error))
    })
    .await?;
    tracing::info!(run_id = %command.run_id, worker = %name, "run triggered from the API");
    api.forget_overview().await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "run_id": command.run_id }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    /// RFC 3339, or a duration from now as `loom pause --until` takes it.
    until: Option<String>,
    #[serde(default)]
    note: String,
}

/// `POST /api/workers/<name>/pause`, as `loom pause <name>`.
async fn pause(
    State(api): State<Api>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let name = path_segment(name)?;
    let body: PauseBody = parse_body(&body, r#"{"until": "<RFC 3339>" or null, "note": "..."}"#)?;
    let config = api.config();
    operator::find_worker(&config, &name).map_err(|error| ApiError::operator(None, error))?;
    let until = match body.until.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            crate::commands::parse_when(text)
                .map_err(|error| ApiError::bad_request(format!("until: {error}")))?,
        ),
    };
    let broker = api.broker()?;
    let pause = within(async {
        operator::pause(&broker, &config, &name, until, &body.note)
            .await
            .map_err(|error| ApiError::operator(Some(&broker), error))
    })
    .await?;
    tracing::info!(worker = %name, until = ?pause.until, note = %pause.note, "worker paused from the API");
    api.forget_overview().await;
    Ok(json_response(StatusCode::OK, &pause))
}

/// `POST /api/workers/<name>/resume`, as `loom resume <name>`.
async fn resume(
    State(api): State<Api>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    same_origin(&headers)?;
    let name = path_segment(name)?;
    let config = api.config();
    operator::find_worker(&config, &name).map_err(|error| ApiError::operator(None, error))?;
    let broker = api.broker()?;
    let resumed = within(async {
        operator::resume(&broker, &config, &name)
            .await
            .map_err(|error| ApiError::operator(Some(&broker), error))
    })
    .await?;
    if resumed {
        tracing::info!(worker = %name, "worker resumed from the API");
    }
    api.forget_overview().await;
    Ok(json_response(
        StatusCode::OK,
        &json!({ "resumed": resumed }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn same_origin_accepts_clients_without_origin_and_the_dashboard_itself() {
        assert!(same_origin(&headers(&[(header::HOST, "127.0.0.1:9810")])).is_ok());
        assert!(
            same_origin(&headers(&[
                (header::HOST, "127.0.0.1:9810"),
                (header::ORIGIN, "http://127.0.0.1:9810"),
            ]))
            .is_ok()
        );
    }

    #[test]
    fn same_origin_refuses_other_pages() {
        for origin in ["http://evil.example", "http://127.0.0.1:9811", "null"] {
            let refused = same_origin(&headers(&[
                (header::HOST, "127.0.0.1:9810"),
                (header::ORIGIN, origin),
            ]))
            .unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{origin}");
        }
    }

    #[test]
    fn an_empty_body_means_defaults_and_a_wrong_one_is_a_bad_request() {
        let empty: ParamsBody = parse_body(&Bytes::from_static(b" \n"), "x").unwrap();
        assert!(empty.params.is_empty());
        let given: ParamsBody =
            parse_body(&Bytes::from_static(br#"{"params": {"day": "mon"}}"#), "x").unwrap();
        assert_eq!(given.params.get("day").map(String::as_str), Some("mon"));
        let typo = parse_body::<ParamsBody>(&Bytes::from_static(br#"{"param": {}}"#), "x");
        assert_eq!(typo.unwrap_err().status, StatusCode::BAD_REQUEST);
        let pause: PauseBody = parse_body(
            &Bytes::from_static(br#"{"until": null, "note": "db"}"#),
            "x",
        )
        .unwrap();
        assert_eq!((pause.until, pause.note.as_str()), (None, "db"));
    }
}
