//! Test harness: one real `plugboard` process per test (the shared launcher,
//! `plugboard_test_support::broker`), and the raw-STOMP client of `plugboard_test_support::stomp`,
//! re-exported here for the e2e modules.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use plugboard_test_support::broker::Launch;
pub use plugboard_test_support::stomp::*;

// ---------------------------------------------------------------------------------------------
// Broker process
// ---------------------------------------------------------------------------------------------

/// A broker process started for one test on a config of its own; killed (and its log shown on
/// failure) on drop.
pub struct Broker(plugboard_test_support::broker::Broker);

impl Broker {
    /// Starts a broker with the default configuration.
    pub fn start() -> Broker {
        Broker::with_config("")
    }

    /// Starts a broker with this TOML configuration (`listen` is always overridden).
    pub fn with_config(toml: &str) -> Broker {
        Broker(
            Launch::config_text(env!("CARGO_BIN_EXE_plugboard"), toml)
                .start_within(Duration::from_secs(30))
                .start(),
        )
    }

    /// Starts a broker journaling into `data_dir` (to restart one on the same store).
    pub fn with_data_dir(toml: &str, data_dir: &std::path::Path) -> Broker {
        Broker(
            Launch::config_text(env!("CARGO_BIN_EXE_plugboard"), toml)
                .args(&[std::ffi::OsStr::new("--data-dir"), data_dir.as_os_str()])
                .start_within(Duration::from_secs(30))
                .start(),
        )
    }

    /// Connects a client at `version`.
    pub async fn client(&self, version: Version) -> Client {
        Client::connect(self.addr, version).await
    }
}

impl Deref for Broker {
    type Target = plugboard_test_support::broker::Broker;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Broker {
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
    pub async fn new(broker: &Broker) -> Bystander {
        let mut client = broker.client(Version::V12).await;
        let dest = format!("/queue/{}", unique("bystander"));
        client.subscribe("by", &dest, "auto").await;
        Bystander { client, dest, n: 0 }
    }

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
pub async fn assert_healthy(broker: &Broker) {
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
pub async fn bad_frame_gives_error(broker: &Broker, version: Version, bad: &[u8]) -> Frame {
    let mut by = Bystander::new(broker).await;
    let mut c = broker.client(version).await;
    // Lossy: a broker may stop reading in the middle of an oversized frame.
    c.write_raw_lossy(bad).await;
    let err = c.expect_error_close().await;
    by.check().await;
    err
}
