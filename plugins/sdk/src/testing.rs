//! Native tests of a plugin, without wasm: [`Harness`] builds the plugin from a JSON config as
//! the host's `init` does and passes each hook only what the plugin's manifest (or filter plan)
//! asked for, so a test sees exactly what the plugin sees in the broker. [`apply`] shows the
//! message an [`Edit`] produces.
//!
//! ```ignore
//! let h = Harness::<MyRouter>::new(r#"{"to": "/queue/b"}"#).unwrap();
//! let verdict = h.send(&Principal::named("alice"), Message::new("/queue/a").with_header("level", "loud"));
//! assert_eq!(verdict, SendVerdict::Rewrite(Edit::to("/queue/b")));
//! ```

use crate::{
    AuthRequest, AuthResult, Authenticator, Edit, Filter, FilterPlan, FilterVerdict, HeaderNeed,
    Manifest, Message, Needs, Plugin, Principal, RedeliverEvent, RedeliverVerdict, Redeliverer,
    Router, SendVerdict, Subscription,
};

/// A plugin built from its config, with its manifest.
pub struct Harness<P: Plugin> {
    /// The plugin value.
    pub plugin: P,
    /// What it declared at init.
    pub manifest: Manifest,
}

impl<P: Plugin> Harness<P> {
    /// Parses `config_json` and builds the plugin, as `init` does (`Err` = init would fail).
    pub fn new(config_json: &str) -> Result<Harness<P>, String> {
        let plugin = crate::init::<P>(config_json)?;
        let manifest = plugin.manifest();
        Ok(Harness { plugin, manifest })
    }

    /// Calls `on-send` with `msg` projected by the manifest's `send` needs.
    pub fn send(&self, sender: &Principal, msg: Message) -> SendVerdict
    where
        P: Router,
    {
        self.plugin
            .on_send(sender, &project(msg, &self.manifest.send))
    }

    /// Calls `authenticate`.
    pub fn authenticate(&self, request: &AuthRequest) -> AuthResult
    where
        P: Authenticator,
    {
        self.plugin.authenticate(request)
    }

    /// Calls `prepare-subscription`.
    pub fn subscribe(
        &self,
        subscriber: &Principal,
        sub: &Subscription,
    ) -> Result<Option<FilterPlan>, String>
    where
        P: Filter,
    {
        self.plugin.prepare_subscription(subscriber, sub)
    }

    /// Calls `filter` with `plan`'s token and `msg` projected by `plan`'s needs.
    pub fn filter(&self, plan: &FilterPlan, msg: Message) -> FilterVerdict
    where
        P: Filter,
    {
        self.plugin.filter(&plan.token, &project(msg, &plan.needs))
    }
}

impl<P: Plugin> Harness<P> {
    /// Calls `on-redeliver` with the event's message projected by the manifest's `deliver`
    /// needs.
    pub fn redeliver(&self, mut event: RedeliverEvent) -> RedeliverVerdict
    where
        P: Redeliverer,
    {
        event.msg = project(event.msg, &self.manifest.deliver);
        self.plugin.on_redeliver(&event)
    }
}

/// What the host passes for `needs`: only the named (or all, or no) headers, the body only when
/// asked for; destination, content type and body length always.
pub fn project(mut msg: Message, needs: &Needs) -> Message {
    msg.body_len = msg.body.as_ref().map_or(msg.body_len, |b| b.len() as u64);
    msg.content_type = msg
        .headers
        .iter()
        .find(|h| h.name == "content-type")
        .map(|h| h.value.clone())
        .or(msg.content_type);
    match &needs.headers {
        HeaderNeed::All => {}
        HeaderNeed::None => msg.headers.clear(),
        HeaderNeed::Named(names) => msg.headers.retain(|h| names.contains(&h.name)),
    }
    if !needs.body {
        msg.body = None;
    }
    msg
}

/// The message the host delivers after applying `edit` to `msg` (removals, then sets).
pub fn apply(mut msg: Message, edit: &Edit) -> Message {
    if let Some(d) = &edit.destination {
        msg.destination = d.clone();
    }
    msg.headers
        .retain(|h| !edit.remove_headers.contains(&h.name));
    for set in &edit.set_headers {
        match msg.headers.iter().position(|h| h.name == set.name) {
            Some(first) => {
                msg.headers[first].value = set.value.clone();
                let mut i = 0;
                msg.headers.retain(|h| {
                    i += 1;
                    i - 1 == first || h.name != set.name
                });
            }
            None => msg.headers.push(set.clone()),
        }
    }
    if let Some(body) = &edit.body {
        msg.body_len = body.len() as u64;
        msg.body = Some(body.clone());
    }
    msg
}

/// Runs `f` with its plugin calls traced (WIT `context.tracing` is true) and returns what it
/// returned with the notes the calls wrote ([`crate::trace_note()`], [`crate::context::note`]).
pub fn traced<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    crate::context::traced_native(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Header, NoConfig};

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Config {
        to: String,
    }

    struct Loud(Config);

    impl Plugin for Loud {
        type Config = Config;
        fn new(config: Config) -> Result<Self, String> {
            if !config.to.starts_with('/') {
                return Err("`to` must start with `/`".into());
            }
            Ok(Loud(config))
        }
        fn manifest(&self) -> Manifest {
            Manifest::send(Needs::headers(["level"]))
        }
    }

    impl Router for Loud {
        fn on_send(&self, _: &Principal, msg: &Message) -> SendVerdict {
            assert!(msg.body.is_none(), "the body was not asked for");
            assert!(msg.header("other").is_none(), "`other` was not asked for");
            match msg.header("level") {
                Some("loud") => SendVerdict::Rewrite(Edit::to(&self.0.to)),
                _ => SendVerdict::Keep,
            }
        }
    }

    struct Nothing;
    impl Plugin for Nothing {
        type Config = NoConfig;
        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(Nothing)
        }
    }

    #[test]
    fn harness_projects_and_parses_config() {
        let h = Harness::<Loud>::new(r#"{"to":"/queue/loud"}"#).unwrap();
        let msg = Message::new("/queue/a")
            .with_header("other", "x")
            .with_header("level", "loud")
            .with_body("hello");
        assert_eq!(
            h.send(&Principal::named("alice"), msg),
            SendVerdict::Rewrite(Edit::to("/queue/loud"))
        );
        let err = Harness::<Loud>::new(r#"{"to":"/q","extra":1}"#)
            .err()
            .unwrap();
        assert!(err.starts_with("config: unknown field `extra`"), "{err}");
        assert!(Harness::<Loud>::new(r#"{"to":"q"}"#).is_err());
        assert!(Harness::<Nothing>::new(r#"{"anything":[1,2]}"#).is_ok());
    }

    #[test]
    fn apply_removes_then_sets() {
        let msg = Message::new("/a")
            .with_header("x", "1")
            .with_header("y", "2")
            .with_header("x", "3");
        let out = apply(
            msg,
            &Edit::to("/b")
                .remove_header("y")
                .set_header("x", "9")
                .set_header("z", "0"),
        );
        assert_eq!(out.destination, "/b");
        assert_eq!(
            out.headers,
            vec![Header::new("x", "9"), Header::new("z", "0")]
        );
    }
}

/// The kv store's native stand-in (a map per test thread).
#[cfg(not(target_arch = "wasm32"))]
pub mod kv {
    /// Empties this thread's store.
    pub fn reset() {
        crate::store::kv::native::reset();
    }
}

/// The clock's native stand-in: fixed per test thread when set.
#[cfg(not(target_arch = "wasm32"))]
pub mod clock {
    use crate::store::clock::native::FIXED;

    /// Fixes this thread's clock (`clock::now_ms` and `monotonic_ms`) at `ms`.
    pub fn set(ms: u64) {
        FIXED.with(|f| f.set(Some(ms)));
    }

    /// Moves this thread's fixed clock `ms` forward (fixing it at the system time first).
    pub fn advance(ms: u64) {
        let now = crate::clock::now_ms();
        set(now + ms);
    }
}
