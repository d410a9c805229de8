//! Right after start-up: once the broker prints `listening on` and `status on` (scripts take
//! that as "ready"), its SIGHUP handler and file watches are in place (`Server::start` installs
//! them before the lines are printed).
//!
//! Regression tests: they used to be installed by a task that first ran after the
//! announcement, so an early SIGHUP killed the broker (exit by signal 1) and an early change to
//! a watched file was never noticed. A regression would fail only sometimes, so each test tries
//! several times.

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
