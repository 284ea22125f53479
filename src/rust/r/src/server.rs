//! The glue functions about the helper: starting, checking, describing,
//! resizing and stopping it. As in objects.rs, each takes the session
//! handle, then the arguments as the user gave them.

use crate::args;
use crate::conditions::RError;
use crate::objects::posixct;
use crate::session::{handle, options};
use extendr_api::prelude::*;
use yaplr_core::backend::Started;

type Done<T> = std::result::Result<T, RError>;

/// Start the helper if needed; list(pid, started). `capacity`: NULL, or
/// bytes as parse_size() gives them (or the condition of a bad size).
/// @noRd
#[extendr]
fn start_server_(session: Robj, timeout: Robj, quiet: Robj, capacity: Robj) -> Done<List> {
    let opts = options(args::timeout(&timeout)?, true);
    args::flag(&quiet, "quiet", None)?;
    let capacity = args::size(&capacity)?;
    let h = handle(&session)?;
    let Started { pid, started } = h
        .run(opts.autostart, |s| {
            let started = s.start(&opts)?;
            if capacity.is_some() {
                // An explicit capacity wins over options(yaplr.capacity = ).
                s.set_capacity(capacity, &opts)?;
            }
            Ok(started)
        })
        .map_err(h.fail(None))?;
    Ok(List::from_names_and_values(
        ["pid", "started"],
        [
            Robj::from(i32::try_from(pid).unwrap_or(i32::MAX)),
            Robj::from(started),
        ],
    )?)
}

/// TRUE when the helper answered, FALSE when none runs, an error when it
/// is there but does not answer in time.
/// @noRd
#[extendr]
fn ping_server_(session: Robj, timeout: Robj, quiet: Robj) -> Done<bool> {
    let opts = options(args::timeout(&timeout)?, false);
    args::flag(&quiet, "quiet", None)?;
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.ping(&opts))
        .map_err(h.fail(None))
}

/// server_info(): a list of class "yaplr_server_info".
/// @noRd
#[extendr]
fn server_info_(session: Robj, timeout: Robj) -> Done<List> {
    let opts = options(args::timeout(&timeout)?, false);
    let h = handle(&session)?;
    let i = h
        .run(opts.autostart, |s| s.info(&opts))
        .map_err(h.fail(None))?;
    let mut info = List::from_names_and_values(
        [
            "pid", "dir", "objects", "bytes", "capacity", "free", "started", "version", "used",
        ],
        [
            Robj::from(i32::try_from(i.pid).unwrap_or(0)),
            Robj::from(i.dir),
            Robj::from(i.objects as f64),
            Robj::from(i.bytes as f64),
            i.capacity
                .map_or_else(|| Rfloat::na().into(), |c| Robj::from(c as f64)),
            Robj::from(i.free as f64),
            posixct(i.started_ns)?,
            Robj::from(i.version),
            Robj::from(i.bytes as f64),
        ],
    )?;
    info.set_class(["yaplr_server_info"])?;
    Ok(info)
}

/// `capacity`: NULL (no capacity) or bytes as parse_size() gives them (or
/// the condition of a bad size).
/// @noRd
#[extendr]
fn resize_store_(
    session: Robj,
    capacity: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<()> {
    let timeout = args::timeout(&timeout)?;
    let capacity = args::size(&capacity)?;
    let h = handle(&session)?;
    let opts = options(timeout, args::autostart(&automatic_server_start)?);
    h.run(opts.autostart, |s| s.set_capacity(capacity, &opts))
        .map_err(h.fail(None))
}

/// @noRd
#[extendr]
fn quit_server_(session: Robj, timeout: Robj, keep: Robj) -> Done<bool> {
    let opts = options(args::timeout(&timeout)?, false);
    let keep = args::flag(&keep, "keep", None)?;
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.quit(keep, false, &opts))
        .map_err(h.fail(None))
}

/// @noRd
#[extendr]
fn is_server_running_(session: Robj) -> Done<bool> {
    let h = handle(&session)?;
    h.run(false, |s| s.is_running()).map_err(h.fail(None))
}

extendr_module! {
    mod server;
    fn start_server_;
    fn ping_server_;
    fn server_info_;
    fn resize_store_;
    fn quit_server_;
    fn is_server_running_;
}
