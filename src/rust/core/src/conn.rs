//! One framed connection over a Unix socket, shared by the client and the
//! helper: bounded reads and writes, fd passing, no SIGPIPE.

use crate::error::{Error, Result};
use crate::protocol::{self, MAX_FRAME};
use crate::sys::{self, WaitOutcome};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

pub struct Conn {
    stream: UnixStream,
    /// Spin briefly before blocking on reads (clients, whose answer is
    /// imminent; never the helper, whose clients may be idle for hours).
    spin: bool,
}

const SPIN_LIMIT: u32 = 2000;

/// What a wait is for, used in timeout messages.
pub struct Wait<'a> {
    pub deadline: Option<Instant>,
    pub what: &'a str,
    pub seconds: f64,
    pub interrupted: &'a dyn Fn() -> bool,
}


impl Conn {
    pub fn new(stream: UnixStream) -> Conn {
        Conn {
            stream,
            spin: false,
        }
    }

    /// A connection whose reads spin briefly before blocking.
    pub fn new_spinning(stream: UnixStream) -> Conn {
        Conn { stream, spin: true }
    }

    pub fn raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Whether the connection can no longer carry a request: the peer
    /// closed it (it exited, even if it is now a zombie), or it holds bytes
    /// nobody asked for. One poll(2), no waiting.
    pub fn is_stale(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.raw_fd(),
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: pfd is one valid pollfd; a zero timeout never blocks.
        let r = unsafe { libc::poll(&mut pfd, 1, 0) };
        r != 0
    }

    fn wait(&self, write: bool, w: &Wait<'_>) -> Result<()> {
        let Some(deadline) = w.deadline else {
            return sys::wait_fd_forever(self.raw_fd(), write)
                .map_err(|e| Error::io("waiting on a socket", e));
        };
        match sys::wait_fd(self.raw_fd(), write, deadline, w.interrupted)
            .map_err(|e| Error::io("waiting on the helper's socket", e))?
        {
            WaitOutcome::Ready => Ok(()),
            WaitOutcome::TimedOut => Err(Error::Timeout {
                waited_for: w.what.to_string(),
                seconds: w.seconds,
            }),
            WaitOutcome::Interrupted => Err(Error::Interrupted {
                waited_for: w.what.to_string(),
            }),
        }
    }

    /// Write one whole frame, passing `fd` with it if given.
    pub fn write_frame(&self, frame: &[u8], fds: &[RawFd], w: &Wait<'_>) -> Result<()> {
        let mut off = 0;
        let mut pass = fds;
        // Try first, wait only when the socket is full: saves a poll per call.
        while let Some(rest) = frame.get(off..).filter(|r| !r.is_empty()) {
            match sys::send_some(self.raw_fd(), rest, pass) {
                Ok(n) => {
                    off += n;
                    pass = &[];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait(true, w)?,
                Err(e) => return Err(broken(e)),
            }
        }
        Ok(())
    }

    fn read_exact(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
        w: &Wait<'_>,
        at_start: bool,
    ) -> Result<bool> {
        let mut spins = if self.spin { 0 } else { SPIN_LIMIT };
        let mut off = 0;
        while let Some(rest) = buf.get_mut(off..).filter(|r| !r.is_empty()) {
            match sys::recv_some(self.raw_fd(), rest, fds) {
                Ok(0) if off == 0 && at_start => return Ok(false),
                Ok(0) => {
                    return Err(Error::Protocol {
                        message: "the connection to the helper closed in the middle of a message"
                            .into(),
                    })
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // An answer usually arrives within microseconds: spin
                    // briefly before sleeping in poll(), which saves a
                    // wake-up of this thread on every round trip.
                    if spins < SPIN_LIMIT {
                        spins += 1;
                        std::hint::spin_loop();
                        if spins % 16 == 0 {
                            std::thread::yield_now();
                        }
                    } else {
                        self.wait(false, w)?;
                    }
                }
                Err(e) => return Err(broken(e)),
            }
        }
        Ok(true)
    }

    /// Read one frame's payload and any fds passed with it. `Ok(None)` when
    /// the peer closed the connection cleanly between frames.
    pub fn read_frame(&self, w: &Wait<'_>) -> Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
        let mut fds = Vec::new();
        let mut prefix = [0u8; 4];
        if !self.read_exact(&mut prefix, &mut fds, w, true)? {
            return Ok(None);
        }
        let n = protocol::frame_len(prefix).map_err(|e| Error::Protocol {
            message: e.to_string(),
        })?;
        debug_assert!(n <= MAX_FRAME);
        let mut payload = vec![0u8; n];
        self.read_exact(&mut payload, &mut fds, w, false)?;
        Ok(Some((payload, fds)))
    }
}

fn broken(e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::EPIPE) | Some(libc::ECONNRESET) => Error::Closed,
        _ => Error::io("talking to the helper", e),
    }
}
