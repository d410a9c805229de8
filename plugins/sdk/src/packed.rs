//! Reading the packed arguments of the fast paths `send-packed.on-send-packed` and
//! `deliver-batch.filter-batch` (format in `wit/plugin.wit`). The export macros use this to serve
//! both for every [`Router`](crate::Router) and [`Filter`](crate::Filter); a plugin that wants
//! to avoid even the copies into [`Message`] can read [`MessageView`]s itself.

use crate::{Header, Message, Principal};

/// A cursor over packed input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
}

/// One packed message, borrowed from the input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MessageView<'a> {
    /// The destination.
    pub destination: &'a str,
    /// Name and value of the requested headers, in message order, repeats kept.
    pub headers: Vec<(&'a str, &'a str)>,
    /// The `content-type` header, when present.
    pub content_type: Option<&'a str>,
    /// The body length in bytes.
    pub body_len: u64,
    /// The body, when the needs asked for it.
    pub body: Option<&'a [u8]>,
}

impl<'a> MessageView<'a> {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    /// The owned [`Message`].
    pub fn to_message(&self) -> Message {
        Message {
            destination: self.destination.to_string(),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| Header::new(*n, *v))
                .collect(),
            content_type: self.content_type.map(str::to_string),
            body_len: self.body_len,
            body: self.body.map(<[u8]>::to_vec),
        }
    }
}

impl<'a> Reader<'a> {
    /// A reader at the start of `input`.
    pub fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { input }
    }

    /// What is left of the input.
    pub fn rest(&self) -> &'a [u8] {
        self.input
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.input.len() < n {
            return None;
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A `u32` (a count).
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn strings(&mut self) -> Option<Vec<String>> {
        let n = self.u32()?;
        (0..n).map(|_| self.str().map(str::to_string)).collect()
    }

    /// A packed principal.
    pub fn principal(&mut self) -> Option<Principal> {
        Some(Principal {
            name: self.str()?.to_string(),
            groups: self.strings()?,
            may_send: self.strings()?,
            may_subscribe: self.strings()?,
        })
    }

    /// Skips a packed principal, returning its bytes (to compare with a cached one).
    pub fn skip_principal(&mut self) -> Option<&'a [u8]> {
        let start = self.input;
        self.bytes()?;
        for _ in 0..3 {
            let n = self.u32()?;
            for _ in 0..n {
                self.bytes()?;
            }
        }
        Some(&start[..start.len() - self.input.len()])
    }

    /// A packed message into `view` (its header vector is reused).
    pub fn message_into(&mut self, view: &mut MessageView<'a>) -> Option<()> {
        view.destination = self.str()?;
        let count = self.u32()?;
        view.headers.clear();
        for _ in 0..count {
            let name = self.str()?;
            let value = self.str()?;
            view.headers.push((name, value));
        }
        view.content_type = match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        };
        view.body_len = self.u64()?;
        view.body = match self.u8()? {
            0 => None,
            _ => Some(self.bytes()?),
        };
        Some(())
    }

    /// A packed message.
    pub fn message(&mut self) -> Option<MessageView<'a>> {
        let mut view = MessageView::default();
        self.message_into(&mut view)?;
        Some(view)
    }
}

/// Packs a principal and a message as the host does (for tests).
pub fn pack(principal: Option<&Principal>, msg: &Message) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, t: &[u8]) {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t);
    }
    let mut out = Vec::new();
    if let Some(p) = principal {
        s(&mut out, p.name.as_bytes());
        for list in [&p.groups, &p.may_send, &p.may_subscribe] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for item in list {
                s(&mut out, item.as_bytes());
            }
        }
    }
    s(&mut out, msg.destination.as_bytes());
    out.extend_from_slice(&(msg.headers.len() as u32).to_le_bytes());
    for h in &msg.headers {
        s(&mut out, h.name.as_bytes());
        s(&mut out, h.value.as_bytes());
    }
    match &msg.content_type {
        Some(ct) => {
            out.push(1);
            s(&mut out, ct.as_bytes());
        }
        None => out.push(0),
    }
    out.extend_from_slice(&msg.body_len.to_le_bytes());
    match &msg.body {
        Some(b) => {
            out.push(1);
            s(&mut out, b);
        }
        None => out.push(0),
    }
    out
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
        assert_eq!(r.principal(), Some(p));
        let view = r.message().unwrap();
        assert_eq!(view.header("x"), Some("1"));
        assert_eq!(view.to_message(), m);
        assert!(r.rest().is_empty());
        let alone = pack(None, &m);
        assert!(Reader::new(&alone).message().is_some());
        assert!(Reader::new(&alone[..alone.len() - 1]).message().is_none());
    }
}
