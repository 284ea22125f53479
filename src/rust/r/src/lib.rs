//! yaplr-r: the glue between R and yaplr-core, kept thin. The R layer
//! passes the arguments of yaplr's exported functions as the user gave
//! them, after a session handle; the glue checks them once and calls the
//! `Session` of the handle. Every failure comes back as a `Result` whose
//! error becomes a classed condition object (never a longjmp from Rust),
//! which the R layer signals.
//!
//! Modules: `session` (the handle), `args` (argument checks), `settings`
//! (yaplr's options, read fast), `conditions`
//! (errors into R conditions), `objects`, `coord` and `server` (the
//! functions R calls), `fast` (the `.Call` routines of counters and locks,
//! without extendr's wrappers) and `lock_handle`, `progress` (Ctrl-C and progress bars), `serialize` and `vector`
//! (R objects in and out of object files), `ffi` (R's C API that
//! extendr-ffi lacks).

mod args;
mod conditions;
mod coord;
mod fast;
mod ffi;
mod lock_handle;
mod objects;
mod progress;
mod serialize;
mod server;
mod session;
mod settings;
mod shared;
mod vector;

use extendr_api::prelude::*;

extendr_module! {
    mod yaplr;
    use session;
    use args;
    use coord;
    use objects;
    use server;
    use shared;
}

/// Register the `.Call` routines with R: extendr's wrappers and the
/// routines of `fast`, under their own names (`.Call(yaplr_counter_add,
/// ...)` in the R layer), and set up the release of lock handles on exit.
/// Called by R_init_yaplr (src/entrypoint.c).
///
/// # Safety
/// Called by R once, with the DllInfo of this package's library.
#[no_mangle]
pub unsafe extern "C" fn yaplr_register_routines(info: *mut extendr_ffi::DllInfo) {
    let metadata = get_yaplr_metadata();
    let functions = metadata
        .functions
        .iter()
        .chain(metadata.impls.iter().flat_map(|i| i.methods.iter()));
    let fast = fast::routines();
    let names: Vec<std::ffi::CString> = functions
        .clone()
        .chain(fast.iter())
        .map(|f| std::ffi::CString::new(f.c_name).unwrap_or_default())
        .collect();
    let mut methods: Vec<extendr_ffi::R_CallMethodDef> = functions
        .chain(fast.iter())
        .zip(&names)
        .map(|(f, name)| extendr_ffi::R_CallMethodDef {
            name: name.as_ptr(),
            // SAFETY: every func_ptr is an `extern "C"` function of SEXP
            // arguments returning a SEXP (an extendr wrapper or a fast
            // routine), as R's DL_FUNC is called.
            fun: Some(unsafe {
                std::mem::transmute::<*const u8, unsafe extern "C" fn() -> *mut std::ffi::c_void>(
                    f.func_ptr,
                )
            }),
            numArgs: i32::try_from(f.args.len()).unwrap_or(0),
        })
        .collect();
    methods.push(extendr_ffi::R_CallMethodDef {
        name: std::ptr::null(),
        fun: None,
        numArgs: 0,
    });
    // SAFETY: R copies the names and the table; both outlive the call.
    unsafe {
        extendr_ffi::R_registerRoutines(
            info,
            std::ptr::null(),
            methods.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
        );
        extendr_ffi::R_useDynamicSymbols(info, extendr_ffi::Rboolean::FALSE);
        extendr_ffi::R_forceSymbols(info, extendr_ffi::Rboolean::FALSE);
        lock_handle::init();
    }
}
