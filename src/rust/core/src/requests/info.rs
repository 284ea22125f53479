//! Info: what the helper serves and how full the store is.

use super::{Ask, Handle};
use crate::client::{CallOptions, Client};
use crate::error::Result;
use crate::protocol::{Response, ServerInfo};
use crate::catalog::answer::Reply;
use crate::catalog::{Catalog, Origin};
use crate::sys;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Info;

impl Handle for Info {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        Response::Info(ServerInfo {
            pid: sys::getpid(),
            dir: st.store.dir().display().to_string(),
            objects: st.objects.len() as u64,
            bytes: st.used(),
            capacity: st.capacity,
            free: st.free(),
            started_ns: st.started_ns,
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .into()
    }
}

impl Ask for Info {
    type Answer = ServerInfo;

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<ServerInfo, Response> {
        match resp {
            Response::Info(i) => Ok(i),
            other => Err(other),
        }
    }
}

impl Client {
    pub fn info(&mut self, opts: &CallOptions<'_>) -> Result<ServerInfo> {
        self.ask(Info, opts)
    }
}
