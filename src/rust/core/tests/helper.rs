//! Integration tests that start a real yaplrd and talk to it as the R
//! package does.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use yaplr_core::client::{CallOptions, Client, Found};
use yaplr_core::object_file::{ObjectMap, ObjectWriter, KIND_R_SERIALIZED};
use yaplr_core::progress::Silent;
use yaplr_core::store::Store;
use yaplr_core::{sys, Error};

const D: &str = yaplr_core::key::DEFAULT_NAMESPACE;

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_yaplrd"))
}

fn no() -> bool {
    false
}

/// The limit of calls that are expected to succeed: generous, so that a
/// loaded machine does not fail them (the tests of timeouts use their own).
const OK_MS: u64 = 30_000;

fn opts(timeout_ms: u64) -> CallOptions<'static> {
    CallOptions {
        timeout: Duration::from_millis(timeout_ms),
        autostart: true,
        interrupted: &no,
    }
}

struct TempStore {
    dir: PathBuf,
}

impl TempStore {
    fn new(name: &str) -> TempStore {
        let dir = std::env::temp_dir().join(format!("yaplr-it-{name}-{}", sys::getpid()));
        let _ = std::fs::remove_dir_all(&dir);
        TempStore { dir }
    }
    fn client(&self) -> Client {
        Client::new(Store::new(&self.dir), Some(exe().into()))
    }
    fn session(&self) -> yaplr_core::Session {
        yaplr_core::Session::local(self.dir.clone(), Some(exe().into()))
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let mut c = self.client();
        let _ = c.quit(
            false,
            &CallOptions {
                autostart: false,
                ..opts(OK_MS)
            },
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait until /proc says the process is in `state` (signals are async).
fn wait_for_state(pid: u32, state: char) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let now = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next());
        if now == Some(state) || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

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
        &opts(OK_MS),
    )
    .unwrap();
}

fn get(c: &mut Client, tag: &str) -> Vec<u8> {
    match c.lookup(D, tag, &opts(OK_MS)).unwrap() {
        Found::File(_, f) => ObjectMap::open(&f).unwrap().payload().to_vec(),
        Found::Inline(_, b) => b,
    }
}

fn file_of(c: &mut Client, tag: &str) -> std::fs::File {
    match c.lookup(D, tag, &opts(OK_MS)).unwrap() {
        Found::File(_, f) => f,
        Found::Inline(..) => panic!("\"{tag}\" is inline"),
    }
}

#[test]
fn publish_lookup_list_remove_quit() {
    let t = TempStore::new("basic");
    let mut c = t.client();
    put(&mut c, "a", b"first");
    put(&mut c, "b", &[9u8; 100_000]);
    put(&mut c, "a", b"second");
    assert_eq!(get(&mut c, "a"), b"second");
    assert_eq!(get(&mut c, "b").len(), 100_000);
    let list = c.list(None, &opts(OK_MS)).unwrap();
    assert_eq!(
        list.iter().map(|e| e.tag.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    // The overwritten file is gone: two objects, two files.
    assert_eq!(Store::new(&t.dir).object_ids().unwrap().len(), 2);
    assert!(c.exists(D, "b", &opts(OK_MS)).unwrap());
    c.remove(D, "b", &opts(OK_MS)).unwrap();
    assert!(!c.exists(D, "b", &opts(OK_MS)).unwrap());
    assert!(matches!(
        c.remove(D, "b", &opts(OK_MS)),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        c.lookup(D, "zz", &opts(OK_MS)),
        Err(Error::NotFound { .. })
    ));
    let pid = c.helper_pid().unwrap();
    assert!(c.quit(false, &opts(OK_MS)).unwrap());
    assert!(!sys::pid_alive(pid));
    assert!(!t.dir.exists(), "quit leaves an empty store dir behind");
}

#[test]
fn a_reader_keeps_its_object_across_overwrite() {
    let t = TempStore::new("overwrite");
    let mut c = t.client();
    put(&mut c, "x", b"old value");
    let f = file_of(&mut c, "x");
    put(&mut c, "x", b"new value");
    c.remove(D, "x", &opts(OK_MS)).unwrap();
    assert_eq!(ObjectMap::open(&f).unwrap().payload(), b"old value");
}

#[test]
fn killed_helper_is_replaced_and_loses_nothing() {
    let t = TempStore::new("kill");
    let mut c = t.client();
    put(&mut c, "keep", b"precious");
    let pid = c.helper_pid().unwrap();
    let _ = sys::kill(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sys::pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    // The next call notices, starts a new helper, which rebuilds its catalog.
    assert_eq!(get(&mut c, "keep"), b"precious");
    assert_ne!(c.helper_pid().unwrap(), pid);
    // A fresh client (another process, as far as the helper knows) too.
    let mut c2 = t.client();
    assert_eq!(get(&mut c2, "keep"), b"precious");
}

#[test]
fn a_stopped_helper_gives_a_timeout_not_a_hang() {
    let t = TempStore::new("stop");
    let mut c = t.client();
    c.ping(&opts(OK_MS)).unwrap();
    let pid = c.helper_pid().unwrap();
    let _ = sys::kill(pid, libc::SIGSTOP);
    wait_for_state(pid, 'T');
    let t0 = Instant::now();
    let r = c.ping(&opts(300));
    let _ = sys::kill(pid, libc::SIGCONT);
    match r {
        Err(Error::Timeout { waited_for, .. }) => {
            assert!(waited_for.contains("helper"), "{waited_for}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(250));
    // After SIGCONT it answers again (on a new connection).
    c.ping(&opts(OK_MS)).unwrap();
}

#[test]
fn concurrent_first_calls_start_one_helper() {
    let t = TempStore::new("race");
    let dir = t.dir.clone();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || {
                let mut c = Client::new(Store::new(dir), Some(exe().into()));
                c.ping(&opts(OK_MS)).unwrap();
                c.helper_pid().unwrap()
            })
        })
        .collect();
    let pids: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");
}

#[test]
fn no_autostart_gives_no_server() {
    let t = TempStore::new("noauto");
    let mut c = t.client();
    let o = CallOptions {
        autostart: false,
        ..opts(1000)
    };
    assert!(matches!(c.ping(&o), Err(Error::NoServer { .. })));
    assert!(!c.is_running().unwrap());
}

#[test]
fn dead_writers_files_are_removed_on_start() {
    let t = TempStore::new("dead");
    let store = Store::new(&t.dir);
    store.prepare().unwrap();
    // A writer that died mid-write: WRITING state, creator pid that is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    // (A filesystem without O_TMPFILE, or an older version, names the file
    // before it is complete.)
    let path = store.object_path(&yaplr_core::store::new_id());
    let h = yaplr_core::object_file::Header {
        state: yaplr_core::object_file::STATE_WRITING,
        kind: KIND_R_SERIALIZED,
        creator_pid: dead_pid,
        payload_len: 0,
        ctime_ns: 1,
        namespace: D.into(),
        tag: "half".into(),
        checksum: 0,
    };
    let mut bytes = h.encode().to_vec();
    bytes.extend_from_slice(&[0u8; 10]);
    std::fs::write(&path, &bytes).unwrap();
    let mut c = t.client();
    c.ping(&opts(OK_MS)).unwrap();
    assert!(!path.exists());
    assert!(c.list(None, &opts(OK_MS)).unwrap().is_empty());
}

#[test]
fn inline_objects_survive_a_killed_helper_and_mix_with_files() {
    let t = TempStore::new("inline");
    let mut c = t.client();
    c.put_inline(
        D,
        "small",
        1,
        b"tiny".to_vec(),
        Default::default(),
        &opts(OK_MS),
    )
    .unwrap();
    put(&mut c, "big", &[3u8; 200_000]);
    c.put_inline(
        D,
        "gone",
        1,
        b"x".to_vec(),
        Default::default(),
        &opts(OK_MS),
    )
    .unwrap();
    c.remove(D, "gone", &opts(OK_MS)).unwrap();
    // A file object replaced by an inline one loses its file.
    put(&mut c, "swap", b"file");
    c.put_inline(
        D,
        "swap",
        1,
        b"inline".to_vec(),
        Default::default(),
        &opts(OK_MS),
    )
    .unwrap();
    assert_eq!(Store::new(&t.dir).object_ids().unwrap().len(), 1);
    // No file per small object.
    assert!(matches!(
        c.lookup(D, "small", &opts(OK_MS)).unwrap(),
        Found::Inline(..)
    ));
    let pid = c.helper_pid().unwrap();
    let _ = sys::kill(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while sys::pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(get(&mut c, "small"), b"tiny");
    assert_eq!(get(&mut c, "swap"), b"inline");
    assert_eq!(get(&mut c, "big").len(), 200_000);
    assert!(matches!(
        c.lookup(D, "gone", &opts(OK_MS)),
        Err(Error::NotFound { .. })
    ));
    let tags: Vec<String> = c
        .list(None, &opts(OK_MS))
        .unwrap()
        .into_iter()
        .map(|e| e.tag)
        .collect();
    assert_eq!(tags, ["big", "small", "swap"]);
}

#[test]
fn many_inline_overwrites_compact_the_journal() {
    let t = TempStore::new("compact");
    let mut c = t.client();
    for i in 0..3000u32 {
        c.put_inline(
            D,
            "k",
            1,
            vec![(i % 251) as u8; 2000],
            Default::default(),
            &opts(OK_MS),
        )
        .unwrap();
    }
    let len = std::fs::metadata(t.dir.join(yaplr_core::store::JOURNAL_NAME))
        .unwrap()
        .len();
    assert!(len < 4 << 20, "journal of {len} bytes was not compacted");
    assert_eq!(get(&mut c, "k"), vec![(2999 % 251) as u8; 2000]);
}

/// A stand-in for a helper of another yaplr version: holds the helper
/// lock, writes its pid, and answers every Hello with a protocol error.
const FAKE_OLD_HELPER: &str = r#"
import fcntl, os, socket, struct, sys
d = sys.argv[1]
os.makedirs(d, mode=0o700, exist_ok=True)
lock = open(os.path.join(d, "yaplrd.lock"), "w")
fcntl.flock(lock, fcntl.LOCK_EX)
lock.write(str(os.getpid())); lock.flush()
for name in ("a" * 32 + ".yobj", "catalog.journal"):
    open(os.path.join(d, name), "w").write("old")
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(d, "yaplrd.sock")); s.listen(8)
print("ready", flush=True)
answer = bytes.fromhex(sys.argv[2])
while True:
    c, _ = s.accept()
    c.recv(4096)
    c.sendall(answer)
    c.close()
"#;

#[test]
fn quit_stops_a_helper_of_another_version() {
    let t = TempStore::new("oldver");
    // Its answer: a protocol error, encoded as this version would.
    let answer = yaplr_core::protocol::encode(&yaplr_core::protocol::Response::Refused {
        kind: "protocol".into(),
        message: "old helper speaks version 1".into(),
    });
    let hex: String = answer.iter().map(|b| format!("{b:02x}")).collect();
    let Ok(mut child) = std::process::Command::new("python3")
        .arg("-c")
        .arg(FAKE_OLD_HELPER)
        .arg(&t.dir)
        .arg(hex)
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("python3 not available; skipping");
        return;
    };
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let mut c = t.client();
    match c.ping(&opts(2000)) {
        Err(Error::Protocol { message }) => assert!(message.contains("version"), "{message}"),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(c.quit(false, &opts(OK_MS)).unwrap());
    let status = child.wait().unwrap();
    assert!(!status.success(), "the stand-in was stopped by a signal");
    assert!(!t.dir.exists(), "its files are removed");
    // The store works again with a helper of this version.
    put(&mut c, "new", b"works");
    assert_eq!(get(&mut c, "new"), b"works");
}

#[test]
fn namespaces_keep_same_tags_apart_and_survive_restarts() {
    let t = TempStore::new("ns");
    let mut c = t.client();
    let o = opts(OK_MS);
    c.put_inline("a", "x", 1, b"in a".to_vec(), Default::default(), &o)
        .unwrap();
    c.put_inline("b", "x", 1, b"in b".to_vec(), Default::default(), &o)
        .unwrap();
    let mut w = ObjectWriter::create(c.store(), "b", "big", KIND_R_SERIALIZED, 0).unwrap();
    w.write(&[5u8; 100_000]).unwrap();
    let (id, _) = w.commit().unwrap();
    c.publish("b", "big", &id, Default::default(), Default::default(), &o)
        .unwrap();
    // A file published under another namespace than its header says is refused.
    let mut w = ObjectWriter::create(c.store(), "a", "y", KIND_R_SERIALIZED, 0).unwrap();
    w.write(b"z").unwrap();
    let (wrong, _) = w.commit().unwrap();
    assert!(matches!(
        c.publish("b", "y", &wrong, Default::default(), Default::default(), &o),
        Err(Error::Corrupt { .. })
    ));
    std::fs::remove_file(c.store().object_path(&wrong)).unwrap();

    let in_ns = |c: &mut Client, ns: &str, tag: &str| match c.lookup(ns, tag, &opts(OK_MS)).unwrap()
    {
        Found::Inline(_, b) => b,
        Found::File(_, f) => ObjectMap::open(&f).unwrap().payload().to_vec(),
    };
    assert_eq!(in_ns(&mut c, "a", "x"), b"in a");
    assert_eq!(in_ns(&mut c, "b", "x"), b"in b");
    assert!(matches!(c.lookup(D, "x", &o), Err(Error::NotFound { .. })));
    assert_eq!(c.list(Some("a"), &o).unwrap().len(), 1);
    let all = c.list(None, &o).unwrap();
    let keys: Vec<(String, String)> = all.into_iter().map(|e| (e.namespace, e.tag)).collect();
    assert_eq!(
        keys,
        [
            ("a".into(), "x".into()),
            ("b".into(), "big".into()),
            ("b".into(), "x".into())
        ]
    );
    // Both rebuild paths keep namespaces: the journal, then file headers.
    for drop_journal in [false, true] {
        let pid = c.helper_pid().unwrap();
        let _ = sys::kill(pid, libc::SIGKILL);
        while sys::pid_alive(pid) {
            std::thread::sleep(Duration::from_millis(2));
        }
        if drop_journal {
            std::fs::remove_file(t.dir.join(yaplr_core::store::JOURNAL_NAME)).unwrap();
        }
        assert_eq!(in_ns(&mut c, "b", "big").len(), 100_000);
        assert!(c.exists("b", "big", &o).unwrap());
        assert!(!c.exists("a", "big", &o).unwrap());
    }
    assert_eq!(c.remove_namespace("b", &o).unwrap(), 1);
    assert_eq!(c.remove_namespace("nothing", &o).unwrap(), 0);
    assert!(c.list(Some("b"), &o).unwrap().is_empty());
    assert!(Store::new(&t.dir).object_ids().unwrap().is_empty());
}

#[test]
fn quit_keep_leaves_objects_for_the_next_helper() {
    let t = TempStore::new("keep");
    let mut c = t.client();
    c.put_inline(
        D,
        "small",
        1,
        b"kept".to_vec(),
        Default::default(),
        &opts(OK_MS),
    )
    .unwrap();
    put(&mut c, "big", &[4u8; 100_000]);
    let pid = c.helper_pid().unwrap();
    assert!(c.quit(true, &opts(OK_MS)).unwrap());
    assert!(!sys::pid_alive(pid));
    assert!(!t.dir.join("yaplrd.sock").exists());
    assert!(!c.is_running().unwrap());
    // A new helper (a new session, or after a reboot for a store on disk)
    // finds everything.
    let mut c2 = t.client();
    assert_eq!(get(&mut c2, "small"), b"kept");
    assert_eq!(get(&mut c2, "big").len(), 100_000);
    assert!(c2.quit(false, &opts(OK_MS)).unwrap());
    assert!(!t.dir.exists());
}

#[test]
fn a_store_on_disk_is_durable_and_not_volatile() {
    // The target directory is on a disk, unlike /dev/shm.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("yaplr-disk-{}", sys::getpid()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::new(&dir);
    store.prepare().unwrap();
    assert!(!store.is_volatile());
    assert!(Store::new("/dev/shm").is_volatile() || !Path::new("/dev/shm").is_dir());
    let mut c = Client::new(store, Some(exe().into()));
    put(&mut c, "on disk", b"value");
    assert_eq!(get(&mut c, "on disk"), b"value");
    assert!(c.quit(true, &opts(OK_MS)).unwrap());
    let mut c = Client::new(Store::new(&dir), Some(exe().into()));
    assert_eq!(get(&mut c, "on disk"), b"value");
    assert!(c.quit(false, &opts(OK_MS)).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn batches_take_effect_together_and_are_read_at_one_moment() {
    use yaplr_core::requests::put_many::PutItem;
    let t = TempStore::new("batch");
    let mut c = t.client();
    let o = opts(OK_MS);
    let mut w = ObjectWriter::create(c.store(), D, "big", KIND_R_SERIALIZED, 0).unwrap();
    w.write(&[6u8; 100_000]).unwrap();
    let (id, _) = w.commit().unwrap();
    let item = |tag: &str, inline: Option<Vec<u8>>, id: Option<String>| PutItem {
        namespace: D.into(),
        tag: tag.into(),
        kind: KIND_R_SERIALIZED,
        ctime_ns: 1,
        inline,
        id,
        meta: Default::default(),
    };
    c.put_inline(D, "a", 1, b"old a".to_vec(), Default::default(), &o)
        .unwrap();
    // One bad item (a duplicate tag): nothing changes.
    let bad = vec![
        item("a", Some(b"new a".to_vec()), None),
        item("a", Some(b"again".to_vec()), None),
    ];
    assert!(c.put_many(bad, &o).is_err());
    assert_eq!(get(&mut c, "a"), b"old a");
    let good = vec![
        item("a", Some(b"new a".to_vec()), None),
        item("big", None, Some(id)),
    ];
    c.put_many(good, &o).unwrap();
    let keys = vec![
        (D.to_string(), "a".to_string()),
        (D.to_string(), "big".to_string()),
    ];
    let found = c.lookup_many(keys.clone(), &o, Ok).unwrap();
    assert!(matches!(&found[0], Found::Inline(_, b) if b == b"new a"));
    match &found[1] {
        Found::File(_, f) => assert_eq!(ObjectMap::open(f).unwrap().payload().len(), 100_000),
        _ => panic!("big is a file"),
    }
    // The batch is one journal record: a restarted helper has both.
    let pid = c.helper_pid().unwrap();
    let _ = sys::kill(pid, libc::SIGKILL);
    while sys::pid_alive(pid) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(c.lookup_many(keys, &o, Ok).unwrap().len(), 2);
    let missing = vec![
        (D.to_string(), "a".to_string()),
        (D.to_string(), "nope".to_string()),
    ];
    assert!(matches!(
        c.lookup_many(missing, &o, Ok),
        Err(Error::NotFound { ref tag, .. }) if tag == "nope"
    ));
}

#[test]
fn dumps_round_trip_between_stores_and_refuse_damage() {
    use yaplr_core::dump;
    let a = TempStore::new("dump-a");
    let b = TempStore::new("dump-b");
    let mut ca = a.client();
    let o = opts(OK_MS);
    let meta = yaplr_core::protocol::Meta {
        description: Some("d".into()),
        ..Default::default()
    };
    ca.put_inline("n1", "small", 1, b"tiny".to_vec(), meta.clone(), &o)
        .unwrap();
    let mut w = ObjectWriter::create(ca.store(), "n2", "big", KIND_R_SERIALIZED, 0).unwrap();
    w.write(&[8u8; 300_000]).unwrap();
    let (id, _) = w.commit().unwrap();
    ca.publish("n2", "big", &id, Default::default(), Default::default(), &o)
        .unwrap();
    let entries = ca.list(None, &o).unwrap();
    let file = std::env::temp_dir().join(format!("yaplr-dump-{}.ydump", sys::getpid()));
    let all = yaplr_core::session::SaveSelection {
        namespace: None,
        tags: &[],
    };
    assert_eq!(a.session().save(&file, all, &o, &mut Silent).unwrap(), 2);
    assert_eq!(dump::entries(&file).unwrap().len(), 2);

    let mut cb = b.client();
    let mut sb = b.session();
    let loaded = sb.load(&file, false, &o, &mut Silent).unwrap();
    assert_eq!(loaded.len(), 2);
    let in_b = cb.list(None, &o).unwrap();
    for (x, y) in entries.iter().zip(&in_b) {
        assert_eq!(
            (&x.namespace, &x.tag, x.size, x.ctime_ns),
            (&y.namespace, &y.tag, y.size, y.ctime_ns)
        );
        assert_eq!(x.meta, y.meta);
    }
    match cb.lookup("n2", "big", &o).unwrap() {
        Found::File(_, f) => {
            assert_eq!(ObjectMap::open(&f).unwrap().payload(), &[8u8; 300_000][..])
        }
        _ => panic!("big is a file"),
    }
    // Loading again refuses to overwrite, before loading anything.
    assert!(matches!(
        sb.load(&file, false, &o, &mut Silent),
        Err(Error::Exists { .. })
    ));
    assert_eq!(sb.load(&file, true, &o, &mut Silent).unwrap().len(), 2);
    // A truncated dump is an error, not a partial load.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let c = TempStore::new("dump-c");
    let mut cc = c.client();
    assert!(matches!(
        c.session().load(&file, false, &o, &mut Silent),
        Err(Error::Corrupt { .. })
    ));
    assert!(cc.list(None, &o).unwrap().is_empty());
    std::fs::remove_file(&file).unwrap();
}
