//! The hostile-client suite: the real broker attacked over TCP the way the hardening issue
//! found it could be, one test per attack. Every test checks the broker's promise: the attacker
//! gets a clear ERROR (or a paused producer, or a close), the broker stays up, every other
//! client carries on, and nothing receipted is lost.

plugboard_test_support::broker_binary!();

mod admin;
mod crash;
mod durables;
mod memory;
mod slots;
mod soak;
mod store;
