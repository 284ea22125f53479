//! Discard: remove an object file unless the catalog links to it (a
//! writer whose publish had an unknown outcome cleans up with this).

use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::protocol::Response;
use crate::catalog::answer::{error_response, Reply};
use crate::catalog::{Catalog, Origin};
use crate::store;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;
use std::time::Duration;

/// Remove object file `id` unless the catalog links to it; answers
/// whether it is linked.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Discard {
    pub id: String,
}

impl Handle for Discard {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        let id = self.id;
        if !store::is_valid_id(&id) {
            return error_response(Error::Protocol {
                message: format!("invalid object id \"{id}\""),
            })
            .into();
        }
        let linked = st.links(&id);
        if !linked {
            let _ = std::fs::remove_file(st.store.object_path(&id));
        }
        Response::Bool(linked).into()
    }
}

impl Ask for Discard {
    type Answer = bool;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<bool, Response> {
        match resp {
            Response::Bool(b) => Ok(b),
            other => Err(other),
        }
    }
}

impl Client {
    /// Remove object file `id` unless the catalog links to it; Ok(true)
    /// when it is linked (and so kept).
    pub fn discard(&mut self, id: &str, opts: &CallOptions<'_>) -> Result<bool> {
        self.ask(Discard { id: id.into() }, opts)
    }

    /// After a failed publish (or batch) of the committed object files
    /// `ids`: remove them when the helper said no; when the call timed out
    /// or the connection broke, the change may have taken effect, so only
    /// the helper may decide (if it can not be asked now, it removes them
    /// when it refuses the late change, or its sweep once this process is
    /// gone).
    pub fn discard_staged(&mut self, e: &Error, ids: &[String]) {
        for id in ids {
            if !e.breaks_connection() {
                let _ = std::fs::remove_file(self.store().object_path(id));
            } else {
                // Only the helper knows (under its catalog lock) whether the
                // change was made; a helper that refuses a late change
                // removes its files itself.
                let quick = CallOptions {
                    timeout: Duration::from_secs(1),
                    autostart: false,
                    interrupted: &|| false,
                };
                let _ = self.discard(id, &quick);
            }
        }
    }
}
