//! A Plugboard plugin (hook `send`): messages whose header `header` has the value `value` go to
//! their destination plus `suffix` (e.g. `/queue/orders` -> `/queue/orders.urgent`); the others
//! stay. Build: `cargo build --release --target wasm32-wasip2`; test: `cargo test`.

use plugboard_sdk::prelude::*;
use serde::Deserialize;

/// The `[plugins.config]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_header")]
    pub header: String,
    #[serde(default = "default_value")]
    pub value: String,
    #[serde(default = "default_suffix")]
    pub suffix: String,
}

fn default_header() -> String {
    "priority".into()
}
fn default_value() -> String {
    "high".into()
}
fn default_suffix() -> String {
    ".urgent".into()
}

pub struct Urgent(Config);

impl Plugin for Urgent {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.suffix.is_empty() || config.suffix.contains(':') {
            return Err("config: `suffix` must be non-empty and contain no `:`".into());
        }
        Ok(Urgent(config))
    }

    fn manifest(&self) -> Manifest {
        // The host copies only this header into the plugin: no body, no other headers.
        Manifest::send(Needs::headers([self.0.header.as_str()]))
    }
}

impl Router for Urgent {
    fn on_send(&self, _sender: &Principal, msg: &Message) -> SendVerdict {
        if msg.header(&self.0.header) == Some(self.0.value.as_str()) {
            SendVerdict::Rewrite(Edit::to(format!("{}{}", msg.destination, self.0.suffix)))
        } else {
            SendVerdict::Keep
        }
    }
}

plugboard_sdk::export_router!(Urgent);

#[cfg(test)]
mod tests {
    use super::*;
    use plugboard_sdk::testing::Harness;

    #[test]
    fn routes_urgent_messages() {
        let h = Harness::<Urgent>::new("{}").unwrap();
        let alice = Principal::named("alice");
        let urgent = Message::new("/queue/orders").with_header("priority", "high");
        assert_eq!(
            h.send(&alice, urgent),
            SendVerdict::Rewrite(Edit::to("/queue/orders.urgent"))
        );
        let normal = Message::new("/queue/orders").with_header("priority", "low");
        assert_eq!(h.send(&alice, normal), SendVerdict::Keep);
        assert!(Harness::<Urgent>::new(r#"{"suffix": ""}"#).is_err());
    }
}
