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
    R_set_altvec_Dataptr_or_null_method, R_xlen_t, Rboolean, Rcomplex, Rf_allocVector, Rf_protect,
    Rf_unprotect, COMPLEX_GET_REGION, DATAPTR, DATAPTR_OR_NULL, INTEGER_GET_REGION,
    LOGICAL_GET_REGION, RAW_GET_REGION, REAL_GET_REGION, SET_ATTRIB, SET_OBJECT, SEXP, SEXPTYPE,
    TYPEOF,
};
use std::fs::File;
use std::os::raw::{c_char, c_int, c_void};
use std::os::unix::fs::FileExt;
use yaplr_core::object_file::{
    check_complete, Header, ObjectMap, ObjectWriter, VectorHeader, HEADER_SIZE, VECTOR_HEADER_SIZE,
};
use yaplr_core::progress::{Meter, Silent, STEP_USIZE};
use yaplr_core::protocol::INLINE_MAX;
use yaplr_core::Error;

use crate::serialize;

// Declared here as in Rinternals.h: accessors not bound by extendr-ffi.
#[allow(improper_ctypes)]
extern "C" {
    fn ATTRIB(x: SEXP) -> SEXP;
    fn OBJECT(x: SEXP) -> c_int;
    fn IS_S4_OBJECT(x: SEXP) -> c_int;
    fn Rprintf(fmt: *const c_char, ...);
}

/// Vectors with fewer data bytes than this travel as R serialization
/// (inline in the helper's journal when small enough); larger ones are
/// stored as their raw elements.
pub const MIN_RAW_VECTOR_BYTES: u64 = INLINE_MAX as u64;

/// Stored vectors with a payload of at least this many bytes are retrieved
/// as zero-copy views, smaller ones as copies read with pread. Each live
/// view costs the process one memory mapping (vm.max_map_count, 65530 by
/// default, bounds them all), and below this size a copy costs no more than
/// a view: bench/zero-copy.R measures where the view starts to win.
pub const MIN_ZERO_COPY_BYTES: u64 = 256 << 10;

const LGLSXP: u32 = 10;
const INTSXP: u32 = 13;
const REALSXP: u32 = 14;
const CPLXSXP: u32 = 15;
const RAWSXP: u32 = 24;

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
        LGLSXP | INTSXP => Some(4),
        REALSXP => Some(8),
        CPLXSXP => Some(16),
        RAWSXP => Some(1),
        _ => None,
    }
}

/// The vector header for `x` if it is a plain atomic vector worth storing
/// as raw elements.
pub fn as_vector(x: SEXP) -> Option<VectorHeader> {
    // SAFETY: read-only accessors on a live SEXP.
    unsafe {
        let sexptype = TYPEOF(x) as u32;
        let elt = elt_size(sexptype)?;
        if IS_S4_OBJECT(x) != 0 {
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
            object: u32::from(OBJECT(x) != 0),
        })
    }
}

/// Write `x` (described by `h`) as a KIND_R_VECTOR payload, counting the
/// bytes on `meter` (whose hook may abort it).
pub fn write_vector(
    x: SEXP,
    h: &VectorHeader,
    w: &mut ObjectWriter,
    meter: &mut Meter<'_>,
) -> Result<(), Error> {
    w.write(&h.encode())?;
    // SAFETY: x is protected by the caller for the whole call. A plain
    // vector gives its buffer; an ALTREP one without a buffer (a compact
    // sequence such as 1:n) is copied by regions, so sending it neither
    // expands it in this session nor allocates in R.
    let ptr = unsafe { DATAPTR_OR_NULL(x) };
    let too_large = || Error::BadArgument("the vector does not fit in memory".into());
    if !ptr.is_null() {
        let n = usize::try_from(h.data_len()).map_err(|_| too_large())?;
        let data = unsafe { std::slice::from_raw_parts(ptr as *const u8, n) };
        meter.write_all(data, |piece| w.write(piece))?;
    } else {
        let mut buf = vec![0u8; 1 << 20];
        let per = R_xlen_t::try_from(buf.len() / h.elt_size as usize).unwrap_or(R_xlen_t::MAX);
        let total = R_xlen_t::try_from(h.length).map_err(|_| too_large())?;
        let mut at: R_xlen_t = 0;
        while at < total {
            let n = per.min(total - at);
            // SAFETY: buf holds at least n elements of the vector's type.
            let got = unsafe {
                let b = buf.as_mut_ptr();
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
            // Positive, checked above.
            let got_n = usize::try_from(got).unwrap_or(0);
            let piece = &buf[..got_n * h.elt_size as usize];
            w.write(piece)?;
            meter.add(piece.len() as u64)?;
            at += got;
        }
    }
    // SAFETY: ATTRIB is a read-only accessor.
    let attrib = unsafe { ATTRIB(x) };
    if attrib != unsafe { R_NilValue } {
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
        return Err(Error::Corrupt {
            message: format!("the stored object \"{tag}\" has an unknown vector type"),
        });
    }
    Ok(())
}

/// The R vector of a KIND_R_VECTOR object as a zero-copy view of its
/// mapping (made with ObjectMap::open_for_view). The result is preserved;
/// the caller releases it.
pub fn read_view(mut map: ObjectMap, tag: &str) -> Result<SEXP, Error> {
    let payload = map.payload();
    let h = VectorHeader::decode(payload)?;
    check_type(&h, tag)?;
    let length = length_as::<R_xlen_t>(h.length, tag)?;
    let data_len = length_as::<usize>(h.data_len(), tag)?;
    let attrs = read_attributes(&payload[VECTOR_HEADER_SIZE + data_len..], tag)?;
    // SAFETY: all R allocations below are protected until the result is
    // preserved; pointers into the mapping stay valid while `map` lives,
    // and `map` moves into the external pointer that the view keeps.
    unsafe {
        let Some(base) = map.payload_mut_ptr() else {
            release(attrs);
            return Err(Error::Corrupt {
                message: format!("the stored object \"{tag}\" is not mapped copy-on-write"),
            });
        };
        let Some(class) = class_for(h.sexptype) else {
            release(attrs);
            return Err(Error::Corrupt {
                message: "vector class not registered".into(),
            });
        };
        let view = Box::new(View {
            length,
            data: base.add(VECTOR_HEADER_SIZE),
            _map: map,
        });
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
        Rf_unprotect(2);
        Ok(v)
    }
}

struct Alloc {
    sexptype: SEXPTYPE,
    length: R_xlen_t,
    result: SEXP,
}

unsafe extern "C" fn alloc_cb(data: *mut c_void) {
    let a = &mut *(data as *mut Alloc);
    let v = Rf_allocVector(a.sexptype, a.length);
    extendr_ffi::R_PreserveObject(v);
    a.result = v;
}

/// A new R vector, preserved; an error instead of a jump when R has no
/// memory for it.
fn alloc_vector(h: &VectorHeader, tag: &str) -> Result<SEXP, Error> {
    let mut a = Alloc {
        sexptype: sexptype_of(h.sexptype),
        length: length_as(h.length, tag)?,
        result: std::ptr::null_mut(),
    };
    // SAFETY: R_ToplevelExec confines R's error (out of memory) to it.
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
    let damaged = |e: std::io::Error| Error::Corrupt {
        message: format!("object \"{tag}\" could not be read whole: {e}"),
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
    let mut hasher = yaplr_core::codec::Hasher::new();
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
        // SAFETY: v is a preserved vector of h.data_len() bytes.
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
                     (its checksum does not match what was written); remove it with remove_object() and send it again"
                ),
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
        // SAFETY: both preserved; setting attributes allocates nothing.
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
    T::try_from(n).map_err(|_| Error::Corrupt {
        message: format!(
            "the stored object \"{tag}\" is damaged: a length of {n} does not fit in memory"
        ),
    })
}

fn release(x: Option<SEXP>) {
    if let Some(a) = x {
        // SAFETY: preserved when made.
        unsafe { extendr_ffi::R_ReleaseObject(a) };
    }
}

/// What a view's external pointer owns.
struct View {
    length: R_xlen_t,
    /// First element, inside the copy-on-write mapping owned by `_map`.
    data: *mut u8,
    _map: ObjectMap,
}

unsafe extern "C" fn finalize_view(ptr: SEXP) {
    let p = R_ExternalPtrAddr(ptr) as *mut View;
    if !p.is_null() {
        R_ClearExternalPtr(ptr);
        drop(Box::from_raw(p));
    }
}

unsafe fn view(x: SEXP) -> &'static View {
    // SAFETY (caller): x is one of our views, whose data1 is the external
    // pointer made in read_vector and cleared only by the finalizer, which
    // runs once x is unreachable.
    &*(R_ExternalPtrAddr(R_altrep_data1(x)) as *const View)
}

unsafe extern "C" fn length_method(x: SEXP) -> R_xlen_t {
    view(x).length
}

// Readable and writable alike: writes land in private copy-on-write pages.
unsafe extern "C" fn dataptr_method(x: SEXP, _writeable: Rboolean) -> *mut c_void {
    view(x).data as *mut c_void
}

unsafe extern "C" fn dataptr_or_null_method(x: SEXP) -> *const c_void {
    view(x).data as *const c_void
}

unsafe extern "C" fn duplicate_method(x: SEXP, _deep: Rboolean) -> SEXP {
    // An ordinary vector; R copies the attributes.
    let v = view(x);
    let t = TYPEOF(x) as u32;
    let bytes = usize::try_from(v.length).unwrap_or(0) * elt_size(t).unwrap_or(1) as usize;
    let out = Rf_protect(Rf_allocVector(sexptype_of(t), v.length));
    std::ptr::copy_nonoverlapping(v.data as *const u8, DATAPTR(out) as *mut u8, bytes);
    Rf_unprotect(1);
    out
}

unsafe extern "C" fn inspect_method(
    _x: SEXP,
    _pre: c_int,
    _deep: c_int,
    _pvec: c_int,
    _inspect_subtree: Option<unsafe extern "C" fn(SEXP, c_int, c_int, c_int)>,
) -> Rboolean {
    Rprintf(
        c"%s".as_ptr(),
        c"yaplr shared vector (copy-on-write mapping)\n".as_ptr(),
    );
    Rboolean::TRUE
}

unsafe extern "C" fn real_elt(x: SEXP, i: R_xlen_t) -> f64 {
    *(view(x).data as *const f64).offset(i)
}
unsafe extern "C" fn int_elt(x: SEXP, i: R_xlen_t) -> c_int {
    *(view(x).data as *const c_int).offset(i)
}
unsafe extern "C" fn raw_elt(x: SEXP, i: R_xlen_t) -> u8 {
    *view(x).data.offset(i)
}
unsafe extern "C" fn complex_elt(x: SEXP, i: R_xlen_t) -> Rcomplex {
    *(view(x).data as *const Rcomplex).offset(i)
}

struct Classes {
    real: R_altrep_class_t,
    integer: R_altrep_class_t,
    logical: R_altrep_class_t,
    raw: R_altrep_class_t,
    complex: R_altrep_class_t,
}

// Written once at package load on R's main thread, read only there.
static mut CLASSES: Option<Classes> = None;

fn class_for(sexptype: u32) -> Option<R_altrep_class_t> {
    // SAFETY: see CLASSES.
    let classes = unsafe { (*std::ptr::addr_of!(CLASSES)).as_ref()? };
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
    // SAFETY: read-only checks on a live SEXP.
    unsafe {
        if extendr_ffi::ALTREP(x) == 0 {
            return false;
        }
        class_for(TYPEOF(x) as u32).is_some_and(|cls| extendr_ffi::ALTREP_CLASS(x) == cls.ptr)
    }
}

unsafe fn common(cls: R_altrep_class_t) {
    R_set_altrep_Length_method(cls, Some(length_method));
    R_set_altrep_Duplicate_method(cls, Some(duplicate_method));
    R_set_altrep_Inspect_method(cls, Some(inspect_method));
    R_set_altvec_Dataptr_method(cls, Some(dataptr_method));
    R_set_altvec_Dataptr_or_null_method(cls, Some(dataptr_or_null_method));
}

/// Register the ALTREP classes; called from R_init_yaplr.
///
/// # Safety
/// Must be called once, from R's main thread, with the package's DllInfo.
#[no_mangle]
pub unsafe extern "C" fn yaplr_register_altrep(dll: *mut extendr_ffi::DllInfo) {
    let pkg = c"yaplr".as_ptr();
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
    CLASSES = Some(Classes {
        real,
        integer,
        logical,
        raw,
        complex,
    });
}
