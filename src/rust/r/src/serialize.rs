//! R serialization straight into an object file, and back from a mapping,
//! through custom R_outpstream/R_inpstream callbacks: no intermediate raw
//! vector on either side.

use extendr_ffi::{
    R_NilValue, R_PreserveObject, R_Serialize, R_Unserialize, R_inpstream_st, R_inpstream_t,
    R_outpstream_st, R_outpstream_t, R_pstream_data_t, R_pstream_format_t, Rf_xlength, R_CHAR,
    SEXP, SEXPTYPE, STRING_ELT, TYPEOF, VECTOR_ELT,
};
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_void};
use yaplr_core::object_file::PayloadSink;
use yaplr_core::progress::{Meter, STEP};
use yaplr_core::Error;

type OutChar = Option<unsafe extern "C" fn(R_outpstream_t, c_int)>;
type OutBytes = Option<unsafe extern "C" fn(R_outpstream_t, *mut c_void, c_int)>;
type InChar = Option<unsafe extern "C" fn(R_inpstream_t) -> c_int>;
type InBytes = Option<unsafe extern "C" fn(R_inpstream_t, *mut c_void, c_int)>;
type Hook = Option<unsafe extern "C" fn(SEXP, SEXP) -> SEXP>;

// SEXP is an opaque pointer to R; these are declared as in Rinternals.h.
#[allow(improper_ctypes)]
extern "C" {
    fn R_InitOutPStream(
        stream: R_outpstream_t,
        data: R_pstream_data_t,
        type_: R_pstream_format_t,
        version: c_int,
        out_char: OutChar,
        out_bytes: OutBytes,
        phook: Hook,
        pdata: SEXP,
    );
    fn R_InitInPStream(
        stream: R_inpstream_t,
        data: R_pstream_data_t,
        type_: R_pstream_format_t,
        in_char: InChar,
        in_bytes: InBytes,
        phook: Hook,
        pdata: SEXP,
    );
    fn R_ToplevelExec(fun: Option<unsafe extern "C" fn(*mut c_void)>, data: *mut c_void) -> c_int;
    fn R_tryCatchError(
        body: Option<unsafe extern "C" fn(*mut c_void) -> SEXP>,
        bdata: *mut c_void,
        handler: Option<unsafe extern "C" fn(SEXP, *mut c_void) -> SEXP>,
        hdata: *mut c_void,
    ) -> SEXP;
}

/// Run `f(data)` inside R_ToplevelExec: an R error in it (reported on the
/// console) ends it and gives false, without jumping over Rust frames.
///
/// # Safety
/// On R's main thread; `f` must accept `data`.
pub unsafe fn toplevel_exec(f: unsafe extern "C" fn(*mut c_void), data: *mut c_void) -> bool {
    R_ToplevelExec(Some(f), data) != 0
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

unsafe extern "C" fn guarded_body(data: *mut c_void) -> SEXP {
    let g = &*(data as *const Guarded);
    (g.f)(g.data);
    R_NilValue
}

/// Keeps the message of the R error that ended a guarded call.
unsafe extern "C" fn guarded_failed(cond: SEXP, out: *mut c_void) -> SEXP {
    let out = &mut *(out as *mut Option<String>);
    let mut message = String::new();
    if TYPEOF(cond) == SEXPTYPE::VECSXP && Rf_xlength(cond) > 0 {
        let m = VECTOR_ELT(cond, 0);
        if TYPEOF(m) == SEXPTYPE::STRSXP && Rf_xlength(m) > 0 {
            message = CStr::from_ptr(R_CHAR(STRING_ELT(m, 0)))
                .to_string_lossy()
                .into_owned();
        }
    }
    *out = Some(message);
    R_NilValue
}

/// Run `f(data)`, stoppable (see Guarded) or not. Err carries the message
/// of the R error that ended it, when it was caught.
///
/// # Safety
/// On R's main thread; `f` must accept `data`.
unsafe fn run_guarded(
    stoppable: bool,
    f: unsafe extern "C" fn(*mut c_void),
    data: *mut c_void,
) -> Result<(), Option<String>> {
    if !stoppable {
        return if R_ToplevelExec(Some(f), data) != 0 {
            Ok(())
        } else {
            Err(None)
        };
    }
    let mut g = Guarded { f, data };
    let mut failed: Option<String> = None;
    crate::progress::with_interrupts_held(|| {
        R_tryCatchError(
            Some(guarded_body),
            &mut g as *mut Guarded as *mut c_void,
            Some(guarded_failed),
            &mut failed as *mut Option<String> as *mut c_void,
        )
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
/// Only from a stream callback of a stoppable call, holding nothing to
/// drop: the R error jumps over it to R_tryCatchError.
unsafe fn stop_stream() -> ! {
    extendr_ffi::Rf_error(c"%s".as_ptr(), c"yaplr: transfer stopped".as_ptr())
}

/// Whether serializing `x` will likely write at least STEP bytes (so that
/// it must be stoppable): the elements of its atomic vectors, looking two
/// levels into lists. Cheap: it stops counting at STEP.
fn likely_large(x: SEXP) -> bool {
    fn size(x: SEXP, depth: u32, acc: &mut u64) {
        // SAFETY: read-only accessors on live SEXPs.
        unsafe {
            let len = Rf_xlength(x);
            let n = u64::try_from(len).unwrap_or(0);
            match TYPEOF(x) {
                SEXPTYPE::LGLSXP | SEXPTYPE::INTSXP => *acc += 4 * n,
                SEXPTYPE::REALSXP => *acc += 8 * n,
                SEXPTYPE::CPLXSXP => *acc += 16 * n,
                SEXPTYPE::RAWSXP => *acc += n,
                // At least a length and a few bytes per string.
                SEXPTYPE::STRSXP => *acc += 8 * n,
                SEXPTYPE::VECSXP | SEXPTYPE::EXPRSXP if depth < 3 => {
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

unsafe extern "C" fn out_bytes(stream: R_outpstream_t, buf: *mut c_void, n: c_int) {
    // SAFETY: `data` is the Sink we installed; R gives `n` readable bytes.
    let sink = &mut *((*stream).data as *mut Sink<'_, '_>);
    if sink.error.is_some() || n <= 0 {
        return;
    }
    // Positive, checked above.
    let bytes = std::slice::from_raw_parts(buf as *const u8, usize::try_from(n).unwrap_or(0));
    if let Err(e) = sink
        .writer
        .write(bytes)
        .and_then(|_| sink.meter.add(bytes.len() as u64))
    {
        // A failed write or Ctrl-C: stop, or (a small object) let R walk the
        // rest of it, writing nothing.
        sink.error = Some(e);
        if sink.stoppable {
            stop_stream();
        }
    }
}

unsafe extern "C" fn out_char(stream: R_outpstream_t, c: c_int) {
    // The low byte, as R's stream writes a char.
    let mut b = c.to_le_bytes()[0];
    out_bytes(stream, &mut b as *mut u8 as *mut c_void, 1);
}

struct SerializeCall {
    obj: SEXP,
    stream: *mut R_outpstream_st,
}

unsafe extern "C" fn serialize_cb(data: *mut c_void) {
    let call = &*(data as *const SerializeCall);
    R_Serialize(call.obj, call.stream);
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
    // SAFETY: R_InitOutPStream fills every field; the sink outlives the
    // stream, which lives only for this call. run_guarded catches any R
    // error so no jump crosses Rust frames.
    let ran = unsafe {
        R_InitOutPStream(
            stream.as_mut_ptr(),
            &mut sink as *mut Sink<'_, '_> as *mut c_void,
            R_pstream_format_t::R_pstream_binary_format,
            3,
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

unsafe extern "C" fn in_bytes(stream: R_inpstream_t, buf: *mut c_void, n: c_int) {
    // SAFETY: `data` is the Source we installed; R gives room for `n` bytes.
    let src = &mut *((*stream).data as *mut Source<'_, '_>);
    let n = usize::try_from(n).unwrap_or(0);
    let out = std::slice::from_raw_parts_mut(buf as *mut u8, n);
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
            stop_stream();
        }
    }
}

unsafe extern "C" fn in_char(stream: R_inpstream_t) -> c_int {
    let mut b = 0u8;
    in_bytes(stream, &mut b as *mut u8 as *mut c_void, 1);
    c_int::from(b)
}

struct UnserializeCall {
    stream: *mut R_inpstream_st,
    result: SEXP,
}

unsafe extern "C" fn unserialize_cb(data: *mut c_void) {
    let call = &mut *(data as *mut UnserializeCall);
    let v = R_Unserialize(call.stream);
    // Kept alive until the caller takes ownership.
    R_PreserveObject(v);
    call.result = v;
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
    // SAFETY: as in serialize_into; the source outlives the stream.
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
            // SAFETY: we preserved it above.
            unsafe { extendr_ffi::R_ReleaseObject(result) };
        }
        if let Some(e) = src.error {
            return Err(e);
        }
        return Err(Error::Corrupt {
            message: format!(
                "the stored object \"{tag}\" could not be read back: its data is damaged"
            ),
        });
    }
    Ok(result)
}
