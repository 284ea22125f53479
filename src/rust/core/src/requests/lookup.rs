//! Lookup: one object's entry, with its open object file or its inline
//! payload.

use super::{Ask, Handle};
use crate::client::{CallOptions, Client, Found};
use crate::error::Result;
use crate::journal::Record;
use crate::protocol::Response;
use crate::catalog::answer::{failed, not_found, Reply};
use crate::catalog::{Catalog, Data, Key, Obj, Origin};
use crate::sys::log;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// Look up a tag; the answer carries the object's open fd.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Lookup {
    pub namespace: String,
    pub tag: String,
}

impl Handle for Lookup {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        found(st, (self.namespace, self.tag))
    }
}

/// The answer that hands over the object of `key`: its entry with its
/// open object file, or with its inline payload.
pub(super) fn found(st: &mut Catalog, key: Key) -> Reply {
    let Some(obj) = st.objects.get(&key) else {
        if let Some((entry, bytes)) = st.counter_found(&key) {
            return Response::FoundInline { entry, bytes }.into();
        }
        return not_found(&key.0, &key.1).into();
    };
    match answer_for(st, &key, obj) {
        Ok((reply, _)) => reply,
        // Out of descriptors, an I/O error...: the object is still there;
        // only a file that is gone drops its tag.
        Err(e) if !e.is_not_found() => {
            log(&format!(
                "could not open the object file of \"{}\": {e}",
                key.1
            ));
            failed(e).into()
        }
        Err(e) => {
            log(&format!("object file of \"{}\" is gone: {e}", key.1));
            let (namespace, tag) = key;
            let resp = not_found(&namespace, &tag);
            let _ = st.commit(None, Record::Remove { namespace, tag }, &[], 0);
            resp.into()
        }
    }
}

/// The answer that hands over `obj` (of `key`, in the catalog or just
/// taken out of it), with its inline payload (empty for a file).
pub(super) fn answer_for(st: &Catalog, key: &Key, obj: &Obj) -> Result<(Reply, Vec<u8>)> {
    match &obj.data {
        Data::Inline { at, .. } => {
            let bytes = st.journal.read(*at, obj.size)?;
            let reply = Response::FoundInline {
                entry: obj.entry(key),
                bytes: bytes.clone(),
            };
            Ok((reply.into(), bytes))
        }
        // Opened under the catalog lock: no overwrite can unlink it first.
        Data::File(id) => {
            let f = st.store.open_object(id)?;
            let reply = Reply {
                response: Response::Found(obj.entry(key)),
                files: vec![f],
            };
            Ok((reply, Vec::new()))
        }
    }
}

impl Ask for Lookup {
    type Answer = Found;

    fn answer(resp: Response, mut fds: Vec<OwnedFd>) -> std::result::Result<Found, Response> {
        match (resp, fds.pop()) {
            (Response::Found(entry), Some(fd)) => Ok(Found::File(entry, std::fs::File::from(fd))),
            (Response::FoundInline { entry, bytes }, _) => Ok(Found::Inline(entry, bytes)),
            (other, _) => Err(other),
        }
    }
}

impl Client {
    /// Look up a tag: its catalog entry and either its open object file or
    /// its inline payload.
    pub fn lookup(&mut self, ns: &str, tag: &str, opts: &CallOptions<'_>) -> Result<Found> {
        let req = Lookup {
            namespace: ns.into(),
            tag: tag.into(),
        };
        self.ask(req, opts)
    }
}
