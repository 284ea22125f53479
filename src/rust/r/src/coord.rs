//! The glue of the coordination functions: barriers (and, beside them,
//! counters, locks and queues). Each takes the session handle, then the
//! arguments of the exported R function as the user gave them.

use crate::args;
use crate::conditions::RError;
use crate::objects::{decode_found, parse_meta, release_all, RObject};
use crate::progress::{self, Transfer, Verb};
use crate::session::{handle, resolve};
use extendr_api::prelude::*;
use extendr_ffi::{
    cetype_t, Rf_allocVector, Rf_install, Rf_mkCharLenCE, Rf_protect, Rf_setAttrib, Rf_unprotect,
    LOGICAL, REAL, SET_STRING_ELT, SEXP, SEXPTYPE,
};
use yaplr_core::backend::{HeldLock, QueueLease};
use yaplr_core::progress::Meter;
use yaplr_core::session;
use yaplr_core::Payload;

type Done<T> = std::result::Result<T, RError>;

/// The most processes a barrier waits for.
const MAX_BARRIER: u32 = 1 << 20;

/// @noRd
#[extendr]
fn barrier_(
    session: Robj,
    name: Robj,
    n: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<bool> {
    let key = args::name_key(&name, &namespace)?;
    let n = args::count(&n, "n", MAX_BARRIER)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.barrier(&key, n, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    Ok(true)
}

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn queue_push_(
    session: Robj,
    name: Robj,
    obj: Robj,
    meta: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    progress: f64,
) -> Done<()> {
    let key = args::name_key(&name, &namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let meta = parse_meta(&meta, None);
    let h = handle(&session)?;
    let mut transfer = Transfer::one(Verb::Send, key.tag(), progress::delay(progress));
    let mut source = RObject::new(&obj);
    h.run(opts.autostart, |s| {
        s.queue_push(&key, &mut source, meta, &opts, &mut transfer)
    })
    .map_err(h.fail(Some(key.tag())))
}

/// A list holding the item, or with `ack = FALSE` a list holding
/// list(value, seq, token) for the R layer to make a yaplr_queue_item.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn queue_pop_(
    session: Robj,
    name: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    ack: Robj,
    copy: Robj,
    progress: f64,
) -> Done<List> {
    let key = args::name_key(&name, &namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let ack = args::flag(&ack, "ack", None)?;
    let copy = args::flag(&copy, "copy", None)?;
    let h = handle(&session)?;
    let tag = key.tag();
    let mut transfer = Transfer::one(Verb::Retrieve, tag, progress::delay(progress));
    let (value, lease) = h
        .run(opts.autostart, |s| {
            let popped = s.queue_pop(&key, !ack, &opts)?;
            let found = popped.found;
            let total = match &found.payload {
                Payload::File(_) => Some(found.entry.size),
                Payload::Bytes(_) => None,
            };
            let mut meter = Meter::new(&mut transfer, total);
            match decode_found(found, copy, &mut meter).map_err(|e| session::damaged(e, tag)) {
                Ok(v) => Ok((v, popped.lease)),
                Err(e) => {
                    // An interrupted read hands the item back; a damaged
                    // one is completed all the same, as it would fail
                    // every consumer.
                    if let Some(l) = &popped.lease {
                        let quick = yaplr_core::CallOptions {
                            interrupted: &|| false,
                            ..opts.no_start()
                        };
                        let _ = match e {
                            yaplr_core::Error::Interrupted { .. } => s.queue_requeue(l, &quick),
                            _ => s.queue_ack(l, &quick),
                        };
                    }
                    Err(e)
                }
            }
        })
        .map_err(h.fail(Some(tag)))?;
    // SAFETY: preserved when made; the list protects it before its
    // preservation is released.
    let robj = unsafe { Robj::from_sexp(value) };
    let out = match lease {
        None => Ok(List::from_values([robj])),
        Some(l) => List::from_names_and_values(
            ["value", "seq", "token"],
            [robj, Robj::from(l.seq as f64), Robj::from(l.token as f64)],
        )
        .map(|item| List::from_values([item])),
    };
    release_all(vec![value]);
    Ok(out?)
}

/// @noRd
#[extendr]
fn queue_ack_(
    session: Robj,
    name: Robj,
    namespace: Robj,
    seq: f64,
    token: f64,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<()> {
    let key = args::name_key(&name, &namespace)?;
    // A helper restarted since the pop knows the lease from its journal.
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let lease = QueueLease {
        key,
        seq: args::bytes_from_r(seq),
        token: args::bytes_from_r(token),
    };
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.queue_ack(&lease, &opts))
        .map_err(h.fail(Some(lease.key.tag())))
}

/// c(ready, leased)
/// @noRd
#[extendr]
fn queue_length_(
    session: Robj,
    name: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<Vec<f64>> {
    let key = args::name_key(&name, &namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    let (ready, leased) = h
        .run(opts.autostart, |s| s.queue_length(&key, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    Ok(vec![ready as f64, leased as f64])
}

/// @noRd
#[extendr]
fn counter_add_(session: Robj, name: Robj, by: Robj, namespace: Robj, timeout: Robj) -> Done<f64> {
    let key = args::name_key_or_option(&name, &namespace)?;
    let by = args::counter_value(&by, "by")?;
    let opts = args::options_or_defaults(&timeout)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    let v = h
        .run(opts.autostart, |s| s.counter_add(&key, by, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    Ok(v as f64)
}

/// @noRd
#[extendr]
fn counter_get_(session: Robj, name: Robj, namespace: Robj, timeout: Robj) -> Done<f64> {
    let key = args::name_key_or_option(&name, &namespace)?;
    let opts = args::options_or_defaults(&timeout)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    let v = h
        .run(opts.autostart, |s| s.counter_get(&key, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    Ok(v as f64)
}

/// @noRd
#[extendr]
fn counter_set_(
    session: Robj,
    name: Robj,
    value: Robj,
    namespace: Robj,
    timeout: Robj,
) -> Done<f64> {
    let key = args::name_key_or_option(&name, &namespace)?;
    let value = args::counter_value(&value, "value")?;
    let opts = args::options_or_defaults(&timeout)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.counter_set(&key, value, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    Ok(value as f64)
}

/// @noRd
#[extendr]
fn counter_cas_(
    session: Robj,
    name: Robj,
    old: Robj,
    new: Robj,
    namespace: Robj,
    timeout: Robj,
) -> Done<bool> {
    let key = args::name_key_or_option(&name, &namespace)?;
    let old = args::counter_value(&old, "old")?;
    let new = args::counter_value(&new, "new")?;
    let opts = args::options_or_defaults(&timeout)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.counter_cas(&key, old, new, &opts))
        .map_err(h.fail(Some(key.tag())))
}

/// A lock this process holds: a yaplr_lock handle (an external pointer
/// with the lock's name, namespace and holder).
/// @noRd
#[extendr]
fn acquire_lock_(session: Robj, name: Robj, namespace: Robj, timeout: Robj) -> Done<Robj> {
    let key = args::name_key_or_option(&name, &namespace)?;
    let opts = args::options_or_defaults(&timeout)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    let held = h
        .run(opts.autostart, |s| s.acquire_lock(&key, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    let (pid, died) = (held.pid, held.previous_holder_died);
    let ptr: Robj = ExternalPtr::new(Some(held)).into();
    // SAFETY: `ptr` is a live, protected SEXP; each attribute's value is
    // protected from its allocation until it is set (see set_attr).
    unsafe {
        let x = ptr.get();
        set_attr(x, c"name", string(key.tag()));
        set_attr(x, c"namespace", string(key.namespace()));
        set_attr(x, c"pid", scalar_real(f64::from(pid)));
        set_attr(x, c"previous_holder_died", scalar_logical(died));
        set_attr(x, c"class", string("yaplr_lock"));
    }
    Ok(ptr)
}

// Raw R values for the attributes of a lock handle, made without
// extendr's bookkeeping of protected objects: acquiring a lock must take
// microseconds.

/// A character vector holding `s` (UTF-8), unprotected.
///
/// # Safety
/// On R's main thread; the result must be protected before R allocates.
unsafe fn string(s: &str) -> SEXP {
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

/// A double vector of length 1, unprotected.
///
/// # Safety
/// As `string`.
unsafe fn scalar_real(x: f64) -> SEXP {
    // SAFETY: a fresh double vector of length 1 has one element to set.
    unsafe {
        let v = Rf_allocVector(SEXPTYPE::REALSXP, 1);
        *REAL(v) = x;
        v
    }
}

/// A logical vector of length 1, unprotected.
///
/// # Safety
/// As `string`.
unsafe fn scalar_logical(x: bool) -> SEXP {
    // SAFETY: a fresh logical vector of length 1 has one element to set.
    unsafe {
        let v = Rf_allocVector(SEXPTYPE::LGLSXP, 1);
        *LOGICAL(v) = i32::from(x);
        v
    }
}

/// Set attribute `name` of `x` to `value`, protecting `value` meanwhile.
///
/// # Safety
/// On R's main thread, `x` protected, `value` just made.
unsafe fn set_attr(x: SEXP, name: &std::ffi::CStr, value: SEXP) {
    // SAFETY: as the function's contract says; Rf_install takes a
    // NUL-terminated name.
    unsafe {
        Rf_protect(value);
        Rf_setAttrib(x, Rf_install(name.as_ptr()), value);
        Rf_unprotect(1);
    }
}

/// Release the lock of a handle made by acquire_lock_(); FALSE when the
/// handle was released before. A handle that R collects unreleased
/// releases its lock (see HeldLock).
/// @noRd
#[extendr]
fn release_lock_(lock: Robj) -> Done<bool> {
    let detached = || {
        RError::argument(
            yaplr_core::Error::BadArgument(
                "this lock handle is no longer attached (it was saved and restored, or sent to \
                 another process): only the process that acquired a lock releases it."
                    .into(),
            ),
            None,
        )
    };
    let mut lock = lock;
    let ptr = <&mut ExternalPtr<Option<HeldLock>>>::try_from(&mut lock).map_err(|_| detached())?;
    let slot: &mut Option<HeldLock> = ptr.try_addr_mut().map_err(|_| detached())?;
    let Some(held) = slot.as_ref() else {
        return Ok(false);
    };
    if let Err(e) = held.release() {
        let tag = Robj::from(held.key.tag());
        return Err(RError::argument(e, Some(tag)));
    }
    *slot = None;
    Ok(true)
}

/// list(held, pid, since) of the lock `name`.
/// @noRd
#[extendr]
fn lock_info_(session: Robj, name: Robj, namespace: Robj, timeout: Robj) -> Done<List> {
    let key = args::name_key_or_option(&name, &namespace)?;
    let opts = args::options_or_defaults(&timeout)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    let holder = h
        .run(opts.autostart, |s| s.lock_holder(&key, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    let (held, pid, since): (Robj, Robj, Robj) = match holder {
        Some(x) => (
            true.into(),
            f64::from(x.pid).into(),
            crate::objects::posixct(x.since_ns)?,
        ),
        None => (false.into(), Robj::from(Rfloat::na()), {
            let mut t = Robj::from(Rfloat::na());
            t.set_class(["POSIXct", "POSIXt"])?;
            t
        }),
    };
    Ok(List::from_names_and_values(
        ["name", "namespace", "held", "pid", "since"],
        [
            Robj::from(key.tag()),
            Robj::from(key.namespace()),
            held,
            pid,
            since,
        ],
    )?)
}

extendr_module! {
    mod coord;
    fn barrier_;
    fn counter_add_;
    fn counter_get_;
    fn counter_set_;
    fn counter_cas_;
    fn acquire_lock_;
    fn release_lock_;
    fn lock_info_;
    fn queue_push_;
    fn queue_pop_;
    fn queue_ack_;
    fn queue_length_;
}
