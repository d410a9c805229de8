//! The end-to-end harness: one real `plugboard` process per test ([`Broker`], on the launcher of
//! [`crate::broker`]), the raw STOMP client of [`crate::stomp`] (re-exported here, so one glob
//! import brings everything a test needs), and the checks the e2e-style suites share: a
//! [`Bystander`] that must keep working, [`assert_healthy`], [`expect_refused`] and
//! [`bad_frame_gives_error`].
//!
//! [`Broker`] is generic over the [`BrokerBinary`] it runs, which a test binary of the
//! `plugboard` package declares once; it then names `Broker<ItsBinary>` `Broker` in a `harness`
//! module of its own that re-exports this one (see the crate docs).

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Duration;

use crate::broker::Launch;
pub use crate::stomp::*;
use crate::BrokerBinary;

// ---------------------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------------------

/// A broker process (of the binary `B`) started for one test on a config of its own; killed
/// (and its log shown on failure) on drop.
pub struct Broker<B>(crate::broker::Broker, PhantomData<fn() -> B>);

impl<B: BrokerBinary> Broker<B> {
    /// Starts a broker with the default configuration.
    pub fn start() -> Self {
        Self::with_config("")
    }

    /// Starts a broker with this TOML configuration (`listen` is always overridden).
    pub fn with_config(toml: &str) -> Self {
        Self::launch(
            Launch::config_text(Path::new(B::PATH), toml).start_within(Duration::from_secs(30)),
        )
    }

    /// Starts a broker journaling into `data_dir` (to restart one on the same store).
    pub fn with_data_dir(toml: &str, data_dir: &Path) -> Self {
        Self::launch(
            Launch::config_text(Path::new(B::PATH), toml)
                .args(&[std::ffi::OsStr::new("--data-dir"), data_dir.as_os_str()])
                .start_within(Duration::from_secs(30)),
        )
    }

    /// Starts a broker with this TOML configuration and its WebSocket listener on a free port
    /// ([`crate::broker::Broker::ws_url`]).
    pub fn with_websocket(toml: &str) -> Self {
        Self::launch(
            Launch::config_text(Path::new(B::PATH), toml)
                .websocket()
                .start_within(Duration::from_secs(30)),
        )
    }

    fn launch(launch: Launch) -> Self {
        Broker(launch.start(), PhantomData)
    }
}

impl<B> Broker<B> {
    /// Connects a client at `version`.
    pub async fn client(&self, version: Version) -> Client {
        Client::connect(self.addr, version).await
    }
}

impl<B> Deref for Broker<B> {
    type Target = crate::broker::Broker;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<B> DerefMut for Broker<B> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

// ---------------------------------------------------------------------------------------------
// Common checks
// ---------------------------------------------------------------------------------------------

/// A connection opened before something bad happens elsewhere; `check` proves it still works.
pub struct Bystander {
    client: Client,
    dest: String,
    n: usize,
}

impl Bystander {
    /// Connects (STOMP 1.2) and subscribes to a queue of its own.
    pub async fn new<B>(broker: &Broker<B>) -> Bystander {
        let mut client = broker.client(Version::V12).await;
        let dest = format!("/queue/{}", unique("bystander"));
        client.subscribe("by", &dest, "auto").await;
        Bystander { client, dest, n: 0 }
    }

    /// Sends a new message to its queue (with a receipt) and expects to receive it.
    pub async fn check(&mut self) {
        self.n += 1;
        let body = format!("still here {}", self.n);
        let dest = self.dest.clone();
        self.client.send_r(&dest, &body).await;
        let m = self.client.msg().await;
        assert_eq!(m.body_str(), body, "bystander got the wrong message");
    }
}

/// A fresh connection can still connect and exchange a message.
pub async fn assert_healthy<B>(broker: &Broker<B>) {
    let mut c = broker.client(Version::V12).await;
    let dest = format!("/queue/{}", unique("health"));
    c.subscribe("h", &dest, "auto").await;
    c.send_r(&dest, "ok").await;
    assert_eq!(c.msg().await.body_str(), "ok");
    c.disconnect().await;
}

/// Writes `frame` with a `receipt` header and expects ERROR + close, the ERROR naming that
/// receipt (`context` goes into the failure message). Returns the ERROR.
pub async fn expect_refused(c: &mut Client, frame: Frame, receipt: &str, context: &str) -> Frame {
    c.write(&frame.h("receipt", receipt)).await;
    let err = c.expect_error_close().await;
    assert_eq!(err.get("receipt-id"), Some(receipt), "{context}: {err:?}");
    err
}

/// Sends a bad frame on a fresh connection of `version` and expects ERROR + close; a bystander
/// connection keeps working. Returns the ERROR.
pub async fn bad_frame_gives_error<B>(broker: &Broker<B>, version: Version, bad: &[u8]) -> Frame {
    let mut by = Bystander::new(broker).await;
    let mut c = broker.client(version).await;
    // Lossy: a broker may stop reading in the middle of an oversized frame.
    c.write_raw_lossy(bad).await;
    let err = c.expect_error_close().await;
    by.check().await;
    err
}
