//! Counters as the catalog shows them. A counter lives in the store's
//! coordination region (see `coord`), where clients change it without the
//! helper; the helper makes its slot (so that a counter and an object never
//! share a key: both are made under the catalog lock), lists it, reads it
//! as a one-element double vector, and removes it.

use super::{Catalog, Key};
use crate::coord::{Kind, Region, SlotEntry, Wait};
use crate::error::{Error, Result};
use crate::object_file::{VectorHeader, KIND_R_VECTOR};
use crate::protocol::{Entry, Meta};
use std::time::Duration;

/// R's REALSXP.
const REALSXP: u32 = 14;

/// How long the helper waits for a slot's mutex (a counter is held for
/// nanoseconds; a lock being freed by its remover).
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// A counter as an entry, with its payload: a double vector of length 1.
fn counter_entry(e: &SlotEntry) -> (Entry, Vec<u8>) {
    let h = VectorHeader {
        sexptype: REALSXP,
        elt_size: 8,
        length: 1,
        object: 0,
    };
    let mut payload = h.encode().to_vec();
    #[allow(clippy::cast_precision_loss, reason = "counters stay within 2^53")]
    payload.extend_from_slice(&(e.value as f64).to_ne_bytes());
    let entry = Entry {
        namespace: e.namespace.clone(),
        tag: e.name.clone(),
        size: payload.len() as u64,
        ctime_ns: e.since_ns,
        kind: KIND_R_VECTOR,
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
        r.find(Kind::Counter, &key.0, &key.1)?;
        r.entries(Kind::Counter, Some(&key.0))
            .iter()
            .find(|e| e.name == key.1)
            .map(counter_entry)
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

    /// Remove every counter of a namespace; how many there were.
    pub(crate) fn remove_counters(&self, namespace: &str) -> Result<u64> {
        let Some(r) = self.coord.as_ref() else {
            return Ok(0);
        };
        let mut n = 0;
        for e in r.entries(Kind::Counter, Some(namespace)) {
            if r.free(e.slot, Wait::at_most(SLOT_WAIT))? {
                n += 1;
            }
        }
        Ok(n)
    }
}
