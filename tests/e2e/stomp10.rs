//! STOMP 1.0 clients of the ActiveMQ era (issue 13, item 1): they write `name: value` with a
//! space after the colon and send no `accept-version`. A 1.0 session reads every header without
//! the spaces and tabs around its name and value, the CONNECT frame included; 1.1 and 1.2 keep
//! every byte.

use crate::harness::*;

const USERS: &str = r#"
[[users]]
login = "alice"
passcode = "secret"
"#;

/// A raw 1.0 client: the CONNECT as such a client writes it, answered by CONNECTED.
async fn old_client(broker: &Broker) -> Client {
    let mut c = Client::open(broker.addr).await;
    c.write_raw(b"CONNECT\nlogin: alice\npasscode:\tsecret \n\n\0")
        .await;
    let reply = c.recv().await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    assert_eq!(reply.get("version"), None, "a 1.0 CONNECTED: {reply:?}");
    c
}

async fn receipt(c: &mut Client, id: &str) {
    let r = c.expect("RECEIPT").await;
    assert_eq!(r.get("receipt-id"), Some(id), "{r:?}");
}

#[tokio::test]
async fn an_activemq_era_client_with_spaces_after_the_colons_works() {
    let broker = Broker::with_config(USERS);
    let q = format!("/queue/{}", unique("old"));
    let t = format!("/topic/{}", unique("old"));
    let mut consumer = old_client(&broker).await;
    consumer
        .write_raw(
            format!("SUBSCRIBE\ndestination: {q}\nack: client\nreceipt: r1\n\n\0").as_bytes(),
        )
        .await;
    receipt(&mut consumer, "r1").await;
    consumer
        .write_raw(
            format!("SUBSCRIBE\ndestination:\t{t} \nack: auto\nreceipt: r2\n\n\0").as_bytes(),
        )
        .await;
    receipt(&mut consumer, "r2").await;

    let mut producer = old_client(&broker).await;
    producer
        .write_raw(
            format!(
                "SEND\ndestination: {q}\ncolor: red \ncontent-length: 5\nreceipt: s1\n\nhello\0"
            )
            .as_bytes(),
        )
        .await;
    receipt(&mut producer, "s1").await;
    let m = consumer.msg().await;
    assert_eq!(m.get("destination"), Some(q.as_str()), "{m:?}");
    assert_eq!(m.get("color"), Some("red"), "{m:?}");
    assert_eq!(m.body_str(), "hello");
    let id = m.must("message-id").to_string();

    producer
        .write_raw(format!("SEND\n destination : {t}\n\nnews\0").as_bytes())
        .await;
    let news = consumer.msg().await;
    assert_eq!(news.get("destination"), Some(t.as_str()), "{news:?}");
    assert_eq!(news.body_str(), "news");

    // The 1.0 ACK names only the message, with a space after the colon.
    consumer
        .write_raw(format!("ACK\nmessage-id: {id}\nreceipt: a1\n\n\0").as_bytes())
        .await;
    receipt(&mut consumer, "a1").await;
    // UNSUBSCRIBE by destination (1.0 has no id), spaces included.
    consumer
        .write_raw(format!("UNSUBSCRIBE\ndestination: {t}\nreceipt: u1\n\n\0").as_bytes())
        .await;
    receipt(&mut consumer, "u1").await;
    producer
        .write_raw(format!("SEND\ndestination: {t}\nreceipt: s2\n\nafter\0").as_bytes())
        .await;
    receipt(&mut producer, "s2").await;
    consumer.expect_silence(QUIET).await;
    consumer.disconnect().await;

    // The ACK settled the message: a new consumer of the queue gets nothing.
    let mut again = old_client(&broker).await;
    again
        .write_raw(format!("SUBSCRIBE\ndestination: {q}\nack: client\n\n\0").as_bytes())
        .await;
    again.expect_silence(QUIET).await;
    again.disconnect().await;
    producer.disconnect().await;
}

#[tokio::test]
async fn a_1_0_client_with_a_wrong_passcode_is_still_refused() {
    let broker = Broker::with_config(USERS);
    let mut c = Client::open(broker.addr).await;
    c.write_raw(b"CONNECT\nlogin: alice\npasscode: secrets\n\n\0")
        .await;
    let reply = c.recv().await;
    assert!(reply.is("ERROR"), "{reply:?}");
}

#[tokio::test]
async fn stomp_1_1_and_1_2_keep_the_blanks_around_values() {
    let broker = Broker::start();
    for v in [Version::V11, Version::V12] {
        let q = format!("/queue/{}", unique("blanks"));
        let mut c = broker.client(v).await;
        c.subscribe("s", &q, "auto").await;
        c.write_raw(format!("SEND\ndestination:{q}\ncolor: red\t\nk :v\n\nx\0").as_bytes())
            .await;
        let m = c.msg().await;
        assert_eq!(m.get("color"), Some(" red\t"), "{v}: {m:?}");
        assert_eq!(m.get("k "), Some("v"), "{v}: {m:?}");
        // A destination with a leading space is another name, not the queue.
        c.write_raw(format!("SEND\ndestination: {q}\nreceipt: r\n\nnot here\0").as_bytes())
            .await;
        let reply = c.recv().await;
        if reply.is("RECEIPT") {
            c.expect_silence(QUIET).await;
        } else {
            assert!(reply.is("ERROR"), "{v}: {reply:?}");
        }
    }
}
