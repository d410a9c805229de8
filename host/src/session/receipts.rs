//! RECEIPT ordering, in one place.
//!
//! A RECEIPT means the frame and every frame before it are done; for frames that journaled
//! something (a persistent SEND, an ACK of a persistent message, a durable SUBSCRIBE...) "done"
//! means durable in the message store. The rules:
//!
//! - before a frame that may journal, [`Receipts::mark`] notes the store's sequence number;
//!   after it, [`Receipts::note`] raises the session's durable target when anything was
//!   appended since (by this frame or, the sequence cannot tell, by another connection);
//! - [`Receipts::send`] queues a RECEIPT at once when nothing the session journaled is still
//!   waiting, else holds it back behind the target current when it was asked for;
//! - held RECEIPTs go out in order as the store's durable sequence passes their target
//!   ([`Receipts::release`], driven by [`Receipts::store_advanced`] in the session's loop);
//! - a SUBSCRIBE's RECEIPT must precede the subscription's first MESSAGE, so it cannot wait in
//!   line: [`Receipts::send_in_place`] waits for the store where it stands;
//! - when the connection ends, [`Receipts::flush`] waits (bounded) for what is still held.
//!
//! Without a store nothing ever waits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::router::{Outbox, Outgoing};
use crate::store::Store;

/// The store's sequence number before a frame that may journal.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark(u64);

/// A session's RECEIPTs and the durability they wait for.
pub(super) struct Receipts {
    outbox: Arc<Outbox>,
    /// The message store, when persistent messages are journaled.
    store: Option<Arc<Store>>,
    /// Watches the store's durable sequence number.
    durable: Option<watch::Receiver<u64>>,
    /// The store sequence number this session's frames so far may have journaled up to: a
    /// RECEIPT waits until the store is durable that far.
    target: u64,
    /// RECEIPTs waiting for the store, with the sequence number each waits for.
    held: VecDeque<(u64, Outgoing)>,
}

impl Receipts {
    pub(super) fn new(outbox: Arc<Outbox>, store: Option<Arc<Store>>) -> Receipts {
        let durable = store.as_ref().map(|store| store.watch_durable());
        Receipts {
            outbox,
            store,
            durable,
            target: 0,
            held: VecDeque::new(),
        }
    }

    /// Whether frames can journal at all (a store is configured).
    pub(super) fn journals(&self) -> bool {
        self.store.is_some()
    }

    /// The store's sequence number before a frame that may journal.
    pub(super) fn mark(&self) -> Mark {
        Mark(self.store.as_ref().map_or(0, |store| store.appended()))
    }

    /// After a frame that may journal: if anything was appended since `mark`, later RECEIPTs
    /// wait until the store is durable that far. When nothing was appended, nothing waits.
    pub(super) fn note(&mut self, mark: Mark) {
        if let Some(store) = &self.store {
            let now = store.appended();
            if now > mark.0 {
                self.target = self.target.max(now);
            }
        }
    }

    /// Queues a RECEIPT, holding it back while frames before it are not durable yet.
    pub(super) fn send(&mut self, receipt: Outgoing) {
        // Nothing journaled by this session, or nothing since the last durable point: at once.
        if self.held.is_empty() && self.target == 0 {
            self.outbox.push(receipt);
            return;
        }
        self.release();
        let durable = self.store.as_ref().map_or(0, |store| store.durable());
        if self.held.is_empty() && self.target <= durable {
            self.outbox.push(receipt);
        } else {
            self.held.push_back((self.target, receipt));
        }
    }

    /// Queues a RECEIPT after waiting (up to `wait`) for everything before it to be durable,
    /// without letting it wait in line: for a SUBSCRIBE, whose RECEIPT must precede the
    /// subscription's first MESSAGE.
    pub(super) async fn send_in_place(&mut self, receipt: Outgoing, wait: Duration) {
        self.flush(wait).await;
        self.outbox.push(receipt);
    }

    /// Whether RECEIPTs are held back.
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Sends the held RECEIPTs whose frames are durable now, in order.
    pub(super) fn release(&mut self) {
        let Some(store) = &self.store else {
            return;
        };
        let durable = store.durable();
        while self.held.front().is_some_and(|(at, _)| *at <= durable) {
            let (_, receipt) = self.held.pop_front().expect("checked above");
            self.outbox.push(receipt);
        }
    }

    /// Resolves when the store's durable sequence number moves (never without a store); then
    /// call [`release`](Self::release). Cancel-safe.
    pub(super) async fn store_advanced(&mut self) -> Result<(), watch::error::RecvError> {
        match &mut self.durable {
            Some(durable) => durable.changed().await,
            None => std::future::pending().await,
        }
    }

    /// Waits (up to `wait`; not at all for a failed store, which never gets there) until what
    /// this session's frames journaled is durable, and sends the held RECEIPTs. Those still
    /// not durable then are never sent: the client must not count on them.
    pub(super) async fn flush(&mut self, wait: Duration) {
        if let Some(store) = &self.store {
            let target = self.target;
            if target > store.durable() && store.failure().is_none() {
                let mut durable = store.watch_durable();
                let _ = tokio::time::timeout(wait, durable.wait_for(|at| *at >= target)).await;
            }
        }
        self.release();
        self.held.clear();
    }
}
