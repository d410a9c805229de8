//! `selector`: JMS/ActiveMQ message selectors for subscribers.
//!
//! A SUBSCRIBE with a `selector` header gets a filter: at SUBSCRIBE the selector is parsed (a
//! malformed one refuses the SUBSCRIBE with "selector: column N: ...") and the plugin asks the
//! host for only the headers the selector names; each delivery is then evaluated against them.
//! The parser and evaluator are the crate `plugboard-selector` (`plugins/selector-expr`), the
//! same code the broker runs for its native selectors; they are plain Rust, tested natively.
//!
//! The broker evaluates `selector` itself before any message filter plugin (docs/plugins.md), so
//! with this plugin loaded both judge each delivery the same way; it remains the reference
//! example of a Rust message filter and of `filter-plan` tokens.

use plugboard_packed as packed;
pub use plugboard_selector::{eval, parse, Selector};

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::rc::Rc;

wit_bindgen::generate!({ world: "fast-message-filter", path: "../../wit" });

use exports::plugboard::plugin::deliver::{
    FilterPlan, FilterVerdict, Guest as Deliver, Subscription,
};
use exports::plugboard::plugin::deliver_batch::Guest as DeliverBatch;
use exports::plugboard::plugin::lifecycle::Guest as Lifecycle;
use plugboard::plugin::types::{HeaderNeed, Manifest, Message, Needs, Principal};

/// Longest selector accepted.
pub const MAX_SELECTOR: usize = plugboard_selector::MAX_SELECTOR_BYTES;

/// Parses a selector for a subscriber, with the error text the client sees.
pub fn compile(selector: &str) -> Result<Selector, String> {
    Selector::compile(selector).map_err(|e| e.to_string())
}

/// Whether a message with these headers (name, value; first occurrence wins) matches.
pub fn matches(selector: &Selector, headers: &[(&str, &str)]) -> bool {
    selector.matches(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
}

thread_local! {
    /// Parsed selectors of this instance, by token (instances are pooled: this is only a cache).
    static CACHE: RefCell<Vec<(Vec<u8>, Rc<Selector>)>> = const { RefCell::new(Vec::new()) };
}

fn cached(token: &[u8]) -> Result<Rc<Selector>, String> {
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some((_, expr)) = cache.iter().find(|(t, _)| t == token) {
            return Ok(expr.clone());
        }
        let text = std::str::from_utf8(token).map_err(|_| "token is not UTF-8".to_string())?;
        let expr = Rc::new(compile(text)?);
        if cache.len() >= 64 {
            cache.remove(0);
        }
        cache.push((token.to_vec(), expr.clone()));
        Ok(expr)
    })
}

struct Plugin;

impl Lifecycle for Plugin {
    fn init(config: String) -> Result<Manifest, String> {
        if !matches!(config.trim(), "{}" | "") {
            return Err("config: the selector plugin takes no settings".into());
        }
        let none = Needs {
            headers: HeaderNeed::None,
            body: false,
        };
        Ok(Manifest {
            send: none.clone(),
            deliver: none,
        })
    }
}

impl Deliver for Plugin {
    fn prepare_subscription(
        _subscriber: Principal,
        sub: Subscription,
    ) -> Result<Option<FilterPlan>, String> {
        let Some(selector) = sub.headers.iter().find(|h| h.name == "selector") else {
            return Ok(None);
        };
        let names = compile(&selector.value)?.headers_used().to_vec();
        let token = selector.value.clone().into_bytes();
        Ok(Some(FilterPlan {
            token,
            needs: Needs {
                headers: HeaderNeed::Named(names),
                body: false,
            },
        }))
    }

    fn filter(token: Vec<u8>, msg: Message) -> FilterVerdict {
        let expr = match cached(&token) {
            Ok(expr) => expr,
            Err(_) => return FilterVerdict::Skip,
        };
        let headers: Vec<(&str, &str)> = msg
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        if matches(&expr, &headers) {
            FilterVerdict::Deliver
        } else {
            FilterVerdict::Skip
        }
    }
}

impl DeliverBatch for Plugin {
    fn filter_batch(token: Vec<u8>, msgs: Vec<u8>) -> Vec<FilterVerdict> {
        let expr = cached(&token).ok();
        packed::Reader::new(&msgs).each_message(|view| {
            if expr.as_ref().is_some_and(|e| matches(e, &view.headers)) {
                FilterVerdict::Deliver
            } else {
                FilterVerdict::Skip
            }
        })
    }
}

export!(Plugin);
