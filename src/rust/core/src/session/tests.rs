//! `Session` against a second backend that keeps everything in memory:
//! staging, all-or-none batches and clean-up do not depend on the local
//! store.

use super::*;
use crate::backend::{Body, Limits, Payload, PayloadSink, StageWriter, Staged};
use crate::error::Error;
use crate::progress::Silent;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// What the memory backend holds: published values, staged payloads by id,
/// and what was discarded.
#[derive(Default)]
struct Memory {
    objects: HashMap<Key, (Entry, Vec<u8>)>,
    staged: HashMap<String, Vec<u8>>,
    discarded: Vec<String>,
    next_id: u64,
    version: u64,
}

struct MemoryBackend(Rc<RefCell<Memory>>);

struct MemoryWriter {
    mem: Rc<RefCell<Memory>>,
    bytes: Vec<u8>,
}

impl PayloadSink for MemoryWriter {
    fn write(&mut self, bytes: &[u8]) -> crate::Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
}

impl StageWriter for MemoryWriter {
    fn commit(self: Box<Self>) -> crate::Result<String> {
        let mut m = self.mem.borrow_mut();
        m.next_id += 1;
        let id = format!("id{}", m.next_id);
        m.staged.insert(id.clone(), self.bytes);
        Ok(id)
    }
}

impl MemoryBackend {
    fn publish(&self, s: Staged) -> crate::Result<u64> {
        let mut m = self.0.borrow_mut();
        let found = m.objects.get(&s.key).map(|(e, _)| e.version);
        if !s.condition.holds(found) {
            return Err(Error::Conflict {
                tag: s.key.tag().into(),
                namespace: s.key.namespace().into(),
                expected: s.condition.expected(),
                found,
            });
        }
        let (bytes, inline) = match s.body {
            Body::Inline(b) => (b, true),
            Body::Stored(id) => (
                m.staged.remove(&id).ok_or_else(|| Error::Server {
                    message: format!("no staged payload {id}"),
                })?,
                false,
            ),
        };
        m.version += 1;
        let entry = Entry {
            namespace: s.key.namespace().into(),
            tag: s.key.tag().into(),
            size: bytes.len() as u64,
            ctime_ns: s.ctime_ns,
            kind: s.kind,
            meta: s.meta,
            version: m.version,
            inline,
            checksum: crate::codec::checksum(&bytes),
        };
        m.objects.insert(s.key, (entry, bytes));
        Ok(m.version)
    }
}

fn unsupported() -> Error {
    Error::Server {
        message: "not supported by the memory backend".into(),
    }
}

impl Backend for MemoryBackend {
    fn location(&self) -> String {
        "memory".into()
    }
    fn limits(&self) -> Limits {
        Limits {
            inline_max: 8,
            batch_inline_budget: 16,
            max_batch_items: 3,
            batch_bytes: 1 << 20,
        }
    }
    fn create(
        &mut self,
        _key: &Key,
        _kind: u32,
        _size_hint: u64,
        _ctime_ns: i64,
    ) -> crate::Result<Box<dyn StageWriter>> {
        Ok(Box::new(MemoryWriter {
            mem: self.0.clone(),
            bytes: Vec::new(),
        }))
    }
    fn put(&mut self, item: Staged, _opts: &CallOptions<'_>) -> crate::Result<u64> {
        self.publish(item)
    }
    fn put_many(&mut self, items: Vec<Staged>, _opts: &CallOptions<'_>) -> crate::Result<()> {
        items
            .into_iter()
            .try_for_each(|s| self.publish(s).map(|_| ()))
    }
    fn discard(&mut self, ids: &[String], _failed: Option<&Error>) {
        let mut m = self.0.borrow_mut();
        for id in ids {
            m.staged.remove(id);
            m.discarded.push(id.clone());
        }
    }
    fn wait(
        &mut self,
        key: &Key,
        after_version: Option<u64>,
        take: bool,
        opts: &CallOptions<'_>,
    ) -> crate::Result<Found> {
        // One thread: a value that is not there now never comes.
        let found = self.get(key, opts)?;
        if after_version.is_some_and(|v| found.entry.version <= v) {
            return Err(Error::Timeout {
                waited_for: "a newer value".into(),
                seconds: opts.timeout.as_secs_f64(),
            });
        }
        if take {
            self.0.borrow_mut().objects.remove(key);
        }
        Ok(found)
    }
    fn barrier(&mut self, _key: &Key, n: u32, opts: &CallOptions<'_>) -> crate::Result<()> {
        // One thread: nobody else ever arrives.
        if n <= 1 {
            return Ok(());
        }
        Err(Error::Timeout {
            waited_for: "a barrier".into(),
            seconds: opts.timeout.as_secs_f64(),
        })
    }
    fn queue_push(&mut self, _item: Staged, _opts: &CallOptions<'_>) -> crate::Result<()> {
        Err(Error::BadArgument("no queues in memory".into()))
    }
    fn queue_pop(
        &mut self,
        _key: &Key,
        _lease: bool,
        _opts: &CallOptions<'_>,
    ) -> crate::Result<crate::backend::Popped> {
        Err(Error::BadArgument("no queues in memory".into()))
    }
    fn queue_ack(
        &mut self,
        _lease: &crate::backend::QueueLease,
        _requeue: bool,
        _opts: &CallOptions<'_>,
    ) -> crate::Result<()> {
        Err(Error::BadArgument("no queues in memory".into()))
    }
    fn queue_length(&mut self, _key: &Key, _opts: &CallOptions<'_>) -> crate::Result<(u64, u64)> {
        Ok((0, 0))
    }
    fn counter(
        &mut self,
        _key: &Key,
        _op: crate::backend::CounterOp,
        _opts: &CallOptions<'_>,
    ) -> crate::Result<crate::backend::CounterValue> {
        Err(Error::BadArgument("no counters in memory".into()))
    }
    fn acquire_lock(
        &mut self,
        _key: &Key,
        _opts: &CallOptions<'_>,
    ) -> crate::Result<crate::backend::HeldLock> {
        Err(Error::BadArgument("no locks in memory".into()))
    }
    fn lock_holder(
        &mut self,
        _key: &Key,
        _opts: &CallOptions<'_>,
    ) -> crate::Result<Option<crate::backend::LockHolder>> {
        Ok(None)
    }
    fn get(&mut self, key: &Key, _opts: &CallOptions<'_>) -> crate::Result<Found> {
        let m = self.0.borrow();
        let (entry, bytes) = m.objects.get(key).ok_or_else(|| Error::NotFound {
            tag: key.tag().into(),
            namespace: key.namespace().into(),
        })?;
        Ok(Found {
            entry: entry.clone(),
            payload: Payload::Bytes(bytes.clone()),
        })
    }
    fn get_many(
        &mut self,
        keys: &[Key],
        opts: &CallOptions<'_>,
        f: &mut dyn FnMut(Found) -> crate::Result<()>,
    ) -> crate::Result<()> {
        keys.iter().try_for_each(|k| f(self.get(k, opts)?))
    }
    fn exists(&mut self, key: &Key, _opts: &CallOptions<'_>) -> crate::Result<bool> {
        Ok(self.0.borrow().objects.contains_key(key))
    }
    fn remove(&mut self, key: &Key, _opts: &CallOptions<'_>) -> crate::Result<()> {
        self.0
            .borrow_mut()
            .objects
            .remove(key)
            .map(|_| ())
            .ok_or(Error::NotFound {
                tag: key.tag().into(),
                namespace: key.namespace().into(),
            })
    }
    fn remove_namespace(&mut self, _ns: &str, _opts: &CallOptions<'_>) -> crate::Result<u64> {
        Err(unsupported())
    }
    fn list(&mut self, ns: Option<&str>, _opts: &CallOptions<'_>) -> crate::Result<Vec<Entry>> {
        let mut v: Vec<Entry> = self
            .0
            .borrow()
            .objects
            .values()
            .map(|(e, _)| e.clone())
            .filter(|e| ns.is_none_or(|n| e.namespace == n))
            .collect();
        v.sort_by(|a, b| (&a.namespace, &a.tag).cmp(&(&b.namespace, &b.tag)));
        Ok(v)
    }
    fn info(&mut self, _opts: &CallOptions<'_>) -> crate::Result<ServerInfo> {
        Err(unsupported())
    }
    fn set_capacity(&mut self, _b: Option<u64>, _opts: &CallOptions<'_>) -> crate::Result<()> {
        Err(unsupported())
    }
    fn set_spawn_capacity(&mut self, _bytes: Option<u64>) {}
    fn is_connected(&self) -> bool {
        true
    }
    fn connect(&mut self, _opts: &CallOptions<'_>) -> crate::Result<()> {
        Ok(())
    }
    fn start(&mut self, _opts: &CallOptions<'_>) -> crate::Result<Started> {
        Ok(Started {
            pid: 0,
            started: false,
        })
    }
    fn ping(&mut self, _opts: &CallOptions<'_>) -> crate::Result<bool> {
        Ok(true)
    }
    fn is_running(&self) -> crate::Result<bool> {
        Ok(true)
    }
    fn server_pid(&self) -> Option<u32> {
        None
    }
    fn quit(&mut self, _k: bool, _f: bool, _opts: &CallOptions<'_>) -> crate::Result<bool> {
        Ok(true)
    }
    fn disconnect(&mut self) {}
}

/// A payload written in pieces of `piece` bytes; fails after `fail_after`
/// bytes when set.
struct Bytes {
    data: Vec<u8>,
    piece: usize,
    fail_after: Option<usize>,
}

impl Source for Bytes {
    fn kind(&self) -> u32 {
        crate::object_file::KIND_R_SERIALIZED
    }
    fn size_hint(&self) -> Option<u64> {
        None
    }
    fn write(&mut self, out: &mut dyn PayloadSink, _meter: &mut Meter<'_>) -> crate::Result<()> {
        for (i, chunk) in self.data.chunks(self.piece).enumerate() {
            if self.fail_after.is_some_and(|n| i * self.piece >= n) {
                return Err(Error::BadArgument("the source failed".into()));
            }
            out.write(chunk)?;
        }
        Ok(())
    }
}

fn bytes(data: &[u8]) -> Bytes {
    Bytes {
        data: data.to_vec(),
        piece: 3,
        fail_after: None,
    }
}

fn no() -> bool {
    false
}

fn opts() -> CallOptions<'static> {
    CallOptions {
        timeout: std::time::Duration::from_secs(1),
        autostart: false,
        interrupted: &no,
    }
}

fn session() -> (Session, Rc<RefCell<Memory>>) {
    let mem = Rc::new(RefCell::new(Memory::default()));
    (Session::new(Box::new(MemoryBackend(mem.clone()))), mem)
}

fn key(tag: &str) -> Key {
    Key::new("default", tag).unwrap()
}

fn payload(s: &mut Session, tag: &str) -> Vec<u8> {
    match s.get(&key(tag), &opts()).unwrap().payload {
        Payload::Bytes(b) => b,
        Payload::File(_) => panic!("the memory backend has no files"),
    }
}

#[test]
fn small_payloads_travel_inline_and_large_ones_spill_into_the_backend() {
    let (mut s, mem) = session();
    let o = opts();
    s.put(
        &key("small"),
        &mut bytes(b"12345678"),
        Meta::default(),
        &o,
        &mut Silent,
    )
    .unwrap();
    s.put(
        &key("large"),
        &mut bytes(b"123456789"),
        Meta::default(),
        &o,
        &mut Silent,
    )
    .unwrap();
    assert!(mem.borrow().objects[&key("small")].0.inline);
    assert!(!mem.borrow().objects[&key("large")].0.inline);
    // The spilled payload is whole: what was collected in memory first,
    // then the rest.
    assert_eq!(payload(&mut s, "large"), b"123456789");
    assert!(mem.borrow().staged.is_empty());
}

#[test]
fn a_failing_source_stores_nothing_and_leaves_nothing() {
    let (mut s, mem) = session();
    let mut src = Bytes {
        data: vec![7u8; 40],
        piece: 4,
        fail_after: Some(20),
    };
    let e = s
        .put(&key("t"), &mut src, Meta::default(), &opts(), &mut Silent)
        .unwrap_err();
    assert!(matches!(e, Error::BadArgument(_)));
    let m = mem.borrow();
    assert!(m.objects.is_empty());
    // The spilled writer was dropped before its commit: no staged payload.
    assert!(m.staged.is_empty());
}

#[test]
fn a_batch_is_all_or_none_and_discards_what_it_staged() {
    let (mut s, mem) = session();
    let o = opts();
    let mut a = bytes(b"a-long-payload-1");
    let mut b = bytes(b"tiny");
    let mut c = Bytes {
        data: vec![1u8; 30],
        piece: 5,
        fail_after: Some(10),
    };
    let items = vec![
        PutRequest {
            key: key("a"),
            meta: Meta::default(),
            source: &mut a,
        },
        PutRequest {
            key: key("b"),
            meta: Meta::default(),
            source: &mut b,
        },
        PutRequest {
            key: key("c"),
            meta: Meta::default(),
            source: &mut c,
        },
    ];
    assert!(s.put_many(items, &o, &mut Silent).is_err());
    {
        let m = mem.borrow();
        assert!(m.objects.is_empty());
        assert!(m.staged.is_empty());
        // "a" spilled into the backend and was handed back.
        assert_eq!(m.discarded, vec!["id1".to_string()]);
    }
    let mut a = bytes(b"a-long-payload-1");
    let mut b = bytes(b"tiny");
    let items = vec![
        PutRequest {
            key: key("a"),
            meta: Meta::default(),
            source: &mut a,
        },
        PutRequest {
            key: key("b"),
            meta: Meta::default(),
            source: &mut b,
        },
    ];
    s.put_many(items, &o, &mut Silent).unwrap();
    assert_eq!(payload(&mut s, "a"), b"a-long-payload-1");
    assert_eq!(payload(&mut s, "b"), b"tiny");
    let tags: Vec<String> = s
        .list(None, &o)
        .unwrap()
        .into_iter()
        .map(|e| e.tag)
        .collect();
    assert_eq!(tags, ["a", "b"]);
}

#[test]
fn a_batch_larger_than_the_backend_takes_is_refused_before_writing() {
    let (mut s, mem) = session();
    let mut srcs: Vec<Bytes> = (0..4).map(|_| bytes(b"x")).collect();
    let items = srcs
        .iter_mut()
        .enumerate()
        .map(|(i, src)| PutRequest {
            key: key(&format!("t{i}")),
            meta: Meta::default(),
            source: src,
        })
        .collect();
    let e = s.put_many(items, &opts(), &mut Silent).unwrap_err();
    assert!(e.to_string().contains("at most 3 objects"), "{e}");
    assert_eq!(mem.borrow().next_id, 0);
}

#[test]
fn content_checks_inline_payloads_against_their_checksum() {
    let (mut s, mem) = session();
    s.put(
        &key("t"),
        &mut bytes(b"abc"),
        Meta::default(),
        &opts(),
        &mut Silent,
    )
    .unwrap();
    let ok = s.get(&key("t"), &opts()).unwrap();
    match ok.content(false).unwrap() {
        Content::Serialized(b) => assert_eq!(&*b, b"abc"),
        _ => panic!("an inline payload is serialized bytes"),
    }
    mem.borrow_mut().objects.get_mut(&key("t")).unwrap().1[0] = b'X';
    let bad = s.get(&key("t"), &opts()).unwrap();
    let e = bad.content(false).err().unwrap();
    assert_eq!(e.kind(), "corrupt");
    assert_eq!(e.hint(), Some(crate::error::Hint::Resend));
}
