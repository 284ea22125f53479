//! Starting the helper: one client at a time (the store's spawn lock)
//! starts `yaplrd serve --daemon` and waits until it answers.

use super::connect::Connect;
use super::wait::{wait_until, Until};
use super::{with_seconds, CallOptions, Client, Connection};
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::store::Store;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the wait for a starting helper ends.
enum Starting {
    Connected(Connection),
    /// It died while starting, or it quit.
    Gone,
}

impl Client {
    /// Start (or wait for) the helper; also says whether this client
    /// spawned it.
    pub(super) fn start_helper(
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
            let up = Until::new(deadline, opts, what.clone())
                .on_timeout(format!(
                    "{what} (see its log {})",
                    self.store.log_path().display()
                ))
                .backoff(Duration::from_millis(1), Duration::from_millis(20));
            let started = wait_until(up, || {
                if let Connect::Connected(c) = self.try_connect(opts, deadline)? {
                    return Ok(Some(Starting::Connected(c)));
                }
                let held = FileLock::is_held(&self.store.helper_lock_path())?;
                Ok((!held).then_some(Starting::Gone))
            })?;
            if let Starting::Connected(c) = started {
                drop(spawn_lock);
                return Ok((c, spawned > 0));
            }
            // It died while starting, or it quit: try again.
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
    // The launcher exits once the helper serves (see yaplrd --daemon); the
    // caller reports its own timeout (see with_seconds).
    let detached = Until::uninterruptible(
        deadline,
        0.0,
        format!("the yaplr helper of \"{}\" to start", store.dir().display()),
    )
    .backoff(Duration::from_micros(200), Duration::from_micros(200));
    let r = wait_until(detached, || match child.try_wait() {
        Ok(Some(status)) if status.success() => Ok(Some(())),
        Ok(Some(status)) => Err(Error::Server {
            message: format!(
                "the yaplr helper failed to start ({status}); see its log {}",
                store.log_path().display()
            ),
        }),
        Ok(None) => Ok(None),
        Err(e) => Err(Error::io("waiting for the helper to detach", e)),
    });
    if let Err(Error::Timeout { .. }) = r {
        let _ = child.kill();
        let _ = child.wait();
    }
    r
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
