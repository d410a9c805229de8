//! Message groups (ActiveMQ's `JMSXGroupID` on SEND; RabbitMQ has no equivalent): every
//! message of a group goes to one consumer until it goes away, then the group moves and its
//! first message there carries `JMSXGroupFirstForConsumer:true`; `JMSXGroupSeq:-1` closes a
//! group; the broker keeps at most `flow.max_groups_per_queue` groups per queue.

use std::collections::HashMap;

use crate::harness::*;

fn q(name: &str) -> String {
    format!("/queue/{}", unique(name))
}

fn grouped(dest: &str, group: &str, body: &str) -> Frame {
    Frame::new("SEND")
        .h("destination", dest)
        .h("JMSXGroupID", group)
        .body(body)
}

fn first_for_consumer(m: &Frame) -> bool {
    m.get("JMSXGroupFirstForConsumer") == Some("true")
}

/// Group and body of each message (bodies are written `GROUP-N`).
fn parts(m: &Frame) -> (String, usize) {
    let (group, n) = m.body_str().rsplit_once('-').expect("GROUP-N body");
    (group.to_string(), n.parse().expect("N"))
}

#[tokio::test]
async fn each_group_sticks_to_one_consumer_in_order() {
    let broker = Broker::start();
    let dest = q("groups");
    let mut a = broker.client(Version::V12).await;
    a.subscribe("a", &dest, "auto").await;
    let mut b = broker.client(Version::V12).await;
    b.subscribe("b", &dest, "auto").await;
    let mut p = broker.client(Version::V12).await;
    let groups = ["g1", "g2", "g3", "g4"];
    for n in 0..5 {
        for g in groups {
            p.write(&grouped(&dest, g, &format!("{g}-{n}"))).await;
        }
    }
    p.sync().await;
    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    for (name, c, out) in [("a", &mut a, &mut from_a), ("b", &mut b, &mut from_b)] {
        while let Ok(m) = c.try_recv(QUIET).await {
            assert!(m.is("MESSAGE"), "{m:?}");
            out.push(m);
        }
        for m in out.iter() {
            let (group, n) = parts(m);
            let first = seen.get(&group).is_none_or(|s| s.is_empty());
            assert_eq!(first_for_consumer(m), first, "{name}: {m:?}");
            assert_eq!(*owner.entry(group.clone()).or_insert(name), name, "{m:?}");
            assert_eq!(m.get("JMSXGroupID"), Some(group.as_str()));
            seen.entry(group).or_default().push(n);
        }
    }
    assert_eq!(from_a.len() + from_b.len(), 20);
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "groups are spread"
    );
    for g in groups {
        assert_eq!(seen[g], vec![0, 1, 2, 3, 4], "{g} in order");
    }
}

#[tokio::test]
async fn a_group_moves_when_its_consumer_leaves_and_its_messages_stay_in_order() {
    let broker = Broker::start();
    let dest = q("groups-move");
    let mut first = broker.client(Version::V12).await;
    first.subscribe("f", &dest, "client-individual").await;
    let mut p = broker.client(Version::V12).await;
    for n in 0..3 {
        p.roundtrip(grouped(&dest, "g", &format!("g-{n}"))).await;
    }
    let got = first.msgs(3).await;
    assert!(first_for_consumer(&got[0]) && !first_for_consumer(&got[1]));
    // A second consumer with window space gets nothing of the group meanwhile.
    let mut second = broker.client(Version::V12).await;
    second.subscribe("s", &dest, "client-individual").await;
    p.roundtrip(grouped(&dest, "g", "g-3")).await;
    assert_eq!(first.msg().await.body_str(), "g-3");
    second.expect_silence(QUIET).await;
    first.ack(&got[0]).await;
    first.drop_abruptly();
    p.roundtrip(grouped(&dest, "g", "g-4")).await;
    let moved = second.msgs(4).await;
    let bodies: Vec<&str> = moved.iter().map(|m| m.body_str()).collect();
    assert_eq!(bodies, ["g-1", "g-2", "g-3", "g-4"]);
    assert!(first_for_consumer(&moved[0]), "{:?}", moved[0]);
    assert!(moved[1..].iter().all(|m| !first_for_consumer(m)));
    assert!(moved[..3]
        .iter()
        .all(|m| m.get("redelivered") == Some("true")));
}

#[tokio::test]
async fn a_nacked_group_message_is_redelivered_before_the_rest_of_its_group() {
    let broker = Broker::start();
    let dest = q("groups-nack");
    let mut owner = broker.client(Version::V12).await;
    owner
        .subscribe_with("o", &dest, "client-individual", &[("prefetch-count", "1")])
        .await;
    let mut p = broker.client(Version::V12).await;
    for n in 0..3 {
        p.roundtrip(grouped(&dest, "g", &format!("g-{n}"))).await;
    }
    let m0 = owner.msg().await;
    assert_eq!(m0.body_str(), "g-0");
    // Another consumer with room: the group's messages still wait for their consumer.
    let mut other = broker.client(Version::V12).await;
    other.subscribe("x", &dest, "client-individual").await;
    other.expect_silence(QUIET).await;
    owner.nack(&m0).await;
    let again = owner.msg().await;
    assert_eq!(again.body_str(), "g-0");
    assert_eq!(again.get("redelivered"), Some("true"));
    assert!(
        !first_for_consumer(&again),
        "the group did not move: {again:?}"
    );
    for n in 0..3 {
        let m = if n == 0 {
            again.clone()
        } else {
            owner.msg().await
        };
        assert_eq!(m.body_str(), format!("g-{n}"));
        owner.ack(&m).await;
    }
    other.expect_silence(QUIET).await;
}

#[tokio::test]
async fn group_seq_minus_one_closes_the_group() {
    let broker = Broker::start();
    let dest = q("groups-close");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("c", &dest, "auto").await;
    let mut p = broker.client(Version::V12).await;
    p.roundtrip(grouped(&dest, "g", "g-0")).await;
    p.roundtrip(grouped(&dest, "g", "g-1").h("JMSXGroupSeq", "2"))
        .await;
    p.roundtrip(grouped(&dest, "g", "g-2").h("JMSXGroupSeq", "-1"))
        .await;
    p.roundtrip(grouped(&dest, "g", "g-3")).await;
    let got = c.msgs(4).await;
    let firsts: Vec<bool> = got.iter().map(first_for_consumer).collect();
    assert_eq!(
        firsts,
        [true, false, false, true],
        "after the close the group starts afresh: {got:?}"
    );
}

#[tokio::test]
async fn the_group_table_is_bounded_and_the_least_recently_used_group_makes_room() {
    let broker = Broker::with_config("[flow]\nmax_groups_per_queue = 2\n");
    let dest = q("groups-cap");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("c", &dest, "auto").await;
    let mut p = broker.client(Version::V12).await;
    let sends = [
        ("a", true),
        ("b", true),
        ("a", false),
        ("c", true),  // evicts b (a was used more recently)
        ("a", false), // still pinned
        ("b", true),  // assigned afresh; evicts c
        ("c", true),
    ];
    for (i, (group, _)) in sends.iter().enumerate() {
        p.roundtrip(grouped(&dest, group, &format!("{group}-{i}")))
            .await;
    }
    let got = c.msgs(sends.len()).await;
    for (m, (group, first)) in got.iter().zip(sends) {
        assert_eq!(m.get("JMSXGroupID"), Some(group));
        assert_eq!(first_for_consumer(m), first, "{m:?}");
    }
}

#[tokio::test]
async fn invalid_group_headers_are_errors() {
    let broker = Broker::start();
    let dest = q("groups-bad");
    let mut by = Bystander::new(&broker).await;
    let long = "g".repeat(257);
    let cases = [
        (
            grouped(&dest, "g", "x").h("JMSXGroupSeq", "last"),
            "invalid JMSXGroupSeq 'last'",
        ),
        (grouped(&dest, &long, "x"), "JMSXGroupID of 257 bytes"),
    ];
    for (frame, expected) in cases {
        let mut c = broker.client(Version::V12).await;
        let err = expect_refused(&mut c, frame, "r", expected).await;
        assert!(err.must("message").contains(expected), "{err:?}");
        by.check().await;
    }
}

#[tokio::test]
async fn a_client_cannot_forge_the_first_for_consumer_header() {
    let broker = Broker::start();
    let dest = q("groups-forge");
    let mut c = broker.client(Version::V12).await;
    c.subscribe("c", &dest, "auto").await;
    c.roundtrip(
        Frame::new("SEND")
            .h("destination", &dest)
            .h("JMSXGroupFirstForConsumer", "true")
            .body("plain"),
    )
    .await;
    let m = c.msg().await;
    assert_eq!(m.get("JMSXGroupFirstForConsumer"), None, "{m:?}");
}
