//! Byte and time helpers shared by the on-disk formats (object files, the
//! journal, dumps): checksums, little-endian fields, the wall clock.
//! Uses nothing in the crate but the error type.

use crate::error::{Error, Result};

/// The streaming form of `checksum`, for payloads read or written in parts.
pub use xxhash_rust::xxh3::Xxh3 as Hasher;

/// The checksum of payloads (xxh3, 64 bits), at memory speed.
pub fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Check a payload against the checksum recorded when it was written (0:
/// none was recorded).
pub fn verify(bytes: &[u8], sum: u64, tag: &str) -> Result<()> {
    if sum != 0 && checksum(bytes) != sum {
        return Err(Error::corrupt(format!(
            "the stored object \"{tag}\" could not be read back: its data is damaged \
                 (its checksum does not match what was written)"
        )));
    }
    Ok(())
}

/// FNV-1a, 64 bits: the checksum of object headers, and of the records of
/// old journal and dump formats.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The `N` bytes at `at` in `b`. Panics, like indexing, when `b` is too
/// short: callers check lengths first.
fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// The little-endian u32 at `at` in `b` (panics when `b` is too short).
pub fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array_at(b, at))
}

/// The little-endian u64 at `at` in `b` (panics when `b` is too short).
pub fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array_at(b, at))
}

/// The little-endian i64 at `at` in `b` (panics when `b` is too short).
pub fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(array_at(b, at))
}

/// Write `v` little endian at `at` in `b` (panics when `b` is too short).
pub fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Write `v` little endian at `at` in `b` (panics when `b` is too short).
pub fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Write `v` little endian at `at` in `b` (panics when `b` is too short).
pub fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// How many of `left` more bytes to handle at once with a buffer of `cap`
/// bytes: the smaller of the two (sizes a copy buffer, or the next chunk).
pub fn chunk(left: u64, cap: usize) -> usize {
    usize::try_from(left).map_or(cap, |n| n.min(cap))
}

/// Nanoseconds since the Unix epoch on the wall clock (0 when the clock is
/// set before 1970). The low 64 bits, as an i64: a wrapped value after the
/// year 2262 rather than a failure.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| low_i64(d.as_nanos()))
        .unwrap_or(0)
}

/// The low 64 bits of `n`, as an i64 (what `n as i64` gives).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "keeping the low 64 bits is the intent"
)]
fn low_i64(n: u128) -> i64 {
    n as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut b = [0u8; 24];
        put_u32(&mut b, 0, 0xdead_beef);
        put_u64(&mut b, 4, u64::MAX - 1);
        put_i64(&mut b, 12, -2);
        assert_eq!(u32_at(&b, 0), 0xdead_beef);
        assert_eq!(u64_at(&b, 4), u64::MAX - 1);
        assert_eq!(i64_at(&b, 12), -2);
        assert_eq!(&b[0..4], &0xdead_beef_u32.to_le_bytes());
    }

    #[test]
    fn checksums_are_the_documented_ones() {
        // FNV-1a 64 of "a" (a published test vector).
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        let mut h = Hasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.digest(), checksum(b"hello world"));
        assert!(verify(b"x", 0, "t").is_ok());
        assert!(verify(b"x", checksum(b"x"), "t").is_ok());
        assert_eq!(verify(b"x", 1, "t").unwrap_err().kind(), "corrupt");
    }

    #[test]
    fn chunks_are_bounded_by_both() {
        assert_eq!(chunk(10, 4), 4);
        assert_eq!(chunk(3, 4), 3);
        assert_eq!(chunk(0, 4), 0);
        assert_eq!(chunk(u64::MAX, 8 << 20), 8 << 20);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ns() > 1_577_836_800_000_000_000);
        assert_eq!(low_i64((1u128 << 64) + 5), 5);
        assert_eq!(low_i64(u128::from(u64::MAX)), -1);
    }
}
