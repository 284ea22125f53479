//! QueuePop: the oldest item of a queue, parked until there is one.
//! Without a lease the item is removed as it is handed over (like a take);
//! with one, it stays leased to the popping process until acknowledged, and
//! goes back to the head of the queue if that process dies first (see
//! catalog::queue).

use super::lookup::answer_for;
use super::park::{park, waited_out, Parked};
use super::wait::until_ns;
use super::Ask;
use crate::catalog::answer::{failed, Reply};
use crate::catalog::{lock_state, Shared};
use crate::client::{CallOptions, Client, Found};
use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::journal::Record;
use crate::protocol::Response;
use crate::sys;
use bincode::{Decode, Encode};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct QueuePop {
    pub namespace: String,
    pub name: String,
    /// Lease the item instead of removing it.
    pub lease: bool,
    /// When to give up, on `protocol::monotonic_ns`'s clock.
    pub until_ns: u64,
    /// The timeout the client was given, for its message.
    pub seconds: f64,
}

/// A popped item: its entry (tag: the queue's name; version: the item's
/// number), its payload, and the token of its lease (0: none).
pub struct Popped {
    pub found: Found,
    pub token: u64,
}

fn popped(reply: Reply, token: u64) -> Reply {
    let response = match reply.response {
        Response::Found(entry) => Response::Popped {
            entry,
            bytes: None,
            token,
        },
        Response::FoundInline { entry, bytes } => Response::Popped {
            entry,
            bytes: Some(bytes),
            token,
        },
        other => other,
    };
    Reply {
        response,
        files: reply.files,
    }
}

/// Serve a QueuePop of process `pid` on `conn`.
pub(crate) fn serve(
    p: QueuePop,
    shared: &Shared,
    conn: &Conn,
    pid: u32,
    send: impl Fn(Reply) -> bool,
) {
    if let Err(e) = super::check_key(&p.namespace, &p.name) {
        send(failed(e).into());
        return;
    }
    let queue = (p.namespace.clone(), p.name.clone());
    let (mut st, parked) = park(shared, conn, p.until_ns, |st| {
        // Items of consumers that died are ready again.
        let _ = st.reclaim_leases(Some(&queue));
        st.queue_head(&queue)
    });
    let item = match parked {
        Parked::Gone => return,
        Parked::TimedOut => {
            drop(st);
            let what = format!("an item in queue \"{}\"", p.name);
            send(waited_out(what, &p.namespace, p.seconds));
            return;
        }
        Parked::Ready(item) => item,
    };
    if !p.lease {
        let obj = match st.take(&item, p.until_ns) {
            Ok(o) => o,
            Err(e) => {
                drop(st);
                send(failed(e).into());
                return;
            }
        };
        let (reply, inline) = match answer_for(&st, &queue, &obj) {
            Ok(r) => r,
            Err(e) => {
                st.handed_over(item, obj, false, &[]);
                drop(st);
                send(failed(e).into());
                return;
            }
        };
        drop(st);
        let delivered = send(popped(reply, 0));
        lock_state(shared).handed_over(item, obj, delivered, &inline);
        if !delivered {
            shared.notify();
        }
        return;
    }
    // A lease names the process and when it started, so that a pid reused
    // by another process never keeps the item.
    let Some(start) = sys::process_start(pid) else {
        drop(st);
        send(failed(Error::Server {
            message: format!(
                "the helper can not see process {pid}, so it can not lease it an item \
                 (is it in another pid namespace?); pop with ack = TRUE"
            ),
        })
        .into());
        return;
    };
    let Some(obj) = st.objects.get(&item).cloned() else {
        drop(st);
        send(failed(Error::Server {
            message: "a queue item vanished while it was handed over".into(),
        })
        .into());
        return;
    };
    let reply = match answer_for(&st, &queue, &obj) {
        Ok((reply, _)) => reply,
        Err(e) => {
            drop(st);
            send(failed(e).into());
            return;
        }
    };
    let token = st.next_arrival();
    let rec = Record::Lease {
        namespace: item.0.clone(),
        tag: item.1.clone(),
        pid,
        start,
        token,
    };
    if let Err(e) = st.commit(None, rec, &[], 0) {
        drop(st);
        send(failed(e).into());
        return;
    }
    drop(st);
    if !send(popped(reply, token)) {
        let (namespace, tag) = item;
        let mut st = lock_state(shared);
        if st.leases.get(&(namespace.clone(), tag.clone())).is_some_and(|l| l.token == token) {
            let _ = st.commit(None, Record::Unlease { namespace, tag }, &[], 0);
        }
        drop(st);
        shared.notify();
    }
}

impl Ask for QueuePop {
    type Answer = Popped;

    fn answer(resp: Response, mut fds: Vec<OwnedFd>) -> std::result::Result<Popped, Response> {
        match (resp, fds.pop()) {
            (
                Response::Popped {
                    entry,
                    bytes: None,
                    token,
                },
                Some(fd),
            ) => Ok(Popped {
                found: Found::File(entry, std::fs::File::from(fd)),
                token,
            }),
            (
                Response::Popped {
                    entry,
                    bytes: Some(bytes),
                    token,
                },
                _,
            ) => Ok(Popped {
                found: Found::Inline(entry, bytes),
                token,
            }),
            (other, _) => Err(other),
        }
    }
}

impl Client {
    /// Pop the oldest item of a queue, waiting up to the call's timeout
    /// for one; with `lease`, it stays leased until `queue_ack`.
    pub fn queue_pop(
        &mut self,
        ns: &str,
        name: &str,
        lease: bool,
        opts: &CallOptions<'_>,
    ) -> Result<Popped> {
        let until_ns = until_ns(opts);
        let req = QueuePop {
            namespace: ns.into(),
            name: name.into(),
            lease,
            until_ns,
            seconds: opts.timeout.as_secs_f64(),
        };
        self.ask_parked(req, until_ns, opts).map_err(|e| match e {
            Error::Timeout { seconds, .. } => Error::Timeout {
                waited_for: format!("an item in queue \"{name}\""),
                seconds,
            },
            e => e,
        })
    }
}
