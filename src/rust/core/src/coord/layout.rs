//! The file format of the coordination region (see the module's header for
//! the prose): the header, the bitmap of touched slots and the slots, as
//! `#[repr(C)]` types laid over the mapping, and the packed form of a key.
//!
//! Every field is an atomic or a `PMutex`, so a shared reference to a
//! header or a slot is always sound, whatever another process writes.

use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU32, AtomicU64, Ordering};

use super::mutex::PMutex;
use crate::key::{MAX_NAMESPACE_BYTES, MAX_TAG_BYTES};

/// The first 8 bytes of the file.
pub const MAGIC: [u8; 8] = *b"YAPLRCO1";
/// The layout version: bumped whenever a field moves or changes meaning.
pub const VERSION: u32 = 1;
pub const PAGE: usize = 4096;
/// The header takes the first page.
pub const HEADER_SIZE: usize = PAGE;
/// Bytes per slot: 8 slots take 3 pages.
pub const SLOT_SIZE: usize = 1536;
/// The slot count of `Region::create`.
pub const DEFAULT_SLOTS: u32 = 65_536;
/// The most slots a file may declare (6 GiB of address space).
pub const MAX_SLOTS: u32 = 1 << 22;
/// The longest key: a namespace and a name, back to back.
pub const KEY_BYTES: usize = MAX_NAMESPACE_BYTES + MAX_TAG_BYTES;
/// The key bytes are kept in 64-bit words (native endian).
pub const KEY_WORDS: usize = KEY_BYTES / 8;
/// /proc/sys/kernel/random/boot_id without its newline.
pub const BOOT_ID_LEN: usize = 36;
const BOOT_ID_WORDS: usize = BOOT_ID_LEN.div_ceil(8);

/// Slot states.
pub const FREE: u32 = 0;
pub const WRITING: u32 = 1;
pub const LIVE: u32 = 2;
pub const TOMBSTONE: u32 = 3;

/// `Slot::mutex_ready` once the slot's mutex is initialized ("YCM" + 1).
pub const MUTEX_READY: u32 = 0x5943_4d01;

/// The first page of the file.
#[repr(C, align(64))]
pub struct Header {
    /// `MAGIC`, as the native-endian word of its 8 bytes.
    pub magic: AtomicU64,
    pub version: AtomicU32,
    pub slot_count: AtomicU32,
    /// `SLOT_SIZE`.
    pub slot_size: AtomicU32,
    /// `size_of::<pthread_mutex_t>()` of the process that made the file: a
    /// process with another C library or word size must not use it.
    pub mutex_size: AtomicU32,
    /// Where slot 0 starts: after the header and the bitmap.
    pub slots_offset: AtomicU64,
    /// The boot id of the boot that initialized the mutexes, zero padded.
    pub boot_id: [AtomicU64; BOOT_ID_WORDS],
    /// Nonzero once the helper closed the region (before unlinking it).
    pub closed: AtomicU32,
    pub reserved: AtomicU32,
    /// Taken by `insert`, `free` and the repair of a dead inserter's slot.
    pub table: PMutex,
}

/// One counter or lock. The hot fields come first; the key bytes last.
#[repr(C, align(64))]
pub struct Slot {
    /// The slot mutex: counters take it for each operation, a lock is
    /// held by holding it. Initialized on first use (see `mutex_ready`).
    pub mutex: PMutex,
    /// FREE, WRITING, LIVE or TOMBSTONE.
    pub state: AtomicU32,
    /// `Kind` as its number.
    pub kind: AtomicU32,
    /// Bumped whenever the slot is claimed or freed.
    pub incarnation: AtomicU64,
    /// `key_hash` of the key.
    pub hash: AtomicU64,
    /// A counter's value.
    pub value: AtomicI64,
    /// When the holder got the lock, ns since the epoch (0: not held).
    pub since_ns: AtomicI64,
    /// The pid of the lock's holder (0: not held).
    pub owner_pid: AtomicU32,
    /// The holder's thread id: only that thread can release it.
    pub owner_tid: AtomicU32,
    /// `MUTEX_READY` once `mutex` is initialized.
    pub mutex_ready: AtomicU32,
    pub ns_len: AtomicU16,
    pub name_len: AtomicU16,
    /// The namespace's bytes then the name's, zero padded to a word.
    pub key: [AtomicU64; KEY_WORDS],
}

const _: () = assert!(KEY_BYTES.is_multiple_of(8));
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_SIZE);
const _: () = assert!(std::mem::size_of::<Slot>() <= SLOT_SIZE);
const _: () = assert!(SLOT_SIZE.is_multiple_of(std::mem::align_of::<Slot>()));
const _: () = assert!(HEADER_SIZE.is_multiple_of(std::mem::align_of::<Slot>()));
const _: () = assert!(MAX_NAMESPACE_BYTES <= u16::MAX as usize);
const _: () = assert!(MAX_TAG_BYTES <= u16::MAX as usize);

/// `size_of::<pthread_mutex_t>()`, as recorded in the header.
#[allow(
    clippy::cast_possible_truncation,
    reason = "a pthread_mutex_t is a few dozen bytes"
)]
pub const MUTEX_SIZE: u32 = std::mem::size_of::<libc::pthread_mutex_t>() as u32;

/// Bytes of the bitmap of touched slots (one bit per slot), in whole pages.
pub fn bitmap_bytes(slots: u32) -> usize {
    let words = bitmap_words(slots);
    (words * 8).div_ceil(PAGE) * PAGE
}

/// 64-bit words of the bitmap.
pub fn bitmap_words(slots: u32) -> usize {
    usize_of(slots).div_ceil(64)
}

/// Where slot 0 starts.
pub fn slots_offset(slots: u32) -> usize {
    HEADER_SIZE + bitmap_bytes(slots)
}

/// The length of a file of `slots` slots (at most ~6 GiB: fits a 64-bit
/// usize).
pub fn file_len(slots: u32) -> usize {
    slots_offset(slots) + usize_of(slots) * SLOT_SIZE
}

/// A slot number as an index (usize holds any u32 on the 64-bit systems
/// yaplr runs on).
pub fn usize_of(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// This boot's id, or zeros when it can not be read (then every start of
/// the helper re-initializes the region: nothing can tell whether its
/// mutexes come from this boot).
pub fn boot_id() -> [u8; BOOT_ID_LEN] {
    let mut id = [0u8; BOOT_ID_LEN];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let s = s.trim().as_bytes();
        if s.len() == BOOT_ID_LEN {
            id.copy_from_slice(s);
        }
    }
    id
}

/// Bytes as native-endian words, zero padded.
fn to_words<const W: usize>(parts: &[&[u8]]) -> [u64; W] {
    let mut words = [0u64; W];
    let mut at = 0usize;
    for part in parts {
        for &b in *part {
            if let Some(w) = words.get_mut(at / 8) {
                let mut bytes = w.to_ne_bytes();
                bytes[at % 8] = b;
                *w = u64::from_ne_bytes(bytes);
            }
            at += 1;
        }
    }
    words
}

impl Header {
    pub fn store_boot_id(&self, id: &[u8; BOOT_ID_LEN]) {
        let words: [u64; BOOT_ID_WORDS] = to_words(&[id]);
        for (cell, w) in self.boot_id.iter().zip(words) {
            cell.store(w, Ordering::Relaxed);
        }
    }

    pub fn has_boot_id(&self, id: &[u8; BOOT_ID_LEN]) -> bool {
        let words: [u64; BOOT_ID_WORDS] = to_words(&[id]);
        self.boot_id
            .iter()
            .zip(words)
            .all(|(cell, w)| cell.load(Ordering::Relaxed) == w)
    }
}

/// A key packed as the slots hold it: what lookups compare, without
/// allocating.
pub struct PackedKey {
    pub kind: u32,
    pub hash: u64,
    pub ns_len: u16,
    pub name_len: u16,
    pub words: [u64; KEY_WORDS],
}

impl PackedKey {
    /// None when the namespace or the name is too long for a slot.
    pub fn new(kind: u32, namespace: &str, name: &str) -> Option<PackedKey> {
        let ns_len = u16::try_from(namespace.len()).ok()?;
        let name_len = u16::try_from(name.len()).ok()?;
        if namespace.len() > MAX_NAMESPACE_BYTES || name.len() > MAX_TAG_BYTES {
            return None;
        }
        Some(PackedKey {
            kind,
            hash: key_hash(kind, namespace, name),
            ns_len,
            name_len,
            words: to_words(&[namespace.as_bytes(), name.as_bytes()]),
        })
    }

    /// How many words the key's bytes take.
    pub fn used_words(&self) -> usize {
        (usize::from(self.ns_len) + usize::from(self.name_len)).div_ceil(8)
    }
}

/// xxh3 of the kind, the namespace's length, the namespace and the name:
/// where a key's probe starts, and a quick filter before its bytes are
/// compared.
pub fn key_hash(kind: u32, namespace: &str, name: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&kind.to_le_bytes());
    h.update(&namespace.len().to_le_bytes());
    h.update(namespace.as_bytes());
    h.update(name.as_bytes());
    h.digest()
}

impl Slot {
    /// Write a key (the slot must be WRITING, under the table mutex).
    pub fn store_key(&self, key: &PackedKey) {
        self.kind.store(key.kind, Ordering::Relaxed);
        self.hash.store(key.hash, Ordering::Relaxed);
        self.ns_len.store(key.ns_len, Ordering::Relaxed);
        self.name_len.store(key.name_len, Ordering::Relaxed);
        let n = key.used_words();
        for (cell, w) in self.key.iter().zip(key.words).take(n) {
            cell.store(w, Ordering::Relaxed);
        }
    }

    /// Whether the slot holds `key` (its fields as read now: the caller
    /// checks the incarnation around this).
    pub fn holds(&self, key: &PackedKey) -> bool {
        self.kind.load(Ordering::Relaxed) == key.kind
            && self.hash.load(Ordering::Relaxed) == key.hash
            && self.ns_len.load(Ordering::Relaxed) == key.ns_len
            && self.name_len.load(Ordering::Relaxed) == key.name_len
            && self
                .key
                .iter()
                .zip(key.words)
                .take(key.used_words())
                .all(|(cell, w)| cell.load(Ordering::Relaxed) == w)
    }

    /// The namespace and the name, as read now (the caller checks the
    /// incarnation around this). None when the lengths are impossible.
    pub fn read_key(&self) -> Option<(String, String)> {
        let ns_len = usize::from(self.ns_len.load(Ordering::Relaxed));
        let name_len = usize::from(self.name_len.load(Ordering::Relaxed));
        if ns_len > MAX_NAMESPACE_BYTES || name_len > MAX_TAG_BYTES {
            return None;
        }
        let mut bytes = Vec::with_capacity(ns_len + name_len + 8);
        for cell in self.key.iter().take((ns_len + name_len).div_ceil(8)) {
            bytes.extend_from_slice(&cell.load(Ordering::Relaxed).to_ne_bytes());
        }
        let ns = bytes.get(..ns_len)?;
        let name = bytes.get(ns_len..ns_len + name_len)?;
        Some((
            String::from_utf8_lossy(ns).into_owned(),
            String::from_utf8_lossy(name).into_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_fit() {
        assert_eq!(bitmap_words(65_536), 1024);
        assert_eq!(bitmap_bytes(65_536), 8192);
        assert_eq!(bitmap_bytes(1), PAGE);
        assert_eq!(slots_offset(65_536), 12_288);
        assert_eq!(file_len(65_536), 12_288 + 65_536 * 1536);
        assert_eq!(file_len(MAX_SLOTS), 4096 + (1 << 19) + (1 << 22) * 1536);
    }

    /// The offsets the module header documents (x86_64 and aarch64 with
    /// glibc: a pthread_mutex_t of 40 or 48 bytes).
    #[test]
    fn documented_offsets() {
        use std::mem::offset_of;
        let m = std::mem::size_of::<libc::pthread_mutex_t>();
        assert_eq!(offset_of!(Header, magic), 0);
        assert_eq!(offset_of!(Header, version), 8);
        assert_eq!(offset_of!(Header, slot_count), 12);
        assert_eq!(offset_of!(Header, slot_size), 16);
        assert_eq!(offset_of!(Header, mutex_size), 20);
        assert_eq!(offset_of!(Header, slots_offset), 24);
        assert_eq!(offset_of!(Header, boot_id), 32);
        assert_eq!(offset_of!(Header, closed), 72);
        assert_eq!(offset_of!(Header, table), 80);
        assert_eq!(offset_of!(Slot, mutex), 0);
        assert_eq!(offset_of!(Slot, state), m);
        assert_eq!(offset_of!(Slot, kind), m + 4);
        assert_eq!(offset_of!(Slot, incarnation), m + 8);
        assert_eq!(offset_of!(Slot, hash), m + 16);
        assert_eq!(offset_of!(Slot, value), m + 24);
        assert_eq!(offset_of!(Slot, since_ns), m + 32);
        assert_eq!(offset_of!(Slot, owner_pid), m + 40);
        assert_eq!(offset_of!(Slot, owner_tid), m + 44);
        assert_eq!(offset_of!(Slot, mutex_ready), m + 48);
        assert_eq!(offset_of!(Slot, ns_len), m + 52);
        assert_eq!(offset_of!(Slot, name_len), m + 54);
        assert_eq!(offset_of!(Slot, key), m + 56);
        assert!(m + 56 + KEY_BYTES <= SLOT_SIZE);
    }

    #[test]
    fn keys_pack_and_compare() {
        let a = PackedKey::new(1, "ns", "name").unwrap();
        assert_eq!(a.used_words(), 1);
        let long_ns = "n".repeat(MAX_NAMESPACE_BYTES);
        let long = "x".repeat(MAX_TAG_BYTES);
        let b = PackedKey::new(2, &long_ns, &long).unwrap();
        assert_eq!(b.used_words(), KEY_WORDS);
        assert!(PackedKey::new(1, &long_ns, &format!("{long}x")).is_none());
        assert!(PackedKey::new(1, &format!("{long_ns}n"), "a").is_none());
        // The kind and the split between namespace and name count.
        assert_ne!(key_hash(1, "ab", "c"), key_hash(1, "a", "bc"));
        assert_ne!(key_hash(1, "a", "b"), key_hash(2, "a", "b"));
        let words: [u64; 2] = to_words(&[b"abc", b"defghi"]);
        assert_eq!(words[0].to_ne_bytes(), *b"abcdefgh");
        assert_eq!(words[1].to_ne_bytes(), *b"i\0\0\0\0\0\0\0");
    }

    #[test]
    fn this_boot_has_an_id() {
        let id = boot_id();
        if std::path::Path::new("/proc/sys/kernel/random/boot_id").exists() {
            assert_ne!(id, [0u8; BOOT_ID_LEN]);
            assert_eq!(id[8], b'-');
        }
    }
}
