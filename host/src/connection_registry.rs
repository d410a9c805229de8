//! The open connections, one entry each, for the console (`GET /api/overview`) and its
//! "close connection" action. A session registers when its socket is accepted and is removed
//! by the guard it holds ([`Registered`]) however it ends, a panic included; the login (user,
//! STOMP version, session id) is filled in once CONNECT is accepted.
//!
//! Nothing here is on the message path: the table's lock is taken once when a connection opens
//! and once when it closes (as [`crate::connection_stats::ConnectionCounters`] does), and by the
//! console when it reads. Bytes are per-connection atomics that only the connection's own
//! reader and writer store to, once per socket read or write (see
//! [`crate::connection_stats::ByteMeter::with_connection`]), and waiting for the close
//! handle costs the session one atomic load per poll ([`Closed`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

/// What a connection said at CONNECT, once it was accepted.
#[derive(Debug, Clone)]
pub struct Login {
    /// The authenticated principal's name.
    pub user: String,
    /// The negotiated STOMP version (`1.0`, `1.1`, `1.2`).
    pub version: &'static str,
    /// The CONNECTED `session` value.
    pub session: String,
}

/// One open connection.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// The connection's number (unique for the broker process's life; the `n` of its logs).
    pub id: u64,
    /// The listener that accepted it (`tcp`, `tls`, `ws`, `wss`).
    pub listener: &'static str,
    /// The client's address.
    pub address: SocketAddr,
    /// When the socket was accepted (unix ms).
    pub opened_at_ms: u64,
    login: OnceLock<Login>,
    vhost: OnceLock<String>,
    /// Bytes read from the client so far (written by the connection's reader).
    pub bytes_in: OwnLine<AtomicU64>,
    /// Bytes written to the client so far (written by the connection's writer).
    pub bytes_out: OwnLine<AtomicU64>,
    /// Read by the session at every poll.
    close_requested: OwnLine<AtomicBool>,
    /// The session task's waker, set at its first wait for a close and then only read: waiting
    /// costs the session one atomic load per poll, no lock.
    waker: OnceLock<Waker>,
    /// A waker of another task that waits (tests; never the session's steady state).
    other_waker: Mutex<Option<Waker>>,
}

/// A value alone in its cache line (128 bytes: adjacent-line prefetching pairs 64-byte lines).
/// A connection's reader and writer run as two tasks, often on two cores: counters of theirs in
/// one line would pull it from core to core at every read and write.
#[derive(Debug)]
#[repr(align(128))]
pub struct OwnLine<T>(pub T);

impl<T> std::ops::Deref for OwnLine<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The virtual host shown for a connection that has none set (the only one, until virtual
/// hosts exist).
pub const DEFAULT_VHOST: &str = "/";

impl ConnectionInfo {
    /// A connection accepted now (not registered anywhere).
    pub fn new(id: u64, listener: &'static str, address: SocketAddr) -> ConnectionInfo {
        ConnectionInfo {
            id,
            listener,
            address,
            opened_at_ms: crate::router::message::now_ms(),
            login: OnceLock::new(),
            vhost: OnceLock::new(),
            bytes_in: OwnLine(AtomicU64::new(0)),
            bytes_out: OwnLine(AtomicU64::new(0)),
            close_requested: OwnLine(AtomicBool::new(false)),
            waker: OnceLock::new(),
            other_waker: Mutex::new(None),
        }
    }

    /// Records the accepted login (once; later calls are ignored).
    pub fn set_login(&self, login: Login) {
        let _ = self.login.set(login);
    }

    /// The accepted login, `None` while the connection waits for (or failed) CONNECT.
    pub fn login(&self) -> Option<&Login> {
        self.login.get()
    }

    /// Records the connection's virtual host (once).
    pub fn set_vhost(&self, vhost: String) {
        let _ = self.vhost.set(vhost);
    }

    /// The connection's virtual host ([`DEFAULT_VHOST`] unless one was set).
    pub fn vhost(&self) -> &str {
        self.vhost.get().map_or(DEFAULT_VHOST, String::as_str)
    }

    /// Asks the connection's session to end (it sends an ERROR and hands back what it holds).
    /// False when that was asked already.
    pub fn request_close(&self) -> bool {
        let first = !self.close_requested.swap(true, Ordering::SeqCst);
        // Pairs with the fence in `Closed::poll`: either it sees the flag, or this sees its
        // waker.
        fence(Ordering::SeqCst);
        if let Some(waker) = self.waker.get() {
            waker.wake_by_ref();
        }
        if let Some(waker) = self
            .other_waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            waker.wake();
        }
        first
    }

    /// Whether a close was asked for.
    pub fn close_requested(&self) -> bool {
        self.close_requested.load(Ordering::Acquire)
    }

    /// Resolves once a close is asked for (at once if it was already). Meant to be pinned once
    /// and polled by the session's own task.
    pub fn closed(&self) -> Closed<'_> {
        Closed { info: self }
    }
}

/// The future of [`ConnectionInfo::closed`].
#[derive(Debug)]
pub struct Closed<'a> {
    info: &'a ConnectionInfo,
}

impl Future for Closed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let info = self.info;
        if info.close_requested() {
            return Poll::Ready(());
        }
        let registered = match info.waker.get() {
            Some(waker) => waker.will_wake(cx.waker()),
            None => info.waker.set(cx.waker().clone()).is_ok(),
        };
        if !registered {
            *info.other_waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
        }
        fence(Ordering::SeqCst);
        if info.close_requested.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// Every open connection, by id.
#[derive(Debug, Default)]
pub struct ConnectionRegistry {
    entries: Mutex<BTreeMap<u64, Arc<ConnectionInfo>>>,
}

/// A registered connection; removed from its registry when dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    registry: &'a ConnectionRegistry,
    /// The entry, for the session to fill in and watch.
    pub info: Arc<ConnectionInfo>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.info.id);
    }
}

impl ConnectionRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnectionInfo>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `id`, accepted by `listener` from `address`, until the guard drops.
    pub fn register(&self, id: u64, listener: &'static str, address: SocketAddr) -> Registered<'_> {
        let info = Arc::new(ConnectionInfo::new(id, listener, address));
        self.lock().insert(id, info.clone());
        Registered {
            registry: self,
            info,
        }
    }

    /// The first `max` connections by id (oldest first) and how many there are in all.
    pub fn list(&self, max: usize) -> (Vec<Arc<ConnectionInfo>>, usize) {
        let entries = self.lock();
        (entries.values().take(max).cloned().collect(), entries.len())
    }

    /// Connection `id`, if it is open.
    pub fn get(&self, id: u64) -> Option<Arc<ConnectionInfo>> {
        self.lock().get(&id).cloned()
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn a_connection_is_listed_while_its_guard_lives() {
        let registry = ConnectionRegistry::default();
        let first = registry.register(1, "tcp", address());
        {
            let second = registry.register(2, "ws", address());
            second.info.set_login(Login {
                user: "alice".into(),
                version: "1.2",
                session: "s-2".into(),
            });
            let (listed, total) = registry.list(10);
            assert_eq!(total, 2);
            assert_eq!(listed[1].login().unwrap().user, "alice");
            assert_eq!(listed[1].vhost(), DEFAULT_VHOST);
            let (listed, total) = registry.list(1);
            assert_eq!((listed.len(), total, listed[0].id), (1, 2, 1));
        }
        assert_eq!(registry.len(), 1);
        assert!(registry.get(2).is_none());
        drop(first);
        assert!(registry.is_empty());
    }

    #[test]
    fn a_guard_dropped_by_a_panic_still_unregisters() {
        let registry = ConnectionRegistry::default();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _registered = registry.register(7, "tcp", address());
            panic!("session bug");
        }));
        assert!(result.is_err());
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn a_close_request_wakes_the_session_even_when_asked_before_it_waits() {
        let registry = ConnectionRegistry::default();
        let registered = registry.register(3, "tcp", address());
        assert!(registered.info.request_close());
        assert!(!registered.info.request_close(), "asked once only");
        tokio::time::timeout(std::time::Duration::from_secs(1), registered.info.closed())
            .await
            .expect("already requested: resolves at once");
        let other = registry.register(4, "tcp", address());
        let info = other.info.clone();
        let waiter = tokio::spawn(async move { info.closed().await });
        tokio::task::yield_now().await;
        // A second task waiting too (the fallback waker).
        let info = other.info.clone();
        let second = tokio::spawn(async move { info.closed().await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        registry.get(4).unwrap().request_close();
        for task in [waiter, second] {
            tokio::time::timeout(std::time::Duration::from_secs(1), task)
                .await
                .expect("woken")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_pinned_wait_polled_many_times_still_wakes() {
        let info = Arc::new(ConnectionInfo::new(1, "tcp", address()));
        let closer = info.clone();
        let task = tokio::spawn(async move {
            let closed = info.closed();
            tokio::pin!(closed);
            let mut ticks = 0;
            loop {
                tokio::select! {
                    _ = &mut closed => return ticks,
                    _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => ticks += 1,
                }
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        closer.request_close();
        let ticks = tokio::time::timeout(std::time::Duration::from_secs(2), task)
            .await
            .expect("woken")
            .unwrap();
        assert!(ticks > 0);
    }
}
