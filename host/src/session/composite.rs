//! The session's side of composite destinations (`/queue/a,/topic/b`, see
//! `router::composite`) and of wildcard patterns: the checks of a SEND's or SUBSCRIBE's
//! destination part by part (rights apply to each part), a composite SEND split into one
//! message per part *before* the send plugins (each part meets the plugins that serve it, as a
//! SEND to it alone would: a plugin on `/queue/payments` is not bypassed by
//! `/queue/payments,/queue/x`), the split of routed copies whose destination a routing plugin
//! made a composite, and a composite SUBSCRIBE: one subscription per part under the one `id`.
//!
//! A composite SUBSCRIBE may not be durable, and may not use `ack:client`: a cumulative ACK
//! names "this message and every earlier one", which is not defined across several queues
//! (`client-individual` and `auto` work across the parts).

use std::time::Duration;

use bytes::Bytes;

use crate::budget::Charge;
use crate::codec::Header;
use crate::plugin::{PluginHost, PluginMessage, SendOutcome, SubscriptionInfo};
use crate::policy::DeliveryFilter;
use crate::router::{
    check_name, check_send_name, composite_parts, is_composite, is_wildcard, AckMode, RouteError,
    SubscribeRequest,
};
use crate::text::shown;

use super::error::{client_error, SessionError};
use super::handlers::{receipt_frame, rejected, PreparedSend};
use super::receipts::Mark;
use super::subscribe::filter_refused;
use super::subscribe::Parsed;
use super::ErrorCode;
use super::Session;

impl Session {
    /// Checks a SEND destination (each part of a composite one): a name a client may send to
    /// (no wildcard pattern), and one the principal may send to.
    pub(super) fn check_send_target(&self, destination: &Bytes) -> Result<(), SessionError> {
        if !is_composite(destination) {
            return self.check_send_part(destination);
        }
        let max = self.broker.config.limits.max_composite_parts;
        for part in composite_parts(destination, max)? {
            self.check_send_part(&part)?;
        }
        Ok(())
    }

    fn check_send_part(&self, destination: &[u8]) -> Result<(), SessionError> {
        check_send_name(destination)?;
        if !self.principal.may_send(destination) {
            return Err(client_error(
                ErrorCode::PermissionSend,
                format!(
                    "'{}' may not send to '{}'",
                    self.principal.name,
                    shown(destination)
                ),
            ));
        }
        Ok(())
    }

    /// A SEND to a composite destination (checked by `prepare_send`): each part through the
    /// send plugins that serve it, then all the copies published together (a part a plugin
    /// rejects rejects the whole SEND, before anything is published).
    pub(super) async fn send_composite(
        &mut self,
        plugins: &PluginHost,
        send: PreparedSend,
        message: PluginMessage,
    ) -> Result<(), SessionError> {
        let max = self.broker.config.limits.max_composite_parts;
        let parts = composite_parts(&message.destination, max)?;
        let mut routed = Vec::with_capacity(parts.len());
        for part in parts {
            let copy = PluginMessage {
                destination: part,
                headers: message.headers.clone(),
                body: message.body.clone(),
            };
            if !plugins.intercepts_send(&copy.destination) {
                routed.push(copy);
                continue;
            }
            let (context, next) = (&self.plugin_context, self.next_message);
            match plugins
                .on_send_in(context, next, &self.principal, copy)
                .await
            {
                SendOutcome::Deliver(messages) => routed.extend(messages),
                SendOutcome::Reject(reason) => return Err(rejected(&reason)),
            }
        }
        self.finish_send(send, routed.into_iter()).await
    }

    /// Checks a SUBSCRIBE destination (each part of a composite one): a known name, and one
    /// the principal may subscribe to (a wildcard pattern's rights are the router's to check,
    /// per delivered topic).
    pub(super) fn check_subscribe_target(&self, destination: &Bytes) -> Result<(), SessionError> {
        if !is_composite(destination) {
            return self.check_subscribe_part(destination);
        }
        let max = self.broker.config.limits.max_composite_parts;
        for part in composite_parts(destination, max)? {
            self.check_subscribe_part(&part)?;
        }
        Ok(())
    }

    fn check_subscribe_part(&self, destination: &[u8]) -> Result<(), SessionError> {
        check_name(destination)?;
        if !is_wildcard(destination) && !self.principal.may_subscribe(destination) {
            return Err(client_error(
                ErrorCode::PermissionSubscribe,
                format!(
                    "'{}' may not subscribe to '{}'",
                    self.principal.name,
                    shown(destination)
                ),
            ));
        }
        Ok(())
    }

    /// A composite SUBSCRIBE (checked by `parse_subscribe`): every part prepared (with the
    /// message plugins' filter for that part), the RECEIPT, then every part attached under
    /// the one `id`.
    pub(super) async fn subscribe_composite(
        &mut self,
        parsed: Parsed,
        headers: Vec<Header>,
        receipt: Option<Bytes>,
        charge: Charge,
        mark: Mark,
    ) -> Result<(), SessionError> {
        let limits = &self.broker.config.limits;
        let parts = composite_parts(&parsed.destination, limits.max_composite_parts)?;
        if parsed.durable.is_some() {
            return Err(client_error(
                ErrorCode::DestinationCompositeUnsupported,
                format!(
                    "'{}' is a composite destination: it cannot be a durable subscription",
                    shown(&parsed.destination)
                ),
            ));
        }
        if parsed.ack_mode == AckMode::Client {
            return Err(client_error(ErrorCode::DestinationCompositeUnsupported, format!(
                "'{}' is a composite destination: use ack:client-individual (a cumulative ack is not defined across several destinations)",
                shown(&parsed.destination)
            )));
        }
        let max = limits.max_subscriptions_per_connection;
        if self.conn.subscription_count() + parts.len() > max {
            return Err(client_error(ErrorCode::LimitSubscriptions, format!(
                "too many subscriptions: the limit is {max} per connection (each part of a composite destination counts)"
            )));
        }
        // The frame's charge stays with the first part's filter; the others share its bytes.
        let mut charge = Some(charge);
        let mut prepared = Vec::with_capacity(parts.len());
        for part in parts {
            let info = SubscriptionInfo {
                id: parsed.wire_id.clone().unwrap_or_default(),
                destination: part.clone(),
                headers: headers.clone(),
            };
            let filter = DeliveryFilter::prepare(
                &self.broker.policy,
                &self.vhost,
                &self.plugin_context,
                &self.principal,
                info,
                charge.take().unwrap_or_default(),
            )
            .await
            .map_err(filter_refused)?;
            let request = SubscribeRequest {
                wire_id: parsed.wire_id.clone(),
                destination: part,
                ack_mode: parsed.ack_mode,
                window: parsed.window,
                options: parsed.options,
                durable: None,
                principal: &self.principal,
                outbox: self.outbox.clone(),
                filter,
            };
            prepared.push(
                self.vhost
                    .router
                    .prepare_subscription(&mut self.conn, request)?,
            );
        }
        if let Some(receipt) = receipt {
            self.receipts.note(mark);
            let wait = Duration::from_millis(self.broker.config.limits.write_timeout_ms);
            self.receipts
                .send_in_place(receipt_frame(receipt), wait)
                .await;
        }
        self.vhost.router.attach_composite(
            &mut self.conn,
            parsed.wire_id.as_ref(),
            &parsed.destination,
            prepared,
        );
        Ok(())
    }
}

/// The routed copies of a SEND, each composite one split into a copy per part (same headers
/// and body, the part as its destination); a plain copy passes through untouched (moved as it
/// is: this runs for every SEND, and the plain case is the common one).
pub(super) fn expand<I: Iterator<Item = PluginMessage>>(routed: I, max_parts: usize) -> Expand<I> {
    Expand {
        routed,
        max_parts,
        parts: None,
    }
}

/// The iterator of [`expand`].
pub(super) struct Expand<I> {
    routed: I,
    max_parts: usize,
    /// The composite copy being split: its headers, body and the parts still to give.
    parts: Option<Parts>,
}

struct Parts {
    headers: Vec<Header>,
    body: Bytes,
    rest: std::vec::IntoIter<Bytes>,
}

impl<I: Iterator<Item = PluginMessage>> Iterator for Expand<I> {
    type Item = Result<PluginMessage, RouteError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(parts) = &mut self.parts {
                match parts.rest.next() {
                    Some(destination) => {
                        return Some(Ok(PluginMessage {
                            destination,
                            headers: parts.headers.clone(),
                            body: parts.body.clone(),
                        }))
                    }
                    None => self.parts = None,
                }
            }
            let copy = self.routed.next()?;
            if !is_composite(&copy.destination) {
                return Some(Ok(copy));
            }
            match composite_parts(&copy.destination, self.max_parts) {
                Ok(parts) => {
                    self.parts = Some(Parts {
                        headers: copy.headers,
                        body: copy.body,
                        rest: parts.into_iter(),
                    })
                }
                Err(err) => return Some(Err(err)),
            }
        }
    }
}
