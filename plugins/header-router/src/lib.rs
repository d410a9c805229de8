//! `header-router`: routes SENDs by a header's value.
//!
//! Rules are tried in order; the first whose `destination` equals the message's destination and
//! whose `header` has the value `value` (first occurrence) sends the message to every destination
//! in `to` (one: a rewrite, several: a fan-out). When no rule matches, `default` (if set) is used,
//! else the message is rejected when `reject_unmatched` is true, else it stays where it was sent.
//! The plugin only asks the host for the headers its rules name, never for the body. When the
//! operator traces it, each decision carries a note naming the rule that matched, e.g.
//! `rule 1: /queue/orders → /queue/orders.eu (region = eu)`.

use plugboard_sdk::packed::{MessageView, Writer};
use plugboard_sdk::prelude::*;
use serde::Deserialize;

/// The plugin's config table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Rules, tried in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Where unmatched messages go (none: they stay, or are rejected).
    #[serde(default)]
    pub default: Vec<String>,
    /// Reject a message that no rule matches (and no default applies).
    #[serde(default)]
    pub reject_unmatched: bool,
}

/// "On `destination`, header `header` = `value` → `to`".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The destination this rule applies to.
    pub destination: String,
    /// The header to look at.
    pub header: String,
    /// The value it must have.
    pub value: String,
    /// Where matching messages go (one or more destinations).
    pub to: Vec<String>,
}

/// What to do with a message, independent of the WIT types.
#[derive(Debug, PartialEq)]
pub enum Route<'a> {
    /// Leave it alone.
    Stay,
    /// Send it to these destinations.
    To(&'a [String]),
    /// Refuse it.
    Reject(String),
}

/// Parses and checks the config.
pub fn parse_config(json: &str) -> Result<Config, String> {
    check(plugboard_sdk::parse_config(json)?)
}

/// Checks a parsed config.
fn check(config: Config) -> Result<Config, String> {
    let all_targets = config
        .rules
        .iter()
        .flat_map(|r| &r.to)
        .chain(&config.default);
    if let Some(bad) = all_targets.into_iter().find(|d| !d.starts_with('/')) {
        return Err(format!("config: destination `{bad}` must start with `/`"));
    }
    if let Some(rule) = config.rules.iter().find(|r| r.to.is_empty()) {
        return Err(format!(
            "config: rule for `{}` has an empty `to`",
            rule.destination
        ));
    }
    Ok(config)
}

/// Decides where a message goes; `header` looks a header's first value up by name.
pub fn route<'a, 'h>(
    config: &'a Config,
    destination: &str,
    header: impl Fn(&str) -> Option<&'h str>,
) -> Route<'a> {
    for (i, rule) in config.rules.iter().enumerate() {
        if rule.destination == destination && header(&rule.header) == Some(rule.value.as_str()) {
            // Formatted only when the operator traces this call.
            trace_note(|| {
                format!(
                    "rule {}: {} → {} ({} = {})",
                    i + 1,
                    rule.destination,
                    rule.to.join(", "),
                    rule.header,
                    rule.value
                )
            });
            return Route::To(&rule.to);
        }
    }
    if !config.default.is_empty() {
        trace_note(|| format!("no rule matched: default → {}", config.default.join(", ")));
        Route::To(&config.default)
    } else if config.reject_unmatched {
        trace_note(|| "no rule matched: reject_unmatched".to_string());
        // Coded, so that a client can tell "no route" from other refusals: the ERROR carries
        // `error-code:plugin.<name>.no-route`.
        Route::Reject(plugboard_sdk::coded_reason(
            "no-route",
            &format!("no route for this message on {destination}"),
        ))
    } else {
        trace_note(|| "no rule matched: the message stays".to_string());
        Route::Stay
    }
}

/// The plugin: its checked config.
pub struct HeaderRouter(Config);

impl Plugin for HeaderRouter {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        check(config).map(HeaderRouter)
    }

    fn manifest(&self) -> Manifest {
        // Only the headers the rules name, never the body.
        let mut names: Vec<&str> = self.0.rules.iter().map(|r| r.header.as_str()).collect();
        names.sort();
        names.dedup();
        Manifest::send(Needs::headers(names))
    }
}

impl HeaderRouter {
    fn verdict<'h>(
        &self,
        destination: &str,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> SendVerdict {
        match route(&self.0, destination, header) {
            Route::Stay => SendVerdict::Keep,
            Route::To([one]) if one == destination => SendVerdict::Keep,
            Route::To([one]) => SendVerdict::Rewrite(Edit::to(one)),
            Route::To(many) => SendVerdict::FanOut(many.iter().map(Edit::to).collect()),
            Route::Reject(reason) => SendVerdict::Reject(reason),
        }
    }
}

impl Router for HeaderRouter {
    fn on_send(&self, _sender: &Principal, msg: &Message) -> SendVerdict {
        self.verdict(&msg.destination, |name| msg.header(name))
    }

    // The packed fast paths (`send-packed`, `send-batch`): the same decision on the borrowed
    // message, without copying it.
    fn on_send_view(&self, _sender: &Principal, msg: &MessageView<'_>) -> SendVerdict {
        self.verdict(msg.destination, |name| msg.header(name))
    }

    // `send-batch-packed`: the same decision, written straight from the config (no verdict built).
    fn on_send_packed(&self, _sender: &Principal, msg: &MessageView<'_>, out: &mut Writer) {
        let (no_removes, no_sets) = (std::iter::empty, std::iter::empty);
        match route(&self.0, msg.destination, |name| msg.header(name)) {
            Route::Stay => out.keep(),
            Route::To([one]) if one == msg.destination => out.keep(),
            Route::To([one]) => out.rewrite(Some(one), no_removes(), no_sets(), None),
            Route::To(many) => {
                out.fan_out(many.len());
                for to in many {
                    out.edit(Some(to), no_removes(), no_sets(), None);
                }
                out
            }
            Route::Reject(reason) => out.reject(&reason),
        };
    }
}

plugboard_sdk::export_router!(HeaderRouter);

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"rules":[
        {"destination":"/queue/orders","header":"region","value":"eu","to":["/queue/orders.eu"]},
        {"destination":"/queue/orders","header":"region","value":"all","to":["/queue/a","/queue/b"]}]}"#;

    fn lookup<'h>(pairs: &'h [(&'h str, &'h str)]) -> impl Fn(&str) -> Option<&'h str> {
        move |n| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
    }

    #[test]
    fn routes_first_match_fan_out_and_stays() {
        let c = parse_config(CONFIG).unwrap();
        let eu = [("region", "eu"), ("region", "us")];
        assert_eq!(
            route(&c, "/queue/orders", lookup(&eu)),
            Route::To(&["/queue/orders.eu".to_string()])
        );
        let all = [("region", "all")];
        assert!(matches!(route(&c, "/queue/orders", lookup(&all)), Route::To(t) if t.len() == 2));
        assert_eq!(route(&c, "/queue/orders", lookup(&[])), Route::Stay);
        assert_eq!(route(&c, "/queue/other", lookup(&eu)), Route::Stay);
    }

    /// The packed answer (`send-batch-packed`) reads back as the typed one (`send-batch`).
    #[test]
    fn packed_verdicts_are_the_typed_ones() {
        use plugboard_sdk::packed::{Reader, VerdictView};
        let plugin = HeaderRouter(parse_config(CONFIG).unwrap());
        let sender = Principal::named("alice");
        for region in ["eu", "all", "us"] {
            let msg = MessageView {
                destination: "/queue/orders",
                headers: vec![("region", region)],
                ..MessageView::default()
            };
            let mut typed = Writer::new();
            plugboard_sdk::packed::write_verdict(&mut typed, &plugin.on_send_view(&sender, &msg));
            let mut packed = Writer::new();
            plugin.on_send_packed(&sender, &msg, &mut packed);
            let (typed, packed) = (typed.finish(), packed.finish());
            assert_eq!(packed, typed, "{region}");
            assert!(Reader::new(&packed)
                .verdict()
                .is_some_and(|v| match region {
                    "us" => v == VerdictView::Keep,
                    _ => v != VerdictView::Keep,
                }));
        }
    }

    #[test]
    fn a_traced_decision_names_the_rule_and_an_untraced_one_writes_nothing() {
        let c = parse_config(CONFIG).unwrap();
        let eu = [("region", "eu")];
        let (routed, notes) =
            plugboard_sdk::testing::traced(|| route(&c, "/queue/orders", lookup(&eu)));
        assert!(matches!(routed, Route::To(_)));
        assert_eq!(
            notes,
            ["rule 1: /queue/orders → /queue/orders.eu (region = eu)"]
        );
        let (_, notes) = plugboard_sdk::testing::traced(|| route(&c, "/queue/x", lookup(&[])));
        assert_eq!(notes, ["no rule matched: the message stays"]);
        let ((), notes) = plugboard_sdk::testing::traced(|| ());
        assert!(notes.is_empty());
        // Not traced: the note is never built.
        let _ = route(&c, "/queue/orders", lookup(&eu));
        assert!(!plugboard_sdk::context::tracing());
    }

    #[test]
    fn default_and_reject() {
        let c = parse_config(r#"{"reject_unmatched":true}"#).unwrap();
        match route(&c, "/q", lookup(&[])) {
            Route::Reject(reason) => {
                assert_eq!(reason, "[no-route] no route for this message on /q")
            }
            _ => panic!("not rejected"),
        }
        let c = parse_config(r#"{"default":["/queue/dead"]}"#).unwrap();
        assert!(matches!(route(&c, "/q", lookup(&[])), Route::To(_)));
        assert!(parse_config(r#"{"default":["nope"]}"#)
            .unwrap_err()
            .contains("must start"));
    }
}
