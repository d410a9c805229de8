//! The raw STOMP side of the tests: [`frame`] (frames, their encoding and a parser of its own,
//! deliberately independent of the broker's codec) and [`client`] (a client over TCP). Both are
//! re-exported here, so `stomp::{Client, Frame, ...}` names everything.

pub mod client;
pub mod frame;

pub use client::*;
pub use frame::*;
