//! SUBSCRIBE and UNSUBSCRIBE: the frame read into a request (id, destination, ack mode, window,
//! durable name), checked (limits, rights, the message plugins' verdict), resolved and
//! attached by the router, with the RECEIPT in between: it goes out after whatever the
//! subscription journaled is durable and before the subscription's first MESSAGE.

use std::time::Duration;

use bytes::Bytes;

use crate::budget::Charge;
use crate::codec::{Frame, Version};
use crate::plugin::SubscriptionInfo;
use crate::policy::DeliveryFilter;
use crate::router::{
    table_key, AckMode, ConsumerOptions, DurableError, DurableKey, Outgoing, PreparedSubscription,
    SubscribeError, SubscribeRequest,
};
use crate::text::shown;

use super::consumer_headers::consumer_options;
use super::error::{client_error, plugin_error, SessionError};
use super::error_code::{self, ErrorCode};
use super::handlers::{header_is_true, receipt_frame, required};
use super::Session;
use crate::policy::FilterRefusal;

impl From<SubscribeError> for SessionError {
    fn from(err: SubscribeError) -> SessionError {
        client_error(error_code::subscribe_code(&err), err.to_string())
    }
}

impl From<DurableError> for SessionError {
    fn from(err: DurableError) -> SessionError {
        client_error(error_code::durable_code(&err), err.to_string())
    }
}

/// A SUBSCRIBE as read from its frame.
pub(super) struct Parsed {
    pub(super) wire_id: Option<Bytes>,
    pub(super) destination: Bytes,
    pub(super) ack_mode: AckMode,
    pub(super) window: u32,
    pub(super) options: ConsumerOptions,
    pub(super) durable: Option<DurableName>,
}

impl Session {
    pub(super) async fn on_subscribe(
        &mut self,
        frame: Frame,
        receipt: Option<Bytes>,
        charge: Charge,
    ) -> Result<(), SessionError> {
        // A durable subscription created below is journaled before the RECEIPT.
        let mark = self.receipts.mark();
        let parsed = self.parse_subscribe(&frame)?;
        let browser = header_is_true(&frame, b"browser");
        let queue_args = crate::router::QueueArgs::from_headers(&frame.headers)
            .map_err(|err| client_error(error_code::queue_args_code(&err), err.to_string()))?;
        if crate::router::is_composite(&parsed.destination) {
            // Each part would need its own snapshot or declaration: refused rather than
            // applied to some parts or ignored.
            if browser || queue_args.is_some() {
                return Err(client_error(ErrorCode::DestinationCompositeUnsupported, format!(
                    "'{}' is a composite destination: browser:true and queue arguments (x-max-length, x-overflow, x-message-ttl, ...) need a single queue",
                    shown(&parsed.destination)
                )));
            }
            return self
                .subscribe_composite(parsed, frame.headers, receipt, charge, mark)
                .await;
        }
        if browser && !parsed.destination.starts_with(crate::router::QUEUE_PREFIX) {
            return Err(client_error(
                ErrorCode::DestinationNotAQueue,
                format!(
                    "browser:true applies to /queue/ destinations only, not '{}'",
                    shown(&parsed.destination)
                ),
            ));
        }
        // Queue arguments create the queue with them, or must match those it has.
        if let Some(args) = queue_args {
            let router = &self.vhost.router;
            router.declare_queue(&mut self.conn, &parsed.destination, &args)?;
        }
        let info = SubscriptionInfo {
            id: parsed.wire_id.clone().unwrap_or_default(),
            destination: parsed.destination.clone(),
            headers: frame.headers,
        };
        // The headers are kept (for the message plugins) as long as the subscription lives,
        // and with them the frame's bytes and its charge.
        let filter = DeliveryFilter::prepare(
            &self.broker.policy,
            &self.vhost,
            &self.plugin_context,
            &self.principal,
            info,
            charge,
        )
        .await
        .map_err(filter_refused)?;
        let durable = parsed
            .durable
            .map(|name| self.durable_key(name, parsed.wire_id.as_ref()));
        // Cluster mode: a durable subscription to a plain topic is claimed in the cluster.
        let router = &self.vhost.router;
        let claimed = match &durable {
            Some(key) if router.durable_in_cluster(key, &parsed.destination) => {
                // A duplicate id is refused as such, before the cluster is asked.
                let table_key = table_key(parsed.wire_id.as_ref(), &parsed.destination);
                if self.conn.by_wire_id(&table_key).is_some() {
                    let name = parsed.wire_id.as_ref().unwrap_or(&parsed.destination);
                    return Err(SubscribeError::DuplicateId(shown(name)).into());
                }
                Some(
                    router
                        .claim_cluster_durable(key, &parsed.destination, &self.principal)
                        .await?,
                )
            }
            _ => None,
        };
        let request = SubscribeRequest {
            wire_id: parsed.wire_id,
            destination: parsed.destination,
            ack_mode: parsed.ack_mode,
            window: parsed.window,
            options: parsed.options,
            durable,
            principal: &self.principal,
            outbox: self.outbox.clone(),
            filter,
        };
        let router = &self.vhost.router;
        let prepared = match claimed {
            Some(queue) => router.prepare_cluster_durable(&mut self.conn, request, queue)?,
            None => router.prepare_subscription(&mut self.conn, request)?,
        };
        // The RECEIPT goes out before the subscription can receive anything (and, like every
        // RECEIPT, after what earlier frames journaled is durable).
        if let Some(receipt) = receipt {
            self.receipts.note(mark);
            let wait = Duration::from_millis(self.broker.config.limits.write_timeout_ms);
            self.receipts
                .send_in_place(receipt_frame(receipt), wait)
                .await;
        }
        if browser {
            return self.browse(prepared).await;
        }
        self.vhost.router.attach(&mut self.conn, prepared);
        Ok(())
    }

    /// Shows a browser subscription its queue's waiting messages, then `browser:end` (see
    /// [`crate::router::browse`]): pushed as the writer makes room, no lock held.
    async fn browse(&mut self, prepared: PreparedSubscription) -> Result<(), SessionError> {
        // A cluster queue's waiting messages are in JetStream.
        let snapshot = match prepared.remote_queue() {
            Some(remote) => {
                let max = self.broker.config.limits.max_browse_messages;
                let budget = self.vhost.router.budget();
                let read = remote.waiting_messages(max, budget).await;
                Some(read.map_err(|err| {
                    client_error(
                        ErrorCode::ClusterUnavailable,
                        format!("cannot browse the queue: {err}"),
                    )
                })?)
            }
            None => None,
        };
        let router = &self.vhost.router;
        let Some(browse) = router.attach_browser(&mut self.conn, prepared, snapshot) else {
            return Ok(());
        };
        let wait = Duration::from_millis(self.broker.config.limits.write_timeout_ms);
        let outbox = self.outbox.clone();
        for delivery in browse.deliveries() {
            let mut item = Outgoing::Delivery(delivery);
            while let Err((_, back)) = outbox.try_push(item) {
                item = back;
                tokio::time::timeout(wait, outbox.wait_for_room())
                    .await
                    .map_err(|_| {
                        client_error(
                            ErrorCode::FlowBrowseAbandoned,
                            "browse abandoned: the client stopped reading",
                        )
                    })?;
            }
        }
        outbox.push(Outgoing::Frame(browse.end_marker()));
        Ok(())
    }

    /// Reads and checks a SUBSCRIBE frame (everything that needs no plugin and no router).
    fn parse_subscribe(&self, frame: &Frame) -> Result<Parsed, SessionError> {
        let destination = required(frame, "destination")?.clone();
        let wire_id = frame.get(b"id").cloned();
        if wire_id.is_none() && self.version >= Version::V1_1 {
            return Err(client_error(
                ErrorCode::ProtocolMissingHeader,
                "SUBSCRIBE frame is missing the required 'id' header (required since STOMP 1.1)",
            ));
        }
        let limits = &self.broker.config.limits;
        let header_bytes: usize = frame.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        if header_bytes > limits.max_subscribe_header_bytes {
            return Err(client_error(
                ErrorCode::LimitHeaderSize,
                format!(
                    "SUBSCRIBE headers of {header_bytes} bytes exceed the limit of {} bytes",
                    limits.max_subscribe_header_bytes
                ),
            ));
        }
        if self.conn.subscription_count() >= limits.max_subscriptions_per_connection {
            return Err(client_error(
                ErrorCode::LimitSubscriptions,
                format!(
                    "too many subscriptions: the limit is {} per connection",
                    limits.max_subscriptions_per_connection
                ),
            ));
        }
        let ack_mode = match frame.get(b"ack") {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value).ok_or_else(|| {
                client_error(
                    ErrorCode::ProtocolInvalidHeader,
                    format!(
                        "invalid ack mode '{}': expected auto, client or client-individual",
                        shown(value)
                    ),
                )
            })?,
        };
        self.check_subscribe_target(&destination)?;
        let flow = &self.broker.config.flow;
        let window = match (prefetch(frame)?, ack_mode) {
            (Some(n), _) => n.min(flow.max_prefetch),
            (None, AckMode::Auto) => flow.auto_ack_window,
            (None, _) => flow.default_prefetch,
        };
        let options = consumer_options(frame)?;
        let durable = match durable_name_header(frame) {
            Some(_) if !destination.starts_with(crate::router::TOPIC_PREFIX) => None,
            Some(DurableName::ById) if wire_id.is_none() => {
                return Err(client_error(
                    ErrorCode::ProtocolMissingHeader,
                    "a durable subscription needs an 'id' or a subscription name header",
                ))
            }
            other => other,
        };
        Ok(Parsed {
            wire_id,
            destination,
            ack_mode,
            window,
            options,
            durable,
        })
    }

    /// Whose durable subscription a name means: this principal's, told apart by CONNECT's
    /// `client-id` and the subscription name (or the `id`).
    fn durable_key(&self, name: DurableName, wire_id: Option<&Bytes>) -> DurableKey {
        DurableKey {
            owner: self.principal.name.clone(),
            client_id: self.client_id.clone().unwrap_or_default(),
            name: match name {
                DurableName::Named(name) => name,
                DurableName::ById => wire_id.cloned().unwrap_or_default(),
            },
        }
    }

    pub(super) async fn on_unsubscribe(&mut self, frame: &Frame) -> Result<(), SessionError> {
        let durable = durable_name_header(frame);
        // ActiveMQ style: remove a durable subscription by name without being subscribed.
        if let Some(DurableName::Named(name)) = &durable {
            let attached = frame
                .get(b"id")
                .is_some_and(|id| self.conn.by_wire_id(id).is_some());
            if !attached {
                let key = self.durable_key(DurableName::Named(name.clone()), None);
                let router = &self.vhost.router;
                match router.remove_durable(&key, &self.principal) {
                    // Cluster mode: not on this edge, so in the cluster if anywhere.
                    Err(DurableError::Unknown(_)) if router.cluster().is_some() => {
                        router.remove_cluster_durable(&key, &self.principal).await?
                    }
                    other => other?,
                }
                return Ok(());
            }
        }
        let key = match (frame.get(b"id"), frame.get(b"destination")) {
            (Some(id), _) => self.conn.by_wire_id(id).map(|s| s.key()).ok_or_else(|| {
                client_error(
                    ErrorCode::ProtocolUnknownSubscription,
                    format!("no subscription '{}' on this connection", shown(id)),
                )
            })?,
            // STOMP 1.0 may name the subscription by its destination instead.
            (None, Some(destination)) if self.version == Version::V1_0 => {
                let by_destination = table_key(None, destination);
                self.conn
                    .by_wire_id(&by_destination)
                    .or_else(|| {
                        self.conn
                            .subscriptions()
                            .filter(|s| s.destination() == destination)
                            .min_by_key(|s| s.key())
                    })
                    .map(|s| s.key())
                    .ok_or_else(|| {
                        client_error(
                            ErrorCode::ProtocolUnknownSubscription,
                            format!(
                                "no subscription to '{}' on this connection",
                                shown(destination)
                            ),
                        )
                    })?
            }
            _ => {
                return Err(client_error(
                    ErrorCode::ProtocolMissingHeader,
                    "UNSUBSCRIBE frame is missing the required 'id' header",
                ))
            }
        };
        if durable.is_some() {
            // A cluster durable subscription is removed as its subscriber leaves.
            if let Some(subscription) = self.conn.subscription(key) {
                self.vhost.router.remove_on_detach(subscription);
            }
        }
        let detached = self.vhost.router.unsubscribe(&mut self.conn, key);
        // Without a durable header UNSUBSCRIBE only detaches: the subscription keeps
        // collecting messages until it is removed this way.
        if let (Some(subscription), Some(_)) = (detached, durable) {
            self.vhost.router.remove_detached_durable(&subscription);
        }
        Ok(())
    }
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
            client_error(
                ErrorCode::ProtocolInvalidHeader,
                format!(
                    "invalid {} '{}': expected a whole number of at least 1",
                    shown(name),
                    shown(value)
                ),
            )
        })
}

/// How a SUBSCRIBE (or UNSUBSCRIBE) names a durable topic subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DurableName {
    /// By a subscription-name header.
    Named(Bytes),
    /// By `durable:true` / `persistent:true`: the `id` is the name (RabbitMQ, Apollo).
    ById,
}

/// The durable-subscription headers brokers use, in precedence order: ActiveMQ's
/// `activemq.subscriptionName` (and its old misspelling), Artemis's
/// `durable-subscription-name` and `durable-subscriber-name`; then RabbitMQ's `durable:true`
/// and Apollo's `persistent:true` (unless `auto-delete:true`).
pub(super) fn durable_name_header(frame: &Frame) -> Option<DurableName> {
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

/// The error of a SUBSCRIBE whose filter could not be prepared: a malformed selector, or a
/// message plugin's refusal (its own code when its reason carries one).
pub(super) fn filter_refused(refusal: FilterRefusal) -> SessionError {
    match refusal {
        FilterRefusal::Selector(reason) => client_error(
            ErrorCode::ProtocolInvalidSelector,
            format!("subscription refused: {reason}"),
        ),
        FilterRefusal::Plugin(rejection) => plugin_error(&rejection, |reason| {
            format!("subscription refused: {reason}")
        }),
    }
}
