//! Barrier: park until `n` clients have arrived at a named barrier, then
//! release them all at once. Barriers are reusable: each release starts a
//! new generation. A client that times out or hangs up (interrupted,
//! killed) withdraws its arrival, so it never counts towards a later
//! release. Barriers live in the helper's memory only: after a helper
//! restart, the clients still waiting arrive again at a fresh barrier.

use super::park::{park, waited_out, Parked};
use super::wait::until_ns;
use super::Ask;
use crate::catalog::answer::{failed, Reply};
use crate::catalog::{lock_state, Shared};
use crate::client::{CallOptions, Client};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::protocol::Response;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Barrier {
    pub namespace: String,
    pub name: String,
    /// How many clients the barrier waits for.
    pub n: u32,
    /// When to give up, on `protocol::monotonic_ns`'s clock.
    pub until_ns: u64,
    /// The timeout the client was given, for its message.
    pub seconds: f64,
}

/// Serve a Barrier on `conn` (see the module).
pub(crate) fn serve(b: Barrier, shared: &Shared, conn: &Conn, send: impl Fn(Reply) -> bool) {
    if let Err(e) = super::check_key(&b.namespace, &b.name) {
        send(failed(e).into());
        return;
    }
    if b.n == 0 {
        send(failed(Error::BadArgument("`n` must be at least 1.".into())).into());
        return;
    }
    let key = (b.namespace.clone(), b.name.clone());
    let mut st = lock_state(shared);
    let arrival = st.next_arrival();
    let state = st.barriers.entry(key.clone()).or_default();
    if state.arrived.is_empty() {
        state.n = b.n;
    } else if state.n != b.n {
        let e = Error::BadArgument(format!(
            "barrier \"{}\" waits for {} processes, not {}: every process must give the same `n`.",
            b.name, state.n, b.n
        ));
        drop(st);
        send(failed(e).into());
        return;
    }
    state.arrived.push(arrival);
    let generation = state.generation;
    if state.arrived.len() >= b.n as usize {
        state.generation += 1;
        state.arrived.clear();
        drop(st);
        shared.notify();
        send(Response::Ok.into());
        return;
    }
    drop(st);
    let (mut st, parked) = park(shared, conn, b.until_ns, |st| {
        st.barriers
            .get(&key)
            .is_none_or(|s| s.generation != generation)
            .then_some(())
    });
    if let Parked::Ready(()) = parked {
        drop(st);
        send(Response::Ok.into());
        return;
    }
    // Withdraw: this arrival never counts towards a release.
    let mut arrived = 0;
    if let Some(s) = st.barriers.get_mut(&key) {
        s.arrived.retain(|a| *a != arrival);
        arrived = s.arrived.len();
        if arrived == 0 {
            st.barriers.remove(&key);
        }
    }
    drop(st);
    if let Parked::TimedOut = parked {
        let what = format!(
            "{} processes at barrier \"{}\" ({} other(s) arrived)",
            b.n, b.name, arrived
        );
        send(waited_out(what, &b.namespace, b.seconds));
    }
}

impl Ask for Barrier {
    type Answer = ();

    fn answer(resp: Response, _: Vec<OwnedFd>) -> std::result::Result<(), Response> {
        match resp {
            Response::Ok => Ok(()),
            other => Err(other),
        }
    }
}

impl Client {
    /// Wait at the barrier `name` until `n` clients are there.
    pub fn barrier(&mut self, ns: &str, name: &str, n: u32, opts: &CallOptions<'_>) -> Result<()> {
        let until_ns = until_ns(opts);
        let req = Barrier {
            namespace: ns.into(),
            name: name.into(),
            n,
            until_ns,
            seconds: opts.timeout.as_secs_f64(),
        };
        self.ask_parked(req, until_ns, opts)
    }
}
