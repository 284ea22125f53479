//! Wait: an object's value as soon as there is one (newer than a given
//! version, if any), optionally taking it: removing it in the same step, so
//! that of several takers exactly one gets each value.
//!
//! The helper parks the request on its connection's thread, listed in the
//! catalog (`Catalog::handoffs`): the change that makes it ready (a send,
//! on another connection's thread) answers it on the spot (`claim_ready`
//! under the catalog lock, `deliver` after it), which saves the waiter a
//! thread wake-up in the helper. Its own thread answers it when it finds
//! it ready itself (at once, or after a change that does not go through
//! `requests::run`), gives up at the request's deadline, or forgets it when
//! the client hung up (an interrupted wait closes its connection). A taken
//! value that can not be handed over (the client went away just then) is
//! put back.

use super::lookup::{answer_for, found};
use super::park::CHECK_EVERY;
use crate::catalog::answer::{failed, Reply};
use crate::catalog::handoff::{Handoff, Send, CLAIMED, DONE, WAITING};
use crate::catalog::{lock_state, Catalog, Key, Obj, Shared};
use crate::client::{CallOptions, Client, Found};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::key::DEFAULT_NAMESPACE;
use super::park::{park, waited_out, Parked};
use crate::protocol::{self, Response};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Wait {
    pub namespace: String,
    pub tag: String,
    /// Only a value with a larger version counts (None: any value).
    pub after_version: Option<u64>,
    /// Remove the value in the step that finds it.
    pub take: bool,
    /// When to give up, on `protocol::monotonic_ns`'s clock.
    pub until_ns: u64,
    /// The timeout the client was given, for its message.
    pub seconds: f64,
}

impl Wait {
    /// What it waits for, but its namespace.
    fn what_here(&self) -> String {
        match self.after_version {
            Some(v) => format!("a value of \"{}\" newer than version {v}", self.tag),
            None => format!("an object under tag \"{}\"", self.tag),
        }
    }

    /// What it waits for.
    fn what(&self) -> String {
        let mut m = self.what_here();
        if self.namespace != DEFAULT_NAMESPACE {
            m.push_str(&format!(" in namespace \"{}\"", self.namespace));
        }
        m
    }
}

/// What a take took out of the catalog (key, value, inline payload), to
/// put back if it is not delivered.
type Taken = Option<(Key, Obj, Vec<u8>)>;

/// An answer a change prepared for a parked Wait, and what it took.
pub(crate) struct Claimed {
    handoff: Arc<Handoff>,
    reply: Reply,
    taken: Taken,
}

/// Under the catalog lock, after a change: take the parked Waits it made
/// ready off the list, oldest first, and prepare their answers (a take
/// takes its value, so a later taker of the same key finds none).
pub(crate) fn claim_ready(st: &mut Catalog) -> Vec<Claimed> {
    let mut claimed = Vec::new();
    let mut i = 0;
    while let Some(h) = st.handoffs.get(i) {
        if !h.is_ready(st) {
            i += 1;
            continue;
        }
        let h = st.handoffs.remove(i);
        let (reply, taken) = answer(st, &h.key, h.take, h.until_ns);
        h.state.store(CLAIMED, Ordering::Relaxed);
        claimed.push(Claimed {
            handoff: h,
            reply,
            taken,
        });
    }
    claimed
}

/// After the catalog lock is released: send the answers `claim_ready`
/// prepared, then settle the takes (a value not delivered goes back) and
/// let the waiters' threads go on.
pub(crate) fn deliver(claimed: Vec<Claimed>, shared: &Shared) {
    if claimed.is_empty() {
        return;
    }
    let sent: Vec<(Arc<Handoff>, Taken, bool)> = claimed
        .into_iter()
        .map(|c| {
            let (h, reply) = (c.handoff, c.reply);
            // A panic here must not leave the waiter's thread waiting for
            // DONE forever: it counts as not delivered.
            let delivered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                (h.send)(&h.conn, reply)
            }))
            .unwrap_or(false);
            (h, c.taken, delivered)
        })
        .collect();
    let mut st = lock_state(shared);
    for (h, taken, delivered) in sent {
        if let Some((key, obj, inline)) = taken {
            st.handed_over(key, obj, delivered, &inline);
        }
        h.state.store(DONE, Ordering::Relaxed);
    }
}

/// The answer to a Wait for `key`, found ready under the catalog lock:
/// the value, or with `take` the value taken out of the catalog (and what
/// was taken, until it is handed over).
fn answer(
    st: &mut Catalog,
    key: &Key,
    take: bool,
    until_ns: u64,
) -> (Reply, Taken) {
    if !take {
        return (found(st, key.clone()), None);
    }
    let obj = match st.take(key, until_ns) {
        Ok(o) => o,
        Err(e) => return (failed(e).into(), None),
    };
    match answer_for(st, key, &obj) {
        Ok((reply, inline)) => (reply, Some((key.clone(), obj, inline))),
        Err(e) => {
            st.handed_over(key.clone(), obj, false, &[]);
            (failed(e).into(), None)
        }
    }
}

/// Serve a Wait on `conn`: answer at once if the value is there, else
/// park (listed in `Catalog::handoffs`) until a change answers it, the
/// deadline passes or the client leaves.
pub(crate) fn serve(w: Wait, shared: &Shared, conn: &Arc<Conn>, send: Send) {
    if let Err(e) = super::check_key(&w.namespace, &w.tag) {
        send(conn, failed(e).into());
        return;
    }
    let h = Arc::new(Handoff {
        key: (w.namespace.clone(), w.tag.clone()),
        after_version: w.after_version,
        take: w.take,
        until_ns: w.until_ns,
        conn: conn.clone(),
        send,
        state: AtomicU8::new(WAITING),
    });
    let mut listed = false;
    let (mut st, parked) = park(shared, conn, w.until_ns, |st| {
        match h.state.load(Ordering::Relaxed) {
            DONE => return Some(false),
            CLAIMED => return None,
            _ => {}
        }
        if h.is_ready(st) {
            // Found by this thread (at once, or after a change that does
            // not answer Waits itself, such as a sweep).
            if listed {
                st.handoffs.retain(|x| !Arc::ptr_eq(x, &h));
            }
            return Some(true);
        }
        if !listed {
            st.handoffs.push(h.clone());
            listed = true;
        }
        None
    });
    // Timed out or left: a change may have claimed it meanwhile, and then
    // answers it.
    if !matches!(parked, Parked::Ready(_)) {
        while h.state.load(Ordering::Relaxed) == CLAIMED {
            st = shared.wait(st, CHECK_EVERY);
        }
        if h.state.load(Ordering::Relaxed) == DONE {
            return;
        }
        st.handoffs.retain(|x| !Arc::ptr_eq(x, &h));
    }
    match parked {
        Parked::Gone | Parked::Ready(false) => {}
        Parked::TimedOut => {
            drop(st);
            send(conn, waited_out(w.what_here(), &w.namespace, w.seconds));
        }
        Parked::Ready(true) => {
            let (reply, taken) = answer(&mut st, &h.key, w.take, w.until_ns);
            drop(st);
            if taken.is_some() {
                shared.notify();
            }
            let delivered = send(conn, reply);
            if let Some((key, obj, inline)) = taken {
                lock_state(shared).handed_over(key, obj, delivered, &inline);
                if !delivered {
                    shared.notify();
                }
            }
        }
    }
}

impl super::Ask for Wait {
    type Answer = Found;

    fn answer(resp: Response, fds: Vec<OwnedFd>) -> std::result::Result<Found, Response> {
        <super::lookup::Lookup as super::Ask>::answer(resp, fds)
    }
}

impl Client {
    /// Wait for the value of a tag (newer than `after_version`, if given)
    /// for up to the call's timeout; with `take`, remove it in the same
    /// step.
    pub fn wait_for(
        &mut self,
        ns: &str,
        tag: &str,
        after_version: Option<u64>,
        take: bool,
        opts: &CallOptions<'_>,
    ) -> Result<Found> {
        let until_ns = until_ns(opts);
        let req = Wait {
            namespace: ns.into(),
            tag: tag.into(),
            after_version,
            take,
            until_ns,
            seconds: opts.timeout.as_secs_f64(),
        };
        self.ask_parked(req, until_ns, opts).map_err(|e| match e {
            // The helper answers at the deadline; the client's own wait
            // (a little longer) names the helper instead of the object.
            Error::Timeout { seconds, .. } => Error::Timeout {
                waited_for: Wait::what_of(ns, tag, after_version),
                seconds,
            },
            e => e,
        })
    }
}

impl Client {
    /// Send a request that the helper parks until `until_ns`. A helper that
    /// goes away meanwhile (it crashed, or was restarted) is replaced, and
    /// the request sent again, until the same deadline.
    pub(crate) fn ask_parked<R: super::Ask + Clone>(
        &mut self,
        req: R,
        until_ns: u64,
        opts: &CallOptions<'_>,
    ) -> Result<R::Answer> {
        loop {
            match self.ask(req.clone(), opts) {
                Err(e)
                    if matches!(e, Error::Closed | Error::Io { .. })
                        && protocol::monotonic_ns() < until_ns =>
                {
                    self.disconnect();
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }
}

/// The deadline of a parked request that may wait for the call's timeout.
pub(crate) fn until_ns(opts: &CallOptions<'_>) -> u64 {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a timeout in seconds fits in 64 bits of nanoseconds"
    )]
    protocol::monotonic_ns().saturating_add(opts.timeout.as_nanos() as u64)
}

impl Wait {
    fn what_of(ns: &str, tag: &str, after_version: Option<u64>) -> String {
        Wait {
            namespace: ns.into(),
            tag: tag.into(),
            after_version,
            take: false,
            until_ns: 0,
            seconds: 0.0,
        }
        .what()
    }
}
