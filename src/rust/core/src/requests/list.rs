//! List: the entries of one namespace, or of all.

use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::protocol::{Entry, Response};
use crate::catalog::answer::Reply;
use crate::catalog::queue::is_internal;
use crate::catalog::{Catalog, Origin};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// The objects of one namespace, or of all (None).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct List {
    pub namespace: Option<String>,
}

impl Handle for List {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        let mut v: Vec<Entry> = st
            .objects
            .iter()
            .filter(|(k, _)| self.namespace.as_ref().is_none_or(|ns| &k.0 == ns))
            .filter(|(k, _)| !is_internal(&k.1))
            .map(|(k, o)| o.entry(k))
            .collect();
        v.extend(st.counter_entries(self.namespace.as_deref()));
        v.sort_by(|a, b| (&a.namespace, &a.tag).cmp(&(&b.namespace, &b.tag)));
        Response::List(v).into()
    }
}

impl Ask for List {
    type Answer = Vec<Entry>;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<Vec<Entry>, Response> {
        match resp {
            Response::List(v) => Ok(v),
            other => Err(other),
        }
    }
}

impl Client {
    /// The objects of namespace `ns`, or of every namespace (None), sorted
    /// by namespace and tag.
    pub fn list(&mut self, ns: Option<&str>, opts: &CallOptions<'_>) -> Result<Vec<Entry>> {
        self.ask(
            List {
                namespace: ns.map(String::from),
            },
            opts,
        )
    }
}
