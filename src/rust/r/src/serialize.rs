//! R serialization straight into an object file, and back from a mapping,
//! through custom R_outpstream/R_inpstream callbacks: no intermediate raw
//! vector on either side.

use extendr_ffi::{
    R_NilValue, R_PreserveObject, R_Serialize, R_Unserialize, R_inpstream_st, R_inpstream_t,
    R_outpstream_st, R_outpstream_t, R_pstream_data_t, R_pstream_format_t, SEXP,
};
use std::mem::MaybeUninit;
use std::os::raw::{c_int, c_void};
use yaplr_core::object_file::PayloadSink;
use yaplr_core::progress::Meter;
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
    // Rinterface.h: jumps to the innermost R_ToplevelExec without calling
    // any handler or printing a message.
    fn Rf_jump_to_toplevel() -> !;
}

/// Run `f(data)` inside R_ToplevelExec: an R error in it (reported on the
/// console) ends it and gives false, without jumping over Rust frames.
///
/// # Safety
/// On R's main thread; `f` must accept `data`.
pub unsafe fn toplevel_exec(f: unsafe extern "C" fn(*mut c_void), data: *mut c_void) -> bool {
    R_ToplevelExec(Some(f), data) != 0
}

/// Abandon the R_Serialize or R_Unserialize running (always inside
/// R_ToplevelExec, here) from one of its stream callbacks, so that a long
/// transfer stops at once. R cleans up its own state as on an error.
///
/// # Safety
/// Only from a stream callback that holds nothing to drop: the jump skips
/// the Rust frames between it and R_ToplevelExec.
unsafe fn abandon_stream() -> ! {
    Rf_jump_to_toplevel()
}

struct Sink<'a, 'm> {
    writer: &'a mut dyn PayloadSink,
    meter: &'a mut Meter<'m>,
    error: Option<Error>,
}

unsafe extern "C" fn out_bytes(stream: R_outpstream_t, buf: *mut c_void, n: c_int) {
    // SAFETY: `data` is the Sink we installed; R gives `n` readable bytes.
    let sink = &mut *((*stream).data as *mut Sink<'_, '_>);
    if sink.error.is_some() || n <= 0 {
        return;
    }
    let bytes = std::slice::from_raw_parts(buf as *const u8, n as usize);
    let r = sink
        .writer
        .write(bytes)
        .and_then(|_| sink.meter.add(n as u64));
    if let Err(e) = r {
        // A failed write or Ctrl-C: stop serializing (nothing to drop here).
        sink.error = Some(e);
        abandon_stream();
    }
}

unsafe extern "C" fn out_char(stream: R_outpstream_t, c: c_int) {
    let mut b = c as u8;
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
    let mut sink = Sink {
        writer,
        meter,
        error: None,
    };
    let mut stream = MaybeUninit::<R_outpstream_st>::uninit();
    // SAFETY: R_InitOutPStream fills every field; the sink outlives the
    // stream, which lives only for this call. R_ToplevelExec catches any R
    // error (it is reported on the console) so no jump crosses Rust frames.
    let ok = unsafe {
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
        R_ToplevelExec(
            Some(serialize_cb),
            &call as *const SerializeCall as *mut c_void,
        )
    };
    if let Some(e) = sink.error {
        return Err(e);
    }
    if ok == 0 {
        return Err(Error::BadArgument(
            "the object could not be serialized (see the error above); nothing was stored".into(),
        ));
    }
    Ok(())
}

struct Source<'a, 'm> {
    bytes: &'a [u8],
    pos: usize,
    short: bool,
    meter: &'a mut Meter<'m>,
    error: Option<Error>,
}

unsafe extern "C" fn in_bytes(stream: R_inpstream_t, buf: *mut c_void, n: c_int) {
    // SAFETY: `data` is the Source we installed; R gives room for `n` bytes.
    let src = &mut *((*stream).data as *mut Source<'_, '_>);
    let n = n.max(0) as usize;
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
        // Ctrl-C: stop reading (nothing to drop here).
        src.error = Some(e);
        abandon_stream();
    }
}

unsafe extern "C" fn in_char(stream: R_inpstream_t) -> c_int {
    let mut b = 0u8;
    in_bytes(stream, &mut b as *mut u8 as *mut c_void, 1);
    b as c_int
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
    let mut src = Source {
        bytes,
        pos: 0,
        short: false,
        meter,
        error: None,
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
        let ok = R_ToplevelExec(
            Some(unserialize_cb),
            &mut call as *mut UnserializeCall as *mut c_void,
        );
        (ok, call.result)
    };
    if ok == 0 || result.is_null() || src.short || src.error.is_some() {
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
