//! The message store: what makes `persistent:true` survive a crash.
//!
//! Queues hand the store a record when a persistent message enters them ([`Store::enqueue`])
//! and when it leaves ([`Store::settle`]); durable topic subscriptions are recorded the same way.
//! Appending only queues the record in memory and returns a sequence number. One writer thread
//! takes everything queued since its last turn, writes it with one `write` and makes it durable
//! with one `fdatasync` (group commit: one sync covers many SENDs and ACKs from many
//! connections), then publishes the highest durable sequence number on a watch channel.
//! Sessions hold back a RECEIPT until the sequence number current when its frame was handled
//! is durable: a RECEIPT for a persistent SEND means "on disk".
//!
//! At start-up [`Store::open`] checks that the data directory is private (see
//! [`crate::private_fs`]; created with mode 0700 when missing), locks it and reads the journal
//! back ([`journal`]); the broker puts the unsettled messages back into their queues.

pub mod journal;
pub mod record;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::config::FsyncPolicy;
use crate::histogram::{self, Histogram};
use crate::router::Message;

use journal::{Journal, Op};
pub use journal::{Recovered, RecoveredDurable, RecoveredKv};
use record::{EnqueueRef, Record};

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The data directory: journal segments and the LOCK file. It must be private (see
    /// [`crate::private_fs`]); it is created, mode 0700, when missing.
    pub dir: PathBuf,
    /// When appended records are synced to disk.
    pub fsync: FsyncPolicy,
    /// How often records are synced under [`FsyncPolicy::Interval`].
    pub fsync_interval: Duration,
    /// Most bytes of live records; persistent SENDs beyond it get an ERROR.
    pub max_bytes: u64,
    /// A segment file is closed and a new one started past this size.
    pub segment_bytes: u64,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another broker holds the data directory's LOCK file; the directory.
    #[error("data directory {0} is in use by another broker (its LOCK file is held)")]
    Locked(PathBuf),
    /// The data directory exists but is not private.
    #[error("data directory {} is not safe to use: {reason}", dir.display())]
    NotPrivate {
        /// The data directory.
        dir: PathBuf,
        /// What makes it unsafe.
        reason: crate::private_fs::NotPrivate,
    },
    /// Creating, locking or reading the data directory, or starting the writer thread, failed.
    #[error("opening the message store in {dir}: {source}")]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Why a persistent message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// The message would take the store past [`StoreSettings::max_bytes`].
    #[error("the message store is full ({used} of {limit} bytes in use): persistent messages are refused until consumers catch up")]
    Full {
        /// Bytes of live, queued and reserved records before this message.
        used: u64,
        /// [`StoreSettings::max_bytes`].
        limit: u64,
    },
    /// The store cannot write now (a full disk, an I/O error); the reason. It retries every
    /// second and accepts messages again once a write succeeds.
    #[error("the message store cannot write ({0}): persistent messages are refused until it can")]
    Failed(String),
}

/// Counters and gauges for the status page.
#[derive(Debug)]
pub struct StoreStats {
    /// Records handed to the store: enqueues, settles, durable subscriptions made and removed.
    pub records_appended: AtomicU64,
    /// Records the writer wrote (an enqueue settled in the same batch is never written, nor is
    /// its settle).
    pub records_written: AtomicU64,
    /// Bytes the writer appended for those records (compaction's moves not included).
    pub bytes_written: AtomicU64,
    /// Batches written: each is one `write` (group commit).
    pub batches: AtomicU64,
    /// Syncs of the journal, by the writer and by compaction.
    pub fsyncs: AtomicU64,
    /// Persistent messages settled before they reached the disk (never written).
    pub cancelled: AtomicU64,
    /// Live records compaction moved out of old segments.
    pub relocated: AtomicU64,
    /// Gauge: unsettled messages in the journal (updated after every batch).
    pub live_messages: AtomicU64,
    /// Gauge: bytes of live records, what [`StoreSettings::max_bytes`] bounds.
    pub live_bytes: AtomicU64,
    /// Gauge: bytes of segment files on disk.
    pub disk_bytes: AtomicU64,
    /// Gauge: segment files on disk, the one being written included.
    pub segments: AtomicU64,
    /// How long the writer's syncs of the journal took, ns (only the writer observes it).
    pub fsync_ns: Histogram,
    /// Records written between two syncs of the writer.
    pub records_per_fsync: Histogram,
    /// Records written since the writer's last sync (the writer's own count).
    records_unsynced: AtomicU64,
}

impl Default for StoreStats {
    fn default() -> StoreStats {
        StoreStats {
            records_appended: AtomicU64::default(),
            records_written: AtomicU64::default(),
            bytes_written: AtomicU64::default(),
            batches: AtomicU64::default(),
            fsyncs: AtomicU64::default(),
            cancelled: AtomicU64::default(),
            relocated: AtomicU64::default(),
            live_messages: AtomicU64::default(),
            live_bytes: AtomicU64::default(),
            disk_bytes: AtomicU64::default(),
            segments: AtomicU64::default(),
            fsync_ns: Histogram::new(histogram::DURATION_BOUNDS_NS),
            records_per_fsync: Histogram::new(histogram::COUNT_BOUNDS),
            records_unsynced: AtomicU64::default(),
        }
    }
}

/// Room in the store held for records about to be journaled (see [`Store::reserve`]).
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.shared.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Records waiting for the writer.
#[derive(Debug, Default)]
struct Inbox {
    ops: Vec<Op>,
    /// Sequence number of the last record queued.
    appended: u64,
    /// Bytes of enqueue records queued and not yet accounted by the writer.
    pending_bytes: u64,
    closing: bool,
}

#[derive(Debug)]
struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    durable: watch::Sender<u64>,
    /// `Inbox::appended`, readable without the lock (sessions read it after every frame
    /// that may journal).
    appended: AtomicU64,
    stats: StoreStats,
    /// Why the store cannot write now, while it cannot.
    failed: Mutex<Option<String>>,
    /// Bytes admitted by [`Store::reserve`] and not journaled yet.
    reserved: AtomicU64,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_failure(&self, reason: Option<String>) {
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }
}

/// The store of one broker, as one virtual host writes to it: every handle of every vhost
/// shares one journal, one writer and one id sequence ([`Store::in_vhost`]); a handle only
/// says which vhost the records it appends belong to.
#[derive(Debug)]
pub struct Store {
    core: Arc<Core>,
    /// The vhost its records are journaled under (empty for the default `/`).
    vhost: Bytes,
}

/// What every handle of a store shares; the writer stops when the last handle is gone.
#[derive(Debug)]
struct Core {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    next_id: AtomicU64,
    max_bytes: u64,
    dir: PathBuf,
    /// Held (locked) while the broker runs.
    _lock: File,
}

impl Store {
    /// Checks that `settings.dir` is private (creating it, mode 0700, if it is missing), locks
    /// it, reads the journal back and starts the writer thread.
    pub fn open(settings: &StoreSettings) -> Result<(Arc<Store>, Recovered), OpenError> {
        let dir = settings.dir.clone();
        let io = |source| OpenError::Io {
            dir: dir.clone(),
            source,
        };
        private_data_dir(&dir, crate::private_fs::private_dir)?;
        let lock = lock_dir(&dir)?;
        let sync_files = settings.fsync != FsyncPolicy::Never;
        let (journal, recovered) =
            Journal::open(&dir, settings.segment_bytes, sync_files).map_err(io)?;
        info!(
            dir = %dir.display(),
            messages = recovered.messages.len(),
            durable_subscriptions = recovered.durables.len(),
            truncated_bytes = recovered.truncated_bytes,
            "message store opened"
        );
        let (durable, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inbox: Mutex::default(),
            wake: Condvar::new(),
            durable,
            appended: AtomicU64::new(0),
            stats: StoreStats::default(),
            failed: Mutex::new(None),
            reserved: AtomicU64::new(0),
        });
        publish_gauges(&shared.stats, &journal);
        let writer = {
            let shared = shared.clone();
            let fsync = settings.fsync;
            let interval = settings.fsync_interval;
            std::thread::Builder::new()
                .name("plugboard-journal".to_string())
                .spawn(move || write_loop(journal, &shared, fsync, interval))
                .map_err(io)?
        };
        let store = Core {
            shared,
            writer: Mutex::new(Some(writer)),
            next_id: AtomicU64::new(recovered.max_id + 1),
            max_bytes: settings.max_bytes,
            dir,
            _lock: lock,
        };
        let store = Store {
            core: Arc::new(store),
            vhost: Bytes::new(),
        };
        Ok((Arc::new(store), recovered))
    }

    /// A handle on the same store whose records belong to virtual host `vhost` (as journal
    /// records name it: empty for the default `/`).
    pub fn in_vhost(&self, vhost: Bytes) -> Arc<Store> {
        Arc::new(Store {
            core: self.core.clone(),
            vhost,
        })
    }

    /// The vhost this handle journals under (empty for the default `/`).
    pub fn vhost(&self) -> &Bytes {
        &self.vhost
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.core.dir
    }

    /// Counters and gauges for the status page.
    pub fn stats(&self) -> &StoreStats {
        &self.core.shared.stats
    }

    /// Why the store does not accept persistent messages now, if it does not.
    pub fn failure(&self) -> Option<String> {
        self.core.shared.failure()
    }

    /// Reserves room for persistent records of about `bytes` (every copy a message will be
    /// journaled as: one per queue, one per durable subscription of a topic), or refuses when
    /// the store is full or cannot write. The room is held until the reservation is dropped:
    /// after the records were appended (they then count as journaled), or when a transaction
    /// holding them is aborted.
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, Refused> {
        if let Some(reason) = self.core.shared.failure() {
            return Err(Refused::Failed(reason));
        }
        let reserved = self.core.shared.reserved.fetch_add(bytes, Ordering::AcqRel);
        let used = self.core.shared.stats.live_bytes.load(Ordering::Relaxed)
            + self.core.shared.inbox().pending_bytes
            + reserved;
        let reservation = Reservation {
            shared: self.core.shared.clone(),
            bytes,
        };
        if used + bytes > self.core.max_bytes {
            drop(reservation);
            return Err(Refused::Full {
                used,
                limit: self.core.max_bytes,
            });
        }
        Ok(reservation)
    }

    /// Records a persistent message entering `queue`; returns its journal id.
    pub fn enqueue(&self, queue: &Bytes, message: &Message) -> u64 {
        self.append_enqueue(queue, message, None)
    }

    /// Records a persistent message waiting in the scheduler for `target` (a `/queue/` or
    /// `/topic/`) under `schedule`; returns its journal id (settled when it is delivered for
    /// the last time, or replaced by the record of its next repeat).
    pub fn enqueue_scheduled(
        &self,
        target: &Bytes,
        message: &Message,
        schedule: &record::ScheduledFields,
    ) -> u64 {
        self.append_enqueue(target, message, Some(schedule))
    }

    /// Replaces the scheduled record `old` with one for the same message under `schedule`
    /// (its next repeat): both records go to the writer together, in one batch. Returns the
    /// new record's journal id.
    pub fn replace_scheduled(
        &self,
        old: u64,
        target: &Bytes,
        message: &Message,
        schedule: &record::ScheduledFields,
    ) -> u64 {
        let (id, op, len) = self.enqueue_op(target, message, Some(schedule));
        let mut inbox = self.core.shared.inbox();
        let wake = inbox.ops.is_empty();
        inbox.ops.push(op);
        inbox.ops.push(Op::Settle { id: old });
        inbox.appended += 2;
        inbox.pending_bytes += len;
        self.core
            .shared
            .appended
            .store(inbox.appended, Ordering::Release);
        drop(inbox);
        self.core
            .shared
            .stats
            .records_appended
            .fetch_add(2, Ordering::Relaxed);
        if wake {
            self.core.shared.wake.notify_one();
        }
        id
    }

    fn append_enqueue(
        &self,
        queue: &Bytes,
        message: &Message,
        schedule: Option<&record::ScheduledFields>,
    ) -> u64 {
        let (id, op, len) = self.enqueue_op(queue, message, schedule);
        self.push(op, len);
        id
    }

    /// An enqueue record (its id, the op, its length), not handed to the writer yet.
    fn enqueue_op(
        &self,
        queue: &Bytes,
        message: &Message,
        schedule: Option<&record::ScheduledFields>,
    ) -> (u64, Op, u64) {
        let id = self.core.next_id.fetch_add(1, Ordering::Relaxed);
        let record = EnqueueRef {
            id,
            vhost: &self.vhost,
            queue,
            destination: &message.destination,
            headers: &message.headers,
            body: &message.body,
            id_prefix: message.id_prefix.as_bytes(),
            id_seq: message.id_seq,
            expires_at: message.expires_at.unwrap_or(0),
            schedule,
        };
        // The body is not copied: the writer writes it from the message's own buffer.
        let (framed, body) = record.encode_split();
        let len = (framed.len() + body.len()) as u64;
        (id, Op::Enqueue { id, framed, body }, len)
    }

    /// Records that the message with journal id `id` left its queue.
    pub fn settle(&self, id: u64) {
        self.push(Op::Settle { id }, 0);
    }

    /// Records a durable subscription's queue and the topic it collects from.
    pub fn durable_created(&self, queue: &Bytes, topic: &Bytes) {
        let framed = frame(&Record::DurableCreate {
            vhost: self.vhost.clone(),
            queue: queue.clone(),
            topic: topic.clone(),
        });
        self.push(
            Op::DurableCreate {
                queue: record::scoped_key(&self.vhost, queue),
                framed,
            },
            0,
        );
    }

    /// Records that a durable subscription is gone (settle its messages first).
    pub fn durable_removed(&self, queue: &Bytes) {
        let framed = frame(&Record::DurableRemove {
            vhost: self.vhost.clone(),
            queue: queue.clone(),
        });
        self.push(
            Op::DurableRemove {
                queue: record::scoped_key(&self.vhost, queue),
                framed,
            },
            0,
        );
    }

    /// Records plugin `plugin`'s kv entry `key` of vhost `vhost` (as journal records name it:
    /// empty for `/`), replacing its earlier record. Not held back for: a plugin's entries are
    /// as durable as the journal's fsync policy makes them once the next batch is written.
    pub fn kv_put(&self, vhost: &[u8], plugin: &[u8], key: &[u8], value: &[u8], expires_at: u64) {
        let framed = frame(&Record::KvPut {
            vhost: Bytes::copy_from_slice(vhost),
            plugin: Bytes::copy_from_slice(plugin),
            key: Bytes::copy_from_slice(key),
            value: Bytes::copy_from_slice(value),
            expires_at,
        });
        let key = record::kv_key(vhost, plugin, key);
        self.push(Op::KvPut { key, framed }, 0);
    }

    /// Records that plugin `plugin`'s kv entry `key` of vhost `vhost` is gone.
    pub fn kv_delete(&self, vhost: &[u8], plugin: &[u8], key: &[u8]) {
        let framed = frame(&Record::KvDelete {
            vhost: Bytes::copy_from_slice(vhost),
            plugin: Bytes::copy_from_slice(plugin),
            key: Bytes::copy_from_slice(key),
        });
        let key = record::kv_key(vhost, plugin, key);
        self.push(Op::KvDelete { key, framed }, 0);
    }

    /// Records that every kv entry of plugin `plugin` (in every vhost) is gone.
    pub fn kv_clear(&self, plugin: &[u8]) {
        let framed = frame(&Record::KvClear {
            plugin: Bytes::copy_from_slice(plugin),
        });
        let prefix = record::kv_plugin_prefix(plugin);
        self.push(Op::KvClear { prefix, framed }, 0);
    }

    fn push(&self, op: Op, bytes: u64) {
        let mut inbox = self.core.shared.inbox();
        let wake = inbox.ops.is_empty();
        inbox.ops.push(op);
        inbox.appended += 1;
        inbox.pending_bytes += bytes;
        self.core
            .shared
            .appended
            .store(inbox.appended, Ordering::Release);
        drop(inbox);
        self.core
            .shared
            .stats
            .records_appended
            .fetch_add(1, Ordering::Relaxed);
        if wake {
            self.core.shared.wake.notify_one();
        }
    }

    /// Sequence number of the last record appended.
    pub fn appended(&self) -> u64 {
        self.core.shared.appended.load(Ordering::Acquire)
    }

    /// Sequence number up to which records are durable.
    pub fn durable(&self) -> u64 {
        *self.core.shared.durable.borrow()
    }

    /// Watches the durable sequence number.
    pub fn watch_durable(&self) -> watch::Receiver<u64> {
        self.core.shared.durable.subscribe()
    }

    /// Writes and syncs what is queued, then stops the writer (at shutdown; every handle of
    /// the store is then closed).
    pub fn close(&self) {
        self.core.close();
    }
}

impl Core {
    fn close(&self) {
        self.shared.inbox().closing = true;
        self.shared.wake.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.close();
    }
}

fn frame(record: &Record) -> Bytes {
    let mut out = BytesMut::new();
    record.encode(&mut out);
    out.freeze()
}

/// Refuses a data directory that exists and is not private (before anything else reads or
/// writes there, e.g. plugins compiling into the cache in it); a missing one is fine.
pub fn check_data_dir(dir: &Path) -> Result<(), OpenError> {
    private_data_dir(dir, crate::private_fs::check_existing_dir)
}

fn private_data_dir(
    dir: &Path,
    check: fn(&Path) -> Result<(), crate::private_fs::DirError>,
) -> Result<(), OpenError> {
    use crate::private_fs::DirError;
    check(dir).map_err(|e| match e {
        DirError::NotPrivate(reason) => OpenError::NotPrivate {
            dir: dir.to_path_buf(),
            reason,
        },
        DirError::Io(source) => OpenError::Io {
            dir: dir.to_path_buf(),
            source,
        },
    })
}

/// Takes the data directory's lock, so two brokers never share a journal.
fn lock_dir(dir: &Path) -> Result<File, OpenError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("LOCK");
    // Never through a symbolic link: it would lock (and truncate) a file elsewhere.
    let mut file = crate::private_fs::no_follow(
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600),
    )
    .open(&path)
    .map_err(|source| OpenError::Io {
        dir: dir.to_path_buf(),
        source,
    })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(OpenError::Io {
                dir: dir.to_path_buf(),
                source,
            })
        }
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

fn publish_gauges(stats: &StoreStats, journal: &Journal) {
    stats
        .live_messages
        .store(journal.live_messages() as u64, Ordering::Relaxed);
    stats
        .live_bytes
        .store(journal.live_bytes, Ordering::Relaxed);
    stats
        .disk_bytes
        .store(journal.disk_bytes(), Ordering::Relaxed);
    stats
        .segments
        .store(journal.segment_count() as u64, Ordering::Relaxed);
}

/// How often a store that cannot write tries again: a full disk is freed by a person or a
/// cleanup job, so a second is prompt, and a failing attempt costs one write and one sync.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The writer thread: group commit until closed. When writing or syncing fails (a full disk,
/// an I/O error) the store stops taking persistent messages and tries again every
/// [`RETRY_EVERY`], writing again whatever may not have reached the disk; RECEIPTs waiting
/// for those records go out once it succeeds. Nothing already receipted depends on it.
fn write_loop(mut journal: Journal, shared: &Shared, fsync: FsyncPolicy, interval: Duration) {
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    // A batch that could not be placed at all (a new segment could not be started).
    let mut retry: Vec<Op> = Vec::new();
    // While failing: the durable sequence number to publish once the store can write again.
    let mut failing: Option<u64> = None;
    loop {
        if let Some(upto) = failing {
            let closing = wait_for_retry(shared);
            let recovered = if journal.needs_recovery() {
                journal.recover()
            } else {
                Ok(())
            }
            .and_then(|()| {
                write_batch(
                    &mut journal,
                    shared,
                    &mut retry,
                    FsyncPolicy::Batch,
                    interval,
                    &mut last_sync,
                    &mut unsynced,
                )
            });
            match recovered {
                Ok(()) => {
                    info!("message store writes again: persistent messages are accepted");
                    failing = None;
                    shared.set_failure(None);
                    shared.durable.send_replace(upto);
                }
                Err(err) => {
                    shared.set_failure(Some(err.to_string()));
                    if closing {
                        error!(%err, "message store closed while it could not write");
                        break;
                    }
                    continue;
                }
            }
        }
        let (mut ops, upto, closing) = {
            let mut inbox = shared.inbox();
            while inbox.ops.is_empty() && !inbox.closing {
                if fsync == FsyncPolicy::Interval && unsynced {
                    let left = interval.saturating_sub(last_sync.elapsed());
                    let (guard, timeout) = shared
                        .wake
                        .wait_timeout(inbox, left)
                        .unwrap_or_else(|e| e.into_inner());
                    inbox = guard;
                    if timeout.timed_out() {
                        break;
                    }
                } else {
                    inbox = shared.wake.wait(inbox).unwrap_or_else(|e| e.into_inner());
                }
            }
            inbox.pending_bytes = 0;
            (
                std::mem::take(&mut inbox.ops),
                inbox.appended,
                inbox.closing,
            )
        };
        let result = write_batch(
            &mut journal,
            shared,
            &mut ops,
            fsync,
            interval,
            &mut last_sync,
            &mut unsynced,
        );
        match result {
            Ok(()) => {
                // The gauges, then RECEIPTs (a client that has its receipt and reads the metrics
                // sees its message counted), then housekeeping (deleting and moving segments).
                publish_gauges(&shared.stats, &journal);
                shared.durable.send_replace(upto);
                if let Err(err) = compact(&mut journal, shared, fsync) {
                    if journal.needs_recovery() {
                        error!(%err, "message store write failed while compacting: persistent messages are refused until it can write again");
                        shared.set_failure(Some(err.to_string()));
                        failing = Some(upto);
                    } else {
                        warn!(%err, "message store compaction failed; it is tried again later");
                    }
                }
            }
            Err(err) => {
                error!(%err, "message store write failed: persistent messages are refused until it can write again");
                shared.set_failure(Some(err.to_string()));
                retry = ops;
                failing = Some(upto);
            }
        }
        publish_gauges(&shared.stats, &journal);
        if closing && failing.is_none() && shared.inbox().ops.is_empty() {
            if unsynced && fsync != FsyncPolicy::Never {
                let _ = journal.sync();
            }
            break;
        }
    }
}

/// Waits [`RETRY_EVERY`] (less when the store is closing); returns whether it is closing.
fn wait_for_retry(shared: &Shared) -> bool {
    let inbox = shared.inbox();
    if inbox.closing {
        return true;
    }
    let (inbox, _) = shared
        .wake
        .wait_timeout_while(inbox, RETRY_EVERY, |inbox| !inbox.closing)
        .unwrap_or_else(|e| e.into_inner());
    inbox.closing
}

fn write_batch(
    journal: &mut Journal,
    shared: &Shared,
    ops: &mut Vec<Op>,
    fsync: FsyncPolicy,
    interval: Duration,
    last_sync: &mut Instant,
    unsynced: &mut bool,
) -> std::io::Result<()> {
    let stats = &shared.stats;
    if !ops.is_empty() {
        let appended = journal.append(ops)?;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .records_written
            .fetch_add(appended.records, Ordering::Relaxed);
        stats
            .records_unsynced
            .fetch_add(appended.records, Ordering::Relaxed);
        stats
            .bytes_written
            .fetch_add(appended.bytes, Ordering::Relaxed);
        stats
            .cancelled
            .fetch_add(appended.cancelled, Ordering::Relaxed);
        *unsynced |= appended.bytes > 0;
    }
    let sync_now = match fsync {
        FsyncPolicy::Batch => *unsynced,
        FsyncPolicy::Interval => *unsynced && last_sync.elapsed() >= interval,
        FsyncPolicy::Never => false,
    };
    if sync_now {
        let started = Instant::now();
        journal.sync()?;
        stats.fsync_ns.observe(started.elapsed().as_nanos() as u64);
        stats
            .records_per_fsync
            .observe(stats.records_unsynced.swap(0, Ordering::Relaxed));
        stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        *last_sync = Instant::now();
        *unsynced = false;
    }
    Ok(())
}

/// Deletes dead segments and moves live records out of old ones.
fn compact(journal: &mut Journal, shared: &Shared, fsync: FsyncPolicy) -> std::io::Result<()> {
    let sync = fsync != FsyncPolicy::Never;
    let moved = journal.compact(sync)?;
    if moved > 0 {
        shared.stats.relocated.fetch_add(moved, Ordering::Relaxed);
        if sync {
            shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
