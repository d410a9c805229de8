//! `plugboard-sdk`: write a Plugboard plugin in Rust in a handful of lines.
//!
//! ```ignore
//! use plugboard_sdk::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Config { to: String }
//!
//! struct Shout(Config);
//!
//! impl Plugin for Shout {
//!     type Config = Config;
//!     fn new(config: Config) -> Result<Self, String> { Ok(Shout(config)) }
//!     fn manifest(&self) -> Manifest { Manifest::send(Needs::headers(["level"])) }
//! }
//!
//! impl Router for Shout {
//!     fn on_send(&self, _sender: &Principal, msg: &Message) -> SendVerdict {
//!         match msg.header("level") {
//!             Some("loud") => SendVerdict::Rewrite(Edit::to(&self.0.to)),
//!             _ => SendVerdict::Keep,
//!         }
//!     }
//! }
//!
//! plugboard_sdk::export_router!(Shout);
//! ```
//!
//! - **Typed values**: [`Message`], [`Principal`], [`Edit`], the verdicts, all generated from
//!   `wit/plugin.wit` and given helpers here ([`Message::header`], [`Edit::to`],
//!   [`Principal::in_group`], [`Needs::headers`], ...).
//! - **Config**: [`Plugin::Config`] is any `serde::Deserialize` type; the SDK parses the JSON the
//!   host passes to `init` and reports errors as `config: ...`. Use [`NoConfig`] for none.
//! - **One trait per hook**: [`Router`] (`send`), [`Authenticator`] (`authenticate`;
//!   [`ExpiringAuthenticator`] for logins that expire, exported with
//!   [`export_expiring_authenticator!`]),
//!   [`Filter`] (`message`), [`Redeliverer`] (`redeliver`); export with the macro of the matching world: [`export_router!`],
//!   [`export_authenticator!`], [`export_message_filter!`], [`export_transformer!`] (send and
//!   message), [`export_redeliverer!`] or [`export_full!`]. The component then exports exactly those hooks.
//! - **Native tests**: [`testing::Harness`] runs a plugin without wasm, and passes it only what
//!   its manifest asked for, as the host does.
//! - **Logging**: [`log`] writes into the broker's log (to stderr in native tests).
//! - **Reject codes**: [`coded_reason`] gives a reject reason a code the client receives as
//!   `error-code:plugin.<plugin-name>.<code>`.
//! - **State and time** (WIT 0.1.4): [`kv`] is the host's key-value store for this plugin in
//!   the call's virtual host (counters, windows, rate limits), [`clock`] the time; both have
//!   stand-ins in native tests ([`testing::kv`], [`testing::clock`]).
//!
//! The plugin value is created once per instance by `init` and shared by every call of that
//! instance. Instances are pooled and interchangeable: keep no per-subscription state in it (use
//! the filter token), only caches.

use std::borrow::Cow;
use std::sync::OnceLock;

/// The bindings of the `everything` world: every type, and the export glue of every interface. A
/// plugin's export macro generates only its own world's custom section (which names the exports
/// the component must have) and points everything else here.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "everything",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_full_world",
        default_bindings_module: "plugboard_sdk::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

use bindings::exports::plugboard::plugin as ex;

pub use bindings::plugboard::plugin::types::{
    BasicCredentials, ClientCertificate, ListenerKind, UpgradeCredentials,
};
pub use bindings::plugboard::plugin::types::{
    Edit, Header, HeaderNeed, Manifest, Message, Needs, Principal,
};
pub use ex::authenticate::{AuthRequest, AuthResult};
pub use ex::authenticate_expiring::{ExpiringAuthRequest, ExpiringAuthResult, Grant};
pub use ex::authenticate_peer::{AuthResult as PeerAuthResult, PeerAuthRequest};
pub use ex::deliver::{FilterPlan, FilterVerdict, Subscription};
pub use ex::redeliver::{DeadLetterTarget, RedeliverEvent, RedeliverReason, RedeliverVerdict};
pub use ex::send::SendVerdict;

/// Re-exported for the export macros.
#[doc(hidden)]
pub use std::sync::OnceLock as __OnceLock;

pub mod packed;
mod reason;
mod store;
pub mod testing;

pub use store::{clock, kv};

pub use reason::{coded_reason, is_valid_code};

/// Everything a plugin usually needs: `use plugboard_sdk::prelude::*;`.
pub mod prelude {
    pub use crate::{
        clock, coded_reason, context, kv, log, trace_note, AuthRequest, AuthResult, Authenticator,
        Edit, ExpiringAuthRequest, ExpiringAuthResult, ExpiringAuthenticator, Filter, FilterPlan,
        FilterVerdict, Grant, Header, HeaderNeed, Headers, Manifest, Message, Needs, NoConfig,
        Plugin, Principal, RedeliverEvent, RedeliverReason, RedeliverVerdict, Redeliverer, Router,
        SendVerdict, Subscription,
    };
}

/// A plugin: its config type, how to build it from its config, and what it reads.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The plugin's `[plugins.config]` table (parsed from JSON with serde). [`NoConfig`]
    /// accepts anything.
    type Config: serde::de::DeserializeOwned;

    /// Builds the plugin from its config, once per instance; an `Err` stops the broker from
    /// loading it and is shown to the operator.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// What `on-send` and (by default) `filter` read of a message: the host copies nothing else.
    /// The default reads nothing but the destination, content type and body length.
    fn manifest(&self) -> Manifest {
        Manifest::nothing()
    }
}

/// The `send` hook: route, fan out, rewrite or reject a SEND.
pub trait Router: Plugin {
    /// Called for every SEND to a destination the plugin is configured for.
    fn on_send(&self, sender: &Principal, msg: &Message) -> SendVerdict;

    /// The same, for the host's packed fast paths (`send-packed`, and `send-batch` per
    /// message), with the message borrowed from the packed input. The default copies it into a
    /// [`Message`] and calls [`Router::on_send`]; override it to skip that copy.
    fn on_send_view(&self, sender: &Principal, msg: &packed::MessageView<'_>) -> SendVerdict {
        self.on_send(sender, &packed::to_message(msg))
    }

    /// The same, answering with a packed verdict (`send-batch-packed`, per message). The default
    /// packs what [`Router::on_send_view`] returns; override it to write a verdict without
    /// building one, e.g. a destination borrowed from the plugin's config.
    fn on_send_packed(
        &self,
        sender: &Principal,
        msg: &packed::MessageView<'_>,
        out: &mut packed::Writer,
    ) {
        packed::write_verdict(out, &self.on_send_view(sender, msg));
    }
}

/// The `authenticate` hook: decide who a connecting client is.
pub trait Authenticator: Plugin {
    /// Called for every CONNECT.
    fn authenticate(&self, request: &AuthRequest) -> AuthResult;
}

/// The `authenticate` hook in its 0.1.1 form (`authenticate-peer`): the CONNECT frame plus what
/// the listener knows of the client (listener kind, verified TLS client certificate, WebSocket
/// upgrade credentials).
pub trait PeerAuthenticator: Plugin {
    /// Called for every CONNECT.
    fn authenticate_peer(&self, request: &PeerAuthRequest) -> PeerAuthResult;
}

/// The `authenticate` hook in its 0.1.4 form (`authenticate-expiring`): the request of
/// `authenticate-peer` plus the host's clock (`now_ms`) and whether the client is
/// re-authenticating (`reauth`); a [`Grant`] may give the login an end (`expires_at_ms`), at
/// which the host closes the connection unless the client re-authenticated.
pub trait ExpiringAuthenticator: Plugin {
    /// Called for every CONNECT, and for every re-authentication (`request.reauth`).
    fn authenticate_expiring(&self, request: &ExpiringAuthRequest) -> ExpiringAuthResult;
}

impl ExpiringAuthResult {
    /// Admits `principal` until `expires_at_ms` (Unix ms; `None`: no end).
    pub fn allow(principal: Principal, expires_at_ms: Option<u64>) -> ExpiringAuthResult {
        ExpiringAuthResult::Allow(Grant {
            principal,
            expires_at_ms,
        })
    }
}

/// The `message` hook: per-subscriber filters and transforms.
pub trait Filter: Plugin {
    /// Called at SUBSCRIBE: `Ok(None)` = no filter (deliveries cost nothing), `Ok(Some(plan))`
    /// = call [`Filter::filter`] with `plan.token` for every delivery, `Err` refuses the SUBSCRIBE.
    fn prepare_subscription(
        &self,
        subscriber: &Principal,
        sub: &Subscription,
    ) -> Result<Option<FilterPlan>, String>;

    /// Called for every message delivered to a subscription that has a plan.
    fn filter(&self, token: &[u8], msg: &Message) -> FilterVerdict;

    /// The same, for each message of a batch (`deliver-batch`), borrowed from the packed input.
    /// The default copies it into a [`Message`] and calls [`Filter::filter`]; override it to
    /// skip that copy.
    fn filter_view(&self, token: &[u8], msg: &packed::MessageView<'_>) -> FilterVerdict {
        self.filter(token, &packed::to_message(msg))
    }
}

/// The `redeliver` hook (since WIT 0.1.3): what becomes of a queue's message that came back
/// (NACKed, left by its consumer, expired). The event's message is projected as the manifest's
/// `deliver` needs say.
pub trait Redeliverer: Plugin {
    /// Called for every message that comes back to a queue the plugin is configured for.
    fn on_redeliver(&self, event: &RedeliverEvent) -> RedeliverVerdict;
}

impl RedeliverVerdict {
    /// Dead-letter to `destination` (a `/queue/`) with `reason` as its `dlq-reason`.
    pub fn dead_letter(destination: impl Into<String>, reason: impl Into<String>) -> Self {
        RedeliverVerdict::DeadLetter(DeadLetterTarget {
            destination: destination.into(),
            reason: reason.into(),
        })
    }
}

/// A config type for plugins without configuration: accepts any table.
pub type NoConfig = serde::de::IgnoredAny;

/// Parses a plugin's JSON config; errors read `config: ...` as the operator sees them.
pub fn parse_config<C: serde::de::DeserializeOwned>(json: &str) -> Result<C, String> {
    serde_json::from_str(json).map_err(|e| format!("config: {e}"))
}

/// Builds a plugin from its JSON config as `init` does (for tests, see [`testing`]).
pub fn init<P: Plugin>(json: &str) -> Result<P, String> {
    P::new(parse_config(json)?)
}

// ---------------------------------------------------------------------------------------------
// Helpers on the WIT types.

impl Needs {
    /// Nothing: destination, content type and body length only.
    pub fn nothing() -> Needs {
        Needs {
            headers: HeaderNeed::None,
            body: false,
        }
    }

    /// These headers (exact names), no body.
    pub fn headers<I, S>(names: I) -> Needs
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Needs {
            headers: HeaderNeed::Named(names.into_iter().map(Into::into).collect()),
            body: false,
        }
    }

    /// Every header, no body.
    pub fn all_headers() -> Needs {
        Needs {
            headers: HeaderNeed::All,
            body: false,
        }
    }

    /// The same, plus the body.
    pub fn with_body(mut self) -> Needs {
        self.body = true;
        self
    }
}

impl Manifest {
    /// Reads nothing on either hook.
    pub fn nothing() -> Manifest {
        Manifest {
            send: Needs::nothing(),
            deliver: Needs::nothing(),
        }
    }

    /// `on-send` reads `needs`; `filter` reads nothing by default.
    pub fn send(needs: Needs) -> Manifest {
        Manifest {
            send: needs,
            deliver: Needs::nothing(),
        }
    }

    /// `filter` reads `needs` (unless a plan says otherwise); `on-send` reads nothing.
    pub fn deliver(needs: Needs) -> Manifest {
        Manifest {
            send: Needs::nothing(),
            deliver: needs,
        }
    }
}

impl Header {
    /// A header.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// Header lookups over `[Header]` (message, CONNECT and SUBSCRIBE headers alike).
pub trait Headers {
    /// The first value of header `name` (exact, case-sensitive), as STOMP says repeats resolve.
    fn header(&self, name: &str) -> Option<&str>;
    /// Every value of header `name`, in order.
    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a;
}

impl Headers for [Header] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_str())
    }
}

impl Message {
    /// A message to `destination` with no headers and an empty body (for tests).
    pub fn new(destination: impl Into<String>) -> Message {
        Message {
            destination: destination.into(),
            headers: Vec::new(),
            content_type: None,
            body_len: 0,
            body: Some(Vec::new()),
        }
    }

    /// Adds a header (builder style, for tests). `content-type` also sets `content_type`.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Message {
        let header = Header::new(name, value);
        if header.name == "content-type" {
            self.content_type = Some(header.value.clone());
        }
        self.headers.push(header);
        self
    }

    /// Sets the body (builder style, for tests).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Message {
        let body = body.into();
        self.body_len = body.len() as u64;
        self.body = Some(body);
        self
    }

    /// The first value of header `name`, when the manifest asked for it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.header(name)
    }

    /// The body, when the manifest asked for it (else empty).
    pub fn body(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.body())
    }

    /// The body parsed as JSON into `T`.
    pub fn body_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(self.body()).map_err(|e| format!("body: {e}"))
    }
}

impl Edit {
    /// An edit that changes nothing (start of a builder).
    pub fn none() -> Edit {
        Edit {
            destination: None,
            remove_headers: Vec::new(),
            set_headers: Vec::new(),
            body: None,
        }
    }

    /// Sends the message to `destination` instead.
    pub fn to(destination: impl Into<String>) -> Edit {
        Edit::none().destination(destination)
    }

    /// Sets the destination.
    pub fn destination(mut self, destination: impl Into<String>) -> Edit {
        self.destination = Some(destination.into());
        self
    }

    /// Sets header `name` (replacing every occurrence, or appending it).
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Edit {
        self.set_headers.push(Header::new(name, value));
        self
    }

    /// Removes every occurrence of header `name`.
    pub fn remove_header(mut self, name: impl Into<String>) -> Edit {
        self.remove_headers.push(name.into());
        self
    }

    /// Replaces the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Edit {
        self.body = Some(body.into());
        self
    }
}

impl Principal {
    /// A principal with this name that may send and subscribe everywhere (for tests).
    pub fn named(name: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            groups: Vec::new(),
            may_send: vec!["*".into()],
            may_subscribe: vec!["*".into()],
        }
    }

    /// Adds a group (builder style).
    pub fn with_group(mut self, group: impl Into<String>) -> Principal {
        self.groups.push(group.into());
        self
    }

    /// Whether the principal belongs to `group`.
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

impl Subscription {
    /// A subscription `id` on `destination` (for tests).
    pub fn new(id: impl Into<String>, destination: impl Into<String>) -> Subscription {
        Subscription {
            id: id.into(),
            destination: destination.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a SUBSCRIBE header (builder style).
    pub fn with_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Subscription {
        self.headers.push(Header::new(name, value));
        self
    }

    /// The first value of SUBSCRIBE header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.header(name)
    }
}

impl AuthRequest {
    /// A CONNECT with this login and passcode (for tests).
    pub fn new(login: impl Into<String>, passcode: impl Into<String>) -> AuthRequest {
        AuthRequest {
            login: Some(login.into()),
            passcode: Some(passcode.into()),
            host: None,
            client_addr: "127.0.0.1:1".into(),
            headers: Vec::new(),
        }
    }

    /// The first value of CONNECT header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.header(name)
    }
}

/// What the host knows of the current call (WIT `context`, since 0.1.2): the connection's
/// virtual host, and notes that explain a traced decision (see the broker's decision traces).
///
/// Notes cost nothing unless the operator traces the plugin: write them with
/// [`trace_note()`](crate::trace_note()) or [`trace_note!`](macro@crate::trace_note), which
/// format only when the call is traced. The host asks [`tracing`](context::tracing) once per
/// call (the answer is cached for the rest of it), keeps at most 8 notes per call and cuts each
/// to 256 bytes.
///
/// In native tests ([`crate::testing`]) the virtual host is `/` and a call is traced inside
/// [`crate::testing::traced`], which returns the notes written.
pub mod context {
    use std::cell::{Cell, RefCell};

    thread_local! {
        /// Whether the current call is traced: unknown until asked (0), no (1), yes (2).
        static TRACING: Cell<u8> = const { Cell::new(0) };
        /// Native tests: whether calls are traced, and the notes written.
        static NATIVE: RefCell<(bool, Vec<String>)> = const { RefCell::new((false, Vec::new())) };
    }

    /// Forgets whether the previous call was traced (every export calls it first).
    #[doc(hidden)]
    pub fn begin_call() {
        TRACING.with(|t| t.set(0));
    }

    /// The virtual host of the connection the current call is for (`/` by default).
    pub fn vhost() -> String {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::context::vhost();
        #[cfg(not(target_arch = "wasm32"))]
        "/".to_string()
    }

    /// Whether the current call's decision is traced (asked of the host once per call).
    pub fn tracing() -> bool {
        TRACING.with(|t| match t.get() {
            0 => {
                let on = host_tracing();
                t.set(if on { 2 } else { 1 });
                on
            }
            known => known == 2,
        })
    }

    fn host_tracing() -> bool {
        #[cfg(target_arch = "wasm32")]
        return crate::bindings::plugboard::plugin::context::tracing();
        #[cfg(not(target_arch = "wasm32"))]
        NATIVE.with(|n| n.borrow().0)
    }

    /// Attaches `text` to the current call's traced decision (ignored when it is not traced).
    pub fn note(text: &str) {
        if !tracing() {
            return;
        }
        #[cfg(target_arch = "wasm32")]
        crate::bindings::plugboard::plugin::context::note(text);
        #[cfg(not(target_arch = "wasm32"))]
        NATIVE.with(|n| n.borrow_mut().1.push(text.to_string()));
    }

    /// Native tests: traces the calls `f` makes and returns the notes they wrote.
    pub(crate) fn traced_native<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
        NATIVE.with(|n| *n.borrow_mut() = (true, Vec::new()));
        begin_call();
        let result = f();
        let notes = NATIVE.with(|n| std::mem::take(&mut *n.borrow_mut()).1);
        begin_call();
        (result, notes)
    }
}

/// Attaches the note `make` builds to the current call's traced decision; `make` runs only
/// when the call is traced, so an untraced call formats nothing.
///
/// ```ignore
/// trace_note(|| format!("rule {}: {} → {}", i + 1, rule.destination, rule.to[0]));
/// ```
pub fn trace_note(make: impl FnOnce() -> String) {
    if context::tracing() {
        context::note(&make());
    }
}

/// [`trace_note()`] with `format!` arguments: `trace_note!("rule {}: matched", n)` formats only
/// when the call is traced.
#[macro_export]
macro_rules! trace_note {
    ($($arg:tt)*) => {
        if $crate::context::tracing() {
            $crate::context::note(&::std::format!($($arg)*));
        }
    };
}

/// Logging into the broker's log, tagged with the plugin's name (stderr in native tests).
pub mod log {
    use crate::bindings::plugboard::plugin::log::Level;

    fn write(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        crate::bindings::plugboard::plugin::log::log(level, message);
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("[{level:?}] {message}");
    }

    /// Detail for debugging.
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
    /// Normal operation.
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    /// Something unexpected but handled.
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    /// Something failed.
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}

// ---------------------------------------------------------------------------------------------
// Export glue: the macros define a `static` holding the plugin and a unit type implementing
// `Instance`; these blanket impls turn the WIT exports into calls of the plugin's traits.

/// Where an exported plugin's value lives (implemented by the export macros).
#[doc(hidden)]
pub trait Instance: 'static {
    type P: Plugin;
    fn cell() -> &'static OnceLock<Self::P>;
    fn get() -> &'static Self::P {
        Self::cell()
            .get()
            .expect("the host calls init before any hook")
    }
}

impl<G: Instance> ex::lifecycle::Guest for G {
    fn init(config: String) -> Result<Manifest, String> {
        let plugin = init::<G::P>(&config)?;
        let manifest = plugin.manifest();
        // One instance runs `init` once; a second call would be a host bug: keep the first.
        let _ = G::cell().set(plugin);
        Ok(manifest)
    }
}

impl<G: Instance> ex::send::Guest for G
where
    G::P: Router,
{
    fn on_send(sender: Principal, msg: Message) -> SendVerdict {
        context::begin_call();
        G::get().on_send(&sender, &msg)
    }
}

impl<G: Instance> ex::send_packed::Guest for G
where
    G::P: Router,
{
    fn on_send_packed(input: Vec<u8>) -> SendVerdict {
        context::begin_call();
        let mut reader = packed::Reader::new(&input);
        let Some(sender) = packed_principal(&mut reader) else {
            return SendVerdict::Reject("plugin: malformed packed input".into());
        };
        match reader.message() {
            Some(msg) => G::get().on_send_view(&sender, &msg),
            None => SendVerdict::Reject("plugin: malformed packed input".into()),
        }
    }
}

impl<G: Instance> ex::send_batch::Guest for G
where
    G::P: Router,
{
    fn on_send_batch(input: Vec<u8>) -> Vec<SendVerdict> {
        context::begin_call();
        let mut reader = packed::Reader::new(&input);
        let Some(sender) = packed_principal(&mut reader) else {
            // Malformed input: the wrong number of verdicts tells the host.
            return Vec::new();
        };
        let plugin = G::get();
        reader.each_message(|view| plugin.on_send_view(&sender, view))
    }
}

impl<G: Instance> ex::send_batch_packed::Guest for G
where
    G::P: Router,
{
    fn on_send_batch_packed(input: Vec<u8>) -> Vec<u8> {
        context::begin_call();
        let mut reader = packed::Reader::new(&input);
        let mut out = packed::Writer::new();
        let Some(sender) = packed_principal(&mut reader) else {
            // Malformed input: no count at all tells the host so.
            return Vec::new();
        };
        let plugin = G::get();
        let Some(count) = reader.u32() else {
            return Vec::new();
        };
        out.out.reserve(4 + count as usize * 32);
        out.u32(count);
        let mut view = packed::MessageView::default();
        for _ in 0..count {
            if reader.message_into(&mut view).is_none() {
                return Vec::new();
            }
            plugin.on_send_packed(&sender, &view, &mut out);
        }
        out.finish()
    }
}

thread_local! {
    /// The last principal read from packed input, with its packed bytes: consecutive SENDs
    /// usually come from the same connection, so it is decoded once, not per call.
    static LAST_PRINCIPAL: std::cell::RefCell<(Vec<u8>, Option<std::rc::Rc<Principal>>)> =
        const { std::cell::RefCell::new((Vec::new(), None)) };
}

fn packed_principal(reader: &mut packed::Reader<'_>) -> Option<std::rc::Rc<Principal>> {
    let bytes = reader.skip_principal()?;
    LAST_PRINCIPAL.with(|last| {
        let mut last = last.borrow_mut();
        if let (cached, Some(principal)) = &*last {
            if cached[..] == *bytes {
                return Some(principal.clone());
            }
        }
        let principal = std::rc::Rc::new(packed::read_principal(&mut packed::Reader::new(bytes))?);
        *last = (bytes.to_vec(), Some(principal.clone()));
        Some(principal)
    })
}

impl<G: Instance> ex::deliver_batch::Guest for G
where
    G::P: Filter,
{
    fn filter_batch(token: Vec<u8>, msgs: Vec<u8>) -> Vec<FilterVerdict> {
        context::begin_call();
        let plugin = G::get();
        packed::Reader::new(&msgs).each_message(|view| plugin.filter_view(&token, view))
    }
}

impl<G: Instance> ex::authenticate::Guest for G
where
    G::P: Authenticator,
{
    fn authenticate(request: AuthRequest) -> AuthResult {
        context::begin_call();
        G::get().authenticate(&request)
    }
}

impl<G: Instance> ex::authenticate_peer::Guest for G
where
    G::P: PeerAuthenticator,
{
    fn authenticate(request: PeerAuthRequest) -> PeerAuthResult {
        context::begin_call();
        G::get().authenticate_peer(&request)
    }
}

impl<G: Instance> ex::authenticate_expiring::Guest for G
where
    G::P: ExpiringAuthenticator,
{
    fn authenticate(request: ExpiringAuthRequest) -> ExpiringAuthResult {
        context::begin_call();
        G::get().authenticate_expiring(&request)
    }
}

impl<G: Instance> ex::deliver::Guest for G
where
    G::P: Filter,
{
    fn prepare_subscription(
        subscriber: Principal,
        sub: Subscription,
    ) -> Result<Option<FilterPlan>, String> {
        context::begin_call();
        G::get().prepare_subscription(&subscriber, &sub)
    }

    fn filter(token: Vec<u8>, msg: Message) -> FilterVerdict {
        context::begin_call();
        G::get().filter(&token, &msg)
    }
}

impl<G: Instance> ex::redeliver::Guest for G
where
    G::P: Redeliverer,
{
    fn on_redeliver(event: RedeliverEvent) -> RedeliverVerdict {
        context::begin_call();
        G::get().on_redeliver(&event)
    }
}

// `__export_glue!`, written by build.rs: it carries wit/plugin.wit as a literal, because the
// world's `generate!` must run in the plugin's crate (one world per component) and cannot read a
// file of this crate from there.
include!(concat!(env!("OUT_DIR"), "/glue.rs"));

/// Re-exported for the export macros.
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Exports a [`Router`] as a component of world `packed-router` (hook `send`, plus its packed
/// and batched fast paths, which call [`Router::on_send_view`] or [`Router::on_send_packed`]
/// per message).
#[macro_export]
macro_rules! export_router {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "packed-router", [lifecycle, send, send_packed, send_batch, send_batch_packed], {
            "plugboard:plugin/send@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send,
            "plugboard:plugin/send-packed@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send_packed,
            "plugboard:plugin/send-batch@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send_batch,
            "plugboard:plugin/send-batch-packed@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send_batch_packed,
        });
    };
}

/// Exports an [`Authenticator`] as a component of world `authenticator` (hook `authenticate`).
#[macro_export]
macro_rules! export_authenticator {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "authenticator", [lifecycle, authenticate], {"plugboard:plugin/authenticate@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::authenticate,});
    };
}

/// Exports a [`PeerAuthenticator`] as a component of world `peer-authenticator` (hook
/// `authenticate`, in its 0.1.1 form `authenticate-peer`).
#[macro_export]
macro_rules! export_peer_authenticator {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "peer-authenticator", [lifecycle, authenticate_peer], {"plugboard:plugin/authenticate-peer@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::authenticate_peer,});
    };
}

/// Exports an [`ExpiringAuthenticator`] as a component of world `expiring-authenticator` (hook
/// `authenticate`, in its 0.1.4 form `authenticate-expiring`: logins that may expire, and
/// re-authentication).
#[macro_export]
macro_rules! export_expiring_authenticator {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "expiring-authenticator", [lifecycle, authenticate_expiring], {"plugboard:plugin/authenticate-expiring@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::authenticate_expiring,});
    };
}

/// Exports a [`Filter`] as a component of world `fast-message-filter` (hook `message`, plus
/// its batched fast path, which calls [`Filter::filter_view`] per message).
#[macro_export]
macro_rules! export_message_filter {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "fast-message-filter", [lifecycle, deliver, deliver_batch], {
            "plugboard:plugin/deliver@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::deliver,
            "plugboard:plugin/deliver-batch@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::deliver_batch,
        });
    };
}

/// Exports a [`Router`] + [`Filter`] as a component of world `packed-transformer` (send and
/// message, plus every fast path).
#[macro_export]
macro_rules! export_transformer {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "packed-transformer", [lifecycle, send, send_packed, send_batch, send_batch_packed, deliver, deliver_batch], {
            "plugboard:plugin/send@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send,
            "plugboard:plugin/send-packed@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send_packed,
            "plugboard:plugin/send-batch@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send_batch,
            "plugboard:plugin/send-batch-packed@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send_batch_packed,
            "plugboard:plugin/deliver@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::deliver,
            "plugboard:plugin/deliver-batch@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::deliver_batch,
        });
    };
}

/// Exports a [`Redeliverer`] as a component of world `redeliverer` (hook `redeliver`).
#[macro_export]
macro_rules! export_redeliverer {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "redeliverer", [lifecycle, redeliver], {"plugboard:plugin/redeliver@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::redeliver,});
    };
}

/// Exports a plugin that implements every hook, redeliver included (world
/// `full-with-redeliver`).
#[macro_export]
macro_rules! export_full_with_redeliver {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "full-with-redeliver", [lifecycle, authenticate, send, deliver, redeliver], {
            "plugboard:plugin/authenticate@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::authenticate,
            "plugboard:plugin/send@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send,
            "plugboard:plugin/deliver@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::deliver,
            "plugboard:plugin/redeliver@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::redeliver,
        });
    };
}

/// Exports a plugin that implements every hook (world `full`).
#[macro_export]
macro_rules! export_full {
    ($ty:ty) => {
        $crate::__export_glue!($ty, "full", [lifecycle, authenticate, send, deliver], {
            "plugboard:plugin/authenticate@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::authenticate,
            "plugboard:plugin/send@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::send,
            "plugboard:plugin/deliver@0.1.4": ::plugboard_sdk::bindings::exports::plugboard::plugin::deliver,
        });
    };
}
