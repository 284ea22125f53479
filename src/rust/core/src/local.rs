//! The local store as a `Backend`: a directory on this machine, served by
//! one `yaplrd` helper; payloads that do not travel inline are object files
//! written straight into the directory and published by id.

use crate::backend::{
    Backend, Body, CallOptions, Found, Key, Limits, PayloadSink, Popped, QueueLease, StageWriter,
    Staged, Started,
};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::object_file::ObjectWriter;
use crate::protocol::{self, Entry, ServerInfo};
use crate::requests::put_many::PutItem;
use crate::store::Store;
use std::path::PathBuf;

pub struct Local {
    client: Client,
}

impl Local {
    /// The store in `dir`; `helper` is the yaplrd program started when no
    /// helper runs (None: never start one).
    pub fn new(dir: PathBuf, helper: Option<PathBuf>) -> Local {
        Local {
            client: Client::new(Store::new(dir), helper),
        }
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

    fn exists(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<bool> {
        self.client.exists(key.namespace(), key.tag(), opts)
    }

    fn remove(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<()> {
        self.client.remove(key.namespace(), key.tag(), opts)
    }

    fn remove_namespace(&mut self, namespace: &str, opts: &CallOptions<'_>) -> Result<u64> {
        self.client.remove_namespace(namespace, opts)
    }

    fn list(&mut self, namespace: Option<&str>, opts: &CallOptions<'_>) -> Result<Vec<Entry>> {
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
