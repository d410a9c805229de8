//! `plugboard hash-password`: argon2id PHC strings for the `password_hash` of the static-auth
//! sample plugin's users (see `plugins/static-auth`). The password comes from stdin, never from
//! the command line (which other users can see and shells keep in their history).

use std::io::{BufRead, Read};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};

/// Default memory cost, KiB: 19 MiB, OWASP's minimum for argon2id with t = 2 (also the `argon2`
/// crate's default).
pub const DEFAULT_M_KIB: u32 = Params::DEFAULT_M_COST;
/// Default number of passes.
pub const DEFAULT_T: u32 = Params::DEFAULT_T_COST;
/// Default number of lanes.
pub const DEFAULT_P: u32 = Params::DEFAULT_P_COST;
/// The smallest memory cost static-auth accepts (its `MIN_M_KIB`): anything lower would only
/// make a hash the plugin refuses.
pub const MIN_M_KIB: u32 = 8 * 1024;
/// Longest password read. A CONNECT header line is at most 16 KiB by default, so anything near
/// this could not be sent anyway; the bound keeps a runaway pipe from filling memory.
pub const MAX_PASSWORD_BYTES: usize = 64 * 1024;

/// The argon2id parameters of a new hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Cost {
            m_kib: DEFAULT_M_KIB,
            t: DEFAULT_T,
            p: DEFAULT_P,
        }
    }
}

/// The argon2id v=19 PHC string of `password` with `cost` and a random 16-byte salt.
pub fn hash(password: &str, cost: Cost) -> Result<String, String> {
    if cost.m_kib < MIN_M_KIB {
        return Err(format!(
            "m={} KiB is below the {MIN_M_KIB} KiB (8 MiB) that static-auth accepts",
            cost.m_kib
        ));
    }
    let params = Params::new(cost.m_kib, cost.t, cost.p, None).map_err(|e| {
        format!(
            "argon2 parameters m={}, t={}, p={}: {e}",
            cost.m_kib, cost.t, cost.p
        )
    })?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing: {e}"))
}

/// Reads the password: everything up to end of input, or only the first line when `one_line`
/// (someone typing at a terminal). One trailing line break is not part of it (`echo` adds one);
/// any other line break, a NUL or invalid UTF-8 is refused, since a CONNECT header could not
/// carry it.
pub fn read_password(input: impl BufRead, one_line: bool) -> Result<String, String> {
    let limit = MAX_PASSWORD_BYTES + 2;
    let mut bytes = Vec::new();
    let mut input = input.take(limit as u64);
    let read = if one_line {
        input.read_until(b'\n', &mut bytes)
    } else {
        input.read_to_end(&mut bytes)
    };
    read.map_err(|e| format!("reading the password from stdin: {e}"))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
    }
    if bytes.len() > MAX_PASSWORD_BYTES {
        return Err(format!(
            "the password is longer than {MAX_PASSWORD_BYTES} bytes"
        ));
    }
    if bytes.is_empty() {
        return Err("no password on stdin".into());
    }
    if bytes.iter().any(|b| matches!(b, b'\n' | b'\r' | 0)) {
        return Err(
            "the password must be one line without NUL (a STOMP CONNECT header cannot carry \
             a line break or NUL)"
                .into(),
        );
    }
    String::from_utf8(bytes).map_err(|_| "the password is not valid UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::phc::PasswordHash;
    use argon2::PasswordVerifier;

    fn read(input: &[u8], one_line: bool) -> Result<String, String> {
        read_password(input, one_line)
    }

    #[test]
    fn one_trailing_line_break_is_dropped() {
        for (input, want) in [
            (&b"s3cret"[..], "s3cret"),
            (b"s3cret\n", "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b" spaced pass phrase ", " spaced pass phrase "),
            ("pässwörd\n".as_bytes(), "pässwörd"),
        ] {
            assert_eq!(read(input, false).unwrap(), want);
            assert_eq!(read(input, true).unwrap(), want);
        }
        // At a terminal only the first line counts.
        assert_eq!(read(b"first\nsecond\n", true).unwrap(), "first");
    }

    #[test]
    fn unusable_passwords_are_refused() {
        for (input, why) in [
            (&b""[..], "no password"),
            (b"\n", "no password"),
            (b"two\nlines", "one line"),
            (b"two\nlines\n", "one line"),
            (b"pw\n\n", "one line"),
            (b"cr\rinside", "one line"),
            (b"nul\0inside", "NUL"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let e = read(input, false).unwrap_err();
            assert!(e.contains(why), "{input:?}: {e}");
        }
        let long = vec![b'a'; MAX_PASSWORD_BYTES + 1];
        assert!(read(&long, false).unwrap_err().contains("longer"));
        let mut endless = std::io::repeat(b'a');
        let e = read_password(std::io::BufReader::new(&mut endless), false).unwrap_err();
        assert!(e.contains("longer"), "{e}");
        let at_limit = vec![b'a'; MAX_PASSWORD_BYTES];
        assert_eq!(read(&at_limit, false).unwrap().len(), MAX_PASSWORD_BYTES);
    }

    #[test]
    fn hashes_are_argon2id_with_the_requested_cost_and_verify() {
        let cost = Cost {
            m_kib: MIN_M_KIB,
            t: 1,
            p: 2,
        };
        let phc = hash("pw", cost).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=8192,t=1,p=2$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"pw", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"px", &parsed).is_err());
        // A fresh salt every time.
        assert_ne!(hash("pw", cost).unwrap(), phc);
        assert!(
            Cost::default()
                == Cost {
                    m_kib: 19 * 1024,
                    t: 2,
                    p: 1
                }
        );
    }

    #[test]
    fn costs_below_the_plugins_floor_or_invalid_are_refused() {
        let e = hash(
            "pw",
            Cost {
                m_kib: MIN_M_KIB - 1,
                t: 2,
                p: 1,
            },
        )
        .unwrap_err();
        assert!(e.contains("8192"), "{e}");
        assert!(hash(
            "pw",
            Cost {
                m_kib: MIN_M_KIB,
                t: 0,
                p: 1
            }
        )
        .is_err());
        assert!(hash(
            "pw",
            Cost {
                m_kib: MIN_M_KIB,
                t: 1,
                p: 0
            }
        )
        .is_err());
        // m must be at least 8 KiB per lane.
        assert!(hash(
            "pw",
            Cost {
                m_kib: MIN_M_KIB,
                t: 1,
                p: 2000
            }
        )
        .is_err());
    }
}
