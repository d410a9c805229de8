//! Pipelined SENDs through the send plugins in one batch.
//!
//! A plugin call has a fixed cost (about 1.5 us) that dwarfs what a router does per message, so
//! when the read buffer already holds several consecutive SEND frames that the send plugins
//! intercept, the session decodes up to [`MAX_SEND_BATCH`] of them and runs the send chain once
//! per plugin over all of them ([`PluginHost::route_batch`]; one `send-batch` call per plugin
//! that exports it). Everything else stays per frame and in order, as [`Session::handle`] does
//! it: validation and permissions, then (after the plugins) destination checks, expiry, store
//! admission, publishing, and the RECEIPT (held, like every RECEIPT, until what the frame
//! journaled is durable).
//!
//! Differences a client cannot see but a plugin can: the plugins see a frame's message before
//! the frames ahead of it are published. When frame k fails (invalid, not permitted, rejected by
//! a plugin, not admitted by the store), frames before it are published with their RECEIPTs,
//! frame k gets the ERROR (with its receipt-id) and nothing after it is processed, as without
//! batching; but plugins earlier in the chain than the one that rejected it may already have
//! seen the frames after it.
//!
//! Flow control is checked once per batch: a client that does not read its RECEIPTs is paused
//! when its outbox is full after a batch, so the outbox may run up to 63 frames over its limit.
//!
//! Only SENDs outside a transaction join a batch (a transactional SEND goes through `handle_one` as
//! before), and only when some send plugin exports `send-batch`: components without it (e.g. the
//! JavaScript and Python samples) keep exactly one call per message, frame by frame.

use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{Command, DecodeError, Frame, FrameReader};
use crate::plugin::{PluginHost, PluginMessage, RoutedBatch};

use super::error::SessionError;
use super::handlers::{is_persistent, receipt_frame, rejected, PreparedSend};
use super::{Charged, Flow, Session};

/// Most SEND frames handled as one batch.
pub(super) const MAX_SEND_BATCH: usize = 64;

/// Takes the batchable frames that follow `first` in `buf` (up to [`MAX_SEND_BATCH`] in all);
/// the first frame (or decoding error) that cannot join is left in `next`.
pub(super) fn take_batch(
    first: Charged,
    reader: &mut FrameReader,
    plugins: &PluginHost,
    next: &mut Option<Result<Option<Charged>, DecodeError>>,
) -> Vec<Charged> {
    let mut frames = Vec::with_capacity(MAX_SEND_BATCH);
    frames.push(first);
    while frames.len() < MAX_SEND_BATCH {
        match reader.next_charged() {
            Ok(Some(charged)) if batchable(&charged.0, plugins) => frames.push(charged),
            Ok(None) => break,
            other => {
                *next = Some(other);
                break;
            }
        }
    }
    frames
}

/// Whether `frame` may join a batch of SENDs for `plugins` (not one to a composite destination:
/// its parts go through the plugins one by one, see `composite.rs`).
pub(super) fn batchable(frame: &Frame, plugins: &PluginHost) -> bool {
    frame.command == Command::Send
        && frame.get(b"transaction").is_none()
        && frame
            .get(b"destination")
            .is_some_and(|d| !crate::router::is_composite(d) && plugins.intercepts_send(d))
}

/// One frame of a batch, between its two halves.
struct Pending {
    send: PreparedSend,
    receipt: Option<Bytes>,
    /// Whether the frame may journal (a persistent SEND with a store).
    journals: bool,
}

impl Session {
    /// The plugin set to run `frame` with as the start of a batch, when it can start one: a
    /// [`batchable`] SEND while some send plugin takes batches.
    pub(super) fn batch_plugins(&self, frame: &Frame) -> Option<Arc<PluginHost>> {
        if frame.command != Command::Send {
            return None;
        }
        let plugins = self.broker.policy.host_for(self.vhost.index);
        (plugins.batches_send() && batchable(frame, &plugins)).then_some(plugins)
    }

    /// Handles `frames` (each [`batchable`]) as [`handle_one`](Session::handle_one) would one
    /// by one. An error carries the receipt of the frame it belongs to; nothing after that
    /// frame ran.
    pub(super) async fn handle_send_batch(
        &mut self,
        plugins: &PluginHost,
        mut frames: Vec<Charged>,
    ) -> Result<Flow, SessionError> {
        if frames.len() == 1 {
            let charged = frames.pop().expect("one frame");
            return self.handle_one(charged).await;
        }
        self.run_send_batch(plugins, frames).await?;
        Ok(Flow::Continue)
    }

    async fn run_send_batch(
        &mut self,
        plugins: &PluginHost,
        frames: Vec<Charged>,
    ) -> Result<(), SessionError> {
        let mut pending = Vec::with_capacity(frames.len());
        let mut messages: Vec<PluginMessage> = Vec::with_capacity(frames.len());
        // A frame that fails before the plugins ends the batch there: the ones before it run.
        let mut early: Option<SessionError> = None;
        for (frame, charge) in frames {
            let receipt = frame.get(b"receipt").cloned();
            let journals = self.receipts.journals() && is_persistent(&frame);
            match self.prepare_send(frame, charge) {
                Ok((send, message)) => {
                    pending.push(Pending {
                        send,
                        receipt,
                        journals,
                    });
                    messages.push(message);
                }
                Err(err) => {
                    early = Some(err.with_receipt(receipt.as_ref()));
                    break;
                }
            }
        }
        let routed = if messages.is_empty() {
            RoutedBatch::default()
        } else {
            let (context, next) = (&self.plugin_context, self.next_message);
            plugins
                .route_batch_in(context, next, &self.principal, messages)
                .await
        };
        let mut outcomes = routed
            .counts
            .iter()
            .map(Ok)
            .chain(routed.rejected.iter().map(Err));
        let mut messages = routed.messages.into_iter();
        for frame in pending {
            let Some(outcome) = outcomes.next() else {
                break; // after a rejected frame
            };
            let mark = self.receipts.mark();
            let result = match outcome {
                Ok(&n) => {
                    let routed = messages.by_ref().take(n);
                    self.finish_send(frame.send.through_plugins(), routed).await
                }
                Err(reason) => Err(rejected(reason)),
            };
            if frame.journals {
                self.receipts.note(mark);
            }
            result.map_err(|err| err.with_receipt(frame.receipt.as_ref()))?;
            if let Some(receipt) = frame.receipt {
                self.settle_sends()
                    .await
                    .map_err(|err| err.with_receipt(Some(&receipt)))?;
                self.receipts.send(receipt_frame(receipt));
            }
        }
        match early {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
