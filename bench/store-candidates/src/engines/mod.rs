//! The engines compared: our journal's write path and the embedded-store candidates.

pub mod journal;

#[cfg(feature = "redb")]
pub mod redb_store;

#[cfg(feature = "fjall")]
pub mod fjall_store;
