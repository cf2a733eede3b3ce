//! Connecting to NATS with the configured URLs, credentials and TLS.
//!
//! A failed connection becomes one sentence naming the URL and the setting
//! to look at (`nats.user`, `nats.tls.ca`, ...), never the TLS library's or
//! the client's words alone; docs/security.md lists them. The connection
//! also hands the server's refusals (permissions violations) to
//! the `refusal` module, so an operation the user may not make fails at once.

use std::time::Duration;

use async_nats::ServerAddr;
use async_nats::jetstream;
use loom_config::{NatsAuth, NatsSettings, TlsSettings};
use loom_protocol::Subjects;
use loom_protocol::topology::Names;
use tracing::instrument::WithSubscriber;

use crate::refusal::Refusals;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the connection waits for an operation to claim a refusal
/// before logging it itself.
const REFUSAL_CLAIM_WAIT: Duration = Duration::from_millis(200);

/// How long a JetStream API request (and a publish ack) may take.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to the mesh's NATS: the core client, its JetStream context,
/// and the mesh's subject and stream names.
#[derive(Clone, Debug)]
pub struct Broker {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    subjects: Subjects,
    names: Names,
    refusals: Refusals,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No URL to connect to.
    #[error("no NATS URL configured (set nats.url in loom.toml or LOOM_NATS__URL)")]
    NoUrl,
    /// A URL is not a NATS server address.
    #[error("nats.url {url:?} is not a NATS server address: {detail}")]
    BadUrl {
        /// The URL.
        url: String,
        /// The parser's words.
        detail: String,
    },
    /// A credentials, key or certificate file could not be read.
    #[error("cannot read {what} {path}: {detail}")]
    Credentials {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// The operating system's words.
        detail: String,
    },
    /// The nkey seed cannot sign.
    #[error("nats.nkey does not hold a valid user nkey seed (58 characters starting with \"SU\")")]
    InvalidNkey,
    /// The servers could not be reached.
    #[error("cannot connect to NATS at {urls}: {detail}")]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// The client's words.
        detail: String,
    },
    /// A server refused the configured credentials (or their absence).
    #[error("NATS at {urls} refused {detail}")]
    Refused {
        /// The URLs tried.
        urls: String,
        /// What was refused and which settings to check.
        detail: String,
    },
    /// The TLS handshake failed: a certificate was not trusted, missing, or
    /// the server does not speak TLS.
    #[error("TLS with NATS at {urls} failed: {detail}")]
    Tls {
        /// The URLs tried.
        urls: String,
        /// What went wrong and which settings to check.
        detail: String,
    },
}

impl Broker {
    /// The core NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The mesh's subjects.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The mesh's stream, consumer and bucket names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Drains the connection: pending publishes are flushed, then it closes.
    /// Roles call this last, before an embedded server stops, so that the
    /// client does not start reconnecting to a server that is going away.
    pub async fn close(&self) {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "closing the NATS connection failed"),
            Err(_) => {
                tracing::warn!("closing the NATS connection took longer than {CONNECT_TIMEOUT:?}")
            }
        }
    }

    /// The server's refusals of this connection's publishes.
    pub(crate) fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Connects to the first reachable of `urls` with the credentials and TLS of
/// `settings`, as `client_name` (shown in the server's connection list), for
/// the mesh with subject prefix `prefix`.
///
/// The first connection must succeed at once, so that a wrong URL is reported
/// rather than retried silently; after that the client reconnects forever.
pub async fn connect(
    settings: &NatsSettings,
    urls: &[String],
    prefix: &str,
    client_name: &str,
) -> Result<Broker, ConnectError> {
    if urls.is_empty() {
        return Err(ConnectError::NoUrl);
    }
    let addresses = urls
        .iter()
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|e| ConnectError::BadUrl {
                url: url.clone(),
                detail: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut options = match &settings.auth {
        NatsAuth::CredentialsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| ConnectError::Credentials {
                what: "nats.creds",
                path: path.display().to_string(),
                detail: e.to_string(),
            })?,
        NatsAuth::NKey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        NatsAuth::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::None => async_nats::ConnectOptions::new(),
    };
    if let Some(tls) = &settings.tls {
        check_tls_files(tls)?;
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let refusals = Refusals::new(login(settings));
    let events = refusals.clone();
    let client = options
        .name(client_name)
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(move |event| {
            let refusals = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting")
                    }
                    // A permissions violation (the user may not publish or
                    // subscribe there) or another refusal. An operation waiting
                    // on it reports it as its own failure; otherwise (an ack, a
                    // subscription) this log line is the only trace of it.
                    async_nats::Event::ServerError(error) => {
                        let claimed = match &error {
                            async_nats::ServerError::Other(words) => {
                                let id = refusals.record(words);
                                tokio::time::sleep(REFUSAL_CLAIM_WAIT).await;
                                refusals.claimed(id)
                            }
                            _ => false,
                        };
                        if claimed {
                            tracing::debug!(%error, "the NATS server refused an operation");
                        } else {
                            tracing::error!(%error, "the NATS server refused an operation");
                        }
                    }
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        })
        .connect(addresses)
        // The client logs its own ERROR line for a refused login; the error
        // returned here says the same in Loom's words, so the first
        // attempt's events are not shown twice. (Later reconnects log as usual.)
        .with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
        .map_err(|e| explain_connect_error(settings, &urls.join(", "), &e))?;
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(JETSTREAM_TIMEOUT)
        .build(client.clone());
    Ok(Broker {
        client,
        jetstream,
        subjects: Subjects::new(prefix.to_owned()),
        names: Names::new(prefix),
        refusals,
    })
}

/// The connect error's words, with its source chain, in lower case.
fn describe_connect_error(error: &async_nats::ConnectError) -> String {
    use std::error::Error;
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Who the connection logs in as, for messages: `user "agent"`, `the
/// nats.nkey login`, ...
fn login(settings: &NatsSettings) -> String {
    match &settings.auth {
        NatsAuth::UserPassword { user, .. } => format!("user {user:?}"),
        NatsAuth::Token(_) => "the nats.token login".to_owned(),
        NatsAuth::NKey(_) => "the nats.nkey login".to_owned(),
        NatsAuth::CredentialsFile(path) => format!("the nats.creds login ({})", path.display()),
        NatsAuth::None => "this connection".to_owned(),
    }
}

/// Checks that the TLS files can be read and hold what they should, so that
/// a wrong path or a swapped certificate and key is reported by setting name
/// rather than as the TLS library's words.
fn check_tls_files(tls: &TlsSettings) -> Result<(), ConnectError> {
    let mut files = Vec::new();
    if let Some(ca) = &tls.ca {
        files.push((
            "nats.tls.ca",
            ca,
            "-----BEGIN CERTIFICATE-----",
            "a PEM certificate",
        ));
    }
    if let Some((cert, key)) = &tls.client {
        files.push((
            "nats.tls.cert",
            cert,
            "-----BEGIN CERTIFICATE-----",
            "a PEM certificate",
        ));
        files.push(("nats.tls.key", key, "PRIVATE KEY-----", "a PEM private key"));
    }
    for (what, path, marker, expected) in files {
        let fail = |detail: String| ConnectError::Credentials {
            what,
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
        if !String::from_utf8_lossy(&text).contains(marker) {
            return Err(fail(format!("it does not hold {expected}")));
        }
    }
    Ok(())
}

/// Turns the client's connect error into one sentence that says what was
/// refused or failed and which setting to look at.
fn explain_connect_error(
    settings: &NatsSettings,
    urls: &str,
    error: &async_nats::ConnectError,
) -> ConnectError {
    use async_nats::ConnectErrorKind;
    let urls = urls.to_owned();
    let words = describe_connect_error(error);
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation => ConnectError::Refused {
            detail: match &settings.auth {
                NatsAuth::None if settings.tls.as_ref().is_some_and(|t| t.client.is_some()) => {
                    "the login: no user matches the client certificate in nats.tls.cert and no nats.user, nats.token, nats.nkey or nats.creds is set".to_owned()
                }
                NatsAuth::None => {
                    "the login: it requires credentials and none are set (set nats.user and nats.password, nats.token, nats.nkey or nats.creds)".to_owned()
                }
                NatsAuth::UserPassword { user, .. } => format!(
                    "the login of user {user:?}: check nats.user and nats.password"
                ),
                NatsAuth::Token(_) => "the token in nats.token".to_owned(),
                NatsAuth::NKey(_) => {
                    "the nkey in nats.nkey: no user of the server has its public key".to_owned()
                }
                NatsAuth::CredentialsFile(path) => format!(
                    "the credentials in nats.creds {}: the server does not trust the account or user they name",
                    path.display()
                ),
            },
            urls,
        },
        ConnectErrorKind::Authentication => match &settings.auth {
            NatsAuth::NKey(_) => ConnectError::InvalidNkey,
            _ => ConnectError::Refused {
                urls,
                detail: format!("the login: {words}"),
            },
        },
        _ => match tls_problem(settings, &words) {
            Some(detail) => ConnectError::Tls { urls, detail },
            None => ConnectError::Unreachable {
                detail: match error.kind() {
                    ConnectErrorKind::TimedOut => {
                        format!("no answer within {CONNECT_TIMEOUT:?}")
                    }
                    _ if words.contains("Connection refused") => {
                        "connection refused (is nats-server running there, and is nats.url right?)"
                            .to_owned()
                    }
                    _ => words,
                },
                urls,
            },
        },
    }
}

/// What a TLS failure means, from the TLS library's words, naming the
/// setting to change; `None` when the error is not about TLS.
fn tls_problem(settings: &NatsSettings, words: &str) -> Option<String> {
    let tls = settings.tls.as_ref();
    let ca = tls.and_then(|t| t.ca.as_ref());
    let cert = tls.and_then(|t| t.client.as_ref()).map(|(cert, _)| cert);
    let has = |needle: &str| words.contains(needle);
    let detail = if has("CertificateRequired") {
        "the server requires a client certificate (set nats.tls.cert and nats.tls.key)".to_owned()
    } else if has("invalid peer certificate: UnknownIssuer")
        || has("invalid peer certificate: BadSignature")
    {
        match ca {
            Some(ca) => format!(
                "the server's certificate is not signed by the CA in nats.tls.ca {}",
                ca.display()
            ),
            None => "the server's certificate is not signed by a CA this machine trusts (set nats.tls.ca to the CA that signed it)".to_owned(),
        }
    } else if has("NotValidForName") {
        "the server's certificate is not issued for the host name in nats.url".to_owned()
    } else if has("invalid peer certificate: Expired") {
        "the server's certificate has expired".to_owned()
    } else if has("received fatal alert: UnknownCA")
        || has("received fatal alert: BadCertificate")
        || has("received fatal alert: DecryptError")
        || has("received fatal alert: CertificateUnknown")
    {
        match cert {
            Some(cert) => format!(
                "the server does not accept the client certificate in nats.tls.cert {} (it is not signed by a CA the server trusts)",
                cert.display()
            ),
            None => format!("the server refused the handshake ({words})"),
        }
    } else if has("InvalidContentType") || has("corrupt message") {
        "the server does not speak TLS, but nats.tls is set (use the server's TLS address or remove nats.tls)".to_owned()
    } else if has("invalid peer certificate") || has("TLS error") || has("fatal alert") {
        format!("{words} (check nats.tls.ca, nats.tls.cert and nats.tls.key)")
    } else {
        return None;
    };
    Some(detail)
}
