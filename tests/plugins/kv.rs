//! The plugins' key-value store (WIT 0.1.4 `kv`, `clock`) end to end: the `rate-limit` sample
//! rejects the SEND over its limit with `error-code:plugin.rate-limit.exceeded` and accepts
//! again once a token refilled, per principal and per vhost; the `kv-probe` test plugin shows
//! a persisted store surviving a crash and a memory-only one not, a plugin without a `kv`
//! table getting `disabled`, `init` getting `not-in-call`, and a plugin filling its store
//! hitting the cap while the broker carries on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plugboard_test_support::metrics::scrape;
use plugboard_test_support::stomp::{send_frame, unique, Client, Frame};

use crate::support::*;

/// Longest a test waits for a rate-limit bucket to refill (generous: a loaded machine).
const REFILL: Duration = Duration::from_secs(10);

/// A CONNECT as `login` (the `hostile-puppet` authenticator admits any login) to vhost `host`.
async fn connect_as(addr: SocketAddr, login: &str, host: &str) -> Client {
    let frame = Frame::new("CONNECT")
        .h("accept-version", "1.2")
        .h("login", login)
        .h("passcode", "x")
        .h("host", host)
        .h("x-may-send", "*")
        .h("x-may-subscribe", "*");
    let (client, reply) = Client::connect_with(addr, frame).await;
    assert!(reply.is("CONNECTED"), "{login}@{host}: {reply:?}");
    client
}

/// `rate-limit` at 2 SENDs a second (bursts of 2) on `/queue/limited.*`, behind an
/// authenticator that admits anyone, in two vhosts.
fn rate_limit_config() -> TempConfig {
    temp_config(&format!(
        r#"
[[vhosts]]
name = "a"

[[vhosts]]
name = "b"

[[plugins]]
name = "auth"
file = "{puppet}"
hooks = ["authenticate"]

[[plugins]]
name = "rate-limit"
file = "{rate_limit}"
hooks = ["send"]
destinations = ["/queue/limited.*"]
kv = {{ max_entries = 1000 }}

[plugins.config]
rate = 2
burst = 2
"#,
        puppet = plugin("hostile-puppet"),
        rate_limit = plugin("rate-limit"),
    ))
}

/// SENDs to `dest` with a receipt: the answer (RECEIPT or ERROR).
async fn send_and_answer(client: &mut Client, dest: &str) -> Frame {
    let receipt = client.next_receipt();
    client
        .write(&send_frame(dest, &[("receipt", &receipt)], "m"))
        .await;
    client.recv().await
}

/// Sends until one is rejected; returns the accepted count and the ERROR. At 2 a second with
/// bursts of 2, no more are accepted than the burst plus what refilled while they ran.
async fn send_until_rejected(client: &mut Client, dest: &str) -> (usize, Frame) {
    let started = Instant::now();
    for accepted in 0..50 {
        let answer = send_and_answer(client, dest).await;
        if answer.is("ERROR") {
            let refilled = started.elapsed().as_secs_f64() * 2.0;
            assert!(
                accepted as f64 <= 2.0 + refilled.ceil(),
                "{accepted} accepted in {:?}",
                started.elapsed()
            );
            return (accepted, answer);
        }
        assert!(answer.is("RECEIPT"), "{answer:?}");
    }
    panic!("50 SENDs to {dest} at 2/s all accepted");
}

#[tokio::test]
async fn rate_limit_rejects_the_send_over_the_limit_and_accepts_again_later() {
    let config = rate_limit_config();
    let broker = PluginBroker::start(&config.path);
    let dest = format!("/queue/limited.{}", unique("rl"));

    let mut alice = connect_as(broker.addr, "alice", "a").await;
    let (accepted, err) = send_until_rejected(&mut alice, &dest).await;
    assert!(accepted >= 2, "the burst of 2 passes: {accepted}");
    assert_eq!(
        err.get("error-code"),
        Some("plugin.rate-limit.exceeded"),
        "{err:?}"
    );
    assert!(
        error_message(&err).contains("rate limit of 2 messages per second"),
        "{err:?}"
    );
    alice.expect_closed().await;

    // Another principal has a bucket of its own; so has another destination.
    let mut bob = connect_as(broker.addr, "bob", "a").await;
    assert!(send_and_answer(&mut bob, &dest).await.is("RECEIPT"));
    let other = format!("{dest}.other");
    let mut alice = connect_as(broker.addr, "alice", "a").await;
    assert!(send_and_answer(&mut alice, &other).await.is("RECEIPT"));

    // A token comes back within half a second at 2/s: accepted again (bounded wait).
    let started = Instant::now();
    loop {
        let mut alice = connect_as(broker.addr, "alice", "a").await;
        if send_and_answer(&mut alice, &dest).await.is("RECEIPT") {
            break;
        }
        assert!(started.elapsed() < REFILL, "never accepted again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Destinations outside the plugin's are not limited.
    let mut carol = connect_as(broker.addr, "carol", "a").await;
    let free = format!("/queue/free.{}", unique("rl"));
    for _ in 0..6 {
        assert!(send_and_answer(&mut carol, &free).await.is("RECEIPT"));
    }
}

#[tokio::test]
async fn two_vhosts_do_not_share_counts() {
    let config = rate_limit_config();
    let broker = PluginBroker::start(&config.path);
    let dest = format!("/queue/limited.{}", unique("vh"));
    let mut in_a = connect_as(broker.addr, "alice", "a").await;
    let (accepted_a, err) = send_until_rejected(&mut in_a, &dest).await;
    assert_eq!(err.get("error-code"), Some("plugin.rate-limit.exceeded"));
    // The same principal and destination in vhost b starts with a full bucket.
    let mut in_b = connect_as(broker.addr, "alice", "b").await;
    let (accepted_b, err) = send_until_rejected(&mut in_b, &dest).await;
    assert_eq!(err.get("error-code"), Some("plugin.rate-limit.exceeded"));
    assert!(
        accepted_a >= 2 && accepted_b >= 2,
        "{accepted_a} {accepted_b}"
    );
}

/// Two `kv-probe` plugins, one persisting its store (`/queue/kept.*`), one memory only
/// (`/queue/memory.*`), one without a store (`/queue/none.*`), and one with a cap of 20 entries
/// (`/queue/capped.*`).
fn probe_config() -> TempConfig {
    let probe = plugin("kv-probe");
    temp_config(&format!(
        r#"admin_listen = "127.0.0.1:0"

[[plugins]]
name = "kept"
file = "{probe}"
hooks = ["send"]
destinations = ["/queue/kept.*"]
kv = {{ persist = true }}

[[plugins]]
name = "memory"
file = "{probe}"
hooks = ["send"]
destinations = ["/queue/memory.*"]
kv = {{}}

[[plugins]]
name = "none"
file = "{probe}"
hooks = ["send"]
destinations = ["/queue/none.*"]

[[plugins]]
name = "capped"
file = "{probe}"
hooks = ["send"]
destinations = ["/queue/capped.*"]
kv = {{ max_entries = 20 }}
"#
    ))
}

/// Sends `headers` to `dest` (receipted) and returns the message as the probe let it through.
async fn probe(client: &mut Client, dest: &str, headers: &[(&str, &str)]) -> Frame {
    let id = unique("s");
    client.subscribe(&id, dest, "auto").await;
    let mut all = headers.to_vec();
    all.push(("persistent", "true"));
    client.roundtrip(send_frame(dest, &all, "probe")).await;
    let m = client.msg().await;
    client.unsubscribe(&id).await;
    m
}

#[tokio::test]
async fn a_persisted_store_survives_a_crash_and_a_memory_one_does_not() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().to_str().expect("UTF-8 path");
    let config = probe_config();
    let mut broker = start_with_status_args(&config.path, &["--data-dir", data_dir]);
    let mut c = anonymous(broker.addr).await;
    // The RECEIPT of a persistent SEND means its records are on disk, the probe's kv write
    // (made before it) included.
    let m = probe(&mut c, "/queue/kept.a", &[("kv-set", "k=kept-value")]).await;
    assert_eq!(m.get("x-kv-error"), None, "{m:?}");
    let m = probe(&mut c, "/queue/memory.a", &[("kv-set", "k=memory-value")]).await;
    assert_eq!(m.get("x-kv-error"), None, "{m:?}");
    let m = probe(&mut c, "/queue/kept.a", &[("kv-incr", "n")]).await;
    assert_eq!(m.get("x-kv"), Some("1"));
    let m = probe(&mut c, "/queue/memory.a", &[("kv-get", "k")]).await;
    assert_eq!(m.get("x-kv"), Some("memory-value"));
    broker.kill_hard();

    let broker = start_with_status_args(&config.path, &["--data-dir", data_dir]);
    let mut c = anonymous(broker.addr).await;
    let m = probe(&mut c, "/queue/kept.b", &[("kv-get", "k")]).await;
    assert_eq!(m.get("x-kv"), Some("kept-value"), "persisted: {m:?}");
    let m = probe(&mut c, "/queue/kept.b", &[("kv-incr", "n")]).await;
    assert_eq!(m.get("x-kv"), Some("2"), "the counter went on: {m:?}");
    let m = probe(&mut c, "/queue/memory.b", &[("kv-get", "k")]).await;
    assert_eq!(m.get("x-kv-absent"), Some("k"), "memory only: {m:?}");
    assert!(
        broker
            .log()
            .contains("plugin kv entries recovered from the journal"),
        "{}",
        broker.log_tail()
    );
}

#[tokio::test]
async fn without_a_kv_table_calls_are_disabled_and_init_is_not_a_call() {
    let config = probe_config();
    let broker = PluginBroker::start(&config.path);
    let mut c = anonymous(broker.addr).await;
    let m = probe(&mut c, "/queue/none.a", &[("kv-get", "k")]).await;
    assert_eq!(m.get("x-kv-error"), Some("disabled"), "{m:?}");
    let m = probe(&mut c, "/queue/kept.a", &[("kv-init", "")]).await;
    assert_eq!(m.get("x-kv-init"), Some("not-in-call"), "{m:?}");
    let m = probe(&mut c, "/queue/kept.a", &[("clock", "")]).await;
    let now: u64 = m.must("x-clock").parse().expect("a number");
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now.abs_diff(wall) < 60_000,
        "wall-clock ms: {now} vs {wall}"
    );
}

#[tokio::test]
async fn a_plugin_filling_its_store_hits_the_cap_and_the_broker_carries_on() {
    let config = probe_config();
    let broker = start_with_status(&config.path);
    let mut c = anonymous(broker.addr).await;
    let m = probe(&mut c, "/queue/capped.a", &[("kv-fill", "1000")]).await;
    assert_eq!(m.get("x-kv-filled"), Some("20"), "{m:?}");
    assert_eq!(m.get("x-kv-error"), Some("too-many-entries"), "{m:?}");
    // Again: still full, still refused, nothing grows.
    let m = probe(&mut c, "/queue/capped.a", &[("kv-fill", "1000")]).await;
    assert_eq!(m.get("x-kv-filled"), Some("20"), "overwrites fit: {m:?}");
    let m = probe(&mut c, "/queue/capped.a", &[("kv-set", "new=1")]).await;
    assert_eq!(m.get("x-kv-error"), Some("too-many-entries"), "{m:?}");
    // Other plugins' stores are untouched by it; the broker serves on.
    let m = probe(
        &mut c,
        "/queue/memory.a",
        &[("kv-set", "k=v"), ("kv-get", "k")],
    )
    .await;
    assert_eq!(m.get("x-kv"), Some("v"), "{m:?}");
    let mut other = anonymous(broker.addr).await;
    other.send_r("/queue/plain", "still serving").await;
    assert_eq!(plugin_counter(&broker, "capped", "traps").await, 0);
    let metrics = scrape(broker.admin(), None).await;
    let capped = [("plugin", "capped")];
    assert_eq!(metrics.value("plugboard_plugin_kv_entries", &capped), 20.0);
    assert!(metrics.value("plugboard_plugin_kv_bytes", &capped) > 20.0 * 1024.0);
    // The first fill's refusal, the second's and the set's.
    assert_eq!(
        metrics.value("plugboard_plugin_kv_refused_total", &capped),
        3.0
    );
}
