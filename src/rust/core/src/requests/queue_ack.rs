//! QueueAck: complete a leased queue item (it is removed for good), or
//! hand it back to the head of its queue.

use super::{Ask, Handle};
use crate::catalog::answer::{failed, Reply};
use crate::catalog::queue::item_key;
use crate::catalog::{Catalog, Origin};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::journal::Record;
use crate::protocol::Response;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct QueueAck {
    pub namespace: String,
    pub name: String,
    /// The item's number (its version).
    pub seq: u64,
    /// The lease's token, as the pop gave it.
    pub token: u64,
    /// Hand the item back to the head of the queue instead.
    pub requeue: bool,
}

impl Handle for QueueAck {
    const CHANGE: bool = true;

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let key = item_key(&self.namespace, &self.name, self.seq);
        if st.leases.get(&key).is_none_or(|l| l.token != self.token) {
            return failed(Error::BadArgument(format!(
                "item {} of queue \"{}\" is not leased to this caller any more: it was \
                 acknowledged already, or handed to another consumer after the process that \
                 popped it was found dead.",
                self.seq, self.name
            )))
            .into();
        }
        let (namespace, tag) = key;
        let rec = if self.requeue {
            Record::Unlease { namespace, tag }
        } else {
            Record::Remove { namespace, tag }
        };
        match st.commit(Some(origin), rec, &[], 0) {
            Ok(()) => Response::Ok,
            Err(e) => failed(e),
        }
        .into()
    }
}

impl Ask for QueueAck {
    type Answer = ();

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        match resp {
            Response::Ok => Ok(()),
            other => Err(other),
        }
    }
}

impl Client {
    /// Complete the leased item `seq` of a queue, or with `requeue` hand
    /// it back to the head of the queue.
    pub fn queue_ack(
        &mut self,
        ns: &str,
        name: &str,
        seq: u64,
        token: u64,
        requeue: bool,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        let req = QueueAck {
            namespace: ns.into(),
            name: name.into(),
            seq,
            token,
            requeue,
        };
        self.ask(req, opts)
    }
}
