//! `hostile-garbage` (tests only): answers every hook with something the host must refuse.
//!
//! On SEND the header `garbage` picks the kind: `destination` (default: no leading `/`, a
//! newline), `fanout` (1,000 copies), `header` (a header name with `:`), `body` (a 5 MiB body,
//! above the default input cap). Authenticate returns an empty principal name, prepare returns a
//! 1 MiB token when the SUBSCRIBE has a `garbage` header, filter rewrites to an invalid destination.

use plugboard_sdk::prelude::*;

fn edit(destination: Option<&str>) -> Edit {
    Edit {
        destination: destination.map(str::to_string),
        remove_headers: vec![],
        set_headers: vec![],
        body: None,
    }
}

hostile_common::hostile_plugin!(struct HostileGarbage);

impl Authenticator for HostileGarbage {
    fn authenticate(&self, _request: &AuthRequest) -> AuthResult {
        AuthResult::Allow(Principal {
            name: String::new(),
            groups: vec![],
            may_send: vec![],
            may_subscribe: vec![],
        })
    }
}

impl Router for HostileGarbage {
    fn on_send(&self, _sender: &Principal, msg: &Message) -> SendVerdict {
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

impl Filter for HostileGarbage {
    fn prepare_subscription(
        &self,
        _subscriber: &Principal,
        sub: &Subscription,
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

    fn filter(&self, _token: &[u8], _msg: &Message) -> FilterVerdict {
        FilterVerdict::Rewrite(edit(Some("")))
    }
}

plugboard_sdk::export_full!(HostileGarbage);
