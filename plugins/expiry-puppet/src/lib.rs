//! `expiry-puppet` (tests only): an `authenticate-expiring` plugin (WIT 0.1.4) that admits every
//! login, with the expiry the client's CONNECT headers choose, to test what the host does with
//! any expiry a plugin may return (past, now, far away, `u64::MAX`) to the millisecond.
//!
//! - The principal is the `login` (`guest` without one), with the destination patterns of
//!   `x-may-send` and `x-may-subscribe` (comma-separated; none when absent).
//! - `x-expires-at-ms: N` gives the expiry N (Unix ms); `x-expires-in-ms: N` gives `now-ms` + N
//!   (saturating); neither: no expiry.
//! - `x-deny-reauth` refuses a re-authentication (`reauth` is true), and only that.
//! - The principal's one group is `reauth` or `connect`: what the host said the call was.

use plugboard_sdk::prelude::*;

/// The plugin (no config).
pub struct ExpiryPuppet;

impl Plugin for ExpiryPuppet {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(ExpiryPuppet)
    }
}

fn patterns(value: Option<&str>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn number(value: Option<&str>) -> Option<u64> {
    value.and_then(|v| v.trim().parse().ok())
}

impl ExpiringAuthenticator for ExpiryPuppet {
    fn authenticate_expiring(&self, request: &ExpiringAuthRequest) -> ExpiringAuthResult {
        let headers = &request.headers[..];
        if request.reauth && headers.header("x-deny-reauth").is_some() {
            return ExpiringAuthResult::Deny("told to refuse the re-authentication".into());
        }
        let expires = number(headers.header("x-expires-at-ms")).or_else(|| {
            number(headers.header("x-expires-in-ms")).map(|n| request.now_ms.saturating_add(n))
        });
        let principal = Principal {
            name: request.login.clone().unwrap_or_else(|| "guest".into()),
            groups: vec![if request.reauth { "reauth" } else { "connect" }.into()],
            may_send: patterns(headers.header("x-may-send")),
            may_subscribe: patterns(headers.header("x-may-subscribe")),
        };
        ExpiringAuthResult::allow(principal, expires)
    }
}

plugboard_sdk::export_expiring_authenticator!(ExpiryPuppet);

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_sdk::ListenerKind;

    fn request(headers: &[(&str, &str)], reauth: bool) -> ExpiringAuthRequest {
        ExpiringAuthRequest {
            login: Some("alice".into()),
            passcode: None,
            host: None,
            client_addr: "127.0.0.1:1".into(),
            headers: headers.iter().map(|(n, v)| Header::new(*n, *v)).collect(),
            listener: ListenerKind::Tcp,
            client_certificate: None,
            upgrade: None,
            now_ms: 1_000,
            reauth,
        }
    }

    #[test]
    fn the_headers_choose_the_expiry_and_the_answer() {
        fn grant(headers: &[(&str, &str)], reauth: bool) -> Option<Grant> {
            match ExpiryPuppet.authenticate_expiring(&request(headers, reauth)) {
                ExpiringAuthResult::Allow(grant) => Some(grant),
                ExpiringAuthResult::Deny(_) => None,
            }
        }
        assert_eq!(grant(&[], false).unwrap().expires_at_ms, None);
        let at = grant(&[("x-expires-at-ms", "5")], false).unwrap();
        assert_eq!(at.expires_at_ms, Some(5));
        assert_eq!(at.principal.groups, ["connect"]);
        let max = u64::MAX.to_string();
        let far = grant(&[("x-expires-in-ms", max.as_str())], true).unwrap();
        assert_eq!(far.expires_at_ms, Some(u64::MAX));
        assert_eq!(far.principal.groups, ["reauth"]);
        assert!(grant(&[("x-deny-reauth", "")], false).is_some());
        assert!(grant(&[("x-deny-reauth", "")], true).is_none());
    }
}
