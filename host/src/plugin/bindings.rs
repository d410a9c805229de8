//! The only `bindgen!` in the broker: host-side types and calls generated from `wit/`.
//!
//! One world (`host`: every hook, every form of authenticate) generates every interface's types;
//! each plugin then loads only the interfaces of the hooks it serves (`GuestIndices` per exported
//! interface), so a component built for a smaller world (`authenticator`, `router`, ...) links
//! as well.

wasmtime::component::bindgen!({
    world: "host",
    path: "../wit",
    exports: { default: async },
});

pub use self::plugboard::plugin::{clock, context, kv, log, types};
pub use exports::plugboard::plugin::{
    authenticate, authenticate_expiring, authenticate_peer, deliver, lifecycle, redeliver, send,
};
