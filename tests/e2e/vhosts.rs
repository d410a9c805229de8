//! Virtual hosts: CONNECT's `host` selects one, and nothing of one vhost (queues, topics,
//! wildcard and durable subscriptions, persistent messages after a restart) is visible from
//! another. Unknown and absent hosts, `default_vhost`, the embedded default (one vhost that any
//! host enters), and the vhost in `/status` and `/metrics`.

use std::time::Duration;

use plugboard_test_support::broker::{fetch_status, Launch};
use plugboard_test_support::metrics::scrape;
use plugboard_test_support::BrokerBinary;

use crate::harness::*;
use crate::Plugboard;

const TWO: &str = "[[vhosts]]\nname = \"a\"\n[[vhosts]]\nname = \"b\"\n";
const QUIET: Duration = Duration::from_millis(300);

/// CONNECT (1.2) naming `host`, or with no `host` at all.
fn connect_to(host: Option<&str>) -> Frame {
    let frame = Frame::new("CONNECT").h("accept-version", "1.2");
    match host {
        Some(host) => frame.h("host", host),
        None => frame,
    }
}

/// A client connected to vhost `host`.
async fn client_in(addr: std::net::SocketAddr, host: &str) -> Client {
    let (client, reply) = Client::connect_with(addr, connect_to(Some(host))).await;
    assert!(reply.is("CONNECTED"), "host {host}: {reply:?}");
    client
}

/// A client of vhost `host` with a `client-id` (for durable subscriptions).
async fn client_with_id(addr: std::net::SocketAddr, host: &str, id: &str) -> Client {
    let (client, reply) =
        Client::connect_with(addr, connect_to(Some(host)).h("client-id", id)).await;
    assert!(reply.is("CONNECTED"), "host {host}: {reply:?}");
    client
}

/// CONNECT with `connect`: ERROR naming the unknown vhost, then the connection closes.
async fn refused(addr: std::net::SocketAddr, connect: Frame) -> Frame {
    let (mut client, reply) = Client::connect_with(addr, connect).await;
    assert!(reply.is("ERROR"), "{reply:?}");
    client.expect_closed().await;
    reply
}

#[tokio::test]
async fn the_same_queue_name_in_two_vhosts_is_two_queues() {
    let broker = Broker::with_config(TWO);
    let queue = format!("/queue/{}", unique("shared-name"));
    let mut b_reader = client_in(broker.addr, "b").await;
    b_reader.subscribe("q", &queue, "auto").await;
    let mut a_sender = client_in(broker.addr, "a").await;
    a_sender.send_r(&queue, "for a").await;
    b_reader.expect_silence(QUIET).await;
    let mut a_reader = client_in(broker.addr, "a").await;
    a_reader.subscribe("q", &queue, "auto").await;
    assert_eq!(a_reader.msg().await.body_str(), "for a");
    // And the other way round.
    let mut b_sender = client_in(broker.addr, "b").await;
    b_sender.send_r(&queue, "for b").await;
    assert_eq!(b_reader.msg().await.body_str(), "for b");
    a_reader.expect_silence(QUIET).await;
}

#[tokio::test]
async fn topics_and_wildcard_subscriptions_see_only_their_vhost() {
    let broker = Broker::with_config(TWO);
    let base = unique("news");
    let topic = format!("/topic/{base}.x");
    let mut a_wild = client_in(broker.addr, "a").await;
    a_wild
        .subscribe("w", &format!("/topic/{base}.>"), "auto")
        .await;
    let mut a_plain = client_in(broker.addr, "a").await;
    a_plain.subscribe("t", &topic, "auto").await;
    let mut b_wild = client_in(broker.addr, "b").await;
    b_wild
        .subscribe("w", &format!("/topic/{base}.*"), "auto")
        .await;
    let mut b_plain = client_in(broker.addr, "b").await;
    b_plain.subscribe("t", &topic, "auto").await;

    let mut a_sender = client_in(broker.addr, "a").await;
    a_sender.send_r(&topic, "from a").await;
    assert_eq!(a_wild.msg().await.body_str(), "from a");
    assert_eq!(a_plain.msg().await.body_str(), "from a");
    b_wild.expect_silence(QUIET).await;
    b_plain.expect_silence(QUIET).await;

    let mut b_sender = client_in(broker.addr, "b").await;
    b_sender.send_r(&topic, "from b").await;
    assert_eq!(b_wild.msg().await.body_str(), "from b");
    assert_eq!(b_plain.msg().await.body_str(), "from b");
    a_wild.expect_silence(QUIET).await;
    a_plain.expect_silence(QUIET).await;
}

#[tokio::test]
async fn a_durable_subscription_of_the_same_name_in_two_vhosts_is_two_subscriptions() {
    let broker = Broker::with_config(TWO);
    let topic = format!("/topic/{}", unique("durable"));
    let durable = [("activemq.subscriptionName", "reader")];
    // Both active at once: one vhost's subscription does not block the other's.
    let mut in_a = client_with_id(broker.addr, "a", "app").await;
    in_a.subscribe_with("s", &topic, "auto", &durable).await;
    let mut in_b = client_with_id(broker.addr, "b", "app").await;
    in_b.subscribe_with("s", &topic, "auto", &durable).await;
    in_a.disconnect().await;
    in_b.disconnect().await;

    let mut a_sender = client_in(broker.addr, "a").await;
    a_sender.send_r(&topic, "kept for a").await;

    let mut in_b = client_with_id(broker.addr, "b", "app").await;
    in_b.subscribe_with("s", &topic, "auto", &durable).await;
    in_b.expect_silence(QUIET).await;
    let mut in_a = client_with_id(broker.addr, "a", "app").await;
    in_a.subscribe_with("s", &topic, "auto", &durable).await;
    assert_eq!(in_a.msg().await.body_str(), "kept for a");
}

#[tokio::test]
async fn composite_parts_resolve_in_the_senders_vhost() {
    let broker = Broker::with_config(TWO);
    let one = format!("/queue/{}", unique("part"));
    let two = format!("/queue/{}", unique("part"));
    let mut b_reader = client_in(broker.addr, "b").await;
    b_reader.subscribe("1", &one, "auto").await;
    let mut a_reader = client_in(broker.addr, "a").await;
    a_reader.subscribe("1", &one, "auto").await;
    a_reader.subscribe("2", &two, "auto").await;
    let mut a_sender = client_in(broker.addr, "a").await;
    a_sender.send_r(&format!("{one},{two}"), "both").await;
    let got = a_reader.msgs(2).await;
    assert!(got.iter().all(|m| m.body_str() == "both"), "{got:?}");
    b_reader.expect_silence(QUIET).await;
}

#[tokio::test]
async fn an_unknown_or_absent_host_is_refused_without_a_default_vhost() {
    let broker = Launch::config_text(
        Plugboard::PATH,
        &format!("admin_listen = \"127.0.0.1:0\"\n{TWO}"),
    )
    .status_line()
    .start();
    let error = refused(broker.addr, connect_to(Some("nowhere"))).await;
    let message = error.must("message");
    assert!(
        message.contains("unknown virtual host 'nowhere'"),
        "{error:?}"
    );
    let error = refused(broker.addr, connect_to(None)).await;
    assert!(
        error.must("message").contains("unknown virtual host"),
        "{error:?}"
    );
    // A vhost's name is matched exactly.
    refused(broker.addr, connect_to(Some("A"))).await;
    let status = fetch_status(broker.admin()).await;
    assert_eq!(status["connections"]["failed_logins"], 3, "{status}");
    let mut fine = client_in(broker.addr, "a").await;
    fine.send_r("/queue/still-works", "x").await;
}

#[tokio::test]
async fn the_default_vhost_takes_unknown_and_absent_hosts() {
    let broker = Broker::with_config(&format!("default_vhost = \"b\"\n{TWO}"));
    let queue = format!("/queue/{}", unique("fallback"));
    let mut unknown = client_in(broker.addr, "nowhere").await;
    unknown.send_r(&queue, "from an unknown host").await;
    let (mut absent, reply) = Client::connect_with(broker.addr, connect_to(None)).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    absent.send_r(&queue, "from no host").await;
    let mut a_reader = client_in(broker.addr, "a").await;
    a_reader.subscribe("q", &queue, "auto").await;
    let mut b_reader = client_in(broker.addr, "b").await;
    b_reader.subscribe("q", &queue, "auto").await;
    let got = b_reader.msgs(2).await;
    assert_eq!(
        got.iter().map(|m| m.body_str()).collect::<Vec<_>>(),
        ["from an unknown host", "from no host"]
    );
    a_reader.expect_silence(QUIET).await;
}

#[tokio::test]
async fn without_vhosts_any_host_enters_the_one_vhost() {
    let broker = Broker::start();
    let queue = format!("/queue/{}", unique("any-host"));
    let mut reader = client_in(broker.addr, "some.host.example").await;
    reader.subscribe("q", &queue, "auto").await;
    for host in ["localhost", "/", "tenant-a"] {
        let mut sender = client_in(broker.addr, host).await;
        sender.send_r(&queue, host).await;
    }
    let (mut absent, reply) = Client::connect_with(broker.addr, connect_to(None)).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    absent.send_r(&queue, "none").await;
    let got = reader.msgs(4).await;
    assert_eq!(
        got.iter().map(|m| m.body_str()).collect::<Vec<_>>(),
        ["localhost", "/", "tenant-a", "none"]
    );
}

fn persistent_send(dest: &str, body: &str) -> Frame {
    Frame::new("SEND")
        .h("destination", dest)
        .h("persistent", "true")
        .body(body)
}

/// Bodies on `dest` in vhost `host`, until `QUIET` passes without one.
async fn drain(addr: std::net::SocketAddr, host: &str, dest: &str) -> Vec<String> {
    let mut c = client_in(addr, host).await;
    c.subscribe("drain", dest, "auto").await;
    let mut out = Vec::new();
    loop {
        match c.try_recv(QUIET).await {
            Ok(f) if f.is("MESSAGE") => out.push(f.body_str().to_string()),
            Ok(f) => panic!("draining {dest} in {host}: unexpected {f:?}"),
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("draining {dest} in {host}: {e:?}"),
        }
    }
    out
}

#[tokio::test]
async fn persistent_scheduled_and_durable_messages_come_back_into_their_vhost_after_kill_9() {
    let data = tempfile::tempdir().unwrap();
    let queue = format!("/queue/{}", unique("kept"));
    let topic = format!("/topic/{}", unique("kept"));
    let durable = [("activemq.subscriptionName", "d")];
    let mut broker = Broker::with_data_dir(TWO, data.path());
    let mut in_b = client_with_id(broker.addr, "b", "app").await;
    in_b.subscribe_with("s", &topic, "client", &durable).await;
    in_b.disconnect().await;
    let mut a = client_in(broker.addr, "a").await;
    a.roundtrip(persistent_send(&queue, "in a")).await;
    a.roundtrip(persistent_send(&topic, "topic in a")).await;
    let mut b = client_in(broker.addr, "b").await;
    b.roundtrip(persistent_send(&queue, "in b")).await;
    b.roundtrip(persistent_send(&topic, "topic in b")).await;
    let later = format!("/queue/{}", unique("later"));
    b.roundtrip(persistent_send(&later, "scheduled in b").h("AMQ_SCHEDULED_DELAY", "1000"))
        .await;
    broker.kill_hard();

    let broker = Broker::with_data_dir(TWO, data.path());
    let mut a_later = client_in(broker.addr, "a").await;
    a_later.subscribe("l", &later, "auto").await;
    let mut b_later = client_in(broker.addr, "b").await;
    b_later.subscribe("l", &later, "auto").await;
    assert_eq!(drain(broker.addr, "a", &queue).await, ["in a"]);
    assert_eq!(drain(broker.addr, "b", &queue).await, ["in b"]);
    assert_eq!(b_later.msg().await.body_str(), "scheduled in b");
    a_later.expect_silence(QUIET).await;
    let mut in_a = client_with_id(broker.addr, "a", "app").await;
    in_a.subscribe_with("s", &topic, "auto", &durable).await;
    in_a.expect_silence(QUIET).await;
    let mut in_b = client_with_id(broker.addr, "b", "app").await;
    in_b.subscribe_with("s", &topic, "auto", &durable).await;
    assert_eq!(in_b.msg().await.body_str(), "topic in b");
}

/// A journal written without vhosts (every record of the one vhost `/`) loads into `/` once
/// `[[vhosts]]` are configured; a vhost left out of the config keeps its messages in the
/// journal until it is configured again.
#[tokio::test]
async fn a_journal_from_before_vhosts_loads_into_the_default_vhost() {
    let data = tempfile::tempdir().unwrap();
    let queue = format!("/queue/{}", unique("old"));
    let mut broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(persistent_send(&queue, "written before vhosts"))
        .await;
    broker.kill_hard();

    let with_slash = "[[vhosts]]\nname = \"/\"\n[[vhosts]]\nname = \"b\"\n";
    let mut broker = Broker::with_data_dir(with_slash, data.path());
    let mut b = client_in(broker.addr, "b").await;
    b.roundtrip(persistent_send(&queue, "in b")).await;
    assert_eq!(
        drain(broker.addr, "/", &queue).await,
        ["written before vhosts"]
    );
    broker.kill_hard();

    // Without "b" its message waits in the journal; with "b" again it is back.
    let mut broker = Broker::with_data_dir("[[vhosts]]\nname = \"/\"\n", data.path());
    assert!(drain(broker.addr, "/", &queue).await.is_empty());
    broker.kill_hard();
    let broker = Broker::with_data_dir(with_slash, data.path());
    assert_eq!(drain(broker.addr, "b", &queue).await, ["in b"]);
}

#[tokio::test]
async fn status_and_metrics_name_each_vhost() {
    let broker = Launch::config_text(
        Plugboard::PATH,
        &format!("admin_listen = \"127.0.0.1:0\"\n{TWO}"),
    )
    .status_line()
    .start();
    let queue = format!("/queue/{}", unique("counted"));
    let mut a = client_in(broker.addr, "a").await;
    a.send_r(&queue, "one").await;
    a.send_r(&queue, "two").await;
    let mut b = client_in(broker.addr, "b").await;
    b.send_r(&queue, "three").await;
    let status = fetch_status(broker.admin()).await;
    let vhosts = status["vhosts"].as_array().expect("vhosts list");
    let names: Vec<&str> = vhosts.iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b"], "{status}");
    assert!(
        vhosts.iter().all(|v| v["queues"].as_u64() >= Some(1)),
        "{status}"
    );
    let scrape = scrape(broker.admin(), None).await;
    let ready = |vhost| {
        scrape.value(
            "plugboard_queue_messages_ready",
            &[("vhost", vhost), ("queue", &queue)],
        )
    };
    assert_eq!(ready("a"), 2.0);
    assert_eq!(ready("b"), 1.0);
}

#[tokio::test]
async fn scheduled_messages_and_reply_queues_stay_in_their_vhost() {
    let broker = Broker::with_config(TWO);
    let queue = format!("/queue/{}", unique("later"));
    let mut b_reader = client_in(broker.addr, "b").await;
    b_reader.subscribe("q", &queue, "auto").await;
    let mut a_reader = client_in(broker.addr, "a").await;
    a_reader.subscribe("q", &queue, "auto").await;
    let mut a_sender = client_in(broker.addr, "a").await;
    a_sender
        .roundtrip(
            Frame::new("SEND")
                .h("destination", &queue)
                .h("AMQ_SCHEDULED_DELAY", "200")
                .body("scheduled in a"),
        )
        .await;
    assert_eq!(a_reader.msg().await.body_str(), "scheduled in a");
    b_reader.expect_silence(QUIET).await;

    // A reply queue's global name means nothing in another vhost.
    let mut requester = client_in(broker.addr, "a").await;
    requester
        .subscribe("r", "/temp-queue/replies", "auto")
        .await;
    requester
        .roundtrip(
            Frame::new("SEND")
                .h("destination", &queue)
                .h("reply-to", "/temp-queue/replies")
                .body("question"),
        )
        .await;
    let question = a_reader.msg().await;
    let reply_to = question.must("reply-to").to_string();
    assert!(reply_to.starts_with("/reply-queue/"), "{question:?}");
    let mut stranger = client_in(broker.addr, "b").await;
    stranger.send_r(&reply_to, "answer from b").await;
    requester.expect_silence(QUIET).await;
    a_sender.send_r(&reply_to, "answer from a").await;
    assert_eq!(requester.msg().await.body_str(), "answer from a");
}
