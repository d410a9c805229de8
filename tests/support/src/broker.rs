//! The one broker launcher: starts a real `plugboard` process for a test, reads its addresses
//! from stdout, keeps its whole stderr in a log file the test can read, and kills it on drop
//! (showing the log's tail when the test failed). Also reads the status endpoint.
//!
//! The broker binary is the caller's: each test binary passes its
//! `env!("CARGO_BIN_EXE_plugboard")`, which cargo does not define for this crate.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Default bound on a broker printing its addresses (a debug build compiles plugins on a cold
/// cache).
pub const START_T: Duration = Duration::from_secs(60);
/// How many lines of the log a failure shows.
const TAIL_LINES: usize = 80;

/// The config a broker runs on.
enum Config {
    /// TOML text, written to a file in the broker's temporary directory.
    Text(String),
    /// An existing file (relative paths in it resolve against its directory).
    File(PathBuf),
}

/// How to start a broker: `plugboard [--listen 127.0.0.1:0] --config FILE ARGS...`.
pub struct Launch {
    bin: PathBuf,
    config: Config,
    listen_arg: bool,
    args: Vec<OsString>,
    status_line: bool,
    tls_line: bool,
    websocket: bool,
    wss_line: bool,
    start_within: Duration,
    /// Passes `--plugin-cache-dir` with the cache all test brokers share.
    shared_plugin_cache: bool,
}

impl Launch {
    fn new(bin: PathBuf, config: Config) -> Launch {
        Launch {
            bin,
            config,
            listen_arg: true,
            args: Vec::new(),
            status_line: false,
            tls_line: false,
            websocket: false,
            wss_line: false,
            start_within: START_T,
            shared_plugin_cache: true,
        }
    }

    /// The broker binary `bin` (a test binary's `env!("CARGO_BIN_EXE_plugboard")`) on this TOML
    /// text.
    pub fn config_text(bin: impl Into<PathBuf>, toml: &str) -> Launch {
        Launch::new(bin.into(), Config::Text(toml.to_string()))
    }

    /// The broker binary `bin` on this config file.
    pub fn config_file(bin: impl Into<PathBuf>, path: &Path) -> Launch {
        Launch::new(bin.into(), Config::File(path.to_path_buf()))
    }

    /// Leaves out `--listen 127.0.0.1:0`: the config file sets `listen`.
    pub fn listen_from_config(mut self) -> Launch {
        self.listen_arg = false;
        self
    }

    /// Extra command-line arguments after `--config FILE`.
    pub fn args<S: AsRef<std::ffi::OsStr>>(mut self, args: &[S]) -> Launch {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// Lets the broker use the plugin cache its config (or default) names, instead of the cache
    /// all test brokers share.
    pub fn own_plugin_cache(mut self) -> Launch {
        self.shared_plugin_cache = false;
        self
    }

    /// Also reads the second stdout line, `status on http://ADDR/status` (`admin_listen` set).
    pub fn status_line(mut self) -> Launch {
        self.status_line = true;
        self
    }

    /// Also starts the WebSocket listener on a free port (`--ws-listen 127.0.0.1:0`) and reads
    /// its line, `listening on ws://ADDR/PATH` (printed after the plain STOMP line, before the
    /// TLS and status lines); its URL is [`Broker::ws_url`].
    pub fn websocket(mut self) -> Launch {
        self.websocket = true;
        self
    }

    /// Also reads the line `listening on wss://ADDR/PATH` (`[websocket] tls_listen` is set; it
    /// comes after the ws line and before the TLS one); its URL is [`Broker::wss_url`].
    pub fn wss_line(mut self) -> Launch {
        self.wss_line = true;
        self
    }

    /// Also reads the line `listening on stomp+ssl://ADDR` (a `[tls]` listener is configured);
    /// its address is [`Broker::tls_addr`]. With `--no-tcp` among the arguments there is no
    /// plain `listening on ADDR` line and [`Broker::addr`] stays unset (port 0).
    pub fn tls_line(mut self) -> Launch {
        self.tls_line = true;
        self
    }

    /// How long the broker may take to print its addresses.
    pub fn start_within(mut self, within: Duration) -> Launch {
        self.start_within = within;
        self
    }

    /// Starts the broker and waits for its addresses.
    pub fn start(self) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = match &self.config {
            Config::Text(toml) => {
                let path = dir.path().join("plugboard.toml");
                std::fs::write(&path, toml).expect("write config");
                path
            }
            Config::File(path) => path.clone(),
        };
        let log_path = dir.path().join("broker.log");
        let log = std::fs::File::create(&log_path).expect("create log");
        let mut command = Command::new(&self.bin);
        if self.listen_arg {
            command.arg("--listen").arg("127.0.0.1:0");
        }
        // Each broker journals into its own directory unless the test names one (several
        // brokers run at once, and a data directory takes one broker at a time).
        if !self.args.iter().any(|a| a == "--data-dir") {
            command.arg("--data-dir").arg(dir.path().join("data"));
        }
        // Compiled plugins are cached once for every test broker (its default, inside each
        // broker's own data directory, would compile every plugin again for every test).
        if self.shared_plugin_cache && !self.args.iter().any(|a| a == "--plugin-cache-dir") {
            command.arg("--plugin-cache-dir").arg(shared_plugin_cache());
        }
        if self.websocket {
            command.arg("--ws-listen").arg("127.0.0.1:0");
        }
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .args(&self.args)
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
        let plain_line = !self.args.iter().any(|a| a == "--no-tcp");
        let lines = usize::from(plain_line)
            + usize::from(self.websocket)
            + usize::from(self.wss_line)
            + usize::from(self.tls_line)
            + usize::from(self.status_line);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            for _ in 0..lines {
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let _ = tx.send(line);
            }
            // Keep draining so the broker never blocks on a full stdout pipe.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
        let mut broker = Broker {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: None,
            tls: None,
            ws: None,
            wss: None,
            log_path,
            _dir: dir,
        };
        let within = self.start_within;
        // The lines in the order the broker prints them; each is told apart by its prefix.
        let expected = [
            (plain_line, "listening on "),
            (self.websocket, "listening on ws://"),
            (self.wss_line, "listening on wss://"),
            (self.tls_line, "listening on stomp+ssl://"),
            (self.status_line, "status on http://"),
        ];
        for (_, prefix) in expected.iter().filter(|(wanted, _)| *wanted) {
            let line = rx.recv_timeout(within).unwrap_or_else(|_| {
                panic!(
                    "broker printed no `{prefix}ADDR` line within {within:?}\n{}",
                    broker.log_tail()
                )
            });
            let Some(rest) = line.trim().strip_prefix(prefix) else {
                panic!(
                    "stdout line must be `{prefix}ADDR`, got {line:?}\n{}",
                    broker.log_tail()
                );
            };
            if *prefix == "listening on ws://" {
                broker.ws = Some(format!("ws://{rest}"));
                continue;
            }
            if *prefix == "listening on wss://" {
                broker.wss = Some(format!("wss://{rest}"));
                continue;
            }
            let token = rest.trim_end_matches("/status");
            let address: SocketAddr = token
                .parse()
                .unwrap_or_else(|e| panic!("bad address {token:?} in {line:?}: {e}"));
            match *prefix {
                "listening on " => broker.addr = address,
                "listening on stomp+ssl://" => broker.tls = Some(address),
                _ => broker.admin = Some(address),
            }
        }
        broker
    }
}

/// A broker process started for one test; killed (and its log's tail shown on failure) on drop.
pub struct Broker {
    child: Option<Child>,
    /// The STOMP listener.
    pub addr: SocketAddr,
    admin: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    ws: Option<String>,
    wss: Option<String>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts `BIN --listen 127.0.0.1:0 --config CONFIG` and waits for its address.
    pub fn start(bin: impl Into<PathBuf>, config: &Path) -> Broker {
        Launch::config_file(bin, config).start()
    }

    /// The STOMP-over-TLS listener's address (the broker was started with
    /// [`Launch::tls_line`]).
    pub fn tls_addr(&self) -> SocketAddr {
        self.tls.expect("started with Launch::tls_line")
    }

    /// The status endpoint's address (the broker was started with [`Launch::status_line`]).
    pub fn admin(&self) -> SocketAddr {
        self.admin
            .expect("broker started without reading its status line")
    }

    /// The WebSocket endpoint, `ws://ADDR/PATH` (the broker was started with
    /// [`Launch::websocket`]).
    pub fn ws_url(&self) -> &str {
        self.ws
            .as_deref()
            .expect("broker started without its WebSocket listener")
    }

    /// The WebSocket listener's address.
    pub fn ws_addr(&self) -> SocketAddr {
        let url = self.ws_url();
        let rest = url.trim_start_matches("ws://");
        let end = rest.find('/').unwrap_or(rest.len());
        rest[..end].parse().expect("ws address")
    }

    /// The WSS endpoint, `wss://ADDR/PATH` (started with [`Launch::wss_line`]).
    pub fn wss_url(&self) -> &str {
        self.wss
            .as_deref()
            .expect("broker started without reading its WSS line")
    }

    /// The WSS listener's address.
    pub fn wss_addr(&self) -> SocketAddr {
        let rest = self.wss_url().trim_start_matches("wss://");
        let end = rest.find('/').unwrap_or(rest.len());
        rest[..end].parse().expect("wss address")
    }

    /// The process id.
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

    /// Sends a signal (`"HUP"`, `"TERM"`, ...) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Kills the process with SIGKILL (it gets no chance to flush anything) and waits for it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        let child = self.child.as_mut().expect("running");
        match exit_within(child, within) {
            Some(status) => {
                self.child = None;
                status
            }
            None => panic!(
                "broker did not exit within {within:?} of SIGTERM\n{}",
                self.log_tail()
            ),
        }
    }

    /// The broker's whole stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the log, framed for a failure message.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        format!(
            "---- broker log (tail) ----\n{}\n---------------------------",
            lines[start..].join("\n")
        )
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
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let exited = child.try_wait().ok().flatten();
            let _ = child.kill();
            let _ = child.wait();
            if let Some(status) = exited {
                if !std::thread::panicking() {
                    eprintln!("note: broker had already exited with {status}");
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// `GET /status` over HTTP/1.0 (bounded).
pub async fn fetch_status(admin: SocketAddr) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(admin)
            .await
            .expect("connect to /status");
        stream
            .write_all(format!("GET /status HTTP/1.0\r\nhost: {admin}\r\n\r\n").as_bytes())
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

/// The compiled-plugin cache every test broker shares: `target/test-plugin-cache`, private
/// (0700) as the broker requires.
pub fn shared_plugin_cache() -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let dir = crate::plugins::workspace_root()
        .join("target")
        .join("test-plugin-cache");
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir);
    dir
}

/// Waits up to `within` for `child` to exit: its status, or `None` after killing it (and
/// reaping it) when it was still running.
pub fn exit_within(child: &mut std::process::Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
