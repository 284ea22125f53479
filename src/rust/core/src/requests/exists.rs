//! Exists: whether a tag holds an object.

use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::protocol::Response;
use crate::catalog::answer::Reply;
use crate::catalog::{Catalog, Origin};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Exists {
    pub namespace: String,
    pub tag: String,
}

impl Handle for Exists {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        let key = (self.namespace, self.tag);
        Response::Bool(st.objects.contains_key(&key) || st.has_counter(&key)).into()
    }
}

impl Ask for Exists {
    type Answer = bool;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<bool, Response> {
        match resp {
            Response::Bool(b) => Ok(b),
            other => Err(other),
        }
    }
}

impl Client {
    pub fn exists(&mut self, ns: &str, tag: &str, opts: &CallOptions<'_>) -> Result<bool> {
        let req = Exists {
            namespace: ns.into(),
            tag: tag.into(),
        };
        self.ask(req, opts)
    }
}
