//! Remove: take one object out of the catalog.

use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::journal::Record;
use crate::protocol::Response;
use crate::catalog::answer::{failed, not_found, Reply};
use crate::catalog::{Catalog, Origin};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Remove {
    pub namespace: String,
    pub tag: String,
}

impl Handle for Remove {
    const CHANGE: bool = true;

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let Remove { namespace, tag } = self;
        let key = (namespace, tag);
        if !st.objects.contains_key(&key) {
            // A counter, if any, is removed in its region; as a journaled
            // change, never after the call's deadline.
            if origin.deadline_ns != 0 && crate::protocol::monotonic_ns() > origin.deadline_ns {
                return Response::Failed(crate::protocol::Failure::Expired).into();
            }
            return match st.remove_counter(&key) {
                Ok(true) => Response::Ok,
                Ok(false) => not_found(&key.0, &key.1),
                Err(e) => failed(e),
            }
            .into();
        }
        let (namespace, tag) = key;
        match st.commit(Some(origin), Record::Remove { namespace, tag }, &[], 0) {
            Ok(()) => Response::Ok,
            Err(e) => failed(e),
        }
        .into()
    }
}

impl Ask for Remove {
    type Answer = ();

    fn answer(_: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        Ok(())
    }
}

impl Client {
    pub fn remove(&mut self, ns: &str, tag: &str, opts: &CallOptions<'_>) -> Result<()> {
        let req = Remove {
            namespace: ns.into(),
            tag: tag.into(),
        };
        self.ask(req, opts)
    }
}
