//! The `Origin` rule of the WebSocket listener: which browser pages may open a connection.
//!
//! A browser sends `Origin` with every WebSocket upgrade and lets any page connect anywhere
//! (WebSockets have no CORS), so without this check any site a user visits could talk to a
//! broker the user's machine can reach (cross-site WebSocket hijacking). A client that sends
//! no `Origin` is not a browser, and the check does not apply to it.
//!
//! Allowed origins are exact `scheme://host[:port]` values, `null` (a page opened from disk or
//! a sandboxed frame) or `*`. With none configured, a listener on a loopback address admits
//! pages served from loopback (`localhost`, `127.0.0.0/8`, `[::1]`) and nothing else.

use std::net::{IpAddr, Ipv4Addr};

/// The rule of one listener.
#[derive(Debug, Clone)]
pub struct OriginRule {
    /// Lowercased patterns; empty means loopback origins only.
    allowed: Vec<String>,
    any: bool,
}

impl OriginRule {
    /// The rule for `allowed_origins` (already checked with [`check_pattern`]).
    pub fn new(allowed: &[String]) -> OriginRule {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .collect();
        OriginRule {
            any: allowed.iter().any(|o| o == "*"),
            allowed,
        }
    }

    /// Whether a request with this `Origin` header (`None`: no header) may connect.
    pub fn admits(&self, origin: Option<&[u8]>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Ok(origin) = std::str::from_utf8(origin) else {
            return false;
        };
        let origin = origin.trim().to_ascii_lowercase();
        if self.any {
            return true;
        }
        if self.allowed.is_empty() {
            return is_loopback_origin(&origin);
        }
        self.allowed.contains(&origin)
    }
}

/// Checks one `allowed_origins` entry.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let pattern = pattern.trim().trim_end_matches('/');
    if pattern == "*" || pattern.eq_ignore_ascii_case("null") {
        return Ok(());
    }
    match split(&pattern.to_ascii_lowercase()) {
        Some(_) => Ok(()),
        None => Err(format!(
            "'{pattern}' is not an origin: expected scheme://host[:port] (no path), null or *"
        )),
    }
}

/// `scheme://host[:port]` split into scheme and host; `None` when it is not of that form.
fn split(origin: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = origin.split_once("://")?;
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return None;
    }
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let host = match rest.strip_prefix('[') {
        // [v6]:port
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            if !(after.is_empty() || valid_port(after.strip_prefix(':')?)) {
                return None;
            }
            host
        }
        None => match rest.rsplit_once(':') {
            Some((host, port)) if valid_port(port) => host,
            Some(_) => return None,
            None => rest,
        },
    };
    (!host.is_empty()).then_some((scheme, host))
}

fn valid_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.parse::<u16>().is_ok()
}

/// An `http`/`https` origin whose host is `localhost`, in `127.0.0.0/8` or `::1`.
fn is_loopback_origin(origin: &str) -> bool {
    let Some((scheme, host)) = split(origin) else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    host == "localhost"
        || host
            .parse::<Ipv4Addr>()
            .is_ok_and(|ip| IpAddr::V4(ip).is_loopback())
        || host
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_configuration_only_loopback_pages_and_non_browsers_are_admitted() {
        let rule = OriginRule::new(&[]);
        assert!(rule.admits(None));
        for ok in [
            "http://localhost",
            "http://localhost:8080",
            "https://127.0.0.1:3000",
            "http://127.1.2.3",
            "http://[::1]:8000",
            "HTTP://LOCALHOST:1",
        ] {
            assert!(rule.admits(Some(ok.as_bytes())), "{ok}");
        }
        for bad in [
            "null",
            "https://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
            "http://10.0.0.1",
            "file://",
            "ws://localhost",
            "http://localhost/path",
            "",
        ] {
            assert!(!rule.admits(Some(bad.as_bytes())), "{bad}");
        }
        assert!(!rule.admits(Some(b"http://local\xffhost")));
    }

    #[test]
    fn configured_origins_are_matched_exactly_and_case_insensitively() {
        let rule = OriginRule::new(&["https://app.example.com".into(), "null".into()]);
        assert!(rule.admits(Some(b"https://app.example.com")));
        assert!(rule.admits(Some(b"HTTPS://App.Example.com")));
        assert!(rule.admits(Some(b"null")));
        assert!(rule.admits(None));
        assert!(!rule.admits(Some(b"https://app.example.com:8443")));
        assert!(!rule.admits(Some(b"http://app.example.com")));
        assert!(!rule.admits(Some(b"https://app.example.com.evil.example")));
        // Configured origins replace the loopback default.
        assert!(!rule.admits(Some(b"http://localhost")));
        let any = OriginRule::new(&["*".into()]);
        assert!(any.admits(Some(b"https://anything.example")));
    }

    #[test]
    fn patterns_must_be_origins() {
        for ok in [
            "*",
            "null",
            "https://a.example",
            "http://a.example:8080",
            "http://[::1]:80",
            "https://a.example/",
        ] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a.example",
            "https://a.example/app",
            "https://",
            "https://a.example:99999",
            "https://u@a.example",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
