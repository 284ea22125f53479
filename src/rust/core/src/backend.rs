//! The `Backend` trait: what a place that keeps objects must do for a
//! `Session`. The local store (a directory served by `yaplrd`, see
//! `local.rs`) is the first implementation; a Redis server or a catalog in
//! shared memory are added as further implementations, without touching
//! `Session` or any language binding.
//!
//! A backend stores *staged* values: `Session` writes a payload either into
//! memory (small) or into a writer the backend gives it (`create`), then
//! hands the staged values to `put` or `put_many`, which publish them
//! atomically. A failed publish is followed by `discard`.

use crate::error::{Error, Result};
pub use crate::protocol::Condition;
use crate::protocol::{Entry, Meta, ServerInfo};
use std::fs::File;

/// A namespace and a tag that passed the key rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    namespace: String,
    tag: String,
}

impl Key {
    /// Check `tag` then `namespace` against the key rules.
    pub fn new(namespace: &str, tag: &str) -> Result<Key> {
        crate::key::check_tag(tag)?;
        crate::key::check_namespace(namespace)?;
        Ok(Key {
            namespace: namespace.to_string(),
            tag: tag.to_string(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

/// How one call may wait and whether it may start the backend's server.
pub struct CallOptions<'a> {
    pub timeout: std::time::Duration,
    /// Start the helper when none runs.
    pub autostart: bool,
    /// Polled during waits; returning true abandons the wait.
    pub interrupted: &'a dyn Fn() -> bool,
}

impl CallOptions<'_> {
    /// Options that never start a server, with their own timeout.
    pub fn no_start(&self) -> CallOptions<'_> {
        CallOptions {
            timeout: self.timeout,
            autostart: false,
            interrupted: self.interrupted,
        }
    }
}

/// Receives the bytes of a payload as they are produced.
pub trait PayloadSink {
    fn write(&mut self, bytes: &[u8]) -> Result<()>;

    /// Append `n` zero bytes (a sink that can reserve zeroed space without
    /// writing it does so).
    fn write_zeros(&mut self, n: u64) -> Result<()> {
        write_zero_bytes(self, n)
    }
}

/// Write `n` zero bytes to `sink`, a chunk at a time.
pub(crate) fn write_zero_bytes<S: PayloadSink + ?Sized>(sink: &mut S, n: u64) -> Result<()> {
    let chunk = [0u8; 1 << 12];
    let mut left = n;
    while left > 0 {
        let k = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        sink.write(&chunk[..k])?;
        left -= k as u64;
    }
    Ok(())
}

/// A payload being written into a backend. Dropped before `commit`, it
/// leaves nothing behind.
pub trait StageWriter: PayloadSink {
    /// Finish the payload; returns the id under which the backend keeps it
    /// until it is published (or discarded).
    fn commit(self: Box<Self>) -> Result<String>;
}

/// A payload written but not yet visible.
pub enum Body {
    /// Small: travels with the publish request.
    Inline(Vec<u8>),
    /// Kept by the backend under an id (see `StageWriter::commit`).
    Stored(String),
}

/// A value staged for `key`, ready to be published.
pub struct Staged {
    pub key: Key,
    pub kind: u32,
    /// When the value was sent (nanoseconds since the epoch).
    pub ctime_ns: i64,
    pub meta: Meta,
    /// When it may be stored (compare-and-swap).
    pub condition: Condition,
    pub body: Body,
}

/// Sizes that decide how `Session` stages payloads.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest payload that travels inline with its publish.
    pub inline_max: usize,
    /// The most inline bytes one batch may carry.
    pub batch_inline_budget: usize,
    /// The most objects one batch may hold.
    pub max_batch_items: usize,
    /// About how many bytes of keys, metadata and inline payloads one
    /// batch may hold.
    pub batch_bytes: usize,
}

/// Where a looked-up object's payload is.
pub enum Payload {
    /// In memory (an object kept inline, or read from a remote backend).
    Bytes(Vec<u8>),
    /// An open object file (local stores), mapped or read by the caller.
    File(File),
}

/// A looked-up object: its catalog entry and its payload.
pub struct Found {
    pub entry: Entry,
    pub payload: Payload,
}

/// A leased queue item, as `queue_ack` completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLease {
    /// The queue.
    pub key: Key,
    /// The item's number.
    pub seq: u64,
    pub token: u64,
}

/// A popped queue item: its entry (tag: the queue's name; version: the
/// item's number) and payload, and its lease if it was leased.
pub struct Popped {
    pub found: Found,
    pub lease: Option<QueueLease>,
}

/// A change of a counter (see `Session::counter_add` and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOp {
    Get,
    Add(i64),
    Set(i64),
    /// Set to `new` if the value is `old`.
    CompareAndSet {
        old: i64,
        new: i64,
    },
}

/// A counter's value after a `CounterOp`, and whether a CompareAndSet
/// swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterValue {
    pub value: i64,
    pub swapped: bool,
}

/// A lock this process holds (see `Session::acquire_lock`). Dropped
/// unreleased in the process that acquired it, it releases the lock (a
/// forked child's copy never does).
pub struct HeldLock {
    pub key: Key,
    /// The process that acquired it: the only one that may release it.
    pub pid: u32,
    /// The previous holder died holding the lock: what it protects may be
    /// half-updated.
    pub previous_holder_died: bool,
    pub(crate) token: LockToken,
    pub(crate) released: std::cell::Cell<bool>,
}

impl HeldLock {
    /// Whether it was released.
    pub fn is_released(&self) -> bool {
        self.released.get()
    }

    /// Release the lock, in the process (and thread) that acquired it; a
    /// forked child never releases its parent's lock. Releasing it again
    /// does nothing.
    pub fn release(&self) -> Result<()> {
        if self.released.get() {
            return Ok(());
        }
        let me = crate::sys::getpid();
        if self.pid != me {
            return Err(Error::BadArgument(format!(
                "lock \"{}\" was acquired by process {}, not by this one ({me}): only the \
                 process that acquired a lock releases it (a forked child never releases its \
                 parent's lock)",
                self.key.tag(),
                self.pid
            )));
        }
        let LockToken::Local { region, slot } = &self.token;
        // A lock whose slot went (its region was closed and replaced) is
        // released all the same: the mapping it is in stays.
        region.lock_release(*slot)?.unwrap_or(());
        self.released.set(true);
        Ok(())
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if self.released.get() || self.pid != crate::sys::getpid() {
            return;
        }
        let LockToken::Local { region, slot } = &self.token;
        let _ = region.lock_release(*slot);
    }
}

/// Where a held lock is, for its backend.
pub(crate) enum LockToken {
    /// A slot of a local store's coordination region (kept mapped while
    /// the lock is held, even if the store is stopped meanwhile).
    Local {
        region: std::sync::Arc<crate::coord::Region>,
        slot: crate::coord::SlotRef,
    },
}

/// Who holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHolder {
    pub pid: u32,
    /// When it got the lock, ns since the epoch.
    pub since_ns: i64,
}

/// What `start` found or did.
#[derive(Debug, Clone, Copy)]
pub struct Started {
    pub pid: u32,
    /// Whether no server ran before this call.
    pub started: bool,
}

/// A place that keeps objects. Every method that talks to a server takes
/// the call's options (its timeout, whether it may start a server, how to
/// notice an interrupt).
pub trait Backend {
    /// What serves, for messages (such as the store directory).
    fn location(&self) -> String;

    /// The staging limits of this backend.
    fn limits(&self) -> Limits;

    /// Start writing a payload of `kind` for `key` that does not travel
    /// inline; `size_hint` payload bytes are reserved at once.
    fn create(
        &mut self,
        key: &Key,
        kind: u32,
        size_hint: u64,
        ctime_ns: i64,
    ) -> Result<Box<dyn StageWriter>>;

    /// Make one staged value the value of its key, if its condition
    /// holds (else `Error::Conflict`); returns the version it got.
    fn put(&mut self, item: Staged, opts: &CallOptions<'_>) -> Result<u64>;

    /// Make several staged values visible at once: all or none.
    fn put_many(&mut self, items: Vec<Staged>, opts: &CallOptions<'_>) -> Result<()>;

    /// Drop staged values (by the ids `StageWriter::commit` gave) that
    /// were never published (`failed` None), or whose publish failed with
    /// `failed`: when that failure leaves it unknown whether the publish
    /// took effect, only the server may decide.
    fn discard(&mut self, ids: &[String], failed: Option<&Error>);

    fn get(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Found>;

    /// Look up several objects at one consistent moment, handing each to
    /// `f` as it arrives, in the order of `keys`.
    fn get_many(
        &mut self,
        keys: &[Key],
        opts: &CallOptions<'_>,
        f: &mut dyn FnMut(Found) -> Result<()>,
    ) -> Result<()>;

    /// Wait up to the call's timeout for a value of `key` (with a version
    /// above `after_version`, if given); with `take`, remove it in the
    /// same atomic step, so that of several takers one gets each value.
    /// Ran out: `Error::Timeout`.
    fn wait(
        &mut self,
        key: &Key,
        after_version: Option<u64>,
        take: bool,
        opts: &CallOptions<'_>,
    ) -> Result<Found>;

    /// Wait up to the call's timeout until `n` callers (this one included)
    /// have reached the barrier `key`, then release them all; reusable.
    fn barrier(&mut self, key: &Key, n: u32, opts: &CallOptions<'_>) -> Result<()>;

    /// Append a staged value to the queue named by its key.
    fn queue_push(&mut self, item: Staged, opts: &CallOptions<'_>) -> Result<()>;

    /// The oldest item of the queue `key`, waiting up to the call's
    /// timeout for one. With `lease`, it stays leased to this process until
    /// `queue_ack` (and goes back to the head of the queue if the process
    /// dies first); `Popped::lease` then names it.
    fn queue_pop(&mut self, key: &Key, lease: bool, opts: &CallOptions<'_>) -> Result<Popped>;

    /// Complete a leased item, or with `requeue` hand it back to the head
    /// of its queue.
    fn queue_ack(
        &mut self,
        lease: &QueueLease,
        requeue: bool,
        opts: &CallOptions<'_>,
    ) -> Result<()>;

    /// How many items of the queue `key` wait, and how many are leased.
    fn queue_length(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<(u64, u64)>;

    /// Read or change the counter `key` (a counter never set reads 0;
    /// changing it makes it).
    fn counter(&mut self, key: &Key, op: CounterOp, opts: &CallOptions<'_>)
        -> Result<CounterValue>;

    /// Acquire the lock `key` for this thread, waiting up to the call's
    /// timeout. A lock whose holder died is acquired at once.
    fn acquire_lock(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<HeldLock>;

    /// Who holds the lock `key` (None: nobody).
    fn lock_holder(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Option<LockHolder>>;

    /// The entry of `key` (what `get` finds, without the payload).
    fn entry(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<Entry> {
        self.get(key, opts).map(|f| f.entry)
    }

    fn exists(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<bool>;

    fn remove(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<()>;

    /// Remove every object of a namespace; returns how many there were.
    fn remove_namespace(&mut self, namespace: &str, opts: &CallOptions<'_>) -> Result<u64>;

    /// The objects of a namespace (None: of every namespace), sorted by
    /// namespace and tag.
    fn list(&mut self, namespace: Option<&str>, opts: &CallOptions<'_>) -> Result<Vec<Entry>>;

    fn info(&mut self, opts: &CallOptions<'_>) -> Result<ServerInfo>;

    /// Set the capacity in bytes (None: unlimited).
    fn set_capacity(&mut self, bytes: Option<u64>, opts: &CallOptions<'_>) -> Result<()>;

    /// The capacity a server started by this session gets at once.
    fn set_spawn_capacity(&mut self, bytes: Option<u64>);

    /// Whether this session is connected (a call may then not start a
    /// server).
    fn is_connected(&self) -> bool;

    /// Connect, starting the server when allowed.
    fn connect(&mut self, opts: &CallOptions<'_>) -> Result<()>;

    /// Make sure the server runs.
    fn start(&mut self, opts: &CallOptions<'_>) -> Result<Started>;

    /// Whether a server answers (false: none runs).
    fn ping(&mut self, opts: &CallOptions<'_>) -> Result<bool>;

    /// Whether a server runs, without connecting or starting one.
    fn is_running(&self) -> Result<bool>;

    /// The pid of the server of the current connection, if any.
    fn server_pid(&self) -> Option<u32>;

    /// Stop the server; with `keep`, its objects stay for the next one.
    /// With `force`, stop it by signal without asking. Ok(false) when none
    /// ran.
    fn quit(&mut self, keep: bool, force: bool, opts: &CallOptions<'_>) -> Result<bool>;

    /// Forget the connection (the server is left alone).
    fn disconnect(&mut self);
}
