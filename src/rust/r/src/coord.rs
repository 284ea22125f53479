//! The glue of the coordination functions: barriers (and, beside them,
//! counters, locks and queues). Each takes the session handle, then the
//! arguments of the exported R function as the user gave them.

use crate::args;
use crate::conditions::RError;
use crate::session::handle;
use extendr_api::prelude::*;

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

extendr_module! {
    mod coord;
    fn barrier_;
}
