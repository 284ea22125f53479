//! The robust, process-shared, error-checking pthread mutexes of the region:
//! initialization, a timed lock in short slices, unlocking, and a guard.
//! Nothing here allocates, so a forked child may use it.

use std::cell::UnsafeCell;
use std::io;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// Longest single `pthread_mutex_timedlock`: `interrupted` is polled at
/// least this often.
pub const SLICE: Duration = Duration::from_millis(50);

/// The one conversion of a pthread return code: pthread functions return
/// the error number instead of setting errno.
pub fn check(r: libc::c_int) -> io::Result<()> {
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// A `pthread_mutex_t` inside the shared mapping. Which bytes it holds is
/// up to the C library; before `init` they may be anything, so every
/// operation but `init` is unsafe and needs an initialized mutex.
#[repr(transparent)]
pub struct PMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: the mutex is only ever reached through pthread calls, which are
// made for concurrent use by many threads (and, being PROCESS_SHARED, by
// many processes).
unsafe impl Sync for PMutex {}

/// How a timed wait for a mutex ended.
#[derive(Debug)]
pub enum Waited {
    /// This thread holds the mutex now. `owner_died`: its previous holder
    /// died holding it (the mutex was made consistent again).
    Locked { owner_died: bool },
    TimedOut,
    Interrupted,
    /// pthread's error: EDEADLK when this thread already holds the mutex,
    /// ENOTRECOVERABLE, EINVAL for a damaged mutex.
    Failed(io::Error),
}

impl PMutex {
    fn raw(&self) -> *mut libc::pthread_mutex_t {
        self.0.get()
    }

    /// Make this a robust, process-shared, error-checking mutex, unlocked.
    ///
    /// # Safety
    /// No thread or process may use the mutex during the call (nor be
    /// blocked in it), and the memory must stay mapped for the call.
    pub unsafe fn init(&self) -> io::Result<()> {
        let mut attr = MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: attr is writable storage for an attribute object.
        check(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        let attr = attr.as_mut_ptr();
        // SAFETY: attr was initialized above and is destroyed only after
        // these calls; the mutex is unused, per this function's contract.
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
            // Error-checking: relocking from the holding thread fails at
            // once with EDEADLK, unlocking from another thread (or a forked
            // child) fails with EPERM.
            .and_then(|()| {
                check(libc::pthread_mutexattr_settype(
                    attr,
                    libc::PTHREAD_MUTEX_ERRORCHECK,
                ))
            })
            .and_then(|()| check(libc::pthread_mutex_init(self.raw(), attr)))
        };
        // SAFETY: attr is initialized; the mutex keeps no reference to it.
        unsafe { libc::pthread_mutexattr_destroy(attr) };
        result
    }

    /// Lock, waiting at most `timeout` (measured on the monotonic clock) in
    /// slices of at most `SLICE`, and asking `interrupted()` between two
    /// slices. A zero timeout tries once. A mutex whose holder died is made
    /// consistent and reported with `owner_died`.
    ///
    /// # Safety
    /// The mutex must have been initialized by `init` and stay mapped for
    /// the call.
    pub unsafe fn lock_within(&self, timeout: Duration, interrupted: &dyn Fn() -> bool) -> Waited {
        // The common case, a free mutex, needs no clock.
        // SAFETY: the mutex is initialized and mapped (this function's
        // contract).
        match unsafe { libc::pthread_mutex_trylock(self.raw()) } {
            libc::EBUSY => {}
            // SAFETY: as above.
            r => return unsafe { self.locked(r) }.unwrap_or_else(Waited::Failed),
        }
        // The overall deadline is monotonic; the realtime clock (the one
        // timedlock takes) only bounds each short slice. A jump of that
        // clock ends one slice early or makes it longer by the jump.
        let start = Instant::now();
        loop {
            let slice = timeout.saturating_sub(start.elapsed()).min(SLICE);
            let deadline = deadline_after(realtime_now(), slice);
            // SAFETY: the mutex is initialized and mapped (this function's
            // contract); `deadline` is a valid, normalized timespec.
            let r = unsafe { libc::pthread_mutex_timedlock(self.raw(), &deadline) };
            // SAFETY: as above.
            match unsafe { self.locked(r) } {
                Ok(w) => return w,
                Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                    if start.elapsed() >= timeout {
                        return Waited::TimedOut;
                    }
                    if interrupted() {
                        return Waited::Interrupted;
                    }
                }
                Err(e) => return Waited::Failed(e),
            }
        }
    }

    /// The outcome of a lock call that returned `r`: locked (a holder that
    /// died is reported, once the mutex is made consistent), or the error.
    ///
    /// # Safety
    /// As `lock_within`.
    unsafe fn locked(&self, r: libc::c_int) -> io::Result<Waited> {
        match r {
            0 => Ok(Waited::Locked { owner_died: false }),
            libc::EOWNERDEAD => {
                // We hold the mutex, but its holder died holding it.
                // Without `consistent`, our unlock would make it unusable
                // (ENOTRECOVERABLE) for everyone.
                // SAFETY: this thread holds the (robust) mutex.
                let c = check(unsafe { libc::pthread_mutex_consistent(self.raw()) });
                match c {
                    Ok(()) => Ok(Waited::Locked { owner_died: true }),
                    Err(e) => {
                        // SAFETY: this thread holds the mutex.
                        let _ = unsafe { self.unlock() };
                        Ok(Waited::Failed(e))
                    }
                }
            }
            r => Err(io::Error::from_raw_os_error(r)),
        }
    }

    /// Unlock. EPERM when this thread does not hold the mutex (then nothing
    /// changes: the holder keeps it).
    ///
    /// # Safety
    /// The mutex must have been initialized by `init` and stay mapped for
    /// the call.
    pub unsafe fn unlock(&self) -> io::Result<()> {
        // SAFETY: initialized and mapped, per this function's contract.
        check(unsafe { libc::pthread_mutex_unlock(self.raw()) })
    }

    /// A raw pointer for the tests' children, which lock and unlock with
    /// plain pthread calls.
    #[cfg(test)]
    pub fn as_ptr(&self) -> *mut libc::pthread_mutex_t {
        self.raw()
    }
}

/// Holds a `PMutex` that this thread locked; unlocks it when dropped. Not
/// `Send`: a pthread mutex is unlocked by the thread that locked it.
pub struct Held<'a> {
    mutex: &'a PMutex,
    _not_send: PhantomData<*const ()>,
}

impl<'a> Held<'a> {
    /// # Safety
    /// This thread must have just locked `mutex` (an initialized mutex),
    /// and nothing else may unlock it.
    pub unsafe fn new(mutex: &'a PMutex) -> Held<'a> {
        Held {
            mutex,
            _not_send: PhantomData,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex (see `new`; the guard can
        // not move to another thread) and the mapping outlives the borrow.
        // Unlocking a mutex this thread holds can not fail.
        let _ = unsafe { self.mutex.unlock() };
    }
}

pub fn realtime_now() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_REALTIME always
    // exists, so the call can not fail.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    now
}

/// The absolute time `d` after `now`, normalized so that 0 <= tv_nsec <
/// 1e9: `pthread_mutex_timedlock` rejects anything else with EINVAL (but
/// only when it has to wait, which hides an uncarried sum until there is
/// contention). Saturates instead of overflowing. (64-bit Linux: time_t
/// and long are i64.)
pub fn deadline_after(now: libc::timespec, d: Duration) -> libc::timespec {
    const NANOS: i64 = 1_000_000_000;
    let nsec = now.tv_nsec.rem_euclid(NANOS) + i64::from(d.subsec_nanos());
    let carry = now.tv_nsec.div_euclid(NANOS) + nsec / NANOS;
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    libc::timespec {
        tv_sec: now.tv_sec.saturating_add(secs).saturating_add(carry),
        tv_nsec: nsec % NANOS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(sec: i64, nsec: i64) -> libc::timespec {
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        }
    }

    #[test]
    fn deadlines_are_normalized() {
        let pair = |t: libc::timespec| (t.tv_sec, t.tv_nsec);
        let d = deadline_after(ts(100, 1_000), Duration::from_millis(100));
        assert_eq!(pair(d), (100, 100_001_000));
        // The nanoseconds carry into the seconds.
        let d = deadline_after(ts(100, 600_000_000), Duration::from_millis(1_950));
        assert_eq!(pair(d), (102, 550_000_000));
        let d = deadline_after(ts(100, 200_000_000), Duration::from_millis(900));
        assert_eq!(pair(d), (101, 100_000_000));
        let d = deadline_after(ts(7, 999_999_999), Duration::from_nanos(1));
        assert_eq!(pair(d), (8, 0));
        let d = deadline_after(ts(7, 999_999_999), Duration::from_nanos(999_999_999));
        assert_eq!(pair(d), (8, 999_999_998));
        // Zero and absurd durations.
        assert_eq!(pair(deadline_after(ts(5, 5), Duration::ZERO)), (5, 5));
        let d = deadline_after(ts(5, 5), Duration::MAX);
        assert_eq!(d.tv_sec, i64::MAX);
        assert!((0..1_000_000_000).contains(&d.tv_nsec));
        // A `now` that is not normalized itself.
        let d = deadline_after(ts(5, 1_500_000_000), Duration::from_millis(600));
        assert_eq!(pair(d), (7, 100_000_000));
    }

    #[test]
    fn pthread_codes_are_errors() {
        assert!(check(0).is_ok());
        let e = check(libc::ETIMEDOUT).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
    }
}
