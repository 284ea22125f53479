//! PutInline: store a small object in the helper's journal, without a
//! file of its own.

use super::{check_item, Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Hint, Result};
use crate::journal::{self, Record};
use crate::protocol::{Meta, Response, INLINE_MAX};
use crate::catalog::answer::{error_response, failed, Reply};
use crate::catalog::{Catalog, Origin};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// Store a small object inline (at most INLINE_MAX bytes).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct PutInline {
    pub namespace: String,
    pub tag: String,
    pub kind: u32,
    pub ctime_ns: i64,
    pub bytes: Vec<u8>,
    pub meta: Meta,
}

impl Handle for PutInline {
    const CHANGE: bool = true;

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let PutInline {
            namespace,
            tag,
            kind,
            ctime_ns,
            bytes,
            meta,
        } = self;
        if let Err(e) = check_item(&namespace, &tag, &meta) {
            return failed(e).into();
        }
        if bytes.len() > INLINE_MAX {
            return error_response(Error::Protocol {
                message: format!("an inline object may hold at most {INLINE_MAX} bytes"),
            })
            .into();
        }
        let key = (namespace, tag);
        if let Err(e) = st.check_capacity(&key, bytes.len() as u64) {
            return failed(e).into();
        }
        let (namespace, tag) = key;
        let rec = Record::Put {
            namespace,
            tag: tag.clone(),
            ctime_ns,
            kind,
            len: bytes.len() as u64,
            sum: crate::codec::checksum(&bytes),
            meta: journal::Meta::from(&meta),
            seq: st.next_seq(),
        };
        match st.commit(Some(origin), rec, &[&bytes], 0) {
            Ok(()) => Response::Ok.into(),
            Err(Error::NoSpace { .. }) => {
                let msg = format!(
                    "not enough space in the store \"{}\" for object \"{tag}\"",
                    st.store.dir().display()
                );
                let e = Error::NoSpace {
                    message: msg,
                    needed: bytes.len() as u64,
                    hint: Some(Hint::LargerStore),
                };
                error_response(e).into()
            }
            Err(e) => failed(e).into(),
        }
    }
}

impl Ask for PutInline {
    type Answer = ();

    fn answer(_: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        Ok(())
    }
}

impl Client {
    /// Store a small payload inline (see protocol::INLINE_MAX), sent now.
    #[cfg(feature = "internals")]
    pub fn put_inline(
        &mut self,
        ns: &str,
        tag: &str,
        kind: u32,
        bytes: Vec<u8>,
        meta: Meta,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        self.put_inline_at(ns, tag, kind, bytes, meta, crate::codec::now_ns(), opts)
    }

    /// put_inline with a given send time (restoring a dump).
    #[allow(clippy::too_many_arguments)]
    pub fn put_inline_at(
        &mut self,
        ns: &str,
        tag: &str,
        kind: u32,
        bytes: Vec<u8>,
        meta: Meta,
        ctime_ns: i64,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        let req = PutInline {
            namespace: ns.into(),
            tag: tag.into(),
            kind,
            ctime_ns,
            bytes,
            meta,
        };
        self.ask(req, opts)
    }
}
