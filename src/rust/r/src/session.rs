//! The session handle: one `Handle` per store directory, an external
//! pointer that the R layer makes on first use (`session_new_()`) and keeps
//! in `the$sessions` (R/options.R session()). Every glue function that
//! talks to a store takes it as its first argument.
//!
//! A handle holds its yaplr-core `Session`, which re-creates its connection
//! after fork(): a child of parallel::mclapply() uses the parent's handle as
//! it is. It also holds what the session needs from R's options: the
//! capacity of a helper it starts (options(yaplr.capacity = )), which the R
//! layer gives it whenever the option changes (`session_set_capacity_()`).

use crate::args::{self, Checked};
use crate::conditions::RError;
use crate::progress;
use crate::settings::Settings;
use extendr_api::prelude::*;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::time::Duration;
use yaplr_core::{CallOptions, Error, Session};

pub struct Handle {
    /// The store directory, for the `store` field of conditions.
    store: String,
    dir: PathBuf,
    /// The yaplrd program (None: this session never starts a helper).
    helper: Option<PathBuf>,
    /// The session, taken out of its cell for each call (see `run`).
    session: Cell<Option<Session>>,
    /// The capacity of a helper this session starts; Err is the message of
    /// an options(yaplr.capacity = ) that is no size, reported by the next
    /// call that may start one.
    spawn_capacity: RefCell<Result<Option<u64>, String>>,
}

impl Handle {
    fn new_session(&self) -> Session {
        Session::local(self.dir.clone(), self.helper.clone())
    }

    /// Run `f` on the session. R calls us on one thread, but it may call
    /// yaplr again from inside a call (R code run while serializing an
    /// object): the session is taken out of its cell for the call, and a
    /// call that finds it out makes a session of its own. R may also raise
    /// an error (a failed allocation) in the middle, which jumps over this
    /// frame: the session is then lost, and the next call reconnects.
    ///
    /// A helper this call starts (only when `may_start`) gets the capacity
    /// of options(yaplr.capacity = ) as it is now, before any request; an
    /// option that is no size fails only such a call.
    pub fn run<T>(
        &self,
        may_start: bool,
        f: impl FnOnce(&mut Session) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut session = self.session.take().unwrap_or_else(|| self.new_session());
        let capacity = self.spawn_capacity.borrow().clone();
        match capacity {
            Ok(bytes) => session.set_spawn_capacity(bytes),
            Err(message) if may_start && !session.is_connected() => {
                self.session.set(Some(session));
                return Err(Error::BadArgument(message));
            }
            Err(_) => session.set_spawn_capacity(None),
        }
        // No panic may cross into R: it becomes a yaplr_error (and the
        // session, whose state is then unknown, is dropped: the next call
        // reconnects).
        let r = guarded(|| f(&mut session))?;
        self.session.set(Some(session));
        r
    }

    /// The condition of a failure of this store's session, about `tag`.
    pub fn fail<'a>(&'a self, tag: Option<&'a str>) -> impl FnOnce(Error) -> RError + 'a {
        move |e| RError::core(e, tag, &self.store)
    }
}

/// The handle passed as `x`, or the condition the R layer passed instead
/// when it could not resolve the store directory.
pub fn handle(x: &Robj) -> Checked<&Handle> {
    match <&ExternalPtr<Handle>>::try_from(x) {
        Ok(h) => Ok(h),
        Err(_) if x.inherits("yaplr_error") => Err(RError::Prepared(x.clone())),
        Err(_) => Err(RError::argument(
            Error::BadArgument("internal error in yaplr: not a session handle".into()),
            None,
        )),
    }
}

/// The handle of the store in use, as the R layer's session() gives it,
/// remembered for as long as options(yaplr.dir = ) (or YAPLR_DIR) and
/// options(yaplr.capacity = ) stay as they are: the calls that must take
/// microseconds (counters, locks) find it without running R code.
struct Current {
    /// The store as the user gave it (the option, else the variable).
    dir: Vec<u8>,
    /// The capacity option's value it was resolved with, kept alive so
    /// that its address names it.
    capacity: Robj,
    handle: Robj,
    /// The handle `handle` holds, for as long as it is kept here.
    ptr: *const Handle,
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// The handle passed as `x`, or when NULL the handle of the store in use
/// (see `Current`); a store that can not be used gives its condition.
pub fn resolve(x: &Robj) -> Checked<Robj> {
    if !x.is_null() {
        return Ok(x.clone());
    }
    let settings = Settings::read();
    let hit = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|c| c.is_current(&settings))
            .map(|c| c.handle.clone())
    });
    if let Some(h) = hit {
        return Ok(h);
    }
    let h = eval_string("yaplr:::session()").map_err(RError::from)?;
    if h.inherits("yaplr_error") {
        return Err(RError::Prepared(h));
    }
    // As the R layer remembers it: only a store given absolutely (or the
    // default) is the same store wherever the working directory is.
    // (session() ran R code: the options are read again.)
    let settings = Settings::read();
    let dir = args::dir_option(&settings);
    if let Some(dir) = dir.filter(|d| d.is_empty() || d.starts_with(b"/") || d.starts_with(b"~")) {
        // SAFETY: the option's value, which the options list keeps alive
        // until the Robj protects it.
        let capacity = unsafe { Robj::from_sexp(settings.capacity.sexp()) };
        let ptr: *const Handle = handle(&h)?;
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(Current {
                dir,
                capacity,
                handle: h.clone(),
                ptr,
            })
        });
    }
    Ok(h)
}

impl Current {
    /// Whether the options still name this store (and capacity).
    fn is_current(&self, settings: &Settings) -> bool {
        // SAFETY: reading the address of a live SEXP.
        let remembered = unsafe { self.capacity.get() } as usize;
        remembered == args::address(settings.capacity) && args::dir_option_is(&self.dir, settings)
    }
}

/// Run `f` with the handle of the store in use, found as `resolve(NULL)`
/// finds it but, while remembered, without making an R value: for the
/// calls that must take a microsecond (fast.rs). `f` must not run R code
/// nor allocate R memory, which could make another store current and drop
/// the handle it borrows.
pub fn with_current<T>(settings: &Settings, f: impl FnOnce(&Handle) -> Checked<T>) -> Checked<T> {
    let hit = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|c| c.is_current(settings))
            .map(|c| c.ptr)
    });
    match hit {
        // SAFETY: the handle of the Robj that CURRENT keeps, which only a
        // later resolve() (R code, which `f` does not run) replaces.
        Some(ptr) => f(unsafe { &*ptr }),
        None => {
            let h = resolve(&Robj::from(()))?;
            f(handle(&h)?)
        }
    }
}

/// The options of one call: its timeout, and whether it may start a helper.
pub fn options(timeout: Duration, autostart: bool) -> CallOptions<'static> {
    CallOptions {
        timeout,
        autostart,
        interrupted: &progress::interrupted,
    }
}

/// getOption("yaplr.capacity") as the R layer parses it
/// (capacity_option()): a number of bytes, NaN when unset, or the message
/// of a value that is no size.
fn spawn_capacity(x: &Robj) -> Result<Option<u64>, String> {
    match (x.as_real(), x.as_str()) {
        (Some(b), _) if b.is_nan() => Ok(None),
        (Some(b), _) if b.is_finite() && b >= 0.0 => Ok(Some(args::bytes_from_r(b))),
        (_, Some(message)) => Err(message.to_string()),
        _ => Err(
            "options(yaplr.capacity = ) must be a number of bytes or a size such as \"2 GB\""
                .into(),
        ),
    }
}

/// A new handle on the store `dir` (an absolute path the R layer
/// resolved), starting helpers with `helper` ("": never), with `capacity`
/// as given by capacity_option().
/// @noRd
#[extendr]
fn session_new_(dir: Robj, helper: Robj, capacity: Robj) -> ExternalPtr<Handle> {
    let dir = args::path(&dir);
    let helper = args::path(&helper);
    ExternalPtr::new(Handle {
        store: dir.display().to_string(),
        dir,
        helper: (!helper.as_os_str().is_empty()).then_some(helper),
        session: Cell::new(None),
        spawn_capacity: RefCell::new(spawn_capacity(&capacity)),
    })
}

/// Give the handle a new options(yaplr.capacity = ), as capacity_option()
/// parses it.
/// @noRd
#[extendr]
fn session_set_capacity_(session: Robj, capacity: Robj) -> Result<(), RError> {
    let h = handle(&session)?;
    *h.spawn_capacity.borrow_mut() = spawn_capacity(&capacity);
    Ok(())
}

/// @noRd
#[extendr]
fn default_store_dir_() -> String {
    yaplr_core::format::default_dir().display().to_string()
}

thread_local! {
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Run `f`, turning a panic into an error instead of unwinding into R. The
/// panic's message is kept for the error, not printed.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught = PANIC_MESSAGE.with(|m| {
                let mut m = m.borrow_mut();
                if m.is_some() {
                    return false;
                }
                *m = Some(match info.location() {
                    Some(l) => format!(
                        "{} at {}:{}",
                        panic_text(info.payload()),
                        l.file(),
                        l.line()
                    ),
                    None => panic_text(info.payload()),
                });
                true
            });
            if !caught {
                default(info);
            }
        }));
    });
    PANIC_MESSAGE.with(|m| *m.borrow_mut() = None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = PANIC_MESSAGE.with(|m| m.borrow_mut().take());
    r.map_err(|payload| Error::Server {
        message: format!(
            "internal error in yaplr ({}); nothing was changed by this call, please report it",
            message.unwrap_or_else(|| panic_text(&*payload))
        ),
    })
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

extendr_module! {
    mod session;
    fn session_new_;
    fn session_set_capacity_;
    fn default_store_dir_;
}
