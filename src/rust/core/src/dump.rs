//! Dump files: many objects (with namespace, tag, description, metadata and
//! send time) streamed into one file, and back into any store. Neither side
//! holds more than one object's metadata and a copy buffer in memory (plus,
//! when loading, the small objects of one batch), so a store of many GB
//! dumps and loads in constant memory.
//!
//! The dump is a disk format with its own versioned types (never the
//! protocol's). Format 2 (little endian):
//!   file header:  b"YAPLRDMP", u32 version = 2, u32 reserved = 0
//!   per object:   u8 1, u32 n, n bytes of a bincode DumpEntry, u64 xxh3 of
//!                 those n bytes, then DumpEntry.payload_len payload bytes
//!                 (as stored: R serialization, or a raw vector payload),
//!                 then u64 xxh3 of the payload
//!   end:          u8 0, u64 number of objects
//! Format 1 is the same without the payload checksums, and with FNV-1a 64
//! checksums of the entries; it is still read.
//! A reader checks every checksum and the final count, and a load makes
//! every object visible at once, after all were read and checked: a
//! truncated or damaged dump, or a loading process killed at any moment,
//! loads nothing. (A dump of more than MAX_BATCH_ITEMS objects is made
//! visible in batches of that many, each all or none.)

use crate::client::{CallOptions, Client, Found};
use crate::codec::{checksum, chunk, fnv1a64, Hasher};
use crate::error::{Error, Result};
use crate::key::{check_namespace, check_tag};
use crate::object_file::{ObjectWriter, HEADER_SIZE, STATE_COMMITTED};
use crate::progress::{Meter, Progress};
use crate::protocol::{Entry, PutItem, BATCH_INLINE_BUDGET, MAX_BATCH_ITEMS, MAX_FRAME};
use crate::store::INLINE_MAX;
use bincode::{Decode, Encode};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"YAPLRDMP";
/// The format this version writes.
pub const DUMP_VERSION: u32 = 2;
const DUMP_VERSION_1: u32 = 1;
const MAX_ENTRY: usize = 1 << 20;
const COPY_BUFFER: usize = 8 << 20;

/// What the sender said about an object, as a dump keeps it.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct Meta {
    pub class: Vec<String>,
    pub rtype: String,
    pub length: u64,
    pub dim: Vec<u64>,
    pub description: Option<String>,
}

impl From<&crate::protocol::Meta> for Meta {
    fn from(m: &crate::protocol::Meta) -> Meta {
        Meta {
            class: m.class.clone(),
            rtype: m.rtype.clone(),
            length: m.length,
            dim: m.dim.clone(),
            description: m.description.clone(),
        }
    }
}

impl From<&Meta> for crate::protocol::Meta {
    fn from(m: &Meta) -> crate::protocol::Meta {
        crate::protocol::Meta {
            class: m.class.clone(),
            rtype: m.rtype.clone(),
            length: m.length,
            dim: m.dim.clone(),
            description: m.description.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct DumpEntry {
    pub namespace: String,
    pub tag: String,
    pub ctime_ns: i64,
    pub kind: u32,
    pub payload_len: u64,
    pub meta: Meta,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

fn bad_dump(path: &Path, why: &str) -> Error {
    Error::Corrupt {
        message: format!(
            "\"{}\" is not a complete yaplr dump: {why}; nothing was loaded",
            path.display()
        ),
    }
}

/// Copies an object's payload into a dump, checking it against the
/// checksum written with it.
fn copy_payload(
    out: &mut dyn FnMut(&[u8]) -> Result<()>,
    found: &Found,
    payload_len: u64,
    recorded: u64,
    tag: &str,
    meter: &mut Meter<'_>,
) -> Result<u64> {
    let mut hasher = Hasher::new();
    match found {
        Found::Inline(_, b) => {
            hasher.update(b);
            out(b)?;
            meter.add(b.len() as u64)?;
        }
        Found::File(_, f) => {
            // pread in chunks: no mapping, so memory stays one buffer.
            let mut buf = vec![0u8; chunk(payload_len, COPY_BUFFER)];
            let mut at = 0u64;
            while at < payload_len {
                let n = chunk(payload_len - at, buf.len());
                f.read_exact_at(&mut buf[..n], HEADER_SIZE as u64 + at)
                    .map_err(|e| Error::Corrupt {
                        message: format!(
                            "the stored object \"{tag}\" could not be read whole: {e}"
                        ),
                    })?;
                hasher.update(&buf[..n]);
                out(&buf[..n])?;
                meter.add(n as u64)?;
                at += n as u64;
            }
        }
    }
    let sum = hasher.digest();
    if recorded != 0 && sum != recorded {
        return Err(Error::Corrupt {
            message: format!(
                "the stored object \"{tag}\" is damaged (its checksum does not match what was written); \
                 nothing was saved"
            ),
        });
    }
    Ok(sum)
}

/// Write the objects `entries` (as listed by the helper) to `path`.
/// Returns how many were written. The file is written to a temporary name
/// and renamed at the end, so a failed (or, through `progress`, stopped)
/// dump leaves no partial file. A damaged object makes it fail
/// (`Error::Corrupt`, naming the tag).
pub fn save(
    c: &mut Client,
    path: &Path,
    entries: &[Entry],
    opts: &CallOptions<'_>,
    progress: &mut dyn Progress,
) -> Result<u64> {
    let tmp = path.with_extension("yaplr-partial");
    let total = entries.iter().map(|e| e.size).sum();
    let result = (|| {
        let mut meter = Meter::new(progress, Some(total));
        let f = File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        let mut w = |b: &[u8]| out.write_all(b).map_err(|e| io_err("writing", &tmp, e));
        w(MAGIC)?;
        w(&DUMP_VERSION.to_le_bytes())?;
        w(&0u32.to_le_bytes())?;
        let mut n = 0u64;
        for e in entries {
            let found = c.lookup(&e.namespace, &e.tag, opts)?;
            let (entry, payload_len, kind, recorded) = match &found {
                Found::Inline(entry, bytes) => (
                    entry.clone(),
                    bytes.len() as u64,
                    entry.kind,
                    entry.checksum,
                ),
                Found::File(entry, file) => {
                    let h = crate::object_file::read_header(file)?;
                    if h.state != STATE_COMMITTED {
                        return Err(Error::Corrupt {
                            message: format!("object \"{}\" was never completely written", h.tag),
                        });
                    }
                    (entry.clone(), h.payload_len, h.kind, h.checksum)
                }
            };
            let d = DumpEntry {
                namespace: entry.namespace.clone(),
                tag: entry.tag.clone(),
                ctime_ns: entry.ctime_ns,
                kind,
                payload_len,
                meta: Meta::from(&entry.meta),
            };
            let head = bincode::encode_to_vec(&d, bincode::config::standard()).map_err(|e| {
                Error::Protocol {
                    message: e.to_string(),
                }
            })?;
            w(&[1u8])?;
            // Tags and metadata are bounded far below 4 GiB (a reader
            // refuses an entry over MAX_ENTRY bytes anyway).
            w(&u32::try_from(head.len()).unwrap_or(u32::MAX).to_le_bytes())?;
            w(&head)?;
            w(&checksum(&head).to_le_bytes())?;
            let sum = copy_payload(
                &mut w,
                &found,
                payload_len,
                recorded,
                &entry.tag,
                &mut meter,
            )?;
            w(&sum.to_le_bytes())?;
            n += 1;
        }
        w(&[0u8])?;
        w(&n.to_le_bytes())?;
        let f = out
            .into_inner()
            .map_err(|e| io_err("writing", &tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io_err("syncing", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err("renaming", &tmp, e))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a dump entry by entry.
struct Reader<'a> {
    path: &'a Path,
    input: BufReader<File>,
    version: u32,
}

impl Reader<'_> {
    fn open(path: &Path) -> Result<Reader<'_>> {
        let f = File::open(path).map_err(|e| io_err("opening", path, e))?;
        let mut r = Reader {
            path,
            input: BufReader::with_capacity(1 << 20, f),
            version: 0,
        };
        let mut head = [0u8; 16];
        r.exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(bad_dump(path, "wrong magic number"));
        }
        let version = crate::codec::u32_at(&head, 8);
        if version != DUMP_VERSION && version != DUMP_VERSION_1 {
            return Err(bad_dump(
                path,
                &format!("format version {version}, this yaplr reads {DUMP_VERSION_1} and {DUMP_VERSION}"),
            ));
        }
        r.version = version;
        Ok(r)
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bad_dump(self.path, "it ends too early")
            } else {
                io_err("reading", self.path, e)
            }
        })
    }

    /// The next entry, or None at the end marker (after checking the count).
    fn next(&mut self, seen: u64) -> Result<Option<DumpEntry>> {
        let mut t = [0u8; 1];
        self.exact(&mut t)?;
        if t[0] == 0 {
            let mut n = [0u8; 8];
            self.exact(&mut n)?;
            if u64::from_le_bytes(n) != seen {
                return Err(bad_dump(self.path, "the object count does not match"));
            }
            let mut rest = [0u8; 1];
            if self
                .input
                .read(&mut rest)
                .map_err(|e| io_err("reading", self.path, e))?
                != 0
            {
                return Err(bad_dump(self.path, "bytes follow its end"));
            }
            return Ok(None);
        }
        if t[0] != 1 {
            return Err(bad_dump(self.path, "unknown record"));
        }
        let mut len = [0u8; 4];
        self.exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_ENTRY {
            return Err(bad_dump(self.path, "an entry is too large"));
        }
        let mut head = vec![0u8; len];
        self.exact(&mut head)?;
        let mut sum = [0u8; 8];
        self.exact(&mut sum)?;
        let expected = if self.version == DUMP_VERSION_1 {
            fnv1a64(&head)
        } else {
            checksum(&head)
        };
        if u64::from_le_bytes(sum) != expected {
            return Err(bad_dump(self.path, "an entry's checksum does not match"));
        }
        let (d, used): (DumpEntry, usize) =
            bincode::decode_from_slice(&head, bincode::config::standard())
                .map_err(|_| bad_dump(self.path, "an entry can not be decoded"))?;
        if used != len {
            return Err(bad_dump(self.path, "an entry can not be decoded"));
        }
        Ok(Some(d))
    }

    /// Pass the payload of `d` to `sink` in chunks, then check it against
    /// its checksum (format 2).
    fn payload(&mut self, d: &DumpEntry, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut hasher = Hasher::new();
        let mut buf = vec![0u8; chunk(d.payload_len, COPY_BUFFER)];
        let mut left = d.payload_len;
        while left > 0 {
            let n = chunk(left, buf.len());
            self.exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            sink(&buf[..n])?;
            left -= n as u64;
        }
        if self.version != DUMP_VERSION_1 {
            let mut sum = [0u8; 8];
            self.exact(&mut sum)?;
            if u64::from_le_bytes(sum) != hasher.digest() {
                return Err(bad_dump(
                    self.path,
                    &format!("the data of \"{}\" is damaged (checksum mismatch)", d.tag),
                ));
            }
        }
        Ok(())
    }

    fn skip_payload(&mut self, d: &DumpEntry) -> Result<()> {
        let trailer = if self.version == DUMP_VERSION_1 { 0 } else { 8 };
        let n = d
            .payload_len
            .checked_add(trailer)
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| bad_dump(self.path, "an entry is too large"))?;
        self.input
            .seek(SeekFrom::Current(n))
            .map_err(|e| io_err("reading", self.path, e))?;
        Ok(())
    }
}

/// The entries of a dump, checking its framing (payloads are skipped).
pub fn entries(path: &Path) -> Result<Vec<DumpEntry>> {
    let mut r = Reader::open(path)?;
    let mut out = Vec::new();
    while let Some(d) = r.next(out.len() as u64)? {
        r.skip_payload(&d)?;
        out.push(d);
    }
    Ok(out)
}

/// Load every object of the dump at `path` into the client's store, all or
/// none: every object is read, checked and staged (small ones in memory,
/// the others in unpublished object files) before one batch makes them all
/// visible at once. Unless `overwrite`, refuses (before loading anything)
/// when a tag already exists. Returns the entries loaded.
pub fn load(
    c: &mut Client,
    path: &Path,
    overwrite: bool,
    opts: &CallOptions<'_>,
    progress: &mut dyn Progress,
) -> Result<Vec<DumpEntry>> {
    let all = entries(path)?;
    if !overwrite {
        for d in &all {
            if c.exists(&d.namespace, &d.tag, opts)? {
                return Err(Error::BadArgument(format!(
                    "the store already holds \"{}\" (namespace \"{}\"); nothing was loaded; \
                     use overwrite = TRUE to replace it",
                    d.tag, d.namespace
                )));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for d in &all {
        check_tag(&d.tag)?;
        check_namespace(&d.namespace)?;
        if !seen.insert((&d.namespace, &d.tag)) {
            return Err(bad_dump(path, &format!("it holds \"{}\" twice", d.tag)));
        }
    }
    let mut staged: Vec<String> = Vec::new();
    let total = all.iter().map(|d| d.payload_len).sum();
    let mut meter = Meter::new(progress, Some(total));
    let staging = stage_all(c, path, &mut staged, &mut meter);
    drop(meter);
    let items = match staging {
        Ok(items) => items,
        Err(e) => {
            c.discard_staged(&e, &staged);
            return Err(e);
        }
    };
    // One batch when it fits in a message (MAX_BATCH_ITEMS objects, and a
    // frame's worth of tags and metadata); a larger dump is published in
    // several batches, each all or none.
    let mut groups: Vec<Vec<PutItem>> = vec![Vec::new()];
    let mut bytes = 0usize;
    for item in items {
        let size = 256
            + item.tag.len()
            + item.namespace.len()
            + item.meta.description.as_ref().map_or(0, |d| d.len())
            + item.meta.class.iter().map(|c| c.len() + 2).sum::<usize>()
            + item.inline.as_ref().map_or(0, |b| b.len());
        let last = groups.last_mut().expect("one group");
        if !last.is_empty() && (last.len() == MAX_BATCH_ITEMS || bytes + size > MAX_FRAME / 2) {
            groups.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        groups.last_mut().expect("one group").push(item);
    }
    for group in groups {
        let ids: Vec<String> = group.iter().filter_map(|i| i.id.clone()).collect();
        if let Err(e) = c.put_many(group, opts) {
            c.discard_staged(&e, &staged);
            return Err(e);
        }
        staged.retain(|id| !ids.contains(id));
    }
    Ok(all)
}

/// Read every object of the dump into PutItems; the ids of the files made
/// go to `staged` as they are committed.
fn stage_all(
    c: &Client,
    path: &Path,
    staged: &mut Vec<String>,
    meter: &mut Meter<'_>,
) -> Result<Vec<PutItem>> {
    let mut r = Reader::open(path)?;
    let mut items = Vec::new();
    let mut inline_bytes = 0usize;
    while let Some(d) = r.next(items.len() as u64)? {
        let len = usize::try_from(d.payload_len).unwrap_or(usize::MAX);
        let small = len <= INLINE_MAX;
        let (inline, id) = if small && inline_bytes + len <= BATCH_INLINE_BUDGET {
            let mut bytes = Vec::with_capacity(len);
            r.payload(&d, &mut |b| {
                bytes.extend_from_slice(b);
                meter.add(b.len() as u64)
            })?;
            inline_bytes += bytes.len();
            (Some(bytes), None)
        } else {
            let mut w =
                ObjectWriter::create(c.store(), &d.namespace, &d.tag, d.kind, d.payload_len)?;
            w.set_ctime(d.ctime_ns);
            r.payload(&d, &mut |b| {
                w.write(b)?;
                meter.add(b.len() as u64)
            })?;
            let (id, _) = w.commit()?;
            staged.push(id.clone());
            (None, Some(id))
        };
        items.push(PutItem {
            namespace: d.namespace.clone(),
            tag: d.tag.clone(),
            kind: d.kind,
            ctime_ns: d.ctime_ns,
            inline,
            id,
            meta: (&d.meta).into(),
        });
    }
    Ok(items)
}
