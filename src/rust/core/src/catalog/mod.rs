//! The helper's catalog: (namespace, tag) -> object, the store's capacity,
//! the journal every change goes to before it is applied, the last change
//! of each client (so a retry is answered, not redone) and compaction.

pub(crate) mod answer;
pub(crate) mod counters;
pub(crate) mod handoff;
pub(crate) mod queue;
pub(crate) mod recovery;

use crate::sys::log;
use crate::error::{Error, Hint, Result};
use crate::journal::{self, Journal, Record};
use crate::protocol::{self, Condition, Entry, Meta};
use crate::store::Store;
use crate::sys;
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How many superseded object ids a helper remembers (see
/// Catalog::retired).
const RETIRED_KEPT: usize = 4096;

/// Catalog key: (namespace, tag).
pub(crate) type Key = (String, String);

/// The catalog as the helper's threads share it, with the condition that
/// wakes requests waiting for an object (see `requests::wait`) after every
/// change.
pub(crate) struct Hub {
    catalog: Mutex<Catalog>,
    changed: Condvar,
}

pub(crate) type Shared = Arc<Hub>;

impl Hub {
    pub(crate) fn new(catalog: Catalog) -> Shared {
        Arc::new(Hub {
            catalog: Mutex::new(catalog),
            changed: Condvar::new(),
        })
    }

    /// Wake every request waiting for a change.
    pub(crate) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Release the catalog until `notify` or `timeout`, then take it back.
    pub(crate) fn wait<'a>(
        &'a self,
        st: MutexGuard<'a, Catalog>,
        timeout: Duration,
    ) -> MutexGuard<'a, Catalog> {
        match self.changed.wait_timeout(st, timeout) {
            Ok((st, _)) => st,
            Err(p) => p.into_inner().0,
        }
    }
}

/// Lock the catalog. A panicking connection thread must not take the whole
/// helper down: a poisoned lock is taken over.
pub(crate) fn lock_state(shared: &Shared) -> MutexGuard<'_, Catalog> {
    shared.catalog.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Clone)]
pub(crate) enum Data {
    /// In its own object file, by id.
    File(String),
    /// Inline: its payload is in the journal at this offset.
    Inline { at: u64, sum: u64 },
}

#[derive(Debug, Clone)]
pub(crate) struct Obj {
    pub(crate) data: Data,
    pub(crate) size: u64,
    pub(crate) ctime_ns: i64,
    pub(crate) kind: u32,
    pub(crate) meta: journal::Meta,
    pub(crate) seq: u64,
}

impl Obj {
    pub(crate) fn file_id(&self) -> Option<&str> {
        match &self.data {
            Data::File(id) => Some(id),
            Data::Inline { .. } => None,
        }
    }

    /// The object as a listing shows it.
    pub(crate) fn entry(&self, key: &Key) -> Entry {
        Entry {
            namespace: key.0.clone(),
            tag: key.1.clone(),
            size: self.size,
            ctime_ns: self.ctime_ns,
            kind: self.kind,
            meta: Meta::from(&self.meta),
            version: self.seq,
            inline: self.file_id().is_none(),
            checksum: match self.data {
                Data::Inline { sum, .. } => sum,
                Data::File(_) => 0,
            },
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

/// The payloads of a change just journaled, back to back from `at`.
struct Fresh<'a> {
    at: u64,
    payloads: &'a [&'a [u8]],
}

impl Fresh<'_> {
    /// The payload journaled at `at`, `len` bytes long, if it is one of these.
    fn payload(&self, at: u64, len: u64) -> Option<&[u8]> {
        let mut start = self.at;
        for p in self.payloads {
            if start == at && p.len() as u64 == len {
                return Some(p);
            }
            start += p.len() as u64;
        }
        None
    }
}

/// How many objects a record changes.
fn object_changes(rec: &Record) -> usize {
    match rec {
        Record::Batch(recs) => recs.iter().map(object_changes).sum(),
        Record::Put { .. } | Record::Link { .. } | Record::Remove { .. } => 1,
        _ => 0,
    }
}

/// A barrier's state (see requests::barrier).
#[derive(Debug, Default)]
pub(crate) struct BarrierState {
    pub(crate) n: u32,
    /// Incremented by each release.
    pub(crate) generation: u64,
    /// The arrivals of the current generation.
    pub(crate) arrived: Vec<u64>,
}

/// The last change a client made (see protocol::Call).
#[derive(Debug, Clone, Copy)]
struct Applied {
    pid: u32,
    seq: u64,
    answer: u64,
}

/// Who sent a request, with the number and deadline of a change (0: none).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    pub(crate) client: u64,
    pub(crate) pid: u32,
    pub(crate) seq: u64,
    pub(crate) deadline_ns: u64,
}

/// What became of an earlier change with the same number.
pub(crate) enum Earlier {
    /// It took effect; its answer was this number (see Handle::repeated).
    Applied(u64),
    /// A newer change of the same client was made since: this one never
    /// is.
    Superseded,
}

pub(crate) struct Catalog {
    pub(crate) store: Store,
    pub(crate) objects: HashMap<Key, Obj>,
    /// The last sequence number given to a stored value.
    seq: u64,
    /// Bytes the objects may use in all (None: up to the filesystem).
    pub(crate) capacity: Option<u64>,
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
    retired: VecDeque<String>,
    pub(crate) journal: Journal,
    pub(crate) started_ns: i64,
    /// Per queue (namespace, name), the numbers of its ready items, oldest
    /// first (see `queue`).
    pub(crate) queues: HashMap<Key, BTreeSet<u64>>,
    /// The leased queue items, by catalog key.
    pub(crate) leases: HashMap<Key, queue::Lease>,
    /// The coordination region (counters and locks), if it could be made.
    pub(crate) coord: Option<crate::coord::Region>,
    /// The store's index, which clients read without asking (see `index`);
    /// kept in step with `objects` by `apply_stored` and `take`. None until
    /// the helper serves, and after the index failed (then closed).
    pub(crate) index: Option<crate::index::Writer>,
    /// The barriers clients wait at (in memory only).
    pub(crate) barriers: HashMap<Key, BarrierState>,
    /// Numbers arrivals at barriers.
    arrivals: u64,
    /// The parked Waits, oldest first, that the change making one ready
    /// answers at once (see `requests::wait`).
    pub(crate) handoffs: Vec<Arc<handoff::Handoff>>,
}

impl Catalog {
    /// An empty catalog of `store` over its open journal.
    pub(crate) fn new(store: Store, journal: Journal) -> Catalog {
        Catalog {
            store,
            objects: HashMap::new(),
            seq: 0,
            capacity: None,
            used: 0,
            inline_bytes: 0,
            overhead_per_object: 0,
            applied: HashMap::new(),
            compact_after: 0,
            retired: VecDeque::new(),
            journal,
            started_ns: crate::codec::now_ns(),
            queues: HashMap::new(),
            leases: HashMap::new(),
            coord: None,
            index: None,
            barriers: HashMap::new(),
            handoffs: Vec::new(),
            arrivals: 0,
        }
    }

    /// A number for an arrival at a barrier, never given before.
    pub(crate) fn next_arrival(&mut self) -> u64 {
        self.arrivals += 1;
        self.arrivals
    }

    /// Recount what the objects use and number new values after the
    /// newest (after the objects were set without apply_stored).
    pub(crate) fn recount(&mut self) {
        self.used = self.objects.values().map(|o| o.size).sum();
        self.inline_bytes = self
            .objects
            .values()
            .filter(|o| o.file_id().is_none())
            .map(|o| o.size)
            .sum();
        self.seq = self.objects.values().map(|o| o.seq).max().unwrap_or(0);
        self.index_queues();
    }

    /// The sequence number of the next stored value.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Whether an object file was published here and since replaced.
    pub(crate) fn is_retired(&self, id: &str) -> bool {
        self.retired.iter().any(|r| r == id)
    }

    /// Whether any object is the object file `id`.
    pub(crate) fn links(&self, id: &str) -> bool {
        self.objects.values().any(|o| o.file_id() == Some(id))
    }

    /// What became of an earlier change numbered like the one of
    /// `origin`; None when the change is new (or not numbered).
    pub(crate) fn earlier(&self, origin: &Origin) -> Option<Earlier> {
        if origin.seq == 0 {
            return None;
        }
        let a = self.applied.get(&origin.client)?;
        if origin.seq < a.seq {
            // An older request of this client, still queued on a
            // connection the client has given up.
            return Some(Earlier::Superseded);
        }
        (a.seq == origin.seq).then_some(Earlier::Applied(a.answer))
    }

    /// Journal a change (with its origin, if a client sent it), then apply
    /// it; the file of a replaced object is unlinked (readers that have it
    /// open or mapped keep it). A change whose deadline has passed is
    /// refused, never applied.
    pub(crate) fn commit(
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
        // Readers of the index see all of a change of several objects or
        // none of it (one object's slot is changed atomically anyway).
        let batch = object_changes(&rec) > 1;
        if let (true, Some(w)) = (batch, &self.index) {
            w.begin_batch();
        }
        let fresh = Fresh { at, payloads };
        self.apply(rec, &mut { at }, Some(&fresh));
        if let (true, Some(w)) = (batch, &self.index) {
            w.end_batch();
        }
        // Compaction waits until the change is answered (see connection).
        Ok(())
    }

    /// Apply a record that is already in the journal, whose payloads start
    /// at `*at`. O(1) per object: the bytes used are kept up to date, and a
    /// replaced or removed object's file is unlinked (each file belongs to
    /// one key).
    pub(crate) fn apply_stored(&mut self, rec: Record, at: &mut u64) {
        self.apply(rec, at, None);
    }

    /// `apply_stored`, with the payloads just journaled at `fresh.at` (the
    /// index takes them from there rather than read them back).
    fn apply(&mut self, rec: Record, at: &mut u64, fresh: Option<&Fresh<'_>>) {
        let old = match rec {
            Record::Capacity { bytes } => {
                self.capacity = bytes;
                return;
            }
            Record::Batch(recs) => {
                for r in recs {
                    self.apply(r, at, fresh);
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
            Record::Lease {
                namespace,
                tag,
                pid,
                start,
                token,
            } => {
                self.apply_lease((namespace, tag), queue::Lease { pid, start, token });
                return;
            }
            Record::Unlease { namespace, tag } => {
                self.apply_unlease(&(namespace, tag));
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
        self.sync_index(&key, fresh);
        if key.1.starts_with('\0') {
            let present = self.objects.contains_key(&key);
            self.queue_changed(&key, present);
        }
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

    /// Refuse a conditional change of `key` whose condition does not hold.
    pub(crate) fn check_condition(&self, key: &Key, cond: Condition) -> Result<()> {
        self.check_not_counter(key)?;
        let found = self.objects.get(key).map(|o| o.seq);
        if cond.holds(found) {
            return Ok(());
        }
        Err(Error::Conflict {
            tag: key.1.clone(),
            namespace: key.0.clone(),
            expected: cond.expected(),
            found,
        })
    }

    /// Take the object of `key` out of the catalog for a taker (see
    /// requests::wait): journaled like a remove, but its file stays until
    /// `handed_over` says whether the taker got it. Refused past
    /// `deadline_ns` (monotonic, 0: none).
    pub(crate) fn take(&mut self, key: &Key, deadline_ns: u64) -> Result<Obj> {
        if deadline_ns != 0 && protocol::monotonic_ns() > deadline_ns {
            return Err(Error::Timeout {
                waited_for: "the helper, which found the object too late".into(),
                seconds: 0.0,
            });
        }
        if !self.objects.contains_key(key) {
            return Err(Error::NotFound {
                tag: key.1.clone(),
                namespace: key.0.clone(),
            });
        }
        let rec = Record::Remove {
            namespace: key.0.clone(),
            tag: key.1.clone(),
        };
        self.journal.append(&rec, &[])?;
        let obj = self.objects.remove(key).ok_or(Error::Closed)?;
        self.sync_index(key, None);
        self.queue_changed(key, false);
        self.used = self.used.saturating_sub(obj.size);
        if obj.file_id().is_none() {
            self.inline_bytes = self.inline_bytes.saturating_sub(obj.size);
        }
        Ok(obj)
    }

    /// After a `take`: a value its taker got loses its file; one that
    /// could not be handed over (the taker went away) is put back, unless
    /// the key has a new value by now.
    pub(crate) fn handed_over(&mut self, key: Key, obj: Obj, delivered: bool, inline: &[u8]) {
        let unlink = |st: &mut Catalog, id: &str| {
            let _ = std::fs::remove_file(st.store.object_path(id));
            if st.retired.len() == RETIRED_KEPT {
                st.retired.pop_front();
            }
            st.retired.push_back(id.to_string());
        };
        if delivered || self.objects.contains_key(&key) {
            if let Data::File(id) = &obj.data {
                unlink(self, id);
            }
            return;
        }
        let (rec, _) = obj.record(&key);
        let payloads: Vec<&[u8]> = match obj.data {
            Data::Inline { .. } => vec![inline],
            Data::File(_) => Vec::new(),
        };
        if let Err(e) = self.commit(None, rec, &payloads, 0) {
            log(&format!("could not put back \"{}\" after a failed take: {e}", key.1));
            if let Data::File(id) = &obj.data {
                unlink(self, id);
            }
        }
    }

    /// Make the store's index, with every object (the helper, once it has
    /// recovered, before it serves). Without one, clients ask the helper.
    pub(crate) fn make_index(&mut self) {
        let keys: Vec<Key> = self.objects.keys().cloned().collect();
        match crate::index::Writer::create(&self.store) {
            Ok(w) => self.index = Some(w),
            Err(e) => {
                log(&format!("could not make the index: {e}"));
                return;
            }
        }
        for key in &keys {
            self.sync_index(key, None);
        }
        if let Some(w) = &mut self.index {
            if let Err(e) = w.publish() {
                log(&format!("could not publish the index: {e}"));
                self.index = None;
            }
        }
    }

    /// Bring the index's entry of `key` in step with the catalog. When the
    /// index fails (a full filesystem), it is closed and dropped: clients
    /// then ask the helper.
    fn sync_index(&mut self, key: &Key, fresh: Option<&Fresh<'_>>) {
        if key.1.starts_with('\0') {
            return;
        }
        let Some(w) = &mut self.index else { return };
        let r = match self.objects.get(key) {
            None => w.remove(&key.0, &key.1),
            Some(obj) => (|| {
                let (file, payload, checksum) = match &obj.data {
                    Data::File(id) => (Some(id.as_str()), None, 0),
                    Data::Inline { at, sum } => {
                        let bytes = match fresh.and_then(|f| f.payload(*at, obj.size)) {
                            Some(b) => Cow::Borrowed(b),
                            None => Cow::Owned(self.journal.read(*at, obj.size)?),
                        };
                        (None, Some(bytes), *sum)
                    }
                };
                w.put(&crate::index::Put {
                    namespace: &key.0,
                    tag: &key.1,
                    fields: crate::index::Fields {
                        kind: obj.kind,
                        version: obj.seq,
                        size: obj.size,
                        ctime_ns: obj.ctime_ns,
                        checksum,
                    },
                    file,
                    payload: payload.as_deref(),
                    meta: crate::index::Meta::from(&protocol::Meta::from(&obj.meta)),
                })
            })(),
        };
        if let Err(e) = r {
            log(&format!("the index failed; clients now ask the helper: {e}"));
            w.close();
            self.index = None;
        }
    }

    /// Close the index for its readers (at quit, before the store's files
    /// are removed).
    pub(crate) fn close_index(&mut self) {
        if let Some(w) = self.index.take() {
            w.close();
        }
    }

    /// Remove the object files `ids` that no object links to.
    pub(crate) fn drop_unlinked(&self, ids: &[String]) {
        for id in ids {
            if !self.links(id) {
                let _ = std::fs::remove_file(self.store.object_path(id));
            }
        }
    }

    /// Payload bytes of every object.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn free(&self) -> u64 {
        match self.capacity {
            Some(c) => c.saturating_sub(self.used()),
            None => sys::free_space(self.store.dir()).unwrap_or(0),
        }
    }

    /// Refuse a value of `size` bytes for `key` that would take the store
    /// past its capacity (the value it replaces is counted as freed).
    pub(crate) fn check_capacity(&self, key: &Key, size: u64) -> Result<()> {
        let Some(cap) = self.capacity else {
            return Ok(());
        };
        let replaced = self.objects.get(key).map_or(0, |o| o.size);
        let used = self.used().saturating_sub(replaced);
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
    pub(crate) fn maybe_compact(&mut self) {
        let live = self.inline_bytes + self.overhead_per_object * (self.objects.len() as u64 + 1);
        if !self.journal.wants_compaction(live) || self.journal.bytes() < self.compact_after {
            return;
        }
        if let Err(e) = self.compact() {
            // (A full filesystem, say.) Try again once the journal has
            // grown by a fifth, not on every change.
            self.compact_after = self.journal.bytes() + self.journal.bytes() / 5;
            log(&format!("could not compact the journal: {e}"));
        }
    }

    pub(crate) fn compact(&mut self) -> Result<()> {
        self.applied.retain(|_, a| sys::pid_alive(a.pid));
        let (keys, mut live): (Vec<Key>, Vec<(Record, Vec<journal::Payload<'_>>)>) = self
            .objects
            .iter()
            .map(|(k, o)| (k.clone(), o.record(k)))
            .unzip();
        live.push((
            Record::Capacity {
                bytes: self.capacity,
            },
            Vec::new(),
        ));
        for rec in self.lease_records() {
            live.push((rec, Vec::new()));
        }
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
            self.journal.bytes().saturating_sub(self.inline_bytes) / (self.objects.len() as u64 + 1);
        Ok(())
    }
}
