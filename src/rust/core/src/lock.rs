//! Inter-process locks: `FileLock`, an exclusive `flock` that the kernel drops
//! when its holder dies, with timed, interruptible locking.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often `try_lock` re-opens a lock file that was unlinked or replaced
/// between its `open` and its `flock` before it reports the lock as taken.
const REOPEN_ATTEMPTS: usize = 10;
/// `is_held` probes with a shared lock for an instant; a `try_lock` that
/// fails retries this many times, 1 ms apart, so a probe is not mistaken for
/// a holder (which would make e.g. a starting helper think another one runs).
const PROBE_GRACE_TRIES: usize = 2;
/// First and longest sleep between two attempts of `FileLock::lock`.
const BACKOFF_START: Duration = Duration::from_millis(1);
const BACKOFF_MAX: Duration = Duration::from_millis(20);

/// Open (or create, mode 0600) a lock file of the store: never through a
/// symbolic link and never a file of another user, whose process could
/// otherwise hold our lock for ever.
fn open_rw_0600(path: &Path) -> Result<File> {
    // O_CLOEXEC: a helper we exec must not inherit (and so keep alive) our locks.
    crate::store::open_entry(path, crate::store::How::ReadWrite)
}

/// `flock(op)` on `file`, retried on EINTR. Ok(false) when `op` has
/// LOCK_NB and another open file description holds a conflicting lock.
fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock only reads the descriptor number, which `file` keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// Whether `path` still names the inode `file` has open (false when the
/// path is gone).
fn names_same_file(file: &File, path: &Path) -> Result<bool> {
    let held = file
        .metadata()
        .map_err(|e| Error::io(format!("checking lock file {}", path.display()), e))?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(false),
        Err(e) => Err(Error::io(
            format!("checking lock file {}", path.display()),
            e,
        )),
    }
}

/// An exclusive `flock` on a lock file, released when dropped (the
/// descriptor is closed) or when the holding process dies.
///
/// The lock belongs to the open file description: a child forked (without
/// exec) while the lock is held shares it and keeps it held until it, too,
/// closes the descriptor or exits.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Take the lock without waiting; Ok(None) when another holder (another
    /// process, or another `FileLock` in this one) has it. Creates the file
    /// (mode 0600) when missing.
    pub fn try_lock(path: &Path) -> Result<Option<FileLock>> {
        Self::try_lock_with(path, PROBE_GRACE_TRIES)
    }

    fn try_lock_with(path: &Path, grace_tries: usize) -> Result<Option<FileLock>> {
        for _ in 0..REOPEN_ATTEMPTS {
            let file = open_rw_0600(path)?;
            let lock_err = |e| Error::io(format!("locking {}", path.display()), e);
            let mut got = flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(lock_err)?;
            for _ in 0..grace_tries {
                if got {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
                got = flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(lock_err)?;
            }
            if !got {
                return Ok(None);
            }
            // A holder may unlink (or replace) the file and then release it:
            // if that happened between our open and our flock, we now hold a
            // lock on an orphan inode that nobody else will ever look at.
            if names_same_file(&file, path)? {
                return Ok(Some(FileLock { file }));
            }
        }
        // The file keeps being replaced under us: that is contention too.
        Ok(None)
    }

    /// Wait for the lock: retry `try_lock` (sleeping 1 ms, backing off to
    /// 20 ms) until it is acquired, `timeout` runs out (`Error::Timeout`) or
    /// `interrupted()` says true (`Error::Interrupted`). A zero timeout
    /// tries exactly once.
    pub fn lock(
        path: &Path,
        timeout: Duration,
        what: &str,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<FileLock> {
        let start = Instant::now();
        let mut pause = BACKOFF_START;
        loop {
            // The loop itself retries, so the probe grace is only needed
            // when there will be no second attempt.
            let grace = if timeout.is_zero() {
                PROBE_GRACE_TRIES
            } else {
                0
            };
            if let Some(lock) = Self::try_lock_with(path, grace)? {
                return Ok(lock);
            }
            let waited = start.elapsed();
            if waited >= timeout {
                return Err(Error::Timeout {
                    waited_for: what.to_string(),
                    seconds: timeout.as_secs_f64(),
                });
            }
            if interrupted() {
                return Err(Error::Interrupted {
                    waited_for: what.to_string(),
                });
            }
            std::thread::sleep(pause.min(timeout.saturating_sub(waited)));
            pause = (pause * 2).min(BACKOFF_MAX);
        }
    }

    /// Whether some holder has the lock now; a missing file means no. Never
    /// creates the file. It probes with a shared lock held for an instant
    /// (flock locks can not be queried otherwise), which `try_lock`
    /// tolerates.
    pub fn is_held(path: &Path) -> Result<bool> {
        let context = || format!("checking lock file {}", path.display());
        let file = match crate::store::open_entry(path, crate::store::How::Read) {
            Ok(file) => file,
            Err(Error::Io { source, .. })
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ENOTDIR)
                ) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        let free =
            flock(&file, libc::LOCK_SH | libc::LOCK_NB).map_err(|e| Error::io(context(), e))?;
        // Dropping `file` closes it, which releases the probe's lock at once.
        Ok(!free)
    }

    /// The locked file (the helper writes its pid into its lock file).
    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(test)]
mod tests {
    //! These tests fork real processes. A child runs only libc calls (the
    //! parent is multi-threaded, so e.g. malloc may be locked) and leaves
    //! with `_exit`.

    use super::*;
    use std::cell::Cell;
    use std::ffi::CString;
    use std::os::fd::{FromRawFd, OwnedFd, RawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serialises these tests: a child forked by one test would inherit
    /// (and so keep alive) a lock another test holds and expects to release.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A unique temporary path, removed (if it exists) on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(tag: &str) -> TempPath {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("yaplr-lock-test-{}-{n}-{tag}", std::process::id());
            TempPath(std::env::temp_dir().join(name))
        }

        fn c(&self) -> CString {
            CString::new(self.0.as_os_str().as_bytes()).unwrap()
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    use crate::testing::{close_inherited_fds, fork_child, Child};

    /// In a child: open `path` and flock it exclusively (blocking or not).
    /// Returns the descriptor, or -1 when the lock is taken, -2 on error.
    fn child_flock(path: &CString, nonblocking: bool) -> RawFd {
        // SAFETY: path is a valid C string made before the fork.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o600) };
        if fd < 0 {
            return -2;
        }
        let op = if nonblocking {
            libc::LOCK_EX | libc::LOCK_NB
        } else {
            libc::LOCK_EX
        };
        // SAFETY: fd is open.
        if unsafe { libc::flock(fd, op) } != 0 {
            return -1;
        }
        fd
    }

    /// In a child: tell the parent we are ready, then linger (bounded, in
    /// case the parent dies without killing us).
    fn child_signal_and_sleep(w: RawFd) -> i32 {
        // SAFETY: w is the open write end of the pipe; the buffer is 1 byte.
        if unsafe { libc::write(w, b"k".as_ptr().cast(), 1) } != 1 {
            return 3;
        }
        // SAFETY: sleep has no preconditions.
        unsafe { libc::sleep(30) };
        0
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both descriptors were just created and are owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Parent side: wait until the child wrote its ready byte.
    fn wait_ready(r: OwnedFd) {
        let mut f = File::from(r);
        let mut b = [0u8; 1];
        let n = io::Read::read(&mut f, &mut b).unwrap();
        assert_eq!(n, 1, "child failed before signalling");
    }

    /// A child that holds an exclusive flock on `path` until killed.
    fn spawn_flock_holder(path: &TempPath) -> Child {
        let c = path.c();
        let (r, w) = pipe();
        let wfd = w.as_raw_fd();
        let child = fork_child(|| {
            close_inherited_fds(wfd);
            if child_flock(&c, false) < 0 {
                return 2;
            }
            child_signal_and_sleep(wfd)
        });
        drop(w);
        wait_ready(r);
        child
    }

    fn never() -> bool {
        false
    }

    #[test]
    fn file_lock_excludes_other_process() {
        let _s = serial();
        let p = TempPath::new("excl");
        let held = FileLock::try_lock(&p.0).unwrap().expect("lock is free");
        let mode = std::fs::metadata(&p.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(FileLock::is_held(&p.0).unwrap());
        // Another process can not take it...
        let c = p.c();
        let child = fork_child(|| {
            close_inherited_fds(-1);
            match child_flock(&c, true) {
                -1 => 0,
                fd if fd >= 0 => 1,
                _ => 2,
            }
        });
        assert_eq!(child.wait(), 0, "child got a lock the parent holds");
        // ...nor another FileLock in this process.
        assert!(FileLock::try_lock(&p.0).unwrap().is_none());
        drop(held);
        assert!(!FileLock::is_held(&p.0).unwrap());
        let child = fork_child(|| {
            close_inherited_fds(-1);
            match child_flock(&c, true) {
                -1 => 0,
                fd if fd >= 0 => 1,
                _ => 2,
            }
        });
        assert_eq!(child.wait(), 1, "child could not take a released lock");
    }

    #[test]
    fn file_lock_freed_when_holder_killed() {
        let _s = serial();
        let p = TempPath::new("killed");
        let child = spawn_flock_holder(&p);
        assert!(FileLock::try_lock(&p.0).unwrap().is_none());
        assert!(FileLock::is_held(&p.0).unwrap());
        child.kill();
        assert!(!FileLock::is_held(&p.0).unwrap());
        let lock = FileLock::try_lock(&p.0).unwrap();
        assert!(lock.is_some(), "lock not freed by the holder's death");
    }

    #[test]
    fn file_lock_times_out() {
        let _s = serial();
        let p = TempPath::new("timeout");
        let _child = spawn_flock_holder(&p);
        let start = Instant::now();
        let err =
            FileLock::lock(&p.0, Duration::from_millis(200), "the test lock", &never).unwrap_err();
        let took = start.elapsed();
        match err {
            Error::Timeout {
                waited_for,
                seconds,
            } => {
                assert_eq!(waited_for, "the test lock");
                assert!((seconds - 0.2).abs() < 1e-9, "seconds = {seconds}");
            }
            e => panic!("expected Timeout, got {e:?}"),
        }
        assert!(took >= Duration::from_millis(150), "took {took:?}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
        // A zero timeout tries once and gives up.
        let start = Instant::now();
        let err = FileLock::lock(&p.0, Duration::ZERO, "the test lock", &never).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn file_lock_interrupted() {
        let _s = serial();
        let p = TempPath::new("intr");
        let _child = spawn_flock_holder(&p);
        let err = FileLock::lock(&p.0, Duration::from_secs(30), "x", &|| true).unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err:?}");
        // The callback is polled repeatedly while waiting.
        let calls = Cell::new(0);
        let start = Instant::now();
        let interrupted = || {
            calls.set(calls.get() + 1);
            calls.get() >= 3
        };
        let err = FileLock::lock(&p.0, Duration::from_secs(30), "x", &interrupted).unwrap_err();
        match err {
            Error::Interrupted { waited_for } => assert_eq!(waited_for, "x"),
            e => panic!("expected Interrupted, got {e:?}"),
        }
        assert_eq!(calls.get(), 3);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn is_held_does_not_create() {
        let _s = serial();
        let p = TempPath::new("held");
        assert!(!FileLock::is_held(&p.0).unwrap());
        assert!(!p.0.exists(), "is_held created the lock file");
        let lock = FileLock::lock(&p.0, Duration::from_secs(1), "x", &never).unwrap();
        assert!(FileLock::is_held(&p.0).unwrap());
        drop(lock);
        assert!(!FileLock::is_held(&p.0).unwrap());
        // Probing does not get in the way of taking the lock.
        assert!(FileLock::try_lock(&p.0).unwrap().is_some());
    }

    #[test]
    fn replaced_lock_file_is_detected() {
        let _s = serial();
        let p = TempPath::new("replaced");
        let old = FileLock::try_lock(&p.0).unwrap().unwrap();
        assert!(names_same_file(old.file(), &p.0).unwrap());
        std::fs::remove_file(&p.0).unwrap();
        assert!(!names_same_file(old.file(), &p.0).unwrap());
        std::fs::write(&p.0, b"").unwrap();
        assert!(!names_same_file(old.file(), &p.0).unwrap());
        // The lock on the orphan does not block the file now at the path.
        let new = FileLock::try_lock(&p.0).unwrap().expect("new file is free");
        assert!(names_same_file(new.file(), &p.0).unwrap());
    }

    #[test]
    fn unlink_while_waiting() {
        let _s = serial();
        let p = TempPath::new("unlink");
        let child = spawn_flock_holder(&p);
        let orphan_ino = std::fs::metadata(&p.0).unwrap().ino();
        let lock = std::thread::scope(|s| {
            let waiter = s.spawn(|| FileLock::lock(&p.0, Duration::from_secs(10), "x", &never));
            std::thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "waiter got a held lock");
            // The holder's file goes away while it still holds it.
            std::fs::remove_file(&p.0).unwrap();
            waiter.join().unwrap()
        })
        .unwrap();
        let at_path = std::fs::metadata(&p.0).unwrap();
        let locked = lock.file().metadata().unwrap();
        assert_eq!((locked.dev(), locked.ino()), (at_path.dev(), at_path.ino()));
        assert_ne!(locked.ino(), orphan_ino);
        assert!(FileLock::is_held(&p.0).unwrap());
        child.kill();
    }
}
