//! Publish: make a committed object file the value of a tag.

use super::{check_item, Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::journal::{self, Record};
use crate::object_file::{self, Header, STATE_COMMITTED};
use crate::protocol::{Meta, Response};
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
}

impl Handle for Publish {
    const CHANGE: bool = true;

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let Publish {
            namespace,
            tag,
            id,
            meta,
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
            // Published (or adopted after journal damage), then replaced.
            Err(_) if st.is_retired(&id) => return Response::Ok.into(),
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
        if st.objects.get(&key).and_then(|o| o.file_id()) == Some(id.as_str()) {
            // A retry of a publish that already took effect.
            return Response::Ok.into();
        }
        if let Err(e) = st.check_capacity(&key, header.payload_len) {
            return failed(e).into();
        }
        let (namespace, tag) = key;
        let rec = Record::Link {
            namespace,
            tag,
            id: id.clone(),
            ctime_ns: header.ctime_ns,
            kind: header.kind,
            size: header.payload_len,
            meta: journal::Meta::from(&meta),
            seq: st.next_seq(),
        };
        match st.commit(Some(origin), rec, &[], 0) {
            Ok(()) => Response::Ok.into(),
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
    type Answer = ();

    fn answer(_: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        Ok(())
    }
}

impl Client {
    pub fn publish(
        &mut self,
        ns: &str,
        tag: &str,
        id: &str,
        meta: Meta,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        let req = Publish {
            namespace: ns.into(),
            tag: tag.into(),
            id: id.into(),
            meta,
        };
        self.ask(req, opts)
    }
}
