//! A subscription with a selector, made before reloads, keeps filtering after reloads that
//! change the selector plugin's destinations, its spec, its position and its component file
//! (the broker's native selector runs first; the plugin's filter is prepared again under each
//! new set and judges what the native selector let through).

use std::time::Duration;

use crate::support::*;
use plugboard_test_support::stomp::Client;

const Q: &str = "/queue/rsel.q";
const T: &str = "/topic/rsel.t";

/// Sends blue then red to `dest`; `sub` must get only red.
async fn only_red(tx: &mut Client, sub: &mut Client, dest: &str, round: usize) {
    let blue = format!("blue {round}");
    let red = format!("red {round}");
    tx.roundtrip(send_frame(dest, &[("color", "blue")], &blue))
        .await;
    tx.roundtrip(send_frame(dest, &[("color", "red")], &red))
        .await;
    let m = sub.msg().await;
    assert_eq!(
        m.body_str(),
        red,
        "round {round}: the selector must filter on {dest}: {m:?}"
    );
    sub.expect_silence(Duration::from_millis(300)).await;
}

fn body(
    setup: &Setup,
    sel_file: &std::path::Path,
    sel_destinations: &[&str],
    sel_extra: &str,
    sel_first: bool,
) -> String {
    let r = router(
        &setup.copy("header-router"),
        "/queue/rsel.in",
        &[("eu", "/queue/rsel.eu")],
    );
    let s = selector(sel_file, sel_destinations, sel_extra);
    if sel_first {
        format!("{s}{r}")
    } else {
        format!("{r}{s}")
    }
}

#[tokio::test]
async fn selector_subscription_survives_reloads() {
    let setup = Setup::new();
    let original = std::fs::read(plugin("selector")).unwrap();
    let sel_file = setup.path("selector.wasm");
    std::fs::write(&sel_file, with_custom_section(&original, "selector-v0")).unwrap();
    let broker = setup.start(&body(&setup, &sel_file, &["*"], "", false));

    let mut qc = broker.client().await;
    qc.subscribe_with("q", Q, "auto", &[("selector", "color = 'red'")])
        .await;
    let mut tc = broker.client().await;
    tc.subscribe_with("t", T, "auto", &[("selector", "color = 'red'")])
        .await;
    let mut tx = broker.client().await;
    only_red(&mut tx, &mut qc, Q, 0).await;
    only_red(&mut tx, &mut tc, T, 0).await;

    // 1. Other destinations patterns (still covering both subscriptions).
    setup.write(&body(
        &setup,
        &sel_file,
        &["/queue/rsel.*", "/topic/rsel.*"],
        "",
        false,
    ));
    broker.wait_generation_change(1, RELOAD_T).await;
    only_red(&mut tx, &mut qc, Q, 1).await;
    only_red(&mut tx, &mut tc, T, 1).await;

    // 2. Other host settings, and the selector moved before the router.
    setup.write(&body(
        &setup,
        &sel_file,
        &["/queue/rsel.*", "/topic/rsel.*"],
        "max_instances = 2\nrecycle_after_calls = 1000\n",
        true,
    ));
    broker.wait_generation_change(2, RELOAD_T).await;
    only_red(&mut tx, &mut qc, Q, 2).await;
    only_red(&mut tx, &mut tc, T, 2).await;

    // 3. A new component file.
    write_atomic(&sel_file, &with_custom_section(&original, "selector-v1"));
    let status = broker.wait_generation_change(3, COMPILE_T).await;
    assert_eq!(generation(&status), 4);
    only_red(&mut tx, &mut qc, Q, 3).await;
    only_red(&mut tx, &mut tc, T, 3).await;

    // The current set's selector filtered too (its counters start at zero). The broker's
    // native selector judges first, so the plugin sees only what it let through: the two red
    // messages of round 3.
    let status = broker.status().await;
    let calls = loaded(&status, "selector")["calls"].as_u64().unwrap_or(0);
    assert!(
        calls >= 2,
        "the re-prepared filters must run on generation 4's selector: {}",
        loaded(&status, "selector")
    );
    for c in [&mut qc, &mut tc, &mut tx] {
        c.sync().await;
    }
}
