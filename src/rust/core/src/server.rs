//! yaplrd, the helper: owns the catalog ((namespace, tag) -> object) of one store,
//! answers clients on a Unix socket, one thread per connection, and cleans
//! up after writers that died. Small objects live inline in its journal,
//! large ones in their own files; every change is journaled before it is
//! acknowledged. Exactly one runs per store, guaranteed by an
//! exclusive flock on the store's helper lock file.

use crate::conn::{Conn, Wait};
use crate::error::{Error, Hint, Result};
use crate::journal::{self, Journal, Record};
use crate::lock::FileLock;
use crate::object_file::{self, Header, STATE_COMMITTED, STATE_WRITING};
use crate::protocol::{
    self, Entry, Failure, Meta, PutItem, Request, Response, ServerInfo, INLINE_MAX,
    PROTOCOL_VERSION,
};
use crate::store::{self, Store};
use crate::sys;
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How often the helper looks for files left by dead writers.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// A client that starts a frame must finish it within this time.
const FRAME_DEADLINE: Duration = Duration::from_secs(30);
/// How many superseded object ids a helper remembers (see State::retired).
const RETIRED_KEPT: usize = 4096;
/// Files whose header is unreadable are left alone this long (a writer may
/// be about to write it).
const UNREADABLE_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Data {
    /// In its own object file, by id.
    File(String),
    /// Inline: its payload is in the journal at this offset.
    Inline { at: u64, sum: u64 },
}

#[derive(Debug, Clone)]
struct Obj {
    data: Data,
    size: u64,
    ctime_ns: i64,
    kind: u32,
    meta: journal::Meta,
    seq: u64,
}

impl Obj {
    fn file_id(&self) -> Option<&str> {
        match &self.data {
            Data::File(id) => Some(id),
            Data::Inline { .. } => None,
        }
    }

    /// The record that recreates this object, and where its payload is.
    fn record(&self, key: &Key) -> (Record, Vec<journal::Payload<'static>>) {
        match &self.data {
            Data::File(id) => (
                Record::Link {
                    namespace: key.0.clone(),
                    tag: key.1.clone(),
                    id: id.clone(),
                    ctime_ns: self.ctime_ns,
                    kind: self.kind,
                    size: self.size,
                    meta: self.meta.clone(),
                    seq: self.seq,
                },
                Vec::new(),
            ),
            Data::Inline { at, sum } => (
                Record::Put {
                    namespace: key.0.clone(),
                    tag: key.1.clone(),
                    ctime_ns: self.ctime_ns,
                    kind: self.kind,
                    len: self.size,
                    sum: *sum,
                    meta: self.meta.clone(),
                    seq: self.seq,
                },
                vec![journal::Payload::At {
                    at: *at,
                    len: self.size,
                }],
            ),
        }
    }
}

/// The last change a client made (see protocol::Request::Call).
#[derive(Debug, Clone, Copy)]
struct Applied {
    pid: u32,
    seq: u64,
    answer: u64,
}

/// Who sent a change, with its number and deadline.
#[derive(Debug, Clone, Copy)]
struct Origin {
    client: u64,
    pid: u32,
    seq: u64,
    deadline_ns: u64,
}

struct State {
    store: Store,
    objects: HashMap<Key, Obj>,
    /// The last sequence number given to a stored value.
    seq: u64,
    /// Bytes the objects may use in all (None: up to the filesystem).
    capacity: Option<u64>,
    /// Payload bytes of every object, kept up to date by apply_stored.
    used: u64,
    /// Payload bytes of the inline objects (all in the journal).
    inline_bytes: u64,
    /// Journal bytes beyond the inline payloads after the last rewrite
    /// (record framing, tags, metadata), per object.
    overhead_per_object: u64,
    /// The last change of each client, so a retry is answered, not redone.
    applied: HashMap<u64, Applied>,
    /// After a failed compaction, the journal length to wait for.
    compact_after: u64,
    /// Object files this helper unlinked because a newer value replaced
    /// them (or a remove): a publish of one of them that arrives late was
    /// applied and then superseded, which is a success (bounded, oldest
    /// forgotten first).
    retired: std::collections::VecDeque<String>,
    journal: Journal,
    started_ns: i64,
}

impl State {
    /// Journal a change (with its origin, if a client sent it), then apply
    /// it; the file of a replaced object is unlinked (readers that have it
    /// open or mapped keep it). A change whose deadline has passed is
    /// refused, never applied.
    fn commit(
        &mut self,
        origin: Option<Origin>,
        rec: Record,
        payloads: &[&[u8]],
        answer: u64,
    ) -> Result<()> {
        let rec = match origin {
            Some(o) => {
                if o.deadline_ns != 0 && protocol::monotonic_ns() > o.deadline_ns {
                    return Err(Error::Timeout {
                        waited_for: "the helper, which received the change too late and made none"
                            .into(),
                        seconds: 0.0,
                    });
                }
                if o.seq == 0 {
                    rec
                } else {
                    Record::Batch(vec![
                        rec,
                        Record::Applied {
                            client: o.client,
                            pid: o.pid,
                            seq: o.seq,
                            answer,
                        },
                    ])
                }
            }
            None => rec,
        };
        let at = self.journal.append(&rec, payloads)?;
        self.apply_stored(rec, &mut { at });
        // Compaction waits until the change is answered (see handle).
        Ok(())
    }

    /// Apply a record that is already in the journal, whose payloads start
    /// at `*at`. O(1) per object: the bytes used are kept up to date, and a
    /// replaced or removed object's file is unlinked (each file belongs to
    /// one key).
    fn apply_stored(&mut self, rec: Record, at: &mut u64) {
        let old = match rec {
            Record::Capacity { bytes } => {
                self.capacity = bytes;
                return;
            }
            Record::Batch(recs) => {
                for r in recs {
                    self.apply_stored(r, at);
                }
                return;
            }
            Record::Applied {
                client,
                pid,
                seq,
                answer,
            } => {
                self.applied.insert(client, Applied { pid, seq, answer });
                return;
            }
            Record::Put {
                namespace,
                tag,
                ctime_ns,
                kind,
                len,
                sum,
                meta,
                seq,
            } => {
                let obj = Obj {
                    data: Data::Inline { at: *at, sum },
                    size: len,
                    ctime_ns,
                    kind,
                    meta,
                    seq,
                };
                *at += len;
                self.used += len;
                self.inline_bytes += len;
                let key = (namespace, tag);
                (key.clone(), self.objects.insert(key, obj))
            }
            Record::Link {
                namespace,
                tag,
                id,
                ctime_ns,
                kind,
                size,
                meta,
                seq,
            } => {
                self.used += size;
                let key = (namespace, tag);
                let obj = Obj {
                    data: Data::File(id),
                    size,
                    ctime_ns,
                    kind,
                    meta,
                    seq,
                };
                (key.clone(), self.objects.insert(key, obj))
            }
            Record::Remove { namespace, tag } => {
                let key = (namespace, tag);
                (key.clone(), self.objects.remove(&key))
            }
        };
        let (key, old) = old;
        let Some(old) = old else { return };
        self.used = self.used.saturating_sub(old.size);
        match &old.data {
            Data::Inline { .. } => self.inline_bytes = self.inline_bytes.saturating_sub(old.size),
            Data::File(id) => {
                let same = self.objects.get(&key).and_then(|o| o.file_id()) == Some(id.as_str());
                if !same {
                    let _ = std::fs::remove_file(self.store.object_path(id));
                    if self.retired.len() == RETIRED_KEPT {
                        self.retired.pop_front();
                    }
                    self.retired.push_back(id.clone());
                }
            }
        }
    }
    /// Remove the object files `ids` that no object links to.
    fn drop_unlinked(&self, ids: &[String]) {
        for id in ids {
            if !self
                .objects
                .values()
                .any(|o| o.file_id() == Some(id.as_str()))
            {
                let _ = std::fs::remove_file(self.store.object_path(id));
            }
        }
    }

    /// Payload bytes of every object.
    fn used(&self) -> u64 {
        self.used
    }

    fn free(&self) -> u64 {
        match self.capacity {
            Some(c) => c.saturating_sub(self.used()),
            None => sys::free_space(self.store.dir()).unwrap_or(0),
        }
    }

    /// Refuse a value of `size` bytes for `key` that would take the store
    /// past its capacity (the value it replaces is counted as freed).
    fn check_capacity(&self, key: &Key, size: u64) -> Result<()> {
        let Some(cap) = self.capacity else {
            return Ok(());
        };
        let replaced = self.objects.get(key).map_or(0, |o| o.size);
        let used = self.used() - replaced;
        if used + size > cap {
            return Err(Error::NoSpace {
                needed: size,
                message: format!(
                    "the store \"{}\" has a capacity of {cap} bytes: object \"{}\" needs {size} bytes \
                     but only {} are free",
                    self.store.dir().display(),
                    key.1,
                    cap.saturating_sub(used)
                ),
                hint: Some(Hint::RaiseCapacity),
            });
        }
        Ok(())
    }

    /// Rewrite the journal once a fifth of it is dead records (amortized
    /// O(1) per change), keeping the live objects, the capacity and the
    /// last change of every client that still runs.
    fn maybe_compact(&mut self) {
        let live = self.inline_bytes + self.overhead_per_object * (self.objects.len() as u64 + 1);
        if !self.journal.wants_compaction(live) || self.journal.len() < self.compact_after {
            return;
        }
        if let Err(e) = self.compact() {
            // (A full filesystem, say.) Try again once the journal has
            // grown by a fifth, not on every change.
            self.compact_after = self.journal.len() + self.journal.len() / 5;
            log(&format!("could not compact the journal: {e}"));
        }
    }

    fn compact(&mut self) -> Result<()> {
        self.applied.retain(|_, a| sys::pid_alive(a.pid));
        let keys: Vec<Key> = self.objects.keys().cloned().collect();
        let mut live: Vec<(Record, Vec<journal::Payload<'_>>)> =
            keys.iter().map(|k| self.objects[k].record(k)).collect();
        live.push((
            Record::Capacity {
                bytes: self.capacity,
            },
            Vec::new(),
        ));
        for (client, a) in &self.applied {
            live.push((
                Record::Applied {
                    client: *client,
                    pid: a.pid,
                    seq: a.seq,
                    answer: a.answer,
                },
                Vec::new(),
            ));
        }
        let starts = self.journal.rewrite(live)?;
        for (k, at) in keys.iter().zip(starts) {
            if let Some(Obj {
                data: Data::Inline { at: old, .. },
                ..
            }) = self.objects.get_mut(k)
            {
                *old = at;
            }
        }
        self.overhead_per_object =
            self.journal.len().saturating_sub(self.inline_bytes) / (self.objects.len() as u64 + 1);
        Ok(())
    }
}

type Shared = Arc<Mutex<State>>;
/// Catalog key: (namespace, tag).
type Key = (String, String);

pub fn log(msg: &str) {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[{t:.3}] yaplrd[{}]: {msg}", sys::getpid());
}

fn lock_state(shared: &Shared) -> MutexGuard<'_, State> {
    // A panicking connection thread must not take the whole helper down.
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run the helper for `store` until a Quit request. Returns Ok(false) at
/// once when another helper already serves this store.
/// `ready` is called once the socket accepts connections, or when another
/// helper is found to serve the store, so a launcher can wait for either.
pub fn serve(store: Store, ready: impl FnOnce()) -> Result<bool> {
    store.prepare()?;
    store.check_entries()?;
    let Some(lock) = FileLock::try_lock(&store.helper_lock_path())? else {
        log("another helper already serves this store; exiting");
        ready();
        return Ok(false);
    };
    {
        let mut f = lock.file();
        let _ = f.set_len(0);
        let _ = writeln!(f, "{}", sys::getpid());
    }
    let (journal, records) = Journal::open(store.dir(), !store.is_volatile())?;
    let replayed = records.is_some();
    let damaged = journal.was_damaged();
    let mut st = State {
        store: store.clone(),
        objects: HashMap::new(),
        seq: 0,
        capacity: None,
        used: 0,
        inline_bytes: 0,
        overhead_per_object: 0,
        applied: HashMap::new(),
        compact_after: 0,
        retired: std::collections::VecDeque::new(),
        journal,
        started_ns: crate::codec::now_ns(),
    };
    match records {
        Some(recs) => replay(&mut st, recs, damaged)?,
        None => {
            st.objects = rebuild(&store)?;
            st.used = st.objects.values().map(|o| o.size).sum();
        }
    }
    st.seq = st.objects.values().map(|o| o.seq).max().unwrap_or(0);
    if !replayed || damaged {
        // Serve anyway when this fails (a full filesystem): the journal
        // as it is still replays to the same catalog.
        if let Err(e) = st.compact() {
            log(&format!("could not rewrite the journal at start: {e}"));
        }
    }
    let objects_count = st.objects.len();
    log(&format!(
        "serving {} with {objects_count} object(s)",
        store.dir().display(),
    ));
    let sock = store.socket_path();
    let _ = std::fs::remove_file(&sock);
    // The socket is born private (no thread runs yet, so the process-wide
    // umask can be changed for this one call): no chmod through a path.
    // SAFETY: umask has no preconditions.
    let old_mask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&sock);
    // SAFETY: as above.
    unsafe { libc::umask(old_mask) };
    let listener = bound.map_err(|e| Error::io(format!("binding {}", sock.display()), e))?;
    let sock_ino = std::fs::symlink_metadata(&sock)
        .map(|m| m.ino())
        .unwrap_or(0);
    ready();

    let shared: Shared = Arc::new(Mutex::new(st));

    {
        let shared = shared.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(SWEEP_EVERY);
            let st = lock_state(&shared);
            // Without its socket nobody can reach this helper: it has been
            // replaced or its directory removed, so it leaves.
            let ours = std::fs::symlink_metadata(st.store.socket_path())
                .map(|m| m.ino() == sock_ino)
                .unwrap_or(false);
            if !ours {
                log("the socket was removed; exiting");
                std::process::exit(0);
            }
            sweep(&st);
        });
    }

    let uid = sys::getuid();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log(&format!("accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        match sys::peer_uid(stream.as_raw_fd()) {
            Ok(peer) if peer == uid => {}
            Ok(peer) => {
                log(&format!("refused a connection from uid {peer}"));
                continue;
            }
            Err(e) => {
                log(&format!("could not check a peer's uid: {e}"));
                continue;
            }
        }
        let shared = shared.clone();
        // Out of threads (memory, limits): refuse this connection, keep
        // serving the others.
        let spawned = std::thread::Builder::new()
            .name("yaplrd-conn".into())
            .spawn(move || handle(stream, shared));
        if let Err(e) = spawned {
            log(&format!("could not start a thread for a connection: {e}"));
        }
    }
    drop(lock);
    Ok(true)
}

/// Build the catalog from committed headers; remove what dead writers left.
fn rebuild(store: &Store) -> Result<HashMap<Key, Obj>> {
    let mut objects: HashMap<Key, Obj> = HashMap::new();
    for id in store.object_ids()? {
        let path = store.object_path(&id);
        let header = match store.open_object(&id).map(|f| object_file::read_header(&f)) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                remove_if_stale(&path, &e.to_string());
                continue;
            }
            Err(_) => continue,
        };
        match header.state {
            STATE_COMMITTED => {}
            STATE_WRITING if !sys::pid_alive(header.creator_pid) => {
                log(&format!(
                    "removing {id}: its writer (pid {}) died",
                    header.creator_pid
                ));
                let _ = std::fs::remove_file(&path);
                continue;
            }
            _ => continue,
        }
        let obj = Obj {
            data: Data::File(id.clone()),
            size: header.payload_len,
            ctime_ns: header.ctime_ns,
            kind: header.kind,
            meta: journal::Meta::default(),
            // Renumbered below, in order of creation.
            seq: 0,
        };
        let key = (header.namespace, header.tag);
        match objects.get(&key) {
            Some(old) if (old.ctime_ns, old.file_id()) > (obj.ctime_ns, obj.file_id()) => {
                let _ = std::fs::remove_file(&path);
            }
            Some(old) => {
                if let Some(old_id) = old.file_id() {
                    let _ = std::fs::remove_file(store.object_path(old_id));
                }
                objects.insert(key, obj);
            }
            None => {
                objects.insert(key, obj);
            }
        }
    }
    let mut order: Vec<(i64, Key)> = objects
        .iter()
        .map(|(k, o)| (o.ctime_ns, k.clone()))
        .collect();
    order.sort();
    for (i, (_, k)) in order.into_iter().enumerate() {
        if let Some(o) = objects.get_mut(&k) {
            o.seq = i as u64 + 1;
        }
    }
    Ok(objects)
}

/// Rebuild the catalog from the journal, then check it against the files:
/// links to missing or damaged files are dropped, files nobody links to are
/// removed once their writer is gone.
fn replay(st: &mut State, records: Vec<journal::Stored>, damaged: bool) -> Result<()> {
    for s in records {
        let mut at = s.payload_at;
        st.apply_stored(s.record, &mut at);
    }
    let store = st.store.clone();
    st.objects.retain(|(ns, tag), obj| {
        let Some(id) = obj.file_id() else { return true };
        let ok = store
            .open_object(id)
            .and_then(|f| object_file::read_header(&f))
            .map(|h| h.state == STATE_COMMITTED && &h.tag == tag && &h.namespace == ns)
            .unwrap_or(false);
        if !ok {
            log(&format!(
                "dropping \"{tag}\" ({ns}): its object file {id} is missing or damaged"
            ));
        }
        ok
    });
    let linked: std::collections::HashSet<String> = st
        .objects
        .values()
        .filter_map(|o| o.file_id().map(String::from))
        .collect();
    for id in store.object_ids()? {
        if linked.contains(&id) {
            continue;
        }
        let path = store.object_path(&id);
        match store.open_object(&id).map(|f| object_file::read_header(&f)) {
            Ok(Ok(h)) => {
                let superseded = st
                    .objects
                    .get(&(h.namespace.clone(), h.tag.clone()))
                    .is_some_and(|o| o.ctime_ns >= h.ctime_ns);
                if damaged && !superseded && h.state == STATE_COMMITTED {
                    // The journal lost records: this may be a published
                    // object whose record was among them. Keep it.
                    log(&format!(
                        "adopting object file {id} (\"{}\") after journal damage",
                        h.tag
                    ));
                    let obj = Obj {
                        data: Data::File(id.clone()),
                        size: h.payload_len,
                        ctime_ns: h.ctime_ns,
                        kind: h.kind,
                        meta: journal::Meta::default(),
                        seq: 0,
                    };
                    st.objects.insert((h.namespace, h.tag), obj);
                } else if !sys::pid_alive(h.creator_pid) {
                    // A live writer's file stays, even when a newer value
                    // holds its tag: its publish may be on its way (a retry
                    // after this restart), and it then wins as the later
                    // change. The writer, or the sweep once it is gone,
                    // removes it otherwise.
                    log(&format!(
                        "removing unpublished object file {id} (\"{}\")",
                        h.tag
                    ));
                    let _ = std::fs::remove_file(&path);
                }
            }
            Ok(Err(e)) => remove_if_stale(&path, &e.to_string()),
            Err(_) => {}
        }
    }
    st.used = st.objects.values().map(|o| o.size).sum();
    st.inline_bytes = st
        .objects
        .values()
        .filter(|o| o.file_id().is_none())
        .map(|o| o.size)
        .sum();
    Ok(())
}

fn remove_if_stale(path: &std::path::Path, why: &str) {
    // A yaplr object file this version can not read (a newer format, or a
    // damaged header) is never removed: only garbage that is not one.
    let mut magic = [0u8; 8];
    let is_ours = std::fs::File::open(path)
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut magic, 0)
        })
        .is_ok()
        && &magic == object_file::MAGIC;
    if is_ours {
        return;
    }
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|age| age > UNREADABLE_GRACE)
        .unwrap_or(false);
    if old {
        log(&format!("removing unreadable {}: {why}", path.display()));
        let _ = std::fs::remove_file(path);
    }
}

/// Remove files whose writer died: half-written ones, and committed ones the
/// writer never published.
fn sweep(st: &State) {
    let Ok(ids) = st.store.object_ids() else {
        return;
    };
    let files = st
        .objects
        .values()
        .filter(|o| o.file_id().is_some())
        .count();
    if ids.len() == files {
        return;
    }
    let known: std::collections::HashSet<&str> =
        st.objects.values().filter_map(|o| o.file_id()).collect();
    for id in ids {
        if known.contains(id.as_str()) {
            continue;
        }
        let path = st.store.object_path(&id);
        match st
            .store
            .open_object(&id)
            .map(|f| object_file::read_header(&f))
        {
            Ok(Ok(h)) if !sys::pid_alive(h.creator_pid) => {
                log(&format!(
                    "removing {id} (\"{}\"): its writer (pid {}) died before publishing it",
                    h.tag, h.creator_pid
                ));
                let _ = std::fs::remove_file(&path);
            }
            Ok(Err(e)) => remove_if_stale(&path, &e.to_string()),
            _ => {}
        }
    }
}

fn handle(stream: UnixStream, shared: Shared) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    let conn = Conn::new(stream);
    let mut greeted = false;
    // Who this client is (from its Hello), and the number and deadline of
    // its next change (from a Call frame).
    let mut client = (0u64, 0u32);
    let mut next: Option<(u64, u64)> = None;
    loop {
        // Wait as long as needed for a request to begin, then bound the rest.
        if sys::wait_fd_forever(conn.raw_fd(), false).is_err() {
            return;
        }
        let w = Wait {
            deadline: Some(Instant::now() + FRAME_DEADLINE),
            what: "a client's request",
            seconds: FRAME_DEADLINE.as_secs_f64(),
            interrupted: &|| false,
        };
        let payload = match conn.read_frame(&w) {
            Ok(Some((p, _fds))) => p,
            Ok(None) => return,
            Err(e) => {
                log(&format!("dropping a client: {e}"));
                return;
            }
        };
        let req = match protocol::decode::<Request>(&payload) {
            Ok(r) => r,
            Err(e) => {
                let answer = if greeted {
                    error_response(Error::Protocol {
                        message: e.to_string(),
                    })
                } else {
                    refused(e.to_string())
                };
                let _ = reply(&conn, &answer, &[]);
                return;
            }
        };
        if !greeted {
            match req {
                Request::Hello {
                    version,
                    pid,
                    client: id,
                } if version == PROTOCOL_VERSION => {
                    greeted = true;
                    client = (id, pid);
                    let _ = reply(
                        &conn,
                        &Response::Hello {
                            version: PROTOCOL_VERSION,
                            pid: sys::getpid(),
                        },
                        &[],
                    );
                    continue;
                }
                Request::Hello { version, .. } => {
                    let msg = format!(
                        "{}; stop it (its objects are removed): quit_server() in R, \
                         `yaplrd stop --force` on the command line",
                        Error::Version {
                            pid: sys::getpid(),
                            helper: PROTOCOL_VERSION,
                            ours: version
                        }
                        .facts()
                    );
                    let _ = reply(&conn, &refused(msg), &[]);
                    return;
                }
                _ => {
                    let _ = reply(&conn, &refused("expected a Hello first".to_string()), &[]);
                    return;
                }
            }
        }
        if let Request::Quit { keep } = req {
            quit(&conn, &shared, keep);
        }
        if let Request::Call { seq, deadline_ns } = req {
            next = Some((seq, deadline_ns));
            continue;
        }
        let origin = match next.take() {
            Some((seq, deadline_ns)) => Origin {
                client: client.0,
                pid: client.1,
                seq: if client.0 == 0 { 0 } else { seq },
                deadline_ns,
            },
            None => Origin {
                client: client.0,
                pid: client.1,
                seq: 0,
                deadline_ns: 0,
            },
        };
        let changes = req.is_change();
        let (resp, files) = dispatch(req, origin, &shared);
        let sent = match resp {
            Response::FoundMany(items) => reply_many(&conn, items, files),
            resp => {
                let fds: Vec<i32> = files.iter().map(|f| f.as_raw_fd()).collect();
                reply(&conn, &resp, &fds)
            }
        };
        // A rewrite of the journal takes time: never between a change and
        // its answer, which must arrive before the change's deadline.
        if changes {
            lock_state(&shared).maybe_compact();
        }
        if sent.is_err() {
            return;
        }
    }
}

/// Send the answer to a LookupMany in as many FoundMany frames as it
/// takes: each carries at most MAX_PASSED_FDS descriptors (those of its
/// file-backed items, in order) and about BATCH_INLINE_BUDGET inline bytes.
/// The client reads frames until it has an item per key.
fn reply_many(conn: &Conn, items: Vec<(Entry, Option<Vec<u8>>)>, files: Vec<File>) -> Result<()> {
    let mut files = files.into_iter();
    let mut chunk = Vec::new();
    let mut fds: Vec<File> = Vec::new();
    let mut bytes = 0usize;
    let send = |chunk: &mut Vec<(Entry, Option<Vec<u8>>)>, fds: &mut Vec<File>| {
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let r = reply(conn, &Response::FoundMany(std::mem::take(chunk)), &raw);
        fds.clear();
        r
    };
    if items.is_empty() {
        return send(&mut chunk, &mut fds);
    }
    for (e, inline) in items {
        // What this item adds to the frame, metadata included.
        let m = &e.meta;
        let size = 64
            + e.namespace.len()
            + e.tag.len()
            + m.rtype.len()
            + m.class.iter().map(|c| c.len() + 2).sum::<usize>()
            + m.dim.len() * 10
            + m.description.as_ref().map_or(0, |d| d.len())
            + inline.as_ref().map_or(0, |b| b.len());
        let full = fds.len() == sys::MAX_PASSED_FDS && inline.is_none();
        if !chunk.is_empty() && (full || bytes + size > protocol::BATCH_INLINE_BUDGET) {
            send(&mut chunk, &mut fds)?;
            bytes = 0;
        }
        if inline.is_none() {
            fds.extend(files.next());
        }
        bytes += size;
        chunk.push((e, inline));
    }
    send(&mut chunk, &mut fds)
}

fn reply(conn: &Conn, resp: &Response, fds: &[i32]) -> Result<()> {
    let frame = match protocol::try_encode(resp) {
        Some(f) => f,
        None => protocol::encode(&error_response(Error::Server {
            message: format!(
                "the answer is larger than {} bytes; list one namespace at a time",
                protocol::MAX_FRAME
            ),
        })),
    };
    let w = Wait {
        deadline: Some(Instant::now() + FRAME_DEADLINE),
        what: "a client to read its answer",
        seconds: FRAME_DEADLINE.as_secs_f64(),
        interrupted: &|| false,
    };
    conn.write_frame(&frame, fds, &w)
}

fn error_response(e: Error) -> Response {
    Response::Failed(Failure::from(e))
}

/// The answer that closes a connection before its Hello was accepted.
fn refused(message: String) -> Response {
    Response::Refused {
        kind: "protocol".into(),
        message,
    }
}

fn not_found(ns: &str, tag: &str) -> Response {
    Response::Failed(Failure::NotFound {
        namespace: ns.to_string(),
        tag: tag.to_string(),
    })
}

fn entry(key: &Key, o: &Obj) -> Entry {
    Entry {
        namespace: key.0.clone(),
        tag: key.1.clone(),
        size: o.size,
        ctime_ns: o.ctime_ns,
        kind: o.kind,
        meta: Meta::from(&o.meta),
        version: o.seq,
        inline: o.file_id().is_none(),
        checksum: match o.data {
            Data::Inline { sum, .. } => sum,
            Data::File(_) => 0,
        },
    }
}

fn failed(e: &Error) -> Response {
    Response::Failed(Failure::from(clone_error(e)))
}

/// A copy of an error for an answer (an operating system error keeps its
/// text).
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Io { .. } => Error::Server {
            message: e.to_string(),
        },
        Error::BadTag(m) => Error::BadTag(m.clone()),
        Error::BadArgument(m) => Error::BadArgument(m.clone()),
        Error::NotFound { tag, namespace } => Error::NotFound {
            tag: tag.clone(),
            namespace: namespace.clone(),
        },
        Error::NoSpace {
            message,
            needed,
            hint,
        } => Error::NoSpace {
            message: message.clone(),
            needed: *needed,
            hint: hint.clone(),
        },
        Error::Store { message, hint } => Error::Store {
            message: message.clone(),
            hint: hint.clone(),
        },
        Error::Corrupt { message, hint } => Error::Corrupt {
            message: message.clone(),
            hint: hint.clone(),
        },
        Error::Protocol { message } => Error::Protocol {
            message: message.clone(),
        },
        Error::Version { pid, helper, ours } => Error::Version {
            pid: *pid,
            helper: *helper,
            ours: *ours,
        },
        Error::Timeout {
            waited_for,
            seconds,
        } => Error::Timeout {
            waited_for: waited_for.clone(),
            seconds: *seconds,
        },
        e => Error::Server {
            message: e.to_string(),
        },
    }
}

fn check_key(ns: &str, tag: &str) -> Result<()> {
    crate::key::check_tag(tag)?;
    Ok(crate::key::check_namespace(ns)?)
}

fn check_item(ns: &str, tag: &str, meta: &Meta) -> Result<()> {
    check_key(ns, tag)?;
    meta.check()
}

fn dispatch(req: Request, origin: Origin, shared: &Shared) -> (Response, Vec<File>) {
    let mut st = lock_state(shared);
    if origin.seq != 0 && req.is_change() {
        if let Some(a) = st.applied.get(&origin.client) {
            if origin.seq < a.seq {
                // An older request of this client, still queued on a
                // connection the client has given up: a newer change of
                // the same client has been made since; this one never is.
                return (Response::Failed(Failure::Expired), Vec::new());
            }
            if a.seq == origin.seq {
                // A retry of a change that took effect: the same answer.
                let resp = match req {
                    Request::RemoveNamespace { .. } => Response::Count(a.answer),
                    _ => Response::Ok,
                };
                return (resp, Vec::new());
            }
        }
    }
    let origin = Some(origin);
    match req {
        Request::Call { .. } => (
            error_response(Error::Protocol {
                message: "a Call must be followed by a request".to_string(),
            }),
            Vec::new(),
        ),
        Request::Hello { .. } => (
            Response::Hello {
                version: PROTOCOL_VERSION,
                pid: sys::getpid(),
            },
            Vec::new(),
        ),
        Request::Ping => (Response::Pong, Vec::new()),
        Request::Publish {
            namespace,
            tag,
            id,
            meta,
        } => (
            publish(&mut st, origin, namespace, tag, id, meta),
            Vec::new(),
        ),
        Request::PutInline {
            namespace,
            tag,
            kind,
            ctime_ns,
            bytes,
            meta,
        } => {
            if let Err(e) = check_item(&namespace, &tag, &meta) {
                return (failed(&e), Vec::new());
            }
            if bytes.len() > INLINE_MAX {
                return (
                    error_response(Error::Protocol {
                        message: format!("an inline object may hold at most {INLINE_MAX} bytes"),
                    }),
                    Vec::new(),
                );
            }
            let key = (namespace, tag);
            if let Err(e) = st.check_capacity(&key, bytes.len() as u64) {
                return (failed(&e), Vec::new());
            }
            let (namespace, tag) = key;
            st.seq += 1;
            let rec = Record::Put {
                namespace,
                tag: tag.clone(),
                ctime_ns,
                kind,
                len: bytes.len() as u64,
                sum: crate::codec::checksum(&bytes),
                meta: journal::Meta::from(&meta),
                seq: st.seq,
            };
            match st.commit(origin, rec, &[&bytes], 0) {
                Ok(()) => (Response::Ok, Vec::new()),
                Err(Error::NoSpace { .. }) => {
                    let msg = format!(
                        "not enough space in the store \"{}\" for object \"{tag}\"; \
",
                        st.store.dir().display()
                    );
                    let e = Error::NoSpace {
                        message: msg,
                        needed: bytes.len() as u64,
                        hint: Some(Hint::LargerStore),
                    };
                    (error_response(e), Vec::new())
                }
                Err(e) => (failed(&e), Vec::new()),
            }
        }
        Request::Lookup { namespace, tag } => {
            let key = (namespace, tag);
            let Some(obj) = st.objects.get(&key) else {
                return (not_found(&key.0, &key.1), Vec::new());
            };
            let id = match &obj.data {
                Data::Inline { at, .. } => {
                    let resp = match st.journal.read(*at, obj.size) {
                        Ok(bytes) => Response::FoundInline {
                            entry: entry(&key, obj),
                            bytes,
                        },
                        Err(e) => failed(&e),
                    };
                    return (resp, Vec::new());
                }
                Data::File(id) => id.clone(),
            };
            // Opened under the catalog lock: no overwrite can unlink it first.
            match st.store.open_object(&id) {
                Ok(f) => (Response::Found(entry(&key, obj)), vec![f]),
                // Out of descriptors, an I/O error...: the object is still
                // there; only a file that is gone drops its tag.
                Err(e) if !e.is_not_found() => {
                    log(&format!(
                        "could not open the object file of \"{}\": {e}",
                        key.1
                    ));
                    (failed(&e), Vec::new())
                }
                Err(e) => {
                    log(&format!("object file of \"{}\" is gone: {e}", key.1));
                    let (namespace, tag) = key;
                    let resp = not_found(&namespace, &tag);
                    let _ = st.commit(None, Record::Remove { namespace, tag }, &[], 0);
                    (resp, Vec::new())
                }
            }
        }
        Request::Remove { namespace, tag } => {
            if !st.objects.contains_key(&(namespace.clone(), tag.clone())) {
                return (not_found(&namespace, &tag), Vec::new());
            }
            match st.commit(origin, Record::Remove { namespace, tag }, &[], 0) {
                Ok(()) => (Response::Ok, Vec::new()),
                Err(e) => (failed(&e), Vec::new()),
            }
        }
        Request::RemoveNamespace { namespace } => {
            let tags: Vec<String> = st
                .objects
                .keys()
                .filter(|k| k.0 == namespace)
                .map(|k| k.1.clone())
                .collect();
            // One record: the namespace is cleared at once, or not at all.
            let n = tags.len() as u64;
            let recs = tags
                .into_iter()
                .map(|tag| Record::Remove {
                    namespace: namespace.clone(),
                    tag,
                })
                .collect();
            match st.commit(origin, Record::Batch(recs), &[], n) {
                Ok(()) => (Response::Count(n), Vec::new()),
                Err(e) => (failed(&e), Vec::new()),
            }
        }
        Request::Exists { namespace, tag } => (
            Response::Bool(st.objects.contains_key(&(namespace, tag))),
            Vec::new(),
        ),
        Request::List { namespace } => {
            let mut v: Vec<Entry> = st
                .objects
                .iter()
                .filter(|(k, _)| namespace.as_ref().is_none_or(|ns| &k.0 == ns))
                .map(|(k, o)| entry(k, o))
                .collect();
            v.sort_by(|a, b| (&a.namespace, &a.tag).cmp(&(&b.namespace, &b.tag)));
            (Response::List(v), Vec::new())
        }
        Request::Discard { id } => {
            if !store::is_valid_id(&id) {
                return (
                    error_response(Error::Protocol {
                        message: format!("invalid object id \"{id}\""),
                    }),
                    Vec::new(),
                );
            }
            let linked = st
                .objects
                .values()
                .any(|o| o.file_id() == Some(id.as_str()));
            if !linked {
                let _ = std::fs::remove_file(st.store.object_path(&id));
            }
            (Response::Bool(linked), Vec::new())
        }
        Request::PutMany { items } => (put_many(&mut st, origin, items), Vec::new()),
        Request::LookupMany { keys } => {
            let mut seen = std::collections::HashSet::new();
            if let Some(k) = keys.iter().find(|k| !seen.insert(*k)) {
                let msg = format!("the tag \"{}\" is asked for twice", k.1);
                return (error_response(Error::BadArgument(msg)), Vec::new());
            }
            let mut found = Vec::with_capacity(keys.len());
            let mut files = Vec::new();
            for key in keys {
                let Some(obj) = st.objects.get(&key) else {
                    return (not_found(&key.0, &key.1), Vec::new());
                };
                match &obj.data {
                    Data::Inline { at, .. } => match st.journal.read(*at, obj.size) {
                        Ok(b) => found.push((entry(&key, obj), Some(b))),
                        Err(e) => return (failed(&e), Vec::new()),
                    },
                    Data::File(id) => {
                        // Every file is opened now, under the catalog lock:
                        // the answer is one moment, however many frames it
                        // takes (see reply_many).
                        match st.store.open_object(id) {
                            Ok(f) => files.push(f),
                            Err(e) => return (failed(&e), Vec::new()),
                        }
                        found.push((entry(&key, obj), None));
                    }
                }
            }
            (Response::FoundMany(found), files)
        }
        Request::SetCapacity { bytes } => {
            let used = st.used();
            if let Some(b) = bytes {
                if b < used {
                    let msg = format!(
                        "the store \"{}\" holds {used} bytes of objects: its capacity can not go below that \
                         (asked for {b}); remove objects first",
                        st.store.dir().display()
                    );
                    return (
                        error_response(Error::NoSpace {
                            message: msg,
                            needed: 0,
                            hint: None,
                        }),
                        Vec::new(),
                    );
                }
            }
            match st.commit(origin, Record::Capacity { bytes }, &[], 0) {
                Ok(()) => (Response::Ok, Vec::new()),
                Err(e) => (failed(&e), Vec::new()),
            }
        }
        Request::Info => (
            Response::Info(ServerInfo {
                pid: sys::getpid(),
                dir: st.store.dir().display().to_string(),
                objects: st.objects.len() as u64,
                bytes: st.used(),
                capacity: st.capacity,
                free: st.free(),
                started_ns: st.started_ns,
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
            Vec::new(),
        ),
        Request::Quit { .. } => unreachable!("handled before dispatch"),
    }
}

fn publish(
    st: &mut State,
    origin: Option<Origin>,
    namespace: String,
    tag: String,
    id: String,
    meta: Meta,
) -> Response {
    if !store::is_valid_id(&id) {
        return error_response(Error::Protocol {
            message: format!("invalid object id \"{id}\""),
        });
    }
    if let Err(e) = check_item(&namespace, &tag, &meta) {
        return failed(&e);
    }
    let header: Header = match st
        .store
        .open_object(&id)
        .map(|f| object_file::read_header(&f))
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return error_response(Error::corrupt(e.to_string())),
        // Published (or adopted after journal damage), then replaced.
        Err(_) if st.retired.contains(&id) => return Response::Ok,
        Err(e) => {
            return error_response(Error::Server {
                message: format!(
                    "the object file for \"{tag}\" is missing ({e}); was the store quit meanwhile?"
                ),
            })
        }
    };
    if header.state != STATE_COMMITTED || header.tag != tag || header.namespace != namespace {
        return error_response(Error::corrupt(format!(
            "object file {id} is not a committed object for \"{tag}\""
        )));
    }
    let key = (namespace, tag);
    if st.objects.get(&key).and_then(|o| o.file_id()) == Some(id.as_str()) {
        // A retry of a publish that already took effect.
        return Response::Ok;
    }
    if let Err(e) = st.check_capacity(&key, header.payload_len) {
        return failed(&e);
    }
    let (namespace, tag) = key;
    st.seq += 1;
    let rec = Record::Link {
        namespace,
        tag,
        id: id.clone(),
        ctime_ns: header.ctime_ns,
        kind: header.kind,
        size: header.payload_len,
        meta: journal::Meta::from(&meta),
        seq: st.seq,
    };
    match st.commit(origin, rec, &[], 0) {
        Ok(()) => Response::Ok,
        Err(e) => {
            // Refused for good (its deadline passed): the file will never
            // be published, and its writer has given up on it.
            if matches!(e, Error::Timeout { .. }) {
                st.drop_unlinked(&[id]);
            }
            failed(&e)
        }
    }
}

/// Store several objects together: every item is checked first, then one
/// Batch record makes them all take effect at once.
fn put_many(st: &mut State, origin: Option<Origin>, items: Vec<PutItem>) -> Response {
    let mut recs = Vec::with_capacity(items.len());
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut added: u64 = 0;
    let mut freed: u64 = 0;
    for item in items {
        if let Err(e) = check_item(&item.namespace, &item.tag, &item.meta) {
            return failed(&e);
        }
        let key = (item.namespace.clone(), item.tag.clone());
        if !seen.insert(key.clone()) {
            return error_response(Error::BadArgument(format!(
                "the tag \"{}\" is given twice",
                item.tag
            )));
        }
        let (size, kind, ctime_ns, data) = match (item.inline, item.id) {
            (Some(bytes), None) if bytes.len() <= INLINE_MAX => {
                (bytes.len() as u64, item.kind, item.ctime_ns, Ok(bytes))
            }
            (None, Some(id)) if store::is_valid_id(&id) => {
                let header = match st
                    .store
                    .open_object(&id)
                    .map(|f| object_file::read_header(&f))
                {
                    Ok(Ok(h)) => h,
                    Ok(Err(e)) => return error_response(Error::corrupt(e.to_string())),
                    Err(e) => {
                        let msg = format!("the object file for \"{}\" is missing ({e})", item.tag);
                        return error_response(Error::Server { message: msg });
                    }
                };
                if header.state != STATE_COMMITTED
                    || header.tag != item.tag
                    || header.namespace != item.namespace
                {
                    let msg = format!(
                        "object file {id} is not a committed object for \"{}\"",
                        item.tag
                    );
                    return error_response(Error::corrupt(msg));
                }
                (header.payload_len, header.kind, header.ctime_ns, Err(id))
            }
            _ => {
                return error_response(Error::Protocol {
                    message: "a batch item needs inline bytes or a valid object id".to_string(),
                })
            }
        };
        freed += st.objects.get(&key).map_or(0, |o| o.size);
        added += size;
        st.seq += 1;
        let (namespace, tag) = key;
        let meta = journal::Meta::from(&item.meta);
        recs.push(match data {
            Ok(bytes) => {
                let rec = Record::Put {
                    namespace,
                    tag,
                    ctime_ns,
                    kind,
                    len: bytes.len() as u64,
                    sum: crate::codec::checksum(&bytes),
                    meta,
                    seq: st.seq,
                };
                payloads.push(bytes);
                rec
            }
            Err(id) => Record::Link {
                namespace,
                tag,
                id,
                ctime_ns,
                kind,
                size,
                meta,
                seq: st.seq,
            },
        });
    }
    if let Some(cap) = st.capacity {
        let used = st.used() - freed.min(st.used());
        if used + added > cap {
            let msg = format!(
                "the store \"{}\" has a capacity of {cap} bytes: these objects need {added} bytes \
                 but only {} are free",
                st.store.dir().display(),
                cap.saturating_sub(used)
            );
            return error_response(Error::NoSpace {
                message: msg,
                needed: added,
                hint: Some(Hint::RaiseCapacity),
            });
        }
    }
    let slices: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let ids: Vec<String> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Link { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    match st.commit(origin, Record::Batch(recs), &slices, 0) {
        Ok(()) => Response::Ok,
        Err(e) => {
            if matches!(e, Error::Timeout { .. }) {
                st.drop_unlinked(&ids);
            }
            failed(&e)
        }
    }
}

/// Unlink everything this helper owns (or, with `keep`, only its socket
/// and locks), answer, and exit.
fn quit(conn: &Conn, shared: &Shared, keep: bool) -> ! {
    let st = lock_state(shared);
    if keep {
        log(&format!("quitting; keeping {} object(s)", st.objects.len()));
        st.store.remove_runtime_files();
        let _ = reply(conn, &Response::Ok, &[]);
        std::process::exit(0);
    }
    log(&format!(
        "quitting; removing {} object(s)",
        st.objects.len()
    ));
    st.store.remove_all();
    let _ = reply(conn, &Response::Ok, &[]);
    std::process::exit(0);
}
