//! Right after start-up: the broker prints `listening on` and `status on` (scripts take that as
//! "ready") before the reload task has installed its SIGHUP handler and its file watches.
//!
// BROKER-BUG: main.rs spawns `reload::watch_and_reload` after printing both lines; the task
// installs the SIGHUP handler and the inotify watches only when it first runs. Until then
// (a) SIGHUP has its default action and terminates the broker (exit by signal 1), and
// (b) a change to the config or a plugin file is never noticed (no event, no reload, ever).
// Seen here under `cargo test`'s parallel load; also reproduced by hand (1 run in 10: start,
// wait for `status on`, `kill -HUP` → "Hangup"). Expected: install the handler and the watches
// before announcing the addresses (or reload once after installing them).
// These tests race on purpose, so they fail only sometimes; each tries several times.

use std::time::Duration;

use crate::support::*;

const IN: &str = "/queue/rst.in";

#[tokio::test]
async fn sighup_right_after_startup_does_not_kill_the_broker() {
    let setup = Setup::new();
    setup.write(&router(
        &setup.copy("header-router"),
        IN,
        &[("eu", "/queue/rst.a")],
    ));
    for attempt in 0..10 {
        let mut broker = ReloadBroker::start(&setup.config, &[]);
        broker.sighup();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            broker.is_running(),
            "attempt {attempt}: SIGHUP sent after `status on` was printed killed the broker"
        );
        assert_eq!(broker.generation().await, 1);
    }
}

#[tokio::test]
async fn a_change_right_after_startup_is_not_missed() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    for attempt in 0..5 {
        setup.write(&router(&wasm, IN, &[("eu", "/queue/rst.a")]));
        let broker = ReloadBroker::start(&setup.config, &[]);
        setup.write(&router(&wasm, IN, &[("eu", "/queue/rst.b")]));
        let deadline = std::time::Instant::now() + RELOAD_T;
        loop {
            if broker.generation().await == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "attempt {attempt}: a config change written right after `status on` was never loaded"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
