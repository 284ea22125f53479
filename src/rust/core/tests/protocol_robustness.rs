//! Robustness of the control protocol.
//!
//! Part 1 fuzzes the frame decoder (`frame_len`, `decode`, `encode`) with
//! random bytes, mutated valid frames and structured round trips, counting
//! the allocations each decode makes.
//!
//! Part 2 starts a real yaplrd per test (own temporary store, quit at the
//! end) and talks to it through raw sockets like a broken or hostile client
//! would, checking that the helper drops such connections and keeps serving
//! everybody else.
//!
//! Only the public API of yaplr-core is used; matches on the message enums
//! have wildcard arms so that new messages do not break these tests. The
//! code that names message fields is gathered in the "Structured messages"
//! section and the put/get helpers of part 2: a change of a message's
//! fields is adapted there.
//!
//! Three tests reproduce helper bugs this suite found (large List answers,
//! a failed thread spawn, EMFILE during Lookup); they guard the fixes.
//! The test of the peer uid check runs only as root (else it is skipped).
//!
//! Environment: YAPLR_FUZZ_SEED (u64) changes the fuzz seed, YAPLR_FUZZ_SCALE
//! (a float, default 1) multiplies the number of fuzz cases.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use yaplr_core::client::{CallOptions, Client, Found};
use yaplr_core::key::{DEFAULT_NAMESPACE, MAX_TAG_BYTES};
use yaplr_core::object_file::{ObjectMap, ObjectWriter, KIND_R_SERIALIZED};
use yaplr_core::protocol::{
    decode, encode, frame_len, Call, DecodeError, Entry, Hello, Meta, Response, ServerInfo,
    INLINE_MAX, MAX_FRAME, PROTOCOL_VERSION,
};
use yaplr_core::requests::{
    exists, info, list, lookup, ping, publish, put_inline, quit, remove, remove_namespace, Request,
};
use yaplr_core::store::Store;
use yaplr_core::sys;

// ---------------------------------------------------------------------------
// Allocation accounting: per thread, only while `measured` runs, so the
// live tests running in parallel threads do not disturb the numbers.

struct CountingAlloc;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            let _ = TOTAL.try_with(|s| s.set(s.get().saturating_add(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only const-initialised thread locals without
// destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: our caller upholds alloc's contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        // SAFETY: our caller upholds alloc_zeroed's contract, passed on
        // unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System through the calls above, with
        // this layout, as our caller guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size);
        // SAFETY: as for dealloc; our caller upholds realloc's contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Run `f`, returning its result, the largest single allocation it asked for
/// and the sum of all its allocations (bytes).
fn measured<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(|l| l.get()), TOTAL.with(|t| t.get()))
}

// ---------------------------------------------------------------------------
// Deterministic pseudo-random numbers (xorshift64*).

struct Rng(u64);

fn low32(x: u64) -> u32 {
    u32::try_from(x & 0xffff_ffff).unwrap()
}

fn max_frame_u32() -> u32 {
    u32::try_from(MAX_FRAME).unwrap()
}

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }
    /// A number below `n` (at most 256) as a byte.
    fn byte_below(&mut self, n: usize) -> u8 {
        u8::try_from(self.below(n)).unwrap()
    }
    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
    /// The low 32 bits of `next()`.
    fn next_u32(&mut self) -> u32 {
        low32(self.next())
    }
    /// The low 32 bits of `int()`.
    fn int_u32(&mut self) -> u32 {
        low32(self.int())
    }
    /// The bits of `int()` as an i64.
    fn int_i64(&mut self) -> i64 {
        i64::from_le_bytes(self.int().to_le_bytes())
    }
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let x = self.next().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
    /// Integers biased towards the edges of bincode's varint encoding.
    fn int(&mut self) -> u64 {
        const EDGES: [u64; 14] = [
            0,
            1,
            250,
            251,
            252,
            255,
            256,
            65_535,
            65_536,
            0xffff_ffff,
            0x1_0000_0000,
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
        ];
        match self.below(4) {
            0 => EDGES[self.below(EDGES.len())],
            1 => self.below(300) as u64,
            _ => self.next() >> self.below(64),
        }
    }
    fn string(&mut self) -> String {
        const PIECES: [&str; 10] = [
            "a",
            "tag",
            "\u{e9}t\u{e9}",
            "\u{1f980}",
            "\u{4e2d}\u{6587}",
            "\0",
            " ",
            "/",
            "..",
            "\u{fffd}",
        ];
        let n = match self.below(20) {
            0 => 0,
            1 => 200 + self.below(1200),
            _ => self.below(12),
        };
        let mut s = String::new();
        for _ in 0..n {
            if self.one_in(3) {
                s.push_str(PIECES[self.below(PIECES.len())]);
            } else {
                s.push(char::from(b'a' + self.byte_below(26)));
            }
        }
        s
    }
}

fn seed() -> u64 {
    std::env::var("YAPLR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd_0001)
}

/// The number of cases for a fuzz test, scaled by YAPLR_FUZZ_SCALE. Debug
/// builds run the full count too: the 1,000,000 decoder cases take about
/// 10 s of CPU in debug and under 2 s in release.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a scaled count, for which the saturating `as` is right"
)]
fn cases(release_count: usize) -> usize {
    let scale: f64 = std::env::var("YAPLR_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((release_count as f64) * scale).max(1.0) as usize
}

// ---------------------------------------------------------------------------
// Structured messages. Everything that names the fields of the messages is
// in this section, so that a change of the protocol is adapted here.

const D: &str = DEFAULT_NAMESPACE;
const SOME_ID: &str = "0123456789abcdef0123456789abcdef";

fn entry(namespace: &str, tag: &str) -> Entry {
    Entry {
        namespace: namespace.into(),
        tag: tag.into(),
        size: 1,
        ctime_ns: 1,
        kind: KIND_R_SERIALIZED,
        meta: Default::default(),
        version: 1,
        inline: false,
        checksum: 0,
    }
}

fn publish_req(tag: &str, id: &str) -> Request {
    Request::Publish(publish::Publish {
        namespace: D.into(),
        tag: tag.into(),
        id: id.into(),
        meta: Default::default(),
        condition: Default::default(),
    })
}

fn lookup_req(tag: &str) -> Request {
    Request::Lookup(lookup::Lookup {
        namespace: D.into(),
        tag: tag.into(),
    })
}

/// A Quit that would remove the store.
fn quit_req() -> Request {
    Request::Quit(quit::Quit { keep: false })
}

/// Ask a helper to quit (removing the store) and wait until it is gone.
fn quit_helper(c: &mut Client, opts: &CallOptions<'_>) -> yaplr_core::Result<bool> {
    c.quit(false, opts)
}

fn exists_req(tag: &str) -> Request {
    Request::Exists(exists::Exists {
        namespace: D.into(),
        tag: tag.into(),
    })
}

/// One request of every kind that changes or reads the store (not Hello,
/// Ping or Quit), about `tag`.
fn store_requests(tag: &str) -> Vec<Request> {
    vec![
        publish_req(tag, SOME_ID),
        Request::PutInline(put_inline::PutInline {
            namespace: D.into(),
            tag: tag.into(),
            kind: KIND_R_SERIALIZED,
            ctime_ns: 1,
            bytes: b"inline".to_vec(),
            meta: Default::default(),
            condition: Default::default(),
        }),
        lookup_req(tag),
        Request::Remove(remove::Remove {
            namespace: D.into(),
            tag: tag.into(),
        }),
        exists_req(tag),
        Request::List(list::List { namespace: None }),
        Request::RemoveNamespace(remove_namespace::RemoveNamespace {
            namespace: D.into(),
        }),
        Request::Info(info::Info),
    ]
}

/// Requests that carry the longest valid tag (and payload).
fn largest_requests() -> Vec<Request> {
    let tag = "\u{e9}".repeat(MAX_TAG_BYTES / 2);
    let mut v = store_requests(&tag);
    v.push(Request::PutInline(put_inline::PutInline {
        namespace: D.into(),
        tag,
        kind: KIND_R_SERIALIZED,
        ctime_ns: i64::MIN,
        bytes: vec![0xff; INLINE_MAX],
        meta: Meta {
            class: vec!["data.frame".into(); 8],
            rtype: "list".into(),
            length: u64::MAX,
            dim: vec![u64::MAX; 8],
            description: Some("d".repeat(1024)),
        },
        condition: Default::default(),
    }));
    v
}

fn random_meta(r: &mut Rng) -> Meta {
    if r.one_in(2) {
        return Meta::default();
    }
    Meta {
        class: (0..r.below(4)).map(|_| r.string()).collect(),
        rtype: r.string(),
        length: r.int(),
        dim: (0..r.below(4)).map(|_| r.int()).collect(),
        description: if r.one_in(2) { None } else { Some(r.string()) },
    }
}

fn random_entry(r: &mut Rng) -> Entry {
    Entry {
        namespace: r.string(),
        tag: r.string(),
        size: r.int(),
        ctime_ns: r.int_i64(),
        kind: r.int_u32(),
        meta: random_meta(r),
        version: r.int(),
        inline: r.one_in(2),
        checksum: r.int(),
    }
}

fn random_request(r: &mut Rng) -> Request {
    match r.below(11) {
        0 => Request::Hello(Hello {
            version: if r.one_in(2) {
                PROTOCOL_VERSION
            } else {
                r.int_u32()
            },
            pid: r.int_u32(),
            client: r.int(),
        }),
        1 => Request::Publish(publish::Publish {
            namespace: r.string(),
            tag: r.string(),
            id: r.string(),
            meta: random_meta(r),
            condition: Default::default(),
        }),
        2 => Request::PutInline(put_inline::PutInline {
            namespace: r.string(),
            tag: r.string(),
            kind: r.int_u32(),
            ctime_ns: r.int_i64(),
            bytes: {
                let n = if r.one_in(100) {
                    r.below(70_000)
                } else {
                    r.below(40)
                };
                r.bytes(n)
            },
            meta: random_meta(r),
            condition: Default::default(),
        }),
        3 => Request::Lookup(lookup::Lookup {
            namespace: r.string(),
            tag: r.string(),
        }),
        4 => Request::Remove(remove::Remove {
            namespace: r.string(),
            tag: r.string(),
        }),
        5 => Request::Exists(exists::Exists {
            namespace: r.string(),
            tag: r.string(),
        }),
        6 => Request::List(list::List {
            namespace: if r.one_in(2) { None } else { Some(r.string()) },
        }),
        7 => Request::RemoveNamespace(remove_namespace::RemoveNamespace {
            namespace: r.string(),
        }),
        8 => Request::Info(info::Info),
        9 => Request::Ping(ping::Ping),
        _ => Request::Quit(quit::Quit { keep: r.one_in(2) }),
    }
}

fn random_response(r: &mut Rng) -> Response {
    match r.below(11) {
        0 => Response::Hello {
            version: r.int_u32(),
            pid: r.int_u32(),
        },
        1 => Response::Ok,
        2 => Response::Found(random_entry(r)),
        3 => Response::FoundInline {
            entry: random_entry(r),
            bytes: {
                let n = if r.one_in(100) {
                    r.below(70_000)
                } else {
                    r.below(40)
                };
                r.bytes(n)
            },
        },
        4 => Response::Bool(r.one_in(2)),
        5 => Response::Count(r.int()),
        6 => {
            let n = if r.one_in(50) { 300 } else { r.below(6) };
            Response::List((0..n).map(|_| random_entry(r)).collect())
        }
        7 => Response::Info(ServerInfo {
            pid: r.int_u32(),
            dir: r.string(),
            objects: r.int(),
            bytes: r.int(),
            capacity: if r.one_in(2) { None } else { Some(r.int()) },
            free: r.int(),
            started_ns: r.int_i64(),
            version: r.string(),
        }),
        8 => Response::Pong,
        9 => Response::Refused {
            kind: r.string(),
            message: r.string(),
        },
        _ => Response::Failed(yaplr_core::protocol::Failure::Server(r.string())),
    }
}

/// The two message types, behind one interface that does not name bincode.
trait Msg: Sized + PartialEq + std::fmt::Debug {
    const NAME: &'static str;
    fn dec(payload: &[u8]) -> Result<Self, DecodeError>;
    fn enc(&self) -> Vec<u8>;
}

impl Msg for Request {
    const NAME: &'static str = "Request";
    fn dec(payload: &[u8]) -> Result<Self, DecodeError> {
        decode::<Request>(payload)
    }
    fn enc(&self) -> Vec<u8> {
        encode(self)
    }
}

impl Msg for Response {
    const NAME: &'static str = "Response";
    fn dec(payload: &[u8]) -> Result<Self, DecodeError> {
        decode::<Response>(payload)
    }
    fn enc(&self) -> Vec<u8> {
        encode(self)
    }
}

fn prefix_of(frame: &[u8]) -> [u8; 4] {
    [frame[0], frame[1], frame[2], frame[3]]
}

#[derive(Default, Debug)]
struct Stats {
    cases: usize,
    decodes: usize,
    decoded_ok: usize,
    too_long: usize,
    incomplete: usize,
    largest_alloc: usize,
    largest_total: usize,
}

/// Decode `payload` as a `T`: no panic (a panic fails the test), bounded
/// allocations, and anything accepted re-encodes to a frame that decodes to
/// the same value and is no longer than the input (the encoding is canonical).
fn check_decode<T: Msg>(payload: &[u8], st: &mut Stats, what: &dyn Fn() -> String) {
    let (r, largest, total) = measured(|| T::dec(payload));
    st.decodes += 1;
    st.largest_alloc = st.largest_alloc.max(largest);
    st.largest_total = st.largest_total.max(total);
    // bincode's limit bounds what one decode may claim to MAX_FRAME; a Vec
    // of entries claims its capacity and then its strings, so two limits
    // plus some room for the error message is the most one decode may ask.
    assert!(
        largest <= MAX_FRAME && total <= 2 * MAX_FRAME + 65_536,
        "decoding {} allocated {largest} bytes at once, {total} in all, for a {}-byte payload ({})",
        T::NAME,
        payload.len(),
        what()
    );
    match r {
        Ok(msg) => {
            st.decoded_ok += 1;
            let f = msg.enc();
            let n = frame_len(prefix_of(&f)).unwrap();
            assert_eq!(n, f.len() - 4);
            assert!(
                n <= payload.len(),
                "re-encoding {msg:?} gave {n} bytes from {} ({})",
                payload.len(),
                what()
            );
            assert_eq!(T::dec(&f[4..]).as_ref(), Ok(&msg), "{}", what());
        }
        Err(DecodeError::Malformed(_)) => {}
        Err(e) => panic!("decode returned {e:?} ({})", what()),
    }
}

fn check_both(payload: &[u8], st: &mut Stats, what: &dyn Fn() -> String) {
    check_decode::<Request>(payload, st, what);
    check_decode::<Response>(payload, st, what);
}

/// Feed bytes as a reader would: the prefix goes through `frame_len`, a
/// complete payload through both decoders; the bytes after the prefix and
/// the whole input are decoded as payloads too.
fn feed(input: &[u8], st: &mut Stats, what: &dyn Fn() -> String) {
    st.cases += 1;
    if input.len() >= 4 {
        let prefix = prefix_of(input);
        let announced = u32::from_le_bytes(prefix) as usize;
        match frame_len(prefix) {
            Ok(n) => {
                assert_eq!(n, announced, "{}", what());
                assert!(n <= MAX_FRAME, "{}", what());
                if input.len() - 4 >= n {
                    check_both(&input[4..4 + n], st, what);
                } else {
                    st.incomplete += 1;
                }
                if input.len() - 4 != n {
                    check_both(&input[4..], st, what);
                }
            }
            Err(DecodeError::TooLong(n)) => {
                assert_eq!(n, announced, "{}", what());
                assert!(n > MAX_FRAME, "{}", what());
                st.too_long += 1;
                check_both(&input[4..], st, what);
            }
            Err(e) => panic!("frame_len returned {e:?} ({})", what()),
        }
    }
    check_both(input, st, what);
}

fn report(name: &str, st: &Stats, t0: Instant) {
    eprintln!(
        "{name}: {} cases, {} decodes ({} accepted), {} too long, {} incomplete, \
         largest allocation {} B, largest per decode {} B, {:.2} s ({})",
        st.cases,
        st.decodes,
        st.decoded_ok,
        st.too_long,
        st.incomplete,
        st.largest_alloc,
        st.largest_total,
        t0.elapsed().as_secs_f64(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}

// ---------------------------------------------------------------------------
// Part 1: the decoder.

#[test]
fn frame_len_refuses_exactly_the_lengths_over_max_frame() {
    let max = max_frame_u32();
    for n in [0, 1, 5, max - 1, max] {
        assert_eq!(frame_len(n.to_le_bytes()), Ok(n as usize));
    }
    for n in [max + 1, max + 2, 2 * max, 1 << 31, u32::MAX - 1, u32::MAX] {
        assert_eq!(
            frame_len(n.to_le_bytes()),
            Err(DecodeError::TooLong(n as usize))
        );
    }
    // Every prefix: only the value matters, and the check allocates nothing.
    let mut r = Rng::new(seed());
    for _ in 0..cases(1_000_000) {
        let n = r.next_u32();
        let (res, largest, _) = measured(|| frame_len(n.to_le_bytes()));
        assert_eq!(largest, 0);
        match res {
            Ok(m) => assert!(m == n as usize && m <= MAX_FRAME),
            Err(DecodeError::TooLong(m)) => assert!(m == n as usize && m > MAX_FRAME),
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn fuzz_random_bytes() {
    let seed = seed() ^ 0x1111;
    let mut r = Rng::new(seed);
    let mut st = Stats::default();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 8192];
    for i in 0..cases(400_000) {
        let len = match r.below(100) {
            0 => 64 + r.below(8128),
            1..=4 => 4 + r.below(12),
            _ => r.below(64),
        };
        r.fill(&mut buf[..len]);
        // Some inputs start with a plausible (small) prefix or a variant
        // tag the decoders know, to get deeper than the first byte.
        if len >= 5 && r.one_in(4) {
            let n = u32::try_from(r.below(len - 3)).unwrap();
            buf[..4].copy_from_slice(&n.to_le_bytes());
            buf[4] = r.byte_below(12);
        } else if len >= 1 && r.one_in(3) {
            buf[0] = r.byte_below(12);
        }
        feed(&buf[..len], &mut st, &|| {
            format!("random case {i}, seed {seed}: {:?}", &buf[..len.min(80)])
        });
    }
    report("fuzz_random_bytes", &st, t0);
}

/// Valid frames of both types to mutate.
fn corpus(r: &mut Rng) -> Vec<Vec<u8>> {
    let mut v = vec![
        encode(&Request::Hello(Hello {
            version: PROTOCOL_VERSION,
            pid: 4242,
            client: 7,
        })),
        encode(&Request::Call(Call {
            seq: 1,
            deadline_ns: 0,
        })),
        encode(&publish_req("tag", SOME_ID)),
        encode(&Request::Ping(ping::Ping)),
        encode(&quit_req()),
        encode(&Response::Pong),
        encode(&Response::List(vec![entry(D, "a"), entry("ns", "\u{e9}")])),
    ];
    for q in store_requests("t") {
        v.push(encode(&q));
    }
    for _ in 0..250 {
        v.push(encode(&random_request(r)));
        v.push(encode(&random_response(r)));
    }
    v
}

fn mutate(r: &mut Rng, frame: &mut Vec<u8>, other: &[u8]) {
    const SPECIAL: [u8; 8] = [0, 1, 0x7f, 0x80, 251, 252, 253, 255];
    for _ in 0..1 + r.below(3) {
        match r.below(9) {
            // Bit flips anywhere, prefix included.
            0 | 1 => {
                for _ in 0..1 + r.below(4) {
                    let i = r.below(frame.len());
                    frame[i] ^= 1 << r.below(8);
                }
            }
            // Truncation.
            2 => {
                let n = r.below(frame.len() + 1);
                frame.truncate(n);
            }
            // Extension with random bytes.
            3 => {
                let n = 1 + r.below(16);
                frame.extend(r.bytes(n));
            }
            // Length field corruption.
            4 if frame.len() >= 4 => {
                let old = u32::from_le_bytes(prefix_of(frame));
                let n: u32 = match r.below(8) {
                    0 => u32::MAX,
                    1 => max_frame_u32() + 1,
                    2 => max_frame_u32(),
                    3 => old.wrapping_add(1),
                    4 => old.wrapping_sub(1),
                    5 => 0,
                    6 => old ^ (1 << r.below(32)),
                    _ => r.next_u32(),
                };
                frame[..4].copy_from_slice(&n.to_le_bytes());
            }
            // A byte set to a value meaningful to varints or enum tags.
            5 => {
                let i = r.below(frame.len());
                frame[i] = SPECIAL[r.below(SPECIAL.len())];
            }
            // Random overwrite of a run of bytes.
            6 => {
                let i = r.below(frame.len());
                let n = (1 + r.below(8)).min(frame.len() - i);
                r.fill(&mut frame[i..i + n]);
            }
            // Splice another frame in.
            7 => {
                let i = r.below(frame.len() + 1);
                let j = r.below(other.len() + 1);
                frame.truncate(i);
                frame.extend_from_slice(&other[j..]);
            }
            // Insert or delete a byte inside the payload.
            _ => {
                let i = r.below(frame.len() + 1);
                if r.one_in(2) && i < frame.len() {
                    frame.remove(i);
                } else {
                    frame.insert(i, r.byte());
                }
            }
        }
        if frame.is_empty() {
            break;
        }
    }
}

#[test]
fn fuzz_mutated_frames() {
    let seed = seed() ^ 0x2222;
    let mut r = Rng::new(seed);
    let corpus = corpus(&mut r);
    let mut st = Stats::default();
    let t0 = Instant::now();
    for i in 0..cases(500_000) {
        let k = r.below(corpus.len());
        let mut f = corpus[k].clone();
        let other = &corpus[r.below(corpus.len())];
        mutate(&mut r, &mut f, other);
        feed(&f, &mut st, &|| {
            format!(
                "mutation case {i}, seed {seed}, of {:?}: {:?}",
                corpus[k],
                &f[..f.len().min(80)]
            )
        });
    }
    report("fuzz_mutated_frames", &st, t0);
}

fn check_round_trip<T: Msg>(m: &T, r: &mut Rng, st: &mut Stats) {
    st.cases += 1;
    let f = m.enc();
    let n = frame_len(prefix_of(&f)).unwrap_or_else(|e| panic!("{e} for {m:?}"));
    assert_eq!(n, f.len() - 4, "{m:?}");
    let payload = &f[4..];
    assert_eq!(T::dec(payload).as_ref(), Ok(m));
    st.decodes += 1;
    // A trailing byte is refused.
    let mut longer = payload.to_vec();
    longer.push(r.byte());
    assert!(T::dec(&longer).is_err(), "{m:?} with a trailing byte");
    // No strict prefix of a message is a message: the encoding is prefix
    // free. All cuts of some short messages, random cuts of the others.
    let cuts: Vec<usize> = if r.one_in(32) && payload.len() <= 4096 {
        (0..payload.len()).collect()
    } else {
        (0..1 + payload.len() / 8192)
            .map(|_| r.below(payload.len()))
            .collect()
    };
    for &cut in &cuts {
        assert!(T::dec(&payload[..cut]).is_err(), "{m:?} cut at {cut}");
    }
    st.decodes += 2 + cuts.len();
}

#[test]
fn fuzz_structured_round_trips() {
    let seed = seed() ^ 0x3333;
    let mut r = Rng::new(seed);
    let mut st = Stats::default();
    let t0 = Instant::now();
    for _ in 0..cases(50_000) {
        let q = random_request(&mut r);
        check_round_trip(&q, &mut r, &mut st);
        // The other side's decoder must cope with it too.
        let f = encode(&q);
        check_decode::<Response>(&f[4..], &mut st, &|| format!("{q:?} as a Response"));
        let a = random_response(&mut r);
        check_round_trip(&a, &mut r, &mut st);
        let f = encode(&a);
        check_decode::<Request>(&f[4..], &mut st, &|| format!("{a:?} as a Request"));
    }
    report("fuzz_structured_round_trips", &st, t0);
}

#[test]
fn the_largest_legitimate_requests_fit_in_a_frame() {
    for m in largest_requests() {
        let f = encode(&m);
        assert!(frame_len(prefix_of(&f)).unwrap() <= INLINE_MAX + 4096);
        assert_eq!(decode::<Request>(&f[4..]), Ok(m));
    }
}

/// Every answer the helper can encode must be decodable by the client.
/// Currently false for List answers of large catalogs: `encode` does not
/// apply the limit that `decode` applies, and decoding a Vec<Entry> first
/// claims size_of::<Entry>() bytes of the MAX_FRAME limit per entry, so a
/// List of more than MAX_FRAME / size_of::<Entry>() entries (a frame of a
/// few MB with short tags) fails to decode with LimitExceeded, and long tags
/// make frames over MAX_FRAME that `frame_len` refuses. `list()` then
/// always fails for that store.
#[test]
fn large_list_answers_can_be_decoded() {
    // More entries than MAX_FRAME / size_of::<Entry>(): the frame is small,
    // but bincode charges the in-memory size; answers use a larger limit.
    let many = MAX_FRAME / std::mem::size_of::<Entry>() + 1;
    let short: Vec<Entry> = (0..many).map(|i| entry(D, &format!("t{i}"))).collect();
    let f = encode(&Response::List(short));
    assert!(frame_len(prefix_of(&f)).is_ok());
    let d = yaplr_core::protocol::decode_response(&f[4..]).map(|_| ());
    assert!(
        d.is_ok(),
        "a List of {many} entries in a frame of {} bytes: {d:?}",
        f.len()
    );
    // A List over MAX_FRAME can not be encoded: the helper answers with an
    // error instead of sending a frame the client would refuse.
    let long: Vec<Entry> = (0..17_000)
        .map(|i| entry(D, &format!("{i:0>1000}")))
        .collect();
    assert!(yaplr_core::protocol::try_encode(&Response::List(long)).is_none());
}

// ---------------------------------------------------------------------------
// Part 2: a live helper.

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_yaplrd"))
}

fn no() -> bool {
    false
}

const TIMEOUT_MS: u64 = 30_000;
/// The bound on any single raw socket read or write.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn opts(timeout_ms: u64) -> CallOptions<'static> {
    CallOptions {
        timeout: Duration::from_millis(timeout_ms),
        autostart: true,
        interrupted: &no,
    }
}

/// A helper of its own in a temporary store; quit (and the store removed)
/// on drop, also when the test fails.
struct Helper {
    dir: PathBuf,
    pid: u32,
}

impl Helper {
    fn start(name: &str) -> Helper {
        let dir = std::env::temp_dir().join(format!("yaplr-rb-{name}-{}", sys::getpid()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut c = Client::new(Store::new(&dir), Some(exe().into()));
        c.ping(&opts(TIMEOUT_MS)).expect("starting the helper");
        let pid = c.helper_pid().unwrap();
        Helper { dir, pid }
    }

    fn client(&self) -> Client {
        Client::new(Store::new(&self.dir), Some(exe().into()))
    }

    fn store(&self) -> Store {
        Store::new(&self.dir)
    }

    /// A raw connection, every read and write bounded.
    fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(self.store().socket_path()).expect("connecting");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        s
    }

    /// A raw connection that has done the Hello exchange.
    fn greeted(&self) -> UnixStream {
        let mut s = self.raw();
        s.write_all(&hello()).unwrap();
        match read_answer(&mut s) {
            Some(Response::Hello { version, pid }) => {
                assert_eq!(version, PROTOCOL_VERSION);
                assert_eq!(pid, self.pid);
            }
            other => panic!("expected a Hello answer, got {other:?}"),
        }
        s
    }

    /// The same helper process still answers a new, ordinary client.
    fn assert_serves(&self) {
        assert!(sys::pid_alive(self.pid), "the helper died");
        let mut c = self.client();
        let o = CallOptions {
            autostart: false,
            ..opts(TIMEOUT_MS)
        };
        c.ping(&o).expect("a normal client's ping");
        assert_eq!(c.helper_pid(), Some(self.pid), "the helper was replaced");
    }

    fn proc_status(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim_start_matches(':').split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid))
    }

    fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn threads(&self) -> u64 {
        self.proc_status("Threads")
    }

    /// Wait (bounded) until the helper's fds and threads fall back to at
    /// most `slack` above the given baseline; returns the last counts.
    fn settle(&self, fds: usize, threads: u64, slack: usize) -> (usize, u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = (self.fds(), self.threads());
            if (now.0 <= fds + slack && now.1 <= threads + slack as u64)
                || Instant::now() > deadline
            {
                return now;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let mut c = self.client();
        let _ = quit_helper(
            &mut c,
            &CallOptions {
                autostart: false,
                ..opts(TIMEOUT_MS)
            },
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn hello() -> Vec<u8> {
    encode(&Request::Hello(Hello {
        version: PROTOCOL_VERSION,
        pid: sys::getpid(),
        client: 1,
    }))
}

/// Read exactly `buf.len()` bytes. Ok(false) when the stream closed before
/// the first byte; a timeout fails the test (nothing may hang).
fn read_full(s: &mut UnixStream, buf: &mut [u8]) -> Result<bool, String> {
    let mut off = 0;
    while off < buf.len() {
        match s.read(&mut buf[off..]) {
            Ok(0) if off == 0 => return Ok(false),
            Ok(0) => return Err(format!("closed after {off} of {} bytes", buf.len())),
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset && off == 0 => return Ok(false),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no answer from the helper within {IO_TIMEOUT:?}")
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(true)
}

/// Read one answer frame; None when the helper closed the connection (end
/// of stream or reset).
fn read_answer(s: &mut UnixStream) -> Option<Response> {
    let mut prefix = [0u8; 4];
    match read_full(s, &mut prefix) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => panic!("reading an answer's prefix: {e}"),
    }
    let n = frame_len(prefix).expect("the helper sent an oversized frame");
    let mut payload = vec![0u8; n];
    match read_full(s, &mut payload) {
        Ok(true) => {}
        Ok(false) if n == 0 => {}
        r => panic!("reading an answer of {n} bytes: {r:?}"),
    }
    Some(decode::<Response>(&payload).expect("the helper sent a malformed answer"))
}

/// Read answers until the helper closes the connection (at most `max`).
fn answers_until_closed(s: &mut UnixStream, max: usize) -> Vec<Response> {
    let mut v = Vec::new();
    loop {
        match read_answer(s) {
            None => return v,
            Some(r) => {
                v.push(r);
                assert!(v.len() <= max, "the helper kept answering: {v:?}");
            }
        }
    }
}

fn is_protocol_error(r: &Response) -> bool {
    matches!(r, Response::Refused { kind, .. } if kind == "protocol")
        || matches!(
            r,
            Response::Failed(yaplr_core::protocol::Failure::Protocol(_))
        )
}

/// Write what the helper may stop reading at any time: a refused write
/// (EPIPE, reset) is fine, a timeout is not.
fn write_lenient(s: &mut UnixStream, bytes: &[u8]) {
    match s.write_all(bytes) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) => {}
        Err(e) => panic!("writing to the helper: {e}"),
    }
}

/// The requests that `bytes`, read as a stream of frames, would deliver.
fn frames_in(bytes: &[u8]) -> Vec<Request> {
    let mut v = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let Ok(n) = frame_len(prefix_of(rest)) else {
            break;
        };
        if rest.len() - 4 < n {
            break;
        }
        match decode::<Request>(&rest[4..4 + n]) {
            Ok(r) => v.push(r),
            Err(_) => break,
        }
        rest = &rest[4 + n..];
    }
    v
}

/// Store an object in a file of its own and publish it.
fn put(c: &mut Client, tag: &str, bytes: &[u8]) {
    let mut w =
        ObjectWriter::create(c.store(), D, tag, KIND_R_SERIALIZED, bytes.len() as u64).unwrap();
    w.write(bytes).unwrap();
    let (id, _) = w.commit().unwrap();
    c.publish(
        D,
        tag,
        &id,
        Default::default(),
        Default::default(),
        &opts(TIMEOUT_MS),
    )
    .unwrap();
}

fn put_inline(c: &mut Client, tag: &str, bytes: &[u8]) {
    let meta = Default::default();
    c.put_inline(
        D,
        tag,
        KIND_R_SERIALIZED,
        bytes.to_vec(),
        meta,
        &opts(TIMEOUT_MS),
    )
    .unwrap();
}

fn get(c: &mut Client, tag: &str) -> Vec<u8> {
    match c.lookup(D, tag, &opts(TIMEOUT_MS)).unwrap() {
        Found::File(_, f) => ObjectMap::open(&f).unwrap().payload().to_vec(),
        Found::Inline(_, b) => b,
        #[allow(unreachable_patterns)]
        _ => panic!("an answer to Lookup this test does not know"),
    }
}

fn exists(c: &mut Client, tag: &str) -> bool {
    c.exists(D, tag, &opts(TIMEOUT_MS)).unwrap()
}

fn count(c: &mut Client) -> usize {
    c.list(None, &opts(TIMEOUT_MS)).unwrap().len()
}

/// (a) Random garbage, before or after the greeting, makes the helper drop
/// that connection (answering at most protocol errors); the helper process
/// and an established client's connection are unaffected.
#[test]
fn garbage_drops_only_that_connection() {
    let h = Helper::start("garbage");
    let mut keeper = h.client();
    keeper.ping(&opts(TIMEOUT_MS)).unwrap();
    put(&mut keeper, "kept", b"value");
    let mut raw_keeper = h.greeted();
    let seed = seed() ^ 0x4444;
    let mut r = Rng::new(seed);
    let mut answered = 0;
    for i in 0..300 {
        let greet = i % 3 == 1;
        let len = match r.below(10) {
            0 => 1 + r.below(70_000),
            _ => 1 + r.below(64),
        };
        let mut g = r.bytes(len);
        if r.one_in(2) && len >= 5 {
            // A plausible length, so the payload reaches the decoder.
            let n = u32::try_from(len - 4 - r.below(2).min(len - 4)).unwrap();
            g[..4].copy_from_slice(&n.to_le_bytes());
        }
        let mut bytes = if greet { hello() } else { Vec::new() };
        bytes.extend_from_slice(&g);
        // Garbage that happens to be a greeting followed by real requests
        // would be a session, not garbage (and might be a Quit).
        let reqs = frames_in(&bytes);
        if reqs.len() > usize::from(greet) {
            continue;
        }
        let mut s = h.raw();
        write_lenient(&mut s, &bytes);
        // The end of our stream completes nothing: a frame cut short by it
        // is dropped too.
        let _ = s.shutdown(Shutdown::Write);
        let answers = answers_until_closed(&mut s, 2);
        let mut it = answers.iter();
        if greet {
            assert!(
                matches!(it.next(), Some(Response::Hello { .. })),
                "case {i}: {answers:?}"
            );
        }
        for a in it {
            assert!(is_protocol_error(a), "case {i}, seed {seed}: {a:?}");
            answered += 1;
        }
        if i % 50 == 0 {
            h.assert_serves();
        }
    }
    eprintln!("garbage: {answered} connections got a protocol error before being dropped");
    assert!(answered > 0, "no garbage ever reached the decoder");
    h.assert_serves();
    // The connections made before the garbage still work (the raw one is
    // certainly the same connection: it can not reconnect).
    assert_eq!(get(&mut keeper, "kept"), b"value");
    assert_eq!(keeper.helper_pid(), Some(h.pid));
    raw_keeper
        .write_all(&encode(&Request::Ping(ping::Ping)))
        .unwrap();
    assert!(matches!(read_answer(&mut raw_keeper), Some(Response::Pong)));
}

/// (b) A length prefix over MAX_FRAME is refused before any allocation: the
/// connection is dropped without an answer, the helper neither grows nor dies.
#[test]
fn oversized_length_prefixes_are_refused() {
    let h = Helper::start("oversized");
    let vm_before = h.proc_status("VmPeak");
    for announced in [
        max_frame_u32() + 1,
        max_frame_u32() * 2,
        1 << 31,
        u32::MAX - 1,
        u32::MAX,
    ] {
        for greet in [false, true] {
            for tail in [0usize, 1, 4096] {
                let mut s = if greet { h.greeted() } else { h.raw() };
                let mut bytes = announced.to_le_bytes().to_vec();
                bytes.extend(std::iter::repeat_n(0u8, tail));
                write_lenient(&mut s, &bytes);
                // No shutdown: the helper must close by itself.
                let answers = answers_until_closed(&mut s, 0);
                assert!(answers.is_empty());
            }
        }
        h.assert_serves();
    }
    let vm_after = h.proc_status("VmPeak");
    let hwm = h.proc_status("VmHWM");
    eprintln!("oversized: VmPeak {vm_before} kB -> {vm_after} kB, VmHWM {hwm} kB");
    // Allocating even one announced length (>= 16 MiB + 1, up to 4 GiB) would
    // show in the peaks; thread stacks and arenas stay far below this.
    assert!(
        hwm < (MAX_FRAME as u64 / 1024),
        "the helper's resident peak reached {hwm} kB"
    );
    assert!(
        vm_after < vm_before + 2 * 1024 * 1024,
        "the helper's virtual peak grew from {vm_before} kB to {vm_after} kB"
    );
}

/// (c) A frame cut short by the end of the stream: everything complete
/// before the cut is answered, then the connection is dropped.
#[test]
fn truncated_frames_are_dropped() {
    let h = Helper::start("truncated");
    let hello = hello();
    let ping = encode(&Request::Ping(ping::Ping));
    let publish = encode(&publish_req(&"t".repeat(300), SOME_ID));
    let base_fds = h.fds();
    let base_threads = h.threads();
    for (k, rest) in [&ping, &publish].into_iter().enumerate() {
        let mut whole = hello.clone();
        whole.extend_from_slice(rest);
        let cuts: Vec<usize> = (0..whole.len()).filter(|c| k == 0 || c % 7 == 0).collect();
        for cut in cuts {
            for close in [false, true] {
                let mut s = h.raw();
                write_lenient(&mut s, &whole[..cut]);
                if close {
                    // Closing both directions at once (a crashed client).
                    drop(s);
                    continue;
                }
                let _ = s.shutdown(Shutdown::Write);
                let answers = answers_until_closed(&mut s, 1);
                if cut >= hello.len() {
                    assert!(
                        matches!(answers[..], [Response::Hello { .. }]),
                        "cut at {cut}: {answers:?}"
                    );
                } else {
                    assert!(answers.is_empty(), "cut at {cut}: {answers:?}");
                }
            }
        }
        h.assert_serves();
    }
    let (fds, threads) = h.settle(base_fds, base_threads, 2);
    assert!(
        fds <= base_fds + 2 && threads <= base_threads + 2,
        "fds {base_fds} -> {fds}, threads {base_threads} -> {threads}"
    );
}

/// (d) A Hello with another protocol version gets a protocol error and the
/// connection is closed; the helper goes on.
#[test]
fn a_wrong_protocol_version_is_refused() {
    let h = Helper::start("version");
    for version in [0, PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 1000, u32::MAX] {
        let mut s = h.raw();
        s.write_all(&encode(&Request::Hello(Hello {
            version,
            pid: 1,
            client: 1,
        })))
        .unwrap();
        match read_answer(&mut s) {
            Some(Response::Refused { kind, message }) => {
                assert_eq!(kind, "protocol");
                assert!(message.contains(&version.to_string()), "{message}");
            }
            other => panic!("version {version}: expected an error, got {other:?}"),
        }
        // Closed: a request sent now gets no answer.
        write_lenient(&mut s, &encode(&Request::Ping(ping::Ping)));
        let more = answers_until_closed(&mut s, 0);
        assert!(more.is_empty());
    }
    h.assert_serves();
}

/// (e) Requests before the Hello are refused and close the connection; none
/// of them takes effect (a Quit does not stop the helper, a Remove or an
/// inline put does not touch the object).
#[test]
fn requests_before_hello_are_refused() {
    let h = Helper::start("nohello");
    let mut c = h.client();
    put(&mut c, "keep", b"precious");
    let mut reqs = store_requests("keep");
    reqs.push(Request::Ping(ping::Ping));
    reqs.push(quit_req());
    for req in &reqs {
        let mut s = h.raw();
        s.write_all(&encode(req)).unwrap();
        // A second request pipelined behind it must not be served either.
        write_lenient(&mut s, &encode(&Request::Ping(ping::Ping)));
        let answers = answers_until_closed(&mut s, 1);
        assert!(
            matches!(&answers[..], [a] if is_protocol_error(a)),
            "{req:?}: {answers:?}"
        );
        h.assert_serves();
    }
    assert_eq!(get(&mut c, "keep"), b"precious");
    assert_eq!(count(&mut c), 1);
}

/// After the Hello, pipelined requests are answered in order and a second
/// Hello is answered too.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let h = Helper::start("pipeline");
    let mut bytes = hello();
    for i in 0..1000 {
        bytes.extend(match i % 4 {
            0 => encode(&Request::Ping(ping::Ping)),
            1 => encode(&exists_req(&format!("t{i}"))),
            2 => encode(&Request::Hello(Hello {
                version: PROTOCOL_VERSION,
                pid: 1,
                client: 1,
            })),
            _ => encode(&Request::Info(info::Info)),
        });
    }
    let mut s = h.raw();
    // Write from another thread: the answers may fill the socket buffers
    // before all requests are written.
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&bytes));
    for i in 0..=1000 {
        let a = match read_answer(&mut s) {
            Some(a) => a,
            None => panic!("closed after {i} answers"),
        };
        let ok = match (i, &a) {
            (0, Response::Hello { .. }) => true,
            (0, _) => false,
            (i, Response::Pong) => (i - 1) % 4 == 0,
            (i, Response::Bool(false)) => (i - 1) % 4 == 1,
            (i, Response::Hello { .. }) => (i - 1) % 4 == 2,
            (i, Response::Info(info)) => (i - 1) % 4 == 3 && info.pid == h.pid,
            _ => false,
        };
        assert!(ok, "answer {i}: {a:?}");
    }
    writer.join().unwrap().unwrap();
    // Nothing more is sent, the connection stays open.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// An fd passed with a request (SCM_RIGHTS), answered or refused, is closed
/// by the helper: the other end of a socket pair sees end of stream.
#[test]
fn passed_descriptors_are_not_leaked() {
    let h = Helper::start("passfd");
    let base_fds = h.fds();
    for (greet, frame) in [
        (false, encode(&Request::Ping(ping::Ping))),
        (true, encode(&Request::Ping(ping::Ping))),
        (true, vec![1, 0, 0, 0, 0xff]),
        (true, vec![0xff, 0xff, 0xff, 0xff]),
    ] {
        let mut s = if greet { h.greeted() } else { h.raw() };
        let (mine, theirs) = UnixStream::pair().unwrap();
        mine.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let n = sys::send_some(s.as_raw_fd(), &frame, &[theirs.as_raw_fd()]).unwrap();
        assert_eq!(n, frame.len());
        drop(theirs);
        let answers = if greet && frame == encode(&Request::Ping(ping::Ping)) {
            match read_answer(&mut s) {
                Some(Response::Pong) => {}
                other => panic!("expected a Pong, got {other:?}"),
            }
            // The helper keeps this connection: close it ourselves.
            drop(s);
            Vec::new()
        } else {
            answers_until_closed(&mut s, 1)
        };
        assert!(answers.iter().all(is_protocol_error), "{answers:?}");
        let mut b = [0u8; 1];
        match (&mine).read(&mut b) {
            Ok(0) => {}
            other => panic!("the helper still holds the passed socket: {other:?}"),
        }
    }
    let (fds, _) = h.settle(base_fds, u64::MAX / 2, 1);
    assert!(fds <= base_fds + 1, "fds {base_fds} -> {fds}");
    h.assert_serves();
}

/// (f) Clients that connect and go silent, or stop in the middle of a
/// frame, or never read their answers, do not delay anybody else.
#[test]
fn silent_clients_do_not_block_others() {
    let h = Helper::start("silent");
    let mut idle = Vec::new();
    // Connected, nothing sent.
    for _ in 0..4 {
        idle.push(h.raw());
    }
    // Half a prefix; a prefix and half a payload; the same after a Hello;
    // a prefix announcing MAX_FRAME and only a few bytes of it.
    let publish = encode(&publish_req("x", SOME_ID));
    for greet in [false, true] {
        for cut in [2, 4, publish.len() / 2] {
            let mut s = if greet { h.greeted() } else { h.raw() };
            s.write_all(&publish[..cut]).unwrap();
            idle.push(s);
        }
        let mut s = if greet { h.greeted() } else { h.raw() };
        s.write_all(&max_frame_u32().to_le_bytes()).unwrap();
        s.write_all(&[7; 100]).unwrap();
        idle.push(s);
    }
    // A client that sends pings and never reads the answers, until its own
    // writes block: the helper's thread for it is stuck writing.
    let mut flood = h.greeted();
    flood
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let ping = encode(&Request::Ping(ping::Ping));
    let burst: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 4096)
        .collect();
    let mut flooded = 0usize;
    for _ in 0..1000 {
        match flood.write(&burst) {
            Ok(n) => flooded += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("flooding: {e}"),
        }
    }
    eprintln!("silent: the flooding client wrote {flooded} bytes before blocking");

    let stop = Arc::new(AtomicBool::new(false));
    let dir = h.dir.clone();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let dir = dir.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut c = Client::new(Store::new(dir), Some(exe().into()));
                let o = CallOptions {
                    autostart: false,
                    ..opts(TIMEOUT_MS)
                };
                let mut slowest = Duration::ZERO;
                for i in 0..40 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t0 = Instant::now();
                    let tag = format!("w{t}-{i}");
                    c.ping(&o).unwrap();
                    if i % 2 == 0 {
                        put(&mut c, &tag, tag.as_bytes());
                    } else {
                        put_inline(&mut c, &tag, tag.as_bytes());
                    }
                    assert_eq!(get(&mut c, &tag), tag.as_bytes());
                    assert!(exists(&mut c, &tag));
                    slowest = slowest.max(t0.elapsed());
                }
                slowest
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for w in workers {
        match w.join() {
            Ok(d) => slowest = slowest.max(d),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("silent: the slowest round of 4 calls took {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");
    h.assert_serves();
    assert_eq!(count(&mut h.client()), 160);
    eprintln!(
        "silent: helper VmRSS {} kB with two MAX_FRAME frames announced",
        h.proc_status("VmRSS")
    );
    // The connections that sent nothing were neither answered nor dropped
    // (the others are dropped after the helper's 30 s frame deadline).
    for s in &idle[..4] {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 1];
        match (&*s).read(&mut b) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("an idle connection was answered or closed: {other:?}"),
        }
    }
    drop(flood);
    drop(idle);
}

/// A frame started must finish within the helper's 30 s deadline, after
/// which the connection is dropped; an idle connection between frames is
/// kept as long as the client wants (persistent connections).
#[test]
fn an_unfinished_frame_is_dropped_after_the_deadline() {
    let h = Helper::start("deadline");
    let t0 = Instant::now();
    let mut half = h.greeted();
    half.write_all(&encode(&Request::Ping(ping::Ping))[..3])
        .unwrap();
    let mut idle = h.greeted();
    half.set_read_timeout(Some(Duration::from_secs(45)))
        .unwrap();
    let mut b = [0u8; 16];
    match half.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("expected the helper to drop the connection, got {other:?}"),
    }
    let waited = t0.elapsed();
    eprintln!("deadline: the unfinished frame was dropped after {waited:?}");
    assert!(
        waited >= Duration::from_secs(29) && waited < Duration::from_secs(45),
        "{waited:?}"
    );
    idle.write_all(&encode(&Request::Ping(ping::Ping))).unwrap();
    assert!(matches!(read_answer(&mut idle), Some(Response::Pong)));
    h.assert_serves();
}

/// (g) 200 connections opened and dropped in various states leave the
/// helper responsive, with no descriptor or thread left behind.
#[test]
fn many_dropped_connections_leak_nothing() {
    let h = Helper::start("churn");
    let base_fds = h.fds();
    let base_threads = h.threads();
    let ping = encode(&Request::Ping(ping::Ping));
    for i in 0..200 {
        let mut s = h.raw();
        match i % 5 {
            // Connect and drop.
            0 => {}
            // Hello, not waiting for the answer.
            1 => s.write_all(&hello()).unwrap(),
            // A full exchange, then drop.
            2 => {
                s.write_all(&hello()).unwrap();
                s.write_all(&ping).unwrap();
                assert!(matches!(read_answer(&mut s), Some(Response::Hello { .. })));
                assert!(matches!(read_answer(&mut s), Some(Response::Pong)));
            }
            // Half a frame.
            3 => s.write_all(&ping[..2]).unwrap(),
            // A normal client, dropped without quitting.
            _ => {
                let mut c = h.client();
                c.ping(&opts(TIMEOUT_MS)).unwrap();
            }
        }
        drop(s);
    }
    let (fds, threads) = h.settle(base_fds, base_threads, 2);
    eprintln!("churn: fds {base_fds} -> {fds}, threads {base_threads} -> {threads}");
    assert!(fds <= base_fds + 2, "fds {base_fds} -> {fds}");
    assert!(
        threads <= base_threads + 2,
        "threads {base_threads} -> {threads}"
    );
    h.assert_serves();
}

/// (h) Many concurrent clients, all answered.
#[test]
fn many_concurrent_clients_all_succeed() {
    let h = Helper::start("concurrent");
    let t0 = Instant::now();
    let dir = h.dir.clone();
    let pid = h.pid;
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut c = Client::new(Store::new(dir), Some(exe().into()));
                let o = CallOptions {
                    autostart: false,
                    ..opts(TIMEOUT_MS)
                };
                for i in 0..200 {
                    c.ping(&o)
                        .unwrap_or_else(|e| panic!("thread {t}, ping {i}: {e}"));
                    assert_eq!(c.helper_pid(), Some(pid));
                }
                if t % 4 == 0 {
                    assert!(!exists(&mut c, "nothing"));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("concurrent: 16 x 200 pings in {:?}", t0.elapsed());
    h.assert_serves();
}

/// The uid check (SO_PEERCRED): a process of another user that reaches the
/// socket is dropped without an answer. Needs root (to make such a
/// process); skipped otherwise.
#[test]
fn connections_from_other_users_are_refused() {
    if sys::getuid() != 0 {
        eprintln!("peer uid: skipped (needs root to connect as another user)");
        return;
    }
    const NOBODY: libc::uid_t = 65534;
    let h = Helper::start("peeruid");
    let store = h.store();
    let sock = store.socket_path();
    // Let the other user reach the socket; restored below.
    let perms = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    perms(&h.dir, 0o711);
    perms(&sock, 0o666);
    // Everything the child needs is prepared before fork: after it, only
    // async-signal-safe system calls.
    // SAFETY: sockaddr_un is plain data; zeroed is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::sa_family_t::try_from(libc::AF_UNIX).unwrap();
    let path = sock.as_os_str().as_encoded_bytes();
    assert!(path.len() < addr.sun_path.len());
    for (d, s) in addr.sun_path.iter_mut().zip(path) {
        *d = libc::c_char::from_ne_bytes([*s]);
    }
    let addr_len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_un>()).unwrap();
    let frame = hello();
    // SAFETY: sysconf has no preconditions.
    let max_fd = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) }.clamp(1024, 65_536) as libc::c_int;
    // SAFETY: the child only makes raw system calls on memory prepared
    // above and leaves with _exit.
    let child = unsafe { libc::fork() };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        // SAFETY: as above; exit codes: 0 closed without an answer,
        // 1 answered, others a failure of the child itself.
        unsafe {
            // Drop the copies of this process's descriptors (the other
            // tests' sockets), so that nobody waits for the child's copies.
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                for fd in 3..max_fd {
                    libc::close(fd);
                }
            }
            let nobody = libc::c_long::from(NOBODY);
            if libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) != 0
                || libc::syscall(libc::SYS_setresgid, nobody, nobody, nobody) != 0
                || libc::syscall(libc::SYS_setresuid, nobody, nobody, nobody) != 0
            {
                libc::_exit(10);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                libc::_exit(11);
            }
            let a = &addr as *const libc::sockaddr_un as *const libc::sockaddr;
            if libc::connect(fd, a, addr_len) != 0 {
                libc::_exit(12);
            }
            libc::send(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                libc::MSG_NOSIGNAL,
            );
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            if libc::poll(&mut pfd, 1, 10_000) <= 0 {
                libc::_exit(13);
            }
            let mut b = [0u8; 64];
            let n = libc::recv(fd, b.as_mut_ptr() as *mut libc::c_void, b.len(), 0);
            libc::_exit(match n {
                0 => 0,
                n if n > 0 => 1,
                _ if *libc::__errno_location() == libc::ECONNRESET => 0,
                _ => 14,
            });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if r == child {
            break;
        }
        if Instant::now() > deadline {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, &mut status, 0);
            }
            panic!("the other user's client did not finish");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    perms(&sock, 0o600);
    perms(&h.dir, 0o700);
    assert!(libc::WIFEXITED(status), "child status {status}");
    let code = libc::WEXITSTATUS(status);
    assert_eq!(
        code, 0,
        "another user's client was answered (1) or failed (10+): {code}"
    );
    let log = std::fs::read_to_string(store.log_path()).unwrap_or_default();
    assert!(
        log.contains(&format!("refused a connection from uid {NOBODY}")),
        "{log}"
    );
    h.assert_serves();
}

#[derive(Clone, Copy)]
enum Limit {
    AddressSpace,
    Descriptors,
}

/// get/setrlimit on another process, without naming the resource type
/// (which differs between C libraries).
fn prlimit(pid: u32, which: Limit, new: Option<&libc::rlimit>, old: &mut libc::rlimit) -> i32 {
    let new = new.map_or(std::ptr::null(), |n| n as *const libc::rlimit);
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: valid pointers (or null) to rlimit structs; the target is a
    // helper this test started.
    unsafe {
        match which {
            Limit::AddressSpace => libc::prlimit(pid, libc::RLIMIT_AS, new, old),
            Limit::Descriptors => libc::prlimit(pid, libc::RLIMIT_NOFILE, new, old),
        }
    }
}

/// Lowers a resource limit of the helper and restores it when dropped (also
/// on failure, so that quitting the helper at the end works).
struct LimitGuard {
    pid: u32,
    which: Limit,
    old: libc::rlimit,
}

impl LimitGuard {
    fn set(pid: u32, which: Limit, soft: u64) -> LimitGuard {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(prlimit(pid, which, None, &mut old), 0);
        let new = libc::rlimit {
            rlim_cur: soft.min(old.rlim_max),
            rlim_max: old.rlim_max,
        };
        let mut ignored = old;
        assert_eq!(prlimit(pid, which, Some(&new), &mut ignored), 0);
        LimitGuard { pid, which, old }
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        // The process may be gone already.
        let mut ignored = self.old;
        let _ = prlimit(self.pid, self.which, Some(&self.old), &mut ignored);
    }
}

/// When the helper can not start a thread for a new connection, it must
/// drop that connection and go on serving. Currently `std::thread::spawn`
/// panics in the accept loop and the whole helper exits ("failed to spawn
/// thread: ... Resource temporarily unavailable" in its log), cutting off
/// every client. The shortage is made by limiting the helper's address
/// space, so each idle connection's thread stack (2 MiB) uses it up.
#[test]
fn a_failed_thread_spawn_does_not_kill_the_helper() {
    let h = Helper::start("nothread");
    let mut keeper = h.greeted();
    let vm_kb = h.proc_status("VmSize");
    let guard = LimitGuard::set(h.pid, Limit::AddressSpace, (vm_kb + 48 * 1024) * 1024);
    let mut idle = Vec::new();
    for _ in 0..64 {
        match UnixStream::connect(h.store().socket_path()) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(2));
        if !sys::pid_alive(h.pid) {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let alive = sys::pid_alive(h.pid);
    let idle_count = idle.len();
    drop(idle);
    drop(guard);
    let log = std::fs::read_to_string(h.store().log_path()).unwrap_or_default();
    assert!(
        alive,
        "the helper died after {} idle connections; its log:\n{log}",
        idle_count
    );
    keeper
        .write_all(&encode(&Request::Ping(ping::Ping)))
        .unwrap();
    assert!(matches!(read_answer(&mut keeper), Some(Response::Pong)));
    h.assert_serves();
}

/// A Lookup whose open() fails for lack of descriptors (many connections
/// hold the helper's fds) must not forget the tag. Currently the helper
/// takes any open() error for "the object file is gone": it journals a
/// Remove of the tag, unlinks the object file and answers not_found.
#[test]
fn a_lookup_without_free_descriptors_keeps_the_tag() {
    let h = Helper::start("nofd");
    let mut c = h.client();
    put(&mut c, "x", b"value");
    std::thread::sleep(Duration::from_millis(100));
    let base = h.fds() as u64;
    let guard = LimitGuard::set(h.pid, Limit::Descriptors, base + 3);
    let idle: Vec<UnixStream> = (0..8).map(|_| h.raw()).collect();
    // Wait (bounded) until the helper has used its descriptors up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (h.fds() as u64) < base + 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let during = c
        .lookup(D, "x", &opts(TIMEOUT_MS))
        .map(|_| "found")
        .map_err(|e| e.to_string());
    drop(idle);
    drop(guard);
    h.settle(usize::try_from(base).unwrap(), u64::MAX / 2, 2);
    let after = exists(&mut c, "x");
    let files = h.store().object_ids().map(|v| v.len());
    assert!(
        after,
        "the tag was lost; the lookup during the shortage gave {during:?}; \
         object files left: {files:?}"
    );
    assert_eq!(get(&mut c, "x"), b"value");
}

/// A numbered change is applied at most once, even across a helper crash
/// (the number is journaled with the change), and never after its deadline.
#[test]
fn changes_apply_at_most_once_and_never_after_their_deadline() {
    let h = Helper::start("once");
    let greet = |client: u64| {
        let mut s = h.raw();
        s.write_all(&encode(&Request::Hello(Hello {
            version: PROTOCOL_VERSION,
            pid: sys::getpid(),
            client,
        })))
        .unwrap();
        assert!(matches!(read_answer(&mut s), Some(Response::Hello { .. })));
        s
    };
    let put = |s: &mut UnixStream, seq: u64, deadline_ns: u64, bytes: &[u8]| {
        let mut frame = encode(&Request::Call(Call { seq, deadline_ns }));
        frame.extend(encode(&Request::PutInline(put_inline::PutInline {
            namespace: D.into(),
            tag: "t".into(),
            kind: KIND_R_SERIALIZED,
            ctime_ns: 1,
            bytes: bytes.to_vec(),
            meta: Meta::default(),
            condition: Default::default(),
        })));
        s.write_all(&frame).unwrap();
        read_answer(s)
    };
    let value = || match h.client().lookup(D, "t", &opts(TIMEOUT_MS)).unwrap() {
        Found::Inline(_, b) => b,
        Found::File(..) => panic!("an inline object"),
    };
    let mut s = greet(77);
    let Some(Response::Count(v1)) = put(&mut s, 1, 0, b"first") else {
        panic!("expected the version of the stored value");
    };
    // The same number again (a retry): answered with the same version, not
    // applied.
    assert_eq!(put(&mut s, 1, 0, b"retry"), Some(Response::Count(v1)));
    assert_eq!(value(), b"first");
    // Across a crash of the helper: the journal knows the change was made.
    drop(s);
    let _ = sys::kill(h.pid, libc::SIGKILL);
    let died = Instant::now() + Duration::from_secs(10);
    while sys::pid_alive(h.pid) && Instant::now() < died {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut c = h.client();
    c.ping(&opts(TIMEOUT_MS)).unwrap();
    let mut s = greet(77);
    assert_eq!(
        put(&mut s, 1, 0, b"retry after crash"),
        Some(Response::Count(v1))
    );
    assert_eq!(value(), b"first");
    // Another client's first change is its own.
    let mut other = greet(78);
    assert!(matches!(
        put(&mut other, 1, 0, b"other"),
        Some(Response::Count(v)) if v > v1
    ));
    assert_eq!(value(), b"other");
    // A deadline in the past: refused, nothing changed.
    let past = yaplr_core::protocol::monotonic_ns() - 1;
    match put(&mut s, 2, past, b"late") {
        Some(Response::Failed(yaplr_core::protocol::Failure::Expired)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(value(), b"other");
    // A deadline ahead: applied.
    let ahead = yaplr_core::protocol::monotonic_ns() + 10_000_000_000;
    assert!(matches!(
        put(&mut s, 3, ahead, b"in time"),
        Some(Response::Count(_))
    ));
    assert_eq!(value(), b"in time");
}
