//! The journal's record format: what one record holds and how it is laid out on disk.
//!
//! ```text
//! segment  = magic(8) record*
//! record   = len:u32le crc:u32le payload[len]        crc = CRC-32 (IEEE) of the payload
//! payload  = kind:u8 fields...
//! ```
//!
//! Integers are little-endian; byte strings are a `u32` length and the bytes. A record whose
//! length or checksum does not hold marks the end of the good part of a segment.
//!
//! A scheduled message (one waiting in the scheduler, not yet in its queue) is an enqueue
//! record of its own kind (5): the kind-1 fields with the schedule between `expires_at` and
//! the headers. Journals written before scheduling existed hold no kind 5 and load as they
//! did; a kind-1 record is laid out exactly as before.
//!
//! A record of a virtual host other than the default `/` is prefixed with its vhost: kind 6,
//! the vhost's name, then the record's own payload (kind 1, 3, 4 or 5 and its fields). Records
//! of `/` carry no prefix, so journals written before virtual hosts existed load into `/` and a
//! broker with no `[[vhosts]]` writes exactly the bytes it wrote before.
//!
//! Plugin key-value entries persisted on request (`[plugins.kv] persist = true`) are records of
//! three more kinds: 7 puts an entry (the plugin's name, the key, `expires_at` in unix ms or 0,
//! the value), 8 deletes one (plugin, key), both behind the kind-6 prefix outside `/`; 9 clears
//! every entry of a plugin in every vhost (plugin), never prefixed. Journals without them load
//! as before; a broker older than them stops reading a segment at the first one.

use bytes::{BufMut, Bytes, BytesMut};

/// First bytes of every segment file (format version 1).
pub const MAGIC: &[u8; 8] = b"PBJRNL01";
/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;
/// No payload is larger (a maximum-size body plus its headers fits easily).
pub const MAX_PAYLOAD: usize = 1 << 30;

const KIND_ENQUEUE: u8 = 1;
const KIND_SETTLE: u8 = 2;
const KIND_DURABLE_CREATE: u8 = 3;
const KIND_DURABLE_REMOVE: u8 = 4;
const KIND_ENQUEUE_SCHEDULED: u8 = 5;
const KIND_IN_VHOST: u8 = 6;
const KIND_KV_PUT: u8 = 7;
const KIND_KV_DELETE: u8 = 8;
const KIND_KV_CLEAR: u8 = 9;

/// The name the journal gives the default virtual host's records: none (see the module doc).
pub const DEFAULT_VHOST: &[u8] = b"";

/// The journal's key for `queue` of virtual host `vhost` (as its records name it, empty for
/// `/`): the queue name itself in `/`, else a byte 0, the vhost's length and name, then the
/// queue name (no queue name starts with a byte 0, so keys of different vhosts never meet).
pub fn scoped_key(vhost: &[u8], queue: &[u8]) -> Bytes {
    if vhost.is_empty() {
        return Bytes::copy_from_slice(queue);
    }
    let mut key = BytesMut::with_capacity(5 + vhost.len() + queue.len());
    key.put_u8(0);
    put_bytes(&mut key, vhost);
    key.extend_from_slice(queue);
    key.freeze()
}

/// The journal's key of plugin `plugin`'s kv entry `key` in virtual host `vhost` (as records
/// name it): the plugin's length and name, the vhost's length and name, then the key; so the
/// keys of one plugin share [`kv_plugin_prefix`] and no two (plugin, vhost, key) meet.
pub fn kv_key(vhost: &[u8], plugin: &[u8], key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + vhost.len() + plugin.len() + key.len());
    put_bytes(&mut out, plugin);
    put_bytes(&mut out, vhost);
    out.extend_from_slice(key);
    out.freeze()
}

/// The start of every [`kv_key`] of plugin `plugin`.
pub fn kv_plugin_prefix(plugin: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + plugin.len());
    put_bytes(&mut out, plugin);
    out.freeze()
}

/// The schedule of a message journaled while it waits in the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduledFields {
    /// When it is due next (unix ms).
    pub deliver_at: u64,
    /// Time between repeated deliveries, in ms (0: no repeats).
    pub period_ms: u64,
    /// Deliveries still to come after the next one.
    pub repeats_left: u32,
    /// Deliveries made so far (a repeat's `message-id` says which one it is).
    pub delivered: u32,
    /// The principal whose scheduled-message allowance it counts against.
    pub owner: Bytes,
}

/// A persistent message placed in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueue {
    /// Journal id: unique across the store's life, in arrival order.
    pub id: u64,
    /// The virtual host of its queue; empty for the default `/` ([`DEFAULT_VHOST`]).
    pub vhost: Bytes,
    /// The queue it waits in (a `/queue/` name, a DLQ or a durable subscription's queue).
    pub queue: Bytes,
    /// The MESSAGE `destination` (differs from `queue` for durable subscriptions and DLQs).
    pub destination: Bytes,
    /// The message's headers in the order sent, repeats kept (no server-owned ones).
    pub headers: Vec<(Bytes, Bytes)>,
    /// The message body.
    pub body: Bytes,
    /// `message-id` parts, so a recovered message keeps its id.
    pub id_prefix: Bytes,
    /// The counter part of `message-id` (see `id_prefix`).
    pub id_seq: u64,
    /// Expiry (unix ms), 0 for none.
    pub expires_at: u64,
    /// Set for a message waiting in the scheduler: `queue` then names its target (a `/queue/`
    /// or `/topic/`), and it enters it when due.
    pub schedule: Option<ScheduledFields>,
}

/// An enqueue record's fields borrowed from wherever they live (a queued message), so that
/// journaling a message copies neither its headers nor its body.
#[derive(Debug, Clone, Copy)]
pub struct EnqueueRef<'a> {
    /// [`Enqueue::id`].
    pub id: u64,
    /// [`Enqueue::vhost`].
    pub vhost: &'a [u8],
    /// [`Enqueue::queue`].
    pub queue: &'a [u8],
    /// [`Enqueue::destination`].
    pub destination: &'a [u8],
    /// [`Enqueue::headers`].
    pub headers: &'a [(Bytes, Bytes)],
    /// [`Enqueue::body`]: shared with the written record, never copied.
    pub body: &'a Bytes,
    /// [`Enqueue::id_prefix`].
    pub id_prefix: &'a [u8],
    /// [`Enqueue::id_seq`].
    pub id_seq: u64,
    /// [`Enqueue::expires_at`]: unix ms, 0 for none.
    pub expires_at: u64,
    /// [`Enqueue::schedule`].
    pub schedule: Option<&'a ScheduledFields>,
}

impl Enqueue {
    /// The same fields borrowed, for encoding.
    pub fn as_ref(&self) -> EnqueueRef<'_> {
        EnqueueRef {
            id: self.id,
            vhost: &self.vhost,
            queue: &self.queue,
            destination: &self.destination,
            headers: &self.headers,
            body: &self.body,
            id_prefix: &self.id_prefix,
            id_seq: self.id_seq,
            expires_at: self.expires_at,
            schedule: self.schedule.as_ref(),
        }
    }
}

impl EnqueueRef<'_> {
    /// The payload up to and including the body's length (the body follows it).
    fn put_head(&self, out: &mut BytesMut) {
        put_vhost(out, self.vhost);
        out.put_u8(match self.schedule {
            None => KIND_ENQUEUE,
            Some(_) => KIND_ENQUEUE_SCHEDULED,
        });
        out.put_u64_le(self.id);
        put_bytes(out, self.queue);
        put_bytes(out, self.destination);
        put_bytes(out, self.id_prefix);
        out.put_u64_le(self.id_seq);
        out.put_u64_le(self.expires_at);
        if let Some(schedule) = self.schedule {
            out.put_u64_le(schedule.deliver_at);
            out.put_u64_le(schedule.period_ms);
            out.put_u32_le(schedule.repeats_left);
            out.put_u32_le(schedule.delivered);
            put_bytes(out, &schedule.owner);
        }
        out.put_u32_le(self.headers.len() as u32);
        for (name, value) in self.headers {
            put_bytes(out, name);
            put_bytes(out, value);
        }
        out.put_u32_le(self.body.len() as u32);
    }

    /// The record as two pieces to be written one after the other: the framing and every
    /// field up to the body's length, then the body itself (shared, not copied; the checksum
    /// covers it).
    pub fn encode_split(&self) -> (Bytes, Bytes) {
        let mut out = BytesMut::with_capacity(128);
        out.put_u64_le(0); // length and checksum, filled in below
        self.put_head(&mut out);
        let len = out.len() - RECORD_HEADER + self.body.len();
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[RECORD_HEADER..]);
        crc.update(self.body);
        out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        out[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
        (out.freeze(), self.body.clone())
    }
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A persistent message entered a queue; live until a [`Record::Settle`] with its id.
    Enqueue(Enqueue),
    /// The message with this journal id left its queue (acked, expired, dead-lettered...).
    Settle {
        /// The [`Enqueue::id`] it settles.
        id: u64,
    },
    /// A durable topic subscription exists: its queue collects the topic's messages.
    DurableCreate {
        /// Its virtual host; empty for the default `/` ([`DEFAULT_VHOST`]).
        vhost: Bytes,
        /// The subscription's queue name (`durable:...`, see
        /// [`DurableKey`](crate::router::DurableKey)).
        queue: Bytes,
        /// The `/topic/` it collects from.
        topic: Bytes,
    },
    /// A durable subscription was removed (its messages were settled before this record).
    DurableRemove {
        /// Its virtual host, as in its [`Record::DurableCreate`].
        vhost: Bytes,
        /// The subscription's queue name, as in its [`Record::DurableCreate`].
        queue: Bytes,
    },
    /// A plugin's kv entry was set; live until a later put, delete or clear of it.
    KvPut {
        /// The vhost of the store it belongs to; empty for the default `/`.
        vhost: Bytes,
        /// The plugin's configured name.
        plugin: Bytes,
        /// The entry's key.
        key: Bytes,
        /// The entry's value.
        value: Bytes,
        /// When it expires (unix ms), 0 for never.
        expires_at: u64,
    },
    /// A plugin's kv entry was deleted (or expired and was evicted).
    KvDelete {
        /// As in its [`Record::KvPut`].
        vhost: Bytes,
        /// As in its [`Record::KvPut`].
        plugin: Bytes,
        /// As in its [`Record::KvPut`].
        key: Bytes,
    },
    /// Every kv entry of a plugin, in every vhost, is gone (the plugin was removed, or no
    /// longer persists its store).
    KvClear {
        /// The plugin's configured name.
        plugin: Bytes,
    },
}

/// Why a payload could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ends inside a field.
    #[error("record ends early")]
    Truncated,
    /// The kind byte (the value) is not one of the record kinds.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// This many bytes follow the record's last field.
    #[error("{0} bytes left over after the record")]
    Trailing(usize),
}

impl Record {
    /// Appends the framed record (length, checksum, payload) to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u64_le(0); // length and checksum, filled in below
        match self {
            Record::Enqueue(e) => {
                e.as_ref().put_head(out);
                out.extend_from_slice(&e.body);
            }
            Record::Settle { id } => {
                out.put_u8(KIND_SETTLE);
                out.put_u64_le(*id);
            }
            Record::DurableCreate {
                vhost,
                queue,
                topic,
            } => {
                put_vhost(out, vhost);
                out.put_u8(KIND_DURABLE_CREATE);
                put_bytes(out, queue);
                put_bytes(out, topic);
            }
            Record::DurableRemove { vhost, queue } => {
                put_vhost(out, vhost);
                out.put_u8(KIND_DURABLE_REMOVE);
                put_bytes(out, queue);
            }
            Record::KvPut {
                vhost,
                plugin,
                key,
                value,
                expires_at,
            } => {
                put_vhost(out, vhost);
                out.put_u8(KIND_KV_PUT);
                put_bytes(out, plugin);
                put_bytes(out, key);
                out.put_u64_le(*expires_at);
                put_bytes(out, value);
            }
            Record::KvDelete { vhost, plugin, key } => {
                put_vhost(out, vhost);
                out.put_u8(KIND_KV_DELETE);
                put_bytes(out, plugin);
                put_bytes(out, key);
            }
            Record::KvClear { plugin } => {
                out.put_u8(KIND_KV_CLEAR);
                put_bytes(out, plugin);
            }
        }
        let len = out.len() - start - RECORD_HEADER;
        let crc = crc32fast::hash(&out[start + RECORD_HEADER..]);
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    /// The encoded size of a record, framing included.
    pub fn encoded_len(&self) -> usize {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out.len()
    }

    /// Reads a payload (the bytes after length and checksum). Byte strings share `payload`.
    pub fn decode(payload: &Bytes) -> Result<Record, DecodeError> {
        let mut reader = Reader {
            bytes: payload,
            at: 0,
        };
        let (vhost, kind) = match reader.u8()? {
            KIND_IN_VHOST => {
                let vhost = reader.bytes()?;
                match reader.u8()? {
                    KIND_SETTLE | KIND_IN_VHOST | KIND_KV_CLEAR => {
                        return Err(DecodeError::UnknownKind(KIND_IN_VHOST))
                    }
                    kind => (vhost, kind),
                }
            }
            kind => (Bytes::new(), kind),
        };
        let record = match kind {
            kind @ (KIND_ENQUEUE | KIND_ENQUEUE_SCHEDULED) => {
                let id = reader.u64()?;
                let queue = reader.bytes()?;
                let destination = reader.bytes()?;
                let id_prefix = reader.bytes()?;
                let id_seq = reader.u64()?;
                let expires_at = reader.u64()?;
                let schedule = if kind == KIND_ENQUEUE_SCHEDULED {
                    Some(ScheduledFields {
                        deliver_at: reader.u64()?,
                        period_ms: reader.u64()?,
                        repeats_left: reader.u32()?,
                        delivered: reader.u32()?,
                        owner: reader.bytes()?,
                    })
                } else {
                    None
                };
                let count = reader.u32()? as usize;
                let mut headers = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    headers.push((reader.bytes()?, reader.bytes()?));
                }
                let body = reader.bytes()?;
                Record::Enqueue(Enqueue {
                    id,
                    vhost,
                    queue,
                    destination,
                    headers,
                    body,
                    id_prefix,
                    id_seq,
                    expires_at,
                    schedule,
                })
            }
            KIND_SETTLE => Record::Settle { id: reader.u64()? },
            KIND_DURABLE_CREATE => Record::DurableCreate {
                vhost,
                queue: reader.bytes()?,
                topic: reader.bytes()?,
            },
            KIND_DURABLE_REMOVE => Record::DurableRemove {
                vhost,
                queue: reader.bytes()?,
            },
            KIND_KV_PUT => Record::KvPut {
                vhost,
                plugin: reader.bytes()?,
                key: reader.bytes()?,
                expires_at: reader.u64()?,
                value: reader.bytes()?,
            },
            KIND_KV_DELETE => Record::KvDelete {
                vhost,
                plugin: reader.bytes()?,
                key: reader.bytes()?,
            },
            KIND_KV_CLEAR => Record::KvClear {
                plugin: reader.bytes()?,
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        match payload.len() - reader.at {
            0 => Ok(record),
            left => Err(DecodeError::Trailing(left)),
        }
    }
}

/// What the framing at the start of `data` says.
#[derive(Debug, PartialEq, Eq)]
pub enum Framed {
    /// A whole record whose checksum holds: its payload and its framed length.
    Good {
        /// The payload's length in bytes (the record is [`RECORD_HEADER`] bytes longer).
        payload_len: usize,
    },
    /// Fewer bytes than the framing promises (a torn write at the end).
    Incomplete,
    /// An impossible length or a checksum mismatch.
    Corrupt,
}

/// Checks the record framed at the start of `data`.
pub fn check_framing(data: &[u8]) -> Framed {
    if data.len() < RECORD_HEADER {
        return Framed::Incomplete;
    }
    let len = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_PAYLOAD {
        return Framed::Corrupt;
    }
    if data.len() < RECORD_HEADER + len {
        return Framed::Incomplete;
    }
    if crc32fast::hash(&data[RECORD_HEADER..RECORD_HEADER + len]) != crc {
        return Framed::Corrupt;
    }
    Framed::Good { payload_len: len }
}

/// The prefix of a record of virtual host `vhost` (nothing for the default `/`).
fn put_vhost(out: &mut BytesMut, vhost: &[u8]) {
    if !vhost.is_empty() {
        out.put_u8(KIND_IN_VHOST);
        put_bytes(out, vhost);
    }
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32_le(bytes.len() as u32);
    out.extend_from_slice(bytes);
}

struct Reader<'a> {
    bytes: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError::Truncated)?;
        if end > self.bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes[self.take(1)?.start])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let range = self.take(4)?;
        Ok(u32::from_le_bytes(
            self.bytes[range].try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let range = self.take(8)?;
        Ok(u64::from_le_bytes(
            self.bytes[range].try_into().expect("8 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u32()? as usize;
        let range = self.take(len)?;
        Ok(self.bytes.slice(range))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload_of(framed: &BytesMut) -> Bytes {
        Bytes::copy_from_slice(&framed[RECORD_HEADER..])
    }

    fn sample() -> Record {
        Record::Enqueue(Enqueue {
            id: 7,
            vhost: Bytes::new(),
            queue: Bytes::from_static(b"/queue/a"),
            destination: Bytes::from_static(b"/queue/a"),
            headers: vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v:1"))],
            body: Bytes::from_static(b"hello\0world"),
            id_prefix: Bytes::from_static(b"abc-1"),
            id_seq: 3,
            expires_at: 0,
            schedule: None,
        })
    }

    fn scheduled_sample() -> Record {
        let Record::Enqueue(enqueue) = sample() else {
            unreachable!("sample() is an enqueue")
        };
        Record::Enqueue(Enqueue {
            schedule: Some(ScheduledFields {
                deliver_at: 1_700_000_000_000,
                period_ms: 500,
                repeats_left: 2,
                delivered: 1,
                owner: Bytes::from_static(b"alice"),
            }),
            ..enqueue
        })
    }

    /// A kind-1 record exactly as journals before scheduling wrote it: it still loads, and an
    /// unscheduled enqueue is still written this way (old and new brokers read each other's
    /// journals as long as nothing is scheduled).
    #[test]
    fn an_enqueue_record_of_the_old_layout_loads() {
        let mut payload = vec![1u8];
        payload.extend_from_slice(&7u64.to_le_bytes());
        for field in [&b"/queue/a"[..], b"/queue/a", b"abc-1"] {
            payload.extend_from_slice(&(field.len() as u32).to_le_bytes());
            payload.extend_from_slice(field);
        }
        payload.extend_from_slice(&3u64.to_le_bytes());
        payload.extend_from_slice(&0u64.to_le_bytes());
        payload.extend_from_slice(&1u32.to_le_bytes());
        for field in [&b"k"[..], b"v:1", b"hello\0world"] {
            payload.extend_from_slice(&(field.len() as u32).to_le_bytes());
            payload.extend_from_slice(field);
        }
        assert_eq!(
            Record::decode(&Bytes::from(payload.clone())).unwrap(),
            sample()
        );
        let mut out = BytesMut::new();
        sample().encode(&mut out);
        assert_eq!(&out[RECORD_HEADER..], &payload[..]);
    }

    #[test]
    fn a_truncated_scheduled_record_is_refused() {
        let mut out = BytesMut::new();
        scheduled_sample().encode(&mut out);
        let payload = payload_of(&out);
        for cut in 1..payload.len() {
            assert!(
                Record::decode(&payload.slice(..cut)).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for record in [
            sample(),
            scheduled_sample(),
            Record::Settle { id: u64::MAX },
            Record::DurableCreate {
                vhost: Bytes::new(),
                queue: Bytes::from_static(b"durable:c/n"),
                topic: Bytes::from_static(b"/topic/t"),
            },
            Record::DurableRemove {
                vhost: Bytes::new(),
                queue: Bytes::from_static(b"durable:c/n"),
            },
            in_vhost(sample()),
            in_vhost(scheduled_sample()),
            Record::DurableCreate {
                vhost: Bytes::from_static(b"tenant-a"),
                queue: Bytes::from_static(b"durable:c/n"),
                topic: Bytes::from_static(b"/topic/t"),
            },
            Record::DurableRemove {
                vhost: Bytes::from_static(b"tenant-a"),
                queue: Bytes::from_static(b"durable:c/n"),
            },
            kv_put(b""),
            kv_put(b"tenant-a"),
            Record::KvDelete {
                vhost: Bytes::new(),
                plugin: Bytes::from_static(b"rate-limit"),
                key: Bytes::from_static(b"k"),
            },
            Record::KvDelete {
                vhost: Bytes::from_static(b"tenant-a"),
                plugin: Bytes::from_static(b"rate-limit"),
                key: Bytes::new(),
            },
            Record::KvClear {
                plugin: Bytes::from_static(b"rate-limit"),
            },
        ] {
            let mut out = BytesMut::new();
            record.encode(&mut out);
            assert_eq!(out.len(), record.encoded_len());
            let Framed::Good { payload_len } = check_framing(&out) else {
                panic!("framing of {record:?}");
            };
            assert_eq!(payload_len + RECORD_HEADER, out.len());
            assert_eq!(Record::decode(&payload_of(&out)).unwrap(), record);
        }
    }

    fn kv_put(vhost: &'static [u8]) -> Record {
        Record::KvPut {
            vhost: Bytes::from_static(vhost),
            plugin: Bytes::from_static(b"rate-limit"),
            key: Bytes::from_static(b"5:alice/queue/a"),
            value: Bytes::from_static(b"\x00\x01 tokens"),
            expires_at: 1_700_000_000_000,
        }
    }

    /// A kv put is laid out as the module doc says, behind the vhost prefix outside `/`; a
    /// clear is never prefixed.
    #[test]
    fn kv_records_have_the_documented_layout() {
        let mut out = BytesMut::new();
        kv_put(b"").encode(&mut out);
        let mut expected = vec![7u8];
        for field in [&b"rate-limit"[..], b"5:alice/queue/a"] {
            expected.extend_from_slice(&(field.len() as u32).to_le_bytes());
            expected.extend_from_slice(field);
        }
        expected.extend_from_slice(&1_700_000_000_000u64.to_le_bytes());
        expected.extend_from_slice(&9u32.to_le_bytes());
        expected.extend_from_slice(b"\x00\x01 tokens");
        assert_eq!(&out[RECORD_HEADER..], &expected[..]);
        let mut payload = vec![6u8, 1, 0, 0, 0, b'v', 9];
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(b'p');
        assert_eq!(
            Record::decode(&Bytes::from(payload)),
            Err(DecodeError::UnknownKind(6)),
            "a clear inside a vhost prefix"
        );
    }

    #[test]
    fn kv_keys_keep_plugins_vhosts_and_keys_apart() {
        assert_ne!(kv_key(b"a", b"p", b"k"), kv_key(b"", b"p", b"ak"));
        assert_ne!(kv_key(b"", b"p", b"k"), kv_key(b"", b"pk", b""));
        assert_ne!(kv_key(b"v", b"p", b"k"), kv_key(b"v", b"q", b"k"));
        assert!(kv_key(b"v", b"p", b"k").starts_with(&kv_plugin_prefix(b"p")));
        assert!(!kv_key(b"v", b"pq", b"k").starts_with(&kv_plugin_prefix(b"p")));
    }

    fn in_vhost(record: Record) -> Record {
        let Record::Enqueue(enqueue) = record else {
            unreachable!("the samples are enqueues")
        };
        Record::Enqueue(Enqueue {
            vhost: Bytes::from_static(b"tenant-a"),
            ..enqueue
        })
    }

    /// A vhost's record is the record of `/` behind a kind-6 prefix naming the vhost.
    #[test]
    fn a_vhost_record_is_the_default_record_with_a_prefix() {
        let mut plain = BytesMut::new();
        sample().encode(&mut plain);
        let mut scoped = BytesMut::new();
        in_vhost(sample()).encode(&mut scoped);
        let mut expected = vec![6u8];
        expected.extend_from_slice(&8u32.to_le_bytes());
        expected.extend_from_slice(b"tenant-a");
        expected.extend_from_slice(&plain[RECORD_HEADER..]);
        assert_eq!(&scoped[RECORD_HEADER..], &expected[..]);
        // A prefix must hold a record of a kind that belongs to a vhost.
        for inner in [2u8, 6] {
            let mut payload = vec![6u8, 1, 0, 0, 0, b'v', inner];
            payload.extend_from_slice(&9u64.to_le_bytes());
            assert!(Record::decode(&Bytes::from(payload)).is_err(), "{inner}");
        }
    }

    #[test]
    fn scoped_keys_keep_vhosts_apart() {
        let q = b"durable:a/b/c";
        assert_eq!(&scoped_key(DEFAULT_VHOST, q)[..], &q[..]);
        assert_ne!(scoped_key(b"a", q), scoped_key(b"b", q));
        assert_ne!(scoped_key(b"a", b"bc"), scoped_key(b"ab", b"c"));
        assert_ne!(scoped_key(b"a", q), scoped_key(DEFAULT_VHOST, q));
    }

    #[test]
    fn split_encoding_is_the_same_bytes() {
        for record in [
            sample(),
            scheduled_sample(),
            in_vhost(sample()),
            in_vhost(scheduled_sample()),
        ] {
            let mut whole = BytesMut::new();
            record.encode(&mut whole);
            let Record::Enqueue(enqueue) = &record else {
                unreachable!("the samples are enqueues")
            };
            let (head, body) = enqueue.as_ref().encode_split();
            assert_eq!([&head[..], &body[..]].concat(), &whole[..]);
        }
    }

    #[test]
    fn torn_and_flipped_records_are_detected() {
        let mut out = BytesMut::new();
        sample().encode(&mut out);
        for cut in 0..out.len() {
            assert_eq!(
                check_framing(&out[..cut]),
                Framed::Incomplete,
                "cut at {cut}"
            );
        }
        for at in RECORD_HEADER..out.len() {
            let mut bad = out.clone();
            bad[at] ^= 0x40;
            assert_eq!(check_framing(&bad), Framed::Corrupt, "flip at {at}");
        }
        let zeros = [0u8; 16];
        assert_eq!(check_framing(&zeros), Framed::Corrupt);
    }

    proptest! {
        #[test]
        fn decode_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Record::decode(&Bytes::from(payload));
        }

        /// Kv records read back from disk: any payload behind a kv kind byte decodes or is
        /// refused, never panics, and every encoded kv record decodes to itself.
        #[test]
        fn kv_records_decode_or_refuse(
            kind in 7u8..=9,
            prefixed in any::<bool>(),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut payload = Vec::new();
            if prefixed {
                payload.extend_from_slice(&[6, 1, 0, 0, 0, b'v']);
            }
            payload.push(kind);
            payload.extend_from_slice(&rest);
            let _ = Record::decode(&Bytes::from(payload));
        }

        #[test]
        fn kv_puts_round_trip(
            vhost in "[a-z]{0,6}",
            plugin in ".{0,12}",
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..256),
            expires_at in any::<u64>(),
        ) {
            let record = Record::KvPut {
                vhost: Bytes::from(vhost),
                plugin: Bytes::from(plugin),
                key: Bytes::from(key),
                value: Bytes::from(value),
                expires_at,
            };
            let mut out = BytesMut::new();
            record.encode(&mut out);
            prop_assert_eq!(Record::decode(&payload_of(&out)).unwrap(), record);
        }

        #[test]
        fn enqueue_round_trips(
            id in any::<u64>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            headers in proptest::collection::vec((".{0,8}", ".{0,16}"), 0..6),
            expires_at in any::<u64>(),
        ) {
            let record = Record::Enqueue(Enqueue {
                id,
                vhost: Bytes::new(),
                queue: Bytes::from_static(b"/queue/q"),
                destination: Bytes::from_static(b"/topic/t"),
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (Bytes::from(n), Bytes::from(v)))
                    .collect(),
                body: Bytes::from(body),
                id_prefix: Bytes::from_static(b"p"),
                id_seq: id / 2,
                expires_at,
                schedule: None,
            });
            let mut out = BytesMut::new();
            record.encode(&mut out);
            prop_assert_eq!(Record::decode(&payload_of(&out)).unwrap(), record);
        }
    }
}
