//! API tokens: `tokens = [{ token_sha256, name, groups, may_send, may_subscribe }]`.
//!
//! A WebSocket client may carry a bearer token in its HTTP upgrade (`Authorization: Bearer`
//! or `?access_token=`); when CONNECT has no `login`, the token decides who it is. Tokens are
//! long random secrets, not passwords a person chose, so one SHA-256 is enough to keep a leaked
//! config from giving them away (there is nothing to brute-force), and the lookup is a map from
//! hash to entry: the secret itself is never compared, so its bytes cannot leak by timing.
//! An unknown token is refused, never treated as anonymous.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// One token as written (and kept, with its hash decoded beside it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUser {
    /// SHA-256 of the token, 64 hex digits (`printf %s TOKEN | sha256sum`).
    pub token_sha256: String,
    /// The principal's name.
    pub name: String,
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

/// The tokens, by the SHA-256 of each.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<[u8; 32], TokenUser>);

impl Tokens {
    /// Checks the entries: 64 hex digits each, no hash twice, a non-empty name. The errors
    /// never quote the hash (it may be a token pasted in the wrong place).
    pub fn new(entries: Vec<TokenUser>) -> Result<Tokens, String> {
        let mut map = HashMap::with_capacity(entries.len());
        for (i, entry) in entries.into_iter().enumerate() {
            if entry.name.is_empty() {
                return Err(format!("config: tokens[{i}]: empty name"));
            }
            let fail = |reason: &str| format!("config: tokens[{i}] (`{}`): {reason}", entry.name);
            let hash = decode_hex(&entry.token_sha256).ok_or_else(|| {
                fail(
                    "token_sha256 must be 64 hex digits, the SHA-256 of the token \
                     (`printf %s TOKEN | sha256sum`), not the token itself",
                )
            })?;
            if let Some(first) = map.get(&hash) {
                let first: &TokenUser = first;
                return Err(fail(&format!(
                    "the same token_sha256 as `{}`: each token must be different",
                    first.name
                )));
            }
            map.insert(hash, entry);
        }
        Ok(Tokens(map))
    }

    /// The entry whose hash is the token's SHA-256, if any.
    pub fn find(&self, token: &str) -> Option<&TokenUser> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.0.get(&digest)
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// 64 hex digits (either case) as 32 bytes.
fn decode_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of `token` in hex.
    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn entry(hash: &str, name: &str) -> TokenUser {
        TokenUser {
            token_sha256: hash.into(),
            name: name.into(),
            groups: Vec::new(),
            may_send: vec!["/queue/a".into()],
            may_subscribe: Vec::new(),
        }
    }

    #[test]
    fn a_token_finds_its_entry_by_hash_and_nothing_else_does() {
        let t = Tokens::new(vec![
            entry(&sha("tok-1"), "one"),
            entry(&sha("tok-2").to_uppercase(), "two"),
        ])
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t.find("tok-1").unwrap().name, "one");
        assert_eq!(t.find("tok-2").unwrap().name, "two");
        for other in ["", "tok-1 ", "tok-3", &sha("tok-1")] {
            assert!(t.find(other).is_none(), "{other:?}");
        }
        assert!(t.find(&"x".repeat(1 << 20)).is_none());
    }

    #[test]
    fn the_known_sha256_of_a_token_matches() {
        // `printf %s abc | sha256sum`
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let t = Tokens::new(vec![entry(hex, "abc")]).unwrap();
        assert_eq!(t.find("abc").unwrap().name, "abc");
    }

    #[test]
    fn bad_hashes_duplicates_and_empty_names_are_refused() {
        for bad in [
            "",
            "abc",
            "the-token-itself",
            &sha("t")[..63],
            &format!("{}0", sha("t")),
            &format!("{}g", &sha("t")[..63]),
            &format!("{}é", &sha("t")[..62]),
        ] {
            let e = Tokens::new(vec![entry(bad, "svc")]).unwrap_err();
            assert!(
                e.contains("tokens[0]") && e.contains("`svc`") && e.contains("64 hex digits"),
                "{bad}: {e}"
            );
            if !bad.is_empty() {
                assert!(!e.contains(bad), "the error must not quote the value: {e}");
            }
        }
        let e = Tokens::new(vec![
            entry(&sha("t"), "first"),
            entry(&sha("t").to_uppercase(), "second"),
        ])
        .unwrap_err();
        assert!(
            e.contains("tokens[1]") && e.contains("`first`") && e.contains("different"),
            "{e}"
        );
        let e = Tokens::new(vec![entry(&sha("t"), "")]).unwrap_err();
        assert!(e.contains("tokens[0]: empty name"), "{e}");
    }
}
