//! Progress and interruption of long transfers. Code that moves many bytes
//! (writing an object file, copying one out, saving or loading a dump)
//! counts them on a [`Meter`]; every [`STEP`] bytes the meter calls the
//! caller's [`Progress`] hook, which may draw a progress bar and may abort
//! the transfer by returning an error (the R binding does so on Ctrl-C).
//! A transfer of less than `STEP` bytes never calls the hook, so small
//! objects pay one addition and one comparison per write.

use crate::error::Result;
use std::time::Duration;

/// Bytes between two calls of the hook: a few milliseconds of copying.
pub const STEP: u64 = 4 << 20;
/// STEP, as a buffer size.
pub const STEP_USIZE: usize = 4 << 20;
const _: () = assert!(STEP_USIZE as u64 == STEP);

/// What a long transfer reports to.
pub trait Progress {
    /// `done` bytes of `total` (None: not known in advance) are moved.
    /// An error aborts the transfer: the caller removes what it wrote and
    /// returns the error.
    fn update(&mut self, done: u64, total: Option<u64>) -> Result<()>;

    /// The transfer ended, well or not, after at least one `update`.
    fn finish(&mut self, _done: u64) {}
}

/// A hook that shows nothing and never aborts.
pub struct Silent;

impl Progress for Silent {
    fn update(&mut self, _done: u64, _total: Option<u64>) -> Result<()> {
        Ok(())
    }
}

/// Counts the bytes of one transfer (which may span several objects) and
/// calls its hook every `STEP` bytes, and once more (`finish`) when dropped
/// if it called it at all.
pub struct Meter<'a> {
    hook: &'a mut dyn Progress,
    total: Option<u64>,
    done: u64,
    next: u64,
    reported: bool,
}

impl<'a> Meter<'a> {
    pub fn new(hook: &'a mut dyn Progress, total: Option<u64>) -> Meter<'a> {
        Meter {
            hook,
            total,
            done: 0,
            next: STEP,
            reported: false,
        }
    }

    /// Set the number of bytes the whole transfer will move, once known.
    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    /// Count `n` more bytes moved. An error (from the hook) means: abort.
    #[inline]
    pub fn add(&mut self, n: u64) -> Result<()> {
        self.done += n;
        if self.done < self.next {
            return Ok(());
        }
        self.next = self.done + STEP;
        self.reported = true;
        self.hook.update(self.done, self.total)
    }

    /// Pass `bytes` to `write` in pieces of at most `STEP` bytes, counting
    /// each, so that a long write can be aborted between two pieces.
    pub fn write_all(
        &mut self,
        bytes: &[u8],
        mut write: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        for piece in bytes.chunks(STEP_USIZE) {
            write(piece)?;
            self.add(piece.len() as u64)?;
        }
        Ok(())
    }
}

impl Drop for Meter<'_> {
    fn drop(&mut self) {
        if self.reported {
            self.hook.finish(self.done);
        }
    }
}

/// Sizes for people: 1 decimal, powers of 1000 as in `ls -h --si`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A transfer for people: "240.0 MB of 800.0 MB | 120.0 MB/s | ETA 5s", or
/// when the total is not known, "240.0 MB | 120.0 MB/s | 2s" (time so far).
pub fn status_line(done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = done as f64 / secs;
    match total {
        Some(t) => format!(
            "{} of {} | {}/s | ETA {}",
            human_size(done),
            human_size(t),
            human_size(whole(rate)),
            duration(t.saturating_sub(done) as f64 / rate.max(1.0))
        ),
        None => format!(
            "{} | {}/s | {}",
            human_size(done),
            human_size(whole(rate)),
            duration(secs)
        ),
    }
}

/// A non-negative number of bytes or seconds, for display: the integer
/// part (0 for NaN, saturating at u64::MAX).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the saturating conversion of `as` is the intent"
)]
fn whole(x: f64) -> u64 {
    x as u64
}

/// Seconds as "4s", "2m 05s", "1h 02m".
fn duration(secs: f64) -> String {
    let s = whole(secs.round().clamp(0.0, 3.6e8));
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[derive(Default)]
    struct Log {
        updates: Vec<(u64, Option<u64>)>,
        finished: Option<u64>,
        abort_at: Option<u64>,
    }

    impl Progress for Log {
        fn update(&mut self, done: u64, total: Option<u64>) -> Result<()> {
            self.updates.push((done, total));
            match self.abort_at {
                Some(at) if done >= at => Err(Error::Interrupted {
                    waited_for: "the test".into(),
                }),
                _ => Ok(()),
            }
        }
        fn finish(&mut self, done: u64) {
            self.finished = Some(done);
        }
    }

    #[test]
    fn small_transfers_never_call_the_hook() {
        let mut log = Log::default();
        {
            let mut m = Meter::new(&mut log, Some(STEP - 1));
            for _ in 0..(STEP - 1) / 4096 {
                m.add(4096).unwrap();
            }
            assert!(m.done() < STEP);
        }
        assert!(log.updates.is_empty());
        assert_eq!(log.finished, None);
    }

    #[test]
    fn the_hook_runs_every_step_and_finish_once() {
        let mut log = Log::default();
        {
            let mut m = Meter::new(&mut log, None);
            m.set_total(Some(10 * STEP));
            for _ in 0..10 * STEP / (1 << 20) {
                m.add(1 << 20).unwrap();
            }
        }
        let done: Vec<u64> = log.updates.iter().map(|u| u.0).collect();
        assert_eq!(done, (1..=10).map(|i| i * STEP).collect::<Vec<_>>());
        assert!(log.updates.iter().all(|u| u.1 == Some(10 * STEP)));
        assert_eq!(log.finished, Some(10 * STEP));
    }

    #[test]
    fn an_error_of_the_hook_stops_a_write_between_pieces() {
        let mut log = Log {
            abort_at: Some(2 * STEP),
            ..Log::default()
        };
        let data = vec![7u8; 5 * STEP_USIZE];
        let mut written = 0usize;
        let r = {
            let mut m = Meter::new(&mut log, Some(data.len() as u64));
            m.write_all(&data, |b| {
                assert!(b.len() as u64 <= STEP);
                written += b.len();
                Ok(())
            })
        };
        assert!(matches!(r, Err(Error::Interrupted { .. })));
        assert_eq!(written as u64, 2 * STEP);
        assert_eq!(log.finished, Some(2 * STEP));
    }

    #[test]
    fn silent_never_aborts() {
        let mut s = Silent;
        let mut m = Meter::new(&mut s, None);
        m.write_all(&vec![0u8; 3 * STEP_USIZE], |_| Ok(())).unwrap();
        assert_eq!(m.done(), 3 * STEP);
    }

    #[test]
    fn status_lines_read_well() {
        assert_eq!(
            status_line(240_000_000, Some(800_000_000), Duration::from_secs(2)),
            "240.0 MB of 800.0 MB | 120.0 MB/s | ETA 5s"
        );
        assert_eq!(
            status_line(3_000_000_000, None, Duration::from_secs(125)),
            "3.0 GB | 24.0 MB/s | 2m 05s"
        );
        assert_eq!(duration(0.2), "0s");
        assert_eq!(duration(3725.0), "1h 02m");
    }
}
