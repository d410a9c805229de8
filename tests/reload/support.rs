//! Shared setup: writes config files (atomically or in place), starts a broker with its status
//! endpoint (the launcher of `plugboard_test_support::broker`), reads `/status`, waits for
//! reloads, and makes plugin component variants.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub use plugboard_test_support::broker::fetch_status;
use plugboard_test_support::broker::{Broker, Launch, START_T};
use plugboard_test_support::plugins::{component, workspace_root, IfBuildFails};
pub use plugboard_test_support::stomp::send_frame;
use plugboard_test_support::stomp::{Client, Version};

/// Bound on waiting for a reload (generation change, refusal) that reuses cached compilations.
pub const RELOAD_T: Duration = Duration::from_secs(10);
/// Bound on waiting for a reload that compiles a component never seen before (a cold cache in a
/// debug build on a busy machine).
pub const COMPILE_T: Duration = Duration::from_secs(60);
/// Bound on one expected STOMP frame.
pub const FRAME_T: Duration = Duration::from_secs(5);

/// Absolute path of a compiled plugin component (`NAME.wasm`), building them first. These tests
/// only need header-router and selector: a failed build elsewhere in the plugin workspace must
/// not hide reload bugs when the components are already built.
pub fn plugin(name: &str) -> PathBuf {
    component(name, IfBuildFails::UsePrebuilt)
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
        plugboard_test_support::plugins::plugins_dir(IfBuildFails::UsePrebuilt);
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

/// A broker on a config file, with its status endpoint (see [`Broker`]); killed on drop (log
/// shown on failure).
pub struct ReloadBroker(Broker);

impl ReloadBroker {
    /// Starts `plugboard --config CONFIG EXTRA...` (the file sets `listen` and `admin_listen`);
    /// reads `listening on ADDR` and `status on http://ADDR/status` from stdout.
    pub fn start(config: &Path, extra: &[&str]) -> ReloadBroker {
        ReloadBroker(
            // The cache the file names (or the default in the data directory): reloads are
            // watched using it.
            Launch::config_file(broker_bin(), config)
                .own_plugin_cache()
                .listen_from_config()
                .args(extra)
                .status_line()
                .start(),
        )
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

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// `GET /status` as JSON.
    pub async fn status(&self) -> Value {
        fetch_status(self.admin()).await
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

    /// A STOMP 1.2 client.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr, Version::V12).await
    }
}

impl Deref for ReloadBroker {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.0
    }
}

impl DerefMut for ReloadBroker {
    fn deref_mut(&mut self) -> &mut Broker {
        &mut self.0
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

// ---------------------------------------------------------------------------------------------
// STOMP helpers
// ---------------------------------------------------------------------------------------------

/// Sends `region=REGION` to `dest` (with a receipt) and returns the destination of the MESSAGE
/// `receiver` gets for it (the receiver subscribes to every candidate destination).
pub async fn routed_to(
    sender: &mut Client,
    receiver: &mut Client,
    dest: &str,
    region: &str,
) -> String {
    let body = plugboard_test_support::stomp::unique("probe");
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
