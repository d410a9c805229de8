//! Reading one HTTP request of the admin surface: its head only (no body is ever read), within
//! [`MAX_REQUEST`] bytes and [`REQUEST_TIME`], then its method, path and bearer token. Anything
//! else in the head is ignored.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request head read; a longer one is cut there (and then most likely malformed).
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request must arrive whole within this time.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);

/// The parts of a request the admin surface answers by.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, ... as sent.
    pub method: &'a [u8],
    /// The request target's path, without its query string.
    pub path: &'a [u8],
    /// The token of an `Authorization: Bearer TOKEN` header.
    pub bearer: Option<&'a [u8]>,
}

/// Reads a request head (up to the blank line, end of stream, or [`MAX_REQUEST`] bytes).
pub async fn read_head<R: AsyncRead + Unpin>(stream: &mut R) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let room = MAX_REQUEST.saturating_sub(head.len()).min(chunk.len());
            if room == 0 {
                break;
            }
            let n = stream.read(&mut chunk[..room]).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(REQUEST_TIME, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(head)
}

impl<'a> Request<'a> {
    /// Parses a request head; `None` when its first line is not `METHOD TARGET VERSION`.
    pub fn parse(head: &'a [u8]) -> Option<Request<'a>> {
        let line = head.split(|&b| b == b'\n').next()?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut parts = line.split(|&b| b == b' ');
        let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || method.is_empty() || !version.starts_with(b"HTTP/") {
            return None;
        }
        let path = target.split(|&b| b == b'?').next().unwrap_or(target);
        Some(Request {
            method,
            path,
            bearer: bearer(head),
        })
    }
}

/// The token of an `Authorization: Bearer TOKEN` header line of `head`.
fn bearer(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if !name.eq_ignore_ascii_case(b"authorization") {
            return None;
        }
        let scheme = value.get(..7)?;
        scheme
            .eq_ignore_ascii_case(b"bearer ")
            .then(|| value[7..].trim_ascii())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let request = b"GET /status HTTP/1.0\r\nHost: x\r\nAUTHORIZATION:  bearer  s3cret \r\n\r\n";
        assert_eq!(bearer(request), Some(&b"s3cret"[..]));
        assert_eq!(
            bearer(b"GET / HTTP/1.0\r\nauthorization: Basic abc\r\n\r\n"),
            None
        );
        assert_eq!(bearer(b"GET / HTTP/1.0\r\n\r\n"), None);
        assert_eq!(
            bearer(b"GET /?authorization: Bearer x HTTP/1.0\r\n\r\n"),
            None
        );
    }

    #[test]
    fn the_request_line_gives_method_and_path_without_query() {
        let request = Request::parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(request.method, b"GET");
        assert_eq!(request.path, b"/metrics");
        assert_eq!(request.bearer, None);
        let request = Request::parse(b"HEAD / HTTP/1.0\n\n").unwrap();
        assert_eq!((request.method, request.path), (&b"HEAD"[..], &b"/"[..]));
        for bad in [
            &b""[..],
            b"GET\r\n\r\n",
            b"GET /status\r\n\r\n",
            b"GET /status FTP/1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b" /a HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                Request::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test]
    async fn a_head_is_read_up_to_its_blank_line_and_never_past_the_cap() {
        let mut short = &b"GET / HTTP/1.0\r\n\r\nbody that is not read"[..];
        let head = read_head(&mut short).await.unwrap();
        assert!(head.starts_with(b"GET / HTTP/1.0\r\n\r\n"));
        let endless = vec![b'a'; 10 * MAX_REQUEST];
        let head = read_head(&mut &endless[..]).await.unwrap();
        assert_eq!(head.len(), MAX_REQUEST);
    }
}
