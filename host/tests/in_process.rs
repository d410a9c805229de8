//! A whole broker run in process through `plugboard::run` (the path `main` takes): it serves a
//! STOMP session, and stops when told to.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[tokio::test]
async fn a_broker_runs_in_process_and_stops_on_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let mut config = plugboard::Config::default();
    config.store.data_dir = Some(data.path().join("data"));
    config.shutdown_grace_ms = 1_000;
    let stomp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = stomp.local_addr().unwrap();
    let listeners = plugboard::Listeners {
        stomp: Some(stomp),
        tls: None,
        admin: None,
        websocket: None,
        secure_websocket: None,
    };
    let (stop, shutdown) = watch::channel(false);
    let broker = tokio::spawn(plugboard::run(listeners, config, shutdown));

    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(b"CONNECT\naccept-version:1.2\nhost:x\n\n\0")
        .await
        .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut answer))
        .await
        .expect("CONNECTED in time")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"CONNECTED\n"),
        "{:?}",
        &answer[..n]
    );

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), broker)
        .await
        .expect("the broker stops within its grace period")
        .unwrap()
        .expect("it stops cleanly");
}
