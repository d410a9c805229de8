//! A broken new plugin set is refused as a whole: the old one keeps serving, and the reason
//! (naming the plugin) shows in `/status` and the log; fixing the file then reloads.

use crate::support::*;
use plugboard_test_support::stomp::Client;

const IN: &str = "/queue/rb.in";
const A: &str = "/queue/rb.a";
const B: &str = "/queue/rb.b";

struct Scene {
    setup: Setup,
    broker: ReloadBroker,
    tx: Client,
    rx: Client,
}

/// A broker routing `region=eu` on IN to A (with `router_file`), and clients to check it.
async fn scene(setup: Setup, router_file: &std::path::Path) -> Scene {
    let broker = setup.start(&router(router_file, IN, &[("eu", A)]));
    let mut rx = broker.client().await;
    subscribe_all(&mut rx, &[IN, A, B]).await;
    let mut tx = broker.client().await;
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, A);
    Scene {
        setup,
        broker,
        tx,
        rx,
    }
}

impl Scene {
    /// Waits for refusal number `n`; checks the old set still serves and the error is visible.
    async fn expect_refused(&mut self, n: u64, since_ms: u64, needles: &[&str]) -> String {
        let status = self.broker.wait_failures(n, RELOAD_T).await;
        assert_eq!(
            generation(&status),
            1,
            "a refused set must not be swapped in: {}",
            status["plugins"]
        );
        assert_eq!(status["plugins"]["reload_failures"], n);
        assert_eq!(status["plugins"]["reloads"], 0);
        let reason = last_error(&status);
        eprintln!("refused: {reason}");
        for needle in needles {
            assert!(
                reason.contains(needle),
                "last_error.reason should contain {needle:?}: {reason:?}"
            );
        }
        let at = status["plugins"]["last_error"]["at_unix_ms"]
            .as_u64()
            .expect("last_error.at_unix_ms");
        assert!(
            at >= since_ms,
            "last_error.at_unix_ms {at} predates the change {since_ms}"
        );
        // Old rules still route; the clients were not disturbed.
        assert_eq!(routed_to(&mut self.tx, &mut self.rx, IN, "eu").await, A);
        assert_eq!(routed_to(&mut self.tx, &mut self.rx, IN, "us").await, IN);
        // The log says so too.
        let log = self.broker.log();
        assert!(
            log.lines()
                .any(|l| l.contains("reload refused") && needles.iter().all(|n| l.contains(n))),
            "no `reload refused` log line with {needles:?}:\n{log}"
        );
        reason
    }

    /// After a fix, the new set serves: generation 2, `region=eu` goes to `to`.
    async fn expect_fixed(&mut self, to: &str) -> serde_json::Value {
        let status = self.broker.wait_generation_change(1, COMPILE_T).await;
        assert_eq!(generation(&status), 2, "{}", status["plugins"]);
        assert_eq!(routed_to(&mut self.tx, &mut self.rx, IN, "eu").await, to);
        self.tx.sync().await;
        self.rx.sync().await;
        status
    }
}

#[tokio::test]
async fn truncated_wasm_is_refused_then_fixed() {
    let setup = Setup::new();
    let original = std::fs::read(plugin("header-router")).unwrap();
    let file = setup.path("router.wasm");
    let v0 = with_custom_section(&original, "broken-v0");
    std::fs::write(&file, &v0).unwrap();
    let mut s = scene(setup, &file).await;

    let t = unix_ms_now();
    write_atomic(&file, &v0[..v0.len() / 2]);
    s.expect_refused(1, t, &["plugin `router`", "router.wasm"])
        .await;

    let v1 = with_custom_section(&original, "broken-v1");
    write_atomic(&file, &v1);
    let status = s.expect_fixed(A).await;
    assert_eq!(loaded(&status, "router")["sha256"], sha256_hex(&v1));
}

#[tokio::test]
async fn component_of_the_wrong_world_is_refused_then_fixed() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let sel = setup.copy("selector");
    let mut s = scene(setup, &wasm).await;
    // The new set changes the router's rules too: refused as a whole, so they must not apply.
    let with_sel = |hooks: &str| {
        format!(
            "{}[[plugins]]\nname = \"sel\"\nfile = {:?}\nhooks = [{hooks:?}]\n",
            router(&wasm, IN, &[("eu", B)]),
            sel.to_str().unwrap()
        )
    };
    let t = unix_ms_now();
    s.setup.write(&with_sel("send"));
    s.expect_refused(1, t, &["plugin `sel`", "send"]).await;

    s.setup.write(&with_sel("message"));
    let status = s.expect_fixed(B).await;
    assert_eq!(
        loaded(&status, "sel")["hooks"],
        serde_json::json!(["message"])
    );
}

#[tokio::test]
async fn trapping_init_is_refused_then_fixed() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let mut s = scene(setup, &wasm).await;
    // A 3 MiB config string cannot be copied into a 2 MiB instance: the guest's allocator
    // aborts (`unreachable`) while `init` is being called.
    let pad = "x".repeat(3 * 1024 * 1024);
    let trapping = router(&wasm, IN, &[("eu", B)]).replacen(
        "hooks = [\"send\"]\n",
        &format!("hooks = [\"send\"]\nmemory_mb = 2\n\n[plugins.config]\npad = {pad:?}\n"),
        1,
    );
    let t = unix_ms_now();
    s.setup.write(&trapping);
    s.expect_refused(1, t, &["plugin `router`", "init", "trap"])
        .await;

    s.setup.write(&router(&wasm, IN, &[("eu", B)]));
    s.expect_fixed(B).await;
}

#[tokio::test]
async fn bad_config_is_refused_then_fixed() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let mut s = scene(setup, &wasm).await;

    // Not TOML at all (half-saved file).
    let t = unix_ms_now();
    let good_b = router(&wasm, IN, &[("eu", B)]);
    s.setup.write(&format!("{good_b}\n[[plugins\nname = "));
    s.expect_refused(1, t, &["config file"]).await;

    // The plugin refuses its config table in `init`.
    let t = unix_ms_now();
    let empty_to = good_b.replace(&format!("to = [{B:?}]"), "to = []");
    s.setup.write(&empty_to);
    s.expect_refused(2, t, &["plugin `router`", "empty `to`"])
        .await;

    // An unknown key in the plugin's table.
    let t = unix_ms_now();
    let unknown = good_b.replacen(
        "header = \"region\"",
        "header = \"region\"\ncolour = \"blue\"",
        1,
    );
    s.setup.write(&unknown);
    s.expect_refused(3, t, &["plugin `router`", "colour"]).await;

    s.setup.write(&good_b);
    let status = s.expect_fixed(B).await;
    // The history stays visible after the fix.
    assert_eq!(status["plugins"]["reload_failures"], 3);
    assert_eq!(status["plugins"]["reloads"], 1);
}
