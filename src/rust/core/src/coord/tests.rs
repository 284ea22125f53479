//! Tests of the coordination region with real processes. Children are
//! forked from the (multi-threaded) test harness: a child touches only the
//! mapping (through the success paths of the slot operations, which
//! allocate nothing) and pthread calls, and leaves with `_exit`.

use super::layout::{key_hash, MAX_SLOTS};
use super::*;
use crate::testing::{close_inherited_fds, fork_child, Child, TempStore};
use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

const NS: &str = DEFAULT_NAMESPACE;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A generous wait, for calls that must succeed on a loaded machine.
fn long() -> Wait<'static> {
    Wait::at_most(secs(10))
}

/// In a child: write `bytes` to the pipe; whether all went.
fn child_write(fd: RawFd, bytes: &[u8]) -> bool {
    // SAFETY: fd is the open write end of a pipe; the buffer is valid for
    // its length.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(n).is_ok_and(|n| n == bytes.len())
}

/// In a child: sleep (bounded, in case the parent dies without killing).
fn child_sleep(d: Duration) {
    let micros = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
    // SAFETY: usleep has no preconditions.
    unsafe { libc::usleep(micros) };
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Parent side: read exactly `n` bytes from the pipe within `limit`.
fn read_bytes(fd: &OwnedFd, n: usize, limit: Duration) -> Vec<u8> {
    let start = Instant::now();
    let mut got = Vec::new();
    while got.len() < n {
        let left = limit.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "the child said {got:?} of {n} bytes in time");
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, timeout) } <= 0 {
            continue;
        }
        let mut buf = vec![0u8; n - got.len()];
        // SAFETY: buf is writable for its length; fd is open.
        let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let r = usize::try_from(r).unwrap_or(0);
        assert!(r > 0, "the child closed the pipe after {got:?}");
        got.extend_from_slice(&buf[..r]);
    }
    got
}

fn monotonic_ns() -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: t is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

/// A child that acquires the lock, says so on a pipe, then lingers until
/// killed, or (`exit_after`) sleeps that long, writes the monotonic time
/// and exits still holding it.
fn spawn_lock_holder(r: &Region, l: SlotRef, exit_after: Option<Duration>) -> (Child, OwnedFd) {
    let (rd, wr) = pipe();
    let wfd = wr.as_raw_fd();
    let child = fork_child(|| {
        close_inherited_fds(wfd);
        if !matches!(r.lock_acquire(l, Wait::at_most(secs(5))), Ok(Ok(_))) {
            return 2;
        }
        if !child_write(wfd, b"k") {
            return 3;
        }
        match exit_after {
            None => {
                child_sleep(secs(30));
                0
            }
            Some(d) => {
                child_sleep(d);
                let now = monotonic_ns();
                if child_write(wfd, &now.to_ne_bytes()) {
                    0
                } else {
                    4
                }
            }
        }
    });
    drop(wr);
    assert_eq!(read_bytes(&rd, 1, secs(10)), b"k");
    (child, rd)
}

fn counter(r: &Region, name: &str) -> SlotRef {
    r.insert(Kind::Counter, NS, name, long()).unwrap()
}

fn lock(r: &Region, name: &str) -> SlotRef {
    r.insert(Kind::Lock, NS, name, long()).unwrap()
}

/// `count` names whose keys start probing at slot `home` of `r`.
fn colliding(r: &Region, kind: Kind, home: u32, count: usize) -> Vec<String> {
    let n = u64::from(r.slot_count());
    (0..)
        .map(|i| format!("k{i}"))
        .filter(|name| key_hash(kind.code(), NS, name) % n == u64::from(home))
        .take(count)
        .collect()
}

/// Bytes the file takes on its filesystem.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_region_is_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Region>();
}

#[test]
fn a_killed_holder_passes_the_lock_to_the_next_locker() {
    let t = TempStore::new("killed");
    let r = Region::create(&t.store).unwrap();
    let l = lock(&r, "job");
    let (child, _pipe) = spawn_lock_holder(&r, l, None);
    let holder = r.lock_holder(l).unwrap().expect("the child holds it");
    assert_eq!(holder.pid, child.pid());
    assert!(holder.since_ns > 0);
    // A short wait times out, naming the lock and its holder.
    let err = r.lock_acquire(l, Wait::at_most(ms(100))).unwrap_err();
    match &err {
        Error::Timeout { waited_for, .. } => {
            assert!(waited_for.contains("lock \"job\""), "{err}");
            assert!(
                waited_for.contains(&format!("held by process {}", child.pid())),
                "{err}"
            );
        }
        e => panic!("expected a timeout, got {e:?}"),
    }
    let entries = r.entries(Kind::Lock, None);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].owner_pid, child.pid());
    let start = Instant::now();
    child.kill();
    assert_eq!(r.lock_holder(l).unwrap(), None, "a dead holder reads as none");
    let got = r.lock_acquire(l, Wait::at_most(secs(5))).unwrap().unwrap();
    let took = start.elapsed();
    eprintln!("the lock passed on {took:?} after its holder was killed");
    assert!(got.previous_holder_died);
    assert!(took < secs(5), "took {took:?}");
    assert_eq!(r.lock_holder(l).unwrap().unwrap().pid, sys::getpid());
    r.lock_release(l).unwrap().unwrap();
    assert_eq!(r.lock_holder(l).unwrap(), None);
    let again = r.lock_acquire(l, long()).unwrap().unwrap();
    assert!(!again.previous_holder_died);
    r.lock_release(l).unwrap().unwrap();
}

#[test]
fn a_waiter_gets_the_lock_when_its_holder_exits_holding_it() {
    let t = TempStore::new("exit");
    let r = Region::create(&t.store).unwrap();
    let l = lock(&r, "job");
    let (child, pipe) = spawn_lock_holder(&r, l, Some(ms(300)));
    let start = Instant::now();
    // Waits in another process while the holder lives, then gets the lock.
    let got = r.lock_acquire(l, Wait::at_most(secs(10))).unwrap().unwrap();
    let acquired_at = monotonic_ns();
    let took = start.elapsed();
    assert!(got.previous_holder_died);
    let died_at = i64::from_ne_bytes(read_bytes(&pipe, 8, secs(5)).try_into().unwrap());
    let latency = Duration::from_nanos(u64::try_from(acquired_at - died_at).unwrap_or(0));
    eprintln!("the waiter got the lock {latency:?} after its holder's last words");
    assert!(took < secs(5), "took {took:?}");
    assert!(latency < secs(5), "latency {latency:?}");
    assert_eq!(child.wait(), 0);
    r.lock_release(l).unwrap().unwrap();
}

#[test]
fn a_held_lock_times_out_at_the_deadline_whatever_the_nanoseconds() {
    let t = TempStore::new("timeout");
    let r = Region::create(&t.store).unwrap();
    let l = lock(&r, "busy");
    let (child, _pipe) = spawn_lock_holder(&r, l, None);
    // Start 0.9 s waits at instants whose nanoseconds make now + 0.9 s (and
    // now + a 50 ms slice, for the last) carry into the seconds.
    for start_nanos in [50_000_000, 250_000_000, 500_000_000, 750_000_000, 970_000_000] {
        let settle = Instant::now();
        loop {
            let n = mutex::realtime_now().tv_nsec;
            if (start_nanos..start_nanos + 20_000_000).contains(&n) {
                break;
            }
            assert!(settle.elapsed() < secs(5));
            std::thread::sleep(Duration::from_micros(500));
        }
        let start = Instant::now();
        let err = r.lock_acquire(l, Wait::at_most(ms(900))).unwrap_err();
        let took = start.elapsed();
        match err {
            Error::Timeout { seconds, .. } => assert!((seconds - 0.9).abs() < 1e-9),
            e => panic!("expected a timeout, got {e:?}"),
        }
        assert!(took >= ms(900), "took {took:?}");
        assert!(took < secs(6), "took {took:?}");
    }
    // A zero timeout tries once.
    let start = Instant::now();
    let err = r.lock_acquire(l, Wait::at_most(Duration::ZERO)).unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(start.elapsed() < secs(2));
    // A single timedlock whose deadline needed a carry times out, no EINVAL.
    let now = mutex::realtime_now();
    let d = Duration::from_nanos(u64::try_from(1_000_000_000 - now.tv_nsec).unwrap() + 30_000_000);
    let deadline = mutex::deadline_after(now, d);
    let raw = r.slot(l.index).unwrap().mutex.as_ptr();
    // SAFETY: the slot's mutex is initialized and mapped.
    let rc = unsafe { libc::pthread_mutex_timedlock(raw, &deadline) };
    assert_eq!(rc, libc::ETIMEDOUT);
    child.kill();
}

#[test]
fn an_interrupted_wait_for_a_lock_stops() {
    let t = TempStore::new("intr");
    let r = Region::create(&t.store).unwrap();
    let l = lock(&r, "busy");
    let (_child, _pipe) = spawn_lock_holder(&r, l, None);
    let calls = Cell::new(0);
    let interrupted = || {
        calls.set(calls.get() + 1);
        calls.get() >= 3
    };
    let start = Instant::now();
    let wait = Wait {
        timeout: secs(30),
        interrupted: &interrupted,
    };
    let err = r.lock_acquire(l, wait).unwrap_err();
    match &err {
        Error::Interrupted { waited_for } => assert!(waited_for.contains("\"busy\""), "{err}"),
        e => panic!("expected an interruption, got {e:?}"),
    }
    assert_eq!(calls.get(), 3);
    assert!(start.elapsed() < secs(5));
}

#[test]
fn four_processes_count_to_80000() {
    let t = TempStore::new("count");
    let r = Region::create(&t.store).unwrap();
    let c = counter(&r, "hits");
    let children: Vec<Child> = (0..4)
        .map(|_| {
            fork_child(|| {
                close_inherited_fds(-1);
                for _ in 0..20_000 {
                    if !matches!(r.counter_add(c, 1, Wait::at_most(secs(30))), Ok(Ok(_))) {
                        return 2;
                    }
                }
                0
            })
        })
        .collect();
    for child in children {
        assert_eq!(child.wait(), 0);
    }
    assert_eq!(r.counter_get(c), Ok(80_000));
}

#[test]
fn freed_slots_make_old_refs_stale() {
    let t = TempStore::new("stale");
    let r = Region::create_with(&t.store, 8).unwrap();
    let c = counter(&r, "a");
    assert_eq!(r.counter_add(c, 5, long()).unwrap(), Ok(5));
    assert_eq!(r.find(Kind::Counter, NS, "a"), Some(c));
    assert_eq!(r.insert(Kind::Counter, NS, "a", long()).unwrap(), c);
    // The kind is part of the key.
    assert_eq!(r.find(Kind::Lock, NS, "a"), None);
    let l = lock(&r, "a");
    assert_ne!(l.index, c.index);
    assert_eq!(r.counter_add(l, 1, long()).unwrap(), Err(Stale));
    assert_eq!(r.counter_get(l), Err(Stale));
    assert_eq!(r.lock_acquire(c, long()).unwrap(), Err(Stale));
    assert!(r.free(c, long()).unwrap());
    assert!(!r.free(c, long()).unwrap(), "freed twice");
    assert_eq!(r.find(Kind::Counter, NS, "a"), None);
    assert_eq!(r.counter_get(c), Err(Stale));
    assert_eq!(r.counter_add(c, 1, long()).unwrap(), Err(Stale));
    assert_eq!(r.counter_set(c, 1, long()).unwrap(), Err(Stale));
    assert_eq!(r.counter_cas(c, 5, 1, long()).unwrap(), Err(Stale));
    // The key again: a fresh counter, and the old ref stays stale even
    // when the new one lands in the same slot.
    let c2 = counter(&r, "a");
    assert_ne!(c2, c);
    assert!(c2.index != c.index || c2.incarnation > c.incarnation);
    assert_eq!(r.counter_get(c2), Ok(0));
    assert_eq!(r.counter_get(c), Err(Stale));
    // Locks.
    assert!(r.lock_acquire(l, long()).unwrap().is_ok());
    r.lock_release(l).unwrap().unwrap();
    assert!(r.free(l, long()).unwrap());
    assert_eq!(r.lock_acquire(l, long()).unwrap(), Err(Stale));
    assert_eq!(r.lock_release(l).unwrap(), Err(Stale));
    assert_eq!(r.lock_holder(l), Err(Stale));
    // A bad ref is stale, not a panic.
    let bogus = SlotRef {
        index: 99,
        incarnation: 1,
    };
    assert_eq!(r.counter_get(bogus), Err(Stale));
    assert_eq!(r.counter_add(bogus, 1, long()).unwrap(), Err(Stale));
    assert!(!r.free(bogus, long()).unwrap());
}

#[test]
fn colliding_keys_resolve_and_tombstones_are_reused() {
    let t = TempStore::new("collide");
    let r = Region::create_with(&t.store, 8).unwrap();
    let names = colliding(&r, Kind::Counter, 6, 5);
    // Home 6: the chain wraps around the end of the table.
    let refs: Vec<SlotRef> = names[..4].iter().map(|n| counter(&r, n)).collect();
    let indices: Vec<u32> = refs.iter().map(|s| s.index).collect();
    assert_eq!(indices, [6, 7, 0, 1]);
    for (i, s) in refs.iter().enumerate() {
        r.counter_set(*s, i64::try_from(i).unwrap() * 10, long())
            .unwrap()
            .unwrap();
    }
    for (i, name) in names[..4].iter().enumerate() {
        let s = r.find(Kind::Counter, NS, name).unwrap();
        assert_eq!(s, refs[i]);
        assert_eq!(r.counter_get(s), Ok(i64::try_from(i).unwrap() * 10));
    }
    // A hole in the chain: the keys after it are still found.
    assert!(r.free(refs[1], long()).unwrap());
    assert_eq!(r.slot(7).unwrap().state.load(Ordering::SeqCst), TOMBSTONE);
    assert_eq!(r.find(Kind::Counter, NS, &names[1]), None);
    assert_eq!(r.find(Kind::Counter, NS, &names[2]), Some(refs[2]));
    assert_eq!(r.find(Kind::Counter, NS, &names[3]), Some(refs[3]));
    // The next colliding key takes the tombstone, with a new incarnation.
    let fresh = counter(&r, &names[4]);
    assert_eq!(fresh.index, 7);
    assert_eq!(fresh.incarnation, refs[1].incarnation + 2);
    assert_eq!(r.counter_get(fresh), Ok(0));
    assert_eq!(r.counter_get(refs[1]), Err(Stale));
    // Listing.
    let listed: Vec<(String, i64)> = r
        .entries(Kind::Counter, None)
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    let mut want: Vec<(String, i64)> = vec![
        (names[0].clone(), 0),
        (names[2].clone(), 20),
        (names[3].clone(), 30),
        (names[4].clone(), 0),
    ];
    want.sort();
    assert_eq!(listed, want);
    assert!(r.entries(Kind::Counter, Some("other")).is_empty());
    assert_eq!(r.entries(Kind::Counter, Some(NS)).len(), 4);
    assert!(r.entries(Kind::Lock, None).is_empty());
}

#[test]
fn a_full_table_is_no_space() {
    let t = TempStore::new("full");
    let r = Region::create_with(&t.store, 4).unwrap();
    let refs: Vec<SlotRef> = (0..4).map(|i| counter(&r, &format!("c{i}"))).collect();
    let err = r.insert(Kind::Lock, NS, "one more", long()).unwrap_err();
    assert_eq!(err.kind(), "no_space");
    let text = err.to_string();
    assert!(
        text.contains("holds at most 4 counters and locks; remove some counters, or release locks"),
        "{text}"
    );
    assert!(text.contains(&t.dir().display().to_string()), "{text}");
    // What exists is still found, in a table with no FREE slot.
    assert_eq!(r.insert(Kind::Counter, NS, "c2", long()).unwrap(), refs[2]);
    assert_eq!(r.find(Kind::Counter, NS, "c3"), Some(refs[3]));
    assert_eq!(r.find(Kind::Counter, NS, "absent"), None);
    // A freed slot makes room.
    assert!(r.free(refs[0], long()).unwrap());
    let l = lock(&r, "one more");
    assert_eq!(l.index, refs[0].index);
    assert_eq!(r.find(Kind::Lock, NS, "one more"), Some(l));
}

#[test]
fn free_locks_make_room_in_a_full_table() {
    let t = TempStore::new("reclaim");
    let r = Region::create_with(&t.store, 6).unwrap();
    let c = counter(&r, "kept");
    let held = lock(&r, "held");
    assert!(!r.lock_acquire(held, long()).unwrap().unwrap().previous_holder_died);
    let free: Vec<SlotRef> = (0..4).map(|i| lock(&r, &format!("free{i}"))).collect();
    assert_eq!(r.insert(Kind::Counter, NS, "new", long()).unwrap_err().kind(), "no_space");
    // The free locks go; the counter and the held lock stay.
    assert_eq!(r.reclaim_free_locks(), 4);
    assert_eq!(r.find(Kind::Counter, NS, "kept"), Some(c));
    assert_eq!(r.find(Kind::Lock, NS, "held"), Some(held));
    assert!(free.iter().all(|s| r.lock_acquire(*s, long()).unwrap().is_err()));
    assert_eq!(r.find(Kind::Lock, NS, "free0"), None);
    r.insert(Kind::Counter, NS, "new", long()).unwrap();
    // A lock made again is free.
    let again = lock(&r, "free0");
    assert!(r.lock_acquire(again, long()).unwrap().is_ok());
    r.lock_release(again).unwrap().unwrap();
    r.lock_release(held).unwrap().unwrap();
    assert_eq!(r.reclaim_free_locks(), 2);
    // A lock left held by a process that died is kept: its next locker
    // learns that the holder died.
    let orphan = lock(&r, "orphan");
    let child = crate::testing::fork_child(|| {
        i32::from(!matches!(r.lock_acquire(orphan, long()), Ok(Ok(_))))
    });
    assert_eq!(child.wait(), 0);
    assert_eq!(r.reclaim_free_locks(), 0);
    assert!(r.lock_acquire(orphan, long()).unwrap().unwrap().previous_holder_died);
    r.lock_release(orphan).unwrap().unwrap();
}

#[test]
fn a_forked_child_can_not_release_its_parents_lock() {
    let t = TempStore::new("fork");
    let r = Region::create(&t.store).unwrap();
    let l = lock(&r, "mine");
    assert!(!r
        .lock_acquire(l, long())
        .unwrap()
        .unwrap()
        .previous_holder_died);
    let parent = sys::getpid();
    let raw = r.slot(l.index).unwrap().mutex.as_ptr();
    let child = fork_child(|| {
        close_inherited_fds(-1);
        match r.release_raw(l) {
            Release::NotHolder { holder } if holder == parent => {}
            Release::Done => return 1,
            _ => return 2,
        }
        // Nor does pthread let it unlock the mutex, nor take it.
        // SAFETY: the mutex is initialized, in the inherited mapping.
        if unsafe { libc::pthread_mutex_unlock(raw) } != libc::EPERM {
            return 3;
        }
        // SAFETY: as above.
        if unsafe { libc::pthread_mutex_trylock(raw) } != libc::EBUSY {
            return 4;
        }
        0
    });
    assert_eq!(child.wait(), 0);
    let holder = r.lock_holder(l).unwrap().expect("still held");
    assert_eq!(holder.pid, parent);
    // Another process still can not take it (a plain timed wait: the
    // error path of `lock_acquire` allocates, which a child must not).
    let slot = r.slot(l.index).unwrap();
    let child = fork_child(|| {
        close_inherited_fds(-1);
        // SAFETY: the mutex is initialized, in the inherited mapping.
        match unsafe { slot.mutex.lock_within(ms(100), &never) } {
            Waited::TimedOut => 0,
            _ => 1,
        }
    });
    assert_eq!(child.wait(), 0);
    // Nor can another thread of this process release it.
    let err = std::thread::scope(|s| s.spawn(|| r.lock_release(l)).join().unwrap()).unwrap_err();
    assert_eq!(err.kind(), "bad_argument");
    assert!(err.to_string().contains("another thread"), "{err}");
    // The holder relocking is refused at once.
    let start = Instant::now();
    let err = r.lock_acquire(l, long()).unwrap_err();
    assert!(
        err.to_string()
            .contains("this process already holds lock \"mine\""),
        "{err}"
    );
    assert!(start.elapsed() < secs(2));
    // A held lock is not freed from under its holder by its own thread.
    let err = r.free(l, long()).unwrap_err();
    assert!(err.to_string().contains("release it before"), "{err}");
    r.lock_release(l).unwrap().unwrap();
    let err = r.lock_release(l).unwrap_err();
    assert!(err.to_string().contains("is not held"), "{err}");
    assert!(r.free(l, long()).unwrap());
}

#[test]
fn counters_stay_within_doubles() {
    let t = TempStore::new("range");
    let r = Region::create(&t.store).unwrap();
    let c = r.insert(Kind::Counter, "ns", "big", long()).unwrap();
    r.counter_set(c, MAX_VALUE - 1, long()).unwrap().unwrap();
    assert_eq!(r.counter_add(c, 1, long()).unwrap(), Ok(MAX_VALUE));
    let err = r.counter_add(c, 1, long()).unwrap_err();
    assert_eq!(err.kind(), "bad_argument");
    let text = err.to_string();
    assert!(
        text.contains("counter \"big\" in namespace \"ns\""),
        "{text}"
    );
    assert!(text.contains("stays 9007199254740992"), "{text}");
    assert_eq!(r.counter_get(c), Ok(MAX_VALUE));
    // Beyond i64 too.
    assert!(r.counter_add(c, i64::MAX, long()).is_err());
    assert_eq!(r.counter_get(c), Ok(MAX_VALUE));
    assert!(r.counter_set(c, MAX_VALUE + 1, long()).is_err());
    assert!(r.counter_set(c, i64::MIN, long()).is_err());
    assert_eq!(r.counter_get(c), Ok(MAX_VALUE));
    r.counter_set(c, -MAX_VALUE, long()).unwrap().unwrap();
    let err = r.counter_add(c, -1, long()).unwrap_err();
    assert!(err.to_string().contains("stays -9007199254740992"), "{err}");
    assert!(r.counter_cas(c, -MAX_VALUE, MAX_VALUE + 1, long()).is_err());
    assert_eq!(r.counter_get(c), Ok(-MAX_VALUE));
    assert_eq!(r.counter_cas(c, 0, 5, long()).unwrap(), Ok(false));
    assert_eq!(r.counter_cas(c, -MAX_VALUE, 7, long()).unwrap(), Ok(true));
    assert_eq!(r.counter_get(c), Ok(7));
    assert_eq!(r.counter_add(c, -10, long()).unwrap(), Ok(-3));
}

#[test]
fn create_reuses_a_region_of_this_boot_and_replaces_others() {
    let t = TempStore::new("create");
    let boot_a = *b"aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa";
    let boot_b = *b"bbbbbbbb-bbbb-bbbb-bbbb-bbbbbbbbbbbb";
    let r1 = Region::create_for_boot(&t.store, 16, &boot_a).unwrap();
    let meta = std::fs::metadata(t.store.coord_path()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), u64::try_from(layout::file_len(16)).unwrap());
    let c = counter(&r1, "x");
    r1.counter_add(c, 3, long()).unwrap().unwrap();
    // The helper starting again in the same boot keeps the counters.
    let r2 = Region::create_for_boot(&t.store, 16, &boot_a).unwrap();
    assert_eq!(std::fs::metadata(t.store.coord_path()).unwrap().ino(), meta.ino());
    assert_eq!(r2.find(Kind::Counter, NS, "x"), Some(c));
    assert_eq!(r2.counter_get(c), Ok(3));
    // After a reboot: a new file; the old one is closed for its mappers.
    let r3 = Region::create_for_boot(&t.store, 16, &boot_b).unwrap();
    let ino3 = std::fs::metadata(t.store.coord_path()).unwrap().ino();
    assert_ne!(ino3, meta.ino());
    assert!(r1.is_closed() && r2.is_closed());
    assert!(!r3.is_closed());
    assert_eq!(r3.find(Kind::Counter, NS, "x"), None);
    // Another slot count: replaced.
    let r4 = Region::create_for_boot(&t.store, 32, &boot_b).unwrap();
    assert_eq!(r4.slot_count(), 32);
    assert!(r3.is_closed());
    // A closed region: replaced.
    r4.close();
    let r5 = Region::create_for_boot(&t.store, 32, &boot_b).unwrap();
    assert!(!r5.is_closed());
    assert_ne!(r5.path(), Path::new(""));
    counter(&r5, "y");
    // Bad magic: re-initialized.
    drop((r1, r2, r3, r4, r5));
    let mut bytes = std::fs::read(t.store.coord_path()).unwrap();
    bytes[..8].copy_from_slice(b"garbage!");
    std::fs::write(t.store.coord_path(), &bytes).unwrap();
    let r6 = Region::create_for_boot(&t.store, 32, &boot_b).unwrap();
    assert_eq!(r6.find(Kind::Counter, NS, "y"), None);
    // A truncated file: re-initialized.
    drop(r6);
    std::fs::write(t.store.coord_path(), b"short").unwrap();
    let r7 = Region::create_for_boot(&t.store, 32, &boot_b).unwrap();
    assert_eq!(r7.slot_count(), 32);
    // An unknown boot id never reuses a file.
    let ino7 = std::fs::metadata(t.store.coord_path()).unwrap().ino();
    let zero = [0u8; BOOT_ID_LEN];
    let r8 = Region::create_for_boot(&t.store, 32, &zero).unwrap();
    assert_ne!(std::fs::metadata(t.store.coord_path()).unwrap().ino(), ino7);
    assert!(r7.is_closed() && !r8.is_closed());
    assert!(!t.dir().join(COORD_TMP_NAME).exists());
    // Silly sizes are refused.
    assert!(Region::create_with(&t.store, 0).is_err());
    assert!(Region::create_with(&t.store, MAX_SLOTS + 1).is_err());
    t.store.check_entries().unwrap();
    t.store.remove_all();
    assert!(!t.store.coord_path().exists());
}

#[test]
fn open_maps_the_helpers_region_or_nothing() {
    let t = TempStore::new("open");
    assert!(Region::open(&t.store).unwrap().is_none());
    assert!(Region::open(&Store::new(t.dir().join("none")))
        .unwrap()
        .is_none());
    let helper = Region::create(&t.store).unwrap();
    assert_eq!(helper.slot_count(), DEFAULT_SLOTS);
    let client = Region::open(&t.store).unwrap().expect("a region");
    // The two mappings share the table.
    let c = client.insert(Kind::Counter, NS, "shared", long()).unwrap();
    client.counter_add(c, 2, long()).unwrap().unwrap();
    assert_eq!(helper.find(Kind::Counter, NS, "shared"), Some(c));
    assert_eq!(helper.counter_get(c), Ok(2));
    // Closed: the client notices; a new opener gets nothing.
    helper.close();
    assert!(client.is_closed());
    assert!(Region::open(&t.store).unwrap().is_none());
    drop((helper, client));
    // A file of another boot is an error for a client, and left alone.
    let other = *b"cccccccc-cccc-cccc-cccc-cccccccccccc";
    drop(Region::create_for_boot(&t.store, 8, &other).unwrap());
    let err = Region::open(&t.store).unwrap_err();
    assert_eq!(err.kind(), "corrupt");
    assert!(err.to_string().contains("before this machine"), "{err}");
    // So is one that is no region.
    let len = std::fs::metadata(t.store.coord_path()).unwrap().len();
    std::fs::write(t.store.coord_path(), vec![7u8; usize::try_from(len).unwrap()]).unwrap();
    let err = Region::open(&t.store).unwrap_err();
    assert!(err.to_string().contains("not a coordination region"), "{err}");
    assert_eq!(std::fs::read(t.store.coord_path()).unwrap()[..8], [7u8; 8]);
}

#[test]
fn a_link_named_coord_is_refused() {
    let t = TempStore::new("link");
    let elsewhere = TempStore::new("victim");
    let victim = elsewhere.dir().join("precious");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, t.store.coord_path()).unwrap();
    let err = Region::create(&t.store).unwrap_err();
    assert_eq!(err.kind(), "store");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = Region::open(&t.store).unwrap_err();
    assert_eq!(err.kind(), "store");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(t.store.coord_path())
        .unwrap()
        .file_type()
        .is_symlink());
    let err = t.store.check_entries().unwrap_err();
    assert!(err.to_string().contains(COORD_NAME), "{err}");
    std::fs::remove_file(t.store.coord_path()).unwrap();
    // Nor a link under the temporary name.
    std::os::unix::fs::symlink(&victim, t.dir().join(COORD_TMP_NAME)).unwrap();
    assert!(t.store.check_entries().is_err());
    let r = Region::create(&t.store).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!t.dir().join(COORD_TMP_NAME).exists());
    t.store.check_entries().unwrap();
    drop(r);
}

#[test]
fn an_inserter_dying_with_the_table_leaves_no_half_written_slot() {
    let t = TempStore::new("repair");
    let r = Region::create_with(&t.store, 8).unwrap();
    let names = colliding(&r, Kind::Counter, 2, 3);
    let a = counter(&r, &names[0]);
    assert_eq!(a.index, 2);
    r.counter_add(a, 1, long()).unwrap().unwrap();
    // A child takes the table mutex, starts claiming the next slot of the
    // chain and dies there.
    let key = PackedKey::new(Kind::Counter.code(), NS, &names[1]).unwrap();
    let table = r.header().table.as_ptr();
    let child = fork_child(|| {
        close_inherited_fds(-1);
        // SAFETY: the table mutex is initialized, in the inherited mapping.
        if unsafe { libc::pthread_mutex_lock(table) } != 0 {
            return 2;
        }
        let Some(slot) = r.slot(3) else {
            return 3;
        };
        r.begin_claim(3, slot, &key);
        0
    });
    assert_eq!(child.wait(), 0);
    let s3 = r.slot(3).unwrap();
    assert_eq!(s3.state.load(Ordering::SeqCst), WRITING);
    let before = s3.incarnation.load(Ordering::SeqCst);
    // Lookups skip the half-written slot.
    assert_eq!(r.find(Kind::Counter, NS, &names[1]), None);
    assert_eq!(r.find(Kind::Counter, NS, &names[0]), Some(a));
    // The next insert repairs it into a tombstone, which it then reuses.
    let b = counter(&r, &names[2]);
    assert_eq!(b.index, 3);
    assert_eq!(b.incarnation, before + 2);
    assert_eq!(r.find(Kind::Counter, NS, &names[2]), Some(b));
    assert_eq!(r.find(Kind::Counter, NS, &names[1]), None);
    let c = counter(&r, &names[1]);
    assert_eq!(c.index, 4);
    assert_eq!(r.counter_add(c, 5, long()).unwrap(), Ok(5));
    assert_eq!(r.counter_add(b, 7, long()).unwrap(), Ok(7));
    assert_eq!(r.counter_get(a), Ok(1));
    // The table mutex is as good as new.
    assert!(r.free(b, long()).unwrap());
    counter(&r, "another");
}

#[test]
fn the_table_times_out_and_stays_usable() {
    let t = TempStore::new("table");
    let r = Region::create_with(&t.store, 8).unwrap();
    let table = r.header().table.as_ptr();
    let (rd, wr) = pipe();
    let wfd = wr.as_raw_fd();
    let child = fork_child(|| {
        close_inherited_fds(wfd);
        // SAFETY: the table mutex is initialized, in the inherited mapping.
        if unsafe { libc::pthread_mutex_lock(table) } != 0 {
            return 2;
        }
        child_write(wfd, b"k");
        child_sleep(secs(30));
        0
    });
    drop(wr);
    assert_eq!(read_bytes(&rd, 1, secs(10)), b"k");
    let err = r
        .insert(Kind::Counter, NS, "n", Wait::at_most(ms(100)))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("waiting for the coordination table of the store"),
        "{err}"
    );
    // Lookups do not wait for it.
    assert_eq!(r.find(Kind::Counter, NS, "n"), None);
    child.kill();
    counter(&r, "n");
}

#[test]
fn lookups_never_see_a_torn_slot() {
    let t = TempStore::new("torn");
    let r = Region::create_with(&t.store, 4).unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("name-{i}-{}", "x".repeat(i * 40))).collect();
    /// Stops the writer however the readers end (a panic included).
    struct Stop(std::sync::atomic::AtomicBool);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let stop = Stop(std::sync::atomic::AtomicBool::new(false));
    let stop = &stop;
    std::thread::scope(|s| {
        // A writer frees and re-inserts keys, so slots keep being reused.
        s.spawn(|| {
            let mut i = 0;
            while !stop.0.load(Ordering::Relaxed) {
                let name = &names[i % names.len()];
                if let Some(slot) = r.find(Kind::Counter, NS, name) {
                    r.free(slot, long()).unwrap();
                } else if let Err(e) = r.insert(Kind::Counter, NS, name, long()) {
                    assert_eq!(e.kind(), "no_space");
                }
                i += 1;
            }
        });
        let readers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut checked = 0u64;
                    let start = Instant::now();
                    while start.elapsed() < ms(500) {
                        for name in &names {
                            let Some(found) = r.find(Kind::Counter, NS, name) else {
                                continue;
                            };
                            let slot = r.slot(found.index).unwrap();
                            let (incarnation, key) = Region::snapshot(slot, |s, state| {
                                (state == LIVE).then(|| s.read_key()).flatten()
                            });
                            // None: being freed (TOMBSTONE is stored
                            // before the incarnation is bumped).
                            if let (true, Some((ns, got))) = (incarnation == found.incarnation, key)
                            {
                                assert_eq!((ns.as_str(), &got), (NS, name));
                                checked += 1;
                            }
                        }
                    }
                    checked
                })
            })
            .collect();
        let checked: Vec<_> = readers.into_iter().map(|h| h.join()).collect();
        stop.0.store(true, Ordering::Relaxed);
        let checked: u64 = checked.into_iter().map(|c| c.unwrap()).sum();
        assert!(checked > 0);
    });
}

#[test]
fn unused_slots_take_no_memory() {
    let t = TempStore::new("sparse");
    let r = Region::create(&t.store).unwrap();
    let full = u64::try_from(layout::file_len(DEFAULT_SLOTS)).unwrap();
    assert_eq!(std::fs::metadata(t.store.coord_path()).unwrap().len(), full);
    for i in 0..100 {
        counter(&r, &format!("c{i}"));
    }
    for i in 0..10_000 {
        assert_eq!(r.find(Kind::Counter, NS, &format!("absent{i}")), None);
    }
    assert_eq!(r.entries(Kind::Counter, None).len(), 100);
    // The header, the bitmap and the pages of at most 100 slots.
    let used = allocated(&t.store.coord_path());
    assert!(used <= 12_288 + 100 * 8192, "{used} bytes allocated");
}

#[test]
fn a_region_whose_lock_is_held_stays_mapped() {
    let t = TempStore::new("held");
    let r = Region::create(&t.store).unwrap();
    let l = lock(&r, "kept");
    r.lock_acquire(l, long()).unwrap().unwrap();
    assert!(HELD.load(Ordering::Relaxed) >= 1);
    let r2 = Region::open(&t.store).unwrap().unwrap();
    let base = r.base() as usize;
    drop(r);
    // Still mapped: the lock is still there for others to see.
    assert_eq!(r2.lock_holder(l).unwrap().unwrap().pid, sys::getpid());
    // SAFETY: the mapping was kept (leaked) by the drop: reading its first
    // byte is reading the magic.
    let first = unsafe { *(base as *const u8) };
    assert_eq!(first, b'Y');
    let r3 = Region::open(&t.store).unwrap().unwrap();
    let l3 = r3.find(Kind::Lock, NS, "kept").unwrap();
    assert_eq!(r3.lock_release(l3).unwrap(), Ok(()));
}
