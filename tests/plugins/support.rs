//! Shared setup: builds the plugin components once, starts broker processes on a config file
//! (keeping their whole stderr log), runs `plugboard` commands with a time bound, and connects
//! clients with a login.

#![allow(dead_code)] // each test module uses a different part of this module

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

use crate::harness::{Client, Frame, Version};

/// How long a broker may take to print `listening on ADDR` (a debug build compiles plugins on a
/// cold cache).
pub const START_T: Duration = Duration::from_secs(60);
/// Bound on a `plugboard --check-config` run or a broker that must refuse to start.
pub const EXIT_T: Duration = Duration::from_secs(60);

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
        assert!(
            status.success(),
            "`cargo xtask plugins` failed: the plugin tests need the components"
        );
    });
    root.join("target").join("plugins")
}

/// Absolute path of a compiled plugin component (`NAME.wasm`), building them first.
pub fn plugin(name: &str) -> String {
    let path = plugins_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} missing after the build", path.display());
    path.to_str().expect("UTF-8 path").to_string()
}

/// `examples/plugboard.toml`, the demo users start first (plugins built).
pub fn demo_config() -> PathBuf {
    plugins_dir();
    workspace_root().join("examples").join("plugboard.toml")
}

/// A temporary config file: `body` (which names plugins by absolute path, see [`plugin`])
/// with a compiled-plugin cache shared by these tests.
pub struct TempConfig {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn temp_config(body: &str) -> TempConfig {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plugboard.toml");
    let cache = workspace_root().join("target").join("plugin-e2e-cache");
    let text = format!("plugin_cache_dir = {:?}\n\n{body}", cache.to_str().unwrap());
    std::fs::write(&path, text).expect("write config");
    TempConfig { path, _dir: dir }
}

// ---------------------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------------------

/// A broker process on a config file; its stderr goes to a log file that tests can read. Killed
/// on drop (and its log shown when the test failed).
pub struct PluginBroker {
    child: Option<Child>,
    pub addr: SocketAddr,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl PluginBroker {
    /// Starts `plugboard --listen 127.0.0.1:0 --config CONFIG` and waits for its address.
    pub fn start(config: &Path) -> PluginBroker {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_plugboard"))
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--config")
            .arg(config)
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
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let _ = tx.send(first);
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let mut broker = PluginBroker {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_path,
            _dir: dir,
        };
        let line = rx.recv_timeout(START_T).unwrap_or_else(|_| {
            panic!(
                "broker printed no first line within {START_T:?}\n{}",
                broker.log()
            )
        });
        assert!(
            line.starts_with("listening on "),
            "first stdout line must be `listening on ADDR`, got {line:?}\n{}",
            broker.log()
        );
        let token = line.split_whitespace().last().unwrap_or("");
        broker.addr = token
            .parse()
            .unwrap_or_else(|e| panic!("bad address {token:?} in {line:?}: {e}"));
        broker
    }

    /// The broker's whole stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The log's records: a line plus its indented continuation lines (a trap's wasm
    /// backtrace spans several lines, with the record's fields after it).
    pub fn log_records(&self) -> Vec<String> {
        let mut records: Vec<String> = Vec::new();
        for line in self.log().lines() {
            match records.last_mut() {
                Some(last) if line.starts_with(char::is_whitespace) => {
                    last.push('\n');
                    last.push_str(line);
                }
                _ => records.push(line.to_string()),
            }
        }
        records
    }

    /// Waits (bounded) until a log record contains every one of `needles`; returns it.
    pub fn wait_log_line(&self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(record) = self
                .log_records()
                .into_iter()
                .find(|record| needles.iter().all(|n| record.contains(n)))
            {
                return record;
            }
            let log = self.log();
            assert!(
                Instant::now() < deadline,
                "no broker log line with all of {needles:?} within {within:?}\n---- log ----\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

impl Drop for PluginBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let start = lines.len().saturating_sub(80);
            eprintln!(
                "---- broker log (tail) ----\n{}\n---------------------------",
                lines[start..].join("\n")
            );
        }
    }
}

/// What a finished `plugboard` run printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `plugboard ARGS` to completion, killing it (and failing) after `EXIT_T`.
pub fn run_plugboard(args: &[&std::ffi::OsStr]) -> Finished {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn plugboard");
    let deadline = Instant::now() + EXIT_T;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "plugboard {args:?} still running after {EXIT_T:?}; stdout: {:?}; stderr: {:?}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// `plugboard --check-config --config FILE`.
pub fn check_config(config: &Path) -> Finished {
    run_plugboard(&[
        "--check-config".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
}

/// `plugboard --listen 127.0.0.1:0 --config FILE`, for a config the broker must refuse: it has
/// to exit by itself.
pub fn start_must_fail(config: &Path) -> Finished {
    run_plugboard(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
    ])
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// A STOMP 1.2 CONNECT with an optional login and passcode.
pub fn connect_frame(login: Option<&str>, passcode: Option<&str>) -> Frame {
    let mut f = Client::connect_frame(Version::V12);
    if let Some(login) = login {
        f = f.h("login", login);
    }
    if let Some(passcode) = passcode {
        f = f.h("passcode", passcode);
    }
    f
}

/// Connects with this login and passcode; returns the client and the first reply.
pub async fn try_login(
    addr: SocketAddr,
    login: Option<&str>,
    passcode: Option<&str>,
) -> (Client, Frame) {
    Client::connect_with(addr, connect_frame(login, passcode)).await
}

/// Connects with this login and passcode, which must be accepted.
pub async fn login(addr: SocketAddr, login: &str, passcode: &str) -> Client {
    let (client, reply) = try_login(addr, Some(login), Some(passcode)).await;
    assert!(
        reply.is("CONNECTED"),
        "{login}/{passcode}: expected CONNECTED, got {reply:?}"
    );
    client
}

pub async fn alice(addr: SocketAddr) -> Client {
    login(addr, "alice", "alice-secret").await
}

pub async fn bob(addr: SocketAddr) -> Client {
    login(addr, "bob", "bob-secret").await
}

/// A client of a broker without an authenticate plugin (anonymous).
pub async fn anonymous(addr: SocketAddr) -> Client {
    Client::connect(addr, Version::V12).await
}

/// A SEND with these extra headers and a body.
pub fn send_frame(dest: &str, headers: &[(&str, &str)], body: &str) -> Frame {
    let mut f = Frame::new("SEND").h("destination", dest);
    for (k, v) in headers {
        f = f.h(k, v);
    }
    f.body(body.as_bytes().to_vec())
}

/// The ERROR `message` header, which the frame must have.
pub fn error_message(f: &Frame) -> &str {
    crate::harness::assert_error_frame(f);
    f.must("message")
}
