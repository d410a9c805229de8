//! Temporary queues and `reply-to` in cluster mode.
//!
//! A temporary queue stays on the edge of the connection that made it (it ends with that
//! connection); its global name says which edge that is: `/reply-queue/EDGE.SESSION.NAME`,
//! `EDGE` being the edge's id, 32 random hex digits drawn at start ([`new_edge_id`]), so no
//! two edges (nor two runs of one) share names. Each edge takes the core subject
//! `CLUSTER.VHOST.r.EDGE` ([`subscribe_inbound`]); a SEND on another edge to such a name is
//! published there ([`VhostLink::reply_target`]) and put into the queue by its own edge
//! ([`run_inbound`]).
//!
//! A non-persistent reply goes at most once, like a topic message: one sent while NATS is
//! unreachable is dropped. A persistent one (`persistent:true`) is handed over with a request
//! ([`hand_over`]): its edge answers once the temporary queue has it ([`ANSWER_QUEUED`]), is
//! full and refuses it ([`ANSWER_FULL`]: the SEND gets `flow.queue-full`, as on one node), or
//! is gone ([`ANSWER_GONE`]); with no answer within `publish_timeout_ms` the SEND gets
//! `cluster.unavailable` (the reply may have arrived: sent again, it can arrive twice). A reply
//! to a temporary queue that is gone is dropped, as on one node, and so is one to an edge that
//! is gone (NATS has nobody on its subject: its temporary queues ended with it).
//!
//! Only the connection that made a temporary queue reads it, as on one node: a SUBSCRIBE to
//! its `/reply-queue/` name is refused on every other connection, whatever its edge (the
//! queue exists on its own edge only, and there only its connection owns it).

use std::sync::Arc;

use futures_util::StreamExt;

use std::time::Duration;

use bytes::Bytes;

use crate::router::{Published, REPLY_QUEUE_PREFIX};
use crate::vhost::Vhost;

use super::topic::RemoteTopic;
use super::{wire, VhostLink};

/// The length of an edge id (hex digits).
const EDGE_ID_LEN: usize = 32;

/// A fresh edge id: 128 random bits as 32 lower-case hex digits.
pub fn new_edge_id() -> anyhow::Result<Arc<str>> {
    let mut bytes = [0u8; EDGE_ID_LEN / 2];
    getrandom::fill(&mut bytes)
        .map_err(|err| anyhow::anyhow!("no randomness for the edge id: {err}"))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Arc::from(id))
}

/// The edge id a reply name carries (`/reply-queue/EDGE.`...), when it has one.
fn edge_of(name: &[u8]) -> Option<&str> {
    let rest = name.strip_prefix(REPLY_QUEUE_PREFIX)?;
    let id = rest.get(..EDGE_ID_LEN)?;
    if rest.get(EDGE_ID_LEN) != Some(&b'.')
        || !id
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    std::str::from_utf8(id).ok()
}

impl VhostLink {
    /// This edge's id (in its reply names).
    pub fn edge_id(&self) -> &str {
        &self.edge
    }

    /// Where a SEND to reply name `name` goes when the temporary queue is another edge's:
    /// that edge's reply subject. `None` for this edge's names and names of no edge.
    pub fn reply_target(&self, name: &[u8]) -> Option<Arc<RemoteTopic>> {
        let edge = edge_of(name)?;
        if edge == &*self.edge {
            return None;
        }
        Some(Arc::new(RemoteTopic::reply(
            self.client.clone(),
            self.names.reply_subject(edge),
            self.config.publish_timeout(),
        )))
    }
}

/// The answer to a handed-over reply that is in its temporary queue.
pub const ANSWER_QUEUED: &[u8] = b"queued";
/// The answer to a handed-over reply its temporary queue refused (full).
pub const ANSWER_FULL: &[u8] = b"full";
/// The answer to a handed-over reply whose temporary queue is gone (dropped).
pub const ANSWER_GONE: &[u8] = b"gone";

/// Hands a persistent reply (`payload`) to the edge on `subject` and waits at most `timeout`
/// for its answer: [`Published::Queued`] once the temporary queue has it, or it is dropped
/// because the queue or its edge is gone; [`Published::Rejected`] when the queue is full and
/// refuses it; [`Published::Unavailable`] without an answer in time.
pub async fn hand_over(
    client: &async_nats::Client,
    subject: &async_nats::Subject,
    payload: Bytes,
    timeout: Duration,
) -> Published {
    let asked = tokio::time::timeout(timeout, client.request(subject.clone(), payload)).await;
    match asked {
        Ok(Ok(answer)) if answer.payload.as_ref() == ANSWER_FULL => Published::Rejected,
        Ok(Ok(answer)) => {
            if answer.payload.as_ref() == ANSWER_GONE {
                tracing::debug!(%subject, "cluster: a reply to a temporary queue that is gone; dropped");
            }
            Published::Queued
        }
        Ok(Err(err)) if err.kind() == async_nats::RequestErrorKind::NoResponders => {
            tracing::debug!(%subject, "cluster: a reply to an edge that is gone; dropped");
            Published::Queued
        }
        Ok(Err(err)) => {
            tracing::debug!(%subject, error = %err, "cluster: a persistent reply not handed over");
            Published::Unavailable
        }
        Err(_) => {
            tracing::debug!(%subject, "cluster: a persistent reply not answered in time");
            Published::Unavailable
        }
    }
}

/// This edge's subscription to the replies other edges send to its temporary queues, in place
/// on the server when this returns.
pub async fn subscribe_inbound(link: &VhostLink) -> anyhow::Result<async_nats::Subscriber> {
    let subject = link.names.reply_subject(link.edge_id());
    let subscriber = link.client().subscribe(subject).await?;
    link.client().flush().await?;
    Ok(subscriber)
}

/// Puts each reply another edge sends (through `subscriber`, from [`subscribe_inbound`]) into
/// its temporary queue on this edge; a reply to a queue that is gone is dropped. A handed-over
/// one (a request) is answered once that is done ([`hand_over`]). Ends when the NATS client
/// is closed.
pub async fn run_inbound(vhost: Arc<Vhost>, mut subscriber: async_nats::Subscriber) {
    let budget = vhost.router.budget().clone();
    let (own, client) = match vhost.router.cluster() {
        Some(link) => (link.edge_id().to_string(), link.client().clone()),
        None => return,
    };
    while let Some(nats) = subscriber.next().await {
        let answer = put_in_queue(&vhost, &own, &budget, &nats.subject, nats.payload).await;
        if let Some(reply) = nats.reply {
            if let Err(err) = client.publish(reply, Bytes::from_static(answer)).await {
                tracing::debug!(error = %err, "cluster: a handed-over reply not answered");
            }
        }
    }
}

/// Puts one reply (`payload`, received on `subject`) into its temporary queue on this edge
/// (`own`): the answer for its sender.
async fn put_in_queue(
    vhost: &Vhost,
    own: &str,
    budget: &Arc<crate::budget::MemoryBudget>,
    subject: &async_nats::Subject,
    payload: Bytes,
) -> &'static [u8] {
    let parts = match wire::decode(payload) {
        Ok(parts) => parts,
        Err(err) => {
            tracing::debug!(%subject, error = %err, "cluster: a reply that is not a Plugboard message; dropped");
            return ANSWER_GONE;
        }
    };
    if edge_of(&parts.destination) != Some(own) {
        tracing::debug!(%subject, "cluster: a reply for another edge's temporary queue; dropped");
        return ANSWER_GONE;
    }
    let Some(queue) = vhost.router.existing_queue(&parts.destination) else {
        tracing::debug!(%subject, "cluster: a reply to a temporary queue that is gone; dropped");
        return ANSWER_GONE;
    };
    let message = Arc::new(wire::into_message(parts, budget));
    match queue.publish(message).await {
        Published::Queued => ANSWER_QUEUED,
        Published::Rejected => ANSWER_FULL,
        Published::Dropped | Published::Unavailable => ANSWER_GONE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_ids_are_fresh_hex_and_read_back_from_reply_names() {
        let a = new_edge_id().unwrap();
        let b = new_edge_id().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), EDGE_ID_LEN);
        let name = format!("/reply-queue/{a}.5f-1.r1");
        assert_eq!(edge_of(name.as_bytes()), Some(&*a));
        // Single-node names, short or malformed ids, and upper case are no edge's.
        assert_eq!(edge_of(b"/reply-queue/5f-1.r1"), None);
        assert_eq!(edge_of(format!("/reply-queue/{a}").as_bytes()), None);
        assert_eq!(
            edge_of(b"/reply-queue/0123456789ABCDEF0123456789ABCDEF.x"),
            None
        );
        assert_eq!(edge_of(format!("/queue/{a}.x").as_bytes()), None);
    }
}
