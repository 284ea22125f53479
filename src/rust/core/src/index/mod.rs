//! The store's index: the catalog ((namespace, tag) -> object) in a file of
//! the store (`store::INDEX_NAME`) that every client maps and reads without
//! a lock and without a word to the helper, with the payloads of small
//! objects in the same file. The helper writes it (it is the only writer,
//! under its catalog lock) after every change of its catalog, before it
//! answers; a reader that finds an object there needs no round trip.
//!
//! The index is derived state: the helper makes a new one when it starts
//! (from the catalog it recovered), closes the old one first, and closes and
//! unlinks it when it quits. A reader that finds the index closed opens the
//! store's index again, or asks the helper when there is none. An index it
//! can not use (another layout, another boot) is ignored the same way.
//!
//! # File layout (layout version 1, native endian)
//!
//! The file is sparse: it is made with ftruncate, slots are written as
//! objects arrive and the arena is reserved with fallocate as it fills (a
//! full filesystem is an error, never a SIGBUS).
//!
//! | Offset | Bytes | Header (the first page) |
//! |---|---|---|
//! | 0 | 8 | magic `YAPLRIX1` |
//! | 8 | 4 | layout version (1) |
//! | 12 | 4 | slot count N (a power of two) |
//! | 16 | 8 | offset of slot 0 (4096) |
//! | 24 | 8 | offset of the arena A |
//! | 32 | 8 | bytes of the arena L (the file is A + L long) |
//! | 40 | 40 | the boot id of the boot that made the file, zero padded |
//! | 80 | 4 | closed flag (nonzero: closed) |
//! | 84 | 4 | changes: bumped after every change |
//! | 88 | 32 | the writer's bookkeeping: arena bytes handed out and reserved, LIVE slots, LIVE and TOMBSTONE slots |
//! | 120 | 192 | the writer's free lists: per block class, the first free block |
//! | 312 | 4 | M, the size of a `pthread_mutex_t` (40 on x86_64 with glibc): a process with another C library refuses the file |
//! | 316 | 4 | batch: odd while the writer applies a change of several objects |
//! | 320 | 112 | the intent: the change in progress (phase, kind, slot, block classes, the slot's state before, the new fields, the allocator before the change, the new and the old record) |
//! | 432 | M | the writers' lock (robust, process-shared) |
//!
//! Then the N slots of 64 bytes each:
//!
//! | Offset | Bytes | Slot |
//! |---|---|---|
//! | 0 | 8 | sequence: even when stable, odd while the writer changes the slot |
//! | 8 | 8 | key hash: xxh3 of the namespace's length, the namespace and the tag |
//! | 16 | 4 | state: EMPTY 0, LIVE 1, TOMBSTONE 2 |
//! | 20 | 4 | payload kind |
//! | 24 | 8 | version |
//! | 32 | 8 | payload bytes |
//! | 40 | 8 | creation time, ns since the epoch |
//! | 48 | 8 | checksum of an inline payload (xxh3; 0 for an object file) |
//! | 56 | 8 | arena offset of the record |
//!
//! Then, at A, the arena: blocks of 64 or 96 bytes times a power of two (24
//! sizes, 64 bytes to 192 KiB), each a record:
//! the body's length (4 bytes), flags (4; 1: the payload follows, 2: the
//! payload is inline but too large for a record, 4: the description is too
//! large for a record; readers ask the helper for what is not there), the
//! payload's length (8), the body (bincode: namespace, tag, object file id
//! or none, description), then the payload from the next 8-byte boundary.
//! Every object has a record, so every key can be compared.
//!
//! # Concurrency rules
//!
//! - **Writers** change the index under its lock, a robust, process-shared
//!   mutex (today the helper is the only writer, under its catalog lock; the
//!   lock and the intent below let other processes write too). A writer
//!   writes a slot like a seqlock writer: sequence + 1 (odd), a Release
//!   fence, the fields, sequence + 2 with Release. A new record is written
//!   before the slot points at it; the record it replaces is freed only
//!   after the slot stops pointing at it, and reused only by a later write.
//! - **A writer that dies** holding the lock leaves it to the next locker
//!   (EOWNERDEAD), which repairs the change from the intent written before
//!   it: PLANNED (a block may have been taken and written, nothing links
//!   it): the allocator is set back as it was; PUBLISHING (the slot may be
//!   half changed, its sequence odd): the slot is written again, whole, from
//!   the intent, then the old block freed; FREEING: the old block is put on
//!   its free list unless it heads it already. The tests kill a writer at
//!   each of these steps, and at random moments, and check that no block
//!   is lost, listed twice or both free and in use.
//! - **Readers** probe linearly from `hash % N` and stop at an EMPTY slot
//!   (a slot never goes back to EMPTY). A slot is read like a seqlock: its
//!   sequence (Acquire), its fields and its record (copied with atomic
//!   loads), an Acquire fence, its sequence again. When the two differ, or
//!   the first is odd, the read is retried: so a reader never keeps a torn
//!   slot, nor bytes of a record that was freed and reused while it read.
//!   Offsets and lengths read from the mapping are bounds-checked before
//!   they are used, so even a torn read stays inside the mapping, and a
//!   record's bytes are decoded (with a bounded decoder) only once the
//!   sequence check passed.
//! - **Batches**: a change of several objects (a `send_objects()`, a
//!   namespace removed) makes the header's batch counter odd while it is
//!   applied. A read that starts while it is odd, or ends after it changed,
//!   is retried (and after a few tries asks the helper, which answers once
//!   the batch is done): so reads see all of a batch or none of it.
//! - **Growth**: when 7 in 10 slots are used or the arena is full, the
//!   writer (holding the old index's lock) makes a bigger index under a
//!   temporary name, copies the live records, closes the old one, then
//!   renames the new one over it. Readers check the closed flag on every
//!   lookup: one that finds it closed opens the index again, and asks the
//!   helper in the moment before the new one has its name. So no reader
//!   keeps reading an index that writers have left.

pub mod layout;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::store::{Dir, How, Store, INDEX_NAME, INDEX_TMP_NAME};
use crate::coord::mutex::Waited;
use layout::{
    arena_offset, block_size, boot_words, class_of, file_len, key_hash, Body, Header, Slot,
    FREEING, IDLE, MUTEX_SIZE, OP_PUT, OP_REMOVE, PLANNED, PUBLISHING,
    CLASSES, EMPTY, FIRST_ARENA, FIRST_SLOTS, GROW_STEP, HEADER_SIZE, LIVE, MAGIC, MAX_ARENA,
    MAX_SLOTS, META_ELSEWHERE, PAYLOAD_ELSEWHERE, PAYLOAD_HERE, RECORD_HEAD, SLOT_SIZE, TOMBSTONE,
    VERSION,
};

pub use layout::Meta;

/// How many times a reader retries a slot it saw changing before it asks
/// the helper instead.
const READ_ATTEMPTS: usize = 64;

/// The longest a writer waits for the index's lock (its holders keep it
/// for a few microseconds; one that dies releases it at once).
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The fixed fields of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fields {
    pub kind: u32,
    pub version: u64,
    pub size: u64,
    pub ctime_ns: i64,
    /// xxh3 of an inline payload (0 for an object file).
    pub checksum: u64,
}

/// The fixed fields of a slot (read with Relaxed loads: the caller checks
/// the slot's sequence around them).
fn fields_of(slot: &Slot) -> Fields {
    Fields {
        kind: slot.kind.load(Ordering::Relaxed),
        version: slot.version.load(Ordering::Relaxed),
        size: slot.size.load(Ordering::Relaxed),
        ctime_ns: slot.ctime_ns.load(Ordering::Relaxed),
        checksum: slot.checksum.load(Ordering::Relaxed),
    }
}

/// An object found in the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub fields: Fields,
    pub body: Body,
    /// The payload, when it is inline, in the record, and was asked for.
    pub payload: Option<Vec<u8>>,
    /// The payload is inline but not in the record: ask the helper.
    pub payload_elsewhere: bool,
    /// The description is not in the record: ask the helper.
    pub meta_elsewhere: bool,
}

/// A record as read.
struct Record {
    body: Body,
    flags: u32,
    payload: Option<Vec<u8>>,
}

/// A record's bytes, copied out of the arena, not yet decoded.
struct RawRecord {
    body: Vec<u8>,
    flags: u32,
    payload: Option<Vec<u8>>,
}

/// The most bytes decoding a body may allocate: a body never holds more
/// than its block.
const BODY_LIMIT: usize = 192 << 10;

impl RawRecord {
    /// Decode the body (bounded: lengths inside damaged bytes can not make
    /// it allocate more than a block). None: it does not decode.
    fn decode(self) -> Option<Record> {
        let config = bincode::config::standard().with_limit::<BODY_LIMIT>();
        let (body, _) = bincode::decode_from_slice::<Body, _>(&self.body, config).ok()?;
        Some(Record {
            body,
            flags: self.flags,
            payload: self.payload,
        })
    }
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    Hit(Box<Hit>),
    /// No object of this key.
    Absent,
    /// The index can not answer (it is closed, or the slot kept
    /// changing): ask the helper.
    Ask,
}

/// A mapping of a store's index.
pub struct Index {
    map: memmap2::MmapRaw,
    slots: u32,
    arena_offset: u64,
    arena_len: u64,
    path: PathBuf,
    /// The store directory, kept open for opening object files (a reader's
    /// mapping only).
    dir: Option<Dir>,
}

impl Index {
    /// Map the index of `store` for reading. None: there is none (no
    /// helper made one), or it is closed, or it is not one this process can
    /// use (another layout, another boot).
    pub fn open(store: &Store) -> Result<Option<Index>> {
        let dir = match Dir::open(store.dir()) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        // Objects are read from what this directory holds: it must be
        // this user's, and private.
        dir.check_private()?;
        let file = match dir.open_file(INDEX_NAME, How::Read) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = dir.path().join(INDEX_NAME);
        let Ok(mut ix) = Index::map(&file, &path, false)? else {
            return Ok(None);
        };
        let boot = boot_words(&crate::coord::boot_id());
        let h = ix.header();
        let same_boot = h
            .boot_id
            .iter()
            .zip(boot)
            .all(|(a, b)| a.load(Ordering::Relaxed) == b);
        if !same_boot || ix.is_closed() {
            return Ok(None);
        }
        ix.dir = Some(dir);
        Ok(Some(ix))
    }

    /// Map `file`, checking its header: Ok(Err(why)) when it is not an
    /// index this process can use.
    fn map(file: &File, path: &Path, write: bool) -> Result<std::result::Result<Index, String>> {
        let context = || format!("mapping {}", path.display());
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?
            .len();
        if len < HEADER_SIZE as u64 || len > file_len(MAX_SLOTS, MAX_ARENA) {
            return Ok(Err(format!("is {len} bytes long")));
        }
        let len = usize::try_from(len).map_err(|_| Error::io(context(), std::io::Error::other("too long")))?;
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len);
        let map = if write {
            opts.map_raw(file)
        } else {
            opts.map_raw_read_only(file)
        }
        .map_err(|e| Error::io(context(), e))?;
        let mut ix = Index {
            map,
            slots: 0,
            arena_offset: 0,
            arena_len: 0,
            path: path.to_path_buf(),
            dir: None,
        };
        let h = ix.header();
        if h.magic.load(Ordering::Relaxed) != u64::from_ne_bytes(MAGIC) {
            return Ok(Err("is not a yaplr index".into()));
        }
        if h.version.load(Ordering::Relaxed) != VERSION {
            return Ok(Err("has another layout version".into()));
        }
        if h.mutex_size.load(Ordering::Relaxed) != MUTEX_SIZE {
            return Ok(Err("was made by a process with another C library".into()));
        }
        let slots = h.slot_count.load(Ordering::Relaxed);
        let arena = h.arena_len.load(Ordering::Relaxed);
        if !slots.is_power_of_two()
            || slots > MAX_SLOTS
            || h.slots_offset.load(Ordering::Relaxed) != HEADER_SIZE as u64
            || h.arena_offset.load(Ordering::Relaxed) != arena_offset(slots)
            || file_len(slots, arena) != len as u64
        {
            return Ok(Err("has an inconsistent header".into()));
        }
        ix.slots = slots;
        ix.arena_offset = arena_offset(slots);
        ix.arena_len = arena;
        Ok(Ok(ix))
    }

    /// Open the object file `id` of the store, through the directory this
    /// index was found in (never through a link, only a file of this user).
    pub fn open_object(&self, id: &str) -> Result<File> {
        match &self.dir {
            Some(d) => d.open_file(&crate::store::object_file_name(id), How::Read),
            None => Err(Error::Server {
                message: "an index opened for writing opens no object files".into(),
            }),
        }
    }

    /// Whether the helper closed this index (it quit, or made a new one).
    pub fn is_closed(&self) -> bool {
        self.header().closed.load(Ordering::Acquire) != 0
    }

    fn header(&self) -> &Header {
        // SAFETY: every mapping an Index holds is at least HEADER_SIZE bytes
        // (checked in `map`) and page-aligned, so it holds an aligned Header;
        // every field is an atomic (any bytes valid, shared through interior
        // mutability); the mapping lives as long as `self`.
        unsafe { &*self.map.as_mut_ptr().cast::<Header>() }
    }

    fn slot(&self, i: u32) -> &Slot {
        let i = i & (self.slots - 1);
        let offset = HEADER_SIZE + i as usize * SLOT_SIZE;
        // SAFETY: i < slots, and the mapping holds the slots after the
        // header (checked in `map`: file_len covers them); HEADER_SIZE and
        // SLOT_SIZE are multiples of a Slot's alignment (64) and the mapping
        // is page-aligned; every field is an atomic; the mapping lives as
        // long as `self`.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast::<Slot>() }
    }

    /// The arena's words from byte `at` on, `words` of them, or None when
    /// they are not all inside the arena.
    fn arena_words(&self, at: u64, words: usize) -> Option<&[AtomicU64]> {
        let end = at.checked_add(words as u64 * 8)?;
        if !at.is_multiple_of(8) || end > self.arena_len {
            return None;
        }
        let offset = usize::try_from(self.arena_offset + at).ok()?;
        // SAFETY: [at, end) lies inside the arena, which lies inside the
        // mapping (checked in `map`); `at` and the arena's offset (a page
        // multiple) are 8-aligned; any bytes are a valid AtomicU64; the
        // mapping lives as long as `self`.
        Some(unsafe {
            std::slice::from_raw_parts(self.map.as_mut_ptr().add(offset).cast::<AtomicU64>(), words)
        })
    }

    /// Copy `len` bytes of the arena from `at` (8-aligned) with atomic
    /// loads. None: out of bounds.
    fn copy_out(&self, at: u64, len: usize) -> Option<Vec<u8>> {
        let words = self.arena_words(at, len.div_ceil(8))?;
        let mut out = Vec::with_capacity(words.len() * 8);
        for w in words {
            out.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        out.truncate(len);
        Some(out)
    }

    /// The record at `at`: its body and (with `payload`, when inline) its
    /// payload. None: it does not make sense (a torn read, or a damaged
    /// file); the caller's sequence check tells which.
    fn read_record(&self, at: u64, payload: bool) -> Option<Record> {
        self.copy_record(at, payload)?.decode()
    }

    /// The bytes of the record at `at` (its body, and with `payload` an
    /// inline payload), copied with atomic loads; not decoded, since they
    /// may be torn until the slot's sequence says otherwise. None: the
    /// lengths make no sense.
    fn copy_record(&self, at: u64, payload: bool) -> Option<RawRecord> {
        let head = self.arena_words(at, RECORD_HEAD / 8)?;
        let w0 = head[0].load(Ordering::Relaxed);
        let body_len = (w0 & 0xffff_ffff) as usize;
        #[allow(clippy::cast_possible_truncation, reason = "the high half of a word")]
        let flags = (w0 >> 32) as u32;
        let inline = flags & PAYLOAD_HERE != 0;
        let payload_len = usize::try_from(head[1].load(Ordering::Relaxed)).ok()?;
        let body_at = at + RECORD_HEAD as u64;
        let payload_at = (body_at + body_len as u64).next_multiple_of(8);
        let end = payload_at.checked_add(payload_len as u64)?;
        if end - at > block_size(CLASSES - 1) {
            return None;
        }
        let body = self.copy_out(body_at, body_len)?;
        let bytes = if payload && inline {
            Some(self.copy_out(payload_at, payload_len)?)
        } else {
            None
        };
        Some(RawRecord {
            body,
            flags,
            payload: bytes,
        })
    }

    /// Look up `(namespace, tag)`; with `payload`, copy an inline payload
    /// too. Lock-free: never waits for the writer.
    pub fn get(&self, namespace: &str, tag: &str, payload: bool) -> Lookup {
        let hash = key_hash(namespace, tag);
        'attempt: for attempt in 0..READ_ATTEMPTS {
            if attempt > 0 {
                std::thread::yield_now();
            }
            if self.is_closed() {
                return Lookup::Ask;
            }
            let batch = self.header().batch.load(Ordering::Acquire);
            if batch & 1 == 1 {
                continue 'attempt;
            }
            // The batch counter again, after the slot's read (and its
            // Acquire fence): unchanged, or the read is retried.
            let same_batch = || self.header().batch.load(Ordering::Relaxed) == batch;
            #[allow(clippy::cast_possible_truncation, reason = "masked by the slot count")]
            let start = hash as u32;
            for probe in 0..self.slots {
                let slot = self.slot(start.wrapping_add(probe));
                let s1 = slot.seq.load(Ordering::Acquire);
                if s1 & 1 == 1 {
                    continue 'attempt;
                }
                let state = slot.state.load(Ordering::Relaxed);
                if state == EMPTY {
                    fence(Ordering::Acquire);
                    if slot.seq.load(Ordering::Relaxed) != s1 || !same_batch() {
                        continue 'attempt;
                    }
                    return Lookup::Absent;
                }
                if state != LIVE || slot.hash.load(Ordering::Relaxed) != hash {
                    continue;
                }
                let fields = fields_of(slot);
                let read = self.copy_record(slot.rec.load(Ordering::Relaxed), payload);
                fence(Ordering::Acquire);
                if slot.seq.load(Ordering::Relaxed) != s1 || !same_batch() {
                    continue 'attempt;
                }
                // Only bytes of a slot that did not change are decoded.
                let Some(r) = read.and_then(RawRecord::decode) else {
                    // A stable slot whose record makes no sense: a damaged
                    // file. The helper answers from its own catalog.
                    return Lookup::Ask;
                };
                if r.body.namespace == namespace && r.body.tag == tag {
                    return Lookup::Hit(Box::new(Hit {
                        fields,
                        body: r.body,
                        payload: r.payload,
                        payload_elsewhere: r.flags & PAYLOAD_ELSEWHERE != 0,
                        meta_elsewhere: r.flags & META_ELSEWHERE != 0,
                    }));
                }
            }
            fence(Ordering::Acquire);
            if !same_batch() {
                continue 'attempt;
            }
            return Lookup::Absent;
        }
        Lookup::Ask
    }

    /// Every live object of `namespace` (None: of every namespace), with
    /// its fields and record (no payload), read lock-free like `get`. None
    /// when the index can not answer: it was closed meanwhile, a slot kept
    /// changing, or a description is not in its record.
    pub fn entries(&self, namespace: Option<&str>) -> Option<Vec<(Fields, Body)>> {
        let live = self.header().live.load(Ordering::Relaxed);
        let mut out = Vec::with_capacity(usize::try_from(live.min(u64::from(self.slots))).unwrap_or(0));
        'slot: for i in 0..self.slots {
            let slot = self.slot(i);
            for _ in 0..READ_ATTEMPTS {
                let s1 = slot.seq.load(Ordering::Acquire);
                if s1 & 1 == 1 {
                    std::thread::yield_now();
                    continue;
                }
                if slot.state.load(Ordering::Relaxed) != LIVE {
                    continue 'slot;
                }
                let fields = fields_of(slot);
                let read = self.copy_record(slot.rec.load(Ordering::Relaxed), false);
                fence(Ordering::Acquire);
                if slot.seq.load(Ordering::Relaxed) != s1 {
                    continue;
                }
                let r = read?.decode()?;
                if r.flags & META_ELSEWHERE != 0 {
                    return None;
                }
                if namespace.is_none_or(|ns| ns == r.body.namespace) {
                    out.push((fields, r.body));
                }
                continue 'slot;
            }
            return None;
        }
        if self.is_closed() {
            return None;
        }
        Some(out)
    }

    /// Every live object, for the writer's new index: its fields and
    /// record (with its payload). Only the writer may call it.
    fn live(&self) -> impl Iterator<Item = (Fields, Record)> + '_ {
        (0..self.slots).filter_map(move |i| {
            let slot = self.slot(i);
            if slot.state.load(Ordering::Acquire) != LIVE {
                return None;
            }
            let fields = fields_of(slot);
            let r = self.read_record(slot.rec.load(Ordering::Relaxed), true)?;
            Some((fields, r))
        })
    }
}

/// The helper's index: the only writer.
pub struct Writer {
    ix: Index,
    file: File,
    dir: Dir,
    /// Renamed to `INDEX_NAME` (before, it has the temporary name).
    published: bool,
}

/// How an object goes into the index.
pub struct Put<'a> {
    pub namespace: &'a str,
    pub tag: &'a str,
    pub fields: Fields,
    /// The object file's id; None: `payload` is inline.
    pub file: Option<&'a str>,
    pub payload: Option<&'a [u8]>,
    pub meta: Meta,
}

impl Writer {
    /// Make the index of `store` (the helper, at start, before it serves:
    /// it is a singleton, so nobody else writes meanwhile): a new file under
    /// a temporary name, renamed over `index`; an index found there is
    /// closed first, so that its readers let go of it.
    pub fn create(store: &Store) -> Result<Writer> {
        Writer::close_existing(store);
        Writer::create_fresh(Dir::open(store.dir())?, FIRST_SLOTS, FIRST_ARENA)
    }

    /// Close the index a dead helper left in `store`, if any (a new helper,
    /// as soon as it holds the store, before it recovers: from then on
    /// clients ask it, not that index).
    pub fn close_existing(store: &Store) {
        let Ok(dir) = Dir::open(store.dir()) else {
            return;
        };
        if let Ok(old) = dir.open_file(INDEX_NAME, How::Update) {
            let path = dir.path().join(INDEX_NAME);
            if let Ok(Ok(old)) = Index::map(&old, &path, true) {
                old.header().closed.store(1, Ordering::Release);
                old.header().changes.fetch_add(1, Ordering::Release);
            }
        }
    }

    fn create_fresh(dir: Dir, slots: u32, arena: u64) -> Result<Writer> {
        let _ = dir.unlink(INDEX_TMP_NAME);
        let file = dir.open_file(INDEX_TMP_NAME, How::CreateNew)?;
        let tmp = dir.path().join(INDEX_TMP_NAME);
        let made = (|| {
            file.set_len(file_len(slots, arena))
                .map_err(|e| Error::io(format!("sizing {}", tmp.display()), e))?;
            // The header and the slots are written (and read) anywhere:
            // their space is reserved now, so that a full filesystem is an
            // error here, never a SIGBUS later.
            crate::sys::fallocate(&file, 0, arena_offset(slots))
                .map_err(|e| Error::io(format!("reserving space in {}", tmp.display()), e))?;
            let path = dir.path().join(INDEX_NAME);
            let map = memmap2::MmapOptions::new()
                .len(usize::try_from(file_len(slots, arena)).map_err(|_| {
                    Error::io(format!("mapping {}", tmp.display()), std::io::Error::other("too long"))
                })?)
                .map_raw(&file)
                .map_err(|e| Error::io(format!("mapping {}", tmp.display()), e))?;
            let ix = Index {
                map,
                slots,
                arena_offset: arena_offset(slots),
                arena_len: arena,
                path,
                dir: None,
            };
            let h = ix.header();
            h.version.store(VERSION, Ordering::Relaxed);
            h.slot_count.store(slots, Ordering::Relaxed);
            h.slots_offset.store(HEADER_SIZE as u64, Ordering::Relaxed);
            h.arena_offset.store(arena_offset(slots), Ordering::Relaxed);
            h.arena_len.store(arena, Ordering::Relaxed);
            h.mutex_size.store(MUTEX_SIZE, Ordering::Relaxed);
            // SAFETY: the file is new and has no name yet: nobody else maps
            // it; the mapping lives as long as the Index.
            unsafe { h.lock.init() }
                .map_err(|e| Error::io(format!("initializing {}", tmp.display()), e))?;
            for (w, b) in h
                .boot_id
                .iter()
                .zip(boot_words(&crate::coord::boot_id()))
            {
                w.store(b, Ordering::Relaxed);
            }
            h.magic.store(u64::from_ne_bytes(MAGIC), Ordering::Release);
            Ok(ix)
        })();
        match made {
            Ok(ix) => Ok(Writer {
                ix,
                file,
                dir,
                published: false,
            }),
            Err(e) => {
                let _ = dir.unlink(INDEX_TMP_NAME);
                Err(e)
            }
        }
    }

    /// Map the store's index to write it too (beside its helper, or after
    /// it died), when there is one this process can use. (The tests' writers
    /// in other processes use it.)
    #[cfg(test)]
    pub fn attach(store: &Store) -> Result<Option<Writer>> {
        let dir = Dir::open(store.dir())?;
        dir.check_private()?;
        let file = match dir.open_file(INDEX_NAME, How::Update) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = dir.path().join(INDEX_NAME);
        let Ok(ix) = Index::map(&file, &path, true)? else {
            return Ok(None);
        };
        if ix.is_closed() {
            return Ok(None);
        }
        Ok(Some(Writer {
            ix,
            file,
            dir,
            published: true,
        }))
    }

    /// Give the new file its name: readers find it from now on.
    pub fn publish(&mut self) -> Result<()> {
        if self.published {
            return Ok(());
        }
        self.dir
            .rename(INDEX_TMP_NAME, INDEX_NAME)
            .map_err(|e| Error::io(format!("renaming {}", self.ix.path.display()), e))?;
        self.published = true;
        Ok(())
    }

    /// Mark the index closed for every reader (at quit, before the file is
    /// unlinked, and when a new index replaces it).
    pub fn close(&self) {
        self.ix.header().closed.store(1, Ordering::Release);
        self.bump();
    }

    /// A change of several objects starts: until `end_batch`, readers wait
    /// (or ask the helper) rather than see part of it.
    pub fn begin_batch(&self) {
        self.ix.header().batch.fetch_add(1, Ordering::AcqRel);
        // Ordered before every slot write of the batch.
        fence(Ordering::Release);
    }

    /// The change of several objects is applied.
    pub fn end_batch(&self) {
        self.ix.header().batch.fetch_add(1, Ordering::Release);
    }

    fn bump(&self) {
        self.ix.header().changes.fetch_add(1, Ordering::Release);
    }

    /// The slot of `(namespace, tag)`, or the slot where it goes (the first
    /// TOMBSTONE or EMPTY slot of its probe), with whether it holds it.
    fn find(&self, namespace: &str, tag: &str, hash: u64) -> (u32, bool) {
        #[allow(clippy::cast_possible_truncation, reason = "masked by the slot count")]
        let start = hash as u32;
        let mut free = None;
        for probe in 0..self.ix.slots {
            let i = start.wrapping_add(probe) & (self.ix.slots - 1);
            let slot = self.ix.slot(i);
            match slot.state.load(Ordering::Relaxed) {
                EMPTY => return (free.unwrap_or(i), false),
                TOMBSTONE => {
                    free.get_or_insert(i);
                }
                _ if slot.hash.load(Ordering::Relaxed) == hash => {
                    let ours = self
                        .ix
                        .read_record(slot.rec.load(Ordering::Relaxed), false)
                        .is_some_and(|r| r.body.namespace == namespace && r.body.tag == tag);
                    if ours {
                        return (i, true);
                    }
                }
                _ => {}
            }
        }
        (free.unwrap_or(0), false)
    }

    /// Store or replace an object. An error (a full filesystem) leaves the
    /// index as it was: the caller closes it, so readers ask the helper.
    pub fn put(&mut self, p: &Put<'_>) -> Result<()> {
        let bytes = encode_record(p)?;
        self.place(p.namespace, p.tag, p.fields, &bytes)
    }

    /// Copy a record of another index.
    fn copy(&mut self, fields: Fields, r: &Record) -> Result<()> {
        let body = encode_body(&r.body)?;
        let bytes = record_bytes(&body, r.flags, r.payload.as_deref().unwrap_or(&[]));
        self.place(&r.body.namespace, &r.body.tag, fields, &bytes)
    }

    /// Take the index's lock; when its previous holder died in the middle
    /// of a change, finish or undo that change first (`repair`).
    fn lock(&self) -> Result<()> {
        let h = self.ix.header();
        // SAFETY: the mutex was initialized when the file was made
        // (`create_fresh`), and the mapping lives as long as `self`.
        match unsafe { h.lock.lock_within(LOCK_WAIT, &|| false) } {
            Waited::Locked { owner_died } => {
                if owner_died || h.intent.phase.load(Ordering::Acquire) != IDLE {
                    self.repair();
                }
                Ok(())
            }
            Waited::TimedOut | Waited::Interrupted => Err(Error::Timeout {
                waited_for: format!("the lock of the store's index {}", self.ix.path.display()),
                seconds: LOCK_WAIT.as_secs_f64(),
            }),
            Waited::Failed(e) => Err(Error::io(
                format!("locking the store's index {}", self.ix.path.display()),
                e,
            )),
        }
    }

    fn unlock(&self) {
        // SAFETY: this thread locked it in `lock`; the mapping is alive.
        // Unlocking a mutex this thread holds can not fail.
        let _ = unsafe { self.ix.header().lock.unlock() };
    }

    /// Under the lock: finish the change a dead writer was making (it had
    /// published, or was publishing, its slot) or undo it (it had only
    /// taken a block), from its intent.
    fn repair(&self) {
        let h = self.ix.header();
        let it = &h.intent;
        let phase = it.phase.load(Ordering::Acquire);
        if phase == PLANNED {
            // The new block may have been taken and written, never linked:
            // give the allocator back what it had.
            let class = usize_of(it.class.load(Ordering::Relaxed));
            let first = it.saved_free.load(Ordering::Relaxed);
            if class < CLASSES {
                // The block goes back to the head of its list, with the
                // link its record overwrote.
                if let Some(w) = first.checked_sub(1).and_then(|at| self.ix.arena_words(at, 2)) {
                    w[0].store(it.saved_next.load(Ordering::Relaxed), Ordering::Relaxed);
                    w[1].store(0, Ordering::Relaxed);
                }
                h.free[class].store(first, Ordering::Relaxed);
            }
            h.arena_top
                .store(it.saved_top.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if phase == PUBLISHING {
            self.publish_slot();
            it.phase.store(FREEING, Ordering::Release);
        }
        if phase == PUBLISHING || phase == FREEING {
            self.free_old();
        }
        it.phase.store(IDLE, Ordering::Release);
        self.bump();
    }

    /// Change the slot of the intent as it says, unless it is so already (a
    /// repair after a writer that died once the slot was published).
    fn publish_slot(&self) {
        let it = &self.ix.header().intent;
        let slot = self.ix.slot(it.slot.load(Ordering::Relaxed));
        let remove = it.op.load(Ordering::Relaxed) == OP_REMOVE;
        let done = slot.seq.load(Ordering::Relaxed) & 1 == 0
            && if remove {
                slot.state.load(Ordering::Relaxed) == TOMBSTONE
            } else {
                slot.state.load(Ordering::Relaxed) == LIVE
                    && slot.rec.load(Ordering::Relaxed) == it.new_rec.load(Ordering::Relaxed)
                    && slot.version.load(Ordering::Relaxed) == it.version.load(Ordering::Relaxed)
            };
        if done {
            return;
        }
        let s = slot.seq.load(Ordering::Relaxed) | 1;
        slot.seq.store(s, Ordering::Relaxed);
        fence(Ordering::Release);
        fault_point(9);
        if it.op.load(Ordering::Relaxed) == OP_REMOVE {
            slot.state.store(TOMBSTONE, Ordering::Relaxed);
        } else {
            slot.hash.store(it.hash.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.state.store(LIVE, Ordering::Relaxed);
            slot.kind.store(it.kind.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.version.store(it.version.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.size.store(it.size.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.ctime_ns
                .store(it.ctime_ns.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.checksum
                .store(it.checksum.load(Ordering::Relaxed), Ordering::Relaxed);
            slot.rec.store(it.new_rec.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        slot.seq.store(s + 1, Ordering::Release);
        // The counts follow the slot's state before the change.
        let h = self.ix.header();
        let held = it.held.load(Ordering::Relaxed) == 1;
        let was = it.was.load(Ordering::Relaxed);
        if it.op.load(Ordering::Relaxed) == OP_REMOVE {
            let _ = h
                .live
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        } else if !held {
            h.live.fetch_add(1, Ordering::Relaxed);
            if was == EMPTY {
                h.used.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Give the intent's old record's block back to its free list, unless
    /// it is there already (at its head: pushed just before a writer died).
    fn free_old(&self) {
        let it = &self.ix.header().intent;
        if it.held.load(Ordering::Relaxed) != 1 {
            return;
        }
        let at = it.old_rec.load(Ordering::Relaxed);
        let class = usize_of(it.old_class.load(Ordering::Relaxed));
        let h = self.ix.header();
        if class >= CLASSES || h.free[class].load(Ordering::Relaxed) == at + 1 {
            return;
        }
        let Some(head) = self.ix.arena_words(at, 2) else {
            return;
        };
        head[0].store(h.free[class].load(Ordering::Relaxed), Ordering::Relaxed);
        head[1].store(0, Ordering::Relaxed);
        h.free[class].store(at + 1, Ordering::Release);
    }

    /// Link the record `bytes` of `(namespace, tag)` to its slot, under the
    /// lock, growing the index first when it is full.
    fn place(&mut self, namespace: &str, tag: &str, fields: Fields, bytes: &[u8]) -> Result<()> {
        let hash = key_hash(namespace, tag);
        let class = class_of(bytes.len() as u64).ok_or_else(|| Error::Server {
            message: "an index record larger than a block".into(),
        })?;
        loop {
            self.lock()?;
            let r = self.place_locked(namespace, tag, hash, fields, class, bytes);
            match r {
                Ok(None) => {
                    self.unlock();
                    return Ok(());
                }
                Ok(Some(arena)) => {
                    let grown = self.grow_locked(arena);
                    self.unlock();
                    *self = grown?;
                }
                Err(e) => {
                    self.unlock();
                    return Err(e);
                }
            }
        }
    }

    /// `place` under the lock. Ok(Some(arena)): the index is full; grow it
    /// (its arena with `arena`) and try again.
    fn place_locked(
        &self,
        namespace: &str,
        tag: &str,
        hash: u64,
        fields: Fields,
        class: usize,
        bytes: &[u8],
    ) -> Result<Option<bool>> {
        let h = self.ix.header();
        let (i, held) = self.find(namespace, tag, hash);
        if !held && layout::full(h.used.load(Ordering::Relaxed) + 1, self.ix.slots) {
            return Ok(Some(false));
        }
        if !self.can_alloc(class)? {
            return Ok(Some(true));
        }
        let slot = self.ix.slot(i);
        let it = &h.intent;
        let old_rec = slot.rec.load(Ordering::Relaxed);
        it.op.store(OP_PUT, Ordering::Relaxed);
        it.slot.store(i, Ordering::Relaxed);
        it.class.store(u32_of(class), Ordering::Relaxed);
        it.held.store(u32::from(held), Ordering::Relaxed);
        it.was.store(slot.state.load(Ordering::Relaxed), Ordering::Relaxed);
        it.old_rec.store(old_rec, Ordering::Relaxed);
        it.old_class.store(
            if held { u32_of(self.class_at(old_rec)) } else { u32::MAX },
            Ordering::Relaxed,
        );
        it.hash.store(hash, Ordering::Relaxed);
        it.kind.store(fields.kind, Ordering::Relaxed);
        it.version.store(fields.version, Ordering::Relaxed);
        it.size.store(fields.size, Ordering::Relaxed);
        it.ctime_ns.store(fields.ctime_ns, Ordering::Relaxed);
        it.checksum.store(fields.checksum, Ordering::Relaxed);
        let first = h.free[class].load(Ordering::Relaxed);
        it.saved_free.store(first, Ordering::Relaxed);
        let next = first
            .checked_sub(1)
            .and_then(|at| self.ix.arena_words(at, 1))
            .map_or(0, |w| w[0].load(Ordering::Relaxed));
        it.saved_next.store(next, Ordering::Relaxed);
        it.saved_top
            .store(h.arena_top.load(Ordering::Relaxed), Ordering::Relaxed);
        it.phase.store(PLANNED, Ordering::Release);
        fault_point(1);
        let at = self.alloc(class);
        fault_point(2);
        self.write_record(at, bytes)?;
        it.new_rec.store(at, Ordering::Relaxed);
        fault_point(3);
        it.phase.store(PUBLISHING, Ordering::Release);
        fault_point(4);
        self.publish_slot();
        fault_point(5);
        it.phase.store(FREEING, Ordering::Release);
        self.free_old();
        fault_point(6);
        it.phase.store(IDLE, Ordering::Release);
        self.bump();
        Ok(None)
    }

    /// Remove an object (nothing when there is none).
    pub fn remove(&mut self, namespace: &str, tag: &str) -> Result<()> {
        let hash = key_hash(namespace, tag);
        self.lock()?;
        let (i, held) = self.find(namespace, tag, hash);
        if held {
            let h = self.ix.header();
            let it = &h.intent;
            let old_rec = self.ix.slot(i).rec.load(Ordering::Relaxed);
            it.op.store(OP_REMOVE, Ordering::Relaxed);
            it.slot.store(i, Ordering::Relaxed);
            it.held.store(1, Ordering::Relaxed);
            it.was.store(LIVE, Ordering::Relaxed);
            it.old_rec.store(old_rec, Ordering::Relaxed);
            it.old_class
                .store(u32_of(self.class_at(old_rec)), Ordering::Relaxed);
            it.phase.store(PUBLISHING, Ordering::Release);
            fault_point(7);
            self.publish_slot();
            fault_point(8);
            it.phase.store(FREEING, Ordering::Release);
            self.free_old();
            it.phase.store(IDLE, Ordering::Release);
            self.bump();
        }
        self.unlock();
        Ok(())
    }

    /// The block class of the record at `at` (CLASSES when it makes no
    /// sense).
    fn class_at(&self, at: u64) -> usize {
        let Some(head) = self.ix.arena_words(at, 2) else {
            return CLASSES;
        };
        let body_len = head[0].load(Ordering::Relaxed) & 0xffff_ffff;
        let payload_len = head[1].load(Ordering::Relaxed);
        let total = (RECORD_HEAD as u64 + body_len).next_multiple_of(8) + payload_len;
        class_of(total).unwrap_or(CLASSES)
    }

    /// Write a record into the block at `at`.
    fn write_record(&self, at: u64, bytes: &[u8]) -> Result<()> {
        // A reader still copying the block's last record must see its
        // slot's new sequence if it sees any of these bytes (the block was
        // freed after its slot changed, maybe by another thread).
        fence(Ordering::Release);
        let words = self
            .ix
            .arena_words(at, bytes.len() / 8)
            .ok_or_else(|| Error::Server {
                message: "an index block outside the arena".into(),
            })?;
        for (w, b) in words.iter().zip(bytes.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            w.store(u64::from_ne_bytes(a), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether a block of `class` can be had: from its free list, or from
    /// the top of the arena (reserved with fallocate now, so that `alloc`
    /// can not fail). Err: the filesystem refused the space.
    fn can_alloc(&self, class: usize) -> Result<bool> {
        let h = self.ix.header();
        if h.free[class].load(Ordering::Relaxed) != 0 {
            return Ok(true);
        }
        let end = h.arena_top.load(Ordering::Relaxed) + block_size(class);
        if end > self.ix.arena_len {
            return Ok(false);
        }
        let ready = h.arena_ready.load(Ordering::Relaxed);
        if end > ready {
            let want = end
                .max(ready + GROW_STEP.max(ready / 4))
                .min(self.ix.arena_len);
            crate::sys::fallocate(&self.file, self.ix.arena_offset + ready, want - ready).map_err(
                |e| Error::io(format!("reserving space in {}", self.ix.path.display()), e),
            )?;
            h.arena_ready.store(want, Ordering::Relaxed);
        }
        Ok(true)
    }

    /// Take a block of `class` (`can_alloc` said there is one): the first
    /// of its free list, else from the top of the arena.
    fn alloc(&self, class: usize) -> u64 {
        let h = self.ix.header();
        let head = h.free[class].load(Ordering::Relaxed);
        if head != 0 {
            let at = head - 1;
            let next = self
                .ix
                .arena_words(at, 1)
                .map_or(0, |w| w[0].load(Ordering::Relaxed));
            h.free[class].store(next, Ordering::Relaxed);
            return at;
        }
        // Every block size is a multiple of 32: so is the top.
        let top = h.arena_top.load(Ordering::Relaxed);
        h.arena_top.store(top + block_size(class), Ordering::Relaxed);
        top
    }

    /// Under the lock: a bigger index (slots for twice the live objects,
    /// twice the arena with `arena`), with the same objects, published in
    /// place of this one, which is closed first (readers then ask the
    /// helper until the new one has its name). The caller unlocks this
    /// index, then replaces it with the new one.
    fn grow_locked(&self, arena: bool) -> Result<Writer> {
        let live = self.ix.header().live.load(Ordering::Relaxed);
        let mut slots = FIRST_SLOTS;
        while u64::from(slots) < live.saturating_mul(2) && slots < MAX_SLOTS {
            slots = slots.saturating_mul(2);
        }
        if !arena && slots <= self.ix.slots {
            // As many live objects as before, most slots tombstones: the
            // same size, without them.
            slots = self.ix.slots;
        }
        let arena_len = if arena {
            (self.ix.arena_len * 2).min(MAX_ARENA)
        } else {
            self.ix.arena_len
        };
        if layout::full(live + 1, slots) || (arena && arena_len == self.ix.arena_len) {
            return Err(Error::Server {
                message: "the store's index is as large as it can be".into(),
            });
        }
        let dir = Dir::open(self.ix.path.parent().unwrap_or(Path::new("/")))?;
        let mut new = Writer::create_fresh(dir, slots, arena_len)?;
        // Grown in the middle of a batch, the new index is in it too.
        new.ix
            .header()
            .batch
            .store(self.ix.header().batch.load(Ordering::Relaxed), Ordering::Relaxed);
        for (fields, r) in self.ix.live() {
            new.copy(fields, &r)?;
        }
        if self.published {
            self.close();
            new.publish()?;
        } else {
            self.close();
        }
        Ok(new)
    }
}

/// A step of a change at which the tests make the writer die (see
/// `tests::a_writer_that_dies_at_any_step...`): the process exits at once
/// when the step is the one the test chose.
#[cfg(test)]
fn fault_point(step: u32) {
    if tests::FAULT_AT.load(Ordering::Relaxed) == step {
        // SAFETY: _exit ends the process at once, as a crash would.
        unsafe { libc::_exit(0) };
    }
}

#[cfg(not(test))]
#[inline(always)]
fn fault_point(_step: u32) {}

fn usize_of(x: u32) -> usize {
    usize::try_from(x).unwrap_or(usize::MAX)
}

#[allow(clippy::cast_possible_truncation, reason = "a class number below CLASSES")]
fn u32_of(x: usize) -> u32 {
    x as u32
}

fn encode_body(body: &Body) -> Result<Vec<u8>> {
    bincode::encode_to_vec(body, bincode::config::standard()).map_err(|e| Error::Server {
        message: format!("encoding an index record: {e}"),
    })
}

/// The bytes of the record of `p` (a multiple of 8 long). A payload or a
/// description too large for the largest block stays out, flagged.
fn encode_record(p: &Put<'_>) -> Result<Vec<u8>> {
    let body = |meta: Meta| {
        encode_body(&Body {
            namespace: p.namespace.to_string(),
            tag: p.tag.to_string(),
            file: p.file.map(str::to_string),
            meta,
        })
    };
    let fits = |body: usize, payload: usize| {
        class_of(((RECORD_HEAD + body).next_multiple_of(8) + payload) as u64).is_some()
    };
    let mut encoded = body(p.meta.clone())?;
    let mut flags = 0;
    let mut payload: &[u8] = &[];
    if let Some(bytes) = p.payload {
        if fits(encoded.len(), bytes.len()) {
            payload = bytes;
            flags |= PAYLOAD_HERE;
        } else {
            flags |= PAYLOAD_ELSEWHERE;
        }
    }
    if !fits(encoded.len(), payload.len()) {
        encoded = body(Meta::default())?;
        flags |= META_ELSEWHERE;
    }
    Ok(record_bytes(&encoded, flags, payload))
}

/// A record: its head, `body`, then `payload` from the next 8-byte
/// boundary, zero padded to a multiple of 8.
fn record_bytes(body: &[u8], flags: u32, payload: &[u8]) -> Vec<u8> {
    let payload_at = (RECORD_HEAD + body.len()).next_multiple_of(8);
    let total = payload_at + payload.len();
    let mut bytes = vec![0u8; total.next_multiple_of(8)];
    #[allow(clippy::cast_possible_truncation, reason = "a body fits a block")]
    let w0 = (body.len() as u64) | (u64::from(flags) << 32);
    bytes[..8].copy_from_slice(&w0.to_ne_bytes());
    bytes[8..16].copy_from_slice(&(payload.len() as u64).to_ne_bytes());
    bytes[RECORD_HEAD..RECORD_HEAD + body.len()].copy_from_slice(body);
    bytes[payload_at..total].copy_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests;
