//! redb: one table `id -> encoded record`; a batch is one write transaction committed with
//! `Durability::Immediate`; settle = remove.

use std::path::Path;

use redb::{Database, Durability, TableDefinition};

use crate::{Engine, Op};

const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");

pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    pub fn open(dir: &Path) -> RedbStore {
        let db = Database::create(dir.join("store.redb")).expect("redb create");
        let tx = db.begin_write().expect("begin");
        tx.open_table(MESSAGES).expect("table");
        tx.commit().expect("commit");
        RedbStore { db }
    }
}

fn io(err: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(err)
}

impl Engine for RedbStore {
    fn commit(&mut self, ops: Vec<Op>) -> std::io::Result<()> {
        let mut tx = self.db.begin_write().map_err(io)?;
        tx.set_durability(Durability::Immediate).map_err(io)?;
        {
            let mut table = tx.open_table(MESSAGES).map_err(io)?;
            for op in ops {
                match op {
                    Op::Enqueue { id, payload } => {
                        table.insert(id, payload.as_slice()).map_err(io)?;
                    }
                    Op::Settle { id } => {
                        table.remove(id).map_err(io)?;
                    }
                }
            }
        }
        tx.commit().map_err(io)
    }

    fn fsyncs(&self) -> Option<u64> {
        None
    }

    fn close(self: Box<Self>) {
        drop(self.db);
    }
}

/// Opens an existing database (repairing it after an unclean shutdown) and counts the messages.
pub fn recover(dir: &Path) -> Result<String, String> {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let db = Database::create(dir.join("store.redb")).map_err(|e| e.to_string())?;
    let tx = db.begin_read().map_err(|e| e.to_string())?;
    let table = tx.open_table(MESSAGES).map_err(|e| e.to_string())?;
    Ok(format!("live={}", table.len().map_err(|e| e.to_string())?))
}
