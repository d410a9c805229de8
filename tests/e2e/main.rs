//! End-to-end conformance tests: each test starts the real `plugboard` binary on
//! 127.0.0.1:0 and speaks raw STOMP to it through the harness of the `plugboard_test_support`
//! crate (`tests/support/`).
//!
//! A test that finds a broker defect stays in the suite (never `#[ignore]`d) and, once the
//! defect is fixed, documents the behaviour as a regression test.

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

mod acks;
mod connect;
mod dead_letter;
mod errors;
mod flow;
mod frames;
mod heartbeat;
mod load;
mod persistence;
mod queues;
mod temp_queues;
mod topics;
mod transactions;
