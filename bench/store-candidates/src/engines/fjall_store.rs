//! fjall: one keyspace `id (big-endian) -> encoded record`; a batch is one `WriteBatch`
//! committed with `PersistMode::SyncData` (its journal is fdatasync'ed); settle = remove
//! (a tombstone). Default options (LZ4 on, background flush and compaction threads).

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::{Engine, Op};

pub struct FjallStore {
    db: Database,
    messages: Keyspace,
}

impl FjallStore {
    pub fn open(dir: &Path) -> FjallStore {
        let db = Database::builder(dir).open().expect("fjall open");
        let messages = db
            .keyspace("messages", KeyspaceCreateOptions::default)
            .expect("keyspace");
        FjallStore { db, messages }
    }
}

impl Engine for FjallStore {
    fn commit(&mut self, ops: Vec<Op>) -> std::io::Result<()> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for op in ops {
            match op {
                Op::Enqueue { id, payload } => {
                    batch.insert(&self.messages, id.to_be_bytes(), payload)
                }
                Op::Settle { id } => batch.remove(&self.messages, id.to_be_bytes()),
            }
        }
        batch.commit().map_err(std::io::Error::other)
    }

    fn fsyncs(&self) -> Option<u64> {
        None
    }

    fn close(self: Box<Self>) {
        let FjallStore { db, messages } = *self;
        drop(messages);
        drop(db);
    }
}

/// Opens an existing database (replaying its journal) and counts the messages.
pub fn recover(dir: &Path) -> Result<String, String> {
    let store = FjallStore::open(dir);
    Ok(format!(
        "live={}",
        store.messages.len().map_err(|e| e.to_string())?
    ))
}
