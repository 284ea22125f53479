//! `Session`: the public API of yaplr-core. One session talks to one
//! backend (the local store, later other ones) over one connection, which
//! it re-creates after `fork()`. Every client (the R package, the `yaplrd`
//! command line, other languages) calls these methods; nothing about
//! staging, retries or formats lives in a language binding.

mod read;
mod shared;
mod stage;
mod transfer;
mod verify;

pub use read::{damaged, is_zero_copy, Bytes, Content, MIN_ZERO_COPY_BYTES};
pub use shared::{SharedVector, VectorSpec};
pub use stage::{PutRequest, Source};
pub use transfer::SaveSelection;
pub use verify::Checked;

use crate::backend::{
    Backend, CallOptions, Condition, CounterOp, Found, HeldLock, Key, LockHolder, Popped,
    QueueLease, Started,
};
use crate::error::Result;
use crate::local::Local;
use crate::progress::{Meter, Progress};
use crate::protocol::{Entry, Meta, ServerInfo};
use std::path::PathBuf;

pub struct Session {
    backend: Box<dyn Backend>,
}

impl Session {
    pub fn new(backend: Box<dyn Backend>) -> Session {
        Session { backend }
    }

    /// A session on the local store in `dir`; `helper` is the `yaplrd`
    /// program started when no helper runs (None: never start one).
    pub fn local(dir: PathBuf, helper: Option<PathBuf>) -> Session {
        Session::new(Box::new(Local::new(dir, helper)))
    }

    /// What serves this session (the store directory), for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Store what `source` writes under `key`, replacing any value. The
    /// payload is written once: into memory while it is small enough to
    /// travel with the request, else straight into the backend. An error
    /// (or an abort through `progress`) stores nothing and leaves nothing.
    pub fn put(
        &mut self,
        key: &Key,
        source: &mut dyn Source,
        meta: Meta,
        opts: &CallOptions<'_>,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        self.put_if(key, source, meta, Condition::Always, opts, progress)
            .map(|_| ())
    }

    /// `put` when `condition` holds at the moment the value would be
    /// stored (else `Error::Conflict`, and nothing is stored); returns the
    /// version the value got.
    pub fn put_if(
        &mut self,
        key: &Key,
        source: &mut dyn Source,
        meta: Meta,
        condition: Condition,
        opts: &CallOptions<'_>,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        // No point writing for a server that can not be reached.
        self.backend.connect(opts)?;
        meta.check()?;
        let mut meter = Meter::new(progress, source.metered_len());
        let mut staged = stage::stage(&mut *self.backend, key, source, meta, true, &mut meter)?;
        drop(meter);
        staged.condition = condition;
        self.backend.put(staged, opts)
    }

    /// Store several values at once: all or none take effect.
    pub fn put_many(
        &mut self,
        items: Vec<PutRequest<'_>>,
        opts: &CallOptions<'_>,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        stage::check_batch(&*self.backend, items.len())?;
        self.backend.connect(opts)?;
        let mut meter = Meter::new(progress, None);
        let staged = stage::stage_many(&mut *self.backend, items, &mut meter)?;
        drop(meter);
        self.backend.put_many(staged, opts)
    }

    /// Look up `key`: its entry and its payload (see `Found::content`).
    pub fn get(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Found> {
        self.backend.get(key, opts)
    }

    /// Look up several objects at one consistent moment, handing each to
    /// `f` as it arrives, in the order of `keys` (so that only a few
    /// payloads are open at once, however many objects there are).
    pub fn get_many(
        &mut self,
        keys: &[Key],
        opts: &CallOptions<'_>,
        mut f: impl FnMut(Found) -> Result<()>,
    ) -> Result<()> {
        self.backend.get_many(keys, opts, &mut f)
    }

    /// Wait up to the call's timeout for a value of `key`, or for one newer
    /// than `after_version` (EMS's readFF); `Error::Timeout` when none
    /// comes. Blocks in the server, without polling.
    pub fn wait(
        &mut self,
        key: &Key,
        after_version: Option<u64>,
        opts: &CallOptions<'_>,
    ) -> Result<Found> {
        self.backend.wait(key, after_version, false, opts)
    }

    /// Wait like `wait`, then remove the value in the same atomic step:
    /// of several takers exactly one gets each value (EMS's readFE, a
    /// one-slot mailbox).
    pub fn take(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Found> {
        self.backend.wait(key, None, true, opts)
    }

    /// Wait up to the call's timeout until `n` processes (this one
    /// included) have reached the barrier `key`; then all go on. The
    /// barrier is reusable; a caller that times out or is interrupted
    /// withdraws, and never counts towards a later release.
    pub fn barrier(&mut self, key: &Key, n: u32, opts: &CallOptions<'_>) -> Result<()> {
        self.backend.barrier(key, n, opts)
    }

    /// Append what `source` writes to the queue `key`. Items are kept like
    /// objects (inline or in files, journaled, counted against the
    /// capacity), in the order they were pushed.
    pub fn queue_push(
        &mut self,
        key: &Key,
        source: &mut dyn Source,
        meta: Meta,
        opts: &CallOptions<'_>,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        self.backend.connect(opts)?;
        meta.check()?;
        let mut meter = Meter::new(progress, source.metered_len());
        let staged = stage::stage(&mut *self.backend, key, source, meta, true, &mut meter)?;
        drop(meter);
        self.backend.queue_push(staged, opts)
    }

    /// The oldest item of the queue `key`, waiting up to the call's
    /// timeout for one (without polling). Without `lease` the item is
    /// removed as it is handed over; with it, the item stays leased to this
    /// process until `queue_ack`, and goes back to the head of the queue if
    /// the process dies first: each item is completed exactly once.
    pub fn queue_pop(&mut self, key: &Key, lease: bool, opts: &CallOptions<'_>) -> Result<Popped> {
        self.backend.queue_pop(key, lease, opts)
    }

    /// Complete a leased item (see `queue_pop`): it is removed for good.
    pub fn queue_ack(&mut self, lease: &QueueLease, opts: &CallOptions<'_>) -> Result<()> {
        self.backend.queue_ack(lease, false, opts)
    }

    /// Hand a leased item back to the head of its queue, for another
    /// consumer.
    pub fn queue_requeue(&mut self, lease: &QueueLease, opts: &CallOptions<'_>) -> Result<()> {
        self.backend.queue_ack(lease, true, opts)
    }

    /// How many items of the queue `key` wait, and how many are leased.
    pub fn queue_length(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<(u64, u64)> {
        self.backend.queue_length(key, opts)
    }

    /// Add `by` to the counter `key` (made at 0 on first use); its new
    /// value. Counters hold integers up to ±2^53 (a double holds them
    /// exactly); a sum beyond that is refused and changes nothing.
    pub fn counter_add(&mut self, key: &Key, by: i64, opts: &CallOptions<'_>) -> Result<i64> {
        Ok(self.backend.counter(key, CounterOp::Add(by), opts)?.value)
    }

    /// The value of the counter `key` (0 for one never set).
    pub fn counter_get(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<i64> {
        Ok(self.backend.counter(key, CounterOp::Get, opts)?.value)
    }

    /// Set the counter `key`.
    pub fn counter_set(&mut self, key: &Key, value: i64, opts: &CallOptions<'_>) -> Result<()> {
        self.backend
            .counter(key, CounterOp::Set(value), opts)
            .map(|_| ())
    }

    /// Set the counter `key` to `new` if its value is `old` (a counter
    /// never set is 0); whether it did.
    pub fn counter_cas(
        &mut self,
        key: &Key,
        old: i64,
        new: i64,
        opts: &CallOptions<'_>,
    ) -> Result<bool> {
        let op = CounterOp::CompareAndSet { old, new };
        Ok(self.backend.counter(key, op, opts)?.swapped)
    }

    /// Acquire the lock `key`, waiting up to the call's timeout. The
    /// operating system releases it if this process dies; the next waiter
    /// then gets it at once, told so by `HeldLock::previous_holder_died`.
    pub fn acquire_lock(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<HeldLock> {
        self.backend.acquire_lock(key, opts)
    }

    /// Release a lock acquired by this process (a forked child never
    /// releases its parent's lock). Releasing it again does nothing.
    pub fn release_lock(&mut self, lock: &HeldLock) -> Result<()> {
        lock.release()
    }

    /// Who holds the lock `key` (None: nobody, or a holder that died).
    pub fn lock_holder(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Option<LockHolder>> {
        self.backend.lock_holder(key, opts)
    }

    /// The entry of `key`: what `get` finds, without its payload.
    pub fn entry(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Entry> {
        self.backend.entry(key, opts)
    }

    pub fn exists(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<bool> {
        self.backend.exists(key, opts)
    }

    pub fn remove(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<()> {
        self.backend.remove(key, opts)
    }

    /// Remove every object of a namespace; returns how many there were.
    pub fn remove_namespace(&mut self, namespace: &str, opts: &CallOptions<'_>) -> Result<u64> {
        crate::key::check_namespace(namespace)?;
        self.backend.remove_namespace(namespace, opts)
    }

    /// The objects of a namespace (None: of every namespace), sorted by
    /// namespace and tag.
    pub fn list(&mut self, namespace: Option<&str>, opts: &CallOptions<'_>) -> Result<Vec<Entry>> {
        self.backend.list(namespace, opts)
    }

    /// What the server says about itself and the store.
    pub fn info(&mut self, opts: &CallOptions<'_>) -> Result<ServerInfo> {
        self.backend.info(opts)
    }

    /// Set the store's capacity in bytes (None: unlimited).
    pub fn set_capacity(&mut self, bytes: Option<u64>, opts: &CallOptions<'_>) -> Result<()> {
        self.backend.set_capacity(bytes, opts)
    }

    /// The capacity a server started by this session gets before any
    /// request.
    pub fn set_spawn_capacity(&mut self, bytes: Option<u64>) {
        self.backend.set_spawn_capacity(bytes);
    }

    /// Whether the session is connected (so that a call will not start a
    /// server).
    pub fn is_connected(&self) -> bool {
        self.backend.is_connected()
    }

    /// Connect, starting the server when `opts` allow.
    pub fn connect(&mut self, opts: &CallOptions<'_>) -> Result<()> {
        self.backend.connect(opts)
    }

    /// Make sure the server runs (starting it when `opts` allow).
    pub fn start(&mut self, opts: &CallOptions<'_>) -> Result<Started> {
        self.backend.start(opts)
    }

    /// Whether a server answers; Ok(false) when none runs.
    pub fn ping(&mut self, opts: &CallOptions<'_>) -> Result<bool> {
        self.backend.ping(opts)
    }

    /// Whether a server runs, without connecting or starting one.
    pub fn is_running(&self) -> Result<bool> {
        self.backend.is_running()
    }

    /// The pid of the server of the current connection, if any.
    pub fn server_pid(&self) -> Option<u32> {
        self.backend.server_pid()
    }

    /// Stop the server and remove every object (with `keep`, the objects
    /// stay for the next server). With `force`, stop it by signal without
    /// asking. Ok(false) when none ran.
    pub fn quit(&mut self, keep: bool, force: bool, opts: &CallOptions<'_>) -> Result<bool> {
        self.backend.quit(keep, force, opts)
    }

    /// Forget the connection (the server is left alone).
    pub fn disconnect(&mut self) {
        self.backend.disconnect();
    }
}

#[cfg(test)]
mod tests;
