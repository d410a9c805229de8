//! The three forms of the authenticate hook a component may export: `authenticate-expiring`
//! (WIT 0.1.4: the request of `authenticate-peer` plus the time and whether the client is
//! re-authenticating; the grant may carry an expiry), `authenticate-peer` (0.1.1: the CONNECT
//! frame plus what the listener knows of the client) and `authenticate` (0.1.0, which every
//! older plugin exports). The host calls the newest form a component exports, so plugins built
//! against older versions keep working unchanged (their logins never expire).

use wasmtime::component::{Instance, InstancePre};
use wasmtime::Store;

use super::bindings::types::Principal as WitPrincipal;
use super::bindings::{authenticate, authenticate_expiring, authenticate_peer};
use super::convert;
use super::pool::State;
use super::AuthRequest;

/// The interface of the 0.1.1 hook, as a component names its export.
pub const AUTHENTICATE_PEER: &str = "plugboard:plugin/authenticate-peer@0.1.4";
/// The interface of the 0.1.4 hook, as a component names its export.
pub const AUTHENTICATE_EXPIRING: &str = "plugboard:plugin/authenticate-expiring@0.1.4";

/// The authenticate export of a component, looked up once per plugin.
pub enum AuthIndices {
    /// `authenticate-expiring` (0.1.4).
    Expiring(authenticate_expiring::GuestIndices),
    /// `authenticate-peer` (0.1.1).
    Peer(authenticate_peer::GuestIndices),
    /// `authenticate` (0.1.0).
    Plain(authenticate::GuestIndices),
}

/// The authenticate export of one instance.
pub enum AuthGuest {
    /// `authenticate-expiring` (0.1.4).
    Expiring(authenticate_expiring::Guest),
    /// `authenticate-peer` (0.1.1).
    Peer(authenticate_peer::Guest),
    /// `authenticate` (0.1.0).
    Plain(authenticate::Guest),
}

/// What the hook answered: a principal and when its login ends (unix ms, only the 0.1.4 form
/// gives one), or the reason of a refusal.
pub type AuthAnswer = Result<(WitPrincipal, Option<u64>), String>;

impl AuthIndices {
    /// The newest form the component exports (its types must then match): `authenticate-expiring`,
    /// else `authenticate-peer`, else `authenticate`.
    pub fn new(pre: &InstancePre<State>) -> wasmtime::Result<AuthIndices> {
        let exports = |name| pre.component().get_export_index(None, name).is_some();
        if exports(AUTHENTICATE_EXPIRING) {
            authenticate_expiring::GuestIndices::new(pre).map(AuthIndices::Expiring)
        } else if exports(AUTHENTICATE_PEER) {
            authenticate_peer::GuestIndices::new(pre).map(AuthIndices::Peer)
        } else {
            authenticate::GuestIndices::new(pre).map(AuthIndices::Plain)
        }
    }

    /// The interface name of the form in use (for `--check-config` output).
    pub fn interface(&self, plain: &'static str) -> &'static str {
        match self {
            AuthIndices::Expiring(_) => AUTHENTICATE_EXPIRING,
            AuthIndices::Peer(_) => AUTHENTICATE_PEER,
            AuthIndices::Plain(_) => plain,
        }
    }

    /// The typed export of `instance`.
    pub fn load(
        &self,
        store: &mut Store<State>,
        instance: &Instance,
    ) -> wasmtime::Result<AuthGuest> {
        Ok(match self {
            AuthIndices::Expiring(i) => AuthGuest::Expiring(i.load(store, instance)?),
            AuthIndices::Peer(i) => AuthGuest::Peer(i.load(store, instance)?),
            AuthIndices::Plain(i) => AuthGuest::Plain(i.load(store, instance)?),
        })
    }
}

impl AuthGuest {
    /// Calls the hook: `Ok(Ok((principal, expiry)))` admits, `Ok(Err(reason))` refuses.
    pub async fn call(
        &self,
        store: &mut Store<State>,
        req: &AuthRequest,
    ) -> wasmtime::Result<AuthAnswer> {
        Ok(match self {
            AuthGuest::Expiring(g) => {
                let request = convert::expiring_auth_request(req);
                match g.call_authenticate(store, &request).await? {
                    authenticate_expiring::ExpiringAuthResult::Allow(grant) => {
                        Ok((grant.principal, grant.expires_at_ms))
                    }
                    authenticate_expiring::ExpiringAuthResult::Deny(reason) => Err(reason),
                }
            }
            AuthGuest::Peer(g) => {
                let request = convert::peer_auth_request(req);
                match g.call_authenticate(store, &request).await? {
                    authenticate_peer::AuthResult::Allow(p) => Ok((p, None)),
                    authenticate_peer::AuthResult::Deny(reason) => Err(reason),
                }
            }
            AuthGuest::Plain(g) => {
                let request = convert::auth_request(req);
                match g.call_authenticate(store, &request).await? {
                    authenticate::AuthResult::Allow(p) => Ok((p, None)),
                    authenticate::AuthResult::Deny(reason) => Err(reason),
                }
            }
        })
    }
}
