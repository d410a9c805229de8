use super::*;
use crate::budget::Charge;
use crate::router::{Queue, QueueLimits};

fn config() -> ScheduleConfig {
    ScheduleConfig {
        max_messages: 10,
        max_per_principal: 4,
        ..ScheduleConfig::default()
    }
}

fn scheduler() -> Scheduler {
    Scheduler::new(config(), None, MemoryBudget::unlimited())
}

fn message(seq: u64) -> Arc<Message> {
    Arc::new(Message {
        destination: Bytes::from_static(b"/queue/s"),
        headers: vec![],
        body: Bytes::from(format!("m{seq}")),
        id_prefix: Arc::from("p"),
        id_seq: seq,
        expires_at: None,
        persistent: false,
        props: Default::default(),
        charge: Charge::default(),
    })
}

fn queue() -> Arc<Queue> {
    Arc::new(Queue::new(
        Bytes::from_static(b"/queue/s"),
        QueueLimits::messages(100),
    ))
}

fn at(deliver_at: u64) -> Schedule {
    Schedule {
        deliver_at,
        period_ms: 0,
        repeat: 0,
    }
}

fn bodies(due: &[Due]) -> Vec<String> {
    due.iter()
        .map(|d| String::from_utf8_lossy(&d.message.body).into_owned())
        .collect()
}

#[test]
fn messages_leave_in_due_order_and_not_before() {
    let s = scheduler();
    let q = queue();
    for (seq, due) in [(1, 300), (2, 100), (3, 200), (4, 100)] {
        s.schedule(
            vec![(Destination::Queue(q.clone()), message(seq))],
            at(due),
            "alice",
            false,
        )
        .unwrap();
    }
    let (due, next) = s.take_due(99, BATCH);
    assert!(due.is_empty());
    assert_eq!(next, Some(100));
    let (due, next) = s.take_due(200, BATCH);
    assert_eq!(
        bodies(&due),
        ["m2", "m4", "m3"],
        "by due time, then arrival"
    );
    assert_eq!(next, Some(300));
    let (due, next) = s.take_due(1000, 1);
    assert_eq!(bodies(&due), ["m1"]);
    assert_eq!(next, None);
    assert!(s.is_empty());
}

#[test]
fn caps_refuse_past_the_principal_and_global_limits() {
    let s = scheduler();
    let q = queue();
    let plan = |n: u64| {
        (0..n)
            .map(|i| (Destination::Queue(q.clone()), message(i)))
            .collect::<Vec<_>>()
    };
    s.schedule(plan(4), at(10), "alice", true).unwrap();
    assert_eq!(
        s.schedule(plan(1), at(10), "alice", true),
        Err(ScheduleError::PrincipalFull("alice".into(), 4))
    );
    s.schedule(plan(4), at(10), "bob", true).unwrap();
    assert_eq!(
        s.schedule(plan(3), at(10), "carol", true),
        Err(ScheduleError::Full(10))
    );
    assert_eq!(s.len(), 8, "a refused plan takes nothing");
    // A COMMIT schedules what its SENDs were admitted with.
    s.schedule(plan(1), at(10), "alice", false).unwrap();
    // Delivered messages free their places once published.
    let (due, _) = s.take_due(10, BATCH);
    assert_eq!(due.len(), 9);
    assert!(
        s.check_room("alice", 1).is_err(),
        "taken but not yet published"
    );
    for due in due {
        s.delivered(due.entry.unwrap(), 10);
    }
    s.check_room("alice", 4).unwrap();
}

#[test]
fn repeat_n_gives_n_plus_one_deliveries_a_period_apart_with_their_own_ids() {
    let s = scheduler();
    let q = queue();
    let schedule = Schedule {
        deliver_at: 1000,
        period_ms: 100,
        repeat: 2,
    };
    s.schedule(
        vec![(Destination::Queue(q.clone()), message(7))],
        schedule,
        "alice",
        true,
    )
    .unwrap();
    let mut ids = Vec::new();
    for now in [1000, 1100, 1200] {
        let (mut due, _) = s.take_due(now, BATCH);
        assert_eq!(due.len(), 1, "one delivery at {now}");
        let due = due.pop().unwrap();
        let mut id = bytes::BytesMut::new();
        due.message.write_id(&mut id);
        ids.push(String::from_utf8_lossy(&id).into_owned());
        // Published: the next repeat goes back in.
        s.delivered(due.entry.unwrap(), now);
        assert_eq!(s.take_due(now, BATCH).0.len(), 0, "none early after {now}");
    }
    assert_eq!(ids, ["p-7", "p.r1-7", "p.r2-7"]);
    assert!(s.is_empty(), "N + 1 deliveries, then gone");
    s.check_room("alice", 4).unwrap();
}

#[test]
fn a_repeat_missed_while_down_comes_a_period_after_now_not_in_a_burst() {
    let s = scheduler();
    let q = queue();
    let schedule = Schedule {
        deliver_at: 1000,
        period_ms: 100,
        repeat: 5,
    };
    s.schedule(
        vec![(Destination::Queue(q), message(1))],
        schedule,
        "a",
        true,
    )
    .unwrap();
    let (mut due, next) = s.take_due(5000, BATCH);
    assert_eq!(due.len(), 1);
    assert_eq!(next, None, "out of the heap until published");
    let due = due.pop().unwrap();
    s.delivered(due.entry.unwrap(), 5000);
    assert_eq!(s.take_due(5000, BATCH).1, Some(5100));
}

#[tokio::test]
async fn a_due_message_enters_its_queue() {
    let s = Arc::new(scheduler());
    let q = queue();
    s.schedule(
        vec![(Destination::Queue(q.clone()), message(1))],
        at(5),
        "a",
        true,
    )
    .unwrap();
    let (due, _) = s.take_due(now_ms(), BATCH);
    for due in due {
        s.deliver(due, Duration::from_secs(1));
    }
    assert_eq!(q.depth(), 1);
    assert_eq!(s.stats.delivered.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_full_queue_gets_its_message_later_without_holding_up_the_driver() {
    let s = Arc::new(scheduler());
    let full = Arc::new(Queue::new(
        Bytes::from_static(b"/queue/full"),
        QueueLimits::messages(1),
    ));
    let other = queue();
    full.publish(message(0)).await;
    s.schedule(
        vec![
            (Destination::Queue(full.clone()), message(1)),
            (Destination::Queue(other.clone()), message(2)),
        ],
        at(5),
        "a",
        true,
    )
    .unwrap();
    let (due, _) = s.take_due(now_ms(), BATCH);
    for due in due {
        s.deliver(due, Duration::from_secs(1));
    }
    assert_eq!(other.depth(), 1, "the other queue got its message at once");
    assert_eq!(full.depth(), 1, "the full queue waits for room");
    full.delete();
}

#[test]
fn a_due_message_the_cluster_did_not_take_is_kept_and_tried_again_later() {
    let s = scheduler();
    let q = queue();
    let schedule = Schedule {
        deliver_at: 1000,
        period_ms: 100,
        repeat: 1,
    };
    s.schedule(
        vec![(Destination::Queue(q.clone()), message(3))],
        schedule,
        "alice",
        true,
    )
    .unwrap();
    s.schedule(
        vec![(Destination::Queue(q), message(4))],
        at(1000),
        "alice",
        true,
    )
    .unwrap();
    let id_of = |due: &Due| {
        let mut id = bytes::BytesMut::new();
        due.message.write_id(&mut id);
        String::from_utf8_lossy(&id).into_owned()
    };
    let now = now_ms();
    let (due, _) = s.take_due(1000, BATCH);
    let first_ids: Vec<String> = due.iter().map(id_of).collect();
    for due in due {
        s.published(Published::Unavailable, due.entry.unwrap());
    }
    assert_eq!(s.stats.retried.load(Ordering::Relaxed), 2);
    assert_eq!(s.stats.delivered.load(Ordering::Relaxed), 0);
    assert_eq!(s.len(), 2, "both back in the heap");
    assert!(
        s.check_room("alice", 3).is_err(),
        "still counted against alice"
    );
    // Not before a second has passed, then the same deliveries with the same ids.
    let (due, next) = s.take_due(now, BATCH);
    assert!(due.is_empty());
    assert!(next.unwrap() >= now + 1000, "{next:?}");
    let (due, _) = s.take_due(now + 60_000, BATCH);
    assert_eq!(due.iter().map(id_of).collect::<Vec<_>>(), first_ids);
    // Refused again: the pause doubles.
    let later = now_ms();
    for due in due {
        s.published(Published::Unavailable, due.entry.unwrap());
    }
    let (due, next) = s.take_due(later + 1999, BATCH);
    assert!(due.is_empty(), "two seconds the second time");
    assert!(next.unwrap() >= later + 2000);
    // Taken at last: the single one is gone, the repeating one comes back for its repeat.
    let (due, _) = s.take_due(later + 60_000, BATCH);
    for due in due {
        s.published(Published::Queued, due.entry.unwrap());
    }
    assert_eq!(s.stats.delivered.load(Ordering::Relaxed), 2);
    assert_eq!(s.len(), 1, "the repeat");
    s.check_room("alice", 3).unwrap();
}
