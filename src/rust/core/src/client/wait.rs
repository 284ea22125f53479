//! The client's one bounded wait: poll until something happens, giving up
//! at a deadline or on an interrupt, and sleeping between polls.

use super::CallOptions;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};

/// How long, and for what, a wait may go on.
pub(crate) struct Until<'a> {
    deadline: Instant,
    /// The timeout a timeout error reports, in seconds.
    seconds: f64,
    /// What the errors say was waited for.
    what: String,
    /// What a timeout says instead, if it says more.
    timeout_what: Option<String>,
    /// Polled between tries (None: the wait can not be interrupted).
    interrupted: Option<&'a dyn Fn() -> bool>,
    /// The first sleep, doubled after each poll up to `max_pause`.
    pause: Duration,
    max_pause: Duration,
}

/// The sleep between polls, unless `backoff` says otherwise.
const PAUSE: Duration = Duration::from_millis(2);

impl<'a> Until<'a> {
    /// Until `deadline`, interruptible and timed as `opts` say.
    pub(crate) fn new(deadline: Instant, opts: &CallOptions<'a>, what: String) -> Until<'a> {
        Until {
            deadline,
            seconds: opts.timeout.as_secs_f64(),
            what,
            timeout_what: None,
            interrupted: Some(opts.interrupted),
            pause: PAUSE,
            max_pause: PAUSE,
        }
    }

    /// Until `deadline`, without looking for interrupts.
    pub(crate) fn uninterruptible(deadline: Instant, seconds: f64, what: String) -> Until<'a> {
        Until {
            deadline,
            seconds,
            what,
            timeout_what: None,
            interrupted: None,
            pause: PAUSE,
            max_pause: PAUSE,
        }
    }

    /// What a timeout says was waited for, when it says more than an
    /// interrupt.
    pub(crate) fn on_timeout(self, what: String) -> Until<'a> {
        Until {
            timeout_what: Some(what),
            ..self
        }
    }

    /// Sleep `first` after the first poll, twice as long after each next
    /// one, at most `max`.
    pub(crate) fn backoff(self, first: Duration, max: Duration) -> Until<'a> {
        Until {
            pause: first,
            max_pause: max,
            ..self
        }
    }
}

/// Call `poll` until it returns a value (or an error); between calls,
/// fail with `Error::Timeout` once the deadline has passed, or with
/// `Error::Interrupted` when the wait was interrupted, else sleep.
pub(crate) fn wait_until<T>(
    until: Until<'_>,
    mut poll: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let mut pause = until.pause;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        if Instant::now() >= until.deadline {
            return Err(Error::Timeout {
                waited_for: until.timeout_what.unwrap_or(until.what),
                seconds: until.seconds,
            });
        }
        if until.interrupted.is_some_and(|interrupted| interrupted()) {
            return Err(Error::Interrupted {
                waited_for: until.what,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(until.max_pause);
    }
}
