//! Heart-beating (checklist HB-01..HB-07, P11, P12). Intervals are ~100 ms so the tests are
//! short; the bounds are loose because test machines are shared and noisy.

use std::time::{Duration, Instant};

use crate::harness::*;

const HB_CONFIG: &str =
    "[heartbeat]\nsend_min_ms = 100\nreceive_min_ms = 150\ngrace_factor = 2.0\n";

async fn connect_hb(broker: &Broker, v: Version, hb: Option<&str>) -> (Client, Frame) {
    let mut f = Client::connect_frame(v);
    if let Some(hb) = hb {
        f = f.h("heart-beat", hb);
    }
    let (c, reply) = Client::connect_with(broker.addr, f).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    (c, reply)
}

#[tokio::test]
async fn negotiation_follows_the_formula() {
    let broker = Broker::with_config(HB_CONFIG);
    // sx = cy>0 ? max(cy, send_min) : 0 ; sy = cx>0 ? max(cx, receive_min) : 0
    let cases = [
        (None, "0,0"),
        (Some("0,0"), "0,0"),
        (Some("200,50"), "100,200"),
        (Some("50,500"), "500,150"),
        (Some("0,300"), "300,0"),
        (Some("300,0"), "0,300"),
        (Some("1000,1000"), "1000,1000"),
    ];
    for v in [Version::V11, Version::V12] {
        for (hb, expected) in cases {
            let (_c, reply) = connect_hb(&broker, v, hb).await;
            assert_eq!(
                reply.get("heart-beat"),
                Some(expected),
                "{v} client heart-beat {hb:?}: {reply:?}"
            );
        }
    }
}

#[tokio::test]
async fn broker_sends_heart_beats_when_idle() {
    let broker = Broker::with_config(HB_CONFIG);
    for v in [Version::V11, Version::V12] {
        let (mut c, reply) = connect_hb(&broker, v, Some("0,100")).await;
        assert_eq!(reply.get("heart-beat"), Some("100,0"));
        let start = Instant::now();
        c.expect_silence(Duration::from_millis(1000)).await;
        let n = c.beats.iter().filter(|t| **t >= start).count();
        assert!(
            n >= 4,
            "{v}: expected about 10 heart-beats in 1 s at 100 ms, got {n}"
        );
        assert!(n <= 40, "{v}: far too many heart-beats: {n}");
        // Not watched (cx = 0): still usable after a silent second.
        c.sync().await;
    }
}

#[tokio::test]
async fn no_beats_when_not_asked() {
    let broker = Broker::with_config(HB_CONFIG);
    let (mut c, reply) = connect_hb(&broker, Version::V12, Some("0,0")).await;
    assert_eq!(reply.get("heart-beat"), Some("0,0"));
    c.expect_silence(Duration::from_millis(600)).await;
    assert!(c.beats.is_empty(), "got {} beats", c.beats.len());
    c.sync().await;
}

#[tokio::test]
async fn silent_client_is_dropped_with_error() {
    let broker = Broker::with_config(HB_CONFIG);
    let mut by = Bystander::new(&broker).await;
    for v in [Version::V11, Version::V12] {
        let (mut c, reply) = connect_hb(&broker, v, Some("100,0")).await;
        // sy = max(100, 150) = 150; dead after 150 * 2 = 300 ms of silence.
        assert_eq!(reply.get("heart-beat"), Some("0,150"));
        let start = Instant::now();
        let frames = c.expect_closed().await;
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(200),
            "{v}: dropped too early ({elapsed:?})"
        );
        assert!(
            elapsed < Duration::from_secs(3),
            "{v}: dropped too late ({elapsed:?})"
        );
        let err = frames
            .iter()
            .find(|f| f.is("ERROR"))
            .unwrap_or_else(|| panic!("{v}: no ERROR: {frames:?}"));
        let message = err.must("message").to_lowercase();
        assert!(
            message.contains("heart-beat") || message.contains("heartbeat"),
            "{v}: {err:?}"
        );
    }
    by.check().await;
}

/// A client that beats in time (LF, and CRLF in 1.2) stays connected; when it stops it is dropped.
#[tokio::test]
async fn beating_client_stays_connected() {
    let broker = Broker::with_config(HB_CONFIG);
    for v in [Version::V11, Version::V12] {
        let (mut c, _) = connect_hb(&broker, v, Some("100,0")).await;
        let start = Instant::now();
        let mut i = 0;
        while start.elapsed() < Duration::from_millis(1000) {
            let beat: &[u8] = if v == Version::V12 && i % 2 == 1 {
                b"\r\n"
            } else {
                b"\n"
            };
            c.write_raw(beat).await;
            i += 1;
            c.expect_silence(Duration::from_millis(100)).await;
        }
        c.sync().await;
        let frames = c.expect_closed().await;
        assert!(frames.iter().all(|f| f.is("ERROR")), "{frames:?}");
    }
}

/// Any data counts as liveness: frames instead of pure heart-beats (HB-05).
#[tokio::test]
async fn frames_count_as_liveness() {
    let broker = Broker::with_config(HB_CONFIG);
    let (mut c, _) = connect_hb(&broker, Version::V12, Some("100,0")).await;
    let dest = format!("/topic/{}", unique("live"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1000) {
        c.send(&dest, "x").await;
        c.expect_silence(Duration::from_millis(100)).await;
    }
    c.sync().await;
}

/// A client receiving a steady stream of MESSAGEs is not sent extra beats it needs, and the
/// broker's own beats keep flowing when the stream stops.
#[tokio::test]
async fn two_way_heart_beats() {
    let broker = Broker::with_config(HB_CONFIG);
    let (mut c, reply) = connect_hb(&broker, Version::V12, Some("100,100")).await;
    assert_eq!(reply.get("heart-beat"), Some("100,150"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(800) {
        c.write_raw(b"\n").await;
        match c.try_recv(Duration::from_millis(100)).await {
            Err(RecvError::Timeout) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(c.beats.len() >= 3, "broker beats: {}", c.beats.len());
    c.sync().await;
}

/// 1.0 sessions have no heart-beats even when the CONNECT asks for them (HB-07).
#[tokio::test]
async fn no_heart_beats_in_1_0() {
    let broker = Broker::with_config(HB_CONFIG);
    let f = Frame::new("CONNECT").h("heart-beat", "100,100");
    let (mut c, reply) = Client::connect_with(broker.addr, f).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    assert!(
        reply.get("heart-beat").is_none_or(|h| h == "0,0"),
        "{reply:?}"
    );
    c.expect_silence(Duration::from_millis(700)).await;
    assert!(
        c.beats.is_empty(),
        "1.0 session got {} heart-beats",
        c.beats.len()
    );
    // Silent for 700 ms (> 150 * 2) and still connected.
    c.sync().await;
}

/// A client that is late, but within the grace factor, is tolerated (HB-06, P11): with
/// sy = 150 ms and grace 2, beats every ~180 ms (1.2 x late) must not trip the timeout.
#[tokio::test]
async fn late_beats_within_grace_are_tolerated() {
    let broker = Broker::with_config(HB_CONFIG);
    let (mut c, reply) = connect_hb(&broker, Version::V12, Some("150,0")).await;
    assert_eq!(reply.get("heart-beat"), Some("0,150"));
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1300) {
        c.write_raw(b"\n").await;
        c.expect_silence(Duration::from_millis(180)).await;
    }
    c.sync().await;
}
