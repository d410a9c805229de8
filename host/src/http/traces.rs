//! Plugin decision traces on the admin surface: `GET /api/plugins/traces?plugin=NAME&limit=N`
//! lists the decisions recorded ([`crate::plugin::trace`]), `POST /api/plugins/trace` with
//! `{"plugin": NAME, "sample": RATE}` switches a plugin's sampling live.
//!
//! Access (checked by the [`http`](super) module before these run): reading is allowed as for
//! `/metrics`; switching is an action, like the console's: it needs `admin_token` configured
//! (403 otherwise) and presented as `Authorization: Bearer` (401 otherwise), and its body is
//! the request body the module read (`Content-Length`, at most 4 KiB).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::request::Request;
use super::Response;
use crate::broker::Broker;
use crate::plugin::trace::{check_rate, Decision, MAX_TRACE_KEEP};

/// The path of the list of decisions.
pub const TRACES_PATH: &[u8] = b"/api/plugins/traces";
/// The path of the live switch.
pub const TRACE_PATH: &[u8] = b"/api/plugins/trace";
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

/// `GET /api/plugins/traces`: every plugin's (or the named one's) last decisions.
pub(super) fn list(broker: &Broker, request: &Request<'_>) -> Response {
    let limit = match request
        .param("limit")
        .map(|v| std::str::from_utf8(v).ok()?.parse().ok())
    {
        None => DEFAULT_LIMIT,
        Some(Some(limit)) => usize::min(limit, MAX_TRACE_KEEP),
        Some(None) => return error("400 Bad Request", "limit must be a number"),
    };
    let wanted = request.param("plugin");
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
pub(super) fn switch(broker: &Broker, body: &[u8]) -> Response {
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
