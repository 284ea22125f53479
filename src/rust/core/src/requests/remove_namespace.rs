//! RemoveNamespace: remove every object of a namespace at once.

use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::journal::Record;
use crate::protocol::Response;
use crate::catalog::answer::{failed, Reply};
use crate::catalog::queue::is_internal;
use crate::catalog::{Catalog, Origin};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// Remove every object of a namespace; answers Count.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct RemoveNamespace {
    pub namespace: String,
}

impl Handle for RemoveNamespace {
    const CHANGE: bool = true;

    /// A retry is told how many objects the change removed.
    fn repeated(answer: u64) -> Response {
        Response::Count(answer)
    }

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let namespace = self.namespace;
        let tags: Vec<String> = st
            .objects
            .keys()
            .filter(|k| k.0 == namespace)
            .map(|k| k.1.clone())
            .collect();
        // One record: the namespace is cleared at once, or not at all. Its
        // queues go with it; the count is of its objects.
        let n = tags.iter().filter(|t| !is_internal(t)).count() as u64;
        let recs = tags
            .into_iter()
            .map(|tag| Record::Remove {
                namespace: namespace.clone(),
                tag,
            })
            .collect();
        // Its counters too, once the change is made (a change refused for
        // its deadline changes nothing).
        let n = n + st.counter_entries(Some(&namespace)).len() as u64;
        if let Err(e) = st.commit(Some(origin), Record::Batch(recs), &[], n) {
            return failed(e).into();
        }
        match st.remove_counters(&namespace) {
            Ok(()) => Response::Count(n),
            Err(e) => failed(e),
        }
        .into()
    }
}

impl Ask for RemoveNamespace {
    type Answer = u64;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<u64, Response> {
        match resp {
            Response::Count(n) => Ok(n),
            other => Err(other),
        }
    }
}

impl Client {
    /// Remove every object of a namespace; returns how many there were.
    pub fn remove_namespace(&mut self, ns: &str, opts: &CallOptions<'_>) -> Result<u64> {
        let req = RemoveNamespace {
            namespace: ns.into(),
        };
        self.ask(req, opts)
    }
}
