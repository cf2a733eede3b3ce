//! The test harness every Loom test shares.
//!
//! [`NatsServer`] starts a real `nats-server -js` on a free loopback port with
//! a temporary store, waits until it accepts connections, can be restarted on
//! the same port and store (a broker restart), and is stopped and removed on
//! drop. Tests run in parallel, each with its own server. When no
//! nats-server binary can be found the harness fails with instructions; it
//! never skips a test.
//!
//! [`loom_binary`] gives end-to-end tests the path of a freshly built `loom`;
//! [`Alertmanager`] runs a real Alertmanager for Klaxon's tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use loom_broker::embedded::{self, EmbeddedServer, ServerOptions};

mod alertmanager;
pub mod browser;
pub mod cluster;
pub mod creds;
pub mod prometheus;
pub mod tls;

pub use alertmanager::{Alertmanager, alertmanager_binary};
pub use cluster::NatsCluster;

/// A real nats-server with JetStream for one test.
pub struct NatsServer {
    server: EmbeddedServer,
    // Declared after the server so the store outlives the process on drop.
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server on a free loopback port with an empty store.
    ///
    /// # Panics
    /// When nats-server is missing or does not start: the message says how to
    /// install it (`scripts/install-nats-server`).
    pub fn start() -> NatsServer {
        NatsServer::start_with_config(None)
    }

    /// Starts a server like [`NatsServer::start`], with `config` (the text of
    /// a nats-server config file: authorization, TLS, cluster) written to
    /// `server.conf` in its directory and passed with `-c`. Paths in the text
    /// may be absolute; `include` paths are relative to that directory.
    ///
    /// # Panics
    /// As [`NatsServer::start`], and when the server refuses the config (the
    /// message carries the server's own words).
    pub fn start_configured(config: &str) -> NatsServer {
        NatsServer::start_with_config(Some(config))
    }

    fn start_with_config(config: Option<&str>) -> NatsServer {
        let binary = embedded::find_binary().unwrap_or_else(|error| panic!("{error}"));
        let dir = tempfile::Builder::new()
            .prefix("loom-nats-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a temporary store: {error}"));
        let config = config.map(|text| {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, text)
                .unwrap_or_else(|error| panic!("cannot write server.conf: {error}"));
            path
        });
        let server = EmbeddedServer::start(ServerOptions {
            binary,
            dir: dir.path().to_path_buf(),
            port: None,
            config,
        })
        .unwrap_or_else(|error| panic!("{error}"));
        NatsServer { server, dir }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// The server's directory (store, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats-server.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and
    /// store, as a broker crash and restart would.
    ///
    /// # Panics
    /// When the server does not come back.
    pub fn restart(&mut self) {
        self.server
            .restart()
            .unwrap_or_else(|error| panic!("nats-server did not restart: {error}"));
    }

    /// Kills the server (SIGKILL) without restarting it.
    pub fn kill(&mut self) {
        self.server.kill();
    }
}

/// The path of the `loom` binary, built from the current sources once per
/// test process (a no-op when it is up to date), so an end-to-end test never
/// runs a stale binary.
///
/// # Panics
/// When the build fails.
pub fn loom_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let status = Command::new(cargo)
                .current_dir(&workspace)
                .args(["build", "--quiet", "-p", "loom-cli", "--bin", "loom"])
                .status()
                .unwrap_or_else(|error| panic!("cannot run cargo to build loom: {error}"));
            assert!(status.success(), "building the loom binary failed");
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"));
            let binary = target.join("debug").join("loom");
            assert!(binary.is_file(), "no loom binary at {}", binary.display());
            binary
        })
        .clone()
}

/// A `loom` command for a test: the fresh binary, with the developer's own
/// `LOOM_*` variables removed (except `LOOM_NATS_SERVER`) so the test sees
/// only what it sets.
pub fn loom_command() -> Command {
    let mut command = Command::new(loom_binary());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("LOOM_") && name != "LOOM_NATS_SERVER" {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// A loopback port that was free a moment ago.
///
/// # Panics
/// When no port can be bound.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free loopback port: {error}"))
}

/// `GET http://127.0.0.1:<port><path>` over a plain socket: the status code
/// and the body, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn starts_restarts_and_cleans_up() {
        let mut server = NatsServer::start();
        let port = server.port();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        let store = server.dir().to_path_buf();
        server.restart();
        assert_eq!(server.port(), port, "restart keeps the port");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        drop(server);
        assert!(!store.exists(), "the store is removed on drop");
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the server is gone"
        );
    }

    #[test]
    fn parallel_servers_get_their_own_ports() {
        let a = NatsServer::start();
        let b = NatsServer::start();
        assert_ne!(a.port(), b.port());
        assert_ne!(a.dir(), b.dir());
    }
}
