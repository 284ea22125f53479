//! The client side of the control protocol: one persistent connection per
//! process (re-created after fork), lazy start of the helper, and bounded,
//! interruptible waits on every call.
//!
//! This module holds the `Client` and its calls; `connect` opens the
//! connection, `spawn` starts the helper, `stop` stops one that does not
//! answer, `wait` is the bounded wait they share. The method of each
//! request is in its module of `requests`.

mod connect;
mod spawn;
mod stop;
pub(crate) mod wait;

use crate::conn::{Conn, Wait};
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::protocol::{self, Call, Entry, Head, Outgoing, Response};
use crate::store::Store;
use crate::sys;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use crate::backend::CallOptions;

impl CallOptions<'_> {
    fn wait<'b>(&'b self, deadline: Instant, what: &'b str) -> Wait<'b> {
        Wait {
            deadline: Some(deadline),
            what,
            seconds: self.timeout.as_secs_f64(),
            interrupted: self.interrupted,
        }
    }
}

/// Where a looked-up object's payload is.
pub enum Found {
    File(Entry, std::fs::File),
    Inline(Entry, Vec<u8>),
}

impl From<Found> for crate::backend::Found {
    fn from(f: Found) -> crate::backend::Found {
        use crate::backend::Payload;
        match f {
            Found::File(entry, file) => crate::backend::Found {
                entry,
                payload: Payload::File(file),
            },
            Found::Inline(entry, bytes) => crate::backend::Found {
                entry,
                payload: Payload::Bytes(bytes),
            },
        }
    }
}

struct Connection {
    conn: Conn,
    /// The process that opened it: a forked child must not reuse it.
    owner: u32,
    helper_pid: u32,
}

/// Names this client to the helper and numbers its changes (see
/// protocol::Call). A forked child gets its own.
#[derive(Debug, Clone, Copy)]
struct Ident {
    pid: u32,
    id: u64,
    last_seq: u64,
}

impl Ident {
    fn new() -> Ident {
        let pid = sys::getpid();
        // Unique per process instance: the pid, the time and the address of
        // a fresh allocation, mixed.
        let heap = Box::new(0u8);
        #[allow(clippy::cast_sign_loss, reason = "only the bits of the time matter")]
        let seed = u64::from(pid)
            ^ (crate::codec::now_ns() as u64).rotate_left(17)
            ^ ((&*heap as *const u8 as u64) << 7);
        let id = xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes()) | 1;
        Ident {
            pid,
            id,
            last_seq: 0,
        }
    }
}

/// Once a request's deadline has passed, how much longer a client waits
/// for the answer of a helper that may have applied it just in time.
const ANSWER_GRACE: Duration = Duration::from_millis(100);

pub struct Client {
    store: Store,
    connection: Option<Connection>,
    ident: Ident,
    /// Capacity given to a helper this client starts, before any request.
    /// Sent first to a helper this client starts (its capacity).
    on_start: Option<Outgoing>,
    /// The helper program, started when no helper runs (None: never).
    helper_exe: Option<PathBuf>,
}

impl Client {
    pub fn new(store: Store, helper_exe: Option<PathBuf>) -> Client {
        Client {
            store,
            connection: None,
            ident: Ident::new(),
            on_start: None,
            helper_exe,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The pid of the helper of the current connection, if any.
    pub fn helper_pid(&self) -> Option<u32> {
        self.connection.as_ref().map(|c| c.helper_pid)
    }

    /// Whether a connection is open (a call may then not start a helper).
    pub fn is_connected(&self) -> bool {
        self.connection
            .as_ref()
            .is_some_and(|c| c.owner == sys::getpid())
    }

    /// The request a helper this client starts gets before any other.
    pub(crate) fn on_start(&mut self, req: Option<Outgoing>) {
        self.on_start = req;
    }

    /// Forget the connection (the helper is left alone).
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    /// Whether a helper holds this store (without connecting or starting).
    pub fn is_running(&self) -> Result<bool> {
        self.store.check_owner()?;
        FileLock::is_held(&self.store.helper_lock_path())
    }

    /// Send one request and read its answer. A connection that fails before
    /// any answer arrived is re-established once (the helper may have been
    /// restarted since the last call) and the request sent again: a change
    /// carries its number, so a helper that had applied it answers without
    /// applying it twice; and its deadline, so a change is never applied
    /// after the call reported a timeout.
    pub(crate) fn call(
        &mut self,
        req: &Outgoing,
        opts: &CallOptions<'_>,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let deadline = Instant::now() + opts.timeout;
        let fresh = self
            .connection
            .as_ref()
            .is_none_or(|c| c.owner != sys::getpid());
        self.connect(opts)?;
        let seq = req.change.then(|| {
            self.ident.last_seq += 1;
            self.ident.last_seq
        });
        match self.call_once(req, seq, deadline, opts) {
            Err(e) if !fresh && e.breaks_connection() && retryable(&e) => {
                self.connection = None;
                self.connect(opts)?;
                self.call_once(req, seq, deadline, opts)
            }
            r => r,
        }
    }

    /// Send one request (numbered `seq`, if a change) on the open
    /// connection and read its answer.
    pub(crate) fn call_once(
        &mut self,
        req: &Outgoing,
        seq: Option<u64>,
        deadline: Instant,
        opts: &CallOptions<'_>,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let c = self.connection.as_ref().ok_or_else(|| Error::Protocol {
            message: "not connected to the helper".into(),
        })?;
        let what = format!(
            "the yaplr helper (pid {}) of \"{}\" to answer",
            c.helper_pid,
            self.store.dir().display()
        );
        let mut frame = Vec::new();
        if let Some(seq) = seq {
            let left = deadline.saturating_duration_since(Instant::now());
            #[allow(
                clippy::cast_possible_truncation,
                reason = "left is bounded by a timeout given in seconds"
            )]
            let deadline_ns = protocol::monotonic_ns() + left.as_nanos() as u64;
            frame = protocol::encode(&Head::Call(Call { seq, deadline_ns }));
        }
        frame.extend_from_slice(&req.frame);
        // A change may be applied until its deadline: wait a little longer
        // for the answer that says whether it was (a retry sent after the
        // deadline still gets that little time: the helper answers it at
        // once, applied earlier or refused).
        let w = opts.wait(deadline.max(Instant::now()) + ANSWER_GRACE, &what);
        let result =
            c.conn
                .write_frame(&frame, &[], &w)
                .and_then(|_| match c.conn.read_frame(&w)? {
                    Some((payload, fds)) => Ok((decode_response(&payload)?, fds)),
                    None => Err(Error::Closed),
                });
        if let Err(e) = &result {
            if e.breaks_connection() {
                self.connection = None;
            }
        }
        let (resp, fds) = result?;
        match resp {
            Response::Failed(f) => Err(f.into_error(|| Error::Timeout {
                waited_for: format!("{what}; the change was not made"),
                seconds: opts.timeout.as_secs_f64(),
            })),
            Response::Refused { message, .. } => Err(Error::Protocol { message }),
            resp => Ok((resp, fds)),
        }
    }

    /// Read one more frame of a multi-frame answer.
    pub(crate) fn read_more(
        &mut self,
        opts: &CallOptions<'_>,
        deadline: Instant,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let c = self.connection.as_ref().ok_or_else(|| Error::Protocol {
            message: "not connected to the helper".into(),
        })?;
        let what = format!("the yaplr helper (pid {}) to answer", c.helper_pid);
        let w = opts.wait(deadline, &what);
        let r = match c.conn.read_frame(&w) {
            Ok(Some((payload, fds))) => decode_response(&payload).map(|r| (r, fds)),
            Ok(None) => Err(Error::Closed),
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.connection = None;
        }
        r
    }
}

/// Errors after which the same request may be sent again on a new
/// connection: the old helper is gone (closed, reset), not slow.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Protocol { .. } | Error::Closed | Error::Io { .. }
    )
}

fn with_seconds(e: Error, timeout: Duration) -> Error {
    match e {
        Error::Timeout { waited_for, .. } => Error::Timeout {
            waited_for,
            seconds: timeout.as_secs_f64(),
        },
        e => e,
    }
}

fn decode_response(payload: &[u8]) -> Result<Response> {
    protocol::decode_response(payload).map_err(|e| Error::Protocol {
        message: format!("bad answer from the helper: {e}"),
    })
}

/// The error for an answer that is not the one a request expects.
pub(crate) fn unexpected(r: Response) -> Error {
    Error::Protocol {
        message: format!("unexpected answer from the helper: {r:?}"),
    }
}
