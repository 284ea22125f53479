//! Plain atomic vectors stored as raw elements, read back as copies (with
//! pread) or, when large, through the ALTREP class that returns them as
//! zero-copy views of a copy-on-write (MAP_PRIVATE) mapping of their object
//! file. A view behaves as an ordinary vector: a write
//! copies the touched pages for this process only, never the file. The
//! mapping is released when R garbage-collects the view; it stays valid
//! after the tag is removed or overwritten, or the helper quits, because an
//! unlinked file stays mapped.

use extendr_ffi::{
    R_ClearExternalPtr, R_ExternalPtrAddr, R_MakeExternalPtr, R_NilValue, R_RegisterCFinalizerEx,
    R_altrep_class_t, R_altrep_data1, R_make_altcomplex_class, R_make_altinteger_class,
    R_make_altlogical_class, R_make_altraw_class, R_make_altreal_class, R_new_altrep,
    R_set_altcomplex_Elt_method, R_set_altinteger_Elt_method, R_set_altlogical_Elt_method,
    R_set_altraw_Elt_method, R_set_altreal_Elt_method, R_set_altrep_Duplicate_method,
    R_set_altrep_Inspect_method, R_set_altrep_Length_method, R_set_altvec_Dataptr_method,
    R_set_altvec_Dataptr_or_null_method, R_xlen_t, Rboolean, Rbyte, Rcomplex, Rf_allocVector,
    Rf_isObject, Rf_isS4, Rf_protect, Rf_unprotect, Rprintf, COMPLEX_GET_REGION, DATAPTR,
    DATAPTR_OR_NULL, INTEGER_GET_REGION, LOGICAL_GET_REGION, RAW_GET_REGION, REAL_GET_REGION,
    SET_ATTRIB, SET_OBJECT, SEXP, SEXPTYPE, TYPEOF,
};
use std::cell::Cell;
use std::fs::File;
use std::mem::size_of;
use std::os::raw::{c_int, c_void};
use std::os::unix::fs::FileExt;
use yaplr_core::backend::PayloadSink;
use yaplr_core::format::INLINE_MAX;
use yaplr_core::format::{
    check_complete, Header, ObjectMap, VectorHeader, HEADER_SIZE, VECTOR_HEADER_SIZE,
};
use yaplr_core::progress::{Meter, Silent, STEP_USIZE};
use yaplr_core::Error;

use crate::ffi::ATTRIB;
use crate::serialize;

/// Vectors with fewer data bytes than this travel as R serialization
/// (inline in the helper's journal when small enough); larger ones are
/// stored as their raw elements.
pub const MIN_RAW_VECTOR_BYTES: u64 = INLINE_MAX as u64;

/// Bytes of the buffer through which an ALTREP vector without a data
/// pointer (a compact sequence such as 1:n) is copied, region by region.
const REGION_BUF_BYTES: usize = 1 << 20;

// The SEXPTYPE codes of the vectors stored as raw elements, as the vector
// header records them.
const LGLSXP: u32 = SEXPTYPE::LGLSXP as u32;
const INTSXP: u32 = SEXPTYPE::INTSXP as u32;
const REALSXP: u32 = SEXPTYPE::REALSXP as u32;
const CPLXSXP: u32 = SEXPTYPE::CPLXSXP as u32;
const RAWSXP: u32 = SEXPTYPE::RAWSXP as u32;

// The size of one element of each: LGLSXP and INTSXP elements are C ints.
#[allow(
    clippy::cast_possible_truncation,
    reason = "element sizes are a few bytes"
)]
mod elt {
    use super::*;
    pub const INT: u32 = size_of::<c_int>() as u32;
    pub const REAL: u32 = size_of::<f64>() as u32;
    pub const CPLX: u32 = size_of::<Rcomplex>() as u32;
    pub const RAW: u32 = size_of::<Rbyte>() as u32;
}
const INT_ELT_BYTES: u32 = elt::INT;
const REAL_ELT_BYTES: u32 = elt::REAL;
const CPLX_ELT_BYTES: u32 = elt::CPLX;
const RAW_ELT_BYTES: u32 = elt::RAW;

fn sexptype_of(t: u32) -> SEXPTYPE {
    match t {
        LGLSXP => SEXPTYPE::LGLSXP,
        INTSXP => SEXPTYPE::INTSXP,
        REALSXP => SEXPTYPE::REALSXP,
        CPLXSXP => SEXPTYPE::CPLXSXP,
        _ => SEXPTYPE::RAWSXP,
    }
}

fn elt_size(sexptype: u32) -> Option<u32> {
    match sexptype {
        LGLSXP | INTSXP => Some(INT_ELT_BYTES),
        REALSXP => Some(REAL_ELT_BYTES),
        CPLXSXP => Some(CPLX_ELT_BYTES),
        RAWSXP => Some(RAW_ELT_BYTES),
        _ => None,
    }
}

/// The vector header for `x` if it is a plain atomic vector worth storing
/// as raw elements.
pub fn as_vector(x: SEXP) -> Option<VectorHeader> {
    // SAFETY: x is a live SEXP, protected by the caller, on R's main
    // thread; these accessors only read it, allocate nothing and cannot
    // raise an R error.
    unsafe {
        let sexptype = TYPEOF(x) as u32;
        let elt = elt_size(sexptype)?;
        if bool::from(Rf_isS4(x)) {
            return None;
        }
        let length = u64::try_from(extendr_ffi::Rf_xlength(x)).unwrap_or(0);
        if (length * u64::from(elt)) < MIN_RAW_VECTOR_BYTES {
            return None;
        }
        Some(VectorHeader {
            sexptype,
            elt_size: elt,
            length,
            object: u32::from(bool::from(Rf_isObject(x))),
        })
    }
}

/// Write `x` (described by `h`) as a KIND_R_VECTOR payload, counting the
/// bytes on `meter` (whose hook may abort it).
pub fn write_vector(
    x: SEXP,
    h: &VectorHeader,
    w: &mut dyn PayloadSink,
    meter: &mut Meter<'_>,
) -> Result<(), Error> {
    w.write(&h.encode())?;
    // A plain vector gives its buffer; an ALTREP one without a buffer (a
    // compact sequence such as 1:n) is copied by regions, so sending it
    // neither expands it in this session nor allocates in R.
    // SAFETY: x is protected by the caller for the whole call, on R's main
    // thread; DATAPTR_OR_NULL allocates nothing and raises no R error.
    let ptr = unsafe { DATAPTR_OR_NULL(x) };
    let too_large = || Error::BadArgument("the vector does not fit in memory".into());
    if !ptr.is_null() {
        // SAFETY: `h` describes `x` (as_vector), so its buffer holds
        // h.data_len() bytes; it stays valid and unchanged while this call,
        // which runs no R code, reads it.
        let n = usize::try_from(h.data_len()).map_err(|_| too_large())?;
        // SAFETY: as above.
        let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, n) };
        meter.write_all(data, |piece| w.write(piece))?;
    } else {
        // Whole u64 words, so that the buffer is aligned for every element
        // type (c_int, f64, Rcomplex, Rbyte).
        let mut words = vec![0u64; REGION_BUF_BYTES / size_of::<u64>()];
        let per = REGION_BUF_BYTES / h.elt_size as usize;
        let per = R_xlen_t::try_from(per).unwrap_or(R_xlen_t::MAX);
        let total = R_xlen_t::try_from(h.length).map_err(|_| too_large())?;
        let mut at: R_xlen_t = 0;
        while at < total {
            let n = per.min(total - at);
            let b = words.as_mut_ptr() as *mut u8;
            // SAFETY: x is live and protected, of type h.sexptype with
            // h.length elements, and `at + n` is within it; the buffer holds
            // REGION_BUF_BYTES bytes, room for `per >= n` elements, and is
            // aligned for the element type. R writes at most n elements.
            let got = unsafe {
                match h.sexptype {
                    REALSXP => REAL_GET_REGION(x, at, n, b as *mut f64),
                    INTSXP => INTEGER_GET_REGION(x, at, n, b as *mut c_int),
                    LGLSXP => LOGICAL_GET_REGION(x, at, n, b as *mut c_int),
                    RAWSXP => RAW_GET_REGION(x, at, n, b),
                    _ => COMPLEX_GET_REGION(x, at, n, b as *mut Rcomplex),
                }
            };
            if got <= 0 {
                return Err(Error::BadArgument(
                    "the vector could not be read; nothing was stored".into(),
                ));
            }
            // SAFETY: the words are initialized and span REGION_BUF_BYTES
            // bytes; u8 has no alignment or validity requirement.
            let bytes = unsafe {
                std::slice::from_raw_parts(words.as_ptr() as *const u8, REGION_BUF_BYTES)
            };
            // Positive, checked above.
            let got_n = usize::try_from(got).unwrap_or(0);
            let piece = &bytes[..got_n * h.elt_size as usize];
            w.write(piece)?;
            meter.add(piece.len() as u64)?;
            at += got;
        }
    }
    // SAFETY: ATTRIB only reads the live, protected x; R_NilValue is a
    // libR global set once R has started.
    let (attrib, nil) = unsafe { (ATTRIB(x), R_NilValue) };
    if attrib != nil {
        serialize::serialize_into(attrib, w, meter)?;
    }
    Ok(())
}

/// Attributes stored after the elements, unserialized (None when none).
/// The result is preserved; the caller releases it.
fn read_attributes(bytes: &[u8], tag: &str) -> Result<Option<SEXP>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    serialize::unserialize_from(bytes, tag, &mut Meter::new(&mut Silent, None)).map(Some)
}

fn check_type(h: &VectorHeader, tag: &str) -> Result<(), Error> {
    if elt_size(h.sexptype) != Some(h.elt_size) {
        return Err(Error::corrupt(format!(
            "the stored object \"{tag}\" has an unknown vector type"
        )));
    }
    Ok(())
}

/// The R vector of a KIND_R_VECTOR object as a zero-copy view of its
/// copy-on-write mapping (see Found::content), whose vector header and
/// attribute bytes were read from its file. The result is preserved; the
/// caller releases it.
pub fn read_view(
    mut map: ObjectMap,
    h: &VectorHeader,
    attributes: &[u8],
    tag: &str,
) -> Result<SEXP, Error> {
    check_type(h, tag)?;
    let length = length_as::<R_xlen_t>(h.length, tag)?;
    let attrs = read_attributes(attributes, tag)?;
    let Some(base) = map.payload_mut_ptr() else {
        release(attrs);
        return Err(Error::corrupt(format!(
            "the stored object \"{tag}\" is not mapped copy-on-write"
        )));
    };
    let Some(class) = class_for(h.sexptype) else {
        release(attrs);
        return Err(Error::corrupt("vector class not registered"));
    };
    let view = Box::new(View {
        length,
        // SAFETY: the mapping holds the whole payload (open_with checked
        // the file's length), which starts with the vector header read from
        // the file, whose elements decode_prefix found to fit the payload;
        // they follow the header in the same mapping.
        data: unsafe { base.add(VECTOR_HEADER_SIZE) },
        _map: map,
    });
    // SAFETY: on R's main thread. The external pointer and the view are
    // protected from their creation until the view is preserved, and the
    // attributes stay preserved until SET_ATTRIB has stored them in it. The
    // View (and the mapping its data points into) is owned by the external
    // pointer from here on, and freed only by finalize_view. An R error
    // (out of memory) in an allocation here jumps over this frame, which
    // then holds no Rust value with a destructor: it would only leak.
    unsafe {
        let ptr = Rf_protect(R_MakeExternalPtr(
            Box::into_raw(view) as *mut c_void,
            R_NilValue,
            R_NilValue,
        ));
        // Not at exit: a finalizer running later could still read the view,
        // and the process unmaps everything when it ends anyway.
        R_RegisterCFinalizerEx(ptr, Some(finalize_view), Rboolean::FALSE);
        let v = Rf_protect(R_new_altrep(class, ptr, R_NilValue));
        if let Some(a) = attrs {
            SET_ATTRIB(v, a);
            SET_OBJECT(v, c_int::try_from(h.object).unwrap_or(0));
        }
        release(attrs);
        extendr_ffi::R_PreserveObject(v);
        // ptr and v.
        Rf_unprotect(2);
        Ok(v)
    }
}

struct Alloc {
    sexptype: SEXPTYPE,
    length: R_xlen_t,
    result: SEXP,
}

/// Allocate and preserve the vector that `data` describes; run by
/// R_ToplevelExec.
///
/// # Safety
/// `data` must point to a live `Alloc`, not otherwise borrowed, and the
/// call must come from R_ToplevelExec on R's main thread: an R error (out
/// of memory) jumps back to it over this frame, leaving `result` null.
unsafe extern "C" fn alloc_cb(data: *mut c_void) {
    // SAFETY: per the contract above, `data` is our exclusive `Alloc`.
    let a = unsafe { &mut *(data as *mut Alloc) };
    // SAFETY: on R's main thread, inside R_ToplevelExec; this frame holds
    // nothing with a destructor, so an R error jumping over it is harmless.
    // The new vector is preserved before anything else can allocate.
    unsafe {
        let v = Rf_allocVector(a.sexptype, a.length);
        extendr_ffi::R_PreserveObject(v);
        a.result = v;
    }
}

/// A new R vector, preserved; an error instead of a jump when R has no
/// memory for it.
fn alloc_vector(h: &VectorHeader, tag: &str) -> Result<SEXP, Error> {
    let mut a = Alloc {
        sexptype: sexptype_of(h.sexptype),
        length: length_as(h.length, tag)?,
        result: std::ptr::null_mut(),
    };
    // SAFETY: on R's main thread; alloc_cb gets the `Alloc` it expects,
    // which outlives the call, and R_ToplevelExec confines R's error (out
    // of memory) to it.
    let ok = unsafe { serialize::toplevel_exec(alloc_cb, &mut a as *mut Alloc as *mut c_void) };
    if !ok || a.result.is_null() {
        return Err(Error::io(
            format!("allocating {} bytes for a copy of \"{tag}\"", h.data_len()),
            std::io::Error::from_raw_os_error(libc::ENOMEM),
        ));
    }
    Ok(a.result)
}

/// The R vector of a KIND_R_VECTOR object as an ordinary vector, read from
/// its file with pread (no mapping), counting the bytes on `meter` (whose
/// hook may abort it). The result is preserved; the caller releases it.
pub fn read_copy(
    file: &File,
    header: &Header,
    tag: &str,
    meter: &mut Meter<'_>,
) -> Result<SEXP, Error> {
    let damaged = |e: std::io::Error| {
        Error::corrupt(format!("object \"{tag}\" could not be read whole: {e}"))
    };
    check_complete(file, header)?;
    let base = HEADER_SIZE as u64;
    let mut head = [0u8; VECTOR_HEADER_SIZE];
    file.read_exact_at(&mut head, base).map_err(damaged)?;
    let h = VectorHeader::decode_prefix(&head, header.payload_len)?;
    check_type(&h, tag)?;
    let data_len = length_as::<usize>(h.data_len(), tag)?;
    let data_at = base + VECTOR_HEADER_SIZE as u64;
    let attrs_at = data_at + h.data_len();
    let mut attr_bytes = vec![0u8; length_as(base + header.payload_len - attrs_at, tag)?];
    file.read_exact_at(&mut attr_bytes, attrs_at)
        .map_err(damaged)?;
    // The payload is checked against its checksum as it is read, in file
    // order: vector header, elements, attributes.
    let mut hasher = yaplr_core::format::Hasher::new();
    hasher.update(&head);
    let attrs = read_attributes(&attr_bytes, tag)?;
    let v = match alloc_vector(&h, tag) {
        Ok(v) => v,
        Err(e) => {
            release(attrs);
            return Err(e);
        }
    };
    let mut at = 0u64;
    let r = if h.data_len() == 0 {
        Ok(())
    } else {
        // SAFETY: v is a preserved, ordinary (not ALTREP) vector of
        // h.data_len() bytes (check_type matched the element size to the
        // type), which nothing else references. R's collector does not move
        // it, so its data stays put even if R code runs (the progress hook)
        // while the slice lives.
        let dst = unsafe { std::slice::from_raw_parts_mut(DATAPTR(v) as *mut u8, data_len) };
        dst.chunks_mut(STEP_USIZE).try_for_each(|piece| {
            file.read_exact_at(piece, data_at + at).map_err(damaged)?;
            hasher.update(piece);
            at += piece.len() as u64;
            meter.add(piece.len() as u64)
        })
    };
    let r = r.and_then(|_| {
        hasher.update(&attr_bytes);
        if header.checksum != 0 && hasher.digest() != header.checksum {
            return Err(Error::Corrupt {
                message: format!(
                    "the stored object \"{tag}\" could not be read back: its data is damaged \
                     (its checksum does not match what was written)"
                ),
                hint: Some(yaplr_core::error::Hint::Resend),
            });
        }
        Ok(())
    });
    if let Err(e) = r {
        release(attrs);
        release(Some(v));
        return Err(e);
    }
    if let Some(a) = attrs {
        // SAFETY: v and a are preserved, live SEXPs, on R's main thread;
        // setting attributes allocates nothing and raises no R error.
        unsafe {
            SET_ATTRIB(v, a);
            SET_OBJECT(v, c_int::try_from(h.object).unwrap_or(0));
        }
    }
    release(attrs);
    Ok(v)
}

/// A length of a stored vector, checked against its payload (so it fits
/// in memory), as a usize or an R_xlen_t; anything else is damage.
fn length_as<T: TryFrom<u64>>(n: u64, tag: &str) -> Result<T, Error> {
    T::try_from(n).map_err(|_| {
        Error::corrupt(format!(
            "the stored object \"{tag}\" is damaged: a length of {n} does not fit in memory"
        ))
    })
}

fn release(x: Option<SEXP>) {
    if let Some(a) = x {
        // SAFETY: every SEXP given here was preserved once when made, and
        // is released once, on R's main thread.
        unsafe { extendr_ffi::R_ReleaseObject(a) };
    }
}

// Elements aligned: those of a view start HEADER_SIZE + VECTOR_HEADER_SIZE
// bytes into a page-aligned mapping, aligned for every element type.
const _: () = assert!(
    (HEADER_SIZE + VECTOR_HEADER_SIZE).is_multiple_of(std::mem::align_of::<Rcomplex>())
        && std::mem::align_of::<Rcomplex>() >= std::mem::align_of::<f64>()
        && std::mem::align_of::<f64>() >= std::mem::align_of::<c_int>()
);

/// What a view's external pointer owns.
struct View {
    length: R_xlen_t,
    /// First element, inside the copy-on-write mapping owned by `_map`.
    data: *mut u8,
    _map: ObjectMap,
}

/// Free the View owned by a view's external pointer; R's C finalizer of it.
///
/// # Safety
/// Called by R's garbage collector, on R's main thread, with the external
/// pointer made in read_view, once it is unreachable (and so is the view
/// that kept it as its data1: no ALTREP method runs on it any more).
unsafe extern "C" fn finalize_view(ptr: SEXP) {
    // SAFETY: ptr is a live external pointer (see the contract above); its
    // address is null or the Box<View> leaked in read_view, which only this
    // finalizer reclaims, after clearing the address so that it cannot run
    // twice on it.
    unsafe {
        let p = R_ExternalPtrAddr(ptr) as *mut View;
        if !p.is_null() {
            R_ClearExternalPtr(ptr);
            drop(Box::from_raw(p));
        }
    }
}

/// What the view `x` owns.
///
/// # Safety
/// `x` must be one of our views (of a class registered here), live, on R's
/// main thread; the reference must not outlive `x`.
unsafe fn view(x: SEXP) -> &'static View {
    // SAFETY: x's data1 is the external pointer made in read_view, whose
    // address is the View, cleared only by finalize_view, which runs once
    // x is unreachable; the View is never mutated after it is made.
    unsafe { &*(R_ExternalPtrAddr(R_altrep_data1(x)) as *const View) }
}

// The ALTREP methods below are called by R only, on its main thread, with
// `x` a live view of one of the classes registered in yaplr_register_altrep
// (so `view(x)` holds), and with an index `i` within 0..length for the Elt
// methods. None of them can panic (no allocation, no indexing with bounds
// checks, no unwrap): a panic could not unwind into R anyway, since an
// `extern "C"` function aborts the process instead. Only duplicate_method
// calls into R in a way that may raise an R error (out of memory): R then
// jumps over its frame, which holds nothing with a destructor.

/// ALTREP Length method.
///
/// # Safety
/// Called by R only, with a live view (see above).
unsafe extern "C" fn length_method(x: SEXP) -> R_xlen_t {
    // SAFETY: x is one of our live views (see above).
    unsafe { view(x).length }
}

/// ALTVEC Dataptr method: readable and writable alike, since writes land
/// in private copy-on-write pages, never in the file.
///
/// # Safety
/// Called by R only, with a live view (see above).
unsafe extern "C" fn dataptr_method(x: SEXP, _writeable: Rboolean) -> *mut c_void {
    // SAFETY: x is one of our live views (see above).
    unsafe { view(x).data as *mut c_void }
}

/// ALTVEC Dataptr_or_null method: the data is always there.
///
/// # Safety
/// Called by R only, with a live view (see above).
unsafe extern "C" fn dataptr_or_null_method(x: SEXP) -> *const c_void {
    // SAFETY: x is one of our live views (see above).
    unsafe { view(x).data as *const c_void }
}

/// ALTREP Duplicate method: an ordinary vector; R copies the attributes.
///
/// # Safety
/// Called by R only, with a live view (see above).
unsafe extern "C" fn duplicate_method(x: SEXP, _deep: Rboolean) -> SEXP {
    // SAFETY: x is one of our live views (see above), so its type is one
    // of ours and its data holds `length` elements of it: `bytes` bytes,
    // which the new vector of the same type and length holds too. The new
    // vector is protected while it is filled; an R error in its allocation
    // jumps over this frame, which holds nothing with a destructor.
    unsafe {
        let v = view(x);
        let t = TYPEOF(x) as u32;
        let bytes = usize::try_from(v.length).unwrap_or(0) * elt_size(t).unwrap_or(1) as usize;
        let out = Rf_protect(Rf_allocVector(sexptype_of(t), v.length));
        std::ptr::copy_nonoverlapping(v.data as *const u8, DATAPTR(out) as *mut u8, bytes);
        Rf_unprotect(1);
        out
    }
}

/// ALTREP Inspect method (.Internal(inspect(x))).
///
/// # Safety
/// Called by R only, on its main thread.
unsafe extern "C" fn inspect_method(
    _x: SEXP,
    _pre: c_int,
    _deep: c_int,
    _pvec: c_int,
    _inspect_subtree: Option<unsafe extern "C" fn(SEXP, c_int, c_int, c_int)>,
) -> Rboolean {
    // SAFETY: a "%s" format with one NUL-terminated string argument, on
    // R's main thread.
    unsafe {
        Rprintf(
            c"%s".as_ptr(),
            c"yaplr shared vector (copy-on-write mapping)\n".as_ptr(),
        );
    }
    Rboolean::TRUE
}

/// ALTREAL Elt method.
///
/// # Safety
/// Called by R only, with a live real view and `i` within it (see above).
unsafe extern "C" fn real_elt(x: SEXP, i: R_xlen_t) -> f64 {
    // SAFETY: x is a live real view (see above): its data holds `length`
    // doubles, aligned (see "Elements aligned"), and i is within them.
    unsafe { *(view(x).data as *const f64).offset(i) }
}

/// ALTINTEGER and ALTLOGICAL Elt method.
///
/// # Safety
/// Called by R only, with a live integer or logical view and `i` within it
/// (see above).
unsafe extern "C" fn int_elt(x: SEXP, i: R_xlen_t) -> c_int {
    // SAFETY: as in real_elt, for C ints.
    unsafe { *(view(x).data as *const c_int).offset(i) }
}

/// ALTRAW Elt method.
///
/// # Safety
/// Called by R only, with a live raw view and `i` within it (see above).
unsafe extern "C" fn raw_elt(x: SEXP, i: R_xlen_t) -> u8 {
    // SAFETY: as in real_elt, for bytes.
    unsafe { *view(x).data.offset(i) }
}

/// ALTCOMPLEX Elt method.
///
/// # Safety
/// Called by R only, with a live complex view and `i` within it (see
/// above).
unsafe extern "C" fn complex_elt(x: SEXP, i: R_xlen_t) -> Rcomplex {
    // SAFETY: as in real_elt, for Rcomplex.
    unsafe { *(view(x).data as *const Rcomplex).offset(i) }
}

#[derive(Clone, Copy)]
struct Classes {
    real: R_altrep_class_t,
    integer: R_altrep_class_t,
    logical: R_altrep_class_t,
    raw: R_altrep_class_t,
    complex: R_altrep_class_t,
}

thread_local! {
    // Set at package load on R's main thread, read only there (another
    // thread would see None).
    static CLASSES: Cell<Option<Classes>> = const { Cell::new(None) };
}

fn class_for(sexptype: u32) -> Option<R_altrep_class_t> {
    let classes = CLASSES.with(Cell::get)?;
    Some(match sexptype {
        REALSXP => classes.real,
        INTSXP => classes.integer,
        LGLSXP => classes.logical,
        RAWSXP => classes.raw,
        CPLXSXP => classes.complex,
        _ => return None,
    })
}

/// Whether `x` is a view made by this module.
pub fn is_view(x: SEXP) -> bool {
    // SAFETY: x is a live SEXP (the caller's argument), on R's main
    // thread; these accessors only read it and raise no R error.
    unsafe {
        if extendr_ffi::ALTREP(x) == 0 {
            return false;
        }
        class_for(TYPEOF(x) as u32).is_some_and(|cls| extendr_ffi::ALTREP_CLASS(x) == cls.ptr)
    }
}

/// Install the methods every class of views shares.
///
/// # Safety
/// `cls` must be a class just made by an R_make_alt*_class function, on
/// R's main thread, while the package is being loaded.
unsafe fn common(cls: R_altrep_class_t) {
    // SAFETY: per the contract above; the methods match the signatures R
    // expects of them.
    unsafe {
        R_set_altrep_Length_method(cls, Some(length_method));
        R_set_altrep_Duplicate_method(cls, Some(duplicate_method));
        R_set_altrep_Inspect_method(cls, Some(inspect_method));
        R_set_altvec_Dataptr_method(cls, Some(dataptr_method));
        R_set_altvec_Dataptr_or_null_method(cls, Some(dataptr_or_null_method));
    }
}

/// Register the ALTREP classes; called from R_init_yaplr.
///
/// # Safety
/// Must be called once, from R's main thread, with the package's DllInfo.
#[no_mangle]
pub unsafe extern "C" fn yaplr_register_altrep(dll: *mut extendr_ffi::DllInfo) {
    let pkg = c"yaplr".as_ptr();
    // SAFETY: per the contract above: R's main thread, at package load, with
    // the package's DllInfo; the names are NUL-terminated and static, and
    // each class gets methods of the signatures its type expects. R keeps
    // the class objects alive in its class registry.
    let classes = unsafe {
        let real = R_make_altreal_class(c"yaplr_real".as_ptr(), pkg, dll);
        common(real);
        R_set_altreal_Elt_method(real, Some(real_elt));
        let integer = R_make_altinteger_class(c"yaplr_integer".as_ptr(), pkg, dll);
        common(integer);
        R_set_altinteger_Elt_method(integer, Some(int_elt));
        let logical = R_make_altlogical_class(c"yaplr_logical".as_ptr(), pkg, dll);
        common(logical);
        R_set_altlogical_Elt_method(logical, Some(int_elt));
        let raw = R_make_altraw_class(c"yaplr_raw".as_ptr(), pkg, dll);
        common(raw);
        R_set_altraw_Elt_method(raw, Some(raw_elt));
        let complex = R_make_altcomplex_class(c"yaplr_complex".as_ptr(), pkg, dll);
        common(complex);
        R_set_altcomplex_Elt_method(complex, Some(complex_elt));
        Classes {
            real,
            integer,
            logical,
            raw,
            complex,
        }
    };
    CLASSES.with(|c| c.set(Some(classes)));
}
