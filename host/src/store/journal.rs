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

use super::record::{check_framing, Enqueue, Framed, Record, MAGIC, RECORD_HEADER};

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
    /// Durable subscriptions: (queue, topic).
    pub durables: Vec<(Bytes, Bytes)>,
    /// Bytes cut from the end of the last segment (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Bytes skipped in older segments after a corrupt record.
    pub skipped_bytes: u64,
    /// Segment files read.
    pub segments: usize,
    /// The highest journal id seen (ids continue after it).
    pub max_id: u64,
}

/// A record the writer is asked to append.
#[derive(Debug)]
pub enum Op {
    /// An encoded enqueue record: `framed` then `body` (the message body, written from the
    /// message's own buffer, not copied).
    Enqueue {
        id: u64,
        framed: Bytes,
        body: Bytes,
    },
    Settle {
        id: u64,
    },
    DurableCreate {
        queue: Bytes,
        framed: Bytes,
    },
    DurableRemove {
        queue: Bytes,
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
    /// Bytes of live records.
    pub live_bytes: u64,
    /// The pieces of the batch being written (one vectored write).
    chunks: Vec<Bytes>,
    scratch: BytesMut,
    /// Deletes dead segment files off the writer thread.
    reaper: std::sync::mpsc::Sender<PathBuf>,
}

/// What one call to [`Journal::append`] did.
#[derive(Debug, Default)]
pub struct Appended {
    pub records: u64,
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
        let mut durables: HashMap<Bytes, (Location, Bytes)> = HashMap::new();
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
                read_records(&data, number, &mut recovered, &mut messages, &mut durables)
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
        for (location, _) in durables.values() {
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
        let mut subs: Vec<(Bytes, Bytes)> = durables
            .iter()
            .map(|(queue, (_, topic))| (queue.clone(), topic.clone()))
            .collect();
        subs.sort();
        recovered.durables = subs;
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            segments,
            head,
            head_file,
            segment_bytes,
            sync_files,
            messages: locations,
            durables: durables.into_iter().map(|(q, (l, _))| (q, l)).collect(),
            live_bytes,
            chunks: Vec::new(),
            scratch: BytesMut::new(),
            reaper: start_reaper(dir.to_path_buf(), sync_files)?,
        };
        journal.delete_dead_segments()?;
        Ok((journal, recovered))
    }

    /// Appends a batch to the head segment in one write (not synced: see [`Journal::sync`]).
    pub fn append(&mut self, ops: Vec<Op>) -> std::io::Result<Appended> {
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
        if self.segments[&self.head].size >= self.segment_bytes {
            self.roll()?;
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
            }
            done.records += 1;
        }
        if !self.chunks.is_empty() {
            write_all_chunks(&mut self.head_file, &self.chunks)?;
            let head_size = &mut self.segments.get_mut(&head).expect("head exists").size;
            done.bytes = offset - *head_size;
            *head_size = offset;
            self.chunks.clear();
        }
        Ok(done)
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

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        self.head_file.sync_data()
    }

    fn roll(&mut self) -> std::io::Result<()> {
        if self.sync_files {
            self.head_file.sync_data()?;
        }
        let next = self.head + 1;
        self.head_file = create_segment(&self.dir, next, self.sync_files)?;
        self.head = next;
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
        ops.sort_by_key(|op| match op {
            Op::Enqueue { id, .. } => *id,
            _ => 0,
        });
        // Relocated records leave the oldest segment's live count as they are re-added.
        for op in &ops {
            let old = match op {
                Op::Enqueue { id, .. } => self.messages.remove(id),
                Op::DurableCreate { queue, .. } => self.durables.remove(queue),
                _ => None,
            };
            if let Some(old) = old {
                self.drop_live(old);
            }
            moved += 1;
        }
        self.append(ops)?;
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

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn live_messages(&self) -> usize {
        self.messages.len()
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

/// Applies the records of one segment; returns where its good part ends.
fn read_records(
    data: &Bytes,
    segment: u64,
    recovered: &mut Recovered,
    messages: &mut HashMap<u64, (Location, Enqueue)>,
    durables: &mut HashMap<Bytes, (Location, Bytes)>,
) -> usize {
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
                    queue: Bytes::copy_from_slice(&enqueue.queue),
                    destination: Bytes::copy_from_slice(&enqueue.destination),
                    headers: enqueue
                        .headers
                        .iter()
                        .map(|(n, v)| (Bytes::copy_from_slice(n), Bytes::copy_from_slice(v)))
                        .collect(),
                    body: Bytes::copy_from_slice(&enqueue.body),
                    id_prefix: Bytes::copy_from_slice(&enqueue.id_prefix),
                    ..enqueue
                };
                messages.insert(enqueue.id, (location, enqueue));
            }
            Ok(Record::Settle { id }) => {
                recovered.max_id = recovered.max_id.max(id);
                messages.remove(&id);
            }
            Ok(Record::DurableCreate { queue, topic }) => {
                durables.insert(
                    Bytes::copy_from_slice(&queue),
                    (location, Bytes::copy_from_slice(&topic)),
                );
            }
            Ok(Record::DurableRemove { queue }) => {
                durables.remove(&queue);
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
