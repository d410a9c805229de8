//! Persistent messages and durable subscriptions across `kill -9`: what was receipted comes
//! back, what was acknowledged does not, and the journal recovers from a torn tail.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::harness::*;

fn persistent_send(dest: &str, body: &str) -> Frame {
    Frame::new("SEND")
        .h("destination", dest)
        .h("persistent", "true")
        .body(body)
}

/// Drains `dest` on a fresh connection: every body, until `quiet` passes without a message.
async fn drain(broker: &Broker, dest: &str, quiet: Duration) -> Vec<Frame> {
    let mut c = broker.client(Version::V12).await;
    c.subscribe("drain", dest, "auto").await;
    let mut out = Vec::new();
    loop {
        match c.try_recv(quiet).await {
            Ok(f) if f.is("MESSAGE") => out.push(f),
            Ok(f) => panic!("draining {dest}: unexpected {f:?}"),
            Err(RecvError::Timeout) => break,
            Err(e) => panic!("draining {dest}: {e:?}"),
        }
    }
    out
}

fn bodies(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.body_str().to_string()).collect()
}

#[tokio::test]
async fn receipted_persistent_messages_survive_kill_9_and_acked_ones_do_not_return() {
    let data = tempfile::tempdir().unwrap();
    let dest = format!("/queue/{}", unique("durable"));
    let mut broker = Broker::with_data_dir("", data.path());
    let mut producer = broker.client(Version::V12).await;
    for i in 0..40 {
        producer
            .roundtrip(persistent_send(&dest, &format!("p{i}")))
            .await;
    }
    for i in 0..5 {
        producer.send_r(&dest, &format!("transient{i}")).await;
    }
    let mut consumer = broker.client(Version::V12).await;
    consumer
        .subscribe_with("c", &dest, "client-individual", &[("prefetch-count", "10")])
        .await;
    let mut ids = HashMap::new();
    for _ in 0..10 {
        let m = consumer.msg().await;
        ids.insert(m.body_str().to_string(), m.must("message-id").to_string());
        consumer.ack(&m).await;
    }
    // p10..p19 are delivered, not acked, when the broker dies.
    let unacked = consumer.msgs(10).await;
    ids.extend(
        unacked
            .iter()
            .map(|m| (m.body_str().to_string(), m.must("message-id").to_string())),
    );
    broker.kill_hard();

    let broker = Broker::with_data_dir("", data.path());
    let back = drain(&broker, &dest, Duration::from_millis(500)).await;
    let expected: Vec<String> = (10..40).map(|i| format!("p{i}")).collect();
    assert_eq!(
        bodies(&back),
        expected,
        "in order, acked and transient ones gone"
    );
    for m in &back {
        assert_eq!(m.get("redelivered"), Some("true"), "{m:?}");
        assert_eq!(m.get("persistent"), Some("true"), "{m:?}");
        if let Some(id) = ids.get(m.body_str()) {
            assert_eq!(m.must("message-id"), id, "message ids survive a restart");
        }
    }
    assert!(
        broker.log().contains("recovered from the journal"),
        "{}",
        broker.log_tail()
    );
}

/// Producers pipeline persistent SENDs (a window of receipts), a consumer acks with receipts,
/// and the broker is killed in the middle of it.
#[tokio::test]
async fn a_crash_under_load_loses_no_receipted_message_and_revives_no_acked_one() {
    const PRODUCERS: usize = 3;
    const WINDOW: usize = 32;
    let data = tempfile::tempdir().unwrap();
    let dest = format!("/queue/{}", unique("crash"));
    let mut broker = Broker::with_data_dir("", data.path());
    let receipted = Arc::new(Mutex::new(BTreeSet::new()));
    // ACKs sent (their message may or may not come back if the receipt never arrived) and
    // ACKs receipted (their message must not come back).
    let ack_sent = Arc::new(Mutex::new(BTreeSet::new()));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let progress = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for p in 0..PRODUCERS {
        let mut c = broker.client(Version::V12).await;
        let (dest, receipted, progress) = (dest.clone(), receipted.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            'run: for _round in 0..1000 {
                let mut batch = Vec::new();
                for _ in 0..WINDOW {
                    let body = format!("{p}-{n}");
                    let frame = persistent_send(&dest, &body).h("receipt", &body);
                    c.write_raw_lossy(&frame.encode(Version::V12)).await;
                    batch.push(body);
                    n += 1;
                }
                for _ in 0..WINDOW {
                    match c.try_recv(Duration::from_secs(5)).await {
                        Ok(f) if f.is("RECEIPT") => {
                            receipted
                                .lock()
                                .unwrap()
                                .insert(f.must("receipt-id").to_string());
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => break 'run,
                    }
                }
            }
        }));
    }
    let mut consumer = broker.client(Version::V12).await;
    consumer
        .subscribe_with("c", &dest, "client-individual", &[("prefetch-count", "50")])
        .await;
    {
        let (acked, ack_sent) = (acked.clone(), ack_sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut waiting = std::collections::VecDeque::new();
            loop {
                let m = match waiting.pop_front() {
                    Some(m) => m,
                    None => match consumer.try_recv(Duration::from_secs(5)).await {
                        Ok(m) => m,
                        Err(_) => return,
                    },
                };
                if !m.is("MESSAGE") {
                    continue;
                }
                let body = m.body_str().to_string();
                let ack = consumer
                    .ack_frame("ACK", &m)
                    .h("receipt", &format!("ack-{body}"));
                ack_sent.lock().unwrap().insert(body.clone());
                consumer.write_raw_lossy(&ack.encode(Version::V12)).await;
                // Receipts and messages interleave: keep messages until this ACK's receipt.
                loop {
                    match consumer.try_recv(Duration::from_secs(5)).await {
                        Ok(f) if f.is("RECEIPT") => {
                            acked.lock().unwrap().insert(body.clone());
                            break;
                        }
                        Ok(f) => waiting.push_back(f),
                        Err(_) => return,
                    }
                }
            }
        }));
    }
    // Kill once a good amount is in flight, or after a bounded wait.
    for _ in 0..300 {
        if progress.load(Ordering::Relaxed) >= 1500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.kill_hard();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(20), task).await;
    }
    let receipted = receipted.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let ack_sent = ack_sent.lock().unwrap().clone();
    assert!(
        receipted.len() >= 100,
        "only {} receipted before the kill",
        receipted.len()
    );

    let broker = Broker::with_data_dir("", data.path());
    let back: BTreeSet<String> = bodies(&drain(&broker, &dest, Duration::from_secs(1)).await)
        .into_iter()
        .collect();
    eprintln!(
        "receipted {}, acked {}, back after restart {}",
        receipted.len(),
        acked.len(),
        back.len()
    );
    let missing: Vec<_> = receipted
        .iter()
        .filter(|b| !ack_sent.contains(*b) && !back.contains(*b))
        .collect();
    assert!(
        missing.is_empty(),
        "receipted, never acked, not back: {missing:?}"
    );
    let revived: Vec<_> = acked.iter().filter(|b| back.contains(*b)).collect();
    assert!(
        revived.is_empty(),
        "acked with a receipt, yet back: {revived:?}"
    );
}

/// The newest journal segment with records in it.
fn newest_segment(dir: &Path) -> std::path::PathBuf {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 8)
        .collect();
    segments.sort();
    segments.pop().expect("a journal segment with records")
}

#[tokio::test]
async fn a_torn_last_record_is_cut_and_everything_before_it_recovered() {
    let data = tempfile::tempdir().unwrap();
    let dest = format!("/queue/{}", unique("torn"));
    let mut broker = Broker::with_data_dir("", data.path());
    let mut c = broker.client(Version::V12).await;
    for i in 0..5 {
        c.roundtrip(persistent_send(&dest, &format!("m{i}"))).await;
    }
    broker.kill_hard();
    // Cut the last record in half, as a crash in the middle of a write would.
    let segment = newest_segment(data.path());
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 10).unwrap();

    let broker = Broker::with_data_dir("", data.path());
    let back = drain(&broker, &dest, Duration::from_millis(500)).await;
    assert_eq!(bodies(&back), ["m0", "m1", "m2", "m3"]);
    assert!(
        broker.log().contains("torn or corrupt tail truncated"),
        "{}",
        broker.log_tail()
    );
}

/// CONNECT with a `client-id`.
async fn client_with_id(broker: &Broker, client_id: &str) -> Client {
    let connect = Client::connect_frame(Version::V12).h("client-id", client_id);
    let (c, reply) = Client::connect_with(broker.addr, connect).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    c
}

#[tokio::test]
async fn a_durable_subscription_keeps_messages_across_disconnects_and_restarts() {
    let data = tempfile::tempdir().unwrap();
    let topic = format!("/topic/{}", unique("news"));
    let durable = [("activemq.subscriptionName", "reader")];
    let mut broker = Broker::with_data_dir("", data.path());

    let mut reader = client_with_id(&broker, "app-1").await;
    reader.subscribe_with("s", &topic, "client", &durable).await;
    reader.disconnect().await;

    let mut publisher = broker.client(Version::V12).await;
    publisher
        .roundtrip(persistent_send(&topic, "while away 1"))
        .await;
    publisher
        .roundtrip(persistent_send(&topic, "while away 2"))
        .await;
    publisher.send_r(&topic, "while away, not persistent").await;

    let mut reader = client_with_id(&broker, "app-1").await;
    reader.subscribe_with("s", &topic, "client", &durable).await;
    let got = reader.msgs(3).await;
    assert_eq!(
        bodies(&got),
        ["while away 1", "while away 2", "while away, not persistent"]
    );
    assert_eq!(got[0].get("destination"), Some(topic.as_str()));
    assert_eq!(got[0].get("subscription"), Some("s"));
    reader.ack(&got[2]).await;
    // Detach without the durable header: the subscription keeps collecting.
    reader.unsubscribe("s").await;
    publisher
        .roundtrip(persistent_send(&topic, "before the crash"))
        .await;
    publisher.send_r(&topic, "lost in the crash").await;
    broker.kill_hard();

    let broker = Broker::with_data_dir("", data.path());
    let mut publisher = broker.client(Version::V12).await;
    publisher
        .roundtrip(persistent_send(&topic, "after the restart"))
        .await;
    let mut reader = client_with_id(&broker, "app-1").await;
    reader.subscribe_with("s", &topic, "auto", &durable).await;
    let got = reader.msgs(2).await;
    assert_eq!(bodies(&got), ["before the crash", "after the restart"]);
    assert_eq!(got[0].get("redelivered"), Some("true"));
    reader.expect_silence(QUIET).await;

    // UNSUBSCRIBE with the durable header removes it: nothing is kept for it any more.
    reader
        .roundtrip(
            Frame::new("UNSUBSCRIBE")
                .h("id", "s")
                .h("activemq.subscriptionName", "reader"),
        )
        .await;
    publisher
        .roundtrip(persistent_send(&topic, "nobody keeps this"))
        .await;
    reader.subscribe_with("s2", &topic, "auto", &durable).await;
    reader.expect_silence(QUIET).await;
}

#[tokio::test]
async fn every_durable_subscription_alias_is_accepted() {
    let broker = Broker::start();
    let aliases: [&[(&str, &str)]; 4] = [
        &[("durable-subscription-name", "a")],
        &[("durable-subscriber-name", "b")],
        &[("durable", "true"), ("auto-delete", "false")],
        &[("persistent", "true")],
    ];
    for (n, headers) in aliases.iter().enumerate() {
        let topic = format!("/topic/{}", unique("alias"));
        let id = format!("sub-{n}");
        let mut reader = client_with_id(&broker, "aliases").await;
        reader.subscribe_with(&id, &topic, "auto", headers).await;
        reader.disconnect().await;
        let mut publisher = broker.client(Version::V12).await;
        publisher.send_r(&topic, "kept").await;
        let mut reader = client_with_id(&broker, "aliases").await;
        reader.subscribe_with(&id, &topic, "auto", headers).await;
        let m = reader.msg().await;
        assert_eq!(m.body_str(), "kept", "alias {headers:?}");
    }
}

#[tokio::test]
async fn a_durable_subscription_has_one_subscriber_at_a_time() {
    let broker = Broker::start();
    let topic = format!("/topic/{}", unique("one"));
    let durable = [("activemq.subscriptionName", "only")];
    let mut first = client_with_id(&broker, "app").await;
    first.subscribe_with("s", &topic, "auto", &durable).await;
    let mut second = client_with_id(&broker, "app").await;
    second
        .write(
            &Frame::new("SUBSCRIBE")
                .h("id", "s")
                .h("destination", &topic)
                .h("activemq.subscriptionName", "only"),
        )
        .await;
    let error = second.expect_error_close().await;
    assert!(
        error
            .must("message")
            .contains("already has an active subscriber"),
        "{error:?}"
    );
    // The first one is untouched.
    let mut publisher = broker.client(Version::V12).await;
    publisher.send_r(&topic, "still yours").await;
    assert_eq!(first.msg().await.body_str(), "still yours");
}

#[tokio::test]
async fn a_full_store_refuses_persistent_sends_with_an_error_and_others_carry_on() {
    let broker = Broker::with_config("[store]\nmax_bytes = 20000\n");
    let dest = format!("/queue/{}", unique("full"));
    let mut bystander = Bystander::new(&broker).await;
    let mut producer = broker.client(Version::V12).await;
    let body = "x".repeat(1000);
    let mut accepted = 0;
    let error = loop {
        assert!(accepted < 100, "the store never filled up");
        producer
            .write(&persistent_send(&dest, &body).h("receipt", &format!("r{accepted}")))
            .await;
        let f = producer.recv().await;
        if f.is("ERROR") {
            break f;
        }
        assert!(f.is("RECEIPT"), "{f:?}");
        accepted += 1;
    };
    assert!(error.must("message").contains("store is full"), "{error:?}");
    assert_eq!(error.get("error-code"), Some("store.full"), "{error:?}");
    assert!(
        (10..=20).contains(&accepted),
        "{accepted} accepted before the limit"
    );
    bystander.check().await;
    // Non-persistent messages still go through; consuming makes room again.
    let mut other = broker.client(Version::V12).await;
    other.send_r(&dest, "in memory").await;
    let got = drain(&broker, &dest, Duration::from_millis(300)).await;
    assert_eq!(got.len(), accepted + 1);
    let mut again = broker.client(Version::V12).await;
    again.roundtrip(persistent_send(&dest, &body)).await;
}

/// Runs the broker on `data` until it exits by itself (these tests expect it to refuse to start).
fn run_to_exit(data: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_second_broker_on_the_same_data_directory_refuses_to_start() {
    let data = tempfile::tempdir().unwrap();
    let _first = Broker::with_data_dir("", data.path());
    let output = run_to_exit(data.path());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another broker"), "{stderr}");
}

#[tokio::test]
async fn a_data_directory_others_can_write_stops_the_broker() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = run_to_exit(data.path());
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "never listened");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named = format!(
        "data directory {} is not safe to use",
        data.path().display()
    );
    assert!(stderr.contains(&named), "{stderr}");
    assert!(stderr.contains("0777"), "{stderr}");
    assert_eq!(std::fs::read_dir(data.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn without_data_dir_the_journal_lives_in_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_plugboard"))
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let mut c = Client::connect(addr, Version::V12).await;
    c.roundtrip(persistent_send("/queue/default-dir", "here"))
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let segment = newest_segment(&cwd.path().join("plugboard-data"));
    let journal = std::fs::read(segment).unwrap();
    assert!(journal.windows(4).any(|w| w == b"here"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(cwd.path().join("plugboard-data"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "created private");
}

#[tokio::test]
async fn a_dead_lettered_persistent_message_stays_dead_lettered_after_a_crash() {
    let data = tempfile::tempdir().unwrap();
    let config = "[dead_letter]\nmax_deliveries = 1\n";
    let name = unique("poison");
    let dest = format!("/queue/{name}");
    let mut broker = Broker::with_data_dir(config, data.path());
    let mut c = broker.client(Version::V12).await;
    c.roundtrip(persistent_send(&dest, "poison")).await;
    c.roundtrip(persistent_send(&dest, "short-lived").h("ttl", "300"))
        .await;
    c.subscribe_with("s", &dest, "client-individual", &[("prefetch-count", "1")])
        .await;
    let m = c.msg().await;
    assert_eq!(m.body_str(), "poison");
    c.nack(&m).await;
    broker.kill_hard();
    tokio::time::sleep(Duration::from_millis(400)).await;

    let broker = Broker::with_data_dir(config, data.path());
    // The expired one is dropped when its turn comes; the poison one is in the DLQ only.
    assert!(drain(&broker, &dest, Duration::from_millis(300))
        .await
        .is_empty());
    let dead = drain(
        &broker,
        &format!("/queue/DLQ.{name}"),
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(bodies(&dead), ["poison"]);
    assert_eq!(dead[0].get("dlq-reason"), Some("max-deliveries"));
}

/// DISCONNECT's RECEIPT comes after the session released what it held: a client that
/// reconnects as soon as it has the RECEIPT finds its durable subscription free (before, the
/// release raced the reconnect and the SUBSCRIBE could be refused as "already active").
#[tokio::test]
async fn after_the_disconnect_receipt_the_durable_subscription_is_free() {
    let broker = Broker::start();
    let topic = format!("/topic/{}", unique("reattach"));
    let durable = [("activemq.subscriptionName", "again")];
    for round in 0..20 {
        let mut reader = client_with_id(&broker, "reattacher").await;
        reader.subscribe_with("s", &topic, "client", &durable).await;
        reader
            .write(&Frame::new("DISCONNECT").h("receipt", "bye"))
            .await;
        let receipt = reader.recv().await;
        assert!(
            receipt.is("RECEIPT") && receipt.get("receipt-id") == Some("bye"),
            "round {round}: {receipt:?}"
        );
    }
}
