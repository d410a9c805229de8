//! One task per client connection: the STOMP session state machine.
//!
//! ```text
//! AwaitingConnect ──CONNECT/STOMP──► Connected ──DISCONNECT / ERROR / EOF──► Closing
//! ```
//!
//! The session task reads and decodes frames and handles them one at a time (in order, so a
//! RECEIPT means everything before it is done); a separate writer task ([`writer`]) owns the
//! socket's write half and drains the connection's [`Outbox`]. On the way out the session
//! returns unacked queue messages for redelivery, aborts open transactions and removes its
//! temporary queues, whatever the reason it ended.

mod acks;
mod connect;
mod error;
mod handlers;
mod send_batch;
mod transaction;
pub mod writer;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, Instrument};

use crate::broker::{Broker, BrokerStats};
use crate::codec::{encode_frame, Command, Frame, FrameReader, Version};
use crate::plugin::Principal;
use crate::router::{Destination, Outbox, Outgoing, Queue, Subscription};
use crate::store::Store;

pub use error::SessionError;

use error::client_error;
use transaction::Transaction;

/// How long a closing connection keeps reading (and discarding) so that its last ERROR or
/// RECEIPT is not destroyed by a TCP reset.
const LINGER: Duration = Duration::from_millis(500);
/// At most this much is read and discarded while lingering.
const LINGER_BYTES: usize = 4 * 1024 * 1024;
/// A session forgets its resolved destinations past this many (bounded memory).
const DESTINATION_CACHE: usize = 1024;

/// Serves one client connection to the end.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Arc<Broker>,
    number: u64,
    shutdown: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("conn", n = number, %peer);
    async move {
        broker
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        // Counted down when the session ends, however it ends (a panic included).
        let _open = OpenConnection::count(&broker.stats);
        let _ = stream.set_nodelay(true);
        debug!("accepted");
        run(stream, peer, &broker, number, shutdown).await;
        debug!("closed");
    }
    .instrument(span)
    .await
}

/// One open connection in [`BrokerStats::connections_open`], for as long as it lives.
struct OpenConnection<'a>(&'a BrokerStats);

impl<'a> OpenConnection<'a> {
    fn count(stats: &'a BrokerStats) -> OpenConnection<'a> {
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(stats)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn run(
    mut stream: TcpStream,
    peer: SocketAddr,
    broker: &Arc<Broker>,
    number: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = broker.config.clone();
    let mut reader = FrameReader::new(config.limits.codec_limits());

    // AwaitingConnect.
    let connect_timeout = Duration::from_millis(config.limits.connect_timeout_ms);
    let first = tokio::select! {
        first = tokio::time::timeout(connect_timeout, read_frame(&mut stream, &mut reader)) => {
            match first {
                Ok(Ok(Some(frame))) => Ok(frame),
                Ok(Ok(None)) => return,
                Ok(Err(err)) => Err(err),
                Err(_) => Err(SessionError::ConnectTimeout(config.limits.connect_timeout_ms)),
            }
        }
        _ = shutdown.changed() => Err(SessionError::Shutdown),
    };
    let session_id: Arc<str> = Arc::from(format!("{}-{number}", broker.instance));
    let mut client_id = None;
    let connected = match first {
        Ok(frame) => {
            client_id = frame.get(b"client-id").cloned();
            accept_connect(&frame, broker, peer).await
        }
        Err(err) => Err(err),
    };
    let (negotiated, principal) = match connected {
        Ok(ok) => ok,
        Err(err) => {
            report(broker, &err);
            if let Some(frame) = err.to_frame() {
                let mut out = BytesMut::new();
                encode_frame(&frame, Version::V1_0, &mut out);
                let _ = tokio::time::timeout(LINGER, stream.write_all(&out)).await;
                let _ = stream.shutdown().await;
                let (reader, _writer) = stream.into_split();
                linger(reader).await;
            }
            return;
        }
    };
    reader.set_version(negotiated.version);
    info!(session = %session_id, principal = %principal.name, version = negotiated.version.as_str(), "connected");

    // Connected.
    let outbox = Arc::new(Outbox::new(config.flow.outbound_queue_frames));
    outbox.push(Outgoing::Frame(connect::connected_frame(
        &negotiated,
        &session_id,
        &config,
    )));
    let (socket, write_half) = stream.into_split();
    let writer_config = writer::WriterConfig {
        version: negotiated.version,
        // Beat at half the promised interval: a beat delayed by a busy machine still arrives
        // in time (clients tolerate little lateness: stomp.py allows x1.5).
        heartbeat: negotiated.send_every.map(|every| every / 2),
        write_timeout: Duration::from_millis(config.limits.write_timeout_ms),
    };
    let writer = tokio::spawn(
        writer::run(write_half, outbox.clone(), writer_config, broker.clone()).in_current_span(),
    );
    let receive_deadline = negotiated.expect_every.map(|every| {
        Duration::from_millis((every.as_millis() as f64 * config.heartbeat.grace_factor) as u64)
    });
    // From here on, whatever the session holds is handed back when it is dropped: at the end of
    // this function, or when the task is dropped after a panic (see `Drop for Session`).
    let mut session = Session {
        broker: broker.clone(),
        number,
        id: session_id,
        version: negotiated.version,
        principal,
        outbox: outbox.clone(),
        writer: WriterTask::new(writer),
        subscriptions: HashMap::new(),
        by_wire_id: HashMap::new(),
        next_key: 0,
        transactions: HashMap::new(),
        next_message: 0,
        destinations: HashMap::new(),
        temp_queues: HashMap::new(),
        store: broker.router.store().cloned(),
        client_id,
        durable_target: 0,
        deferred: VecDeque::new(),
    };
    let outcome = session
        .connected_loop(socket, reader, receive_deadline, &mut shutdown)
        .await;
    drop(session);
    drop(outcome);
}

/// Validates the first frame and authenticates.
async fn accept_connect(
    frame: &Frame,
    broker: &Broker,
    peer: SocketAddr,
) -> Result<(connect::Negotiated, Principal), SessionError> {
    if !matches!(frame.command, Command::Connect | Command::Stomp) {
        return Err(client_error(format!(
            "expected CONNECT or STOMP as the first frame, got {}",
            frame.command.as_str()
        ))
        .with_receipt(frame.get(b"receipt")));
    }
    let negotiated = connect::negotiate(frame, &broker.config)?;
    let plugins = broker.policy.host();
    let principal = connect::authenticate(frame, &broker.config, &plugins, peer).await?;
    Ok((negotiated, principal))
}

/// Resolves when the store's durable sequence number moves (never without a store).
async fn store_advanced(
    durable: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match durable {
        Some(durable) => durable.changed().await,
        None => std::future::pending().await,
    }
}

/// Reads until one frame is decoded; `None` on a clean EOF before any frame.
async fn read_frame(
    stream: &mut TcpStream,
    reader: &mut FrameReader,
) -> Result<Option<Frame>, SessionError> {
    loop {
        if let Some(frame) = reader.next_frame()? {
            return Ok(Some(frame));
        }
        if reader.read_from(stream).await? == 0 {
            return Ok(None);
        }
    }
}

/// The connection's writer task, stopped before the session hands back what it held.
struct WriterTask {
    handle: tokio::task::JoinHandle<writer::WriterExit>,
    done: bool,
}

impl WriterTask {
    fn new(handle: tokio::task::JoinHandle<writer::WriterExit>) -> WriterTask {
        WriterTask {
            handle,
            done: false,
        }
    }

    /// Resolves when the writer ended by itself (socket failure or stopped).
    async fn ended(&mut self) {
        if !self.done {
            let _ = (&mut self.handle).await;
            self.done = true;
        }
    }

    /// Waits up to `wait` for the writer to flush and close, then stops it. The writer must be
    /// gone before unacked messages are handed back, so nothing it already wrote is redelivered.
    async fn finish(&mut self, wait: Duration) {
        if self.done {
            return;
        }
        if tokio::time::timeout(wait, &mut self.handle).await.is_err() {
            self.handle.abort();
            let _ = (&mut self.handle).await;
        }
        self.done = true;
    }

    /// Stops the writer without waiting (a session dropped without finishing it: a panic).
    fn abort(&mut self) {
        if !self.done {
            self.handle.abort();
            self.done = true;
        }
    }
}

/// Reads and discards until EOF, a time limit or a byte limit.
async fn linger(mut reader: OwnedReadHalf) {
    let mut scratch = vec![0u8; 16 * 1024];
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + LINGER;
    while total < LINGER_BYTES {
        match tokio::time::timeout_at(deadline, reader.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}

/// Logs and counts a session-ending error.
fn report(broker: &Broker, err: &SessionError) {
    match err {
        SessionError::Io(err) => debug!(%err, "connection failed"),
        SessionError::Shutdown => debug!("closed for shutdown"),
        SessionError::SlowConsumer => {
            broker
                .stats
                .slow_consumer_disconnects
                .fetch_add(1, Ordering::Relaxed);
            info!("disconnected as a slow consumer");
        }
        SessionError::HeartbeatTimeout(_) => {
            broker
                .stats
                .heartbeat_timeouts
                .fetch_add(1, Ordering::Relaxed);
            info!(%err, "heart-beat timeout");
        }
        _ => {
            broker.stats.client_errors.fetch_add(1, Ordering::Relaxed);
            debug!(%err, "client error");
        }
    }
}

/// A subscription as the session holds it.
struct SessionSubscription {
    handle: Arc<Subscription>,
    /// The topic of a topic subscription (to leave it on UNSUBSCRIBE).
    topic: Option<Arc<crate::router::Topic>>,
}

/// The state of one connected session.
pub(crate) struct Session {
    broker: Arc<Broker>,
    number: u64,
    /// The CONNECTED `session` value; also the prefix of this session's message ids.
    id: Arc<str>,
    version: Version,
    principal: Principal,
    outbox: Arc<Outbox>,
    /// The task writing to the socket.
    writer: WriterTask,
    /// By connection-local key (the first part of a 1.2 `ack` value).
    subscriptions: HashMap<u32, SessionSubscription>,
    /// SUBSCRIBE `id` → key. 1.0 subscriptions without an id are keyed by destination here.
    by_wire_id: HashMap<Bytes, u32>,
    next_key: u32,
    transactions: HashMap<Bytes, Transaction>,
    next_message: u64,
    /// Destinations this session resolved before (so publishing takes no shared lock).
    destinations: HashMap<Bytes, Destination>,
    /// This connection's temp queues: local name → (global reply name, queue).
    temp_queues: HashMap<Bytes, (Bytes, Arc<Queue>)>,
    /// CONNECT's `client-id`: with a subscription name, it names a durable subscription.
    client_id: Option<Bytes>,
    /// The message store, when persistent messages are journaled.
    store: Option<Arc<Store>>,
    /// The store sequence number this session's frames so far may have journaled up to: a
    /// RECEIPT waits until the store is durable that far.
    durable_target: u64,
    /// RECEIPTs waiting for the store, with the sequence number each waits for.
    deferred: VecDeque<(u64, Outgoing)>,
}

/// A session hands back what it held however it ends: returning normally, or dropped with its
/// task after a panic (tokio drops a panicked task's future, and with it this state). The
/// broker and every other client carry on either way.
impl Drop for Session {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// What the loop does after a frame.
enum Flow {
    Continue,
    /// DISCONNECT was handled: flush and close.
    Disconnect,
}

impl Session {
    async fn connected_loop(
        &mut self,
        mut socket: OwnedReadHalf,
        mut reader: FrameReader,
        receive_deadline: Option<Duration>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let outbox = self.outbox.clone();
        let mut durable = self.store.as_ref().map(|store| store.watch_durable());
        // A frame (or decoding error) read past the end of a batch of SENDs, handled next.
        let mut next: Option<Result<Option<Frame>, crate::codec::DecodeError>> = None;
        let result: Result<(), SessionError> = loop {
            // Frames already buffered first (many frames can arrive in one read).
            match next.take().unwrap_or_else(|| reader.next_frame()) {
                Ok(Some(frame)) => {
                    let flow = match self.batch_plugins(&frame) {
                        // Consecutive intercepted SENDs already buffered go through the
                        // plugins together (see `send_batch`).
                        Some(plugins) => {
                            let frames =
                                send_batch::take_batch(frame, &mut reader, &plugins, &mut next);
                            self.handle_send_batch(&plugins, frames).await
                        }
                        None => self.handle_one(frame).await,
                    };
                    match flow {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Disconnect) => break Ok(()),
                        Err(err) => break Err(err),
                    }
                    // A client that sends faster than it reads its receipts is paused here.
                    if outbox.len() >= self.broker.config.flow.outbound_queue_frames {
                        tokio::select! {
                            _ = outbox.wait_for_room() => {}
                            _ = outbox.slow_consumer() => break Err(SessionError::SlowConsumer),
                            _ = self.writer.ended() => {
                                break Err(SessionError::Io(std::io::ErrorKind::BrokenPipe.into()));
                            }
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(err) => break Err(err.into()),
            }
            let read = async {
                match receive_deadline {
                    Some(limit) => tokio::time::timeout(limit, reader.read_from(&mut socket))
                        .await
                        .map_err(|_| SessionError::HeartbeatTimeout(limit.as_millis() as u64))?
                        .map_err(SessionError::from),
                    None => reader
                        .read_from(&mut socket)
                        .await
                        .map_err(SessionError::from),
                }
            };
            tokio::select! {
                read = read => match read {
                    Ok(0) => break Err(SessionError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    Ok(_) => {}
                    Err(err) => break Err(err),
                },
                _ = outbox.slow_consumer() => break Err(SessionError::SlowConsumer),
                _ = shutdown.changed() => break Err(SessionError::Shutdown),
                _ = self.writer.ended() => {
                    break Err(SessionError::Io(std::io::ErrorKind::BrokenPipe.into()));
                }
                changed = store_advanced(&mut durable), if !self.deferred.is_empty() => {
                    if changed.is_ok() {
                        self.release_receipts();
                    }
                }
            }
        };

        let write_timeout = Duration::from_millis(self.broker.config.limits.write_timeout_ms);
        let mut linger_after = false;
        // RECEIPTs held for the store go out before whatever ends the connection.
        if !self.deferred.is_empty() {
            self.wait_durable(write_timeout).await;
        }
        match &result {
            Ok(()) => {
                // DISCONNECT: its RECEIPT (if any) is queued; flush and close.
                outbox.push(Outgoing::Close);
                self.writer.finish(write_timeout).await;
            }
            Err(err) => {
                report(&self.broker, err);
                if matches!(err, SessionError::SlowConsumer) {
                    // The ERROR queues behind everything the client did not read yet: it gets
                    // a short time to get through, then the connection is cut.
                    if let Some(frame) = err.to_frame() {
                        outbox.push(Outgoing::Frame(frame));
                    }
                    outbox.push(Outgoing::Close);
                    self.writer.finish(LINGER).await;
                } else if let Some(frame) = err.to_frame() {
                    outbox.push(Outgoing::Frame(frame));
                    outbox.push(Outgoing::Close);
                    self.writer.finish(write_timeout).await;
                    linger_after = true;
                } else {
                    outbox.push(Outgoing::Close);
                    self.writer.finish(LINGER).await;
                }
            }
        }
        // The writer is done: what the session held goes to others now, not after lingering.
        self.teardown();
        if linger_after {
            linger(socket).await;
        }
        result
    }

    /// Hands back everything the connection held: unacked messages go to other consumers,
    /// transactions are aborted, temp queues removed. Runs when the connection ends and again
    /// (finding nothing left) when the session is dropped, which after a panic is the only time.
    fn teardown(&mut self) {
        // Nothing the writer still does may overlap with redelivery (normally it has finished
        // already; after a panic it is stopped here).
        self.writer.abort();
        let view = self.subscriptions_view();
        for (_, transaction) in self.transactions.drain() {
            transaction.abort(&view);
        }
        let keys: Vec<u32> = self.subscriptions.keys().copied().collect();
        for key in keys {
            self.remove_subscription(key);
        }
        for (_, (global, _queue)) in self.temp_queues.drain() {
            self.broker.router.remove_temp_queue(&global);
        }
        // Anything the writer never took is dropped; queue deliveries among it were requeued
        // above with their subscriptions.
        drop(self.outbox.drain());
    }

    /// Queues a RECEIPT, holding it back while frames before it are not durable yet.
    fn send_receipt(&mut self, receipt: Outgoing) {
        // Nothing journaled by this session, or nothing since the last durable point: at once.
        if self.deferred.is_empty() && self.durable_target == 0 {
            self.outbox.push(receipt);
            return;
        }
        self.release_receipts();
        let durable = self.store.as_ref().map_or(0, |store| store.durable());
        if self.deferred.is_empty() && self.durable_target <= durable {
            self.outbox.push(receipt);
        } else {
            self.deferred.push_back((self.durable_target, receipt));
        }
    }

    /// Sends the held RECEIPTs whose frames are durable now, in order.
    fn release_receipts(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let durable = store.durable();
        while self.deferred.front().is_some_and(|(at, _)| *at <= durable) {
            let (_, receipt) = self.deferred.pop_front().expect("checked above");
            self.outbox.push(receipt);
        }
    }

    /// The store's sequence number before a frame that may journal (0 without a store).
    fn store_mark(&self) -> u64 {
        self.store.as_ref().map_or(0, |store| store.appended())
    }

    /// After a frame that may journal: if anything was appended since `mark` (by this frame,
    /// or by another connection meanwhile: the sequence cannot tell), later RECEIPTs wait until
    /// the store is durable that far. When nothing was appended, nothing waits.
    fn note_journaled(&mut self, mark: u64) {
        if let Some(store) = &self.store {
            let now = store.appended();
            if now > mark {
                self.durable_target = self.durable_target.max(now);
            }
        }
    }

    /// Waits (up to `wait`; not at all for a failed store, which never gets there) until what
    /// this session's frames journaled is durable, and sends the held RECEIPTs. Those still
    /// not durable then are never sent: the client must not count on them.
    async fn wait_durable(&mut self, wait: Duration) {
        if let Some(store) = &self.store {
            let target = self.durable_target;
            if target > store.durable() && store.failure().is_none() {
                let mut durable = store.watch_durable();
                let _ = tokio::time::timeout(wait, durable.wait_for(|at| *at >= target)).await;
            }
        }
        self.release_receipts();
        self.deferred.clear();
    }

    fn subscriptions_view(&self) -> HashMap<u32, Arc<Subscription>> {
        self.subscriptions
            .iter()
            .map(|(k, s)| (*k, s.handle.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
