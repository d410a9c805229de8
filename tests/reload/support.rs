//! Shared setup: builds the plugin components once, writes config files (atomically or in
//! place), starts a broker with its status endpoint, reads `/status`, waits for reloads, and
//! makes plugin component variants.

#![allow(dead_code)] // each test module uses a different part of this module

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Client, Frame, RecvError, Version};

/// How long a broker may take to print its addresses (a debug build compiles plugins on a cold
/// cache).
pub const START_T: Duration = Duration::from_secs(60);
/// Bound on waiting for a reload (generation change, refusal) that reuses cached compilations.
pub const RELOAD_T: Duration = Duration::from_secs(10);
/// Bound on waiting for a reload that compiles a component never seen before (a cold cache in a
/// debug build on a busy machine).
pub const COMPILE_T: Duration = Duration::from_secs(60);
/// Bound on one expected STOMP frame.
pub const FRAME_T: Duration = Duration::from_secs(5);

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the workspace")
        .to_path_buf()
}

/// Builds every plugin component (once per test binary) and returns `target/plugins`.
pub fn plugins_dir() -> PathBuf {
    static BUILD: Once = Once::new();
    let root = workspace_root();
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // xtask in its own target dir: the outer `cargo test` may still hold target/'s lock.
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["run", "--quiet", "-p", "xtask", "--target-dir"])
            .arg(root.join("target").join("xtask"))
            .args(["--", "plugins"])
            .status()
            .expect("running cargo xtask plugins");
        // These tests only need header-router and selector: a failure elsewhere in the
        // plugin workspace (someone's plugin under construction) must not hide reload bugs
        // when the components are already built. `plugin()` still fails if one is missing.
        if !status.success() {
            eprintln!(
                "warning: `cargo xtask plugins` failed; using the components already in target/plugins"
            );
        }
    });
    root.join("target").join("plugins")
}

/// Absolute path of a compiled plugin component (`NAME.wasm`), building them first.
pub fn plugin(name: &str) -> PathBuf {
    let path = plugins_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing after the build", path.display());
    path
}

/// The compiled-plugin cache these tests share (so variants compile once per machine).
pub fn cache_dir() -> PathBuf {
    workspace_root().join("target").join("plugin-reload-cache")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `wasm` with a custom section `plugboard-reload-test` holding `tag` appended: the same
/// plugin, a different file (and sha256). Deterministic, so the compile cache serves reruns.
pub fn with_custom_section(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"plugboard-reload-test";
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    leb128(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Writes `bytes` to `path` as editors and deploy tools do: a temporary file in the same
/// directory, then a rename over the target.
pub fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// Overwrites `path` in place (truncate, then write).
pub fn write_in_place(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("overwrite in place");
}

/// A temporary directory holding the config file (and any plugin copies).
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn new() -> Setup {
        plugins_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("plugboard.toml");
        Setup { dir, config }
    }

    /// A private copy of `target/plugins/NAME.wasm` in the temporary directory, so that a
    /// rebuild of the shared components (`cargo xtask plugins` run by anyone) cannot reload
    /// this test's broker behind its back.
    pub fn copy(&self, name: &str) -> PathBuf {
        let to = self.path(&format!("{name}.wasm"));
        if !to.exists() {
            std::fs::copy(plugin(name), &to).expect("copy plugin component");
        }
        to
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The full file text for a plugin section `body`: the shared cache, and both listeners
    /// on free loopback ports (set in the file, so a reload sees them unchanged).
    pub fn text(body: &str) -> String {
        format!(
            "plugin_cache_dir = {:?}\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n{body}",
            cache_dir().to_str().expect("UTF-8 path")
        )
    }

    /// Writes the config (header + `body`) atomically.
    pub fn write(&self, body: &str) {
        write_atomic(&self.config, Setup::text(body).as_bytes());
    }

    /// Overwrites the config (header + `body`) in place.
    pub fn write_in_place(&self, body: &str) {
        write_in_place(&self.config, Setup::text(body).as_bytes());
    }

    /// Writes the config and starts a broker on it, once its file watcher is live.
    pub fn start(&self, body: &str) -> ReloadBroker {
        self.write(body);
        let broker = ReloadBroker::start(&self.config, &[]);
        broker.wait_watching(&self.config);
        broker
    }
}

/// Per-call deadline of the plugins in these configs. The defaults (10 ms for `send`, 5 ms for
/// `message`) are for release builds; a debug broker sharing two CPUs with a dozen others
/// misses them now and then, and the resulting rejections have nothing to do with reloading.
pub const DEADLINE: &str = "deadline_ms = 2000\n";

/// A `[[plugins]]` entry for header-router (`file` absolute) applying to `on`, with rules
/// `header region = VALUE → TO` on `on`.
pub fn router(file: &Path, on: &str, rules: &[(&str, &str)]) -> String {
    let mut s = format!(
        "[[plugins]]\nname = \"router\"\nfile = {:?}\nhooks = [\"send\"]\ndestinations = [{on:?}]\n{DEADLINE}",
        file.to_str().expect("UTF-8 path")
    );
    for (value, to) in rules {
        s.push_str(&format!(
            "\n[[plugins.config.rules]]\ndestination = {on:?}\nheader = \"region\"\nvalue = {value:?}\nto = [{to:?}]\n"
        ));
    }
    s.push('\n');
    s
}

/// A `[[plugins]]` entry for the selector plugin serving `message` on `destinations`.
pub fn selector(file: &Path, destinations: &[&str], extra: &str) -> String {
    let list: Vec<String> = destinations.iter().map(|d| format!("{d:?}")).collect();
    format!(
        "[[plugins]]\nname = \"selector\"\nfile = {:?}\nhooks = [\"message\"]\ndestinations = [{}]\n{DEADLINE}{extra}\n",
        file.to_str().expect("UTF-8 path"),
        list.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------------------

/// The broker binary: `PLUGBOARD_BIN` if set (measurements on a release build), else the one
/// cargo built for this test run.
pub fn broker_bin() -> PathBuf {
    std::env::var_os("PLUGBOARD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_plugboard")))
}

/// A broker on a config file, with its status endpoint; killed on drop (log shown on failure).
pub struct ReloadBroker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log_path: PathBuf,
    _logdir: tempfile::TempDir,
}

impl ReloadBroker {
    /// Starts `plugboard --config CONFIG EXTRA...`; reads `listening on ADDR` and
    /// `status on http://ADDR/status` from stdout.
    pub fn start(config: &Path, extra: &[&str]) -> ReloadBroker {
        let logdir = tempfile::tempdir().expect("tempdir");
        let log_path = logdir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut child = Command::new(broker_bin())
            .arg("--config")
            .arg(config)
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("PLUGBOARD_TEST_LOG").unwrap_or_else(|_| "info".to_string()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn plugboard");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            for _ in 0..2 {
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
            }
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let mut broker = ReloadBroker {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            _logdir: logdir,
        };
        let next = |what: &str| {
            rx.recv_timeout(START_T)
                .unwrap_or_else(|_| panic!("broker printed no {what} line within {START_T:?}"))
        };
        let first = next("`listening on`");
        let second = next("`status on`");
        let parse = |line: &str, prefix: &str| -> SocketAddr {
            let rest = line
                .trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected `{prefix}...`, got {line:?}"));
            let token = rest.trim_end_matches("/status");
            token
                .parse()
                .unwrap_or_else(|e| panic!("bad address {token:?} in {line:?}: {e}"))
        };
        broker.addr = parse(&first, "listening on ");
        broker.admin = parse(&second, "status on http://");
        broker
    }

    /// Waits until the broker's file watcher reacts: rewrites `config` unchanged until the log
    /// says a reload started. (The broker prints its addresses before the watcher and the
    /// SIGHUP handler are installed; see `startup.rs`.) The reload finds nothing changed.
    pub fn wait_watching(&self, config: &Path) {
        let bytes = std::fs::read(config).expect("read config");
        let noticed = |b: &ReloadBroker| {
            b.log()
                .matches("plugin files or config changed: reloading")
                .count()
        };
        let before = noticed(self);
        let deadline = Instant::now() + START_T;
        loop {
            write_atomic(config, &bytes);
            let attempt = Instant::now() + Duration::from_secs(1);
            while Instant::now() < attempt {
                if noticed(self) > before {
                    // Let that reload finish (its files are unchanged: nothing is swapped).
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                Instant::now() < deadline,
                "the broker's file watcher never reacted\n{}",
                self.log_tail()
            );
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The broker's stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Value {
        fetch_status(self.admin).await
    }

    pub async fn generation(&self) -> u64 {
        generation(&self.status().await)
    }

    /// Polls `/status` until the generation differs from `from`; returns that status.
    pub async fn wait_generation_change(&self, from: u64, within: Duration) -> Value {
        self.wait_status(within, &format!("generation to leave {from}"), |s| {
            generation(s) != from
        })
        .await
    }

    /// Polls `/status` until `reload_failures` reaches `n`; returns that status.
    pub async fn wait_failures(&self, n: u64, within: Duration) -> Value {
        self.wait_status(within, &format!("reload_failures to reach {n}"), |s| {
            s["plugins"]["reload_failures"].as_u64().unwrap_or(0) >= n
        })
        .await
    }

    /// Polls `/status` until `done` holds (every 10 ms, at most `within`).
    pub async fn wait_status(
        &self,
        within: Duration,
        what: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {what}; last status: {}\n---- log ----\n{}",
                serde_json::to_string_pretty(&status["plugins"]).unwrap(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the generation has not changed for `quiet` (the burst's reloads are over).
    pub async fn wait_settled(&self, quiet: Duration, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut last = self.status().await;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.status().await;
            if generation(&now) != generation(&last)
                || now["plugins"]["reload_failures"] != last["plugins"]["reload_failures"]
            {
                since = Instant::now();
            }
            last = now;
            if since.elapsed() >= quiet {
                return last;
            }
            assert!(
                Instant::now() < deadline,
                "reloads did not settle within {within:?}"
            );
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A STOMP 1.2 client.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr, Version::V12).await
    }
}

impl Drop for ReloadBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- broker log (tail) ----\n{}\n---------------------------",
                self.log_tail()
            );
        }
    }
}

pub fn generation(status: &Value) -> u64 {
    status["plugins"]["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no plugins.generation in {status}"))
}

/// The `loaded` entry of plugin `name`.
pub fn loaded<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["plugins"]["loaded"]
        .as_array()
        .expect("plugins.loaded")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("plugin {name} not in {}", status["plugins"]["loaded"]))
}

/// `plugins.last_error.reason` (empty when none).
pub fn last_error(status: &Value) -> String {
    status["plugins"]["last_error"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `GET /status` over HTTP/1.0 (bounded).
pub async fn fetch_status(admin: SocketAddr) -> Value {
    let fetch = async {
        let mut stream = TcpStream::connect(admin).await.expect("connect to /status");
        stream
            .write_all(b"GET /status HTTP/1.0\r\nhost: test\r\n\r\n")
            .await
            .expect("write status request");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("read status response");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .expect("/status did not answer within 5 s");
    let text = String::from_utf8(response).expect("UTF-8 status");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.0 200"), "status answered {head}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("status JSON: {e}: {body}"))
}

// ---------------------------------------------------------------------------------------------
// STOMP helpers
// ---------------------------------------------------------------------------------------------

/// A SEND with these extra headers and a body.
pub fn send_frame(dest: &str, headers: &[(&str, &str)], body: &str) -> Frame {
    let mut f = Frame::new("SEND").h("destination", dest);
    for (k, v) in headers {
        f = f.h(k, v);
    }
    f.body(body.as_bytes().to_vec())
}

/// Sends `region=REGION` to `dest` (with a receipt) and returns the destination of the MESSAGE
/// `receiver` gets for it (the receiver subscribes to every candidate destination).
pub async fn routed_to(
    sender: &mut Client,
    receiver: &mut Client,
    dest: &str,
    region: &str,
) -> String {
    let body = crate::harness::unique("probe");
    sender
        .roundtrip(send_frame(dest, &[("region", region)], &body))
        .await;
    loop {
        let m = match receiver.try_recv(FRAME_T).await {
            Ok(m) => m,
            Err(e) => panic!("no MESSAGE for {body} (region {region}) within {FRAME_T:?}: {e:?}"),
        };
        assert!(m.is("MESSAGE"), "expected MESSAGE, got {m:?}");
        if m.body_str() == body {
            return m.must("destination").to_string();
        }
    }
}

/// Subscribes `client` (auto ack, with receipts) to every destination in `dests`.
pub async fn subscribe_all(client: &mut Client, dests: &[&str]) {
    for (i, d) in dests.iter().enumerate() {
        client.subscribe(&format!("s{i}"), d, "auto").await;
    }
}

/// Asserts that nothing (no MESSAGE, ERROR or close) arrives within `within`.
pub async fn expect_nothing(client: &mut Client, within: Duration) {
    match client.try_recv(within).await {
        Err(RecvError::Timeout) => {}
        other => panic!("expected nothing within {within:?}, got {other:?}"),
    }
}
