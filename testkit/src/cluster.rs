//! A real JetStream cluster on loopback for multi-node tests.
//!
//! [`NatsCluster::start`] runs N `nats-server` processes (through the same
//! [`EmbeddedServer`] that `loom up` uses), each with JetStream, its own
//! temporary store, a free client port, a cluster (route) port and a
//! monitoring port, a `server_name` (`n0`, `n1`, …) and a `cluster` block
//! whose routes name every node. It returns once the routes are up, every
//! node reports healthy on `/healthz` and all of them agree on a JetStream
//! meta leader. Nodes can be killed (SIGKILL, as a crash) and restarted on
//! the same ports and store; everything is killed and removed on drop.
//!
//! It does not know Loom: it only gives tests a cluster to point `nats.url`
//! at, and the monitoring endpoints to see what the cluster is doing.

use std::path::Path;
use std::time::{Duration, Instant};

use loom_broker::embedded::{self, EmbeddedError, EmbeddedServer, ServerOptions};

use crate::{free_port, http_get};

/// The cluster name every test cluster uses.
pub const CLUSTER_NAME: &str = "loom-test";

/// How long a cluster may take to form (or a restarted node to rejoin) on a
/// busy machine.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a start is retried when a port picked as free was taken by a
/// parallel test in the meantime.
const START_ATTEMPTS: usize = 5;

/// A real nats-server cluster with JetStream for one test.
pub struct NatsCluster {
    nodes: Vec<Node>,
    // Declared after the nodes so the stores outlive the processes on drop.
    dir: tempfile::TempDir,
}

/// One node of a [`NatsCluster`].
struct Node {
    name: String,
    server: EmbeddedServer,
    http_port: u16,
}

/// The ports of one node.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    route: u16,
    http: u16,
}

impl NatsCluster {
    /// Starts a cluster of `nodes` servers and waits until it has formed.
    ///
    /// # Panics
    /// When nats-server is missing, a node does not start, or the cluster
    /// does not form within a minute (the message carries every node's log).
    pub fn start(nodes: usize) -> NatsCluster {
        NatsCluster::start_with(nodes, |_, _| String::new())
    }

    /// Starts a cluster like [`NatsCluster::start`], appending
    /// `extra(node, node_dir)` to node `node`'s config file (an
    /// `authorization` block, an `include`, TLS). nats-server reads an
    /// `include` path relative to the including file, even one that starts
    /// with `/`, so a shared file is best written into `node_dir` by `extra`
    /// and included by its bare name (`include ./auth.conf`).
    ///
    /// # Panics
    /// As [`NatsCluster::start`], and when a node refuses its config (the
    /// message carries the server's own words).
    pub fn start_with(nodes: usize, extra: impl Fn(usize, &Path) -> String) -> NatsCluster {
        assert!(nodes >= 1, "a cluster needs at least one node");
        let binary = embedded::find_binary().unwrap_or_else(|error| panic!("{error}"));
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            match NatsCluster::try_start(&binary, nodes, &extra) {
                Ok(cluster) => {
                    cluster.wait_formed(FORM_TIMEOUT);
                    return cluster;
                }
                Err(StartError::PortTaken(detail)) => last_error = detail,
                Err(StartError::Failed(detail)) => panic!("{detail}"),
            }
        }
        panic!("the cluster did not start after {START_ATTEMPTS} attempts: {last_error}");
    }

    fn try_start(
        binary: &Path,
        nodes: usize,
        extra: &impl Fn(usize, &Path) -> String,
    ) -> Result<NatsCluster, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("loom-nats-cluster-")
            .tempdir()
            .map_err(|e| StartError::Failed(format!("cannot create a temporary store: {e}")))?;
        let ports: Vec<Ports> = (0..nodes)
            .map(|_| Ports {
                client: free_port(),
                route: free_port(),
                http: free_port(),
            })
            .collect();
        let routes = ports
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{}\"", p.route))
            .collect::<Vec<_>>()
            .join(", ");
        let mut started = Vec::with_capacity(nodes);
        for (index, node_ports) in ports.iter().enumerate() {
            let name = format!("n{index}");
            let node_dir = dir.path().join(&name);
            std::fs::create_dir_all(&node_dir).map_err(|e| {
                StartError::Failed(format!("cannot create {}: {e}", node_dir.display()))
            })?;
            let config = format!(
                "server_name: \"{name}\"\n\
                 http: \"127.0.0.1:{http}\"\n\
                 cluster {{\n  name: \"{CLUSTER_NAME}\"\n  listen: \"127.0.0.1:{route}\"\n  routes: [{routes}]\n}}\n\
                 {extra}\n",
                http = node_ports.http,
                route = node_ports.route,
                extra = extra(index, &node_dir),
            );
            let config_path = node_dir.join("server.conf");
            std::fs::write(&config_path, config).map_err(|e| {
                StartError::Failed(format!("cannot write {}: {e}", config_path.display()))
            })?;
            let server = EmbeddedServer::start(ServerOptions {
                binary: binary.to_path_buf(),
                dir: node_dir.clone(),
                port: Some(node_ports.client),
                config: Some(config_path),
            })
            .map_err(|error| StartError::from_embedded(&name, &node_dir, error))?;
            started.push(Node {
                name,
                server,
                http_port: node_ports.http,
            });
        }
        Ok(NatsCluster {
            nodes: started,
            dir,
        })
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, `nats://127.0.0.1:<port>`, in node order:
    /// what `nats.url` lists.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.server.url()).collect()
    }

    /// Node `node`'s client URL.
    pub fn url(&self, node: usize) -> String {
        self.nodes[node].server.url()
    }

    /// Node `node`'s `server_name` (`n<node>`), as stream and consumer
    /// cluster info names it.
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].name
    }

    /// The node whose `server_name` is `name`.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Node `node`'s monitoring port (`/healthz`, `/jsz`, `/connz`, `/routez`).
    pub fn http_port(&self, node: usize) -> u16 {
        self.nodes[node].http_port
    }

    /// Node `node`'s directory (config, store, log).
    pub fn dir(&self, node: usize) -> &Path {
        self.nodes[node].server.dir()
    }

    /// The directory holding every node's directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Whether node `node`'s process is running.
    pub fn is_running(&self, node: usize) -> bool {
        self.nodes[node].server.pid().is_some()
    }

    /// Kills node `node` (SIGKILL), as a crash would. Its store stays.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].server.kill();
    }

    /// Starts node `node` again (killing it first if it runs) on the same
    /// ports and store, and waits until the cluster has formed again with it.
    ///
    /// # Panics
    /// When the node does not start or rejoin within a minute.
    pub fn restart(&mut self, node: usize) {
        if let Err(error) = self.nodes[node].server.restart() {
            panic!(
                "node {} did not restart: {error}\n{}",
                self.nodes[node].name,
                self.logs()
            );
        }
        self.wait_formed(FORM_TIMEOUT);
    }

    /// The JetStream meta leader as the running nodes see it, once they all
    /// agree on one that runs.
    pub fn meta_leader(&self) -> Option<usize> {
        let mut leader = None;
        for node in self.running() {
            let seen = self
                .jsz(node)
                .and_then(|jsz| meta_leader_name(&jsz))
                .and_then(|name| self.node_named(&name))?;
            if leader.is_some_and(|l| l != seen) || !self.is_running(seen) {
                return None;
            }
            leader = Some(seen);
        }
        leader
    }

    /// The names of the client connections node `node` serves now (`/connz`),
    /// e.g. `loom-agent`; `None` when it does not answer.
    pub fn client_names(&self, node: usize) -> Option<Vec<String>> {
        let (status, body) = http_get(self.http_port(node), "/connz?limit=1024")?;
        if status != 200 {
            return None;
        }
        let connz: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(
            connz
                .get("connections")?
                .as_array()?
                .iter()
                .map(|c| {
                    c.get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect(),
        )
    }

    /// Node `node`'s log so far.
    pub fn log(&self, node: usize) -> String {
        std::fs::read_to_string(self.dir(node).join("nats-server.log")).unwrap_or_default()
    }

    /// The last lines of every node's log, labelled: for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let log = self.log(index);
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            text.push_str(&format!(
                "--- nats-server {} ({}) ---\n{}\n",
                node.name,
                if self.is_running(index) {
                    "running"
                } else {
                    "killed"
                },
                tail.join("\n")
            ));
        }
        text
    }

    /// Waits until every running node is healthy, has routes to every other
    /// running node, and all of them agree on a running meta leader.
    ///
    /// # Panics
    /// After `within`, with every node's log.
    pub fn wait_formed(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.formed() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not form within {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn formed(&self) -> bool {
        let running: Vec<usize> = self.running().collect();
        let routes_up = running.iter().all(|&node| {
            self.routes(node)
                .is_some_and(|names| running.iter().all(|&o| o == node || names.contains(&o)))
        });
        let healthy = running.iter().all(|&node| {
            http_get(self.http_port(node), "/healthz")
                .is_some_and(|(status, body)| status == 200 && body.contains("ok"))
        });
        routes_up && healthy && self.meta_leader().is_some()
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&node| self.is_running(node))
    }

    /// The nodes node `node` has a route to (`/routez`).
    fn routes(&self, node: usize) -> Option<Vec<usize>> {
        let (status, body) = http_get(self.http_port(node), "/routez")?;
        if status != 200 {
            return None;
        }
        let routez: serde_json::Value = serde_json::from_str(&body).ok()?;
        let routes = routez.get("routes")?.as_array()?;
        Some(
            routes
                .iter()
                .filter_map(|r| r.get("remote_name")?.as_str())
                .filter_map(|name| self.node_named(name))
                .collect(),
        )
    }

    fn jsz(&self, node: usize) -> Option<serde_json::Value> {
        let (status, body) = http_get(self.http_port(node), "/jsz")?;
        if status != 200 {
            return None;
        }
        serde_json::from_str(&body).ok()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        // Killed, not stopped: the stores are thrown away, and a graceful stop
        // of each node in turn would wait on the others' elections.
        for node in &mut self.nodes {
            node.server.kill();
        }
    }
}

fn meta_leader_name(jsz: &serde_json::Value) -> Option<String> {
    let leader = jsz.get("meta_cluster")?.get("leader")?.as_str()?;
    (!leader.is_empty()).then(|| leader.to_owned())
}

/// Why one attempt to start the cluster failed.
enum StartError {
    /// A port picked as free was taken meanwhile: try again with others.
    PortTaken(String),
    /// Anything else: give up.
    Failed(String),
}

impl StartError {
    fn from_embedded(name: &str, dir: &Path, error: EmbeddedError) -> StartError {
        let log = std::fs::read_to_string(dir.join("nats-server.log")).unwrap_or_default();
        let detail = format!("node {name} did not start: {error}\n{log}");
        match error {
            EmbeddedError::PortInUse { .. } => StartError::PortTaken(detail),
            EmbeddedError::Exited { .. } if log.contains("address already in use") => {
                StartError::PortTaken(detail)
            }
            _ => StartError::Failed(detail),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;

    #[test]
    fn three_nodes_form_a_cluster_and_a_killed_node_rejoins() {
        let mut cluster = NatsCluster::start(3);
        assert_eq!(cluster.urls().len(), 3);
        let leader = cluster.meta_leader().expect("a meta leader");
        cluster.kill(leader);
        assert!(!cluster.is_running(leader));
        assert!(TcpStream::connect(("127.0.0.1", cluster.http_port(leader))).is_err());
        cluster.wait_formed(Duration::from_secs(60));
        let new_leader = cluster.meta_leader().expect("a new meta leader");
        assert_ne!(new_leader, leader, "the killed node cannot lead");
        cluster.restart(leader);
        assert!(cluster.is_running(leader));
        assert!(cluster.dir(leader).join("server.conf").is_file());
        let root = cluster.root().to_path_buf();
        drop(cluster);
        assert!(!root.exists(), "the stores are removed on drop");
    }
}
