//! `static-auth`: authenticates CONNECTs against users listed in the plugin's config.
//!
//! Passwords are never stored in plain text: each user has a `salt` and `password_sha256`, the
//! lowercase hex SHA-256 of `salt + password` (e.g. `printf '%s' "$salt$password" | sha256sum`).
//! The principal it returns carries the user's groups and send/subscribe patterns, which the host
//! enforces.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

wit_bindgen::generate!({ world: "authenticator", path: "../../wit" });

use exports::plugboard::plugin::authenticate::{AuthRequest, AuthResult, Guest as Authenticate};
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use plugboard::plugin::types::{HeaderNeed, Manifest, Needs, Principal};

/// The plugin's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The known users.
    pub users: Vec<User>,
}

/// One user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Salt prepended to the password before hashing.
    pub salt: String,
    /// Lowercase hex SHA-256 of `salt + password`.
    pub password_sha256: String,
    /// Groups reported in the principal.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Destination patterns the user may send to (none by default).
    #[serde(default)]
    pub may_send: Vec<String>,
    /// Destination patterns the user may subscribe to (none by default).
    #[serde(default)]
    pub may_subscribe: Vec<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Parses and checks the config.
pub fn parse_config(json: &str) -> Result<Config, String> {
    let config: Config = serde_json::from_str(json).map_err(|e| format!("config: {e}"))?;
    for user in &config.users {
        let hash = &user.password_sha256;
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "config: user `{}`: password_sha256 must be 64 hex digits",
                user.name
            ));
        }
    }
    Ok(config)
}

/// Lowercase hex SHA-256 of `salt + password`.
pub fn hash_password(salt: &str, password: &str) -> String {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(password.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a login and passcode against the config.
pub fn check<'a>(
    config: &'a Config,
    login: Option<&str>,
    passcode: Option<&str>,
) -> Result<&'a User, String> {
    let login = login.ok_or("login required")?;
    let user = config.users.iter().find(|u| u.name == login);
    // Hash even for unknown users so that timing does not tell which logins exist.
    let computed = hash_password(user.map_or("", |u| u.salt.as_str()), passcode.unwrap_or(""));
    match user {
        Some(u) if passcode.is_some() && computed.eq_ignore_ascii_case(&u.password_sha256) => Ok(u),
        _ => Err("invalid login or passcode".to_string()),
    }
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(config: String) -> Result<Manifest, String> {
        let parsed = parse_config(&config)?;
        let _ = CONFIG.set(parsed);
        let none = Needs {
            headers: HeaderNeed::None,
            body: false,
        };
        Ok(Manifest {
            send: none.clone(),
            deliver: none,
        })
    }
}

impl Authenticate for Plugin {
    fn authenticate(request: AuthRequest) -> AuthResult {
        let Some(config) = CONFIG.get() else {
            return AuthResult::Deny("not initialised".into());
        };
        match check(
            config,
            request.login.as_deref(),
            request.passcode.as_deref(),
        ) {
            Ok(user) => AuthResult::Allow(Principal {
                name: user.name.clone(),
                groups: user.groups.clone(),
                may_send: user.may_send.clone(),
                may_subscribe: user.may_subscribe.clone(),
            }),
            Err(reason) => AuthResult::Deny(reason),
        }
    }
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let hash = hash_password("s1", "pw");
        parse_config(&format!(
            r#"{{"users":[{{"name":"a","salt":"s1","password_sha256":"{hash}"}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn accepts_right_password_only() {
        let c = config();
        assert!(check(&c, Some("a"), Some("pw")).is_ok());
        assert!(check(&c, Some("a"), Some("px")).is_err());
        assert!(check(&c, Some("a"), None).is_err());
        assert!(check(&c, None, Some("pw")).is_err());
        assert!(check(&c, Some("b"), Some("pw")).is_err());
    }

    #[test]
    fn rejects_bad_hash_and_unknown_keys() {
        assert!(
            parse_config(r#"{"users":[{"name":"a","salt":"","password_sha256":"xyz"}]}"#)
                .unwrap_err()
                .contains("64 hex")
        );
        assert!(parse_config(r#"{"userz":[]}"#).is_err());
    }
}
