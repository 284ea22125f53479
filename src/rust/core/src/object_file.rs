//! The object file format: a fixed, self-describing header followed by the
//! payload at a 64-byte aligned offset. A file is written once by its creator
//! (state WRITING), then committed; a helper can rebuild its catalog from
//! committed headers alone.
//!
//! Header layout (little endian, HEADER_SIZE bytes):
//!   0  magic  b"YAPLROBJ"          8  format version u32   12 state u32
//!   16 payload kind u32            20 creator pid u32      24 payload length u64
//!   32 ctime (ns since epoch) i64  40 payload offset u32   44 tag length u32
//!   48 namespace length u32        52 payload xxh3 u64 (format 3; 0: none)
//!   60 reserved [u8; 4]
//!   64 tag bytes [u8; MAX_TAG_BYTES]
//!   1088 namespace bytes [u8; MAX_NAMESPACE_BYTES]
//!   2040 FNV-1a 64 checksum of bytes 0..2040

use crate::codec::{fnv1a64, now_ns, Hasher};
use crate::error::{Error, Result};
use crate::key::{check_namespace, check_tag, MAX_NAMESPACE_BYTES, MAX_TAG_BYTES};
use crate::store::{Dir, How, Store};
use crate::sys;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub const MAGIC: &[u8; 8] = b"YAPLROBJ";
/// The format this version writes; format 2 (no payload checksum) is read.
pub const FORMAT_VERSION: u32 = 3;
const FORMAT_VERSION_2: u32 = 2;
pub const HEADER_SIZE: usize = 2048;
const NAMESPACE_AT: usize = 64 + MAX_TAG_BYTES;
const CHECKSUM_AT: usize = HEADER_SIZE - 8;

pub const STATE_WRITING: u32 = 1;
pub const STATE_COMMITTED: u32 = 2;

/// Payload kinds.
pub const KIND_R_SERIALIZED: u32 = 1;
/// A plain atomic vector: a VectorHeader, the raw elements at a 64-byte
/// aligned offset, then the R serialization of its attributes (if any).
pub const KIND_R_VECTOR: u32 = 2;
/// Size of the VectorHeader at the start of a KIND_R_VECTOR payload.
pub const VECTOR_HEADER_SIZE: usize = 64;

/// Describes the elements of a KIND_R_VECTOR payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorHeader {
    /// The R SEXPTYPE (INTSXP, REALSXP, ...).
    pub sexptype: u32,
    pub elt_size: u32,
    pub length: u64,
    /// Whether the R object bit is set (it has a class attribute).
    pub object: u32,
}

impl VectorHeader {
    pub fn data_len(&self) -> u64 {
        self.length * self.elt_size as u64
    }

    pub fn encode(&self) -> [u8; VECTOR_HEADER_SIZE] {
        let mut b = [0u8; VECTOR_HEADER_SIZE];
        b[0..4].copy_from_slice(&self.sexptype.to_le_bytes());
        b[4..8].copy_from_slice(&self.elt_size.to_le_bytes());
        b[8..16].copy_from_slice(&self.length.to_le_bytes());
        b[16..20].copy_from_slice(&self.object.to_le_bytes());
        b
    }

    /// Decode and check against the payload it starts.
    pub fn decode(payload: &[u8]) -> Result<VectorHeader> {
        Self::decode_prefix(payload, payload.len() as u64)
    }

    /// Decode from the first bytes of a payload of `payload_len` bytes
    /// (read on their own, e.g. with pread) and check against that length.
    pub fn decode_prefix(payload: &[u8], payload_len: u64) -> Result<VectorHeader> {
        let corrupt = |m: &str| Error::Corrupt {
            message: format!("damaged vector object: {m}"),
        };
        if payload.len() < VECTOR_HEADER_SIZE || payload_len < VECTOR_HEADER_SIZE as u64 {
            return Err(corrupt("payload shorter than its vector header"));
        }
        let h = VectorHeader {
            sexptype: u32::from_le_bytes(payload[0..4].try_into().unwrap()),
            elt_size: u32::from_le_bytes(payload[4..8].try_into().unwrap()),
            length: u64::from_le_bytes(payload[8..16].try_into().unwrap()),
            object: u32::from_le_bytes(payload[16..20].try_into().unwrap()),
        };
        if !matches!(h.elt_size, 1 | 4 | 8 | 16) {
            return Err(corrupt("bad element size"));
        }
        let fits = h
            .length
            .checked_mul(h.elt_size as u64)
            .and_then(|n| n.checked_add(VECTOR_HEADER_SIZE as u64))
            .is_some_and(|n| n <= payload_len);
        if !fits {
            return Err(corrupt("elements extend past the payload"));
        }
        Ok(h)
    }
}

/// Reserve disk (or tmpfs) space in steps of at least this many bytes.
const RESERVE_STEP: u64 = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub state: u32,
    pub kind: u32,
    pub creator_pid: u32,
    pub payload_len: u64,
    pub ctime_ns: i64,
    pub namespace: String,
    pub tag: String,
    /// xxh3 of the payload (0: not recorded, a file of format 2).
    pub checksum: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.state.to_le_bytes());
        b[16..20].copy_from_slice(&self.kind.to_le_bytes());
        b[20..24].copy_from_slice(&self.creator_pid.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.ctime_ns.to_le_bytes());
        b[40..44].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        b[52..60].copy_from_slice(&self.checksum.to_le_bytes());
        let tag = self.tag.as_bytes();
        let n = tag.len().min(MAX_TAG_BYTES);
        b[44..48].copy_from_slice(&(n as u32).to_le_bytes());
        b[64..64 + n].copy_from_slice(&tag[..n]);
        let ns = self.namespace.as_bytes();
        let m = ns.len().min(MAX_NAMESPACE_BYTES);
        b[48..52].copy_from_slice(&(m as u32).to_le_bytes());
        b[NAMESPACE_AT..NAMESPACE_AT + m].copy_from_slice(&ns[..m]);
        let sum = fnv1a64(&b[..CHECKSUM_AT]);
        b[CHECKSUM_AT..CHECKSUM_AT + 8].copy_from_slice(&sum.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header> {
        let corrupt = |m: &str| Error::Corrupt {
            message: format!("damaged object file: {m}"),
        };
        if b.len() < HEADER_SIZE {
            return Err(corrupt("shorter than its header"));
        }
        if &b[0..8] != MAGIC {
            return Err(corrupt("wrong magic number"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_2 {
            return Err(corrupt(&format!("unknown format version {version}")));
        }
        if u64_at(CHECKSUM_AT) != fnv1a64(&b[..CHECKSUM_AT]) {
            return Err(corrupt("header checksum mismatch"));
        }
        if u32_at(40) as usize != HEADER_SIZE {
            return Err(corrupt("unexpected payload offset"));
        }
        let n = u32_at(44) as usize;
        if n > MAX_TAG_BYTES {
            return Err(corrupt("tag length out of range"));
        }
        let tag = std::str::from_utf8(&b[64..64 + n])
            .map_err(|_| corrupt("tag is not UTF-8"))?
            .to_string();
        let m = u32_at(48) as usize;
        if m > MAX_NAMESPACE_BYTES {
            return Err(corrupt("namespace length out of range"));
        }
        let namespace = std::str::from_utf8(&b[NAMESPACE_AT..NAMESPACE_AT + m])
            .map_err(|_| corrupt("namespace is not UTF-8"))?
            .to_string();
        Ok(Header {
            state: u32_at(12),
            kind: u32_at(16),
            creator_pid: u32_at(20),
            payload_len: u64_at(24),
            ctime_ns: u64_at(32) as i64,
            namespace,
            tag,
            checksum: if version == FORMAT_VERSION_2 {
                0
            } else {
                u64_at(52)
            },
        })
    }

    pub fn file_size(&self) -> u64 {
        HEADER_SIZE as u64 + self.payload_len
    }
}

/// Where payload bytes go while an object is being written.
pub trait PayloadSink {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
}

impl PayloadSink for ObjectWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        ObjectWriter::write(self, bytes)
    }
}

/// Writes one object file. Owns the file until `commit`: if dropped before,
/// the file is unlinked, so no error path leaves a partial object behind.
pub struct ObjectWriter {
    file: File,
    dir: Dir,
    path: PathBuf,
    id: String,
    header: Header,
    written: u64,
    reserved: u64,
    buf: Vec<u8>,
    /// The payload's checksum, computed as it is written.
    hasher: Hasher,
    /// Whether the file has a name yet: it is created unnamed where the
    /// filesystem allows, and named only once committed.
    named: bool,
    committed: bool,
    /// Sync to the device on commit (stores on a disk).
    durable: bool,
}

impl ObjectWriter {
    /// Create a new object file for `tag`. `size_hint` (payload bytes, if
    /// known) is reserved at once.
    pub fn create(
        store: &Store,
        namespace: &str,
        tag: &str,
        kind: u32,
        size_hint: u64,
    ) -> Result<ObjectWriter> {
        check_tag(tag)?;
        check_namespace(namespace)?;
        let id = crate::store::new_id();
        let path = store.object_path(&id);
        let dir = match Dir::open(store.dir()) {
            Err(e) if e.is_not_found() => {
                store.prepare()?;
                Dir::open(store.dir())?
            }
            r => r?,
        };
        // Unnamed until committed: a writer killed at any moment leaves no
        // file behind. Where the filesystem can not, a named file whose
        // header names its writer (the helper removes it once that dies).
        let unnamed = if dir.can_name_unnamed() {
            dir.create_unnamed()
        } else {
            Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        };
        let (file, named) = match unnamed {
            Ok(f) => (f, false),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) =>
            {
                let name = format!("{id}{}", crate::store::OBJECT_SUFFIX);
                match dir.open_file(&name, How::CreateNew) {
                    Ok(f) => (f, true),
                    Err(Error::Io { source, .. }) => return Err(create_error(store, tag, source)),
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(create_error(store, tag, e)),
        };
        let header = Header {
            state: STATE_WRITING,
            kind,
            creator_pid: sys::getpid(),
            payload_len: 0,
            ctime_ns: now_ns(),
            namespace: namespace.to_string(),
            tag: tag.to_string(),
            checksum: 0,
        };
        let mut w = ObjectWriter {
            file,
            dir,
            path,
            id,
            header,
            written: 0,
            reserved: 0,
            buf: Vec::with_capacity(64 << 10),
            hasher: Hasher::new(),
            named,
            committed: false,
            durable: !store.is_volatile(),
        };
        w.reserve(HEADER_SIZE as u64 + size_hint)?;
        w.file
            .write_all_at(&w.header.encode(), 0)
            .map_err(|e| Error::io(format!("writing the header of {}", w.path.display()), e))?;
        Ok(w)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Keep the send time of an object restored from a dump.
    pub fn set_ctime(&mut self, ctime_ns: i64) {
        self.header.ctime_ns = ctime_ns;
    }

    /// Payload bytes written so far.
    pub fn written(&self) -> u64 {
        self.written + self.buf.len() as u64
    }

    fn reserve(&mut self, upto: u64) -> Result<()> {
        if upto <= self.reserved {
            return Ok(());
        }
        // Grow by half of what is reserved (at least RESERVE_STEP for large
        // objects): few fallocate calls, at most 1.5x over-reservation, which
        // commit trims. Small objects reserve exactly what they need.
        let need = upto - self.reserved;
        let mut step = if self.reserved < RESERVE_STEP {
            need
        } else {
            need.max(RESERVE_STEP).max(self.reserved / 2)
        };
        let mut result = sys::fallocate(&self.file, self.reserved, step);
        if is_no_space(&result) && step > upto - self.reserved {
            // The generous step does not fit; the exact need still may.
            step = upto - self.reserved;
            result = sys::fallocate(&self.file, self.reserved, step);
        }
        match result {
            Ok(()) => {
                self.reserved += step;
                Ok(())
            }
            Err(_) if is_no_space(&result) => {
                let dir = self
                    .path
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                let free = self
                    .path
                    .parent()
                    .and_then(|p| sys::free_space(p).ok())
                    .unwrap_or(0);
                Err(Error::NoSpace {
                    needed: upto,
                    message: format!(
                        "not enough space in the store \"{dir}\" for object \"{}\": needs at least {} bytes, {} bytes free; \
                         remove objects or choose a larger store with options(yaplr.dir = )",
                        self.header.tag, upto, free
                    ),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                // A filesystem without fallocate: fall back to plain writes,
                // which still report ENOSPC as an error (no mapping, no SIGBUS).
                self.reserved = u64::MAX;
                Ok(())
            }
            Err(e) => Err(Error::io(
                format!("reserving space in {}", self.path.display()),
                e,
            )),
        }
    }

    /// Append payload bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        if self.buf.len() + bytes.len() <= self.buf.capacity() {
            self.buf.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush()?;
        if bytes.len() >= self.buf.capacity() / 2 {
            self.write_through(bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }

    fn write_through(&mut self, bytes: &[u8]) -> Result<()> {
        let at = HEADER_SIZE as u64 + self.written;
        self.reserve(at + bytes.len() as u64)?;
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let r = self.write_through(&buf);
        self.buf = buf;
        self.buf.clear();
        r
    }

    /// Finish the payload and mark the file committed. Returns the id and the
    /// final header.
    pub fn commit(mut self) -> Result<(String, Header)> {
        self.flush()?;
        let size = HEADER_SIZE as u64 + self.written;
        if self.reserved != u64::MAX && self.reserved > size {
            self.file
                .set_len(size)
                .map_err(|e| Error::io(format!("truncating {}", self.path.display()), e))?;
        }
        self.header.payload_len = self.written;
        self.header.state = STATE_COMMITTED;
        self.header.checksum = self.hasher.digest();
        let sync = |f: &File| {
            f.sync_data()
                .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))
        };
        // On a disk: the payload is durable before the header says so.
        if self.durable {
            sync(&self.file)?;
        }
        self.file
            .write_all_at(&self.header.encode(), 0)
            .map_err(|e| Error::io(format!("committing {}", self.path.display()), e))?;
        if self.durable {
            sync(&self.file)?;
        }
        if self.named && self.durable {
            // A file named at creation (no O_TMPFILE here): its entry must
            // be durable before the journal refers to it.
            self.dir
                .sync()
                .map_err(|e| Error::io(format!("syncing {}", self.dir.path().display()), e))?;
        }
        if !self.named {
            let name = format!("{}{}", self.id, crate::store::OBJECT_SUFFIX);
            self.dir
                .link_unnamed(&self.file, &name)
                .map_err(|e| Error::io(format!("naming {}", self.path.display()), e))?;
            self.named = true;
            if self.durable {
                self.dir
                    .sync()
                    .map_err(|e| Error::io(format!("syncing {}", self.dir.path().display()), e))?;
            }
        }
        self.committed = true;
        Ok((self.id.clone(), self.header.clone()))
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // An unnamed file vanishes with its descriptor.
        if !self.committed && self.named {
            let name = format!("{}{}", self.id, crate::store::OBJECT_SUFFIX);
            let _ = self.dir.unlink(&name);
        }
    }
}

fn is_no_space(r: &std::io::Result<()>) -> bool {
    matches!(r, Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
}

fn create_error(store: &Store, tag: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NoSpace {
            needed: HEADER_SIZE as u64,
            message: format!(
                "no space left in the store \"{}\" for object \"{tag}\"; remove objects or choose a larger store",
                store.dir().display()
            ),
        },
        Some(libc::ENOENT) => Error::Store {
            message: format!(
                "the store directory \"{}\" disappeared; the next call recreates it",
                store.dir().display()
            ),
        },
        _ => Error::io(format!("creating an object file in {}", store.dir().display()), e),
    }
}

/// Read and check the header of an open object file.
pub fn read_header(file: &File) -> Result<Header> {
    let mut b = vec![0u8; HEADER_SIZE];
    let mut got = 0;
    while got < HEADER_SIZE {
        match file.read_at(&mut b[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading an object header", e)),
        }
    }
    Header::decode(&b[..got])
}

/// Check that an object file with this header is committed and whole, as
/// a reader must before using its payload (mapped or read with pread).
pub fn check_complete(file: &File, header: &Header) -> Result<()> {
    if header.state != STATE_COMMITTED {
        return Err(Error::Corrupt {
            message: format!("object \"{}\" was never completely written", header.tag),
        });
    }
    let len = file
        .metadata()
        .map_err(|e| Error::io("inspecting an object file", e))?
        .len();
    if len < header.file_size() {
        return Err(Error::Corrupt {
            message: format!(
                "object \"{}\" is truncated: {len} bytes on disk, {} expected",
                header.tag,
                header.file_size()
            ),
        });
    }
    Ok(())
}

enum Mapping {
    ReadOnly(memmap2::Mmap),
    /// MAP_PRIVATE, writable: a write copies the page for this process only
    /// and never reaches the file.
    CopyOnWrite(CowMap),
}

/// A private, writable, unreserved mapping of a whole file. MAP_NORESERVE
/// keeps the kernel from charging its full size against the commit limit
/// up front: only pages actually written cost memory, so a view of an object
/// larger than RAM works.
struct CowMap {
    ptr: *mut u8,
    len: usize,
}

impl CowMap {
    fn new(file: &File, len: usize) -> std::io::Result<CowMap> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh mapping of `len` bytes of an fd we hold; the
        // kernel picks the address. Checked for MAP_FAILED below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(CowMap {
            ptr: p as *mut u8,
            len,
        })
    }
}

impl Drop for CowMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in new().
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

fn map_error(header: &Header, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENOMEM) {
        return Error::Io {
            context: format!(
                "mapping the object \"{}\" ({} bytes) failed: this process is out of address space \
                 (a limit set with ulimit -v, or the kernel's limit on mappings, vm.max_map_count, \
                 reached by many live zero-copy views); raise the limit, or let unused views go (rm() and gc())",
                header.tag,
                header.file_size()
            ),
            source: e,
        };
    }
    Error::io(format!("mapping the object \"{}\"", header.tag), e)
}

/// A mapping of a committed object file.
pub struct ObjectMap {
    map: Option<Mapping>,
    pub header: Header,
}

impl ObjectMap {
    /// Map an object file read-only and check it is committed and whole.
    pub fn open(file: &File) -> Result<ObjectMap> {
        Self::open_with(file, read_header(file)?, false)
    }

    /// Map an object file copy-on-write: its payload may be written through
    /// `payload_mut_ptr`, privately to this process.
    pub fn open_copy_on_write(file: &File) -> Result<ObjectMap> {
        Self::open_with(file, read_header(file)?, true)
    }

    /// Map copy-on-write the objects served as zero-copy views (raw
    /// vectors), read-only the others.
    pub fn open_for_view(file: &File) -> Result<ObjectMap> {
        let header = read_header(file)?;
        let cow = header.kind == KIND_R_VECTOR;
        Self::open_with(file, header, cow)
    }

    fn open_with(file: &File, header: Header, cow: bool) -> Result<ObjectMap> {
        check_complete(file, &header)?;
        if header.payload_len == 0 {
            return Ok(ObjectMap { map: None, header });
        }
        let mut opts = memmap2::MmapOptions::new();
        opts.len(header.file_size() as usize);
        // SAFETY: object files are written once and never modified after
        // commit, and the truncation check above guarantees the mapped range
        // exists; a mapping stays valid after the file is unlinked. A
        // copy-on-write mapping never writes to the file.
        let map = if cow {
            CowMap::new(file, header.file_size() as usize).map(Mapping::CopyOnWrite)
        } else {
            unsafe { opts.map(file) }.map(Mapping::ReadOnly)
        }
        .map_err(|e| map_error(&header, e))?;
        Ok(ObjectMap {
            map: Some(map),
            header,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(Mapping::ReadOnly(m)) => m,
            // SAFETY: the mapping is `len` readable bytes for as long as self.
            Some(Mapping::CopyOnWrite(m)) => unsafe { std::slice::from_raw_parts(m.ptr, m.len) },
            None => &[],
        }
    }

    pub fn payload(&self) -> &[u8] {
        let b = self.bytes();
        if b.is_empty() {
            return b;
        }
        &b[HEADER_SIZE..HEADER_SIZE + self.header.payload_len as usize]
    }

    /// Start of the payload, writable when mapped copy-on-write (None
    /// otherwise). Writes stay private to this process.
    pub fn payload_mut_ptr(&mut self) -> Option<*mut u8> {
        match &mut self.map {
            // SAFETY: HEADER_SIZE is within the mapping (checked at open).
            Some(Mapping::CopyOnWrite(m)) => Some(unsafe { m.ptr.add(HEADER_SIZE) }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> Store {
        let dir = std::env::temp_dir().join(format!("yaplr-of-{name}-{}", sys::getpid()));
        let s = Store::new(dir);
        s.prepare().unwrap();
        s
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = Header {
            state: STATE_COMMITTED,
            kind: KIND_R_SERIALIZED,
            creator_pid: 42,
            payload_len: 12345,
            ctime_ns: 1_700_000_000_000_000_000,
            namespace: "ns \u{e9}".into(),
            tag: "caf\u{e9} / ../x".into(),
            checksum: 0x0123_4567_89ab_cdef,
        };
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        let mut bad = b;
        bad[0] = b'X';
        assert!(Header::decode(&bad)
            .unwrap_err()
            .to_string()
            .contains("magic"));
        let mut bad = b;
        bad[70] ^= 1;
        assert!(Header::decode(&bad)
            .unwrap_err()
            .to_string()
            .contains("checksum"));
        assert!(Header::decode(&b[..100]).is_err());
    }

    #[test]
    fn vector_headers_round_trip_and_are_bounded() {
        let h = VectorHeader {
            sexptype: 14,
            elt_size: 8,
            length: 3,
            object: 1,
        };
        let mut payload = h.encode().to_vec();
        payload.extend_from_slice(&[0u8; 24]);
        assert_eq!(VectorHeader::decode(&payload).unwrap(), h);
        assert!(VectorHeader::decode(&payload[..80]).is_err());
        let huge = VectorHeader {
            length: u64::MAX,
            ..h
        };
        let mut p2 = huge.encode().to_vec();
        p2.extend_from_slice(&[0u8; 24]);
        assert!(VectorHeader::decode(&p2).is_err());
        let bad = VectorHeader { elt_size: 3, ..h };
        assert!(VectorHeader::decode(&bad.encode()).is_err());
    }

    #[test]
    fn write_commit_and_map() {
        let s = temp_store("wcm");
        let mut w = ObjectWriter::create(&s, "default", "t", KIND_R_SERIALIZED, 0).unwrap();
        let big = vec![7u8; 300_000];
        w.write(b"hello").unwrap();
        w.write(&big).unwrap();
        w.write(b"!").unwrap();
        let (id, h) = w.commit().unwrap();
        assert_eq!(h.payload_len, 5 + 300_000 + 1);
        let f = File::open(s.object_path(&id)).unwrap();
        assert_eq!(f.metadata().unwrap().len(), h.file_size());
        let m = ObjectMap::open(&f).unwrap();
        assert_eq!(&m.payload()[..5], b"hello");
        // A copy-on-write mapping can be written without touching the file.
        let mut cow = ObjectMap::open_copy_on_write(&f).unwrap();
        let p = cow.payload_mut_ptr().unwrap();
        // SAFETY: the payload has more than one byte.
        unsafe { *p = b'J' };
        assert_eq!(&cow.payload()[..5], b"Jello");
        assert_eq!(&ObjectMap::open(&f).unwrap().payload()[..5], b"hello");
        assert_eq!(m.payload()[5 + 299_999], 7);
        assert_eq!(*m.payload().last().unwrap(), b'!');
        std::fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn a_writer_names_its_file_only_when_committed_with_its_checksum() {
        let s = temp_store("unnamed");
        let mut w = ObjectWriter::create(&s, "default", "t", KIND_R_SERIALIZED, 1 << 20).unwrap();
        w.write(&[5u8; 100_000]).unwrap();
        assert!(s.object_ids().unwrap().is_empty(), "no name before commit");
        w.write(b"end").unwrap();
        let (id, h) = w.commit().unwrap();
        assert_eq!(s.object_ids().unwrap(), vec![id.clone()]);
        let mut whole = vec![5u8; 100_000];
        whole.extend_from_slice(b"end");
        assert_eq!(h.checksum, xxhash_rust::xxh3::xxh3_64(&whole));
        let f = File::open(s.object_path(&id)).unwrap();
        assert_eq!(read_header(&f).unwrap().checksum, h.checksum);
        std::fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn dropped_writer_leaves_no_file() {
        let s = temp_store("drop");
        {
            let mut w = ObjectWriter::create(&s, "default", "t", KIND_R_SERIALIZED, 1000).unwrap();
            w.write(b"partial").unwrap();
        }
        assert!(s.object_ids().unwrap().is_empty());
        std::fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn uncommitted_and_truncated_files_are_refused() {
        let s = temp_store("trunc");
        let path = s.object_path(&crate::store::new_id());
        let h = Header {
            state: STATE_WRITING,
            kind: KIND_R_SERIALIZED,
            creator_pid: sys::getpid(),
            payload_len: 0,
            ctime_ns: 1,
            namespace: "default".into(),
            tag: "t".into(),
            checksum: 0,
        };
        std::fs::write(&path, h.encode()).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(ObjectMap::open(&f).err().unwrap().kind(), "corrupt");
        std::fs::remove_file(&path).unwrap();
        let mut w = ObjectWriter::create(&s, "default", "t", KIND_R_SERIALIZED, 0).unwrap();
        w.write(&[1u8; 5000]).unwrap();
        let (id, _) = w.commit().unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(s.object_path(&id))
            .unwrap();
        f.set_len(3000).unwrap();
        assert!(ObjectMap::open(&f)
            .err()
            .unwrap()
            .to_string()
            .contains("truncated"));
        std::fs::remove_dir_all(s.dir()).unwrap();
    }

    #[test]
    fn a_vector_header_read_on_its_own_is_checked_against_the_payload() {
        let h = VectorHeader {
            sexptype: 14,
            elt_size: 8,
            length: 1000,
            object: 0,
        };
        let b = h.encode();
        let need = VECTOR_HEADER_SIZE as u64 + 8000;
        assert_eq!(VectorHeader::decode_prefix(&b, need).unwrap(), h);
        assert_eq!(VectorHeader::decode_prefix(&b, need + 100).unwrap(), h);
        assert!(VectorHeader::decode_prefix(&b, need - 1).is_err());
        assert!(VectorHeader::decode_prefix(&b[..20], need).is_err());
        assert!(VectorHeader::decode_prefix(&b, 10).is_err());
    }

    #[test]
    fn check_complete_refuses_what_a_mapping_would() {
        let s = temp_store("complete");
        let path = s.object_path(&crate::store::new_id());
        let h = Header {
            state: STATE_WRITING,
            kind: KIND_R_VECTOR,
            creator_pid: sys::getpid(),
            payload_len: 0,
            ctime_ns: 1,
            namespace: "default".into(),
            tag: "t".into(),
            checksum: 0,
        };
        std::fs::write(&path, h.encode()).unwrap();
        let f = File::open(&path).unwrap();
        let h = read_header(&f).unwrap();
        assert!(check_complete(&f, &h)
            .unwrap_err()
            .to_string()
            .contains("never completely written"));
        std::fs::remove_file(&path).unwrap();
        let mut w = ObjectWriter::create(&s, "default", "t", KIND_R_VECTOR, 0).unwrap();
        w.write(&[1u8; 5000]).unwrap();
        let (id, h) = w.commit().unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(s.object_path(&id))
            .unwrap();
        check_complete(&f, &h).unwrap();
        f.set_len(3000).unwrap();
        assert!(check_complete(&f, &h)
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        std::fs::remove_dir_all(s.dir()).unwrap();
    }
}
