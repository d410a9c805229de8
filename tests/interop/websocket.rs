//! STOMP over WebSocket with clients nobody on this project wrote: the Python `websockets`
//! library for framing edge cases (`ws_framing_check.py`), and `@stomp/stompjs` in headless
//! Chromium (`tests/browser/browser_check.py`, driven by Playwright for Python).
//!
//! The setup installs what it needs, once: a virtualenv `target/web-venv` with pinned
//! `websockets` and `playwright` (its wheel carries the driver; it never downloads a browser),
//! `@stomp/stompjs` from npm into `target/web-tools`, and Debian's `chromium` through
//! `tests/browser/setup-chromium.sh` (apt-get, skipped when chromium is on PATH). A missing
//! tool is a test failure with the reason, never a silent skip.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{lock, run, run_script, target_dir, venv, Plugboard};
use crate::harness::Broker;
use plugboard_test_support::BrokerBinary;

/// The `websockets` release the framing checks are written against.
const WEBSOCKETS: &str = "websockets==15.0.1";
/// Playwright for Python; 1.64 drives Debian 12's Chromium 156.
const PLAYWRIGHT: &str = "playwright==1.64.1";
/// The stompjs release browsers load in the test (the one RabbitMQ's Web-STOMP examples use).
const STOMPJS: &str = "7.5.0";

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub(crate) fn web_python() -> PathBuf {
    venv("web-venv", &[WEBSOCKETS, PLAYWRIGHT])
}

/// `stomp.umd.min.js` of `@stomp/stompjs`, installed from npm into `target/web-tools`.
fn stompjs_bundle() -> PathBuf {
    let tools = target_dir().join("web-tools");
    let package = tools.join("node_modules/@stomp/stompjs");
    let bundle = package.join("bundles/stomp.umd.min.js");
    let installed = || {
        std::fs::read_to_string(package.join("package.json"))
            .is_ok_and(|p| p.contains(&format!("\"version\": \"{STOMPJS}\"")))
            && bundle.exists()
    };
    if installed() {
        return bundle;
    }
    let _lock = lock(target_dir().join("web-tools.lock"));
    if !installed() {
        std::fs::create_dir_all(&tools).expect("create target/web-tools");
        run(
            "installing @stomp/stompjs from npm (needs node and npm: apt-get install nodejs npm)",
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--loglevel=error",
                    "--prefix",
                ])
                .arg(&tools)
                .arg(format!("@stomp/stompjs@{STOMPJS}")),
        );
    }
    bundle
}

/// Debian's Chromium, installed by the project's setup script when missing.
pub(crate) fn chromium() -> PathBuf {
    let _lock = lock(target_dir().join("chromium-setup.lock"));
    let out = run(
        "installing Chromium for the browser test (tests/browser/setup-chromium.sh)",
        Command::new("bash").arg(root().join("tests/browser/setup-chromium.sh")),
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!path.is_empty(), "setup-chromium.sh printed no path");
    PathBuf::from(path)
}

#[test]
fn websockets_library_framing_edge_cases() {
    let python = web_python();
    let broker = Broker::with_websocket("");
    let script = root().join("tests/interop/ws_framing_check.py");
    let out = run_script(
        "the websockets framing check",
        &python,
        &script,
        &["--url".to_string(), broker.ws_url().to_string()],
        Duration::from_secs(120),
    );
    eprintln!("{}", out.trim());
    assert!(out.contains("unknown subprotocol (400)"), "{out}");
}

#[test]
fn stompjs_in_headless_chromium() {
    let python = web_python();
    let bundle = stompjs_bundle();
    let chromium = chromium();
    let work = tempfile::tempdir().expect("tempdir");
    // Kept where a person can look at it (docs/websocket-demo.png is a copy of one).
    let screenshot = target_dir().join("websocket-demo.png");
    let args = [
        "--broker".to_string(),
        Plugboard::PATH.to_string(),
        "--chromium".to_string(),
        chromium.display().to_string(),
        "--stompjs".to_string(),
        bundle.display().to_string(),
        "--workdir".to_string(),
        work.path().display().to_string(),
        "--screenshot".to_string(),
        screenshot.display().to_string(),
    ];
    let out = run_script(
        "the stompjs browser check",
        &python,
        &root().join("tests/browser/browser_check.py"),
        &args,
        Duration::from_secs(240),
    );
    eprintln!("{}", out.trim());
    for step in [
        "connect, subscribe, send, receive: ok",
        "binary body: ok",
        "1 MiB message: ok",
        "heart-beats for 30 s: ok",
        "reconnect after a broker restart: ok",
        "demo page: ok",
    ] {
        assert!(out.contains(step), "missing `{step}` in\n{out}");
    }
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
}
