//! Dump files: many objects (with namespace, tag, description, metadata and
//! send time) streamed into one file, and back into any store. Neither side
//! holds more than one object's metadata and a copy buffer in memory, so a
//! store of many GB dumps and loads in constant memory.
//!
//! Format, version 1 (little endian):
//!   file header:  b"YAPLRDMP", u32 version = 1, u32 reserved = 0
//!   per object:   u8 1, u32 n, n bytes of a bincode DumpEntry, u64 FNV-1a 64
//!                 of those n bytes, then DumpEntry.payload_len payload bytes
//!                 (as stored: R serialization, or a raw vector payload)
//!   end:          u8 0, u64 number of objects
//! A reader checks every entry's checksum and the final count, so a
//! truncated or damaged dump is an error, never a partial silent load.

use crate::client::{CallOptions, Client, Found};
use crate::error::{Error, Result};
use crate::object_file::{fnv1a64, ObjectWriter};
use crate::protocol::{Entry, INLINE_MAX};
use bincode::{Decode, Encode};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"YAPLRDMP";
pub const DUMP_VERSION: u32 = 1;
const MAX_ENTRY: usize = 1 << 20;

/// What the sender said about an object, as a dump keeps it: a disk
/// format of its own, never the protocol's type.
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
        message: format!("\"{}\" is not a complete yaplr dump: {why}", path.display()),
    }
}

/// Write the objects `entries` (as listed by the helper) to `path`.
/// Returns how many were written. The file is written to a temporary name
/// and renamed at the end, so a failed dump leaves no partial file.
pub fn save(c: &mut Client, path: &Path, entries: &[Entry], opts: &CallOptions<'_>) -> Result<u64> {
    let tmp = path.with_extension("yaplr-partial");
    let result = (|| {
        let f = File::create(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        let w = |out: &mut BufWriter<File>, b: &[u8]| {
            out.write_all(b).map_err(|e| io_err("writing", &tmp, e))
        };
        w(&mut out, MAGIC)?;
        w(&mut out, &DUMP_VERSION.to_le_bytes())?;
        w(&mut out, &0u32.to_le_bytes())?;
        let mut n = 0u64;
        for e in entries {
            let found = c.lookup(&e.namespace, &e.tag, opts)?;
            let (entry, inline, file) = match found {
                Found::Inline(entry, bytes) => (entry, Some(bytes), None),
                Found::File(entry, file) => (entry, None, Some(file)),
            };
            // Check the file as a reader would, then copy it in chunks with
            // pread: no mapping, so this process's memory stays a buffer.
            let header = match &file {
                Some(f) => {
                    let h = crate::object_file::read_header(f)?;
                    if h.state != crate::object_file::STATE_COMMITTED {
                        return Err(Error::Corrupt {
                            message: format!("object \"{}\" was never completely written", h.tag),
                        });
                    }
                    Some(h)
                }
                None => None,
            };
            let payload_len = match (&inline, &header) {
                (Some(b), _) => b.len() as u64,
                (None, Some(h)) => h.payload_len,
                _ => 0,
            };
            let d = DumpEntry {
                namespace: entry.namespace.clone(),
                tag: entry.tag.clone(),
                ctime_ns: entry.ctime_ns,
                kind: header.as_ref().map_or(entry.kind, |h| h.kind),
                payload_len,
                meta: Meta::from(&entry.meta),
            };
            let head = bincode::encode_to_vec(&d, bincode::config::standard()).map_err(|e| {
                Error::Protocol {
                    message: e.to_string(),
                }
            })?;
            w(&mut out, &[1u8])?;
            w(&mut out, &(head.len() as u32).to_le_bytes())?;
            w(&mut out, &head)?;
            w(&mut out, &fnv1a64(&head).to_le_bytes())?;
            match (&inline, &file) {
                (Some(b), _) => w(&mut out, b)?,
                (None, Some(f)) => {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; 8 << 20];
                    let mut at = 0u64;
                    while at < payload_len {
                        let n = (payload_len - at).min(buf.len() as u64) as usize;
                        f.read_exact_at(&mut buf[..n], crate::object_file::HEADER_SIZE as u64 + at)
                            .map_err(|e| Error::Corrupt {
                                message: format!(
                                    "object \"{}\" could not be read whole: {e}",
                                    entry.tag
                                ),
                            })?;
                        w(&mut out, &buf[..n])?;
                        at += n as u64;
                    }
                }
                _ => {}
            }
            n += 1;
        }
        w(&mut out, &[0u8])?;
        w(&mut out, &n.to_le_bytes())?;
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
}

impl Reader<'_> {
    fn open(path: &Path) -> Result<Reader<'_>> {
        let f = File::open(path).map_err(|e| io_err("opening", path, e))?;
        let mut r = Reader {
            path,
            input: BufReader::with_capacity(1 << 20, f),
        };
        let mut head = [0u8; 16];
        r.exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(bad_dump(path, "wrong magic number"));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().unwrap());
        if version != DUMP_VERSION {
            return Err(bad_dump(
                path,
                &format!("format version {version}, this yaplr reads {DUMP_VERSION}"),
            ));
        }
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
        if u64::from_le_bytes(sum) != fnv1a64(&head) {
            return Err(bad_dump(self.path, "an entry's checksum does not match"));
        }
        let (d, _): (DumpEntry, usize) =
            bincode::decode_from_slice(&head, bincode::config::standard())
                .map_err(|_| bad_dump(self.path, "an entry can not be decoded"))?;
        Ok(Some(d))
    }

    fn skip(&mut self, n: u64) -> Result<()> {
        self.input
            .seek(SeekFrom::Current(n as i64))
            .map_err(|e| io_err("reading", self.path, e))?;
        Ok(())
    }
}

/// The entries of a dump, checking its framing (payloads are skipped).
pub fn entries(path: &Path) -> Result<Vec<DumpEntry>> {
    let mut r = Reader::open(path)?;
    let mut out = Vec::new();
    while let Some(d) = r.next(out.len() as u64)? {
        r.skip(d.payload_len)?;
        out.push(d);
    }
    Ok(out)
}

/// Load every object of the dump at `path` into the client's store.
/// Unless `overwrite`, refuses (before loading anything) when a tag
/// already exists. Returns the entries loaded.
pub fn load(
    c: &mut Client,
    path: &Path,
    overwrite: bool,
    opts: &CallOptions<'_>,
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
    let mut r = Reader::open(path)?;
    let mut done = 0u64;
    while let Some(d) = r.next(done)? {
        if d.payload_len as usize <= INLINE_MAX {
            let mut bytes = vec![0u8; d.payload_len as usize];
            r.exact(&mut bytes)?;
            c.put_inline_at(
                &d.namespace,
                &d.tag,
                d.kind,
                bytes,
                (&d.meta).into(),
                d.ctime_ns,
                opts,
            )?;
        } else {
            let mut w =
                ObjectWriter::create(c.store(), &d.namespace, &d.tag, d.kind, d.payload_len)?;
            w.set_ctime(d.ctime_ns);
            let mut left = d.payload_len;
            let mut buf = vec![0u8; 8 << 20];
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                r.exact(&mut buf[..n])?;
                w.write(&buf[..n])?;
                left -= n as u64;
            }
            let (id, _) = w.commit()?;
            if let Err(e) = c.publish(&d.namespace, &d.tag, &id, (&d.meta).into(), opts) {
                let _ = std::fs::remove_file(c.store().object_path(&id));
                return Err(e);
            }
        }
        done += 1;
    }
    Ok(all)
}
