//! End-to-end tests of the plugin hooks over TCP: each test starts the real `plugboard` binary
//! with the compiled sample plugins (built once per run by `cargo xtask plugins`, never
//! skipped) and speaks raw STOMP to it through the shared client (`plugboard_test_support`).
//!
//! The demo tests run the broker on `examples/plugboard.toml` itself (its plugin paths are
//! relative to that file). Other tests write temporary configs with absolute plugin paths.
//!
//! A test that finds a broker defect stays in the suite (never `#[ignore]`d) and, once the
//! defect is fixed, documents the behaviour as a regression test.

mod support;

mod auth;
mod bad_config;
mod cache;
mod cluster_redeliver;
mod deadlines;
mod declines;
mod delivery_headers;
mod durable_owner;
mod error_codes;
mod expiry;
mod hostile;
mod kv;
mod metrics;
mod reauth;
mod redeliver;
mod routing;
mod selector;
mod tokens;
mod traces;
mod transform;
mod vhosts;
mod wildcard_rights;
