//! R serialization straight into an object file, and back from a mapping,
//! through custom R_outpstream/R_inpstream callbacks: no intermediate raw
//! vector on either side.

use crate::ffi::{R_InitInPStream, R_InitOutPStream, R_ToplevelExec, R_tryCatchError};
use extendr_ffi::{
    R_NilValue, R_PreserveObject, R_Serialize, R_Unserialize, R_inpstream_st, R_inpstream_t,
    R_outpstream_st, R_outpstream_t, R_pstream_format_t, Rbyte, Rcomplex, Rf_xlength, R_CHAR, SEXP,
    SEXPTYPE, STRING_ELT, TYPEOF, VECTOR_ELT,
};
use std::ffi::CStr;
use std::mem::{size_of, MaybeUninit};
use std::os::raw::{c_int, c_void};
use yaplr_core::backend::PayloadSink;
use yaplr_core::progress::{Meter, STEP};
use yaplr_core::Error;

/// The R serialization format version written (as serialize(version = 3)).
const SERIALIZE_VERSION: c_int = 3;

/// How many levels of nested lists likely_large looks into.
const LIKELY_LARGE_DEPTH: u32 = 3;

/// What likely_large counts for one string: at least its length (a C int)
/// and a few bytes.
const MIN_STRING_BYTES: u64 = 8;

// About stream callbacks and the callbacks of R_ToplevelExec and
// R_tryCatchError below: R calls them on its main thread, from within the
// R_Serialize, R_Unserialize, R_ToplevelExec or R_tryCatchError call made
// here, with the data pointer given to it (or to R_Init*PStream), which
// points to a value of this module that outlives that call, and with a
// buffer of `n` bytes (readable for output, writable for input). None of
// them can let a Rust panic unwind into R: an `extern "C"` function aborts
// the process instead. An R error raised in them, or in R code below them,
// longjmps to the enclosing R_ToplevelExec or R_tryCatchError over their
// frames, which hold nothing with a destructor at that point.

/// Run `f(data)` inside R_ToplevelExec: an R error in it (reported on the
/// console) ends it and gives false, without jumping over Rust frames.
///
/// # Safety
/// On R's main thread; `f` must accept `data`, and may be ended at any
/// point by an R error (so it must hold nothing with a destructor then).
pub unsafe fn toplevel_exec(f: unsafe extern "C" fn(*mut c_void), data: *mut c_void) -> bool {
    // SAFETY: the caller's contract above is R_ToplevelExec's.
    unsafe { R_ToplevelExec(Some(f), data) != 0 }
}

/// How an R_Serialize or R_Unserialize that may run long is protected:
/// inside R_tryCatchError, so that a stream callback can stop it with an R
/// error (on Ctrl-C), caught silently, with interrupts held so that R
/// itself never jumps to the user's interrupt handler over Rust frames.
/// Short ones run inside R_ToplevelExec, which costs nothing but prints an
/// R error raised in it (such as a C stack overflow).
struct Guarded {
    f: unsafe extern "C" fn(*mut c_void),
    data: *mut c_void,
}

/// The body of R_tryCatchError: runs the guarded function.
///
/// # Safety
/// Called by R_tryCatchError in run_guarded only (see the note on
/// callbacks above), with `data` the `Guarded` given there.
unsafe extern "C" fn guarded_body(data: *mut c_void) -> SEXP {
    // SAFETY: `data` is run_guarded's `Guarded`, alive for the call, whose
    // `f` accepts its `data` (run_guarded's contract); an R error in it is
    // caught by R_tryCatchError, over this frame with nothing to drop.
    unsafe {
        let g = &*(data as *const Guarded);
        (g.f)(g.data);
        R_NilValue
    }
}

/// Keeps the message of the R error that ended a guarded call.
///
/// # Safety
/// Called by R_tryCatchError in run_guarded only (see the note on
/// callbacks above), with `cond` the error condition and `out` the
/// `Option<String>` given there.
unsafe extern "C" fn guarded_failed(cond: SEXP, out: *mut c_void) -> SEXP {
    // SAFETY: `out` is run_guarded's `failed`, alive and not otherwise
    // borrowed during the call.
    let out = unsafe { &mut *(out as *mut Option<String>) };
    let mut message = String::new();
    // SAFETY: cond is a live condition object (a list), which R protects
    // during the handler; these accessors only read it, checking types and
    // lengths first, and R_CHAR gives a NUL-terminated string of a CHARSXP.
    unsafe {
        if TYPEOF(cond) == SEXPTYPE::VECSXP && Rf_xlength(cond) > 0 {
            let m = VECTOR_ELT(cond, 0);
            if TYPEOF(m) == SEXPTYPE::STRSXP && Rf_xlength(m) > 0 {
                message = CStr::from_ptr(R_CHAR(STRING_ELT(m, 0)))
                    .to_string_lossy()
                    .into_owned();
            }
        }
    }
    *out = Some(message);
    // SAFETY: R_NilValue is a libR global set once R has started.
    unsafe { R_NilValue }
}

/// Run `f(data)`, stoppable (see Guarded) or not. Err carries the message
/// of the R error that ended it, when it was caught.
///
/// # Safety
/// On R's main thread; `f` must accept `data`, and may be ended at any
/// point by an R error (so it must hold nothing with a destructor then).
unsafe fn run_guarded(
    stoppable: bool,
    f: unsafe extern "C" fn(*mut c_void),
    data: *mut c_void,
) -> Result<(), Option<String>> {
    if !stoppable {
        // SAFETY: the caller's contract above is R_ToplevelExec's.
        return if unsafe { R_ToplevelExec(Some(f), data) } != 0 {
            Ok(())
        } else {
            Err(None)
        };
    }
    let mut g = Guarded { f, data };
    let mut failed: Option<String> = None;
    crate::progress::with_interrupts_held(|| {
        // SAFETY: on R's main thread; guarded_body and guarded_failed get
        // `g` and `failed`, which outlive the call. R_tryCatchError catches
        // any R error of the body, and interrupts are held, so no jump
        // leaves it: with_interrupts_held restores R's flag.
        unsafe {
            R_tryCatchError(
                Some(guarded_body),
                &mut g as *mut Guarded as *mut c_void,
                Some(guarded_failed),
                &mut failed as *mut Option<String> as *mut c_void,
            )
        }
    });
    match failed {
        None => Ok(()),
        Some(m) => Err(Some(m)),
    }
}

/// Stop the stoppable R_Serialize or R_Unserialize running, from one of its
/// stream callbacks.
///
/// # Safety
/// Only from a stream callback of a stoppable call (run by run_guarded
/// inside R_tryCatchError), with nothing to drop in any Rust frame up to
/// R_tryCatchError: the R error jumps over them to it.
unsafe fn stop_stream() -> ! {
    // SAFETY: a "%s" format with one NUL-terminated string argument; the
    // jump lands in R_tryCatchError (the caller's contract above).
    unsafe { extendr_ffi::Rf_error(c"%s".as_ptr(), c"yaplr: transfer stopped".as_ptr()) }
}

/// Whether serializing `x` will likely write at least STEP bytes (so that
/// it must be stoppable): the elements of its atomic vectors, looking two
/// levels into lists. Cheap: it stops counting at STEP.
fn likely_large(x: SEXP) -> bool {
    fn size(x: SEXP, depth: u32, acc: &mut u64) {
        // SAFETY: x and its elements are live SEXPs, protected by the
        // caller's protection of the object, on R's main thread; these
        // accessors only read them and raise no R error.
        unsafe {
            let len = Rf_xlength(x);
            let n = u64::try_from(len).unwrap_or(0);
            match TYPEOF(x) {
                SEXPTYPE::LGLSXP | SEXPTYPE::INTSXP => *acc += size_of::<c_int>() as u64 * n,
                SEXPTYPE::REALSXP => *acc += size_of::<f64>() as u64 * n,
                SEXPTYPE::CPLXSXP => *acc += size_of::<Rcomplex>() as u64 * n,
                SEXPTYPE::RAWSXP => *acc += size_of::<Rbyte>() as u64 * n,
                SEXPTYPE::STRSXP => *acc += MIN_STRING_BYTES * n,
                SEXPTYPE::VECSXP | SEXPTYPE::EXPRSXP if depth < LIKELY_LARGE_DEPTH => {
                    for i in 0..len {
                        if *acc >= STEP {
                            return;
                        }
                        size(VECTOR_ELT(x, i), depth + 1, acc);
                    }
                }
                _ => {}
            }
        }
    }
    let mut acc = 0;
    size(x, 0, &mut acc);
    acc >= STEP
}

struct Sink<'a, 'm> {
    writer: &'a mut dyn PayloadSink,
    meter: &'a mut Meter<'m>,
    error: Option<Error>,
    /// R_Serialize runs stoppable (see Guarded).
    stoppable: bool,
}

/// OutBytes of the output stream: writes R's bytes to the sink.
///
/// # Safety
/// Called by R_Serialize only (see the note on callbacks above), with the
/// stream set up in serialize_into, whose data is the `Sink`, and `n`
/// readable bytes at `buf`.
unsafe extern "C" fn out_bytes(stream: R_outpstream_t, buf: *mut c_void, n: c_int) {
    // SAFETY: the stream's data is serialize_into's Sink, alive and not
    // otherwise borrowed while R_Serialize runs.
    let sink = unsafe { &mut *((*stream).data as *mut Sink<'_, '_>) };
    if sink.error.is_some() || n <= 0 {
        return;
    }
    // SAFETY: R gives `n > 0` readable bytes at `buf`, for this call.
    let bytes =
        unsafe { std::slice::from_raw_parts(buf as *const u8, usize::try_from(n).unwrap_or(0)) };
    if let Err(e) = sink
        .writer
        .write(bytes)
        .and_then(|_| sink.meter.add(bytes.len() as u64))
    {
        // A failed write or Ctrl-C: stop, or (a small object) let R walk the
        // rest of it, writing nothing.
        sink.error = Some(e);
        if sink.stoppable {
            // SAFETY: a stoppable R_Serialize runs inside R_tryCatchError
            // (run_guarded), and nothing with a destructor is live here or
            // in guarded_body and serialize_cb (the error is in the sink).
            unsafe { stop_stream() };
        }
    }
}

/// OutChar of the output stream: one byte.
///
/// # Safety
/// As out_bytes.
unsafe extern "C" fn out_char(stream: R_outpstream_t, c: c_int) {
    // R passes one byte as an int: its low 8 bits.
    let mut b = c.to_le_bytes()[0];
    // SAFETY: the stream is ours (the contract above), and `b` is one
    // readable byte for the call.
    unsafe { out_bytes(stream, &mut b as *mut u8 as *mut c_void, 1) };
}

struct SerializeCall {
    obj: SEXP,
    stream: *mut R_outpstream_st,
}

/// Runs R_Serialize for serialize_into.
///
/// # Safety
/// Called through run_guarded only (see the note on callbacks above), with
/// `data` serialize_into's `SerializeCall`.
unsafe extern "C" fn serialize_cb(data: *mut c_void) {
    // SAFETY: `data` is a live SerializeCall, whose object is protected by
    // serialize_into's caller and whose stream is initialized; an R error
    // jumps over this frame, which holds nothing to drop.
    unsafe {
        let call = &*(data as *const SerializeCall);
        R_Serialize(call.obj, call.stream);
    }
}

/// Serialize `obj` (format version 3, native binary) into `writer`,
/// counting the bytes on `meter` (whose hook may abort it).
pub fn serialize_into(
    obj: SEXP,
    writer: &mut dyn PayloadSink,
    meter: &mut Meter<'_>,
) -> Result<(), Error> {
    let stoppable = likely_large(obj);
    let mut sink = Sink {
        writer,
        meter,
        error: None,
        stoppable,
    };
    let mut stream = MaybeUninit::<R_outpstream_st>::uninit();
    // SAFETY: on R's main thread, with `obj` protected by the caller.
    // R_InitOutPStream fills every field; the sink outlives the stream,
    // which lives only for this call, and the callbacks match what the
    // stream's data is. run_guarded catches any R error, so no jump crosses
    // the Rust frames of this function or its callers; the frames it does
    // cross (serialize_cb, out_bytes) hold nothing to drop.
    let ran = unsafe {
        R_InitOutPStream(
            stream.as_mut_ptr(),
            &mut sink as *mut Sink<'_, '_> as *mut c_void,
            R_pstream_format_t::R_pstream_binary_format,
            SERIALIZE_VERSION,
            Some(out_char),
            Some(out_bytes),
            None,
            R_NilValue,
        );
        let call = SerializeCall {
            obj,
            stream: stream.as_mut_ptr(),
        };
        run_guarded(
            stoppable,
            serialize_cb,
            &call as *const SerializeCall as *mut c_void,
        )
    };
    if let Some(e) = sink.error {
        return Err(e);
    }
    match ran {
        Ok(()) => Ok(()),
        Err(None) => Err(Error::BadArgument(
            "the object could not be serialized (see the error above); nothing was stored".into(),
        )),
        Err(Some(m)) => Err(Error::BadArgument(format!(
            "the object could not be serialized ({m}); nothing was stored"
        ))),
    }
}

struct Source<'a, 'm> {
    bytes: &'a [u8],
    pos: usize,
    short: bool,
    meter: &'a mut Meter<'m>,
    error: Option<Error>,
    /// R_Unserialize runs stoppable (see Guarded).
    stoppable: bool,
}

/// InBytes of the input stream: gives R the next `n` bytes of the source.
///
/// # Safety
/// Called by R_Unserialize only (see the note on callbacks above), with the
/// stream set up in unserialize_from, whose data is the `Source`, and room
/// for `n` bytes at `buf`.
unsafe extern "C" fn in_bytes(stream: R_inpstream_t, buf: *mut c_void, n: c_int) {
    // SAFETY: the stream's data is unserialize_from's Source, alive and not
    // otherwise borrowed while R_Unserialize runs.
    let src = unsafe { &mut *((*stream).data as *mut Source<'_, '_>) };
    let n = usize::try_from(n).unwrap_or(0);
    // SAFETY: R gives `n` writable bytes at `buf`, for this call, which it
    // does not read while we fill them.
    let out = unsafe { std::slice::from_raw_parts_mut(buf as *mut u8, n) };
    let avail = src.bytes.len() - src.pos;
    if n > avail {
        // Never read past the payload; R gets zeros and we report damage.
        src.short = true;
        out.fill(0);
        out[..avail].copy_from_slice(&src.bytes[src.pos..]);
        src.pos = src.bytes.len();
        return;
    }
    out.copy_from_slice(&src.bytes[src.pos..src.pos + n]);
    src.pos += n;
    if let Err(e) = src.meter.add(n as u64) {
        // Ctrl-C: stop, or (a small payload) read it to its end.
        src.error = Some(e);
        if src.stoppable {
            // SAFETY: a stoppable R_Unserialize runs inside R_tryCatchError
            // (run_guarded), and nothing with a destructor is live here or
            // in guarded_body and unserialize_cb (the error is in the
            // source).
            unsafe { stop_stream() };
        }
    }
}

/// InChar of the input stream: one byte.
///
/// # Safety
/// As in_bytes.
unsafe extern "C" fn in_char(stream: R_inpstream_t) -> c_int {
    let mut b = 0u8;
    // SAFETY: the stream is ours (the contract above), and `b` is room for
    // one byte for the call.
    unsafe { in_bytes(stream, &mut b as *mut u8 as *mut c_void, 1) };
    c_int::from(b)
}

struct UnserializeCall {
    stream: *mut R_inpstream_st,
    result: SEXP,
}

/// Runs R_Unserialize for unserialize_from.
///
/// # Safety
/// Called through run_guarded only (see the note on callbacks above), with
/// `data` unserialize_from's `UnserializeCall`.
unsafe extern "C" fn unserialize_cb(data: *mut c_void) {
    // SAFETY: `data` is a live UnserializeCall, not otherwise borrowed,
    // whose stream is initialized; an R error jumps over this frame, which
    // holds nothing to drop, leaving `result` null. The result is preserved
    // (kept alive until the caller takes ownership) before anything else
    // can allocate.
    unsafe {
        let call = &mut *(data as *mut UnserializeCall);
        let v = R_Unserialize(call.stream);
        R_PreserveObject(v);
        call.result = v;
    }
}

/// Unserialize an object from `bytes`, counting them on `meter` (whose
/// hook may abort it). The result is preserved with R_PreserveObject; the
/// caller must release it.
pub fn unserialize_from(bytes: &[u8], tag: &str, meter: &mut Meter<'_>) -> Result<SEXP, Error> {
    let stoppable = bytes.len() as u64 >= STEP;
    let mut src = Source {
        bytes,
        pos: 0,
        short: false,
        meter,
        error: None,
        stoppable,
    };
    let mut stream = MaybeUninit::<R_inpstream_st>::uninit();
    // SAFETY: as in serialize_into; the source outlives the stream, and the
    // frames an R error crosses (unserialize_cb, in_bytes) hold nothing to
    // drop.
    let (ok, result) = unsafe {
        R_InitInPStream(
            stream.as_mut_ptr(),
            &mut src as *mut Source<'_, '_> as *mut c_void,
            R_pstream_format_t::R_pstream_any_format,
            Some(in_char),
            Some(in_bytes),
            None,
            R_NilValue,
        );
        let mut call = UnserializeCall {
            stream: stream.as_mut_ptr(),
            result: std::ptr::null_mut(),
        };
        let data = &mut call as *mut UnserializeCall as *mut c_void;
        let ran = run_guarded(stoppable, unserialize_cb, data);
        (ran.is_ok(), call.result)
    };
    if !ok || result.is_null() || src.short || src.error.is_some() {
        if !result.is_null() {
            // SAFETY: preserved once in unserialize_cb, released once here,
            // on R's main thread.
            unsafe { extendr_ffi::R_ReleaseObject(result) };
        }
        if let Some(e) = src.error {
            return Err(e);
        }
        return Err(Error::corrupt(format!(
            "the stored object \"{tag}\" could not be read back: its data is damaged"
        )));
    }
    Ok(result)
}
