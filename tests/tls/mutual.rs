//! Mutual TLS: with `client_ca`, a client without a certificate (required) or with one from
//! another CA is refused in the handshake; with `client_auth = "optional"` it connects without
//! one. A verified certificate reaches the authenticate hook: static-auth logs `CN=sensor-7`
//! in without a passcode (RabbitMQ's ssl_cert_login) and the host enforces its rights.

use plugboard_test_support::broker::Broker;
use plugboard_test_support::plugins::{component, IfBuildFails};
use plugboard_test_support::stomp::{unique, Frame, RecvError, Version, T};
use plugboard_test_support::tls::{connect, ClientOptions, Pki};

use super::{start, stomp_connect, tls_session};

/// The connection must not get as far as a STOMP answer: the handshake fails (TLS 1.2, or the
/// client side of 1.3), or the broker's alert arrives on the first read (1.3, where the client
/// finishes its side before the server has checked its certificate).
pub async fn expect_refused(broker: &Broker, options: &ClientOptions<'_>) {
    let Ok((mut client, _, _)) = connect(broker.tls_addr(), options).await else {
        return;
    };
    client
        .write_raw_lossy(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
        .await;
    match client.try_recv(T * 6).await {
        Err(RecvError::Closed) | Err(RecvError::Protocol(_)) => {}
        other => panic!("expected the connection to be refused, got {other:?}"),
    }
}

const REQUIRE: &str = "client_ca = \"CA\"";

fn require(pki: &Pki, mode: &str) -> String {
    format!(
        "{}\nclient_auth = \"{mode}\"",
        REQUIRE.replace("\"CA\"", &format!("{:?}", pki.path("ca.pem")))
    )
}

#[tokio::test]
async fn required_client_certificate_missing_or_from_another_ca_is_refused() {
    let pki = Pki::new();
    let broker = start(&pki, &require(&pki, "required"), "");
    expect_refused(&broker, &ClientOptions::trusting(&pki.ca.pem)).await;
    let rogue = ClientOptions::trusting(&pki.ca.pem).with_identity(&pki.rogue_sensor);
    expect_refused(&broker, &rogue).await;
    let good = ClientOptions::trusting(&pki.ca.pem).with_identity(&pki.sensor);
    tls_session(&broker, &good).await.disconnect().await;
}

#[tokio::test]
async fn optional_client_certificate_may_be_left_out_but_not_forged() {
    let pki = Pki::new();
    let broker = start(&pki, &require(&pki, "optional"), "");
    tls_session(&broker, &ClientOptions::trusting(&pki.ca.pem))
        .await
        .disconnect()
        .await;
    let good = ClientOptions::trusting(&pki.ca.pem).with_identity(&pki.sensor);
    tls_session(&broker, &good).await.disconnect().await;
    let rogue = ClientOptions::trusting(&pki.ca.pem).with_identity(&pki.rogue_sensor);
    expect_refused(&broker, &rogue).await;
}

/// static-auth with one password user (none here) and the certificate subject `sensor-7`,
/// which may send and subscribe to `/queue/readings.*` only.
fn cert_login_plugin() -> String {
    let wasm = component("static-auth", IfBuildFails::Panic);
    format!(
        "[[plugins]]\nname = \"auth\"\nfile = {:?}\nhooks = [\"authenticate\"]\nmemory_mb = 32\n\
         deadline_ms = 500\n\n[[plugins.config.certificates]]\ncommon_name = \"sensor-7\"\n\
         may_send = [\"/queue/readings.*\"]\nmay_subscribe = [\"/queue/readings.*\"]\n",
        wasm
    )
}

#[tokio::test]
async fn a_client_certificate_logs_in_as_its_principal_with_its_rights() {
    let pki = Pki::new();
    let broker = start(&pki, &require(&pki, "optional"), &cert_login_plugin());
    let sensor = ClientOptions::trusting(&pki.ca.pem).with_identity(&pki.sensor);

    // No login, no passcode: the certificate is the credential.
    let (mut client, _, _) = connect(broker.tls_addr(), &sensor).await.unwrap();
    let reply = stomp_connect(&mut client, &[]).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    let queue = format!("/queue/readings.{}", unique("t"));
    client.subscribe("r", &queue, "auto").await;
    client.send_r(&queue, "21.5").await;
    assert_eq!(client.msg().await.body_str(), "21.5");
    // Its rights are enforced: elsewhere it may not send.
    client
        .write(
            &Frame::new("SEND")
                .h("destination", "/queue/elsewhere")
                .h("receipt", "x")
                .body("no"),
        )
        .await;
    let err = client.expect_error_close().await;
    let message = err.must("message");
    assert!(
        message.contains("may not send") && message.contains("sensor-7"),
        "{err:?}"
    );

    // A login naming someone else is refused.
    let (mut client, _, _) = connect(broker.tls_addr(), &sensor).await.unwrap();
    let reply = stomp_connect(&mut client, &[("login", "alice"), ("passcode", "x")]).await;
    assert!(reply.is("ERROR"), "{reply:?}");

    // Without a certificate (optional), nobody matches and there are no password users.
    let (mut client, _, _) = connect(broker.tls_addr(), &ClientOptions::trusting(&pki.ca.pem))
        .await
        .unwrap();
    let reply = stomp_connect(&mut client, &[("login", "sensor-7")]).await;
    assert!(reply.is("ERROR"), "{reply:?}");

    // The same certificate means nothing on the plain listener (no certificate there).
    let mut plain = plugboard_test_support::stomp::Client::open(broker.addr).await;
    plain
        .write(
            &plugboard_test_support::stomp::Client::connect_frame(Version::V12)
                .h("login", "sensor-7"),
        )
        .await;
    let reply = plain.recv().await;
    assert!(reply.is("ERROR"), "{reply:?}");
}
