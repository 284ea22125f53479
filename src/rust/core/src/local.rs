//! The local store as a `Backend`: a directory on this machine, served by
//! one `yaplrd` helper; payloads that do not travel inline are object files
//! written straight into the directory and published by id.

use crate::backend::{
    Backend, Body, CallOptions, CounterOp, CounterValue, Found, HeldLock, Key, Limits, LockHolder,
    LockToken, Payload, PayloadSink, Popped, QueueLease, StageWriter, Staged, Started,
};
use crate::coord::{Kind, Region, SlotRef, Stale, Wait};
use crate::index::{Hit, Index, Lookup};
use std::collections::HashMap;
use std::sync::Arc;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::object_file::ObjectWriter;
use crate::protocol::{self, Entry, ServerInfo};
use crate::requests::put_many::PutItem;
use crate::store::Store;
use std::path::PathBuf;

pub struct Local {
    client: Client,
    /// The store's coordination region (counters and locks), once mapped.
    coord: Option<Arc<Region>>,
    /// The slots of the counters and locks used, so that a call finds its
    /// slot without a lookup in the region.
    counters: HashMap<Key, SlotRef>,
    locks: HashMap<Key, SlotRef>,
    /// The store's index, once mapped: objects found there need no word to
    /// the helper.
    index: Option<Index>,
}

impl Local {
    /// The store in `dir`; `helper` is the yaplrd program started when no
    /// helper runs (None: never start one).
    pub fn new(dir: PathBuf, helper: Option<PathBuf>) -> Local {
        Local {
            client: Client::new(Store::new(dir), helper),
            coord: None,
            counters: HashMap::new(),
            locks: HashMap::new(),
            index: None,
        }
    }

    /// The store's index: the mapping already made, unless the helper has
    /// closed it since; else the store's index now, if there is one (no
    /// helper is started for it).
    fn index(&mut self) -> Option<&Index> {
        if self.index.as_ref().is_some_and(Index::is_closed) {
            self.index = None;
        }
        if self.index.is_none() {
            self.index = Index::open(self.client.store()).ok().flatten();
        }
        self.index.as_ref()
    }

    /// `key` as the index has it: Some(Ok(found)) with its payload (with
    /// `payload`; else an empty one), Some(Err(())) when the index says
    /// there is no such object, None when only the helper can answer (no
    /// index, a payload not in it, an object file replaced while it was
    /// opened).
    fn indexed(&mut self, key: &Key, payload: bool) -> Option<std::result::Result<Found, ()>> {
        // An object file unlinked between the lookup and its opening was
        // replaced (or removed) meanwhile: look again.
        for _ in 0..3 {
            let ix = self.index()?;
            let hit = match ix.get(key.namespace(), key.tag(), payload) {
                Lookup::Hit(hit) => hit,
                Lookup::Absent => return Some(Err(())),
                Lookup::Ask => return None,
            };
            let Hit {
                fields,
                body,
                payload: bytes,
                meta_elsewhere,
                ..
            } = *hit;
            if meta_elsewhere {
                // Its description is not in the record.
                return None;
            }
            let payload = match (&body.file, bytes) {
                (_, _) if !payload => Payload::Bytes(Vec::new()),
                (Some(id), _) => match ix.open_object(id) {
                    Ok(f) => Payload::File(f),
                    Err(e) if e.is_not_found() => continue,
                    Err(_) => return None,
                },
                (None, Some(bytes)) => Payload::Bytes(bytes),
                (None, None) => return None,
            };
            return Some(Ok(Found {
                entry: entry_from(fields, body),
                payload,
            }));
        }
        None
    }

    /// The objects and counters of `namespace` (None: of all) as the
    /// index and the coordination region have them, sorted as the helper
    /// lists them; None when only the helper can answer. Not one moment: a
    /// change made meanwhile may or may not show (an object that moved
    /// shows once, with its newer value).
    fn indexed_list(&mut self, namespace: Option<&str>) -> Option<Vec<Entry>> {
        let found = self.index()?.entries(namespace)?;
        let counters = self
            .region_now()?
            .entries(Kind::Counter, namespace)
            .iter()
            .map(|e| crate::catalog::counters::counter_entry(e).0)
            .collect::<Vec<_>>();
        let mut v: Vec<Entry> = Vec::with_capacity(found.len() + counters.len());
        v.extend(found.into_iter().map(|(fields, body)| entry_from(fields, body)));
        v.extend(counters);
        // Newest first within a key, then one entry per key.
        v.sort_unstable_by(|a, b| {
            a.namespace
                .cmp(&b.namespace)
                .then_with(|| a.tag.cmp(&b.tag))
                .then(b.version.cmp(&a.version))
        });
        v.dedup_by(|later, first| later.namespace == first.namespace && later.tag == first.tag);
        Some(v)
    }

    /// Whether counter `key` exists, from the coordination region mapped
    /// already or now (None: there is none to ask).
    fn counter_exists(&mut self, key: &Key) -> Option<bool> {
        let r = self.region_now()?;
        Some(r.find(Kind::Counter, key.namespace(), key.tag()).is_some())
    }

    /// The coordination region mapped already, or the store's region now
    /// (no helper is started for it).
    fn region_now(&mut self) -> Option<&Arc<Region>> {
        if self.coord.as_ref().is_none_or(|r| r.is_closed()) {
            self.coord = Region::open(self.client.store()).ok().flatten().map(Arc::new);
            self.counters.clear();
            self.locks.clear();
        }
        self.coord.as_ref()
    }

    /// The store's coordination region, mapped when first needed (the
    /// helper, started if need be, makes it) and again after the store was
    /// stopped (the helper closes it when it quits).
    fn region(&mut self, opts: &CallOptions<'_>) -> Result<Arc<Region>> {
        if let Some(r) = self.coord.as_ref().filter(|r| !r.is_closed()) {
            return Ok(r.clone());
        }
        self.coord = None;
        self.counters.clear();
        self.locks.clear();
        self.client.connect(opts)?;
        let r = match Region::open(self.client.store())? {
            Some(r) => Arc::new(r),
            None => {
                return Err(Error::Server {
                    message: format!(
                        "the helper of the store \"{}\" has no coordination table \
                         (see its log, yaplrd.log)",
                        self.client.store().dir().display()
                    ),
                })
            }
        };
        self.coord = Some(r.clone());
        Ok(r)
    }

    /// The slot of counter (or lock) `key`: cached, found in the region,
    /// or (with `make`) made by the helper. None: there is none.
    fn slot(
        &mut self,
        region: &Region,
        key: &Key,
        lock: bool,
        make: bool,
        opts: &CallOptions<'_>,
    ) -> Result<Option<SlotRef>> {
        let cache = if lock { &self.locks } else { &self.counters };
        if let Some(s) = cache.get(key) {
            return Ok(Some(*s));
        }
        let kind = if lock { Kind::Lock } else { Kind::Counter };
        let found = match region.find(kind, key.namespace(), key.tag()) {
            Some(s) => s,
            None if make => self.client.slot(key.namespace(), key.tag(), lock, opts)?,
            None => return Ok(None),
        };
        let cache = if lock { &mut self.locks } else { &mut self.counters };
        cache.insert(key.clone(), found);
        Ok(Some(found))
    }

    /// Forget a slot found stale (its counter or lock was removed).
    fn forget(&mut self, key: &Key, lock: bool) {
        if lock {
            self.locks.remove(key);
        } else {
            self.counters.remove(key);
        }
    }
}

/// How many times an operation looks its slot up again after finding it
/// stale (removed and made again meanwhile) before it gives up.
const STALE_RETRIES: usize = 8;

fn wait<'a>(opts: &CallOptions<'a>) -> Wait<'a> {
    Wait {
        timeout: opts.timeout,
        interrupted: opts.interrupted,
    }
}

fn stale(key: &Key) -> Error {
    Error::Server {
        message: format!(
            "\"{}\" was removed and made again too many times while this call used it",
            key.tag()
        ),
    }
}

impl PayloadSink for ObjectWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        ObjectWriter::write(self, bytes)
    }

    fn write_zeros(&mut self, n: u64) -> Result<()> {
        ObjectWriter::write_zeros(self, n)
    }
}

impl StageWriter for ObjectWriter {
    fn commit(self: Box<Self>) -> Result<String> {
        (*self).commit().map(|(id, _)| id)
    }
}

fn item(s: Staged) -> PutItem {
    let (inline, id) = match s.body {
        Body::Inline(b) => (Some(b), None),
        Body::Stored(id) => (None, Some(id)),
    };
    PutItem {
        namespace: s.key.namespace().to_string(),
        tag: s.key.tag().to_string(),
        kind: s.kind,
        ctime_ns: s.ctime_ns,
        inline,
        id,
        meta: s.meta,
    }
}

impl Backend for Local {
    fn location(&self) -> String {
        self.client.store().dir().display().to_string()
    }

    fn limits(&self) -> Limits {
        Limits {
            inline_max: protocol::INLINE_MAX,
            batch_inline_budget: protocol::BATCH_INLINE_BUDGET,
            max_batch_items: protocol::MAX_BATCH_ITEMS,
            batch_bytes: protocol::MAX_FRAME / 2,
        }
    }

    fn create(
        &mut self,
        key: &Key,
        kind: u32,
        size_hint: u64,
        ctime_ns: i64,
    ) -> Result<Box<dyn StageWriter>> {
        let mut w = ObjectWriter::create(
            self.client.store(),
            key.namespace(),
            key.tag(),
            kind,
            size_hint,
        )?;
        w.set_ctime(ctime_ns);
        Ok(Box::new(w))
    }

    fn put(&mut self, item: Staged, opts: &CallOptions<'_>) -> Result<u64> {
        let (ns, tag) = (item.key.namespace(), item.key.tag());
        let cond = item.condition;
        match item.body {
            Body::Inline(bytes) => self.client.put_inline_at(
                ns,
                tag,
                item.kind,
                bytes,
                item.meta,
                item.ctime_ns,
                cond,
                opts,
            ),
            Body::Stored(id) => {
                let r = self.client.publish(ns, tag, &id, item.meta, cond, opts);
                if let Err(e) = &r {
                    self.client.discard_staged(e, std::slice::from_ref(&id));
                }
                r
            }
        }
    }

    fn put_many(&mut self, items: Vec<Staged>, opts: &CallOptions<'_>) -> Result<()> {
        let ids: Vec<String> = items
            .iter()
            .filter_map(|s| match &s.body {
                Body::Stored(id) => Some(id.clone()),
                Body::Inline(_) => None,
            })
            .collect();
        let r = self
            .client
            .put_many(items.into_iter().map(item).collect(), opts);
        if let Err(e) = &r {
            self.client.discard_staged(e, &ids);
        }
        r
    }

    fn discard(&mut self, ids: &[String], failed: Option<&Error>) {
        match failed {
            Some(e) => self.client.discard_staged(e, ids),
            None => {
                for id in ids {
                    let _ = std::fs::remove_file(self.client.store().object_path(id));
                }
            }
        }
    }

    fn get(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Found> {
        if let Some(Ok(found)) = self.indexed(key, true) {
            return Ok(found);
        }
        self.client
            .lookup(key.namespace(), key.tag(), opts)
            .map(Found::from)
    }

    fn get_many(
        &mut self,
        keys: &[Key],
        opts: &CallOptions<'_>,
        f: &mut dyn FnMut(Found) -> Result<()>,
    ) -> Result<()> {
        let keys = keys
            .iter()
            .map(|k| (k.namespace().to_string(), k.tag().to_string()))
            .collect();
        self.client
            .lookup_many(keys, opts, |found| f(Found::from(found)))
            .map(|_| ())
    }

    fn wait(
        &mut self,
        key: &Key,
        after_version: Option<u64>,
        take: bool,
        opts: &CallOptions<'_>,
    ) -> Result<Found> {
        // A value that is there already needs no wait in the helper.
        if !take {
            if let Some(Ok(found)) = self.indexed(key, true) {
                if after_version.is_none_or(|v| found.entry.version > v) {
                    return Ok(found);
                }
            }
        }
        self.client
            .wait_for(key.namespace(), key.tag(), after_version, take, opts)
            .map(Found::from)
    }

    fn barrier(&mut self, key: &Key, n: u32, opts: &CallOptions<'_>) -> Result<()> {
        self.client.barrier(key.namespace(), key.tag(), n, opts)
    }

    fn queue_push(&mut self, item: Staged, opts: &CallOptions<'_>) -> Result<()> {
        let id = match &item.body {
            Body::Stored(id) => Some(id.clone()),
            Body::Inline(_) => None,
        };
        let r = self.client.queue_push(self::item(item), opts);
        if let (Err(e), Some(id)) = (&r, id) {
            self.client.discard_staged(e, std::slice::from_ref(&id));
        }
        r
    }

    fn queue_pop(&mut self, key: &Key, lease: bool, opts: &CallOptions<'_>) -> Result<Popped> {
        let p = self
            .client
            .queue_pop(key.namespace(), key.tag(), lease, opts)?;
        let found = crate::backend::Found::from(p.found);
        let lease = (p.token != 0).then(|| QueueLease {
            key: key.clone(),
            seq: found.entry.version,
            token: p.token,
        });
        Ok(Popped { found, lease })
    }

    fn queue_ack(
        &mut self,
        lease: &QueueLease,
        requeue: bool,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        let k = &lease.key;
        self.client
            .queue_ack(k.namespace(), k.tag(), lease.seq, lease.token, requeue, opts)
    }

    fn queue_length(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<(u64, u64)> {
        self.client.queue_length(key.namespace(), key.tag(), opts)
    }

    fn counter(
        &mut self,
        key: &Key,
        op: CounterOp,
        opts: &CallOptions<'_>,
    ) -> Result<CounterValue> {
        for _ in 0..STALE_RETRIES {
            let region = self.region(opts)?;
            let make = op != CounterOp::Get;
            let Some(slot) = self.slot(&region, key, false, make, opts)? else {
                return Ok(CounterValue {
                    value: 0,
                    swapped: false,
                });
            };
            let w = wait(opts);
            let done = match op {
                CounterOp::Get => region.counter_get(slot).map(|value| (value, false)),
                CounterOp::Add(by) => region.counter_add(slot, by, w)?.map(|v| (v, false)),
                CounterOp::Set(v) => region.counter_set(slot, v, w)?.map(|()| (v, false)),
                CounterOp::CompareAndSet { old, new } => {
                    region.counter_cas(slot, old, new, w)?.map(|swapped| {
                        let value = if swapped { new } else { old };
                        (value, swapped)
                    })
                }
            };
            match done {
                Ok((value, swapped)) => return Ok(CounterValue { value, swapped }),
                Err(Stale) => self.forget(key, false),
            }
        }
        Err(stale(key))
    }

    fn acquire_lock(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<HeldLock> {
        for _ in 0..STALE_RETRIES {
            let region = self.region(opts)?;
            let Some(slot) = self.slot(&region, key, true, true, opts)? else {
                continue;
            };
            match region.lock_acquire(slot, wait(opts))? {
                Ok(acquired) => {
                    return Ok(HeldLock {
                        key: key.clone(),
                        pid: crate::sys::getpid(),
                        previous_holder_died: acquired.previous_holder_died,
                        token: LockToken::Local { region, slot },
                        released: std::cell::Cell::new(false),
                    })
                }
                Err(Stale) => self.forget(key, true),
            }
        }
        Err(stale(key))
    }

    fn lock_holder(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Option<LockHolder>> {
        for _ in 0..STALE_RETRIES {
            let region = self.region(opts)?;
            let Some(slot) = self.slot(&region, key, true, false, opts)? else {
                return Ok(None);
            };
            match region.lock_holder(slot) {
                Ok(h) => {
                    return Ok(h.map(|h| LockHolder {
                        pid: h.pid,
                        since_ns: h.since_ns,
                    }))
                }
                Err(Stale) => self.forget(key, true),
            }
        }
        Err(stale(key))
    }

    fn entry(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Entry> {
        if let Some(Ok(found)) = self.indexed(key, false) {
            return Ok(found.entry);
        }
        self.get(key, opts).map(|f| f.entry)
    }

    fn exists(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<bool> {
        match self.indexed(key, false) {
            Some(Ok(_)) => return Ok(true),
            Some(Err(())) => {
                if let Some(counter) = self.counter_exists(key) {
                    return Ok(counter);
                }
            }
            None => {}
        }
        self.client.exists(key.namespace(), key.tag(), opts)
    }

    fn remove(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<()> {
        self.client.remove(key.namespace(), key.tag(), opts)
    }

    fn remove_namespace(&mut self, namespace: &str, opts: &CallOptions<'_>) -> Result<u64> {
        self.client.remove_namespace(namespace, opts)
    }

    fn list(&mut self, namespace: Option<&str>, opts: &CallOptions<'_>) -> Result<Vec<Entry>> {
        if let Some(v) = self.indexed_list(namespace) {
            return Ok(v);
        }
        self.client.list(namespace, opts)
    }

    fn info(&mut self, opts: &CallOptions<'_>) -> Result<ServerInfo> {
        self.client.info(opts)
    }

    fn set_capacity(&mut self, bytes: Option<u64>, opts: &CallOptions<'_>) -> Result<()> {
        self.client.set_capacity(bytes, opts)
    }

    fn set_spawn_capacity(&mut self, bytes: Option<u64>) {
        self.client.set_spawn_capacity(bytes);
    }

    fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    fn connect(&mut self, opts: &CallOptions<'_>) -> Result<()> {
        self.client.connect(opts)
    }

    fn start(&mut self, opts: &CallOptions<'_>) -> Result<Started> {
        let was_running = self.client.is_running()?;
        self.client.ping(opts)?;
        Ok(Started {
            pid: self.client.helper_pid().unwrap_or(0),
            started: !was_running,
        })
    }

    fn ping(&mut self, opts: &CallOptions<'_>) -> Result<bool> {
        match self.client.ping(opts) {
            Ok(()) => Ok(true),
            Err(Error::NoServer { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn is_running(&self) -> Result<bool> {
        self.client.is_running()
    }

    fn server_pid(&self) -> Option<u32> {
        self.client.helper_pid()
    }

    fn quit(&mut self, keep: bool, force: bool, opts: &CallOptions<'_>) -> Result<bool> {
        if force {
            self.client.force_quit(keep, opts)
        } else {
            self.client.quit(keep, opts)
        }
    }

    fn disconnect(&mut self) {
        self.client.disconnect();
    }
}

/// The entry of an object found in the index.
fn entry_from(fields: crate::index::Fields, body: crate::index::layout::Body) -> Entry {
    let m = body.meta;
    Entry {
        inline: body.file.is_none(),
        namespace: body.namespace,
        tag: body.tag,
        size: fields.size,
        ctime_ns: fields.ctime_ns,
        kind: fields.kind,
        meta: protocol::Meta {
            class: m.class,
            rtype: m.rtype,
            length: m.length,
            dim: m.dim,
            description: m.description,
        },
        version: fields.version,
        checksum: fields.checksum,
    }
}
