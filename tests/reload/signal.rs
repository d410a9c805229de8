//! SIGHUP reloads: a no-change SIGHUP leaves the generation alone, a changed set is swapped
//! in once, and SIGHUP picks up changes the file watcher cannot see.

use std::time::{Duration, Instant};

use crate::support::*;

const IN: &str = "/queue/rs.in";
const A: &str = "/queue/rs.a";
const B: &str = "/queue/rs.b";

fn hup_lines(broker: &ReloadBroker) -> usize {
    broker
        .log()
        .lines()
        .filter(|l| l.contains("SIGHUP: reloading"))
        .count()
}

/// Sends SIGHUP and waits (bounded) for the broker to log that it handles it.
async fn sighup_and_wait(broker: &ReloadBroker) {
    let before = hup_lines(broker);
    broker.sighup();
    let deadline = Instant::now() + RELOAD_T;
    while hup_lines(broker) == before {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not logged:\n{}",
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sighup_without_a_change_keeps_the_generation() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let broker = setup.start(&router(&wasm, IN, &[("eu", A)]));
    for _ in 0..3 {
        sighup_and_wait(&broker).await;
    }
    // The reload itself runs after the log line; give it time to (not) swap.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = broker.status().await;
    assert_eq!(generation(&status), 1, "{}", status["plugins"]);
    assert_eq!(status["plugins"]["reloads"], 0);
    assert_eq!(status["plugins"]["reload_failures"], 0);
    let mut c = broker.client().await;
    subscribe_all(&mut c, &[IN, A, B]).await;
    let mut tx = broker.client().await;
    assert_eq!(routed_to(&mut tx, &mut c, IN, "eu").await, A);
}

#[tokio::test]
async fn sighup_with_a_change_swaps_once() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let broker = setup.start(&router(&wasm, IN, &[("eu", A)]));
    let mut rx = broker.client().await;
    subscribe_all(&mut rx, &[IN, A, B]).await;
    let mut tx = broker.client().await;

    // The watcher and the signal both see this change: still exactly one new generation.
    setup.write(&router(&wasm, IN, &[("eu", B)]));
    broker.sighup();
    broker.wait_generation_change(1, RELOAD_T).await;
    let status = broker
        .wait_settled(Duration::from_secs(1), Duration::from_secs(10))
        .await;
    assert_eq!(generation(&status), 2, "{}", status["plugins"]);
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, B);
}

/// A plugin reached through a symlink into another directory: the watcher watches the link's
/// directory, so a change of the target may go unseen; SIGHUP reloads it.
#[tokio::test]
async fn sighup_reloads_a_change_the_watcher_does_not_see() {
    let setup = Setup::new();
    let original = std::fs::read(plugin("header-router")).unwrap();
    let real_dir = setup.path("real");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("router.wasm");
    let v0 = with_custom_section(&original, "signal-v0");
    std::fs::write(&real, &v0).unwrap();
    let link = setup.path("router.wasm");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let broker = setup.start(&router(&link, IN, &[("eu", A)]));
    assert_eq!(
        loaded(&broker.status().await, "router")["sha256"],
        sha256_hex(&v0)
    );

    let v1 = with_custom_section(&original, "signal-v1");
    write_in_place(&real, &v1);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen_by_watcher = broker.generation().await != 1;
    eprintln!(
        "symlinked plugin changed: the watcher {} it",
        if seen_by_watcher {
            "saw"
        } else {
            "did not see"
        }
    );
    if !seen_by_watcher {
        sighup_and_wait(&broker).await;
        broker.wait_generation_change(1, COMPILE_T).await;
    }
    let status = broker.status().await;
    assert_eq!(generation(&status), 2, "{}", status["plugins"]);
    assert_eq!(loaded(&status, "router")["sha256"], sha256_hex(&v1));
}
