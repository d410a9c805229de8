//! The HTTP upgrade that opens a WebSocket connection: read (bounded in size; the caller bounds
//! it in time), checked and answered.
//!
//! The request must be a valid RFC 6455 upgrade (checked by tungstenite) for the configured
//! path, from an admitted `Origin` ([`origin`](super::origin)). The answer names the highest
//! STOMP subprotocol the client offered (`v12.stomp` > `v11.stomp` > `v10.stomp`); a client
//! that offers subprotocols but none of those gets 400 (a browser would fail the handshake
//! anyway, with a less helpful message), one that offers none is accepted without. Optional
//! credentials come from `Authorization` (Basic or Bearer) or the `access_token` query
//! parameter (browsers cannot set headers on a WebSocket). Behind a trusted proxy, the
//! client's address comes from `X-Forwarded-For`.

use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::{create_response, Request};
use tungstenite::http::{HeaderMap, StatusCode};

use super::Settings;
use crate::listen::UpgradeCredentials as Credentials;

/// The STOMP subprotocols, best first.
pub const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// An accepted upgrade.
#[derive(Debug)]
pub struct Upgrade {
    /// The 101 response to send.
    pub response: Vec<u8>,
    /// The subprotocol chosen, if the client offered any.
    pub protocol: Option<&'static str>,
    /// Credentials from the request.
    pub credentials: Option<Credentials>,
    /// The client's address (the socket's, or the forwarded one behind a trusted proxy).
    pub client: SocketAddr,
}

/// A refused upgrade: the HTTP status and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status sent.
    pub status: StatusCode,
    /// The plain-text body.
    pub reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Refusal {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    /// The whole HTTP response.
    pub fn response(&self) -> Vec<u8> {
        let body = format!("{}\n", self.reason);
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if self.status == StatusCode::UPGRADE_REQUIRED {
            head.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        out
    }
}

/// Why reading the request failed.
#[derive(Debug)]
pub enum ReadFailure {
    /// The connection failed or closed before a whole request arrived.
    Io(std::io::Error),
    /// The request is malformed or too large: answer it.
    Refused(Refusal),
}

/// Reads one HTTP request head (at most `max_bytes`); returns it and what followed it.
pub async fn read_request<R: AsyncRead + Unpin>(
    stream: &mut R,
    max_bytes: usize,
) -> Result<(Request, Bytes), ReadFailure> {
    let mut buf = BytesMut::with_capacity(1024.min(max_bytes));
    loop {
        match Request::try_parse(&buf) {
            Ok(Some((size, request))) => {
                let _ = buf.split_to(size);
                return Ok((request, buf.freeze()));
            }
            Ok(None) => {}
            Err(err) => {
                return Err(ReadFailure::Refused(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("malformed HTTP request: {err}"),
                )))
            }
        }
        if buf.len() >= max_bytes {
            return Err(ReadFailure::Refused(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("the upgrade request exceeds {max_bytes} bytes"),
            )));
        }
        let mut chunk = (&mut *stream).take((max_bytes - buf.len()) as u64);
        buf.reserve(1024);
        match chunk.read_buf(&mut buf).await {
            Ok(0) => return Err(ReadFailure::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(err) => return Err(ReadFailure::Io(err)),
        }
    }
}

/// Checks a request from `socket` against the listener's settings.
pub fn check(
    request: &Request,
    socket: SocketAddr,
    settings: &Settings,
) -> Result<Upgrade, Refusal> {
    let headers = request.headers();
    let upgrade_asked = headers
        .get_all("upgrade")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !upgrade_asked {
        return Err(Refusal::new(
            StatusCode::UPGRADE_REQUIRED,
            format!(
                "this is a STOMP over WebSocket endpoint: connect a WebSocket client to {}",
                settings.path
            ),
        ));
    }
    if request.uri().path() != settings.path {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            format!("no WebSocket endpoint here: STOMP is at {}", settings.path),
        ));
    }
    let mut response = create_response(request).map_err(|err| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("not a valid WebSocket upgrade: {err}"),
        )
    })?;
    let origin = single(headers, "origin")?;
    if !settings.origins.admits(origin) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "origin '{}' is not allowed to connect (see [websocket] allowed_origins)",
                String::from_utf8_lossy(origin.unwrap_or_default())
            ),
        ));
    }
    let protocol = choose_protocol(headers)?;
    if let Some(protocol) = protocol {
        response.headers_mut().insert(
            "sec-websocket-protocol",
            tungstenite::http::HeaderValue::from_static(protocol),
        );
    }
    let credentials = credentials(headers, request.uri().query())?;
    let client = client_address(headers, socket, &settings.trusted_proxies)?;
    let mut bytes = Vec::with_capacity(256);
    tungstenite::handshake::server::write_response(&mut bytes, &response)
        .map_err(|err| Refusal::new(StatusCode::BAD_REQUEST, format!("cannot answer: {err}")))?;
    Ok(Upgrade {
        response: bytes,
        protocol,
        credentials,
        client,
    })
}

/// A header that may appear at most once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a [u8]>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().map(|v| v.as_bytes());
    if values.next().is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("more than one {name} header"),
        ));
    }
    Ok(first)
}

/// The highest STOMP subprotocol offered; `None` when none is offered at all.
fn choose_protocol(headers: &HeaderMap) -> Result<Option<&'static str>, Refusal> {
    let mut offered = Vec::new();
    for value in headers.get_all("sec-websocket-protocol") {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        offered.extend(
            value
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty()),
        );
    }
    if offered.is_empty() {
        return Ok(None);
    }
    // Subprotocol names are case-sensitive tokens (RFC 6455 4.1).
    match SUBPROTOCOLS
        .iter()
        .find(|known| offered.iter().any(|o| o == *known))
    {
        Some(best) => Ok(Some(best)),
        None => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "none of the offered subprotocols ({}) is supported: offer v12.stomp, v11.stomp or v10.stomp",
                offered.join(", ")
            ),
        )),
    }
}

/// Credentials from `Authorization` or the `access_token` query parameter (not both).
fn credentials(headers: &HeaderMap, query: Option<&str>) -> Result<Option<Credentials>, Refusal> {
    let bad = |why: &str| Refusal::new(StatusCode::BAD_REQUEST, why.to_string());
    let from_header = match single(headers, "authorization")? {
        None => None,
        Some(value) => {
            let value = std::str::from_utf8(value)
                .map_err(|_| bad("Authorization is not valid UTF-8"))?
                .trim();
            let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
            let rest = rest.trim();
            if scheme.eq_ignore_ascii_case("basic") {
                let decoded = data_encoding::BASE64
                    .decode(rest.as_bytes())
                    .map_err(|_| bad("Authorization: Basic holds no valid base64"))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| bad("Authorization: Basic credentials are not UTF-8"))?;
                let (login, passcode) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad("Authorization: Basic credentials need login:passcode"))?;
                Some(Credentials::Basic {
                    login: login.to_string(),
                    passcode: passcode.to_string(),
                })
            } else if scheme.eq_ignore_ascii_case("bearer") {
                if rest.is_empty() {
                    return Err(bad("Authorization: Bearer without a token"));
                }
                Some(Credentials::Bearer(rest.to_string()))
            } else {
                return Err(bad("unsupported Authorization scheme: use Basic or Bearer"));
            }
        }
    };
    let mut from_query = None;
    for pair in query.unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "access_token" {
            if from_query.is_some() {
                return Err(bad("more than one access_token parameter"));
            }
            let token = percent_decode(value).ok_or_else(|| bad("access_token is not valid"))?;
            if token.is_empty() {
                return Err(bad("access_token is empty"));
            }
            from_query = Some(Credentials::Bearer(token));
        }
    }
    match (from_header, from_query) {
        (Some(_), Some(_)) => Err(bad(
            "credentials both in Authorization and in access_token: send one",
        )),
        (header, query) => Ok(header.or(query)),
    }
}

/// Decodes `%XX` escapes (and `+` as a space, as forms do); `None` on a bad escape or when the
/// result is not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The client's address: the socket's, or behind a trusted proxy the nearest address in
/// `X-Forwarded-For` (read from the right) that is not itself a trusted proxy.
fn client_address(
    headers: &HeaderMap,
    socket: SocketAddr,
    trusted: &[IpAddr],
) -> Result<SocketAddr, Refusal> {
    if !trusted.contains(&socket.ip()) {
        return Ok(socket);
    }
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let value = std::str::from_utf8(value.as_bytes())
            .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "X-Forwarded-For is not ASCII"))?;
        hops.extend(value.split(',').map(str::trim).map(str::to_string));
    }
    for hop in hops.iter().rev() {
        let ip: IpAddr = hop.parse().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("X-Forwarded-For holds '{hop}', not an IP address"),
            )
        })?;
        if !trusted.contains(&ip) {
            return Ok(SocketAddr::new(ip, 0));
        }
    }
    // Only proxies (or no header): the connection is the proxy's own.
    Ok(socket)
}

#[cfg(test)]
mod tests;
