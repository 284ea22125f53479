//! Lock handles: what acquire_lock() returns, an external pointer of
//! class `yaplr_lock` (tag: the symbol `yaplr_lock`) whose address says
//! what the handle is:
//!
//! - a `Box<Held>`: the lock, held (or held until a failed release);
//! - `RELEASED`: released by release_lock(), which dropped the box;
//! - NULL: a handle saved and restored, or unserialized elsewhere: inert.
//!
//! A handle that R collects while its lock is held releases the lock, by a
//! finalizer. But a finalizer (a weak reference, and a context to run it
//! in) costs more than acquiring and releasing an uncontended lock, and
//! most handles are released long before R collects anything. So a new
//! handle has none: it is kept *young*, referenced from a list of this
//! module, until it is released (then it needs none) or until the young
//! handles are *flushed*: each still held gets its finalizer and is
//! forgotten. They are flushed before a new handle is made, and at the end
//! of every top-level call (an R task callback, R/yaplr-package.R): never
//! from a finalizer, where R may lose a weak reference made meanwhile. An abandoned handle is thus
//! collected, and its lock released, by R's first collection after the
//! next flush. When R exits, the young handles' locks, and those of
//! handles with a finalizer, are released (finalizers run on exit).

use extendr_api::prelude::*;
use extendr_ffi::{
    R_ExternalPtrAddr, R_ExternalPtrTag, R_MakeExternalPtr, R_NilValue, R_PreserveObject,
    R_RegisterCFinalizerEx, R_ReleaseObject, R_SetExternalPtrAddr, Rboolean, Rf_allocVector,
    Rf_protect, Rf_unprotect, SET_VECTOR_ELT, SEXP, SEXPTYPE, TYPEOF, VECTOR_ELT,
};
use std::cell::{Cell, RefCell};
use std::os::raw::c_void;
use yaplr_core::backend::HeldLock;

/// What the address of a live handle points to.
struct Held {
    lock: HeldLock,
    /// Its place in the young list, while it is young.
    young: Cell<Option<isize>>,
}

/// The address of a released handle (no `Held` is ever there).
static RELEASED: u8 = 0;

fn released() -> *mut c_void {
    std::ptr::addr_of!(RELEASED).cast_mut().cast()
}

/// The tag of a handle's external pointer.
fn tag() -> SEXP {
    crate::ffi::symbol(c"yaplr_lock")
}

/// What a value given as a lock handle is.
pub enum Handle<'a> {
    /// Not a lock handle at all.
    Not,
    /// A handle saved and restored (or sent to another process).
    Detached,
    Released,
    Live(&'a HeldLock),
}

/// What `x` is. The reference lives as long as R keeps `x` (an argument of
/// the running `.Call`) and release() is not called.
///
/// # Safety
/// `x` is protected for the call, on R's main thread.
pub unsafe fn of<'a>(x: SEXP) -> Handle<'a> {
    // SAFETY: the address of a handle is one of the three kinds above.
    unsafe {
        if TYPEOF(x) != SEXPTYPE::EXTPTRSXP || R_ExternalPtrTag(x) != tag() {
            return Handle::Not;
        }
        let addr = R_ExternalPtrAddr(x);
        if addr.is_null() {
            Handle::Detached
        } else if addr == released() {
            Handle::Released
        } else {
            Handle::Live(&(*addr.cast::<Held>()).lock)
        }
    }
}

/// The young handles: a preserved list (NULL in free places) and its free
/// places.
struct Young {
    list: SEXP,
    free: Vec<isize>,
}

thread_local! {
    static YOUNG: RefCell<Young> = const {
        RefCell::new(Young {
            list: std::ptr::null_mut(),
            free: Vec::new(),
        })
    };
    /// The class attribute of every handle, made once.
    static CLASS: SEXP = {
        // SAFETY: on R's main thread; the vector is preserved for the life
        // of the process and marked shared, so that R copies it before any
        // change.
        unsafe {
            let class = crate::fast::string("yaplr_lock");
            R_PreserveObject(class);
            extendr_ffi::MARK_NOT_MUTABLE(class);
            class
        }
    };
}

/// A new handle holding `lock`, young, with the attributes
/// previous_holder_died and class (nothing more is allocated: a lock is
/// acquired and released in a few microseconds, and R's garbage collector
/// would take a good part of them).
///
/// # Safety
/// On R's main thread; the result must be protected before R allocates.
pub unsafe fn make(lock: HeldLock) -> SEXP {
    flush();
    let died = lock.previous_holder_died;
    let held = Box::into_raw(Box::new(Held {
        lock,
        young: Cell::new(None),
    }));
    // SAFETY: on R's main thread; `x` is protected while it is finished.
    // It owns the box from here on: the box is dropped by release() or by
    // the finalizer a flush gives it, and if R fails to allocate below (a
    // jump out of this call), `x` stays young and is given a finalizer at
    // the next flush.
    unsafe {
        let x = Rf_protect(R_MakeExternalPtr(held.cast(), tag(), R_NilValue));
        YOUNG.with(|y| {
            let place = enlist(&mut y.borrow_mut(), x);
            (*held).young.set(Some(place));
        });
        crate::fast::set_attr(x, c"previous_holder_died", crate::fast::logical(died));
        crate::fast::set_attr(x, c"class", CLASS.with(|c| *c));
        Rf_unprotect(1);
        x
    }
}

/// Put `x` in the young list; its place.
///
/// # Safety
/// On R's main thread, `x` protected.
unsafe fn enlist(y: &mut Young, x: SEXP) -> isize {
    if y.free.is_empty() {
        // SAFETY: R calls on R's main thread; the new list is preserved
        // before the old one (whose handles it takes) is released.
        unsafe {
            let old_len = if y.list.is_null() {
                0
            } else {
                extendr_ffi::Rf_xlength(y.list)
            };
            let len = (old_len * 2).max(8);
            let list = Rf_allocVector(SEXPTYPE::VECSXP, len);
            R_PreserveObject(list);
            for i in 0..old_len {
                SET_VECTOR_ELT(list, i, VECTOR_ELT(y.list, i));
            }
            if !y.list.is_null() {
                R_ReleaseObject(y.list);
            }
            y.list = list;
            y.free.extend((old_len..len).rev());
        }
    }
    let place = y.free.pop().unwrap_or(0);
    // SAFETY: a place of the list, which is long enough.
    unsafe { SET_VECTOR_ELT(y.list, place, x) };
    place
}

/// Take the handle at `place` out of the young list.
fn delist(y: &mut Young, place: isize) {
    // SAFETY: a place of the (preserved) list, on R's main thread.
    unsafe { SET_VECTOR_ELT(y.list, place, R_NilValue) };
    y.free.push(place);
}

/// Give every young handle still held its finalizer, and forget them all.
/// Never called from a finalizer (see the module's comment).
pub fn flush() {
    YOUNG.with(|y| {
        let mut y = y.borrow_mut();
        if y.list.is_null() || y.free.len() == young_len(&y) {
            return;
        }
        // SAFETY: the list is preserved; each handle in it is alive (the
        // list references it until it is taken out below, after its
        // finalizer is registered) and its address is a Held box (a
        // released handle leaves the list first). Registering allocates,
        // which runs no R code.
        unsafe {
            for place in 0..extendr_ffi::Rf_xlength(y.list) {
                let x = VECTOR_ELT(y.list, place);
                if x == R_NilValue {
                    continue;
                }
                R_RegisterCFinalizerEx(x, Some(finalize), Rboolean::TRUE);
                let held = R_ExternalPtrAddr(x).cast::<Held>();
                if !held.is_null() && held.cast() != released() {
                    (*held).young.set(None);
                }
                delist(&mut y, place);
            }
        }
    });
}

/// How many places the young list has.
fn young_len(y: &Young) -> usize {
    // SAFETY: the preserved list; Rf_xlength only reads it.
    usize::try_from(unsafe { extendr_ffi::Rf_xlength(y.list) }).unwrap_or(0)
}

/// When R exits: release the locks of the young handles (the others have
/// finalizers that R runs on exit).
unsafe extern "C" fn at_exit(_anchor: SEXP) {
    YOUNG.with(|y| {
        let y = y.borrow();
        if y.list.is_null() {
            return;
        }
        // SAFETY: the preserved list holds live handles (see `flush`).
        unsafe {
            for place in 0..extendr_ffi::Rf_xlength(y.list) {
                let x = VECTOR_ELT(y.list, place);
                if x != R_NilValue {
                    finalize(x);
                }
            }
        }
    });
}

/// Set up the release on exit; called once, when R loads the package's
/// library. (The flush at the end of each top-level call is an R task
/// callback, added by .onLoad.)
///
/// # Safety
/// On R's main thread, from R_init_yaplr.
pub unsafe fn init() {
    // SAFETY: as the function's contract says; the anchor is preserved for
    // the life of the process, so its finalizer runs only on exit.
    unsafe {
        let anchor = R_MakeExternalPtr(std::ptr::null_mut(), R_NilValue, R_NilValue);
        R_PreserveObject(anchor);
        R_RegisterCFinalizerEx(anchor, Some(at_exit), Rboolean::TRUE);
    }
}

/// R's finalizer of a handle collected unreleased (or alive when R exits):
/// drops its lock, which releases it in the process that acquired it
/// (never in a forked child).
///
/// # Safety
/// Called by R's garbage collector with a handle.
unsafe extern "C" fn finalize(x: SEXP) {
    // SAFETY: the address of a handle is NULL, RELEASED or a Held box,
    // cleared here so that it is dropped once.
    unsafe {
        let held = R_ExternalPtrAddr(x);
        if held.is_null() || held == released() {
            return;
        }
        R_SetExternalPtrAddr(x, released());
        let held = std::panic::AssertUnwindSafe(Box::from_raw(held.cast::<Held>()));
        let _ = std::panic::catch_unwind(move || drop(held));
    }
}

/// Release the lock of the live handle `x` (see `of`); on success the
/// handle becomes RELEASED and its box is dropped. A failed release
/// changes nothing.
///
/// # Safety
/// `x` is a live handle, protected, on R's main thread, and no reference
/// from `of(x)` is used afterwards.
pub unsafe fn release(x: SEXP) -> yaplr_core::Result<()> {
    // SAFETY: a live handle's address is its Held box.
    let held = unsafe { R_ExternalPtrAddr(x).cast::<Held>() };
    // SAFETY: as above; the box is alive until dropped below.
    unsafe { (*held).lock.release()? };
    // SAFETY: the box is taken back once: the address becomes RELEASED.
    let held = unsafe {
        R_SetExternalPtrAddr(x, released());
        Box::from_raw(held)
    };
    if let Some(place) = held.young.get() {
        YOUNG.with(|y| delist(&mut y.borrow_mut(), place));
    }
    Ok(())
}

/// list(name, namespace, pid, released) of a handle, for its print
/// method; NULL for a detached handle or another value.
///
/// # Safety
/// As `of`.
pub unsafe fn fields(x: SEXP) -> extendr_api::Result<Robj> {
    // SAFETY: as the function's contract says.
    let (name, namespace, pid, released) = match unsafe { of(x) } {
        Handle::Live(l) => (
            Robj::from(l.key.tag()),
            Robj::from(l.key.namespace()),
            Robj::from(f64::from(l.pid)),
            false,
        ),
        Handle::Released => (Robj::from(()), Robj::from(()), Robj::from(()), true),
        Handle::Not | Handle::Detached => return Ok(Robj::from(())),
    };
    List::from_names_and_values(
        ["name", "namespace", "pid", "released"],
        [name, namespace, pid, Robj::from(released)],
    )
    .map(Robj::from)
}
