//! Code shared by Plugboard's end-to-end test binaries (the `[[test]]` targets of the `plugboard`
//! package under `tests/`, and the plugin-host tests in `host/tests/`). A dev-only crate: nothing
//! here is part of the broker.
//!
//! - [`broker`]: starts a real `plugboard` process for a test and kills it on drop.
//! - [`stomp`]: a raw STOMP client with a frame parser of its own.
//! - [`plugins`]: builds the plugin components once per test binary.
//!
//! Cargo defines `CARGO_BIN_EXE_plugboard` only while compiling the `plugboard` package's own
//! test targets, never for this crate: the launcher takes the broker binary's path from its
//! caller.

pub mod broker;
pub mod plugins;
pub mod stomp;
