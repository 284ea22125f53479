//! The parts of R's C API that extendr-ffi does not bind, declared once for
//! the whole glue crate (with the one C library function R's printing
//! relies on). Everything extendr-ffi binds is used from there.
//!
//! Every declaration names the R header it comes from and follows its C
//! prototype. An `Rboolean` result or global is declared as `c_int`: it is
//! an int-sized C enum, and reading it as `c_int` never produces a value
//! outside the Rust enum `extendr_ffi::Rboolean`.
//!
//! All of R's API, and these globals, may only be used on R's main thread.
//! The glue runs only there: R calls its entry points (the extendr wrappers,
//! the ALTREP methods, the stream callbacks, R_init_yaplr) on that thread.

use extendr_ffi::{
    R_inpstream_t, R_outpstream_t, R_pstream_data_t, R_pstream_format_t, SEXP, SEXPTYPE,
};
use std::cell::UnsafeCell;
use std::os::raw::{c_char, c_int, c_void};

/// `void (*outchar)(R_outpstream_t, int)` of R_InitOutPStream.
pub type OutCharFn = Option<unsafe extern "C" fn(R_outpstream_t, c_int)>;
/// `void (*outbytes)(R_outpstream_t, void *, int)` of R_InitOutPStream.
pub type OutBytesFn = Option<unsafe extern "C" fn(R_outpstream_t, *mut c_void, c_int)>;
/// `int (*inchar)(R_inpstream_t)` of R_InitInPStream.
pub type InCharFn = Option<unsafe extern "C" fn(R_inpstream_t) -> c_int>;
/// `void (*inbytes)(R_inpstream_t, void *, int)` of R_InitInPStream.
pub type InBytesFn = Option<unsafe extern "C" fn(R_inpstream_t, *mut c_void, c_int)>;
/// `SEXP (*phook)(SEXP, SEXP)`: the persistence hook of both streams.
pub type PersistHookFn = Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>;
/// `void (*fun)(void *)` of R_ToplevelExec.
pub type ToplevelFn = Option<unsafe extern "C" fn(*mut c_void)>;
/// `SEXP (*)(void *)`: the body closure of R_tryCatchError.
pub type TryBodyFn = Option<unsafe extern "C" fn(*mut c_void) -> SEXP>;
/// `SEXP (*)(SEXP, void *)`: the handler closure of R_tryCatchError.
pub type TryHandlerFn = Option<unsafe extern "C" fn(SEXP, *mut c_void) -> SEXP>;

// SEXP is a pointer to an opaque struct of extendr-ffi, which the
// improper_ctypes lint does not accept; it is a plain pointer in C.
#[allow(improper_ctypes)]
extern "C" {
    /// Rinternals.h: `SEXP (ATTRIB)(SEXP x);`
    pub fn ATTRIB(x: SEXP) -> SEXP;

    /// Rinternals.h: `Rboolean R_ToplevelExec(void (*fun)(void *), void *data);`
    pub fn R_ToplevelExec(fun: ToplevelFn, data: *mut c_void) -> c_int;

    /// Rinternals.h: `SEXP R_tryCatchError(SEXP (*)(void *), void *,
    /// SEXP (*)(SEXP, void *), void *);`
    pub fn R_tryCatchError(
        body: TryBodyFn,
        bdata: *mut c_void,
        handler: TryHandlerFn,
        hdata: *mut c_void,
    ) -> SEXP;

    /// Rinternals.h: `void R_InitOutPStream(R_outpstream_t stream,
    /// R_pstream_data_t data, R_pstream_format_t type, int version,
    /// void (*outchar)(R_outpstream_t, int),
    /// void (*outbytes)(R_outpstream_t, void *, int),
    /// SEXP (*phook)(SEXP, SEXP), SEXP pdata);`
    #[allow(clippy::too_many_arguments)]
    pub fn R_InitOutPStream(
        stream: R_outpstream_t,
        data: R_pstream_data_t,
        type_: R_pstream_format_t,
        version: c_int,
        outchar: OutCharFn,
        outbytes: OutBytesFn,
        phook: PersistHookFn,
        pdata: SEXP,
    );

    /// Rinternals.h: `cetype_t Rf_getCharCE(SEXP);` (cetype_t is an
    /// int-sized C enum: CE_NATIVE 0, CE_UTF8 1, CE_LATIN1 2, CE_BYTES 3).
    pub fn Rf_getCharCE(x: SEXP) -> c_int;

    /// Rinternals.h: `const char *Rf_translateCharUTF8(SEXP);` (the string
    /// lives in memory R frees when the .Call returns).
    pub fn Rf_translateCharUTF8(x: SEXP) -> *const c_char;

    /// Rinternals.h: `const char *Rf_type2char(SEXPTYPE);` (the name
    /// typeof() gives).
    pub fn Rf_type2char(t: SEXPTYPE) -> *const c_char;

    /// Rinternals.h: `int Rf_GetOptionDigits(void);`
    pub fn Rf_GetOptionDigits() -> c_int;

    /// Rinternals.h: `SEXP Rf_ScalarLogical(int x);` (R's shared TRUE,
    /// FALSE or NA: nothing is allocated).
    pub fn Rf_ScalarLogical(x: c_int) -> SEXP;

    /// Rinternals.h: `SEXP Rf_findVarInFrame(SEXP rho, SEXP symbol);`
    pub fn Rf_findVarInFrame(rho: SEXP, symbol: SEXP) -> SEXP;

    /// Rinternals.h: `SEXP Rf_lastElt(SEXP list);` (the last cell of a
    /// pairlist).
    pub fn Rf_lastElt(list: SEXP) -> SEXP;

    /// Rinternals.h: `SEXP Rf_GetOption1(SEXP tag);`
    pub fn Rf_GetOption1(tag: SEXP) -> SEXP;

    /// Rinternals.h: `void R_InitInPStream(R_inpstream_t stream,
    /// R_pstream_data_t data, R_pstream_format_t type,
    /// int (*inchar)(R_inpstream_t),
    /// void (*inbytes)(R_inpstream_t, void *, int),
    /// SEXP (*phook)(SEXP, SEXP), SEXP pdata);`
    pub fn R_InitInPStream(
        stream: R_inpstream_t,
        data: R_pstream_data_t,
        type_: R_pstream_format_t,
        inchar: InCharFn,
        inbytes: InBytesFn,
        phook: PersistHookFn,
        pdata: SEXP,
    );
}

/// CE_UTF8 of `cetype_t` (Rinternals.h).
pub const CE_UTF8: c_int = 1;
/// CE_LATIN1 of `cetype_t` (Rinternals.h).
pub const CE_LATIN1: c_int = 2;
/// CE_BYTES of `cetype_t` (Rinternals.h).
pub const CE_BYTES: c_int = 3;

extern "C" {
    /// The C library's wctype.h: `int iswprint(wint_t wc);` (not R's, but
    /// what R's encodeString() asks on Linux about a wide character).
    pub fn iswprint(wc: u32) -> c_int;
}

/// An `int` global of libR that R (and R's SIGINT handler) reads and writes
/// behind Rust's back. It is only ever read or written whole, with volatile
/// loads and stores, so that no access is cached or elided; the
/// `UnsafeCell` tells Rust that it changes through a shared reference, so
/// the extern statics need not be mutable.
///
/// Values of this type exist only as the extern statics below: there is no
/// constructor.
#[repr(transparent)]
pub struct RInt(UnsafeCell<c_int>);

impl RInt {
    /// The current value.
    pub fn get(&self) -> c_int {
        // SAFETY: `self` is one of libR's int globals (see the type), valid
        // and aligned for the life of the process. The glue accesses it only
        // on R's main thread, where R's own code does not run concurrently
        // with ours. R's SIGINT handler, which may run at any moment, only
        // stores a whole aligned int (1) to R_interrupts_pending, as R's own
        // C code assumes: a volatile load sees the value before or after.
        unsafe { self.0.get().read_volatile() }
    }

    /// Store `v`.
    pub fn set(&self, v: c_int) {
        // SAFETY: as in `get`: a whole, volatile store to a valid, aligned
        // int on R's main thread.
        unsafe { self.0.get().write_volatile(v) }
    }
}

extern "C" {
    /// R_ext/GraphicsDevice.h: `LibExtern Rboolean R_interrupts_suspended;`
    /// (Rboolean is an int-sized C enum).
    #[link_name = "R_interrupts_suspended"]
    static R_INTERRUPTS_SUSPENDED: RInt;

    /// R_ext/GraphicsDevice.h: `LibExtern int R_interrupts_pending;`
    /// (set to 1 by R's SIGINT handler).
    #[link_name = "R_interrupts_pending"]
    static R_INTERRUPTS_PENDING: RInt;
}

/// R's flag of a Ctrl-C not yet processed.
pub fn interrupts_pending() -> &'static RInt {
    // SAFETY: a shared reference to an extern static that libR defines as
    // an int for the life of the process; all mutation goes through its
    // UnsafeCell.
    unsafe { &R_INTERRUPTS_PENDING }
}

/// R's flag that holds interrupts pending instead of processing them.
pub fn interrupts_suspended() -> &'static RInt {
    // SAFETY: as in `interrupts_pending`.
    unsafe { &R_INTERRUPTS_SUSPENDED }
}

thread_local! {
    /// The symbols `symbol` interned, by the address of their name.
    static SYMBOLS: std::cell::RefCell<Vec<(usize, SEXP)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// The symbol `name`, interned once (Rf_install hashes its name on every
/// call; R never frees a symbol). Only on R's main thread.
pub fn symbol(name: &'static std::ffi::CStr) -> SEXP {
    let key = name.as_ptr() as usize;
    SYMBOLS.with(|s| {
        if let Some(&(_, sym)) = s.borrow().iter().find(|(k, _)| *k == key) {
            return sym;
        }
        // SAFETY: interning a NUL-terminated name on R's main thread.
        let sym = unsafe { extendr_ffi::Rf_install(name.as_ptr()) };
        s.borrow_mut().push((key, sym));
        sym
    })
}
