//! QueuePush: append an item to a queue (see catalog::queue).

use super::put_many::{batch, commit, PutItem};
use super::{Ask, Handle};
use crate::catalog::answer::Reply;
use crate::catalog::queue::item_key;
use crate::catalog::{Catalog, Origin};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::journal::Record;
use crate::protocol::Response;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// Append `item` (whose tag is the queue's name) to its queue.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct QueuePush {
    pub item: PutItem,
}

impl Handle for QueuePush {
    const CHANGE: bool = true;

    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply {
        let (namespace, name) = (self.item.namespace.clone(), self.item.tag.clone());
        let mut b = match batch(st, vec![self.item]) {
            Ok(b) => b,
            Err(refused) => return Response::Failed(refused).into(),
        };
        // An item replaces nothing: it is filed under a key of its own.
        b.freed = 0;
        for rec in &mut b.recs {
            if let Record::Put { tag, seq, .. } | Record::Link { tag, seq, .. } = rec {
                *tag = item_key(&namespace, &name, *seq).1;
            }
        }
        commit(st, origin, b).into()
    }
}

impl Ask for QueuePush {
    type Answer = ();

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        match resp {
            Response::Ok => Ok(()),
            other => Err(other),
        }
    }
}

impl Client {
    /// Append an item to the queue named by its tag.
    pub fn queue_push(&mut self, item: PutItem, opts: &CallOptions<'_>) -> Result<()> {
        self.ask(QueuePush { item }, opts)
    }
}
