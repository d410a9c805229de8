//! Expiring logins and re-authentication of an open session.
//!
//! An authenticate plugin of WIT 0.1.4 (`authenticate-expiring`) may give a login an end; the
//! session's one timer (the silence timer of `connected_loop`) also waits for it, so an expiry
//! costs nothing per frame. At that time the client gets an ERROR (`auth.expired`) and the
//! connection closes, unless it re-authenticated before: a `CONNECT` or `STOMP` frame with
//! `reauth:true` and fresh credentials. The vhost's authenticate chain runs again; a grant for
//! the same user replaces the principal, its rights and its expiry in place and is answered by
//! a CONNECTED like the first (same session, version and heart-beat); subscriptions and
//! transactions stay. Subscriptions the new rights no longer cover end, each with an ERROR
//! naming it (`subscription`, `error-code:permission.revoked`) that leaves the connection
//! open. A refusal is an ERROR (`auth.denied`) and a close, counted as a failed login.
//!
//! Frames are handled one at a time, in order, so a re-authentication never overlaps the first
//! login or another re-authentication: one pipelined behind them waits its turn.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::info;

use crate::codec::{Command, Frame};
use crate::plugin::Principal;
use crate::router::{is_wildcard, may_read_all, table_key};
use crate::text::shown;

use super::connect::{self, Admission};
use super::error::{client_error, SessionError};
use super::error_code::ErrorCode;
use super::Session;

/// The window `limits.max_reauth_per_minute` counts in.
const REAUTH_WINDOW: Duration = Duration::from_secs(60);

/// How many re-authentications a connection made in its current window.
#[derive(Debug)]
pub(super) struct ReauthRate {
    window_start: Instant,
    count: u32,
}

impl ReauthRate {
    pub(super) fn new() -> ReauthRate {
        ReauthRate {
            window_start: Instant::now(),
            count: 0,
        }
    }

    /// Counts one attempt at `now`; false when it is over `max` in the last window.
    fn take(&mut self, now: Instant, max: u32) -> bool {
        if now.duration_since(self.window_start) >= REAUTH_WINDOW {
            self.window_start = now;
            self.count = 0;
        }
        self.count = self.count.saturating_add(1);
        self.count <= max
    }
}

/// When a login that ends at `expires_at_ms` (Unix ms) ends on the session's clock; `None` for
/// a login without an end, or one so far away that the clock cannot hold it.
pub(super) fn deadline(expires_at_ms: Option<u64>) -> Option<Instant> {
    let at = expires_at_ms?;
    let left = at.saturating_sub(crate::router::message::now_ms());
    Instant::now().checked_add(Duration::from_millis(left))
}

/// Whether `frame` (a CONNECT or STOMP) asks to re-authenticate.
pub(super) fn is_reauth(frame: &Frame) -> bool {
    frame.get(b"reauth").is_some_and(|v| v.as_ref() == b"true")
}

impl Session {
    /// A CONNECT or STOMP frame on the open session: a re-authentication when it says
    /// `reauth:true`, else the protocol error it always was.
    pub(super) async fn on_connect_again(&mut self, frame: Frame) -> Result<(), SessionError> {
        if !is_reauth(&frame) {
            return Err(client_error(
                ErrorCode::ProtocolAlreadyConnected,
                "already connected: a second CONNECT is not allowed (re-authenticate with reauth:true)",
            ));
        }
        let max = self.broker.config.limits.max_reauth_per_minute;
        if !self.reauth_rate.take(Instant::now(), max) {
            return Err(client_error(
                ErrorCode::LimitReauthRate,
                format!(
                    "too many re-authentications: the limit is {max} per minute per connection"
                ),
            ));
        }
        let ip = self.peer.address.ip();
        let delay = self.broker.addresses.login_delay(ip);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match self.admit_again(&frame).await {
            Ok(admitted) => {
                self.broker.addresses.login_succeeded(ip);
                self.broker
                    .stats
                    .reauthentications
                    .fetch_add(1, Ordering::Relaxed);
                self.replace_login(admitted);
                Ok(())
            }
            Err(err) => {
                self.broker.addresses.login_failed(ip);
                self.broker
                    .stats
                    .failed_logins
                    .fetch_add(1, Ordering::Relaxed);
                Err(err)
            }
        }
    }

    /// Runs the session's vhost's authenticate chain on `frame`: the same vhost (`host`
    /// absent or selecting it) and the same user, else a refusal.
    async fn admit_again(&self, frame: &Frame) -> Result<Admission, SessionError> {
        if let Some(host) = frame.get(b"host") {
            let same = self
                .broker
                .vhosts
                .select(Some(host))
                .is_ok_and(|vhost| vhost.index == self.vhost.index);
            if !same {
                return Err(client_error(
                    ErrorCode::AuthDenied,
                    format!(
                        "access refused: re-authentication cannot change the virtual host ('{}' to '{}')",
                        self.vhost.name,
                        shown(host)
                    ),
                ));
            }
        }
        let plugins = self.broker.policy.host_for(self.vhost.index);
        let admitted = connect::authenticate(
            frame,
            &self.broker.config,
            &plugins,
            &self.peer,
            &self.plugin_context,
            true,
        )
        .await?;
        if admitted.principal.name != self.principal.name {
            return Err(client_error(
                ErrorCode::AuthDenied,
                format!(
                    "access refused: re-authentication must be for the same user ('{}', not '{}')",
                    self.principal.name, admitted.principal.name
                ),
            ));
        }
        Ok(admitted)
    }

    /// Puts the new login in place: principal, rights, expiry; ends the subscriptions the new
    /// rights do not cover (an ERROR each), then answers CONNECTED.
    fn replace_login(&mut self, admitted: Admission) {
        let old = std::mem::replace(&mut self.principal, admitted.principal);
        self.expires = deadline(admitted.expires_at_ms);
        let revoked = self.end_uncovered_subscriptions(&old);
        info!(
            principal = %self.principal.name,
            expires_at_ms = admitted.expires_at_ms,
            revoked,
            "re-authenticated"
        );
        self.outbox
            .push(crate::router::Outgoing::Frame(connect::connected_frame(
                &self.negotiated,
                &self.id,
                &self.broker.config,
                &self.broker.capabilities,
            )));
    }

    /// Ends every subscription the current principal may not make any more, as UNSUBSCRIBE
    /// would (unacked queue messages go back, a durable subscription is detached and keeps
    /// collecting), each with an ERROR that names it and keeps the connection. A named
    /// destination stays when the new read rights match it; a wildcard pattern only when they
    /// cover every topic it can match (its per-topic checks were set up with the old rights).
    /// Returns how many ended.
    pub(super) fn end_uncovered_subscriptions(&mut self, old: &Principal) -> usize {
        if self.principal.may_subscribe == old.may_subscribe {
            return 0;
        }
        let principal = &self.principal;
        let covered = |destination: &[u8]| {
            if is_wildcard(destination) {
                may_read_all(principal, destination)
            } else {
                principal.may_subscribe(destination)
            }
        };
        // One entry per SUBSCRIBE (the parts of a composite one share its id): its table key,
        // how the client named it, and the first destination no longer covered.
        let mut ended: Vec<(Bytes, Bytes, Bytes)> = Vec::new();
        for subscription in self.conn.subscriptions() {
            let key = table_key(subscription.wire_id(), subscription.destination());
            if covered(subscription.destination()) || ended.iter().any(|(k, _, _)| *k == key) {
                continue;
            }
            ended.push((
                key,
                subscription.name().clone(),
                subscription.destination().clone(),
            ));
        }
        ended.sort();
        for (key, name, destination) in &ended {
            if let Some(key) = self.conn.by_wire_id(key).map(|s| s.key()) {
                self.vhost.router.unsubscribe(&mut self.conn, key);
            }
            let message = format!(
                "subscription '{}' ended: '{}' may no longer subscribe to '{}'",
                shown(name),
                self.principal.name,
                shown(destination)
            );
            let code = ErrorCode::PermissionRevoked;
            self.broker.stats.connections.error_code_sent(code);
            info!(code = code.as_str(), error = %message, "ERROR sent (connection kept)");
            let frame = Frame::new(Command::Error)
                .header("subscription", name.clone())
                .header("error-code", code.as_str())
                .header("message", message.clone())
                .header("content-type", "text/plain")
                .body(message + "\n");
            self.outbox.push(crate::router::Outgoing::Frame(frame));
        }
        ended.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_per_window() {
        let start = Instant::now();
        let mut rate = ReauthRate {
            window_start: start,
            count: 0,
        };
        assert!(rate.take(start, 2));
        assert!(rate.take(start, 2));
        assert!(!rate.take(start + Duration::from_secs(59), 2));
        assert!(rate.take(start + REAUTH_WINDOW, 2));
        let mut none = ReauthRate::new();
        assert!(!none.take(Instant::now(), 0));
    }

    #[test]
    fn deadlines_follow_the_unix_clock() {
        assert_eq!(deadline(None), None);
        let now = crate::router::message::now_ms();
        let soon = deadline(Some(now + 60_000)).unwrap();
        let left = soon.duration_since(Instant::now());
        assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(60));
        // Past: due at once. Absurdly far: no deadline rather than an overflow.
        assert!(deadline(Some(1)).unwrap() <= Instant::now());
        // Absurdly far: never a panic (no deadline if the clock cannot hold it).
        let _ = deadline(Some(u64::MAX));
    }

    #[test]
    fn only_reauth_true_asks_for_it() {
        let frame = |v: &str| Frame::new(Command::Connect).header("reauth", v.to_string());
        assert!(is_reauth(&frame("true")));
        for other in ["false", "TRUE", "1", ""] {
            assert!(!is_reauth(&frame(other)), "{other}");
        }
        assert!(!is_reauth(&Frame::new(Command::Stomp)));
    }
}
