//! Ping: whether the helper answers.

use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::protocol::Response;
use crate::catalog::answer::Reply;
use crate::catalog::{Catalog, Origin};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Ping;

impl Handle for Ping {
    const CHANGE: bool = false;

    fn handle(self, _: &mut Catalog, _: Origin) -> Reply {
        Response::Pong.into()
    }
}

impl Ask for Ping {
    type Answer = ();

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        match resp {
            Response::Pong => Ok(()),
            other => Err(other),
        }
    }
}

impl Client {
    pub fn ping(&mut self, opts: &CallOptions<'_>) -> Result<()> {
        self.ask(Ping, opts)
    }
}
