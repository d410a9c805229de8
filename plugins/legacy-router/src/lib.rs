//! `legacy-router` (tests only): a router built against `plugboard:plugin@0.1.1`, the WIT as it
//! was before 0.1.2 added the `context` import, kept verbatim in this crate's `wit/`. The broker
//! must still load it, give it its 0.1.1 `log` import and call its `send` export.
//!
//! It sends what arrives on `/queue/legacy.in` to `/queue/legacy.out`, logs that it did, and
//! keeps every other message where it was sent.

wit_bindgen::generate!({ world: "router", path: "wit" });

use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use exports::plugboard::plugin::send::{Guest as Send, SendVerdict};
use plugboard::plugin::log::{log, Level};
use plugboard::plugin::types::{Edit, HeaderNeed, Manifest, Message, Needs, Principal};

struct Plugin;

impl Lifecycle for Plugin {
    fn init(_config: String) -> Result<Manifest, String> {
        let none = || Needs {
            headers: HeaderNeed::None,
            body: false,
        };
        Ok(Manifest {
            send: none(),
            deliver: none(),
        })
    }
}

impl Send for Plugin {
    fn on_send(_sender: Principal, msg: Message) -> SendVerdict {
        let verdict = decide(&msg.destination);
        if matches!(verdict, SendVerdict::Rewrite(_)) {
            log(
                Level::Info,
                "legacy-router: /queue/legacy.in → /queue/legacy.out",
            );
        }
        verdict
    }
}

/// Where a message sent to `destination` goes.
pub fn decide(destination: &str) -> SendVerdict {
    if destination == "/queue/legacy.in" {
        SendVerdict::Rewrite(Edit {
            destination: Some("/queue/legacy.out".into()),
            remove_headers: Vec::new(),
            set_headers: Vec::new(),
            body: None,
        })
    } else {
        SendVerdict::Keep
    }
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_legacy_queue_is_rerouted() {
        assert!(matches!(
            decide("/queue/legacy.in"),
            SendVerdict::Rewrite(Edit { destination: Some(d), .. }) if d == "/queue/legacy.out"
        ));
        assert!(matches!(decide("/queue/other"), SendVerdict::Keep));
    }
}
