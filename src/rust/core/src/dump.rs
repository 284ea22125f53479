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

use crate::codec::{checksum, chunk, fnv1a64};
use crate::error::{Error, Result};
use bincode::{Decode, Encode};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
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

pub(crate) fn bad_dump(path: &Path, why: &str) -> Error {
    Error::corrupt(format!(
        "\"{}\" is not a complete yaplr dump: {why}; nothing was loaded",
        path.display()
    ))
}

/// Writes a dump: to a temporary name, renamed over `path` by `finish`;
/// dropped before, it removes the temporary file, so a failed (or stopped)
/// dump leaves no partial file.
pub(crate) struct Writer {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    out: Option<BufWriter<File>>,
    count: u64,
    /// The payload of the current entry: bytes left, and their checksum.
    left: u64,
    hasher: xxhash_rust::xxh3::Xxh3,
}

impl Writer {
    pub(crate) fn create(path: &Path) -> Result<Writer> {
        let tmp = path.with_extension("yaplr-partial");
        let f = File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        let mut w = Writer {
            path: path.to_path_buf(),
            tmp,
            out: Some(BufWriter::with_capacity(1 << 20, f)),
            count: 0,
            left: 0,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
        };
        w.put(MAGIC)?;
        w.put(&DUMP_VERSION.to_le_bytes())?;
        w.put(&0u32.to_le_bytes())?;
        Ok(w)
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(io_err(
                "writing",
                &self.tmp,
                std::io::Error::other("the dump is finished"),
            ));
        };
        out.write_all(b)
            .map_err(|e| io_err("writing", &self.tmp, e))
    }

    /// Start an entry; its `payload_len` bytes follow through `payload`.
    pub(crate) fn begin(&mut self, d: &DumpEntry) -> Result<()> {
        let head = bincode::encode_to_vec(d, bincode::config::standard()).map_err(|e| {
            Error::Protocol {
                message: e.to_string(),
            }
        })?;
        let len = u32::try_from(head.len()).map_err(|_| {
            Error::BadArgument(format!(
                "the description of \"{}\" is too large for a dump",
                d.tag
            ))
        })?;
        self.put(&[1u8])?;
        self.put(&len.to_le_bytes())?;
        self.put(&head)?;
        self.put(&checksum(&head).to_le_bytes())?;
        self.left = d.payload_len;
        self.hasher = xxhash_rust::xxh3::Xxh3::new();
        Ok(())
    }

    /// Payload bytes of the current entry.
    pub(crate) fn payload(&mut self, b: &[u8]) -> Result<()> {
        if b.len() as u64 > self.left {
            return Err(Error::corrupt("an object is larger than its entry says"));
        }
        self.left -= b.len() as u64;
        self.hasher.update(b);
        self.put(b)
    }

    /// End the current entry; returns the checksum of its payload.
    pub(crate) fn end(&mut self) -> Result<u64> {
        if self.left != 0 {
            return Err(Error::corrupt("an object is shorter than its entry says"));
        }
        let sum = self.hasher.digest();
        self.put(&sum.to_le_bytes())?;
        self.count += 1;
        Ok(sum)
    }

    /// Write the end marker, sync and rename into place; returns the
    /// number of objects.
    pub(crate) fn finish(mut self) -> Result<u64> {
        self.put(&[0u8])?;
        let n = self.count;
        self.put(&n.to_le_bytes())?;
        let out = self.out.take().ok_or_else(|| Error::Protocol {
            message: "the dump is finished".into(),
        })?;
        let done = out
            .into_inner()
            .map_err(|e| io_err("writing", &self.tmp, e.into_error()))
            .and_then(|f| f.sync_all().map_err(|e| io_err("syncing", &self.tmp, e)))
            .and_then(|_| {
                std::fs::rename(&self.tmp, &self.path).map_err(|e| io_err("renaming", &self.tmp, e))
            });
        if done.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        done.map(|_| n)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Reads a dump entry by entry.
pub(crate) struct Reader<'a> {
    path: &'a Path,
    input: BufReader<File>,
    version: u32,
}

impl Reader<'_> {
    pub(crate) fn open(path: &Path) -> Result<Reader<'_>> {
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
    pub(crate) fn next(&mut self, seen: u64) -> Result<Option<DumpEntry>> {
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
    pub(crate) fn payload(
        &mut self,
        d: &DumpEntry,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
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
