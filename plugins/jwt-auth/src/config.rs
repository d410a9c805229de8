//! The plugin's config (`[plugins.config]`): keys, the claims required, where the token is read
//! and what each scope may do. Checked whole at `init`: a bad key or rule stops the plugin
//! from loading, with a message naming it.

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, DecodingKey};
use plugboard_sdk::{ExpiringAuthRequest, Headers};
use serde::Deserialize;

/// Most keys a config may list (key rotation needs two or three).
const MAX_KEYS: usize = 16;

/// `[plugins.config]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The verification keys.
    pub keys: Vec<KeyConfig>,
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The value `aud` must contain.
    pub audience: String,
    /// Tolerance for `exp` and `nbf`, in seconds (clock skew between issuer and broker).
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Where the token is: `passcode` (default), `login` or `header:NAME` (a CONNECT header).
    #[serde(default)]
    pub token_from: TokenSource,
    /// The claim naming the user (default `sub`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim holding the scopes (default `scope`).
    #[serde(default = "default_scope_claim")]
    pub scope_claim: String,
    /// Scope → the destinations it may send to and subscribe to.
    #[serde(default)]
    pub scopes: BTreeMap<String, ScopeRights>,
}

/// One key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// `HS256`, `RS256` or `ES256`.
    pub algorithm: String,
    /// The token header's `kid` this key answers to (absent: any token of its algorithm).
    #[serde(default)]
    pub kid: Option<String>,
    /// HS256: the shared secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256 / ES256: the public key, PEM (`-----BEGIN PUBLIC KEY-----`).
    #[serde(default)]
    pub public_key: Option<String>,
}

/// What a scope allows (destination patterns, `*` matches any run of characters, as the
/// host's rights).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRights {
    #[serde(default)]
    pub may_send: Vec<String>,
    #[serde(default)]
    pub may_subscribe: Vec<String>,
}

/// Where the token is read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum TokenSource {
    #[default]
    Passcode,
    Login,
    Header(String),
}

impl<'de> Deserialize<'de> for TokenSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "passcode" => Ok(TokenSource::Passcode),
            "login" => Ok(TokenSource::Login),
            _ => match text.strip_prefix("header:") {
                Some(name) if !name.is_empty() => Ok(TokenSource::Header(name.to_string())),
                _ => Err(serde::de::Error::custom(format!(
                    "token_from '{text}': expected passcode, login or header:NAME"
                ))),
            },
        }
    }
}

impl TokenSource {
    /// The token in `request`, when it carries one.
    pub fn read<'a>(&self, request: &'a ExpiringAuthRequest) -> Option<&'a str> {
        match self {
            TokenSource::Passcode => request.passcode.as_deref(),
            TokenSource::Login => request.login.as_deref(),
            TokenSource::Header(name) => request.headers.header(name),
        }
        .filter(|t| !t.is_empty())
    }
}

fn default_leeway() -> u64 {
    30
}
fn default_user_claim() -> String {
    "sub".into()
}
fn default_scope_claim() -> String {
    "scope".into()
}

/// A key ready to verify with.
pub(crate) struct Key {
    pub(crate) algorithm: Algorithm,
    kid: Option<String>,
    pub(crate) decoding: DecodingKey,
}

impl Key {
    /// Whether a token whose header says `kid` may be checked with this key.
    pub(crate) fn matches_kid(&self, kid: Option<&str>) -> bool {
        match (&self.kid, kid) {
            (Some(mine), Some(theirs)) => mine == theirs,
            (Some(_), None) => false,
            (None, _) => true,
        }
    }
}

impl Config {
    /// The keys, parsed; an error names the entry.
    pub(crate) fn keys(&self) -> Result<Vec<Key>, String> {
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return Err(format!("keys: list 1 to {MAX_KEYS} keys"));
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("issuer and audience must not be empty".into());
        }
        self.keys
            .iter()
            .enumerate()
            .map(|(i, k)| k.parse().map_err(|e| format!("keys[{i}]: {e}")))
            .collect()
    }
}

impl KeyConfig {
    fn parse(&self) -> Result<Key, String> {
        let algorithm = super::parse_algorithm(&self.algorithm)?;
        let decoding =
            match (algorithm, &self.secret, &self.public_key) {
                (Algorithm::HS256, Some(secret), None) => {
                    if secret.len() < 32 {
                        return Err("an HS256 secret needs at least 32 bytes".into());
                    }
                    DecodingKey::from_secret(secret.as_bytes())
                }
                (Algorithm::RS256, None, Some(pem)) => DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|e| format!("public_key: {e}"))?,
                (Algorithm::ES256, None, Some(pem)) => DecodingKey::from_ec_pem(pem.as_bytes())
                    .map_err(|e| format!("public_key: {e}"))?,
                (Algorithm::HS256, _, _) => return Err("HS256 takes a secret (only)".into()),
                _ => return Err(format!("{} takes a public_key (only)", self.algorithm)),
            };
        Ok(Key {
            algorithm,
            kid: self.kid.clone(),
            decoding,
        })
    }
}
