//! Quit: the helper removes every object (with `keep`, only its socket and
//! locks), answers and exits. It concerns the connection, not the
//! catalog: the helper's connection code handles it (see `server::exit`).

use crate::protocol::Outgoing;
use crate::client::wait::{wait_until, Until};
use crate::client::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::sys;
use bincode::{Decode, Encode};
use std::time::Instant;

/// Unlink every object, the socket and lock files, and exit.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Quit {
    /// Keep the objects and the journal for the next helper.
    pub keep: bool,
}

impl Client {
    /// Ask the helper to remove everything (with `keep`: nothing but its
    /// socket and locks) and exit, and wait until its process is gone.
    /// Ok(false) when no helper was running.
    pub fn quit(&mut self, keep: bool, opts: &CallOptions<'_>) -> Result<bool> {
        let no_start = opts.no_start();
        // A helper that holds the store but takes no connection (starting,
        // or exiting with its socket still open) is waited for: until it
        // answers, or lets the store go.
        let reached = wait_until(
            Until::new(
                Instant::now() + opts.timeout,
                opts,
                format!(
                    "the yaplr helper of \"{}\" to accept a connection",
                    self.store().dir().display()
                ),
            ),
            || match self.connect(&no_start) {
                Err(Error::NoServer { .. }) if self.is_running()? => Ok(None),
                r => Ok(Some(r)),
            },
        )?;
        match reached {
            Err(Error::NoServer { .. }) => return Ok(false),
            // A helper we can not talk to (another version of yaplr):
            // stop it by signal and clean up after it.
            Err(Error::Protocol { .. }) => return self.force_stop(keep, opts),
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        let pid = self.helper_pid().unwrap_or(0);
        let deadline = Instant::now() + opts.timeout;
        let req = Outgoing::new(&super::Request::from(Quit { keep }), false)?;
        let r = self.call_once(&req, None, deadline, &no_start);
        self.disconnect();
        match r {
            Ok(_) => {}
            // The helper exits right after answering; a closed connection
            // before the answer is fine too, as long as it goes away.
            Err(Error::Protocol { .. } | Error::Closed) => {}
            Err(e) => return Err(e),
        }
        let exited = Until::new(
            Instant::now() + opts.timeout,
            opts,
            format!("the yaplr helper (pid {pid}) to exit"),
        );
        wait_until(exited, || Ok((!sys::pid_alive(pid)).then_some(true)))
    }
}
