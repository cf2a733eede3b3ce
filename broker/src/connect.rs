//! Connecting to NATS with the configured URLs, credentials and TLS.

use std::time::Duration;

use async_nats::ServerAddr;
use async_nats::jetstream;
use loom_config::{NatsAuth, NatsSettings};
use loom_protocol::Subjects;
use loom_protocol::topology::Names;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// The servers could not be reached or refused the connection.
    #[error("cannot connect to NATS at {urls}: {detail}")]
    Unreachable {
        /// The URLs tried.
        urls: String,
        /// The client's words.
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
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let client = options
        .name(client_name)
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(event = %other, "NATS client event"),
            }
        })
        .connect(addresses)
        .await
        .map_err(|e| ConnectError::Unreachable {
            urls: urls.join(", "),
            detail: describe_connect_error(&e),
        })?;
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(JETSTREAM_TIMEOUT)
        .build(client.clone());
    Ok(Broker {
        client,
        jetstream,
        subjects: Subjects::new(prefix.to_owned()),
        names: Names::new(prefix),
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
