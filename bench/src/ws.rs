//! STOMP over WebSocket for the load generator (`--addr ws://HOST:PORT/PATH`): the upgrade, and
//! RFC 6455 framing of what [`crate::conn::Conn`] writes and reads. One masked binary message
//! per STOMP frame out (as browsers' stompjs sends one per frame); incoming server frames
//! (unmasked) are stripped to their payload, which is then decoded like a TCP byte stream.
//! Just enough for a benchmark: no fragmentation out, and control frames in are skipped.

use anyhow::{bail, Context};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The mask of every client frame (any value will do; masking costs the client, not the broker).
const MASK: [u8; 4] = [0x5a, 0x13, 0xc7, 0x2e];

/// `ws://HOST:PORT/PATH` split into the address and the path; `None` for a plain address.
pub fn parse_url(addr: &str) -> Option<(String, String)> {
    let rest = addr.strip_prefix("ws://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/ws"),
    };
    Some((host.to_string(), path.to_string()))
}

/// Sends the upgrade request and reads the 101 answer.
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> anyhow::Result<()> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        if stream
            .read(&mut byte)
            .await
            .context("reading the upgrade answer")?
            == 0
        {
            bail!("the broker closed the connection during the upgrade");
        }
        head.push(byte[0]);
        if head.len() > 8192 {
            bail!("upgrade answer too long");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!(
            "upgrade refused: {}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        );
    }
    Ok(())
}

/// Appends `payload` to `out` as one masked binary message.
pub fn encode(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x82);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i & 3]));
}

/// Moves the payload of every whole server frame in `raw` to `out`; a close frame is an error.
pub fn decode(raw: &mut BytesMut, out: &mut BytesMut) -> anyhow::Result<()> {
    loop {
        if raw.len() < 2 {
            return Ok(());
        }
        let opcode = raw[0] & 0x0f;
        let (length, header) = match raw[1] & 0x7f {
            126 if raw.len() >= 4 => (u16::from_be_bytes([raw[2], raw[3]]) as usize, 4),
            127 if raw.len() >= 10 => {
                let mut eight = [0u8; 8];
                eight.copy_from_slice(&raw[2..10]);
                (u64::from_be_bytes(eight) as usize, 10)
            }
            126 | 127 => return Ok(()),
            n => (n as usize, 2),
        };
        if raw.len() < header + length {
            raw.reserve(header + length - raw.len());
            return Ok(());
        }
        raw.advance(header);
        let payload = raw.split_to(length);
        match opcode {
            0x0..=0x2 => out.extend_from_slice(&payload),
            0x8 => bail!("the broker closed the WebSocket"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_frames() {
        assert_eq!(
            parse_url("ws://127.0.0.1:15674/ws"),
            Some(("127.0.0.1:15674".into(), "/ws".into()))
        );
        assert_eq!(parse_url("127.0.0.1:61613"), None);
        let mut out = Vec::new();
        encode(&mut out, b"ab");
        assert_eq!(
            out,
            [0x82, 0x82, 0x5a, 0x13, 0xc7, 0x2e, b'a' ^ 0x5a, b'b' ^ 0x13]
        );
        let mut raw = BytesMut::from(&[0x81, 2, b'h', b'i', 0x8a, 0, 0x82, 126, 0, 1][..]);
        let mut payload = BytesMut::new();
        decode(&mut raw, &mut payload).unwrap();
        assert_eq!(&payload[..], b"hi");
        assert_eq!(raw.len(), 4, "a partial frame waits");
    }
}
