//! A minimal copy of the write path of host/src/store/journal.rs: numbered segment files of
//! `len:u32le crc:u32le payload` records, one `write` per batch, `fdatasync` per batch, settle
//! records, an enqueue settled in the same batch written by neither record, dead segments
//! deleted oldest first, live records of the oldest segment relocated when the journal holds
//! much more than its live records. Recovery and durable subscriptions are left out.
//!
//! `prealloc` (not what the broker does) sizes each new segment to `segment_bytes` with
//! `set_len` and writes records at their offset, so an `fdatasync` never has a file size to
//! update (fjall does this with its journal files). Recovery would have to stop at zeros.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Engine, Op};

const MAGIC: &[u8; 8] = b"PBJRNL01";
const KIND_SETTLE: u8 = 2;

/// Frames a payload as record.rs does (done on the producer's thread, like `Store::enqueue`).
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    len: u64,
}

struct Segment {
    path: PathBuf,
    size: u64,
    live: u64,
}

pub struct Journal {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    head: u64,
    head_file: File,
    segment_bytes: u64,
    messages: HashMap<u64, Location>,
    live_bytes: u64,
    buf: Vec<u8>,
    fsyncs: u64,
    prealloc: bool,
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016}.journal"))
}

impl Journal {
    /// Opens an empty journal in `dir`.
    pub fn open(dir: &Path, segment_bytes: u64, prealloc: bool) -> std::io::Result<Journal> {
        fs::create_dir_all(dir)?;
        let mut fsyncs = 0;
        let head_file = create_segment(dir, 1, &mut fsyncs, prealloc.then_some(segment_bytes))?;
        let mut segments = BTreeMap::new();
        segments.insert(
            1,
            Segment {
                path: segment_path(dir, 1),
                size: MAGIC.len() as u64,
                live: 0,
            },
        );
        Ok(Journal {
            dir: dir.to_path_buf(),
            segments,
            head: 1,
            head_file,
            segment_bytes,
            messages: HashMap::new(),
            live_bytes: 0,
            buf: Vec::new(),
            fsyncs,
            prealloc,
        })
    }

    /// `ops` carry framed enqueue records. One write, not synced.
    fn append(&mut self, ops: Vec<Op>) -> std::io::Result<()> {
        let mut in_batch: HashMap<u64, usize> = HashMap::new();
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
                    }
                }
            }
        }
        if self.segments[&self.head].size >= self.segment_bytes {
            self.roll()?;
        }
        let head = self.head;
        let mut offset = self.segments[&head].size;
        let start = offset;
        self.buf.clear();
        for (op, cancelled) in ops.into_iter().zip(cancelled) {
            if cancelled {
                continue;
            }
            match op {
                Op::Enqueue {
                    id,
                    payload: framed,
                } => {
                    self.segments.get_mut(&head).expect("head").live += 1;
                    self.live_bytes += framed.len() as u64;
                    self.messages.insert(
                        id,
                        Location {
                            segment: head,
                            offset,
                            len: framed.len() as u64,
                        },
                    );
                    self.buf.extend_from_slice(&framed);
                    offset += framed.len() as u64;
                }
                Op::Settle { id } => {
                    let Some(old) = self.messages.remove(&id) else {
                        continue;
                    };
                    self.drop_live(old);
                    let mut payload = [0u8; 9];
                    payload[0] = KIND_SETTLE;
                    payload[1..].copy_from_slice(&id.to_le_bytes());
                    let framed = frame(&payload);
                    self.buf.extend_from_slice(&framed);
                    offset += framed.len() as u64;
                }
            }
        }
        if !self.buf.is_empty() {
            if self.prealloc {
                self.head_file.write_all_at(&self.buf, start)?;
            } else {
                self.head_file.write_all(&self.buf)?;
            }
            self.segments.get_mut(&head).expect("head").size = offset;
        }
        Ok(())
    }

    fn drop_live(&mut self, location: Location) {
        if let Some(segment) = self.segments.get_mut(&location.segment) {
            segment.live = segment.live.saturating_sub(1);
        }
        self.live_bytes = self.live_bytes.saturating_sub(location.len);
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.fsyncs += 1;
        self.head_file.sync_data()
    }

    fn roll(&mut self) -> std::io::Result<()> {
        self.sync()?;
        let next = self.head + 1;
        let prealloc = self.prealloc.then_some(self.segment_bytes);
        self.head_file = create_segment(&self.dir, next, &mut self.fsyncs, prealloc)?;
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

    fn compact(&mut self) -> std::io::Result<u64> {
        self.delete_dead_segments()?;
        let disk: u64 = self.segments.values().map(|s| s.size).sum();
        let worth_it =
            self.segments.len() >= 3 && disk > 2 * self.live_bytes + 2 * self.segment_bytes;
        if !worth_it {
            return Ok(0);
        }
        let (&oldest, segment) = self.segments.iter().next().expect("segments exist");
        let file = File::open(&segment.path)?;
        let mut ops = Vec::new();
        for (&id, location) in &self.messages {
            if location.segment == oldest {
                let mut data = vec![0u8; location.len as usize];
                file.read_exact_at(&mut data, location.offset)?;
                ops.push(Op::Enqueue { id, payload: data });
            }
        }
        ops.sort_by_key(|op| match op {
            Op::Enqueue { id, .. } => *id,
            Op::Settle { .. } => 0,
        });
        let moved = ops.len() as u64;
        for op in &ops {
            if let Op::Enqueue { id, .. } = op {
                if let Some(old) = self.messages.remove(id) {
                    self.drop_live(old);
                }
            }
        }
        self.append(ops)?;
        self.sync()?;
        self.delete_dead_segments()?;
        Ok(moved)
    }

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
            fs::remove_file(&segment.path)?;
        }
        self.fsyncs += 1;
        File::open(&self.dir)?.sync_all()
    }
}

fn create_segment(
    dir: &Path,
    number: u64,
    fsyncs: &mut u64,
    prealloc: Option<u64>,
) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(prealloc.is_none())
        .write(true)
        .open(segment_path(dir, number))?;
    file.write_all(MAGIC)?;
    if let Some(len) = prealloc {
        file.set_len(len)?;
    }
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    *fsyncs += 2;
    Ok(file)
}

impl Engine for Journal {
    fn commit(&mut self, ops: Vec<Op>) -> std::io::Result<()> {
        self.append(ops)?;
        self.sync()?;
        self.compact()?;
        Ok(())
    }

    fn fsyncs(&self) -> Option<u64> {
        Some(self.fsyncs)
    }

    fn close(self: Box<Self>) {}
}

/// Recovery as `Journal::open` in host/src/store/journal.rs does it, reduced to counting:
/// reads every segment in order, applies enqueue and settle records, stops a segment at the
/// first torn or corrupt record and truncates the last segment there. Returns (live messages,
/// bytes truncated).
pub fn recover(dir: &Path) -> std::io::Result<(usize, u64)> {
    let mut numbers: Vec<(u64, PathBuf)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let number = path
                .file_name()?
                .to_str()?
                .strip_suffix(".journal")?
                .parse()
                .ok()?;
            Some((number, path))
        })
        .collect();
    numbers.sort();
    let mut live = std::collections::HashSet::new();
    let mut truncated = 0;
    let last = numbers.last().map(|(n, _)| *n);
    for (number, path) in &numbers {
        let data = fs::read(path)?;
        let mut at = MAGIC.len();
        while at + 8 <= data.len() {
            let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap());
            if len == 0 || at + 8 + len > data.len() {
                break;
            }
            let payload = &data[at + 8..at + 8 + len];
            if crc32fast::hash(payload) != crc || payload.len() < 9 {
                break;
            }
            let id = u64::from_le_bytes(payload[1..9].try_into().unwrap());
            match payload[0] {
                1 => {
                    live.insert(id);
                }
                KIND_SETTLE => {
                    live.remove(&id);
                }
                _ => break,
            }
            at += 8 + len;
        }
        if at < data.len() && Some(*number) == last {
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(at as u64)?;
            file.sync_all()?;
            truncated += (data.len() - at) as u64;
        }
    }
    Ok((live.len(), truncated))
}
