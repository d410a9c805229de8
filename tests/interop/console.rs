//! The live console in headless Chromium (`tests/browser/console_check.py`, Playwright for
//! Python driving Debian's Chromium, set up as for the stompjs test in [`super::websocket`]):
//! the page shows a queue row with its depth after traffic, its sparklines, no CSP violation,
//! and purges a queue from a button once the admin token is entered. The header-router sample
//! plugin is loaded, so the plugins panel shows its calls (and asks for its traces).
//!
//! The screenshot is written to `target/console.png`; with `PLUGBOARD_UPDATE_SCREENSHOTS=1`
//! it is also copied to `docs/console.png` (the test never rewrites a tracked file otherwise).

use std::time::Duration;

use super::websocket::{chromium, root, web_python};
use super::{run_script, target_dir, Plugboard};
use plugboard_test_support::BrokerBinary;

#[test]
fn console_in_headless_chromium() {
    let python = web_python();
    let chromium = chromium();
    let router = plugboard_test_support::plugins::component(
        "header-router",
        plugboard_test_support::plugins::IfBuildFails::Panic,
    );
    let work = tempfile::tempdir().expect("tempdir");
    let screenshot = target_dir().join("console.png");
    let _ = std::fs::remove_file(&screenshot);
    let args = [
        "--broker".to_string(),
        Plugboard::PATH.to_string(),
        "--chromium".to_string(),
        chromium.display().to_string(),
        "--workdir".to_string(),
        work.path().display().to_string(),
        "--screenshot".to_string(),
        screenshot.display().to_string(),
        "--router".to_string(),
        router.display().to_string(),
    ];
    let out = run_script(
        "the console browser check",
        &python,
        &root().join("tests/browser/console_check.py"),
        &args,
        Duration::from_secs(240),
    );
    eprintln!("{}", out.trim());
    for step in [
        "queue row with its depth",
        "sparklines: ok",
        "connections: ok",
        "purge from the page: ok",
        "plugins panel: ok",
        "no CSP violation: ok",
        "console page: ok",
    ] {
        assert!(out.contains(step), "missing `{step}` in\n{out}");
    }
    assert!(
        screenshot.exists(),
        "no screenshot at {}",
        screenshot.display()
    );
    if std::env::var_os("PLUGBOARD_UPDATE_SCREENSHOTS").is_some_and(|v| v == "1") {
        std::fs::copy(&screenshot, root().join("docs/console.png"))
            .expect("update docs/console.png");
    }
}
