//! `hostile-puppet` (tests only): does whatever the client's headers tell it, to test what the
//! host allows a plugin to do (a templated router, say, lets the client choose the destination).
//!
//! - authenticate: admits the login (`guest` without one) with the destination patterns of the
//!   CONNECT headers `x-may-send` and `x-may-subscribe` (comma-separated; none when absent);
//!   traps when the CONNECT has a `trap` header.
//! - on-send, by the message's headers: `trap` traps; `spin: N` loops N million times first;
//!   `log: N` writes N log lines; `route-to: DEST` rewrites the destination; `set: NAME=VALUE`
//!   (repeatable) sets headers in the same rewrite, e.g. `set: content-length=1`.
//! - prepare-subscription: a plan when the SUBSCRIBE has `set: NAME=VALUE` headers; filter then
//!   rewrites every delivery to set them (e.g. `set: message-id=forged`). With a
//!   `filter-trap: NAME` header, the filter traps on every delivery that has header NAME (a
//!   poison message).

use plugboard_sdk::prelude::*;

hostile_common::hostile_plugin!(struct HostilePuppet);

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

/// `NAME=VALUE` as a header.
fn header(assignment: &str) -> Option<Header> {
    let (name, value) = assignment.split_once('=')?;
    Some(Header::new(name, value))
}

/// Loops `millions` million times, where the optimiser cannot remove it.
fn spin(millions: u64) {
    let mut n: u64 = 0;
    for _ in 0..millions.saturating_mul(1_000_000) {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

impl Authenticator for HostilePuppet {
    fn authenticate(&self, request: &AuthRequest) -> AuthResult {
        if request.header("trap").is_some() {
            panic!("hostile-puppet: told to trap");
        }
        AuthResult::Allow(Principal {
            name: request.login.clone().unwrap_or_else(|| "guest".into()),
            groups: vec![],
            may_send: patterns(request.header("x-may-send")),
            may_subscribe: patterns(request.header("x-may-subscribe")),
        })
    }
}

impl Router for HostilePuppet {
    fn on_send(&self, _sender: &Principal, msg: &Message) -> SendVerdict {
        if msg.header("trap").is_some() {
            panic!("hostile-puppet: told to trap");
        }
        if let Some(n) = msg.header("spin").and_then(|v| v.parse().ok()) {
            spin(n);
        }
        if let Some(n) = msg.header("log").and_then(|v| v.parse::<u32>().ok()) {
            for i in 0..n {
                plugboard_sdk::log::info(&format!("hostile-puppet: line {i} of {n}"));
            }
        }
        let mut edit = match msg.header("route-to") {
            Some(destination) => Edit::to(destination),
            None => Edit::none(),
        };
        let sets = msg.headers.iter().filter(|h| h.name == "set");
        edit.set_headers
            .extend(sets.filter_map(|h| header(&h.value)));
        if edit.destination.is_none() && edit.set_headers.is_empty() {
            SendVerdict::Keep
        } else {
            SendVerdict::Rewrite(edit)
        }
    }
}

/// The first line of a filter token that traps on a header: `trap-on:NAME`.
const TRAP_ON: &str = "trap-on:";

impl Filter for HostilePuppet {
    fn prepare_subscription(
        &self,
        _subscriber: &Principal,
        sub: &Subscription,
    ) -> Result<Option<FilterPlan>, String> {
        let trap_on = sub.headers.iter().find(|h| h.name == "filter-trap");
        let mut lines: Vec<String> = trap_on
            .map(|h| format!("{TRAP_ON}{}", h.value))
            .into_iter()
            .collect();
        lines.extend(
            sub.headers
                .iter()
                .filter(|h| h.name == "set")
                .map(|h| h.value.clone()),
        );
        let needs = match trap_on {
            Some(h) => Needs::headers([h.value.clone()]),
            None => Needs::nothing(),
        };
        Ok((!lines.is_empty()).then(|| FilterPlan {
            token: lines.join("\n").into_bytes(),
            needs,
        }))
    }

    fn filter(&self, token: &[u8], msg: &Message) -> FilterVerdict {
        let token = std::str::from_utf8(token).unwrap_or_default();
        let mut lines = token.lines().peekable();
        if let Some(name) = lines.peek().and_then(|l| l.strip_prefix(TRAP_ON)) {
            if msg.header(name).is_some() {
                panic!("hostile-puppet: a poison message");
            }
            lines.next();
        }
        let mut edit = Edit::none();
        edit.set_headers.extend(lines.filter_map(header));
        if edit.set_headers.is_empty() {
            FilterVerdict::Deliver
        } else {
            FilterVerdict::Rewrite(edit)
        }
    }
}

plugboard_sdk::export_full!(HostilePuppet);
