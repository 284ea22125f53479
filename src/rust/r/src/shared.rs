//! The glue of shared_vector(): a handle (an external pointer to the
//! mapping of yaplr-core's SharedVector) whose elements R reads and writes
//! in place. Elements are read and written with relaxed atomic loads and
//! stores of their own width, as other processes change them meanwhile.

use crate::args;
use crate::conditions::RError;
use crate::session::handle;
use extendr_api::prelude::*;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use yaplr_core::session::{SharedVector, VectorSpec};
use yaplr_core::{Error, Meta};

type Done<T> = std::result::Result<T, RError>;

// R's SEXPTYPE numbers of the types a shared vector may have.
const LGLSXP: u32 = 10;
const INTSXP: u32 = 13;
const REALSXP: u32 = 14;
const RAWSXP: u32 = 24;

/// The element type of `type`: its SEXPTYPE and size.
fn spec_of(t: &str) -> Option<(u32, u32)> {
    match t {
        "double" => Some((REALSXP, 8)),
        "integer" => Some((INTSXP, 4)),
        "logical" => Some((LGLSXP, 4)),
        "raw" => Some((RAWSXP, 1)),
        _ => None,
    }
}

fn type_name(sexptype: u32) -> &'static str {
    match sexptype {
        REALSXP => "double",
        INTSXP => "integer",
        LGLSXP => "logical",
        _ => "raw",
    }
}

fn bad(message: String) -> RError {
    RError::argument(Error::BadArgument(message), None)
}

/// The shared vector behind a handle.
fn vector(x: &Robj) -> Done<&SharedVector> {
    match <&ExternalPtr<SharedVector>>::try_from(x)
        .ok()
        .and_then(|p| p.try_addr().ok())
    {
        Some(v) => Ok(v),
        None => Err(bad(
            "this shared vector handle is no longer attached (it was saved and restored, or \
             sent to another process); attach again with shared_vector(name)."
                .into(),
        )),
    }
}

/// Element `p` of `v`, as the atomic type of its width. Every caller
/// checks `p < length` first.
fn element<A>(v: &SharedVector, p: usize) -> &A {
    debug_assert!((p as u64) < v.spec().length);
    debug_assert_eq!(
        std::mem::size_of::<A>() as u64,
        u64::from(v.spec().elt_size)
    );
    // SAFETY: p < length, so the element lies in the mapping of `v`, which
    // lives as long as the borrow of `v`; elements start 128 bytes into a
    // page-aligned mapping, aligned for any width; and `A` is an atomic
    // type of the element's width, for which access shared with other
    // processes is sound.
    unsafe { &*v.data().cast::<A>().add(p) }
}

/// Create (with `type` and `length`) or attach to (both NULL) a shared
/// vector.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn shared_vector_(
    session: Robj,
    name: Robj,
    r#type: Robj,
    length: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<Robj> {
    let key = args::name_key(&name, &namespace)?;
    let create = if r#type.is_null() && length.is_null() {
        None
    } else {
        let t = r#type.as_str().filter(|_| r#type.len() == 1);
        let Some((sexptype, elt_size)) = t.and_then(spec_of) else {
            return Err(bad(
                "`type` must be one of \"double\", \"integer\", \"logical\" or \"raw\".".into(),
            ));
        };
        let n = args::version(&length, "length")?.ok_or_else(|| {
            bad("`length` is missing; give the number of elements of the new vector.".into())
        })?;
        Some(VectorSpec {
            sexptype,
            elt_size,
            length: n,
        })
    };
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let meta = create.map_or_else(Meta::default, |c| Meta {
        class: vec!["yaplr_shared_vector".into()],
        rtype: type_name(c.sexptype).into(),
        length: c.length,
        dim: Vec::new(),
        description: None,
    });
    let h = handle(&session)?;
    let v = h
        .run(opts.autostart, |s| {
            s.shared_vector(&key, create, meta, &opts)
        })
        .map_err(h.fail(Some(key.tag())))?;
    let spec = v.spec();
    let mut ptr: Robj = ExternalPtr::new(v).into();
    ptr.set_attrib("type", type_name(spec.sexptype))?;
    Ok(ptr)
}

/// @noRd
#[extendr]
fn sv_length_(x: Robj) -> Done<f64> {
    Ok(vector(&x)?.spec().length as f64)
}

/// Positions (0-based) from R indices: positive whole numbers, NA (None);
/// zeros are dropped. `None` for all elements.
fn positions(i: &Robj, n: u64) -> Done<Option<Vec<Option<u64>>>> {
    if i.is_null() {
        return Ok(None);
    }
    let raw: Vec<Option<f64>> = if let Some(v) = i.as_integer_slice() {
        v.iter()
            .map(|x| (*x != i32::MIN).then_some(f64::from(*x)))
            .collect()
    } else if let Some(v) = i.as_real_slice() {
        v.iter().map(|x| (!x.is_nan()).then_some(*x)).collect()
    } else {
        return Err(bad(
            "an index of a shared vector must be numeric or logical.".into(),
        ));
    };
    let mut out = Vec::with_capacity(raw.len());
    for x in raw {
        match x {
            None => out.push(None),
            Some(x) if x >= 1.0 => out.push(Some(args::bytes_from_r(x) - 1)),
            Some(x) if x > -1.0 => {}
            Some(_) => {
                return Err(bad(
                    "negative indices can not be mixed with positive ones.".into()
                ))
            }
        }
    }
    let _ = n;
    Ok(Some(out))
}

/// Read the elements at `i` (NULL: all) as an ordinary R vector; an index
/// past the end or NA reads NA (00 for raw), as R does.
/// @noRd
#[extendr]
fn sv_read_(x: Robj, i: Robj) -> Done<Robj> {
    let v = vector(&x)?;
    let spec = v.spec();
    let n = spec.length;
    let at: Vec<Option<u64>> = match positions(&i, n)? {
        Some(p) => p,
        None => (0..n).map(Some).collect(),
    };
    let inside = |p: Option<u64>| p.filter(|p| *p < n).and_then(|p| usize::try_from(p).ok());
    Ok(match spec.sexptype {
        REALSXP => at
            .iter()
            .map(|p| {
                inside(*p).map_or(Rfloat::na(), |p| {
                    let a = element::<AtomicU64>(v, p);
                    Rfloat::from(f64::from_bits(a.load(Ordering::Relaxed)))
                })
            })
            .collect::<Doubles>()
            .into(),
        INTSXP => at
            .iter()
            .map(|p| {
                inside(*p).map_or(Rint::na(), |p| {
                    let a = element::<AtomicI32>(v, p);
                    Rint::from(a.load(Ordering::Relaxed))
                })
            })
            .collect::<Integers>()
            .into(),
        LGLSXP => at
            .iter()
            .map(|p| {
                inside(*p).map_or(Rbool::na(), |p| {
                    let a = element::<AtomicI32>(v, p);
                    Rbool::from(a.load(Ordering::Relaxed))
                })
            })
            .collect::<Logicals>()
            .into(),
        _ => {
            let bytes: Vec<u8> = at
                .iter()
                .map(|p| {
                    inside(*p).map_or(0, |p| {
                        let a = element::<AtomicU8>(v, p);
                        a.load(Ordering::Relaxed)
                    })
                })
                .collect();
            Raw::from_bytes(&bytes).into()
        }
    })
}

/// Write `value` (already of the vector's type; length 1 or one per
/// index) at `i` (NULL: all).
/// @noRd
#[extendr]
fn sv_write_(x: Robj, i: Robj, value: Robj) -> Done<()> {
    let v = vector(&x)?;
    let spec = v.spec();
    let n = spec.length;
    let at: Vec<u64> = match positions(&i, n)? {
        Some(p) => p
            .into_iter()
            .map(|p| {
                p.ok_or_else(|| bad("an index of a shared vector to write may not be NA.".into()))
            })
            .collect::<Done<Vec<u64>>>()?,
        None => (0..n).collect(),
    };
    if let Some(p) = at.iter().find(|p| **p >= n) {
        return Err(bad(format!(
            "index {} is past the end of the shared vector (length {n}); a shared vector \
             never grows.",
            p + 1
        )));
    }
    let m = value.len();
    if at.is_empty() {
        return Ok(());
    }
    if m != 1 && m != at.len() {
        return Err(bad(format!(
            "{} element(s) to write, but {m} value(s): give one value, or one per element.",
            at.len()
        )));
    }
    let pick = |k: usize| if m == 1 { 0 } else { k };
    let idx = |p: u64| usize::try_from(p).unwrap_or(0);
    match spec.sexptype {
        REALSXP => {
            let vals = value
                .as_real_slice()
                .ok_or_else(|| bad("internal: not doubles".into()))?;
            for (k, p) in at.iter().enumerate() {
                let a = element::<AtomicU64>(v, idx(*p));
                a.store(vals[pick(k)].to_bits(), Ordering::Relaxed);
            }
        }
        INTSXP | LGLSXP => {
            let vals: &[i32] = if spec.sexptype == INTSXP {
                value.as_integer_slice()
            } else {
                value.as_logical_slice().map(|l| {
                    // SAFETY: Rbool is a transparent i32.
                    unsafe { std::slice::from_raw_parts(l.as_ptr().cast::<i32>(), l.len()) }
                })
            }
            .ok_or_else(|| bad("internal: not integers".into()))?;
            for (k, p) in at.iter().enumerate() {
                let a = element::<AtomicI32>(v, idx(*p));
                a.store(vals[pick(k)], Ordering::Relaxed);
            }
        }
        _ => {
            let vals = value
                .as_raw_slice()
                .ok_or_else(|| bad("internal: not raw".into()))?;
            for (k, p) in at.iter().enumerate() {
                let a = element::<AtomicU8>(v, idx(*p));
                a.store(vals[pick(k)], Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

extendr_module! {
    mod shared;
    fn shared_vector_;
    fn sv_length_;
    fn sv_read_;
    fn sv_write_;
}
