//! QueueLength: how many items of a queue wait, and how many are leased.

use super::{Ask, Handle};
use crate::catalog::answer::{failed, Reply};
use crate::catalog::{Catalog, Origin};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::protocol::Response;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct QueueLength {
    pub namespace: String,
    pub name: String,
}

impl Handle for QueueLength {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        if let Err(e) = super::check_key(&self.namespace, &self.name) {
            return failed(e).into();
        }
        let queue = (self.namespace, self.name);
        // Items of processes that died count as waiting again.
        if let Err(e) = st.reclaim_leases(Some(&queue)) {
            return failed(e).into();
        }
        let (ready, leased) = st.queue_len(&queue);
        Response::Counts(ready, leased).into()
    }
}

impl Ask for QueueLength {
    /// (ready, leased)
    type Answer = (u64, u64);

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<(u64, u64), Response> {
        match resp {
            Response::Counts(ready, leased) => Ok((ready, leased)),
            other => Err(other),
        }
    }
}

impl Client {
    /// How many items of a queue wait, and how many are leased.
    pub fn queue_length(
        &mut self,
        ns: &str,
        name: &str,
        opts: &CallOptions<'_>,
    ) -> Result<(u64, u64)> {
        let req = QueueLength {
            namespace: ns.into(),
            name: name.into(),
        };
        self.ask(req, opts)
    }
}
