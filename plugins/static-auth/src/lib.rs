//! `static-auth`: authenticates CONNECTs against users listed in the plugin's config.
//!
//! Passwords are never stored in plain text: each user has a `password_hash`, an argon2id PHC
//! string (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), which `plugboard hash-password`
//! prints for a password read from stdin. A slow, memory-hard hash is what keeps a leaked config
//! from giving away the passwords: the old scheme (`salt` + `password_sha256`, one SHA-256) is
//! refused at `init`, as are hashes that are not argon2id v=19 or whose parameters are below
//! [`MIN_M_KIB`] / [`MIN_T`].
//!
//! Verification recomputes the hash with the string's own parameters and compares in constant
//! time (`argon2`'s `verify_password`). A login that names no user is hashed too, against a dummy
//! hash with the parameters most users have, so that the time a refusal takes does not tell
//! which logins exist.
//!
//! Sandbox: one verification needs `m` KiB of guest memory on top of the plugin's own ~1 MiB,
//! and the host replaces an instance that grew past 3/4 of its `memory_mb` after every call. So
//! `memory_mb` should be at least 4/3 × (m + 2 MiB): 32 for the default m = 19 MiB. `init`
//! reserves that memory once, so a cap that is too small fails at start-up rather than at the
//! first login. The default parameters take tens of milliseconds per CONNECT in the plugin, so
//! give `deadline_ms` room (the sample configs use 500).
//!
//! The principal it returns carries the user's groups and send/subscribe patterns, which the host
//! enforces.
//!
//! Client certificates (RabbitMQ's `ssl_cert_login`): `certificates` lists subjects that log in
//! by their TLS client certificate alone, no passcode. An entry matches a certificate by its CN
//! (`common_name`) or its whole subject DN (`subject`, RFC 4514 as the broker passes it, e.g.
//! `CN=sensor-7,O=Example`); the principal is `name` (default: the CN, else the DN). It applies
//! only when the connection came through a TLS listener and the broker verified the certificate
//! against its `client_ca` (the broker passes no other certificate). A CONNECT `login` naming
//! someone else is refused; a certificate no entry matches falls back to login and passcode.
//!
//! API tokens ([`tokens`]): `tokens` lists the SHA-256 of bearer tokens a WebSocket client may
//! carry in its HTTP upgrade; when CONNECT has no `login`, the token logs in as its entry's
//! `name`, and an unknown token is refused.
//!
//! HTTP Basic credentials from a WebSocket upgrade count as login and passcode when CONNECT
//! carries no `login` (as the broker's built-in users do): CONNECT's own pair, when present, is
//! the client's explicit statement and wins.

pub mod tokens;

use argon2::password_hash::phc::{Output, PasswordHash, Salt};
use argon2::{Argon2, Params, PasswordVerifier, ARGON2ID_IDENT};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::sync::OnceLock;

wit_bindgen::generate!({ world: "peer-authenticator", path: "../../wit" });

use exports::plugboard::plugin::authenticate_peer::{
    AuthResult, Guest as Authenticate, PeerAuthRequest,
};
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use plugboard::plugin::log::{log, Level};
use plugboard::plugin::types::{
    ClientCertificate, HeaderNeed, ListenerKind, Manifest, Needs, Principal, UpgradeCredentials,
};
use tokens::{TokenUser, Tokens};

/// Smallest accepted memory cost, KiB (8 MiB). A floor, not a recommendation: it refuses the toy
/// values that examples and tests use (m = 4096 and below). OWASP's lightest argon2id setting
/// is 7 MiB with t = 5; its minimum with t = 2 is the 19 MiB `plugboard hash-password` uses.
pub const MIN_M_KIB: u32 = 8 * 1024;
/// Smallest accepted number of passes.
pub const MIN_T: u32 = 1;
/// The only argon2 version accepted (0x13, the current one; written `v=19`).
const VERSION: u32 = 0x13;
/// Salt of the dummy hash that unknown logins are verified against.
const DUMMY_SALT: &[u8] = b"static-auth: no such user";

/// How to make a `password_hash`, for the errors that ask for one.
const HOW_TO_HASH: &str =
    "make one with `plugboard hash-password` (it reads the password on stdin and prints the string)";

/// The plugin's config, checked.
#[derive(Debug)]
pub struct Config {
    /// The known users.
    pub users: Vec<User>,
    /// Client certificate subjects that log in without a passcode.
    pub certificates: Vec<CertificateUser>,
    /// API tokens, by their SHA-256.
    pub tokens: Tokens,
    /// What a login that names no user is verified against (never matches).
    dummy: PasswordHash,
}

/// A client certificate subject that logs in as a principal (`ssl_cert_login`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateUser {
    /// The principal's name (default: `common_name`, else `subject`).
    #[serde(default)]
    pub name: Option<String>,
    /// Matches a certificate whose subject CN is exactly this.
    #[serde(default)]
    pub common_name: Option<String>,
    /// Matches a certificate whose subject DN (RFC 4514) is exactly this.
    #[serde(default)]
    pub subject: Option<String>,
    /// Groups reported in the principal.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Destination patterns it may send to (none by default).
    #[serde(default)]
    pub may_send: Vec<String>,
    /// Destination patterns it may subscribe to (none by default).
    #[serde(default)]
    pub may_subscribe: Vec<String>,
}

impl CertificateUser {
    /// Whether this entry names the certificate.
    fn matches(&self, cert: &ClientCertificate) -> bool {
        self.subject.as_deref() == Some(cert.subject.as_str())
            || (self.common_name.is_some() && self.common_name == cert.common_name)
    }

    /// The principal's name.
    fn principal_name(&self) -> &str {
        self.name
            .as_deref()
            .or(self.common_name.as_deref())
            .or(self.subject.as_deref())
            .unwrap_or_default()
    }
}

/// One user.
#[derive(Debug)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The argon2id hash of the password, parsed and checked.
    pub password_hash: PasswordHash,
    /// Groups reported in the principal.
    pub groups: Vec<String>,
    /// Destination patterns the user may send to (none by default).
    pub may_send: Vec<String>,
    /// Destination patterns the user may subscribe to (none by default).
    pub may_subscribe: Vec<String>,
}

/// The config table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    certificates: Vec<CertificateUser>,
    #[serde(default)]
    tokens: Vec<TokenUser>,
}

/// One user as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    /// The argon2id PHC string.
    #[serde(default)]
    password_hash: Option<String>,
    /// The retired SHA-256 scheme's keys: read only to refuse them with a useful message.
    #[serde(default)]
    salt: Option<IgnoredAny>,
    #[serde(default)]
    password_sha256: Option<IgnoredAny>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    may_send: Vec<String>,
    #[serde(default)]
    may_subscribe: Vec<String>,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Parses and checks the config.
pub fn parse_config(json: &str) -> Result<Config, String> {
    let raw: RawConfig = serde_json::from_str(json).map_err(|e| format!("config: {e}"))?;
    let mut users = Vec::with_capacity(raw.users.len());
    for user in raw.users {
        let name = user.name;
        let fail = |reason: String| format!("config: user `{name}`: {reason}");
        if user.salt.is_some() || user.password_sha256.is_some() {
            return Err(fail(format!(
                "`salt` and `password_sha256` (one salted SHA-256) are no longer accepted: a fast \
                 hash is brute-forced quickly from a leaked config. Replace them with \
                 `password_hash`, an argon2id PHC string; {HOW_TO_HASH}"
            )));
        }
        let Some(phc) = user.password_hash else {
            return Err(fail(format!(
                "missing `password_hash` (an argon2id PHC string); {HOW_TO_HASH}"
            )));
        };
        let password_hash = check_hash(&phc).map_err(|e| fail(format!("password_hash: {e}")))?;
        users.push(User {
            name,
            password_hash,
            groups: user.groups,
            may_send: user.may_send,
            may_subscribe: user.may_subscribe,
        });
    }
    for (i, cert) in raw.certificates.iter().enumerate() {
        if cert.common_name.is_none() && cert.subject.is_none() {
            return Err(format!(
                "config: certificates[{i}]: give `common_name` or `subject` (the DN) to match"
            ));
        }
        if cert.principal_name().is_empty() {
            return Err(format!("config: certificates[{i}]: empty name"));
        }
    }
    let tokens = Tokens::new(raw.tokens)?;
    let dummy = dummy_hash(&users)?;
    Ok(Config {
        users,
        certificates: raw.certificates,
        tokens,
        dummy,
    })
}

/// Parses a PHC string and checks that it is argon2id v=19 with parameters at or above the floor.
/// The errors never quote the string (it may be a password pasted in the wrong place).
pub fn check_hash(phc: &str) -> Result<PasswordHash, String> {
    const SHAPE: &str = "`$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>`";
    let hash = PasswordHash::new(phc)
        .map_err(|e| format!("not a PHC string ({e}); expected {SHAPE}; {HOW_TO_HASH}"))?;
    if hash.algorithm != ARGON2ID_IDENT {
        return Err(format!(
            "the algorithm is `{}`, only argon2id is accepted; {HOW_TO_HASH}",
            hash.algorithm
        ));
    }
    if hash.version != Some(VERSION) {
        return Err(format!(
            "only argon2 version 19 (`v=19`) is accepted; {HOW_TO_HASH}"
        ));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(format!("no salt or no hash in it; expected {SHAPE}"));
    }
    let params = Params::try_from(&hash).map_err(|e| format!("bad parameters: {e}"))?;
    if params.m_cost() < MIN_M_KIB || params.t_cost() < MIN_T {
        return Err(format!(
            "m={} KiB, t={} is too cheap to slow down a brute force: at least m={MIN_M_KIB} \
             (8 MiB) and t={MIN_T}; {HOW_TO_HASH}",
            params.m_cost(),
            params.t_cost()
        ));
    }
    Ok(hash)
}

/// The dummy hash unknown logins are verified against: the parameters most users have (ties: the
/// first user's; none: the crate's defaults, which `plugboard hash-password` uses too), a fixed
/// salt and an all-zero output, which no password produces in practice.
fn dummy_hash(users: &[User]) -> Result<PasswordHash, String> {
    // Each distinct cost with its number of users, in order of first appearance (usually one).
    let mut costs: Vec<(&PasswordHash, usize)> = Vec::new();
    for user in users {
        match costs
            .iter_mut()
            .find(|(h, _)| same_cost(h, &user.password_hash))
        {
            Some((_, count)) => *count += 1,
            None => costs.push((&user.password_hash, 1)),
        }
    }
    let common = costs.iter().fold(
        None,
        |best: Option<(&PasswordHash, usize)>, &(hash, count)| match best {
            Some((_, most)) if most >= count => best,
            _ => Some((hash, count)),
        },
    );
    let (params, output_len) = match common {
        Some((hash, _)) => (
            hash.params.clone(),
            hash.hash
                .as_ref()
                .map_or(Params::DEFAULT_OUTPUT_LEN, Output::len),
        ),
        None => (
            (&Params::DEFAULT)
                .try_into()
                .map_err(|e| format!("dummy hash: {e}"))?,
            Params::DEFAULT_OUTPUT_LEN,
        ),
    };
    let zeros = [0u8; Output::MAX_LENGTH];
    Ok(PasswordHash {
        algorithm: ARGON2ID_IDENT,
        version: Some(VERSION),
        params,
        salt: Some(Salt::new(DUMMY_SALT).map_err(|e| format!("dummy hash: {e}"))?),
        hash: Some(
            Output::new(&zeros[..output_len.min(Output::MAX_LENGTH)])
                .map_err(|e| format!("dummy hash: {e}"))?,
        ),
    })
}

/// Whether two checked hashes cost the same to verify.
fn same_cost(a: &PasswordHash, b: &PasswordHash) -> bool {
    a.params == b.params && a.hash.as_ref().map(Output::len) == b.hash.as_ref().map(Output::len)
}

/// Grows the heap once to the most memory any verification of `config` needs, so that a memory
/// cap too small for the parameters is an `init` error instead of failed logins later.
fn reserve_hash_memory(config: &Config) -> Result<(), String> {
    let blocks = |h: &PasswordHash| Params::try_from(h).map_or(0, |p| p.block_count());
    // The first of the costliest users; the dummy only matters when there are none (with
    // users, it has the parameters of one of them).
    let mut most: Option<(String, usize)> = None;
    for user in &config.users {
        let n = blocks(&user.password_hash);
        if most.as_ref().is_none_or(|&(_, best)| n > best) {
            most = Some((format!("user `{}`", user.name), n));
        }
    }
    let (who, blocks) = most.unwrap_or_else(|| {
        (
            "the dummy hash for unknown logins".into(),
            blocks(&config.dummy),
        )
    });
    let bytes = blocks.saturating_mul(argon2::Block::SIZE);
    let mut heap: Vec<u8> = Vec::new();
    if heap.try_reserve_exact(bytes).is_err() {
        return Err(format!(
            "config: {who}: verifying its password_hash needs {} KiB of memory, more than the \
             plugin may have: raise the plugin's `memory_mb` (to 4/3 × (m + 2 MiB), e.g. 32 for \
             m = 19 MiB) or use a smaller m",
            bytes / 1024
        ));
    }
    // Keep the allocation from being optimised away.
    std::hint::black_box(&mut heap);
    Ok(())
}

/// Why [`check`] refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No login, an unknown login, no passcode or the wrong one.
    Invalid,
    /// The hash could not be computed (e.g. out of memory): the operator's problem, not the
    /// client's.
    Failed(String),
}

/// What the client is told on any refusal: nothing about which part was wrong.
pub const REFUSED: &str = "invalid login or passcode";

/// Checks a login and passcode against the config.
pub fn check<'a>(
    config: &'a Config,
    login: Option<&str>,
    passcode: Option<&str>,
) -> Result<&'a User, Refusal> {
    let login = login.ok_or(Refusal::Invalid)?;
    let user = config.users.iter().find(|u| u.name == login);
    // Hash even for unknown users and missing passcodes, with the same parameters, so that
    // timing does not tell which logins exist.
    let hash = user.map_or(&config.dummy, |u| &u.password_hash);
    let verified = Argon2::default().verify_password(passcode.unwrap_or("").as_bytes(), hash);
    match (user, verified) {
        (Some(user), Ok(())) if passcode.is_some() => Ok(user),
        (_, Err(argon2::password_hash::Error::PasswordInvalid)) | (_, Ok(())) => {
            Err(Refusal::Invalid)
        }
        (_, Err(e)) => Err(Refusal::Failed(e.to_string())),
    }
}

/// The principal a verified client certificate logs in as: `None` when there is no
/// certificate (or the connection is not TLS) or no entry matches it (then login and passcode
/// decide); `Some(Err)` when CONNECT's `login` names someone else.
pub fn check_certificate<'a>(
    config: &'a Config,
    listener: ListenerKind,
    certificate: Option<&ClientCertificate>,
    login: Option<&str>,
) -> Option<Result<&'a CertificateUser, Refusal>> {
    if !matches!(listener, ListenerKind::Tls | ListenerKind::SecureWebSocket) {
        return None;
    }
    let cert = certificate?;
    let entry = config.certificates.iter().find(|e| e.matches(cert))?;
    match login {
        Some(login) if login != entry.principal_name() => Some(Err(Refusal::Invalid)),
        _ => Some(Ok(entry)),
    }
}

/// The principal a bearer token from the WebSocket upgrade logs in as: `None` when CONNECT
/// names a `login` (then login and passcode decide) or the upgrade carried no token;
/// `Some(Err)` for a token no entry has (no fallback to anonymous).
pub fn check_token<'a>(
    config: &'a Config,
    upgrade: Option<&UpgradeCredentials>,
    login: Option<&str>,
) -> Option<Result<&'a TokenUser, Refusal>> {
    let Some(UpgradeCredentials::Bearer(token)) = upgrade else {
        return None;
    };
    if login.is_some() {
        return None;
    }
    Some(config.tokens.find(token).ok_or(Refusal::Invalid))
}

/// The login and passcode to check: CONNECT's, or when CONNECT names no `login`, HTTP Basic
/// credentials from the WebSocket upgrade.
pub fn login_and_passcode<'a>(
    login: Option<&'a str>,
    passcode: Option<&'a str>,
    upgrade: Option<&'a UpgradeCredentials>,
) -> (Option<&'a str>, Option<&'a str>) {
    match (login, upgrade) {
        (None, Some(UpgradeCredentials::Basic(basic))) => {
            (Some(basic.login.as_str()), Some(basic.passcode.as_str()))
        }
        _ => (login, passcode),
    }
}

/// A principal with these rights (the same for users, certificates and tokens).
fn principal(
    name: &str,
    groups: &[String],
    may_send: &[String],
    may_subscribe: &[String],
) -> Principal {
    Principal {
        name: name.to_string(),
        groups: groups.to_vec(),
        may_send: may_send.to_vec(),
        may_subscribe: may_subscribe.to_vec(),
    }
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(config: String) -> Result<Manifest, String> {
        let parsed = parse_config(&config)?;
        reserve_hash_memory(&parsed)?;
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
    fn authenticate(request: PeerAuthRequest) -> AuthResult {
        let Some(config) = CONFIG.get() else {
            return AuthResult::Deny("not initialised".into());
        };
        match check_certificate(
            config,
            request.listener,
            request.client_certificate.as_ref(),
            request.login.as_deref(),
        ) {
            Some(Ok(entry)) => {
                return AuthResult::Allow(principal(
                    entry.principal_name(),
                    &entry.groups,
                    &entry.may_send,
                    &entry.may_subscribe,
                ))
            }
            Some(Err(_)) => {
                return AuthResult::Deny(
                    "the client certificate logs in as someone other than `login`".into(),
                )
            }
            None => {}
        }
        match check_token(config, request.upgrade.as_ref(), request.login.as_deref()) {
            Some(Ok(entry)) => {
                return AuthResult::Allow(principal(
                    &entry.name,
                    &entry.groups,
                    &entry.may_send,
                    &entry.may_subscribe,
                ))
            }
            Some(Err(_)) => return AuthResult::Deny("unknown access token".into()),
            None => {}
        }
        let (login, passcode) = login_and_passcode(
            request.login.as_deref(),
            request.passcode.as_deref(),
            request.upgrade.as_ref(),
        );
        match check(config, login, passcode) {
            Ok(user) => AuthResult::Allow(principal(
                &user.name,
                &user.groups,
                &user.may_send,
                &user.may_subscribe,
            )),
            Err(Refusal::Invalid) => AuthResult::Deny(REFUSED.into()),
            Err(Refusal::Failed(reason)) => {
                log(
                    Level::Error,
                    &format!("could not verify a password: {reason}"),
                );
                AuthResult::Deny(REFUSED.into())
            }
        }
    }
}

export!(Plugin);

#[cfg(test)]
mod tests;
