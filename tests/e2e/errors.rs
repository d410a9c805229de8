//! Every client-caused error: ERROR with `message` (and `receipt-id` when asked), text/plain,
//! then the close; other connections unaffected; limits enforced (checklist F-02..F-06, F-16,
//! E-01, E-02, E-07, X-01, X-02, U-01..U-04, N-01, P18).

use crate::harness::*;

fn raw(v: Version, f: &Frame) -> Vec<u8> {
    f.encode(v)
}

#[tokio::test]
async fn unknown_command() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let err = bad_frame_gives_error(&broker, v, b"FOO\n\n\0").await;
        assert!(
            err.must("message").contains("FOO"),
            "{v}: the ERROR names the command: {err:?}"
        );
    }
}

/// Every client-caused ERROR carries `receipt-id` when the bad frame had a readable `receipt`,
/// also when decoding failed before the header block was parsed (an unknown or lowercase
/// command, an undefined escape): regression test of a fixed defect.
#[tokio::test]
async fn decode_errors_carry_receipt_id() {
    let broker = Broker::start();
    let cases: [(&str, &[u8]); 4] = [
        ("unknown command", b"FOO\nreceipt:r-bad\n\n\0"),
        (
            "lowercase command",
            b"send\ndestination:/queue/x\nreceipt:r-bad\n\nx\0",
        ),
        (
            "undefined escape",
            b"SEND\ndestination:/queue/x\nreceipt:r-bad\nk:a\\tb\n\nx\0",
        ),
        (
            "content-length without NUL",
            b"SEND\ndestination:/queue/x\nreceipt:r-bad\ncontent-length:1\n\nxy\0",
        ),
    ];
    let mut missing = Vec::new();
    for (name, bytes) in cases {
        let err = bad_frame_gives_error(&broker, Version::V12, bytes).await;
        if err.get("receipt-id") != Some("r-bad") {
            missing.push(format!("{name}: {err:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "ERROR without receipt-id:\n{}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn commands_are_case_sensitive() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        bad_frame_gives_error(&broker, v, b"send\ndestination:/queue/lower\n\nx\0").await;
        bad_frame_gives_error(
            &broker,
            v,
            b"Subscribe\nid:1\ndestination:/queue/lower\n\n\0",
        )
        .await;
    }
    // Nothing was enqueued.
    let mut c = broker.client(Version::V12).await;
    c.subscribe("s", "/queue/lower", "auto").await;
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn undefined_escape_in_1_2() {
    let broker = Broker::start();
    for bad in [&b"k:a\\tb"[..], b"k:trailing\\", b"k\\x:v", b"k:\\C"] {
        let mut frame = b"SEND\ndestination:/queue/esc\n".to_vec();
        frame.extend_from_slice(bad);
        frame.extend_from_slice(b"\n\nbody\0");
        bad_frame_gives_error(&broker, Version::V12, &frame).await;
    }
}

#[tokio::test]
async fn carriage_return_escape_in_1_1_is_an_error() {
    let broker = Broker::start();
    bad_frame_gives_error(
        &broker,
        Version::V11,
        b"SEND\ndestination:/queue/esc\nk:a\\rb\n\nbody\0",
    )
    .await;
    bad_frame_gives_error(
        &broker,
        Version::V11,
        b"SEND\ndestination:/queue/esc\nk:a\\tb\n\nbody\0",
    )
    .await;
}

#[tokio::test]
async fn escapes_are_not_decoded_in_1_0() {
    // In 1.0 a backslash is data, so `\t` is not an error and arrives verbatim.
    let broker = Broker::start();
    let mut c = broker.client(Version::V10).await;
    let dest = format!("/queue/{}", unique("esc10"));
    c.subscribe("s", &dest, "auto").await;
    c.write_raw(format!("SEND\ndestination:{dest}\nk:a\\tb\\c\n\nbody\0").as_bytes())
        .await;
    let m = c.msg().await;
    assert_eq!(m.get("k"), Some("a\\tb\\c"), "{m:?}");
}

#[tokio::test]
async fn content_length_not_followed_by_nul() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        bad_frame_gives_error(
            &broker,
            v,
            b"SEND\ndestination:/queue/cl\ncontent-length:3\n\nabcd\0",
        )
        .await;
    }
}

#[tokio::test]
async fn content_length_not_a_number() {
    let broker = Broker::start();
    for cl in ["abc", "-1", "1.5"] {
        let frame = format!("SEND\ndestination:/queue/cl\ncontent-length:{cl}\n\nx\0");
        bad_frame_gives_error(&broker, Version::V12, frame.as_bytes()).await;
    }
}

#[tokio::test]
async fn header_line_without_colon() {
    let broker = Broker::start();
    bad_frame_gives_error(
        &broker,
        Version::V12,
        b"SEND\ndestination:/queue/x\nnocolon\n\nx\0",
    )
    .await;
}

#[tokio::test]
async fn send_without_destination() {
    let broker = Broker::start();
    for v in ALL_VERSIONS {
        let err = bad_frame_gives_error(&broker, v, b"SEND\nreceipt:r-nodest\n\nbody\0").await;
        assert_eq!(err.get("receipt-id"), Some("r-nodest"), "{v}: {err:?}");
    }
}

#[tokio::test]
async fn subscribe_errors() {
    let broker = Broker::start();
    let d = "/queue/suberr";
    for v in ALL_VERSIONS {
        // No destination.
        let f = Frame::new("SUBSCRIBE").h("id", "1").h("receipt", "r-sub");
        let err = bad_frame_gives_error(&broker, v, &raw(v, &f)).await;
        assert_eq!(err.get("receipt-id"), Some("r-sub"), "{v}: {err:?}");
        // Invalid ack mode.
        for ack in ["bogus", "none"] {
            let f = Frame::new("SUBSCRIBE")
                .h("id", "1")
                .h("destination", d)
                .h("ack", ack);
            bad_frame_gives_error(&broker, v, &raw(v, &f)).await;
        }
        if v >= Version::V11 {
            // No id.
            let f = Frame::new("SUBSCRIBE").h("destination", d);
            bad_frame_gives_error(&broker, v, &raw(v, &f)).await;
            // A body.
            let f = Frame::new("SUBSCRIBE")
                .h("id", "1")
                .h("destination", d)
                .body("not allowed");
            bad_frame_gives_error(&broker, v, &raw(v, &f)).await;
        }
    }
}

#[tokio::test]
async fn duplicate_subscription_id() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for v in ALL_VERSIONS {
        let mut c = broker.client(v).await;
        c.subscribe("dup", "/queue/dup-a", "auto").await;
        let dup = Frame::new("SUBSCRIBE")
            .h("id", "dup")
            .h("destination", "/queue/dup-b");
        expect_refused(&mut c, dup, "r-dup", &v.to_string()).await;
    }
    by.check().await;
}

#[tokio::test]
async fn unsubscribe_errors() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for v in [Version::V11, Version::V12] {
        // Unknown id.
        let mut c = broker.client(v).await;
        let unknown = Frame::new("UNSUBSCRIBE").h("id", "never");
        expect_refused(&mut c, unknown, "r-unsub", &v.to_string()).await;
        // No id.
        let mut c = broker.client(v).await;
        c.subscribe("s", "/queue/unsub", "auto").await;
        c.write(&Frame::new("UNSUBSCRIBE").h("destination", "/queue/unsub"))
            .await;
        c.expect_error_close().await;
    }
    by.check().await;
}

#[tokio::test]
async fn unknown_destination_prefix() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    for dest in [
        "/exchange/x",
        "/amq/queue/x",
        "queue/x",
        "x",
        "/queue",
        "/queues/x",
    ] {
        for v in ALL_VERSIONS {
            let frames = [
                Frame::new("SEND")
                    .h("destination", dest)
                    .h("receipt", "r-prefix")
                    .body("x"),
                Frame::new("SUBSCRIBE")
                    .h("id", "1")
                    .h("destination", dest)
                    .h("receipt", "r-prefix"),
            ];
            for f in frames {
                let mut c = broker.client(v).await;
                c.write(&f).await;
                let err = c.expect_error_close().await;
                assert_eq!(
                    err.get("receipt-id"),
                    Some("r-prefix"),
                    "{dest} {v}: {err:?}"
                );
                let text = format!(
                    "{} {}",
                    err.must("message"),
                    String::from_utf8_lossy(&err.body)
                );
                for prefix in ["/queue/", "/topic/", "/temp-queue/"] {
                    assert!(
                        text.contains(prefix),
                        "{dest}: ERROR should name {prefix}: {err:?}"
                    );
                }
            }
        }
    }
    by.check().await;
}

#[tokio::test]
async fn garbage_input() {
    let broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    let inputs: [&[u8]; 5] = [
        b"\x00\x01\x02\xff\xfe garbage\n\n\x00",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff\xfe\xfd\n\n\0",
        b":\n\n\0",
        b"SEND\n:novalue\n\n\0",
    ];
    for input in inputs {
        // Before CONNECT, and after.
        let mut c = Client::open(broker.addr).await;
        c.write_raw_lossy(input).await;
        let frames = c.expect_closed().await;
        assert!(frames.iter().all(|f| f.is("ERROR")), "{frames:?}");
        let mut c = broker.client(Version::V12).await;
        c.write_raw_lossy(input).await;
        let frames = c.expect_closed().await;
        assert!(frames.iter().all(|f| f.is("ERROR")), "{frames:?}");
    }
    by.check().await;
    assert_healthy(&broker).await;
}

/// Mutated frames, a crude fuzz: whatever the broker answers, it keeps serving everyone.
#[tokio::test]
async fn mutated_frames_never_hurt_the_broker() {
    let mut broker = Broker::start();
    let mut by = Bystander::new(&broker).await;
    let base = Frame::new("SEND")
        .h("destination", "/queue/fuzz")
        .h("k", "v\\c")
        .h("content-length", "4")
        .h("receipt", "r")
        .body("body")
        .encode(Version::V12);
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..60 {
        let mut bytes = base.clone();
        for _ in 0..(1 + next() % 4) {
            let i = (next() as usize) % bytes.len();
            match next() % 3 {
                0 => bytes[i] = (next() % 256) as u8,
                1 => {
                    bytes.remove(i);
                }
                _ => bytes.insert(i, [b'\n', b':', b'\\', 0, b'\r'][(next() % 5) as usize]),
            }
        }
        let mut c = broker
            .client(if round % 2 == 0 {
                Version::V12
            } else {
                Version::V11
            })
            .await;
        c.write_raw_lossy(&bytes).await;
        // Either it is served (maybe waiting for more bytes) or refused; never a crash.
        let _ = c.try_recv(std::time::Duration::from_millis(50)).await;
    }
    assert!(broker.is_running(), "broker died\n{}", broker.log_tail());
    by.check().await;
    assert_healthy(&broker).await;
}

const LIMITS: &str = "[limits]\nmax_frame_bytes = 4096\nmax_headers = 10\nmax_header_line_bytes = 256\nmax_body_bytes = 2048\n";

#[tokio::test]
async fn frames_within_limits_are_served() {
    let broker = Broker::with_config(LIMITS);
    let mut c = broker.client(Version::V12).await;
    let dest = format!("/queue/{}", unique("lim"));
    c.subscribe("s", &dest, "auto").await;
    let mut f = Frame::new("SEND").h("destination", &dest);
    for i in 0..6 {
        f = f.h(&format!("h{i}"), &"v".repeat(200));
    }
    c.roundtrip(f.body_cl(vec![b'x'; 2000])).await;
    let m = c.msg().await;
    assert_eq!(m.body.len(), 2000);
}

#[tokio::test]
async fn body_over_limit() {
    let broker = Broker::with_config(LIMITS);
    let dest = "/queue/limit";
    // With content-length, and without (streamed until the NUL).
    let f = Frame::new("SEND")
        .h("destination", dest)
        .h("receipt", "big")
        .body_cl(vec![b'x'; 3000]);
    bad_frame_gives_error(&broker, Version::V12, &raw(Version::V12, &f)).await;
    let f = Frame::new("SEND")
        .h("destination", dest)
        .body(vec![b'x'; 3000]);
    bad_frame_gives_error(&broker, Version::V12, &raw(Version::V12, &f)).await;
}

#[tokio::test]
async fn frame_over_limit() {
    let broker = Broker::with_config(LIMITS);
    let mut f = Frame::new("SEND").h("destination", "/queue/limit");
    for i in 0..9 {
        f = f.h(&format!("h{i}"), &"v".repeat(240));
    }
    // 9 * ~245 header bytes + 2000 body > 4096, while each part is within its own limit.
    let f = f.body_cl(vec![b'x'; 2000]);
    bad_frame_gives_error(&broker, Version::V12, &raw(Version::V12, &f)).await;
}

#[tokio::test]
async fn too_many_headers() {
    let broker = Broker::with_config(LIMITS);
    let mut f = Frame::new("SEND").h("destination", "/queue/limit");
    for i in 0..20 {
        f = f.h(&format!("h{i}"), "v");
    }
    bad_frame_gives_error(&broker, Version::V12, &raw(Version::V12, &f)).await;
}

#[tokio::test]
async fn header_line_over_limit() {
    let broker = Broker::with_config(LIMITS);
    let f = Frame::new("SEND")
        .h("destination", "/queue/limit")
        .h("long", &"v".repeat(1000));
    bad_frame_gives_error(&broker, Version::V12, &raw(Version::V12, &f)).await;
    // A command line that never ends.
    bad_frame_gives_error(&broker, Version::V12, &vec![b'S'; 100_000]).await;
}

/// Endless input without a frame end never makes the broker buffer without bound.
#[tokio::test]
async fn endless_body_is_cut_off() {
    let broker = Broker::with_config(LIMITS);
    let mut by = Bystander::new(&broker).await;
    let mut c = broker.client(Version::V12).await;
    c.write_raw(b"SEND\ndestination:/queue/endless\n\n").await;
    // Keep writing body bytes, never a NUL, until the broker gives up on us.
    let chunk = vec![b'x'; 1024];
    for _ in 0..64 {
        c.write_raw_lossy(&chunk).await;
    }
    let frames = c.expect_closed().await;
    assert!(
        frames.len() <= 1 && frames.iter().all(|f| f.is("ERROR")),
        "{frames:?}"
    );
    by.check().await;
}

/// Limits apply to CONNECT too, before any session exists.
#[tokio::test]
async fn oversized_connect() {
    let broker = Broker::with_config(LIMITS);
    let mut c = Client::open(broker.addr).await;
    let f = Client::connect_frame(Version::V12).h("login", &"u".repeat(2000));
    c.write(&f).await;
    let frames = c.expect_closed().await;
    assert!(frames.iter().all(|f| f.is("ERROR")), "{frames:?}");
    assert_healthy(&broker).await;
}

/// After an ERROR the broker ignores whatever the client sends next (it closed the socket).
#[tokio::test]
async fn nothing_processed_after_error() {
    let broker = Broker::start();
    let dest = format!("/queue/{}", unique("after"));
    let mut c = broker.client(Version::V12).await;
    let mut bytes = b"FOO\n\n\0".to_vec();
    bytes.extend_from_slice(
        &Frame::new("SEND")
            .h("destination", &dest)
            .body("after error")
            .encode(Version::V12),
    );
    c.write_raw(&bytes).await;
    let frames = c.expect_closed().await;
    assert!(frames.iter().all(|f| f.is("ERROR")), "{frames:?}");
    let mut d = broker.client(Version::V12).await;
    d.subscribe("s", &dest, "auto").await;
    d.expect_silence(QUIET).await;
}

/// A `content-length` above the body limit is refused as soon as the headers are read, without
/// waiting for (or buffering) the body.
#[tokio::test]
async fn huge_content_length_rejected_up_front() {
    let broker = Broker::with_config(LIMITS);
    let mut by = Bystander::new(&broker).await;
    let mut c = broker.client(Version::V12).await;
    c.write_raw(b"SEND\ndestination:/queue/huge\ncontent-length:100000000\n\n")
        .await;
    let err = c.expect_error_close().await;
    assert!(err.get("message").is_some());
    by.check().await;
}
