//! `jwt-auth`: logs clients in with a JSON Web Token and ends their session when it expires.
//!
//! The token is read from CONNECT's `passcode` by default (as RabbitMQ's OAuth2 plugin does;
//! `token_from = "login"` or `"header:NAME"` read it elsewhere). It is verified with one of the
//! keys of the config: HS256 with a shared `secret`, RS256 or ES256 with a PEM `public_key`.
//! A key is chosen by the token's `kid` when the key has one, and must be of the algorithm the
//! token's header names (a token cannot pick a weaker algorithm for a key). Then:
//!
//! - `iss` must be `issuer` and `aud` must contain `audience`;
//! - `exp` is required and must be in the future, `nbf` (when present) in the past, both with
//!   `leeway_seconds` of tolerance; the host's clock decides (`now-ms`: plugins have none);
//! - the user is the `user_claim` (default `sub`); the rights are the union of the `scopes`
//!   entries of the scopes the token carries in `scope_claim` (default `scope`: a
//!   space-separated string, or an array of strings). A token without any known scope gets no
//!   rights at all (it may connect, but neither send nor subscribe).
//!
//! The login expires at `exp` (WIT 0.1.4 `authenticate-expiring`): the broker closes the
//! connection then, unless the client re-authenticated with a fresh token (`reauth:true`).
//!
//! The JWT crate is `jsonwebtoken` with its pure-Rust crypto backend (RustCrypto), which builds
//! for `wasm32-wasip2`. Its own clock checks are off: on WASI they would read a clock the
//! broker does not grant; `exp` and `nbf` are checked here against the host's time.

mod config;

use std::collections::BTreeSet;

use jsonwebtoken::{decode, decode_header, Algorithm, Validation};
use plugboard_sdk::prelude::*;
use serde::Deserialize;

use config::Key;
pub use config::{Config, KeyConfig, ScopeRights, TokenSource};

/// The plugin: its keys and rules, parsed once per instance.
pub struct JwtAuth {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    leeway_seconds: u64,
    token_from: TokenSource,
    user_claim: String,
    scope_claim: String,
    scopes: std::collections::BTreeMap<String, ScopeRights>,
}

/// Longest token accepted (a JWT with a few scopes is well under 2 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

impl Plugin for JwtAuth {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        let keys = config.keys()?;
        Ok(JwtAuth {
            keys,
            issuer: config.issuer,
            audience: config.audience,
            leeway_seconds: config.leeway_seconds,
            token_from: config.token_from,
            user_claim: config.user_claim,
            scope_claim: config.scope_claim,
            scopes: config.scopes,
        })
    }
}

impl ExpiringAuthenticator for JwtAuth {
    fn authenticate_expiring(&self, request: &ExpiringAuthRequest) -> ExpiringAuthResult {
        match self.admit(request) {
            Ok((principal, expires_at_ms)) => {
                ExpiringAuthResult::allow(principal, Some(expires_at_ms))
            }
            Err(reason) => ExpiringAuthResult::Deny(reason),
        }
    }
}

plugboard_sdk::export_expiring_authenticator!(JwtAuth);

/// The claims the plugin reads (the signature covers the whole token; others are ignored).
#[derive(Debug, Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl JwtAuth {
    /// Verifies the request's token: the principal and when its login ends (Unix ms), or why
    /// not (said to the client, so it names no key material).
    pub fn admit(&self, request: &ExpiringAuthRequest) -> Result<(Principal, u64), String> {
        let token = self.token_from.read(request).ok_or("no token")?;
        if token.len() > MAX_TOKEN_BYTES {
            return Err("token too large".into());
        }
        let header = decode_header(token).map_err(|_| "malformed token".to_string())?;
        let key = self
            .keys
            .iter()
            .find(|k| k.algorithm == header.alg && k.matches_kid(header.kid.as_deref()))
            .ok_or("no key for the token's algorithm and kid")?;
        let mut validation = Validation::new(key.algorithm);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let claims = decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|e| format!("invalid token: {}", reason(e.kind())))?
            .claims;
        let now = request.now_ms / 1000;
        if claims.exp.saturating_add(self.leeway_seconds) <= now {
            return Err("token expired".into());
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_seconds))
        {
            return Err("token not valid yet".into());
        }
        let name = match claims.rest.get(&self.user_claim) {
            Some(serde_json::Value::String(name)) if !name.is_empty() => name.clone(),
            _ => return Err(format!("token has no '{}' claim", self.user_claim)),
        };
        let scopes = scopes_of(claims.rest.get(&self.scope_claim));
        let principal = self.principal(name, &scopes);
        trace_note!(
            "{} with scopes [{}]",
            principal.name,
            principal.groups.join(" ")
        );
        // Milliseconds, as the host wants them (the token's whole seconds, leeway included).
        let expires = claims
            .exp
            .saturating_add(self.leeway_seconds)
            .saturating_mul(1000);
        Ok((principal, expires))
    }

    /// The principal of `name` with the rights of its known `scopes` (groups: those scopes).
    fn principal(&self, name: String, scopes: &BTreeSet<String>) -> Principal {
        let mut may_send = BTreeSet::new();
        let mut may_subscribe = BTreeSet::new();
        let mut groups = Vec::new();
        for scope in scopes {
            if let Some(rights) = self.scopes.get(scope) {
                groups.push(scope.clone());
                may_send.extend(rights.may_send.iter().cloned());
                may_subscribe.extend(rights.may_subscribe.iter().cloned());
            }
        }
        Principal {
            name,
            groups,
            may_send: may_send.into_iter().collect(),
            may_subscribe: may_subscribe.into_iter().collect(),
        }
    }
}

/// The scopes of a `scope` claim: a space-separated string (RFC 8693) or an array of strings.
fn scopes_of(claim: Option<&serde_json::Value>) -> BTreeSet<String> {
    match claim {
        Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// A verification failure in words for the client.
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "bad signature",
        K::InvalidIssuer => "wrong issuer",
        K::InvalidAudience => "wrong audience",
        K::MissingRequiredClaim(_) => "a required claim (exp, iss, aud) is missing",
        K::InvalidAlgorithm => "algorithm not allowed",
        _ => "malformed",
    }
}

/// The algorithms a key may have (HS256 with a secret, RS256 or ES256 with a public key).
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(format!(
            "algorithm '{other}' is not supported (HS256, RS256, ES256)"
        )),
    }
}

#[cfg(test)]
mod tests;
