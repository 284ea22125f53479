//! Counters as the catalog shows them. A counter lives in the store's
//! coordination region (see `coord`), where clients change it without the
//! helper; the helper makes its slot (so that a counter and an object never
//! share a key: both are made under the catalog lock), lists it, reads it
//! as a double, and removes it.

use super::{Catalog, Key};
use crate::coord::{Kind, Region, SlotEntry, Wait};
use crate::error::{Error, Result};
use crate::object_file::KIND_R_SERIALIZED;
use crate::protocol::{Entry, Meta};
use std::time::Duration;

/// R's REALSXP.
const REALSXP: i32 = 14;

/// How long the helper waits for a slot's mutex (a counter is held for
/// nanoseconds; a lock being freed by its remover).
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// A double as R serialization (format version 3, native binary, as
/// serialize(xdr = FALSE) writes it): a REALSXP of length 1.
fn serialized_double(x: f64) -> Vec<u8> {
    /// R 4.0.0 wrote it; R 3.5.0 reads it.
    const WRITER: i32 = 0x0004_0000;
    const MIN_READER: i32 = 0x0003_0500;
    let mut b = b"B\n".to_vec();
    for i in [3, WRITER, MIN_READER, 5] {
        b.extend_from_slice(&i32::to_ne_bytes(i));
    }
    b.extend_from_slice(b"UTF-8");
    // The item: its flags (the type, no attributes), its length, its value.
    for i in [REALSXP, 1] {
        b.extend_from_slice(&i32::to_ne_bytes(i));
    }
    b.extend_from_slice(&x.to_ne_bytes());
    b
}

/// A counter as an entry, with its payload: a double, as R serialization.
pub(crate) fn counter_entry(e: &SlotEntry) -> (Entry, Vec<u8>) {
    #[allow(clippy::cast_precision_loss, reason = "counters stay within 2^53")]
    let payload = serialized_double(e.value as f64);
    let entry = Entry {
        namespace: e.namespace.clone(),
        tag: e.name.clone(),
        size: payload.len() as u64,
        ctime_ns: e.since_ns,
        kind: KIND_R_SERIALIZED,
        meta: Meta {
            class: vec!["yaplr_counter".into()],
            rtype: "double".into(),
            length: 1,
            dim: Vec::new(),
            description: None,
        },
        version: 0,
        inline: true,
        checksum: crate::codec::checksum(&payload),
    };
    (entry, payload)
}

impl Catalog {
    /// The coordination region, or why there is none.
    pub(crate) fn region(&self) -> Result<&Region> {
        self.coord.as_ref().ok_or_else(|| Error::Server {
            message: format!(
                "the helper could not make the coordination table of the store \"{}\" \
                 (see its log, yaplrd.log)",
                self.store.dir().display()
            ),
        })
    }

    /// Whether a counter is stored under `key`.
    pub(crate) fn has_counter(&self, key: &Key) -> bool {
        self.coord
            .as_ref()
            .is_some_and(|r| r.find(Kind::Counter, &key.0, &key.1).is_some())
    }

    /// Refuse to store an object under the key of a counter.
    pub(crate) fn check_not_counter(&self, key: &Key) -> Result<()> {
        if self.has_counter(key) {
            return Err(Error::BadArgument(format!(
                "a counter is stored under tag \"{}\"; remove it with remove_object() first, \
                 or choose another tag",
                key.1
            )));
        }
        Ok(())
    }

    /// The counters of a namespace (None: of all) as entries.
    pub(crate) fn counter_entries(&self, namespace: Option<&str>) -> Vec<Entry> {
        self.coord.as_ref().map_or_else(Vec::new, |r| {
            r.entries(Kind::Counter, namespace)
                .iter()
                .map(|e| counter_entry(e).0)
                .collect()
        })
    }

    /// The counter under `key` as an entry with its payload.
    pub(crate) fn counter_found(&self, key: &Key) -> Option<(Entry, Vec<u8>)> {
        let r = self.coord.as_ref()?;
        let slot = r.find(Kind::Counter, &key.0, &key.1)?;
        r.entry(slot, Kind::Counter).as_ref().map(counter_entry)
    }

    /// Remove the counter under `key`; whether there was one.
    pub(crate) fn remove_counter(&self, key: &Key) -> Result<bool> {
        let Some(r) = self.coord.as_ref() else {
            return Ok(false);
        };
        let Some(slot) = r.find(Kind::Counter, &key.0, &key.1) else {
            return Ok(false);
        };
        r.free(slot, Wait::at_most(SLOT_WAIT))
    }

    /// Remove every counter of a namespace.
    pub(crate) fn remove_counters(&self, namespace: &str) -> Result<()> {
        let Some(r) = self.coord.as_ref() else {
            return Ok(());
        };
        for e in r.entries(Kind::Counter, Some(namespace)) {
            r.free(e.slot, Wait::at_most(SLOT_WAIT))?;
        }
        Ok(())
    }
}
