//! The glue of the coordination functions: barriers (and, beside them,
//! counters, locks and queues). Each takes the session handle, then the
//! arguments of the exported R function as the user gave them.

use crate::args;
use crate::conditions::RError;
use crate::objects::{decode_found, release_all, RObject};
use crate::progress::{self, Transfer, Verb};
use crate::session::{handle, resolve};
use extendr_api::prelude::*;
use yaplr_core::backend::QueueLease;
use yaplr_core::progress::Meter;
use yaplr_core::session;
use yaplr_core::Payload;

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

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn queue_push_(
    session: Robj,
    name: Robj,
    obj: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    progress: f64,
) -> Done<()> {
    let key = args::name_key(&name, &namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let meta = args::object_meta(&obj, None);
    let h = handle(&session)?;
    let mut transfer = Transfer::one(Verb::Send, key.tag(), progress::delay(progress));
    let mut source = RObject::new(&obj);
    h.run(opts.autostart, |s| {
        s.queue_push(&key, &mut source, meta, &opts, &mut transfer)
    })
    .map_err(h.fail(Some(key.tag())))
}

/// A list holding the item, or with `ack = FALSE` a list holding
/// list(value, seq, token) for the R layer to make a yaplr_queue_item.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn queue_pop_(
    session: Robj,
    name: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    ack: Robj,
    copy: Robj,
    progress: f64,
) -> Done<List> {
    let key = args::name_key(&name, &namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let ack = args::flag(&ack, "ack", None)?;
    let copy = args::flag(&copy, "copy", None)?;
    let h = handle(&session)?;
    let tag = key.tag();
    let mut transfer = Transfer::one(Verb::Retrieve, tag, progress::delay(progress));
    let (value, lease) = h
        .run(opts.autostart, |s| {
            let popped = s.queue_pop(&key, !ack, &opts)?;
            let found = popped.found;
            let total = match &found.payload {
                Payload::File(_) => Some(found.entry.size),
                Payload::Bytes(_) => None,
            };
            let mut meter = Meter::new(&mut transfer, total);
            match decode_found(found, copy, &mut meter).map_err(|e| session::damaged(e, tag)) {
                Ok(v) => Ok((v, popped.lease)),
                Err(e) => {
                    // An interrupted read hands the item back; a damaged
                    // one is completed all the same, as it would fail
                    // every consumer.
                    if let Some(l) = &popped.lease {
                        let quick = yaplr_core::CallOptions {
                            interrupted: &|| false,
                            ..opts.no_start()
                        };
                        let _ = match e {
                            yaplr_core::Error::Interrupted { .. } => s.queue_requeue(l, &quick),
                            _ => s.queue_ack(l, &quick),
                        };
                    }
                    Err(e)
                }
            }
        })
        .map_err(h.fail(Some(tag)))?;
    // SAFETY: preserved when made; the list protects it before its
    // preservation is released.
    let robj = unsafe { Robj::from_sexp(value) };
    let out = match lease {
        None => Ok(List::from_values([robj])),
        Some(l) => List::from_names_and_values(
            ["value", "seq", "token"],
            [robj, Robj::from(l.seq as f64), Robj::from(l.token as f64)],
        )
        .map(|item| List::from_values([item])),
    };
    release_all(vec![value]);
    Ok(out?)
}

/// @noRd
#[extendr]
fn queue_ack_(
    session: Robj,
    name: Robj,
    namespace: Robj,
    seq: f64,
    token: f64,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<()> {
    let key = args::name_key(&name, &namespace)?;
    // A helper restarted since the pop knows the lease from its journal.
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let lease = QueueLease {
        key,
        seq: args::bytes_from_r(seq),
        token: args::bytes_from_r(token),
    };
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.queue_ack(&lease, &opts))
        .map_err(h.fail(Some(lease.key.tag())))
}

/// c(ready, leased)
/// @noRd
#[extendr]
fn queue_length_(
    session: Robj,
    name: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<Vec<f64>> {
    let key = args::name_key(&name, &namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    let (ready, leased) = h
        .run(opts.autostart, |s| s.queue_length(&key, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    Ok(vec![ready as f64, leased as f64])
}

/// list(held, pid, since) of the lock `name`.
/// @noRd
#[extendr]
fn lock_info_(session: Robj, name: Robj, namespace: Robj, timeout: Robj) -> Done<List> {
    let key = args::name_key_or_option(&name, &namespace)?;
    let opts = args::options_or_defaults(&timeout)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    let holder = h
        .run(opts.autostart, |s| s.lock_holder(&key, &opts))
        .map_err(h.fail(Some(key.tag())))?;
    let (held, pid, since): (Robj, Robj, Robj) = match holder {
        Some(x) => (
            true.into(),
            f64::from(x.pid).into(),
            crate::objects::posixct(x.since_ns)?,
        ),
        None => (false.into(), Robj::from(Rfloat::na()), {
            let mut t = Robj::from(Rfloat::na());
            t.set_class(["POSIXct", "POSIXt"])?;
            t
        }),
    };
    Ok(List::from_names_and_values(
        ["name", "namespace", "held", "pid", "since"],
        [
            Robj::from(key.tag()),
            Robj::from(key.namespace()),
            held,
            pid,
            since,
        ],
    )?)
}

extendr_module! {
    mod coord;
    fn barrier_;
    fn lock_info_;
    fn queue_push_;
    fn queue_pop_;
    fn queue_ack_;
    fn queue_length_;
}
