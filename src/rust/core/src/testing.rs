//! Fixtures of the tests: a store in a temporary directory, and forked
//! children for the tests that need real processes (a lock holder that
//! dies, processes counting at once): fork, run a body of libc calls and
//! mapping accesses only, `_exit`; killed and reaped when dropped.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use crate::store::Store;
use std::io;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A store in a fresh directory under the temporary directory (named after
/// the test's `tag`), removed with everything in it on drop.
pub(crate) struct TempStore {
    pub(crate) store: Store,
}

impl TempStore {
    pub(crate) fn new(tag: &str) -> TempStore {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("yaplr-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::new(&dir);
        store.prepare().unwrap();
        TempStore { store }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.store.dir()
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.store.dir());
    }
}

/// A forked child, killed and reaped on drop if still running.
pub(crate) struct Child {
    pid: libc::pid_t,
    reaped: bool,
}

impl Child {
    pub(crate) fn pid(&self) -> u32 {
        u32::try_from(self.pid).unwrap()
    }

    /// Wait (at most a minute) for the child to exit; its exit code (-1
    /// when killed).
    pub(crate) fn wait(mut self) -> i32 {
        self.reap(Duration::from_secs(60))
    }

    pub(crate) fn kill(mut self) {
        // SAFETY: pid is our own unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.reap(Duration::from_secs(60));
    }

    pub(crate) fn reap(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            let mut status = 0;
            // SAFETY: pid is our own child; status is writable.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                return if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    -1
                };
            }
            assert_eq!(r, 0, "waitpid: {}", io::Error::last_os_error());
            if start.elapsed() > limit {
                self.kill_now();
                panic!("child {} still ran after {limit:?}", self.pid);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub(crate) fn kill_now(&mut self) {
        // SAFETY: pid is our own unreaped child; status is writable.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut 0, 0);
        }
        self.reaped = true;
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill_now();
        }
    }
}

/// Fork; the child runs `body` (mapping and pthread calls only) and
/// `_exit`s with its result.
pub(crate) fn fork_child(body: impl FnOnce() -> i32) -> Child {
    // SAFETY: the child only runs `body`, which touches the mapping and
    // makes libc calls, and then `_exit`s without unwinding or running
    // destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let code = body();
        // SAFETY: ends the child at once, as a forked child should.
        unsafe { libc::_exit(code) };
    }
    Child { pid, reaped: false }
}

/// In a child: close every inherited descriptor from 3 up except `keep`
/// (-1 for none), so that it holds no other test's pipe or lock open.
pub(crate) fn close_inherited_fds(keep: RawFd) {
    let ranges = [(3, keep - 1), (3.max(keep + 1), i32::MAX)];
    for (lo, hi) in ranges {
        if lo > hi {
            continue;
        }
        let (first, last) = (lo.unsigned_abs(), hi.unsigned_abs());
        // SAFETY: close_range only closes descriptors; nothing in the child
        // uses the ones closed.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0u32) };
        if r != 0 {
            for fd in lo..hi.min(4096) {
                // SAFETY: as above, for kernels without close_range.
                unsafe { libc::close(fd) };
            }
        }
    }
}
