//! The client side of the control protocol: one persistent connection per
//! process (re-created after fork), lazy start of the helper, and bounded,
//! interruptible waits on every call.

use crate::conn::{Conn, Wait};
use crate::error::{Error, Hint, Result};
use crate::lock::FileLock;
use crate::protocol::{
    self, Entry, Meta, PutItem, Request, Response, ServerInfo, PROTOCOL_VERSION,
};
use crate::store::Store;
use crate::sys;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
/// protocol::Request::Call). A forked child gets its own.
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
    spawn_capacity: Option<u64>,
    /// The helper program, started when no helper runs (None: never).
    helper_exe: Option<PathBuf>,
}

enum Connect {
    Connected(Connection),
    /// Nobody listens on the socket.
    NoHelper,
}

impl Client {
    pub fn new(store: Store, helper_exe: Option<PathBuf>) -> Client {
        Client {
            store,
            connection: None,
            ident: Ident::new(),
            spawn_capacity: None,
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

    /// The capacity a helper started by this client gets at once.
    pub fn set_spawn_capacity(&mut self, bytes: Option<u64>) {
        self.spawn_capacity = bytes;
    }

    /// Forget the connection (the helper is left alone).
    pub fn disconnect(&mut self) {
        self.connection = None;
    }

    fn try_connect(&mut self, opts: &CallOptions<'_>, deadline: Instant) -> Result<Connect> {
        if self.ident.pid != sys::getpid() {
            self.ident = Ident::new();
        }
        self.store.check_socket_path()?;
        // Never talk to a socket in a directory another user controls.
        self.store.check_owner()?;
        let sock = self.store.socket_path();
        let stream = loop {
            match sys::connect_unix(&sock) {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTDIR)
                    ) =>
                {
                    return Ok(Connect::NoHelper)
                }
                // The helper's queue is full: it does not accept (stopped or
                // swamped). Wait for room, within the deadline.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout {
                            waited_for: format!(
                                "the yaplr helper of \"{}\" to accept a connection",
                                self.store.dir().display()
                            ),
                            seconds: opts.timeout.as_secs_f64(),
                        });
                    }
                    if (opts.interrupted)() {
                        return Err(Error::Interrupted {
                            waited_for: "the yaplr helper to accept a connection".into(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(Error::io(format!("connecting to {}", sock.display()), e)),
            }
        };
        match sys::peer_uid(std::os::fd::AsRawFd::as_raw_fd(&stream)) {
            Ok(uid) if uid == sys::getuid() => {}
            Ok(uid) => {
                return Err(Error::store(
                    format!(
                        "the process serving \"{}\" runs as uid {uid}, not as this user",
                        sock.display()
                    ),
                    Hint::OtherStore,
                ))
            }
            Err(e) => return Err(Error::io("checking who serves the store", e)),
        }
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the helper's socket", e))?;
        let conn = Conn::new_spinning(stream);
        let what = format!(
            "the yaplr helper of \"{}\" to answer",
            self.store.dir().display()
        );
        let w = opts.wait(deadline, &what);
        let hello = protocol::encode(&Request::Hello {
            version: PROTOCOL_VERSION,
            pid: sys::getpid(),
            client: self.ident.id,
        });
        conn.write_frame(&hello, &[], &w)?;
        let Some((payload, _)) = conn.read_frame(&w)? else {
            // The helper closed at once: it is exiting (quit or shutdown).
            return Ok(Connect::NoHelper);
        };
        match decode_response(&payload)? {
            Response::Hello { pid, .. } => Ok(Connect::Connected(Connection {
                conn,
                owner: sys::getpid(),
                helper_pid: pid,
            })),
            Response::Refused { message, .. } => Err(Error::Protocol { message }),
            Response::Failed(f) => Err(f.into_error(|| Error::Protocol {
                message: "the helper refused the connection".into(),
            })),
            other => Err(Error::Protocol {
                message: format!("unexpected answer to Hello: {other:?}"),
            }),
        }
    }

    /// Connect to the store's helper, starting it when allowed.
    pub fn connect(&mut self, opts: &CallOptions<'_>) -> Result<()> {
        if let Some(c) = &self.connection {
            // A helper that died since the last call is noticed now (one
            // poll(2)), not after the caller has written a large object.
            if c.owner == sys::getpid() && !c.conn.is_stale() {
                return Ok(());
            }
            // Forked child: drop the inherited copy without touching it.
            self.connection = None;
        }
        let deadline = Instant::now() + opts.timeout;
        if let Connect::Connected(c) = self.try_connect(opts, deadline)? {
            self.connection = Some(c);
            return Ok(());
        }
        if !opts.autostart {
            return Err(Error::NoServer {
                store: self.store.dir().display().to_string(),
            });
        }
        self.store.prepare()?;
        // A helper would refuse to start on a store with planted entries:
        // say so now, naming the entry, rather than after the timeout.
        self.store.check_entries()?;
        let (c, ours) = self.start_helper(opts, deadline)?;
        self.connection = Some(c);
        // A helper this client started gets its capacity before any request.
        if let (true, Some(bytes)) = (ours, self.spawn_capacity) {
            let deadline = Instant::now() + opts.timeout;
            self.call_once(
                &Request::SetCapacity { bytes: Some(bytes) },
                None,
                deadline,
                opts,
            )?;
        }
        Ok(())
    }

    /// Start (or wait for) the helper; also says whether this client
    /// spawned it.
    fn start_helper(
        &mut self,
        opts: &CallOptions<'_>,
        deadline: Instant,
    ) -> Result<(Connection, bool)> {
        let exe = self.helper_exe.clone().ok_or_else(|| Error::Server {
            message: "the yaplrd helper program was not found; reinstall yaplr".into(),
        })?;
        let what = format!(
            "the yaplr helper of \"{}\" to start",
            self.store.dir().display()
        );
        let mut spawned = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let spawn_lock =
                FileLock::lock(&self.store.spawn_lock_path(), left, &what, opts.interrupted)
                    .map_err(|e| with_seconds(e, opts.timeout))?;
            if let Connect::Connected(c) = self.try_connect(opts, deadline)? {
                return Ok((c, spawned > 0));
            }
            if !FileLock::is_held(&self.store.helper_lock_path())? {
                if spawned == 2 {
                    return Err(Error::Server {
                        message: format!(
                            "the yaplr helper of \"{}\" exited while starting: {}",
                            self.store.dir().display(),
                            log_tail(&self.store.log_path())
                        ),
                    });
                }
                spawn(&exe, &self.store, deadline).map_err(|e| with_seconds(e, opts.timeout))?;
                spawned += 1;
            }
            // Wait for the helper (ours or one that was already starting).
            let mut pause = Duration::from_millis(1);
            loop {
                if let Connect::Connected(c) = self.try_connect(opts, deadline)? {
                    drop(spawn_lock);
                    return Ok((c, spawned > 0));
                }
                if (opts.interrupted)() {
                    return Err(Error::Interrupted { waited_for: what });
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        waited_for: format!(
                            "{what} (see its log {})",
                            self.store.log_path().display()
                        ),
                        seconds: opts.timeout.as_secs_f64(),
                    });
                }
                if !FileLock::is_held(&self.store.helper_lock_path())? {
                    // It died while starting, or it quit: try again.
                    break;
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            drop(spawn_lock);
            if Instant::now() >= deadline {
                return Err(Error::Server {
                    message: format!(
                        "the yaplr helper of \"{}\" exited while starting; see its log {}",
                        self.store.dir().display(),
                        self.store.log_path().display()
                    ),
                });
            }
        }
    }

    /// Send one request and read its answer. A connection that fails before
    /// any answer arrived is re-established once (the helper may have been
    /// restarted since the last call) and the request sent again: a change
    /// carries its number, so a helper that had applied it answers without
    /// applying it twice; and its deadline, so a change is never applied
    /// after the call reported a timeout.
    pub fn call(
        &mut self,
        req: &Request,
        opts: &CallOptions<'_>,
    ) -> Result<(Response, Vec<OwnedFd>)> {
        let deadline = Instant::now() + opts.timeout;
        let fresh = self
            .connection
            .as_ref()
            .is_none_or(|c| c.owner != sys::getpid());
        self.connect(opts)?;
        let seq = req.is_change().then(|| {
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

    fn call_once(
        &mut self,
        req: &Request,
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
            frame = protocol::encode(&Request::Call { seq, deadline_ns });
        }
        let Some(body) = protocol::try_encode(req) else {
            return Err(Error::BadArgument(format!(
                "the request is larger than the {} bytes a message may hold; send fewer or smaller objects at once",
                protocol::MAX_FRAME
            )));
        };
        frame.extend_from_slice(&body);
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
                    None => Err(Error::Protocol {
                        message: "the yaplr helper closed the connection (it may have exited)"
                            .into(),
                    }),
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

    pub fn publish(
        &mut self,
        ns: &str,
        tag: &str,
        id: &str,
        meta: Meta,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        let req = Request::Publish {
            namespace: ns.into(),
            tag: tag.into(),
            id: id.into(),
            meta,
        };
        self.call(&req, opts).map(|_| ())
    }

    /// Store a small payload inline (see protocol::INLINE_MAX).
    pub fn put_inline(
        &mut self,
        ns: &str,
        tag: &str,
        kind: u32,
        bytes: Vec<u8>,
        meta: Meta,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        self.put_inline_at(ns, tag, kind, bytes, meta, crate::codec::now_ns(), opts)
    }

    /// put_inline with a given send time (restoring a dump).
    #[allow(clippy::too_many_arguments)]
    pub fn put_inline_at(
        &mut self,
        ns: &str,
        tag: &str,
        kind: u32,
        bytes: Vec<u8>,
        meta: Meta,
        ctime_ns: i64,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        let req = Request::PutInline {
            namespace: ns.into(),
            tag: tag.into(),
            kind,
            ctime_ns,
            bytes,
            meta,
        };
        self.call(&req, opts).map(|_| ())
    }

    /// Look up a tag: its catalog entry and either its open object file or
    /// its inline payload.
    pub fn lookup(&mut self, ns: &str, tag: &str, opts: &CallOptions<'_>) -> Result<Found> {
        let req = Request::Lookup {
            namespace: ns.into(),
            tag: tag.into(),
        };
        let (resp, mut fds) = self.call(&req, opts)?;
        match (resp, fds.pop()) {
            (Response::Found(entry), Some(fd)) => Ok(Found::File(entry, std::fs::File::from(fd))),
            (Response::FoundInline { entry, bytes }, _) => Ok(Found::Inline(entry, bytes)),
            (other, _) => Err(unexpected(other)),
        }
    }

    pub fn remove(&mut self, ns: &str, tag: &str, opts: &CallOptions<'_>) -> Result<()> {
        let req = Request::Remove {
            namespace: ns.into(),
            tag: tag.into(),
        };
        self.call(&req, opts).map(|_| ())
    }

    /// Remove every object of a namespace; returns how many there were.
    pub fn remove_namespace(&mut self, ns: &str, opts: &CallOptions<'_>) -> Result<u64> {
        let req = Request::RemoveNamespace {
            namespace: ns.into(),
        };
        match self.call(&req, opts)?.0 {
            Response::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    pub fn exists(&mut self, ns: &str, tag: &str, opts: &CallOptions<'_>) -> Result<bool> {
        let req = Request::Exists {
            namespace: ns.into(),
            tag: tag.into(),
        };
        match self.call(&req, opts)?.0 {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// The objects of namespace `ns`, or of every namespace (None), sorted
    /// by namespace and tag.
    pub fn list(&mut self, ns: Option<&str>, opts: &CallOptions<'_>) -> Result<Vec<Entry>> {
        let req = Request::List {
            namespace: ns.map(String::from),
        };
        match self.call(&req, opts)?.0 {
            Response::List(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    pub fn info(&mut self, opts: &CallOptions<'_>) -> Result<ServerInfo> {
        match self.call(&Request::Info, opts)?.0 {
            Response::Info(i) => Ok(i),
            other => Err(unexpected(other)),
        }
    }

    /// Store several objects at once: all or none take effect.
    pub fn put_many(&mut self, items: Vec<PutItem>, opts: &CallOptions<'_>) -> Result<()> {
        if items.len() > protocol::MAX_BATCH_ITEMS {
            return Err(Error::BadArgument(format!(
                "one batch holds at most {} objects, not {}; send them in several batches",
                protocol::MAX_BATCH_ITEMS,
                items.len()
            )));
        }
        self.call(&Request::PutMany { items }, opts).map(|_| ())
    }

    /// Look up several objects at one consistent moment, handing each to
    /// `f` as it arrives (so that only a frame's worth of descriptors is
    /// open at once, however many objects there are).
    pub fn lookup_many<T>(
        &mut self,
        keys: Vec<(String, String)>,
        opts: &CallOptions<'_>,
        mut f: impl FnMut(Found) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = keys.len();
        let (resp, fds) = self.call(&Request::LookupMany { keys }, opts)?;
        let mut out = Vec::with_capacity(n);
        let deadline = Instant::now() + opts.timeout;
        let mut frame = (resp, fds);
        loop {
            let result = self.take_chunk(frame, &mut out, &mut f);
            if let Err(e) = result {
                // Frames may remain unread: this connection is done.
                self.connection = None;
                return Err(e);
            }
            if out.len() >= n {
                return Ok(out);
            }
            frame = self.read_more(opts, deadline)?;
        }
    }

    /// Hand the items of one FoundMany frame to `f`.
    fn take_chunk<T>(
        &mut self,
        (resp, fds): (Response, Vec<OwnedFd>),
        out: &mut Vec<T>,
        f: &mut impl FnMut(Found) -> Result<T>,
    ) -> Result<()> {
        let Response::FoundMany(items) = resp else {
            return Err(unexpected(resp));
        };
        if items.is_empty() && out.is_empty() {
            return Ok(());
        }
        if items.is_empty() {
            return Err(Error::Protocol {
                message: "the helper sent an empty part of an answer".into(),
            });
        }
        let mut fds = fds.into_iter();
        for (entry, inline) in items {
            let found = match inline {
                Some(bytes) => Found::Inline(entry, bytes),
                None => match fds.next() {
                    Some(fd) => Found::File(entry, std::fs::File::from(fd)),
                    None => {
                        return Err(Error::Protocol {
                            message: "the helper sent fewer descriptors than objects".into(),
                        })
                    }
                },
            };
            out.push(f(found)?);
        }
        Ok(())
    }

    /// Read one more frame of a multi-frame answer.
    fn read_more(
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
            Ok(None) => Err(Error::Protocol {
                message: "the yaplr helper closed the connection (it may have exited)".into(),
            }),
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.connection = None;
        }
        r
    }

    /// After a failed publish (or batch) of the committed object files
    /// `ids`: remove them when the helper said no; when the call timed out
    /// or the connection broke, the change may have taken effect, so only
    /// the helper may decide (if it can not be asked now, it removes them
    /// when it refuses the late change, or its sweep once this process is
    /// gone).
    pub fn discard_staged(&mut self, e: &Error, ids: &[String]) {
        for id in ids {
            if !e.breaks_connection() {
                let _ = std::fs::remove_file(self.store.object_path(id));
            } else {
                // Only the helper knows (under its catalog lock) whether the
                // change was made; a helper that refuses a late change
                // removes its files itself.
                let quick = CallOptions {
                    timeout: Duration::from_secs(1),
                    autostart: false,
                    interrupted: &|| false,
                };
                let _ = self.discard(id, &quick);
            }
        }
    }

    /// Remove object file `id` unless the catalog links to it; Ok(true)
    /// when it is linked (and so kept).
    pub fn discard(&mut self, id: &str, opts: &CallOptions<'_>) -> Result<bool> {
        match self.call(&Request::Discard { id: id.into() }, opts)?.0 {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Set the store's capacity in bytes (None: unlimited).
    pub fn set_capacity(&mut self, bytes: Option<u64>, opts: &CallOptions<'_>) -> Result<()> {
        self.call(&Request::SetCapacity { bytes }, opts).map(|_| ())
    }

    pub fn ping(&mut self, opts: &CallOptions<'_>) -> Result<()> {
        match self.call(&Request::Ping, opts)?.0 {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Ask the helper to remove everything (with `keep`: nothing but its
    /// socket and locks) and exit, and wait until its process is gone.
    /// Ok(false) when no helper was running.
    pub fn quit(&mut self, keep: bool, opts: &CallOptions<'_>) -> Result<bool> {
        let no_start = opts.no_start();
        match self.connect(&no_start) {
            Err(Error::NoServer { .. }) => return Ok(false),
            // A helper we can not talk to (another version of yaplr):
            // stop it by signal and clean up after it.
            Err(Error::Protocol { .. }) => return self.force_stop(keep, opts),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let pid = self.helper_pid().unwrap_or(0);
        let deadline = Instant::now() + opts.timeout;
        let r = self.call_once(&Request::Quit { keep }, None, deadline, &no_start);
        self.connection = None;
        match r {
            Ok(_) => {}
            // The helper exits right after answering; a closed connection
            // before the answer is fine too, as long as it goes away.
            Err(Error::Protocol { .. }) => {}
            Err(e) => return Err(e),
        }
        let deadline = Instant::now() + opts.timeout;
        while sys::pid_alive(pid) {
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    waited_for: format!("the yaplr helper (pid {pid}) to exit"),
                    seconds: opts.timeout.as_secs_f64(),
                });
            }
            if (opts.interrupted)() {
                return Err(Error::Interrupted {
                    waited_for: format!("the yaplr helper (pid {pid}) to exit"),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(true)
    }

    /// `force_stop` for a helper that does not answer (`yaplrd stop --force`).
    pub fn force_quit(&mut self, keep: bool, opts: &CallOptions<'_>) -> Result<bool> {
        self.force_stop(keep, opts)
    }

    /// Stop the helper by SIGTERM (SIGKILL if it does not go), then remove
    /// the store's files as the helper would have.
    fn force_stop(&mut self, keep: bool, opts: &CallOptions<'_>) -> Result<bool> {
        self.connection = None;
        let lock = self.store.helper_lock_path();
        let pid = match self.store.helper_pid_from_lock() {
            Some(pid) if FileLock::is_held(&lock)? && sys::pid_alive(pid) => pid,
            _ => {
                return Err(Error::Protocol {
                    message: format!(
                        "the helper of \"{}\" does not answer in a way this version of yaplr understands, \
                         and its process could not be identified; see {}",
                        self.store.dir().display(),
                        self.store.log_path().display()
                    ),
                })
            }
        };
        let deadline = Instant::now() + opts.timeout;
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            let _ = sys::kill(pid, signal);
            let until = if signal == libc::SIGTERM {
                Instant::now() + Duration::from_secs(2).min(opts.timeout)
            } else {
                deadline.max(Instant::now() + Duration::from_secs(1))
            };
            while sys::pid_alive(pid) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
            if !sys::pid_alive(pid) {
                break;
            }
        }
        if sys::pid_alive(pid) {
            return Err(Error::Timeout {
                waited_for: format!("the yaplr helper (pid {pid}) to exit"),
                seconds: opts.timeout.as_secs_f64(),
            });
        }
        if keep {
            self.store.remove_runtime_files();
        } else {
            self.store.remove_all();
        }
        Ok(true)
    }

    /// Whether a helper holds this store (without connecting or starting).
    pub fn is_running(&self) -> Result<bool> {
        self.store.check_owner()?;
        FileLock::is_held(&self.store.helper_lock_path())
    }
}

/// Errors after which the same request may be sent again on a new
/// connection: the old helper is gone (closed, reset), not slow.
fn retryable(e: &Error) -> bool {
    matches!(e, Error::Protocol { .. }) || matches!(e, Error::Io { .. })
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

fn unexpected(r: Response) -> Error {
    Error::Protocol {
        message: format!("unexpected answer from the helper: {r:?}"),
    }
}

/// Start a detached helper: `yaplrd serve --dir D --daemon` forks, the
/// parent exits at once, the child starts a new session and serves.
fn spawn(exe: &Path, store: &Store, deadline: Instant) -> Result<()> {
    let log = crate::store::open_entry(&store.log_path(), crate::store::How::Append)?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("duplicating the log descriptor", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--dir")
        .arg(store.dir())
        .arg("--daemon")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    // SAFETY: only async-signal-safe calls. setsid detaches the helper from
    // the session's terminal and process group (Ctrl-C in R must not reach
    // it); the helper must not keep R's other descriptors (an open pipe()
    // connection would never see EOF) nor its working directory.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                for fd in 3..1024 {
                    libc::close(fd);
                }
            }
            libc::chdir(c"/".as_ptr());
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| Error::Server {
        message: format!("could not start the yaplr helper {}: {e}", exe.display()),
    })?;
    // The launcher exits once the helper serves (see yaplrd --daemon).
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(Error::Server {
                    message: format!(
                        "the yaplr helper failed to start ({status}); see its log {}",
                        store.log_path().display()
                    ),
                })
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_micros(200)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    waited_for: format!(
                        "the yaplr helper of \"{}\" to start",
                        store.dir().display()
                    ),
                    seconds: 0.0,
                });
            }
            Err(e) => return Err(Error::io("waiting for the helper to detach", e)),
        }
    }
}

/// The last line of the helper's log, for error messages.
fn log_tail(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(mut f) = crate::store::open_entry(path, crate::store::How::Read) {
        let _ = f.read_to_string(&mut text);
    }
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(l) => format!("{l} (log: {})", path.display()),
        None => format!("see its log {}", path.display()),
    }
}

/// The helper program next to the running executable or given by
/// YAPLRD_PATH; used by tests and tools.
pub fn helper_from_env() -> Option<PathBuf> {
    std::env::var_os("YAPLRD_PATH").map(PathBuf::from)
}
