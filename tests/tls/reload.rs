//! Certificate reload: a renewed certificate written over the files (by atomic rename, as
//! renewal tools do) is picked up without a restart: new connections get it, an open
//! connection carries on with the one it has. A broken new certificate is refused, logged, and
//! the one in force keeps serving.

use std::time::{Duration, Instant};

use plugboard_test_support::stomp::unique;
use plugboard_test_support::tls::{connect, ClientOptions, Pki};

use super::{start, tls_session};

/// How long a reload may take to show (file watch, debounce, a loaded machine).
const RELOAD_WITHIN: Duration = Duration::from_secs(60);

/// The DER of the certificate a new connection is served.
async fn served_certificate(addr: std::net::SocketAddr, pki: &Pki) -> Vec<u8> {
    let (client, _, cert) = connect(addr, &ClientOptions::trusting(&pki.ca.pem))
        .await
        .expect("handshake");
    drop(client);
    cert
}

const REFUSED: &str = "TLS certificate reload refused";

fn refusals_logged(broker: &plugboard_test_support::broker::Broker) -> usize {
    broker.log().matches(REFUSED).count()
}

/// Waits until the broker logged one more refused certificate reload than `before`.
fn wait_for_refusal(broker: &plugboard_test_support::broker::Broker, before: usize) {
    let deadline = Instant::now() + RELOAD_WITHIN;
    while refusals_logged(broker) <= before {
        assert!(
            Instant::now() < deadline,
            "no refused reload logged within {RELOAD_WITHIN:?}\n{}",
            broker.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_renewed_certificate_applies_to_new_connections_and_open_ones_carry_on() {
    let pki = Pki::new();
    let broker = start(&pki, "", "");
    let options = ClientOptions::trusting(&pki.ca.pem);
    let first = served_certificate(broker.tls_addr(), &pki).await;
    let mut open = tls_session(&broker, &options).await;
    let queue = format!("/queue/{}", unique("reload"));
    open.subscribe("s", &queue, "auto").await;

    let renewed = pki.ca.server("plugboard-test-server-renewed");
    pki.install_server(&renewed);
    let deadline = Instant::now() + RELOAD_WITHIN;
    let second = loop {
        let served = served_certificate(broker.tls_addr(), &pki).await;
        if served != first {
            break served;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within {RELOAD_WITHIN:?}\n{}",
            broker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        second.windows(b"renewed".len()).any(|w| w == b"renewed"),
        "new connections get the renewed certificate"
    );
    // The connection opened before the renewal still works both ways.
    open.send_r(&queue, "still here").await;
    assert_eq!(open.msg().await.body_str(), "still here");
    open.disconnect().await;

    // A broken certificate is refused and the renewed one keeps serving.
    let refusals = refusals_logged(&broker);
    std::fs::write(
        pki.path("server.pem.tmp"),
        "-----BEGIN CERTIFICATE-----\nnonsense\n",
    )
    .unwrap();
    std::fs::rename(pki.path("server.pem.tmp"), pki.path("server.pem")).unwrap();
    wait_for_refusal(&broker, refusals);
    assert_eq!(served_certificate(broker.tls_addr(), &pki).await, second);
    tls_session(&broker, &options).await.disconnect().await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_too() {
    let pki = Pki::new();
    let broker = start(&pki, "", "");
    let first = served_certificate(broker.tls_addr(), &pki).await;
    // A key that does not match the certificate: refused on SIGHUP, the old pair keeps serving.
    let refusals = refusals_logged(&broker);
    let other = pki.ca.server("mismatch");
    std::fs::write(pki.path("server.key"), &other.key_pem).unwrap();
    broker.signal("HUP");
    wait_for_refusal(&broker, refusals);
    assert_eq!(served_certificate(broker.tls_addr(), &pki).await, first);
}
