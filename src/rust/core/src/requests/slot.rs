//! Slot: the slot of a counter or a lock in the coordination region (see
//! `coord`), made when there is none. Clients then use it without the
//! helper; the helper makes slots so that a counter never takes the key of
//! an object (both are made under the catalog lock).

use super::{Ask, Handle};
use crate::catalog::answer::{failed, Reply};
use crate::catalog::{Catalog, Origin};
use crate::client::{CallOptions, Client};
use crate::coord::{Kind, SlotRef, Wait};
use crate::error::{Error, Result};
use crate::protocol::Response;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Slot {
    pub namespace: String,
    pub name: String,
    /// A lock's slot (else a counter's).
    pub lock: bool,
}

impl Handle for Slot {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        if let Err(e) = super::check_key(&self.namespace, &self.name) {
            return failed(e).into();
        }
        let key = (self.namespace, self.name);
        if !self.lock && st.objects.contains_key(&key) {
            return failed(Error::BadArgument(format!(
                "an object is stored under tag \"{}\"; a counter needs a tag of its own \
                 (remove the object, or choose another name)",
                key.1
            )))
            .into();
        }
        let kind = if self.lock { Kind::Lock } else { Kind::Counter };
        let made = st.region().and_then(|r| {
            let wait = || Wait::at_most(Duration::from_secs(1));
            match r.insert(kind, &key.0, &key.1, wait()) {
                // Full: the locks nobody holds make room.
                Err(e) if e.kind() == "no_space" && r.reclaim_free_locks() > 0 => {
                    r.insert(kind, &key.0, &key.1, wait())
                }
                made => made,
            }
        });
        match made {
            Ok(s) => Response::Counts(u64::from(s.index), s.incarnation).into(),
            Err(e) => failed(e).into(),
        }
    }
}

impl Ask for Slot {
    type Answer = SlotRef;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<SlotRef, Response> {
        match resp {
            Response::Counts(index, incarnation) => match u32::try_from(index) {
                Ok(index) => Ok(SlotRef { index, incarnation }),
                Err(_) => Err(Response::Counts(index, incarnation)),
            },
            other => Err(other),
        }
    }
}

impl Client {
    /// The slot of a counter (or with `lock`, a lock), made if need be.
    pub(crate) fn slot(
        &mut self,
        ns: &str,
        name: &str,
        lock: bool,
        opts: &CallOptions<'_>,
    ) -> Result<SlotRef> {
        let req = Slot {
            namespace: ns.into(),
            name: name.into(),
            lock,
        };
        self.ask(req, opts)
    }
}
