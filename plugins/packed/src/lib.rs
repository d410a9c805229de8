//! The packed arguments of the plugin fast paths `send-packed.on-send-packed`,
//! `send-batch.on-send-batch`, `send-batch-packed.on-send-batch-packed` and
//! `deliver-batch.filter-batch`, and the packed verdicts `on-send-batch-packed` returns (formats
//! in `wit/plugin.wit`): a [`Reader`] that borrows every string from the input, and a [`Writer`]
//! that packs as the host does (messages, for tests) and as a plugin answers (verdicts). No
//! dependencies, so plugins that do not use the SDK can share it.

/// One packed message, borrowed from the input: the projection the plugin's needs ask for.
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
    #[inline]
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// A packed principal, borrowed from the input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PrincipalView<'a> {
    /// The user name.
    pub name: &'a str,
    /// The groups.
    pub groups: Vec<&'a str>,
    /// The SEND patterns.
    pub may_send: Vec<&'a str>,
    /// The SUBSCRIBE patterns.
    pub may_subscribe: Vec<&'a str>,
}

/// A change to a message in a packed verdict, borrowed (the fields of the WIT's `edit`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EditView<'a> {
    /// The new destination, or `None` to keep it.
    pub destination: Option<&'a str>,
    /// Headers to remove (every occurrence).
    pub remove_headers: Vec<&'a str>,
    /// Headers to set: name and value.
    pub set_headers: Vec<(&'a str, &'a str)>,
    /// The new body, or `None` to keep it.
    pub body: Option<&'a [u8]>,
}

/// A packed send verdict, borrowed (the WIT's `send-verdict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictView<'a> {
    /// Deliver it unchanged.
    Keep,
    /// Deliver it once, changed.
    Rewrite(EditView<'a>),
    /// Deliver one copy per edit.
    FanOut(Vec<EditView<'a>>),
    /// Refuse it with this reason.
    Reject(&'a str),
}

/// Tags of the packed verdicts.
const KEEP: u8 = 0;
const REWRITE: u8 = 1;
const FAN_OUT: u8 = 2;
const REJECT: u8 = 3;

/// A cursor over packed input; every read returns `None` when the input is malformed.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader at the start of `input`.
    pub fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { input }
    }

    /// What is left of the input.
    #[inline]
    pub fn rest(&self) -> &'a [u8] {
        self.input
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.input.len() < n {
            return None;
        }
        let (head, rest) = self.input.split_at(n);
        self.input = rest;
        Some(head)
    }

    /// A `u8` (a 0/1 flag).
    #[inline]
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A `u32` (a count).
    #[inline]
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A `u64`.
    #[inline]
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A byte string: `u32 length` + bytes.
    #[inline]
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A UTF-8 string: `u32 length` + bytes.
    #[inline]
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// A list of strings: `u32 count` + strings.
    pub fn strs(&mut self) -> Option<Vec<&'a str>> {
        let n = self.u32()?;
        (0..n).map(|_| self.str()).collect()
    }

    /// A packed principal.
    pub fn principal(&mut self) -> Option<PrincipalView<'a>> {
        Some(PrincipalView {
            name: self.str()?,
            groups: self.strs()?,
            may_send: self.strs()?,
            may_subscribe: self.strs()?,
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
    #[inline]
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

    /// A packed edit.
    pub fn edit(&mut self) -> Option<EditView<'a>> {
        let destination = match self.u8()? {
            0 => None,
            _ => Some(self.str()?),
        };
        let remove_headers = self.strs()?;
        let n = self.u32()?;
        let set_headers = (0..n)
            .map(|_| Some((self.str()?, self.str()?)))
            .collect::<Option<_>>()?;
        let body = match self.u8()? {
            0 => None,
            _ => Some(self.bytes()?),
        };
        Some(EditView {
            destination,
            remove_headers,
            set_headers,
            body,
        })
    }

    /// A packed send verdict.
    pub fn verdict(&mut self) -> Option<VerdictView<'a>> {
        Some(match self.u8()? {
            KEEP => VerdictView::Keep,
            REWRITE => VerdictView::Rewrite(self.edit()?),
            FAN_OUT => {
                let n = self.u32()?;
                VerdictView::FanOut((0..n).map(|_| self.edit()).collect::<Option<_>>()?)
            }
            REJECT => VerdictView::Reject(self.str()?),
            _ => return None,
        })
    }

    /// Reads a message count and that many messages, giving each to `verdict`: the body of
    /// every batch export (`on-send-batch`, `filter-batch`). Malformed input gives an empty
    /// list, whose wrong length tells the host so.
    pub fn each_message<T>(&mut self, mut verdict: impl FnMut(&MessageView<'a>) -> T) -> Vec<T> {
        let Some(count) = self.u32() else {
            return Vec::new();
        };
        let mut view = MessageView::default();
        let mut verdicts = Vec::with_capacity(count.min(4096) as usize);
        for _ in 0..count {
            if self.message_into(&mut view).is_none() {
                return Vec::new();
            }
            verdicts.push(verdict(&view));
        }
        verdicts
    }
}

/// Packs values as the host does (for tests and tools).
#[derive(Debug, Default, Clone)]
pub struct Writer {
    /// What was written so far.
    pub out: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// A `u8` (a flag or a tag).
    #[inline]
    pub fn u8(&mut self, n: u8) -> &mut Writer {
        self.out.push(n);
        self
    }

    /// A `u32` (a count).
    #[inline]
    pub fn u32(&mut self, n: u32) -> &mut Writer {
        self.out.extend_from_slice(&n.to_le_bytes());
        self
    }

    /// A byte string.
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) -> &mut Writer {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
        self
    }

    /// A packed principal.
    pub fn principal<S: AsRef<str>>(
        &mut self,
        name: &str,
        groups: &[S],
        may_send: &[S],
        may_subscribe: &[S],
    ) -> &mut Writer {
        self.bytes(name.as_bytes());
        for list in [groups, may_send, may_subscribe] {
            self.u32(list.len() as u32);
            for item in list {
                self.bytes(item.as_ref().as_bytes());
            }
        }
        self
    }

    /// A packed message.
    pub fn message(&mut self, msg: &MessageView<'_>) -> &mut Writer {
        self.bytes(msg.destination.as_bytes());
        self.u32(msg.headers.len() as u32);
        for (name, value) in &msg.headers {
            self.bytes(name.as_bytes());
            self.bytes(value.as_bytes());
        }
        match msg.content_type {
            Some(ct) => {
                self.out.push(1);
                self.bytes(ct.as_bytes());
            }
            None => self.out.push(0),
        }
        self.out.extend_from_slice(&msg.body_len.to_le_bytes());
        match msg.body {
            Some(b) => {
                self.out.push(1);
                self.bytes(b);
            }
            None => self.out.push(0),
        }
        self
    }

    /// A `keep` verdict.
    #[inline]
    pub fn keep(&mut self) -> &mut Writer {
        self.u8(KEEP)
    }

    /// A `rewrite` verdict: the edit's fields (see [`Writer::edit`]).
    #[inline]
    pub fn rewrite<'s>(
        &mut self,
        destination: Option<&str>,
        remove_headers: impl ExactSizeIterator<Item = &'s str>,
        set_headers: impl ExactSizeIterator<Item = (&'s str, &'s str)>,
        body: Option<&[u8]>,
    ) -> &mut Writer {
        self.u8(REWRITE)
            .edit(destination, remove_headers, set_headers, body)
    }

    /// The start of a `fan-out` verdict of `edits` edits, which follow ([`Writer::edit`]).
    #[inline]
    pub fn fan_out(&mut self, edits: usize) -> &mut Writer {
        self.u8(FAN_OUT).u32(edits as u32)
    }

    /// A `reject` verdict.
    #[inline]
    pub fn reject(&mut self, reason: &str) -> &mut Writer {
        self.u8(REJECT).bytes(reason.as_bytes())
    }

    /// An edit: the new destination, headers to remove, headers to set, the new body.
    #[inline]
    pub fn edit<'s>(
        &mut self,
        destination: Option<&str>,
        remove_headers: impl ExactSizeIterator<Item = &'s str>,
        set_headers: impl ExactSizeIterator<Item = (&'s str, &'s str)>,
        body: Option<&[u8]>,
    ) -> &mut Writer {
        match destination {
            Some(d) => self.u8(1).bytes(d.as_bytes()),
            None => self.u8(0),
        };
        self.u32(remove_headers.len() as u32);
        for name in remove_headers {
            self.bytes(name.as_bytes());
        }
        self.u32(set_headers.len() as u32);
        for (name, value) in set_headers {
            self.bytes(name.as_bytes()).bytes(value.as_bytes());
        }
        match body {
            Some(b) => self.u8(1).bytes(b),
            None => self.u8(0),
        }
    }

    /// A verdict given as a view.
    pub fn verdict(&mut self, verdict: &VerdictView<'_>) -> &mut Writer {
        let edit = |w: &mut Writer, e: &EditView<'_>| {
            w.edit(
                e.destination,
                e.remove_headers.iter().copied(),
                e.set_headers.iter().copied(),
                e.body,
            );
        };
        match verdict {
            VerdictView::Keep => self.keep(),
            VerdictView::Rewrite(e) => {
                self.u8(REWRITE);
                edit(self, e);
                self
            }
            VerdictView::FanOut(edits) => {
                self.fan_out(edits.len());
                for e in edits {
                    edit(self, e);
                }
                self
            }
            VerdictView::Reject(reason) => self.reject(reason),
        }
    }

    /// The packed bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_host_packs() {
        let a = MessageView {
            destination: "/queue/a",
            headers: vec![("p", "1")],
            content_type: None,
            body_len: 5,
            body: None,
        };
        let b = MessageView {
            destination: "/queue/b",
            headers: vec![],
            content_type: Some("text/plain"),
            body_len: 2,
            body: Some(b"hi"),
        };
        let input = Writer::new().u32(2).message(&a).message(&b).finish();
        let mut reader = Reader::new(&input);
        assert_eq!(reader.u32(), Some(2));
        let mut view = MessageView::default();
        reader.message_into(&mut view).unwrap();
        assert_eq!(view, a);
        assert_eq!(view.header("p"), Some("1"));
        reader.message_into(&mut view).unwrap();
        assert_eq!(view, b);
        assert!(reader.rest().is_empty());
        assert!(reader.message_into(&mut view).is_none());
        assert!(Reader::new(&input[..input.len() - 1]).message().is_none());
    }

    #[test]
    fn verdicts_read_back() {
        let edit = EditView {
            destination: Some("/queue/b"),
            remove_headers: vec!["x", "y"],
            set_headers: vec![("k", "v"), ("k", "")],
            body: Some(b"new"),
        };
        let verdicts = [
            VerdictView::Keep,
            VerdictView::Rewrite(EditView::default()),
            VerdictView::Rewrite(edit.clone()),
            VerdictView::FanOut(vec![]),
            VerdictView::FanOut(vec![edit, EditView::default()]),
            VerdictView::Reject("no route"),
        ];
        let mut writer = Writer::new();
        writer.u32(verdicts.len() as u32);
        for v in &verdicts {
            writer.verdict(v);
        }
        let input = writer.finish();
        let mut reader = Reader::new(&input);
        assert_eq!(reader.u32(), Some(6));
        for v in &verdicts {
            assert_eq!(reader.verdict().as_ref(), Some(v));
        }
        assert!(reader.rest().is_empty());
        assert!(Reader::new(&[9]).verdict().is_none(), "unknown tag");
        assert!(Reader::new(&input[4..input.len() - 1]).verdict().is_some());
    }

    #[test]
    fn principals_skip_and_read() {
        let input = Writer::new()
            .principal("alice", &["ops"], &["/queue/*"], &[])
            .message(&MessageView::default())
            .finish();
        let mut reader = Reader::new(&input);
        let bytes = reader.skip_principal().unwrap();
        let p = Reader::new(bytes).principal().unwrap();
        assert_eq!(p.name, "alice");
        assert_eq!(p.groups, ["ops"]);
        assert_eq!(p.may_send, ["/queue/*"]);
        assert!(p.may_subscribe.is_empty());
        assert_eq!(reader.message(), Some(MessageView::default()));
        assert!(reader.rest().is_empty());
    }
}
