//! Parking: how a request that waits for the store (Wait, Barrier,
//! QueuePop) waits in the helper. It holds its connection's thread, not the
//! catalog: the catalog is released while it sleeps, every change wakes it
//! (see `Hub`), and it looks every CHECK_EVERY whether its client hung up
//! (an interrupted or killed client closes its connection) or its deadline
//! passed.

use crate::catalog::answer::Reply;
use crate::catalog::{lock_state, Catalog, Shared};
use crate::conn::Conn;
use crate::key::DEFAULT_NAMESPACE;
use crate::protocol::{self, Failure, Response};
use std::sync::MutexGuard;
use std::time::Duration;

/// How often a parked request looks whether its client is still there.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(50);

/// How a parked request ended.
pub(crate) enum Parked<T> {
    /// `ready` gave this.
    Ready(T),
    /// The deadline passed first.
    TimedOut,
    /// The client hung up first: nobody is left to answer.
    Gone,
}

/// Call `ready` under the catalog lock until it gives something, the
/// deadline `until_ns` (on `protocol::monotonic_ns`'s clock) passes, or the
/// client of `conn` hangs up. Returns the catalog still locked, so that the
/// caller can act on the outcome in the same step.
pub(crate) fn park<'a, T>(
    shared: &'a Shared,
    conn: &Conn,
    until_ns: u64,
    mut ready: impl FnMut(&mut Catalog) -> Option<T>,
) -> (MutexGuard<'a, Catalog>, Parked<T>) {
    let mut st = lock_state(shared);
    loop {
        if let Some(t) = ready(&mut st) {
            return (st, Parked::Ready(t));
        }
        let now = protocol::monotonic_ns();
        if now >= until_ns {
            return (st, Parked::TimedOut);
        }
        if conn.is_stale() {
            return (st, Parked::Gone);
        }
        let left = Duration::from_nanos(until_ns - now);
        st = shared.wait(st, left.min(CHECK_EVERY));
    }
}

/// The answer of a parked request whose deadline passed: it waited `what`
/// (in `namespace`, named unless the default one) for `seconds`.
pub(crate) fn waited_out(what: String, namespace: &str, seconds: f64) -> Reply {
    let mut waited_for = what;
    if namespace != DEFAULT_NAMESPACE {
        waited_for.push_str(&format!(" in namespace \"{namespace}\""));
    }
    Response::Failed(Failure::WaitedOut {
        waited_for,
        seconds,
    })
    .into()
}
