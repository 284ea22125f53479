//! The glue functions that move, list, check and dump objects. Each takes
//! the session handle, then the arguments of the exported R function as the
//! user gave them (checked here, in the order the R layer checked them, see
//! args.rs), and returns `Result<_, RError>`.

use crate::args;
use crate::conditions::RError;
use crate::progress::{self, Transfer, Verb};
use crate::session::{handle, resolve};
use crate::settings::Settings;
use crate::{serialize, vector};
use extendr_api::prelude::*;
use extendr_ffi::SEXP;
use yaplr_core::backend::PayloadSink;
use yaplr_core::format::{KIND_R_SERIALIZED, KIND_R_VECTOR, VECTOR_HEADER_SIZE};
use yaplr_core::progress::Meter;
use yaplr_core::session::{self, Content, PutRequest, SaveSelection, Source};
use yaplr_core::Entry;
use yaplr_core::{Error, Found, Payload};

type Done<T> = std::result::Result<T, RError>;

/// An R object to store: a plain atomic vector as its raw elements, any
/// other object as R serialization.
pub(crate) struct RObject {
    sexp: SEXP,
    vector: Option<yaplr_core::format::VectorHeader>,
}

impl RObject {
    /// `x` must stay protected while the RObject is used.
    pub(crate) fn new(x: &Robj) -> RObject {
        // SAFETY: the SEXP of a live Robj, used only while it lives.
        let sexp = unsafe { x.get() };
        RObject {
            sexp,
            vector: vector::as_vector(sexp),
        }
    }
}

impl Source for RObject {
    fn kind(&self) -> u32 {
        if self.vector.is_some() {
            KIND_R_VECTOR
        } else {
            KIND_R_SERIALIZED
        }
    }

    fn size_hint(&self) -> Option<u64> {
        self.vector
            .as_ref()
            .map(|h| VECTOR_HEADER_SIZE as u64 + h.data_len())
    }

    /// The elements of a vector are counted, not its header or attributes.
    fn metered_len(&self) -> Option<u64> {
        self.vector.as_ref().map(|h| h.data_len())
    }

    fn write(&mut self, out: &mut dyn PayloadSink, meter: &mut Meter<'_>) -> Result<(), Error> {
        match &self.vector {
            Some(h) => vector::write_vector(self.sexp, h, out, meter),
            None => serialize::serialize_into(self.sexp, out, meter),
        }
    }
}

/// Decode one looked-up object into a preserved SEXP, counting the bytes
/// it copies on `meter` (whose hook may abort it).
pub(crate) fn decode_found(found: Found, copy: bool, meter: &mut Meter<'_>) -> Result<SEXP, Error> {
    let tag = found.entry.tag.clone();
    match found.content(copy)? {
        Content::Serialized(bytes) => serialize::unserialize_from(&bytes, &tag, meter),
        Content::VectorFile(file, header) => {
            vector::read_copy(&file, &header, &tag, meter).map_err(|e| session::damaged(e, &tag))
        }
        Content::VectorView {
            map,
            vector,
            attributes,
        } => vector::read_view(map, &vector, &attributes, &tag),
    }
}

/// A list of preserved SEXPs as an R list, releasing them.
fn list_of(values: Vec<SEXP>, names: Option<&[String]>) -> Done<List> {
    // SAFETY: each value was preserved when it was made; the list protects
    // them before their preservation is released.
    let robjs: Vec<Robj> = values
        .iter()
        .map(|v| unsafe { Robj::from_sexp(*v) })
        .collect();
    let out = match names {
        Some(n) => List::from_names_and_values(n, robjs),
        None => Ok(List::from_values(robjs)),
    };
    release_all(values);
    Ok(out?)
}

pub(crate) fn release_all(values: Vec<SEXP>) {
    for v in values {
        // SAFETY: preserved once when made, released once here.
        unsafe { extendr_ffi::R_ReleaseObject(v) };
    }
}

/// The version the value got. `session` NULL: the store in use.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn send_object_(
    session: Robj,
    obj: Robj,
    tag: Robj,
    namespace: Robj,
    description: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    progress: Robj,
    if_absent: Robj,
    if_version: Robj,
) -> Done<f64> {
    let settings = Settings::read();
    let key = args::key_or_option(&tag, &namespace, &settings)?;
    let description = args::description(&description)?;
    let opts = args::call_options_or_defaults(&timeout, &automatic_server_start, &settings)?;
    let condition = args::condition(&if_absent, &if_version)?;
    let delay = args::progress_delay(&progress, &settings);
    // Last: length() and dim() methods are R code, which may change the
    // options `settings` borrows.
    let meta = args::object_meta(&obj, description);
    let session = resolve(&session)?;
    let h = handle(&session)?;
    let mut transfer = Transfer::one(Verb::Send, key.tag(), delay);
    let mut source = RObject::new(&obj);
    let version = h
        .run(opts.autostart, |s| {
            s.put_if(&key, &mut source, meta, condition, &opts, &mut transfer)
        })
        .map_err(h.fail(Some(key.tag())))?;
    Ok(version as f64)
}

/// How a looked-up object is read.
#[derive(Clone, Copy)]
enum Lookup {
    Get,
    Wait { after_version: Option<u64> },
    Take,
}

/// Look up (or wait for, or take) one object and decode it: a list holding
/// the object (a list, so that no stored value can be taken for a
/// condition), or with `with_version` a list(value = , version = ).
#[allow(clippy::too_many_arguments)]
fn read_one(
    session: &Robj,
    tag: &Robj,
    namespace: &Robj,
    timeout: &Robj,
    automatic_server_start: &Robj,
    copy: &Robj,
    progress: &Robj,
    with_version: &Robj,
    how: impl FnOnce() -> Done<Lookup>,
) -> Done<List> {
    let settings = Settings::read();
    let key = args::key_or_option(tag, namespace, &settings)?;
    let opts = args::call_options_or_defaults(timeout, automatic_server_start, &settings)?;
    let copy = args::flag(copy, "copy", None)?;
    let with_version = args::flag(with_version, "with_version", None)?;
    let how = how()?;
    let delay = args::progress_delay(progress, &settings);
    let session = resolve(session)?;
    let h = handle(&session)?;
    let tag = key.tag();
    let mut transfer = Transfer::one(Verb::Retrieve, tag, delay);
    let (value, version) = h
        .run(opts.autostart, |s| {
            let found = match how {
                Lookup::Get => s.get(&key, &opts),
                Lookup::Wait { after_version } => s.wait(&key, after_version, &opts),
                Lookup::Take => s.take(&key, &opts),
            }
            .map_err(|e| session::damaged(e, tag))?;
            let total = match &found.payload {
                Payload::File(_) => Some(found.entry.size),
                Payload::Bytes(_) => None,
            };
            let version = found.entry.version;
            let mut meter = Meter::new(&mut transfer, total);
            decode_found(found, copy, &mut meter).map(|v| (v, version))
        })
        .map_err(h.fail(Some(tag)))?;
    // SAFETY: preserved when made; the list protects it before its
    // preservation is released.
    let robj = unsafe { Robj::from_sexp(value) };
    let out = if with_version {
        List::from_names_and_values(["value", "version"], [robj, Robj::from(version as f64)])
            .map(|l| List::from_values([l]))
    } else {
        Ok(List::from_values([robj]))
    };
    release_all(vec![value]);
    Ok(out?)
}

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn retrieve_object_(
    session: Robj,
    tag: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    copy: Robj,
    progress: Robj,
    with_version: Robj,
) -> Done<List> {
    read_one(
        &session,
        &tag,
        &namespace,
        &timeout,
        &automatic_server_start,
        &copy,
        &progress,
        &with_version,
        || Ok(Lookup::Get),
    )
}

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn wait_object_(
    session: Robj,
    tag: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    copy: Robj,
    progress: Robj,
    after_version: Robj,
    with_version: Robj,
) -> Done<List> {
    read_one(
        &session,
        &tag,
        &namespace,
        &timeout,
        &automatic_server_start,
        &copy,
        &progress,
        &with_version,
        || {
            Ok(Lookup::Wait {
                after_version: args::version(&after_version, "after_version")?,
            })
        },
    )
}

/// @noRd
#[extendr]
fn take_object_(
    session: Robj,
    tag: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    copy: Robj,
    progress: Robj,
) -> Done<List> {
    read_one(
        &session,
        &tag,
        &namespace,
        &timeout,
        &automatic_server_start,
        &copy,
        &progress,
        &Robj::from(false),
        || Ok(Lookup::Take),
    )
}

/// @noRd
#[extendr]
fn remove_object_(
    session: Robj,
    tag: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<()> {
    let settings = Settings::read();
    let key = args::key_or_option(&tag, &namespace, &settings)?;
    let opts = args::call_options_or_defaults(&timeout, &automatic_server_start, &settings)?;
    let session = resolve(&session)?;
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.remove(&key, &opts))
        .map_err(h.fail(Some(key.tag())))
}

/// `namespace` NULL: every namespace.
/// @noRd
#[extendr]
fn list_objects_(
    session: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<List> {
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let namespace = args::namespace_or_all(&namespace)?;
    let h = handle(&session)?;
    let entries = h
        .run(opts.autostart, |s| s.list(namespace.as_deref(), &opts))
        .map_err(h.fail(None))?;
    let col = |f: &dyn Fn(&Entry) -> String| -> Robj {
        entries.iter().map(f).collect::<Vec<String>>().into()
    };
    let num =
        |f: &dyn Fn(&Entry) -> f64| -> Robj { entries.iter().map(f).collect::<Vec<f64>>().into() };
    Ok(List::from_names_and_values(
        ["namespace", "tag", "size", "ctime", "class", "description"],
        [
            col(&|e| e.namespace.clone()),
            col(&|e| e.tag.clone()),
            num(&|e| e.size as f64),
            num(&|e| e.ctime_ns as f64 / 1e9),
            col(&|e| e.meta.class.first().cloned().unwrap_or_default()),
            col(&|e| e.meta.description.clone().unwrap_or_default()),
        ],
    )?)
}

/// A time in nanoseconds since the epoch as a POSIXct (as .POSIXct()).
pub fn posixct(ns: i64) -> Done<Robj> {
    let mut t = Robj::from(ns as f64 / 1e9);
    t.set_class(["POSIXct", "POSIXt"])?;
    Ok(t)
}

/// @noRd
#[extendr]
fn remove_objects_(
    session: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<f64> {
    let namespace = args::namespace(&namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    h.run(opts.autostart, |s| s.remove_namespace(&namespace, &opts))
        .map(|n| n as f64)
        .map_err(h.fail(None))
}

/// `objects` a list (the R layer checked that much), its names the tags.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn send_objects_(
    session: Robj,
    objects: Robj,
    namespace: Robj,
    description: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    progress: f64,
) -> Done<()> {
    let tags = args::object_names(&objects)?;
    let namespace = args::namespace(&namespace)?;
    let descriptions = args::descriptions(&description, tags.len())?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    let keys = args::keys(&namespace, &tags)?;
    let objects = objects.as_list().unwrap_or_default();
    let mut sources: Vec<RObject> = objects.values().map(|o| RObject::new(&o)).collect();
    let items = keys
        .into_iter()
        .zip(sources.iter_mut())
        .zip(descriptions)
        .zip(objects.values())
        .map(|(((key, source), description), obj)| PutRequest {
            key,
            meta: args::object_meta(&obj, description),
            source,
        })
        .collect();
    let mut transfer = Transfer::many(Verb::Send, tags.len(), progress::delay(progress));
    h.run(opts.autostart, |s| s.put_many(items, &opts, &mut transfer))
        .map_err(h.fail(None))
}

/// @noRd
#[extendr]
fn retrieve_objects_(
    session: Robj,
    tags: Robj,
    namespace: Robj,
    copy: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    progress: f64,
) -> Done<List> {
    let tags = args::tags(&tags)?;
    let namespace = args::namespace(&namespace)?;
    let copy = args::flag(&copy, "copy", None)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    let keys = args::keys(&namespace, &tags)?;
    let mut transfer = Transfer::many(Verb::Retrieve, tags.len(), progress::delay(progress));
    let values = h
        .run(opts.autostart, |s| {
            // Decoded as they arrive: only a frame's worth of object files
            // is open at once, however many there are.
            let mut values = Vec::with_capacity(keys.len());
            let mut meter = Meter::new(&mut transfer, None);
            let r = s.get_many(&keys, &opts, |found| {
                values.push(decode_found(found, copy, &mut meter)?);
                Ok(())
            });
            match r {
                Ok(()) => Ok(values),
                Err(e) => {
                    release_all(values);
                    Err(e)
                }
            }
        })
        .map_err(|e| {
            let tag = match &e {
                Error::NotFound { tag, .. } => Some(tag.clone()),
                _ => None,
            };
            h.fail(tag.as_deref())(e)
        })?;
    list_of(values, Some(&tags))
}

/// `file` as the R layer made it (an absolute path in the native
/// encoding); `namespace` NULL: every namespace, or `default_namespace`
/// when `tags` are given; `tags` NULL: every tag of it.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn save_objects_(
    session: Robj,
    file: Robj,
    tags: Robj,
    namespace: Robj,
    default_namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    progress: f64,
) -> Done<f64> {
    let mut namespace = args::namespace_or_all(&namespace)?;
    let tags = args::tags_or_all(&tags)?;
    if tags.is_some() && namespace.is_none() {
        namespace = Some(args::namespace(&default_namespace)?);
    }
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    let file = args::path(&file);
    let label = file.display().to_string();
    let mut transfer = Transfer::one(Verb::Save, &label, progress::delay(progress));
    let tags = tags.unwrap_or_default();
    let which = SaveSelection {
        namespace: namespace.as_deref(),
        tags: &tags,
    };
    h.run(opts.autostart, |s| {
        s.save(&file, which, &opts, &mut transfer)
    })
    .map(|n| n as f64)
    .map_err(h.fail(None))
}

/// @noRd
#[extendr]
fn load_objects_(
    session: Robj,
    file: Robj,
    overwrite: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
    progress: f64,
) -> Done<List> {
    let overwrite = args::flag(&overwrite, "overwrite", None)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    let file = args::path(&file);
    let label = file.display().to_string();
    let mut transfer = Transfer::one(Verb::Load, &label, progress::delay(progress));
    let loaded = h
        .run(opts.autostart, |s| {
            s.load(&file, overwrite, &opts, &mut transfer)
        })
        .map_err(h.fail(None))?;
    let ns: Vec<String> = loaded.iter().map(|d| d.namespace.clone()).collect();
    let tags: Vec<String> = loaded.iter().map(|d| d.tag.clone()).collect();
    Ok(List::from_names_and_values(
        ["namespace", "tag"],
        [Robj::from(ns), Robj::from(tags)],
    )?)
}

/// Check every object of `namespace` (NULL: every namespace) against its
/// checksum; one row per object.
/// @noRd
#[extendr]
fn verify_objects_(
    session: Robj,
    namespace: Robj,
    timeout: Robj,
    automatic_server_start: Robj,
) -> Done<List> {
    let namespace = args::namespace_or_all(&namespace)?;
    let opts = args::call_options(&timeout, &automatic_server_start)?;
    let h = handle(&session)?;
    let checked = h
        .run(opts.autostart, |s| s.verify(namespace.as_deref(), &opts))
        .map_err(h.fail(None))?;
    let strings = |f: &dyn Fn(&session::Checked) -> String| -> Robj {
        checked.iter().map(f).collect::<Vec<_>>().into()
    };
    Ok(List::from_names_and_values(
        ["namespace", "tag", "size", "ok", "checked", "problem"],
        [
            strings(&|c| c.entry.namespace.clone()),
            strings(&|c| c.entry.tag.clone()),
            checked
                .iter()
                .map(|c| c.entry.size as f64)
                .collect::<Vec<_>>()
                .into(),
            checked
                .iter()
                .map(|c| c.problem.is_none())
                .collect::<Vec<_>>()
                .into(),
            checked
                .iter()
                .map(|c| c.recorded)
                .collect::<Vec<_>>()
                .into(),
            strings(&|c| c.problem.clone().unwrap_or_default()),
        ],
    )?)
}

/// Whether `x` is a zero-copy view of a stored vector.
/// @noRd
#[extendr]
fn is_shared_view_(x: Robj) -> bool {
    // SAFETY: x is protected by extendr for the call.
    vector::is_view(unsafe { x.get() })
}

extendr_module! {
    mod objects;
    fn send_object_;
    fn retrieve_object_;
    fn wait_object_;
    fn take_object_;
    fn remove_object_;
    fn list_objects_;
    fn remove_objects_;
    fn send_objects_;
    fn retrieve_objects_;
    fn save_objects_;
    fn load_objects_;
    fn verify_objects_;
    fn is_shared_view_;
}
