//! Wait: an object's value as soon as there is one (newer than a given
//! version, if any), optionally taking it: removing it in the same step, so
//! that of several takers exactly one gets each value.
//!
//! The helper parks the request on its connection's thread: the catalog is
//! released while it waits, and every change wakes it (see `Hub`). It
//! gives up at the request's deadline, or when the client hung up (an
//! interrupted wait closes its connection). A taken value that can not be
//! handed over (the client went away just then) is put back.

use super::lookup::{answer_for, found};
use crate::catalog::answer::{failed, Reply};
use crate::catalog::{lock_state, Shared};
use crate::client::{CallOptions, Client, Found};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::key::DEFAULT_NAMESPACE;
use super::park::{park, waited_out, Parked};
use crate::protocol::{self, Response};
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;
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

/// Serve a Wait on `conn`: park until the value is there, the deadline
/// passes or the client leaves; `send` sends the answer (false: it could
/// not be delivered).
pub(crate) fn serve(w: Wait, shared: &Shared, conn: &Conn, send: impl Fn(Reply) -> bool) {
    if let Err(e) = super::check_key(&w.namespace, &w.tag) {
        send(failed(e).into());
        return;
    }
    let key = (w.namespace.clone(), w.tag.clone());
    let (mut st, parked) = park(shared, conn, w.until_ns, |st| {
        st.objects
            .get(&key)
            .is_some_and(|o| w.after_version.is_none_or(|v| o.seq > v))
            .then_some(())
    });
    match parked {
        Parked::Gone => {}
        Parked::TimedOut => {
            drop(st);
            send(waited_out(w.what_here(), &w.namespace, w.seconds));
        }
        Parked::Ready(()) if !w.take => {
            let reply = found(&mut st, key);
            drop(st);
            send(reply);
        }
        Parked::Ready(()) => {
            let obj = match st.take(&key, w.until_ns) {
                Ok(o) => o,
                Err(e) => {
                    drop(st);
                    send(failed(e).into());
                    return;
                }
            };
            let (reply, inline) = match answer_for(&st, &key, &obj) {
                Ok(r) => r,
                Err(e) => {
                    st.handed_over(key, obj, false, &[]);
                    drop(st);
                    shared.notify();
                    send(failed(e).into());
                    return;
                }
            };
            drop(st);
            shared.notify();
            let delivered = send(reply);
            lock_state(shared).handed_over(key, obj, delivered, &inline);
            if !delivered {
                shared.notify();
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
