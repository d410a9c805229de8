//! A STOMP transaction: the SENDs, ACKs and NACKs given between BEGIN and COMMIT, held by the
//! session and applied in order at COMMIT. ABORT (explicit, or implicit when the connection
//! ends) discards the SENDs and makes the messages its ACKs and NACKs named deliverable again.

use std::sync::Arc;

use bytes::Bytes;

use crate::router::{AckTarget, Connection, Destination, Message, Schedule};
use crate::store::Reservation;

/// An ACK/NACK target that outlives the frame.
#[derive(Debug, Clone)]
pub enum OwnedTarget {
    Seq(u64),
    MessageId(Bytes),
}

impl OwnedTarget {
    pub fn as_target(&self) -> AckTarget<'_> {
        match self {
            OwnedTarget::Seq(seq) => AckTarget::Seq(*seq),
            OwnedTarget::MessageId(id) => AckTarget::MessageId(id),
        }
    }
}

/// One deferred operation.
#[derive(Debug)]
pub enum Action {
    /// A SEND, already routed (plugins ran at SEND time) to one or more destinations, with the
    /// room its persistent copies hold in the message store until COMMIT or ABORT.
    Publish {
        plan: Vec<(Destination, Arc<Message>)>,
        reservation: Option<Reservation>,
        /// Set for a scheduled SEND: the plan goes to the scheduler at COMMIT.
        schedule: Option<Schedule>,
    },
    /// An ACK (`requeue == false`) or NACK (`requeue == true`) of a subscription's delivery.
    Settle {
        key: u32,
        target: OwnedTarget,
        requeue: bool,
        /// A NACK's own headers, for the queue's redeliver hook (empty for an ACK).
        nack_headers: Vec<(Bytes, Bytes)>,
    },
}

/// An open transaction.
#[derive(Debug, Default)]
pub struct Transaction {
    pub actions: Vec<Action>,
    /// Bytes of the messages its SENDs hold.
    pub bytes: u64,
}

impl Transaction {
    /// Discards the SENDs; messages named by ACKs and NACKs go back to their queue, marked
    /// redelivered (topic deliveries just leave the subscriber's window).
    pub fn abort(self, conn: &Connection) {
        for action in self.actions {
            let Action::Settle { key, target, .. } = action else {
                continue;
            };
            if let Some(subscription) = conn.subscription(key) {
                let _ = subscription.settle(target.as_target(), true);
            }
        }
    }
}
