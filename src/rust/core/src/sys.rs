//! Thin, fenced wrappers over the few libc calls yaplr needs beyond std:
//! process checks, peer credentials, fd passing (SCM_RIGHTS), and socket
//! I/O that never raises SIGPIPE.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// `size_of::<T>()` as a socklen_t, for the small structs handed to the
/// socket calls.
#[allow(
    clippy::cast_possible_truncation,
    reason = "used for socket structs of at most a few hundred bytes"
)]
const fn socklen_of<T>() -> libc::socklen_t {
    std::mem::size_of::<T>() as libc::socklen_t
}

/// This process's id, 0 until first asked and again in a forked child.
static PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

thread_local! {
    /// This thread's kernel id, 0 until first asked and again in a forked
    /// child (whose one thread is the one that forked).
    static TID: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Run in a child of fork(), before fork() returns there: forget the ids.
extern "C" fn forget_ids() {
    PID.store(0, std::sync::atomic::Ordering::Relaxed);
    TID.with(|t| t.set(0));
}

/// Make `forget_ids` run in every forked child, before an id is cached.
fn watch_forks() {
    static WATCH: std::sync::Once = std::sync::Once::new();
    // Registration can fail only for lack of memory; the ids are then
    // never cached.
    WATCH.call_once(|| {
        // SAFETY: registers a child handler that only stores zeros (no
        // allocation, no lock), as a handler run after fork() must.
        if unsafe { libc::pthread_atfork(None, None, Some(forget_ids)) } != 0 {
            PID.store(u32::MAX, std::sync::atomic::Ordering::Relaxed);
        }
    });
}

/// This process's id, cached (a system call costs more than the counter
/// and lock operations that ask for it) and asked again after fork().
pub fn getpid() -> u32 {
    use std::sync::atomic::Ordering::Relaxed;
    match PID.load(Relaxed) {
        0 => {
            watch_forks();
            let pid = std::process::id();
            // Not cached when the fork handler could not be registered.
            let _ = PID.compare_exchange(0, pid, Relaxed, Relaxed);
            pid
        }
        u32::MAX => std::process::id(),
        pid => pid,
    }
}

/// The kernel's id of the calling thread (the pid, in a single-threaded
/// process), cached like `getpid`.
pub fn gettid() -> u32 {
    let cached = TID.with(std::cell::Cell::get);
    if cached != 0 {
        return cached;
    }
    watch_forks();
    // SAFETY: gettid takes no arguments and can not fail.
    let tid = u32::try_from(unsafe { libc::syscall(libc::SYS_gettid) }).unwrap_or(0);
    if PID.load(std::sync::atomic::Ordering::Relaxed) != u32::MAX {
        TID.with(|t| t.set(tid));
    }
    tid
}

pub fn getuid() -> u32 {
    // SAFETY: getuid has no preconditions and can not fail.
    unsafe { libc::getuid() }
}

/// Send `signal` to the process `pid` (0: only check that it exists and
/// may be signalled). A pid that names no single process (0, or one beyond
/// pid_t, which would wrap to a process group) fails with ESRCH.
pub fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let target = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill takes no pointers; `target` is positive, so it names
    // one process, never a group.
    if unsafe { libc::kill(target, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether a process with this pid exists (a zombie counts as dead).
pub fn pid_alive(pid: u32) -> bool {
    let r = kill(pid, 0);
    if matches!(&r, Err(e) if e.raw_os_error() == Some(libc::ESRCH)) {
        return false;
    }
    // A zombie still answers kill(0); its /proc state says Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !stat
                .get(i + 1..)
                .is_some_and(|s| s.trim_start().starts_with('Z')),
            None => true,
        },
        Err(_) => r.is_ok(),
    }
}

/// The uid of the process at the other end of a Unix socket.
pub fn peer_uid(fd: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = socklen_of::<libc::ucred>();
    // SAFETY: cred and len are valid for writes of the sizes given, and
    // getsockopt writes no more than `len` bytes into cred.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Wait until `fd` is readable (or writable), at most until `deadline`,
/// waking every `slice` to let `interrupted` abort the wait.
/// Returns Ok(true) when ready, Ok(false) on timeout.
pub fn wait_fd(
    fd: RawFd,
    write: bool,
    deadline: Instant,
    interrupted: &dyn Fn() -> bool,
) -> io::Result<WaitOutcome> {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(WaitOutcome::TimedOut);
        }
        let left = (deadline - now).min(Duration::from_millis(100));
        let mut pfd = libc::pollfd {
            fd,
            events: if write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        };
        // At most 100 ms, so it fits.
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(100);
        // SAFETY: pfd is one valid, writable pollfd, and we pass a count of 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                if interrupted() {
                    return Ok(WaitOutcome::Interrupted);
                }
                continue;
            }
            return Err(e);
        }
        if r > 0 {
            return Ok(WaitOutcome::Ready);
        }
        if interrupted() {
            return Ok(WaitOutcome::Interrupted);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    Ready,
    TimedOut,
    Interrupted,
}

/// Send bytes (and optionally one fd, attached to the first byte) without
/// ever raising SIGPIPE. Returns how many bytes were written.
/// The most descriptors one message may carry (the kernel's SCM_MAX_FD).
pub const MAX_PASSED_FDS: usize = 253;

pub fn send_some(fd: RawFd, buf: &[u8], pass: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsg carrying MAX_PASSED_FDS ints, correctly aligned.
    let mut cbuf = [0u64; 136];
    if pass.len() > MAX_PASSED_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors",
        ));
    }
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !pass.is_empty() {
        // At most MAX_PASSED_FDS ints (checked above), so it fits.
        let bytes = u32::try_from(std::mem::size_of_val(pass))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors"))?;
        // SAFETY: CMSG_SPACE is a pure computation on its argument.
        let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space;
        // SAFETY: msg_control points at `space` bytes we own (at most
        // sizeof cbuf for MAX_PASSED_FDS), so the header and the ints fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
            for (i, pfd) in pass.iter().enumerate() {
                std::ptr::write_unaligned(data.add(i), *pfd);
            }
        }
    }
    // SAFETY: msg points at `iov` (describing `buf`) and at `cbuf`, all
    // alive and unmoved for the duration of the call, which only reads them.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    // Negative (-1) exactly when the call failed.
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Receive bytes, collecting any fds passed with them into `fds`.
/// Returns 0 at end of stream.
pub fn recv_some(fd: RawFd, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 136];
    // SAFETY: zeroed msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: msg points at `iov` (describing `buf`) and at `cbuf`, all
    // alive, unmoved and writable for the duration of the call, which
    // writes at most their stated lengths. MSG_CMSG_CLOEXEC keeps passed
    // fds from leaking into children.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    // Negative (-1) exactly when the call failed.
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // SAFETY: walking the control buffer the kernel filled, with the CMSG
    // macros, which stay within msg_controllen; each SCM_RIGHTS entry holds
    // whole ints (read unaligned), each a new descriptor that nothing else
    // owns, so wrapping it in an OwnedFd is sound.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let raw = std::ptr::read_unaligned(data.add(i));
                    fds.push(OwnedFd::from_raw_fd(raw));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n)
}

/// Reserve `len` bytes at `offset` in the file, so later writes can not
/// fail for lack of space.
pub fn fallocate(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // What posix_fallocate answers for a negative offset or length.
    let off_t =
        |n: u64| libc::off_t::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let (offset, len) = (off_t(offset)?, off_t(len)?);
    // SAFETY: a plain syscall on a descriptor `file` keeps open; it touches
    // no memory of ours.
    let r = unsafe { libc::posix_fallocate(file.as_raw_fd(), offset, len) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Free bytes available to this user on the filesystem holding `path`.
pub fn free_space(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: statvfs is plain data (integers), for which all zeroes is a
    // valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid NUL-terminated string and st a writable statvfs.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Block until `fd` is readable (or writable), with no time limit.
pub fn wait_fd_forever(fd: RawFd, write: bool) -> io::Result<()> {
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: if write { libc::POLLOUT } else { libc::POLLIN },
            revents: 0,
        };
        // SAFETY: pfd is one valid, writable pollfd, and we pass a count of 1.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Connect to a Unix socket without blocking: a helper whose accept queue
/// is full (stopped, or swamped) gives WouldBlock at once instead of a
/// connect() that waits for ever. The stream is left non-blocking.
pub fn connect_unix(path: &std::path::Path) -> io::Result<std::os::unix::net::UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data (integers and a byte array), for
    // which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    #[allow(clippy::cast_possible_truncation, reason = "AF_UNIX is 1")]
    let family = libc::AF_UNIX as libc::sa_family_t;
    addr.sun_family = family;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = libc::c_char::from_ne_bytes([*s]);
    }
    // SAFETY: socket takes no pointers; the result is checked below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket just created, which nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = socklen_of::<libc::sockaddr_un>();
    // SAFETY: addr is a valid sockaddr_un of `len` bytes, alive for the
    // call, which only reads it.
    let r = unsafe {
        libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        // A Unix socket connects at once or not at all; EAGAIN means the
        // listener's queue is full.
        return Err(e);
    }
    Ok(std::os::unix::net::UnixStream::from(owned))
}

/// Write one line to the helper's log (its standard error), with the
/// time and the pid.
pub fn log(msg: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    use std::io::Write as _;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "[{t:.3}] yaplrd[{}]: {msg}", getpid());
}

/// When process `pid` started (in clock ticks since boot, field 22 of
/// /proc/pid/stat), so that a pid reused by another process is told
/// apart; None when it does not run (a zombie included).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = rest.split_whitespace();
    // Field 3 (the state) is the first after the name.
    if fields.next()? == "Z" {
        return None;
    }
    // Field 22 is the 20th after the state.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_knows_its_own_ids() {
        let (pid, tid) = (getpid(), gettid());
        assert_eq!(pid, std::process::id());
        // SAFETY: gettid takes no arguments.
        assert_eq!(i64::from(tid), unsafe { libc::syscall(libc::SYS_gettid) });
        // The child exits 0 when its cached ids are its own, not ours.
        let child = crate::testing::fork_child(move || {
            // SAFETY: getpid can not fail.
            let own = u32::try_from(unsafe { libc::getpid() }).unwrap_or(0);
            i32::from(!(getpid() == own && gettid() == own && own != pid))
        });
        assert_eq!(child.wait(), 0);
        assert_eq!(getpid(), pid);
        // Another thread has its own id.
        let other = std::thread::spawn(gettid).join().unwrap_or(tid);
        assert_ne!(other, tid);
    }
}
