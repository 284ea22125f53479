//! The file format of the store's index (see the module's header for the
//! prose): the header, the slots and the records, as `#[repr(C)]` types
//! laid over the mapping. Every field is an atomic, so a shared reference
//! to a header or a slot is always sound, whatever another process writes.

use crate::coord::mutex::PMutex;
use bincode::{Decode, Encode};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64};

/// The first 8 bytes of the file.
pub const MAGIC: [u8; 8] = *b"YAPLRIX1";
/// The layout version: bumped whenever a field moves or changes meaning.
pub const VERSION: u32 = 1;
pub const PAGE: usize = 4096;
/// The header takes the first page.
pub const HEADER_SIZE: usize = PAGE;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 64;
/// The slot count of a new index (a power of two).
pub const FIRST_SLOTS: u32 = 4096;
/// The most slots an index may declare (2^26: 4 GiB of slots).
pub const MAX_SLOTS: u32 = 1 << 26;
/// The arena of a new index, in bytes of address space (a sparse file).
pub const FIRST_ARENA: u64 = 64 << 20;
/// A new index grows when more than 7 in 10 of its slots are used.
pub fn full(used: u64, slots: u32) -> bool {
    used * 10 > u64::from(slots) * 7
}

/// The largest arena an index may declare.
pub const MAX_ARENA: u64 = 1 << 40;
/// The arena's blocks come in CLASSES sizes: 64 and 96 bytes times powers
/// of two, from 64 bytes to 192 KiB (enough for the largest inline payload,
/// 64 KiB, and its record), so a record wastes at most a third of its
/// block.
pub const CLASSES: usize = 24;
pub const MIN_BLOCK: u64 = 64;
/// Bytes of a record before its body.
pub const RECORD_HEAD: usize = 16;
/// Arena bytes reserved with fallocate at a time, at least.
pub const GROW_STEP: u64 = 1 << 20;
/// /proc/sys/kernel/random/boot_id without its newline, in words.
pub const BOOT_ID_WORDS: usize = 5;

/// Slot states.
pub const EMPTY: u32 = 0;
pub const LIVE: u32 = 1;
pub const TOMBSTONE: u32 = 2;

/// Record flags: the payload follows the body.
pub const PAYLOAD_HERE: u32 = 1;
/// The payload is inline but too large for the record: ask the helper.
pub const PAYLOAD_ELSEWHERE: u32 = 2;
/// The description did not fit the record: ask the helper.
pub const META_ELSEWHERE: u32 = 4;

/// Phases of a change, in `Intent::phase`.
pub const IDLE: u32 = 0;
/// A block may be taken from the allocator and written; nothing links it.
pub const PLANNED: u32 = 1;
/// The slot is being changed to what the intent says.
pub const PUBLISHING: u32 = 2;
/// The slot is changed; the old record's block goes back to its free list.
pub const FREEING: u32 = 3;

/// Change kinds, in `Intent::op`.
pub const OP_PUT: u32 = 1;
pub const OP_REMOVE: u32 = 2;

/// `size_of::<pthread_mutex_t>()`, as recorded in the header.
#[allow(
    clippy::cast_possible_truncation,
    reason = "a pthread_mutex_t is a few dozen bytes"
)]
pub const MUTEX_SIZE: u32 = std::mem::size_of::<libc::pthread_mutex_t>() as u32;

/// What a writer is doing, written before it changes anything, so that
/// the next writer can finish or undo the change of one that died (see
/// the module's header).
#[repr(C)]
pub struct Intent {
    pub phase: AtomicU32,
    pub op: AtomicU32,
    pub slot: AtomicU32,
    /// The block class of the new record, and of the old one.
    pub class: AtomicU32,
    pub old_class: AtomicU32,
    /// 1 when the slot held the key before (the change replaces it).
    pub held: AtomicU32,
    /// The slot's state before the change.
    pub was: AtomicU32,
    pub kind: AtomicU32,
    pub hash: AtomicU64,
    /// The allocator before the new block was taken: the first free block
    /// of `class` and the top of the arena.
    pub saved_free: AtomicU64,
    pub saved_top: AtomicU64,
    /// The next free block after `saved_free` (the first word of that
    /// block, which the new record overwrites).
    pub saved_next: AtomicU64,
    pub new_rec: AtomicU64,
    pub old_rec: AtomicU64,
    pub version: AtomicU64,
    pub size: AtomicU64,
    pub ctime_ns: AtomicI64,
    pub checksum: AtomicU64,
}

/// The first page of the file.
#[repr(C, align(64))]
pub struct Header {
    /// `MAGIC`, as the native-endian word of its 8 bytes.
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub slot_count: AtomicU32,
    /// Where slot 0 starts (`HEADER_SIZE`).
    pub slots_offset: AtomicU64,
    /// Where the arena starts: after the slots, page aligned.
    pub arena_offset: AtomicU64,
    /// Bytes of the arena (the file ends there).
    pub arena_len: AtomicU64,
    /// The boot id of the boot that made the file, zero padded.
    pub boot_id: [AtomicU64; BOOT_ID_WORDS],
    /// Nonzero once the helper closed the index: readers open the store's
    /// index again (or ask the helper, when there is none).
    pub closed: AtomicU32,
    /// Bumped after every change (a futex word for waits).
    pub changes: AtomicU32,
    /// The writer's bookkeeping, read by nobody else.
    /// Arena bytes handed out so far (the bump pointer).
    pub arena_top: AtomicU64,
    /// Arena bytes reserved with fallocate.
    pub arena_ready: AtomicU64,
    /// LIVE slots.
    pub live: AtomicU64,
    /// LIVE and TOMBSTONE slots.
    pub used: AtomicU64,
    /// Per block class, the first free block (arena offset + 1; 0: none).
    pub free: [AtomicU64; CLASSES],
    /// `MUTEX_SIZE` of the process that made the file.
    pub mutex_size: AtomicU32,
    /// Odd while the writer applies a change of several objects (a batch):
    /// readers wait for it to be even, so they see all of it or none.
    pub batch: AtomicU32,
    /// The change in progress (phase IDLE: none).
    pub intent: Intent,
    /// Held by the writer for each change: robust, process-shared.
    pub lock: PMutex,
}

/// One object: the fixed fields a reader needs, and where its record is.
#[repr(C, align(64))]
pub struct Slot {
    /// Even when the slot is stable, odd while the writer changes it.
    pub seq: AtomicU64,
    /// `key_hash` of the key.
    pub hash: AtomicU64,
    /// EMPTY, LIVE or TOMBSTONE.
    pub state: AtomicU32,
    /// The payload kind (`object_file::KIND_*`).
    pub kind: AtomicU32,
    pub version: AtomicU64,
    /// Payload bytes.
    pub size: AtomicU64,
    pub ctime_ns: AtomicI64,
    /// xxh3 of an inline payload (0 for an object file).
    pub checksum: AtomicU64,
    /// Arena offset of the record.
    pub rec: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_SIZE);

/// What a record holds besides its payload: the key, the object file (if
/// the payload is not inline) and the sender's description.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct Body {
    pub namespace: String,
    pub tag: String,
    /// The object file's id; None: the payload follows the body.
    pub file: Option<String>,
    pub meta: Meta,
}

/// What the sender said about an object, as the index keeps it.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct Meta {
    pub class: Vec<String>,
    pub rtype: String,
    pub length: u64,
    pub dim: Vec<u64>,
    pub description: Option<String>,
}

/// The hash of a key.
pub fn key_hash(namespace: &str, tag: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&namespace.len().to_le_bytes());
    h.update(namespace.as_bytes());
    h.update(tag.as_bytes());
    h.digest()
}

/// The block class holding `bytes` (None: larger than every class).
pub fn class_of(bytes: u64) -> Option<usize> {
    (0..CLASSES).find(|&c| block_size(c) >= bytes)
}

/// Class 2k is 64 << k bytes, class 2k + 1 is 96 << k.
pub fn block_size(class: usize) -> u64 {
    let base = if class.is_multiple_of(2) { MIN_BLOCK } else { 96 };
    base << (class / 2)
}

/// Bytes of a file with `slots` slots and an arena of `arena` bytes.
pub fn file_len(slots: u32, arena: u64) -> u64 {
    arena_offset(slots) + arena
}

pub fn arena_offset(slots: u32) -> u64 {
    let end = HEADER_SIZE as u64 + u64::from(slots) * SLOT_SIZE as u64;
    end.div_ceil(PAGE as u64) * PAGE as u64
}

/// The boot id as words.
pub fn boot_words(boot: &[u8; 36]) -> [u64; BOOT_ID_WORDS] {
    let mut w = [0u64; BOOT_ID_WORDS];
    for (i, chunk) in boot.chunks(8).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        w[i] = u64::from_ne_bytes(b);
    }
    w
}
