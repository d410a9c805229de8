//! Issue 6: does an embedded store measure as well as our journal for persistent messages?
//!
//! One process runs one engine once (so peak RSS is per run):
//!
//! ```text
//! store-candidates run --engine journal|journal-prealloc|redb|fjall --body 128|4096 [--n 100000] [--writers 4] [--lag 100] [--dir DIR]
//! store-candidates run ... --crash true        # exit after the last receipt without closing
//! store-candidates recover --engine E --body B [--tear 100]   # reopen (after tearing the tail)
//! store-candidates fsync-probe [--count 1000] [--dir DIR]
//! ```
//!
//! Workload: `writers` producer threads; each enqueues `n / writers` messages (an encoded record
//! with an id, ~60 bytes of headers and a body) and, before each enqueue, settles its own message
//! `lag` positions earlier, so about `writers * lag` messages are live. A producer waits until its
//! enqueue is durable (its RECEIPT) before the next one. One writer thread per engine takes
//! everything queued since its last turn and makes it durable in one commit (group commit), as
//! host/src/store/mod.rs does; producers wait on a condvar for the durable sequence number.
//!
//! Prints one tab-separated result line (see `HEADER`).

mod engines;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const HEADER: &str = "engine\tbody\tn\twriters\tsecs\tmsgs_per_s\tcommits\tcommits_per_msg\tfsyncs\tfsyncs_per_msg\tdisk_bytes_open\tdisk_bytes_closed\tpeak_rss_kib\tcommit_p50_ms\tcommit_p99_ms\tcpu_us_per_msg\twrite_bytes_per_msg";

/// An operation queued for the writer thread.
pub enum Op {
    /// `payload` is the encoded record (queue, destination, headers, body...), unframed.
    Enqueue {
        id: u64,
        payload: Vec<u8>,
    },
    Settle {
        id: u64,
    },
}

/// What an engine's writer does with one batch.
pub trait Engine: Send + 'static {
    /// Applies `ops` and makes them durable (one commit).
    fn commit(&mut self, ops: Vec<Op>) -> std::io::Result<()>;
    /// fdatasync/fsync calls made so far, where the engine can tell (the journal counts its own).
    fn fsyncs(&self) -> Option<u64>;
    /// Flushes and closes (consumes the engine).
    fn close(self: Box<Self>);
}

#[derive(Default)]
struct Inbox {
    ops: Vec<Op>,
    appended: u64,
    closing: bool,
}

struct Shared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    durable: Mutex<u64>,
    durable_changed: Condvar,
}

impl Shared {
    fn push(&self, op: Op) -> u64 {
        let mut inbox = self.inbox.lock().unwrap();
        let wake = inbox.ops.is_empty();
        inbox.ops.push(op);
        inbox.appended += 1;
        let seq = inbox.appended;
        drop(inbox);
        if wake {
            self.wake.notify_one();
        }
        seq
    }

    fn wait_durable(&self, seq: u64) {
        let mut durable = self.durable.lock().unwrap();
        while *durable < seq {
            durable = self.durable_changed.wait(durable).unwrap();
        }
    }
}

/// The writer thread: group commit until closed. Returns how long each commit took.
fn write_loop(mut engine: Box<dyn Engine>, shared: &Shared) -> (Vec<Duration>, Box<dyn Engine>) {
    let mut commits = Vec::new();
    loop {
        let (ops, upto, closing) = {
            let mut inbox = shared.inbox.lock().unwrap();
            while inbox.ops.is_empty() && !inbox.closing {
                inbox = shared.wake.wait(inbox).unwrap();
            }
            (
                std::mem::take(&mut inbox.ops),
                inbox.appended,
                inbox.closing,
            )
        };
        if !ops.is_empty() {
            let start = Instant::now();
            engine.commit(ops).expect("commit");
            commits.push(start.elapsed());
        }
        *shared.durable.lock().unwrap() = upto;
        shared.durable_changed.notify_all();
        if closing && shared.inbox.lock().unwrap().ops.is_empty() {
            return (commits, engine);
        }
    }
}

/// Encodes a message the way record.rs lays out an enqueue payload (kind, id, queue,
/// destination, id prefix, id seq, expiry, headers, body).
fn encode_message(id: u64, thread: usize, body: &[u8]) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let queue = format!("/queue/bench-{thread}");
    let seq = format!("{id:012}");
    // ~60 bytes of header names and values.
    let headers: [(&[u8], &[u8]); 4] = [
        (b"content-type", b"application/octet-stream"),
        (b"persistent", b"true"),
        (b"x-seq", seq.as_bytes()),
        (b"priority", b"4"),
    ];
    let mut out = Vec::with_capacity(body.len() + 160);
    out.push(1);
    out.extend_from_slice(&id.to_le_bytes());
    put(&mut out, queue.as_bytes());
    put(&mut out, queue.as_bytes());
    put(&mut out, b"ID:bench-1");
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        put(&mut out, name);
        put(&mut out, value);
    }
    put(&mut out, body);
    out
}

/// Incompressible body bytes (xorshift), different per message.
fn fill_body(body: &mut [u8], mut state: u64) {
    for chunk in body.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += dir_bytes(&entry.path());
        } else {
            total += meta.blocks() * 512; // allocated, as du counts
        }
    }
    total
}

/// User + system CPU time of the whole process (all threads), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Bytes this process caused to be sent to the storage layer (/proc/self/io `write_bytes`).
fn write_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Args {
    cmd: String,
    engine: String,
    body: usize,
    n: u64,
    writers: usize,
    lag: usize,
    count: usize,
    dir: PathBuf,
    /// `run`: exit without closing the store or deleting its files (a crash after the last receipt).
    crash: bool,
    /// `recover`: append this many bytes of a torn record to the newest journal file first.
    tear: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        cmd: String::new(),
        engine: "journal".into(),
        body: 128,
        n: 100_000,
        writers: 4,
        lag: 100,
        count: 1000,
        dir: PathBuf::from("target/bench-data"),
        crash: false,
        tear: 0,
    };
    let mut it = std::env::args().skip(1);
    args.cmd = it.next().unwrap_or_default();
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--engine" => args.engine = value,
            "--body" => args.body = value.parse().expect("--body"),
            "--n" => args.n = value.parse().expect("--n"),
            "--writers" => args.writers = value.parse().expect("--writers"),
            "--lag" => args.lag = value.parse().expect("--lag"),
            "--count" => args.count = value.parse().expect("--count"),
            "--dir" => args.dir = PathBuf::from(value),
            "--crash" => args.crash = value == "true",
            "--tear" => args.tear = value.parse().expect("--tear"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    match args.cmd.as_str() {
        "run" => run(&args),
        "fsync-probe" => fsync_probe(&args),
        "recover" => recover(&args),
        "header" => println!("{HEADER}"),
        _ => {
            eprintln!("usage: store-candidates run|fsync-probe|header [flags] (see src/main.rs)");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) {
    let dir = args.dir.join(format!("{}-{}", args.engine, args.body));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create data dir");
    let engine: Box<dyn Engine> = match args.engine.as_str() {
        "journal" => {
            Box::new(engines::journal::Journal::open(&dir, 64 << 20, false).expect("journal"))
        }
        "journal-prealloc" => {
            Box::new(engines::journal::Journal::open(&dir, 64 << 20, true).expect("journal"))
        }
        #[cfg(feature = "redb")]
        "redb" => Box::new(engines::redb_store::RedbStore::open(&dir)),
        #[cfg(feature = "fjall")]
        "fjall" => Box::new(engines::fjall_store::FjallStore::open(&dir)),
        other => panic!("unknown or not compiled-in engine {other}"),
    };
    let shared = Arc::new(Shared {
        inbox: Mutex::default(),
        wake: Condvar::new(),
        durable: Mutex::new(0),
        durable_changed: Condvar::new(),
    });
    let writer = {
        let shared = shared.clone();
        std::thread::spawn(move || write_loop(engine, &shared))
    };
    let next_id = Arc::new(AtomicU64::new(1));
    let per_thread = args.n / args.writers as u64;
    let start = Instant::now();
    let producers: Vec<_> = (0..args.writers)
        .map(|thread| {
            let shared = shared.clone();
            let next_id = next_id.clone();
            let (body_len, lag) = (args.body, args.lag);
            let frame = args.engine.starts_with("journal");
            std::thread::spawn(move || {
                let mut body = vec![0u8; body_len];
                let mut ids = Vec::with_capacity(per_thread as usize);
                for k in 0..per_thread as usize {
                    if k >= lag {
                        shared.push(Op::Settle { id: ids[k - lag] });
                    }
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    fill_body(&mut body, id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                    let mut payload = encode_message(id, thread, &body);
                    if frame {
                        payload = engines::journal::frame(&payload);
                    }
                    ids.push(id);
                    let seq = shared.push(Op::Enqueue { id, payload });
                    shared.wait_durable(seq); // the RECEIPT
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    shared.inbox.lock().unwrap().closing = true;
    shared.wake.notify_one();
    let (mut commit_times, engine) = writer.join().unwrap();
    if args.crash {
        eprintln!(
            "{} messages durable; exiting without closing the store",
            args.n
        );
        std::process::exit(0); // no destructors: the store is not closed
    }
    let cpu = cpu_time();
    let commits = commit_times.len() as u64;
    commit_times.sort();
    let commit_ms = |q: f64| {
        commit_times
            .get(
                ((commit_times.len() as f64 * q) as usize)
                    .min(commit_times.len().saturating_sub(1)),
            )
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let fsyncs = engine.fsyncs();
    let disk_open = dir_bytes(&dir);
    engine.close();
    let disk_closed = dir_bytes(&dir);
    let written = write_bytes();
    let n = per_thread * args.writers as u64;
    let fsyncs_s = fsyncs.map_or("-".to_string(), |f| f.to_string());
    let fsyncs_per = fsyncs.map_or("-".to_string(), |f| format!("{:.3}", f as f64 / n as f64));
    println!(
        "{}\t{}\t{}\t{}\t{:.2}\t{:.0}\t{}\t{:.3}\t{}\t{}\t{}\t{}\t{}\t{:.2}\t{:.2}\t{:.1}\t{:.0}",
        args.engine,
        args.body,
        n,
        args.writers,
        secs,
        n as f64 / secs,
        commits,
        commits as f64 / n as f64,
        fsyncs_s,
        fsyncs_per,
        disk_open,
        disk_closed,
        peak_rss_kib(),
        commit_ms(0.50),
        commit_ms(0.99),
        cpu.as_secs_f64() * 1e6 / n as f64,
        written as f64 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// p50/p99 of one 4 KiB append + fdatasync, the unit cost of a group commit.
fn fsync_probe(args: &Args) {
    use std::io::Write;
    std::fs::create_dir_all(&args.dir).expect("create data dir");
    let path = args.dir.join("fsync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .expect("open probe file");
    let block = vec![0x5au8; 4096];
    let mut times: Vec<Duration> = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let start = Instant::now();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        times.push(start.elapsed());
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let total: Duration = times.iter().sum();
    println!(
        "fsync-probe\tcount={}\tp50_ms={:.2}\tp90_ms={:.2}\tp99_ms={:.2}\tmax_ms={:.2}\tmean_ms={:.2}",
        times.len(),
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(*times.last().unwrap()),
        ms(total) / times.len() as f64
    );
}

/// Opens the store a `run --crash true` left behind (after tearing the tail of its newest
/// journal file with `--tear`), and reports how long opening took and how many messages are live.
fn recover(args: &Args) {
    let dir = args.dir.join(format!("{}-{}", args.engine, args.body));
    let mut torn = "-".to_string();
    if args.tear > 0 {
        // The newest journal file: ours (NNN.journal, written up to its length) or fjall's
        // (N.jnl, preallocated with zeros: written up to its last non-zero byte).
        let ext = if args.engine == "fjall" {
            "jnl"
        } else {
            "journal"
        };
        let newest = walk(&dir)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .max_by_key(|p| {
                p.file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse::<u64>().ok())
            });
        if let Some(path) = newest {
            use std::os::unix::fs::FileExt;
            let data = std::fs::read(&path).unwrap();
            let (at, mut bytes) = if args.engine == "fjall" {
                let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
                // A batch start (tag 1, 3 items, a sequence number), then part of an item (tag 2).
                let mut b = vec![1u8];
                b.extend_from_slice(&3u32.to_le_bytes());
                b.extend_from_slice(&u64::MAX.to_le_bytes()[..7]);
                b.push(0);
                b.push(2);
                (end, b)
            } else {
                // A record header promising 4096 bytes of payload.
                let mut b = 4096u32.to_le_bytes().to_vec();
                b.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
                (data.len(), b)
            };
            bytes.resize(args.tear.max(bytes.len()), 0xab);
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.write_all_at(&bytes, at as u64).unwrap();
            file.sync_all().unwrap();
            torn = format!(
                "{}@{at}+{}",
                path.file_name().unwrap().to_string_lossy(),
                bytes.len()
            );
        }
    }
    let start = Instant::now();
    let result: Result<String, String> = match args.engine.as_str() {
        "journal" => engines::journal::recover(&dir)
            .map(|(live, truncated)| format!("live={live}\ttruncated_bytes={truncated}"))
            .map_err(|e| e.to_string()),
        #[cfg(feature = "redb")]
        "redb" => engines::redb_store::recover(&dir),
        #[cfg(feature = "fjall")]
        "fjall" => engines::fjall_store::recover(&dir),
        other => panic!("unknown or not compiled-in engine {other}"),
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match result {
        Ok(found) => println!(
            "recover\t{}\t{}\ttorn={torn}\topen_ms={ms:.1}\t{found}",
            args.engine, args.body
        ),
        Err(err) => println!(
            "recover\t{}\t{}\ttorn={torn}\topen_ms={ms:.1}\tERROR {err}",
            args.engine, args.body
        ),
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}
