//! Temporary queues and `reply-to` in cluster mode.
//!
//! A temporary queue stays on the edge of the connection that made it (it ends with that
//! connection); its global name says which edge that is: `/reply-queue/EDGE.SESSION.NAME`,
//! `EDGE` being the edge's id, 32 random hex digits drawn at start ([`new_edge_id`]), so no
//! two edges (nor two runs of one) share names. Each edge takes the core subject
//! `CLUSTER.VHOST.r.EDGE` ([`subscribe_inbound`]); a SEND on another edge to such a name is
//! published there ([`VhostLink::reply_target`]) and put into the queue by its own edge
//! ([`run_inbound`]). At most once, like a topic message: a reply sent while NATS is
//! unreachable, or to a queue that is gone, is dropped.
//!
//! Only the connection that made a temporary queue reads it, as on one node: a SUBSCRIBE to
//! its `/reply-queue/` name is refused on every other connection, whatever its edge (the
//! queue exists on its own edge only, and there only its connection owns it).

use std::sync::Arc;

use futures_util::StreamExt;

use crate::router::REPLY_QUEUE_PREFIX;
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
        Some(Arc::new(RemoteTopic::new(
            self.client.clone(),
            None,
            self.names.reply_subject(edge),
            self.config.publish_timeout(),
        )))
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
/// its temporary queue on this edge; a reply to a queue that is gone is dropped. Ends when the
/// NATS client is closed.
pub async fn run_inbound(vhost: Arc<Vhost>, mut subscriber: async_nats::Subscriber) {
    let budget = vhost.router.budget().clone();
    let own = match vhost.router.cluster() {
        Some(link) => link.edge_id().to_string(),
        None => return,
    };
    while let Some(nats) = subscriber.next().await {
        let parts = match wire::decode(nats.payload) {
            Ok(parts) => parts,
            Err(err) => {
                tracing::debug!(subject = %nats.subject, error = %err, "cluster: a reply that is not a Plugboard message; dropped");
                continue;
            }
        };
        if edge_of(&parts.destination) != Some(own.as_str()) {
            tracing::debug!(subject = %nats.subject, "cluster: a reply for another edge's temporary queue; dropped");
            continue;
        }
        let Some(queue) = vhost.router.existing_queue(&parts.destination) else {
            tracing::debug!(subject = %nats.subject, "cluster: a reply to a temporary queue that is gone; dropped");
            continue;
        };
        let message = Arc::new(wire::into_message(parts, &budget));
        queue.publish(message).await;
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
