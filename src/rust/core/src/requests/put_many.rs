//! PutMany: store several objects at once, all or none.

use super::{check_item, Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Hint, Result};
use crate::journal::{self, Record};
use crate::object_file::{self, STATE_COMMITTED};
use crate::protocol::Failure;
use crate::protocol::{self, Meta, Response, INLINE_MAX};
use crate::catalog::answer::{error_response, failed, failure, Reply};
use crate::catalog::{Catalog, Origin};
use crate::store;
use bincode::{Decode, Encode};
use std::collections::HashSet;
use std::os::fd::OwnedFd;

/// Store several objects at once: all or none take effect.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct PutMany {
    pub items: Vec<PutItem>,
}

/// One object of a PutMany: inline bytes, or a committed object file.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct PutItem {
    pub namespace: String,
    pub tag: String,
    pub kind: u32,
    pub ctime_ns: i64,
    pub inline: Option<Vec<u8>>,
    pub id: Option<String>,
    pub meta: Meta,
}

impl Handle for PutMany {
    const CHANGE: bool = true;

    /// Every item is checked first, then one Batch record makes them all
    /// take effect at once.
    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        match batch(st, self.items) {
            Ok(b) => commit(st, origin, b),
            Err(refused) => Response::Failed(refused),
        }
        .into()
    }
}

/// The records that store a batch, with their inline payloads.
pub(super) struct Batch {
    pub(super) recs: Vec<Record>,
    pub(super) payloads: Vec<Vec<u8>>,
    /// Bytes the batch stores.
    pub(super) added: u64,
    /// Bytes of the values it replaces.
    pub(super) freed: u64,
}

/// The batch that stores `items`, or the failure that refuses them.
pub(super) fn batch(st: &mut Catalog, items: Vec<PutItem>) -> std::result::Result<Batch, Failure> {
    let mut recs = Vec::with_capacity(items.len());
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    let mut seen = HashSet::new();
    let mut added: u64 = 0;
    let mut freed: u64 = 0;
    for item in items {
        check_item(&item.namespace, &item.tag, &item.meta).map_err(failure)?;
        let key = (item.namespace.clone(), item.tag.clone());
        st.check_not_counter(&key).map_err(failure)?;
        if !seen.insert(key.clone()) {
            return Err(Failure::from(Error::BadArgument(format!(
                "the tag \"{}\" is given twice",
                item.tag
            ))));
        }
        let (size, kind, ctime_ns, data) = match (item.inline, item.id) {
            (Some(bytes), None) if bytes.len() <= INLINE_MAX => {
                (bytes.len() as u64, item.kind, item.ctime_ns, Ok(bytes))
            }
            (None, Some(id)) if store::is_valid_id(&id) => {
                let header = match st
                    .store
                    .open_object(&id)
                    .map(|f| object_file::read_header(&f))
                {
                    Ok(Ok(h)) => h,
                    Ok(Err(e)) => return Err(Failure::from(Error::corrupt(e.to_string()))),
                    Err(e) => {
                        let msg = format!("the object file for \"{}\" is missing ({e})", item.tag);
                        return Err(Failure::from(Error::Server { message: msg }));
                    }
                };
                if header.state != STATE_COMMITTED
                    || header.tag != item.tag
                    || header.namespace != item.namespace
                {
                    let msg = format!(
                        "object file {id} is not a committed object for \"{}\"",
                        item.tag
                    );
                    return Err(Failure::from(Error::corrupt(msg)));
                }
                (header.payload_len, header.kind, header.ctime_ns, Err(id))
            }
            _ => {
                return Err(Failure::from(Error::Protocol {
                    message: "a batch item needs inline bytes or a valid object id".to_string(),
                }))
            }
        };
        freed += st.objects.get(&key).map_or(0, |o| o.size);
        added += size;
        let seq = st.next_seq();
        let (namespace, tag) = key;
        let meta = journal::Meta::from(&item.meta);
        recs.push(match data {
            Ok(bytes) => {
                let rec = Record::Put {
                    namespace,
                    tag,
                    ctime_ns,
                    kind,
                    len: bytes.len() as u64,
                    sum: crate::codec::checksum(&bytes),
                    meta,
                    seq,
                };
                payloads.push(bytes);
                rec
            }
            Err(id) => Record::Link {
                namespace,
                tag,
                id,
                ctime_ns,
                kind,
                size,
                meta,
                seq,
            },
        });
    }
    Ok(Batch {
        recs,
        payloads,
        added,
        freed,
    })
}

/// Check the capacity for the batch, then journal and apply it as one
/// record.
pub(super) fn commit(st: &mut Catalog, origin: Origin, b: Batch) -> Response {
    let Batch {
        recs,
        payloads,
        added,
        freed,
    } = b;
    if let Some(cap) = st.capacity {
        let used = st.used() - freed.min(st.used());
        if used + added > cap {
            let msg = format!(
                "the store \"{}\" has a capacity of {cap} bytes: these objects need {added} bytes \
                 but only {} are free",
                st.store.dir().display(),
                cap.saturating_sub(used)
            );
            return error_response(Error::NoSpace {
                message: msg,
                needed: added,
                hint: Some(Hint::RaiseCapacity),
            });
        }
    }
    let slices: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let ids: Vec<String> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Link { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    match st.commit(Some(origin), Record::Batch(recs), &slices, 0) {
        Ok(()) => Response::Ok,
        Err(e) => {
            if matches!(e, Error::Timeout { .. }) {
                st.drop_unlinked(&ids);
            }
            failed(e)
        }
    }
}

impl Ask for PutMany {
    type Answer = ();

    fn answer(_: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        Ok(())
    }
}

impl Client {
    /// Store several objects at once: all or none take effect.
    pub fn put_many(&mut self, items: Vec<PutItem>, opts: &CallOptions<'_>) -> Result<()> {
        if items.len() > protocol::MAX_BATCH_ITEMS {
            return Err(Error::BadArgument(format!(
                "one batch holds at most {} objects, not {}; send them in several batches",
                protocol::MAX_BATCH_ITEMS,
                items.len()
            )));
        }
        self.ask(PutMany { items }, opts)
    }
}
