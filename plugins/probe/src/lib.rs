//! `probe` (tests and benchmarks only): serves every hook and reports what the host passed it.
//!
//! Config: `headers` (`"none"`, `"all"` or a list of names) and `body` (bool) are its needs;
//! `verdict` is `"keep"` (default), `"report"` (reject a SEND with a description of what it saw)
//! or `"rewrite"` (set header `x-probe: seen`), or `"context"` (WIT 0.1.2: set headers
//! `x-probe-vhost` and `x-probe-traced` to what the `context` import answers, and note
//! `probe: HOOK on VHOST` when the call is traced). Its filter always has a plan with the same
//! needs and delivers (or rewrites, also with `"context"`); its authenticator admits every login
//! with every permission.

use serde::Deserialize;
use std::sync::OnceLock;

wit_bindgen::generate!({ world: "full", path: "../../wit" });

use exports::plugboard::plugin::authenticate::{AuthRequest, AuthResult, Guest as Authenticate};
use exports::plugboard::plugin::deliver::{
    FilterPlan, FilterVerdict, Guest as Deliver, Subscription,
};
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use exports::plugboard::plugin::send::{Guest as Send, SendVerdict};
use plugboard::plugin::types::{Edit, Header, HeaderNeed, Manifest, Message, Needs, Principal};

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Headers {
    Word(String),
    Names(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    headers: Option<Headers>,
    #[serde(default)]
    body: bool,
    #[serde(default)]
    verdict: Option<String>,
}

struct State {
    needs: Needs,
    verdict: String,
}

static STATE: OnceLock<State> = OnceLock::new();

fn describe(msg: &Message) -> String {
    let headers: Vec<String> = msg
        .headers
        .iter()
        .map(|h| format!("{}={}", h.name, h.value))
        .collect();
    let body = msg
        .body
        .as_ref()
        .map_or("none".to_string(), |b| b.len().to_string());
    format!(
        "saw dest={} headers=[{}] body={body} body_len={}",
        msg.destination,
        headers.join(","),
        msg.body_len
    )
}

fn probe_edit() -> Edit {
    let set = vec![Header {
        name: "x-probe".into(),
        value: "seen".into(),
    }];
    Edit {
        destination: None,
        remove_headers: Vec::new(),
        set_headers: set,
        body: None,
    }
}

/// The `"context"` verdict's edit: what the `context` import says of this call, noted too.
fn context_edit(hook: &str) -> Edit {
    use plugboard::plugin::context;
    let vhost = context::vhost();
    let traced = context::tracing();
    if traced {
        context::note(&format!("probe: {hook} on {vhost}"));
    }
    let header = |name: &str, value: String| Header {
        name: name.into(),
        value,
    };
    Edit {
        destination: None,
        remove_headers: Vec::new(),
        set_headers: vec![
            header("x-probe-vhost", vhost),
            header("x-probe-traced", traced.to_string()),
        ],
        body: None,
    }
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(config: String) -> Result<Manifest, String> {
        let c: Config = serde_json::from_str(&config).map_err(|e| format!("config: {e}"))?;
        let headers = match c.headers {
            None => HeaderNeed::None,
            Some(Headers::Word(w)) if w == "none" => HeaderNeed::None,
            Some(Headers::Word(w)) if w == "all" => HeaderNeed::All,
            Some(Headers::Word(w)) => {
                return Err(format!("config: headers: `{w}` is not none, all or a list"))
            }
            Some(Headers::Names(names)) => HeaderNeed::Named(names),
        };
        let needs = Needs {
            headers,
            body: c.body,
        };
        let verdict = c.verdict.unwrap_or_else(|| "keep".into());
        let _ = STATE.set(State {
            needs: needs.clone(),
            verdict,
        });
        Ok(Manifest {
            send: needs.clone(),
            deliver: needs,
        })
    }
}

impl Authenticate for Plugin {
    fn authenticate(request: AuthRequest) -> AuthResult {
        let all = vec!["*".to_string()];
        AuthResult::Allow(Principal {
            name: request.login.unwrap_or_else(|| "guest".into()),
            groups: vec![],
            may_send: all.clone(),
            may_subscribe: all,
        })
    }
}

impl Send for Plugin {
    fn on_send(_sender: Principal, msg: Message) -> SendVerdict {
        match STATE.get().map(|s| s.verdict.as_str()) {
            Some("report") => SendVerdict::Reject(describe(&msg)),
            Some("rewrite") => SendVerdict::Rewrite(probe_edit()),
            Some("context") => SendVerdict::Rewrite(context_edit("send")),
            _ => SendVerdict::Keep,
        }
    }
}

impl Deliver for Plugin {
    fn prepare_subscription(
        _subscriber: Principal,
        _sub: Subscription,
    ) -> Result<Option<FilterPlan>, String> {
        let needs = STATE
            .get()
            .map(|s| s.needs.clone())
            .ok_or("not initialised")?;
        Ok(Some(FilterPlan {
            token: b"probe".to_vec(),
            needs,
        }))
    }

    fn filter(_token: Vec<u8>, _msg: Message) -> FilterVerdict {
        match STATE.get().map(|s| s.verdict.as_str()) {
            Some("rewrite") => FilterVerdict::Rewrite(probe_edit()),
            Some("context") => FilterVerdict::Rewrite(context_edit("filter")),
            _ => FilterVerdict::Deliver,
        }
    }
}

export!(Plugin);
