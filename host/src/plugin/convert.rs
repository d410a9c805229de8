//! Between the broker's types and the WIT types: projecting a message to what a plugin declared it
//! needs, applying the edits a plugin returns, and refusing garbage (invalid destinations or
//! headers, absurd sizes) before it reaches the broker.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;

use super::bindings::send::SendVerdict;
use super::bindings::types as wit;
use super::{MessageRef, PluginMessage, Principal};
use crate::codec::is_server_owned;

/// Most messages one SEND may turn into (a larger fan-out is refused as invalid output).
pub const MAX_FANOUT: usize = 64;
/// Longest destination a plugin may return.
const MAX_DESTINATION: usize = 1024;
/// Longest header name or value a plugin may set.
const MAX_HEADER: usize = 64 * 1024;
/// Most headers a plugin may set in one edit, or patterns/groups in one principal.
const MAX_ITEMS: usize = 256;
/// Longest reason (denial, rejection) passed on to a client; longer ones are cut.
const MAX_REASON: usize = 512;

/// The 0.1.0 `authenticate` request: the CONNECT frame and the client's address.
pub fn auth_request(req: &super::AuthRequest) -> super::bindings::authenticate::AuthRequest {
    super::bindings::authenticate::AuthRequest {
        login: req.login.as_deref().map(text),
        passcode: req.passcode.as_deref().map(text),
        host: req.host.as_deref().map(text),
        client_addr: req.client_addr.to_string(),
        headers: wit_headers(&req.headers),
    }
}

/// The 0.1.1 `authenticate-peer` request: the CONNECT frame and what the listener knows of
/// the client (listener kind, verified client certificate, upgrade credentials).
pub fn peer_auth_request(
    req: &super::AuthRequest,
) -> super::bindings::authenticate_peer::PeerAuthRequest {
    use crate::listen::{ListenerKind, UpgradeCredentials};
    super::bindings::authenticate_peer::PeerAuthRequest {
        login: req.login.as_deref().map(text),
        passcode: req.passcode.as_deref().map(text),
        host: req.host.as_deref().map(text),
        client_addr: req.client_addr.to_string(),
        headers: wit_headers(&req.headers),
        listener: match req.listener {
            ListenerKind::Tcp => wit::ListenerKind::Tcp,
            ListenerKind::Tls => wit::ListenerKind::Tls,
            ListenerKind::WebSocket => wit::ListenerKind::WebSocket,
            ListenerKind::SecureWebSocket => wit::ListenerKind::SecureWebSocket,
        },
        client_certificate: req
            .client_certificate
            .as_ref()
            .map(|c| wit::ClientCertificate {
                subject: c.subject.clone(),
                common_name: c.common_name.clone(),
                subject_alt_names: c.subject_alt_names.clone(),
                der: c.der.to_vec(),
            }),
        upgrade: req.upgrade.as_ref().map(|u| match u {
            UpgradeCredentials::Basic { login, passcode } => {
                wit::UpgradeCredentials::Basic(wit::BasicCredentials {
                    login: login.clone(),
                    passcode: passcode.clone(),
                })
            }
            UpgradeCredentials::Bearer(token) => wit::UpgradeCredentials::Bearer(token.clone()),
        }),
    }
}

/// The 0.1.4 `authenticate-expiring` request: the `authenticate-peer` request, the host's
/// clock (plugins have none) and whether the client is re-authenticating.
pub fn expiring_auth_request(
    req: &super::AuthRequest,
) -> super::bindings::authenticate_expiring::ExpiringAuthRequest {
    let peer = peer_auth_request(req);
    super::bindings::authenticate_expiring::ExpiringAuthRequest {
        login: peer.login,
        passcode: peer.passcode,
        host: peer.host,
        client_addr: peer.client_addr,
        headers: peer.headers,
        listener: peer.listener,
        client_certificate: peer.client_certificate,
        upgrade: peer.upgrade,
        now_ms: crate::router::message::now_ms(),
        reauth: req.reauth,
    }
}

/// Bytes as text for the guest (invalid UTF-8 becomes U+FFFD).
pub fn text(bytes: &[u8]) -> String {
    // `from_utf8` first: it is much faster than the lossy path on the (usual) valid input.
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// Headers as text for the guest.
pub fn wit_headers<'a>(headers: impl IntoIterator<Item = &'a (Bytes, Bytes)>) -> Vec<wit::Header> {
    headers
        .into_iter()
        .map(|(n, v)| wit::Header {
            name: text(n),
            value: text(v),
        })
        .collect()
}

fn wanted(needs: &wit::Needs, name: &[u8]) -> bool {
    match &needs.headers {
        wit::HeaderNeed::None => false,
        wit::HeaderNeed::All => true,
        wit::HeaderNeed::Named(names) => names.iter().any(|n| same(n.as_bytes(), name)),
    }
}

/// `a == b`, comparing the first bytes before calling `memcmp` (header names of the same length
/// usually differ there: this runs for every header of every message a plugin sees).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.first() == b.first() && a == b
}

/// How many bytes the projection of `msg` copies into the guest (checked against its cap first).
pub fn input_size(msg: MessageRef<'_>, needs: &wit::Needs) -> usize {
    let headers: usize = msg
        .headers
        .iter()
        .filter(|(n, _)| wanted(needs, n))
        .map(|(n, v)| n.len() + v.len() + 16)
        .sum();
    msg.destination.len() + headers + if needs.body { msg.body.len() } else { 0 }
}

/// The message as the plugin declared it needs it.
pub fn project(msg: MessageRef<'_>, needs: &wit::Needs) -> wit::Message {
    let content_type = msg
        .headers
        .iter()
        .find(|(n, _)| &n[..] == b"content-type")
        .map(|(_, v)| text(v));
    wit::Message {
        destination: text(msg.destination),
        headers: wit_headers(msg.headers.iter().filter(|(n, _)| wanted(needs, n))),
        content_type,
        body_len: msg.body.len() as u64,
        body: needs.body.then(|| msg.body.to_vec()),
    }
}

/// Appends a length or count of the packed format (`send-packed` in wit/plugin.wit).
fn put_len(out: &mut Vec<u8>, n: usize) {
    // Inputs are capped far below 4 GiB (`check_size`) before they are packed.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

/// Appends bytes as a packed string (invalid UTF-8 becomes U+FFFD, as for `text`).
fn put_str(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.is_ascii() {
        // The usual case, and cheaper to tell than UTF-8 for the short strings of a message.
        put_len(out, bytes.len());
        out.extend_from_slice(bytes);
        return;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    put_len(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

fn put_list(out: &mut Vec<u8>, items: &[String]) {
    put_len(out, items.len());
    for item in items {
        put_str(out, item.as_bytes());
    }
}

/// Appends `principal` in the packed format.
pub fn pack_principal(principal: &Principal, out: &mut Vec<u8>) {
    put_str(out, principal.name.as_bytes());
    put_list(out, &principal.groups);
    put_list(out, &principal.may_send);
    put_list(out, &principal.may_subscribe);
}

/// Appends `msg`, projected by `needs` (as [`project`]), in the packed format.
pub fn pack_message(msg: MessageRef<'_>, needs: &wit::Needs, out: &mut Vec<u8>) {
    put_str(out, msg.destination);
    let count_at = out.len();
    put_len(out, 0);
    let mut count = 0u32;
    let mut content_type = None;
    for (name, value) in msg.headers {
        if content_type.is_none() && &name[..] == b"content-type" {
            content_type = Some(value);
        }
        if wanted(needs, name) {
            put_str(out, name);
            put_str(out, value);
            count += 1;
        }
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    match content_type {
        Some(value) => {
            out.push(1);
            put_str(out, value);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&(msg.body.len() as u64).to_le_bytes());
    if needs.body {
        out.push(1);
        put_len(out, msg.body.len());
        out.extend_from_slice(msg.body);
    } else {
        out.push(0);
    }
}

/// The broker's principal as the guest sees it.
pub fn wit_principal(p: &Principal) -> wit::Principal {
    wit::Principal {
        name: p.name.clone(),
        groups: p.groups.clone(),
        may_send: p.may_send.clone(),
        may_subscribe: p.may_subscribe.clone(),
    }
}

/// Checks a principal a plugin returned.
pub fn principal(p: wit::Principal) -> Result<Principal, String> {
    if p.name.is_empty() || p.name.len() > MAX_DESTINATION || p.name.chars().any(char::is_control) {
        return Err("principal name is empty, too long or has control characters".into());
    }
    if [&p.groups, &p.may_send, &p.may_subscribe]
        .iter()
        .any(|l| l.len() > MAX_ITEMS)
    {
        return Err(format!(
            "principal has more than {MAX_ITEMS} groups or patterns"
        ));
    }
    Ok(Principal {
        name: p.name,
        groups: p.groups,
        may_send: p.may_send,
        may_subscribe: p.may_subscribe,
    })
}

/// Cuts a plugin's reason to a length fit for an ERROR frame, without control characters.
pub fn reason(mut text: String) -> String {
    text.retain(|c| !c.is_control());
    if text.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

pub(super) fn check_destination(d: &str) -> Result<(), String> {
    if !d.starts_with('/') || d.len() > MAX_DESTINATION || has_control_or_colon(d) {
        return Err(format!("invalid destination {:?}", truncate_for_log(d)));
    }
    Ok(())
}

/// Whether `s` has a `:` or a control character (`char::is_control`: C0, DEL and C1), by bytes:
/// a C1 control U+0080..=U+009F is encoded as 0xC2 followed by 0x80..=0x9F.
fn has_control_or_colon(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        c < 0x20
            || c == 0x7f
            || c == b':'
            || (c == 0xc2 && matches!(b.get(i + 1), Some(0x80..=0x9f)))
    })
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    let bad_name =
        name.is_empty() || name.len() > MAX_HEADER || name.contains([':', '\r', '\n', '\0']);
    if bad_name || value.len() > MAX_HEADER || value.contains(['\r', '\n', '\0']) {
        return Err(format!("invalid header {:?}", truncate_for_log(name)));
    }
    Ok(())
}

fn truncate_for_log(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A change a plugin returned, as the host applies it: from a typed `edit` ([`edit`]) or from
/// packed verdicts ([`read_verdicts`]); checked by [`check_edit`] before it is applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edit {
    /// Checked already, when the edit was made (by [`Destinations`]).
    pub destination: Option<Bytes>,
    pub remove_headers: Vec<Bytes>,
    pub set_headers: Vec<(Bytes, Bytes)>,
    pub body: Option<Bytes>,
}

/// A send verdict as the host applies it (the WIT's `send-verdict`, typed or packed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Rewrite(Edit),
    FanOut(Vec<Edit>),
    Reject(String),
}

/// A typed edit as the host's (no copy: the strings become `Bytes`); refused when its
/// destination is invalid.
pub fn edit(edit: wit::Edit, destinations: &mut Destinations) -> Result<Edit, String> {
    Ok(Edit {
        destination: edit.destination.map(|d| destinations.get(d)).transpose()?,
        remove_headers: edit.remove_headers.into_iter().map(Bytes::from).collect(),
        set_headers: edit
            .set_headers
            .into_iter()
            .map(|h| (Bytes::from(h.name), Bytes::from(h.value)))
            .collect(),
        body: edit.body.map(Bytes::from),
    })
}

/// A typed send verdict as the host's; refused when an edit's destination is invalid.
pub fn verdict(verdict: SendVerdict, destinations: &mut Destinations) -> Result<Verdict, String> {
    Ok(match verdict {
        SendVerdict::Keep => Verdict::Keep,
        SendVerdict::Rewrite(e) => Verdict::Rewrite(edit(e, destinations)?),
        SendVerdict::FanOut(edits) if edits.len() > MAX_FANOUT => {
            return Err(format!("fan-out to {} messages", edits.len()))
        }
        SendVerdict::FanOut(edits) => Verdict::FanOut(
            edits
                .into_iter()
                .map(|e| edit(e, destinations))
                .collect::<Result<_, _>>()?,
        ),
        SendVerdict::Reject(reason) => Verdict::Reject(reason),
    })
}

/// Reads the packed verdicts of `send-batch-packed.on-send-batch-packed` (format in the WIT):
/// exactly `count` of them, and nothing after. Counts are checked against the output limits
/// before anything is allocated for them; strings are checked later, by [`check_edit`].
pub fn read_verdicts(
    input: &[u8],
    count: usize,
    destinations: &mut Destinations,
) -> Result<Vec<Verdict>, String> {
    let mut r = Unpack(input);
    let n = r.u32()? as usize;
    if n != count {
        return Err(format!("{n} packed verdicts for {count} messages"));
    }
    let mut verdicts = Vec::with_capacity(count);
    for _ in 0..count {
        verdicts.push(match r.u8()? {
            0 => Verdict::Keep,
            1 => Verdict::Rewrite(r.edit(destinations)?),
            2 => {
                let n = r.count(MAX_FANOUT, "fan-out")?;
                let edits = (0..n)
                    .map(|_| r.edit(destinations))
                    .collect::<Result<_, _>>()?;
                Verdict::FanOut(edits)
            }
            3 => Verdict::Reject(String::from_utf8_lossy(r.bytes()?).into_owned()),
            tag => return Err(format!("packed verdict with tag {tag}")),
        });
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the packed verdicts", r.0.len()));
    }
    Ok(verdicts)
}

/// A cursor over packed verdicts (see [`read_verdicts`]).
struct Unpack<'a>(&'a [u8]);

impl<'a> Unpack<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated packed verdicts".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A count of at most `max` items of kind `what`.
    fn count(&mut self, max: usize, what: &str) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(format!("{what} of {n} items"));
        }
        Ok(n)
    }

    fn edit(&mut self, destinations: &mut Destinations) -> Result<Edit, String> {
        let destination = match self.u8()? {
            0 => None,
            _ => Some(destinations.get_bytes(self.bytes()?)?),
        };
        let n = self.count(MAX_ITEMS, "remove-headers")?;
        let mut remove_headers = Vec::new();
        for _ in 0..n {
            remove_headers.push(Bytes::copy_from_slice(self.bytes()?));
        }
        let n = self.count(MAX_ITEMS, "set-headers")?;
        let mut set_headers = Vec::new();
        for _ in 0..n {
            let name = Bytes::copy_from_slice(self.bytes()?);
            set_headers.push((name, Bytes::copy_from_slice(self.bytes()?)));
        }
        let body = match self.u8()? {
            0 => None,
            _ => Some(Bytes::copy_from_slice(self.bytes()?)),
        };
        Ok(Edit {
            destination,
            remove_headers,
            set_headers,
            body,
        })
    }
}

/// Applies `edit` to `msg`; refuses an edit the broker could not honour. `max_body` bounds a
/// replaced body.
pub fn apply_edit(
    msg: MessageRef<'_>,
    edit: Edit,
    max_body: usize,
) -> Result<PluginMessage, String> {
    check_edit(&edit, max_body)?;
    let owned = PluginMessage {
        destination: msg.destination.clone(),
        headers: Vec::new(),
        body: msg.body.clone(),
    };
    let touched = |n: &[u8]| touches(&edit, n);
    let headers = msg
        .headers
        .iter()
        .filter(|(n, _)| !touched(n))
        .cloned()
        .collect();
    let mut msg = PluginMessage { headers, ..owned };
    apply_checked(&mut msg, edit, false);
    Ok(msg)
}

/// Whether `edit` removes or sets header `name`.
fn touches(edit: &Edit, name: &[u8]) -> bool {
    edit.remove_headers.iter().any(|r| r[..] == *name)
        || edit.set_headers.iter().any(|(n, _)| n[..] == *name)
}

/// Refuses an edit the broker could not honour (see [`apply_edit`]).
pub fn check_edit(edit: &Edit, max_body: usize) -> Result<(), String> {
    if edit.set_headers.len() > MAX_ITEMS || edit.remove_headers.len() > MAX_ITEMS {
        return Err(format!("edit touches more than {MAX_ITEMS} headers"));
    }
    fn utf8<'b>(b: &'b Bytes, what: &str) -> Result<&'b str, String> {
        std::str::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
    }
    for name in &edit.remove_headers {
        utf8(name, "header name")?;
    }
    for (name, value) in &edit.set_headers {
        check_header(utf8(name, "header name")?, utf8(value, "header value")?)?;
    }
    match &edit.body {
        Some(b) if b.len() > max_body => {
            Err(format!("rewritten body of {} bytes is too large", b.len()))
        }
        _ => Ok(()),
    }
}

/// Applies an edit that passed [`check_edit`] to a message the caller owns, in place (no copy
/// of its headers). `remove` says whether the removed and replaced headers are still in
/// `msg.headers` ([`apply_edit`] has dropped them already).
pub fn apply_checked(msg: &mut PluginMessage, edit: Edit, remove: bool) {
    if remove && !(edit.remove_headers.is_empty() && edit.set_headers.is_empty()) {
        msg.headers.retain(|(n, _)| !touches(&edit, n));
    }
    if let Some(d) = edit.destination {
        msg.destination = d;
    }
    if let Some(b) = edit.body {
        msg.body = b;
    }
    // Headers the broker owns (`content-length`, `message-id`, ...) are silently dropped: the
    // broker writes its own, and a plugin's could break the framing or impersonate them.
    for (name, value) in edit.set_headers {
        if !is_server_owned(&name) {
            msg.headers.push((name, value));
        }
    }
}

/// The destinations plugins routed messages to within one call, shared: a router sends most
/// messages of a batch to the same few destinations. Each is checked once ([`check_destination`])
/// and then comes from [`interned`], so the messages routed there carry a static `Bytes`: the
/// threads that pass them on and drop them never touch a reference count or the allocator for
/// it (a routed message is made on the sender's thread and dropped on whichever delivers it).
#[derive(Debug, Default)]
pub struct Destinations {
    /// Seen in this call (a few: a lookup is a linear scan).
    seen: Vec<Bytes>,
}

impl Destinations {
    /// Most distinct destinations remembered per call.
    const MAX: usize = 8;

    /// An empty set (`batch` is a hint: nothing is kept for a single message's call).
    pub fn new(batch: bool) -> Destinations {
        Destinations {
            seen: Vec::with_capacity(if batch { 2 } else { 0 }),
        }
    }

    /// `destination` as `Bytes`; refused when it is not a valid destination.
    pub fn get(&mut self, destination: String) -> Result<Bytes, String> {
        if let Some(seen) = self.find(destination.as_bytes()) {
            return Ok(seen);
        }
        check_destination(&destination)?;
        Ok(self.remember(destination.as_bytes(), || Bytes::from(destination.clone())))
    }

    /// [`get`](Self::get) for bytes of packed output.
    pub fn get_bytes(&mut self, destination: &[u8]) -> Result<Bytes, String> {
        if let Some(seen) = self.find(destination) {
            return Ok(seen);
        }
        let text =
            std::str::from_utf8(destination).map_err(|_| "destination is not UTF-8".to_string())?;
        check_destination(text)?;
        Ok(self.remember(destination, || Bytes::copy_from_slice(destination)))
    }

    fn find(&self, destination: &[u8]) -> Option<Bytes> {
        self.seen.iter().find(|b| same(b, destination)).cloned()
    }

    /// A checked destination, interned when there is room (else made by `owned`).
    fn remember(&mut self, destination: &[u8], owned: impl FnOnce() -> Bytes) -> Bytes {
        let bytes = interned(destination).unwrap_or_else(owned);
        if self.seen.len() < Self::MAX {
            self.seen.push(bytes.clone());
        }
        bytes
    }
}

/// Most destinations [`interned`] for the life of the process.
const MAX_INTERNED: usize = 4096;

/// The routed destinations interned so far (checked ones only).
static INTERNED: std::sync::OnceLock<ArcSwap<HashSet<&'static [u8]>>> = std::sync::OnceLock::new();

/// `destination` as a static `Bytes`, interned for the life of the process: a deliberate,
/// bounded leak (at most [`MAX_INTERNED`] destinations of at most 1 KiB each, typically a few
/// short ones per router; a plugin set reloaded reuses them). `None` once the table is full.
/// Lookups read the table without a lock; adding a destination copies it (rare).
fn interned(destination: &[u8]) -> Option<Bytes> {
    let table = INTERNED.get_or_init(|| ArcSwap::from_pointee(HashSet::new()));
    let current = table.load();
    if let Some(&known) = current.get(destination) {
        return Some(Bytes::from_static(known));
    }
    if current.len() >= MAX_INTERNED {
        return None;
    }
    drop(current);
    let leaked: &'static [u8] = Box::leak(destination.into());
    let mut result = leaked;
    table.rcu(|current| {
        if let Some(&known) = current.get(destination) {
            // Interned by another thread meanwhile (ours stays unused: a few bytes, rarely).
            result = known;
            return Arc::clone(current);
        }
        result = leaked;
        if current.len() >= MAX_INTERNED {
            return Arc::clone(current);
        }
        let mut next = HashSet::clone(current);
        next.insert(leaked);
        Arc::new(next)
    });
    Some(Bytes::from_static(result))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Converts and applies a typed edit, as a filter's rewrite is.
    fn apply(e: wit::Edit, max_body: usize) -> Result<PluginMessage, String> {
        apply_edit(
            msg().view(),
            edit(e, &mut Destinations::default())?,
            max_body,
        )
    }

    fn msg() -> PluginMessage {
        PluginMessage {
            destination: Bytes::from_static(b"/queue/a"),
            headers: vec![
                (Bytes::from_static(b"x"), Bytes::from_static(b"1")),
                (
                    Bytes::from_static(b"content-type"),
                    Bytes::from_static(b"text/plain"),
                ),
                (Bytes::from_static(b"x"), Bytes::from_static(b"2")),
            ],
            body: Bytes::from_static(b"hello"),
        }
    }

    #[test]
    fn projection_passes_only_what_is_needed() {
        let none = wit::Needs {
            headers: wit::HeaderNeed::None,
            body: false,
        };
        let p = project(msg().view(), &none);
        assert!(p.headers.is_empty() && p.body.is_none() && p.body_len == 5);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        let named = wit::Needs {
            headers: wit::HeaderNeed::Named(vec!["x".into()]),
            body: true,
        };
        let p = project(msg().view(), &named);
        assert_eq!(
            p.headers
                .iter()
                .map(|h| h.value.as_str())
                .collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert_eq!(p.body.as_deref(), Some(&b"hello"[..]));
        assert!(input_size(msg().view(), &named) > input_size(msg().view(), &none));
    }

    #[test]
    fn packing_follows_the_projection() {
        let named = wit::Needs {
            headers: wit::HeaderNeed::Named(vec!["x".into()]),
            body: false,
        };
        let mut out = Vec::new();
        pack_message(msg().view(), &named, &mut out);
        let mut expected = Vec::new();
        let s = |e: &mut Vec<u8>, t: &str| {
            e.extend_from_slice(&(t.len() as u32).to_le_bytes());
            e.extend_from_slice(t.as_bytes());
        };
        s(&mut expected, "/queue/a");
        expected.extend_from_slice(&2u32.to_le_bytes());
        for v in ["1", "2"] {
            s(&mut expected, "x");
            s(&mut expected, v);
        }
        expected.push(1);
        s(&mut expected, "text/plain");
        expected.extend_from_slice(&5u64.to_le_bytes());
        expected.push(0);
        assert_eq!(out, expected);
        let mut with_body = Vec::new();
        let all = wit::Needs {
            headers: wit::HeaderNeed::None,
            body: true,
        };
        pack_message(msg().view(), &all, &mut with_body);
        assert!(with_body.ends_with(b"\x01\x05\0\0\0hello"));
    }

    /// Packed verdicts as the guest's writer (plugins/packed) makes them read as the typed
    /// verdicts they stand for; anything malformed is refused.
    #[test]
    fn packed_verdicts_read_as_the_typed_ones() {
        use plugboard_packed::{EditView, VerdictView, Writer};
        let full = EditView {
            destination: Some("/queue/b"),
            remove_headers: vec!["x"],
            set_headers: vec![("k", "v"), ("k", "w")],
            body: Some(b"\xffbody"),
        };
        let views = [
            VerdictView::Keep,
            VerdictView::Rewrite(EditView {
                destination: Some("/queue/b"),
                ..EditView::default()
            }),
            VerdictView::Rewrite(full.clone()),
            VerdictView::FanOut(vec![]),
            VerdictView::FanOut(vec![full, EditView::default()]),
            VerdictView::Reject("no route \u{e9}"),
        ];
        let mut w = Writer::new();
        w.u32(views.len() as u32);
        for v in &views {
            w.verdict(v);
        }
        let packed = w.finish();
        let mut destinations = Destinations::new(true);
        let got = read_verdicts(&packed, views.len(), &mut destinations).unwrap();
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let full = Edit {
            destination: Some(b("/queue/b")),
            remove_headers: vec![b("x")],
            set_headers: vec![(b("k"), b("v")), (b("k"), b("w"))],
            body: Some(Bytes::from_static(b"\xffbody")),
        };
        let to_b = Edit {
            destination: Some(b("/queue/b")),
            ..Edit::default()
        };
        assert_eq!(
            got,
            [
                Verdict::Keep,
                Verdict::Rewrite(to_b),
                Verdict::Rewrite(full.clone()),
                Verdict::FanOut(vec![]),
                Verdict::FanOut(vec![full, Edit::default()]),
                Verdict::Reject("no route \u{e9}".into()),
            ]
        );
        // The destinations are shared within the batch.
        let dests: Vec<*const u8> = got
            .iter()
            .filter_map(|v| match v {
                Verdict::Rewrite(e) => e.destination.as_ref().map(|d| d.as_ptr()),
                _ => None,
            })
            .collect();
        assert_eq!(dests[0], dests[1]);

        // Malformed: wrong count, truncated, trailing bytes, unknown tag, absurd counts.
        assert!(read_verdicts(&packed, 5, &mut destinations).is_err());
        assert!(read_verdicts(&packed[..packed.len() - 1], 6, &mut destinations).is_err());
        let mut trailing = packed.clone();
        trailing.push(0);
        assert!(read_verdicts(&trailing, 6, &mut destinations).is_err());
        let one = |bytes: &[u8]| {
            let mut input = 1u32.to_le_bytes().to_vec();
            input.extend_from_slice(bytes);
            read_verdicts(&input, 1, &mut Destinations::default())
        };
        assert!(one(&[9]).is_err(), "unknown tag");
        assert!(
            one(&[2, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "fan-out of 4 billion"
        );
        assert!(
            one(&[1, 0, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "4 billion headers to remove"
        );
        assert!(
            one(&[1, 1, 0xff, 0xff, 0xff, 0xff]).is_err(),
            "a 4 GiB destination"
        );
        // Well-formed but not UTF-8: a destination is refused when read, a header when checked.
        let mut w = Writer::new();
        w.u32(1).u8(1).u8(1).bytes(b"/queue/\xff");
        w.u32(0).u32(0).u8(0);
        let bad = read_verdicts(&w.finish(), 1, &mut Destinations::default()).unwrap_err();
        assert!(bad.contains("UTF-8"), "{bad}");
        let mut w = Writer::new();
        w.u32(1).u8(1).u8(0).u32(0);
        w.u32(1).bytes(b"\xff").bytes(b"v").u8(0);
        let ok = read_verdicts(&w.finish(), 1, &mut Destinations::default()).unwrap();
        let Verdict::Rewrite(edit) = &ok[0] else {
            panic!("{ok:?}")
        };
        assert!(check_edit(edit, 1024).unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn the_byte_scan_finds_what_char_is_control_finds() {
        for s in [
            "/queue/a",
            "",
            "a:b",
            "\u{0}",
            "\u{1f}",
            "\u{7f}",
            "\u{80}",
            "\u{9f}",
            "\u{a0}",
            "\u{c2}",
            "\u{e9}",
            "x\u{85}y",
            "\u{1f600}",
        ] {
            let expected = s.chars().any(|c| c.is_control() || c == ':');
            assert_eq!(has_control_or_colon(s), expected, "{s:?}");
        }
        for c in (0..0x3000u32).filter_map(char::from_u32) {
            let s = c.to_string();
            assert_eq!(
                has_control_or_colon(&s),
                c.is_control() || c == ':',
                "{c:?}"
            );
        }
    }

    #[test]
    fn destinations_are_checked_once_and_interned() {
        let mut batch = Destinations::new(true);
        let a = batch.get("/queue/interned.a".into()).unwrap();
        let b = batch.get_bytes(b"/queue/interned.a").unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr());
        let other = batch.get("/queue/interned.b".into()).unwrap();
        assert_ne!(other.as_ptr(), a.as_ptr());
        // Another call (another plugin, a later batch) gets the same static bytes.
        let mut single = Destinations::new(false);
        assert_eq!(
            single.get("/queue/interned.a".into()).unwrap().as_ptr(),
            a.as_ptr()
        );
        // Checked when first seen.
        assert!(batch.get("queue/x".into()).is_err());
        assert!(batch.get_bytes(b"/queue/\xff").is_err());
    }

    #[test]
    fn edits_apply_and_garbage_is_refused() {
        let edit = wit::Edit {
            destination: Some("/queue/b".into()),
            remove_headers: vec!["content-type".into()],
            set_headers: vec![wit::Header {
                name: "x".into(),
                value: "3".into(),
            }],
            body: None,
        };
        let out = apply(edit, 1024).unwrap();
        assert_eq!(&out.destination[..], b"/queue/b");
        assert_eq!(
            out.headers,
            vec![(Bytes::from_static(b"x"), Bytes::from_static(b"3"))]
        );
        for bad in ["", "queue", "/a\nb", "/a:b"] {
            let edit = wit::Edit {
                destination: Some(bad.into()),
                remove_headers: vec![],
                set_headers: vec![],
                body: None,
            };
            assert!(apply(edit, 1024).is_err(), "{bad:?}");
        }
        let edit = wit::Edit {
            destination: None,
            remove_headers: vec![],
            set_headers: vec![wit::Header {
                name: "a:b".into(),
                value: "v".into(),
            }],
            body: None,
        };
        assert!(apply(edit, 1024).is_err());
        let edit = wit::Edit {
            destination: None,
            remove_headers: vec![],
            set_headers: vec![],
            body: Some(vec![0; 2000]),
        };
        assert!(apply(edit, 1024).is_err());
    }
}
