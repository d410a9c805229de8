//! The message store's limit holds whatever the SEND (transactions, a topic's durable
//! subscriptions), and a store that cannot write (a full disk) refuses persistent SENDs,
//! carries on with everything else, and recovers when space is back, losing nothing receipted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

fn persistent(dest: &str, body: &str) -> Frame {
    send_frame(dest, &[("persistent", "true")], body)
}

/// Writes `frame` with a receipt; the RECEIPT or the ERROR that answers it.
async fn reply_to(c: &mut Client, frame: Frame) -> Frame {
    let id = c.next_receipt();
    c.write(&frame.h("receipt", &id)).await;
    c.recv().await
}

fn is_store_full(frame: &Frame) -> bool {
    frame.is("ERROR") && frame.must("message").contains("store is full")
}

/// Persistent SENDs in a transaction hold their room in the store from the SEND on: the
/// transaction cannot journal past `max_bytes` at COMMIT (a 100 kB limit once ended with
/// 404 kB live).
#[tokio::test]
async fn a_transaction_cannot_take_the_store_past_its_limit() {
    let broker = Broker::with_config("[store]\nmax_bytes = 100000\n");
    let dest = format!("/queue/{}", unique("tx-store"));
    let mut by = Bystander::new(&broker).await;
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(Frame::new("BEGIN").h("transaction", "t")).await;
    let body = "x".repeat(20_000);
    let mut accepted = 0;
    let refusal = loop {
        let id = c.next_receipt();
        c.write(
            &persistent(&dest, &body)
                .h("transaction", "t")
                .h("receipt", &id),
        )
        .await;
        let reply = c.recv().await;
        if reply.is("RECEIPT") {
            accepted += 1;
            assert!(accepted <= 5, "{accepted} x 20 kB held for a 100 kB store");
            continue;
        }
        break reply;
    };
    assert!(is_store_full(&refusal), "{refusal:?}");
    assert!((3..=5).contains(&accepted), "{accepted}");
    by.check().await;
}

/// A topic message is journaled once per durable subscription: it is admitted for every copy.
#[tokio::test]
async fn a_topic_message_is_admitted_for_each_durable_copy() {
    let broker = Broker::with_config("[store]\nmax_bytes = 100000\n");
    let topic = format!("/topic/{}", unique("fanout-store"));
    for n in 0..40 {
        let connect = Client::connect_frame(Version::V12).h("client-id", &format!("d{n}"));
        let (mut c, _) = Client::connect_with(broker.addr, connect).await;
        c.subscribe_with("s", &topic, "auto", &[("durable", "true")])
            .await;
        c.disconnect().await;
    }
    let mut producer = broker.client(Version::V12).await;
    let reply = reply_to(&mut producer, persistent(&topic, &"y".repeat(10_000))).await;
    assert!(is_store_full(&reply), "40 copies of 10 kB: {reply:?}");
}

/// A tmpfs of its own (the only way to fill a disk here), unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    /// `None` when this environment may not mount (the test then says so and stops).
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&mount)
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { dir, mount })
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.mount)
            .status()
            .unwrap();
        assert!(status.success(), "remount failed");
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = &self.dir;
    }
}

#[tokio::test]
async fn a_full_disk_refuses_persistent_sends_and_recovers_when_space_is_back() {
    let Some(disk) = SmallDisk::mount("1m") else {
        eprintln!("NOT RUN: mounting a tmpfs is not permitted here (the store's recovery is also covered by unit tests with injected failures)");
        return;
    };
    let data = disk.path().join("data");
    let dest = format!("/queue/{}", unique("disk"));
    let mut broker = Broker::with_data_dir("", &data);
    let mut by = Bystander::new(&broker).await;
    let mut producer = broker.client(Version::V12).await;
    let body = "z".repeat(8_000);
    // Fill the disk: receipted messages are on it; the first one that does not fit is held.
    let mut receipted = Vec::new();
    let held = loop {
        let id = producer.next_receipt();
        producer
            .write(&persistent(&dest, &format!("{}-{body}", receipted.len())).h("receipt", &id))
            .await;
        match producer.try_recv(Duration::from_secs(3)).await {
            Ok(reply) if reply.is("RECEIPT") => receipted.push(id),
            Ok(reply) => panic!("while filling: {reply:?}"),
            Err(_) => break id, // its record could not be written: no RECEIPT yet
        }
        assert!(receipted.len() < 200, "the 1 MiB disk never filled");
    };
    assert!(receipted.len() > 10, "{}", receipted.len());

    // Meanwhile persistent SENDs are refused with a clear ERROR, and the rest carries on.
    let mut other = broker.client(Version::V12).await;
    let refused = reply_to(&mut other, persistent(&dest, "no room")).await;
    assert!(
        refused.is("ERROR") && refused.must("message").contains("cannot write"),
        "{refused:?}"
    );
    by.check().await;

    // Space comes back: the held RECEIPT comes, persistent SENDs are taken again.
    disk.resize("16m");
    let reply = producer.recv_within(Duration::from_secs(10)).await;
    assert!(
        reply.is("RECEIPT") && reply.get("receipt-id") == Some(held.as_str()),
        "{reply:?}"
    );
    let mut after = broker.client(Version::V12).await;
    let reply = reply_to(&mut after, persistent(&dest, "after")).await;
    assert!(reply.is("RECEIPT"), "{reply:?}");

    // Nothing receipted was lost: all of it is there after a crash.
    broker.kill_hard();
    drop((producer, other, after, by));
    let broker = Broker::with_data_dir("", &data);
    let mut consumer = broker.client(Version::V12).await;
    consumer.subscribe("s", &dest, "auto").await;
    let expected = receipted.len() + 2;
    let got = consumer.msgs(expected).await;
    for (n, m) in got.iter().take(receipted.len()).enumerate() {
        assert!(m.body_str().starts_with(&format!("{n}-")), "{n}: {m:?}");
    }
    assert_eq!(got[expected - 1].body_str(), "after");
    consumer.expect_silence(QUIET).await;
}
