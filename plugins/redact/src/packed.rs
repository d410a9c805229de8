//! Reads the packed input of `send-packed.on-send-packed` and `deliver-batch.filter-batch`
//! (format in `wit/plugin.wit`) without copying: every string is a slice of the input.

/// One packed message: the projection `deliver.filter` would get.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MessageView<'a> {
    pub destination: &'a str,
    /// Name and value, in message order, repeats kept.
    pub headers: Vec<(&'a str, &'a str)>,
    pub content_type: Option<&'a str>,
    pub body_len: u64,
    pub body: Option<&'a [u8]>,
}

/// A cursor over a packed batch.
pub struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads the message count at the start of `input`; the reader is then at the first message.
    pub fn new(input: &'a [u8]) -> Option<(u32, Reader<'a>)> {
        let mut reader = Reader { input };
        let count = reader.u32()?;
        Some((count, reader))
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

    fn u32(&mut self) -> Option<u32> {
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

    /// Skips a packed principal (`send-packed` input starts with one).
    pub fn skip_principal(&mut self) -> Option<()> {
        self.bytes()?;
        for _ in 0..3 {
            for _ in 0..self.u32()? {
                self.bytes()?;
            }
        }
        Some(())
    }

    /// A reader over `send-packed` input, at its message (after the principal).
    pub fn after_principal(input: &'a [u8]) -> Option<Reader<'a>> {
        let mut reader = Reader { input };
        reader.skip_principal()?;
        Some(reader)
    }

    /// Reads the next message into `view` (reusing its header vector); `None` when the input
    /// is malformed.
    pub fn next_into(&mut self, view: &mut MessageView<'a>) -> Option<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(out: &mut Vec<u8>, t: &str) {
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(t.as_bytes());
    }

    #[test]
    fn reads_what_the_host_packs() {
        let mut input = 2u32.to_le_bytes().to_vec();
        s(&mut input, "/queue/a");
        input.extend_from_slice(&1u32.to_le_bytes());
        s(&mut input, "p");
        s(&mut input, "1");
        input.push(0);
        input.extend_from_slice(&5u64.to_le_bytes());
        input.push(0);
        s(&mut input, "/queue/b");
        input.extend_from_slice(&0u32.to_le_bytes());
        input.push(1);
        s(&mut input, "text/plain");
        input.extend_from_slice(&2u64.to_le_bytes());
        input.push(1);
        s(&mut input, "hi");
        let (count, mut reader) = Reader::new(&input).unwrap();
        assert_eq!(count, 2);
        let mut view = MessageView::default();
        reader.next_into(&mut view).unwrap();
        assert_eq!(view.destination, "/queue/a");
        assert_eq!(view.headers, [("p", "1")]);
        assert_eq!(
            (view.content_type, view.body_len, view.body),
            (None, 5, None)
        );
        reader.next_into(&mut view).unwrap();
        assert_eq!(view.destination, "/queue/b");
        assert!(view.headers.is_empty());
        assert_eq!(view.content_type, Some("text/plain"));
        assert_eq!(view.body, Some(&b"hi"[..]));
        assert!(reader.next_into(&mut view).is_none());
    }
}
