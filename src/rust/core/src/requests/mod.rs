//! The requests a client sends the helper, one module per kind: its
//! message (what travels on the socket), its handler in the helper
//! (`Handle`) and its method on `Client` (with `Ask`, the answer it
//! expects).
//!
//! The registry at the end lists every kind once, in the order of the
//! protocol, and generates what must name them all: the `Request` enum
//! (whose variant indexes are the wire format), `Request::is_change` and
//! the helper's dispatch. Adding a request kind: a module here, one
//! registry line, a new PROTOCOL_VERSION, and the glue line that exposes
//! it to R. Hello, Call and Quit concern the connection, not the catalog:
//! the helper's connection code handles them (see
//! `server::connection`).

pub mod barrier;
pub mod discard;
pub mod exists;
pub mod info;
pub mod list;
pub mod lookup;
pub mod lookup_many;
pub mod ping;
pub mod publish;
pub mod put_inline;
pub mod put_many;
pub mod queue_ack;
pub mod queue_length;
pub mod queue_pop;
pub mod queue_push;
pub mod quit;
pub mod remove;
pub mod remove_namespace;
pub(crate) mod park;
pub mod set_capacity;
pub mod slot;
pub mod wait;

use crate::error::Result;
use crate::client::{CallOptions, Client};
use crate::protocol::{Call, Hello, Meta, Outgoing, Response};
use crate::catalog::answer::Reply;
use crate::catalog::{lock_state, Catalog, Earlier, Origin, Shared};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

/// The helper's side of a request that reads or changes the catalog.
pub(crate) trait Handle {
    /// Whether the request changes the store: it is then numbered and
    /// carries a deadline (see `protocol::Call`), and takes effect at most
    /// once.
    const CHANGE: bool;

    /// The answer to a retry of this change after it took effect, from
    /// the number the helper recorded with it.
    fn repeated(_answer: u64) -> Response {
        Response::Ok
    }

    /// Answer the request, under the catalog lock.
    fn handle(self, st: &mut Catalog, origin: Origin) -> Reply;
}

/// The client's side of a request: the answer it expects.
pub(crate) trait Ask: Into<Request> {
    type Answer;

    /// The expected answer in `resp` (with the descriptors that came with
    /// it); any other answer is handed back.
    #[allow(
        clippy::result_large_err,
        reason = "an unexpected answer is handed back whole, to be named in an error at once"
    )]
    fn answer(resp: Response, fds: Vec<OwnedFd>) -> std::result::Result<Self::Answer, Response>;
}

/// A message about the connection itself, not the catalog (see
/// `Request::dispatch`).
pub(crate) enum ConnectionMessage {
    /// A second Hello: answered like the first, whatever it says.
    Hello(#[allow(dead_code, reason = "not read: the answer is the same")] Hello),
    /// Numbers the next request.
    Call(Call),
    Quit(quit::Quit),
    /// Parks until an object is there (see `wait`): served with the
    /// connection at hand.
    Wait(wait::Wait),
    /// Parks until enough clients arrived (see `barrier`).
    Barrier(barrier::Barrier),
    /// Parks until the queue has an item (see `queue_pop`).
    QueuePop(queue_pop::QueuePop),
}

/// Where `Request::dispatch` sends a request.
#[allow(
    clippy::large_enum_variant,
    reason = "made once per request and taken apart at once"
)]
pub(crate) enum Dispatched {
    /// A catalog request, answered.
    Answered(Reply),
    /// A message for the connection code.
    Connection(ConnectionMessage),
}

impl Client {
    /// Send a request and take the answer it expects out of the helper's
    /// answer; any other answer is a protocol error.
    pub(crate) fn ask<R: Ask>(&mut self, req: R, opts: &CallOptions<'_>) -> Result<R::Answer> {
        let (resp, fds) = self.send(req.into(), opts)?;
        R::answer(resp, fds).map_err(crate::client::unexpected)
    }

    /// Send a request and read the helper's answer.
    pub(crate) fn send(
        &mut self,
        req: Request,
        opts: &CallOptions<'_>,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let out = Outgoing::new(&req, req.is_change())?;
        self.call(&out, opts)
    }
}

/// Handle a catalog request under the lock; a change that took effect
/// before (a retry), or that a newer change of its client overtook, is not
/// handled again.
fn run<H: Handle>(req: H, shared: &Shared, origin: Origin) -> Reply {
    let mut st = lock_state(shared);
    if H::CHANGE {
        match st.earlier(&origin) {
            Some(Earlier::Applied(answer)) => return H::repeated(answer).into(),
            Some(Earlier::Superseded) => {
                return Response::Failed(crate::protocol::Failure::Expired).into()
            }
            None => {}
        }
    }
    let reply = req.handle(&mut st, origin);
    if !H::CHANGE {
        return reply;
    }
    // The parked Waits this change made ready are answered from here, at
    // once: waking their own threads to answer would add a thread wake-up
    // to the time a waiter takes to see a new value.
    let claimed = wait::claim_ready(&mut st);
    drop(st);
    wait::deliver(claimed, shared);
    shared.notify();
    reply
}

/// The version a stored value got, from the answer to a store (a Count).
#[allow(
    clippy::result_large_err,
    reason = "an unexpected answer is handed back whole, as Ask::answer does"
)]
fn stored_version(resp: Response) -> std::result::Result<u64, Response> {
    match resp {
        Response::Count(v) => Ok(v),
        other => Err(other),
    }
}

/// Check a key as every request that stores under it does.
fn check_key(ns: &str, tag: &str) -> Result<()> {
    crate::key::check_tag(tag)?;
    Ok(crate::key::check_namespace(ns)?)
}

/// Check the key and the description of an object to store.
fn check_item(ns: &str, tag: &str, meta: &Meta) -> Result<()> {
    check_key(ns, tag)?;
    meta.check()
}

/// Every request kind, in wire order: `Variant(message type) => catalog`
/// for a request with a `Handle`, `=> connection` for a message of the
/// connection code (a variant of `ConnectionMessage`).
macro_rules! registry {
    ($($variant:ident($ty:ty) => $route:ident,)*) => {
        /// A message of a client to the helper. Its bincode encoding is the
        /// protocol: a variant's index is its place in the registry.
        #[derive(Debug, Clone, PartialEq, Encode, Decode)]
        pub enum Request {
            $($variant($ty),)*
        }

        $(impl From<$ty> for Request {
            fn from(r: $ty) -> Request {
                Request::$variant(r)
            }
        })*

        impl Request {
            /// Whether the request changes the store: such a request is
            /// numbered and carries a deadline (see `protocol::Call`).
            pub fn is_change(&self) -> bool {
                match self {
                    $(Request::$variant(_) => registry!(@change $route $ty),)*
                }
            }

            /// Answer a catalog request, or hand a connection-level
            /// message back to the connection code.
            pub(crate) fn dispatch(self, shared: &Shared, origin: Origin) -> Dispatched {
                match self {
                    $(Request::$variant(r) => registry!(@dispatch $route $variant r shared origin),)*
                }
            }
        }
    };
    (@change catalog $ty:ty) => { <$ty as Handle>::CHANGE };
    (@change connection $ty:ty) => { false };
    (@dispatch catalog $variant:ident $r:ident $shared:ident $origin:ident) => {
        Dispatched::Answered(run($r, $shared, $origin))
    };
    (@dispatch connection $variant:ident $r:ident $shared:ident $origin:ident) => {
        Dispatched::Connection(ConnectionMessage::$variant($r))
    };
}

registry! {
    Hello(Hello) => connection,
    Call(Call) => connection,
    Publish(publish::Publish) => catalog,
    PutInline(put_inline::PutInline) => catalog,
    Lookup(lookup::Lookup) => catalog,
    Remove(remove::Remove) => catalog,
    Exists(exists::Exists) => catalog,
    List(list::List) => catalog,
    RemoveNamespace(remove_namespace::RemoveNamespace) => catalog,
    Info(info::Info) => catalog,
    Ping(ping::Ping) => catalog,
    Discard(discard::Discard) => catalog,
    PutMany(put_many::PutMany) => catalog,
    LookupMany(lookup_many::LookupMany) => catalog,
    SetCapacity(set_capacity::SetCapacity) => catalog,
    Quit(quit::Quit) => connection,
    Wait(wait::Wait) => connection,
    Barrier(barrier::Barrier) => connection,
    QueuePush(queue_push::QueuePush) => catalog,
    QueuePop(queue_pop::QueuePop) => connection,
    QueueAck(queue_ack::QueueAck) => catalog,
    QueueLength(queue_length::QueueLength) => catalog,
    Slot(slot::Slot) => catalog,
}

#[cfg(test)]
mod tests;
