//! The calls that must take a microsecond or two: counters, locks, and
//! the look-ups of one object that the store's index answers
//! (`does_object_exist()`, `object_info()`). They
//! are `.Call` routines of their own, registered beside extendr's wrappers
//! (`routines`, see lib.rs), that take R's arguments as raw SEXPs: an
//! extendr wrapper protects and unprotects every argument and result
//! through its hash table of owned objects, which costs more than the
//! counter operation itself.
//!
//! Each routine checks its arguments (args.rs, the same checks, messages
//! and order as everywhere), finds the store in use without running R code
//! (session::with_current), calls the core, and returns the value or, on
//! failure, the same condition object an extendr wrapper returns (class
//! `extendr_error`), which the R layer signals with check_result(). No
//! panic crosses into R.

use crate::args::{self, Checked, Value};
use crate::conditions::RError;
use crate::lock_handle;
use crate::session::with_current;
use crate::settings::Settings;
use extendr_api::metadata::{Arg, Func};
use extendr_api::prelude::*;
use extendr_ffi::{
    cetype_t, Rf_allocVector, Rf_mkCharLenCE, Rf_protect, Rf_setAttrib, Rf_unprotect, INTEGER,
    REAL, SET_STRING_ELT, SET_VECTOR_ELT, SEXP, SEXPTYPE,
};
use std::ffi::CStr;
use yaplr_core::{CallOptions, Error, Key, Session};

/// Run the body of a routine: its value, or its failure as a condition
/// object; a panic is an internal error.
fn entry(body: impl FnOnce() -> Checked<SEXP>) -> SEXP {
    let failure = match crate::session::guarded(body) {
        Ok(Ok(x)) => return x,
        Ok(Err(e)) => e,
        Err(e) => RError::argument(e, None),
    };
    let condition: Robj = Err::<Robj, RError>(failure).into();
    // SAFETY: returned to R at once, before anything allocates (as the
    // extendr wrappers return their results).
    unsafe { condition.get() }
}

/// A double vector of length 1, unprotected.
///
/// # Safety
/// On R's main thread; the result must be protected before R allocates.
unsafe fn scalar_real(x: f64) -> SEXP {
    // SAFETY: a fresh double vector of length 1 has one element to set.
    unsafe {
        let v = Rf_allocVector(SEXPTYPE::REALSXP, 1);
        *REAL(v) = x;
        v
    }
}

/// R's TRUE or FALSE (shared values: nothing is allocated).
pub fn logical(x: bool) -> SEXP {
    // SAFETY: Rf_ScalarLogical returns one of R's constants.
    unsafe { crate::ffi::Rf_ScalarLogical(i32::from(x)) }
}

/// A character vector holding `s` (UTF-8), unprotected.
///
/// # Safety
/// As `scalar_real`.
pub unsafe fn string(s: &str) -> SEXP {
    // SAFETY: allocating on R's main thread; the vector is protected while
    // its element is made.
    unsafe {
        let v = Rf_protect(Rf_allocVector(SEXPTYPE::STRSXP, 1));
        let len = i32::try_from(s.len()).unwrap_or(0);
        let c = Rf_mkCharLenCE(s.as_ptr().cast(), len, cetype_t::CE_UTF8);
        SET_STRING_ELT(v, 0, c);
        Rf_unprotect(1);
        v
    }
}

/// Set attribute `name` of `x` to `value`, protecting `value` meanwhile.
///
/// # Safety
/// On R's main thread, `x` protected, `value` just made.
pub unsafe fn set_attr(x: SEXP, name: &'static CStr, value: SEXP) {
    // SAFETY: as the function's contract says; Rf_install takes a
    // NUL-terminated name.
    unsafe {
        Rf_protect(value);
        Rf_setAttrib(x, crate::ffi::symbol(name), value);
        Rf_unprotect(1);
    }
}

/// `op` on the object `tag` of the store in use (the arguments of the
/// object functions: tag, namespace, timeout, automatic_server_start).
///
/// # Safety
/// The SEXPs are the arguments of the calling `.Call`.
unsafe fn object<T>(
    tag: SEXP,
    namespace: SEXP,
    timeout: SEXP,
    autostart: SEXP,
    op: impl FnOnce(&mut Session, &Key, &CallOptions<'_>) -> yaplr_core::Result<T>,
) -> Checked<T> {
    // SAFETY: arguments of the .Call (this function's contract).
    let (tag, namespace, timeout, autostart) = unsafe {
        (
            Value::arg(tag),
            Value::arg(namespace),
            Value::arg(timeout),
            Value::arg(autostart),
        )
    };
    let settings = Settings::read();
    let key = args::tag_key_or_option_v(tag, namespace, &settings)?;
    let opts = args::call_options_v(timeout, autostart, &settings)?;
    with_current(&settings, |h| {
        h.run(opts.autostart, |s| op(s, &key, &opts))
            .map_err(h.fail(Some(key.tag())))
    })
}

/// `.Call` routine of does_object_exist(tag, namespace, timeout,
/// automatic_server_start).
///
/// # Safety
/// Called by R's `.Call` with its arguments.
pub unsafe extern "C" fn yaplr_object_exists(
    tag: SEXP,
    namespace: SEXP,
    timeout: SEXP,
    autostart: SEXP,
) -> SEXP {
    entry(|| {
        // SAFETY: arguments of this .Call.
        let b = unsafe { object(tag, namespace, timeout, autostart, |s, k, o| s.exists(k, o)) }?;
        Ok(logical(b))
    })
}

/// `.Call` routine of object_info(tag, namespace, timeout,
/// automatic_server_start): a named list describing the object.
///
/// # Safety
/// Called by R's `.Call` with its arguments.
pub unsafe extern "C" fn yaplr_object_info(
    tag: SEXP,
    namespace: SEXP,
    timeout: SEXP,
    autostart: SEXP,
) -> SEXP {
    entry(|| {
        // SAFETY: arguments of this .Call.
        let e = unsafe { object(tag, namespace, timeout, autostart, |s, k, o| s.entry(k, o)) }?;
        // SAFETY: returned to R at once.
        Ok(unsafe { entry_info(&e) })
    })
}

/// The names of object_info()'s list, in order.
const INFO_NAMES: [&str; 12] = [
    "tag",
    "namespace",
    "size",
    "ctime",
    "class",
    "type",
    "length",
    "dim",
    "description",
    "zero_copy",
    "version",
    "storage",
];

/// A character vector of `items`, unprotected.
///
/// # Safety
/// As `scalar_real`.
unsafe fn strings<S: AsRef<str>>(items: &[S]) -> SEXP {
    // SAFETY: allocating on R's main thread; the vector is protected while
    // its elements are made.
    unsafe {
        let n = isize::try_from(items.len()).unwrap_or(0);
        let v = Rf_protect(Rf_allocVector(SEXPTYPE::STRSXP, n));
        for (i, s) in items.iter().enumerate() {
            let s = s.as_ref();
            let len = i32::try_from(s.len()).unwrap_or(0);
            let c = Rf_mkCharLenCE(s.as_ptr().cast(), len, cetype_t::CE_UTF8);
            SET_STRING_ELT(v, isize::try_from(i).unwrap_or(0), c);
        }
        Rf_unprotect(1);
        v
    }
}

/// object_info()'s list of an entry, unprotected.
///
/// # Safety
/// As `scalar_real`.
#[allow(
    clippy::cast_precision_loss,
    reason = "sizes, lengths and versions below 2^53, times in seconds"
)]
unsafe fn entry_info(e: &yaplr_core::Entry) -> SEXP {
    let m = &e.meta;
    // SAFETY: allocating on R's main thread; the list is protected while
    // its elements are made, and each is stored in it as soon as it is
    // made (before anything else allocates).
    unsafe {
        let list = Rf_protect(Rf_allocVector(SEXPTYPE::VECSXP, 12));
        SET_VECTOR_ELT(list, 0, string(&e.tag));
        SET_VECTOR_ELT(list, 1, string(&e.namespace));
        SET_VECTOR_ELT(list, 2, scalar_real(e.size as f64));
        let ctime = scalar_real(e.ctime_ns as f64 / 1e9);
        SET_VECTOR_ELT(list, 3, ctime);
        set_attr(ctime, c"class", strings(&["POSIXct", "POSIXt"]));
        SET_VECTOR_ELT(list, 4, strings(&m.class));
        SET_VECTOR_ELT(list, 5, string(&m.rtype));
        SET_VECTOR_ELT(list, 6, scalar_real(m.length as f64));
        if !m.dim.is_empty() {
            let d = Rf_allocVector(SEXPTYPE::INTSXP, isize::try_from(m.dim.len()).unwrap_or(0));
            SET_VECTOR_ELT(list, 7, d);
            for (i, x) in m.dim.iter().enumerate() {
                // NA above R's integer range.
                *INTEGER(d).add(i) = i32::try_from(*x).unwrap_or(i32::MIN);
            }
        }
        if let Some(d) = &m.description {
            SET_VECTOR_ELT(list, 8, string(d));
        }
        SET_VECTOR_ELT(list, 9, logical(yaplr_core::session::is_zero_copy(e)));
        SET_VECTOR_ELT(list, 10, scalar_real(e.version as f64));
        SET_VECTOR_ELT(list, 11, string(if e.inline { "inline" } else { "file" }));
        set_attr(list, c"names", strings(&INFO_NAMES));
        Rf_unprotect(1);
        list
    }
}

/// `op` on the counter `name` of the store in use, with the operand that
/// `operand` checks (after the name and namespace, before the timeout).
fn counter<A, T>(
    name: Value<'_>,
    namespace: Value<'_>,
    timeout: Value<'_>,
    operand: impl FnOnce() -> Checked<A>,
    op: impl FnOnce(&mut Session, &Key, A, &CallOptions<'_>) -> yaplr_core::Result<T>,
) -> Checked<T> {
    let settings = Settings::read();
    let key = args::name_key_or_option_v(name, namespace, &settings)?;
    let a = operand()?;
    let opts = args::options_or_defaults_v(timeout, &settings)?;
    with_current(&settings, |h| {
        h.run(opts.autostart, |s| op(s, &key, a, &opts))
            .map_err(h.fail(Some(key.tag())))
    })
}

/// The number R gets for a counter's value (at most 2^53 in absolute
/// value, which a double holds exactly).
#[allow(
    clippy::cast_precision_loss,
    reason = "counter values are within ±2^53"
)]
fn real(v: i64) -> f64 {
    v as f64
}

/// `.Call` routine of counter_add(name, by, namespace, timeout).
///
/// # Safety
/// Called by R's `.Call` with its arguments.
pub unsafe extern "C" fn yaplr_counter_add(
    name: SEXP,
    by: SEXP,
    namespace: SEXP,
    timeout: SEXP,
) -> SEXP {
    entry(|| {
        // SAFETY: arguments of this .Call.
        let (name, by, namespace, timeout) = unsafe {
            (
                Value::arg(name),
                Value::arg(by),
                Value::arg(namespace),
                Value::arg(timeout),
            )
        };
        let by = || args::counter_value_v(by, "by");
        let v = counter(name, namespace, timeout, by, Session::counter_add)?;
        // SAFETY: returned to R at once.
        Ok(unsafe { scalar_real(real(v)) })
    })
}

/// `.Call` routine of counter_get(name, namespace, timeout).
///
/// # Safety
/// Called by R's `.Call` with its arguments.
pub unsafe extern "C" fn yaplr_counter_get(name: SEXP, namespace: SEXP, timeout: SEXP) -> SEXP {
    entry(|| {
        // SAFETY: arguments of this .Call.
        let (name, namespace, timeout) =
            unsafe { (Value::arg(name), Value::arg(namespace), Value::arg(timeout)) };
        let v = counter(
            name,
            namespace,
            timeout,
            || Ok(()),
            |s, k, (), o| s.counter_get(k, o),
        )?;
        // SAFETY: returned to R at once.
        Ok(unsafe { scalar_real(real(v)) })
    })
}

/// `.Call` routine of counter_set(name, value, namespace, timeout).
///
/// # Safety
/// Called by R's `.Call` with its arguments.
pub unsafe extern "C" fn yaplr_counter_set(
    name: SEXP,
    value: SEXP,
    namespace: SEXP,
    timeout: SEXP,
) -> SEXP {
    entry(|| {
        // SAFETY: arguments of this .Call.
        let (name, value, namespace, timeout) = unsafe {
            (
                Value::arg(name),
                Value::arg(value),
                Value::arg(namespace),
                Value::arg(timeout),
            )
        };
        let value = || args::counter_value_v(value, "value");
        let v = counter(name, namespace, timeout, value, |s, k, v, o| {
            s.counter_set(k, v, o).map(|()| v)
        })?;
        // SAFETY: returned to R at once.
        Ok(unsafe { scalar_real(real(v)) })
    })
}

/// `.Call` routine of counter_cas(name, old, new, namespace, timeout).
///
/// # Safety
/// Called by R's `.Call` with its arguments.
pub unsafe extern "C" fn yaplr_counter_cas(
    name: SEXP,
    old: SEXP,
    new: SEXP,
    namespace: SEXP,
    timeout: SEXP,
) -> SEXP {
    entry(|| {
        // SAFETY: arguments of this .Call.
        let (name, old, new, namespace, timeout) = unsafe {
            (
                Value::arg(name),
                Value::arg(old),
                Value::arg(new),
                Value::arg(namespace),
                Value::arg(timeout),
            )
        };
        let operands = || {
            let old = args::counter_value_v(old, "old")?;
            Ok((old, args::counter_value_v(new, "new")?))
        };
        let swapped = counter(name, namespace, timeout, operands, |s, k, (old, new), o| {
            s.counter_cas(k, old, new, o)
        })?;
        // SAFETY: returned to R at once.
        Ok(logical(swapped))
    })
}

/// `.Call` routine of acquire_lock(name, namespace, timeout): a
/// yaplr_lock handle (see lock_handle.rs).
///
/// # Safety
/// Called by R's `.Call` with its arguments.
pub unsafe extern "C" fn yaplr_acquire_lock(name: SEXP, namespace: SEXP, timeout: SEXP) -> SEXP {
    entry(|| {
        // SAFETY: arguments of this .Call.
        let (name, namespace, timeout) =
            unsafe { (Value::arg(name), Value::arg(namespace), Value::arg(timeout)) };
        let settings = Settings::read();
        let key = args::name_key_or_option_v(name, namespace, &settings)?;
        let opts = args::options_or_defaults_v(timeout, &settings)?;
        let held = with_current(&settings, |h| {
            h.run(opts.autostart, |s| s.acquire_lock(&key, &opts))
                .map_err(h.fail(Some(key.tag())))
        })?;
        // SAFETY: returned to R at once.
        Ok(unsafe { lock_handle::make(held) })
    })
}

/// `.Call` routine of release_lock(lock): TRUE, or FALSE when the handle
/// was released before. Anything but a live handle is a condition (the R
/// layer words the one for a value that is no yaplr_lock at all).
///
/// # Safety
/// Called by R's `.Call` with its argument.
pub unsafe extern "C" fn yaplr_release_lock(lock: SEXP) -> SEXP {
    entry(|| {
        // SAFETY: an argument of this .Call.
        let tag = match unsafe { lock_handle::of(lock) } {
            lock_handle::Handle::Released => return Ok(logical(false)),
            lock_handle::Handle::Not | lock_handle::Handle::Detached => {
                return Err(RError::argument(
                    Error::BadArgument(
                        "this lock handle is no longer attached (it was saved and restored, or \
                         sent to another process): only the process that acquired a lock \
                         releases it."
                            .into(),
                    ),
                    None,
                ))
            }
            lock_handle::Handle::Live(held) => held.key.tag().to_string(),
        };
        // SAFETY: a live handle, an argument of this .Call.
        unsafe { lock_handle::release(lock) }
            .map_err(|e| RError::argument(e, Some(Robj::from(tag))))?;
        Ok(logical(true))
    })
}

/// `.Call` routine of the fields of a lock handle, for its print method
/// (see lock_handle::fields).
///
/// # Safety
/// Called by R's `.Call` with its argument.
pub unsafe extern "C" fn yaplr_lock_fields(lock: SEXP) -> SEXP {
    entry(|| {
        // SAFETY: an argument of this .Call.
        let fields = unsafe { lock_handle::fields(lock) }?;
        // SAFETY: returned to R at once.
        Ok(unsafe { fields.get() })
    })
}

/// `.Call` routine of the task callback that flushes the young lock
/// handles (see lock_handle.rs).
///
/// # Safety
/// Called by R's `.Call`.
pub unsafe extern "C" fn yaplr_flush_lock_handles() -> SEXP {
    let _ = std::panic::catch_unwind(lock_handle::flush);
    // SAFETY: R_NilValue is set once R has started.
    unsafe { extendr_ffi::R_NilValue }
}

/// The routines of this module, for R_init_yaplr: (name, function, number
/// of arguments).
pub fn routines() -> Vec<Func> {
    fn routine(c_name: &'static str, func_ptr: *const u8, args: &[&'static str]) -> Func {
        Func {
            doc: "",
            rust_name: c_name,
            mod_name: "fast",
            r_name: c_name,
            c_name,
            args: args
                .iter()
                .map(|&name| Arg {
                    name,
                    arg_type: "Robj",
                    default: None,
                })
                .collect(),
            return_type: "Robj",
            func_ptr,
            hidden: true,
            invisible: None,
        }
    }
    vec![
        routine(
            "yaplr_object_exists",
            yaplr_object_exists as *const u8,
            &["tag", "namespace", "timeout", "automatic_server_start"],
        ),
        routine(
            "yaplr_object_info",
            yaplr_object_info as *const u8,
            &["tag", "namespace", "timeout", "automatic_server_start"],
        ),
        routine(
            "yaplr_counter_add",
            yaplr_counter_add as *const u8,
            &["name", "by", "namespace", "timeout"],
        ),
        routine(
            "yaplr_counter_get",
            yaplr_counter_get as *const u8,
            &["name", "namespace", "timeout"],
        ),
        routine(
            "yaplr_counter_set",
            yaplr_counter_set as *const u8,
            &["name", "value", "namespace", "timeout"],
        ),
        routine(
            "yaplr_counter_cas",
            yaplr_counter_cas as *const u8,
            &["name", "old", "new", "namespace", "timeout"],
        ),
        routine(
            "yaplr_acquire_lock",
            yaplr_acquire_lock as *const u8,
            &["name", "namespace", "timeout"],
        ),
        routine(
            "yaplr_lock_fields",
            yaplr_lock_fields as *const u8,
            &["lock"],
        ),
        routine(
            "yaplr_flush_lock_handles",
            yaplr_flush_lock_handles as *const u8,
            &[],
        ),
        routine(
            "yaplr_release_lock",
            yaplr_release_lock as *const u8,
            &["lock"],
        ),
    ]
}
