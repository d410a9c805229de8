//! Shared setup: the plugin components (built once, see `plugboard_test_support::plugins`),
//! temporary configs, broker processes on a config file (the launcher of
//! `plugboard_test_support::broker`), `plugboard` commands run with a time bound, and clients with
//! a login.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use plugboard_test_support::broker::{exit_within, Broker};
use plugboard_test_support::plugins::workspace_root;
use plugboard_test_support::plugins::{component, IfBuildFails};
pub use plugboard_test_support::stomp::send_frame;
use plugboard_test_support::stomp::{Client, Frame, Version};

/// Bound on a `plugboard --check-config` run or a broker that must refuse to start.
pub const EXIT_T: Duration = Duration::from_secs(60);

/// Builds every plugin component (once per test binary; a failed build fails the test) and
/// returns `target/plugins`.
pub fn plugins_dir() -> PathBuf {
    plugboard_test_support::plugins::plugins_dir(IfBuildFails::Panic)
}

/// Absolute path of a compiled plugin component (`NAME.wasm`), building them first.
pub fn plugin(name: &str) -> String {
    let path = component(name, IfBuildFails::Panic);
    path.to_str().expect("UTF-8 path").to_string()
}

/// `examples/plugboard.toml`, the demo users start first (plugins built).
pub fn demo_config() -> PathBuf {
    plugins_dir();
    workspace_root().join("examples").join("plugboard.toml")
}

/// The `[[plugins]]` section of the demo's static-auth plugin (alice and bob, with their
/// permissions), its component named by absolute path.
pub fn demo_auth() -> String {
    let demo = std::fs::read_to_string(demo_config()).expect("demo config");
    let start = demo.find("[[plugins]]").expect("demo plugins");
    let end = demo[start..]
        .find("# SEND on /queue/orders")
        .map(|i| start + i)
        .expect("the auth section ends before the router's");
    demo[start..end].replace("../target/plugins/static-auth.wasm", &plugin("static-auth"))
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

/// The broker binary cargo built for this test run (cargo defines `CARGO_BIN_EXE_plugboard` for
/// this package's tests only, so the shared launcher is handed it).
pub fn broker_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_plugboard"))
}

/// A broker process on a config file (`PluginBroker::start(CONFIG)`); its stderr goes to a log
/// file that tests can read. Killed on drop (and its log shown when the test failed).
pub struct PluginBroker(Broker);

impl PluginBroker {
    /// Starts `plugboard --listen 127.0.0.1:0 --config CONFIG` and waits for its address.
    pub fn start(config: &Path) -> PluginBroker {
        PluginBroker(Broker::start(broker_bin(), config))
    }
}

impl Deref for PluginBroker {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.0
    }
}

impl DerefMut for PluginBroker {
    fn deref_mut(&mut self) -> &mut Broker {
        &mut self.0
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
    run_plugboard_with_input(args, None)
}

/// [`run_plugboard`] with `input` on its stdin (none: stdin is /dev/null).
pub fn run_plugboard_with_input(args: &[&std::ffi::OsStr], input: Option<&[u8]>) -> Finished {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(broker_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(input.map_or_else(Stdio::null, |_| Stdio::piped()))
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn plugboard");
    if let Some(input) = input {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A refusal may exit before reading it all: a broken pipe is its answer, not ours.
        let _ = stdin.write_all(input);
    }
    let Some(status) = exit_within(&mut child, EXIT_T) else {
        panic!(
            "plugboard {args:?} still running after {EXIT_T:?}; stdout: {:?}; stderr: {:?}",
            std::fs::read_to_string(&out_path).unwrap_or_default(),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
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

/// `plugboard hash-password ARGS` with `password` on stdin.
pub fn hash_password(password: &str, args: &[&str]) -> Finished {
    let mut all: Vec<&std::ffi::OsStr> = vec!["hash-password".as_ref()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    run_plugboard_with_input(&all, Some(password.as_bytes()))
}

/// The PHC string `plugboard hash-password ARGS` prints for `password` (which must succeed).
pub fn phc_of(password: &str, args: &[&str]) -> String {
    let run = hash_password(password, args);
    assert!(
        run.status.success(),
        "hash-password {args:?}: {}; stderr: {}",
        run.status,
        run.stderr
    );
    let phc = run.stdout.trim_end_matches('\n');
    assert!(!phc.contains('\n'), "one line on stdout: {:?}", run.stdout);
    phc.to_string()
}

/// A static-auth plugin `auth` with the sandbox the sample config gives it (see
/// examples/plugboard.toml), then `rest` (its users).
pub fn static_auth_plugin(rest: &str) -> String {
    format!(
        "\n[[plugins]]\nname = \"auth\"\nfile = \"{}\"\nhooks = [\"authenticate\"]\n\
         memory_mb = 32\ndeadline_ms = 500\n{rest}",
        plugin("static-auth")
    )
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

/// The ERROR `message` header, which the frame must have.
pub fn error_message(f: &Frame) -> &str {
    plugboard_test_support::stomp::assert_error_frame(f);
    f.must("message")
}

// ---------------------------------------------------------------------------------------------
// Status endpoint
// ---------------------------------------------------------------------------------------------

/// A broker on `config` (which sets `admin_listen`) whose status endpoint tests can read.
pub fn start_with_status(config: &Path) -> PluginBroker {
    start_with_status_args(config, &[])
}

/// [`start_with_status`] with extra command-line arguments (e.g. `--log-format json`).
pub fn start_with_status_args(config: &Path, args: &[&str]) -> PluginBroker {
    PluginBroker(
        plugboard_test_support::broker::Launch::config_file(broker_bin(), config)
            .args(args)
            .status_line()
            .start(),
    )
}

/// The `calls` counter of plugin `name`, from `GET /status`.
pub async fn plugin_calls(broker: &PluginBroker, name: &str) -> u64 {
    plugin_counter(broker, name, "calls").await
}

/// The counter `counter` (`calls`, `timeouts`, `recycled`, ...) of plugin `name`, from
/// `GET /status`.
pub async fn plugin_counter(broker: &PluginBroker, name: &str, counter: &str) -> u64 {
    let status = plugboard_test_support::broker::fetch_status(broker.admin()).await;
    status["plugins"]["loaded"]
        .as_array()
        .expect("plugins.loaded")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p[counter].as_u64())
        .unwrap_or_else(|| panic!("no {counter} counter for {name}: {status}"))
}
