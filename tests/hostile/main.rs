//! The hostile-client suite: the real broker attacked over TCP the way the hardening issue
//! found it could be, one test per attack. Every test checks the broker's promise: the attacker
//! gets a clear ERROR (or a paused producer, or a close), the broker stays up, every other
//! client carries on, and nothing receipted is lost.

/// The `plugboard` binary cargo built for this test run (cargo defines
/// `CARGO_BIN_EXE_plugboard` only for this package's test targets, so the support crate is told).
pub struct Plugboard;

impl plugboard_test_support::BrokerBinary for Plugboard {
    const PATH: &'static str = env!("CARGO_BIN_EXE_plugboard");
}

/// The shared e2e harness (`plugboard_test_support::harness`), its `Broker` running
/// [`Plugboard`]: test modules `use crate::harness::*;`.
mod harness {
    pub use plugboard_test_support::harness::*;

    /// A broker process of this test run's `plugboard`, killed on drop.
    pub type Broker = plugboard_test_support::harness::Broker<crate::Plugboard>;
}

mod admin;
mod crash;
mod durables;
mod memory;
mod slots;
mod soak;
mod store;
