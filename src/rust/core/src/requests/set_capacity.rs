//! SetCapacity: set (or lift) the store's capacity in bytes.

use super::Request;
use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::journal::Record;
use crate::protocol::Outgoing;
use crate::protocol::Response;
use crate::catalog::answer::{error_response, failed, Reply};
use crate::catalog::{Catalog, Origin};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// Set (or with None, lift) the store's capacity in bytes.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SetCapacity {
    pub bytes: Option<u64>,
}

impl Handle for SetCapacity {
    const CHANGE: bool = true;

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let bytes = self.bytes;
        let used = st.used();
        if let Some(b) = bytes {
            if b < used {
                let msg = format!(
                    "the store \"{}\" holds {used} bytes of objects: its capacity can not go below that \
                     (asked for {b}); remove objects first",
                    st.store.dir().display()
                );
                return error_response(Error::NoSpace {
                    message: msg,
                    needed: 0,
                    hint: None,
                })
                .into();
            }
        }
        match st.commit(Some(origin), Record::Capacity { bytes }, &[], 0) {
            Ok(()) => Response::Ok,
            Err(e) => failed(e),
        }
        .into()
    }
}

impl Ask for SetCapacity {
    type Answer = ();

    fn answer(_: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        Ok(())
    }
}

impl Client {
    /// Set the store's capacity in bytes (None: unlimited).
    pub fn set_capacity(&mut self, bytes: Option<u64>, opts: &CallOptions<'_>) -> Result<()> {
        self.ask(SetCapacity { bytes }, opts)
    }

    /// The capacity a helper this client starts gets before any request.
    pub fn set_spawn_capacity(&mut self, bytes: Option<u64>) {
        let req = bytes.and_then(|b| {
            Outgoing::new(&Request::from(SetCapacity { bytes: Some(b) }), true).ok()
        });
        self.on_start(req);
    }
}
