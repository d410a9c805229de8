//! The two forms of the authenticate hook a component may export: `authenticate-peer` (WIT
//! 0.1.1: the CONNECT frame plus what the listener knows of the client) and `authenticate`
//! (0.1.0, which every older plugin exports). A component that exports `authenticate-peer` is
//! called through it; one that exports only `authenticate` gets the 0.1.0 request, so plugins
//! built before 0.1.1 keep working unchanged.

use wasmtime::component::{Instance, InstancePre};
use wasmtime::Store;

use super::bindings::types::Principal as WitPrincipal;
use super::bindings::{authenticate, authenticate_peer};
use super::convert;
use super::pool::State;
use super::AuthRequest;

/// The interface of the 0.1.1 hook, as a component names its export.
pub const AUTHENTICATE_PEER: &str = "plugboard:plugin/authenticate-peer@0.1.4";

/// The authenticate export of a component, looked up once per plugin.
pub enum AuthIndices {
    /// `authenticate-peer` (0.1.1).
    Peer(authenticate_peer::GuestIndices),
    /// `authenticate` (0.1.0).
    Plain(authenticate::GuestIndices),
}

/// The authenticate export of one instance.
pub enum AuthGuest {
    /// `authenticate-peer` (0.1.1).
    Peer(authenticate_peer::Guest),
    /// `authenticate` (0.1.0).
    Plain(authenticate::Guest),
}

impl AuthIndices {
    /// `authenticate-peer` when the component exports it (its types must then match), else
    /// `authenticate`.
    pub fn new(pre: &InstancePre<State>) -> wasmtime::Result<AuthIndices> {
        if pre
            .component()
            .get_export_index(None, AUTHENTICATE_PEER)
            .is_some()
        {
            authenticate_peer::GuestIndices::new(pre).map(AuthIndices::Peer)
        } else {
            authenticate::GuestIndices::new(pre).map(AuthIndices::Plain)
        }
    }

    /// The typed export of `instance`.
    pub fn load(
        &self,
        store: &mut Store<State>,
        instance: &Instance,
    ) -> wasmtime::Result<AuthGuest> {
        Ok(match self {
            AuthIndices::Peer(i) => AuthGuest::Peer(i.load(store, instance)?),
            AuthIndices::Plain(i) => AuthGuest::Plain(i.load(store, instance)?),
        })
    }
}

impl AuthGuest {
    /// Calls the hook: `Ok(Ok(principal))` admits, `Ok(Err(reason))` refuses.
    pub async fn call(
        &self,
        store: &mut Store<State>,
        req: &AuthRequest,
    ) -> wasmtime::Result<Result<WitPrincipal, String>> {
        Ok(match self {
            AuthGuest::Peer(g) => {
                let request = convert::peer_auth_request(req);
                match g.call_authenticate(store, &request).await? {
                    authenticate_peer::AuthResult::Allow(p) => Ok(p),
                    authenticate_peer::AuthResult::Deny(reason) => Err(reason),
                }
            }
            AuthGuest::Plain(g) => {
                let request = convert::auth_request(req);
                match g.call_authenticate(store, &request).await? {
                    authenticate::AuthResult::Allow(p) => Ok(p),
                    authenticate::AuthResult::Deny(reason) => Err(reason),
                }
            }
        })
    }
}
