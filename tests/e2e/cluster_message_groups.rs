//! Message groups on a cluster queue (docs/cluster.md, "Message groups"): on a queue that
//! `[cluster] group_queues` names, the messages of one `JMSXGroupID` go to one subscription at
//! a time, whichever edge it is on, in the order they were sent; the groups are spread over
//! the subscriptions; a subscription that goes hands its groups to the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use plugboard_test_support::broker::Broker as Edge;
use plugboard_test_support::nats::{nats_server_or_skip, NatsCluster};

use super::cluster::{client, cluster_name, edge, target_dir, ACROSS};
use crate::harness::*;

const SETTING: &str = "group_queues = [\"/queue/grp.*\"]\ngroup_partitions = 4";
/// Long enough for the members to share the partitions out: they look every second, and a
/// partition given up goes once its waiting pull ended (within 5 s).
const SETTLE: Duration = Duration::from_secs(8);

/// Sends `per_group` messages of each of `groups` groups, interleaved, bodies `GROUP:N`.
async fn send_groups(p: &mut Client, dest: &str, groups: usize, per_group: usize, from: usize) {
    for n in from..from + per_group {
        for g in 0..groups {
            let frame = Frame::new("SEND")
                .h("destination", dest)
                .h("JMSXGroupID", &format!("g{g}"))
                .body(format!("g{g}:{n}").as_bytes());
            p.write(&frame).await;
        }
    }
    p.sync().await;
}

/// Takes `total` messages from the subscribers (acking each), as they come to either: the
/// bodies each got, in order, and whether each group's first message to it said so.
async fn take(subscribers: &mut [&mut Client], total: usize) -> Vec<Vec<(String, bool)>> {
    let mut got = vec![Vec::new(); subscribers.len()];
    let deadline = std::time::Instant::now() + ACROSS * 3;
    while got.iter().map(Vec::len).sum::<usize>() < total {
        assert!(
            std::time::Instant::now() < deadline,
            "only {:?} of {total} came",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (i, c) in subscribers.iter_mut().enumerate() {
            while let Ok(m) = c.try_recv(Duration::from_millis(20)).await {
                assert!(m.is("MESSAGE"), "{m:?}");
                let first = m.get("JMSXGroupFirstForConsumer") == Some("true");
                got[i].push((m.body_str().to_string(), first));
                c.ack(&m).await;
            }
        }
    }
    got
}

/// Which subscriber got each group, checking that each group went to one, in order from
/// `from`, with `JMSXGroupFirstForConsumer` on its first message there only (`seen`: the
/// (subscriber, group) pairs of earlier messages, added to).
fn owners(
    got: &[Vec<(String, bool)>],
    from: usize,
    seen: &mut HashSet<(usize, String)>,
) -> HashMap<String, usize> {
    let mut owner = HashMap::new();
    let mut next: HashMap<String, usize> = HashMap::new();
    for (i, bodies) in got.iter().enumerate() {
        for (body, first) in bodies {
            let (group, n) = body.split_once(':').expect("GROUP:N");
            let n: usize = n.parse().expect("N");
            let was = owner.insert(group.to_string(), i);
            assert!(
                was.is_none() || was == Some(i),
                "group {group} went to subscribers {was:?} and {i}"
            );
            let expected = next.entry(group.to_string()).or_insert(from);
            assert_eq!(n, *expected, "group {group} out of order at subscriber {i}");
            let fresh = seen.insert((i, group.to_string()));
            assert_eq!(*first, fresh, "first of {group} to {i} marked: {body}");
            *expected += 1;
        }
    }
    owner
}

/// Checks that both subscribers (0 and 1) got groups.
fn assert_shared_out(owner: &HashMap<String, usize>) {
    assert!(
        owner.values().any(|i| *i == 0) && owner.values().any(|i| *i == 1),
        "the groups were not shared out: {owner:?}"
    );
}

/// A NATS node, two edges with [`SETTING`] (and `extra`), and a `client-individual`
/// subscriber of `dest` on each (window `prefetch`), once they shared the partitions out.
struct TwoSubscribers {
    _nats: NatsCluster,
    a: Edge,
    b: Edge,
    on_a: Client,
    on_b: Client,
}

/// [`TwoSubscribers`] for test `test`; `None` when it skips (no nats-server).
async fn two_subscribers(
    test: &str,
    dest: &str,
    prefetch: &str,
    extra: &str,
) -> Option<TwoSubscribers> {
    let bin = nats_server_or_skip(&target_dir(), test)?;
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let setting = format!("{SETTING}\n{extra}");
    let a = edge(&nats, &name, &setting);
    let b = edge(&nats, &name, &setting);
    let window = [("activemq.prefetchSize", prefetch)];
    let mut on_a = client(&a).await;
    on_a.subscribe_with("s", dest, "client-individual", &window)
        .await;
    let mut on_b = client(&b).await;
    on_b.subscribe_with("s", dest, "client-individual", &window)
        .await;
    tokio::time::sleep(SETTLE).await;
    Some(TwoSubscribers {
        _nats: nats,
        a,
        b,
        on_a,
        on_b,
    })
}

#[tokio::test]
async fn cluster_message_groups_stay_on_one_subscriber_across_edges() {
    let dest = "/queue/grp.orders";
    let Some(TwoSubscribers {
        _nats,
        a,
        b: _b,
        mut on_a,
        mut on_b,
    }) = two_subscribers("cluster_message_groups", dest, "5", "").await
    else {
        return;
    };

    // 16 groups, 20 messages each, sent on edge A: each group to one subscriber, in order;
    // the groups spread over both edges' subscribers.
    let mut p = client(&a).await;
    send_groups(&mut p, dest, 16, 20, 0).await;
    let got = take(&mut [&mut on_a, &mut on_b], 16 * 20).await;
    let mut seen = HashSet::new();
    let owner = owners(&got, 0, &mut seen);
    assert_eq!(owner.len(), 16);
    assert_shared_out(&owner);
    on_a.expect_silence(Duration::from_millis(300)).await;

    // Messages without a group still go to whichever subscriber pulls.
    for n in 0..20 {
        p.send(dest, &format!("plain:{n}")).await;
    }
    p.sync().await;
    let plain = take(&mut [&mut on_a, &mut on_b], 20).await;
    assert_eq!(plain.iter().map(Vec::len).sum::<usize>(), 20);
    assert!(plain.iter().flatten().all(|(_, first)| !first), "{plain:?}");

    // The subscriber on B goes: its groups move to the one on A, in order.
    on_b.disconnect().await;
    send_groups(&mut p, dest, 16, 5, 20).await;
    let got = take(&mut [&mut on_a], 16 * 5).await;
    // (The one on A is subscriber 0 here as before.)
    let moved = owners(&got, 20, &mut seen);
    assert_eq!(moved.len(), 16);
}

#[tokio::test]
async fn cluster_message_group_keeps_its_order_when_a_subscriber_joins() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_message_group_join") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let name = cluster_name();
    let a = edge(&nats, &name, SETTING);
    let b = edge(&nats, &name, SETTING);
    let dest = "/queue/grp.join";
    let mut first = client(&a).await;
    first
        .subscribe_with(
            "s",
            dest,
            "client-individual",
            &[("activemq.prefetchSize", "3")],
        )
        .await;
    tokio::time::sleep(SETTLE).await;
    let mut p = client(&a).await;
    send_groups(&mut p, dest, 8, 10, 0).await;

    // A second subscriber joins on B while the first still holds unacknowledged messages:
    // a group moves to it only once the first settled what it was given of that group, so
    // each group's messages are still taken in order.
    let mut second = client(&b).await;
    second
        .subscribe_with(
            "s",
            dest,
            "client-individual",
            &[("activemq.prefetchSize", "3")],
        )
        .await;
    let mut order: HashMap<String, usize> = HashMap::new();
    let mut seen = HashSet::new();
    let mut taken = 0;
    let deadline = std::time::Instant::now() + ACROSS * 3;
    while taken < 80 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {taken} of 80 came"
        );
        for (i, c) in [&mut first, &mut second].into_iter().enumerate() {
            while let Ok(m) = c.try_recv(Duration::from_millis(50)).await {
                let (group, n) = m.body_str().split_once(':').expect("GROUP:N");
                let fresh = seen.insert((i, group.to_string()));
                assert_eq!(
                    m.get("JMSXGroupFirstForConsumer") == Some("true"),
                    fresh,
                    "{m:?}"
                );
                let n: usize = n.parse().expect("N");
                let expected = order.entry(group.to_string()).or_insert(0);
                assert_eq!(n, *expected, "group {group} out of order");
                *expected += 1;
                taken += 1;
                c.ack(&m).await;
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    // Shared out by now: the next messages reach both.
    send_groups(&mut p, dest, 8, 5, 10).await;
    let got = take(&mut [&mut first, &mut second], 40).await;
    let owner = owners(&got, 10, &mut seen);
    assert_shared_out(&owner);
}

#[tokio::test]
async fn cluster_message_group_nack_and_exclusive_subscriber() {
    let dest = "/queue/grp.nack";
    let Some(TwoSubscribers {
        _nats,
        a,
        b,
        mut on_a,
        mut on_b,
    }) = two_subscribers("cluster_message_group_nack", dest, "1", "").await
    else {
        return;
    };

    // A NACKed message of a group comes back to the group's subscriber, before the group's
    // later messages.
    let mut p = client(&a).await;
    send_groups(&mut p, dest, 1, 3, 0).await;
    let (mut owner, mut other) = match on_a.try_recv(Duration::from_secs(5)).await {
        Ok(m) => {
            assert_eq!(m.body_str(), "g0:0", "{m:?}");
            on_a.nack(&m).await;
            (on_a, on_b)
        }
        Err(_) => {
            let m = on_b.recv_within(ACROSS).await;
            assert_eq!(m.body_str(), "g0:0", "{m:?}");
            on_b.nack(&m).await;
            (on_b, on_a)
        }
    };
    let again = owner.recv_within(ACROSS).await;
    assert_eq!(again.body_str(), "g0:0", "{again:?}");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");
    owner.ack(&again).await;
    for n in 1..3 {
        let m = owner.recv_within(ACROSS).await;
        assert_eq!(m.body_str(), format!("g0:{n}"));
        owner.ack(&m).await;
    }
    other.expect_silence(Duration::from_millis(300)).await;

    // An exclusive subscriber takes every group while it is the active one.
    let mut exclusive = client(&b).await;
    exclusive
        .subscribe_with(
            "x",
            dest,
            "client-individual",
            &[("activemq.exclusive", "true")],
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    send_groups(&mut p, dest, 8, 3, 3).await;
    let got = take(&mut [&mut exclusive], 24).await;
    let mut seen = HashSet::new();
    assert_eq!(owners(&got, 3, &mut seen).len(), 8);
    owner.expect_silence(Duration::from_millis(300)).await;
    other.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn cluster_message_groups_of_a_killed_edge_go_to_the_others() {
    let dest = "/queue/grp.killed";
    let test = "cluster_message_groups_killed";
    let Some(TwoSubscribers {
        _nats,
        mut a,
        b,
        mut on_a,
        mut on_b,
    }) = two_subscribers(test, dest, "5", "ack_wait_ms = 3000").await
    else {
        return;
    };

    // Sent on B; the subscriber on A takes its groups' first messages and never acks.
    let mut p = client(&b).await;
    send_groups(&mut p, dest, 8, 10, 0).await;
    let held = on_a.recv_within(ACROSS).await;
    assert!(held.is("MESSAGE"), "{held:?}");
    a.kill_hard();

    // Its partitions lapse (15 s) and its messages come back (ack_wait): B gets every one.
    let mut bodies = HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while bodies.len() < 80 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 80 reached B",
            bodies.len()
        );
        if let Ok(m) = on_b.try_recv(Duration::from_millis(200)).await {
            assert!(m.is("MESSAGE"), "{m:?}");
            assert!(
                bodies.insert(m.body_str().to_string()),
                "delivered twice to B: {m:?}"
            );
            on_b.ack(&m).await;
        }
    }
}

#[tokio::test]
async fn cluster_grouped_messages_do_not_wait_behind_an_ungrouped_backlog() {
    let Some(bin) = nats_server_or_skip(&target_dir(), "cluster_message_groups_backlog") else {
        return;
    };
    let nats = NatsCluster::start(&bin, 1);
    let a = edge(&nats, &cluster_name(), SETTING);
    let dest = "/queue/grp.backlog";
    let mut p = client(&a).await;
    for n in 0..60 {
        p.send(dest, &format!("plain:{n}")).await;
    }
    send_groups(&mut p, dest, 4, 1, 0).await;

    // The subscription takes from the queue's own consumer and its partitions in turn.
    let mut c = client(&a).await;
    c.subscribe_with(
        "s",
        dest,
        "client-individual",
        &[("activemq.prefetchSize", "2")],
    )
    .await;
    let mut grouped_at = Vec::new();
    for i in 0..64 {
        let m = c.recv_within(ACROSS).await;
        assert!(m.is("MESSAGE"), "{m:?}");
        if m.body_str().starts_with('g') {
            grouped_at.push(i);
        }
        c.ack(&m).await;
    }
    assert_eq!(grouped_at.len(), 4);
    assert!(
        grouped_at[0] < 40,
        "the grouped messages came only at {grouped_at:?}"
    );
}
