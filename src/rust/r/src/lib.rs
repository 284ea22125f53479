//! yaplr-r: the glue between R and yaplr-core. Arguments arrive checked by
//! the R layer; every failure comes back as a condition object (never a
//! longjmp from Rust), which the R layer signals.

mod ffi;
mod progress;
mod serialize;
mod vector;

use extendr_api::prelude::*;
use extendr_ffi::SEXP;
use progress::{Transfer, Verb};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaplr_core::backend::{PayloadSink, Started};
use yaplr_core::error::Hint;
use yaplr_core::object_file::{KIND_R_SERIALIZED, KIND_R_VECTOR, VECTOR_HEADER_SIZE};
use yaplr_core::progress::Meter;
use yaplr_core::protocol::{Entry, Meta};
use yaplr_core::session::{self, Content, PutRequest, SaveSelection, Source};
use yaplr_core::{store, CallOptions, Error, Found, Key, Payload, Session};

/// The session of this process, with its store directory and whether it
/// may start a helper. R calls us from one thread; the session re-creates
/// its connection after fork itself.
struct Current {
    dir: String,
    has_helper: bool,
    session: Session,
}

thread_local! {
    static SESSION: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// The common arguments of every call, as the R layer passes them.
struct Ctx<'a> {
    exe: &'a str,
    timeout: f64,
    autostart: bool,
}

impl<'a> Ctx<'a> {
    fn new(exe: &'a str, timeout: f64, autostart: bool) -> Ctx<'a> {
        Ctx {
            exe,
            timeout,
            autostart,
        }
    }

    fn opts(&self) -> CallOptions<'_> {
        CallOptions {
            timeout: Duration::from_secs_f64(self.timeout.clamp(0.0, 1e9)),
            autostart: self.autostart,
            interrupted: &progress::interrupted,
        }
    }
}

fn with_session<T>(
    dir: &str,
    ctx: &Ctx<'_>,
    f: impl FnOnce(&mut Session) -> Result<T, Error>,
) -> Result<T, Error> {
    // The session is taken out of its cell for the call: R may raise an
    // error (a failed allocation) in the middle, and a jump over a live
    // RefCell borrow would leave it borrowed for ever. The worst outcome is
    // then a new connection on the next call.
    let taken = SESSION.with(|cell| cell.borrow_mut().take());
    let mut cur = match taken {
        // A session made without the helper program can not start one.
        Some(c) if c.dir == dir && (c.has_helper || ctx.exe.is_empty()) => c,
        _ => Current {
            dir: dir.to_string(),
            has_helper: !ctx.exe.is_empty(),
            session: Session::local(
                PathBuf::from(dir),
                (!ctx.exe.is_empty()).then(|| PathBuf::from(ctx.exe)),
            ),
        },
    };
    if !cur.session.is_connected() {
        // This call may start a helper: it gets the session's capacity
        // before any request (options(yaplr.capacity = )).
        match capacity_option() {
            Ok(cap) => cur.session.set_spawn_capacity(cap),
            Err(e) => {
                SESSION.with(|cell| *cell.borrow_mut() = Some(cur));
                return Err(e);
            }
        }
    }
    // No panic may cross into R: it becomes a yaplr_error (and the session,
    // whose state is then unknown, is dropped: the next call reconnects).
    match guarded(|| f(&mut cur.session)) {
        Ok(r) => {
            SESSION.with(|cell| *cell.borrow_mut() = Some(cur));
            r
        }
        Err(e) => Err(e),
    }
}

thread_local! {
    static PANIC_MESSAGE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Run `f`, turning a panic into an error instead of unwinding into R. The
/// panic's message is kept for the error, not printed.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Error> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught = PANIC_MESSAGE.with(|m| {
                let mut m = m.borrow_mut();
                if m.is_some() {
                    return false;
                }
                *m = Some(match info.location() {
                    Some(l) => format!(
                        "{} at {}:{}",
                        panic_text(info.payload()),
                        l.file(),
                        l.line()
                    ),
                    None => panic_text(info.payload()),
                });
                true
            });
            if !caught {
                default(info);
            }
        }));
    });
    PANIC_MESSAGE.with(|m| *m.borrow_mut() = None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let message = PANIC_MESSAGE.with(|m| m.borrow_mut().take());
    r.map_err(|payload| Error::Server {
        message: format!(
            "internal error in yaplr ({}); nothing was changed by this call, please report it",
            message.unwrap_or_else(|| panic_text(&*payload))
        ),
    })
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// getOption("yaplr.capacity"), parsed by the R layer (None: unset).
fn capacity_option() -> Result<Option<u64>, Error> {
    let bad = || {
        Error::BadArgument(
            "options(yaplr.capacity = ) must be a number of bytes or a size such as \"2 GB\""
                .into(),
        )
    };
    match eval_string("yaplr:::capacity_option()") {
        Ok(v) => match (v.as_real(), v.as_str()) {
            (Some(x), _) if x.is_finite() && x >= 0.0 => Ok(Some(bytes_from_r(x))),
            (Some(x), _) if x.is_nan() => Ok(None),
            (_, Some(message)) => Err(Error::BadArgument(message.to_string())),
            _ => Err(bad()),
        },
        Err(_) => Err(bad()),
    }
}

/// An R condition object of class c("yaplr_<kind>", "yaplr_error", "error",
/// "condition"), carrying the tag and store when known.
fn condition(e: &Error, tag: Option<&str>, dir: &str) -> Robj {
    let kind = e.kind();
    let tag_robj: Robj = match tag {
        Some(t) => t.into(),
        None => ().into(),
    };
    let mut l = List::from_names_and_values(
        ["message", "call", "tag", "store"],
        [Robj::from(r_message(e)), ().into(), tag_robj, dir.into()],
    )
    .expect("names and values match");
    let mut class = vec![format!("yaplr_{kind}"), "yaplr_error".to_string()];
    if matches!(e, Error::Interrupted { .. }) {
        // Ctrl-C, as R's own: tryCatch(interrupt = ) sees it, and like R's
        // own it is no "error", so try() does not swallow it.
        class.push("interrupt".to_string());
    } else {
        class.push("error".to_string());
    }
    class.push("condition".to_string());
    l.set_class(class).expect("class");
    l.into()
}

/// The message of a core error for R users: its facts, and its advice in
/// terms of R's options and yaplr's functions.
fn r_message(e: &Error) -> String {
    e.message_with(r_advice)
}

/// A hint of the core in R terms.
fn r_advice(h: &Hint) -> String {
    const DIR: &str = "options(yaplr.dir = )";
    match h {
        Hint::SetStore => format!("set {DIR} to a directory"),
        Hint::OtherStore => format!("choose another with {DIR}"),
        Hint::OwnStore => format!("choose a directory of your own with {DIR}"),
        Hint::WritableStore => format!("choose a writable directory with {DIR}"),
        Hint::ShorterStore => format!("choose a shorter one with {DIR}"),
        Hint::PrivateStore { suggestion } => format!(
            "use a subdirectory that yaplr creates private, such as options(yaplr.dir = \"{suggestion}\"), \
             or remove the write permission with chmod go-w"
        ),
        Hint::RemovePlanted => format!(
            "yaplr will not use this store until it is removed (check it first), \
             or choose another store with {DIR}"
        ),
        Hint::RemoveEntry => format!("remove it, or choose another store with {DIR}"),
        Hint::RaiseCapacity => "remove objects or raise the capacity with resize_store()".into(),
        Hint::LargerStore => format!("remove objects or choose a larger store with {DIR}"),
        Hint::Resend => "remove it with remove_object() and send it again".into(),
        Hint::Overwrite => "use overwrite = TRUE to replace it".into(),
        Hint::StopHelper => "stop it with quit_server() (its objects are removed)".into(),
        Hint::RaiseTimeout => {
            "raise the limit with the `timeout` argument or options(yaplr.timeout = )".into()
        }
        Hint::StartHelper => "start one with make_sure_server_is_started() \
                              or allow automatic start with options(yaplr.automatic_server_start = TRUE)"
            .into(),
    }
}

fn done<T: Into<Robj>>(r: Result<T, Error>, tag: Option<&str>, dir: &str) -> Robj {
    match r {
        Ok(v) => v.into(),
        Err(e) => condition(&e, tag, dir),
    }
}

/// @noRd
#[extendr]
fn default_store_dir_() -> String {
    store::default_dir().display().to_string()
}

/// An R object to store: a plain atomic vector as its raw elements, any
/// other object as R serialization.
struct RObject {
    sexp: SEXP,
    vector: Option<yaplr_core::object_file::VectorHeader>,
}

impl RObject {
    fn new(sexp: SEXP) -> RObject {
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
fn decode_found(found: Found, copy: bool, meter: &mut Meter<'_>) -> Result<SEXP, Error> {
    let tag = found.entry.tag.clone();
    match found.content(copy)? {
        Content::Serialized(bytes) => serialize::unserialize_from(&bytes, &tag, meter),
        Content::VectorFile(file, header) => {
            vector::read_copy(&file, &header, &tag, meter).map_err(|e| session::damaged(e, &tag))
        }
        Content::VectorView(map) => vector::read_view(map, &tag),
    }
}

/// A list of preserved SEXPs as an R list, releasing them.
fn list_of(values: Vec<SEXP>, names: Option<&[String]>) -> Robj {
    // SAFETY: each value was preserved when it was made; the list protects
    // them before their preservation is released.
    let robjs: Vec<Robj> = values
        .iter()
        .map(|v| unsafe { Robj::from_sexp(*v) })
        .collect();
    let out: Robj = match names {
        Some(n) => List::from_names_and_values(n, robjs)
            .expect("as many names as values")
            .into(),
        None => List::from_values(robjs).into(),
    };
    for v in values {
        // SAFETY: preserved once when made, released once here; the list
        // now protects it.
        unsafe { extendr_ffi::R_ReleaseObject(v) };
    }
    out
}

fn release_all(values: Vec<SEXP>) {
    for v in values {
        // SAFETY: preserved when made.
        unsafe { extendr_ffi::R_ReleaseObject(v) };
    }
}

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn send_objects_(
    objs: List,
    tags: Vec<String>,
    ns: &str,
    metas: List,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
    progress: f64,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let mut transfer = Transfer::many(Verb::Send, tags.len(), progress::delay(progress));
    let r = keys(ns, &tags).and_then(|keys| {
        // SAFETY: the list (and so its elements) is protected by extendr
        // for the whole call.
        let mut sources: Vec<RObject> = objs
            .iter()
            .map(|(_, obj)| RObject::new(unsafe { obj.get() }))
            .collect();
        let items = keys
            .into_iter()
            .zip(sources.iter_mut())
            .enumerate()
            .map(|(i, (key, source))| PutRequest {
                key,
                meta: metas
                    .elt(i)
                    .ok()
                    .and_then(|m| m.as_list())
                    .map(|m| parse_meta(&m))
                    .unwrap_or_default(),
                source,
            })
            .collect();
        with_session(dir, &ctx, |s| s.put_many(items, &ctx.opts(), &mut transfer))
    });
    done(r, None, dir)
}

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn retrieve_objects_(
    tags: Vec<String>,
    ns: &str,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
    copy: bool,
    progress: f64,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let mut transfer = Transfer::many(Verb::Retrieve, tags.len(), progress::delay(progress));
    let r = keys(ns, &tags).and_then(|keys| {
        with_session(dir, &ctx, |s| {
            // Decoded as they arrive: only a frame's worth of object
            // files is open at once, however many there are.
            let mut values = Vec::with_capacity(keys.len());
            let mut meter = Meter::new(&mut transfer, None);
            let r = s.get_many(&keys, &ctx.opts(), |found| {
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
    });
    match r {
        Ok(values) => list_of(values, Some(&tags)),
        Err(e) => {
            let tag = match &e {
                Error::NotFound { tag, .. } => Some(tag.clone()),
                _ => None,
            };
            condition(&e, tag.as_deref(), dir)
        }
    }
}

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn send_object_(
    obj: Robj,
    tag: &str,
    ns: &str,
    meta: List,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
    progress: f64,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let mut transfer = Transfer::one(Verb::Send, tag, progress::delay(progress));
    let r = Key::new(ns, tag).and_then(|key| {
        with_session(dir, &ctx, |s| {
            // SAFETY: obj is protected by extendr for the duration of the call.
            let mut source = RObject::new(unsafe { obj.get() });
            s.put(
                &key,
                &mut source,
                parse_meta(&meta),
                &ctx.opts(),
                &mut transfer,
            )
        })
    });
    done(r, Some(tag), dir)
}

/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn retrieve_object_(
    tag: &str,
    ns: &str,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
    copy: bool,
    progress: f64,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let mut transfer = Transfer::one(Verb::Retrieve, tag, progress::delay(progress));
    let r = Key::new(ns, tag).and_then(|key| {
        with_session(dir, &ctx, |s| {
            let found = s
                .get(&key, &ctx.opts())
                .map_err(|e| session::damaged(e, tag))?;
            let total = match &found.payload {
                Payload::File(_) => Some(found.entry.size),
                Payload::Bytes(_) => None,
            };
            let mut meter = Meter::new(&mut transfer, total);
            decode_found(found, copy, &mut meter)
        })
    });
    match r {
        Ok(sexp) => {
            // SAFETY: sexp was preserved when it was made; wrapping it in a
            // list protects it before we release the preservation.
            let value = unsafe { Robj::from_sexp(sexp) };
            let out = List::from_values([value]);
            // SAFETY: preserved once when made, released once here; the
            // list now protects it.
            unsafe { extendr_ffi::R_ReleaseObject(sexp) };
            out.into()
        }
        Err(e) => condition(&e, Some(tag), dir),
    }
}

/// @noRd
#[extendr]
fn remove_object_(
    tag: &str,
    ns: &str,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let r =
        Key::new(ns, tag).and_then(|key| with_session(dir, &ctx, |s| s.remove(&key, &ctx.opts())));
    done(r, Some(tag), dir)
}

/// @noRd
#[extendr]
fn does_object_exist_(
    tag: &str,
    ns: &str,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let r =
        Key::new(ns, tag).and_then(|key| with_session(dir, &ctx, |s| s.exists(&key, &ctx.opts())));
    done(r, Some(tag), dir)
}

/// `ns` empty: every namespace.
/// @noRd
#[extendr]
fn list_objects_(ns: &str, dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let which = if ns.is_empty() { None } else { Some(ns) };
    let r = with_session(dir, &ctx, |s| s.list(which, &ctx.opts())).map(|entries| {
        let col = |f: &dyn Fn(&Entry) -> String| -> Robj {
            entries.iter().map(f).collect::<Vec<String>>().into()
        };
        let num = |f: &dyn Fn(&Entry) -> f64| -> Robj {
            entries.iter().map(f).collect::<Vec<f64>>().into()
        };
        List::from_names_and_values(
            ["namespace", "tag", "size", "ctime", "class", "description"],
            [
                col(&|e| e.namespace.clone()),
                col(&|e| e.tag.clone()),
                num(&|e| e.size as f64),
                num(&|e| e.ctime_ns as f64 / 1e9),
                col(&|e| e.meta.class.first().cloned().unwrap_or_default()),
                col(&|e| e.meta.description.clone().unwrap_or_default()),
            ],
        )
        .expect("names and values match")
    });
    done(r, None, dir)
}

fn entry_info(e: &Entry) -> Robj {
    let m = &e.meta;
    let description: Robj = match &m.description {
        Some(d) => d.as_str().into(),
        None => ().into(),
    };
    let dim: Robj = if m.dim.is_empty() {
        ().into()
    } else {
        m.dim.iter().map(|d| *d as f64).collect::<Vec<f64>>().into()
    };
    List::from_names_and_values(
        [
            "tag",
            "namespace",
            "size",
            "ctime",
            "class",
            "type",
            "length",
            "dim",
            "description",
            "zero_copy",
            "version",
            "storage",
        ],
        [
            Robj::from(e.tag.as_str()),
            Robj::from(e.namespace.as_str()),
            Robj::from(e.size as f64),
            Robj::from(e.ctime_ns as f64 / 1e9),
            Robj::from(m.class.clone()),
            Robj::from(m.rtype.as_str()),
            Robj::from(m.length as f64),
            dim,
            description,
            Robj::from(session::is_zero_copy(e)),
            Robj::from(e.version as f64),
            Robj::from(if e.inline { "inline" } else { "file" }),
        ],
    )
    .expect("names and values match")
    .into()
}

/// @noRd
#[extendr]
fn object_info_(tag: &str, ns: &str, dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let r = Key::new(ns, tag).and_then(|key| {
        with_session(dir, &ctx, |s| {
            s.get(&key, &ctx.opts()).map(|f| entry_info(&f.entry))
        })
    });
    done(r, Some(tag), dir)
}

/// `bytes` negative: no capacity.
/// @noRd
#[extendr]
fn resize_store_(bytes: f64, dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let cap = if bytes >= 0.0 {
        Some(bytes_from_r(bytes))
    } else {
        None
    };
    let r = with_session(dir, &ctx, |s| s.set_capacity(cap, &ctx.opts()));
    done(r, None, dir)
}

/// `ns` empty: every namespace; `tags` empty: every tag of it.
/// @noRd
#[extendr]
#[allow(clippy::too_many_arguments)]
fn save_objects_(
    file: &str,
    tags: Vec<String>,
    ns: &str,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
    progress: f64,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let mut transfer = Transfer::one(Verb::Save, file, progress::delay(progress));
    let r = with_session(dir, &ctx, |s| {
        let which = SaveSelection {
            namespace: if ns.is_empty() { None } else { Some(ns) },
            tags: &tags,
        };
        s.save(Path::new(file), which, &ctx.opts(), &mut transfer)
    });
    done(r.map(|n| n as f64), None, dir)
}

/// @noRd
#[extendr]
fn load_objects_(
    file: &str,
    overwrite: bool,
    dir: &str,
    exe: &str,
    timeout: f64,
    autostart: bool,
    progress: f64,
) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let mut transfer = Transfer::one(Verb::Load, file, progress::delay(progress));
    let r = with_session(dir, &ctx, |s| {
        let loaded = s.load(Path::new(file), overwrite, &ctx.opts(), &mut transfer)?;
        let ns: Vec<String> = loaded.iter().map(|d| d.namespace.clone()).collect();
        let tags: Vec<String> = loaded.iter().map(|d| d.tag.clone()).collect();
        Ok(
            List::from_names_and_values(["namespace", "tag"], [Robj::from(ns), Robj::from(tags)])
                .expect("names and values match"),
        )
    });
    done(r, None, dir)
}

/// Check every object of `ns` (empty: every namespace) against its
/// checksum; returns one row per object.
/// @noRd
#[extendr]
fn verify_objects_(ns: &str, dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let which = if ns.is_empty() { None } else { Some(ns) };
    let r = with_session(dir, &ctx, |s| s.verify(which, &ctx.opts())).map(|checked| {
        let strings = |f: &dyn Fn(&session::Checked) -> String| -> Robj {
            checked.iter().map(f).collect::<Vec<_>>().into()
        };
        List::from_names_and_values(
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
        )
        .expect("names and values match")
    });
    done(r, None, dir)
}

/// @noRd
#[extendr]
fn remove_objects_(ns: &str, dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let r = with_session(dir, &ctx, |s| s.remove_namespace(ns, &ctx.opts()));
    done(r.map(|n| n as f64), None, dir)
}

/// The sender's description of an object, from
/// list(class, type, length, dim, description) built by the R layer.
fn parse_meta(l: &List) -> Meta {
    let get = |name: &str| l.iter().find(|(n, _)| *n == name).map(|(_, v)| v);
    let strings = |v: Option<Robj>| -> Vec<String> {
        v.and_then(|v| {
            v.as_str_vector()
                .map(|s| s.into_iter().map(String::from).collect())
        })
        .unwrap_or_default()
    };
    let numbers = |v: Option<Robj>| -> Vec<f64> {
        match v {
            Some(v) if v.is_real() => v.as_real_vector().unwrap_or_default(),
            Some(v) if v.is_integer() => v
                .as_integer_vector()
                .unwrap_or_default()
                .into_iter()
                .map(f64::from)
                .collect(),
            _ => Vec::new(),
        }
    };
    Meta {
        class: strings(get("class")),
        rtype: strings(get("type")).into_iter().next().unwrap_or_default(),
        length: numbers(get("length"))
            .first()
            .map(|x| bytes_from_r(*x))
            .unwrap_or(0),
        dim: numbers(get("dim")).into_iter().map(bytes_from_r).collect(),
        description: strings(get("description")).into_iter().next(),
    }
}

/// A number of bytes from R (a double): 0 for NaN or a negative number,
/// saturating above u64::MAX.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the saturating conversion of `as` is the intent"
)]
fn bytes_from_r(x: f64) -> u64 {
    x as u64
}

/// The keys of `tags` in namespace `ns`, each checked.
fn keys(ns: &str, tags: &[String]) -> Result<Vec<Key>, Error> {
    tags.iter().map(|t| Key::new(ns, t)).collect()
}

/// @noRd
#[extendr]
fn server_info_(dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let r = with_session(dir, &ctx, |s| s.info(&ctx.opts())).map(|i| {
        List::from_names_and_values(
            [
                "pid", "dir", "objects", "bytes", "capacity", "free", "started", "version",
            ],
            [
                Robj::from(i32::try_from(i.pid).unwrap_or(0)),
                Robj::from(i.dir),
                Robj::from(i.objects as f64),
                Robj::from(i.bytes as f64),
                Robj::from(i.capacity.map_or(f64::NAN, |c| c as f64)),
                Robj::from(i.free as f64),
                Robj::from(i.started_ns as f64 / 1e9),
                Robj::from(i.version),
            ],
        )
        .expect("names and values match")
    });
    done(r, None, dir)
}

/// Start the helper if needed; returns list(pid, started).
/// @noRd
#[extendr]
fn start_server_(dir: &str, exe: &str, timeout: f64, capacity: f64) -> Robj {
    let ctx = Ctx::new(exe, timeout, true);
    let r = with_session(dir, &ctx, |s| {
        let Started { pid, started } = s.start(&ctx.opts())?;
        if capacity >= 0.0 {
            // An explicit capacity wins over options(yaplr.capacity = ).
            s.set_capacity(Some(bytes_from_r(capacity)), &ctx.opts())?;
        }
        Ok(List::from_names_and_values(
            ["pid", "started"],
            [
                Robj::from(i32::try_from(pid).unwrap_or(i32::MAX)),
                Robj::from(started),
            ],
        )
        .expect("names and values match"))
    });
    done(r, None, dir)
}

/// TRUE when the helper answered, FALSE when none runs, a condition when
/// it is there but does not answer in time.
/// @noRd
#[extendr]
fn ping_server_(dir: &str, exe: &str, timeout: f64) -> Robj {
    let ctx = Ctx::new(exe, timeout, false);
    let r = with_session(dir, &ctx, |s| s.ping(&ctx.opts()));
    done(r, None, dir)
}

/// @noRd
#[extendr]
fn quit_server_(dir: &str, exe: &str, timeout: f64, keep: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, false);
    let r = with_session(dir, &ctx, |s| s.quit(keep, false, &ctx.opts()));
    done(r, None, dir)
}

/// @noRd
#[extendr]
fn is_server_running_(dir: &str, exe: &str) -> Robj {
    let ctx = Ctx::new(exe, 0.0, false);
    let r = with_session(dir, &ctx, |s| s.is_running());
    done(r, None, dir)
}

/// Whether `x` is a zero-copy view of a stored vector.
/// @noRd
#[extendr]
fn is_shared_view_(x: Robj) -> bool {
    // SAFETY: x is protected by extendr for the call.
    vector::is_view(unsafe { x.get() })
}

extendr_module! {
    fn is_shared_view_;
    mod yaplr;
    fn default_store_dir_;
    fn send_object_;
    fn retrieve_object_;
    fn remove_object_;
    fn does_object_exist_;
    fn list_objects_;
    fn server_info_;
    fn start_server_;
    fn ping_server_;
    fn quit_server_;
    fn is_server_running_;
    fn remove_objects_;
    fn verify_objects_;
    fn save_objects_;
    fn load_objects_;
    fn send_objects_;
    fn retrieve_objects_;
    fn resize_store_;
    fn object_info_;
}
