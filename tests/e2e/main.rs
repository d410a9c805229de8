//! End-to-end conformance tests: each test starts the real `plugboard` binary on
//! 127.0.0.1:0 and speaks raw STOMP to it through the harness of the `plugboard_test_support`
//! crate (`tests/support/`).
//!
//! A test that finds a broker defect stays in the suite (never `#[ignore]`d) and, once the
//! defect is fixed, documents the behaviour as a regression test.

plugboard_test_support::broker_binary!();

mod acks;
mod browsing;
mod cluster;
mod cluster_browse;
mod cluster_cldlq;
mod cluster_durable;
mod cluster_durable_patterns;
mod cluster_exclusive;
mod cluster_load;
mod cluster_message_groups;
mod cluster_message_priority;
mod cluster_pipeline;
mod cluster_plugins;
mod cluster_priority;
mod cluster_queue_limits;
mod cluster_schedule;
mod cluster_security;
mod composites;
mod connect;
mod console;
mod consumer_priority;
mod dead_letter;
mod error_codes;
mod errors;
mod exclusive;
mod flow;
mod frames;
mod groups;
mod heartbeat;
mod load;
mod metrics;
mod persistence;
mod priority;
mod queue_limits;
mod queues;
mod reauth;
mod scheduled;
mod selectors;
mod stomp10;
mod temp_queues;
mod topics;
mod transactions;
mod vhosts;
mod websocket;
mod wildcards;
