//! The sample plugins, loaded from the real components: the demo config of
//! examples/plugins.toml (auth, routing, redaction, selectors) plus fan-out, projection, bad
//! config and the on-disk cache.

mod plugin_support;

use std::sync::Arc;

use bytes::Bytes;
use plugboard::plugin::{
    AuthOutcome, AuthRequest, FilterOutcome, PluginHost, SendOutcome, SubscriptionInfo,
};
use plugin_support::*;

/// The demo set from examples/plugins.toml, exactly as users get it.
async fn demo() -> Arc<PluginHost> {
    plugins_dir();
    let examples = workspace_root().join("examples");
    let text =
        std::fs::read_to_string(examples.join("plugins.toml")).expect("examples/plugins.toml");
    PluginHost::load(&specs(&text), &examples, &cache_dir())
        .await
        .unwrap_or_else(|e| panic!("demo: {e}"))
}

fn connect(login: Option<&str>, passcode: Option<&str>) -> AuthRequest {
    let mut headers = vec![(
        Bytes::from_static(b"accept-version"),
        Bytes::from_static(b"1.2"),
    )];
    let login = login.map(|l| Bytes::copy_from_slice(l.as_bytes()));
    let passcode = passcode.map(|p| Bytes::copy_from_slice(p.as_bytes()));
    headers.extend(login.clone().map(|l| (Bytes::from_static(b"login"), l)));
    headers.extend(
        passcode
            .clone()
            .map(|p| (Bytes::from_static(b"passcode"), p)),
    );
    AuthRequest {
        login,
        passcode,
        host: Some(Bytes::from_static(b"/")),
        client_addr: "127.0.0.1:4000".parse().unwrap(),
        headers,
        listener: plugboard::listen::ListenerKind::Tcp,
        client_certificate: None,
        upgrade: None,
        reauth: false,
    }
}

fn subscription(destination: &str, selector: Option<&str>) -> SubscriptionInfo {
    let mut headers = vec![(
        Bytes::from_static(b"destination"),
        Bytes::copy_from_slice(destination.as_bytes()),
    )];
    headers.extend(selector.map(|s| {
        (
            Bytes::from_static(b"selector"),
            Bytes::copy_from_slice(s.as_bytes()),
        )
    }));
    SubscriptionInfo {
        id: Bytes::from_static(b"sub-0"),
        destination: Bytes::copy_from_slice(destination.as_bytes()),
        headers,
    }
}

fn delivered(outcome: SendOutcome) -> Vec<plugboard::plugin::PluginMessage> {
    match outcome {
        SendOutcome::Deliver(m) => m,
        SendOutcome::Reject(r) => panic!("rejected: {r}"),
    }
}

#[tokio::test]
async fn demo_authentication_and_permissions() {
    let host = demo().await;
    assert!(host.has_authenticator());
    let AuthOutcome::Allow(alice, _) = host
        .authenticate(connect(Some("alice"), Some("alice-secret")))
        .await
    else {
        panic!("alice refused")
    };
    assert_eq!(alice.name, "alice");
    assert!(alice.may_send(b"/queue/orders") && alice.may_subscribe(b"/topic/anything"));
    let AuthOutcome::Allow(bob, _) = host
        .authenticate(connect(Some("bob"), Some("bob-secret")))
        .await
    else {
        panic!("bob refused")
    };
    assert!(bob.may_subscribe(b"/topic/public.news"));
    assert!(!bob.may_subscribe(b"/topic/private") && !bob.may_subscribe(b"/queue/orders"));
    assert!(!bob.may_send(b"/topic/public.news") && !bob.may_send(b"/queue/orders"));
    for (login, pass) in [
        (None, None),
        (None, Some("alice-secret")),
        (Some("alice"), Some("bob-secret")),
        (Some("alice"), None),
        (Some("eve"), Some("x")),
    ] {
        match host.authenticate(connect(login, pass)).await {
            AuthOutcome::Deny(reason) => assert!(!reason.is_empty()),
            AuthOutcome::Allow(p, _) => panic!("{login:?}/{pass:?} admitted as {}", p.name),
        }
    }
}

#[tokio::test]
async fn demo_routing_by_region() {
    let host = demo().await;
    assert!(host.intercepts_send(b"/queue/orders"));
    assert!(
        !host.intercepts_send(b"/queue/other"),
        "unmatched destinations pay nothing"
    );
    for (region, expected) in [
        (Some("eu"), "/queue/orders.eu"),
        (Some("us"), "/queue/orders.us"),
        (Some("asia"), "/queue/orders"),
        (None, "/queue/orders"),
    ] {
        let headers: Vec<(&str, &str)> = region
            .map(|r| ("region", r))
            .into_iter()
            .chain([("x", "1")])
            .collect();
        let out = delivered(
            host.on_send(&alice(), msg("/queue/orders", &headers, "{}"))
                .await,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            &out[0].destination[..],
            expected.as_bytes(),
            "region {region:?}"
        );
        assert_eq!(
            header(&out[0], "x"),
            Some(&b"1"[..]),
            "other headers are kept"
        );
    }
}

#[tokio::test]
async fn demo_redacts_card_numbers() {
    let host = demo().await;
    let body = r#"{"order":17,"card":"4111-1111-1111-1111","amount":"12.50"}"#;
    let m = msg(
        "/queue/payments",
        &[("content-type", "application/json")],
        body,
    );
    let out = delivered(host.on_send(&alice(), m).await);
    let text = std::str::from_utf8(&out[0].body).unwrap();
    assert_eq!(text, r#"{"order":17,"card":"****","amount":"12.50"}"#);
    assert!(!text.contains("4111") && !text.contains("1111"));
    let plain = msg(
        "/queue/payments",
        &[("content-type", "text/plain")],
        "card 4111",
    );
    assert_eq!(
        &delivered(host.on_send(&alice(), plain).await)[0].body[..],
        b"card 4111"
    );
    let broken = msg(
        "/queue/payments",
        &[("content-type", "application/json")],
        "{\"card\":4111",
    );
    assert!(matches!(
        host.on_send(&alice(), broken).await,
        SendOutcome::Reject(_)
    ));
}

#[tokio::test]
async fn demo_selector_filters_and_refuses_malformed() {
    let host = demo().await;
    assert!(host
        .prepare_subscription(&alice(), subscription("/queue/a", None))
        .await
        .unwrap()
        .is_none());
    let filter = host
        .prepare_subscription(
            &alice(),
            subscription("/topic/t", Some("region = 'eu' AND qty > 5")),
        )
        .await
        .unwrap()
        .expect("a filter");
    let m = |region: &str, qty: &str| msg("/topic/t", &[("region", region), ("qty", qty)], "x");
    assert_eq!(filter.filter(&m("eu", "10")).await, FilterOutcome::Deliver);
    assert_eq!(filter.filter(&m("eu", "3")).await, FilterOutcome::Skip);
    assert_eq!(filter.filter(&m("us", "10")).await, FilterOutcome::Skip);
    assert_eq!(
        filter.filter(&msg("/topic/t", &[], "")).await,
        FilterOutcome::Skip
    );
    // The same deliveries in one batch (one `filter-batch` call): the same outcomes, in order.
    let batch = [
        m("eu", "10"),
        m("eu", "3"),
        m("us", "10"),
        msg("/topic/t", &[], ""),
        m("eu", "6"),
    ];
    let views: Vec<_> = batch.iter().map(|m| m.view()).collect();
    let calls = || -> u64 { host.stats().iter().map(|s| s.calls).sum() };
    let before = calls();
    assert_eq!(
        filter.filter_batch(&views).await,
        [
            FilterOutcome::Deliver,
            FilterOutcome::Skip,
            FilterOutcome::Skip,
            FilterOutcome::Skip,
            FilterOutcome::Deliver
        ]
    );
    assert_eq!(calls(), before + 1, "one call for the whole batch");
    let err = match host
        .prepare_subscription(
            &alice(),
            subscription("/topic/t", Some("region = 'eu' AND")),
        )
        .await
    {
        Err(e) => e,
        Ok(_) => panic!("malformed selector accepted"),
    };
    assert!(err.reason.contains("column 18"), "{err}");
}

#[tokio::test]
async fn fan_out_default_and_reject_unmatched() {
    let host = load(
        r#"
        [[plugins]]
        name = "fan"
        file = "header-router.wasm"
        hooks = ["send"]
        destinations = ["/queue/orders*"]
        config = { reject_unmatched = true, rules = [
            { destination = "/queue/orders", header = "region", value = "all", to = ["/queue/orders.eu", "/queue/orders.us"] },
            { destination = "/queue/orders", header = "region", value = "eu", to = ["/queue/orders.eu"] },
        ] }
        "#,
    )
    .await;
    let out = delivered(
        host.on_send(&alice(), msg("/queue/orders", &[("region", "all")], "b"))
            .await,
    );
    let dests: Vec<&[u8]> = out.iter().map(|m| &m.destination[..]).collect();
    assert_eq!(dests, [&b"/queue/orders.eu"[..], b"/queue/orders.us"]);
    assert!(out.iter().all(|m| &m.body[..] == b"b"));
    match host
        .on_send(&alice(), msg("/queue/orders", &[("region", "mars")], "b"))
        .await
    {
        SendOutcome::Reject(reason) => assert!(reason.reason.contains("no route"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

/// `on_send_batch` through two header-routers (the first fans out, the second routes the copies
/// it is configured for) gives what `on_send` gives message by message, in one `send-batch` call
/// per plugin; a rejected message ends the outcomes.
#[tokio::test]
async fn a_batch_routes_as_message_by_message() {
    let chain = r#"
        [[plugins]]
        name = "fan"
        file = "header-router.wasm"
        hooks = ["send"]
        destinations = ["/queue/orders"]
        config = { REJECT rules = [
            { destination = "/queue/orders", header = "region", value = "all", to = ["/queue/orders.eu", "/queue/orders.us"] },
            { destination = "/queue/orders", header = "region", value = "eu", to = ["/queue/orders.eu"] },
        ] }

        [[plugins]]
        name = "tier"
        file = "header-router.wasm"
        hooks = ["send"]
        destinations = ["/queue/orders.eu"]
        config = { rules = [
            { destination = "/queue/orders.eu", header = "tier", value = "gold", to = ["/queue/orders.eu.gold"] },
        ] }
        "#;
    let host = load(&chain.replace("REJECT", "")).await;
    assert!(host.batches_send());
    let regions = ["eu", "all", "us", "none"];
    let tiers = ["gold", "basic"];
    let batch: Vec<_> = (0..40)
        .map(|i| {
            let (region, tier) = (regions[i % 4], tiers[i % 3 % 2]);
            msg(
                "/queue/orders",
                &[("region", region), ("tier", tier)],
                &format!("m{i}"),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for m in &batch {
        expected.push(host.on_send(&alice(), m.clone()).await);
    }
    let calls = |host: &plugboard::plugin::PluginHost| -> Vec<u64> {
        host.stats().iter().map(|s| s.calls).collect()
    };
    let before = calls(&host);
    let got = host.on_send_batch(&alice(), batch.clone()).await;
    assert_eq!(got, expected);
    let after = calls(&host);
    assert_eq!(
        [after[0] - before[0], after[1] - before[1]],
        [1, 1],
        "one call per plugin for the batch"
    );
    let fanned = delivered(got[1].clone());
    let dests: Vec<&[u8]> = fanned.iter().map(|m| &m.destination[..]).collect();
    assert_eq!(dests, [&b"/queue/orders.eu"[..], b"/queue/orders.us"]);
    let first = delivered(got[0].clone());
    assert_eq!(&first[0].destination[..], b"/queue/orders.eu.gold");

    // Rejected at index 2: the outcomes stop there.
    let strict = load(&chain.replace("REJECT", "reject_unmatched = true,")).await;
    let got = strict.on_send_batch(&alice(), batch[..8].to_vec()).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[..2], expected[..2]);
    assert!(
        matches!(&got[2], SendOutcome::Reject(r) if r.reason.contains("no route")),
        "{got:?}"
    );

    // Without fan-outs in the batch, messages are edited in place; the reject still ends it.
    let plain: Vec<_> = [
        ("eu", "gold"),
        ("eu", "basic"),
        ("us", "gold"),
        ("eu", "gold"),
    ]
    .iter()
    .map(|(region, tier)| msg("/queue/orders", &[("region", region), ("tier", tier)], "b"))
    .collect();
    let got = strict.on_send_batch(&alice(), plain.clone()).await;
    let mut singles = Vec::new();
    for m in &plain[..3] {
        singles.push(strict.on_send(&alice(), m.clone()).await);
    }
    assert_eq!(got, singles);
    assert!(matches!(&got[2], SendOutcome::Reject(_)), "{got:?}");

    // A later plugin rejects one of the copies an earlier one fanned out: the whole input
    // message is rejected there, the messages before it are delivered.
    let strict_tier = load(
        &chain
            .replace("REJECT", "")
            .replace("config = { rules = [\n            { destination = \"/queue/orders.eu\"", "config = { reject_unmatched = true, rules = [\n            { destination = \"/queue/orders.eu\""),
    )
    .await;
    let mixed: Vec<_> = [
        ("all", "gold"),
        ("us", "basic"),
        ("all", "basic"),
        ("eu", "gold"),
    ]
    .iter()
    .map(|(region, tier)| msg("/queue/orders", &[("region", region), ("tier", tier)], "b"))
    .collect();
    let got = strict_tier.on_send_batch(&alice(), mixed.clone()).await;
    let mut singles = Vec::new();
    for m in &mixed[..3] {
        singles.push(strict_tier.on_send(&alice(), m.clone()).await);
    }
    assert_eq!(got, singles);
    assert_eq!(delivered(got[0].clone()).len(), 2, "{got:?}");
    assert!(
        matches!(&got[2], SendOutcome::Reject(r) if r.reason.contains("no route")),
        "{got:?}"
    );
}

#[tokio::test]
async fn only_declared_fields_reach_the_plugin() {
    let host = load(
        r#"
        [[plugins]]
        name = "probe"
        file = "probe.wasm"
        hooks = ["send"]
        config = { headers = ["a"], body = false, verdict = "report" }
        "#,
    )
    .await;
    let m = msg(
        "/queue/p",
        &[
            ("a", "1"),
            ("b", "2"),
            ("a", "3"),
            ("content-type", "text/plain"),
        ],
        "hello",
    );
    match host.on_send(&alice(), m).await {
        SendOutcome::Reject(r) => assert_eq!(
            r.reason,
            "saw dest=/queue/p headers=[a=1,a=3] body=none body_len=5"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn per_subscriber_redaction() {
    let host = load(
        r#"
        [[plugins]]
        name = "redact-deliver"
        file = "redact.wasm"
        hooks = ["message"]
        config = { fields = ["card"], mode = "deliver", exempt_groups = ["auditors"] }
        "#,
    )
    .await;
    let mut auditor = alice();
    auditor.groups.push("auditors".into());
    let sub = || subscription("/queue/payments", None);
    assert!(host
        .prepare_subscription(&auditor, sub())
        .await
        .unwrap()
        .is_none());
    let filter = host
        .prepare_subscription(&alice(), sub())
        .await
        .unwrap()
        .expect("filter");
    let m = msg(
        "/queue/payments",
        &[("content-type", "application/json")],
        r#"{"card":"4111"}"#,
    );
    match filter.filter(&m).await {
        FilterOutcome::Rewrite(out) => assert_eq!(&out.body[..], br#"{"card":"****"}"#),
        other => panic!("{other:?}"),
    }
    // Batched (`deliver-batch`): each message gets its own verdict.
    let plain = msg("/queue/payments", &[("content-type", "text/plain")], "card");
    let broken = msg(
        "/queue/payments",
        &[("content-type", "application/json")],
        "{",
    );
    let before = host.stats()[0].calls;
    let outcomes = filter
        .filter_batch(&[m.view(), plain.view(), broken.view()])
        .await;
    match &outcomes[..] {
        [FilterOutcome::Rewrite(out), FilterOutcome::Deliver, FilterOutcome::Skip] => {
            assert_eq!(&out.body[..], br#"{"card":"****"}"#)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(host.stats()[0].calls, before + 1, "one filter-batch call");
}

#[tokio::test]
async fn bad_config_and_missing_file_name_the_plugin() {
    let err = try_load(
        r#"
        [[plugins]]
        name = "auth-broken"
        file = "static-auth.wasm"
        hooks = ["authenticate"]
        config = { users = "nobody" }
        "#,
    )
    .await
    .err()
    .expect("bad config refused")
    .to_string();
    assert!(
        err.contains("auth-broken") && err.contains("config"),
        "{err}"
    );
    let err = try_load("[[plugins]]\nname = \"ghost\"\nfile = \"nope.wasm\"\nhooks = [\"send\"]\n")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ghost") && err.contains("nope.wasm"), "{err}");
    // A hook the component does not export.
    let err =
        try_load("[[plugins]]\nname = \"sel\"\nfile = \"selector.wasm\"\nhooks = [\"send\"]\n")
            .await
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("sel") && err.contains("send"), "{err}");
}

#[tokio::test]
async fn compiled_components_are_cached_by_content_hash() {
    let dir = plugins_dir();
    let cache = workspace_root()
        .join("target")
        .join(format!("plugin-cache-test-{}", std::process::id()));
    let specs =
        specs("[[plugins]]\nname = \"sel\"\nfile = \"selector.wasm\"\nhooks = [\"message\"]\n");
    let cold = std::time::Instant::now();
    plugboard::plugin::PluginHost::load(&specs, &dir, &cache)
        .await
        .unwrap();
    let cold = cold.elapsed();
    let mut files: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        2,
        "one artifact and the cache's key: {files:?}"
    );
    assert!(
        files[0].ends_with(".cwasm") && files[1] == "key",
        "{files:?}"
    );
    let warm = std::time::Instant::now();
    plugboard::plugin::PluginHost::load(&specs, &dir, &cache)
        .await
        .unwrap();
    let warm = warm.elapsed();
    std::fs::remove_dir_all(&cache).unwrap();
    assert!(
        warm < cold,
        "cached load ({warm:?}) should beat compiling ({cold:?})"
    );
}

/// The cache's only artifact file (`*.cwasm`) in `dir`.
fn only_artifact(dir: &std::path::Path) -> std::path::PathBuf {
    let artifacts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    artifacts.into_iter().next().unwrap()
}

/// The demo's static-auth plugin alone (its users config), with `examples/` as base directory.
fn static_auth() -> (Vec<plugboard::plugin::PluginSpec>, std::path::PathBuf) {
    plugins_dir();
    let examples = workspace_root().join("examples");
    let text = std::fs::read_to_string(examples.join("plugins.toml")).unwrap();
    let auth = specs(&text)
        .into_iter()
        .filter(|s| s.name == "auth")
        .collect();
    (auth, examples)
}

/// The attack the security review confirmed: another plugin's compiled artifact put under
/// static-auth's cache name (the probe admits every login). The cache must not run it.
#[tokio::test]
async fn another_plugins_artifact_under_this_plugins_name_is_not_run() {
    let (auth, examples) = static_auth();
    let auth_cache = tempfile::tempdir().unwrap();
    PluginHost::load(&auth, &examples, auth_cache.path())
        .await
        .unwrap();
    let auth_artifact = only_artifact(auth_cache.path());

    let probe_cache = tempfile::tempdir().unwrap();
    let probe =
        specs("[[plugins]]\nname = \"auth\"\nfile = \"probe.wasm\"\nhooks = [\"authenticate\"]\n");
    PluginHost::load(&probe, &plugins_dir(), probe_cache.path())
        .await
        .unwrap();
    let probe_artifact = std::fs::read(only_artifact(probe_cache.path())).unwrap();

    std::fs::write(&auth_artifact, &probe_artifact).unwrap();
    let host = PluginHost::load(&auth, &examples, auth_cache.path())
        .await
        .expect("static-auth loads (recompiled)");
    assert!(matches!(
        host.authenticate(connect(Some("eve"), Some("x"))).await,
        AuthOutcome::Deny(_)
    ));
    assert!(matches!(
        host.authenticate(connect(Some("alice"), Some("alice-secret")))
            .await,
        AuthOutcome::Allow(..)
    ));
    assert_ne!(
        std::fs::read(&auth_artifact).unwrap(),
        probe_artifact,
        "the swapped artifact is replaced"
    );
}

/// A cache directory that others may write to (or a symlink to one) is not used: plugins still
/// load, compiled without it, and nothing is written there.
#[tokio::test]
async fn a_cache_directory_others_can_write_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let (auth, examples) = static_auth();
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let link = dir.path().join("link");
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::os::unix::fs::symlink(&private, &link).unwrap();
    for cache in [&open, &link] {
        let host = PluginHost::load(&auth, &examples, cache)
            .await
            .expect("plugins load without the cache");
        assert!(matches!(
            host.authenticate(connect(Some("alice"), Some("alice-secret")))
                .await,
            AuthOutcome::Allow(..)
        ));
    }
    for d in [&open, &private] {
        let entries: Vec<_> = std::fs::read_dir(d).unwrap().collect();
        assert!(entries.is_empty(), "{}: {entries:?}", d.display());
    }
}
