//! The helper's journal: an append-only log of catalog changes in the store
//! directory. Small objects live in it inline (no file per object); large
//! ones are referenced by their object file id. Every record is appended
//! before the change is acknowledged, so a killed helper loses nothing: the
//! next one replays the journal. A torn record at the end (the helper died
//! mid-append) is cut off on replay; a damaged one is skipped.
//!
//! The journal is a disk format, versioned on its own: its records are
//! defined here, never borrowed from the protocol, so a new protocol field
//! can not make a kept store unreadable. Format 4 (little endian):
//!   b"YAPLRJN4", then records:
//!   u32 body length, u64 payload length, u64 xxh3 of the body, u64 xxh3
//!   of the 20 bytes before it (so a damaged length is told from a torn
//!   last record), the body (bincode `Record`), then the inline payloads of the record's
//!   `Put`s, back to back, in the order they appear (each checked by the
//!   xxh3 its `Put` carries).
//! Inline payloads are not kept in the helper's memory: it reads them from
//! the journal (in the page cache) when they are looked up.
//! Format 3 (b"YAPLRJN3", payloads inside the bincode body, FNV-1a
//! checksums) is read and converted to format 4 when a helper opens it.
//! Records added to format 4 since (Lease, Unlease) are appended to the
//! enum, so every journal written before them reads as it did.

use crate::codec::{checksum, put_u32, put_u64, u32_at, u64_at};
use crate::error::{Error, Result};
use crate::store::{Dir, How, JOURNAL_DAMAGED_NAME, JOURNAL_NAME, JOURNAL_TMP_NAME};
use bincode::{Decode, Encode};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"YAPLRJN4";
const MAGIC_V3: &[u8; 8] = b"YAPLRJN3";
/// Offsets in a record's frame head: the body length (u32), the payload
/// length (u64), the xxh3 of the body, the xxh3 of the bytes before it.
const BODY_LEN_AT: usize = 0;
const PAYLOAD_LEN_AT: usize = BODY_LEN_AT + 4;
const BODY_SUM_AT: usize = PAYLOAD_LEN_AT + 8;
const HEAD_SUM_AT: usize = BODY_SUM_AT + 8;
/// Bytes before each record's body.
const FRAME_HEAD: usize = HEAD_SUM_AT + 8;
const _: () = assert!(FRAME_HEAD == 4 + 8 + 8 + 8);
/// The largest record body (payloads not included).
const MAX_BODY: usize = 64 << 20;
/// Records with at most this many payload bytes are written in one call.
const SMALL_RECORD: u64 = 256 << 10;
/// Journals smaller than this are never compacted.
const COMPACT_MIN: u64 = 1 << 20;

/// What the sender said about an object, as the journal keeps it.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct Meta {
    pub class: Vec<String>,
    pub rtype: String,
    pub length: u64,
    pub dim: Vec<u64>,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Record {
    /// A small object, stored inline: its `len` payload bytes follow the
    /// record's body.
    Put {
        namespace: String,
        tag: String,
        ctime_ns: i64,
        kind: u32,
        len: u64,
        /// xxh3 of the payload.
        sum: u64,
        meta: Meta,
        /// Store-wide sequence number: the object's version.
        seq: u64,
    },
    /// An object stored in its own file.
    Link {
        namespace: String,
        tag: String,
        id: String,
        ctime_ns: i64,
        kind: u32,
        size: u64,
        meta: Meta,
        seq: u64,
    },
    Remove {
        namespace: String,
        tag: String,
    },
    /// The store's capacity (None: unlimited).
    Capacity {
        bytes: Option<u64>,
    },
    /// Several changes that take effect together or not at all (one
    /// record, one checksum).
    Batch(Vec<Record>),
    /// Request `seq` of client `client` (process `pid`) took effect with
    /// this answer: a retry of it changes nothing and gets the same answer.
    Applied {
        client: u64,
        pid: u32,
        seq: u64,
        answer: u64,
    },
    /// The queue item stored under `tag` is leased to process `pid`
    /// (started at `start`, see sys::process_start) until it is
    /// acknowledged (a Remove) or handed back (Unlease); `token` names the
    /// lease.
    Lease {
        namespace: String,
        tag: String,
        pid: u32,
        start: u64,
        token: u64,
    },
    /// A leased queue item goes back to the head of its queue.
    Unlease {
        namespace: String,
        tag: String,
    },
}

impl Record {
    /// The payload lengths of the record's Puts, in order.
    fn payload_lens(&self, out: &mut Vec<u64>) {
        match self {
            Record::Put { len, .. } => out.push(*len),
            Record::Batch(recs) => recs.iter().for_each(|r| r.payload_lens(out)),
            _ => {}
        }
    }
}

/// A record read back, with where its payloads start in the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub record: Record,
    pub payload_at: u64,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BODY>()
}

fn encode_body(rec: &Record) -> Result<Vec<u8>> {
    let body = bincode::encode_to_vec(rec, config()).map_err(|e| Error::Server {
        message: format!("could not encode a journal record: {e}"),
    })?;
    if body.len() > MAX_BODY {
        return Err(Error::BadArgument(format!(
            "a change of the catalog may describe at most {MAX_BODY} bytes of tags and metadata"
        )));
    }
    Ok(body)
}

/// The frame head of a record whose body (at most MAX_BODY bytes, see
/// `encode_body`) is followed by `payload_len` payload bytes.
fn frame_head(body: &[u8], payload_len: u64) -> [u8; FRAME_HEAD] {
    const _: () = assert!(MAX_BODY <= u32::MAX as usize);
    let mut h = [0u8; FRAME_HEAD];
    put_u32(
        &mut h,
        BODY_LEN_AT,
        u32::try_from(body.len()).unwrap_or(u32::MAX),
    );
    put_u64(&mut h, PAYLOAD_LEN_AT, payload_len);
    put_u64(&mut h, BODY_SUM_AT, checksum(body));
    let head_sum = checksum(&h[..HEAD_SUM_AT]);
    put_u64(&mut h, HEAD_SUM_AT, head_sum);
    h
}

/// Parse format 4 records. A record whose body or payload is damaged but
/// whose lengths are intact is skipped (later records survive); parsing
/// stops at a record that runs past the end (a torn last append). Returns
/// the records, the length of the parsable prefix, and whether any record
/// was skipped.
fn parse(bytes: &[u8]) -> (Vec<Stored>, usize, bool) {
    let mut recs = Vec::new();
    let mut skipped = false;
    let mut at = MAGIC.len();
    while at + FRAME_HEAD <= bytes.len() {
        let head_sum = u64_at(bytes, at + HEAD_SUM_AT);
        if checksum(&bytes[at..at + HEAD_SUM_AT]) != head_sum {
            // A damaged length: nothing after it can be framed.
            skipped = true;
            break;
        }
        let n = u32_at(bytes, at + BODY_LEN_AT) as usize;
        let p = u64_at(bytes, at + PAYLOAD_LEN_AT);
        let sum = u64_at(bytes, at + BODY_SUM_AT);
        let body_at = at + FRAME_HEAD;
        let Some(end) = usize::try_from(p)
            .ok()
            .and_then(|p| body_at.checked_add(n)?.checked_add(p))
            .filter(|&end| end <= bytes.len())
        else {
            break;
        };
        let body = &bytes[body_at..body_at + n];
        let payload_at = body_at + n;
        let decoded = (checksum(body) == sum)
            .then(|| bincode::decode_from_slice::<Record, _>(body, config()).ok())
            .flatten()
            .filter(|(_, used)| *used == n)
            .map(|(rec, _)| rec)
            .filter(|rec| payloads_intact(rec, &bytes[payload_at..end]));
        match decoded {
            Some(record) => recs.push(Stored {
                record,
                payload_at: payload_at as u64,
            }),
            None => skipped = true,
        }
        at = end;
    }
    (recs, at, skipped)
}

/// Whether the payloads of `rec` fill `payloads` exactly and match their
/// checksums.
fn payloads_intact(rec: &Record, payloads: &[u8]) -> bool {
    let mut lens = Vec::new();
    rec.payload_lens(&mut lens);
    let mut sums = Vec::new();
    collect_sums(rec, &mut sums);
    let mut at = 0usize;
    for (len, sum) in lens.into_iter().zip(sums) {
        let Some(p) = usize::try_from(len)
            .ok()
            .and_then(|len| payloads.get(at..at.checked_add(len)?))
        else {
            return false;
        };
        if checksum(p) != sum {
            return false;
        }
        at += p.len();
    }
    at == payloads.len()
}

fn collect_sums(rec: &Record, out: &mut Vec<u64>) {
    match rec {
        Record::Put { sum, .. } => out.push(*sum),
        Record::Batch(recs) => recs.iter().for_each(|r| collect_sums(r, out)),
        _ => {}
    }
}

/// A payload length as a buffer size: more than the address space can
/// hold is a failure to allocate (on 64-bit targets, it always fits).
fn to_usize(len: u64) -> Result<usize> {
    usize::try_from(len).map_err(|_| {
        Error::io(
            format!("reading a journal payload of {len} bytes"),
            std::io::ErrorKind::OutOfMemory.into(),
        )
    })
}

/// Format 3, read only to convert kept stores.
mod v3 {
    use bincode::{Decode, Encode};

    #[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
    pub struct Meta {
        pub class: Vec<String>,
        pub rtype: String,
        pub length: u64,
        pub dim: Vec<u64>,
        pub description: Option<String>,
    }

    #[derive(Debug, Clone, PartialEq, Encode, Decode)]
    pub enum Record {
        Put {
            namespace: String,
            tag: String,
            ctime_ns: i64,
            kind: u32,
            bytes: Vec<u8>,
            meta: Meta,
            seq: u64,
        },
        Link {
            namespace: String,
            tag: String,
            id: String,
            ctime_ns: i64,
            kind: u32,
            size: u64,
            meta: Meta,
            seq: u64,
        },
        Remove {
            namespace: String,
            tag: String,
        },
        Capacity {
            bytes: Option<u64>,
        },
        Batch(Vec<Record>),
    }

    /// Records of a format 3 journal (after its magic); damaged ones are
    /// skipped, a torn tail is cut. Returns the records and whether any was
    /// lost.
    pub fn parse(bytes: &[u8]) -> (Vec<Record>, bool) {
        let config = bincode::config::standard().with_limit::<{ 64 << 20 }>();
        let mut recs = Vec::new();
        let mut lost = false;
        let mut at = 8;
        while at + 12 <= bytes.len() {
            let n = crate::codec::u32_at(bytes, at) as usize;
            let sum = crate::codec::u64_at(bytes, at + 4);
            let Some(body) = bytes.get(at + 12..at + 12 + n) else {
                lost = true;
                break;
            };
            let decoded = (crate::codec::fnv1a64(body) == sum)
                .then(|| bincode::decode_from_slice::<Record, _>(body, config).ok())
                .flatten()
                .filter(|(_, used)| *used == n);
            match decoded {
                Some((rec, _)) => recs.push(rec),
                None => lost = true,
            }
            at += 12 + n;
        }
        (recs, lost || at < bytes.len())
    }

    /// A format 4 record and the payloads it carries.
    pub fn convert(rec: Record, payloads: &mut Vec<Vec<u8>>) -> super::Record {
        let meta = |m: Meta| super::Meta {
            class: m.class,
            rtype: m.rtype,
            length: m.length,
            dim: m.dim,
            description: m.description,
        };
        match rec {
            Record::Put {
                namespace,
                tag,
                ctime_ns,
                kind,
                bytes,
                meta: m,
                seq,
            } => {
                let r = super::Record::Put {
                    namespace,
                    tag,
                    ctime_ns,
                    kind,
                    len: bytes.len() as u64,
                    sum: crate::codec::checksum(&bytes),
                    meta: meta(m),
                    seq,
                };
                payloads.push(bytes);
                r
            }
            Record::Link {
                namespace,
                tag,
                id,
                ctime_ns,
                kind,
                size,
                meta: m,
                seq,
            } => super::Record::Link {
                namespace,
                tag,
                id,
                ctime_ns,
                kind,
                size,
                meta: meta(m),
                seq,
            },
            Record::Remove { namespace, tag } => super::Record::Remove { namespace, tag },
            Record::Capacity { bytes } => super::Record::Capacity { bytes },
            Record::Batch(recs) => {
                super::Record::Batch(recs.into_iter().map(|r| convert(r, payloads)).collect())
            }
        }
    }
}

/// Where the payloads of a record written by `Journal::rewrite` come from.
pub enum Payload<'a> {
    /// Bytes in memory.
    Bytes(&'a [u8]),
    /// `len` bytes at `at` in the current journal.
    At { at: u64, len: u64 },
}

pub struct Journal {
    file: File,
    dir: Dir,
    path: PathBuf,
    len: u64,
    /// fdatasync after each append (stores on a disk).
    durable: bool,
    /// Whether open() had to cut damaged records off.
    damaged: bool,
}

impl Journal {
    /// Open the journal of the store in `dir`. Returns the records of an
    /// existing journal (None when there was none, or it was unreadable),
    /// with a torn tail cut off. A journal of format 3 is converted.
    pub fn open(dir: &Path, durable: bool) -> Result<(Journal, Option<Vec<Stored>>)> {
        let path = dir.join(JOURNAL_NAME);
        let dir = Dir::open(dir)?;
        // Never through a link, never a file of another user.
        let file = dir.open_file(JOURNAL_NAME, How::ReadWrite)?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        // Mapped, not read: a journal of many GB of small objects costs no
        // memory of its own to replay.
        let map = if len == 0 {
            None
        } else {
            Some(
                // SAFETY: only this helper (it holds the store's helper
                // lock) writes the journal, and it does not while the
                // mapping lives; the mapping is dropped before the file is
                // cut or rewritten.
                unsafe { memmap2::Mmap::map(&file) }
                    .map_err(|e| Error::io(format!("mapping {}", path.display()), e))?,
            )
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let mut j = Journal {
            file,
            dir,
            path,
            len: 0,
            durable,
            damaged: false,
        };
        if bytes.starts_with(MAGIC_V3) {
            let (old, lost) = v3::parse(bytes);
            drop(map);
            let mut payloads = Vec::new();
            let recs: Vec<Record> = old
                .into_iter()
                .map(|r| v3::convert(r, &mut payloads))
                .collect();
            let mut next = payloads.iter();
            let items: Vec<(Record, Vec<Payload<'_>>)> = recs
                .into_iter()
                .map(|r| {
                    let mut lens = Vec::new();
                    r.payload_lens(&mut lens);
                    let ps = lens
                        .iter()
                        .filter_map(|_| next.next().map(|b| Payload::Bytes(b)))
                        .collect();
                    (r, ps)
                })
                .collect();
            j.rewrite(items)?;
            let bytes = j.read(0, j.len)?;
            let (recs, _, _) = parse(&bytes);
            j.damaged = lost;
            return Ok((j, Some(recs)));
        }
        if bytes.starts_with(b"YAPLRJN") && !bytes.starts_with(MAGIC) {
            // A journal of another (newer) version: never reset it.
            return Err(Error::Store {
                message: format!(
                    "the journal {} was written by another version of yaplr (format {}); \
                     use that version with this store, or another store directory",
                    j.path.display(),
                    String::from_utf8_lossy(&bytes[7..bytes.len().min(8)])
                ),
                hint: None,
            });
        }
        let (records, valid, skipped) = if bytes.starts_with(MAGIC) {
            let (r, valid, skipped) = parse(bytes);
            (Some(r), valid, skipped)
        } else {
            (None, 0, false)
        };
        // A torn last record (the helper died mid-append) was never
        // acknowledged: cutting it loses nothing. Records skipped within
        // the journal, or a damaged length, are damage: the journal is kept
        // as it was, for inspection, before it is cut.
        j.damaged = skipped;
        if skipped {
            let _ = j.dir.unlink(JOURNAL_DAMAGED_NAME);
            if let Ok(mut copy) = j.dir.open_file(JOURNAL_DAMAGED_NAME, How::CreateNew) {
                let _ = copy.write_all(bytes);
            }
        }
        drop(map);
        if durable {
            // The journal's directory entry, if it was just created.
            let _ = j.dir.sync();
        }
        if records.is_none() {
            j.file
                .set_len(0)
                .map_err(|e| Error::io("resetting the journal", e))?;
            j.write_at_end(&[MAGIC.as_slice()])?;
        } else {
            j.file
                .set_len(valid as u64)
                .map_err(|e| Error::io("trimming the journal", e))?;
            j.len = valid as u64;
        }
        Ok((j, records))
    }

    fn write_at_end(&mut self, parts: &[&[u8]]) -> Result<()> {
        let mut at = self.len;
        for bytes in parts {
            if let Err(e) = self.file.write_all_at(bytes, at) {
                // Leave no partial record behind: the next append overwrites it.
                let _ = self.file.set_len(self.len);
                return Err(Error::io(format!("writing {}", self.path.display()), e));
            }
            at += bytes.len() as u64;
        }
        if self.durable {
            if let Err(e) = self.file.sync_data() {
                let _ = self.file.set_len(self.len);
                return Err(Error::io(format!("syncing {}", self.path.display()), e));
            }
        }
        self.len = at;
        Ok(())
    }

    /// Append one record and the payloads of its Puts (in order). Returns
    /// where the payloads start. Durable against a crash of the helper: it
    /// is in the page cache as soon as this returns.
    pub fn append(&mut self, rec: &Record, payloads: &[&[u8]]) -> Result<u64> {
        let body = encode_body(rec)?;
        let total: u64 = payloads.iter().map(|p| p.len() as u64).sum();
        let head = frame_head(&body, total);
        let payload_at = self.len + (FRAME_HEAD + body.len()) as u64;
        if total <= SMALL_RECORD {
            // One write for a small record: one system call.
            // `total` is at most SMALL_RECORD, so it fits.
            let small = usize::try_from(total).unwrap_or(0);
            let mut one = Vec::with_capacity(FRAME_HEAD + body.len() + small);
            one.extend_from_slice(&head);
            one.extend_from_slice(&body);
            payloads.iter().for_each(|p| one.extend_from_slice(p));
            self.write_at_end(&[&one])?;
        } else {
            let mut parts: Vec<&[u8]> = vec![&head, &body];
            parts.extend_from_slice(payloads);
            self.write_at_end(&parts)?;
        }
        Ok(payload_at)
    }

    /// Read `len` payload bytes at `at`.
    pub fn read(&self, at: u64, len: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; to_usize(len)?];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| Error::io(format!("reading {}", self.path.display()), e))?;
        Ok(buf)
    }

    /// True when records within the journal were lost to damage (a torn
    /// last append is not damage); callers should then trust file headers
    /// more.
    pub fn was_damaged(&self) -> bool {
        self.damaged
    }

    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Whether the journal holds more than a fifth of dead records beyond
    /// `live` bytes (what a rewrite would keep), once past COMPACT_MIN: the
    /// store's memory stays within 1.2 times what it holds.
    pub fn wants_compaction(&self, live: u64) -> bool {
        self.len > COMPACT_MIN && self.len > live + live / 5
    }

    /// Replace the journal by one holding just `live`, atomically (write a
    /// new file, then rename it over the old one). Returns, per record,
    /// where its payloads start in the new journal.
    pub fn rewrite(&mut self, live: Vec<(Record, Vec<Payload<'_>>)>) -> Result<Vec<u64>> {
        // A leftover (or planted) temporary file is removed, never reused:
        // the new one is created with O_EXCL and without following links.
        let _ = self.dir.unlink(JOURNAL_TMP_NAME);
        let io = |e| Error::io(format!("compacting {}", self.path.display()), e);
        let written = (|| -> Result<(File, u64, Vec<u64>)> {
            let f = self.dir.open_file(JOURNAL_TMP_NAME, How::CreateNew)?;
            let mut out = BufWriter::with_capacity(1 << 20, &f);
            out.write_all(MAGIC).map_err(io)?;
            let mut len = MAGIC.len() as u64;
            let mut starts = Vec::with_capacity(live.len());
            let mut buf = Vec::new();
            for (rec, payloads) in &live {
                let body = encode_body(rec)?;
                let total: u64 = payloads
                    .iter()
                    .map(|p| match p {
                        Payload::Bytes(b) => b.len() as u64,
                        Payload::At { len, .. } => *len,
                    })
                    .sum();
                out.write_all(&frame_head(&body, total)).map_err(io)?;
                out.write_all(&body).map_err(io)?;
                len += (FRAME_HEAD + body.len()) as u64;
                starts.push(len);
                for p in payloads {
                    match p {
                        Payload::Bytes(b) => out.write_all(b).map_err(io)?,
                        Payload::At { at, len } => {
                            buf.resize(to_usize(*len)?, 0);
                            self.file.read_exact_at(&mut buf, *at).map_err(io)?;
                            out.write_all(&buf).map_err(io)?;
                        }
                    }
                }
                len += total;
            }
            out.flush().map_err(io)?;
            drop(out);
            if self.durable {
                f.sync_data().map_err(io)?;
            }
            self.dir
                .rename(JOURNAL_TMP_NAME, JOURNAL_NAME)
                .map_err(io)?;
            if self.durable {
                self.dir.sync().map_err(io)?;
            }
            Ok((f, len, starts))
        })();
        match written {
            Ok((f, len, starts)) => {
                self.file = f;
                self.len = len;
                Ok(starts)
            }
            Err(e) => {
                let _ = self.dir.unlink(JOURNAL_TMP_NAME);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("yaplr-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(tag: &str, b: &[u8]) -> Record {
        Record::Put {
            namespace: "default".into(),
            tag: tag.into(),
            ctime_ns: 1,
            kind: 1,
            len: b.len() as u64,
            sum: checksum(b),
            meta: Meta::default(),
            seq: 1,
        }
    }

    fn records(v: Option<Vec<Stored>>) -> Vec<Record> {
        v.unwrap().into_iter().map(|s| s.record).collect()
    }

    fn remove(tag: &str) -> Record {
        Record::Remove {
            namespace: "default".into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn records_survive_reopen_and_torn_tails_are_cut() {
        let d = temp_dir("reopen");
        {
            let (mut j, recs) = Journal::open(&d, false).unwrap();
            assert!(recs.is_none());
            j.append(&put("a", b"one"), &[b"one"]).unwrap();
            j.append(&remove("a"), &[]).unwrap();
            let at = j.append(&put("b", b"two"), &[b"two"]).unwrap();
            assert_eq!(j.read(at, 3).unwrap(), b"two");
        }
        let path = d.join(JOURNAL_NAME);
        let full = std::fs::read(&path).unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        let recs = recs.unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(j.read(recs[2].payload_at, 3).unwrap(), b"two");
        // Cut the last record in half, as a helper killed mid-append would.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (mut j, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(records(recs), vec![put("a", b"one"), remove("a")]);
        j.append(&put("c", b"three"), &[b"three"]).unwrap();
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(records(recs).last().unwrap(), &put("c", b"three"));
        // A flipped bit in a payload, or in a body, loses that record only.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        let first_body = 8 + FRAME_HEAD + 3;
        bytes[first_body] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        assert!(j.was_damaged());
        assert_eq!(records(recs), vec![remove("a")]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_length_is_damage_and_the_journal_is_kept() {
        let d = temp_dir("length");
        let (mut j, _) = Journal::open(&d, false).unwrap();
        j.append(&put("a", b"one"), &[b"one"]).unwrap();
        let second = j.bytes();
        j.append(&put("b", b"two"), &[b"two"]).unwrap();
        j.append(&put("c", b"three"), &[b"three"]).unwrap();
        drop(j);
        let path = d.join(JOURNAL_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        // The payload length of the second record.
        bytes[usize::try_from(second).unwrap() + 5] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        assert!(j.was_damaged(), "a damaged length is not a torn tail");
        assert_eq!(records(recs), vec![put("a", b"one")]);
        assert_eq!(std::fs::read(d.join(JOURNAL_DAMAGED_NAME)).unwrap(), bytes);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rewrite_keeps_only_live_records() {
        let d = temp_dir("rewrite");
        let (mut j, _) = Journal::open(&d, false).unwrap();
        let mut last = 0;
        for i in 0..100 {
            let b = vec![u8::try_from(i).unwrap(); 1000];
            last = j.append(&put("x", &b), &[&b]).unwrap();
        }
        assert!(j.wants_compaction(2000) || j.bytes() < COMPACT_MIN);
        let before = j.bytes();
        let starts = j
            .rewrite(vec![
                (
                    put("x", &[99u8; 1000]),
                    vec![Payload::At {
                        at: last,
                        len: 1000,
                    }],
                ),
                (put("y", b"mem"), vec![Payload::Bytes(b"mem")]),
            ])
            .unwrap();
        assert!(j.bytes() < before / 10);
        assert_eq!(j.read(starts[0], 1000).unwrap(), vec![99u8; 1000]);
        assert_eq!(j.read(starts[1], 3).unwrap(), b"mem");
        j.append(&put("z", b"after"), &[b"after"]).unwrap();
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(
            records(recs),
            vec![
                put("x", &[99u8; 1000]),
                put("y", b"mem"),
                put("z", b"after")
            ]
        );
        assert!(!d.join(JOURNAL_TMP_NAME).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn batches_carry_their_payloads_in_order() {
        let d = temp_dir("batch");
        let (mut j, _) = Journal::open(&d, false).unwrap();
        let batch = Record::Batch(vec![
            put("a", b"first"),
            remove("z"),
            put("b", b"second"),
            Record::Applied {
                client: 7,
                pid: 1,
                seq: 3,
                answer: 0,
            },
        ]);
        let at = j.append(&batch, &[b"first", b"second"]).unwrap();
        assert_eq!(j.read(at, 11).unwrap(), b"firstsecond");
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(records(recs), vec![batch]);
        // Payloads that do not match the checksums their Puts carry lose
        // the record.
        let (mut j, _) = Journal::open(&d, false).unwrap();
        j.append(&put("c", b"right"), &[b"wrong"]).unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        assert!(j.was_damaged());
        assert_eq!(recs.unwrap().len(), 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rewrite_never_writes_through_a_planted_link() {
        let d = temp_dir("planted");
        let victim = d.with_extension("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let (mut j, _) = Journal::open(&d, false).unwrap();
        std::os::unix::fs::symlink(&victim, d.join(JOURNAL_TMP_NAME)).unwrap();
        j.rewrite(vec![(put("x", b"live"), vec![Payload::Bytes(b"live")])])
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(records(recs), vec![put("x", b"live")]);
        // A journal that is a link is refused, not followed.
        std::fs::remove_file(d.join(JOURNAL_NAME)).unwrap();
        std::os::unix::fs::symlink(&victim, d.join(JOURNAL_NAME)).unwrap();
        let err = Journal::open(&d, false).err().unwrap();
        assert_eq!(err.kind(), "store");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_file(&victim).unwrap();
    }

    #[test]
    fn garbage_journal_is_treated_as_absent() {
        let d = temp_dir("garbage");
        std::fs::write(d.join(JOURNAL_NAME), b"not a journal at all").unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        assert!(recs.is_none());
        assert_eq!(j.bytes(), MAGIC.len() as u64);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The journal of a store kept by a version that wrote format 3 (the
    /// fixture in tests/testthat/fixtures) opens, converted to format 4.
    #[test]
    fn a_format_3_journal_is_converted() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../tests/testthat/fixtures/journal-v3-store/catalog.journal");
        let d = temp_dir("v3");
        std::fs::copy(&fixture, d.join(JOURNAL_NAME)).unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        assert!(!j.was_damaged());
        let recs = recs.unwrap();
        let small = recs
            .iter()
            .find_map(|s| match &s.record {
                Record::Put { tag, len, meta, .. } if tag == "small" => {
                    Some((s.payload_at, *len, meta.clone()))
                }
                _ => None,
            })
            .expect("the inline object \"small\"");
        assert_eq!(small.2.description.as_deref(), Some("ten integers"));
        assert_eq!(small.2.class, vec!["integer".to_string()]);
        let payload = j.read(small.0, small.1).unwrap();
        assert_eq!(&payload[..2], b"B\n", "R serialization, binary");
        assert!(recs.iter().any(|s| matches!(&s.record,
            Record::Link { tag, kind: 2, .. } if tag == "vector")));
        assert!(recs.iter().any(|s| matches!(&s.record,
            Record::Remove { tag, .. } if tag == "removed")));
        let bytes = std::fs::read(d.join(JOURNAL_NAME)).unwrap();
        assert!(bytes.starts_with(MAGIC));
        let (_, again) = Journal::open(&d, false).unwrap();
        assert_eq!(again.unwrap(), recs);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
