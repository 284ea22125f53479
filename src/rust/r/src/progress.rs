//! Ctrl-C and progress bars during long transfers: the R side of
//! yaplr-core's `Progress` hook.
//!
//! Ctrl-C is read from R's own flag, which R's SIGINT handler sets: no call
//! into R, so it is safe anywhere (also inside R_Serialize callbacks). The
//! interrupt is taken (the flag cleared) and comes back to R as a condition
//! of class "interrupt", which the R layer signals, so that
//! `tryCatch(interrupt = )` around the call sees it. (Processing it with
//! R_CheckUserInterrupt inside R_ToplevelExec would hide the user's
//! handlers.)
//!
//! A progress bar is drawn by R functions (R/progress.R, with cli), called
//! only once a transfer has run longer than the delay of
//! `options(yaplr.progress = )`, at most ten times a second, with R's
//! interrupts held pending so that a Ctrl-C during the drawing is seen by
//! the next check here.

use crate::ffi;
use extendr_api::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use yaplr_core::progress::{status_line, Progress};
use yaplr_core::Error;

/// Whether interrupts are suspended by `with_interrupts_held` (rather than
/// by R, which then wants them left alone).
static HELD: AtomicBool = AtomicBool::new(false);

/// Whether the user pressed Ctrl-C; takes the interrupt, which the caller
/// must report (as `Error::Interrupted`). Only on R's main thread: R's
/// flags are read and written there, and R's SIGINT handler only ever sets
/// the pending flag to 1.
pub fn interrupted() -> bool {
    let pending = ffi::interrupts_pending();
    let suspended = ffi::interrupts_suspended().get() != 0;
    if (suspended && !HELD.load(Ordering::Relaxed)) || pending.get() == 0 {
        return false;
    }
    pending.set(0);
    true
}

/// Run `f`, which runs R code, with interrupts held pending for R (so that
/// R never jumps to the user's interrupt handler over Rust frames) but
/// still seen by `interrupted`. Only on R's main thread; R's flag is
/// restored before returning.
pub fn with_interrupts_held<T>(f: impl FnOnce() -> T) -> T {
    let flag = ffi::interrupts_suspended();
    let old = flag.get();
    let held = HELD.load(Ordering::Relaxed);
    flag.set(1);
    if old == 0 {
        HELD.store(true, Ordering::Relaxed);
    }
    let out = f();
    HELD.store(held, Ordering::Relaxed);
    flag.set(old);
    out
}

/// Call the R function `yaplr:::<name>` with `args`; None if it failed.
fn call_r(name: &str, args: Pairlist) -> Option<Robj> {
    with_interrupts_held(|| {
        let f: Function = eval_string(&format!("yaplr:::{name}"))
            .ok()?
            .try_into()
            .ok()?;
        f.call(args).ok()
    })
}

/// The longest delay, in seconds (some 31 years: in effect never), so that
/// any finite delay converts to a Duration.
const MAX_DELAY_SECS: f64 = 1e9;

/// The delay before a progress bar appears, from the R layer's `progress`
/// argument (seconds; negative or NA: never).
pub fn delay(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0)
        .then(|| Duration::from_secs_f64(seconds.min(MAX_DELAY_SECS)))
}

#[derive(Clone, Copy)]
pub enum Verb {
    Send,
    Retrieve,
    /// save_objects(): the subject is the dump file.
    Save,
    /// load_objects(): the subject is the dump file.
    Load,
}

/// The progress hook of one R call that moves objects.
pub struct Transfer<'a> {
    verb: Verb,
    /// The tag, when the call moves one object.
    tag: Option<&'a str>,
    count: usize,
    start: Instant,
    delay: Option<Duration>,
    /// The cli progress bar, once shown.
    bar: Option<Robj>,
    drawn: Option<Instant>,
}

/// Most drawings per second.
const REDRAW: Duration = Duration::from_millis(100);

impl<'a> Transfer<'a> {
    pub fn one(verb: Verb, tag: &'a str, delay: Option<Duration>) -> Transfer<'a> {
        Transfer {
            verb,
            tag: Some(tag),
            count: 1,
            start: Instant::now(),
            delay,
            bar: None,
            drawn: None,
        }
    }

    pub fn many(verb: Verb, count: usize, delay: Option<Duration>) -> Transfer<'a> {
        Transfer {
            tag: None,
            count,
            ..Transfer::one(verb, "", delay)
        }
    }

    fn subject(&self) -> String {
        match self.tag {
            Some(t) => format!("\"{t}\""),
            None => format!("{} objects", self.count),
        }
    }

    fn label(&self) -> String {
        let verb = match self.verb {
            Verb::Send => "Sending",
            Verb::Retrieve => "Retrieving",
            Verb::Save => "Saving to",
            Verb::Load => "Loading",
        };
        format!("{verb} {}", self.subject())
    }

    /// Completes "interrupted while waiting for ...".
    fn interrupted_while(&self) -> String {
        match (self.verb, self.tag) {
            (Verb::Send, Some(_)) => format!(
                "{} to be sent; nothing was stored and the tag keeps any earlier value",
                self.subject()
            ),
            (Verb::Send, None) => format!("{} to be sent; none was stored", self.subject()),
            (Verb::Retrieve, _) => format!("{} to be read", self.subject()),
            (Verb::Save, _) => format!(
                "the objects to be saved to {}; no dump was written",
                self.subject()
            ),
            (Verb::Load, _) => format!(
                "the objects of {} to be loaded; none was loaded",
                self.subject()
            ),
        }
    }

    fn draw(&mut self, done: u64, total: Option<u64>, elapsed: Duration) {
        let status = status_line(done, total, elapsed);
        let id: Robj = self.bar.clone().unwrap_or_else(|| ().into());
        let total: Robj = total.map_or(Rfloat::na().into(), |t| Robj::from(t as f64));
        let shown = call_r(
            "progress_show",
            pairlist!(id, self.label(), done as f64, total, status),
        );
        self.bar = shown.filter(|id| id.is_string());
        if self.bar.is_none() {
            // No bar can be shown (no cli): do not try again.
            self.delay = None;
        }
    }
}

impl Progress for Transfer<'_> {
    fn update(&mut self, done: u64, total: Option<u64>) -> Result<(), Error> {
        if interrupted() {
            return Err(Error::Interrupted {
                waited_for: self.interrupted_while(),
            });
        }
        let Some(delay) = self.delay else {
            return Ok(());
        };
        let now = Instant::now();
        let elapsed = now - self.start;
        if elapsed < delay || self.drawn.is_some_and(|t| now - t < REDRAW) {
            return Ok(());
        }
        self.drawn = Some(now);
        self.draw(done, total, elapsed);
        Ok(())
    }

    fn finish(&mut self, _done: u64) {
        if let Some(id) = self.bar.take() {
            call_r("progress_done", pairlist!(id));
        }
    }
}
