//! STOMP over TLS, end to end: the real broker with a `[tls]` listener on certificates made at
//! run time (`plugboard_test_support::tls`), driven by a rustls client: TLS 1.3 and 1.2
//! handshakes, a CA the client does not trust, mutual TLS (required, optional, a certificate
//! from another CA), a client certificate mapped to a principal by the static-auth plugin and its
//! rights enforced, certificate reload with a connection open, hostile handshakes (silence,
//! plain text), and a TLS-only broker. stomp.py over TLS is in the interop suite.

mod handshake;
mod mutual;
mod reload;

use std::path::Path;
use std::time::Duration;

use plugboard_test_support::broker::{Broker, Launch};
use plugboard_test_support::stomp::{Client, Frame, Version};
use plugboard_test_support::tls::{connect, ClientOptions, Pki};

/// A broker with the plain listener and a TLS listener on `pki`'s files; `more` is appended to
/// the config (extra `[tls]` keys first: it follows the section).
fn start(pki: &Pki, tls_extra: &str, more: &str) -> Broker {
    let toml = format!("{}\n{more}", pki.tls_section(tls_extra));
    Launch::config_text(Path::new(env!("CARGO_BIN_EXE_plugboard")), &toml)
        .tls_line()
        .start_within(Duration::from_secs(60))
        .start()
}

/// CONNECT (1.2, with `headers`) over an established TLS client; the reply.
async fn stomp_connect(client: &mut Client, headers: &[(&str, &str)]) -> Frame {
    let mut frame = Client::connect_frame(Version::V12);
    for (name, value) in headers {
        frame = frame.h(name, value);
    }
    client.write(&frame).await;
    let reply = client.recv().await;
    if reply.is("CONNECTED") {
        client.version = Version::V12;
    }
    reply
}

/// A TLS client connected and through CONNECT (anonymous), ready for frames.
async fn tls_session(broker: &Broker, options: &ClientOptions<'_>) -> Client {
    let (mut client, _, _) = connect(broker.tls_addr(), options)
        .await
        .expect("TLS handshake");
    let reply = stomp_connect(&mut client, &[]).await;
    assert!(reply.is("CONNECTED"), "{reply:?}");
    client
}
