//! The coordination region: one file of the store (`store::COORD_NAME`),
//! mapped shared and read-write by the helper and by every client, holding
//! a fixed table of slots, each a named counter or a named lock. Counters
//! and locks work across processes without a word to the helper.
//!
//! The helper makes the file when it starts (`Region::create`), clients map
//! it (`Region::open`), and the helper closes it (`Region::close`) before it
//! unlinks it at quit, so that a client with a mapping of the old file
//! notices (`Region::is_closed`) and opens the new one.
//!
//! # File layout (layout version 1, native endian)
//!
//! The file is sparse: it is made with ftruncate and only the pages of
//! slots in use are ever written. M is the size of a `pthread_mutex_t` (40
//! bytes on x86_64 with glibc), recorded in the header so that a process
//! with another C library or word size refuses the file.
//!
//! | Offset | Bytes | Header (the first page) |
//! |---|---|---|
//! | 0 | 8 | magic `YAPLRCO1` |
//! | 8 | 4 | layout version (1) |
//! | 12 | 4 | slot count N (65,536 by default) |
//! | 16 | 4 | slot size (1,536) |
//! | 20 | 4 | M |
//! | 24 | 8 | offset of slot 0 |
//! | 32 | 40 | the boot id (`/proc/sys/kernel/random/boot_id`, 36 bytes, zero padded) of the boot that initialized the mutexes |
//! | 72 | 4 | closed flag (nonzero: closed) |
//! | 76 | 4 | reserved |
//! | 80 | M | the table mutex |
//!
//! Then, from offset 4096, the *touched* bitmap: one bit per slot (in
//! 64-bit words, whole pages; 8 KiB for 65,536 slots), set when a slot is
//! first claimed and never cleared. A clear bit means the slot is FREE
//! without reading the slot itself: on tmpfs a read fault on a hole of a
//! shared mapping allocates the page, so probing and listing never touch
//! the pages of slots never used.
//!
//! Then the N slots of 1,536 bytes each (8 slots take 3 pages):
//!
//! | Offset | Bytes | Slot |
//! |---|---|---|
//! | 0 | M | slot mutex (robust, process-shared, error-checking) |
//! | M | 4 | state: FREE 0, WRITING 1, LIVE 2, TOMBSTONE 3 |
//! | M+4 | 4 | kind: counter 1, lock 2 |
//! | M+8 | 8 | incarnation, bumped whenever the slot is claimed or freed |
//! | M+16 | 8 | key hash: xxh3 of the kind, the namespace's length, the namespace and the name |
//! | M+24 | 8 | value (a counter's, \|v\| <= 2^53) |
//! | M+32 | 8 | since: when the lock's holder got it, ns since the epoch (0: free) |
//! | M+40 | 4 | the lock holder's pid (0: free) |
//! | M+44 | 4 | the lock holder's thread id |
//! | M+48 | 4 | mutex-ready mark (the slot mutex is initialized) |
//! | M+52 | 2 | namespace length (<= 256) |
//! | M+54 | 2 | name length (<= 1024) |
//! | M+56 | 1280 | the namespace's bytes then the name's, in 64-bit words |
//!
//! # Concurrency rules
//!
//! - **Lookup** (`find`) is lock-free: open addressing with linear probing
//!   from `hash % N`. A probe stops at a FREE slot (or a clear bit) or
//!   after N slots; TOMBSTONE and WRITING slots are skipped. A slot is read
//!   like a seqlock: its incarnation (Acquire), its state (Acquire), its
//!   fields, an Acquire fence, its incarnation again; when the two
//!   incarnations differ the read is retried, so a slot being reused never
//!   yields a torn match. A match is a [`SlotRef`]: the slot's index and
//!   incarnation.
//! - **States** change only under the table mutex: FREE or TOMBSTONE ->
//!   WRITING -> LIVE (`insert`), LIVE -> TOMBSTONE (`free`, which also
//!   holds the slot mutex), WRITING -> TOMBSTONE (the repair after an
//!   inserter died). A slot never goes back to FREE, so no probe chain is
//!   ever cut.
//! - **Claiming** a slot: set its bit, bump its incarnation, state WRITING,
//!   a Release fence, write the key and reset value and holder, initialize
//!   the slot mutex if it never was, then state LIVE with Release.
//! - **Staleness**: every operation on a slot checks, under the slot mutex
//!   (or with the seqlock read for `counter_get` and `lock_holder`), that
//!   the slot is LIVE, of the expected kind and of the `SlotRef`'s
//!   incarnation. When not, it changes nothing and answers [`Stale`]: the
//!   caller looks the key up again. `free` holds the slot mutex, so a slot
//!   can not be freed (nor reused) in the middle of an operation, and a
//!   held lock can not be freed by anyone but a `free` that waits for it.
//! - **Lock order**: a slot mutex before the table mutex, never the other
//!   way round; nothing waits for a slot mutex while it holds the table
//!   mutex.
//! - **Dead holders**: the mutexes are robust. The next locker after a
//!   holder died gets the mutex, makes it consistent and learns that the
//!   holder died: `lock_acquire` reports it; the table mutex repairs the
//!   slots a dead inserter left WRITING. After a reboot no process can
//!   hold a mutex, but on a disk store their words may still say "locked":
//!   `create` re-initializes a file of another boot.
//! - **Waits** are bounded: `pthread_mutex_timedlock` in slices of at most
//!   50 ms, `interrupted()` asked between slices, the overall deadline on
//!   the monotonic clock.
//! - **Threads and fork**: a lock belongs to the thread that acquired it;
//!   only that thread can release it (a forked child or another thread gets
//!   an error and the lock stays held). While this process holds any lock,
//!   a dropped region is not unmapped (the C library links held robust
//!   mutexes through the mapping): it stays mapped until the process exits.
//!   The success paths of the slot operations allocate nothing, so a forked
//!   child of a multi-threaded process may use them.

#![cfg_attr(
    not(feature = "internals"),
    allow(
        dead_code,
        reason = "the helper and the clients do not use the region yet"
    )
)]

mod layout;
pub(crate) mod mutex;

use std::fs::File;
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::key::DEFAULT_NAMESPACE;
use crate::store::{Dir, How, Store, COORD_NAME, COORD_TMP_NAME};
use crate::sys;
use layout::{
    file_len, slots_offset, usize_of, Header, PackedKey, Slot, BOOT_ID_LEN, FREE, HEADER_SIZE,
    LIVE, MAGIC, MAX_SLOTS, MUTEX_READY, MUTEX_SIZE, SLOT_SIZE, TOMBSTONE, VERSION, WRITING,
};
use mutex::{Held, Waited};

pub use layout::{boot_id, DEFAULT_SLOTS};

/// The largest counter value, in absolute value: 2^53, up to which a double
/// (an R number) holds every integer exactly.
pub const MAX_VALUE: i64 = 1 << 53;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Counter,
    Lock,
}

impl Kind {
    /// Its number in a slot's `kind` field.
    fn code(self) -> u32 {
        match self {
            Kind::Counter => 1,
            Kind::Lock => 2,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Lock => "lock",
        }
    }
}

/// A slot as a lookup found it: its index and its incarnation then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotRef {
    pub index: u32,
    pub incarnation: u64,
}

/// The slot a [`SlotRef`] named was freed or reused since the lookup (or
/// holds another kind): nothing was done; look the key up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stale;

/// The result of an operation on a slot that may have gone stale.
pub type Fresh<T> = std::result::Result<T, Stale>;

/// How long an operation may wait for a mutex, and what can cut the wait
/// short (asked at least every 50 ms).
#[derive(Clone, Copy)]
pub struct Wait<'a> {
    pub timeout: Duration,
    pub interrupted: &'a dyn Fn() -> bool,
}

fn never() -> bool {
    false
}

impl Wait<'static> {
    /// Wait at most `timeout`, without interruption.
    pub fn at_most(timeout: Duration) -> Wait<'static> {
        Wait {
            timeout,
            interrupted: &never,
        }
    }
}

impl std::fmt::Debug for Wait<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A lock this thread acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The previous holder died holding the lock: what it protects may be
    /// half-updated.
    pub previous_holder_died: bool,
}

/// Who holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// When it got the lock, ns since the epoch.
    pub since_ns: i64,
}

/// A live counter or lock, as `entries` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotEntry {
    pub slot: SlotRef,
    pub namespace: String,
    pub name: String,
    /// A counter's value (0 for a lock).
    pub value: i64,
    /// A lock's holder (0: free, or its holder died).
    pub owner_pid: u32,
    /// When the holder got the lock (0: free); when a counter was made.
    pub since_ns: i64,
}

/// Where a key is, or would go.
enum Probe {
    Found(SlotRef),
    /// Not present; this slot (FREE or TOMBSTONE) can take it.
    Vacant(u32),
    /// Not present, and every slot is taken.
    Full,
}

/// What `release_raw` did.
#[derive(Debug)]
enum Release {
    Done,
    Stale,
    /// This thread does not hold the lock; `holder` does (0: nobody).
    NotHolder {
        holder: u32,
    },
    Failed(std::io::Error),
}

/// A mapping of the coordination file of a store.
pub struct Region {
    map: ManuallyDrop<memmap2::MmapRaw>,
    /// 0 until the layout is checked (then no slot can be reached).
    slots: u32,
    slots_offset: usize,
    path: PathBuf,
}

/// Locks this process acquired and has not released, through any region:
/// while there are any, no region is unmapped (a per-mapping count could
/// reach zero while a lock taken through that mapping is held, when the
/// locks are released through other mappings).
static HELD: AtomicUsize = AtomicUsize::new(0);

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if HELD.load(Ordering::Acquire) != 0 {
            // The C library links the robust mutexes a thread holds through
            // the mutexes themselves: unmapping one would leave it (and the
            // kernel, when the thread exits) following pointers into
            // unmapped memory. Keep the mapping; at exit the kernel marks
            // the locks' holder dead.
            return;
        }
        // SAFETY: the mapping is not used after this: every reference into
        // it borrows `self`.
        unsafe { ManuallyDrop::drop(&mut self.map) };
    }
}

impl Region {
    /// Make the coordination region of `store` (the helper, at start; it is
    /// a singleton, so no other process creates it meanwhile): reuse a
    /// valid file of this boot, else make a new one under a temporary name
    /// and rename it over `coord`. A symbolic link or a file of another
    /// user named `coord` is refused.
    pub fn create(store: &Store) -> Result<Region> {
        Self::create_with(store, DEFAULT_SLOTS)
    }

    /// `create` with `slots` slots (1 to 4,194,304). An existing file with
    /// another slot count is replaced.
    pub fn create_with(store: &Store, slots: u32) -> Result<Region> {
        Self::create_for_boot(store, slots, &layout::boot_id())
    }

    fn create_for_boot(store: &Store, slots: u32, boot: &[u8; BOOT_ID_LEN]) -> Result<Region> {
        if slots == 0 || slots > MAX_SLOTS {
            return Err(Error::BadArgument(format!(
                "a coordination table holds 1 to {MAX_SLOTS} counters and locks, not {slots}"
            )));
        }
        let dir = Dir::open(store.dir())?;
        let path = dir.path().join(COORD_NAME);
        let mut replaced = None;
        match dir.open_file(COORD_NAME, How::Update) {
            Ok(file) => {
                if let Ok(old) = Region::map_existing(&file, &path)? {
                    let h = old.header();
                    // A boot id of zeros means it could not be read: then
                    // nothing tells whether the mutexes are of this boot.
                    if old.slots == slots
                        && *boot != [0; BOOT_ID_LEN]
                        && h.has_boot_id(boot)
                        && !old.is_closed()
                    {
                        return Ok(old);
                    }
                    // Clients may map it: close it once the new one is there.
                    replaced = Some(old);
                }
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let region = Region::create_fresh(&dir, slots, boot)?;
        if let Some(old) = replaced {
            old.close();
        }
        Ok(region)
    }

    /// A new file under the temporary name, initialized, then renamed to
    /// `coord`.
    fn create_fresh(dir: &Dir, slots: u32, boot: &[u8; BOOT_ID_LEN]) -> Result<Region> {
        let tmp_path = dir.path().join(COORD_TMP_NAME);
        // Left by a helper that died while making it.
        let _ = dir.unlink(COORD_TMP_NAME);
        let file = dir.open_file(COORD_TMP_NAME, How::CreateNew)?;
        let made = (|| {
            let len = file_len(slots);
            let context = || format!("sizing {}", tmp_path.display());
            let bytes = u64::try_from(len)
                .map_err(|_| Error::io(context(), std::io::Error::other("too large")))?;
            // Sparse: ftruncate, never zeroes written over it.
            file.set_len(bytes).map_err(|e| Error::io(context(), e))?;
            let mut region = Region::map(&file, &tmp_path, len)?;
            region.initialize(slots, boot)?;
            dir.rename(COORD_TMP_NAME, COORD_NAME).map_err(|e| {
                Error::io(format!("renaming {} to {COORD_NAME}", tmp_path.display()), e)
            })?;
            region.path = dir.path().join(COORD_NAME);
            Ok(region)
        })();
        if made.is_err() {
            let _ = dir.unlink(COORD_TMP_NAME);
        }
        made
    }

    /// Map the coordination region of `store` (a client). None when there
    /// is none: no file (or no store), or a closed one the helper is about
    /// to remove. A file that is not a valid region of this boot is an
    /// error (only the helper re-creates it).
    pub fn open(store: &Store) -> Result<Option<Region>> {
        let dir = match Dir::open(store.dir()) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = dir.path().join(COORD_NAME);
        let file = match dir.open_file(COORD_NAME, How::Update) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let region = Region::map_existing(&file, &path)?.map_err(|why| invalid(&path, &why))?;
        if !region.header().has_boot_id(&layout::boot_id()) {
            return Err(invalid(
                &path,
                "was initialized before this machine last started",
            ));
        }
        if region.is_closed() {
            return Ok(None);
        }
        Ok(Some(region))
    }

    /// Map `len` bytes of `file` (at least a header's); no slot is
    /// reachable until the layout is adopted.
    fn map(file: &File, path: &Path, len: usize) -> Result<Region> {
        let context = || format!("mapping {}", path.display());
        if len < HEADER_SIZE {
            return Err(Error::io(context(), std::io::Error::other("too short")));
        }
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw(file)
            .map_err(|e| Error::io(context(), e))?;
        if map.len() < HEADER_SIZE {
            return Err(Error::io(context(), std::io::Error::other("too short")));
        }
        Ok(Region {
            map: ManuallyDrop::new(map),
            slots: 0,
            slots_offset: HEADER_SIZE,
            path: path.to_path_buf(),
        })
    }

    /// Map an existing file: Ok(Err(why)) when it is not a region this
    /// process can use.
    fn map_existing(file: &File, path: &Path) -> Result<std::result::Result<Region, String>> {
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?
            .len();
        let Some(len) = usize::try_from(len)
            .ok()
            .filter(|&l| (HEADER_SIZE..=file_len(MAX_SLOTS)).contains(&l))
        else {
            return Ok(Err(format!("is {len} bytes long")));
        };
        let mut region = Region::map(file, path, len)?;
        Ok(region.adopt_layout().map(|()| region))
    }

    /// Check the header against the mapping and make the slots reachable.
    fn adopt_layout(&mut self) -> std::result::Result<(), String> {
        let h = self.header();
        if h.magic.load(Ordering::Relaxed) != u64::from_ne_bytes(MAGIC) {
            return Err("is not a coordination region of yaplr".into());
        }
        let version = h.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(format!(
                "has layout version {version}; this version of yaplr reads version {VERSION}"
            ));
        }
        let slot_size = h.slot_size.load(Ordering::Relaxed);
        let mutex_size = h.mutex_size.load(Ordering::Relaxed);
        if usize_of(slot_size) != SLOT_SIZE || mutex_size != MUTEX_SIZE {
            return Err(format!(
                "was made for another platform (slots of {slot_size} bytes and mutexes of \
                 {mutex_size}; here {SLOT_SIZE} and {MUTEX_SIZE})"
            ));
        }
        let n = h.slot_count.load(Ordering::Relaxed);
        if n == 0 || n > MAX_SLOTS {
            return Err(format!("declares {n} slots"));
        }
        let offset = h.slots_offset.load(Ordering::Relaxed);
        if usize::try_from(offset).ok() != Some(slots_offset(n)) {
            return Err(format!("puts its slots at offset {offset}"));
        }
        if self.map.len() != file_len(n) {
            return Err(format!(
                "is {} bytes long instead of the {} bytes of its {n} slots",
                self.map.len(),
                file_len(n)
            ));
        }
        self.slots = n;
        self.slots_offset = slots_offset(n);
        Ok(())
    }

    /// Write the header of a new (all zero) file nobody else has open.
    fn initialize(&mut self, slots: u32, boot: &[u8; BOOT_ID_LEN]) -> Result<()> {
        let h = self.header();
        h.magic
            .store(u64::from_ne_bytes(MAGIC), Ordering::Relaxed);
        h.version.store(VERSION, Ordering::Relaxed);
        h.slot_count.store(slots, Ordering::Relaxed);
        h.slot_size.store(
            u32::try_from(SLOT_SIZE).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        h.mutex_size.store(MUTEX_SIZE, Ordering::Relaxed);
        h.slots_offset.store(
            u64::try_from(slots_offset(slots)).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        h.store_boot_id(boot);
        h.closed.store(0, Ordering::Relaxed);
        // SAFETY: the file is new and not yet under its final name: no
        // other thread or process can use the mutex.
        unsafe { h.table.init() }
            .map_err(|e| Error::io(format!("initializing {}", self.path.display()), e))?;
        self.adopt_layout().map_err(|why| invalid(&self.path, &why))
    }

    /// The file this region maps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many counters and locks the table holds at most.
    pub fn slot_count(&self) -> u32 {
        self.slots
    }

    /// Whether the helper closed the region: its file is (about to be)
    /// removed; open the store's region again.
    pub fn is_closed(&self) -> bool {
        self.header().closed.load(Ordering::Acquire) != 0
    }

    /// Mark the region closed (the helper, at quit, before it unlinks the
    /// file), for every process that maps it. Nothing else changes: the
    /// operations still work on the old file, so callers check `is_closed`
    /// and open the store's region again.
    pub fn close(&self) {
        self.header().closed.store(1, Ordering::Release);
    }

    fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    fn header(&self) -> &Header {
        // SAFETY: every mapping a Region holds is at least HEADER_SIZE bytes
        // (checked in `map`) and page-aligned, so it holds an aligned
        // Header; every field of Header is an atomic or a PMutex, for which
        // any bytes are a valid value and which are shared through interior
        // mutability; the mapping lives as long as `self`.
        unsafe { &*self.base().cast::<Header>() }
    }

    /// The touched bitmap: one bit per slot.
    fn bitmap(&self) -> &[AtomicU64] {
        let words = layout::bitmap_words(self.slots);
        // SAFETY: the bitmap's words lie between HEADER_SIZE and
        // `slots_offset`, inside the mapping (checked by `adopt_layout`;
        // with no slots adopted it is empty), 8-aligned (HEADER_SIZE is a
        // page); any bytes are a valid AtomicU64; the mapping lives as long
        // as `self`.
        unsafe {
            std::slice::from_raw_parts(self.base().add(HEADER_SIZE).cast::<AtomicU64>(), words)
        }
    }

    fn slot(&self, index: u32) -> Option<&Slot> {
        if index >= self.slots {
            return None;
        }
        let offset = self.slots_offset + usize_of(index) * SLOT_SIZE;
        // SAFETY: index < slots, and the mapping holds slots_offset + slots
        // * SLOT_SIZE bytes (checked by `adopt_layout`), so the slot lies
        // inside it; slots_offset and SLOT_SIZE are multiples of a Slot's
        // alignment (64) and the mapping is page-aligned; every field is an
        // atomic or a PMutex (any bytes valid, shared through interior
        // mutability); the mapping lives as long as `self`.
        Some(unsafe { &*self.base().add(offset).cast::<Slot>() })
    }

    fn is_touched(&self, index: u32) -> bool {
        let i = usize_of(index);
        self.bitmap()
            .get(i / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (i % 64)) != 0)
    }

    fn touch(&self, index: u32) {
        let i = usize_of(index);
        if let Some(w) = self.bitmap().get(i / 64) {
            w.fetch_or(1 << (i % 64), Ordering::Release);
        }
    }

    /// Indices of the touched slots.
    fn touched(&self) -> impl Iterator<Item = u32> + '_ {
        self.bitmap().iter().enumerate().flat_map(|(w, word)| {
            let bits = word.load(Ordering::Acquire);
            (0..64u32)
                .filter(move |b| bits & (1 << b) != 0)
                .filter_map(move |b| u32::try_from(w * 64).ok()?.checked_add(b))
        })
    }

    /// Read a slot like a seqlock: `read` sees the slot's state and fields
    /// between two reads of its incarnation, again while they differ.
    /// Returns the incarnation and what `read` said.
    fn snapshot<T>(slot: &Slot, read: impl Fn(&Slot, u32) -> T) -> (u64, T) {
        loop {
            let incarnation = slot.incarnation.load(Ordering::Acquire);
            let state = slot.state.load(Ordering::Acquire);
            let seen = read(slot, state);
            fence(Ordering::Acquire);
            if slot.incarnation.load(Ordering::Relaxed) == incarnation {
                return (incarnation, seen);
            }
            std::hint::spin_loop();
        }
    }

    /// Probe for `key`: lock-free, and exact under the table mutex.
    fn probe(&self, key: &PackedKey) -> Probe {
        let n = u64::from(self.slots);
        if n == 0 {
            return Probe::Full;
        }
        let home = key.hash % n;
        let mut tombstone = None;
        for step in 0..n {
            let Ok(i) = u32::try_from((home + step) % n) else {
                break;
            };
            let Some(slot) = self.slot(i) else {
                break;
            };
            if !self.is_touched(i) {
                return Probe::Vacant(tombstone.unwrap_or(i));
            }
            let (incarnation, (state, hit)) =
                Self::snapshot(slot, |s, state| (state, state == LIVE && s.holds(key)));
            match state {
                LIVE if hit => {
                    return Probe::Found(SlotRef {
                        index: i,
                        incarnation,
                    })
                }
                FREE => return Probe::Vacant(tombstone.unwrap_or(i)),
                TOMBSTONE => {
                    tombstone.get_or_insert(i);
                }
                _ => {}
            }
        }
        tombstone.map_or(Probe::Full, Probe::Vacant)
    }

    /// The slot of a counter or lock, if it exists. Lock-free.
    pub fn find(&self, kind: Kind, namespace: &str, name: &str) -> Option<SlotRef> {
        let key = PackedKey::new(kind.code(), namespace, name)?;
        match self.probe(&key) {
            Probe::Found(slot) => Some(slot),
            Probe::Vacant(_) | Probe::Full => None,
        }
    }

    /// The slot of a counter or lock, made (a counter at 0, a free lock)
    /// when it does not exist. Waits for the table mutex as `wait` allows.
    /// A full table is `Error::NoSpace`.
    pub fn insert(&self, kind: Kind, namespace: &str, name: &str, wait: Wait<'_>) -> Result<SlotRef> {
        crate::key::check_namespace(namespace)?;
        crate::key::check_tag(name)?;
        let key = PackedKey::new(kind.code(), namespace, name).ok_or_else(|| {
            Error::BadArgument(format!("the {} name \"{name}\" is too long", kind.noun()))
        })?;
        if let Probe::Found(slot) = self.probe(&key) {
            return Ok(slot);
        }
        let _table = self.lock_table(wait)?;
        match self.probe(&key) {
            Probe::Found(slot) => Ok(slot),
            Probe::Vacant(index) => {
                let r = self.claim(index, &key)?;
                // A counter's `since` is when it was made (a listing's
                // ctime).
                if let (Kind::Counter, Some(s)) = (kind, self.slot(index)) {
                    s.since_ns.store(crate::codec::now_ns(), Ordering::Release);
                }
                Ok(r)
            }
            Probe::Full => Err(Error::NoSpace {
                message: format!(
                    "the coordination table of the store \"{}\" holds at most {} counters \
                     and locks; remove some counters, or release locks",
                    self.store_dir().display(),
                    self.slots
                ),
                needed: 0,
                hint: None,
            }),
        }
    }

    fn store_dir(&self) -> &Path {
        self.path.parent().unwrap_or(&self.path)
    }

    /// Lock the table mutex; when its previous holder died, repair first.
    fn lock_table(&self, wait: Wait<'_>) -> Result<Held<'_>> {
        let table = &self.header().table;
        let what = || {
            format!(
                "the coordination table of the store \"{}\"",
                self.store_dir().display()
            )
        };
        // SAFETY: the table mutex was initialized with the file (a region
        // is only made of a file whose header checked out).
        match unsafe { table.lock_within(wait.timeout, wait.interrupted) } {
            Waited::Locked { owner_died } => {
                // SAFETY: this thread has just locked it.
                let held = unsafe { Held::new(table) };
                if owner_died {
                    self.repair();
                }
                Ok(held)
            }
            Waited::TimedOut => Err(Error::Timeout {
                waited_for: what(),
                seconds: wait.timeout.as_secs_f64(),
            }),
            Waited::Interrupted => Err(Error::Interrupted { waited_for: what() }),
            Waited::Failed(e) => Err(self.mutex_error(&what(), e)),
        }
    }

    /// After an inserter died holding the table mutex: slots it left
    /// WRITING become TOMBSTONE (not FREE: a probe chain may run through
    /// them), with a new incarnation. Returns how many. Under the table
    /// mutex.
    fn repair(&self) -> usize {
        let mut repaired = 0;
        for i in self.touched() {
            let Some(slot) = self.slot(i) else {
                continue;
            };
            if slot.state.load(Ordering::Acquire) == WRITING {
                slot.state.store(TOMBSTONE, Ordering::Release);
                slot.incarnation.fetch_add(1, Ordering::Release);
                repaired += 1;
            }
        }
        repaired
    }

    /// The first half of claiming slot `index` for `key`, under the table
    /// mutex: mark it touched, bump its incarnation, state WRITING, write
    /// the key and reset the value and the holder. Returns the new
    /// incarnation.
    fn begin_claim(&self, index: u32, slot: &Slot, key: &PackedKey) -> u64 {
        self.touch(index);
        let incarnation = slot
            .incarnation
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        slot.state.store(WRITING, Ordering::Relaxed);
        // Whoever reads what follows also reads the new incarnation.
        fence(Ordering::Release);
        slot.store_key(key);
        slot.value.store(0, Ordering::Relaxed);
        slot.owner_pid.store(0, Ordering::Relaxed);
        slot.owner_tid.store(0, Ordering::Relaxed);
        slot.since_ns.store(0, Ordering::Relaxed);
        incarnation
    }

    /// Claim slot `index` (FREE or TOMBSTONE) for `key`, under the table
    /// mutex.
    fn claim(&self, index: u32, key: &PackedKey) -> Result<SlotRef> {
        let Some(slot) = self.slot(index) else {
            return Err(Error::Server {
                message: format!("coordination slot {index} is out of range"),
            });
        };
        let incarnation = self.begin_claim(index, slot, key);
        if slot.mutex_ready.load(Ordering::Acquire) != MUTEX_READY {
            // SAFETY: a slot whose mutex is not ready was never LIVE, and
            // every use of a slot mutex checks `mutex_ready` first: no
            // thread or process uses or waits on it. We hold the table
            // mutex, so nobody else initializes it.
            if let Err(e) = unsafe { slot.mutex.init() } {
                slot.state.store(TOMBSTONE, Ordering::Release);
                slot.incarnation.fetch_add(1, Ordering::Release);
                return Err(Error::io(
                    format!("initializing a mutex of {}", self.path.display()),
                    e,
                ));
            }
            slot.mutex_ready.store(MUTEX_READY, Ordering::Release);
        }
        slot.state.store(LIVE, Ordering::Release);
        Ok(SlotRef { index, incarnation })
    }

    /// Remove a counter or lock: under its slot mutex (waiting for a
    /// lock's holder as `wait` allows) and the table mutex, if the slot is
    /// still the one `slot` names, make it a TOMBSTONE with a new
    /// incarnation. Returns whether it removed something.
    pub fn free(&self, slot: SlotRef, wait: Wait<'_>) -> Result<bool> {
        let start = Instant::now();
        let Some(s) = self.ready_slot(slot, None) else {
            return Ok(false);
        };
        let kind = kind_of(s.kind.load(Ordering::Relaxed));
        let waited_for = || self.waited_for(slot, kind);
        if self.lock_slot(s, slot, kind, &wait, waited_for)?.is_none() {
            return Err(Error::BadArgument(format!(
                "this process holds {}; release it before removing it",
                self.describe(slot, kind)
            )));
        }
        // SAFETY: this thread has just locked it.
        let _slot_mutex = unsafe { Held::new(&s.mutex) };
        if !is_current(s, slot, None) {
            return Ok(false);
        }
        let left = wait.timeout.saturating_sub(start.elapsed());
        let _table = self.lock_table(Wait {
            timeout: left,
            ..wait
        })?;
        s.state.store(TOMBSTONE, Ordering::Relaxed);
        s.owner_pid.store(0, Ordering::Relaxed);
        s.owner_tid.store(0, Ordering::Relaxed);
        s.since_ns.store(0, Ordering::Relaxed);
        s.incarnation.fetch_add(1, Ordering::Release);
        Ok(true)
    }

    /// Free the slots of the locks nobody holds (nor waits for), to make
    /// room in a full table: a lock that is not held holds nothing but its
    /// name, and is made again, free, on its next use. A lock whose holder
    /// died holding it is kept. A process that
    /// looked such a lock up and is about to acquire it finds its slot
    /// stale and looks again. Returns how many were freed.
    pub fn reclaim_free_locks(&self) -> usize {
        self.entries(Kind::Lock, None)
            .into_iter()
            // Not held, and not left held by a holder that died: the next
            // locker of that one must learn it (`previous_holder_died`).
            .filter(|e| {
                e.owner_pid == 0
                    && self
                        .slot(e.slot.index)
                        .is_some_and(|s| s.owner_pid.load(Ordering::Acquire) == 0)
            })
            // A zero wait: a lock taken meanwhile is left alone.
            .filter(|e| matches!(self.free(e.slot, Wait::at_most(Duration::ZERO)), Ok(true)))
            .count()
    }

    /// The live counters (or locks), of one namespace or all, sorted by
    /// namespace and name. Lock-free; touches only slots ever used.
    pub fn entries(&self, kind: Kind, namespace: Option<&str>) -> Vec<SlotEntry> {
        let mut out: Vec<SlotEntry> = self
            .touched()
            .filter_map(|index| self.entry_at(index, kind))
            .filter(|e| namespace.is_none_or(|want| want == e.namespace))
            .collect();
        out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    /// The live counter (or lock) `slot` names, as `entries` lists it.
    pub fn entry(&self, slot: SlotRef, kind: Kind) -> Option<SlotEntry> {
        self.entry_at(slot.index, kind)
            .filter(|e| e.slot.incarnation == slot.incarnation)
    }

    /// The live counter (or lock) in slot `index`, read lock-free.
    fn entry_at(&self, index: u32, kind: Kind) -> Option<SlotEntry> {
        let slot = self.slot(index)?;
        let (incarnation, seen) = Self::snapshot(slot, |s, state| {
            if state != LIVE || s.kind.load(Ordering::Relaxed) != kind.code() {
                return None;
            }
            let (ns, name) = s.read_key()?;
            Some((
                ns,
                name,
                s.value.load(Ordering::Relaxed),
                s.owner_pid.load(Ordering::Relaxed),
                s.since_ns.load(Ordering::Relaxed),
            ))
        });
        let (ns, name, value, pid, since) = seen?;
        let alive = pid != 0 && sys::pid_alive(pid);
        Some(SlotEntry {
            slot: SlotRef { index, incarnation },
            namespace: ns,
            name,
            value,
            owner_pid: if alive { pid } else { 0 },
            since_ns: if alive || kind == Kind::Counter {
                since
            } else {
                0
            },
        })
    }

    /// The slot `slot` names if its mutex is initialized and it looks
    /// current now (a cheap check before waiting on its mutex; it is
    /// checked again under the mutex).
    fn ready_slot(&self, slot: SlotRef, kind: Option<Kind>) -> Option<&Slot> {
        let s = self.slot(slot.index)?;
        (s.mutex_ready.load(Ordering::Acquire) == MUTEX_READY && is_current(s, slot, kind))
            .then_some(s)
    }

    /// `counter "name"`, with its namespace unless the default one; for a
    /// slot no longer current, `a removed counter`.
    fn describe(&self, slot: SlotRef, kind: Option<Kind>) -> String {
        let noun = kind.map_or("counter or lock", Kind::noun);
        let key = self.slot(slot.index).and_then(|s| {
            let (incarnation, key) = Self::snapshot(s, |s, state| {
                (state == LIVE).then(|| s.read_key()).flatten()
            });
            key.filter(|_| incarnation == slot.incarnation)
        });
        match key {
            Some((ns, name)) if ns == DEFAULT_NAMESPACE => format!("{noun} \"{name}\""),
            Some((ns, name)) => format!("{noun} \"{name}\" in namespace \"{ns}\""),
            None => format!("a removed {noun}"),
        }
    }

    /// What a timed-out wait on a slot waited for: for a lock, with its
    /// holder when known.
    fn waited_for(&self, slot: SlotRef, kind: Option<Kind>) -> String {
        let what = self.describe(slot, kind);
        match self.lock_holder(slot) {
            Ok(Some(h)) => format!("{what} (held by process {})", h.pid),
            _ => what,
        }
    }

    fn mutex_error(&self, what: &str, e: std::io::Error) -> Error {
        if e.raw_os_error() == Some(libc::ENOTRECOVERABLE) {
            return Error::corrupt(format!(
                "the mutex of {what} in {} can not be recovered",
                self.path.display()
            ));
        }
        Error::io(
            format!("locking the mutex of {what} in {}", self.path.display()),
            e,
        )
    }

    /// Lock the mutex of `s` (the slot `slot` names, whose mutex
    /// `ready_slot` found initialized) as `wait` allows: Some(whether its
    /// previous holder died), or None when this thread holds it already. A
    /// timeout or an interrupt names what was waited for (`waited_for`).
    fn lock_slot(
        &self,
        s: &Slot,
        slot: SlotRef,
        kind: Option<Kind>,
        wait: &Wait<'_>,
        waited_for: impl Fn() -> String,
    ) -> Result<Option<bool>> {
        // SAFETY: the caller got `s` from `ready_slot`, which checked that
        // the slot mutex is initialized.
        match unsafe { s.mutex.lock_within(wait.timeout, wait.interrupted) } {
            Waited::Locked { owner_died } => Ok(Some(owner_died)),
            Waited::TimedOut => Err(Error::Timeout {
                waited_for: waited_for(),
                seconds: wait.timeout.as_secs_f64(),
            }),
            Waited::Interrupted => Err(Error::Interrupted {
                waited_for: waited_for(),
            }),
            Waited::Failed(e) if e.raw_os_error() == Some(libc::EDEADLK) => Ok(None),
            Waited::Failed(e) => Err(self.mutex_error(&self.describe(slot, kind), e)),
        }
    }

    /// Run `op` on a counter under its slot mutex, if the slot is still the
    /// counter `slot` names.
    fn with_counter<T>(
        &self,
        slot: SlotRef,
        wait: Wait<'_>,
        op: impl FnOnce(&Slot) -> T,
    ) -> Result<Fresh<T>> {
        let kind = Some(Kind::Counter);
        let Some(s) = self.ready_slot(slot, kind) else {
            return Ok(Err(Stale));
        };
        let waited_for = || self.describe(slot, kind);
        if self.lock_slot(s, slot, kind, &wait, waited_for)?.is_none() {
            // This thread holds the slot's mutex: it is a lock's now.
            return Ok(Err(Stale));
        }
        // SAFETY: this thread has just locked it.
        let _held = unsafe { Held::new(&s.mutex) };
        if !is_current(s, slot, kind) {
            return Ok(Err(Stale));
        }
        Ok(Ok(op(s)))
    }

    /// Add `by` to a counter; its new value. A result beyond ±2^53 is
    /// `Error::BadArgument` and leaves the value.
    pub fn counter_add(&self, slot: SlotRef, by: i64, wait: Wait<'_>) -> Result<Fresh<i64>> {
        let added = self.with_counter(slot, wait, |s| {
            let old = s.value.load(Ordering::Relaxed);
            match old.checked_add(by).filter(|v| in_range(*v)) {
                Some(new) => {
                    s.value.store(new, Ordering::Relaxed);
                    Ok(new)
                }
                None => Err(old),
            }
        })?;
        match added {
            Ok(Ok(new)) => Ok(Ok(new)),
            Ok(Err(old)) => Err(Error::BadArgument(format!(
                "adding {by} to {} would take it beyond ±2^53 ({MAX_VALUE}), past which a \
                 double does not hold every integer; its value stays {old}",
                self.describe(slot, Some(Kind::Counter))
            ))),
            Err(Stale) => Ok(Err(Stale)),
        }
    }

    /// A counter's value, read without locking.
    pub fn counter_get(&self, slot: SlotRef) -> Fresh<i64> {
        let s = self.slot(slot.index).ok_or(Stale)?;
        let (incarnation, (state, kind, value)) = Self::snapshot(s, |s, state| {
            (
                state,
                s.kind.load(Ordering::Relaxed),
                s.value.load(Ordering::Relaxed),
            )
        });
        if incarnation != slot.incarnation || state != LIVE || kind != Kind::Counter.code() {
            return Err(Stale);
        }
        Ok(value)
    }

    /// Set a counter. A value beyond ±2^53 is `Error::BadArgument` and
    /// leaves the counter.
    pub fn counter_set(&self, slot: SlotRef, value: i64, wait: Wait<'_>) -> Result<Fresh<()>> {
        self.check_range(slot, value)?;
        self.with_counter(slot, wait, |s| s.value.store(value, Ordering::Relaxed))
    }

    /// Set a counter to `new` if it is `expected`; whether it was.
    pub fn counter_cas(
        &self,
        slot: SlotRef,
        expected: i64,
        new: i64,
        wait: Wait<'_>,
    ) -> Result<Fresh<bool>> {
        self.check_range(slot, new)?;
        self.with_counter(slot, wait, |s| {
            let hit = s.value.load(Ordering::Relaxed) == expected;
            if hit {
                s.value.store(new, Ordering::Relaxed);
            }
            hit
        })
    }

    fn check_range(&self, slot: SlotRef, value: i64) -> Result<()> {
        if in_range(value) {
            return Ok(());
        }
        Err(Error::BadArgument(format!(
            "{value} is beyond ±2^53 ({MAX_VALUE}), past which a double does not hold every \
             integer; {} keeps its value",
            self.describe(slot, Some(Kind::Counter))
        )))
    }

    /// Acquire a lock for this thread, waiting as `wait` allows. Another
    /// thread (or process) holding it makes this wait; this thread holding
    /// it is `Error::BadArgument`. A holder that died gives the lock to
    /// the next locker at once, with `previous_holder_died`.
    pub fn lock_acquire(&self, slot: SlotRef, wait: Wait<'_>) -> Result<Fresh<Acquired>> {
        let kind = Some(Kind::Lock);
        let Some(s) = self.ready_slot(slot, kind) else {
            return Ok(Err(Stale));
        };
        let waited_for = || self.waited_for(slot, kind);
        let Some(owner_died) = self.lock_slot(s, slot, kind, &wait, waited_for)? else {
            return Err(Error::BadArgument(format!(
                "this process already holds {}",
                self.describe(slot, kind)
            )));
        };
        if !is_current(s, slot, kind) {
            // SAFETY: this thread has just locked it.
            let _ = unsafe { s.mutex.unlock() };
            return Ok(Err(Stale));
        }
        s.since_ns.store(crate::codec::now_ns(), Ordering::Relaxed);
        s.owner_tid.store(sys::gettid(), Ordering::Relaxed);
        s.owner_pid.store(sys::getpid(), Ordering::Release);
        HELD.fetch_add(1, Ordering::AcqRel);
        Ok(Ok(Acquired {
            previous_holder_died: owner_died,
        }))
    }

    /// Release a lock this thread holds. Any other thread or process (a
    /// forked child, say) gets `Error::BadArgument` and the lock stays with
    /// its holder.
    pub fn lock_release(&self, slot: SlotRef) -> Result<Fresh<()>> {
        let kind = Some(Kind::Lock);
        match self.release_raw(slot) {
            Release::Done => Ok(Ok(())),
            Release::Stale => Ok(Err(Stale)),
            Release::NotHolder { holder } => {
                let what = self.describe(slot, kind);
                Err(Error::BadArgument(if holder == 0 {
                    format!("{what} is not held")
                } else if holder == sys::getpid() {
                    format!(
                        "another thread of this process holds {what}: only the thread that \
                         acquired a lock can release it"
                    )
                } else {
                    format!("this process does not hold {what} (process {holder} does)")
                }))
            }
            Release::Failed(e) => Err(Error::io(
                format!(
                    "releasing {} in {}",
                    self.describe(slot, kind),
                    self.path.display()
                ),
                e,
            )),
        }
    }

    /// `lock_release` without building errors (nothing here allocates).
    fn release_raw(&self, slot: SlotRef) -> Release {
        let Some(s) = self.ready_slot(slot, Some(Kind::Lock)) else {
            return Release::Stale;
        };
        let (pid, tid) = (sys::getpid(), sys::gettid());
        let holder = s.owner_pid.load(Ordering::Acquire);
        let holder_tid = s.owner_tid.load(Ordering::Relaxed);
        if holder != pid || holder_tid != tid {
            return Release::NotHolder { holder };
        }
        let since = s.since_ns.load(Ordering::Relaxed);
        s.owner_pid.store(0, Ordering::Release);
        s.owner_tid.store(0, Ordering::Relaxed);
        s.since_ns.store(0, Ordering::Relaxed);
        // SAFETY: `ready_slot` checked that the slot mutex is initialized.
        match unsafe { s.mutex.unlock() } {
            Ok(()) => {
                let _ = HELD.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    n.checked_sub(1)
                });
                Release::Done
            }
            Err(e) => {
                // Not ours after all (a dead holder with our pid and thread
                // id): it keeps its record.
                s.since_ns.store(since, Ordering::Relaxed);
                s.owner_tid.store(holder_tid, Ordering::Relaxed);
                s.owner_pid.store(holder, Ordering::Release);
                if e.raw_os_error() == Some(libc::EPERM) {
                    Release::NotHolder { holder }
                } else {
                    Release::Failed(e)
                }
            }
        }
    }

    /// Who holds a lock, as read now (lock-free). A holder that is no
    /// longer alive reads as none: the next locker gets the lock.
    pub fn lock_holder(&self, slot: SlotRef) -> Fresh<Option<Holder>> {
        let s = self.slot(slot.index).ok_or(Stale)?;
        let (incarnation, (state, kind, pid, since_ns)) = Self::snapshot(s, |s, state| {
            (
                state,
                s.kind.load(Ordering::Relaxed),
                s.owner_pid.load(Ordering::Acquire),
                s.since_ns.load(Ordering::Relaxed),
            )
        });
        if incarnation != slot.incarnation || state != LIVE || kind != Kind::Lock.code() {
            return Err(Stale);
        }
        if pid == 0 || !sys::pid_alive(pid) {
            return Ok(None);
        }
        Ok(Some(Holder { pid, since_ns }))
    }
}

/// Whether `slot` is still what `r` names: LIVE, of this incarnation, and
/// of `kind` if given.
fn is_current(slot: &Slot, r: SlotRef, kind: Option<Kind>) -> bool {
    slot.state.load(Ordering::Acquire) == LIVE
        && slot.incarnation.load(Ordering::Acquire) == r.incarnation
        && kind.is_none_or(|k| slot.kind.load(Ordering::Relaxed) == k.code())
}

fn kind_of(code: u32) -> Option<Kind> {
    [Kind::Counter, Kind::Lock]
        .into_iter()
        .find(|k| k.code() == code)
}

fn in_range(v: i64) -> bool {
    (-MAX_VALUE..=MAX_VALUE).contains(&v)
}

/// A coordination file this process can not use.
fn invalid(path: &Path, why: &str) -> Error {
    Error::corrupt(format!(
        "the coordination region \"{}\" {why}; the helper re-creates it when it starts",
        path.display()
    ))
}

#[cfg(test)]
mod tests;
