//! Hostile plugins (traps, endless loops, unbounded allocation, garbage answers, oversized
//! input): the host stays up, the failure policy applies, the failure is counted, the instance is
//! replaced, and other calls are not held up beyond the deadline.

mod plugin_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plugboard::plugin::{
    AuthOutcome, AuthRequest, FilterOutcome, PluginHost, PluginStats, SendOutcome, SubscriptionInfo,
};
use plugin_support::*;

fn spec(name: &str, file: &str, extra: &str) -> String {
    format!("[[plugins]]\nname = \"{name}\"\nfile = \"{file}\"\nhooks = [\"authenticate\", \"send\", \"message\"]\n{extra}\n")
}

fn stats(host: &PluginHost, name: &str) -> PluginStats {
    host.stats()
        .into_iter()
        .find(|s| s.name == name)
        .expect("stats for the plugin")
}

fn auth_request() -> AuthRequest {
    AuthRequest {
        login: Some(Bytes::from_static(b"mallory")),
        passcode: None,
        host: None,
        client_addr: "127.0.0.1:1".parse().unwrap(),
        headers: vec![],
        listener: plugboard::listen::ListenerKind::Tcp,
        client_certificate: None,
        upgrade: None,
        reauth: false,
    }
}

fn sub() -> SubscriptionInfo {
    SubscriptionInfo {
        id: Bytes::from_static(b"1"),
        destination: Bytes::from_static(b"/topic/t"),
        headers: vec![],
    }
}

/// Every hook of `name` fails closed, and a later call still gets an answer (a new instance).
async fn assert_fails_closed(host: &PluginHost, name: &str) {
    for _ in 0..2 {
        assert!(
            matches!(host.on_send(&alice(), msg("/queue/a", &[], "x")).await, SendOutcome::Reject(r) if r.reason.contains(name))
        );
    }
    assert!(matches!(
        host.authenticate(auth_request()).await,
        AuthOutcome::Deny(_)
    ));
    assert!(host.prepare_subscription(&alice(), sub()).await.is_err());
    let s = stats(host, name);
    assert_eq!(s.calls, 4, "{s:?}");
    assert!(
        s.recycled >= 4 && s.instances_created >= 4,
        "every failed instance is replaced: {s:?}"
    );
}

#[tokio::test]
async fn trapping_plugin_fails_closed_and_is_replaced() {
    let host = load(&spec("trap", "hostile-trap.wasm", "")).await;
    assert_fails_closed(&host, "trap").await;
    assert_eq!(stats(&host, "trap").traps, 4);
}

#[tokio::test]
async fn failure_open_lets_traffic_through() {
    let host = load(&spec(
        "trap-open",
        "hostile-trap.wasm",
        "failure = \"open\"",
    ))
    .await;
    let m = msg("/queue/a", &[("k", "v")], "x");
    assert_eq!(
        host.on_send(&alice(), m.clone()).await,
        SendOutcome::Deliver(vec![m])
    );
    assert!(host
        .prepare_subscription(&alice(), sub())
        .await
        .unwrap()
        .is_none());
    // Failing open admits the fixed fail-open principal, never the login the client claimed.
    let AuthOutcome::Allow(p, _) = host.authenticate(auth_request()).await else {
        panic!("fails open");
    };
    assert_eq!(p.name, "anonymous");
    assert!(p.may_send.is_empty() && p.may_subscribe.is_empty(), "{p:?}");
    assert!(!p.may_send(b"/queue/a") && !p.may_subscribe(b"/topic/t"));
}

#[tokio::test]
async fn a_failing_open_authenticator_admits_its_configured_principal() {
    let host = load(&spec(
        "trap-open",
        "hostile-trap.wasm",
        "failure = \"open\"\nfail_open_principal = { name = \"guest\", may_subscribe = [\"/topic/public.*\"] }",
    ))
    .await;
    let AuthOutcome::Allow(p, _) = host.authenticate(auth_request()).await else {
        panic!("fails open");
    };
    assert_eq!(p.name, "guest");
    assert!(p.may_send.is_empty(), "{p:?}");
    assert_eq!(p.may_subscribe, ["/topic/public.*"]);
}

/// A client can make the authenticator fail on purpose: CONNECT headers larger than a small
/// memory cap allows are refused before the call. Failing open must not then admit the login
/// the client claimed (probe admits every login with every permission when it runs).
#[tokio::test]
async fn forcing_an_open_authenticator_to_fail_never_yields_the_claimed_login() {
    let host = load("[[plugins]]\nname = \"probe\"\nfile = \"probe.wasm\"\nhooks = [\"authenticate\"]\nfailure = \"open\"\nmemory_mb = 2\n").await;
    let AuthOutcome::Allow(p, _) = host.authenticate(auth_request()).await else {
        panic!("probe admits everyone");
    };
    assert_eq!(
        (p.name.as_str(), p.may_send(b"/queue/a")),
        ("mallory", true)
    );
    let mut oversize = auth_request();
    let big = Bytes::from(vec![b'x'; 16 * 1024]);
    for i in 0..40 {
        oversize
            .headers
            .push((Bytes::from(format!("x-pad-{i}")), big.clone()));
    }
    let AuthOutcome::Allow(p, _) = host.authenticate(oversize).await else {
        panic!("fails open");
    };
    assert_eq!(p.name, "anonymous", "{p:?}");
    assert!(
        !p.may_send(b"/queue/a") && !p.may_subscribe(b"/queue/a"),
        "{p:?}"
    );
    assert_eq!(stats(&host, "probe").oversize, 1);
}

#[tokio::test]
async fn fail_open_principal_and_route_settings_are_checked_at_load() {
    let one = |extra: &str| format!("[[plugins]]\nname = \"p\"\nfile = \"probe.wasm\"\n{extra}\n");
    for (extra, expected) in [
        (
            "hooks = [\"send\"]\nfailure = \"open\"\nfail_open_principal = {}",
            "only to an `authenticate` plugin",
        ),
        (
            "hooks = [\"authenticate\"]\nfail_open_principal = {}",
            "only with `failure = \"open\"`",
        ),
        (
            "hooks = [\"authenticate\"]\nfailure = \"open\"\nfail_open_principal = { name = \"\" }",
            "fail_open_principal: principal name",
        ),
        (
            "hooks = [\"message\"]\nroutes_bypass_sender_rights = true",
            "only to a `send` or `redeliver` plugin",
        ),
    ] {
        let err = try_load(&one(extra))
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains(expected) && err.contains("`p`"),
            "{extra}: {err}"
        );
    }
}

#[tokio::test]
async fn endless_loop_hits_the_deadline() {
    let host = load(&spec("loop", "hostile-loop.wasm", "deadline_ms = 30")).await;
    let started = Instant::now();
    assert_fails_closed(&host, "loop").await;
    let s = stats(&host, "loop");
    assert_eq!(s.timeouts, 4, "{s:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "4 calls of 30 ms took {:?}",
        started.elapsed()
    );
}

/// On a single-threaded runtime, a looping plugin still yields every epoch tick, so another task
/// keeps running and a healthy plugin's calls complete meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn a_looping_plugin_does_not_stall_other_tasks() {
    let host: Arc<PluginHost> = load(&format!(
        "{}\n{}",
        spec("loop", "hostile-loop.wasm", "deadline_ms = 200\ndestinations = [\"/queue/slow\"]"),
        "[[plugins]]\nname = \"probe\"\nfile = \"probe.wasm\"\nhooks = [\"send\"]\ndestinations = [\"/queue/fast\"]\n"
    ))
    .await;
    let slow = {
        let host = host.clone();
        tokio::spawn(async move { host.on_send(&alice(), msg("/queue/slow", &[], "x")).await })
    };
    tokio::task::yield_now().await;
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_millis(150);
    let mut calls = 0;
    while Instant::now() < until {
        let t = Instant::now();
        let out = host.on_send(&alice(), msg("/queue/fast", &[], "y")).await;
        assert!(matches!(out, SendOutcome::Deliver(_)));
        worst = worst.max(t.elapsed());
        calls += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(matches!(slow.await.unwrap(), SendOutcome::Reject(_)));
    assert!(
        calls >= 10,
        "only {calls} fast calls ran while the plugin looped"
    );
    assert!(
        worst < Duration::from_millis(100),
        "a fast call took {worst:?} next to a looping plugin (deadline 200 ms)"
    );
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_cap() {
    // A generous deadline: on a loaded machine growing memory can take longer than the
    // default 5-10 ms, and this test is about the memory cap, not time.
    let host = load(&spec(
        "alloc",
        "hostile-alloc.wasm",
        "memory_mb = 8\ndeadline_ms = 2000",
    ))
    .await;
    assert_fails_closed(&host, "alloc").await;
    let s = stats(&host, "alloc");
    assert_eq!(s.memory_limit, 4, "{s:?}");
}

#[tokio::test]
async fn garbage_answers_are_refused() {
    // A generous deadline: this test is about what the host accepts, not about time.
    let host = load(&spec(
        "garbage",
        "hostile-garbage.wasm",
        "deadline_ms = 2000",
    ))
    .await;
    for kind in ["destination", "fanout", "header", "body"] {
        let out = host
            .on_send(&alice(), msg("/queue/a", &[("garbage", kind)], "x"))
            .await;
        assert!(
            matches!(&out, SendOutcome::Reject(r) if r.reason.contains("garbage")),
            "{kind}: {out:?}"
        );
    }
    assert!(
        matches!(
            host.authenticate(auth_request()).await,
            AuthOutcome::Deny(_)
        ),
        "empty principal name"
    );
    let mut huge = sub();
    huge.headers
        .push((Bytes::from_static(b"garbage"), Bytes::from_static(b"token")));
    assert!(
        host.prepare_subscription(&alice(), huge).await.is_err(),
        "1 MiB token"
    );
    let s = stats(&host, "garbage");
    assert_eq!(s.invalid_output, 6, "{s:?}");
    assert_eq!(s.traps + s.timeouts + s.memory_limit, 0, "{s:?}");
}

#[tokio::test]
async fn garbage_filter_rewrite_is_a_failure_not_a_decline() {
    let host = load(&spec(
        "garbage",
        "hostile-garbage.wasm",
        "deadline_ms = 2000",
    ))
    .await;
    let filter = host
        .prepare_subscription(&alice(), sub())
        .await
        .unwrap()
        .expect("a plan");
    assert_eq!(
        filter.filter(&msg("/topic/t", &[], "")).await,
        plugboard::plugin::FilterOutcome::Failed
    );
    assert_eq!(stats(&host, "garbage").invalid_output, 1);
}

#[tokio::test]
async fn oversized_input_is_refused_before_the_call() {
    let host = load("[[plugins]]\nname = \"probe\"\nfile = \"probe.wasm\"\nhooks = [\"send\"]\nmemory_mb = 4\nconfig = { body = true }\n").await;
    let big = "x".repeat(2 << 20);
    assert!(matches!(
        host.on_send(&alice(), msg("/queue/a", &[], &big)).await,
        SendOutcome::Reject(_)
    ));
    let s = stats(&host, "probe");
    assert_eq!((s.oversize, s.calls), (1, 0), "{s:?}");
    let small = msg("/queue/a", &[], "small");
    assert_eq!(
        host.on_send(&alice(), small.clone()).await,
        SendOutcome::Deliver(vec![small])
    );
}

#[tokio::test]
async fn an_oversized_delivery_in_a_batch_fails_alone() {
    // selector exports `deliver-batch`: a batch is cut around the message that exceeds the
    // input cap (1 MiB with 4 MiB of memory), which alone is refused: a failure (closed),
    // not a decline.
    let host = load("[[plugins]]\nname = \"selector\"\nfile = \"selector.wasm\"\nhooks = [\"message\"]\nmemory_mb = 4\n").await;
    let sub = SubscriptionInfo {
        id: Bytes::from_static(b"s"),
        destination: Bytes::from_static(b"/queue/a"),
        headers: vec![(
            Bytes::from_static(b"selector"),
            Bytes::from_static(b"p IS NOT NULL"),
        )],
    };
    let filter = host
        .prepare_subscription(&alice(), sub)
        .await
        .unwrap()
        .expect("a filter");
    let big = "x".repeat(2 << 20);
    let (with_p, huge, without_p) = (
        msg("/queue/a", &[("p", "1")], ""),
        msg("/queue/a", &[("p", &big)], ""),
        msg("/queue/a", &[], ""),
    );
    let before = stats(&host, "selector");
    let outcomes = filter
        .filter_batch(&[with_p.view(), huge.view(), without_p.view(), with_p.view()])
        .await;
    use FilterOutcome::{Deliver, Failed, Skip};
    assert_eq!(outcomes, [Deliver, Failed, Skip, Deliver]);
    let s = stats(&host, "selector");
    assert_eq!(s.oversize - before.oversize, 1, "{s:?}");
    assert_eq!(
        s.calls - before.calls,
        2,
        "one batch call before the oversized message and one after: {s:?}"
    );
}

#[tokio::test]
async fn instances_are_recycled_after_n_calls() {
    let host = load("[[plugins]]\nname = \"probe\"\nfile = \"probe.wasm\"\nhooks = [\"send\"]\nrecycle_after_calls = 2\n").await;
    for _ in 0..6 {
        assert!(matches!(
            host.on_send(&alice(), msg("/queue/a", &[], "x")).await,
            SendOutcome::Deliver(_)
        ));
    }
    let s = stats(&host, "probe");
    assert_eq!((s.calls, s.recycled), (6, 3), "{s:?}");
    assert!(s.instances_created >= 3, "{s:?}");
}

/// `hostile-puppet`'s send and message hooks (see plugins/hostile-puppet).
fn puppet(extra: &str) -> String {
    format!("[[plugins]]\nname = \"puppet\"\nfile = \"hostile-puppet.wasm\"\nhooks = [\"send\", \"message\"]\n{extra}\n")
}

fn principal(name: &str, may_send: &[&str]) -> plugboard::plugin::Principal {
    plugboard::plugin::Principal {
        name: name.into(),
        groups: vec![],
        may_send: may_send.iter().map(|s| s.to_string()).collect(),
        may_subscribe: vec!["*".into()],
    }
}

/// A templated route lets the client choose the final destination: it must be one the sender
/// may send to, unless the plugin is configured as a trusted router.
#[tokio::test]
async fn routed_destinations_are_checked_against_the_senders_rights() {
    let host = load(&puppet("")).await;
    let carol = principal("carol", &["/queue/in", "/queue/out.*"]);
    let routed = |to: &str| msg("/queue/in", &[("route-to", to)], "x");
    let out = host.on_send(&carol, routed("/queue/secret")).await;
    let SendOutcome::Reject(reason) = out else {
        panic!("routed outside carol's rights: {out:?}");
    };
    assert!(
        reason.reason.contains("'/queue/secret'")
            && reason.reason.contains("'carol'")
            && reason.reason.contains("`puppet`"),
        "the reason names the destination, the sender and the plugin: {reason}"
    );
    for to in ["/queue/out.eu", "/queue/in"] {
        let SendOutcome::Deliver(out) = host.on_send(&carol, routed(to)).await else {
            panic!("{to} is within carol's rights");
        };
        assert_eq!(&out[0].destination[..], to.as_bytes());
    }
    assert_eq!(stats(&host, "puppet").routes_refused, 1);

    let trusted = load(&puppet("routes_bypass_sender_rights = true")).await;
    let SendOutcome::Deliver(out) = trusted.on_send(&carol, routed("/queue/secret")).await else {
        panic!("a trusted router may route anywhere");
    };
    assert_eq!(&out[0].destination[..], b"/queue/secret");
}

/// Every copy of a fan-out is checked; one outside the rights refuses the whole SEND.
#[tokio::test]
async fn every_fanned_out_destination_is_checked() {
    let host = load("[[plugins]]\nname = \"router\"\nfile = \"header-router.wasm\"\nhooks = [\"send\"]\nconfig = { default = [\"/queue/out.a\", \"/queue/private\"] }\n").await;
    let carol = principal("carol", &["/queue/in", "/queue/out.*"]);
    let out = host.on_send(&carol, msg("/queue/in", &[], "x")).await;
    assert!(
        matches!(&out, SendOutcome::Reject(r) if r.reason.contains("'/queue/private'")),
        "{out:?}"
    );
    let dave = principal("dave", &["/queue/*"]);
    let SendOutcome::Deliver(out) = host.on_send(&dave, msg("/queue/in", &[], "x")).await else {
        panic!("within dave's rights");
    };
    assert_eq!(out.len(), 2);
}

/// A plugin cannot set the headers the broker owns (content-length would break the framing,
/// message-id or subscription would impersonate the broker's); they are dropped, in any case.
#[tokio::test]
async fn plugin_edits_cannot_set_server_owned_headers() {
    let host = load(&puppet("")).await;
    let sets = [
        ("set", "content-length=1"),
        ("set", "Message-Id=forged"),
        ("set", "subscription=0"),
        ("set", "ack=1.1"),
        ("set", "redelivered=true"),
        ("set", "redelivery-count=9"),
        ("set", "receipt-id=r"),
        ("set", "destination=/queue/x"),
        ("set", "content-type=text/x"),
        ("set", "x-kept=1"),
    ];
    let SendOutcome::Deliver(out) = host.on_send(&alice(), msg("/queue/a", &sets, "body")).await
    else {
        panic!("a rewrite");
    };
    let set: Vec<(&[u8], &[u8])> = out[0]
        .headers
        .iter()
        .filter(|(n, _)| &n[..] != b"set")
        .map(|(n, v)| (&n[..], &v[..]))
        .collect();
    assert_eq!(
        set,
        [(&b"content-type"[..], &b"text/x"[..]), (b"x-kept", b"1")]
    );
    assert_eq!(
        (&out[0].destination[..], &out[0].body[..]),
        (&b"/queue/a"[..], &b"body"[..])
    );

    let mut sub = sub();
    sub.headers = sets
        .iter()
        .map(|(n, v)| (Bytes::from(*n), Bytes::from(*v)))
        .collect();
    let filter = host
        .prepare_subscription(&alice(), sub)
        .await
        .unwrap()
        .expect("a plan");
    let FilterOutcome::Rewrite(m) = filter.filter(&msg("/topic/t", &[("a", "1")], "body")).await
    else {
        panic!("a rewrite");
    };
    let names: Vec<&[u8]> = m.headers.iter().map(|(n, _)| &n[..]).collect();
    assert_eq!(names, [&b"a"[..], b"content-type", b"x-kept"]);
}

/// The `log` import is rate limited per plugin: a flood is dropped and counted, the call still
/// succeeds.
#[tokio::test]
async fn a_plugin_that_floods_the_log_is_rate_limited() {
    let host = load(&puppet("deadline_ms = 5000")).await;
    let m = msg("/queue/a", &[("log", "5000")], "x");
    assert_eq!(
        host.on_send(&alice(), m.clone()).await,
        SendOutcome::Deliver(vec![m])
    );
    let s = stats(&host, "puppet");
    // A burst of 200 lines, then 100 per second.
    assert!(s.log_dropped >= 4000, "{s:?}");
    assert_eq!(s.traps + s.timeouts, 0, "{s:?}");
}

/// After failures in a row, replacement instances are made at most one per back-off interval
/// (doubling): callers wait their turn, or fail at once when it is too far away, rather than the
/// broker instantiating in a loop. A successful call resets it.
#[tokio::test]
async fn re_instantiation_backs_off_after_failures_in_a_row() {
    let host = load(&puppet("deadline_ms = 2000")).await;
    let trap = || msg("/queue/a", &[("trap", "1")], "x");
    let started = Instant::now();
    for _ in 0..8 {
        assert!(matches!(
            host.on_send(&alice(), trap()).await,
            SendOutcome::Reject(_)
        ));
    }
    // The 3rd instance is made at once, the 4th to 8th 10, 20, 40, 80 and 160 ms after the one
    // before.
    let backed_off = started.elapsed();
    assert!(backed_off >= Duration::from_millis(300), "{backed_off:?}");

    // Many callers at once: a few wait their turn, the rest fail at once.
    let before = stats(&host, "puppet");
    let calls: Vec<_> = (0..30)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.on_send(&alice(), trap()).await })
        })
        .collect();
    for call in calls {
        assert!(matches!(call.await.unwrap(), SendOutcome::Reject(_)));
    }
    let s = stats(&host, "puppet");
    assert!(s.backoff > before.backoff, "{s:?}");
    assert!(
        s.instances_created - before.instances_created <= 10,
        "30 failing calls must not make 30 instances: {s:?}"
    );

    // A success resets the back-off: the next failure and replacement cost no wait.
    let ok = msg("/queue/a", &[], "x");
    assert!(matches!(
        host.on_send(&alice(), ok.clone()).await,
        SendOutcome::Deliver(_)
    ));
    let started = Instant::now();
    assert!(matches!(
        host.on_send(&alice(), trap()).await,
        SendOutcome::Reject(_)
    ));
    assert!(matches!(
        host.on_send(&alice(), ok).await,
        SendOutcome::Deliver(_)
    ));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

/// With every instance busy, a call waits for one (backpressure) even past its own deadline,
/// instead of failing as `busy`.
#[tokio::test]
async fn a_busy_pool_is_backpressure_not_a_failure() {
    let host = load(&puppet("max_instances = 1\ndeadline_ms = 500")).await;
    // About 100 ms of guest work per call, whatever this machine's speed (the fastest of three
    // calls: a call slowed down by the machine would make the others too short).
    let spin = |millions: u64| msg("/queue/a", &[("spin", &millions.to_string())], "x");
    let mut fastest = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        assert!(matches!(
            host.on_send(&alice(), spin(10)).await,
            SendOutcome::Deliver(_)
        ));
        fastest = fastest.min(started.elapsed());
    }
    let millions = ((0.1 / (fastest.as_secs_f64() / 10.0)) as u64).clamp(1, 5000);

    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { host.on_send(&alice(), spin(millions)).await })
        })
        .collect();
    for call in calls {
        let out = call.await.unwrap();
        assert!(matches!(out, SendOutcome::Deliver(_)), "{out:?}");
    }
    let took = started.elapsed();
    let s = stats(&host, "puppet");
    assert_eq!((s.busy, s.timeouts), (0, 0), "{s:?}");
    assert!(s.busy_waits >= 9, "{s:?}");
    assert!(
        took > Duration::from_millis(500),
        "the last call waited longer than its deadline ({took:?} for all)"
    );
}
