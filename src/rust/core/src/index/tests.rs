//! Tests of the index: what a reader finds after each kind of change, growth
//! with readers that map the old file, and readers racing the writer.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]
#![allow(
    clippy::cast_possible_truncation,
    reason = "test values are small"
)]

use super::*;
use crate::testing::TempStore;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn fields(version: u64, size: u64) -> Fields {
    Fields {
        kind: 1,
        version,
        size,
        ctime_ns: 7,
        checksum: version * 3,
    }
}

fn inline<'a>(tag: &'a str, version: u64, payload: &'a [u8]) -> Put<'a> {
    Put {
        namespace: "default",
        tag,
        fields: fields(version, payload.len() as u64),
        file: None,
        payload: Some(payload),
        meta: Meta {
            class: vec!["numeric".into()],
            rtype: "double".into(),
            length: 9,
            dim: vec![],
            description: Some(format!("v{version}")),
        },
    }
}

fn writer(t: &TempStore) -> Writer {
    let mut w = Writer::create(&t.store).unwrap();
    w.publish().unwrap();
    w
}

fn hit(ix: &Index, tag: &str) -> Hit {
    match ix.get("default", tag, true) {
        Lookup::Hit(h) => *h,
        other => panic!("{tag}: {other:?}"),
    }
}

#[test]
fn a_reader_finds_what_the_writer_put_and_not_what_it_removed() {
    let t = TempStore::new("basic");
    let mut w = writer(&t);
    let ix = Index::open(&t.store).unwrap().unwrap();
    assert_eq!(ix.get("default", "a", true), Lookup::Absent);

    w.put(&inline("a", 1, b"first")).unwrap();
    let h = hit(&ix, "a");
    assert_eq!(h.payload.as_deref(), Some(&b"first"[..]));
    assert_eq!(h.fields, fields(1, 5));
    assert_eq!(h.body.meta.description.as_deref(), Some("v1"));
    assert!(h.body.file.is_none());

    // Overwritten: the new value, never the old one.
    w.put(&inline("a", 2, b"second value")).unwrap();
    let h = hit(&ix, "a");
    assert_eq!(h.payload.as_deref(), Some(&b"second value"[..]));
    assert_eq!(h.fields.version, 2);

    // The same tag in another namespace is another object.
    assert_eq!(ix.get("other", "a", true), Lookup::Absent);

    // An object file: its id, no payload.
    w.put(&Put {
        namespace: "other",
        tag: "a",
        fields: fields(3, 1 << 30),
        file: Some("0123abcd"),
        payload: None,
        meta: Meta::default(),
    })
    .unwrap();
    match ix.get("other", "a", true) {
        Lookup::Hit(h) => {
            assert_eq!(h.body.file.as_deref(), Some("0123abcd"));
            assert_eq!(h.payload, None);
            assert_eq!(h.fields.size, 1 << 30);
        }
        other => panic!("{other:?}"),
    }

    w.remove("default", "a").unwrap();
    assert_eq!(ix.get("default", "a", true), Lookup::Absent);
    assert!(matches!(ix.get("other", "a", true), Lookup::Hit(_)));
    // Removing what is not there changes nothing.
    w.remove("default", "never").unwrap();

    // Closed: readers ask the helper, and a new open finds none.
    w.close();
    assert_eq!(ix.get("other", "a", true), Lookup::Ask);
    assert!(Index::open(&t.store).unwrap().is_none());
}

#[test]
fn what_does_not_fit_a_record_is_flagged_for_the_helper() {
    let t = TempStore::new("flags");
    let mut w = writer(&t);
    let ix = Index::open(&t.store).unwrap().unwrap();
    // A payload too large for the largest block, with its key and meta.
    let big = vec![5u8; 200 << 10];
    w.put(&inline("big", 1, &big)).unwrap();
    let h = hit(&ix, "big");
    assert!(h.payload_elsewhere && !h.meta_elsewhere);
    assert_eq!(h.payload, None);
    assert_eq!(h.fields.size, big.len() as u64);
    assert_eq!(h.body.meta.description.as_deref(), Some("v1"));

    // A description too large too: only the key stays.
    let mut p = inline("huge", 2, &big);
    p.meta.description = Some("d".repeat(300 << 10));
    w.put(&p).unwrap();
    let h = hit(&ix, "huge");
    assert!(h.payload_elsewhere && h.meta_elsewhere);
    assert_eq!(h.body.meta, Meta::default());

    // The largest inline payload fits.
    let max = vec![9u8; crate::store::INLINE_MAX];
    w.put(&inline("max", 3, &max)).unwrap();
    assert_eq!(hit(&ix, "max").payload, Some(max));
}

#[test]
fn the_index_grows_and_readers_of_the_old_file_move_on() {
    let t = TempStore::new("grow");
    let dir = Dir::open(t.store.dir()).unwrap();
    // 64 slots and an arena of 16 KiB: both grow many times.
    let mut w = Writer::create_fresh(dir, 64, 16 << 10).unwrap();
    w.publish().unwrap();
    let first = Index::open(&t.store).unwrap().unwrap();
    let n = 3000u64;
    for i in 0..n {
        let payload = vec![(i % 251) as u8; (i % 700) as usize];
        w.put(&inline(&format!("t{i}"), i + 1, &payload)).unwrap();
        if i % 3 == 0 && i > 0 {
            w.remove("default", &format!("t{}", i - 1)).unwrap();
        }
    }
    // The old mapping says: ask (it is closed), and a new one has it all.
    assert!(first.is_closed());
    let ix = Index::open(&t.store).unwrap().unwrap();
    assert!(ix.slots >= 4096, "{} slots", ix.slots);
    for i in 0..n {
        let tag = format!("t{i}");
        let removed = i % 3 == 2 && i + 1 < n;
        match ix.get("default", &tag, true) {
            Lookup::Absent if removed => {}
            Lookup::Hit(h) if !removed => {
                assert_eq!(h.fields.version, i + 1);
                assert_eq!(h.payload.unwrap(), vec![(i % 251) as u8; (i % 700) as usize]);
            }
            other => panic!("{tag} (removed: {removed}): {other:?}"),
        }
    }
}

#[test]
fn an_arena_without_space_is_an_error_not_a_crash() {
    // Records are reserved with fallocate: a file that can not grow fails
    // the put, and the index stays as it was.
    let t = TempStore::new("full");
    let mut w = writer(&t);
    w.put(&inline("a", 1, b"kept")).unwrap();
    let ix = Index::open(&t.store).unwrap().unwrap();
    // Pretend the reserved bytes ran out at a length the file can not
    // reach (past the largest file size).
    w.ix.header().arena_ready.store(0, Ordering::Relaxed);
    w.ix.header().arena_top.store(0, Ordering::Relaxed);
    let saved = w.ix.arena_offset;
    w.ix.arena_offset = u64::MAX / 2;
    let r = w.put(&inline("b", 2, b"refused"));
    w.ix.arena_offset = saved;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(hit(&ix, "a").payload.as_deref(), Some(&b"kept"[..]));
    assert_eq!(ix.get("default", "b", true), Lookup::Absent);
}

/// The payload of version `v`: its length and every byte follow from `v`,
/// so a reader can tell a torn or reused record from a real one.
fn pattern(v: u64) -> Vec<u8> {
    vec![(v % 253) as u8; 8 + (v as usize * 37) % 3000]
}

#[test]
fn readers_racing_the_writer_never_see_a_torn_or_reused_record() {
    let t = TempStore::new("race");
    let mut w = writer(&t);
    w.put(&inline("hot", 1, &pattern(1))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let store = t.store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ix = Index::open(&store).unwrap().unwrap();
                let (mut seen, mut last) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    if ix.is_closed() {
                        ix = Index::open(&store).unwrap().unwrap();
                    }
                    match ix.get("default", "hot", true) {
                        Lookup::Hit(h) => {
                            let v = h.fields.version;
                            assert_eq!(h.payload.unwrap(), pattern(v), "version {v}");
                            assert_eq!(h.fields.size, pattern(v).len() as u64);
                            assert_eq!(h.body.meta.description, Some(format!("v{v}")));
                            assert!(v >= last, "went back from {last} to {v}");
                            last = v;
                            seen += 1;
                        }
                        Lookup::Ask => {}
                        Lookup::Absent => panic!("the hot tag is never removed"),
                    }
                }
                seen
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut v = 1;
    while Instant::now() < deadline {
        v += 1;
        w.put(&inline("hot", v, &pattern(v))).unwrap();
        // Churn: other records of every size come and go, so that the hot
        // key's freed blocks are reused at once.
        let other = format!("o{}", v % 50);
        w.put(&inline(&other, v, &pattern(v + 1))).unwrap();
        if v % 7 == 0 {
            w.remove("default", &format!("o{}", (v + 3) % 50)).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let seen = r.join().unwrap();
        assert!(seen > 0);
    }
    assert!(v > 1000, "only {v} writes");
}

#[test]
fn a_writer_killed_in_the_middle_of_a_change_makes_readers_ask_not_hang() {
    let t = TempStore::new("killed");
    let mut w = writer(&t);
    w.put(&inline("a", 1, b"one")).unwrap();
    w.put(&inline("b", 2, b"two")).unwrap();
    let ix = Index::open(&t.store).unwrap().unwrap();
    // What a writer killed between its two sequence stores leaves: an odd
    // sequence that never becomes even.
    let (i, held) = w.find("default", "a", key_hash("default", "a"));
    assert!(held);
    let slot = w.ix.slot(i);
    slot.seq.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    assert_eq!(ix.get("default", "a", true), Lookup::Ask);
    assert!(start.elapsed() < Duration::from_secs(5));
    // Other keys are not held up, unless their probe crosses the slot.
    let (j, _) = w.find("default", "b", key_hash("default", "b"));
    if j != i {
        assert_eq!(hit(&ix, "b").payload.as_deref(), Some(&b"two"[..]));
    }
}

#[test]
fn block_sizes_rise_by_at_most_half_and_hold_the_largest_record() {
    use super::layout::{block_size, class_of, CLASSES};
    for c in 0..CLASSES {
        assert_eq!(block_size(c) % 32, 0, "class {c}");
        assert_eq!(class_of(block_size(c)), Some(c));
        assert_eq!(class_of(block_size(c) + 1), (c + 1 < CLASSES).then_some(c + 1));
        if c > 0 {
            assert!(block_size(c) > block_size(c - 1));
            assert!(block_size(c) * 2 <= block_size(c - 1) * 3, "class {c}");
        }
    }
    // The largest inline payload with a long key and description fits.
    assert!(block_size(CLASSES - 1) as usize >= crate::store::INLINE_MAX + (64 << 10));
    assert_eq!(class_of(block_size(CLASSES - 1) + 1), None);
}

#[test]
fn entries_list_the_live_objects_of_a_namespace() {
    let t = TempStore::new("entries");
    let mut w = writer(&t);
    for i in 0..50u64 {
        w.put(&inline(&format!("d{i}"), i + 1, b"x")).unwrap();
        let tag = format!("o{i}");
        let mut p = inline(&tag, 100 + i, b"y");
        p.namespace = "other";
        w.put(&p).unwrap();
    }
    w.remove("default", "d7").unwrap();
    let ix = Index::open(&t.store).unwrap().unwrap();
    let mut d: Vec<String> = ix
        .entries(Some("default"))
        .unwrap()
        .into_iter()
        .map(|(_, b)| b.tag)
        .collect();
    d.sort();
    let mut want: Vec<String> = (0..50).filter(|&i| i != 7).map(|i| format!("d{i}")).collect();
    want.sort();
    assert_eq!(d, want);
    assert_eq!(ix.entries(None).unwrap().len(), 99);
    assert!(ix.entries(Some("none")).unwrap().is_empty());
    // A description that is not in its record: only the helper can list it.
    let mut p = inline("huge", 999, b"z");
    p.meta.description = Some("d".repeat(300 << 10));
    w.put(&p).unwrap();
    assert_eq!(ix.entries(Some("default")), None);
    // Closed: the helper answers.
    w.remove("default", "huge").unwrap();
    assert!(ix.entries(None).is_some());
    w.close();
    assert_eq!(ix.entries(None), None);
}

/// The step of a change at which this process's writer dies (see
/// `fault_point`); 0: none.
pub(super) static FAULT_AT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The arena is whole: the blocks of the live records and of the free
/// lists do not overlap, none is listed twice, and together they are
/// every block ever taken from the top (none leaked).
fn check_arena(w: &Writer) {
    let ix = &w.ix;
    let h = ix.header();
    let mut blocks: Vec<(u64, u64)> = Vec::new();
    for i in 0..ix.slots {
        let slot = ix.slot(i);
        if slot.state.load(Ordering::Relaxed) == LIVE {
            let at = slot.rec.load(Ordering::Relaxed);
            let c = w.class_at(at);
            assert!(c < CLASSES, "slot {i}: record at {at} makes no sense");
            blocks.push((at, block_size(c)));
        }
    }
    for c in 0..CLASSES {
        let mut head = h.free[c].load(Ordering::Relaxed);
        let mut n = 0;
        while head != 0 {
            let at = head - 1;
            blocks.push((at, block_size(c)));
            head = ix.arena_words(at, 1).unwrap()[0].load(Ordering::Relaxed);
            n += 1;
            assert!(n < 1_000_000, "free list {c} loops");
        }
    }
    blocks.sort_unstable();
    for pair in blocks.windows(2) {
        assert!(pair[0].0 + pair[0].1 <= pair[1].0, "blocks overlap: {pair:?}");
    }
    let total: u64 = blocks.iter().map(|b| b.1).sum();
    assert_eq!(total, h.arena_top.load(Ordering::Relaxed), "blocks leaked");
    assert_eq!(h.intent.phase.load(Ordering::Relaxed), IDLE);
}

/// Run `crash_child` in a new process of this test program, with `env`.
fn crash_child(t: &TempStore, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "index::tests::crash_child_writer",
        "--ignored",
        "--test-threads=1",
    ])
    .env("YAPLR_INDEX_CRASH_DIR", t.store.dir())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// A writer in a process of its own, for the crash tests: with
/// YAPLR_INDEX_CRASH_STEP, one change that dies at that step (exit status
/// 0; 3 when it did not die); without, changes until it is killed.
#[test]
#[ignore = "the crash tests run it in a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("YAPLR_INDEX_CRASH_DIR") else {
        return;
    };
    let store = Store::new(dir);
    let mut w = Writer::attach(&store).unwrap().unwrap();
    let v = match w.ix.get("default", "hot", false) {
        Lookup::Hit(h) => h.fields.version,
        other => panic!("{other:?}"),
    };
    match std::env::var("YAPLR_INDEX_CRASH_STEP") {
        Ok(step) => {
            let step: u32 = step.parse().unwrap();
            FAULT_AT.store(step, Ordering::Relaxed);
            if step == 7 || step == 8 {
                w.remove("default", "victim").unwrap();
            } else {
                w.put(&inline("hot", v + 1, &pattern(v + 1))).unwrap();
            }
            // SAFETY: ends the process at once.
            unsafe { libc::_exit(3) };
        }
        Err(_) => {
            let mut v = v;
            loop {
                v += 1;
                w.put(&inline("hot", v, &pattern(v))).unwrap();
                let other = format!("o{}", v % 40);
                w.put(&inline(&other, v, &pattern(v * 3))).unwrap();
                if v % 5 == 0 {
                    w.remove("default", &format!("o{}", (v + 7) % 40)).unwrap();
                }
            }
        }
    }
}

/// A store with "hot" at version 1, "victim" and some others.
fn crash_store(tag: &str) -> (TempStore, Writer) {
    let t = TempStore::new(tag);
    let mut w = writer(&t);
    w.put(&inline("hot", 1, &pattern(1))).unwrap();
    w.put(&inline("victim", 1, b"doomed")).unwrap();
    for i in 0..10u64 {
        w.put(&inline(&format!("o{i}"), i + 2, &pattern(i * 3))).unwrap();
    }
    // A free block of the class of hot's next value, so that the change
    // takes it from a free list (and one of another class after it).
    w.put(&inline("spare", 1, &pattern(2))).unwrap();
    w.put(&inline("spare2", 1, &pattern(40))).unwrap();
    w.remove("default", "spare2").unwrap();
    w.remove("default", "spare").unwrap();
    (t, w)
}

#[test]
fn a_writer_that_dies_at_any_step_of_a_change_leaves_a_whole_index() {
    for step in 1..=9u32 {
        let (t, mut w) = crash_store(&format!("step{step}"));
        let ix = Index::open(&t.store).unwrap().unwrap();
        let status = crash_child(&t, &[("YAPLR_INDEX_CRASH_STEP", step.to_string())])
            .wait()
            .unwrap();
        assert_eq!(status.code(), Some(0), "step {step}: the writer did not die there");
        // The dead writer's lock passes to the next writer, which finishes
        // or undoes its change.
        w.put(&inline("after", 50, b"next")).unwrap();
        check_arena(&w);
        match (step, ix.get("default", "hot", true)) {
            // Died before it published: undone.
            (1..=3, Lookup::Hit(h)) => assert_eq!(h.fields.version, 1, "step {step}"),
            // Died while or after it published: done.
            (4..=6 | 9, Lookup::Hit(h)) => {
                assert_eq!(h.fields.version, 2, "step {step}");
                assert_eq!(h.payload.unwrap(), pattern(2));
            }
            (7 | 8, Lookup::Hit(h)) => assert_eq!(h.fields.version, 1),
            (_, other) => panic!("step {step}: {other:?}"),
        }
        let victim = ix.get("default", "victim", true);
        if step == 7 || step == 8 {
            assert_eq!(victim, Lookup::Absent, "step {step}");
        } else {
            assert!(matches!(victim, Lookup::Hit(_)), "step {step}");
        }
        // And the index goes on working: every value as last written.
        for v in 3..200u64 {
            w.put(&inline("hot", v, &pattern(v))).unwrap();
            w.put(&inline(&format!("o{}", v % 10), v, &pattern(v))).unwrap();
        }
        check_arena(&w);
        let h = hit(&ix, "hot");
        assert_eq!((h.fields.version, h.payload.unwrap()), (199, pattern(199)));
    }
}

#[test]
fn writers_killed_at_random_moments_leave_a_whole_index() {
    let (t, mut w) = crash_store("kill");
    let ix = Index::open(&t.store).unwrap().unwrap();
    let mut last = 1;
    for round in 0..40u64 {
        let mut child = crash_child(&t, &[]);
        // A pseudo-random moment: 3 to 40 ms into its changes.
        std::thread::sleep(Duration::from_micros(3000 + (round * 7919) % 37000));
        child.kill().unwrap();
        child.wait().unwrap();
        // Repairs what the child left, if anything.
        w.put(&inline("after", 1000 + round, b"next")).unwrap();
        check_arena(&w);
        let h = hit(&ix, "hot");
        let v = h.fields.version;
        assert_eq!(h.payload.unwrap(), pattern(v), "round {round}");
        assert!(v >= last, "round {round}: from {last} back to {v}");
        last = v;
    }
    assert!(last > 40, "the children made {last} changes");
}

#[test]
fn the_header_is_laid_out_as_documented() {
    use super::layout::{Header, Intent, MUTEX_SIZE};
    use std::mem::{offset_of, size_of};
    assert_eq!(offset_of!(Header, closed), 80);
    assert_eq!(offset_of!(Header, arena_top), 88);
    assert_eq!(offset_of!(Header, free), 120);
    assert_eq!(offset_of!(Header, mutex_size), 312);
    assert_eq!(offset_of!(Header, intent), 320);
    assert_eq!(size_of::<Intent>(), 112);
    assert_eq!(offset_of!(Header, lock), 432);
    assert_eq!(size_of::<libc::pthread_mutex_t>(), MUTEX_SIZE as usize);
}

#[test]
fn a_damaged_record_makes_readers_ask_and_never_allocates_its_lengths() {
    let t = TempStore::new("damaged");
    let mut w = writer(&t);
    w.put(&inline("a", 1, b"one")).unwrap();
    let ix = Index::open(&t.store).unwrap().unwrap();
    // The body's first string length, bincode's varint: 0xFF then 8 bytes
    // of length, here 2^40 (a read of it would try to allocate a TiB).
    let (i, _) = w.find("default", "a", key_hash("default", "a"));
    let at = w.ix.slot(i).rec.load(Ordering::Relaxed);
    let words = w.ix.arena_words(at + RECORD_HEAD as u64, 2).unwrap();
    let mut b = [0u8; 16];
    b[0] = 0xff;
    b[1..9].copy_from_slice(&(1u64 << 40).to_le_bytes());
    words[0].store(u64::from_ne_bytes(b[..8].try_into().unwrap()), Ordering::Relaxed);
    words[1].store(u64::from_ne_bytes(b[8..].try_into().unwrap()), Ordering::Relaxed);
    assert_eq!(ix.get("default", "a", true), Lookup::Ask);
    assert_eq!(ix.entries(None), None);
}

#[test]
fn readers_see_all_of_a_batch_or_none_of_it() {
    let t = TempStore::new("batch");
    let mut w = writer(&t);
    w.put(&inline("a", 1, &pattern(1))).unwrap();
    w.put(&inline("b", 1, &pattern(1))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = t.store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ix = Index::open(&store).unwrap().unwrap();
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if ix.is_closed() {
                        ix = Index::open(&store).unwrap().unwrap();
                    }
                    // "a" then "b": "b" is never older than "a" was.
                    let (Lookup::Hit(a), Lookup::Hit(b)) =
                        (ix.get("default", "a", false), ix.get("default", "b", false))
                    else {
                        continue;
                    };
                    assert!(
                        b.fields.version >= a.fields.version,
                        "saw a at {} then b at {}",
                        a.fields.version,
                        b.fields.version
                    );
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut v = 1;
    while Instant::now() < deadline {
        v += 1;
        w.begin_batch();
        w.put(&inline("a", v, &pattern(v))).unwrap();
        // Some churn inside the batch, so that a reader has time to look.
        for k in 0..5 {
            w.put(&inline(&format!("x{k}"), v, &pattern(v + k))).unwrap();
        }
        w.put(&inline("b", v, &pattern(v))).unwrap();
        w.end_batch();
        // Readers wait out a batch (or ask the helper): leave them room
        // between batches.
        std::thread::sleep(Duration::from_micros(100));
    }
    stop.store(true, Ordering::Relaxed);
    let checked: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(checked > 0);
    assert!(v > 100, "only {v} batches");
}
