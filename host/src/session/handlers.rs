//! Handlers for the frames of a connected session: the dispatch of every frame, SEND (with the
//! send plugins), SUBSCRIBE and UNSUBSCRIBE (ACK, NACK and transactions are in `acks.rs`). Each
//! returns a client error (turned into an ERROR frame by the caller) or lets the loop carry on;
//! RECEIPTs are queued after the frame is done.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::codec::{Command, Frame, Header, Version};
use crate::plugin::{PluginMessage, SendOutcome, SubscriptionInfo};
use crate::router::{
    classify, AckMode, Destination, FilterInputs, FilterSlot, Kind, Message, Outgoing, Queue,
    RouteError, Source, Subscription, TopicConsumer, DURABLE_PREFIX, REPLY_QUEUE_PREFIX,
    TEMP_QUEUE_PREFIX,
};

use super::error::{client_error, SessionError};
use super::transaction::{Action, Transaction};
use super::{Flow, Session, SessionSubscription, DESTINATION_CACHE};

/// Headers the broker owns on a MESSAGE; a client's values for them on SEND are not passed on.
const SERVER_OWNED: [&[u8]; 8] = [
    b"destination",
    b"message-id",
    b"subscription",
    b"ack",
    b"content-length",
    b"transaction",
    b"receipt",
    b"redelivered",
];

impl From<RouteError> for SessionError {
    fn from(err: RouteError) -> SessionError {
        client_error(err.to_string())
    }
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

pub(super) fn required<'f>(frame: &'f Frame, name: &str) -> Result<&'f Bytes, SessionError> {
    frame.get(name.as_bytes()).ok_or_else(|| {
        client_error(format!(
            "{} frame is missing the required '{name}' header",
            frame.command.as_str()
        ))
    })
}

/// What a SEND carries past the send plugins (see [`Session::prepare_send`]).
pub(super) struct PreparedSend {
    transaction_id: Option<Bytes>,
    persistent: bool,
}

/// The error of a SEND a plugin rejected.
pub(super) fn rejected(reason: &str) -> SessionError {
    client_error(format!("message rejected: {reason}"))
}

pub(super) fn receipt_frame(receipt: Bytes) -> Outgoing {
    Outgoing::Frame(Frame::new(Command::Receipt).header("receipt-id", receipt))
}

/// Reads `prefetch-count` (RabbitMQ) or `activemq.prefetchSize` (ActiveMQ).
fn prefetch(frame: &Frame) -> Result<Option<u32>, SessionError> {
    let Some((name, value)) = [&b"prefetch-count"[..], b"activemq.prefetchSize"]
        .iter()
        .find_map(|name| frame.get(name).map(|value| (*name, value)))
    else {
        return Ok(None);
    };
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|&n| n >= 1)
        .map(Some)
        .ok_or_else(|| {
            client_error(format!(
                "invalid {} '{}': expected a whole number of at least 1",
                text(name),
                text(value)
            ))
        })
}

impl Session {
    /// [`handle`](Self::handle), with the frame's receipt on the error.
    pub(super) async fn handle_one(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let receipt = frame.get(b"receipt").cloned();
        self.handle(frame)
            .await
            .map_err(|err| err.with_receipt(receipt.as_ref()))
    }

    /// Handles one frame of a connected session.
    pub(super) async fn handle(&mut self, frame: Frame) -> Result<Flow, SessionError> {
        let receipt = frame.get(b"receipt").cloned();
        let mark = (self.store.is_some() && may_journal(&frame)).then(|| self.store_mark());
        let command = frame.command;
        let flow = self.dispatch(frame, receipt.clone()).await;
        if let Some(mark) = mark {
            self.note_journaled(mark);
        }
        let flow = flow?;
        match receipt {
            Some(receipt) if command != Command::Subscribe => {
                self.send_receipt(receipt_frame(receipt))
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
    ) -> Result<Flow, SessionError> {
        match frame.command {
            Command::Send => self.on_send(frame).await?,
            Command::Subscribe => {
                // Its RECEIPT must precede the subscription's first MESSAGE: sent inside.
                self.on_subscribe(frame, receipt).await?;
                return Ok(Flow::Continue);
            }
            Command::Unsubscribe => self.on_unsubscribe(&frame)?,
            Command::Ack => self.on_ack(&frame, false)?,
            Command::Nack => {
                if self.version == Version::V1_0 {
                    return Err(client_error("NACK is not part of STOMP 1.0"));
                }
                self.on_ack(&frame, true)?
            }
            Command::Begin => self.on_begin(&frame)?,
            Command::Commit => self.on_commit(&frame).await?,
            Command::Abort => self.on_abort(&frame)?,
            Command::Disconnect => return Ok(Flow::Disconnect),
            Command::Connect | Command::Stomp => {
                return Err(client_error(
                    "already connected: a second CONNECT is not allowed",
                ))
            }
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                return Err(client_error(format!(
                    "{} is a server frame; a client may not send it",
                    frame.command.as_str()
                )))
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
        let transaction = self
            .transactions
            .get_mut(id)
            .ok_or_else(|| client_error(format!("unknown transaction '{}'", text(id))))?;
        if transaction.actions.len() >= max {
            return Err(client_error(format!(
                "transaction '{}' holds the maximum of {max} frames",
                text(id)
            )));
        }
        Ok(Some(transaction))
    }

    async fn on_send(&mut self, frame: Frame) -> Result<(), SessionError> {
        let (send, message) = self.prepare_send(frame)?;
        // One plugin set for the whole send chain, even if a reload swaps it meanwhile.
        let plugins = self.broker.policy.host();
        let routed = if plugins.intercepts_send(&message.destination) {
            match plugins.on_send(&self.principal, message).await {
                SendOutcome::Deliver(messages) => messages,
                SendOutcome::Reject(reason) => return Err(rejected(&reason)),
            }
        } else {
            vec![message]
        };
        self.finish_send(send, routed).await
    }

    /// The part of a SEND before the send plugins: validation, permission, the transaction's
    /// frame limit, and the message as the plugins see it (server-owned headers dropped,
    /// `reply-to` rewritten).
    pub(super) fn prepare_send(
        &mut self,
        frame: Frame,
    ) -> Result<(PreparedSend, PluginMessage), SessionError> {
        let destination = required(&frame, "destination")?.clone();
        classify(&destination)?;
        if !self.principal.may_send(&destination) {
            return Err(client_error(format!(
                "'{}' may not send to '{}'",
                self.principal.name,
                text(&destination)
            )));
        }
        let transaction_id = frame.get(b"transaction").cloned();
        self.transaction_mut(&frame)?;
        let persistent = is_persistent(&frame);
        let Frame { headers, body, .. } = frame;
        let mut headers: Vec<Header> = headers;
        headers.retain(|(name, _)| !SERVER_OWNED.contains(&name.as_ref()));
        self.rewrite_reply_to(&mut headers);
        let send = PreparedSend {
            transaction_id,
            persistent,
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
        routed: Vec<PluginMessage>,
    ) -> Result<(), SessionError> {
        let PreparedSend {
            transaction_id,
            persistent,
        } = send;
        let expires_at = routed.first().and_then(|m| expiry(&m.headers));
        let mut plan = Vec::with_capacity(routed.len());
        for copy in routed {
            classify(&copy.destination).map_err(|err| {
                client_error(format!(
                    "a plugin routed the message to an invalid destination: {err}"
                ))
            })?;
            let Some(target) = self.resolve_for_send(&copy.destination)? else {
                continue; // a topic nobody listens to, or a reply queue that is gone
            };
            let message = Arc::new(Message {
                destination: copy.destination,
                headers: copy.headers,
                body: copy.body,
                id_prefix: self.id.clone(),
                id_seq: self.next_message,
                expires_at,
                persistent,
            });
            self.next_message += 1;
            plan.push((target, message));
        }
        if persistent {
            if let Some(store) = &self.store {
                let bytes = plan.iter().map(|(_, m)| record_size(m)).sum::<usize>();
                store
                    .admit(bytes)
                    .map_err(|refused| client_error(refused.to_string()))?;
            }
        }
        if let Some(id) = transaction_id {
            if let Some(transaction) = self.transactions.get_mut(&id) {
                transaction.actions.push(Action::Publish(plan));
            }
            return Ok(());
        }
        publish(plan, self.slow_consumer_patience()).await;
        Ok(())
    }

    /// How long a publisher waits for a topic subscriber that is behind.
    pub(super) fn slow_consumer_patience(&self) -> Duration {
        Duration::from_millis(self.broker.config.flow.slow_consumer_patience_ms)
    }

    /// A `reply-to: /temp-queue/NAME` is rewritten to the temp queue's global reply name, so
    /// whoever receives the message can answer to it.
    fn rewrite_reply_to(&mut self, headers: &mut [Header]) {
        for (name, value) in headers.iter_mut() {
            if name.as_ref() == b"reply-to"
                && value.starts_with(TEMP_QUEUE_PREFIX)
                && value.len() > TEMP_QUEUE_PREFIX.len()
            {
                let (global, _) = self.temp_queue(value);
                *value = global;
            }
        }
    }

    /// This connection's temp queue for `/temp-queue/NAME`, created (and registered under its
    /// global reply name) on first use.
    fn temp_queue(&mut self, local: &Bytes) -> (Bytes, Arc<Queue>) {
        if let Some((global, queue)) = self.temp_queues.get(local) {
            return (global.clone(), queue.clone());
        }
        let mut global = BytesMut::new();
        global.extend_from_slice(REPLY_QUEUE_PREFIX);
        global.extend_from_slice(self.id.as_bytes());
        global.extend_from_slice(b".");
        global.extend_from_slice(&local[TEMP_QUEUE_PREFIX.len()..]);
        let global = global.freeze();
        let queue = Arc::new(Queue::new(
            global.clone(),
            self.broker.config.flow.queue_max_messages,
        ));
        self.broker
            .router
            .register_temp_queue(&global, queue.clone());
        self.temp_queues
            .insert(local.clone(), (global.clone(), queue.clone()));
        (global, queue)
    }

    /// Resolves a SEND destination, from this session's cache when it can.
    fn resolve_for_send(
        &mut self,
        destination: &Bytes,
    ) -> Result<Option<Destination>, SessionError> {
        if let Some(found) = self.destinations.get(destination) {
            return Ok(Some(found.clone()));
        }
        let router = &self.broker.router;
        let found = match classify(destination)? {
            Kind::Queue => Destination::Queue(router.queue(destination)),
            Kind::Topic => match router.existing_topic(destination) {
                Some(topic) => Destination::Topic(topic),
                None => return Ok(None),
            },
            Kind::TempQueue => return Ok(Some(Destination::Queue(self.temp_queue(destination).1))),
            Kind::ReplyQueue => match router.existing_queue(destination) {
                Some(queue) => Destination::Queue(queue),
                None => return Ok(None),
            },
        };
        if self.destinations.len() >= DESTINATION_CACHE {
            self.destinations.clear();
        }
        self.destinations.insert(destination.clone(), found.clone());
        Ok(Some(found))
    }

    pub(super) async fn on_subscribe(
        &mut self,
        frame: Frame,
        receipt: Option<Bytes>,
    ) -> Result<(), SessionError> {
        // A durable subscription created below is journaled before the RECEIPT.
        let mark = self.store_mark();
        let destination = required(&frame, "destination")?.clone();
        let wire_id = frame.get(b"id").cloned();
        if wire_id.is_none() && self.version >= Version::V1_1 {
            return Err(client_error(
                "SUBSCRIBE frame is missing the required 'id' header (required since STOMP 1.1)",
            ));
        }
        let table_key = subscription_table_key(wire_id.as_ref(), &destination);
        if self.by_wire_id.contains_key(&table_key) {
            return Err(client_error(format!(
                "duplicate subscription id '{}' on this connection",
                text(wire_id.as_ref().unwrap_or(&destination))
            )));
        }
        let limits = &self.broker.config.limits;
        if self.subscriptions.len() >= limits.max_subscriptions_per_connection {
            return Err(client_error(format!(
                "too many subscriptions: the limit is {} per connection",
                limits.max_subscriptions_per_connection
            )));
        }
        let ack_mode = match frame.get(b"ack") {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value).ok_or_else(|| {
                client_error(format!(
                    "invalid ack mode '{}': expected auto, client or client-individual",
                    text(value)
                ))
            })?,
        };
        let kind = classify(&destination)?;
        if !self.principal.may_subscribe(&destination) {
            return Err(client_error(format!(
                "'{}' may not subscribe to '{}'",
                self.principal.name,
                text(&destination)
            )));
        }
        let flow = &self.broker.config.flow;
        let window = match (prefetch(&frame)?, ack_mode) {
            (Some(n), _) => n.min(flow.max_prefetch),
            (None, AckMode::Auto) => flow.auto_ack_window,
            (None, _) => flow.default_prefetch,
        };
        let info = SubscriptionInfo {
            id: wire_id.clone().unwrap_or_default(),
            destination: destination.clone(),
            headers: frame.headers.clone(),
        };
        let plugins = self.broker.policy.current();
        let filter = plugins
            .host
            .prepare_subscription(&self.principal, info.clone())
            .await
            .map_err(|reason| client_error(format!("subscription refused: {reason}")))?;

        let (source, topic) = match kind {
            Kind::Queue => (Source::Queue(self.broker.router.queue(&destination)), None),
            Kind::TempQueue => (Source::Queue(self.temp_queue(&destination).1), None),
            Kind::ReplyQueue => {
                let owned = self
                    .temp_queues
                    .values()
                    .find(|(global, _)| *global == destination)
                    .map(|(_, queue)| queue.clone());
                let queue = owned.ok_or_else(|| {
                    client_error(format!(
                        "'{}' is another connection's reply queue; only its owner may subscribe",
                        text(&destination)
                    ))
                })?;
                (Source::Queue(queue), None)
            }
            Kind::Topic => {
                let topic = self.broker.router.topic(&destination);
                match durable_name_header(&frame) {
                    Some(name) => {
                        if name == DurableName::ById && wire_id.is_none() {
                            return Err(client_error(
                                "a durable subscription needs an 'id' or a subscription name header",
                            ));
                        }
                        let name = self.durable_queue_name(&name, wire_id.as_ref());
                        let queue = self
                            .broker
                            .router
                            .durable_subscription(&name, &topic)
                            .map_err(|err| client_error(err.to_string()))?;
                        (Source::Queue(queue), None)
                    }
                    None => (
                        Source::Topic(Arc::new(TopicConsumer::default())),
                        Some(topic),
                    ),
                }
            }
        };

        // The RECEIPT goes out before the subscription can receive anything (and, like every
        // RECEIPT, after what earlier frames journaled is durable).
        if let Some(receipt) = receipt {
            // Held-back RECEIPTs cannot overtake it, nor can it wait in line: wait in place.
            self.note_journaled(mark);
            let wait = Duration::from_millis(self.broker.config.limits.write_timeout_ms);
            self.wait_durable(wait).await;
            self.outbox.push(receipt_frame(receipt));
        }
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        let handle = Arc::new(Subscription {
            key,
            consumer_id: (self.number << 24) ^ u64::from(key),
            wire_id,
            destination,
            ack_mode,
            window,
            outbox: self.outbox.clone(),
            filter: Mutex::new(FilterSlot {
                generation: plugins.generation,
                filter,
            }),
            filter_inputs: FilterInputs {
                principal: self.principal.clone(),
                info,
            },
            source,
        });
        match (&handle.source, &topic) {
            (Source::Queue(queue), _) => queue.subscribe(handle.clone()),
            (Source::Topic(_), Some(topic)) => topic.subscribe(handle.clone()),
            (Source::Topic(_), None) => unreachable!("topic subscriptions carry their topic"),
        }
        self.by_wire_id.insert(table_key, key);
        self.subscriptions
            .insert(key, SessionSubscription { handle, topic });
        Ok(())
    }

    /// `durable:CLIENT:NAME`: the queue of a durable subscription. CLIENT is CONNECT's
    /// `client-id`, else the login; NAME is the subscription name header, else the `id`.
    fn durable_queue_name(&self, name: &DurableName, wire_id: Option<&Bytes>) -> Bytes {
        let client = self
            .client_id
            .clone()
            .unwrap_or_else(|| Bytes::from(self.principal.name.clone()));
        let name = match name {
            DurableName::Named(name) => name.clone(),
            DurableName::ById => wire_id.cloned().unwrap_or_default(),
        };
        let mut queue = BytesMut::new();
        queue.extend_from_slice(DURABLE_PREFIX);
        queue.extend_from_slice(&client);
        queue.extend_from_slice(b":");
        queue.extend_from_slice(&name);
        queue.freeze()
    }

    fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let durable = durable_name_header(frame);
        // ActiveMQ style: remove a durable subscription by name without being subscribed.
        if let Some(DurableName::Named(name)) = &durable {
            let attached = frame
                .get(b"id")
                .is_some_and(|id| self.by_wire_id.contains_key(id));
            if !attached {
                let queue = self.durable_queue_name(&DurableName::Named(name.clone()), None);
                if !self.broker.router.remove_durable_subscription(&queue) {
                    return Err(client_error(format!(
                        "no durable subscription '{}'",
                        text(name)
                    )));
                }
                return Ok(());
            }
        }
        let key = match (frame.get(b"id"), frame.get(b"destination")) {
            (Some(id), _) => self.by_wire_id.get(id).copied().ok_or_else(|| {
                client_error(format!("no subscription '{}' on this connection", text(id)))
            })?,
            // STOMP 1.0 may name the subscription by its destination instead.
            (None, Some(destination)) if self.version == Version::V1_0 => self
                .subscriptions
                .iter()
                .filter(|(_, s)| s.handle.destination == destination)
                .map(|(key, _)| *key)
                .min()
                .ok_or_else(|| {
                    client_error(format!(
                        "no subscription to '{}' on this connection",
                        text(destination)
                    ))
                })?,
            _ => {
                return Err(client_error(
                    "UNSUBSCRIBE frame is missing the required 'id' header",
                ))
            }
        };
        let queue = match &self.subscriptions[&key].handle.source {
            Source::Queue(queue) if queue.bound_topic().is_some() => Some(queue.clone()),
            _ => None,
        };
        self.remove_subscription(key);
        // Without a durable header UNSUBSCRIBE only detaches: the subscription keeps
        // collecting messages until it is removed this way.
        if let (Some(queue), Some(_)) = (queue, durable) {
            self.broker.router.remove_durable_subscription(&queue.name);
        }
        Ok(())
    }

    /// Ends a subscription; its unacked queue messages are redelivered to others.
    pub(super) fn remove_subscription(&mut self, key: u32) {
        let Some(subscription) = self.subscriptions.remove(&key) else {
            return;
        };
        let handle = &subscription.handle;
        self.by_wire_id.remove(&subscription_table_key(
            handle.wire_id.as_ref(),
            &handle.destination,
        ));
        match (&handle.source, &subscription.topic) {
            (Source::Queue(queue), _) => queue.unsubscribe(handle.consumer_id),
            (Source::Topic(_), Some(topic)) => {
                topic.unsubscribe(handle.consumer_id);
            }
            (Source::Topic(_), None) => {}
        }
    }
}

/// The `by_wire_id` key: the SUBSCRIBE `id`, or for a 1.0 subscription without one, its
/// destination behind a NUL-led marker (1.0 headers cannot contain NUL, so it never collides
/// with a real id).
fn subscription_table_key(wire_id: Option<&Bytes>, destination: &Bytes) -> Bytes {
    match wire_id {
        Some(id) => id.clone(),
        None => {
            let mut key = BytesMut::with_capacity(destination.len() + 6);
            key.extend_from_slice(b"\x00dest:");
            key.extend_from_slice(destination);
            key.freeze()
        }
    }
}

/// When a message expires (unix ms): `expires` is absolute (ActiveMQ, JMS; 0 means never),
/// `ttl` (Apollo) and `expiration` (RabbitMQ) are relative to now.
fn expiry(headers: &[Header]) -> Option<u64> {
    let number = |name: &[u8]| -> Option<u64> {
        let (_, value) = headers.iter().find(|(n, _)| n.as_ref() == name)?;
        std::str::from_utf8(value).ok()?.trim().parse().ok()
    };
    if let Some(at) = number(b"expires") {
        return (at > 0).then_some(at);
    }
    number(b"ttl")
        .or_else(|| number(b"expiration"))
        .map(|ttl| crate::router::message::now_ms().saturating_add(ttl))
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

/// How a SUBSCRIBE (or UNSUBSCRIBE) names a durable topic subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DurableName {
    /// By a subscription-name header.
    Named(Bytes),
    /// By `durable:true` / `persistent:true`: the `id` is the name (RabbitMQ, Apollo).
    ById,
}

/// The durable-subscription headers brokers use, in precedence order: ActiveMQ's
/// `activemq.subscriptionName` (and its old misspelling), Artemis's
/// `durable-subscription-name` and `durable-subscriber-name`; then RabbitMQ's `durable:true`
/// and Apollo's `persistent:true` (unless `auto-delete:true`).
fn durable_name_header(frame: &Frame) -> Option<DurableName> {
    const NAMES: [&[u8]; 4] = [
        b"activemq.subscriptionName",
        b"activemq.subcriptionName",
        b"durable-subscription-name",
        b"durable-subscriber-name",
    ];
    if let Some(name) = NAMES
        .iter()
        .find_map(|header| frame.get(header))
        .filter(|name| !name.is_empty())
    {
        return Some(DurableName::Named(name.clone()));
    }
    let flag = |header: &[u8]| header_is_true(frame, header);
    ((flag(b"durable") || flag(b"persistent")) && !flag(b"auto-delete"))
        .then_some(DurableName::ById)
}

/// A broker-defined boolean header is `true`, in any case (some clients write `True`).
fn header_is_true(frame: &Frame, name: &[u8]) -> bool {
    frame
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case(b"true"))
}

/// `persistent:true`.
pub(super) fn is_persistent(frame: &Frame) -> bool {
    header_is_true(frame, b"persistent")
}

/// Publishes routed copies: a full queue pauses this producer until there is room.
pub(super) async fn publish(plan: Vec<(Destination, Arc<Message>)>, patience: Duration) {
    for (destination, message) in plan {
        match destination {
            Destination::Queue(queue) => queue.publish(message).await,
            Destination::Topic(topic) => topic.publish(&message, patience).await,
        }
    }
}
