//! The live console of the admin listener: `GET /` is one HTML page (embedded in the binary,
//! its CSS and script inline and allowed by hash in a strict Content-Security-Policy, nothing
//! loaded from elsewhere) that polls `GET /api/overview` ([`overview`]) every 2 s and draws
//! rates sampled server-side ([`rates`]). Actions ([`actions`]) are `POST`s behind the admin
//! token.
//!
//! The page itself holds no data, so it is served to anyone who may reach the listener; the
//! JSON follows the listener's access rules. Without a token (loopback only) every request
//! must name the listener by an IP address or `localhost` in its `Host` header
//! ([`host_allowed`]): a page of another site that re-points its DNS name at 127.0.0.1 (DNS
//! rebinding) gets nothing.

pub mod actions;
pub mod overview;
pub mod rates;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The page, with its inline `<style>` and `<script>`.
const PAGE: &str = include_str!("page.html");

/// The text between `open` and `close` in `page`.
fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page.find(open).map_or(0, |at| at + open.len());
    let end = page[start..].find(close).map_or(start, |at| start + at);
    &page[start..end]
}

fn sha256_source(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!("'sha256-{}'", data_encoding::BASE64.encode(&digest))
}

/// The Content-Security-Policy of the page: nothing but its own inline style and script (by
/// hash) and requests to the listener itself.
pub fn content_security_policy() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        let style = sha256_source(between(PAGE, "<style>", "</style>"));
        let script = sha256_source(between(PAGE, "<script>", "</script>"));
        format!(
            "default-src 'none'; script-src {script}; style-src {style}; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    })
}

/// The page's HTML.
pub fn page() -> &'static str {
    PAGE
}

/// Whether a request's `Host` header names the listener by an IP address or `localhost`
/// (with or without a port). No header at all is allowed: browsers always send one.
pub fn host_allowed(host: Option<&[u8]>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let port_ok = |port: &str| port.is_empty() || port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((ip, "")) => ip.parse::<Ipv6Addr>().is_ok(),
            Some((ip, port)) => {
                ip.parse::<Ipv6Addr>().is_ok()
                    && port
                        .strip_prefix(':')
                        .is_some_and(|p| !p.is_empty() && port_ok(p))
            }
            None => false,
        };
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port_ok(port) => name,
        Some(_) => return false,
        None => host,
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<Ipv4Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literal_addresses_and_localhost_pass_the_host_check() {
        for good in [
            "127.0.0.1",
            "127.0.0.1:61680",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:61680",
            "[::1]",
            "10.1.2.3:1",
        ] {
            assert!(host_allowed(Some(good.as_bytes())), "{good}");
        }
        for bad in [
            "evil.example",
            "evil.example:61680",
            "127.0.0.1.nip.io",
            "localhost.evil.example",
            "[::1",
            "[::1]x",
            "127.0.0.1:",
            "127.0.0.1:80:80",
            "",
        ] {
            assert!(!host_allowed(Some(bad.as_bytes())), "{bad}");
        }
        assert!(!host_allowed(Some(b"\xff")));
        assert!(host_allowed(None));
    }

    #[test]
    fn the_policy_allows_exactly_the_inline_style_and_script() {
        let csp = content_security_policy();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        let script = between(PAGE, "<script>", "</script>");
        assert!(script.contains("/api/overview"));
        assert!(csp.contains(&sha256_source(script)));
        assert!(csp.contains(&sha256_source(between(PAGE, "<style>", "</style>"))));
        // One script and one style block, no external resources, no inline handlers.
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        let without_svg_namespace = PAGE.replace("\"http://www.w3.org/2000/svg\"", "");
        for forbidden in [
            "http:",
            "https:",
            "//",
            "src=",
            "href=",
            "url(",
            "innerHTML",
            "onclick",
            "onload",
            "onerror",
            "eval(",
        ] {
            let found = without_svg_namespace
                .lines()
                .find(|line| line.contains(forbidden) && !line.trim_start().starts_with("//"));
            assert!(found.is_none(), "{forbidden}: {found:?}");
        }
    }
}
