//! Staging: writing a value's payload before it is published. A payload
//! collects in memory while it is small (it then travels with the publish
//! request) and moves into the backend as soon as it outgrows the inline
//! limit: one pass over the value either way.

use crate::backend::{Backend, Body, Condition, Key, PayloadSink, StageWriter, Staged};
use crate::error::{Error, Result};
use crate::progress::Meter;
use crate::protocol::Meta;

/// A value to store: it knows its payload kind and writes its payload.
pub trait Source {
    /// The payload kind (see `object_file::KIND_*`).
    fn kind(&self) -> u32;

    /// The payload size if known before writing, or a lower bound of it
    /// (0: unknown). A payload known to be larger than the inline limit is
    /// written straight into the backend, with this much space reserved.
    fn size_hint(&self) -> Option<u64>;

    /// How many bytes `write` counts on its meter, if known (the total of
    /// a progress bar).
    fn metered_len(&self) -> Option<u64> {
        self.size_hint()
    }

    /// When the value was sent, if not now (restoring a dump).
    fn ctime_ns(&self) -> Option<i64> {
        None
    }

    /// Write the whole payload to `out`, counting it on `meter` (whose
    /// hook may abort the write).
    fn write(&mut self, out: &mut dyn PayloadSink, meter: &mut Meter<'_>) -> Result<()>;
}

/// One value of a `Session::put_many`.
pub struct PutRequest<'a> {
    pub key: Key,
    pub meta: Meta,
    pub source: &'a mut dyn Source,
}

enum Sink {
    Memory(Vec<u8>),
    Backend(Box<dyn StageWriter>),
}

/// Collects a payload in memory up to `limit` bytes, then moves it into a
/// writer of the backend.
struct Spill<'b, 'k> {
    backend: &'b mut dyn Backend,
    key: &'k Key,
    kind: u32,
    ctime_ns: i64,
    limit: usize,
    sink: Sink,
}

impl PayloadSink for Spill<'_, '_> {
    fn write_zeros(&mut self, n: u64) -> Result<()> {
        match &mut self.sink {
            Sink::Backend(w) => w.write_zeros(n),
            Sink::Memory(_) => crate::backend::write_zero_bytes(self, n),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.sink {
            Sink::Backend(w) => w.write(bytes),
            Sink::Memory(buf) if buf.len() + bytes.len() <= self.limit => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
            Sink::Memory(buf) => {
                let mut w = self.backend.create(self.key, self.kind, 0, self.ctime_ns)?;
                w.write(buf)?;
                w.write(bytes)?;
                self.sink = Sink::Backend(w);
                Ok(())
            }
        }
    }
}

/// Write the payload of `source` for `key`: in memory when it is small
/// and `inline_ok`, else into the backend (a committed payload the caller
/// must publish or discard). An error leaves nothing behind.
pub(crate) fn stage(
    backend: &mut dyn Backend,
    key: &Key,
    source: &mut dyn Source,
    meta: Meta,
    inline_ok: bool,
    meter: &mut Meter<'_>,
) -> Result<Staged> {
    let kind = source.kind();
    let ctime_ns = source.ctime_ns().unwrap_or_else(crate::codec::now_ns);
    let limit = if inline_ok {
        backend.limits().inline_max
    } else {
        0
    };
    let hint = source.size_hint().unwrap_or(0);
    let sink = if hint > limit as u64 || !inline_ok {
        Sink::Backend(backend.create(key, kind, hint, ctime_ns)?)
    } else {
        Sink::Memory(Vec::with_capacity(crate::codec::chunk(
            hint.max(256),
            limit,
        )))
    };
    let mut spill = Spill {
        backend,
        key,
        kind,
        ctime_ns,
        limit,
        sink,
    };
    source.write(&mut spill, meter)?;
    let body = match spill.sink {
        Sink::Memory(bytes) => Body::Inline(bytes),
        Sink::Backend(w) => Body::Stored(w.commit()?),
    };
    Ok(Staged {
        key: key.clone(),
        kind,
        ctime_ns,
        meta,
        condition: Condition::Always,
        body,
    })
}

/// Refuse a batch larger than the backend takes, before writing anything.
pub(super) fn check_batch(backend: &dyn Backend, n: usize) -> Result<()> {
    let most = backend.limits().max_batch_items;
    if n > most {
        return Err(Error::BadArgument(format!(
            "one batch holds at most {most} objects, not {n}; send them in several batches"
        )));
    }
    Ok(())
}

/// Stage every value of a batch: small ones in memory until the batch
/// holds the backend's inline budget, the others in the backend. An error
/// discards what was staged.
pub(super) fn stage_many(
    backend: &mut dyn Backend,
    items: Vec<PutRequest<'_>>,
    meter: &mut Meter<'_>,
) -> Result<Vec<Staged>> {
    let limits = backend.limits();
    let mut staged: Vec<Staged> = Vec::with_capacity(items.len());
    let mut inline_bytes = 0usize;
    for PutRequest { key, meta, source } in items {
        let inline_ok = inline_bytes + limits.inline_max <= limits.batch_inline_budget;
        let s = meta
            .check()
            .and_then(|_| stage(backend, &key, source, meta, inline_ok, meter));
        match s {
            Ok(s) => {
                if let Body::Inline(b) = &s.body {
                    inline_bytes += b.len();
                }
                staged.push(s);
            }
            Err(e) => {
                backend.discard(&stored_ids(&staged), None);
                return Err(e);
            }
        }
    }
    Ok(staged)
}

/// The ids of the values kept by the backend.
pub(super) fn stored_ids(staged: &[Staged]) -> Vec<String> {
    staged
        .iter()
        .filter_map(|s| match &s.body {
            Body::Stored(id) => Some(id.clone()),
            Body::Inline(_) => None,
        })
        .collect()
}
