//! Between the broker's types and the WIT types: projecting a message to what a plugin declared it
//! needs, applying the edits a plugin returns, and refusing garbage (invalid destinations or
//! headers, absurd sizes) before it reaches the broker.

use bytes::Bytes;

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
        wit::HeaderNeed::Named(names) => names.iter().any(|n| n.as_bytes() == name),
    }
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

fn check_destination(d: &str) -> Result<(), String> {
    if !d.starts_with('/')
        || d.len() > MAX_DESTINATION
        || d.chars().any(|c| c.is_control() || c == ':')
    {
        return Err(format!("invalid destination {:?}", truncate_for_log(d)));
    }
    Ok(())
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

/// Applies `edit` to `msg`; refuses an edit the broker could not honour. `max_body` bounds a
/// replaced body.
pub fn apply_edit(
    msg: MessageRef<'_>,
    edit: wit::Edit,
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
    Ok(apply_checked(
        PluginMessage { headers, ..owned },
        edit,
        false,
    ))
}

/// Whether `edit` removes or sets header `name`.
fn touches(edit: &wit::Edit, name: &[u8]) -> bool {
    edit.remove_headers.iter().any(|r| r.as_bytes() == name)
        || edit.set_headers.iter().any(|s| s.name.as_bytes() == name)
}

/// Refuses an edit the broker could not honour (see [`apply_edit`]).
pub fn check_edit(edit: &wit::Edit, max_body: usize) -> Result<(), String> {
    if edit.set_headers.len() > MAX_ITEMS || edit.remove_headers.len() > MAX_ITEMS {
        return Err(format!("edit touches more than {MAX_ITEMS} headers"));
    }
    if let Some(d) = &edit.destination {
        check_destination(d)?;
    }
    for h in &edit.set_headers {
        check_header(&h.name, &h.value)?;
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
pub fn apply_checked(mut msg: PluginMessage, edit: wit::Edit, remove: bool) -> PluginMessage {
    if remove && !(edit.remove_headers.is_empty() && edit.set_headers.is_empty()) {
        msg.headers.retain(|(n, _)| !touches(&edit, n));
    }
    if let Some(d) = edit.destination {
        msg.destination = Bytes::from(d);
    }
    if let Some(b) = edit.body {
        msg.body = Bytes::from(b);
    }
    // Headers the broker owns (`content-length`, `message-id`, ...) are silently dropped: the
    // broker writes its own, and a plugin's could break the framing or impersonate them.
    for h in edit.set_headers {
        if !is_server_owned(h.name.as_bytes()) {
            msg.headers
                .push((Bytes::from(h.name), Bytes::from(h.value)));
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = apply_edit(msg().view(), edit, 1024).unwrap();
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
            assert!(apply_edit(msg().view(), edit, 1024).is_err(), "{bad:?}");
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
        assert!(apply_edit(msg().view(), edit, 1024).is_err());
        let edit = wit::Edit {
            destination: None,
            remove_headers: vec![],
            set_headers: vec![],
            body: Some(vec![0; 2000]),
        };
        assert!(apply_edit(msg().view(), edit, 1024).is_err());
    }
}
