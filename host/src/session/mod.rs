//! One task per client connection: the STOMP session state machine.
//!
//! ```text
//! AwaitingConnect ──CONNECT/STOMP──► Connected ──DISCONNECT / ERROR / EOF / expiry──► Closing
//!                                     │    ▲
//!                                     └────┘ CONNECT/STOMP with reauth:true (`reauth`)
//! ```
//!
//! The session task reads and decodes frames and handles them one at a time (in order, so a
//! RECEIPT means everything before it is done); a separate writer task ([`writer`]) owns the
//! socket's write half and drains the connection's [`Outbox`]. On the way out the session
//! returns unacked queue messages for redelivery, aborts open transactions and removes its
//! temporary queues, whatever the reason it ended.

mod acks;
mod composite;
mod connect;
mod consumer_headers;
mod error;
mod error_code;
mod handlers;
mod reauth;
mod receipts;
mod send_batch;
mod send_headers;
mod send_plain;
mod send_remote;
mod subscribe;
mod transaction;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::broker::{Broker, BrokerStats};
use crate::codec::{encode_frame, Command, Frame, FrameReader, Version};
use crate::connection_registry::{ConnectionInfo, Login};
use crate::connection_stats::{classify, ByteMeter, CloseReason};
use crate::listen::{FrameWriter, Peer, Transport};
use crate::plugin::{CallContext, Principal};
use crate::router::{Connection, Outbox, Outgoing};
use crate::vhost::Vhost;

pub use connect::capabilities;
pub use error::SessionError;
pub use error_code::ErrorCode;

use error::client_error;
use receipts::Receipts;
use transaction::Transaction;

/// How long a closing connection keeps reading (and discarding) so that its last ERROR or
/// RECEIPT is not destroyed by a TCP reset: a few round trips on any real network, short
/// enough that a client that keeps sending cannot hold the connection.
const LINGER: Duration = Duration::from_millis(500);
/// At most this much is read and discarded while lingering (a frame in flight, not a stream).
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// Serves one client connection to the end, whichever listener accepted it.
pub async fn serve<T: Transport>(
    stream: T,
    peer: Peer,
    broker: Arc<Broker>,
    number: u64,
    shutdown: watch::Receiver<bool>,
) {
    let span =
        tracing::info_span!("conn", n = number, peer = %peer.address, via = peer.listener.as_str());
    let session = async move {
        broker
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);
        // Counted down when the session ends, however it ends (a panic included).
        let mut open = OpenConnection::count(&broker.stats, peer.listener.as_str());
        // Listed for the console until then, too.
        let registered = broker
            .registry
            .register(number, peer.listener.as_str(), peer.address);
        info!("connection opened");
        open.reason = run(stream, peer, &broker, number, &registered.info, shutdown).await;
        drop(registered);
        info!(reason = open.reason.as_str(), "connection closed");
    };
    crate::logging::in_connection(span, session).await
}

/// One open connection in [`BrokerStats::connections_open`] and its listener's count, for as
/// long as it lives; counted as closed for `reason` (an error, if the session panicked).
struct OpenConnection<'a> {
    stats: &'a BrokerStats,
    listener: &'static str,
    reason: CloseReason,
}

impl<'a> OpenConnection<'a> {
    fn count(stats: &'a BrokerStats, listener: &'static str) -> OpenConnection<'a> {
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        stats.connections.opened(listener);
        OpenConnection {
            stats,
            listener,
            reason: CloseReason::Error,
        }
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        self.stats.connections.closed(self.listener, self.reason);
    }
}

async fn run<T: Transport>(
    stream: T,
    peer: Peer,
    broker: &Arc<Broker>,
    number: u64,
    registered: &Arc<ConnectionInfo>,
    mut shutdown: watch::Receiver<bool>,
) -> CloseReason {
    let config = broker.config.clone();
    let (mut socket, write_half) = stream.split();
    // Until it is authenticated, a connection may only send a small CONNECT frame.
    let mut reader = FrameReader::new(config.limits.connect_codec_limits())
        .charged_to(broker.vhosts.budget().clone());

    // AwaitingConnect.
    let connect_timeout = Duration::from_millis(config.limits.connect_timeout_ms);
    let first = tokio::select! {
        first = tokio::time::timeout(connect_timeout, read_frame(&mut socket, &mut reader)) => {
            match first {
                Ok(Ok(Some(frame))) => Ok(connect::trimmed_if_1_0(frame)),
                Ok(Ok(None)) => return CloseReason::Client,
                Ok(Err(err)) => Err(err),
                Err(_) => Err(SessionError::ConnectTimeout(config.limits.connect_timeout_ms)),
            }
        }
        _ = shutdown.changed() => Err(SessionError::Shutdown),
        _ = registered.closed() => Err(SessionError::ClosedByAdmin),
    };
    let session_id: Arc<str> = Arc::from(format!("{}-{number}", broker.instance));
    let mut client_id = None;
    let mut login_refused = false;
    let connected = match first {
        Ok(frame) => {
            client_id = frame.get(b"client-id").cloned();
            // Once per connection (plugin calls among it): behind a box, out of this future.
            let accept: RareFuture<'_, _> = Box::pin(accept_connect(
                &frame,
                broker,
                &peer,
                &session_id,
                &mut login_refused,
            ));
            accept.await
        }
        Err(err) => Err(err),
    };
    let (negotiated, admitted, vhost, plugin_context) = match connected {
        Ok(ok) => ok,
        Err(err) => {
            let reason = report(broker, &err, login_refused);
            if let Some(frame) = err.to_frame() {
                send_error_and_close(socket, write_half, &frame).await;
            }
            return reason;
        }
    };
    let principal = admitted.principal;
    reader.set_version(negotiated.version);
    reader.set_limits(config.limits.codec_limits());
    let account = broker.vhosts.budget().account(&principal.name);
    reader.set_account(account.clone());
    info!(session = %session_id, principal = %principal.name, vhost = %vhost.name, version = negotiated.version.as_str(), "connected");
    registered.set_vhost(vhost.name.to_string());
    registered.set_login(Login {
        user: principal.name.to_string(),
        version: negotiated.version.as_str(),
        session: session_id.to_string(),
    });

    // Connected.
    let outbox = Arc::new(Outbox::new(config.flow.outbound_queue_frames));
    outbox.push(Outgoing::Frame(connect::connected_frame(
        &negotiated,
        &session_id,
        &config,
        &broker.capabilities,
    )));
    let writer_config = writer::WriterConfig {
        version: negotiated.version,
        // Beat at half the promised interval: a beat delayed by a busy machine still arrives
        // in time (clients tolerate little lateness: stomp.py allows x1.5).
        heartbeat: negotiated.send_every.map(|every| every / 2),
        write_timeout: Duration::from_millis(config.limits.write_timeout_ms),
        connection: Some(registered.clone()),
    };
    let writer = tokio::spawn(crate::logging::in_current_connection(writer::run(
        write_half,
        outbox.clone(),
        writer_config,
        broker.clone(),
    )));
    let receive_deadline = negotiated.expect_every.map(|every| {
        Duration::from_millis((every.as_millis() as f64 * config.heartbeat.grace_factor) as u64)
    });
    // From here on, whatever the session holds is handed back when it is dropped: at the end of
    // this function, or when the task is dropped after a panic (see `Drop for Session`).
    let mut session = Session {
        broker: broker.clone(),
        id: session_id.clone(),
        version: negotiated.version,
        principal,
        expires: reauth::deadline(admitted.expires_at_ms),
        reauth_rate: reauth::ReauthRate::new(),
        peer,
        negotiated,
        outbox: outbox.clone(),
        writer: WriterTask::new(writer),
        conn: Connection::new(session_id),
        transactions: HashMap::new(),
        next_message: 0,
        client_id,
        receipts: Receipts::new(outbox.clone(), vhost.router.store().cloned()),
        pipeline: None,
        account,
        _member: crate::vhost::Member::enter(&vhost),
        vhost,
        registered: registered.clone(),
        plugin_context,
    };
    let outcome = session
        .connected_loop(socket, reader, receive_deadline, &mut shutdown)
        .await;
    drop(session);
    outcome.map_or_else(|err| classify(&err, false).0, |()| CloseReason::Client)
}

/// Validates the first frame, selects its virtual host (from `host`) and authenticates with
/// that vhost's plugins. An address with recent failed logins waits before its attempt is
/// checked (100 ms doubling per failure, up to a configured maximum); an unknown vhost counts
/// as a failed login.
async fn accept_connect(
    frame: &Frame,
    broker: &Broker,
    peer: &Peer,
    session_id: &Arc<str>,
    login_refused: &mut bool,
) -> Result<
    (
        connect::Negotiated,
        connect::Admission,
        Arc<Vhost>,
        CallContext,
    ),
    SessionError,
> {
    if !matches!(frame.command, Command::Connect | Command::Stomp) {
        return Err(client_error(
            ErrorCode::ProtocolExpectedConnect,
            format!(
                "expected CONNECT or STOMP as the first frame, got {}",
                frame.command.as_str()
            ),
        )
        .with_receipt(frame.get(b"receipt")));
    }
    let negotiated = connect::negotiate(frame, &broker.config)?;
    let ip = peer.address.ip();
    let delay = broker.addresses.login_delay(ip);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let selected = broker
        .vhosts
        .select(frame.get(b"host").map(|h| &h[..]))
        .map_err(|err| client_error(ErrorCode::AuthUnknownVhost, err.to_string()));
    let authenticated = match selected {
        Ok(vhost) => {
            // Who the plugin calls of this session are for, from its authentication on.
            let context = CallContext::new(vhost.name.clone(), session_id.clone());
            let plugins = broker.policy.host_for(vhost.index);
            connect::authenticate(frame, &broker.config, &plugins, peer, &context, false)
                .await
                .map(|admitted| (admitted, vhost.clone(), context))
        }
        Err(err) => Err(err),
    };
    match authenticated {
        Ok((admitted, vhost, context)) => {
            broker.addresses.login_succeeded(ip);
            Ok((negotiated, admitted, vhost, context))
        }
        Err(err) => {
            broker.addresses.login_failed(ip);
            broker.stats.failed_logins.fetch_add(1, Ordering::Relaxed);
            *login_refused = true;
            Err(err)
        }
    }
}

/// Refuses a connection before any session: an ERROR with `message`, then a close.
pub async fn refuse<T: Transport>(stream: T, message: String) {
    let code = ErrorCode::LimitConnections;
    info!(kind = "refused-connection", code = code.as_str(), error = %message, "ERROR sent");
    let frame = error::client_error(code, message)
        .to_frame()
        .expect("a client error has a frame");
    let (reader, writer) = stream.split();
    send_error_and_close(reader, writer, &frame).await;
}

/// Writes an ERROR (1.0 framing: nothing was negotiated), closes, and lingers briefly so the
/// ERROR is not destroyed by a reset.
async fn send_error_and_close<R: AsyncRead + Unpin, W: FrameWriter>(
    reader: R,
    mut writer: W,
    frame: &Frame,
) {
    let mut out = BytesMut::new();
    encode_frame(frame, Version::V1_0, &mut out);
    let mut chunks = vec![out.freeze()];
    let ends = if W::MESSAGE_PER_FRAME {
        vec![1]
    } else {
        Vec::new()
    };
    let _ = tokio::time::timeout(LINGER, writer.write_frames(&mut chunks, &ends)).await;
    let _ = tokio::time::timeout(LINGER, writer.close()).await;
    linger(reader).await;
}

/// Reads until one frame is decoded; `None` on a clean EOF before any frame.
async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
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

/// The earlier of two optional times.
fn earliest(
    a: Option<tokio::time::Instant>,
    b: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads and discards until EOF, a time limit or a byte limit.
async fn linger<R: AsyncRead + Unpin>(mut reader: R) {
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

/// Logs and counts a session-ending error; returns why the connection ends.
fn report(broker: &Broker, err: &SessionError, login_refused: bool) -> CloseReason {
    let (reason, error) = classify(err, login_refused);
    if let (Some(kind), Some(code)) = (error, err.code()) {
        broker.stats.connections.error_sent(kind);
        broker.stats.connections.error_code_sent(code);
        let code = err.wire_code().unwrap_or(code.as_str());
        info!(kind = kind.as_str(), code, error = %err, "ERROR sent");
    }
    match err {
        SessionError::Io(err) => debug!(%err, "connection failed"),
        SessionError::Shutdown => debug!("closed for shutdown"),
        SessionError::ClosedByAdmin => info!("closed by the administrator"),
        SessionError::SlowConsumer => {
            broker
                .stats
                .slow_consumer_disconnects
                .fetch_add(1, Ordering::Relaxed);
            info!("disconnected as a slow consumer");
        }
        SessionError::Idle(_) => {
            broker.stats.idle_closes.fetch_add(1, Ordering::Relaxed);
            info!(%err, "idle connection closed");
        }
        SessionError::CredentialsExpired => {
            broker
                .stats
                .credential_expiries
                .fetch_add(1, Ordering::Relaxed);
            info!("credentials expired");
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
    reason
}

/// The state of one connected session.
pub(crate) struct Session {
    broker: Arc<Broker>,
    /// The CONNECTED `session` value; also the prefix of this session's message ids.
    id: Arc<str>,
    version: Version,
    /// Who the client is: its first login's principal, or its last re-authentication's.
    principal: Principal,
    /// When the login ends (the authenticate plugin's expiry), on the session's timer.
    expires: Option<tokio::time::Instant>,
    /// Re-authentications in the current minute (`limits.max_reauth_per_minute`).
    reauth_rate: reauth::ReauthRate,
    /// What the listener knows of the client (for re-authentication).
    peer: Peer,
    /// What CONNECT settled (a re-authentication's CONNECTED repeats it).
    negotiated: connect::Negotiated,
    outbox: Arc<Outbox>,
    /// The task writing to the socket.
    writer: WriterTask,
    /// The router's state for this connection: subscriptions, temp queues, resolved names.
    conn: Connection,
    transactions: HashMap<Bytes, Transaction>,
    next_message: u64,
    /// CONNECT's `client-id`: with a subscription name, it names a durable subscription.
    client_id: Option<Bytes>,
    /// RECEIPTs and the durability they wait for.
    receipts: Receipts,
    /// Cluster mode: this connection's `/queue/` SENDs JetStream has not acknowledged yet
    /// (made at the first; see `send_remote`).
    pipeline: Option<Box<crate::cluster::pipeline::PublishPipeline>>,
    /// The principal's share of the memory budget.
    account: Arc<crate::budget::Account>,
    /// The virtual host CONNECT selected: its router holds every destination this session
    /// names, its plugin chains (`vhost.index`) judge its frames, and its name
    /// (`vhost.name`) is what plugins are told (through `plugin_context`).
    vhost: Arc<Vhost>,
    /// Counts this connection in its vhost while the session lives.
    _member: crate::vhost::Member,
    /// Its entry in the broker's connection registry (bytes, the administrator's close).
    registered: Arc<ConnectionInfo>,
    /// Who this session's plugin calls are for (virtual host, session id).
    plugin_context: CallContext,
}

/// A session hands back what it held however it ends: returning normally, or dropped with its
/// task after a panic (tokio drops a panicked task's future, and with it this state). The
/// broker and every other client carry on either way.
impl Drop for Session {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Which silence ends a connection: no heart-beat within the negotiated time, or (without
/// heart-beats and subscriptions) the idle limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Silence {
    Heartbeat,
    Idle,
}

/// The future of something rare beside SEND and ACK (once per connection, or a frame such as
/// SUBSCRIBE), boxed and called through a pointer so that its code and state stay out of the
/// futures every frame runs through (`connected_loop`, `dispatch`).
type RareFuture<'a, T> = futures_util::future::BoxFuture<'a, Result<T, SessionError>>;

/// A frame and the charge of its bytes to the memory budget.
pub(crate) type Charged = (Frame, crate::budget::Charge);

/// What the loop does after a frame.
#[derive(Debug)]
enum Flow {
    Continue,
    /// DISCONNECT (with its `receipt`): flush, release, answer, close.
    Disconnect(Option<Bytes>),
}

impl Session {
    async fn connected_loop<R: AsyncRead + Unpin + Send>(
        &mut self,
        mut socket: R,
        mut reader: FrameReader,
        receive_deadline: Option<Duration>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        let outbox = self.outbox.clone();
        let broker = self.broker.clone();
        let registered = self.registered.clone();
        let mut received = ByteMeter::new(&broker.stats.connections.bytes_in)
            .with_connection(&registered.bytes_in);
        // Pinned once: each poll is then one atomic load.
        let closed_by_admin = registered.closed();
        tokio::pin!(closed_by_admin);
        let idle_limit = Some(self.broker.config.limits.idle_timeout_ms)
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        // The connection's one timer: the silence limits (see the wait below) and the login's
        // expiry; the limit and the expiry it is set for.
        let silence = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(silence);
        let mut armed: Option<(Duration, Silence)> = None;
        let mut armed_expiry: Option<tokio::time::Instant> = None;
        // When the current wait for bytes began (`None` between waits).
        let mut waiting_since: Option<tokio::time::Instant> = None;
        // A frame (or decoding error) read past the end of a batch of SENDs, handled next.
        let mut next: Option<Result<Option<Charged>, crate::codec::DecodeError>> = None;
        let result: Result<Option<Bytes>, SessionError> = loop {
            // Frames already buffered first (many frames can arrive in one read).
            match next.take().unwrap_or_else(|| reader.next_charged()) {
                Ok(Some(charged)) => {
                    let flow = match self.batch_plugins(&charged.0) {
                        // Consecutive intercepted SENDs already buffered go through the
                        // plugins together (see `send_batch`).
                        Some(plugins) => {
                            let frames =
                                send_batch::take_batch(charged, &mut reader, &plugins, &mut next);
                            self.handle_send_batch(&plugins, frames).await
                        }
                        None => self.handle_one(charged).await,
                    };
                    match flow {
                        Ok(Flow::Continue) => {}
                        Ok(Flow::Disconnect(receipt)) => break Ok(receipt),
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
            // Without heart-beats from the client, a connection that holds no subscription is
            // closed once it has been silent for the idle limit.
            let idle = (receive_deadline.is_none() && self.conn.subscription_count() == 0)
                .then_some(idle_limit)
                .flatten();
            let limit = match (receive_deadline, idle) {
                (Some(limit), _) => Some((limit, Silence::Heartbeat)),
                (None, Some(limit)) => Some((limit, Silence::Idle)),
                (None, None) => None,
            };
            // The wait for the next bytes may last `limit`. One timer serves many waits: it is
            // set again only when it fires early (the connection was busy meanwhile) or when
            // the limit changed, so a busy connection does not register a timer per read.
            // The wait starts now unless it is the same wait going on (the timer fired early).
            // The login's expiry (a re-authentication may have moved it) shares the timer.
            let since = *waiting_since.get_or_insert_with(tokio::time::Instant::now);
            if limit != armed || self.expires != armed_expiry {
                if let Some(due) = earliest(limit.map(|(limit, _)| since + limit), self.expires) {
                    silence.as_mut().reset(due);
                }
                armed = limit;
                armed_expiry = self.expires;
            }
            tokio::select! {
                read = reader.read_from(&mut socket) => match read {
                    Ok(0) => break Err(SessionError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    Ok(n) => {
                        received.add(n);
                        waiting_since = None;
                    }
                    Err(err) => break Err(err.into()),
                },
                () = &mut silence, if armed.is_some() || armed_expiry.is_some() => {
                    let now = tokio::time::Instant::now();
                    if armed_expiry.is_some_and(|at| now >= at) {
                        break Err(SessionError::CredentialsExpired);
                    }
                    let due = armed.map(|(limit, _)| since + limit);
                    if let (Some((limit, kind)), Some(due)) = (armed, due) {
                        if now >= due {
                            let ms = limit.as_millis() as u64;
                            break Err(match kind {
                                Silence::Heartbeat => SessionError::HeartbeatTimeout(ms),
                                Silence::Idle => SessionError::Idle(ms),
                            });
                        }
                    }
                    if let Some(due) = earliest(due, armed_expiry) {
                        silence.as_mut().reset(due);
                    }
                }
                _ = outbox.slow_consumer() => break Err(SessionError::SlowConsumer),
                _ = shutdown.changed() => break Err(SessionError::Shutdown),
                _ = &mut closed_by_admin => break Err(SessionError::ClosedByAdmin),
                _ = self.writer.ended() => {
                    break Err(SessionError::Io(std::io::ErrorKind::BrokenPipe.into()));
                }
                changed = self.receipts.store_advanced(), if self.receipts.holding() => {
                    if changed.is_ok() {
                        self.receipts.release();
                    }
                }
                // The oldest SEND published to the cluster without waiting is acknowledged
                // (or, tried twice, failed: the connection ends).
                stored = send_remote::settle_oldest(&mut self.pipeline), if send_remote::sending(&self.pipeline) => {
                    if let Err(unstored) = stored {
                        let error: futures_util::future::BoxFuture<'_, SessionError> =
                            Box::pin(self.unstored_error(unstored));
                        break Err(error.await);
                    }
                }
            }
        };
        // Once per connection: behind a box, so that its code and state stay out of this
        // future, which every frame's wake-up runs through.
        let end: RareFuture<'_, ()> = Box::pin(self.end_connection(socket, result));
        end.await
    }

    /// How the connection ends after the loop: held RECEIPTs, the DISCONNECT's answer or the
    /// ERROR, what the session held released, the socket closed (see `connected_loop`).
    async fn end_connection<R: AsyncRead + Unpin + Send>(
        &mut self,
        socket: R,
        result: Result<Option<Bytes>, SessionError>,
    ) -> Result<(), SessionError> {
        let outbox = self.outbox.clone();
        let write_timeout = Duration::from_millis(self.broker.config.limits.write_timeout_ms);
        let mut linger_after = false;
        // RECEIPTs held for the store go out before whatever ends the connection.
        if self.receipts.holding() {
            self.receipts.flush(write_timeout).await;
        }
        match &result {
            Ok(receipt) => {
                // DISCONNECT: everything before it reaches the socket, then what the session
                // held is released, and only then its RECEIPT goes out: a client that
                // reconnects after it finds its durable subscriptions free and its unacked
                // messages back in their queues.
                self.drain_and_release(write_timeout).await;
                if let Some(receipt) = receipt.clone() {
                    outbox.push(handlers::receipt_frame(receipt));
                }
                outbox.push(Outgoing::Close);
                self.writer.finish(write_timeout).await;
            }
            Err(err) => {
                report(&self.broker, err, false);
                if matches!(err, SessionError::SlowConsumer) {
                    // The ERROR queues behind everything the client did not read yet: it gets
                    // a short time to get through, then the connection is cut.
                    if let Some(frame) = err.to_frame() {
                        outbox.push(Outgoing::Frame(frame));
                    }
                    outbox.push(Outgoing::Close);
                    self.writer.finish(LINGER).await;
                } else if let Some(frame) = err.to_frame() {
                    // As for DISCONNECT: what the session held is released before the ERROR
                    // goes out, so whoever reacts to it finds the messages back in place. A
                    // client that does not read gets a short wait only.
                    self.drain_and_release(LINGER).await;
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
        result.map(drop)
    }

    /// Hands back everything the connection held: unacked messages go to other consumers,
    /// transactions are aborted, temp queues removed. Runs when the connection ends and again
    /// (finding nothing left) when the session is dropped, which after a panic is the only time.
    fn teardown(&mut self) {
        // Nothing the writer still does may overlap with redelivery (normally it has finished
        // already; after a panic it is stopped here).
        self.writer.abort();
        self.release();
        // Anything the writer never took is dropped; queue deliveries among it were requeued
        // above with their subscriptions.
        drop(self.outbox.drain());
    }

    /// Waits (up to `wait`) until the writer has written everything queued so far, then
    /// releases what the session held (deliveries queued meanwhile are not written).
    async fn drain_and_release(&mut self, wait: Duration) {
        let (reached, drained) = tokio::sync::oneshot::channel();
        self.outbox.push(Outgoing::Drain(reached));
        let _ = tokio::time::timeout(wait, drained).await;
        self.release();
    }

    /// Aborts the open transactions and releases the router's state of this connection
    /// (subscriptions end, unacked messages go back, temp queues are removed).
    fn release(&mut self) {
        for (_, transaction) in self.transactions.drain() {
            transaction.abort(&self.conn);
        }
        self.vhost.router.disconnect(&mut self.conn);
    }
}

#[cfg(test)]
mod tests;
