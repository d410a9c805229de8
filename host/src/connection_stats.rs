//! Broker-wide counters of connections that `/metrics` reads: open and opened per listener,
//! closes by reason, ERROR frames by kind, and bytes in and out. A session touches them when
//! it opens and ends; bytes are counted in the session and its writer and added here in steps
//! of [`BYTES_STEP`] (and at the end), so the shared counters see no write per message.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::session::{ErrorCode, SessionError};

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client left: DISCONNECT, end of stream, or a socket error.
    Client,
    /// The broker sent an ERROR for what the client sent (an invalid or refused frame, no
    /// CONNECT in time, a frame the read buffer could not take).
    Error,
    /// The client's heart-beats stopped.
    Heartbeat,
    /// The connection could not keep up with a topic (the `disconnect` policy).
    SlowConsumer,
    /// Its login was refused.
    Auth,
    /// Idle without subscriptions for `limits.idle_timeout_ms`.
    Idle,
    /// The broker shut down.
    Shutdown,
    /// An administrator closed it (the console's "close connection" action).
    Admin,
}

impl CloseReason {
    /// Every reason, in variant order.
    pub const ALL: [CloseReason; 8] = [
        CloseReason::Client,
        CloseReason::Error,
        CloseReason::Heartbeat,
        CloseReason::SlowConsumer,
        CloseReason::Auth,
        CloseReason::Idle,
        CloseReason::Shutdown,
        CloseReason::Admin,
    ];

    /// The reason's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::Error => "error",
            CloseReason::Heartbeat => "heart-beat",
            CloseReason::SlowConsumer => "slow-consumer",
            CloseReason::Auth => "auth",
            CloseReason::Idle => "idle",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Admin => "admin",
        }
    }
}

/// What an ERROR frame sent to a client was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The bytes did not form a valid frame (or broke a size limit).
    Decode,
    /// A well-formed frame the broker refused (bad headers, no permission, plugin refusal...).
    Refused,
    /// A refused login.
    Auth,
    /// No CONNECT within `limits.connect_timeout_ms`.
    ConnectTimeout,
    /// No heart-beat from the client in time.
    Heartbeat,
    /// Idle without subscriptions.
    Idle,
    /// A slow consumer disconnected.
    SlowConsumer,
    /// The read buffer could not take a frame (memory).
    ReadBuffer,
    /// The broker is shutting down.
    Shutdown,
    /// An administrator closed the connection.
    Admin,
}

impl ErrorKind {
    /// Every kind, in variant order.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Decode,
        ErrorKind::Refused,
        ErrorKind::Auth,
        ErrorKind::ConnectTimeout,
        ErrorKind::Heartbeat,
        ErrorKind::Idle,
        ErrorKind::SlowConsumer,
        ErrorKind::ReadBuffer,
        ErrorKind::Shutdown,
        ErrorKind::Admin,
    ];

    /// The kind's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Decode => "decode",
            ErrorKind::Refused => "refused",
            ErrorKind::Auth => "auth",
            ErrorKind::ConnectTimeout => "connect-timeout",
            ErrorKind::Heartbeat => "heart-beat",
            ErrorKind::Idle => "idle",
            ErrorKind::SlowConsumer => "slow-consumer",
            ErrorKind::ReadBuffer => "read-buffer",
            ErrorKind::Shutdown => "shutdown",
            ErrorKind::Admin => "admin",
        }
    }
}

/// Why a session that ended with `err` ended, and the kind of ERROR it sent the client (none
/// when the socket failed). `login_refused`: `err` is the refusal of its CONNECT's login.
pub fn classify(err: &SessionError, login_refused: bool) -> (CloseReason, Option<ErrorKind>) {
    use SessionError as E;
    match err {
        _ if login_refused => (CloseReason::Auth, Some(ErrorKind::Auth)),
        E::Io(_) => (CloseReason::Client, None),
        E::Decode(_) => (CloseReason::Error, Some(ErrorKind::Decode)),
        // A refused re-authentication (the first login is `login_refused`).
        E::Client {
            code: ErrorCode::AuthDenied | ErrorCode::AuthExpired | ErrorCode::AuthUnknownVhost,
            ..
        } => (CloseReason::Auth, Some(ErrorKind::Auth)),
        E::Client { .. } => (CloseReason::Error, Some(ErrorKind::Refused)),
        E::CredentialsExpired => (CloseReason::Auth, Some(ErrorKind::Auth)),
        E::ConnectTimeout(_) => (CloseReason::Error, Some(ErrorKind::ConnectTimeout)),
        E::ReadBuffer(_) => (CloseReason::Error, Some(ErrorKind::ReadBuffer)),
        E::HeartbeatTimeout(_) => (CloseReason::Heartbeat, Some(ErrorKind::Heartbeat)),
        E::Idle(_) => (CloseReason::Idle, Some(ErrorKind::Idle)),
        E::SlowConsumer => (CloseReason::SlowConsumer, Some(ErrorKind::SlowConsumer)),
        E::Shutdown => (CloseReason::Shutdown, Some(ErrorKind::Shutdown)),
        E::ClosedByAdmin => (CloseReason::Admin, Some(ErrorKind::Admin)),
    }
}

/// A counter per [`ErrorCode`], indexed by the code's position in [`ErrorCode::ALL`].
#[derive(Debug)]
struct CodeCounts(Box<[AtomicU64]>);

impl Default for CodeCounts {
    fn default() -> CodeCounts {
        CodeCounts(ErrorCode::ALL.iter().map(|_| AtomicU64::new(0)).collect())
    }
}

/// Bytes a connection counts locally before adding them to the broker's total.
pub const BYTES_STEP: u64 = 64 * 1024;

/// Connections per listener: open now, and opened since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenerCount {
    /// Open now.
    pub open: u64,
    /// Opened since start.
    pub opened: u64,
}

/// The counters, shared by every session.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    listeners: Mutex<BTreeMap<&'static str, ListenerCount>>,
    closes: [AtomicU64; CloseReason::ALL.len()],
    errors: [AtomicU64; ErrorKind::ALL.len()],
    codes: CodeCounts,
    /// Bytes read from clients (after CONNECT).
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
}

impl ConnectionCounters {
    /// A connection on `listener` opened (once per connection: a lock is fine here).
    pub fn opened(&self, listener: &'static str) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let count = listeners.entry(listener).or_default();
        count.open += 1;
        count.opened += 1;
    }

    /// A connection on `listener` ended for `reason`.
    pub fn closed(&self, listener: &'static str, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
        let mut listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        let count = listeners.entry(listener).or_default();
        count.open = count.open.saturating_sub(1);
    }

    /// An ERROR of `kind` was sent.
    pub fn error_sent(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// An ERROR with `code` was sent (a plugin's own code counts as its generic code, so the
    /// series stay the fixed set of [`ErrorCode::ALL`]).
    pub fn error_code_sent(&self, code: ErrorCode) {
        self.codes.0[code as usize].fetch_add(1, Relaxed);
    }

    /// ERRORs sent by code, every code listed.
    pub fn error_codes(&self) -> impl Iterator<Item = (ErrorCode, u64)> + '_ {
        ErrorCode::ALL
            .iter()
            .map(|&code| (code, self.codes.0[code as usize].load(Relaxed)))
    }

    /// Connections per listener.
    pub fn listeners(&self) -> Vec<(&'static str, ListenerCount)> {
        let listeners = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        listeners
            .iter()
            .map(|(name, count)| (*name, *count))
            .collect()
    }

    /// Closes by reason, every reason listed.
    pub fn closes(&self) -> impl Iterator<Item = (CloseReason, u64)> + '_ {
        CloseReason::ALL
            .into_iter()
            .map(|reason| (reason, self.closes[reason as usize].load(Relaxed)))
    }

    /// ERRORs sent by kind, every kind listed.
    pub fn errors(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL
            .into_iter()
            .map(|kind| (kind, self.errors[kind as usize].load(Relaxed)))
    }
}

/// Bytes one task reads or writes, added to a shared total every [`BYTES_STEP`] and when the
/// meter is dropped; optionally also stored, at each count, into a counter of the connection's
/// own (which only this task writes: no shared cache line, no read-modify-write).
#[derive(Debug)]
pub struct ByteMeter<'a> {
    total: &'a AtomicU64,
    pending: u64,
    connection: Option<&'a AtomicU64>,
    counted: u64,
}

impl<'a> ByteMeter<'a> {
    /// A meter adding to `total`.
    pub fn new(total: &'a AtomicU64) -> ByteMeter<'a> {
        ByteMeter {
            total,
            pending: 0,
            connection: None,
            counted: 0,
        }
    }

    /// Also keeps `connection` equal to the bytes this meter counted.
    pub fn with_connection(mut self, connection: &'a AtomicU64) -> ByteMeter<'a> {
        self.counted = connection.load(Relaxed);
        self.connection = Some(connection);
        self
    }

    /// Counts `bytes`.
    pub fn add(&mut self, bytes: usize) {
        if let Some(connection) = self.connection {
            self.counted += bytes as u64;
            connection.store(self.counted, Relaxed);
        }
        self.pending += bytes as u64;
        if self.pending >= BYTES_STEP {
            self.total.fetch_add(self.pending, Relaxed);
            self.pending = 0;
        }
    }
}

impl Drop for ByteMeter<'_> {
    fn drop(&mut self) {
        if self.pending > 0 {
            self.total.fetch_add(self.pending, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_follow_the_variants_order() {
        for (index, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, index);
        }
        for (index, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, index);
        }
        for (index, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(*code as usize, index);
        }
    }

    #[test]
    fn a_meter_adds_in_steps_and_at_the_end() {
        let total = AtomicU64::new(0);
        {
            let mut meter = ByteMeter::new(&total);
            meter.add(10);
            assert_eq!(total.load(Relaxed), 0);
            meter.add(BYTES_STEP as usize);
            assert_eq!(total.load(Relaxed), BYTES_STEP + 10);
            meter.add(5);
        }
        assert_eq!(total.load(Relaxed), BYTES_STEP + 15);
    }

    #[test]
    fn a_connection_counter_follows_every_count() {
        let (total, own) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut meter = ByteMeter::new(&total).with_connection(&own);
        meter.add(10);
        meter.add(20);
        assert_eq!(own.load(Relaxed), 30);
        assert_eq!(total.load(Relaxed), 0);
    }

    #[test]
    fn listeners_count_open_and_opened_connections() {
        let counters = ConnectionCounters::default();
        counters.opened("tcp");
        counters.opened("tcp");
        counters.closed("tcp", CloseReason::Error);
        let listeners = counters.listeners();
        assert_eq!(
            listeners,
            vec![("tcp", ListenerCount { open: 1, opened: 2 })]
        );
        let errors: u64 = counters
            .closes()
            .filter(|(reason, _)| *reason == CloseReason::Error)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(errors, 1);
        counters.error_code_sent(ErrorCode::FlowQueueFull);
        let full = counters
            .error_codes()
            .find(|(c, _)| *c == ErrorCode::FlowQueueFull);
        assert_eq!(full, Some((ErrorCode::FlowQueueFull, 1)));
        assert_eq!(counters.error_codes().count(), ErrorCode::ALL.len());
    }
}
