//! Saving objects to a dump file and loading them back (see `dump.rs` for
//! the format).

use super::stage::{self, Source};
use super::Session;
use crate::backend::{Body, CallOptions, Key, Payload, PayloadSink};
use crate::dump::{self, DumpEntry};
use crate::error::{Error, Result};
use crate::object_file::{self, HEADER_SIZE, STATE_COMMITTED};
use crate::progress::{Meter, Progress};
use crate::protocol::Entry;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Size of the buffer payloads are copied through.
const COPY_BUFFER: usize = 8 << 20;

/// Which objects `Session::save` writes.
pub struct SaveSelection<'a> {
    /// One namespace, or None: every namespace.
    pub namespace: Option<&'a str>,
    /// These tags of it (each must exist), or empty: every tag.
    pub tags: &'a [String],
}

impl Session {
    /// Write the selected objects to the dump file `path`; returns how many
    /// were written. The file appears whole or not at all; a damaged
    /// object makes it fail (`Error::Corrupt`, naming the tag).
    pub fn save(
        &mut self,
        path: &Path,
        which: SaveSelection<'_>,
        opts: &CallOptions<'_>,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        let mut entries = self.list(which.namespace, opts)?;
        if !which.tags.is_empty() {
            for t in which.tags {
                if !entries.iter().any(|e| &e.tag == t) {
                    return Err(Error::NotFound {
                        tag: t.clone(),
                        namespace: which.namespace.unwrap_or_default().to_string(),
                    });
                }
            }
            entries.retain(|e| which.tags.contains(&e.tag));
        }
        let total = entries.iter().map(|e| e.size).sum();
        let mut meter = Meter::new(progress, Some(total));
        let mut out = dump::Writer::create(path)?;
        for e in &entries {
            let key = Key::new(&e.namespace, &e.tag)?;
            let found = self.get(&key, opts)?;
            save_one(&mut out, found.entry, found.payload, &mut meter)?;
        }
        out.finish()
    }

    /// Load every object of the dump at `path`, all or none: every object
    /// is read, checked and staged before one batch makes them all
    /// visible (a dump larger than one batch is published in several, each
    /// all or none). Unless `overwrite`, refuses (before loading anything)
    /// when a tag already exists. Returns the entries loaded.
    pub fn load(
        &mut self,
        path: &Path,
        overwrite: bool,
        opts: &CallOptions<'_>,
        progress: &mut dyn Progress,
    ) -> Result<Vec<DumpEntry>> {
        let all = dump::entries(path)?;
        let mut keys = Vec::with_capacity(all.len());
        let mut seen = std::collections::HashSet::new();
        for d in &all {
            let key = Key::new(&d.namespace, &d.tag)?;
            if !seen.insert(key.clone()) {
                return Err(dump::bad_dump(
                    path,
                    &format!("it holds \"{}\" twice", d.tag),
                ));
            }
            keys.push(key);
        }
        if !overwrite {
            for d in &all {
                if self.exists(&Key::new(&d.namespace, &d.tag)?, opts)? {
                    return Err(Error::Exists {
                        tag: d.tag.clone(),
                        namespace: d.namespace.clone(),
                    });
                }
            }
        }
        self.connect(opts)?;
        let total = all.iter().map(|d| d.payload_len).sum();
        let mut meter = Meter::new(progress, Some(total));
        let limits = self.backend.limits();
        // Staged in groups that fit one batch each: at most max_batch_items
        // objects, and a message's worth of keys, metadata and inline bytes.
        let mut reader = dump::Reader::open(path)?;
        let mut groups = vec![Vec::new()];
        let mut group_bytes = 0usize;
        let mut inline_bytes = 0usize;
        let mut n = 0u64;
        let staging = (|| {
            while let Some(d) = reader.next(n)? {
                n += 1;
                let key = Key::new(&d.namespace, &d.tag)?;
                let inline_ok = inline_bytes + limits.inline_max <= limits.batch_inline_budget;
                let mut source = DumpSource {
                    reader: &mut reader,
                    entry: &d,
                };
                let s = stage::stage(
                    &mut *self.backend,
                    &key,
                    &mut source,
                    (&d.meta).into(),
                    inline_ok,
                    &mut meter,
                )?;
                let size = 256
                    + d.tag.len()
                    + d.namespace.len()
                    + d.meta.description.as_ref().map_or(0, |s| s.len())
                    + d.meta.class.iter().map(|c| c.len() + 2).sum::<usize>()
                    + match &s.body {
                        Body::Inline(b) => b.len(),
                        Body::Stored(_) => 0,
                    };
                if let Body::Inline(b) = &s.body {
                    inline_bytes += b.len();
                }
                let full = groups.last().is_some_and(|g: &Vec<_>| {
                    !g.is_empty()
                        && (g.len() == limits.max_batch_items
                            || group_bytes + size > limits.batch_bytes)
                });
                if full {
                    groups.push(Vec::new());
                    group_bytes = 0;
                }
                group_bytes += size;
                if let Some(g) = groups.last_mut() {
                    g.push(s);
                }
            }
            Ok(())
        })();
        drop(meter);
        if let Err(e) = staging {
            let ids: Vec<String> = groups.iter().flat_map(|g| stage::stored_ids(g)).collect();
            self.backend.discard(&ids, None);
            return Err(e);
        }
        let mut groups = groups.into_iter();
        while let Some(group) = groups.next() {
            if let Err(e) = self.backend.put_many(group, opts) {
                // The failed group was discarded by put_many; the rest were
                // never sent.
                let rest: Vec<String> = groups.flat_map(|g| stage::stored_ids(&g)).collect();
                self.backend.discard(&rest, None);
                return Err(e);
            }
        }
        Ok(all)
    }
}

/// The next payload of a dump being read, as a value to stage.
struct DumpSource<'r, 'p> {
    reader: &'r mut dump::Reader<'p>,
    entry: &'r DumpEntry,
}

impl Source for DumpSource<'_, '_> {
    fn kind(&self) -> u32 {
        self.entry.kind
    }

    fn size_hint(&self) -> Option<u64> {
        Some(self.entry.payload_len)
    }

    fn ctime_ns(&self) -> Option<i64> {
        Some(self.entry.ctime_ns)
    }

    fn write(&mut self, out: &mut dyn PayloadSink, meter: &mut Meter<'_>) -> Result<()> {
        self.reader.payload(self.entry, &mut |b| {
            out.write(b)?;
            meter.add(b.len() as u64)
        })
    }
}

/// Copy one object into the dump, checking its payload against the
/// checksum written with it.
fn save_one(
    out: &mut dump::Writer,
    entry: Entry,
    payload: Payload,
    meter: &mut Meter<'_>,
) -> Result<()> {
    let (payload_len, kind, recorded) = match &payload {
        Payload::Bytes(bytes) => (bytes.len() as u64, entry.kind, entry.checksum),
        Payload::File(file) => {
            let h = object_file::read_header(file)?;
            if h.state != STATE_COMMITTED {
                return Err(Error::corrupt(format!(
                    "object \"{}\" was never completely written",
                    h.tag
                )));
            }
            (h.payload_len, h.kind, h.checksum)
        }
    };
    out.begin(&DumpEntry {
        namespace: entry.namespace.clone(),
        tag: entry.tag.clone(),
        ctime_ns: entry.ctime_ns,
        kind,
        payload_len,
        meta: dump::Meta::from(&entry.meta),
    })?;
    let tag = &entry.tag;
    match &payload {
        Payload::Bytes(b) => {
            out.payload(b)?;
            meter.add(b.len() as u64)?;
        }
        Payload::File(f) => {
            // pread in chunks: no mapping, so memory stays one buffer.
            let mut buf = vec![0u8; crate::codec::chunk(payload_len, COPY_BUFFER)];
            let mut at = 0u64;
            while at < payload_len {
                let n = crate::codec::chunk(payload_len - at, buf.len());
                f.read_exact_at(&mut buf[..n], HEADER_SIZE as u64 + at)
                    .map_err(|e| {
                        Error::corrupt(format!(
                            "the stored object \"{tag}\" could not be read whole: {e}"
                        ))
                    })?;
                out.payload(&buf[..n])?;
                meter.add(n as u64)?;
                at += n as u64;
            }
        }
    }
    let sum = out.end()?;
    if recorded != 0 && sum != recorded {
        return Err(Error::corrupt(format!(
                "the stored object \"{tag}\" is damaged (its checksum does not match what was written); \
                 nothing was saved"
            )));
    }
    Ok(())
}
