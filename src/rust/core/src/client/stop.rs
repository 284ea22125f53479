//! Stopping a helper that can not be asked to quit (another version of
//! yaplr, or one that does not answer): by signal, then cleaning up its
//! files as it would have.

use super::wait::{wait_until, Until};
use super::{CallOptions, Client};
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::sys;
use std::time::{Duration, Instant};

impl Client {
    /// `force_stop` for a helper that does not answer (`yaplrd stop --force`).
    pub fn force_quit(&mut self, keep: bool, opts: &CallOptions<'_>) -> Result<bool> {
        self.force_stop(keep, opts)
    }

    /// Stop the helper by SIGTERM (SIGKILL if it does not go), then remove
    /// the store's files as the helper would have.
    pub(crate) fn force_stop(&mut self, keep: bool, opts: &CallOptions<'_>) -> Result<bool> {
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
        let what = format!("the yaplr helper (pid {pid}) to exit");
        for signal in [libc::SIGTERM, libc::SIGKILL] {
            let _ = sys::kill(pid, signal);
            let until = if signal == libc::SIGTERM {
                Instant::now() + Duration::from_secs(2).min(opts.timeout)
            } else {
                deadline.max(Instant::now() + Duration::from_secs(1))
            };
            let exited = Until::uninterruptible(until, opts.timeout.as_secs_f64(), what.clone());
            if wait_until(exited, || Ok((!sys::pid_alive(pid)).then_some(()))).is_ok() {
                break;
            }
        }
        if sys::pid_alive(pid) {
            return Err(Error::Timeout {
                waited_for: what,
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
}
