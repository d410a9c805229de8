//! Handlers for the frames of a connected session: the dispatch of every frame and SEND (with
//! the send plugins); SUBSCRIBE and UNSUBSCRIBE are in `subscribe.rs`, ACK, NACK and
//! transactions in `acks.rs`. Each returns a client error (turned into an ERROR frame by the
//! caller) or lets the loop carry on; RECEIPTs are queued after the frame is done.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::send_headers::Mentions;
use crate::budget::Charge;
use crate::codec::{is_server_owned, Command, Frame, Header, Version};
use crate::plugin::{PluginHost, PluginMessage, Rejection, SendOutcome};
use crate::router::props::PropsError;
use crate::router::{
    check_send_name, publish, Destination, Message, Outgoing, Props, Published, QueueArgs,
    RouteError, Schedule,
};
use crate::text::shown;

use super::error::{client_error, plugin_error, SessionError};
use super::error_code::{self, ErrorCode};
use super::subscribe::durable_name_header;
use super::transaction::{Action, Transaction};
use super::{Charged, Flow, RareFuture, Session};

impl From<RouteError> for SessionError {
    fn from(err: RouteError) -> SessionError {
        client_error(error_code::route_code(&err), err.to_string())
    }
}

pub(super) fn required<'f>(frame: &'f Frame, name: &str) -> Result<&'f Bytes, SessionError> {
    frame.get(name.as_bytes()).ok_or_else(|| {
        client_error(
            ErrorCode::ProtocolMissingHeader,
            format!(
                "{} frame is missing the required '{name}' header",
                frame.command.as_str()
            ),
        )
    })
}

/// What a SEND carries past the send plugins (see [`Session::prepare_send`]).
pub(super) struct PreparedSend {
    pub(super) transaction_id: Option<Bytes>,
    pub(super) persistent: bool,
    /// The SEND's priority and message group; `None` once send plugins may have rewritten
    /// the headers (each routed copy is then read again).
    pub(super) props: Option<Props>,
    /// The delivery headers the SEND carries; `None`, like `props`, once send plugins ran.
    pub(super) mentions: Option<Mentions>,
    /// The SEND frame's share of the memory budget, passed on to the message.
    pub(super) charge: Charge,
}

impl PreparedSend {
    /// The send plugins ran: the routed copies' headers are read again for their priority
    /// and group.
    pub(super) fn through_plugins(self) -> PreparedSend {
        PreparedSend {
            props: None,
            mentions: None,
            ..self
        }
    }
}

impl From<PropsError> for SessionError {
    fn from(err: PropsError) -> SessionError {
        client_error(ErrorCode::ProtocolInvalidHeader, err.to_string())
    }
}

/// The error of a SEND a plugin rejected.
pub(super) fn rejected(rejection: &Rejection) -> SessionError {
    plugin_error(rejection, |reason| format!("message rejected: {reason}"))
}

pub(super) fn receipt_frame(receipt: Bytes) -> Outgoing {
    Outgoing::Frame(Frame::new(Command::Receipt).header("receipt-id", receipt))
}

impl Session {
    /// Handles one frame of a connected session; an error carries the frame's receipt. (One
    /// future, not a wrapper around another: every frame runs through it.)
    pub(super) async fn handle_one(
        &mut self,
        (frame, charge): Charged,
    ) -> Result<Flow, SessionError> {
        let receipt = frame.get(b"receipt").cloned();
        let with_receipt =
            |err: SessionError, receipt: &Option<Bytes>| err.with_receipt(receipt.as_ref());
        let mark = (self.receipts.journals() && may_journal(&frame)).then(|| self.receipts.mark());
        let command = frame.command;
        // What a RECEIPT, COMMIT or DISCONNECT answers for includes the SENDs before it that
        // went to the cluster without waiting (see `send_remote`).
        if self.pipeline.is_some()
            && (receipt.is_some() || matches!(command, Command::Commit | Command::Disconnect))
        {
            self.settle_sends()
                .await
                .map_err(|err| with_receipt(err, &receipt))?;
        }
        let flow = self.dispatch(frame, receipt.clone(), charge).await;
        if let Some(mark) = mark {
            self.receipts.note(mark);
        }
        let flow = flow.map_err(|err| with_receipt(err, &receipt))?;
        // SUBSCRIBE and DISCONNECT send their RECEIPTs themselves, at the right moment; a
        // re-authentication's CONNECT has none (CONNECTED answers it, as the spec says).
        let own_answer = matches!(
            command,
            Command::Subscribe | Command::Disconnect | Command::Connect | Command::Stomp
        );
        match receipt {
            Some(receipt) if !own_answer => {
                if command == Command::Send && self.pipeline.is_some() {
                    self.settle_sends()
                        .await
                        .map_err(|err| err.with_receipt(Some(&receipt)))?;
                }
                self.receipts.send(receipt_frame(receipt))
            }
            _ => {}
        }
        Ok(flow)
    }

    /// Runs one frame; SUBSCRIBE sends its own RECEIPT (`Flow::Continue` without one here).
    async fn dispatch(
        &mut self,
        frame: Frame,
        receipt: Option<Bytes>,
        charge: Charge,
    ) -> Result<Flow, SessionError> {
        match frame.command {
            Command::Send => {
                // The plain path inline (one future fewer per SEND than through a function of
                // its own); plugins, composites, transactions and schedules behind a box, so
                // that their code and state stay out of this future, which every frame runs
                // through (see `send_plain`: fewer instruction-cache misses per message).
                let (send, message) = self.prepare_send(frame, charge)?;
                // One plugin set for the whole send chain, even if a reload swaps it meanwhile.
                let plugins = self.broker.policy.host_for(self.vhost.index);
                let composite = crate::router::is_composite(&message.destination);
                if !composite && send.is_plain() && !plugins.intercepts_send(&message.destination) {
                    drop(plugins);
                    self.send_plain(send, message).await?;
                } else {
                    let general: RareFuture<'_, ()> =
                        Box::pin(self.send_general(plugins, composite, send, message));
                    general.await?;
                }
            }
            Command::Subscribe => {
                // Its RECEIPT must precede the subscription's first MESSAGE: sent inside.
                // SUBSCRIBE and COMMIT run behind a box: their code stays out of this
                // function's, which SEND and ACK run through for every message (fewer
                // instruction-cache misses per message), and their state out of its future.
                let subscribe: RareFuture<'_, ()> =
                    Box::pin(self.on_subscribe(frame, receipt, charge));
                subscribe.await?;
                return Ok(Flow::Continue);
            }
            Command::Unsubscribe => {
                // Async only for a durable subscription removed from the cluster.
                let unsubscribe: RareFuture<'_, ()> = Box::pin(self.on_unsubscribe(&frame));
                unsubscribe.await?
            }
            Command::Ack => self.on_ack(&frame, false)?,
            Command::Nack => {
                if self.version == Version::V1_0 {
                    return Err(client_error(
                        ErrorCode::ProtocolUnsupported,
                        "NACK is not part of STOMP 1.0",
                    ));
                }
                self.on_ack(&frame, true)?
            }
            Command::Begin => self.on_begin(&frame)?,
            Command::Commit => {
                let commit: RareFuture<'_, ()> = Box::pin(self.on_commit(&frame));
                commit.await?
            }
            Command::Abort => self.on_abort(&frame)?,
            Command::Disconnect => return Ok(Flow::Disconnect(receipt)),
            // A re-authentication (`reauth:true`, see `reauth.rs`); any other is an error.
            Command::Connect | Command::Stomp => {
                self.on_connect_again(frame).await?;
                return Ok(Flow::Continue);
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                return Err(client_error(
                    ErrorCode::ProtocolServerFrame,
                    format!(
                        "{} is a server frame; a client may not send it",
                        frame.command.as_str()
                    ),
                ))
            }
        }
        Ok(Flow::Continue)
    }

    pub(super) fn transaction_mut(
        &mut self,
        frame: &Frame,
    ) -> Result<Option<&mut Transaction>, SessionError> {
        let Some(id) = frame.get(b"transaction") else {
            return Ok(None);
        };
        let max = self.broker.config.limits.max_transaction_frames;
        let transaction = self.transactions.get_mut(id).ok_or_else(|| {
            client_error(
                ErrorCode::ProtocolUnknownTransaction,
                format!("unknown transaction '{}'", shown(id)),
            )
        })?;
        if transaction.actions.len() >= max {
            return Err(client_error(
                ErrorCode::LimitTransactionSize,
                format!(
                    "transaction '{}' holds the maximum of {max} frames",
                    shown(id)
                ),
            ));
        }
        Ok(Some(transaction))
    }

    /// A SEND that is not plain: through the send plugins, a composite's parts, a
    /// transaction or the scheduler.
    async fn send_general(
        &mut self,
        plugins: Arc<PluginHost>,
        composite: bool,
        send: PreparedSend,
        message: PluginMessage,
    ) -> Result<(), SessionError> {
        if composite {
            return self.send_composite(&plugins, send, message).await;
        }
        if !plugins.intercepts_send(&message.destination) {
            return self.finish_send(send, std::iter::once(message)).await;
        }
        let (context, next) = (&self.plugin_context, self.next_message);
        match plugins
            .on_send_in(context, next, &self.principal, message)
            .await
        {
            SendOutcome::Deliver(messages) => {
                self.finish_send(send.through_plugins(), messages.into_iter())
                    .await
            }
            SendOutcome::Reject(reason) => Err(rejected(&reason)),
        }
    }

    /// The part of a SEND before the send plugins: validation, permission, the transaction's
    /// frame limit, and the message as the plugins see it (server-owned headers dropped,
    /// `reply-to` rewritten).
    pub(super) fn prepare_send(
        &mut self,
        frame: Frame,
        charge: Charge,
    ) -> Result<(PreparedSend, PluginMessage), SessionError> {
        let destination = required(&frame, "destination")?.clone();
        self.check_send_target(&destination)?;
        let transaction_id = frame.get(b"transaction").cloned();
        self.transaction_mut(&frame)?;
        let persistent = is_persistent(&frame);
        let Frame { headers, body, .. } = frame;
        let mut headers: Vec<Header> = headers;
        // The broker's own headers (codec::SERVER_OWNED) are not passed on.
        headers.retain(|(name, _)| !is_server_owned(name));
        self.rewrite_reply_to(&mut headers)?;
        let mentions = Mentions::of(&headers);
        let props = if mentions.props {
            Props::read(&headers)?
        } else {
            Props::default()
        };
        let send = PreparedSend {
            transaction_id,
            persistent,
            props: Some(props),
            mentions: Some(mentions),
            charge,
        };
        let message = PluginMessage {
            destination,
            headers,
            body,
        };
        Ok((send, message))
    }

    /// The part of a SEND after the send plugins: the routed copies are checked, resolved,
    /// admitted by the store (when persistent) and published, or held by their transaction.
    pub(super) async fn finish_send(
        &mut self,
        send: PreparedSend,
        routed: impl ExactSizeIterator<Item = PluginMessage>,
    ) -> Result<(), SessionError> {
        let PreparedSend {
            transaction_id,
            persistent,
            props,
            mentions,
            charge,
        } = send;
        // The frame's charge goes to the first copy (they share its body); further copies
        // (a plugin's fan-out) are charged for what they add.
        let mut charge = Some(charge);
        let mut plan = Vec::with_capacity(routed.len());
        let mut expires_at = None;
        let mut schedule = None;
        let mut queue_args = None;
        // Without send plugins every part's name was checked by `prepare_send` already.
        let names_checked = props.is_some();
        // A composite destination becomes a copy per part.
        let max_parts = self.broker.config.limits.max_composite_parts;
        for (i, copy) in super::composite::expand(routed, max_parts).enumerate() {
            let invalid = |err: RouteError| {
                client_error(
                    ErrorCode::PluginInvalidOutput,
                    format!("a plugin routed the message to an invalid destination: {err}"),
                )
            };
            let copy = copy.map_err(invalid)?;
            if i == 0 {
                let mentions = mentions.unwrap_or_else(|| Mentions::of(&copy.headers));
                if mentions.expiry {
                    expires_at = expiry(&copy.headers);
                }
                if mentions.schedule {
                    schedule = Schedule::from_headers(&copy.headers, &self.broker.config.schedule)
                        .map_err(|err| {
                            client_error(error_code::schedule_code(&err), err.to_string())
                        })?;
                }
                if mentions.queue_args {
                    queue_args = QueueArgs::from_headers(&copy.headers).map_err(|err| {
                        client_error(error_code::queue_args_code(&err), err.to_string())
                    })?;
                }
            }
            if !names_checked {
                check_send_name(&copy.destination).map_err(invalid)?;
            }
            let router = &self.vhost.router;
            let resolved = if schedule.is_none() && queue_args.is_none() {
                router.resolve(&mut self.conn, &copy.destination)?
            } else {
                router.resolve_declaring(
                    &mut self.conn,
                    &copy.destination,
                    queue_args.as_ref(),
                    schedule.is_some(),
                )?
            };
            let Some(target) = resolved else {
                continue; // a topic nobody listens to, or a reply queue that is gone
            };
            let props = match &props {
                Some(props) => props.clone(),
                None => Props::read(&copy.headers).map_err(|err| {
                    client_error(
                        ErrorCode::PluginInvalidOutput,
                        format!("a plugin set an invalid delivery header: {err}"),
                    )
                })?,
            };
            let charge = charge.take().unwrap_or_else(|| {
                self.account
                    .charge(Message::size_of(&copy.destination, &copy.headers, &[]))
            });
            let message = self.stamp(copy, &target, expires_at, persistent, props, charge);
            plan.push((target, message));
        }
        // Room in the store for every copy that will be journaled, held until it is.
        let reservation = match self.vhost.router.store() {
            Some(store) if persistent => {
                let bytes: u64 = plan
                    .iter()
                    .map(|(destination, message)| journal_bytes(destination, message))
                    .sum();
                Some(store.reserve(bytes).map_err(|refused| {
                    client_error(error_code::store_code(&refused), refused.to_string())
                })?)
            }
            _ => None,
        };
        // Over the memory budget (or its principal's share of it), the producer waits here
        // (its connection is not read meanwhile) until consumers have made room: nothing is
        // dropped.
        self.vhost
            .router
            .budget()
            .wait_for_room(Some(&self.account))
            .await;
        if let Some(id) = transaction_id {
            let bytes: u64 = plan.iter().map(|(_, m)| m.size()).sum();
            let max = self
                .broker
                .config
                .limits
                .max_transaction_bytes_per_connection;
            let held: u64 = self.transactions.values().map(|t| t.bytes).sum();
            if held + bytes > max {
                return Err(client_error(ErrorCode::LimitTransactionSize, format!(
                    "transactions hold {held} bytes of messages: {bytes} more would exceed the limit of {max} bytes per connection"
                )));
            }
            if schedule.is_some() {
                self.vhost
                    .router
                    .scheduler()
                    .check_room(&self.principal.name, plan.len())
                    .map_err(|err| {
                        client_error(error_code::schedule_code(&err), err.to_string())
                    })?;
            }
            if let Some(transaction) = self.transactions.get_mut(&id) {
                transaction.bytes += bytes;
                transaction.actions.push(Action::Publish {
                    plan,
                    reservation,
                    schedule,
                });
            }
            return Ok(());
        }
        if let Some(schedule) = schedule {
            // Journaled (when persistent) by now: the RECEIPT means "scheduled and stored".
            self.vhost
                .router
                .scheduler()
                .schedule(plan, schedule, &self.principal.name, true)
                .map_err(|err| client_error(error_code::schedule_code(&err), err.to_string()))?;
            drop(reservation);
            return Ok(());
        }
        let patience = self.slow_consumer_patience();
        let mut rejected = None;
        let mut unavailable = false;
        for (destination, message) in plan {
            if let Some(remote) = destination.remote_queue() {
                self.publish_remote(remote, message).await?;
                continue;
            }
            match publish(&destination, message, patience).await {
                Published::Rejected => rejected = Some(destination),
                Published::Unavailable => unavailable = true,
                Published::Queued | Published::Dropped => {}
            }
        }
        drop(reservation);
        if unavailable {
            return Err(self.cluster_unavailable_error());
        }
        match rejected {
            Some(queue) => Err(full_queue_error(&queue)),
            None => Ok(()),
        }
    }

    /// The ERROR of a SEND the cluster did not store in time (cluster mode).
    pub(super) fn cluster_unavailable_error(&self) -> SessionError {
        let timeout = self.publish_timeout_ms();
        client_error(
            ErrorCode::ClusterUnavailable,
            format!("the cluster did not store the message within {timeout} ms (publish_timeout_ms): NATS unreachable or JetStream unavailable"),
        )
    }

    /// `[cluster] publish_timeout_ms` (0 outside cluster mode), for the ERRORs that name it.
    pub(super) fn publish_timeout_ms(&self) -> u64 {
        let cluster = self.broker.config.cluster.as_ref();
        cluster.map_or(0, |cluster| cluster.publish_timeout_ms)
    }

    /// How long a publisher waits for a topic subscriber that is behind.
    pub(super) fn slow_consumer_patience(&self) -> Duration {
        Duration::from_millis(self.broker.config.flow.slow_consumer_patience_ms)
    }

    /// A `reply-to: /temp-queue/NAME` is rewritten to the temp queue's global reply name, so
    /// whoever receives the message can answer to it.
    fn rewrite_reply_to(&mut self, headers: &mut [Header]) -> Result<(), RouteError> {
        for (name, value) in headers.iter_mut() {
            if name.as_ref() == b"reply-to" {
                if let Some(global) = self.vhost.router.reply_name(&mut self.conn, value)? {
                    *value = global;
                }
            }
        }
        Ok(())
    }
}

/// When a message expires (unix ms): `expires` is absolute (ActiveMQ, JMS; 0 means never),
/// `ttl` (Apollo) and `expiration` (RabbitMQ) are relative to now.
pub(super) fn expiry(headers: &[Header]) -> Option<u64> {
    // One pass, by length first: this runs for every SEND and most carry none of these.
    let (mut expires, mut ttl, mut expiration) = (None, None, None);
    for (name, value) in headers {
        let slot = match name.len() {
            7 if name.as_ref() == b"expires" => &mut expires,
            3 if name.as_ref() == b"ttl" => &mut ttl,
            10 if name.as_ref() == b"expiration" => &mut expiration,
            _ => continue,
        };
        slot.get_or_insert(value);
    }
    let number = |value: Option<&Bytes>| -> Option<u64> {
        std::str::from_utf8(value?).ok()?.trim().parse().ok()
    };
    if let Some(at) = number(expires) {
        return (at > 0).then_some(at);
    }
    number(ttl)
        .or_else(|| number(expiration))
        .map(|ttl| crate::router::message::now_ms().saturating_add(ttl))
}

/// The ERROR of a SEND a full queue refused (`x-overflow: reject-publish`).
pub(super) fn full_queue_error(destination: &Destination) -> SessionError {
    let name = match destination {
        Destination::Queue(queue) => shown(&queue.name),
        Destination::Topic(topic) => shown(&topic.name),
    };
    client_error(
        ErrorCode::FlowQueueFull,
        format!("message rejected: queue '{name}' is full (x-overflow reject-publish)"),
    )
}

/// About how many bytes `message` takes in the journal once published to `destination`: one
/// record per queue, one per durable subscription of a topic.
pub(super) fn journal_bytes(destination: &Destination, message: &Message) -> u64 {
    let copies = match destination {
        Destination::Queue(_) => 1,
        Destination::Topic(topic) => topic.durable_count() as u64,
    };
    record_size(message) as u64 * copies
}

/// About how many bytes a message takes in the journal.
fn record_size(message: &Message) -> usize {
    let headers: usize = message
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 8)
        .sum();
    64 + message.destination.len() * 2 + headers + message.body.len()
}

/// Whether a frame may write to the journal: a persistent SEND, an ACK or NACK (of a journaled
/// message), a COMMIT, and SUBSCRIBE / UNSUBSCRIBE of durable subscriptions.
fn may_journal(frame: &Frame) -> bool {
    match frame.command {
        Command::Send => is_persistent(frame),
        Command::Ack | Command::Nack | Command::Commit => true,
        Command::Subscribe | Command::Unsubscribe => durable_name_header(frame).is_some(),
        _ => false,
    }
}

/// A broker-defined boolean header is `true`, in any case (some clients write `True`).
pub(super) fn header_is_true(frame: &Frame, name: &[u8]) -> bool {
    frame
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"true"))
}

/// `persistent:true`.
pub(super) fn is_persistent(frame: &Frame) -> bool {
    header_is_true(frame, b"persistent")
}
