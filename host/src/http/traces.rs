//! Plugin decision traces on the admin surface: `GET /api/plugins/traces?plugin=NAME&limit=N`
//! lists the decisions recorded ([`crate::plugin::trace`]), `POST /api/plugins/trace` with
//! `{"plugin": NAME, "sample": RATE}` switches a plugin's sampling live.
//!
//! Access: reading is allowed as for `/metrics` (anyone on a loopback listener without a token;
//! with `admin_token`, the bearer token). Switching is an action: it needs `admin_token`
//! configured (403 otherwise) and presented as `Authorization: Bearer` (401 otherwise). Its
//! body is read only after the access check, bounded by [`MAX_BODY`], with `Content-Length`.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::AsyncRead;

use super::request::Request;
use super::Response;
use crate::broker::Broker;
use crate::plugin::trace::{check_rate, Decision, MAX_TRACE_KEEP};

/// The path of the list of decisions.
pub const TRACES_PATH: &[u8] = b"/api/plugins/traces";
/// The path of the live switch.
pub const TRACE_PATH: &[u8] = b"/api/plugins/trace";
/// Largest request body read (the switch's body is a few dozen bytes).
pub const MAX_BODY: usize = 4 * 1024;
/// Decisions listed per plugin when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 50;

/// Whether this module answers `path`.
pub fn handles(path: &[u8]) -> bool {
    path == TRACES_PATH || path == TRACE_PATH
}

/// The body of `POST /api/plugins/trace`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    plugin: String,
    sample: f64,
}

/// One plugin's trace as listed.
#[derive(Debug, Serialize)]
struct Listed {
    plugin: String,
    sample: f64,
    keep: usize,
    decisions: Vec<Decision>,
}

fn error(code: &'static str, message: impl std::fmt::Display) -> Response {
    Response::json(
        code,
        format!("{}\n", json!({ "error": message.to_string() })),
    )
}

/// Whether the request carries the configured `admin_token` (`None`: none is configured).
pub fn bearer_matches(request: &Request<'_>, broker: &Broker) -> Option<bool> {
    broker.config.admin_token.as_ref().map(|token| {
        request
            .bearer
            .is_some_and(|given| crate::text::constant_time_eq(given, token.as_bytes()))
    })
}

/// The rule for actions (requests that change state): a configured `admin_token`, presented.
pub(super) fn check_action(request: &Request<'_>, broker: &Broker) -> Result<(), Response> {
    match bearer_matches(request, broker) {
        None => Err(error(
            "403 Forbidden",
            "actions need admin_token in the configuration",
        )),
        Some(false) => Err(error(
            "401 Unauthorized",
            "send Authorization: Bearer <admin_token>",
        )),
        Some(true) => Ok(()),
    }
}

/// The `Content-Length` of a request head: `Ok(None)` when absent, `Err` when malformed.
pub(super) fn content_length(head: &[u8]) -> Result<Option<usize>, ()> {
    let head = &head[..head_end(head).unwrap_or(head.len())];
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"content-length") {
            let value = line[colon + 1..].trim_ascii();
            return std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or(());
        }
    }
    Ok(None)
}

/// Where the body starts in what was read with the head (after its blank line).
fn head_end(head: &[u8]) -> Option<usize> {
    let crlf = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = head.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a request body of exactly its `Content-Length` (at most `max` bytes): the bytes read
/// with the head first, then the rest from `stream` within [`super::request::REQUEST_TIME`].
pub(super) async fn read_body<R: AsyncRead + Unpin>(
    stream: &mut R,
    head: &[u8],
    max: usize,
) -> Result<Vec<u8>, Response> {
    use tokio::io::AsyncReadExt;
    let length = match content_length(head) {
        Ok(Some(length)) => length,
        Ok(None) => return Err(error("411 Length Required", "send Content-Length")),
        Err(()) => return Err(error("400 Bad Request", "malformed Content-Length")),
    };
    if length > max {
        return Err(error(
            "413 Content Too Large",
            format!("the body may have at most {max} bytes"),
        ));
    }
    let start = head_end(head).unwrap_or(head.len());
    let mut body = head[start..].to_vec();
    body.truncate(length);
    let rest = length - body.len();
    if rest > 0 {
        let at = body.len();
        body.resize(length, 0);
        let read = tokio::time::timeout(
            super::request::REQUEST_TIME,
            stream.read_exact(&mut body[at..]),
        );
        if !matches!(read.await, Ok(Ok(_))) {
            return Err(error("400 Bad Request", "the body ended early"));
        }
    }
    Ok(body)
}

/// The query string of the request line's target (after `?`).
fn query(head: &[u8]) -> &[u8] {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    match target.iter().position(|&b| b == b'?') {
        Some(at) => &target[at + 1..],
        None => b"",
    }
}

/// The value of query parameter `name` (percent-decoding is not needed: plugin names are plain).
fn param<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|&b| b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        (&pair[..eq] == name).then(|| &pair[eq + 1..])
    })
}

/// Answers a request for one of this module's paths (see [`handles`]).
pub(super) async fn answer<R: AsyncRead + Unpin>(
    request: Request<'_>,
    head: &[u8],
    stream: &mut R,
    broker: &Broker,
) -> Response {
    match (request.method, request.path) {
        (b"GET", TRACES_PATH) => {
            if bearer_matches(&request, broker) == Some(false) {
                return error(
                    "401 Unauthorized",
                    "send Authorization: Bearer <admin_token>",
                );
            }
            list(broker, query(head))
        }
        (b"POST", TRACE_PATH) => {
            if let Err(refused) = check_action(&request, broker) {
                return refused;
            }
            match read_body(stream, head, MAX_BODY).await {
                Ok(body) => switch(broker, &body),
                Err(refused) => refused,
            }
        }
        (_, TRACES_PATH) => error("405 Method Not Allowed", "only GET"),
        _ => error("405 Method Not Allowed", "only POST"),
    }
}

/// `GET /api/plugins/traces`: every plugin's (or the named one's) last decisions.
fn list(broker: &Broker, query: &[u8]) -> Response {
    let limit = match param(query, b"limit").map(|v| std::str::from_utf8(v).ok()?.parse().ok()) {
        None => DEFAULT_LIMIT,
        Some(Some(limit)) => usize::min(limit, MAX_TRACE_KEEP),
        Some(None) => return error("400 Bad Request", "limit must be a number"),
    };
    let wanted = param(query, b"plugin");
    let host = broker.policy.host();
    let listed: Vec<Listed> = host
        .names()
        .filter(|name| wanted.is_none_or(|w| w == name.as_bytes()))
        .filter_map(|name| host.trace(name))
        .map(|trace| Listed {
            plugin: trace.name().to_string(),
            sample: trace.rate(),
            keep: trace.keep(),
            decisions: trace.recent(limit),
        })
        .collect();
    if let (Some(name), true) = (wanted, listed.is_empty()) {
        let name = crate::text::shown(name);
        return error(
            "404 Not Found",
            format!("no plugin named `{name}` is loaded"),
        );
    }
    let mut body = serde_json::to_string_pretty(&json!({ "plugins": listed })).unwrap_or_default();
    body.push('\n');
    Response::json("200 OK", body)
}

/// `POST /api/plugins/trace`: sets a plugin's sampling rate.
fn switch(broker: &Broker, body: &[u8]) -> Response {
    let switch: Switch = match serde_json::from_slice(body) {
        Ok(switch) => switch,
        Err(e) => {
            return error(
                "400 Bad Request",
                format!("expected {{\"plugin\": NAME, \"sample\": 0..1}}: {e}"),
            )
        }
    };
    let rate = match check_rate(switch.sample) {
        Ok(rate) => rate,
        Err(reason) => return error("400 Bad Request", reason),
    };
    let host = broker.policy.host();
    let Some(trace) = host.trace(&switch.plugin) else {
        return error(
            "404 Not Found",
            format!("no plugin named `{}` is loaded", switch.plugin),
        );
    };
    trace.set_rate(rate);
    tracing::info!(
        plugin = switch.plugin,
        sample = rate,
        "plugin trace switched"
    );
    let body = json!({ "plugin": switch.plugin, "sample": rate, "keep": trace.keep() });
    Response::json("200 OK", format!("{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_read_from_the_head_only() {
        let head = b"POST /x HTTP/1.0\r\nContent-Length: 12\r\n\r\n{\"a\": 1}";
        assert_eq!(content_length(head), Ok(Some(12)));
        assert_eq!(content_length(b"POST /x HTTP/1.0\r\n\r\n"), Ok(None));
        assert_eq!(
            content_length(b"POST /x HTTP/1.0\r\ncontent-length: x\r\n\r\n"),
            Err(())
        );
        assert_eq!(
            content_length(b"POST /x HTTP/1.0\r\n\r\ncontent-length: 5"),
            Ok(None),
            "not in the body"
        );
    }

    #[tokio::test]
    async fn a_body_is_read_to_its_length_and_never_past_the_cap() {
        let head = b"POST /x HTTP/1.0\r\nContent-Length: 10\r\n\r\n0123";
        let mut rest = &b"456789 and more"[..];
        let Ok(body) = read_body(&mut rest, head, 64).await else {
            panic!("the body is read");
        };
        assert_eq!(body, b"0123456789");
        let big = b"POST /x HTTP/1.0\r\nContent-Length: 100000\r\n\r\n";
        let refused = read_body(&mut &b""[..], big, 64)
            .await
            .expect_err("refused");
        assert!(refused.code.starts_with("413"));
        let short = b"POST /x HTTP/1.0\r\nContent-Length: 10\r\n\r\n01";
        let refused = read_body(&mut &b"2"[..], short, 64)
            .await
            .expect_err("refused");
        assert!(refused.code.starts_with("400"));
        let none = b"POST /x HTTP/1.0\r\n\r\n";
        let refused = read_body(&mut &b""[..], none, 64)
            .await
            .expect_err("refused");
        assert!(refused.code.starts_with("411"));
    }

    #[test]
    fn query_parameters_are_read_from_the_target() {
        let head = b"GET /api/plugins/traces?plugin=router&limit=5 HTTP/1.0\r\n\r\n";
        let q = query(head);
        assert_eq!(param(q, b"plugin"), Some(&b"router"[..]));
        assert_eq!(param(q, b"limit"), Some(&b"5"[..]));
        assert_eq!(param(q, b"other"), None);
        assert_eq!(query(b"GET /api/plugins/traces HTTP/1.0\r\n\r\n"), b"");
    }
}
