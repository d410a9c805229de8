//! Hostile plugins over TCP (plugins/hostile-*): the failure policy applies in bounded time,
//! other connections keep working meanwhile, the broker stays up and its log names the plugin.

use std::time::{Duration, Instant};

use crate::support::*;
use plugboard_test_support::stomp::{unique, Client, Frame, QUIET};

/// A config with one hostile plugin `name` (component `component`) on `hook`, for
/// `destinations`.
fn hostile_config(
    component: &str,
    name: &str,
    hook: &str,
    destinations: &str,
    failure: &str,
    deadline_ms: u64,
) -> TempConfig {
    temp_config(&format!(
        r#"
[[plugins]]
name = "{name}"
file = "{}"
hooks = ["{hook}"]
destinations = [{destinations}]
failure = "{failure}"
deadline_ms = {deadline_ms}
"#,
        plugin(component)
    ))
}

/// A connection subscribed to an unintercepted queue that times a SEND → MESSAGE round trip.
struct Fast {
    client: Client,
    dest: String,
    n: usize,
}

impl Fast {
    async fn new(addr: std::net::SocketAddr) -> Fast {
        let mut client = anonymous(addr).await;
        let dest = format!("/queue/fast-{}", unique("f"));
        client.subscribe("fast", &dest, "auto").await;
        Fast { client, dest, n: 0 }
    }

    /// One round trip; returns how long it took.
    async fn round_trip(&mut self) -> Duration {
        self.n += 1;
        let body = format!("fast {}", self.n);
        let start = Instant::now();
        let dest = self.dest.clone();
        self.client.send_r(&dest, &body).await;
        let m = self.client.msg().await;
        assert_eq!(m.body_str(), body);
        start.elapsed()
    }
}

/// Sends to `dest` on a fresh connection with a receipt, without waiting.
async fn send_without_waiting(addr: std::net::SocketAddr, dest: &str, receipt: &str) -> Client {
    let mut c = anonymous(addr).await;
    c.write(&send_frame(dest, &[("k", "v")], "hostile payload").h("receipt", receipt))
        .await;
    c
}

/// The broker logged a failed call of plugin `name` on `hook`, at error level; returns the record.
fn assert_logged(broker: &PluginBroker, name: &str, hook: &str) -> String {
    let record = broker.wait_log_line(
        &[
            "plugin call failed",
            &format!("plugin=\"{name}\""),
            &format!("hook=\"{hook}\""),
        ],
        Duration::from_secs(5),
    );
    assert!(record.contains("ERROR"), "logged at error level: {record}");
    record
}

/// The SEND must be rejected: ERROR with the generic reason naming the plugin and the receipt.
fn assert_send_failed_closed(err: &Frame, name: &str, receipt: &str) {
    let message = error_message(err);
    assert!(
        message.contains(&format!("plugin `{name}` failed")),
        "ERROR should say the plugin failed: {err:?}"
    );
    assert_eq!(err.get("receipt-id"), Some(receipt), "{err:?}");
}

/// `hostile-loop` as a fail-closed send plugin on `/queue/slow`.
fn looping_send_plugin(deadline: Duration) -> TempConfig {
    hostile_config(
        "hostile-loop",
        "loopy",
        "send",
        r#""/queue/slow""#,
        "closed",
        deadline.as_millis() as u64,
    )
}

#[tokio::test]
async fn a_looping_send_plugin_fails_closed_while_others_carry_on() {
    let deadline = Duration::from_millis(1500);
    let config = looping_send_plugin(deadline);
    let mut broker = PluginBroker::start(&config.path);
    let mut fast = Fast::new(broker.addr).await;
    fast.round_trip().await;

    let start = Instant::now();
    let mut slow = send_without_waiting(broker.addr, "/queue/slow", "r-slow").await;
    // While the plugin spins, another connection's SEND → MESSAGE keeps flowing.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        worst = worst.max(fast.round_trip().await);
    }
    let fast_done = start.elapsed();
    assert!(
        worst < Duration::from_millis(500),
        "a round trip on /queue/fast took {worst:?} while the plugin looped"
    );

    let err = match slow.try_recv(deadline + Duration::from_secs(5)).await {
        Ok(f) => f,
        Err(e) => panic!("no ERROR for the SEND to /queue/slow: {e:?}"),
    };
    let took = start.elapsed();
    assert_send_failed_closed(&err, "loopy", "r-slow");
    assert!(
        took >= deadline.mul_f32(0.8),
        "the ERROR came after {took:?}, before the {deadline:?} deadline could pass"
    );
    assert!(
        took < deadline + Duration::from_secs(3),
        "the ERROR came after {took:?} for a {deadline:?} deadline"
    );
    assert!(
        fast_done < took,
        "the other connection's round trips ({fast_done:?}) finished while the plugin ran ({took:?})"
    );
    slow.expect_closed().await;

    assert!(broker.is_running(), "the broker must stay up");
    let record = assert_logged(&broker, "loopy", "send");
    assert!(record.contains("kind=Timeout"), "{record}");

    // The pool recovers: the next SEND fails the same way, and the bystander is fine.
    let mut again = send_without_waiting(broker.addr, "/queue/slow", "r-again").await;
    let err = again.recv_within(deadline + Duration::from_secs(5)).await;
    assert_send_failed_closed(&err, "loopy", "r-again");
    fast.round_trip().await;
    assert!(broker.is_running());
}

/// The epoch ticker that enforces deadlines parks while no guest code runs (an idle broker
/// does not wake up every millisecond); a call must wake it, or a looping guest would never be
/// stopped. Each SEND here comes after the broker sat idle long enough for the ticker to park.
#[tokio::test]
async fn a_looping_plugin_is_stopped_after_the_broker_sat_idle() {
    let deadline = Duration::from_millis(500);
    let config = looping_send_plugin(deadline);
    let mut broker = PluginBroker::start(&config.path);
    for receipt in ["r-first", "r-second"] {
        // The ticker parks after 100 idle ticks (100 ms).
        tokio::time::sleep(Duration::from_millis(600)).await;
        let start = Instant::now();
        let mut slow = send_without_waiting(broker.addr, "/queue/slow", receipt).await;
        let err = slow.recv_within(deadline + Duration::from_secs(5)).await;
        let took = start.elapsed();
        assert_send_failed_closed(&err, "loopy", receipt);
        assert!(
            took < deadline + Duration::from_secs(3),
            "the ERROR came after {took:?} for a {deadline:?} deadline"
        );
        assert!(broker.is_running(), "the broker must stay up");
    }
}

#[tokio::test]
async fn a_trapping_send_plugin_fails_closed_and_is_replaced() {
    let config = hostile_config(
        "hostile-trap",
        "trappy",
        "send",
        r#""/queue/slow""#,
        "closed",
        1000,
    );
    let mut broker = PluginBroker::start(&config.path);
    let mut fast = Fast::new(broker.addr).await;
    for i in 0..3 {
        let receipt = format!("r{i}");
        let start = Instant::now();
        let mut slow = send_without_waiting(broker.addr, "/queue/slow", &receipt).await;
        let err = slow.recv_within(Duration::from_secs(5)).await;
        assert_send_failed_closed(&err, "trappy", &receipt);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "a trap should fail fast, took {:?}",
            start.elapsed()
        );
        slow.expect_closed().await;
        fast.round_trip().await;
    }
    assert!(broker.is_running(), "the broker must stay up");
    assert_logged(&broker, "trappy", "send");
}

/// With `failure = "open"`, a SEND through a failing plugin is delivered unchanged.
async fn fails_open(component: &str, name: &str, deadline_ms: u64) {
    let config = hostile_config(
        component,
        name,
        "send",
        r#""/queue/slow""#,
        "open",
        deadline_ms,
    );
    let mut broker = PluginBroker::start(&config.path);
    let mut sub = anonymous(broker.addr).await;
    sub.subscribe("slow", "/queue/slow", "auto").await;
    let mut fast = Fast::new(broker.addr).await;
    let mut sender = anonymous(broker.addr).await;
    for i in 0..2 {
        let start = Instant::now();
        let body = format!("passes {i}");
        sender
            .roundtrip(send_frame("/queue/slow", &[("k", "v")], &body))
            .await;
        assert!(
            start.elapsed() < Duration::from_millis(deadline_ms) + Duration::from_secs(3),
            "{name}: the SEND took {:?}",
            start.elapsed()
        );
        let m = sub.msg().await;
        assert_eq!(m.body_str(), body, "{name}: {m:?}");
        assert_eq!(m.get("k"), Some("v"), "{name}: {m:?}");
        assert_eq!(m.must("destination"), "/queue/slow", "{name}: {m:?}");
        fast.round_trip().await;
    }
    sub.expect_silence(QUIET).await;
    assert!(broker.is_running(), "the broker must stay up");
    assert_logged(&broker, name, "send");
}

#[tokio::test]
async fn a_looping_send_plugin_that_fails_open_lets_messages_through() {
    fails_open("hostile-loop", "loopy-open", 300).await;
}

#[tokio::test]
async fn a_trapping_send_plugin_that_fails_open_lets_messages_through() {
    fails_open("hostile-trap", "trappy-open", 1000).await;
}

#[tokio::test]
async fn allocating_and_garbage_send_plugins_fail_closed() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "hoarder"
file = "{}"
hooks = ["send"]
destinations = ["/queue/alloc"]
memory_mb = 8

[[plugins]]
name = "garbler"
file = "{}"
hooks = ["send"]
destinations = ["/queue/garbage"]
"#,
        plugin("hostile-alloc"),
        plugin("hostile-garbage")
    ));
    let mut broker = PluginBroker::start(&config.path);
    let mut fast = Fast::new(broker.addr).await;
    for (dest, name, kind) in [
        ("/queue/alloc", "hoarder", None),
        ("/queue/garbage", "garbler", None),
        ("/queue/garbage", "garbler", Some("fanout")),
        ("/queue/garbage", "garbler", Some("header")),
        ("/queue/garbage", "garbler", Some("body")),
    ] {
        let mut c = anonymous(broker.addr).await;
        let mut f = send_frame(dest, &[], "x").h("receipt", "r");
        if let Some(kind) = kind {
            f = f.h("garbage", kind);
        }
        c.write(&f).await;
        let err = c.recv_within(Duration::from_secs(10)).await;
        assert!(
            error_message(&err).contains(&format!("`{name}`")),
            "{name} ({kind:?}): {err:?}"
        );
        assert_eq!(err.get("receipt-id"), Some("r"), "{err:?}");
        fast.round_trip().await;
    }
    assert!(broker.is_running(), "the broker must stay up");
    assert_logged(&broker, "hoarder", "send");
    assert_logged(&broker, "garbler", "send");
}

#[tokio::test]
async fn a_failing_message_plugin_refuses_subscribe_closed_and_is_ignored_open() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "trap-closed"
file = "{0}"
hooks = ["message"]
destinations = ["/topic/closed"]

[[plugins]]
name = "trap-open"
file = "{0}"
hooks = ["message"]
destinations = ["/topic/open"]
failure = "open"
"#,
        plugin("hostile-trap")
    ));
    let mut broker = PluginBroker::start(&config.path);
    let mut c = anonymous(broker.addr).await;
    c.write(
        &Frame::new("SUBSCRIBE")
            .h("id", "0")
            .h("destination", "/topic/closed")
            .h("receipt", "sub"),
    )
    .await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("receipt-id"), Some("sub"), "{err:?}");
    assert!(
        err.must("message").contains("subscription refused"),
        "{err:?}"
    );

    let mut sub = anonymous(broker.addr).await;
    sub.subscribe("open", "/topic/open", "auto").await;
    let mut sender = anonymous(broker.addr).await;
    sender.send_r("/topic/open", "through").await;
    assert_eq!(sub.msg().await.body_str(), "through");
    assert!(broker.is_running(), "the broker must stay up");
    assert_logged(&broker, "trap-closed", "message");
    assert_logged(&broker, "trap-open", "message");
}

#[tokio::test]
async fn a_looping_authenticator_denies_connect_in_bounded_time() {
    let config = hostile_config(
        "hostile-loop",
        "loop-auth",
        "authenticate",
        r#""*""#,
        "closed",
        300,
    );
    let mut broker = PluginBroker::start(&config.path);
    let start = Instant::now();
    let (mut c, reply) = try_login(broker.addr, Some("alice"), Some("x")).await;
    assert!(
        error_message(&reply).contains("access refused"),
        "{reply:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "CONNECT took {:?}",
        start.elapsed()
    );
    c.expect_closed().await;
    assert!(broker.is_running(), "the broker must stay up");
    assert_logged(&broker, "loop-auth", "authenticate");
}

/// A plugin cannot break the MESSAGE framing or impersonate the broker: `content-length`,
/// `message-id` and the other server-owned headers it sets (in a SEND rewrite or a per-subscriber
/// rewrite) are dropped, so the subscriber reads the whole body, one `content-length` and the
/// broker's own `message-id`.
#[tokio::test]
async fn plugin_rewrites_cannot_set_server_owned_headers() {
    let config = temp_config(&format!(
        r#"
[[plugins]]
name = "puppet"
file = "{}"
hooks = ["send", "message"]
destinations = ["/queue/framed"]
"#,
        plugin("hostile-puppet")
    ));
    let broker = PluginBroker::start(&config.path);
    let mut sub = anonymous(broker.addr).await;
    sub.subscribe_with(
        "s",
        "/queue/framed",
        "auto",
        &[
            ("set", "content-length=2"),
            ("set", "message-id=forged-by-filter"),
        ],
    )
    .await;
    let mut sender = anonymous(broker.addr).await;
    let body = "a body longer than one byte";
    sender
        .roundtrip(send_frame(
            "/queue/framed",
            &[
                ("set", "content-length=1"),
                ("set", "Content-Length=1"),
                ("set", "subscription=forged"),
                ("set", "x-kept=yes"),
            ],
            body,
        ))
        .await;
    let m = sub.msg().await;
    assert_eq!(m.body_str(), body, "{m:?}");
    assert_eq!(
        m.all("content-length"),
        [body.len().to_string().as_str()],
        "{m:?}"
    );
    assert_eq!(m.all("Content-Length"), Vec::<&str>::new(), "{m:?}");
    assert_eq!(m.all("subscription"), ["s"], "{m:?}");
    assert_eq!(m.all("message-id").len(), 1, "{m:?}");
    assert!(!m.must("message-id").contains("forged"), "{m:?}");
    assert_eq!(m.get("x-kept"), Some("yes"), "{m:?}");
    // The connection still frames correctly: the next message arrives whole.
    sender
        .roundtrip(send_frame("/queue/framed", &[], "next"))
        .await;
    assert_eq!(sub.msg().await.body_str(), "next");
}

/// A plugin that logs in a loop is rate limited: the broker's log gets a burst of its lines and
/// one summary of the lines dropped, not thousands of lines.
#[tokio::test]
async fn a_plugin_that_logs_in_a_loop_is_rate_limited() {
    let config = temp_config(&format!(
        r#"
admin_listen = "127.0.0.1:0"

[[plugins]]
name = "chatty"
file = "{}"
hooks = ["send"]
destinations = ["/queue/chatty"]
deadline_ms = 5000
"#,
        plugin("hostile-puppet")
    ));
    let broker = start_with_status(&config.path);
    let mut c = anonymous(broker.addr).await;
    c.roundtrip(send_frame("/queue/chatty", &[("log", "5000")], "x"))
        .await;
    // Once the bucket has refilled a little, the next line is written after the summary.
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.roundtrip(send_frame("/queue/chatty", &[("log", "1")], "x"))
        .await;
    let summary = broker.wait_log_line(
        &["plugin=\"chatty\"", "lines dropped"],
        Duration::from_secs(5),
    );
    assert!(summary.contains("WARN"), "{summary}");
    let written = broker
        .log_records()
        .iter()
        .filter(|r| r.contains("hostile-puppet: line"))
        .count();
    assert!(
        (200..=220).contains(&written),
        "a burst of 200 lines, then about 100 per second: {written} written"
    );
    let status = plugboard_test_support::broker::fetch_status(broker.admin()).await;
    let dropped = status["plugins"]["loaded"][0]["log_dropped"]
        .as_u64()
        .expect("log_dropped");
    assert!(dropped >= 4700, "{status}");
}
