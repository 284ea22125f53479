//! yaplr-r: the glue between R and yaplr-core, kept thin. The R layer
//! passes the arguments of yaplr's exported functions as the user gave
//! them, after a session handle; the glue checks them once and calls the
//! `Session` of the handle. Every failure comes back as a `Result` whose
//! error becomes a classed condition object (never a longjmp from Rust),
//! which the R layer signals.
//!
//! Modules: `session` (the handle), `args` (argument checks), `conditions`
//! (errors into R conditions), `objects`, `coord` and `server` (the
//! functions R calls), `progress` (Ctrl-C and progress bars), `serialize` and `vector`
//! (R objects in and out of object files), `ffi` (R's C API that
//! extendr-ffi lacks).

mod args;
mod conditions;
mod coord;
mod ffi;
mod objects;
mod progress;
mod serialize;
mod server;
mod session;
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
