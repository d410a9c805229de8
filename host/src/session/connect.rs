//! CONNECT / STOMP handling: version negotiation, heart-beat negotiation, authentication (a
//! login and, when the authenticate plugin gives one, its expiry), and the CONNECTED frame.
//! Re-authenticating an open session (`reauth:true`) is `reauth.rs`'s.

use std::time::Duration;

use bytes::Bytes;

use crate::codec::{Command, Frame, Version};
use crate::config::Config;
use crate::plugin::{AuthOutcome, AuthRequest, PluginHost, Principal};

use super::error::{client_error, SessionError};
use super::ErrorCode;

/// A login the broker admitted: who, and until when (milliseconds since the Unix epoch;
/// `None`: for the life of the connection).
#[derive(Debug)]
pub struct Admission {
    pub principal: Principal,
    pub expires_at_ms: Option<u64>,
}

/// What CONNECT settled.
#[derive(Debug)]
pub struct Negotiated {
    pub version: Version,
    /// How often the broker must send something (server → client beats).
    pub send_every: Option<Duration>,
    /// How often the client promised to send something (client → server beats).
    pub expect_every: Option<Duration>,
    /// The `heart-beat` value for CONNECTED.
    pub heartbeat_header: String,
}

const SUPPORTED: &str = "1.0,1.1,1.2";

/// Picks the highest version both sides support. No `accept-version` means 1.0.
pub fn negotiate_version(frame: &Frame) -> Result<Version, SessionError> {
    let Some(accept) = frame.get(b"accept-version") else {
        return Ok(Version::V1_0);
    };
    accept
        .split(|&b| b == b',')
        .filter_map(|token| Version::parse(token.trim_ascii()))
        .max()
        .ok_or_else(|| SessionError::Client {
            code: ErrorCode::ProtocolVersion,
            plugin_code: None,
            message: format!(
                "no common protocol version: the client accepts '{}', this broker supports {SUPPORTED}",
                String::from_utf8_lossy(accept)
            ),
            headers: vec![(Bytes::from_static(b"version"), Bytes::from_static(SUPPORTED.as_bytes()))],
            receipt: None,
        })
}

/// The CONNECT/STOMP frame as its session reads it: a frame that negotiates 1.0 (no
/// `accept-version`, or only 1.0 in it) has the spaces and tabs around its header names and
/// values removed, as every later frame of a 1.0 session has (the decoder does that once the
/// version is set); 1.1 and 1.2 keep every byte.
pub fn trimmed_if_1_0(mut frame: Frame) -> Frame {
    if matches!(negotiate_version(&frame), Ok(Version::V1_0)) {
        frame.trim_header_blanks();
    }
    frame
}

/// Parses a `heart-beat` value `cx,cy` (spaces around the numbers are tolerated).
pub fn parse_heartbeat(value: &[u8]) -> Result<(u64, u64), SessionError> {
    let bad = || {
        client_error(
            ErrorCode::ProtocolInvalidHeader,
            format!(
                "invalid heart-beat header '{}': expected two non-negative integers 'cx,cy'",
                String::from_utf8_lossy(value)
            ),
        )
    };
    let mut parts = value.split(|&b| b == b',');
    let mut number = || -> Result<u64, SessionError> {
        let part = parts.next().ok_or_else(bad)?.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        std::str::from_utf8(part)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)
    };
    let cx = number()?;
    let cy = number()?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((cx, cy))
}

/// Version and heart-beat negotiation for a CONNECT/STOMP frame.
pub fn negotiate(frame: &Frame, config: &Config) -> Result<Negotiated, SessionError> {
    let version = negotiate_version(frame)?;
    if version == Version::V1_0 {
        return Ok(Negotiated {
            version,
            send_every: None,
            expect_every: None,
            heartbeat_header: "0,0".to_string(),
        });
    }
    let (cx, cy) = match frame.get(b"heart-beat") {
        Some(value) => parse_heartbeat(value)?,
        None => (0, 0),
    };
    let hb = &config.heartbeat;
    let sx = if cy > 0 { cy.max(hb.send_min_ms) } else { 0 };
    let sy = if cx > 0 { cx.max(hb.receive_min_ms) } else { 0 };
    Ok(Negotiated {
        version,
        send_every: (sx > 0).then(|| Duration::from_millis(sx)),
        expect_every: (sy > 0).then(|| Duration::from_millis(sy)),
        heartbeat_header: format!("{sx},{sy}"),
    })
}

/// Authenticates a CONNECT: the authenticate plugin when one is loaded (it gets the frame and
/// everything the listener knows of the client: listener kind, verified TLS client certificate,
/// WebSocket upgrade credentials), else the configured users, else anonymous.
///
/// Without a plugin, Basic credentials from a WebSocket upgrade count as CONNECT's `login` and
/// `passcode` when CONNECT carries no `login`; when it does, CONNECT's pair is the one checked
/// (the frame is the client's explicit statement for this session; a browser may resend cached
/// HTTP credentials). A bearer token needs a plugin to check it.
///
/// `reauth`: a connected client re-authenticates (the plugin is told). A login whose expiry
/// has already passed is refused (`auth.expired`).
pub async fn authenticate(
    frame: &Frame,
    config: &Config,
    plugins: &PluginHost,
    peer: &crate::listen::Peer,
    context: &crate::plugin::CallContext,
    reauth: bool,
) -> Result<Admission, SessionError> {
    let client_addr = peer.address;
    if plugins.has_authenticator() {
        let request = AuthRequest {
            login: frame.get(b"login").cloned(),
            passcode: frame.get(b"passcode").cloned(),
            host: frame.get(b"host").cloned(),
            client_addr,
            headers: frame.headers.clone(),
            listener: peer.listener,
            client_certificate: peer.tls.clone(),
            upgrade: peer.upgrade.clone(),
            reauth,
        };
        return match plugins.authenticate_in(context, request).await {
            AuthOutcome::Allow(_, Some(at)) if at <= crate::router::message::now_ms() => {
                Err(client_error(
                    ErrorCode::AuthExpired,
                    "access refused: credentials expired",
                ))
            }
            AuthOutcome::Allow(principal, expires_at_ms) => Ok(Admission {
                principal,
                expires_at_ms,
            }),
            AuthOutcome::Deny(reason) => Err(client_error(
                ErrorCode::AuthDenied,
                format!("access refused: {reason}"),
            )),
        };
    }
    builtin(frame, config, peer).map(|principal| Admission {
        principal,
        expires_at_ms: None,
    })
}

/// [`authenticate`] without a plugin: the configured users, else anyone.
fn builtin(
    frame: &Frame,
    config: &Config,
    peer: &crate::listen::Peer,
) -> Result<Principal, SessionError> {
    let (login, passcode) = builtin_credentials(frame, peer);
    if config.users.is_empty() {
        return Ok(match login {
            Some(login) => Principal::named(String::from_utf8_lossy(login).into_owned()),
            None => Principal::anonymous(),
        });
    }
    let matches = |user: &crate::config::UserConfig| {
        login.is_some_and(|l| l == user.login.as_bytes())
            && passcode.is_some_and(|p| crate::text::constant_time_eq(p, user.passcode.as_bytes()))
    };
    match config.users.iter().find(|u| matches(u)) {
        Some(user) => Ok(Principal::named(user.login.clone())),
        None => Err(client_error(
            ErrorCode::AuthDenied,
            match login {
                None => "access refused: login and passcode required".to_string(),
                Some(login) => format!(
                    "access refused: bad login or passcode for '{}'",
                    String::from_utf8_lossy(login)
                ),
            },
        )),
    }
}

/// The login and passcode the built-in authentication checks: CONNECT's when it carries a
/// `login`, else the Basic credentials of the WebSocket upgrade (see [`authenticate`]).
fn builtin_credentials<'a>(
    frame: &'a Frame,
    peer: &'a crate::listen::Peer,
) -> (Option<&'a [u8]>, Option<&'a [u8]>) {
    let login = frame.get(b"login");
    if login.is_some() {
        return (
            login.map(|l| &l[..]),
            frame.get(b"passcode").map(|p| &p[..]),
        );
    }
    match peer.upgrade.as_ref().and_then(|u| u.basic()) {
        Some((login, passcode)) => (Some(login.as_bytes()), Some(passcode.as_bytes())),
        None => (None, frame.get(b"passcode").map(|p| &p[..])),
    }
}

/// The CONNECTED `capabilities` value: what this broker supports, as configured, comma
/// separated (see docs/protocol.md, "Capabilities"). `persistent`: a message store is open.
/// Built once at start ([`crate::broker::Broker::capabilities`]): the features it names need a
/// restart to change.
pub fn capabilities(config: &Config, persistent: bool) -> String {
    let limits = &config.limits;
    let features = [
        (persistent, "persistent"),
        (config.durable.max_per_principal > 0, "durable"),
        (true, "wildcards"),
        (limits.max_composite_parts > 1, "composite"),
        (config.schedule.max_messages > 0, "scheduled"),
        (true, "priority"),
        (true, "selectors"),
        (true, "exclusive"),
        (true, "groups"),
        (true, "browse"),
        (true, "queue-limits"),
        (true, "expiry"),
        (limits.max_temp_queues_per_connection > 0, "temp-queues"),
        (!config.vhosts.is_empty(), "vhosts"),
        (true, "error-codes"),
        (config.limits.max_reauth_per_minute > 0, "reauth"),
    ];
    features
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// The CONNECTED frame; `capabilities` as [`capabilities`] made it (sent in every version:
/// its value needs no escaping and clients ignore headers they do not know).
pub fn connected_frame(
    negotiated: &Negotiated,
    session_id: &str,
    config: &Config,
    capabilities: &Bytes,
) -> Frame {
    let server = format!("{}/{}", config.server_name, env!("CARGO_PKG_VERSION"));
    let mut frame = Frame::new(Command::Connected);
    if negotiated.version != Version::V1_0 {
        frame = frame.header("version", negotiated.version.as_str());
    }
    frame = frame
        .header("session", session_id.to_string())
        .header("server", server);
    if negotiated.version != Version::V1_0 {
        frame = frame.header("heart-beat", negotiated.heartbeat_header.clone());
    }
    frame.header("capabilities", capabilities.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::CallContext;

    fn connect(headers: &[(&str, &str)]) -> Frame {
        headers
            .iter()
            .fold(Frame::new(Command::Connect), |f, (n, v)| {
                f.header(n.to_string(), v.to_string())
            })
    }

    #[test]
    fn version_negotiation_takes_the_highest_common_version() {
        assert_eq!(negotiate_version(&connect(&[])).unwrap(), Version::V1_0);
        let v = |s| negotiate_version(&connect(&[("accept-version", s)])).unwrap();
        assert_eq!(v("1.0,1.1,2.0"), Version::V1_1);
        assert_eq!(v("1.2,1.1,1.0"), Version::V1_2);
        assert_eq!(v(" 1.1 , 1.0"), Version::V1_1);
        assert_eq!(v("1.2"), Version::V1_2);
        let err = negotiate_version(&connect(&[("accept-version", "2.0,3.0")])).unwrap_err();
        let frame = err.to_frame().unwrap();
        assert_eq!(frame.get(b"version").unwrap().as_ref(), b"1.0,1.1,1.2");
    }

    #[test]
    fn only_a_connect_that_negotiates_1_0_is_trimmed() {
        let trimmed = trimmed_if_1_0(connect(&[("login", " guest\t"), (" host ", " vh ")]));
        assert_eq!(trimmed.get(b"login").unwrap().as_ref(), b"guest");
        assert_eq!(trimmed.get(b"host").unwrap().as_ref(), b"vh");
        let trimmed = trimmed_if_1_0(connect(&[("accept-version", " 1.0 "), ("login", " a ")]));
        assert_eq!(trimmed.get(b"login").unwrap().as_ref(), b"a");
        for accept in ["1.1", "1.0,1.2", "9.9"] {
            let kept = trimmed_if_1_0(connect(&[("accept-version", accept), ("login", " a ")]));
            assert_eq!(kept.get(b"login").unwrap().as_ref(), b" a ", "{accept}");
        }
    }

    #[test]
    fn heartbeat_values_parse_strictly() {
        assert_eq!(parse_heartbeat(b"10,20").unwrap(), (10, 20));
        assert_eq!(parse_heartbeat(b"10000, 10000").unwrap(), (10000, 10000));
        for bad in [&b"abc"[..], b"1,2,3", b"-1,0", b"1", b",", b""] {
            assert!(parse_heartbeat(bad).is_err(), "{:?}", bad);
        }
    }

    #[test]
    fn heartbeat_negotiation_follows_the_spec_formula() {
        let mut config = Config::default();
        config.heartbeat.send_min_ms = 100;
        config.heartbeat.receive_min_ms = 200;
        let n = negotiate(
            &connect(&[("accept-version", "1.2"), ("heart-beat", "50,500")]),
            &config,
        )
        .unwrap();
        assert_eq!(n.heartbeat_header, "500,200");
        assert_eq!(n.send_every, Some(Duration::from_millis(500)));
        assert_eq!(n.expect_every, Some(Duration::from_millis(200)));
        let n = negotiate(
            &connect(&[("accept-version", "1.1"), ("heart-beat", "0,0")]),
            &config,
        )
        .unwrap();
        assert_eq!(n.heartbeat_header, "0,0");
        assert!(n.send_every.is_none() && n.expect_every.is_none());
        let n = negotiate(&connect(&[("heart-beat", "10,10")]), &config).unwrap();
        assert_eq!(n.version, Version::V1_0);
        assert!(n.send_every.is_none());
    }

    #[test]
    fn capabilities_follow_the_configuration() {
        let mut config = Config::default();
        let all = capabilities(&config, true);
        let names: Vec<&str> = all.split(',').collect();
        for name in [
            "persistent",
            "durable",
            "wildcards",
            "composite",
            "scheduled",
            "priority",
            "selectors",
            "exclusive",
            "groups",
            "browse",
            "error-codes",
            "reauth",
        ] {
            assert!(names.contains(&name), "{name} missing from {all}");
        }
        assert!(!names.contains(&"vhosts"), "{all}");
        config.limits.max_reauth_per_minute = 0;
        assert!(!capabilities(&config, true)
            .split(',')
            .any(|n| n == "reauth"));
        config.schedule.max_messages = 0;
        config.durable.max_per_principal = 0;
        let fewer = capabilities(&config, false);
        for name in ["persistent", "scheduled", "durable"] {
            assert!(!fewer.split(',').any(|n| n == name), "{fewer}");
        }
        let n = negotiate(&connect(&[("accept-version", "1.2")]), &config).unwrap();
        let frame = connected_frame(&n, "s-1", &config, &Bytes::from(fewer.clone()));
        assert_eq!(
            frame.get(b"capabilities").unwrap().as_ref(),
            fewer.as_bytes()
        );
    }

    fn with_basic(login: &str, passcode: &str) -> crate::listen::Peer {
        crate::listen::Peer::new(
            "127.0.0.1:5".parse().unwrap(),
            crate::listen::ListenerKind::WebSocket,
        )
        .with_upgrade(Some(crate::listen::UpgradeCredentials::Basic {
            login: login.into(),
            passcode: passcode.into(),
        }))
    }

    #[tokio::test]
    async fn upgrade_basic_credentials_count_when_connect_has_no_login() {
        let mut config = Config::default();
        config.users = vec![crate::config::UserConfig {
            login: "alice".into(),
            passcode: "pw".into(),
        }];
        let plugins = crate::plugin::PluginHost::empty();
        let run = |frame: Frame, peer: crate::listen::Peer| {
            let config = config.clone();
            let plugins = plugins.clone();
            async move {
                let context = CallContext::detached();
                authenticate(&frame, &config, &plugins, &peer, &context, false)
                    .await
                    .map(|admitted| admitted.principal)
            }
        };
        // Upgrade credentials alone.
        let p = run(connect(&[]), with_basic("alice", "pw")).await.unwrap();
        assert_eq!(p.name, "alice");
        assert!(run(connect(&[]), with_basic("alice", "bad")).await.is_err());
        // CONNECT's login wins when it carries one: its pair is the one checked.
        let frame = connect(&[("login", "alice"), ("passcode", "pw")]);
        let p = run(frame, with_basic("mallory", "x")).await.unwrap();
        assert_eq!(p.name, "alice");
        let frame = connect(&[("login", "alice"), ("passcode", "bad")]);
        assert!(run(frame, with_basic("alice", "pw")).await.is_err());
        // A bearer token proves nothing without a plugin.
        let bearer = crate::listen::Peer::tcp("127.0.0.1:5".parse().unwrap())
            .with_upgrade(Some(crate::listen::UpgradeCredentials::Bearer("t".into())));
        assert!(run(connect(&[]), bearer).await.is_err());
        // Without configured users, the upgrade's login names the (unchecked) principal.
        config.users.clear();
        let p = authenticate(
            &connect(&[]),
            &config,
            &plugins,
            &with_basic("bob", ""),
            &CallContext::detached(),
            false,
        )
        .await
        .unwrap();
        assert_eq!(p.principal.name, "bob");
        assert_eq!(p.expires_at_ms, None);
    }
}
