//! The parked Waits that the change making one ready answers at once,
//! listed in the catalog (`Catalog::handoffs`); `requests::wait` claims,
//! answers and serves them.

use super::answer::Reply;
use super::{Catalog, Key};
use crate::conn::Conn;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

/// How a parked Wait's answer goes: through the change that makes it
/// ready or through its own thread. Changed only under the catalog lock.
pub(crate) const WAITING: u8 = 0;
/// A change took it and is sending its answer.
pub(crate) const CLAIMED: u8 = 1;
/// A change sent its answer: its thread sends nothing.
pub(crate) const DONE: u8 = 2;

/// A parked Wait as the catalog lists it.
pub(crate) struct Handoff {
    pub(crate) key: Key,
    pub(crate) after_version: Option<u64>,
    pub(crate) take: bool,
    pub(crate) until_ns: u64,
    /// The waiter's connection, which its own thread does not touch while
    /// it is parked.
    pub(crate) conn: Arc<Conn>,
    pub(crate) send: Send,
    pub(crate) state: AtomicU8,
}

/// How an answer is sent on a connection; false: it could not be
/// delivered.
pub(crate) type Send = fn(&Conn, Reply) -> bool;

impl Handoff {
    /// Whether the catalog now holds a value it waits for.
    pub(crate) fn is_ready(&self, st: &Catalog) -> bool {
        st.objects
            .get(&self.key)
            .is_some_and(|o| self.after_version.is_none_or(|v| o.seq > v))
    }
}
