//! Infrastructure shared by the end-to-end test binaries (`e2e`, `plugins_e2e`, `reload`), each
//! of which includes it with `#[path = "../common/mod.rs"] mod common;`: the broker launcher,
//! the plugin build and the raw STOMP client.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod broker;
pub mod plugins;
pub mod stomp;
