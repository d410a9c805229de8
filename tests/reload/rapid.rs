//! A rapid series of writes to the config ends with the last version loaded.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::*;

const IN: &str = "/queue/rr.in";
const WRITES: usize = 20;

fn target(i: usize) -> String {
    format!("/queue/rr.q{i}")
}

/// Writes `text` in place in two pieces with a pause between them, as a slow editor would.
async fn write_in_two_pieces(path: &std::path::Path, text: &str) {
    let mut f = std::fs::File::create(path).expect("truncate config");
    let (a, b) = text.split_at(text.len() / 2);
    f.write_all(a.as_bytes()).unwrap();
    f.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    f.write_all(b.as_bytes()).unwrap();
}

async fn burst(in_place: bool) {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let version = |i: usize| router(&wasm, IN, &[("eu", &target(i))]);
    let broker = setup.start(&version(0));
    let mut rx = broker.client().await;
    let mut dests: Vec<String> = (0..=WRITES).map(target).collect();
    dests.push(IN.to_string());
    let dests: Vec<&str> = dests.iter().map(String::as_str).collect();
    subscribe_all(&mut rx, &dests).await;
    let mut tx = broker.client().await;
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, target(0));

    let started = Instant::now();
    for i in 1..=WRITES {
        if in_place {
            write_in_two_pieces(&setup.config, &Setup::text(&version(i))).await;
        } else {
            setup.write(&version(i));
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    let burst_ms = started.elapsed().as_millis();
    broker.wait_generation_change(1, RELOAD_T).await;
    let status = broker
        .wait_settled(Duration::from_secs(1), Duration::from_secs(20))
        .await;
    let reloads = generation(&status) - 1;
    eprintln!(
        "rapid ({}): {WRITES} writes in {burst_ms} ms → {reloads} reload(s), {} refused",
        if in_place { "in place" } else { "renames" },
        status["plugins"]["reload_failures"]
    );
    assert_eq!(
        routed_to(&mut tx, &mut rx, IN, "eu").await,
        target(WRITES),
        "the last version must be the one serving"
    );
    assert_eq!(
        status["plugins"]["reload_failures"], 0,
        "a half-written file was read despite the debounce: {}",
        status["plugins"]
    );
    tx.sync().await;
    rx.sync().await;
}

#[tokio::test]
async fn rapid_in_place_writes_end_with_the_last_version() {
    burst(true).await;
}

#[tokio::test]
async fn rapid_renames_end_with_the_last_version() {
    burst(false).await;
}
