//! `redact`: masks configured JSON fields in `application/json` bodies.
//!
//! `mode = "send"` masks when the message is sent (no subscriber ever sees the value);
//! `mode = "deliver"` masks per subscriber, except for subscribers in `exempt_groups`. Every
//! occurrence of a listed field name, at any depth, gets `mask` (which may not contain digits) in
//! place of its value; other fields and their order stay as they were. A body that claims to be
//! JSON but is not is rejected on send (skipped on delivery) rather than passed on unmasked.

use serde::Deserialize;
use serde_json::Value;
use std::sync::OnceLock;

use plugboard_packed as packed;

wit_bindgen::generate!({ world: "fast-transformer", path: "../../wit" });

use exports::plugboard::plugin::deliver::{
    FilterPlan, FilterVerdict, Guest as Deliver, Subscription,
};
use exports::plugboard::plugin::deliver_batch::Guest as DeliverBatch;
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use exports::plugboard::plugin::send::{Guest as Send, SendVerdict};
use exports::plugboard::plugin::send_batch::Guest as SendBatch;
use exports::plugboard::plugin::send_packed::Guest as SendPacked;
use plugboard::plugin::types::{Edit, HeaderNeed, Manifest, Message, Needs, Principal};

/// When to mask.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// On SEND, for everyone.
    #[default]
    Send,
    /// On delivery, per subscriber.
    Deliver,
}

/// The plugin's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Field names to mask.
    pub fields: Vec<String>,
    /// When to mask.
    #[serde(default)]
    pub mode: Mode,
    /// The replacement value.
    #[serde(default = "default_mask")]
    pub mask: String,
    /// In deliver mode, subscribers in these groups see bodies unmasked.
    #[serde(default)]
    pub exempt_groups: Vec<String>,
}

fn default_mask() -> String {
    "****".to_string()
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Parses and checks the config.
pub fn parse_config(json: &str) -> Result<Config, String> {
    let config: Config = serde_json::from_str(json).map_err(|e| format!("config: {e}"))?;
    if config.fields.is_empty() {
        return Err("config: `fields` is empty".into());
    }
    if config.mask.chars().any(|c| c.is_ascii_digit()) {
        return Err("config: `mask` may not contain digits".into());
    }
    Ok(config)
}

/// Whether a content type is JSON (`application/json`, with or without parameters).
pub fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        let essence = ct.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
            || essence.to_ascii_lowercase().ends_with("+json")
    })
}

fn mask_value(value: &mut Value, config: &Config) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if config.fields.iter().any(|f| f == key) {
                    *v = Value::String(config.mask.clone());
                    changed = true;
                } else {
                    changed |= mask_value(v, config);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                changed |= mask_value(v, config);
            }
        }
        _ => {}
    }
    changed
}

/// Masks a JSON body: `Ok(None)` when nothing needed masking.
pub fn redact(body: &[u8], config: &Config) -> Result<Option<Vec<u8>>, String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    if !mask_value(&mut value, config) {
        return Ok(None);
    }
    serde_json::to_vec(&value)
        .map(Some)
        .map_err(|e| e.to_string())
}

fn body_edit(body: Vec<u8>) -> Edit {
    Edit {
        destination: None,
        remove_headers: vec!["content-length".into()],
        set_headers: Vec::new(),
        body: Some(body),
    }
}

fn needs_body() -> Needs {
    Needs {
        headers: HeaderNeed::None,
        body: true,
    }
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(config: String) -> Result<Manifest, String> {
        let parsed = parse_config(&config)?;
        let _ = CONFIG.set(parsed);
        Ok(Manifest {
            send: needs_body(),
            deliver: needs_body(),
        })
    }
}

/// The send hook on what it reads: the content type and the body.
fn on_send(content_type: Option<&str>, body: &[u8]) -> SendVerdict {
    let Some(config) = CONFIG.get() else {
        return SendVerdict::Reject("not initialised".into());
    };
    if config.mode != Mode::Send || !is_json(content_type) {
        return SendVerdict::Keep;
    }
    match redact(body, config) {
        Ok(None) => SendVerdict::Keep,
        Ok(Some(body)) => SendVerdict::Rewrite(body_edit(body)),
        Err(reason) => SendVerdict::Reject(reason),
    }
}

/// The message hook on what it reads: the content type and the body.
fn filter(content_type: Option<&str>, body: &[u8]) -> FilterVerdict {
    let Some(config) = CONFIG.get() else {
        return FilterVerdict::Skip;
    };
    if !is_json(content_type) {
        return FilterVerdict::Deliver;
    }
    match redact(body, config) {
        Ok(None) => FilterVerdict::Deliver,
        Ok(Some(body)) => FilterVerdict::Rewrite(body_edit(body)),
        Err(_) => FilterVerdict::Skip,
    }
}

impl Send for Plugin {
    fn on_send(_sender: Principal, msg: Message) -> SendVerdict {
        on_send(
            msg.content_type.as_deref(),
            msg.body.as_deref().unwrap_or_default(),
        )
    }
}

impl SendPacked for Plugin {
    fn on_send_packed(input: Vec<u8>) -> SendVerdict {
        let mut reader = packed::Reader::new(&input);
        match reader.skip_principal().and_then(|_| reader.message()) {
            Some(view) => on_send(view.content_type, view.body.unwrap_or_default()),
            None => SendVerdict::Reject("redact: malformed packed input".into()),
        }
    }
}

impl SendBatch for Plugin {
    fn on_send_batch(input: Vec<u8>) -> Vec<SendVerdict> {
        let mut reader = packed::Reader::new(&input);
        if reader.skip_principal().is_none() {
            return Vec::new();
        }
        reader.each_message(|view| on_send(view.content_type, view.body.unwrap_or_default()))
    }
}

impl DeliverBatch for Plugin {
    fn filter_batch(_token: Vec<u8>, msgs: Vec<u8>) -> Vec<FilterVerdict> {
        packed::Reader::new(&msgs)
            .each_message(|view| filter(view.content_type, view.body.unwrap_or_default()))
    }
}

impl Deliver for Plugin {
    fn prepare_subscription(
        subscriber: Principal,
        _sub: Subscription,
    ) -> Result<Option<FilterPlan>, String> {
        let Some(config) = CONFIG.get() else {
            return Err("not initialised".into());
        };
        let exempt = subscriber
            .groups
            .iter()
            .any(|g| config.exempt_groups.contains(g));
        if config.mode != Mode::Deliver || exempt {
            return Ok(None);
        }
        Ok(Some(FilterPlan {
            token: Vec::new(),
            needs: needs_body(),
        }))
    }

    fn filter(_token: Vec<u8>, msg: Message) -> FilterVerdict {
        filter(
            msg.content_type.as_deref(),
            msg.body.as_deref().unwrap_or_default(),
        )
    }
}

export!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_fields_at_any_depth_and_keeps_order() {
        let c = parse_config(r#"{"fields":["card"]}"#).unwrap();
        let out = redact(
            br#"{"id":7,"card":"4111 1111 1111 1111","items":[{"card":4111}],"amount":12}"#,
            &c,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"id":7,"card":"****","items":[{"card":"****"}],"amount":12}"#
        );
        assert_eq!(redact(br#"{"id":1}"#, &c).unwrap(), None);
        assert!(redact(b"not json", &c).is_err());
    }

    #[test]
    fn config_and_content_type() {
        assert!(parse_config(r#"{"fields":["a"],"mask":"0000"}"#)
            .unwrap_err()
            .contains("digits"));
        assert!(parse_config(r#"{"fields":[]}"#).is_err());
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("application/vnd.x+json")));
        assert!(!is_json(Some("text/plain")) && !is_json(None));
    }
}
