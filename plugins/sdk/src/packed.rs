//! Reading the packed arguments of the fast paths `send-packed.on-send-packed`,
//! `send-batch.on-send-batch` and `deliver-batch.filter-batch` (format in `wit/plugin.wit`). The
//! reader is the dependency-free crate `plugboard-packed`, re-exported here; this module adds the
//! conversions to the SDK's own [`Message`] and [`Principal`]. The export macros use it to serve
//! the fast paths for every [`Router`](crate::Router) and [`Filter`](crate::Filter); a plugin
//! that wants to avoid even the copies into [`Message`] can read [`MessageView`]s itself.

pub use plugboard_packed::{EditView, MessageView, PrincipalView, Reader, VerdictView, Writer};

use crate::{Edit, Header, Message, Principal, SendVerdict};

/// The owned [`Message`] of a view.
pub fn to_message(view: &MessageView<'_>) -> Message {
    Message {
        destination: view.destination.to_string(),
        headers: view
            .headers
            .iter()
            .map(|(n, v)| Header::new(*n, *v))
            .collect(),
        content_type: view.content_type.map(str::to_string),
        body_len: view.body_len,
        body: view.body.map(<[u8]>::to_vec),
    }
}

/// The owned [`Principal`] of a view.
pub fn to_principal(view: &PrincipalView<'_>) -> Principal {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    Principal {
        name: view.name.to_string(),
        groups: owned(&view.groups),
        may_send: owned(&view.may_send),
        may_subscribe: owned(&view.may_subscribe),
    }
}

/// Reads a packed principal as a [`Principal`].
pub fn read_principal(reader: &mut Reader<'_>) -> Option<Principal> {
    reader.principal().map(|p| to_principal(&p))
}

/// The borrowed view of a [`Message`] (to pack it).
pub fn view_of(msg: &Message) -> MessageView<'_> {
    MessageView {
        destination: &msg.destination,
        headers: msg
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect(),
        content_type: msg.content_type.as_deref(),
        body_len: msg.body_len,
        body: msg.body.as_deref(),
    }
}

fn write_principal(w: &mut Writer, p: &Principal) {
    w.principal(&p.name, &p.groups, &p.may_send, &p.may_subscribe);
}

/// Packs a principal and a message as the host does for `send-packed` (for tests).
pub fn pack(principal: Option<&Principal>, msg: &Message) -> Vec<u8> {
    let mut w = Writer::new();
    if let Some(p) = principal {
        write_principal(&mut w, p);
    }
    w.message(&view_of(msg)).finish()
}

/// Packs a principal and several messages as the host does for `send-batch` (for tests).
pub fn pack_batch(principal: &Principal, msgs: &[Message]) -> Vec<u8> {
    let mut w = Writer::new();
    write_principal(&mut w, principal);
    w.u32(msgs.len() as u32);
    for msg in msgs {
        w.message(&view_of(msg));
    }
    w.finish()
}

/// Packs `verdict` (the answer format of `send-batch-packed`).
pub fn write_verdict(out: &mut Writer, verdict: &SendVerdict) {
    match verdict {
        SendVerdict::Keep => {
            out.keep();
        }
        SendVerdict::Rewrite(edit) => {
            let (destination, remove, set, body) = edit_parts(edit);
            out.rewrite(destination, remove, set, body);
        }
        SendVerdict::FanOut(edits) => {
            out.fan_out(edits.len());
            for edit in edits {
                write_edit(out, edit);
            }
        }
        SendVerdict::Reject(reason) => {
            out.reject(reason);
        }
    }
}

fn write_edit(out: &mut Writer, edit: &Edit) {
    let (destination, remove, set, body) = edit_parts(edit);
    out.edit(destination, remove, set, body);
}

/// An edit's fields as the packed writer takes them.
#[allow(clippy::type_complexity)] // the writer's four parameters, in order
fn edit_parts(
    edit: &Edit,
) -> (
    Option<&str>,
    impl ExactSizeIterator<Item = &str>,
    impl ExactSizeIterator<Item = (&str, &str)>,
    Option<&[u8]>,
) {
    (
        edit.destination.as_deref(),
        edit.remove_headers.iter().map(String::as_str),
        edit.set_headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str())),
        edit.body.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Principal::named("alice").with_group("ops");
        let m = Message::new("/queue/a")
            .with_header("content-type", "text/plain")
            .with_header("x", "1")
            .with_body("hi");
        let packed = pack(Some(&p), &m);
        let mut r = Reader::new(&packed);
        assert_eq!(read_principal(&mut r), Some(p.clone()));
        let view = r.message().unwrap();
        assert_eq!(view.header("x"), Some("1"));
        assert_eq!(to_message(&view), m);
        assert!(r.rest().is_empty());
        let alone = pack(None, &m);
        assert!(Reader::new(&alone).message().is_some());
        assert!(Reader::new(&alone[..alone.len() - 1]).message().is_none());
        let batch = pack_batch(&p, &[m.clone(), m.clone()]);
        let mut r = Reader::new(&batch);
        assert_eq!(read_principal(&mut r), Some(p));
        assert_eq!(r.u32(), Some(2));
        assert_eq!(r.message().map(|v| to_message(&v)), Some(m.clone()));
        assert_eq!(r.message().map(|v| to_message(&v)), Some(m));
        assert!(r.rest().is_empty());
    }
}
