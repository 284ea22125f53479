//! PutInline: store a small object in the helper's journal, without a
//! file of its own.

use super::{check_item, Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Hint, Result};
use crate::journal::{self, Record};
use crate::protocol::{Condition, Meta, Response, INLINE_MAX};
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
    pub condition: Condition,
}

impl Handle for PutInline {
    const CHANGE: bool = true;

    fn repeated(version: u64) -> Response {
        Response::Count(version)
    }

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let PutInline {
            namespace,
            tag,
            kind,
            ctime_ns,
            bytes,
            meta,
            condition,
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
        let checked = st
            .check_condition(&key, condition)
            .and_then(|_| st.check_capacity(&key, bytes.len() as u64));
        if let Err(e) = checked {
            return failed(e).into();
        }
        let version = st.next_seq();
        let (namespace, tag) = key;
        let rec = Record::Put {
            namespace,
            tag: tag.clone(),
            ctime_ns,
            kind,
            len: bytes.len() as u64,
            sum: crate::codec::checksum(&bytes),
            meta: journal::Meta::from(&meta),
            seq: version,
        };
        match st.commit(Some(origin), rec, &[&bytes], version) {
            Ok(()) => Response::Count(version).into(),
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
    /// The version of the stored value.
    type Answer = u64;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<u64, Response> {
        super::stored_version(resp)
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
    ) -> Result<u64> {
        let now = crate::codec::now_ns();
        self.put_inline_at(ns, tag, kind, bytes, meta, now, Condition::Always, opts)
    }

    /// put_inline with a given send time (restoring a dump) and
    /// condition; returns the version the value got.
    #[allow(clippy::too_many_arguments)]
    pub fn put_inline_at(
        &mut self,
        ns: &str,
        tag: &str,
        kind: u32,
        bytes: Vec<u8>,
        meta: Meta,
        ctime_ns: i64,
        condition: Condition,
        opts: &CallOptions<'_>,
    ) -> Result<u64> {
        let req = PutInline {
            namespace: ns.into(),
            tag: tag.into(),
            kind,
            ctime_ns,
            bytes,
            meta,
            condition,
        };
        self.ask(req, opts)
    }
}
