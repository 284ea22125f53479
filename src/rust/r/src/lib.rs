//! yaplr-r: the glue between R and yaplr-core. Arguments arrive checked by
//! the R layer; every failure comes back as a condition object (never a
//! longjmp from Rust), which the R layer signals.

mod progress;
mod serialize;
mod vector;

use extendr_api::prelude::*;
use extendr_ffi::SEXP;
use progress::{Transfer, Verb};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;
use yaplr_core::client::{CallOptions, Client, Found};
use yaplr_core::codec::{now_ns, verify};
use yaplr_core::key::{check_namespace, check_tag};
use yaplr_core::object_file::{
    read_header, ObjectMap, ObjectWriter, PayloadSink, KIND_R_SERIALIZED, KIND_R_VECTOR,
    VECTOR_HEADER_SIZE,
};
use yaplr_core::progress::Meter;
use yaplr_core::protocol::{Entry, Meta, PutItem, BATCH_INLINE_BUDGET, INLINE_MAX};
use yaplr_core::store::{self, Store};
use yaplr_core::Error;

thread_local! {
    // R calls us from one thread; the client is per process and is
    // re-created after fork by Client itself.
    static CLIENT: RefCell<Option<Client>> = const { RefCell::new(None) };
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
            helper_exe: if self.exe.is_empty() {
                None
            } else {
                Some(Path::new(self.exe))
            },
            interrupted: &progress::interrupted,
        }
    }
}

fn with_client<T>(dir: &str, f: impl FnOnce(&mut Client) -> Result<T, Error>) -> Result<T, Error> {
    // The client is taken out of its cell for the call: R may raise an error
    // (a failed allocation) in the middle, and a jump over a live RefCell
    // borrow would leave it borrowed for ever. The worst outcome is then a
    // new connection on the next call.
    let taken = CLIENT.with(|cell| cell.borrow_mut().take());
    let mut c = match taken {
        Some(c) if c.store().dir() == Path::new(dir) => c,
        _ => Client::new(Store::new(PathBuf::from(dir))),
    };
    if !c.is_connected() {
        // This call may start a helper: it gets the session's capacity
        // before any request (options(yaplr.capacity = )).
        match capacity_option() {
            Ok(cap) => c.set_spawn_capacity(cap),
            Err(e) => {
                CLIENT.with(|cell| *cell.borrow_mut() = Some(c));
                return Err(e);
            }
        }
    }
    // No panic may cross into R: it becomes a yaplr_error (and the client,
    // whose state is then unknown, is dropped: the next call reconnects).
    match guarded(|| f(&mut c)) {
        Ok(r) => {
            CLIENT.with(|cell| *cell.borrow_mut() = Some(c));
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
        [Robj::from(e.to_string()), ().into(), tag_robj, dir.into()],
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

/// Collects a payload in memory while it is small, and moves it to an
/// object file as soon as it outgrows INLINE_MAX: one serialization pass
/// either way.
enum Payload {
    Inline(Vec<u8>),
    File(Box<ObjectWriter>),
}

struct PayloadWriter<'a> {
    store: &'a Store,
    ns: &'a str,
    tag: &'a str,
    kind: u32,
    payload: Payload,
}

impl PayloadSink for PayloadWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match &mut self.payload {
            Payload::File(w) => w.write(bytes),
            Payload::Inline(buf) if buf.len() + bytes.len() <= INLINE_MAX => {
                buf.extend_from_slice(bytes);
                Ok(())
            }
            Payload::Inline(buf) => {
                let mut w = ObjectWriter::create(self.store, self.ns, self.tag, self.kind, 0)?;
                w.write(buf)?;
                w.write(bytes)?;
                self.payload = Payload::File(Box::new(w));
                Ok(())
            }
        }
    }
}

/// An object written but not yet published.
enum Staged {
    Inline(Vec<u8>),
    /// A committed object file, by id, with its payload kind.
    File(String, u32),
}

/// Write `sexp` for `tag`: in memory when it is small, else to a committed
/// object file (which the caller must publish or remove). An error (or
/// Ctrl-C, through `meter`) leaves no file.
fn stage_object(
    store: &Store,
    sexp: SEXP,
    ns: &str,
    tag: &str,
    inline_ok: bool,
    meter: &mut Meter<'_>,
) -> Result<Staged, Error> {
    let writer = match vector::as_vector(sexp) {
        Some(h) => {
            let size = VECTOR_HEADER_SIZE as u64 + h.data_len();
            let mut w = ObjectWriter::create(store, ns, tag, KIND_R_VECTOR, size)?;
            vector::write_vector(sexp, &h, &mut w, meter)?;
            w
        }
        None => {
            let payload = if inline_ok {
                Payload::Inline(Vec::with_capacity(256))
            } else {
                Payload::File(Box::new(ObjectWriter::create(
                    store,
                    ns,
                    tag,
                    KIND_R_SERIALIZED,
                    0,
                )?))
            };
            let mut pw = PayloadWriter {
                store,
                ns,
                tag,
                kind: KIND_R_SERIALIZED,
                payload,
            };
            serialize::serialize_into(sexp, &mut pw, meter)?;
            match pw.payload {
                Payload::Inline(bytes) => return Ok(Staged::Inline(bytes)),
                Payload::File(w) => *w,
            }
        }
    };
    let (id, header) = writer.commit()?;
    Ok(Staged::File(id, header.kind))
}

/// Write `sexp` for `tag` and make it the tag's value.
fn store_object(
    c: &mut Client,
    sexp: SEXP,
    ns: &str,
    tag: &str,
    meta: Meta,
    opts: &CallOptions<'_>,
    meter: &mut Meter<'_>,
) -> Result<(), Error> {
    let store = c.store().clone();
    meta.check()?;
    let id = match stage_object(&store, sexp, ns, tag, true, meter)? {
        Staged::Inline(bytes) => {
            return c.put_inline(ns, tag, KIND_R_SERIALIZED, bytes, meta, opts)
        }
        Staged::File(id, _) => id,
    };
    let published = c.publish(ns, tag, &id, meta, opts);
    if let Err(e) = &published {
        c.discard_staged(e, std::slice::from_ref(&id));
    }
    published
}

/// Whether a stored object is retrieved as a zero-copy view (unless the
/// caller asks for a copy).
fn is_zero_copy(kind: u32, payload_len: u64) -> bool {
    kind == KIND_R_VECTOR && payload_len >= vector::MIN_ZERO_COPY_BYTES
}

/// Decode one looked-up object into a preserved SEXP, counting the bytes
/// it copies on `meter` (whose hook may abort it).
fn decode_found(found: Found, tag: &str, copy: bool, meter: &mut Meter<'_>) -> Result<SEXP, Error> {
    match found {
        Found::Inline(entry, bytes) => {
            verify(&bytes, entry.checksum, tag).map_err(advise_resend)?;
            serialize::unserialize_from(&bytes, tag, meter)
        }
        Found::File(_, file) => {
            let header = read_header(&file).map_err(|e| damaged(e, tag))?;
            let view = !copy && is_zero_copy(header.kind, header.payload_len);
            if header.kind == KIND_R_VECTOR && !view {
                return vector::read_copy(&file, &header, tag, meter).map_err(|e| damaged(e, tag));
            }
            let map = if view {
                ObjectMap::open_for_view(&file)
            } else {
                ObjectMap::open(&file)
            }
            .map_err(|e| damaged(e, tag))?;
            // Every retrieve that copies checks the payload; a zero-copy
            // view is not read here, so it is not checked.
            if copy || map.header.kind != KIND_R_VECTOR {
                verify(map.payload(), map.header.checksum, tag).map_err(advise_resend)?;
            }
            match map.header.kind {
                KIND_R_SERIALIZED => serialize::unserialize_from(map.payload(), tag, meter),
                KIND_R_VECTOR => vector::read_view(map, tag),
                other => Err(Error::Corrupt {
                    message: format!(
                        "the stored object \"{tag}\" has payload kind {other}, unknown to this version of yaplr"
                    ),
                }),
            }
        }
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
    let r = tags
        .iter()
        .try_for_each(|t| check_key(ns, t))
        .and_then(|_| {
            with_client(dir, |c| {
                let opts = ctx.opts();
                c.connect(&opts)?;
                let store = c.store().clone();
                let mut meter = Meter::new(&mut transfer, None);
                let mut items = Vec::with_capacity(tags.len());
                let mut ids: Vec<String> = Vec::new();
                // Small objects travel in the batch's one message until it
                // holds BATCH_INLINE_BUDGET bytes; the others go to files.
                let mut inline_bytes = 0usize;
                for (i, ((_, obj), tag)) in objs.iter().zip(&tags).enumerate() {
                    let inline_ok = inline_bytes + INLINE_MAX <= BATCH_INLINE_BUDGET;
                    let meta = metas
                        .elt(i)
                        .ok()
                        .and_then(|m| m.as_list())
                        .map(|m| parse_meta(&m))
                        .unwrap_or_default();
                    // SAFETY: the list (and so its elements) is protected by extendr.
                    let staged = meta.check().and_then(|_| {
                        stage_object(&store, unsafe { obj.get() }, ns, tag, inline_ok, &mut meter)
                    });
                    let staged = match staged {
                        Ok(s) => s,
                        Err(e) => {
                            for id in &ids {
                                let _ = std::fs::remove_file(store.object_path(id));
                            }
                            return Err(e);
                        }
                    };
                    let (inline, id, kind) = match staged {
                        Staged::Inline(b) => {
                            inline_bytes += b.len();
                            (Some(b), None, KIND_R_SERIALIZED)
                        }
                        Staged::File(id, kind) => {
                            ids.push(id.clone());
                            (None, Some(id), kind)
                        }
                    };
                    items.push(PutItem {
                        namespace: ns.to_string(),
                        tag: tag.clone(),
                        kind,
                        ctime_ns: now_ns(),
                        inline,
                        id,
                        meta,
                    });
                }
                drop(meter);
                let r = c.put_many(items, &opts);
                if let Err(e) = &r {
                    c.discard_staged(e, &ids);
                }
                r
            })
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
    let keys: Vec<(String, String)> = tags.iter().map(|t| (ns.to_string(), t.clone())).collect();
    let r = tags
        .iter()
        .try_for_each(|t| check_key(ns, t))
        .and_then(|_| {
            with_client(dir, |c| {
                // Decoded as they arrive: only a frame's worth of object
                // files is open at once, however many there are.
                let mut values = Vec::with_capacity(tags.len());
                let mut meter = Meter::new(&mut transfer, None);
                let r = c.lookup_many(keys, &ctx.opts(), |found| {
                    let tag = tags.get(values.len()).map_or("", |t| t.as_str());
                    values.push(decode_found(found, tag, copy, &mut meter)?);
                    Ok(())
                });
                match r {
                    Ok(_) => Ok(values),
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
    let r = check_key(ns, tag).and_then(|_| {
        with_client(dir, |c| {
            let opts = ctx.opts();
            // Connect first: no point serializing for a helper we can't reach.
            c.connect(&opts)?;
            // SAFETY: obj is protected by extendr for the duration of the call.
            let sexp = unsafe { obj.get() };
            let total = vector::as_vector(sexp).map(|h| h.data_len());
            let mut meter = Meter::new(&mut transfer, total);
            store_object(c, sexp, ns, tag, parse_meta(&meta), &opts, &mut meter)
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
    let r = check_key(ns, tag).and_then(|_| {
        with_client(dir, |c| {
            let found = c
                .lookup(ns, tag, &ctx.opts())
                .map_err(|e| damaged(e, tag))?;
            let total = match &found {
                Found::File(e, _) => Some(e.size),
                Found::Inline(..) => None,
            };
            let mut meter = Meter::new(&mut transfer, total);
            decode_found(found, tag, copy, &mut meter)
        })
    });
    match r {
        Ok(sexp) => {
            // SAFETY: sexp was preserved when it was made; wrapping it in a
            // list protects it before we release the preservation.
            let value = unsafe { Robj::from_sexp(sexp) };
            let out = List::from_values([value]);
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
    let r = check_key(ns, tag).and_then(|_| with_client(dir, |c| c.remove(ns, tag, &ctx.opts())));
    done(r.map(|_| ()), Some(tag), dir)
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
    let r = check_key(ns, tag).and_then(|_| with_client(dir, |c| c.exists(ns, tag, &ctx.opts())));
    done(r, Some(tag), dir)
}

/// `ns` empty: every namespace.
/// @noRd
#[extendr]
fn list_objects_(ns: &str, dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let which = if ns.is_empty() { None } else { Some(ns) };
    let r = with_client(dir, |c| c.list(which, &ctx.opts())).map(|entries| {
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
            Robj::from(!e.inline && is_zero_copy(e.kind, e.size)),
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
    let r = check_key(ns, tag).and_then(|_| {
        with_client(dir, |c| match c.lookup(ns, tag, &ctx.opts())? {
            Found::File(e, _) | Found::Inline(e, _) => Ok(entry_info(&e)),
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
    let r = with_client(dir, |c| c.set_capacity(cap, &ctx.opts()));
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
    let r = with_client(dir, |c| {
        let opts = ctx.opts();
        let which = if ns.is_empty() { None } else { Some(ns) };
        let mut entries = c.list(which, &opts)?;
        if !tags.is_empty() {
            for t in &tags {
                if !entries.iter().any(|e| &e.tag == t) {
                    return Err(Error::NotFound {
                        tag: t.clone(),
                        namespace: ns.to_string(),
                    });
                }
            }
            entries.retain(|e| tags.contains(&e.tag));
        }
        yaplr_core::dump::save(c, Path::new(file), &entries, &opts, &mut transfer)
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
    let r = with_client(dir, |c| {
        let loaded =
            yaplr_core::dump::load(c, Path::new(file), overwrite, &ctx.opts(), &mut transfer)?;
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
    let r = with_client(dir, |c| {
        yaplr_core::verify::verify_store(c, which, &ctx.opts())
    })
    .map(|checked| {
        List::from_names_and_values(
            ["namespace", "tag", "size", "ok", "checked", "problem"],
            [
                Robj::from(
                    checked
                        .iter()
                        .map(|c| c.entry.namespace.clone())
                        .collect::<Vec<_>>(),
                ),
                Robj::from(
                    checked
                        .iter()
                        .map(|c| c.entry.tag.clone())
                        .collect::<Vec<_>>(),
                ),
                Robj::from(
                    checked
                        .iter()
                        .map(|c| c.entry.size as f64)
                        .collect::<Vec<_>>(),
                ),
                Robj::from(
                    checked
                        .iter()
                        .map(|c| c.problem.is_none())
                        .collect::<Vec<_>>(),
                ),
                Robj::from(checked.iter().map(|c| c.recorded).collect::<Vec<_>>()),
                Robj::from(
                    checked
                        .iter()
                        .map(|c| c.problem.clone().unwrap_or_default())
                        .collect::<Vec<_>>(),
                ),
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
    let r = check_namespace(ns)
        .map_err(Error::from)
        .and_then(|_| with_client(dir, |c| c.remove_namespace(ns, &ctx.opts())));
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

/// A damaged object file, explained with its tag and what to do.
/// A payload that fails its checksum: say what to do.
fn advise_resend(e: Error) -> Error {
    match e {
        Error::Corrupt { message } => Error::Corrupt {
            message: format!("{message}; remove it with remove_object() and send it again"),
        },
        e => e,
    }
}

fn damaged(e: Error, tag: &str) -> Error {
    match e {
        Error::Corrupt { message } => Error::Corrupt {
            message: format!(
                "the stored object \"{tag}\" is damaged ({message}); remove it with remove_object() and send it again"
            ),
        },
        e => e,
    }
}

/// A count or size R gives as a double, as a u64: the integer part, 0 for
/// NaN or a negative number, saturating above u64::MAX.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the saturating conversion of `as` is the intent"
)]
fn bytes_from_r(x: f64) -> u64 {
    x as u64
}

fn check_key(ns: &str, tag: &str) -> Result<(), Error> {
    check_tag(tag)?;
    Ok(check_namespace(ns)?)
}

/// @noRd
#[extendr]
fn server_info_(dir: &str, exe: &str, timeout: f64, autostart: bool) -> Robj {
    let ctx = Ctx::new(exe, timeout, autostart);
    let r = with_client(dir, |c| c.info(&ctx.opts())).map(|i| {
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
    let r = with_client(dir, |c| {
        let was_running = c.is_running()?;
        c.ping(&ctx.opts())?;
        if capacity >= 0.0 {
            // An explicit capacity wins over options(yaplr.capacity = ).
            c.set_capacity(Some(bytes_from_r(capacity)), &ctx.opts())?;
        }
        let pid = c
            .helper_pid()
            .and_then(|p| i32::try_from(p).ok())
            .unwrap_or(0);
        Ok(List::from_names_and_values(
            ["pid", "started"],
            [Robj::from(pid), Robj::from(!was_running)],
        )
        .expect("names and values match"))
    });
    done(r, None, dir)
}

/// TRUE when the helper answered, FALSE when none runs, a condition when
/// it is there but does not answer in time.
/// @noRd
#[extendr]
fn ping_server_(dir: &str, timeout: f64) -> Robj {
    let ctx = Ctx::new("", timeout, false);
    let r = with_client(dir, |c| match c.ping(&ctx.opts()) {
        Ok(()) => Ok(true),
        Err(Error::NoServer { .. }) => Ok(false),
        Err(e) => Err(e),
    });
    done(r, None, dir)
}

/// @noRd
#[extendr]
fn quit_server_(dir: &str, timeout: f64, keep: bool) -> Robj {
    let ctx = Ctx::new("", timeout, false);
    let r = with_client(dir, |c| c.quit(keep, &ctx.opts()));
    done(r, None, dir)
}

/// @noRd
#[extendr]
fn is_server_running_(dir: &str) -> Robj {
    let r = with_client(dir, |c| c.is_running());
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
