//! Inter-process locks: `FileLock`, an exclusive `flock` that the kernel drops
//! when its holder dies, and `RobustMutex`, a process-shared robust pthread
//! mutex in a shared file mapping, with timed, interruptible locking.

use std::cell::UnsafeCell;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
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
/// Longest single wait in `pthread_mutex_timedlock`, so that `interrupted`
/// is polled regularly.
const MUTEX_SLICE: Duration = Duration::from_millis(100);
/// Length of the shared mapping of a `SharedMutexFile`: one page.
const MAP_LEN: usize = 4096;
/// Marks a mapping whose mutex has been initialised ("YLM" + layout version).
const MUTEX_MAGIC: u32 = 0x594c_4d01;

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

/// A process-shared, robust pthread mutex. It only ever lives inside the
/// mapping of a `SharedMutexFile`, which hands out references to it.
///
/// Robust: when a holder dies, the next locker gets the mutex with
/// `previous_owner_died() == true` instead of waiting forever.
#[repr(C, align(64))]
pub struct RobustMutex {
    raw: UnsafeCell<libc::pthread_mutex_t>,
    /// `MUTEX_MAGIC` once `raw` is initialised; written under the file's flock.
    ready: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RobustMutex>() <= MAP_LEN);

// SAFETY: all access to `raw` goes through pthread calls, which are made for
// concurrent use by many threads (and, being PROCESS_SHARED, processes).
unsafe impl Sync for RobustMutex {}

/// Set up `raw` as an error-checking, process-shared, robust mutex.
///
/// # Safety
/// `raw` must be valid for writes and not in use by any thread or process.
unsafe fn init_robust_mutex(raw: *mut libc::pthread_mutex_t) -> io::Result<()> {
    let check = |r: libc::c_int| match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    };
    let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: attr is writable storage for an attribute object.
    check(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
    let attr = attr.as_mut_ptr();
    // SAFETY: attr was initialised above and is destroyed only afterwards;
    // `raw` is valid and unused per this function's contract.
    let result = unsafe {
        check(libc::pthread_mutexattr_setpshared(
            attr,
            libc::PTHREAD_PROCESS_SHARED,
        ))
        .and_then(|()| {
            check(libc::pthread_mutexattr_setrobust(
                attr,
                libc::PTHREAD_MUTEX_ROBUST,
            ))
        })
        // Error-checking: relocking from the owning thread fails at once
        // with EDEADLK instead of waiting out the timeout.
        .and_then(|()| {
            check(libc::pthread_mutexattr_settype(
                attr,
                libc::PTHREAD_MUTEX_ERRORCHECK,
            ))
        })
        .and_then(|()| check(libc::pthread_mutex_init(raw, attr)))
    };
    // SAFETY: attr is initialised; the mutex does not keep a reference to it.
    unsafe { libc::pthread_mutexattr_destroy(attr) };
    result
}

fn realtime_now() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_REALTIME always
    // exists, so the call can not fail.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    now
}

/// The absolute time `d` after `now`, normalised (0 <= tv_nsec < 1e9):
/// `pthread_mutex_timedlock` rejects anything else with EINVAL, but only when
/// it actually has to wait, which hides an uncarried sum until contention.
fn deadline_after(now: libc::timespec, d: Duration) -> libc::timespec {
    const NANOS: i64 = 1_000_000_000;
    let nsec = now.tv_nsec + i64::from(d.subsec_nanos());
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    libc::timespec {
        tv_sec: now
            .tv_sec
            .saturating_add(secs)
            .saturating_add(nsec.div_euclid(NANOS)),
        tv_nsec: nsec.rem_euclid(NANOS),
    }
}

impl RobustMutex {
    /// Lock, waiting at most `timeout` (`Error::Timeout`) and polling
    /// `interrupted()` at least every 100 ms (`Error::Interrupted`). A zero
    /// timeout tries once. When the previous holder died while holding it,
    /// the mutex is made consistent again and the guard says
    /// `previous_owner_died()`: what it protects may be half-updated.
    pub fn lock(
        &self,
        timeout: Duration,
        what: &str,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<MutexGuard<'_>> {
        // The overall deadline is monotonic; the realtime clock (the one
        // timedlock takes) only bounds each short slice. A forward jump of
        // that clock just ends a slice early; a backward jump during a slice
        // lengthens that one slice by the jump.
        let start = Instant::now();
        loop {
            let slice = timeout.saturating_sub(start.elapsed()).min(MUTEX_SLICE);
            let deadline = deadline_after(realtime_now(), slice);
            // SAFETY: `raw` was initialised by `SharedMutexFile::open_or_create`
            // and stays mapped while `&self` lives; `deadline` is a valid,
            // normalised timespec.
            let r = unsafe { libc::pthread_mutex_timedlock(self.raw.get(), &deadline) };
            match r {
                0 => return Ok(MutexGuard::new(self, false)),
                libc::EOWNERDEAD => {
                    // We hold the mutex, but its last holder died inside the
                    // critical section. Without `consistent`, our unlock would
                    // make it unusable (ENOTRECOVERABLE) for everyone.
                    let guard = MutexGuard::new(self, true);
                    // SAFETY: this thread holds the (robust, initialised) mutex.
                    let c = unsafe { libc::pthread_mutex_consistent(self.raw.get()) };
                    if c != 0 {
                        return Err(Error::io(
                            format!("recovering the lock for {what}"),
                            io::Error::from_raw_os_error(c),
                        ));
                    }
                    return Ok(guard);
                }
                libc::ENOTRECOVERABLE => {
                    return Err(Error::Corrupt {
                        message: format!(
                            "the shared lock for {what} is unrecoverable: a holder died \
                             and the lock was released without being repaired"
                        ),
                    });
                }
                libc::ETIMEDOUT => {
                    if start.elapsed() >= timeout {
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
                }
                e => {
                    return Err(Error::io(
                        format!("locking the shared lock for {what}"),
                        io::Error::from_raw_os_error(e),
                    ));
                }
            }
        }
    }
}

/// Holds a `RobustMutex`; unlocks it when dropped. Not `Send`: a pthread
/// mutex must be unlocked by the thread that locked it.
pub struct MutexGuard<'a> {
    mutex: &'a RobustMutex,
    owner_died: bool,
    _not_send: PhantomData<*const ()>,
}

impl<'a> MutexGuard<'a> {
    fn new(mutex: &'a RobustMutex, owner_died: bool) -> Self {
        MutexGuard {
            mutex,
            owner_died,
            _not_send: PhantomData,
        }
    }

    /// True when the previous holder died holding the mutex, so the state it
    /// protects may need repair.
    pub fn previous_owner_died(&self) -> bool {
        self.owner_died
    }
}

impl std::fmt::Debug for MutexGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexGuard")
            .field("previous_owner_died", &self.owner_died)
            .finish_non_exhaustive()
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex (the guard can not move to
        // another thread) and the mapping outlives the borrow.
        let r = unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
        debug_assert_eq!(r, 0, "unlocking a RobustMutex failed");
    }
}

/// A file (mode 0600) mapped shared, holding one `RobustMutex` that every
/// process opening the same file shares. Unmapped on drop.
pub struct SharedMutexFile {
    map: NonNull<RobustMutex>,
}

// SAFETY: the mapping is owned by this value and only reached through
// `&RobustMutex`, which is `Sync`; munmap in Drop needs no particular thread.
unsafe impl Send for SharedMutexFile {}
// SAFETY: see above; `&SharedMutexFile` only gives out `&RobustMutex`.
unsafe impl Sync for SharedMutexFile {}

impl SharedMutexFile {
    /// Open (creating it when missing) and map the mutex file; the first
    /// process to do so initialises the mutex, exactly once.
    pub fn open_or_create(path: &Path) -> Result<SharedMutexFile> {
        let context = || format!("opening shared lock file {}", path.display());
        let file = open_rw_0600(path)?;
        // Serialise initialisation across processes. Blocking is fine: a
        // holder keeps this flock only for the few calls below, and the
        // kernel drops it if that holder dies.
        flock(&file, libc::LOCK_EX).map_err(|e| Error::io(context(), e))?;
        let mapped = Self::map_and_init(&file, path);
        // Unlock explicitly: the mapping holds a reference to the open file
        // description, so closing `file` alone would keep the flock (and
        // every later opener blocked) for as long as the mapping lives.
        flock(&file, libc::LOCK_UN).map_err(|e| Error::io(context(), e))?;
        mapped
    }

    /// The part of `open_or_create` done under the file's flock.
    fn map_and_init(file: &File, path: &Path) -> Result<SharedMutexFile> {
        let context = || format!("mapping shared lock file {}", path.display());
        let len = file.metadata().map_err(|e| Error::io(context(), e))?.len();
        if len < MAP_LEN as u64 {
            file.set_len(MAP_LEN as u64)
                .map_err(|e| Error::io(context(), e))?;
        }
        // SAFETY: maps MAP_LEN bytes of a file opened read-write that is now
        // at least that long, at an address the kernel picks; checked below.
        // The mapping stays valid after `file` is closed.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                MAP_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::io(context(), io::Error::last_os_error()));
        }
        let map = NonNull::new(ptr.cast::<RobustMutex>())
            .ok_or_else(|| Error::io(context(), io::Error::other("mmap returned null")))?;
        // Owning the mapping from here on unmaps it on every error path.
        let shared = SharedMutexFile { map };
        let mutex = shared.mutex();
        if mutex.ready.load(Ordering::Acquire) != MUTEX_MAGIC {
            // SAFETY: nobody uses the mutex before `ready` is set, and
            // whoever could set it is excluded by our flock.
            unsafe { init_robust_mutex(mutex.raw.get()) }
                .map_err(|e| Error::io(format!("initialising {}", path.display()), e))?;
            mutex.ready.store(MUTEX_MAGIC, Ordering::Release);
        }
        Ok(shared)
    }

    /// The shared mutex.
    pub fn mutex(&self) -> &RobustMutex {
        // SAFETY: the mapping is page-aligned (so 64-aligned), MAP_LEN bytes
        // long, stays mapped until `self` drops, and any bit pattern is a
        // valid RobustMutex (plain integers and an atomic); shared mutation
        // happens only through UnsafeCell / atomics.
        unsafe { self.map.as_ref() }
    }

    /// Lock the shared mutex; see `RobustMutex::lock`.
    pub fn lock(
        &self,
        timeout: Duration,
        what: &str,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<MutexGuard<'_>> {
        self.mutex().lock(timeout, what, interrupted)
    }
}

impl std::fmt::Debug for SharedMutexFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMutexFile").finish_non_exhaustive()
    }
}

impl Drop for SharedMutexFile {
    fn drop(&mut self) {
        // SAFETY: `map` came from a successful mmap of MAP_LEN bytes, and no
        // reference into it outlives `self` (guards borrow `self`).
        unsafe { libc::munmap(self.map.as_ptr().cast(), MAP_LEN) };
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
    use std::sync::atomic::AtomicUsize;

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

    /// A forked child, killed and reaped on drop if still running.
    struct Child {
        pid: libc::pid_t,
        reaped: bool,
    }

    impl Child {
        /// Wait for the child to exit; its exit code (-1 when killed).
        fn wait(mut self) -> i32 {
            self.reap()
        }

        fn kill(mut self) {
            // SAFETY: pid is our own unreaped child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            self.reap();
        }

        fn reap(&mut self) -> i32 {
            let mut status = 0;
            // SAFETY: pid is our own child; status is writable.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            assert_eq!(r, self.pid, "waitpid");
            self.reaped = true;
            if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                -1
            }
        }
    }

    impl Drop for Child {
        fn drop(&mut self) {
            if !self.reaped {
                // SAFETY: pid is our own unreaped child.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                self.reap();
            }
        }
    }

    /// Fork; the child runs `body` (libc calls only) and `_exit`s with its
    /// result.
    fn fork_child(body: impl FnOnce() -> i32) -> Child {
        // SAFETY: the child only runs `body`, which makes libc calls only,
        // and then `_exit`s without unwinding or running destructors.
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
    /// (-1 for none), so the child can not keep another test's locks alive.
    fn close_inherited_fds(keep: RawFd) {
        let ranges = [(3, keep - 1), (3.max(keep + 1), i32::MAX)];
        for (lo, hi) in ranges {
            if lo > hi {
                continue;
            }
            // SAFETY: close_range only closes descriptors; nothing in the
            // child uses the ones closed.
            let r = unsafe { libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0u32) };
            if r != 0 {
                for fd in lo..hi.min(4096) {
                    // SAFETY: as above, for kernels without close_range.
                    unsafe { libc::close(fd) };
                }
            }
        }
    }

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

    #[test]
    fn deadline_after_normalises() {
        let ts = |tv_sec, tv_nsec| libc::timespec { tv_sec, tv_nsec };
        let pair = |t: libc::timespec| (t.tv_sec, t.tv_nsec);
        // Plain addition.
        let d = deadline_after(ts(100, 1_000), Duration::from_millis(100));
        assert_eq!(pair(d), (100, 100_001_000));
        // The nanoseconds carry into the seconds.
        let d = deadline_after(ts(100, 600_000_000), Duration::from_millis(1_950));
        assert_eq!(pair(d), (102, 550_000_000));
        let d = deadline_after(ts(7, 999_999_999), Duration::from_nanos(1));
        assert_eq!(pair(d), (8, 0));
        let d = deadline_after(ts(7, 999_999_999), Duration::from_nanos(999_999_999));
        assert_eq!(pair(d), (8, 999_999_998));
        // Zero and absurd durations.
        assert_eq!(pair(deadline_after(ts(5, 5), Duration::ZERO)), (5, 5));
        let d = deadline_after(ts(5, 5), Duration::MAX);
        assert_eq!(d.tv_sec, i64::MAX);
        assert!(d.tv_nsec < 1_000_000_000);
    }

    /// A child that locks the mutex at `raw` (in the inherited mapping),
    /// signals, then either lingers holding it or exits without unlocking.
    fn spawn_mutex_holder(raw: *mut libc::pthread_mutex_t, linger: bool) -> Child {
        let (r, w) = pipe();
        let wfd = w.as_raw_fd();
        let child = fork_child(|| {
            close_inherited_fds(wfd);
            // SAFETY: raw points into the shared mapping inherited from the
            // parent, where the mutex is initialised.
            if unsafe { libc::pthread_mutex_lock(raw) } != 0 {
                return 2;
            }
            if linger {
                child_signal_and_sleep(wfd)
            } else {
                // SAFETY: w is open; the buffer is 1 byte. We then exit
                // (via `_exit` in fork_child) still holding the mutex.
                unsafe { libc::write(wfd, b"k".as_ptr().cast(), 1) };
                0
            }
        });
        drop(w);
        wait_ready(r);
        child
    }

    #[test]
    fn mutex_uncontended_and_shared_between_mappings() {
        let _s = serial();
        let p = TempPath::new("mutex");
        let m = SharedMutexFile::open_or_create(&p.0).unwrap();
        let mode = std::fs::metadata(&p.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // The initialisation flock is released although the mapping lives on
        // (otherwise the next open_or_create would block forever).
        assert!(!FileLock::is_held(&p.0).unwrap());
        for _ in 0..3 {
            let g = m.lock(Duration::from_secs(1), "m", &never).unwrap();
            assert!(!g.previous_owner_died());
        }
        // A second open maps the same, already initialised mutex.
        let m2 = SharedMutexFile::open_or_create(&p.0).unwrap();
        let g = m.lock(Duration::from_secs(1), "m", &never).unwrap();
        std::thread::scope(|s| {
            let r = s.spawn(|| m2.lock(Duration::from_millis(50), "m", &never).map(|_| ()));
            let err = r.join().unwrap().unwrap_err();
            assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
        });
        // Relocking from the owning thread fails at once.
        let start = Instant::now();
        assert!(m2.lock(Duration::from_secs(5), "m", &never).is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(g);
        let g2 = m2.lock(Duration::from_secs(1), "m", &never).unwrap();
        assert!(!g2.previous_owner_died());
    }

    #[test]
    fn mutex_recovers_from_killed_holder() {
        let _s = serial();
        let p = TempPath::new("mutex-kill");
        let m = SharedMutexFile::open_or_create(&p.0).unwrap();
        let child = spawn_mutex_holder(m.mutex().raw.get(), true);
        child.kill();
        let g = m.lock(Duration::from_secs(5), "m", &never).unwrap();
        assert!(g.previous_owner_died());
        drop(g);
        let g = m.lock(Duration::from_secs(5), "m", &never).unwrap();
        assert!(!g.previous_owner_died());
    }

    #[test]
    fn mutex_recovers_from_holder_exiting_locked() {
        let _s = serial();
        let p = TempPath::new("mutex-exit");
        let m = SharedMutexFile::open_or_create(&p.0).unwrap();
        let child = spawn_mutex_holder(m.mutex().raw.get(), false);
        assert_eq!(child.wait(), 0);
        // A fresh mapping of the file sees the same dead owner.
        let m2 = SharedMutexFile::open_or_create(&p.0).unwrap();
        let g = m2.lock(Duration::from_secs(5), "m", &never).unwrap();
        assert!(g.previous_owner_died());
        drop(g);
        let g = m.lock(Duration::from_secs(5), "m", &never).unwrap();
        assert!(!g.previous_owner_died());
    }

    #[test]
    fn mutex_times_out_on_live_holder() {
        let _s = serial();
        let p = TempPath::new("mutex-live");
        let m = SharedMutexFile::open_or_create(&p.0).unwrap();
        let raw = m.mutex().raw.get();
        let child = spawn_mutex_holder(raw, true);

        let expect_timeout = |timeout: Duration| {
            let start = Instant::now();
            let err = m.lock(timeout, "the shared lock", &never).unwrap_err();
            let took = start.elapsed();
            match err {
                Error::Timeout {
                    waited_for,
                    seconds,
                } => {
                    assert_eq!(waited_for, "the shared lock");
                    assert!((seconds - timeout.as_secs_f64()).abs() < 1e-9);
                }
                e => panic!("expected Timeout after {timeout:?}, got {e:?}"),
            }
            assert!(took + Duration::from_millis(50) >= timeout, "took {took:?}");
            assert!(took < timeout + Duration::from_secs(10), "took {took:?}");
        };
        expect_timeout(Duration::from_millis(300));
        // Sub-second parts that need a carry must not turn into EINVAL.
        expect_timeout(Duration::from_millis(1_950));
        expect_timeout(Duration::ZERO);

        // A single timedlock whose deadline always needs a carry (now's
        // nanoseconds + the duration's exceed 1e9) must time out, not fail.
        let now = realtime_now();
        let d = Duration::from_nanos((1_000_000_000 - now.tv_nsec) as u64 + 50_000_000);
        let deadline = deadline_after(now, d);
        // SAFETY: raw is the initialised mutex in our live mapping.
        let r = unsafe { libc::pthread_mutex_timedlock(raw, &deadline) };
        assert_eq!(r, libc::ETIMEDOUT);

        let calls = Cell::new(0);
        let start = Instant::now();
        let interrupted = || {
            calls.set(calls.get() + 1);
            calls.get() >= 2
        };
        let err = m
            .lock(Duration::from_secs(30), "m", &interrupted)
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(5));

        child.kill();
        let g = m.lock(Duration::from_secs(5), "m", &never).unwrap();
        assert!(g.previous_owner_died());
    }
}
