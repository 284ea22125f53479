//! Opening the connection: connect to the store's socket, check who
//! serves it, say Hello; start the helper when none answers and that is
//! allowed.

use super::wait::{wait_until, Until};
use super::{decode_response, CallOptions, Client, Connection, Ident};
use crate::conn::Conn;
use crate::error::{Error, Hint, Result};
use crate::protocol::{self, Head, Hello, Response, PROTOCOL_VERSION};
use crate::sys;
use std::time::Instant;

pub(super) enum Connect {
    Connected(Connection),
    /// Nobody listens on the socket.
    NoHelper,
}

impl Client {
    pub(super) fn try_connect(
        &mut self,
        opts: &CallOptions<'_>,
        deadline: Instant,
    ) -> Result<Connect> {
        if self.ident.pid != sys::getpid() {
            self.ident = Ident::new();
        }
        self.store.check_socket_path()?;
        // Never talk to a socket in a directory another user controls.
        self.store.check_owner()?;
        let sock = self.store.socket_path();
        // The helper's queue is full: it does not accept (stopped or
        // swamped). Wait for room, within the deadline.
        let room = Until::new(
            deadline,
            opts,
            "the yaplr helper to accept a connection".into(),
        )
        .on_timeout(format!(
            "the yaplr helper of \"{}\" to accept a connection",
            self.store.dir().display()
        ));
        let connected = wait_until(room, || match sys::connect_unix(&sock) {
            Ok(s) => Ok(Some(Some(s))),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ECONNREFUSED) | Some(libc::ENOTDIR)
                ) =>
            {
                Ok(Some(None))
            }
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
            Err(e) => Err(Error::io(format!("connecting to {}", sock.display()), e)),
        })?;
        let Some(stream) = connected else {
            return Ok(Connect::NoHelper);
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
        let hello = protocol::encode(&Head::Hello(Hello {
            version: PROTOCOL_VERSION,
            pid: sys::getpid(),
            client: self.ident.id,
        }));
        // A helper that closes at once is exiting (quit, shutdown, or
        // killed: a killed helper's threads may still hold its socket for a
        // moment, accepting connections that then break).
        let answer = conn
            .write_frame(&hello, &[], &w)
            .and_then(|_| conn.read_frame(&w));
        let Some((payload, _)) = (match answer {
            Err(Error::Closed) => None,
            r => r?,
        }) else {
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
        if let (true, Some(req)) = (ours, self.on_start.take()) {
            let deadline = Instant::now() + opts.timeout;
            let r = self.call_once(&req, None, deadline, opts);
            self.on_start = Some(req);
            r?;
        }
        Ok(())
    }
}
