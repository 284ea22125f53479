//! Queues in the catalog. Each item of a queue is an object of the catalog
//! under an internal key: the queue's namespace, and a tag that no client
//! can give (it starts with NUL) made of the queue's name and the item's
//! version, so items are journaled, stored inline or in files, counted
//! against the capacity and recovered after a crash like any object, in
//! the order they were pushed. Listings leave them out.
//!
//! An item popped with a lease stays in the catalog, leased to the popping
//! process (a journaled Lease record naming its pid and start time), until
//! that process acknowledges it (a Remove) or dies: the helper then hands
//! it back to the head of its queue (Unlease).

use super::{Catalog, Key};
use crate::error::Result;
use crate::journal::Record;
use crate::sys;
use std::collections::BTreeSet;

const PREFIX: &str = "\0q\0";

/// Who holds a leased item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) pid: u32,
    /// sys::process_start of the pid when it took the lease.
    pub(crate) start: u64,
    pub(crate) token: u64,
}

impl Lease {
    /// Whether the process that took the lease still runs.
    pub(crate) fn holder_alive(&self) -> bool {
        sys::process_start(self.pid) == Some(self.start)
    }
}

/// The catalog key of item `seq` of queue `name`.
pub(crate) fn item_key(namespace: &str, name: &str, seq: u64) -> Key {
    (namespace.to_string(), format!("{PREFIX}{name}\0{seq:020}"))
}

/// Whether a tag belongs to the catalog's own use (listings skip it).
pub(crate) fn is_internal(tag: &str) -> bool {
    tag.starts_with('\0')
}

/// The tag an object file of the object `tag` carries in its header: the
/// queue's name for a queue item (its writer knew no other), else `tag`.
pub(crate) fn public_tag(tag: &str) -> &str {
    tag.strip_prefix(PREFIX)
        .and_then(|rest| rest.rsplit_once('\0'))
        .map_or(tag, |(name, _)| name)
}

/// The queue (namespace, name) and the item number of an item's key.
pub(crate) fn parse_item(key: &Key) -> Option<(Key, u64)> {
    let rest = key.1.strip_prefix(PREFIX)?;
    let (name, seq) = rest.rsplit_once('\0')?;
    Some(((key.0.clone(), name.to_string()), seq.parse().ok()?))
}

impl Catalog {
    /// Rebuild the queues from the items in the catalog and their leases.
    pub(crate) fn index_queues(&mut self) {
        self.queues.clear();
        let items: Vec<(Key, u64)> = self
            .objects
            .keys()
            .filter(|k| !self.leases.contains_key(*k))
            .filter_map(parse_item)
            .collect();
        for (queue, seq) in items {
            self.queues.entry(queue).or_default().insert(seq);
        }
        let objects = &self.objects;
        self.leases.retain(|k, _| objects.contains_key(k));
    }

    /// Keep the queues in step with a change of the object under `key`:
    /// `present` says whether it is there after the change.
    pub(crate) fn queue_changed(&mut self, key: &Key, present: bool) {
        let Some((queue, seq)) = parse_item(key) else {
            return;
        };
        if present && !self.leases.contains_key(key) {
            self.queues.entry(queue).or_default().insert(seq);
            return;
        }
        if !present {
            self.leases.remove(key);
        }
        if let Some(q) = self.queues.get_mut(&queue) {
            q.remove(&seq);
            if q.is_empty() {
                self.queues.remove(&queue);
            }
        }
    }

    /// Apply a Lease record.
    pub(crate) fn apply_lease(&mut self, key: Key, lease: Lease) {
        self.leases.insert(key.clone(), lease);
        self.queue_changed(&key, true);
        if let Some((queue, seq)) = parse_item(&key) {
            if let Some(q) = self.queues.get_mut(&queue) {
                q.remove(&seq);
                if q.is_empty() {
                    self.queues.remove(&queue);
                }
            }
        }
    }

    /// Apply an Unlease record: the item is ready again.
    pub(crate) fn apply_unlease(&mut self, key: &Key) {
        self.leases.remove(key);
        if self.objects.contains_key(key) {
            self.queue_changed(key, true);
        }
    }

    /// The oldest ready item of `queue`.
    pub(crate) fn queue_head(&self, queue: &Key) -> Option<Key> {
        let seq = self.queues.get(queue)?.first()?;
        Some(item_key(&queue.0, &queue.1, *seq))
    }

    /// How many items of `queue` are ready, and how many are leased.
    pub(crate) fn queue_len(&self, queue: &Key) -> (u64, u64) {
        let ready = self.queues.get(queue).map_or(0, BTreeSet::len) as u64;
        let leased = self
            .leases
            .keys()
            .filter(|k| parse_item(k).is_some_and(|(q, _)| &q == queue))
            .count() as u64;
        (ready, leased)
    }

    /// Hand back the items leased to processes that died (of `queue`
    /// only, if given); true when any was.
    pub(crate) fn reclaim_leases(&mut self, queue: Option<&Key>) -> Result<bool> {
        let dead: Vec<Key> = self
            .leases
            .iter()
            .filter(|(k, _)| {
                queue.is_none_or(|q| parse_item(k).is_some_and(|(kq, _)| &kq == q))
            })
            .filter(|(_, l)| !l.holder_alive())
            .map(|(k, _)| k.clone())
            .collect();
        for key in &dead {
            let (namespace, tag) = key.clone();
            self.commit(None, Record::Unlease { namespace, tag }, &[], 0)?;
        }
        Ok(!dead.is_empty())
    }

    /// The records that recreate the leases (for a journal rewrite).
    pub(crate) fn lease_records(&self) -> Vec<Record> {
        self.leases
            .iter()
            .map(|(k, l)| Record::Lease {
                namespace: k.0.clone(),
                tag: k.1.clone(),
                pid: l.pid,
                start: l.start,
                token: l.token,
            })
            .collect()
    }
}
