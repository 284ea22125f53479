//! The object file format: a fixed, self-describing header followed by the
//! payload at a 64-byte aligned offset. A file is written once by its creator
//! (state WRITING), then committed; a helper can rebuild its catalog from
//! committed headers alone.
//!
//! Header layout (little endian, HEADER_SIZE bytes; the offsets are the
//! constants of `header_at`):
//!   0  magic  b"YAPLROBJ"          8  format version u32   12 state u32
//!   16 payload kind u32            20 creator pid u32      24 payload length u64
//!   32 ctime (ns since epoch) i64  40 payload offset u32   44 tag length u32
//!   48 namespace length u32        52 payload xxh3 u64 (format 3; 0: none)
//!   60 reserved [u8; 4]
//!   64 tag bytes [u8; MAX_TAG_BYTES]
//!   1088 namespace bytes [u8; MAX_NAMESPACE_BYTES]
//!   2040 FNV-1a 64 checksum of bytes 0..2040
//!
//! Vector header layout (little endian, VECTOR_HEADER_SIZE bytes at the
//! start of a KIND_R_VECTOR payload; the offsets are in `vector_at`):
//!   0 SEXPTYPE u32   4 element size u32   8 length u64   16 object bit u32
//!   20 reserved (zero) up to 64

use crate::codec::{fnv1a64, i64_at, now_ns, put_i64, put_u32, put_u64, u32_at, u64_at, Hasher};
use crate::error::{Error, Hint, Result};
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
/// HEADER_SIZE as the header records it (its payload offset field).
const HEADER_SIZE_U32: u32 = 2048;
const _: () = assert!(HEADER_SIZE_U32 as usize == HEADER_SIZE);

/// Byte offsets of the fields of an object file header.
mod header_at {
    use super::HEADER_SIZE;
    use crate::key::{MAX_NAMESPACE_BYTES, MAX_TAG_BYTES};

    pub const MAGIC: usize = 0;
    pub const VERSION: usize = MAGIC + super::MAGIC.len();
    pub const STATE: usize = VERSION + 4;
    pub const KIND: usize = STATE + 4;
    pub const CREATOR_PID: usize = KIND + 4;
    pub const PAYLOAD_LEN: usize = CREATOR_PID + 4;
    pub const CTIME: usize = PAYLOAD_LEN + 8;
    pub const PAYLOAD_OFFSET: usize = CTIME + 8;
    pub const TAG_LEN: usize = PAYLOAD_OFFSET + 4;
    pub const NAMESPACE_LEN: usize = TAG_LEN + 4;
    /// xxh3 of the payload (format 3; zero in format 2).
    pub const PAYLOAD_SUM: usize = NAMESPACE_LEN + 4;
    /// Four reserved bytes, always zero.
    pub const RESERVED: usize = PAYLOAD_SUM + 8;
    pub const TAG: usize = RESERVED + 4;
    pub const NAMESPACE: usize = TAG + MAX_TAG_BYTES;
    /// FNV-1a 64 of every byte before it.
    pub const CHECKSUM: usize = HEADER_SIZE - 8;

    // The layout of formats 2 and 3, which files on disk have.
    const _: () = assert!(VERSION == 8 && STATE == 12 && KIND == 16 && CREATOR_PID == 20);
    const _: () = assert!(PAYLOAD_LEN == 24 && CTIME == 32 && PAYLOAD_OFFSET == 40);
    const _: () = assert!(TAG_LEN == 44 && NAMESPACE_LEN == 48 && PAYLOAD_SUM == 52);
    const _: () = assert!(RESERVED == 60 && TAG == 64 && NAMESPACE == 1088 && CHECKSUM == 2040);
    const _: () = assert!(NAMESPACE + MAX_NAMESPACE_BYTES <= CHECKSUM);
}

/// Byte offsets of the fields of a VectorHeader.
mod vector_at {
    pub const SEXPTYPE: usize = 0;
    pub const ELT_SIZE: usize = SEXPTYPE + 4;
    pub const LENGTH: usize = ELT_SIZE + 4;
    pub const OBJECT: usize = LENGTH + 8;
    /// Zero up to VECTOR_HEADER_SIZE.
    pub const RESERVED: usize = OBJECT + 4;

    const _: () = assert!(ELT_SIZE == 4 && LENGTH == 8 && OBJECT == 16 && RESERVED == 20);
    const _: () = assert!(RESERVED <= super::VECTOR_HEADER_SIZE);
}

pub const STATE_WRITING: u32 = 1;
pub const STATE_COMMITTED: u32 = 2;

/// Payload kinds.
pub const KIND_R_SERIALIZED: u32 = 1;
/// A plain atomic vector: a VectorHeader, the raw elements at a 64-byte
/// aligned offset, then the R serialization of its attributes (if any).
pub const KIND_R_VECTOR: u32 = 2;
/// A shared mutable vector (shared_vector() in R): a VectorHeader, then
/// the raw elements at the same offset as KIND_R_VECTOR, no attributes.
/// Its elements change in place, so it carries no checksum (0).
pub const KIND_SHARED_VECTOR: u32 = 3;
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
        self.length * u64::from(self.elt_size)
    }

    pub fn encode(&self) -> [u8; VECTOR_HEADER_SIZE] {
        use vector_at as at;
        let mut b = [0u8; VECTOR_HEADER_SIZE];
        put_u32(&mut b, at::SEXPTYPE, self.sexptype);
        put_u32(&mut b, at::ELT_SIZE, self.elt_size);
        put_u64(&mut b, at::LENGTH, self.length);
        put_u32(&mut b, at::OBJECT, self.object);
        b
    }

    /// Decode and check against the payload it starts.
    pub fn decode(payload: &[u8]) -> Result<VectorHeader> {
        Self::decode_prefix(payload, payload.len() as u64)
    }

    /// Decode from the first bytes of a payload of `payload_len` bytes
    /// (read on their own, e.g. with pread) and check against that length.
    pub fn decode_prefix(payload: &[u8], payload_len: u64) -> Result<VectorHeader> {
        let corrupt = |m: &str| Error::corrupt(format!("damaged vector object: {m}"));
        if payload.len() < VECTOR_HEADER_SIZE || payload_len < VECTOR_HEADER_SIZE as u64 {
            return Err(corrupt("payload shorter than its vector header"));
        }
        use vector_at as at;
        let h = VectorHeader {
            sexptype: u32_at(payload, at::SEXPTYPE),
            elt_size: u32_at(payload, at::ELT_SIZE),
            length: u64_at(payload, at::LENGTH),
            object: u32_at(payload, at::OBJECT),
        };
        if !matches!(h.elt_size, 1 | 4 | 8 | 16) {
            return Err(corrupt("bad element size"));
        }
        let fits = h
            .length
            .checked_mul(u64::from(h.elt_size))
            .and_then(|n| n.checked_add(VECTOR_HEADER_SIZE as u64))
            .is_some_and(|n| n <= payload_len);
        if !fits {
            return Err(corrupt("elements extend past the payload"));
        }
        Ok(h)
    }
}

/// Small writes are gathered into a buffer of this many bytes. An object
/// gets a file only when its payload is larger than this.
const WRITE_BUFFER: usize = crate::store::INLINE_MAX;

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
    /// The header in the format this version writes (FORMAT_VERSION). A
    /// tag or namespace longer than its field is cut (they are checked
    /// before an object is created).
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        use header_at as at;
        let mut b = [0u8; HEADER_SIZE];
        b[at::MAGIC..at::VERSION].copy_from_slice(MAGIC);
        put_u32(&mut b, at::VERSION, FORMAT_VERSION);
        put_u32(&mut b, at::STATE, self.state);
        put_u32(&mut b, at::KIND, self.kind);
        put_u32(&mut b, at::CREATOR_PID, self.creator_pid);
        put_u64(&mut b, at::PAYLOAD_LEN, self.payload_len);
        put_i64(&mut b, at::CTIME, self.ctime_ns);
        put_u32(&mut b, at::PAYLOAD_OFFSET, HEADER_SIZE_U32);
        put_u64(&mut b, at::PAYLOAD_SUM, self.checksum);
        let tag = &self.tag.as_bytes()[..self.tag.len().min(MAX_TAG_BYTES)];
        put_u32(&mut b, at::TAG_LEN, field_len(tag));
        b[at::TAG..at::TAG + tag.len()].copy_from_slice(tag);
        let ns = &self.namespace.as_bytes()[..self.namespace.len().min(MAX_NAMESPACE_BYTES)];
        put_u32(&mut b, at::NAMESPACE_LEN, field_len(ns));
        b[at::NAMESPACE..at::NAMESPACE + ns.len()].copy_from_slice(ns);
        let sum = fnv1a64(&b[..at::CHECKSUM]);
        put_u64(&mut b, at::CHECKSUM, sum);
        b
    }

    /// Decode and check a header of format 3 or 2 (whose payload checksum
    /// reads as 0).
    pub fn decode(b: &[u8]) -> Result<Header> {
        use header_at as at;
        let corrupt = |m: &str| Error::corrupt(format!("damaged object file: {m}"));
        if b.len() < HEADER_SIZE {
            return Err(corrupt("shorter than its header"));
        }
        if &b[at::MAGIC..at::VERSION] != MAGIC {
            return Err(corrupt("wrong magic number"));
        }
        let version = u32_at(b, at::VERSION);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_2 {
            return Err(corrupt(&format!("unknown format version {version}")));
        }
        if u64_at(b, at::CHECKSUM) != fnv1a64(&b[..at::CHECKSUM]) {
            return Err(corrupt("header checksum mismatch"));
        }
        if u32_at(b, at::PAYLOAD_OFFSET) != HEADER_SIZE_U32 {
            return Err(corrupt("unexpected payload offset"));
        }
        let text = |at: usize, len_at: usize, max: usize, what: &str| {
            let n = usize::try_from(u32_at(b, len_at))
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| corrupt(&format!("{what} length out of range")))?;
            std::str::from_utf8(&b[at..at + n])
                .map(str::to_string)
                .map_err(|_| corrupt(&format!("{what} is not UTF-8")))
        };
        let tag = text(at::TAG, at::TAG_LEN, MAX_TAG_BYTES, "tag")?;
        let namespace = text(
            at::NAMESPACE,
            at::NAMESPACE_LEN,
            MAX_NAMESPACE_BYTES,
            "namespace",
        )?;
        Ok(Header {
            state: u32_at(b, at::STATE),
            kind: u32_at(b, at::KIND),
            creator_pid: u32_at(b, at::CREATOR_PID),
            payload_len: u64_at(b, at::PAYLOAD_LEN),
            ctime_ns: i64_at(b, at::CTIME),
            namespace,
            tag,
            checksum: if version == FORMAT_VERSION_2 {
                0
            } else {
                u64_at(b, at::PAYLOAD_SUM)
            },
        })
    }

    pub fn file_size(&self) -> u64 {
        HEADER_SIZE as u64 + self.payload_len
    }
}

/// The length of a tag or namespace field, which is at most
/// MAX_TAG_BYTES, as the header records it.
fn field_len(bytes: &[u8]) -> u32 {
    const _: () =
        assert!(MAX_TAG_BYTES >= MAX_NAMESPACE_BYTES && MAX_TAG_BYTES <= u32::MAX as usize);
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
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
            buf: Vec::with_capacity(WRITE_BUFFER),
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

    /// Keep the send time of an object restored from a dump.
    pub fn set_ctime(&mut self, ctime_ns: i64) {
        self.header.ctime_ns = ctime_ns;
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
                        "not enough space in the store \"{dir}\" for object \"{}\": needs at least {} bytes, {} bytes free",
                        self.header.tag, upto, free
                    ),
                    hint: Some(Hint::LargerStore),
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

    /// Append `n` zero bytes without writing them: the space is reserved
    /// (fallocate gives zeroes), so a large zeroed payload costs no copy.
    pub fn write_zeros(&mut self, n: u64) -> Result<()> {
        self.flush()?;
        let at = HEADER_SIZE as u64 + self.written;
        self.reserve(at + n)?;
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("inspecting {}", self.path.display()), e))?
            .len();
        if len < at + n {
            self.file
                .set_len(at + n)
                .map_err(|e| Error::io(format!("extending {}", self.path.display()), e))?;
        }
        self.written += n;
        Ok(())
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
        // A payload changed in place after it is written has no checksum.
        self.header.checksum = if self.header.kind == KIND_SHARED_VECTOR {
            0
        } else {
            self.hasher.digest()
        };
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
                "no space left in the store \"{}\" for object \"{tag}\"",
                store.dir().display()
            ),
            hint: Some(Hint::LargerStore),
        },
        Some(libc::ENOENT) => Error::Store {
            message: format!(
                "the store directory \"{}\" disappeared; the next call recreates it",
                store.dir().display()
            ),
            hint: None,
        },
        _ => Error::io(
            format!("creating an object file in {}", store.dir().display()),
            e,
        ),
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
        return Err(Error::corrupt(format!(
            "object \"{}\" was never completely written",
            header.tag
        )));
    }
    let len = file
        .metadata()
        .map_err(|e| Error::io("inspecting an object file", e))?
        .len();
    if len < header.file_size() {
        return Err(Error::corrupt(format!(
            "object \"{}\" is truncated: {len} bytes on disk, {} expected",
            header.tag,
            header.file_size()
        )));
    }
    Ok(())
}

enum Mapping {
    /// Shared, read only.
    ReadOnly(memmap2::Mmap),
    /// Private and writable (MAP_PRIVATE): a write copies the page for this
    /// process only and never reaches the file. Unreserved (MAP_NORESERVE):
    /// the kernel does not charge the whole size against the commit limit
    /// up front, only the pages actually written cost memory, so a view of
    /// an object larger than RAM works.
    CopyOnWrite(memmap2::MmapMut),
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

    /// Map an object file whose header was read already (copy-on-write
    /// with `cow`), checking it is committed and whole.
    pub(crate) fn open_with(file: &File, header: Header, cow: bool) -> Result<ObjectMap> {
        check_complete(file, &header)?;
        if header.payload_len == 0 {
            return Ok(ObjectMap { map: None, header });
        }
        let len = usize::try_from(header.file_size())
            .map_err(|_| map_error(&header, std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        let map = if cow {
            // SAFETY: object files are written once and never modified
            // after commit, and check_complete above guarantees the mapped
            // range exists; a mapping stays valid after the file is
            // unlinked. A private mapping never writes to the file.
            unsafe { opts.no_reserve_swap().map_copy(file) }.map(Mapping::CopyOnWrite)
        } else {
            // SAFETY: as above; this mapping can not be written at all.
            unsafe { opts.map(file) }.map(Mapping::ReadOnly)
        }
        .map_err(|e| map_error(&header, e))?;
        Ok(ObjectMap {
            map: Some(map),
            header,
        })
    }

    /// The payload (the mapping is exactly the header and the payload).
    pub fn payload(&self) -> &[u8] {
        match &self.map {
            Some(Mapping::ReadOnly(m)) => &m[HEADER_SIZE..],
            Some(Mapping::CopyOnWrite(m)) => &m[HEADER_SIZE..],
            None => &[],
        }
    }

    /// Start of the payload, writable when mapped copy-on-write (None
    /// otherwise). Writes stay private to this process.
    pub fn payload_mut_ptr(&mut self) -> Option<*mut u8> {
        match &mut self.map {
            // The raw pointer of the mapping, not one derived from a slice:
            // it stays valid for as long as the mapping, which is what the
            // callers keep it for.
            Some(Mapping::CopyOnWrite(m)) => Some(m.as_mut_ptr().wrapping_add(HEADER_SIZE)),
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

    /// The object files of the stores kept in tests/testthat/fixtures
    /// (formats 2 and 3, written by older versions) still read, and a
    /// format 3 header encodes back to the very same bytes.
    #[test]
    fn fixture_object_files_read_and_format_3_encodes_identically() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../tests/testthat/fixtures");
        let mut seen = [0usize; 4];
        for store in ["journal-v3-store", "journal-v4-store"] {
            for entry in std::fs::read_dir(fixtures.join(store)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "yobj") {
                    continue;
                }
                let bytes = std::fs::read(&path).unwrap();
                let h = Header::decode(&bytes).unwrap();
                assert_eq!(h.state, STATE_COMMITTED);
                assert_eq!(h.namespace, crate::key::DEFAULT_NAMESPACE);
                assert_eq!(h.file_size(), bytes.len() as u64);
                let version = crate::codec::u32_at(&bytes, 8);
                let f = File::open(&path).unwrap();
                let view = ObjectMap::open_for_view(&f).unwrap();
                assert_eq!(view.payload(), &bytes[HEADER_SIZE..]);
                if version == FORMAT_VERSION {
                    assert_eq!(&h.encode()[..], &bytes[..HEADER_SIZE]);
                    assert_ne!(h.checksum, 0);
                    crate::codec::verify(view.payload(), h.checksum, &h.tag).unwrap();
                } else {
                    assert_eq!(version, FORMAT_VERSION_2);
                    assert_eq!(h.checksum, 0);
                }
                if h.kind == KIND_R_VECTOR {
                    let v = VectorHeader::decode(view.payload()).unwrap();
                    assert_eq!(&v.encode()[..], &view.payload()[..VECTOR_HEADER_SIZE]);
                }
                seen[usize::try_from(version).unwrap()] += 1;
            }
        }
        assert!(seen[2] > 0 && seen[3] > 0, "{seen:?}");
    }

    /// The permissions ("rw-p") and VmFlags of the mapping holding `addr`.
    fn vm_flags(addr: usize) -> Option<(String, String)> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut current: Option<String> = None;
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            if let Some((lo, hi)) = first.split_once('-') {
                let lo = usize::from_str_radix(lo, 16);
                let hi = usize::from_str_radix(hi, 16);
                if let (Ok(lo), Ok(hi)) = (lo, hi) {
                    current = (lo <= addr && addr < hi).then(|| words.next().unwrap().to_string());
                    continue;
                }
            }
            if let (Some(perms), Some(flags)) = (&current, line.strip_prefix("VmFlags:")) {
                return Some((perms.clone(), flags.trim().to_string()));
            }
        }
        None
    }

    #[test]
    fn views_of_vectors_are_private_and_writable_others_read_only() {
        let s = temp_store("view");
        let mut w = ObjectWriter::create(&s, "default", "v", KIND_R_VECTOR, 0).unwrap();
        let vh = VectorHeader {
            sexptype: 24,
            elt_size: 1,
            length: 4,
            object: 0,
        };
        w.write(&vh.encode()).unwrap();
        w.write(b"abcd").unwrap();
        let (vid, _) = w.commit().unwrap();
        let mut w = ObjectWriter::create(&s, "default", "s", KIND_R_SERIALIZED, 0).unwrap();
        w.write(b"serialized").unwrap();
        let (sid, _) = w.commit().unwrap();

        let f = File::open(s.object_path(&vid)).unwrap();
        let mut view = ObjectMap::open_for_view(&f).unwrap();
        let p = view.payload_mut_ptr().expect("a vector view is writable");
        // SAFETY: the payload holds the vector header and 4 bytes after it.
        unsafe { *p.add(VECTOR_HEADER_SIZE) = b'X' };
        assert_eq!(&view.payload()[VECTOR_HEADER_SIZE..], b"Xbcd");
        // The write stays in this mapping: neither the file nor another
        // mapping of it sees it.
        let again = ObjectMap::open_for_view(&File::open(s.object_path(&vid)).unwrap()).unwrap();
        assert_eq!(&again.payload()[VECTOR_HEADER_SIZE..], b"abcd");
        let on_disk = std::fs::read(s.object_path(&vid)).unwrap();
        assert_eq!(&on_disk[HEADER_SIZE + VECTOR_HEADER_SIZE..], b"abcd");
        // Private, writable and unreserved (the kernel ignores MAP_NORESERVE
        // under strict overcommit accounting).
        let flags = vm_flags(p as usize).expect("the view is in /proc/self/smaps");
        assert!(flags.0.starts_with("rw-p"), "{flags:?}");
        let strict = std::fs::read_to_string("/proc/sys/vm/overcommit_memory")
            .is_ok_and(|m| m.trim() == "2");
        assert!(strict || flags.1.split(' ').any(|f| f == "nr"), "{flags:?}");

        let f = File::open(s.object_path(&sid)).unwrap();
        let mut view = ObjectMap::open_for_view(&f).unwrap();
        assert!(view.payload_mut_ptr().is_none());
        assert_eq!(view.payload(), b"serialized");
        assert!(ObjectMap::open(&f).unwrap().payload_mut_ptr().is_none());
        std::fs::remove_dir_all(s.dir()).unwrap();
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
