//! Reading one HTTP request of the admin surface: its head within [`MAX_REQUEST`] bytes, and for
//! the console's actions a body of at most [`MAX_BODY`] bytes announced by `Content-Length`
//! (no chunked bodies), all within [`REQUEST_TIME`]; then its method, path, query, `Host` and
//! bearer token. Anything else in the head is ignored.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest request head read; a longer one is cut there (and then most likely malformed).
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request must arrive whole within this time.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Largest request body read (the console's actions take a few names).
pub const MAX_BODY: usize = 4 * 1024;

/// Why a request could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed or the request did not arrive in time.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The body announced is larger than [`MAX_BODY`], or its length is not a number.
    #[error("request body too large or malformed Content-Length (at most {MAX_BODY} bytes)")]
    BadLength,
    /// A `Transfer-Encoding` body (chunked), which the admin surface does not take.
    #[error("Transfer-Encoding is not accepted: send Content-Length")]
    Encoded,
}

/// A request read whole: its head and its body (empty without `Content-Length`).
#[derive(Debug, Default)]
pub struct Raw {
    /// The head, up to and including its blank line (or all that came, when cut).
    pub head: Vec<u8>,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads a request head, then the body its `Content-Length` announces (at most [`MAX_BODY`]),
/// all within [`REQUEST_TIME`].
pub async fn read_request<R: AsyncRead + Unpin>(stream: &mut R) -> Result<Raw, ReadError> {
    let read = async {
        let mut bytes = Vec::with_capacity(512);
        let mut chunk = [0u8; 1024];
        let head_end = loop {
            if let Some(end) = head_end(&bytes) {
                break end;
            }
            let room = MAX_REQUEST.saturating_sub(bytes.len()).min(chunk.len());
            if room == 0 {
                break bytes.len();
            }
            let n = stream.read(&mut chunk[..room]).await?;
            if n == 0 {
                break bytes.len();
            }
            bytes.extend_from_slice(&chunk[..n]);
        };
        let mut body = bytes.split_off(head_end);
        let head = bytes;
        if header(&head, b"transfer-encoding").is_some() {
            return Err(ReadError::Encoded);
        }
        let length = match header(&head, b"content-length") {
            None => 0,
            Some(value) => std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n <= MAX_BODY)
                .ok_or(ReadError::BadLength)?,
        };
        if body.len() > length {
            body.truncate(length);
        }
        while body.len() < length {
            let want = (length - body.len()).min(chunk.len());
            let n = stream.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        Ok(Raw { head, body })
    };
    tokio::time::timeout(REQUEST_TIME, read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Where the head ends: just past its blank line.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The parts of a request the admin surface answers by.
#[derive(Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, ... as sent.
    pub method: &'a [u8],
    /// The request target's path, without its query string.
    pub path: &'a [u8],
    /// The token of an `Authorization: Bearer TOKEN` header.
    pub bearer: Option<&'a [u8]>,
    /// The query string (after `?`), if any.
    pub query: Option<&'a [u8]>,
    /// The `Host` header's value, if any.
    pub host: Option<&'a [u8]>,
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
        let mut split = target.splitn(2, |&b| b == b'?');
        let path = split.next().unwrap_or(target);
        Some(Request {
            method,
            path,
            bearer: bearer(head),
            query: split.next(),
            host: header(head, b"host"),
        })
    }

    /// The value of query parameter `name` (not percent-decoded: the admin surface's
    /// parameters are plain names and numbers).
    pub fn param(&self, name: &str) -> Option<&'a [u8]> {
        self.query?.split(|&b| b == b'&').find_map(|pair| {
            let mut parts = pair.splitn(2, |&b| b == b'=');
            (parts.next()? == name.as_bytes()).then(|| parts.next().unwrap_or_default())
        })
    }
}

/// The value of the first header `name` (lowercase) in `head`, trimmed.
fn header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
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

    #[test]
    fn query_and_host_are_read() {
        let request = Request::parse(
            b"GET /api/x?plugin=a&limit=5&flag HTTP/1.1\r\nHOST: 127.0.0.1:80\r\n\r\n",
        )
        .unwrap();
        assert_eq!(request.path, b"/api/x");
        assert_eq!(request.param("plugin"), Some(&b"a"[..]));
        assert_eq!(request.param("limit"), Some(&b"5"[..]));
        assert_eq!(request.param("flag"), Some(&b""[..]));
        assert_eq!(request.param("none"), None);
        assert_eq!(request.host, Some(&b"127.0.0.1:80"[..]));
    }

    #[tokio::test]
    async fn a_body_is_read_to_its_length_and_no_further() {
        let mut input = &b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloEXTRA"[..];
        let raw = read_request(&mut input).await.unwrap();
        assert_eq!(raw.body, b"hello");
        assert!(raw.head.ends_with(b"\r\n\r\n"));
        let mut input = &b"GET / HTTP/1.0\r\n\r\n"[..];
        assert!(read_request(&mut input).await.unwrap().body.is_empty());
        // Announced but not sent: the stream ends early.
        let mut input = &b"POST /a HTTP/1.1\r\nContent-Length: 9\r\n\r\nhi"[..];
        assert!(matches!(
            read_request(&mut input).await,
            Err(ReadError::Io(_))
        ));
    }

    #[tokio::test]
    async fn oversized_negative_or_chunked_bodies_are_refused_before_reading() {
        for head in [
            format!(
                "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            ),
            "POST /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n".to_string(),
            "POST /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_string(),
        ] {
            let mut input = head.as_bytes();
            assert!(
                matches!(read_request(&mut input).await, Err(ReadError::BadLength)),
                "{head}"
            );
        }
        let mut input = &b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello"[..];
        assert!(matches!(
            read_request(&mut input).await,
            Err(ReadError::Encoded)
        ));
        let endless = vec![b'a'; 10 * MAX_REQUEST];
        let raw = read_request(&mut &endless[..]).await.unwrap();
        assert_eq!(raw.head.len(), MAX_REQUEST);
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
