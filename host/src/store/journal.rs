//! The journal on disk: numbered segment files of checksummed records, read back at start-up
//! (recovery) and appended to by one writer thread (group commit), which also deletes segments
//! whose records are all settled and moves the few live records out of old segments
//! (compaction), so disk use follows the live messages rather than history.
//!
//! Invariants that make recovery right:
//! - records are applied in file order: segment number, then offset;
//! - segments are deleted oldest first and only when none of their records is live, so a
//!   settle record is never deleted while the message it settles is still on disk;
//! - only live records are relocated, so a settled message is never written again;
//! - a relocated record keeps its journal id; recovery keeps one copy per id.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{IoSlice, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::record::{
    check_framing, kv_key, kv_plugin_prefix, scoped_key, Enqueue, Framed, Record, MAGIC,
    RECORD_HEADER,
};

/// Journal ids are sequential numbers: SipHash would be wasted work on them.
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // Spread sequential ids over the table's high and low bits.
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by journal id.
pub type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

/// Where a live record sits.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    len: u64,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    size: u64,
    /// Live records (unsettled messages, existing durable subscriptions) in it.
    live: u64,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Unsettled messages, in journal-id (arrival) order.
    pub messages: Vec<Enqueue>,
    /// Durable subscriptions.
    pub durables: Vec<RecoveredDurable>,
    /// Plugins' persisted kv entries (expired ones included: the owner drops those).
    pub kv: Vec<RecoveredKv>,
    /// Bytes cut from the end of the last segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Bytes skipped in older segments after a corrupt record.
    pub skipped_bytes: u64,
    /// Segment files read.
    pub segments: usize,
    /// The highest journal id seen (ids continue after it).
    pub max_id: u64,
}

/// A durable subscription read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecoveredDurable {
    /// Its virtual host as journaled (empty for the default `/`).
    pub vhost: Bytes,
    /// The subscription's queue name.
    pub queue: Bytes,
    /// The `/topic/` it collects from.
    pub topic: Bytes,
}

/// A plugin's kv entry read back from the journal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecoveredKv {
    /// The vhost of its store as journaled (empty for the default `/`).
    pub vhost: Bytes,
    /// The plugin's configured name.
    pub plugin: Bytes,
    /// The key.
    pub key: Bytes,
    /// The value.
    pub value: Bytes,
    /// When it expires (unix ms), 0 for never.
    pub expires_at: u64,
}

/// A record the writer is asked to append.
#[derive(Debug)]
pub enum Op {
    /// An encoded enqueue record: `framed` then `body` (the message body, written from the
    /// message's own buffer, not copied).
    Enqueue {
        /// The message's journal id.
        id: u64,
        /// The record's framing and fields up to the body's length
        /// ([`EnqueueRef::encode_split`](super::record::EnqueueRef::encode_split)).
        framed: Bytes,
        /// The message body, the rest of the record.
        body: Bytes,
    },
    /// Settles the message with this journal id (the writer encodes the record; nothing is
    /// written for an id never journaled).
    Settle {
        /// The enqueue's journal id.
        id: u64,
    },
    /// An encoded [`Record::DurableCreate`].
    DurableCreate {
        /// The subscription's key: its queue name scoped by its vhost
        /// ([`scoped_key`]), the key of the live record.
        queue: Bytes,
        /// The whole encoded record.
        framed: Bytes,
    },
    /// An encoded [`Record::DurableRemove`].
    DurableRemove {
        /// The subscription's key, as in its [`Op::DurableCreate`].
        queue: Bytes,
        /// The whole encoded record.
        framed: Bytes,
    },
    /// An encoded [`Record::KvPut`].
    KvPut {
        /// The entry's [`kv_key`], the key of the live record.
        key: Bytes,
        /// The whole encoded record.
        framed: Bytes,
    },
    /// An encoded [`Record::KvDelete`].
    KvDelete {
        /// The entry's [`kv_key`].
        key: Bytes,
        /// The whole encoded record.
        framed: Bytes,
    },
    /// An encoded [`Record::KvClear`].
    KvClear {
        /// The plugin's [`kv_plugin_prefix`].
        prefix: Bytes,
        /// The whole encoded record.
        framed: Bytes,
    },
}

/// The journal as the writer thread owns it.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    head: u64,
    head_file: File,
    segment_bytes: u64,
    /// Sync segment files and the directory when segments start and end (not with
    /// `fsync = "never"`).
    sync_files: bool,
    messages: IdMap<Location>,
    durables: HashMap<Bytes, Location>,
    /// Live kv entries by [`kv_key`].
    kvs: HashMap<Bytes, Location>,
    /// Bytes of live records.
    pub live_bytes: u64,
    /// The pieces of the batch being written (one vectored write).
    chunks: Vec<Bytes>,
    /// Bytes of the head segment known to be on disk (synced).
    synced: u64,
    /// What was written to the head since it was last synced: written again if a sync fails
    /// (after a failed fsync the kernel may have dropped those pages). Kept only when the
    /// journal is synced at all.
    unsynced: Vec<Bytes>,
    /// An append that did not reach the file (the disk was full...): written at recovery.
    unwritten: Vec<Bytes>,
    /// A sync failed: `unsynced` must be written again before the head can be trusted.
    resync: bool,
    /// Fails the next operations (tests of recovery).
    #[cfg(test)]
    pub(crate) inject: Option<Inject>,
    scratch: BytesMut,
    /// Deletes dead segment files off the writer thread.
    reaper: std::sync::mpsc::Sender<PathBuf>,
}

/// What one call to [`Journal::append`] did.
#[derive(Debug, Default)]
pub struct Appended {
    /// Records written.
    pub records: u64,
    /// Bytes written to the head segment.
    pub bytes: u64,
    /// Enqueue records settled before they were written (neither is written).
    pub cancelled: u64,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.journal"))
}

fn segment_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let number = name.strip_suffix(".journal")?;
    (number.len() == 16).then(|| number.parse().ok()).flatten()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Reads every segment in `dir` (created if missing), truncating a torn or corrupt tail
    /// of the last one, and starts a fresh head segment after them.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        sync_files: bool,
    ) -> std::io::Result<(Journal, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut numbers: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().and_then(|e| segment_number(&e.path())))
            .collect();
        numbers.sort_unstable();
        let mut recovered = Recovered {
            segments: numbers.len(),
            ..Recovered::default()
        };
        let mut segments = BTreeMap::new();
        let mut messages: HashMap<u64, (Location, Enqueue)> = HashMap::new();
        let mut durables: HashMap<Bytes, (Location, RecoveredDurable)> = HashMap::new();
        let mut kvs: HashMap<Bytes, (Location, RecoveredKv)> = HashMap::new();
        let last = numbers.last().copied();
        for &number in &numbers {
            let path = segment_path(dir, number);
            let mut data = Vec::new();
            File::open(&path)?.read_to_end(&mut data)?;
            let data = Bytes::from(data);
            let is_last = Some(number) == last;
            let good_end = if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
                warn!(segment = %path.display(), "journal segment without a valid header: ignored");
                0
            } else {
                let mut live = Live {
                    messages: &mut messages,
                    durables: &mut durables,
                    kvs: &mut kvs,
                };
                read_records(&data, number, &mut recovered, &mut live)
            };
            let bad = data.len() as u64 - good_end as u64;
            if bad > 0 && good_end > 0 {
                if is_last {
                    warn!(segment = %path.display(), bytes = bad, "journal: torn or corrupt tail truncated");
                    let file = OpenOptions::new().write(true).open(&path)?;
                    file.set_len(good_end as u64)?;
                    file.sync_all()?;
                    recovered.truncated_bytes += bad;
                } else {
                    warn!(segment = %path.display(), bytes = bad, "journal: corrupt record; the rest of this segment is skipped");
                    recovered.skipped_bytes += bad;
                }
            }
            segments.insert(
                number,
                Segment {
                    path,
                    size: good_end.max(MAGIC.len()) as u64,
                    live: 0,
                },
            );
        }
        let mut live_bytes = 0;
        for (location, _) in messages.values() {
            if let Some(segment) = segments.get_mut(&location.segment) {
                segment.live += 1;
            }
            live_bytes += location.len;
        }
        let live_locations = durables
            .values()
            .map(|(l, _)| l)
            .chain(kvs.values().map(|(l, _)| l));
        for location in live_locations {
            if let Some(segment) = segments.get_mut(&location.segment) {
                segment.live += 1;
            }
            live_bytes += location.len;
        }
        let head = last.map_or(1, |n| n + 1);
        let head_file = create_segment(dir, head, sync_files)?;
        segments.insert(
            head,
            Segment {
                path: segment_path(dir, head),
                size: MAGIC.len() as u64,
                live: 0,
            },
        );
        // Split the recovered messages from their locations (without copying them).
        let mut locations = IdMap::default();
        let mut found = Vec::with_capacity(messages.len());
        for (id, (location, enqueue)) in messages {
            locations.insert(id, location);
            found.push(enqueue);
        }
        found.sort_unstable_by_key(|e| e.id);
        recovered.messages = found;
        let mut subs: Vec<RecoveredDurable> = durables
            .values()
            .map(|(_, durable)| durable.clone())
            .collect();
        subs.sort();
        recovered.durables = subs;
        let mut entries: Vec<RecoveredKv> = kvs.values().map(|(_, kv)| kv.clone()).collect();
        entries.sort();
        recovered.kv = entries;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            segments,
            head,
            head_file,
            segment_bytes,
            sync_files,
            messages: locations,
            durables: durables.into_iter().map(|(q, (l, _))| (q, l)).collect(),
            kvs: kvs.into_iter().map(|(k, (l, _))| (k, l)).collect(),
            live_bytes,
            chunks: Vec::new(),
            synced: MAGIC.len() as u64,
            unsynced: Vec::new(),
            unwritten: Vec::new(),
            resync: false,
            #[cfg(test)]
            inject: None,
            scratch: BytesMut::new(),
            reaper: start_reaper(dir.to_path_buf(), sync_files)?,
        };
        journal.delete_dead_segments()?;
        Ok((journal, recovered))
    }

    /// Appends a batch to the head segment in one write (not synced: see [`Journal::sync`]).
    /// The batch is taken out of `ops` once nothing can fail before the records are placed
    /// (starting a new segment can): after an error, `ops` is either untouched (append it
    /// again) or empty, its records waiting for [`Journal::recover`].
    pub fn append(&mut self, ops: &mut Vec<Op>) -> std::io::Result<Appended> {
        if self.segments[&self.head].size >= self.segment_bytes {
            self.roll()?;
        }
        let ops = std::mem::take(ops);
        let mut done = Appended::default();
        // An enqueue settled within the same batch is written by neither record.
        let mut in_batch: IdMap<usize> = IdMap::default();
        let mut cancelled = vec![false; ops.len()];
        for (index, op) in ops.iter().enumerate() {
            match op {
                Op::Enqueue { id, .. } => {
                    in_batch.insert(*id, index);
                }
                Op::Settle { id } => {
                    if let Some(at) = in_batch.remove(id) {
                        cancelled[at] = true;
                        cancelled[index] = true;
                        done.cancelled += 1;
                    }
                }
                _ => {}
            }
        }
        let head = self.head;
        let mut offset = self.segments[&head].size;
        self.chunks.clear();
        for (op, cancelled) in ops.into_iter().zip(cancelled) {
            if cancelled {
                continue;
            }
            let location = |len: usize| Location {
                segment: head,
                offset,
                len: len as u64,
            };
            match op {
                Op::Enqueue { id, framed, body } => {
                    let len = framed.len() + body.len();
                    self.add_live(head, len);
                    self.messages.insert(id, location(len));
                    offset += len as u64;
                    self.chunks.push(framed);
                    if !body.is_empty() {
                        self.chunks.push(body);
                    }
                }
                Op::Settle { id } => {
                    let Some(old) = self.messages.remove(&id) else {
                        continue; // never journaled (or already settled)
                    };
                    self.drop_live(old);
                    Record::Settle { id }.encode(&mut self.scratch);
                    let record = self.scratch.split().freeze();
                    offset += record.len() as u64;
                    self.chunks.push(record);
                }
                Op::DurableCreate { queue, framed } => {
                    self.add_live(head, framed.len());
                    if let Some(old) = self.durables.insert(queue, location(framed.len())) {
                        self.drop_live(old);
                    }
                    offset += framed.len() as u64;
                    self.chunks.push(framed);
                }
                Op::DurableRemove { queue, framed } => {
                    if let Some(old) = self.durables.remove(&queue) {
                        self.drop_live(old);
                    }
                    offset += framed.len() as u64;
                    self.chunks.push(framed);
                }
                Op::KvPut { key, framed } => {
                    self.add_live(head, framed.len());
                    if let Some(old) = self.kvs.insert(key, location(framed.len())) {
                        self.drop_live(old);
                    }
                    offset += framed.len() as u64;
                    self.chunks.push(framed);
                }
                Op::KvDelete { key, framed } => {
                    if let Some(old) = self.kvs.remove(&key) {
                        self.drop_live(old);
                    }
                    offset += framed.len() as u64;
                    self.chunks.push(framed);
                }
                Op::KvClear { prefix, framed } => {
                    let gone: Vec<Bytes> = self
                        .kvs
                        .keys()
                        .filter(|k| k.starts_with(&prefix))
                        .cloned()
                        .collect();
                    for key in gone {
                        if let Some(old) = self.kvs.remove(&key) {
                            self.drop_live(old);
                        }
                    }
                    offset += framed.len() as u64;
                    self.chunks.push(framed);
                }
            }
            done.records += 1;
        }
        if !self.chunks.is_empty() {
            if let Err(err) = self.write_head() {
                // The index already points at where these records go: they are written there
                // by `recover` (after cutting off whatever part of them reached the file).
                self.unwritten = std::mem::take(&mut self.chunks);
                return Err(err);
            }
            let head_size = &mut self.segments.get_mut(&head).expect("head exists").size;
            done.bytes = offset - *head_size;
            *head_size = offset;
            if self.sync_files {
                self.unsynced.append(&mut self.chunks);
            }
            self.chunks.clear();
        }
        Ok(done)
    }

    fn write_head(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.inject.as_mut().is_some_and(|i| i.fails(Inject::WRITE)) {
            // A partial write, as on a full disk.
            let half = &self.chunks[0][..self.chunks[0].len() / 2];
            self.head_file.write_all(half)?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        write_all_chunks(&mut self.head_file, &self.chunks)
    }

    /// Whether a failed write or sync is waiting for [`Journal::recover`].
    pub fn needs_recovery(&self) -> bool {
        !self.unwritten.is_empty() || self.resync
    }

    /// After a failed write or sync: cuts the head back to what is known good, writes again
    /// what may not have reached the disk, and syncs. Until it succeeds nothing else is
    /// appended; the index keeps pointing where the records will be.
    pub fn recover(&mut self) -> std::io::Result<()> {
        let head_size = self.segments[&self.head].size;
        let keep = if self.resync { self.synced } else { head_size };
        self.head_file.set_len(keep)?;
        self.chunks.clear();
        if self.resync {
            self.chunks.extend(self.unsynced.iter().cloned());
        }
        self.chunks.extend(self.unwritten.iter().cloned());
        if !self.chunks.is_empty() {
            self.write_head()?;
        }
        let written: u64 = self.unwritten.iter().map(|c| c.len() as u64).sum();
        self.segments.get_mut(&self.head).expect("head exists").size = head_size + written;
        if self.sync_files {
            self.unsynced.append(&mut self.unwritten);
        }
        self.unwritten.clear();
        self.chunks.clear();
        self.sync()?;
        self.resync = false;
        Ok(())
    }

    fn add_live(&mut self, segment: u64, len: usize) {
        self.segments
            .get_mut(&segment)
            .expect("segment exists")
            .live += 1;
        self.live_bytes += len as u64;
    }

    fn drop_live(&mut self, location: Location) {
        if let Some(segment) = self.segments.get_mut(&location.segment) {
            segment.live = segment.live.saturating_sub(1);
        }
        self.live_bytes = self.live_bytes.saturating_sub(location.len);
    }

    /// Makes everything appended so far durable. When it fails, what was written since the
    /// last sync is written again by [`Journal::recover`].
    pub fn sync(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.inject.as_mut().is_some_and(|i| i.fails(Inject::SYNC)) {
            self.resync = true;
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        if let Err(err) = self.head_file.sync_data() {
            self.resync = true;
            return Err(err);
        }
        self.synced = self.segments[&self.head].size;
        self.unsynced.clear();
        Ok(())
    }

    fn roll(&mut self) -> std::io::Result<()> {
        if self.sync_files {
            self.sync()?;
        }
        let next = self.head + 1;
        self.head_file = create_segment(&self.dir, next, self.sync_files)?;
        self.head = next;
        self.synced = MAGIC.len() as u64;
        self.unsynced.clear();
        self.segments.insert(
            next,
            Segment {
                path: segment_path(&self.dir, next),
                size: MAGIC.len() as u64,
                live: 0,
            },
        );
        Ok(())
    }

    /// Deletes dead segments from the oldest end, then, when the journal holds much more than
    /// its live records, moves the live records of the oldest segment to the head (synced) and
    /// deletes it. Returns the number of records moved.
    pub fn compact(&mut self, sync: bool) -> std::io::Result<u64> {
        self.delete_dead_segments()?;
        // A new segment, if one is due, before the index is changed below: starting it is what
        // can fail before the relocated records are placed.
        if self.segments[&self.head].size >= self.segment_bytes {
            self.roll()?;
        }
        let disk = self.disk_bytes();
        let worth_it =
            self.segments.len() >= 3 && disk > 2 * self.live_bytes + 2 * self.segment_bytes;
        if !worth_it {
            return Ok(0);
        }
        let (&oldest, segment) = self.segments.iter().next().expect("segments exist");
        let file = File::open(&segment.path)?;
        let mut moved = 0;
        let mut ops = Vec::new();
        for (&id, location) in &self.messages {
            if location.segment == oldest {
                ops.push(Op::Enqueue {
                    id,
                    framed: read_at(&file, location)?,
                    body: Bytes::new(),
                });
            }
        }
        for (queue, location) in &self.durables {
            if location.segment == oldest {
                ops.push(Op::DurableCreate {
                    queue: queue.clone(),
                    framed: read_at(&file, location)?,
                });
            }
        }
        for (key, location) in &self.kvs {
            if location.segment == oldest {
                ops.push(Op::KvPut {
                    key: key.clone(),
                    framed: read_at(&file, location)?,
                });
            }
        }
        ops.sort_by_key(|op| match op {
            Op::Enqueue { id, .. } => *id,
            _ => 0,
        });
        // Relocated records leave the oldest segment's live count as they are re-added.
        for op in &ops {
            let old = match op {
                Op::Enqueue { id, .. } => self.messages.remove(id),
                Op::DurableCreate { queue, .. } => self.durables.remove(queue),
                Op::KvPut { key, .. } => self.kvs.remove(key),
                _ => None,
            };
            if let Some(old) = old {
                self.drop_live(old);
            }
            moved += 1;
        }
        self.append(&mut ops)?;
        if sync {
            self.sync()?;
        }
        self.delete_dead_segments()?;
        Ok(moved)
    }

    /// Deletes segments with no live records, oldest first, stopping at the first live one
    /// (and never the head).
    fn delete_dead_segments(&mut self) -> std::io::Result<()> {
        let dead: Vec<u64> = self
            .segments
            .iter()
            .take_while(|(&n, s)| n != self.head && s.live == 0)
            .map(|(&n, _)| n)
            .collect();
        if dead.is_empty() {
            return Ok(());
        }
        for number in dead {
            let segment = self.segments.remove(&number).expect("listed above");
            // Deleted in this order by the reaper; a crash before it gets there leaves a dead
            // segment that the next start deletes again.
            let _ = self.reaper.send(segment.path);
        }
        Ok(())
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Segment files, the head included.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Unsettled messages in the journal.
    pub fn live_messages(&self) -> usize {
        self.messages.len()
    }

    /// Live plugin kv entries in the journal.
    pub fn live_kv_entries(&self) -> usize {
        self.kvs.len()
    }
}

fn read_at(file: &File, location: &Location) -> std::io::Result<Bytes> {
    let mut data = vec![0u8; location.len as usize];
    file.read_exact_at(&mut data, location.offset)?;
    Ok(Bytes::from(data))
}

fn create_segment(dir: &Path, number: u64, sync: bool) -> std::io::Result<File> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    file.write_all(MAGIC)?;
    if sync {
        file.sync_all()?;
        sync_dir(dir)?;
    }
    Ok(file)
}

/// Failures to inject in tests of recovery: the next `writes` writes and `syncs` syncs fail.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Inject {
    pub writes: u32,
    pub syncs: u32,
}

#[cfg(test)]
impl Inject {
    const WRITE: bool = true;
    const SYNC: bool = false;

    fn fails(&mut self, write: bool) -> bool {
        let left = if write {
            &mut self.writes
        } else {
            &mut self.syncs
        };
        if *left == 0 {
            return false;
        }
        *left -= 1;
        true
    }
}

/// Writes every chunk, in order, with as few vectored writes as the kernel allows.
fn write_all_chunks(file: &mut File, chunks: &[Bytes]) -> std::io::Result<()> {
    const IOV_MAX: usize = 1024;
    let (mut index, mut skip) = (0, 0);
    while index < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[index..]
            .iter()
            .take(IOV_MAX)
            .enumerate()
            .map(|(i, chunk)| IoSlice::new(if i == 0 { &chunk[skip..] } else { chunk }))
            .collect();
        let mut written = file.write_vectored(&slices)?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < chunks.len() && written >= chunks[index].len() - skip {
            written -= chunks[index].len() - skip;
            index += 1;
            skip = 0;
        }
        skip += written;
    }
    Ok(())
}

/// A thread that deletes dead segment files in the order given (an `unlink` of a large file
/// takes tens of milliseconds, which the writer thread should not wait for).
fn start_reaper(dir: PathBuf, sync: bool) -> std::io::Result<std::sync::mpsc::Sender<PathBuf>> {
    let (send, receive) = std::sync::mpsc::channel::<PathBuf>();
    std::thread::Builder::new()
        .name("plugboard-journal-reaper".to_string())
        .spawn(move || {
            while let Ok(path) = receive.recv() {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => warn!(%err, segment = %path.display(), "journal: deleting a dead segment failed"),
                }
                if sync {
                    let _ = sync_dir(&dir);
                }
            }
        })?;
    Ok(send)
}

/// What recovery has found live so far, with where each record is.
struct Live<'a> {
    messages: &'a mut HashMap<u64, (Location, Enqueue)>,
    durables: &'a mut HashMap<Bytes, (Location, RecoveredDurable)>,
    kvs: &'a mut HashMap<Bytes, (Location, RecoveredKv)>,
}

/// Applies the records of one segment; returns where its good part ends.
fn read_records(
    data: &Bytes,
    segment: u64,
    recovered: &mut Recovered,
    live: &mut Live<'_>,
) -> usize {
    let Live {
        messages,
        durables,
        kvs,
    } = live;
    let mut at = MAGIC.len();
    while at < data.len() {
        let payload_len = match check_framing(&data[at..]) {
            Framed::Good { payload_len } => payload_len,
            Framed::Incomplete | Framed::Corrupt => break,
        };
        let payload = data.slice(at + RECORD_HEADER..at + RECORD_HEADER + payload_len);
        let location = Location {
            segment,
            offset: at as u64,
            len: (RECORD_HEADER + payload_len) as u64,
        };
        match Record::decode(&payload) {
            Ok(Record::Enqueue(enqueue)) => {
                recovered.max_id = recovered.max_id.max(enqueue.id);
                // Byte strings were slices of the whole segment: copy what stays alive.
                let enqueue = Enqueue {
                    vhost: Bytes::copy_from_slice(&enqueue.vhost),
                    queue: Bytes::copy_from_slice(&enqueue.queue),
                    destination: Bytes::copy_from_slice(&enqueue.destination),
                    headers: enqueue
                        .headers
                        .iter()
                        .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
                        .collect(),
                    body: Bytes::copy_from_slice(&enqueue.body),
                    id_prefix: Bytes::copy_from_slice(&enqueue.id_prefix),
                    schedule: enqueue.schedule.map(|s| super::record::ScheduledFields {
                        owner: Bytes::copy_from_slice(&s.owner),
                        ..s
                    }),
                    ..enqueue
                };
                messages.insert(enqueue.id, (location, enqueue));
            }
            Ok(Record::Settle { id }) => {
                recovered.max_id = recovered.max_id.max(id);
                messages.remove(&id);
            }
            Ok(Record::DurableCreate {
                vhost,
                queue,
                topic,
            }) => {
                let durable = RecoveredDurable {
                    vhost: Bytes::copy_from_slice(&vhost),
                    queue: Bytes::copy_from_slice(&queue),
                    topic: Bytes::copy_from_slice(&topic),
                };
                durables.insert(scoped_key(&vhost, &queue), (location, durable));
            }
            Ok(Record::DurableRemove { vhost, queue }) => {
                durables.remove(&scoped_key(&vhost, &queue));
            }
            Ok(Record::KvPut {
                vhost,
                plugin,
                key,
                value,
                expires_at,
            }) => {
                let entry = RecoveredKv {
                    vhost: Bytes::copy_from_slice(&vhost),
                    plugin: Bytes::copy_from_slice(&plugin),
                    key: Bytes::copy_from_slice(&key),
                    value: Bytes::copy_from_slice(&value),
                    expires_at,
                };
                kvs.insert(kv_key(&vhost, &plugin, &key), (location, entry));
            }
            Ok(Record::KvDelete { vhost, plugin, key }) => {
                kvs.remove(&kv_key(&vhost, &plugin, &key));
            }
            Ok(Record::KvClear { plugin }) => {
                let prefix = kv_plugin_prefix(&plugin);
                kvs.retain(|k, _| !k.starts_with(&prefix));
            }
            Err(err) => {
                warn!(%err, offset = at, "journal: unreadable record");
                break;
            }
        }
        at += RECORD_HEADER + payload_len;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::EnqueueRef;

    fn enqueue(id: u64, body: &'static [u8]) -> Op {
        let record = EnqueueRef {
            id,
            vhost: b"",
            queue: &Bytes::from_static(b"/queue/q"),
            destination: &Bytes::from_static(b"/queue/q"),
            headers: &[],
            body: &Bytes::from_static(body),
            id_prefix: b"s",
            id_seq: id,
            expires_at: 0,
            schedule: None,
        };
        let (framed, body) = record.encode_split();
        Op::Enqueue { id, framed, body }
    }

    fn recovered_bodies(dir: &Path) -> Vec<Vec<u8>> {
        let (_, recovered) = Journal::open(dir, 1 << 20, true).unwrap();
        recovered.messages.iter().map(|m| m.body.to_vec()).collect()
    }

    #[test]
    fn a_failed_write_is_written_again_in_place_by_recover() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, _) = Journal::open(dir.path(), 1 << 20, true).unwrap();
            journal.append(&mut vec![enqueue(1, b"one")]).unwrap();
            journal.sync().unwrap();
            journal.inject = Some(Inject {
                writes: 2,
                syncs: 0,
            });
            let mut batch = vec![enqueue(2, b"two"), enqueue(3, b"three")];
            assert!(
                journal.append(&mut batch).is_err(),
                "half of it reached the file"
            );
            assert!(batch.is_empty() && journal.needs_recovery());
            assert!(journal.recover().is_err(), "still failing");
            journal.recover().unwrap();
            assert!(!journal.needs_recovery());
            journal.append(&mut vec![enqueue(4, b"four")]).unwrap();
            journal.sync().unwrap();
        }
        let bodies = recovered_bodies(dir.path());
        assert_eq!(
            bodies,
            [&b"one"[..], b"two", b"three", b"four"],
            "no torn record, nothing twice"
        );
    }

    #[test]
    fn what_a_failed_sync_covered_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut journal, _) = Journal::open(dir.path(), 1 << 20, true).unwrap();
            journal.append(&mut vec![enqueue(1, b"one")]).unwrap();
            journal.sync().unwrap();
            journal.append(&mut vec![enqueue(2, b"two")]).unwrap();
            journal.inject = Some(Inject {
                writes: 0,
                syncs: 1,
            });
            assert!(journal.sync().is_err());
            assert!(journal.needs_recovery());
            journal.recover().unwrap();
        }
        assert_eq!(recovered_bodies(dir.path()), [&b"one"[..], b"two"]);
    }

    #[test]
    fn a_segment_that_cannot_start_leaves_the_batch_to_append_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path(), 64, true).unwrap();
        journal
            .append(&mut vec![enqueue(1, b"fills the first segment")])
            .unwrap();
        // The next append starts a new segment; make its creation fail.
        let blocker = segment_path(dir.path(), journal.head + 1);
        std::fs::write(&blocker, b"in the way").unwrap();
        let mut batch = vec![enqueue(2, b"two")];
        assert!(journal.append(&mut batch).is_err());
        assert_eq!(batch.len(), 1, "not taken: append it again");
        assert!(!journal.needs_recovery());
        std::fs::remove_file(&blocker).unwrap();
        journal.append(&mut batch).unwrap();
        journal.sync().unwrap();
        drop(journal);
        assert_eq!(
            recovered_bodies(dir.path()),
            [&b"fills the first segment"[..], b"two"]
        );
    }
}
