//! The packed arguments of the plugin fast paths `send-packed.on-send-packed`,
//! `send-batch.on-send-batch` and `deliver-batch.filter-batch` (format in `wit/plugin.wit`):
//! a [`Reader`] that borrows every string from the input, and a [`Writer`] that packs as the host
//! does (for tests). No dependencies, so plugins that do not use the SDK can share it.

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

    /// A `u8` (a 0/1 flag).
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// A `u32` (a count).
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    /// A `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A byte string: `u32 length` + bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A UTF-8 string: `u32 length` + bytes.
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

    /// A `u32` (a count).
    pub fn u32(&mut self, n: u32) -> &mut Writer {
        self.out.extend_from_slice(&n.to_le_bytes());
        self
    }

    /// A byte string.
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
