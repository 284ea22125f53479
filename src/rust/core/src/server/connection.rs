//! The helper's connections: the accept loop with its peer check, one
//! thread per connection, framing, and the connection-level messages
//! (Hello, Call, Quit); every other request goes to its handler (see
//! `requests`).

use crate::catalog::answer::{error_response, refused, Reply};
use crate::catalog::{lock_state, Origin, Shared};
use super::Exit;
use crate::sys::log;
use crate::conn::{Conn, Wait};
use crate::error::{Error, Result};
use crate::protocol::{self, Call, Entry, Hello, Response, PROTOCOL_VERSION};
use crate::requests::{quit::Quit, ConnectionMessage, Dispatched, Request};
use crate::sys;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

/// A client that starts a frame must finish it within this time.
const FRAME_DEADLINE: Duration = Duration::from_secs(30);

/// Who is at the other end, from its Hello.
#[derive(Clone, Copy)]
struct Client {
    id: u64,
    pid: u32,
}

impl Client {
    /// The origin of a request, numbered by the Call before it, if any.
    fn origin(self, call: Option<Call>) -> Origin {
        let (seq, deadline_ns) = call.map_or((0, 0), |c| (c.seq, c.deadline_ns));
        Origin {
            client: self.id,
            pid: self.pid,
            seq: if self.id == 0 { 0 } else { seq },
            deadline_ns,
        }
    }
}

/// Accept connections from processes of this user, each served by a
/// thread of its own; returns only if the listener does.
pub(super) fn accept(listener: &UnixListener, shared: &Shared) {
    let uid = sys::getuid();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                log(&format!("accept failed: {e}"));
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        match sys::peer_uid(stream.as_raw_fd()) {
            Ok(peer) if peer == uid => {}
            Ok(peer) => {
                log(&format!("refused a connection from uid {peer}"));
                continue;
            }
            Err(e) => {
                log(&format!("could not check a peer's uid: {e}"));
                continue;
            }
        }
        let shared = shared.clone();
        // Out of threads (memory, limits): refuse this connection, keep
        // serving the others.
        let spawned = std::thread::Builder::new()
            .name("yaplrd-conn".into())
            .spawn(move || handle(stream, &shared));
        if let Err(e) = spawned {
            log(&format!("could not start a thread for a connection: {e}"));
        }
    }
}

/// Serve one connection until the client closes it or breaks the
/// protocol.
fn handle(stream: UnixStream, shared: &Shared) {
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Shared with the change that answers a parked Wait (requests::wait).
    let conn = std::sync::Arc::new(Conn::new(stream));
    let Some(client) = greet(&conn) else { return };
    // The number and deadline of the next change (from a Call frame).
    let mut next: Option<Call> = None;
    while let Some(req) = read_request(&conn, true) {
        let origin = client.origin(next.take());
        let changes = req.is_change();
        let reply = match req.dispatch(shared, origin) {
            Dispatched::Answered(reply) => reply,
            Dispatched::Connection(ConnectionMessage::Call(call)) => {
                next = Some(call);
                continue;
            }
            Dispatched::Connection(ConnectionMessage::Hello(_)) => Reply::from(hello()),
            Dispatched::Connection(ConnectionMessage::Wait(w)) => {
                let take = w.take;
                crate::requests::wait::serve(w, shared, &conn, |c, r| send(c, r).is_ok());
                if take {
                    lock_state(shared).maybe_compact();
                }
                continue;
            }
            Dispatched::Connection(ConnectionMessage::QueuePop(p)) => {
                crate::requests::queue_pop::serve(p, shared, &conn, client.pid, |r| {
                    send(&conn, r).is_ok()
                });
                lock_state(shared).maybe_compact();
                continue;
            }
            Dispatched::Connection(ConnectionMessage::Barrier(b)) => {
                crate::requests::barrier::serve(b, shared, &conn, |r| send(&conn, r).is_ok());
                continue;
            }
            Dispatched::Connection(ConnectionMessage::Quit(Quit { keep })) => super::exit(
                lock_state(shared),
                Exit::Quit {
                    keep,
                    answer: &conn,
                },
            ),
        };
        let sent = send(&conn, reply);
        // A rewrite of the journal takes time: never between a change and
        // its answer, which must arrive before the change's deadline.
        if changes {
            lock_state(shared).maybe_compact();
        }
        if sent.is_err() {
            return;
        }
    }
}

/// Read the client's Hello and answer it; None when the connection is
/// refused (another protocol version, no Hello first) or closed.
fn greet(conn: &Conn) -> Option<Client> {
    let answer = match read_request(conn, false)? {
        Request::Hello(Hello {
            version,
            pid,
            client,
        }) if version == PROTOCOL_VERSION => {
            let _ = reply(conn, &hello(), &[]);
            return Some(Client { id: client, pid });
        }
        Request::Hello(Hello { version, .. }) => refused(format!(
            "{}; stop it (its objects are removed): quit_server() in R, \
             `yaplrd stop --force` on the command line",
            Error::Version {
                pid: sys::getpid(),
                helper: PROTOCOL_VERSION,
                ours: version
            }
            .facts()
        )),
        _ => refused("expected a Hello first".to_string()),
    };
    let _ = reply(conn, &answer, &[]);
    None
}

fn hello() -> Response {
    Response::Hello {
        version: PROTOCOL_VERSION,
        pid: sys::getpid(),
    }
}

/// Wait as long as needed for a request to begin, then read the rest
/// within FRAME_DEADLINE. None when the client closed the connection or
/// sent something that is not a request (answered before, as an error
/// when `greeted`, else as a refusal).
fn read_request(conn: &Conn, greeted: bool) -> Option<Request> {
    sys::wait_fd_forever(conn.raw_fd(), false).ok()?;
    let w = Wait {
        deadline: Some(Instant::now() + FRAME_DEADLINE),
        what: "a client's request",
        seconds: FRAME_DEADLINE.as_secs_f64(),
        interrupted: &|| false,
    };
    let payload = match conn.read_frame(&w) {
        Ok(Some((p, _fds))) => p,
        Ok(None) => return None,
        Err(e) => {
            log(&format!("dropping a client: {e}"));
            return None;
        }
    };
    match protocol::decode::<Request>(&payload) {
        Ok(r) => Some(r),
        Err(e) => {
            let answer = if greeted {
                error_response(Error::Protocol {
                    message: e.to_string(),
                })
            } else {
                refused(e.to_string())
            };
            let _ = reply(conn, &answer, &[]);
            None
        }
    }
}

/// Send an answer with its files.
fn send(conn: &Conn, answer: Reply) -> Result<()> {
    match answer.response {
        Response::FoundMany(items) => reply_many(conn, items, answer.files),
        resp => {
            let fds: Vec<i32> = answer.files.iter().map(|f| f.as_raw_fd()).collect();
            reply(conn, &resp, &fds)
        }
    }
}

/// Send the answer to a LookupMany in as many FoundMany frames as it
/// takes: each carries at most MAX_PASSED_FDS descriptors (those of its
/// file-backed items, in order) and about BATCH_INLINE_BUDGET inline bytes.
/// The client reads frames until it has an item per key.
fn reply_many(conn: &Conn, items: Vec<(Entry, Option<Vec<u8>>)>, files: Vec<File>) -> Result<()> {
    let mut files = files.into_iter();
    let mut chunk = Vec::new();
    let mut fds: Vec<File> = Vec::new();
    let mut bytes = 0usize;
    let send = |chunk: &mut Vec<(Entry, Option<Vec<u8>>)>, fds: &mut Vec<File>| {
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let r = reply(conn, &Response::FoundMany(std::mem::take(chunk)), &raw);
        fds.clear();
        r
    };
    if items.is_empty() {
        return send(&mut chunk, &mut fds);
    }
    for (e, inline) in items {
        // What this item adds to the frame, metadata included.
        let m = &e.meta;
        let size = 64
            + e.namespace.len()
            + e.tag.len()
            + m.rtype.len()
            + m.class.iter().map(|c| c.len() + 2).sum::<usize>()
            + m.dim.len() * 10
            + m.description.as_ref().map_or(0, |d| d.len())
            + inline.as_ref().map_or(0, |b| b.len());
        let full = fds.len() == sys::MAX_PASSED_FDS && inline.is_none();
        if !chunk.is_empty() && (full || bytes + size > protocol::BATCH_INLINE_BUDGET) {
            send(&mut chunk, &mut fds)?;
            bytes = 0;
        }
        if inline.is_none() {
            fds.extend(files.next());
        }
        bytes += size;
        chunk.push((e, inline));
    }
    send(&mut chunk, &mut fds)
}

/// Send one frame, with the descriptors `fds`.
pub(super) fn reply(conn: &Conn, resp: &Response, fds: &[i32]) -> Result<()> {
    let frame = match protocol::try_encode(resp) {
        Some(f) => f,
        None => protocol::encode(&error_response(Error::Server {
            message: format!(
                "the answer is larger than {} bytes; list one namespace at a time",
                protocol::MAX_FRAME
            ),
        })),
    };
    let w = Wait {
        deadline: Some(Instant::now() + FRAME_DEADLINE),
        what: "a client to read its answer",
        seconds: FRAME_DEADLINE.as_secs_f64(),
        interrupted: &|| false,
    };
    conn.write_frame(&frame, fds, &w)
}
