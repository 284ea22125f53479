//! Coordination through a real yaplrd: waits, takes and conditional
//! stores, each client on its own connection (as separate processes are).

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use yaplr_core::backend::{Condition, PayloadSink};
use yaplr_core::progress::{Meter, Silent};
use yaplr_core::session::Source;
use yaplr_core::{sys, CallOptions, Error, Key, Payload, Session};

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_yaplrd"))
}

fn no() -> bool {
    false
}

fn opts(timeout_ms: u64) -> CallOptions<'static> {
    CallOptions {
        timeout: Duration::from_millis(timeout_ms),
        autostart: true,
        interrupted: &no,
    }
}

const OK_MS: u64 = 30_000;

struct TempStore {
    dir: PathBuf,
}

impl TempStore {
    fn new(name: &str) -> TempStore {
        let dir = std::env::temp_dir().join(format!("yaplr-co-{name}-{}", sys::getpid()));
        let _ = std::fs::remove_dir_all(&dir);
        TempStore { dir }
    }
    fn session(&self) -> Session {
        Session::local(self.dir.clone(), Some(exe().into()))
    }
    fn object_files(&self) -> usize {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".yobj"))
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let o = CallOptions {
            autostart: false,
            ..opts(OK_MS)
        };
        let _ = self.session().quit(false, false, &o);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A payload of raw bytes.
struct Bytes(Vec<u8>);

impl Source for Bytes {
    fn kind(&self) -> u32 {
        yaplr_core::format::KIND_R_SERIALIZED
    }
    fn size_hint(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
    fn write(&mut self, out: &mut dyn PayloadSink, _: &mut Meter<'_>) -> yaplr_core::Result<()> {
        out.write(&self.0)
    }
}

fn key(tag: &str) -> Key {
    Key::new("default", tag).unwrap()
}

fn put_if(s: &mut Session, tag: &str, bytes: &[u8], c: Condition) -> yaplr_core::Result<u64> {
    s.put_if(
        &key(tag),
        &mut Bytes(bytes.to_vec()),
        Default::default(),
        c,
        &opts(OK_MS),
        &mut Silent,
    )
}

fn bytes_of(f: yaplr_core::Found) -> Vec<u8> {
    match f.payload {
        Payload::Bytes(b) => b,
        Payload::File(mut file) => {
            use std::io::{Read, Seek};
            // The payload follows the object file's header.
            let mut all = Vec::new();
            file.rewind().unwrap();
            file.read_to_end(&mut all).unwrap();
            all[all.len() - usize::try_from(f.entry.size).unwrap()..].to_vec()
        }
    }
}

#[test]
fn conditional_stores_compare_versions() {
    let t = TempStore::new("cas");
    let mut s = t.session();
    let v1 = put_if(&mut s, "x", b"one", Condition::Absent).unwrap();
    let e = put_if(&mut s, "x", b"two", Condition::Absent).unwrap_err();
    assert!(
        matches!(e, Error::Conflict { expected: None, found: Some(v), .. } if v == v1),
        "{e:?}"
    );
    assert_eq!(e.kind(), "conflict");
    let e = put_if(&mut s, "x", b"two", Condition::Version(v1 + 100)).unwrap_err();
    assert!(matches!(e, Error::Conflict { .. }), "{e:?}");
    // Nothing was stored by the refused calls.
    assert_eq!(bytes_of(s.get(&key("x"), &opts(OK_MS)).unwrap()), b"one");
    let v2 = put_if(&mut s, "x", b"two", Condition::Version(v1)).unwrap();
    assert!(v2 > v1);
    assert_eq!(bytes_of(s.get(&key("x"), &opts(OK_MS)).unwrap()), b"two");
    // A refused large value leaves no file behind.
    let big = vec![7u8; 200_000];
    let files = t.object_files();
    assert!(put_if(&mut s, "x", &big, Condition::Absent).is_err());
    assert_eq!(t.object_files(), files);
    let v3 = put_if(&mut s, "x", &big, Condition::Version(v2)).unwrap();
    assert!(v3 > v2);
    let e = put_if(&mut s, "nothing", b"a", Condition::Version(1)).unwrap_err();
    assert!(matches!(e, Error::Conflict { found: None, .. }), "{e:?}");
}

#[test]
fn a_wait_returns_when_the_value_arrives() {
    let t = TempStore::new("wait");
    let mut s = t.session();
    s.start(&opts(OK_MS)).unwrap();
    let dir = t.dir.clone();
    let waiter = std::thread::spawn(move || {
        let mut s = Session::local(dir, Some(exe().into()));
        let f = s.wait(&key("later"), None, &opts(OK_MS)).unwrap();
        (bytes_of(f), Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished());
    put_if(&mut s, "later", b"here", Condition::Always).unwrap();
    let sent = Instant::now();
    let (got, at) = waiter.join().unwrap();
    assert_eq!(got, b"here");
    // Woken by the store, not by a poll (generous bound: no timing test).
    assert!(at.duration_since(sent) < Duration::from_secs(5));
    // A value that is there is returned at once; after its version, the
    // next one is awaited.
    let f = s.wait(&key("later"), None, &opts(OK_MS)).unwrap();
    let v = f.entry.version;
    let e = s
        .wait(&key("later"), Some(v), &opts(300))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("newer than version"), "{e}");
    put_if(&mut s, "later", b"next", Condition::Always).unwrap();
    let f = s.wait(&key("later"), Some(v), &opts(OK_MS)).unwrap();
    assert!(f.entry.version > v);
    assert_eq!(bytes_of(f), b"next");
}

#[test]
fn a_wait_times_out_with_the_tag() {
    let t = TempStore::new("timeout");
    let mut s = t.session();
    let started = Instant::now();
    let e = s
        .wait(&key("never"), None, &opts(400))
        .map(|_| ())
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(390));
    assert!(started.elapsed() < Duration::from_secs(10));
    match e {
        Error::Timeout {
            waited_for,
            seconds,
        } => {
            assert!(waited_for.contains("\"never\""), "{waited_for}");
            assert!((seconds - 0.4).abs() < 1e-9);
        }
        e => panic!("{e:?}"),
    }
    // The connection is still good.
    assert!(!s.exists(&key("never"), &opts(OK_MS)).unwrap());
}

#[test]
fn of_several_takers_one_gets_each_value() {
    let t = TempStore::new("take");
    let mut s = t.session();
    s.start(&opts(OK_MS)).unwrap();
    const N: usize = 300;
    let got = Arc::new(Mutex::new(Vec::new()));
    let takers: Vec<_> = (0..3)
        .map(|_| {
            let dir = t.dir.clone();
            let got = got.clone();
            std::thread::spawn(move || {
                let mut s = Session::local(dir, Some(exe().into()));
                loop {
                    match s.take(&key("box"), &opts(1500)) {
                        Ok(f) => {
                            let b = bytes_of(f);
                            if b == b"stop" {
                                return;
                            }
                            got.lock().unwrap().push(b);
                        }
                        Err(Error::Timeout { .. }) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            })
        })
        .collect();
    // A one-slot mailbox: put only into an empty box, large and small
    // values alternating.
    for i in 0..N {
        let mut v = format!("{i}").into_bytes();
        if i % 10 == 0 {
            v.resize(100_000, b' ');
        }
        loop {
            match put_if(&mut s, "box", &v, Condition::Absent) {
                Ok(_) => break,
                Err(Error::Conflict { .. }) => std::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    for _ in 0..3 {
        loop {
            match put_if(&mut s, "box", b"stop", Condition::Absent) {
                Ok(_) => break,
                Err(Error::Conflict { .. }) => std::thread::yield_now(),
                Err(e) => panic!("{e:?}"),
            }
        }
    }
    for h in takers {
        h.join().unwrap();
    }
    let got = got.lock().unwrap();
    assert_eq!(got.len(), N);
    let distinct: HashSet<String> = got
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .collect();
    assert_eq!(distinct.len(), N);
    assert!(!s.exists(&key("box"), &opts(OK_MS)).unwrap());
    // Taken files are gone.
    assert_eq!(t.object_files(), 0);
}

#[test]
fn an_abandoned_wait_takes_nothing() {
    let t = TempStore::new("abandon");
    let mut s = t.session();
    s.start(&opts(OK_MS)).unwrap();
    // Give the helper time to notice the hang-up, then send: the value
    // stays for the next reader.
    interrupted_take(&t.dir, "gift", Duration::from_millis(200));
    std::thread::sleep(Duration::from_millis(200));
    put_if(&mut s, "gift", b"kept", Condition::Always).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        bytes_of(s.get(&key("gift"), &opts(OK_MS)).unwrap()),
        b"kept"
    );
    // The same when the value comes at once, before the helper looked: the
    // change that stores it finds the taker's connection closed and puts
    // the value back.
    for round in 0..10 {
        let tag = format!("gift{round}");
        interrupted_take(&t.dir, &tag, Duration::from_millis(100));
        put_if(&mut s, &tag, b"kept", Condition::Always).unwrap();
        assert_eq!(bytes_of(s.get(&key(&tag), &opts(OK_MS)).unwrap()), b"kept");
    }
}

/// A taker of `tag` in the store `dir` that gives up (an interrupt) after
/// `after`, which closes its connection.
fn interrupted_take(dir: &Path, tag: &str, after: Duration) {
    let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, f2, k) = (dir.to_path_buf(), flag.clone(), key(tag));
    let taker = std::thread::spawn(move || {
        let mut s = Session::local(dir, Some(exe().into()));
        let interrupted = move || f2.load(std::sync::atomic::Ordering::SeqCst);
        let o = CallOptions {
            timeout: Duration::from_secs(30),
            autostart: true,
            interrupted: &interrupted,
        };
        s.take(&k, &o).map(|_| ()).unwrap_err()
    });
    std::thread::sleep(after);
    flag.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = taker.join().unwrap();
    assert!(matches!(e, Error::Interrupted { .. }), "{e:?}");
}

#[test]
fn many_takers_get_each_of_many_values_once() {
    let t = TempStore::new("takers");
    let mut s = t.session();
    s.start(&opts(OK_MS)).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let takers: Vec<_> = (0..4)
        .map(|_| {
            let (dir, got) = (t.dir.clone(), got.clone());
            std::thread::spawn(move || {
                let mut s = Session::local(dir, Some(exe().into()));
                loop {
                    let v = bytes_of(s.take(&key("box"), &opts(OK_MS)).unwrap());
                    if v == b"end" {
                        return;
                    }
                    got.lock().unwrap().push(v);
                }
            })
        })
        .collect();
    let mut sent = HashSet::new();
    for i in 0..200u32 {
        // A value in the box is taken before the next is put.
        let v = i.to_le_bytes().to_vec();
        let deadline = Instant::now() + Duration::from_secs(30);
        while put_if(&mut s, "box", &v, Condition::Absent).is_err() {
            assert!(Instant::now() < deadline, "the box was never emptied");
            std::thread::sleep(Duration::from_micros(200));
        }
        sent.insert(v);
        if i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for _ in 0..4 {
        let deadline = Instant::now() + Duration::from_secs(30);
        while put_if(&mut s, "box", b"end", Condition::Absent).is_err() {
            assert!(Instant::now() < deadline, "the box was never emptied");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    for h in takers {
        h.join().unwrap();
    }
    let got = got.lock().unwrap();
    assert_eq!(got.len(), 200, "every value taken once");
    assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), sent);
}

#[test]
fn a_barrier_releases_n_at_once_and_is_reusable() {
    let t = TempStore::new("barrier");
    let mut s = t.session();
    s.start(&opts(OK_MS)).unwrap();
    let b = key("b");
    for round in 0..3 {
        let arrivals: Vec<_> = (0..2)
            .map(|_| {
                let dir = t.dir.clone();
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut s = Session::local(dir, Some(exe().into()));
                    s.barrier(&b, 3, &opts(OK_MS))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            arrivals.iter().all(|h| !h.is_finished()),
            "round {round}: released before the third arrival"
        );
        s.barrier(&b, 3, &opts(OK_MS)).unwrap();
        for h in arrivals {
            h.join().unwrap().unwrap();
        }
    }
    // Too few: a timeout, and the arrival is withdrawn, so that it does
    // not count for the next round.
    let e = s.barrier(&b, 2, &opts(300)).unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(e.to_string().contains("barrier \"b\""), "{e}");
    let dir = t.dir.clone();
    let other = std::thread::spawn(move || {
        let mut s = Session::local(dir, Some(exe().into()));
        s.barrier(&key("b"), 2, &opts(400))
    });
    assert!(matches!(other.join().unwrap(), Err(Error::Timeout { .. })));
    // A different n while others wait is refused.
    let dir = t.dir.clone();
    let waiting = std::thread::spawn(move || {
        let mut s = Session::local(dir, Some(exe().into()));
        s.barrier(&key("b"), 2, &opts(OK_MS))
    });
    std::thread::sleep(Duration::from_millis(150));
    let e = s.barrier(&b, 5, &opts(OK_MS)).unwrap_err();
    assert!(matches!(e, Error::BadArgument(_)), "{e:?}");
    s.barrier(&b, 2, &opts(OK_MS)).unwrap();
    waiting.join().unwrap().unwrap();
    // n = 1 passes at once.
    s.barrier(&key("alone"), 1, &opts(OK_MS)).unwrap();
}

fn push(s: &mut Session, q: &str, bytes: &[u8]) {
    s.queue_push(
        &key(q),
        &mut Bytes(bytes.to_vec()),
        Default::default(),
        &opts(OK_MS),
        &mut Silent,
    )
    .unwrap();
}

#[test]
fn a_queue_hands_out_items_in_order_and_leases_survive_a_helper_crash() {
    let t = TempStore::new("queue");
    let mut s = t.session();
    let q = key("jobs");
    assert_eq!(s.queue_length(&q, &opts(OK_MS)).unwrap(), (0, 0));
    let big = vec![3u8; 300_000];
    push(&mut s, "jobs", b"one");
    push(&mut s, "jobs", &big);
    push(&mut s, "jobs", b"three");
    assert_eq!(s.queue_length(&q, &opts(OK_MS)).unwrap(), (3, 0));
    // Items are not objects: listings do not show them.
    assert!(s.list(None, &opts(OK_MS)).unwrap().is_empty());
    let p = s.queue_pop(&q, false, &opts(OK_MS)).unwrap();
    assert!(p.lease.is_none());
    assert_eq!(p.found.entry.tag, "jobs");
    assert_eq!(bytes_of(p.found), b"one");
    let p = s.queue_pop(&q, true, &opts(OK_MS)).unwrap();
    let lease = p.lease.clone().unwrap();
    assert_eq!(bytes_of(p.found), big);
    assert_eq!(s.queue_length(&q, &opts(OK_MS)).unwrap(), (1, 1));
    // A wrong token is refused.
    let mut wrong = lease.clone();
    wrong.token += 1;
    assert!(matches!(
        s.queue_ack(&wrong, &opts(OK_MS)),
        Err(Error::BadArgument(_))
    ));
    // The lease is journaled: a new helper still knows it (this process
    // that holds it lives).
    let pid = s.server_pid().unwrap();
    sys::kill(pid, libc::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while sys::pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.queue_length(&q, &opts(OK_MS)).unwrap(), (1, 1));
    s.queue_ack(&lease, &opts(OK_MS)).unwrap();
    assert_eq!(s.queue_length(&q, &opts(OK_MS)).unwrap(), (1, 0));
    // Acknowledged once only.
    assert!(s.queue_ack(&lease, &opts(OK_MS)).is_err());
    let p = s.queue_pop(&q, false, &opts(OK_MS)).unwrap();
    assert_eq!(bytes_of(p.found), b"three");
    let e = s.queue_pop(&q, false, &opts(300)).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("queue \"jobs\""), "{e}");
    assert_eq!(t.object_files(), 0);
}

#[test]
fn a_waiting_consumer_gets_the_next_push() {
    let t = TempStore::new("queuewait");
    let mut s = t.session();
    s.start(&opts(OK_MS)).unwrap();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let dir = t.dir.clone();
            std::thread::spawn(move || {
                let mut s = Session::local(dir, Some(exe().into()));
                let mut got = Vec::new();
                loop {
                    let p = s.queue_pop(&key("work"), true, &opts(OK_MS)).unwrap();
                    let lease = p.lease.clone().unwrap();
                    let b = bytes_of(p.found);
                    s.queue_ack(&lease, &opts(OK_MS)).unwrap();
                    if b == b"stop" {
                        return got;
                    }
                    got.push(String::from_utf8(b).unwrap());
                }
            })
        })
        .collect();
    for i in 0..600 {
        push(&mut s, "work", format!("{i}").as_bytes());
    }
    for _ in 0..3 {
        push(&mut s, "work", b"stop");
    }
    let mut all: Vec<u32> = consumers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .map(|x| x.parse().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..600).collect::<Vec<u32>>());
    assert_eq!(s.queue_length(&key("work"), &opts(OK_MS)).unwrap(), (0, 0));
}

#[test]
fn counters_count_across_sessions_and_share_the_keys_of_objects() {
    let t = TempStore::new("counters");
    let mut s = t.session();
    let c = key("hits");
    assert_eq!(s.counter_get(&c, &opts(OK_MS)).unwrap(), 0);
    assert!(!s.exists(&c, &opts(OK_MS)).unwrap());
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let dir = t.dir.clone();
            std::thread::spawn(move || {
                let mut s = Session::local(dir, Some(exe().into()));
                for _ in 0..5000 {
                    s.counter_add(&key("hits"), 1, &opts(OK_MS)).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(s.counter_get(&c, &opts(OK_MS)).unwrap(), 20_000);
    assert_eq!(s.counter_add(&c, -5, &opts(OK_MS)).unwrap(), 19_995);
    assert!(!s.counter_cas(&c, 1, 2, &opts(OK_MS)).unwrap());
    assert!(s.counter_cas(&c, 19_995, 7, &opts(OK_MS)).unwrap());
    s.counter_set(&c, 1 << 53, &opts(OK_MS)).unwrap();
    assert!(s.counter_add(&c, 1, &opts(OK_MS)).is_err());
    assert_eq!(s.counter_get(&c, &opts(OK_MS)).unwrap(), 1 << 53);
    // A counter is listed, exists, reads as a double, and holds its tag.
    let list = s.list(None, &opts(OK_MS)).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].tag, "hits");
    assert_eq!(list[0].meta.class, vec!["yaplr_counter".to_string()]);
    assert!(s.exists(&c, &opts(OK_MS)).unwrap());
    let e = put_if(&mut s, "hits", b"x", Condition::Always).unwrap_err();
    assert!(e.to_string().contains("a counter is stored"), "{e}");
    put_if(&mut s, "obj", b"x", Condition::Always).unwrap();
    let e = s.counter_add(&key("obj"), 1, &opts(OK_MS)).unwrap_err();
    assert!(e.to_string().contains("an object is stored"), "{e}");
    // Removed like an object; a new one starts at 0.
    s.remove(&c, &opts(OK_MS)).unwrap();
    assert!(!s.exists(&c, &opts(OK_MS)).unwrap());
    assert_eq!(s.counter_add(&c, 1, &opts(OK_MS)).unwrap(), 1);
    // A helper that quits takes its counters; the next call maps the new
    // helper's table.
    s.quit(false, false, &opts(OK_MS)).unwrap();
    assert_eq!(s.counter_add(&c, 1, &opts(OK_MS)).unwrap(), 1);
}

#[test]
fn locks_exclude_time_out_and_name_their_holder() {
    let t = TempStore::new("locks");
    let mut s = t.session();
    let l = key("door");
    assert!(s.lock_holder(&l, &opts(OK_MS)).unwrap().is_none());
    let held = s.acquire_lock(&l, &opts(OK_MS)).unwrap();
    assert!(!held.previous_holder_died);
    let h = s.lock_holder(&l, &opts(OK_MS)).unwrap().unwrap();
    assert_eq!(h.pid, sys::getpid());
    // Another session (thread) waits, and times out.
    let dir = t.dir.clone();
    let other = std::thread::spawn(move || {
        let mut s = Session::local(dir, Some(exe().into()));
        let started = Instant::now();
        let e = s
            .acquire_lock(&key("door"), &opts(300))
            .map(|_| ())
            .unwrap_err();
        (e, started.elapsed())
    });
    let (e, took) = other.join().unwrap();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    assert!(took >= Duration::from_millis(290));
    // Locks are no objects.
    assert!(s.list(None, &opts(OK_MS)).unwrap().is_empty());
    s.release_lock(&held).unwrap();
    assert!(s.lock_holder(&l, &opts(OK_MS)).unwrap().is_none());
    let dir = t.dir.clone();
    std::thread::spawn(move || {
        let mut s = Session::local(dir, Some(exe().into()));
        let h = s.acquire_lock(&key("door"), &opts(OK_MS)).unwrap();
        s.release_lock(&h).unwrap();
    })
    .join()
    .unwrap();
}
