//! `legacy-auth` (tests only): an authenticator built against `plugboard:plugin@0.1.0`, the WIT
//! as it was before 0.1.1 added `authenticate-peer`, kept verbatim in this crate's `wit/`. The
//! broker must still load it and call its 0.1.0 `authenticate` export.
//!
//! It admits login `legacy` with passcode `old-plugin` as principal `legacy`, which may send
//! and subscribe to `/queue/legacy.*` only, and refuses everyone else.

wit_bindgen::generate!({ world: "authenticator", path: "wit" });

use exports::plugboard::plugin::authenticate::{AuthRequest, AuthResult, Guest as Authenticate};
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use plugboard::plugin::types::{HeaderNeed, Manifest, Needs, Principal};

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_config: String) -> Result<Manifest, String> {
        let none = || Needs {
            headers: HeaderNeed::None,
            body: false,
        };
        Ok(Manifest {
            send: none(),
            deliver: none(),
        })
    }
}

impl Authenticate for Plugin {
    fn authenticate(request: AuthRequest) -> AuthResult {
        decide(request.login.as_deref(), request.passcode.as_deref())
    }
}

/// The one user this plugin knows.
pub fn decide(login: Option<&str>, passcode: Option<&str>) -> AuthResult {
    if login == Some("legacy") && passcode == Some("old-plugin") {
        AuthResult::Allow(Principal {
            name: "legacy".into(),
            groups: vec!["built-against-0.1.0".into()],
            may_send: vec!["/queue/legacy.*".into()],
            may_subscribe: vec!["/queue/legacy.*".into()],
        })
    } else {
        AuthResult::Deny("legacy-auth knows only `legacy`".into())
    }
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_one_user_is_admitted() {
        assert!(matches!(
            decide(Some("legacy"), Some("old-plugin")),
            AuthResult::Allow(_)
        ));
        for (login, passcode) in [
            (Some("legacy"), None),
            (Some("legacy"), Some("wrong")),
            (None, Some("old-plugin")),
        ] {
            assert!(matches!(decide(login, passcode), AuthResult::Deny(_)));
        }
    }
}
