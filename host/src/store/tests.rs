//! Store tests on a temporary directory: recovery, torn tails, compaction, limits, locking.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::router::Message;

fn settings(dir: &Path) -> StoreSettings {
    StoreSettings {
        dir: dir.to_path_buf(),
        fsync: FsyncPolicy::Batch,
        fsync_interval: Duration::from_millis(10),
        max_bytes: 1 << 30,
        segment_bytes: 64 << 20,
    }
}

fn message(seq: u64, body: &str) -> Message {
    Message {
        destination: Bytes::from_static(b"/queue/q"),
        headers: vec![(
            Bytes::from_static(b"persistent"),
            Bytes::from_static(b"true"),
        )],
        body: Bytes::from(body.to_string()),
        id_prefix: Arc::from("s-1"),
        id_seq: seq,
        expires_at: None,
        persistent: true,
        props: Default::default(),
        charge: Default::default(),
    }
}

const Q: Bytes = Bytes::from_static(b"/queue/q");

/// Waits until everything appended is durable.
fn wait_durable(store: &Store) {
    let target = store.appended();
    for _ in 0..2000 {
        if store.durable() >= target {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("store never became durable up to {target}");
}

fn bodies(recovered: &Recovered) -> Vec<String> {
    recovered
        .messages
        .iter()
        .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
        .collect()
}

#[test]
fn unsettled_messages_and_durable_subscriptions_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let first_ids;
    {
        let (store, recovered) = Store::open(&settings(dir.path())).unwrap();
        assert!(recovered.messages.is_empty());
        let a = store.enqueue(&Q, &message(1, "a"));
        let b = store.enqueue(&Q, &message(2, "b"));
        let c = store.enqueue(&Q, &message(3, "c"));
        store.durable_created(
            &Bytes::from_static(b"durable:c/s"),
            &Bytes::from_static(b"/topic/t"),
        );
        store.durable_created(
            &Bytes::from_static(b"durable:c/gone"),
            &Bytes::from_static(b"/topic/t"),
        );
        wait_durable(&store);
        store.settle(b);
        store.durable_removed(&Bytes::from_static(b"durable:c/gone"));
        wait_durable(&store);
        first_ids = (a, c);
        store.close();
    }
    let (store, recovered) = Store::open(&settings(dir.path())).unwrap();
    assert_eq!(bodies(&recovered), ["a", "c"]);
    let ids: Vec<u64> = recovered.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, [first_ids.0, first_ids.1]);
    let m = &recovered.messages[0];
    assert_eq!(m.id_prefix.as_ref(), b"s-1");
    assert_eq!(m.id_seq, 1);
    assert_eq!(m.headers.len(), 1);
    assert_eq!(
        recovered.durables,
        [RecoveredDurable {
            vhost: Bytes::new(),
            queue: Bytes::from_static(b"durable:c/s"),
            topic: Bytes::from_static(b"/topic/t")
        }]
    );
    // Ids continue after the recovered ones.
    assert!(store.enqueue(&Q, &message(4, "d")) > first_ids.1);
}

/// Handles of two vhosts write to one journal; what each wrote comes back under its vhost,
/// and a durable subscription of the same name in two vhosts is two subscriptions (removing
/// one leaves the other).
#[test]
fn records_come_back_into_their_vhost() {
    let dir = tempfile::tempdir().unwrap();
    let durable = Bytes::from_static(b"durable:c/s");
    let topic = Bytes::from_static(b"/topic/t");
    {
        let (store, _) = Store::open(&settings(dir.path())).unwrap();
        let tenant = store.in_vhost(Bytes::from_static(b"tenant"));
        store.enqueue(&Q, &message(1, "default"));
        tenant.enqueue(&Q, &message(2, "tenant"));
        store.durable_created(&durable, &topic);
        tenant.durable_created(&durable, &topic);
        let gone = Bytes::from_static(b"durable:c/gone");
        tenant.durable_created(&gone, &topic);
        store.durable_created(&gone, &topic);
        tenant.durable_removed(&gone);
        drop(tenant);
        wait_durable(&store);
        store.close();
    }
    let (_store, recovered) = Store::open(&settings(dir.path())).unwrap();
    let placed: Vec<(&[u8], &[u8])> = recovered
        .messages
        .iter()
        .map(|m| (&m.vhost[..], &m.body[..]))
        .collect();
    assert_eq!(
        placed,
        [(&b""[..], &b"default"[..]), (b"tenant", b"tenant")]
    );
    let durables: Vec<(&[u8], &[u8])> = recovered
        .durables
        .iter()
        .map(|d| (&d.vhost[..], &d.queue[..]))
        .collect();
    assert_eq!(
        durables,
        [
            (&b""[..], &b"durable:c/gone"[..]),
            (b"", b"durable:c/s"),
            (b"tenant", b"durable:c/s")
        ]
    );
}

#[test]
fn a_message_settled_in_the_same_batch_is_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&settings(dir.path())).unwrap();
    // Both records go into the inbox under one lock, so they land in one batch.
    let mut inbox = store.core.shared.inbox();
    let id = store.core.next_id.fetch_add(1, Ordering::Relaxed);
    inbox.ops.push(Op::Enqueue {
        id,
        framed: frame(&Record::Settle { id: 0 }),
        body: Bytes::new(),
    });
    inbox.ops.push(Op::Settle { id });
    inbox.appended += 2;
    store
        .core
        .shared
        .appended
        .store(inbox.appended, Ordering::Release);
    drop(inbox);
    store.core.shared.wake.notify_one();
    wait_durable(&store);
    assert_eq!(store.stats().cancelled.load(Ordering::Relaxed), 1);
    assert_eq!(store.stats().bytes_written.load(Ordering::Relaxed), 0);
}

#[test]
fn one_sync_covers_many_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::open(&settings(dir.path())).unwrap();
    let store2 = store.clone();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store2.clone();
            std::thread::spawn(move || {
                for i in 0..500 {
                    store.enqueue(&Q, &message(t * 1000 + i, "x"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    wait_durable(&store);
    let fsyncs = store.stats().fsyncs.load(Ordering::Relaxed);
    let written = store.stats().records_written.load(Ordering::Relaxed);
    assert_eq!(written, 2000);
    assert!(
        fsyncs >= 1 && fsyncs < written,
        "{fsyncs} syncs for {written} records"
    );
}

/// Appends `n` bytes of garbage, or cuts `n` bytes, at the end of the newest segment.
fn damage_tail(dir: &Path, cut: Option<u64>, garbage: &[u8]) {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    segments.sort();
    // The newest segment with records (the last one is the empty head of the last run).
    let target = segments
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > record::MAGIC.len() as u64)
        .unwrap()
        .clone();
    // Remove newer empty heads so the damaged one is the last segment.
    for p in segments.iter().filter(|p| **p > target) {
        std::fs::remove_file(p).unwrap();
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&target)
        .unwrap();
    if let Some(cut) = cut {
        let len = file.metadata().unwrap().len();
        file.set_len(len - cut).unwrap();
    }
    let mut file = file;
    file.write_all(garbage).unwrap();
}

fn three_messages(dir: &Path) {
    let (store, _) = Store::open(&settings(dir)).unwrap();
    for (i, body) in ["one", "two", "three"].iter().enumerate() {
        store.enqueue(&Q, &message(i as u64, body));
        wait_durable(&store);
    }
    store.close();
}

#[test]
fn a_torn_last_record_is_truncated_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    three_messages(dir.path());
    damage_tail(dir.path(), Some(5), b"");
    let (store, recovered) = Store::open(&settings(dir.path())).unwrap();
    assert_eq!(bodies(&recovered), ["one", "two"]);
    assert!(recovered.truncated_bytes > 0);
    // The store goes on working after the repair.
    store.enqueue(&Q, &message(9, "four"));
    wait_durable(&store);
    store.close();
    drop(store);
    let (_, recovered) = Store::open(&settings(dir.path())).unwrap();
    assert_eq!(bodies(&recovered), ["one", "two", "four"]);
    assert_eq!(recovered.truncated_bytes, 0);
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    three_messages(dir.path());
    damage_tail(dir.path(), None, &[0xff; 37]);
    let (_, recovered) = Store::open(&settings(dir.path())).unwrap();
    assert_eq!(bodies(&recovered), ["one", "two", "three"]);
    assert_eq!(recovered.truncated_bytes, 37);
}

#[test]
fn a_flipped_byte_in_the_last_record_drops_only_that_record() {
    let dir = tempfile::tempdir().unwrap();
    three_messages(dir.path());
    // Cut the last 3 bytes and put back different ones: same length, bad checksum.
    damage_tail(dir.path(), Some(3), b"XYZ");
    let (_, recovered) = Store::open(&settings(dir.path())).unwrap();
    assert_eq!(bodies(&recovered), ["one", "two"]);
}

#[test]
fn disk_use_follows_live_messages() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        segment_bytes: 8 * 1024,
        ..settings(dir.path())
    };
    let body = "x".repeat(500);
    let keeper;
    {
        let (store, _) = Store::open(&settings).unwrap();
        keeper = store.enqueue(&Q, &message(0, "long-lived"));
        wait_durable(&store);
        for i in 1..2000 {
            let id = store.enqueue(&Q, &message(i, &body));
            wait_durable(&store);
            store.settle(id);
        }
        wait_durable(&store);
        // Let the writer take one more turn so the last settle is accounted.
        store.enqueue(&Q, &message(5000, "tail"));
        wait_durable(&store);
        let disk = store.stats().disk_bytes.load(Ordering::Relaxed);
        let segments = store.stats().segments.load(Ordering::Relaxed);
        // ~1 MB went through; what stays is the two live messages and a few segments.
        assert!(
            disk < 6 * 8 * 1024,
            "{disk} bytes on disk in {segments} segments"
        );
        assert!(store.stats().relocated.load(Ordering::Relaxed) >= 1);
        store.close();
    }
    let (_, recovered) = Store::open(&settings).unwrap();
    assert_eq!(bodies(&recovered), ["long-lived", "tail"]);
    assert_eq!(recovered.messages[0].id, keeper);
}

#[test]
fn a_full_store_refuses_and_reopens_room_when_settled() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        max_bytes: 2_000,
        ..settings(dir.path())
    };
    let (store, _) = Store::open(&settings).unwrap();
    let body = "y".repeat(800);
    assert!(store.reserve(900).is_ok());
    let a = store.enqueue(&Q, &message(1, &body));
    let _b = store.enqueue(&Q, &message(2, &body));
    wait_durable(&store);
    let refused = store.reserve(900).unwrap_err();
    assert!(
        matches!(refused, Refused::Full { limit: 2_000, .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("full"));
    store.settle(a);
    store.enqueue(&Q, &message(3, "z")); // a turn of the writer after the settle
    wait_durable(&store);
    assert!(store.reserve(900).is_ok());
}

#[test]
fn reservations_hold_room_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        max_bytes: 2_000,
        ..settings(dir.path())
    };
    let (store, _) = Store::open(&settings).unwrap();
    // A transaction's persistent SENDs (or a topic message's copies for its durable
    // subscriptions) hold their room from admission on, before anything is journaled.
    let first = store.reserve(900).unwrap();
    let second = store.reserve(900).unwrap();
    assert!(matches!(store.reserve(900), Err(Refused::Full { .. })));
    drop(first); // aborted
    let third = store.reserve(900).unwrap();
    drop((second, third));
    assert!(store.reserve(1_900).is_ok());
}

#[test]
fn a_second_broker_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = Store::open(&settings(dir.path())).unwrap();
    let err = Store::open(&settings(dir.path())).unwrap_err();
    assert!(matches!(err, OpenError::Locked(_)), "{err}");
    assert!(err.to_string().contains("in use"));
}

#[test]
fn interval_and_never_policies_release_receipts_without_a_sync_per_batch() {
    for (fsync, max_syncs) in [(FsyncPolicy::Interval, 10), (FsyncPolicy::Never, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let settings = StoreSettings {
            fsync,
            fsync_interval: Duration::from_millis(200),
            ..settings(dir.path())
        };
        let (store, _) = Store::open(&settings).unwrap();
        for i in 0..50 {
            store.enqueue(&Q, &message(i, "x"));
            wait_durable(&store); // durable = written, for these policies
        }
        let syncs = store.stats().fsyncs.load(Ordering::Relaxed);
        assert!(
            syncs <= max_syncs,
            "{fsync:?}: {syncs} syncs for 50 batches"
        );
        store.close();
        drop(store);
        let (_, recovered) = Store::open(&settings).unwrap();
        assert_eq!(recovered.messages.len(), 50, "{fsync:?}");
    }
}

#[test]
fn a_data_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Store::open(&settings(dir.path())).unwrap_err();
    assert!(matches!(err, OpenError::NotPrivate { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("0777") && text.contains("write"), "{text}");
    assert!(check_data_dir(dir.path()).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written in it"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
    assert!(
        Store::open(&settings(dir.path())).is_err(),
        "group-writable"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Store::open(&settings(dir.path())).unwrap();
}

#[test]
fn a_missing_data_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new").join("data");
    assert!(check_data_dir(&dir).is_ok(), "missing is fine");
    let (_store, _) = Store::open(&settings(&dir)).unwrap();
    for d in [tmp.path().join("new"), dir.clone()] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", d.display());
    }
    let lock = std::fs::metadata(dir.join("LOCK")).unwrap();
    assert_eq!(lock.permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_linked_data_directory_or_lock_file_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = Store::open(&settings(&link)).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);

    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::write(&elsewhere, b"keep me").unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("LOCK")).unwrap();
    assert!(Store::open(&settings(&dir)).is_err());
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep me");
}

/// Owned by another user, for real: possible when the tests run as root.
#[test]
fn a_data_directory_of_another_user_is_refused() {
    if crate::private_fs::euid() != 0 {
        return; // private_fs's judge tests cover the rule
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
    let err = Store::open(&settings(dir.path())).unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
}

#[test]
fn a_scheduled_record_comes_back_with_its_schedule_and_a_replaced_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let schedule = |delivered: u32| record::ScheduledFields {
        deliver_at: 5_000 + u64::from(delivered) * 100,
        period_ms: 100,
        repeats_left: 3 - delivered,
        delivered,
        owner: Bytes::from_static(b"alice"),
    };
    {
        let (store, _) = Store::open(&settings(dir.path())).unwrap();
        let first = store.enqueue_scheduled(&Q, &message(1, "tick"), &schedule(0));
        wait_durable(&store);
        store.replace_scheduled(first, &Q, &message(1, "tick"), &schedule(1));
        store.enqueue(&Q, &message(2, "plain"));
        wait_durable(&store);
        store.close();
    }
    let (_store, recovered) = Store::open(&settings(dir.path())).unwrap();
    assert_eq!(bodies(&recovered), ["tick", "plain"]);
    assert_eq!(recovered.messages[0].schedule, Some(schedule(1)));
    assert_eq!(recovered.messages[1].schedule, None);
}

/// Plugins' kv entries: the last put of each (plugin, vhost, key) comes back, deletes and
/// clears hold, and compaction keeps live entries while the history of a key that changes
/// all the time (a counter) does not pin disk.
#[test]
fn kv_entries_survive_compaction_and_only_the_last_value_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        segment_bytes: 8 * 1024,
        ..settings(dir.path())
    };
    {
        let (store, _) = Store::open(&settings).unwrap();
        store.kv_put(b"", b"p", b"kept", b"long-lived", 0);
        store.kv_put(b"tenant", b"p", b"kept", b"in tenant", 7);
        store.kv_put(b"", b"gone", b"k", b"v", 0);
        store.kv_put(b"", b"p", b"deleted", b"v", 0);
        store.kv_delete(b"", b"p", b"deleted");
        store.kv_clear(b"gone");
        let value = "x".repeat(400);
        for i in 0..2000u32 {
            store.kv_put(b"", b"p", b"counter", format!("{i}{value}").as_bytes(), 0);
            wait_durable(&store);
        }
        store.kv_put(b"", b"p", b"counter", b"last", 0);
        wait_durable(&store);
        store.kv_put(b"", b"p", b"tail", b"t", 0);
        wait_durable(&store);
        let disk = store.stats().disk_bytes.load(Ordering::Relaxed);
        assert!(
            disk < 6 * 8 * 1024,
            "{disk} bytes on disk for 4 live entries"
        );
        assert!(store.stats().relocated.load(Ordering::Relaxed) >= 1);
        store.close();
    }
    let (_, recovered) = Store::open(&settings).unwrap();
    type Entry<'a> = (&'a [u8], &'a [u8], &'a [u8], u64);
    let entries: Vec<Entry<'_>> = recovered
        .kv
        .iter()
        .map(|e| (&e.vhost[..], &e.key[..], &e.value[..], e.expires_at))
        .collect();
    assert_eq!(
        entries,
        [
            (&b""[..], &b"counter"[..], &b"last"[..], 0),
            (b"", b"kept", b"long-lived", 0),
            (b"", b"tail", b"t", 0),
            (b"tenant", b"kept", b"in tenant", 7),
        ]
    );
    assert!(recovered.kv.iter().all(|e| &e.plugin[..] == b"p"));
}
