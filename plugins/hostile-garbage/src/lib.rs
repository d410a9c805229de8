//! `hostile-garbage` (tests only): answers every hook with something the host must refuse.
//!
//! On SEND the header `garbage` picks the kind: `destination` (default: no leading `/`, a
//! newline), `fanout` (1,000 copies), `header` (a header name with `:`), `body` (a 5 MiB body,
//! above the default input cap). Authenticate returns an empty principal name, prepare returns a
//! 1 MiB token when the SUBSCRIBE has a `garbage` header, filter rewrites to an invalid destination.

wit_bindgen::generate!({ world: "full", path: "../../wit" });

use exports::plugboard::plugin::authenticate::{AuthRequest, AuthResult, Guest as Authenticate};
use exports::plugboard::plugin::deliver::{
    FilterPlan, FilterVerdict, Guest as Deliver, Subscription,
};
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use exports::plugboard::plugin::send::{Guest as Send, SendVerdict};
use plugboard::plugin::types::{Edit, Header, HeaderNeed, Manifest, Message, Needs, Principal};

fn edit(destination: Option<&str>) -> Edit {
    Edit {
        destination: destination.map(str::to_string),
        remove_headers: vec![],
        set_headers: vec![],
        body: None,
    }
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_config: String) -> Result<Manifest, String> {
        let needs = Needs {
            headers: HeaderNeed::All,
            body: false,
        };
        Ok(Manifest {
            send: needs.clone(),
            deliver: needs,
        })
    }
}

impl Authenticate for Plugin {
    fn authenticate(_request: AuthRequest) -> AuthResult {
        AuthResult::Allow(Principal {
            name: String::new(),
            groups: vec![],
            may_send: vec![],
            may_subscribe: vec![],
        })
    }
}

impl Send for Plugin {
    fn on_send(_sender: Principal, msg: Message) -> SendVerdict {
        let kind = msg
            .headers
            .iter()
            .find(|h| h.name == "garbage")
            .map_or("destination", |h| h.value.as_str());
        match kind {
            "fanout" => SendVerdict::FanOut((0..1_000).map(|_| edit(Some("/queue/x"))).collect()),
            "header" => {
                let mut e = edit(None);
                e.set_headers.push(Header {
                    name: "a:b".into(),
                    value: "v".into(),
                });
                SendVerdict::Rewrite(e)
            }
            "body" => {
                let mut e = edit(None);
                e.body = Some(vec![b'x'; 5 << 20]);
                SendVerdict::Rewrite(e)
            }
            _ => SendVerdict::Rewrite(edit(Some("queue/no-slash\nSEND"))),
        }
    }
}

impl Deliver for Plugin {
    fn prepare_subscription(
        _subscriber: Principal,
        sub: Subscription,
    ) -> Result<Option<FilterPlan>, String> {
        let needs = Needs {
            headers: HeaderNeed::None,
            body: false,
        };
        let huge = sub.headers.iter().any(|h| h.name == "garbage");
        Ok(Some(FilterPlan {
            token: vec![0; if huge { 1 << 20 } else { 1 }],
            needs,
        }))
    }

    fn filter(_token: Vec<u8>, _msg: Message) -> FilterVerdict {
        FilterVerdict::Rewrite(edit(Some("")))
    }
}

export!(Plugin);
