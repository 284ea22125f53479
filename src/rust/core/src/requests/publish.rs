//! Publish: make a committed object file the value of a tag.

use super::{check_item, Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::journal::{self, Record};
use crate::object_file::{self, Header, STATE_COMMITTED};
use crate::protocol::{Condition, Meta, Response};
use crate::catalog::answer::{error_response, failed, Reply};
use crate::catalog::{Catalog, Origin};
use crate::store;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// Make the committed object file `id` the value of `tag`.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Publish {
    pub namespace: String,
    pub tag: String,
    pub id: String,
    pub meta: Meta,
    pub condition: Condition,
}

impl Handle for Publish {
    const CHANGE: bool = true;

    fn repeated(version: u64) -> Response {
        Response::Count(version)
    }

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let Publish {
            namespace,
            tag,
            id,
            meta,
            condition,
        } = self;
        if !store::is_valid_id(&id) {
            return error_response(Error::Protocol {
                message: format!("invalid object id \"{id}\""),
            })
            .into();
        }
        if let Err(e) = check_item(&namespace, &tag, &meta) {
            return failed(e).into();
        }
        let header: Header = match st
            .store
            .open_object(&id)
            .map(|f| object_file::read_header(&f))
        {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => return error_response(Error::corrupt(e.to_string())).into(),
            // Published (or adopted after journal damage), then replaced:
            // its version is no longer known.
            Err(_) if st.is_retired(&id) => return Response::Count(0).into(),
            Err(e) => {
                return error_response(Error::Server {
                    message: format!(
                    "the object file for \"{tag}\" is missing ({e}); was the store quit meanwhile?"
                ),
                })
                .into()
            }
        };
        if header.state != STATE_COMMITTED || header.tag != tag || header.namespace != namespace {
            return error_response(Error::corrupt(format!(
                "object file {id} is not a committed object for \"{tag}\""
            )))
            .into();
        }
        let key = (namespace, tag);
        if let Some(o) = st.objects.get(&key).filter(|o| o.file_id() == Some(id.as_str())) {
            // A retry of a publish that already took effect.
            return Response::Count(o.seq).into();
        }
        let checked = st
            .check_condition(&key, condition)
            .and_then(|_| st.check_capacity(&key, header.payload_len));
        if let Err(e) = checked {
            // Refused for good: its writer leaves the file to the helper
            // only when the answer is lost.
            st.drop_unlinked(&[id]);
            return failed(e).into();
        }
        let version = st.next_seq();
        let (namespace, tag) = key;
        let rec = Record::Link {
            namespace,
            tag,
            id: id.clone(),
            ctime_ns: header.ctime_ns,
            kind: header.kind,
            size: header.payload_len,
            meta: journal::Meta::from(&meta),
            seq: version,
        };
        match st.commit(Some(origin), rec, &[], version) {
            Ok(()) => Response::Count(version).into(),
            Err(e) => {
                // Refused for good (its deadline passed): the file will never
                // be published, and its writer has given up on it.
                if matches!(e, Error::Timeout { .. }) {
                    st.drop_unlinked(&[id]);
                }
                failed(e).into()
            }
        }
    }
}

impl Ask for Publish {
    /// The version of the stored value.
    type Answer = u64;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<u64, Response> {
        super::stored_version(resp)
    }
}

impl Client {
    /// Publish a committed object file; returns the version it got.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &mut self,
        ns: &str,
        tag: &str,
        id: &str,
        meta: Meta,
        condition: Condition,
        opts: &CallOptions<'_>,
    ) -> Result<u64> {
        let req = Publish {
            namespace: ns.into(),
            tag: tag.into(),
            id: id.into(),
            meta,
            condition,
        };
        self.ask(req, opts)
    }
}
