//! A reload never weakens the policy by accident: an empty or truncated file, or one that drops
//! the authenticate hook or a plugin, is refused and the plugins in force keep serving, unless
//! the new file says `[reload] allow_weaker_policy = true`.

use crate::support::*;

const IN: &str = "/queue/weak.in";
const A: &str = "/queue/weak.a";

/// An authenticator (the probe plugin admits everyone) and a router on IN.
fn guarded(probe: &std::path::Path, router_file: &std::path::Path) -> String {
    format!(
        "[[plugins]]\nname = \"auth\"\nfile = {:?}\nhooks = [\"authenticate\"]\n{DEADLINE}\n{}",
        probe.to_str().unwrap(),
        router(router_file, IN, &[("eu", A)])
    )
}

#[tokio::test]
async fn an_empty_config_file_is_refused_and_the_plugins_keep_serving() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let broker = setup.start(&router(&wasm, IN, &[("eu", A)]));
    let mut rx = broker.client().await;
    subscribe_all(&mut rx, &[IN, A]).await;
    let mut tx = broker.client().await;

    // An editor that truncates the file before writing it: an empty file, in place.
    write_in_place(&setup.config, b"");
    let status = broker.wait_failures(1, RELOAD_T).await;
    assert!(
        last_error(&status).contains("empty"),
        "{}",
        last_error(&status)
    );
    assert_eq!(generation(&status), 1);
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, A);

    // A file with only comments parses as "no plugins": refused as a removal.
    setup.write("# nothing here yet\n");
    let status = broker.wait_failures(2, RELOAD_T).await;
    assert!(
        last_error(&status).contains("removes plugin `router`"),
        "{}",
        last_error(&status)
    );
    assert_eq!(routed_to(&mut tx, &mut rx, IN, "eu").await, A);
}

#[tokio::test]
async fn dropping_the_authenticator_is_refused_unless_allowed_in_the_same_edit() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let probe = setup.copy("probe");
    let broker = setup.start(&guarded(&probe, &wasm));

    // A half-written file: the router survived the truncation, the authenticator did not.
    setup.write(&router(&wasm, IN, &[("eu", A)]));
    let status = broker.wait_failures(1, RELOAD_T).await;
    let reason = last_error(&status);
    assert!(reason.contains("no authenticate hook"), "{reason}");
    assert_eq!(generation(&status), 1);
    assert_eq!(
        loaded(&status, "auth")["hooks"],
        serde_json::json!(["authenticate"]),
        "the authenticator is still loaded"
    );

    // Failing open is weaker too.
    setup.write(&guarded(&probe, &wasm).replacen(
        "hooks = [\"authenticate\"]\n",
        "hooks = [\"authenticate\"]\nfailure = \"open\"\n",
        1,
    ));
    let status = broker.wait_failures(2, RELOAD_T).await;
    assert!(
        last_error(&status).contains("fail open"),
        "{}",
        last_error(&status)
    );

    // On purpose: the flag in the same edit.
    setup.write(&format!(
        "[reload]\nallow_weaker_policy = true\n\n{}",
        router(&wasm, IN, &[("eu", A)])
    ));
    let status = broker.wait_generation_change(1, COMPILE_T).await;
    assert_eq!(generation(&status), 2);
    let names: Vec<&str> = status["plugins"]["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["router"]);
}

#[tokio::test]
async fn a_changed_store_or_dead_letter_section_is_reported_as_needing_a_restart() {
    let setup = Setup::new();
    let wasm = setup.copy("header-router");
    let broker = setup.start(&router(&wasm, IN, &[("eu", A)]));
    setup.write(&format!(
        "[store]\nfsync = \"never\"\n\n[dead_letter]\nmax_deliveries = 3\n\n{}",
        router(&wasm, IN, &[("eu", A)])
    ));
    let status = broker
        .wait_status(RELOAD_T, "needs_restart to list store", |s| {
            s["plugins"]["needs_restart"]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v == "store"))
        })
        .await;
    assert_eq!(
        status["plugins"]["needs_restart"],
        serde_json::json!(["store", "dead_letter"])
    );
}
