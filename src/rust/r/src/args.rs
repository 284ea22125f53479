//! The checks of the arguments of yaplr's exported functions, made once,
//! here: the R layer passes them as the user gave them. The limits are
//! those of yaplr_core::key. A bad argument gives the classed condition and
//! the message the R layer gave when it checked them, naming the value the
//! way R/conditions.R describe() does (ported below for the values these
//! checks meet). Strings come out as UTF-8, converted as enc2utf8() does.
//!
//! The order of the checks inside each glue function is the order in which
//! the R layer made them, so the same error wins when several arguments are
//! bad.

use crate::conditions::RError;
use crate::ffi;
use crate::session;
use crate::settings::Settings;
use extendr_api::prelude::*;
use extendr_ffi::{
    R_ClassSymbol, R_NaInt, R_NaString, R_NilValue, Rboolean, Rf_isObject, Rf_xlength, COMPLEX_ELT,
    INTEGER_ELT, LENGTH, LOGICAL_ELT, RAW, REAL_ELT, R_CHAR, SEXP, SEXPTYPE, STRING_ELT, TYPEOF,
};
use std::collections::HashSet;
use std::ffi::CStr;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::Duration;
use yaplr_core::backend::Condition;
use yaplr_core::key::{MAX_NAMESPACE_BYTES, MAX_TAG_BYTES};
use yaplr_core::{CallOptions, Error, Key};

/// The outcome of a check.
pub type Checked<T> = std::result::Result<T, RError>;

/// The longest timeout, in seconds (some 31 years: in effect never), so
/// that any positive number converts to a Duration.
const MAX_TIMEOUT_SECS: f64 = 1e9;

fn bad_tag(message: String, tag: Option<Robj>) -> RError {
    RError::argument(Error::BadTag(message), tag)
}

fn bad_argument(message: String) -> RError {
    RError::argument(Error::BadArgument(message), None)
}

/// A tag, as `tag` in send_object() (`arg` names it in messages).
fn tag(x: &Robj, arg: &str) -> Checked<String> {
    tag_v(Value::of(x), arg)
}

fn tag_v(v: Value<'_>, arg: &str) -> Checked<String> {
    let single = v.sexptype() == SEXPTYPE::STRSXP && v.len() == 1;
    tag_text(v.single_string(), arg, || {
        (describe(v), single.then(|| v.robj()))
    })
}

/// A tag given as one element of a character vector (`tags[2]`).
fn tag_element(c: Option<Chars<'_>>, arg: &str) -> Checked<String> {
    tag_text(c, arg, || {
        let value = string_vector(c);
        (describe(Value::of(&value)), Some(value))
    })
}

/// The checks of a tag given as `c` (None: NA); `described` gives the
/// description of the value given and the `tag` field of its condition.
fn tag_text(
    c: Option<Chars<'_>>,
    arg: &str,
    described: impl FnOnce() -> (String, Option<Robj>),
) -> Checked<String> {
    let Some(c) = c.filter(|c| !c.bytes().is_empty()) else {
        let (what, field) = described();
        return Err(bad_tag(
            format!("`{arg}` must be a single non-empty string, not {what}."),
            field,
        ));
    };
    let Some(tag) = c.utf8() else {
        return Err(bad_tag(
            format!(
                "`{arg}` must be valid text in UTF-8, latin1 or the session's encoding, \
                 not bytes that are none of these."
            ),
            None,
        ));
    };
    if tag.len() > MAX_TAG_BYTES {
        return Err(bad_tag(
            format!(
                "`{arg}` must be at most {MAX_TAG_BYTES} bytes long, not {} bytes.",
                tag.len()
            ),
            Some(tag.as_str().into()),
        ));
    }
    Ok(tag)
}

/// A namespace.
pub fn namespace(x: &Robj) -> Checked<String> {
    namespace_v(Value::of(x))
}

fn namespace_v(v: Value<'_>) -> Checked<String> {
    let Some(c) = v.single_string().filter(|c| !c.bytes().is_empty()) else {
        return Err(bad_argument(format!(
            "`namespace` must be a single non-empty string (default: options(yaplr.namespace = )), \
             not {}.",
            describe(v)
        )));
    };
    let Some(ns) = c.utf8() else {
        return Err(bad_argument(
            "`namespace` must be valid text in UTF-8, latin1 or the session's encoding.".into(),
        ));
    };
    if ns.len() > MAX_NAMESPACE_BYTES {
        return Err(bad_argument(format!(
            "`namespace` must be at most {MAX_NAMESPACE_BYTES} bytes long, not {} bytes.",
            ns.len()
        )));
    }
    Ok(ns)
}

/// `namespace`, or when NULL options(yaplr.namespace = ) or "default".
fn namespace_or_option_v(x: Value<'_>, settings: &Settings) -> Checked<String> {
    if x.sexptype() != SEXPTYPE::NILSXP {
        return namespace_v(x);
    }
    let o = settings.namespace;
    if o.sexptype() == SEXPTYPE::NILSXP {
        return Ok(yaplr_core::key::DEFAULT_NAMESPACE.to_string());
    }
    namespace_v(o)
}

/// The options of a call from `timeout` (NULL: options(yaplr.timeout = ),
/// else 10 seconds) and options(yaplr.automatic_server_start = ) (else
/// TRUE).
pub fn options_or_defaults(timeout: &Robj) -> Checked<CallOptions<'static>> {
    options_or_defaults_v(Value::of(timeout), &Settings::read())
}

/// `options_or_defaults` of a `.Call` argument.
pub fn options_or_defaults_v(
    timeout: Value<'_>,
    settings: &Settings,
) -> Checked<CallOptions<'static>> {
    // SAFETY: R_NilValue is set once R has started.
    call_options_v(timeout, unsafe { Value::arg(R_NilValue) }, settings)
}

/// `call_options`, where NULL means the option: options(yaplr.timeout = )
/// (else 10 seconds) and options(yaplr.automatic_server_start = ) (else
/// TRUE).
pub fn call_options_or_defaults(
    timeout: &Robj,
    automatic_server_start: &Robj,
    settings: &Settings,
) -> Checked<CallOptions<'static>> {
    call_options_v(
        Value::of(timeout),
        Value::of(automatic_server_start),
        settings,
    )
}

/// `call_options_or_defaults` of raw arguments.
pub fn call_options_v(
    timeout: Value<'_>,
    automatic_server_start: Value<'_>,
    settings: &Settings,
) -> Checked<CallOptions<'static>> {
    let t = if timeout.sexptype() == SEXPTYPE::NILSXP {
        settings.timeout
    } else {
        timeout
    };
    let t = if t.sexptype() == SEXPTYPE::NILSXP {
        Duration::from_secs(10)
    } else {
        timeout_v(t)?
    };
    let a = if automatic_server_start.sexptype() == SEXPTYPE::NILSXP {
        settings.automatic_server_start
    } else {
        automatic_server_start
    };
    let autostart = if a.sexptype() == SEXPTYPE::NILSXP {
        true
    } else {
        flag_v(
            a,
            "automatic_server_start",
            Some("yaplr.automatic_server_start"),
        )?
    };
    Ok(session::options(t, autostart))
}

/// The store option as its bytes: options(yaplr.dir = ) if a string, else
/// the variable YAPLR_DIR (None: the option is set to something else).
pub fn dir_option(settings: &Settings) -> Option<Vec<u8>> {
    let o = settings.dir;
    if o.sexptype() == SEXPTYPE::NILSXP {
        use std::os::unix::ffi::OsStrExt;
        return Some(
            std::env::var_os("YAPLR_DIR")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default(),
        );
    }
    o.single_string().map(|c| c.bytes().to_vec())
}

/// Whether the store option (or, unset, the variable YAPLR_DIR) is `dir`,
/// as `dir_option` gives it; asked without making a copy.
pub fn dir_option_is(dir: &[u8], settings: &Settings) -> bool {
    let o = settings.dir;
    if o.sexptype() != SEXPTYPE::NILSXP {
        return o.single_string().is_some_and(|c| c.bytes() == dir);
    }
    // SAFETY: getenv returns NULL or a NUL-terminated string of the
    // environment, read at once (R changes its environment only on this
    // thread, between calls).
    let value = unsafe { libc::getenv(c"YAPLR_DIR".as_ptr()) };
    if value.is_null() {
        return dir.is_empty();
    }
    // SAFETY: as above.
    unsafe { CStr::from_ptr(value) }.to_bytes() == dir
}

/// The address of an option's value (which names it while it is set).
pub fn address(v: Value<'_>) -> usize {
    v.sexp as usize
}

/// The key of a counter, lock, queue or barrier: its `name` in `namespace`
/// (NULL: the option's).
pub fn name_key_or_option(name: &Robj, namespace: &Robj) -> Checked<Key> {
    name_key_or_option_v(Value::of(name), Value::of(namespace), &Settings::read())
}

/// `name_key_or_option` of `.Call` arguments.
pub fn name_key_or_option_v(
    name: Value<'_>,
    namespace: Value<'_>,
    settings: &Settings,
) -> Checked<Key> {
    let name = tag_v(name, "name")?;
    let namespace = namespace_or_option_v(namespace, settings)?;
    Key::new(&namespace, &name).map_err(|e| RError::argument(e, None))
}

/// The key of a `tag` argument (raw) and a namespace, or NULL for
/// options(yaplr.namespace = ).
pub fn tag_key_or_option_v(
    tag: Value<'_>,
    namespace: Value<'_>,
    settings: &Settings,
) -> Checked<Key> {
    let tag = tag_v(tag, "tag")?;
    let namespace = namespace_or_option_v(namespace, settings)?;
    Key::new(&namespace, &tag).map_err(|e| RError::argument(e, None))
}

/// A namespace, or NULL for every namespace (None).
pub fn namespace_or_all(x: &Robj) -> Checked<Option<String>> {
    if x.is_null() {
        return Ok(None);
    }
    namespace(x).map(Some)
}

/// The key of a tag and a namespace, checked in that order; a NULL
/// `namespace` means options(yaplr.namespace = ) (else "default").
pub fn key_or_option(tag: &Robj, namespace: &Robj, settings: &Settings) -> Checked<Key> {
    let tag = self::tag(tag, "tag")?;
    let namespace = namespace_or_option_v(Value::of(namespace), settings)?;
    Key::new(&namespace, &tag).map_err(|e| RError::argument(e, None))
}

/// The delay before a progress bar shows, in seconds as the R layer gives
/// it, or NULL for the option: options(yaplr.progress = ) TRUE is 2
/// seconds, a number that many, anything else none; unset, 2 seconds in an
/// interactive session and none otherwise.
pub fn progress_delay(x: &Robj, settings: &Settings) -> Option<Duration> {
    let v = Value::of(x);
    let p = if v.sexptype() == SEXPTYPE::NILSXP {
        settings.progress
    } else {
        v
    };
    if p.sexptype() == SEXPTYPE::NILSXP {
        // interactive() does not change while R runs: asked once (a
        // thread-local, not a lock: R code run by the call may get here).
        thread_local! {
            static INTERACTIVE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
        }
        // SAFETY: a call of a base function of no arguments, evaluated
        // silently (see call_base).
        let ask = || unsafe {
            let call = extendr_ffi::Rf_protect(extendr_ffi::Rf_lcons(
                ffi::symbol(c"interactive"),
                R_NilValue,
            ));
            let mut failed = 0;
            let out = extendr_ffi::R_tryEvalSilent(call, extendr_ffi::R_BaseEnv, &mut failed);
            let yes = failed == 0
                && TYPEOF(out) == SEXPTYPE::LGLSXP
                && extendr_ffi::Rf_xlength(out) == 1
                && LOGICAL_ELT(out, 0) == 1;
            extendr_ffi::Rf_unprotect(1);
            yes
        };
        let interactive = INTERACTIVE.get().unwrap_or_else(|| {
            let yes = ask();
            INTERACTIVE.set(Some(yes));
            yes
        });
        return interactive.then(|| Duration::from_secs(2));
    }
    let seconds = if p.sexptype() == SEXPTYPE::LGLSXP && p.len() == 1 && !p.is_object() {
        // isTRUE(): TRUE is 2 seconds.
        // SAFETY: a logical vector of length 1.
        (unsafe { LOGICAL_ELT(p.sexp, 0) } == 1).then_some(2.0)
    } else if p.is_numeric() && p.len() == 1 {
        p.number().filter(|n| *n >= 0.0)
    } else {
        None
    };
    crate::progress::delay(seconds.unwrap_or(-1.0))
}

/// The key of a counter, lock, queue or barrier: its `name` in
/// `namespace`.
pub fn name_key(name: &Robj, namespace: &Robj) -> Checked<Key> {
    let name = self::tag(name, "name")?;
    let namespace = self::namespace(namespace)?;
    Key::new(&namespace, &name).map_err(|e| RError::argument(e, None))
}

/// `v` if it is a single whole number from `least` to `most`.
fn whole_number(v: Value<'_>, least: f64, most: f64) -> Option<f64> {
    let n = if v.is_numeric() && v.len() == 1 {
        v.number()
    } else {
        None
    };
    n.filter(|n| (least..=most).contains(n) && n.fract() == 0.0)
}

/// A count as argument `arg`: a single whole number from 1 to `most`.
pub fn count(x: &Robj, arg: &str, most: u32) -> Checked<u32> {
    let v = Value::of(x);
    match whole_number(v, 1.0, f64::from(most)) {
        Some(n) => Ok(u32::try_from(bytes_from_r(n)).unwrap_or(most)),
        _ => Err(bad_argument(format!(
            "`{arg}` must be a single whole number from 1 to {most}, not {}.",
            describe(v)
        ))),
    }
}

/// The keys of `tags` in `namespace`.
pub fn keys(namespace: &str, tags: &[String]) -> Checked<Vec<Key>> {
    tags.iter()
        .map(|t| Key::new(namespace, t).map_err(|e| RError::argument(e, None)))
        .collect()
}

/// `tags` of retrieve_objects(): a character vector of tags.
pub fn tags(x: &Robj) -> Checked<Vec<String>> {
    let v = Value::of(x);
    if v.sexptype() != SEXPTYPE::STRSXP || v.is_object() {
        return Err(bad_tag(
            format!("`tags` must be a character vector, not {}.", describe(v)),
            None,
        ));
    }
    tag_elements(v, "tags")
}

/// `tags` of save_objects(): NULL (None) or a character vector of tags.
pub fn tags_or_all(x: &Robj) -> Checked<Option<Vec<String>>> {
    let v = Value::of(x);
    if v.sexptype() == SEXPTYPE::NILSXP {
        return Ok(None);
    }
    if v.sexptype() != SEXPTYPE::STRSXP || v.is_object() {
        return Err(bad_tag(
            format!(
                "`tags` must be NULL or a character vector, not {}.",
                describe(v)
            ),
            None,
        ));
    }
    tag_elements(v, "tags").map(Some)
}

/// Every element of a character vector as a tag, named `arg[i]`.
fn tag_elements(v: Value<'_>, arg: &str) -> Checked<Vec<String>> {
    (0..v.len())
        .map(|i| tag_element(v.string(i), &format!("{arg}[{}]", i + 1)))
        .collect()
}

/// The tags of send_objects(): the names of the list `objects`, each a
/// tag, none twice.
pub fn object_names(objects: &Robj) -> Checked<Vec<String>> {
    let names = objects.get_attrib(names_symbol());
    let n = objects.len();
    let unnamed = || {
        bad_tag(
            "every element of `objects` must have a name: the names are the tags.".into(),
            None,
        )
    };
    let Some(names) = names.filter(|_| n > 0) else {
        return if n > 0 {
            Err(unnamed())
        } else {
            Ok(Vec::new())
        };
    };
    let v = Value::of(&names);
    if (0..v.len()).any(|i| v.string(i).is_none_or(|c| c.bytes().is_empty())) {
        return Err(unnamed());
    }
    let tags = tag_elements(v, "names(objects)")?;
    let mut seen = HashSet::with_capacity(tags.len());
    if let Some(twice) = tags.iter().find(|t| !seen.insert(t.as_str())) {
        return Err(bad_tag(
            format!("`objects` names the tag \"{twice}\" twice."),
            None,
        ));
    }
    Ok(tags)
}

/// `description` of send_object(): NULL (None) or one string.
pub fn description(x: &Robj) -> Checked<Option<String>> {
    let v = Value::of(x);
    if v.sexptype() == SEXPTYPE::NILSXP {
        return Ok(None);
    }
    let Some(c) = v.single_string() else {
        return Err(bad_argument(format!(
            "`description` must be NULL or a single string, not {}.",
            describe(v)
        )));
    };
    description_text(c).map(Some)
}

/// `description` of send_objects() with `n` objects: NULL, or one string
/// (or NA: none) per object, or one for all.
pub fn descriptions(x: &Robj, n: usize) -> Checked<Vec<Option<String>>> {
    let v = Value::of(x);
    if v.sexptype() == SEXPTYPE::NILSXP {
        return Ok(vec![None; n]);
    }
    let len = v.len();
    if v.sexptype() != SEXPTYPE::STRSXP || v.is_object() || (len != 1 && len != n) {
        let what = if n == 1 {
            "a single string".to_string()
        } else {
            format!("a character vector of length 1 or {n}")
        };
        return Err(bad_argument(format!(
            "`description` must be NULL or {what}, not {}.",
            describe(v)
        )));
    }
    let given = (0..len)
        .map(|i| v.string(i).map(description_text).transpose())
        .collect::<Checked<Vec<_>>>()?;
    Ok((0..n).map(|i| given[i % len].clone()).collect())
}

fn description_text(c: Chars<'_>) -> Checked<String> {
    c.utf8().ok_or_else(|| {
        bad_argument(
            "`description` must be valid text in UTF-8, latin1 or the session's encoding.".into(),
        )
    })
}

/// A timeout in seconds.
pub fn timeout(x: &Robj) -> Checked<Duration> {
    timeout_v(Value::of(x))
}

fn timeout_v(v: Value<'_>) -> Checked<Duration> {
    let seconds = if v.is_numeric() && v.len() == 1 {
        v.number()
    } else {
        None
    };
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 => {
            Ok(Duration::from_secs_f64(s.min(MAX_TIMEOUT_SECS)))
        }
        _ => Err(bad_argument(format!(
            "`timeout` must be a single positive number of seconds (default: options(yaplr.timeout = )), \
             not {}.",
            describe(v)
        ))),
    }
}

/// The largest version or counter value R's doubles hold exactly (2^53).
pub const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// A version as argument `arg`: NULL (None) or a single whole number from
/// 0 to 2^53 (as object_info() gives it).
pub fn version(x: &Robj, arg: &str) -> Checked<Option<u64>> {
    if x.is_null() {
        return Ok(None);
    }
    let v = Value::of(x);
    match whole_number(v, 0.0, MAX_EXACT) {
        Some(n) => Ok(Some(bytes_from_r(n))),
        _ => Err(bad_argument(format!(
            "`{arg}` must be NULL or a version as object_info() gives it (a single whole \
             number), not {}.",
            describe(v)
        ))),
    }
}

/// A counter value as argument `arg`: a single whole number within
/// ±2^53 (so that a double holds it exactly).
pub fn counter_value_v(v: Value<'_>, arg: &str) -> Checked<i64> {
    match whole_number(v, -MAX_EXACT, MAX_EXACT) {
        Some(n) =>
        {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "a whole number within 2^53"
            )]
            Ok(n as i64)
        }
        _ => Err(bad_argument(format!(
            "`{arg}` must be a single whole number from -2^53 to 2^53, not {}.",
            describe(v)
        ))),
    }
}

/// The condition of a conditional send: `if_absent` (TRUE or FALSE), then
/// `if_version` (NULL or a version); not both.
pub fn condition(if_absent: &Robj, if_version: &Robj) -> Checked<Condition> {
    let absent = flag(if_absent, "if_absent", None)?;
    match (absent, version(if_version, "if_version")?) {
        (true, Some(_)) => Err(bad_argument(
            "give `if_absent = TRUE` or `if_version`, not both.".into(),
        )),
        (true, None) => Ok(Condition::Absent),
        (false, Some(v)) => Ok(Condition::Version(v)),
        (false, None) => Ok(Condition::Always),
    }
}

/// TRUE or FALSE, as argument `arg`; `option` is the option that gives its
/// default, if any.
pub fn flag(x: &Robj, arg: &str, option: Option<&str>) -> Checked<bool> {
    flag_v(Value::of(x), arg, option)
}

fn flag_v(v: Value<'_>, arg: &str, option: Option<&str>) -> Checked<bool> {
    if v.sexptype() == SEXPTYPE::LGLSXP && v.len() == 1 {
        // SAFETY: a logical vector of length 1, protected for the call.
        let b = unsafe { LOGICAL_ELT(v.sexp, 0) };
        if b != R_NA_LOGICAL {
            return Ok(b != 0);
        }
    }
    let hint = option.map_or_else(String::new, |o| format!(" (default: options({o} = ))"));
    Err(bad_argument(format!(
        "`{arg}` must be TRUE or FALSE{hint}, not {}.",
        describe(v)
    )))
}

/// `automatic_server_start`: the argument, or the option when it is NULL
/// (the R layer passes the option then).
pub fn autostart(x: &Robj) -> Checked<bool> {
    flag(
        x,
        "automatic_server_start",
        Some("yaplr.automatic_server_start"),
    )
}

/// The options of a call from its `timeout` and `automatic_server_start`,
/// checked in that order.
pub fn call_options(
    timeout: &Robj,
    automatic_server_start: &Robj,
) -> Checked<CallOptions<'static>> {
    let timeout = self::timeout(timeout)?;
    Ok(session::options(
        timeout,
        autostart(automatic_server_start)?,
    ))
}

/// A size in bytes parsed by the R layer: NULL (None), a number, or the
/// condition of a size it could not parse, raised now.
pub fn size(x: &Robj) -> Checked<Option<u64>> {
    if x.is_null() {
        return Ok(None);
    }
    match x.as_real() {
        Some(b) => Ok(Some(bytes_from_r(b))),
        None => Err(RError::Prepared(x.clone())),
    }
}

/// A path prepared by the R layer (native encoding), as its bytes.
pub fn path(x: &Robj) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let v = Value::of(x);
    let bytes = if v.sexptype() == SEXPTYPE::STRSXP && v.len() > 0 {
        v.string(0).map_or(&[][..], |c| c.bytes())
    } else {
        &[]
    };
    std::ffi::OsStr::from_bytes(bytes).into()
}

/// A number of bytes from R (a double): 0 for NaN or a negative number,
/// saturating above u64::MAX.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the saturating conversion of `as` is the intent"
)]
pub fn bytes_from_r(x: f64) -> u64 {
    x as u64
}

/// R's NA_LOGICAL (INT_MIN, as NA_INTEGER).
const R_NA_LOGICAL: i32 = i32::MIN;

/// An R value being checked, borrowed from an argument, which extendr (or
/// R, for a `.Call` entry of its own) keeps protected for the call, and
/// with it every element and attribute of the value.
#[derive(Clone, Copy)]
pub struct Value<'a> {
    sexp: SEXP,
    _arg: PhantomData<&'a Robj>,
}

/// A string of a character vector (a CHARSXP), borrowed like `Value`.
#[derive(Clone, Copy)]
struct Chars<'a> {
    sexp: SEXP,
    _arg: PhantomData<&'a Robj>,
}

impl Value<'_> {
    /// An argument of a `.Call` entry of the glue's own (see fast.rs).
    ///
    /// # Safety
    /// `sexp` is an argument of the running `.Call`, which R protects
    /// until it returns; the value must not be used after that.
    pub unsafe fn arg(sexp: SEXP) -> Value<'static> {
        Value {
            sexp,
            _arg: PhantomData,
        }
    }

    /// The SEXP.
    pub fn sexp(self) -> SEXP {
        self.sexp
    }

    /// The value as an Robj (for the fields of a condition).
    fn robj(self) -> Robj {
        // SAFETY: a valid SEXP, protected for the call (see Value); the
        // Robj protects it again for as long as it lives.
        unsafe { Robj::from_sexp(self.sexp) }
    }
}

impl<'a> Value<'a> {
    fn of(x: &'a Robj) -> Value<'a> {
        Value {
            // SAFETY: the SEXP of a live Robj, used only while it lives.
            sexp: unsafe { x.get() },
            _arg: PhantomData,
        }
    }

    fn sexptype(self) -> SEXPTYPE {
        // SAFETY: a valid, protected SEXP (see Value).
        unsafe { TYPEOF(self.sexp) }
    }

    /// length() of a value that is not an object (or the length of its
    /// data).
    fn len(self) -> usize {
        // SAFETY: a valid, protected SEXP; Rf_xlength only reads it.
        usize::try_from(unsafe { Rf_xlength(self.sexp) }).unwrap_or(0)
    }

    /// is.object(): whether it has a class attribute.
    fn is_object(self) -> bool {
        // SAFETY: a valid, protected SEXP; Rf_isObject only reads it.
        unsafe { Rf_isObject(self.sexp) != Rboolean::FALSE }
    }

    fn is_s4(self) -> bool {
        // SAFETY: a valid, protected SEXP; Rf_isS4 only reads it.
        unsafe { extendr_ffi::Rf_isS4(self.sexp) != Rboolean::FALSE }
    }

    fn is_atomic(self) -> bool {
        use SEXPTYPE::*;
        matches!(
            self.sexptype(),
            LGLSXP | INTSXP | REALSXP | CPLXSXP | STRSXP | RAWSXP
        )
    }

    /// The `i`-th string of a character vector; None for NA.
    fn string(self, i: usize) -> Option<Chars<'a>> {
        debug_assert!(self.sexptype() == SEXPTYPE::STRSXP && i < self.len());
        let i = isize::try_from(i).ok()?;
        // SAFETY: a character vector with more than `i` elements
        // (callers check); its elements are CHARSXPs it protects.
        let c = unsafe { STRING_ELT(self.sexp, i) };
        // SAFETY: R_NaString is a libR global set once R has started.
        (c != unsafe { R_NaString }).then_some(Chars {
            sexp: c,
            _arg: PhantomData,
        })
    }

    /// The one string of a character vector of length 1 (None: NA, or not
    /// such a vector).
    fn single_string(self) -> Option<Chars<'a>> {
        (self.sexptype() == SEXPTYPE::STRSXP && self.len() == 1)
            .then(|| self.string(0))
            .flatten()
    }

    /// The class attribute's strings (NA ones left out).
    fn class(self) -> Vec<Chars<'a>> {
        // SAFETY: Rf_getAttrib of the class attribute returns the attribute
        // itself (no allocation), which the value protects.
        let class = unsafe { extendr_ffi::Rf_getAttrib(self.sexp, R_ClassSymbol) };
        let class = Value {
            sexp: class,
            _arg: PhantomData,
        };
        if class.sexptype() != SEXPTYPE::STRSXP {
            return Vec::new();
        }
        (0..class.len()).filter_map(|i| class.string(i)).collect()
    }

    fn inherits(self, name: &str) -> bool {
        self.class().iter().any(|c| c.bytes() == name.as_bytes())
    }

    /// is.numeric(): a double or integer vector, but not a factor, nor one
    /// of the classes whose is.numeric() method says no (Date, POSIXt,
    /// difftime).
    fn is_numeric(self) -> bool {
        matches!(self.sexptype(), SEXPTYPE::REALSXP | SEXPTYPE::INTSXP)
            && !(self.is_object()
                && ["factor", "Date", "POSIXt", "difftime"]
                    .iter()
                    .any(|c| self.inherits(c)))
    }

    /// The first element of a numeric vector as a double (None: NA).
    fn number(self) -> Option<f64> {
        match self.sexptype() {
            SEXPTYPE::REALSXP => {
                // SAFETY: a double vector of length >= 1 (callers check).
                let x = unsafe { REAL_ELT(self.sexp, 0) };
                (!x.is_nan()).then_some(x)
            }
            SEXPTYPE::INTSXP => {
                // SAFETY: an integer vector of length >= 1 (callers check).
                let x = unsafe { INTEGER_ELT(self.sexp, 0) };
                // SAFETY: R_NaInt is a libR global set once R has started.
                (x != unsafe { R_NaInt }).then_some(f64::from(x))
            }
            _ => None,
        }
    }

    /// is.na() of an atomic vector of length 1.
    fn is_na(self) -> bool {
        // SAFETY: an atomic vector of length 1 (callers check), protected;
        // the accessors only read its element.
        unsafe {
            match self.sexptype() {
                SEXPTYPE::LGLSXP => LOGICAL_ELT(self.sexp, 0) == R_NA_LOGICAL,
                SEXPTYPE::INTSXP => INTEGER_ELT(self.sexp, 0) == R_NaInt,
                SEXPTYPE::REALSXP => REAL_ELT(self.sexp, 0).is_nan(),
                SEXPTYPE::CPLXSXP => {
                    let z = COMPLEX_ELT(self.sexp, 0);
                    z.r.is_nan() || z.i.is_nan()
                }
                SEXPTYPE::STRSXP => STRING_ELT(self.sexp, 0) == R_NaString,
                _ => false,
            }
        }
    }

    /// typeof().
    fn type_name(self) -> String {
        // SAFETY: Rf_type2char returns a static NUL-terminated string for
        // any SEXPTYPE.
        unsafe { CStr::from_ptr(ffi::Rf_type2char(self.sexptype())) }
            .to_string_lossy()
            .into_owned()
    }
}

impl<'a> Chars<'a> {
    fn bytes(self) -> &'a [u8] {
        // SAFETY: a CHARSXP, protected through the value it was read from;
        // R_CHAR points to its LENGTH bytes, which never change.
        unsafe {
            let n = usize::try_from(LENGTH(self.sexp)).unwrap_or(0);
            std::slice::from_raw_parts(R_CHAR(self.sexp).cast::<u8>(), n)
        }
    }

    fn encoding(self) -> i32 {
        // SAFETY: a CHARSXP (see `bytes`); Rf_getCharCE only reads it.
        unsafe { ffi::Rf_getCharCE(self.sexp) }
    }

    /// The string in UTF-8, as enc2utf8() makes it, or None when it can not
    /// be made faithfully (R/conditions.R is_valid_text()): bytes that are
    /// declared "bytes", that are not valid UTF-8 where UTF-8 is expected,
    /// or that are not ASCII in a session whose encoding is neither UTF-8
    /// nor latin1.
    fn utf8(self) -> Option<String> {
        let bytes = self.bytes();
        let enc = self.encoding();
        if enc == ffi::CE_BYTES {
            return None;
        }
        if bytes.is_ascii() {
            return Some(ascii(bytes));
        }
        let translate = match enc {
            ffi::CE_UTF8 => false,
            ffi::CE_LATIN1 => true,
            _ => match locale() {
                Locale::Utf8 => false,
                Locale::Latin1 => true,
                Locale::Other => return None,
            },
        };
        if translate {
            Some(self.translated())
        } else {
            std::str::from_utf8(bytes).ok().map(str::to_string)
        }
    }

    /// Rf_translateCharUTF8, as enc2utf8() (latin1 is read as CP1252, as
    /// R does).
    fn translated(self) -> String {
        // SAFETY: a CHARSXP (see `bytes`); the result is a NUL-terminated
        // string R keeps until the .Call returns.
        unsafe { CStr::from_ptr(ffi::Rf_translateCharUTF8(self.sexp)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The string in UTF-8 for display, as iconv(sub = "byte") makes it:
    /// each byte that is not part of valid text becomes "<e9>".
    fn label(self) -> String {
        if let Some(s) = self.utf8() {
            return s;
        }
        let mut out = String::new();
        let mut rest = self.bytes();
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    if let Some(b) = bad.first() {
                        out.push_str(&format!("<{b:02x}>"));
                    }
                    rest = bad.get(1..).unwrap_or_default();
                }
            }
        }
        out
    }

    /// The string as encodeString() shows it.
    fn encoded(self) -> String {
        let bytes = self.bytes();
        let mut out = String::with_capacity(bytes.len());
        if self.encoding() == ffi::CE_BYTES {
            // "\xff" for each byte that is not ASCII, then escaped.
            let shown: String = bytes
                .iter()
                .map(|&b| {
                    if b.is_ascii() {
                        char::from(b).to_string()
                    } else {
                        format!("\\x{b:02x}")
                    }
                })
                .collect();
            shown.chars().for_each(|c| escape(c, &mut out));
            return out;
        }
        let text = match self.encoding() {
            ffi::CE_LATIN1 => self.translated().into_bytes(),
            ffi::CE_UTF8 => bytes.to_vec(),
            _ if matches!(locale(), Locale::Latin1) => self.translated().into_bytes(),
            _ => bytes.to_vec(),
        };
        for chunk in text.utf8_chunks() {
            chunk.valid().chars().for_each(|c| escape(c, &mut out));
            for b in chunk.invalid() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
        out
    }

    /// quote_text(): in double quotes, escaped, shortened to 60 characters.
    fn quoted(self) -> String {
        const MAX: usize = 60;
        let s = self.encoded();
        let s = if s.chars().count() > MAX {
            let head: String = s.chars().take(MAX - 3).collect();
            format!("{head}...")
        } else {
            s
        };
        format!("\"{s}\"")
    }

    /// As paste() shows it in a message.
    fn text(self) -> String {
        self.utf8()
            .unwrap_or_else(|| String::from_utf8_lossy(self.bytes()).into_owned())
    }
}

/// A character vector of length 1 holding `c` (None: NA).
fn string_vector(c: Option<Chars<'_>>) -> Robj {
    // SAFETY: a fresh character vector of length 1, protected by the Robj
    // at once, given a CHARSXP protected through its value (or NA).
    unsafe {
        let v = Robj::from_sexp(extendr_ffi::Rf_allocVector(SEXPTYPE::STRSXP, 1));
        extendr_ffi::SET_STRING_ELT(v.get(), 0, c.map_or(R_NaString, |c| c.sexp));
        v
    }
}

fn ascii(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

/// One character as encodeString() writes it.
fn escape(c: char, out: &mut String) {
    match c {
        '\u{7}' => out.push_str("\\a"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{b}' => out.push_str("\\v"),
        '\\' => out.push_str("\\\\"),
        c if c.is_ascii() => {
            if c.is_ascii_graphic() || c == ' ' {
                out.push(c);
            } else {
                out.push_str(&format!("\\{:03o}", u32::from(c)));
            }
        }
        c => {
            // SAFETY: iswprint only reads its argument (and the locale).
            if unsafe { ffi::iswprint(u32::from(c)) } != 0 {
                out.push(c);
            } else if u32::from(c) > 0xffff {
                out.push_str(&format!("\\U{{{:x}}}", u32::from(c)));
            } else {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
        }
    }
}

/// The encoding of the session's locale, as l10n_info() tells it.
#[derive(Clone, Copy)]
enum Locale {
    Utf8,
    Latin1,
    Other,
}

/// The session's locale, looked up once (as R/conditions.R did).
fn locale() -> Locale {
    static LOCALE: OnceLock<Locale> = OnceLock::new();
    *LOCALE.get_or_init(|| {
        // SAFETY: nl_langinfo returns a NUL-terminated string, valid until
        // the next call; it is copied at once, on R's main thread.
        let codeset = unsafe { CStr::from_ptr(libc::nl_langinfo(libc::CODESET)) }
            .to_string_lossy()
            .into_owned();
        // As R_check_locale() of R.
        if codeset.eq_ignore_ascii_case("UTF-8") {
            Locale::Utf8
        } else if codeset == "ISO-8859-1" || codeset.eq_ignore_ascii_case("ISO8859-1") {
            Locale::Latin1
        } else {
            Locale::Other
        }
    })
}

/// What a value is, for "..., not <describe(x)>." in messages: a port of
/// R/conditions.R describe(). An object of a class is named by its class
/// ("a factor", "a data frame"), never by the type underneath.
fn describe(v: Value<'_>) -> String {
    if v.sexptype() == SEXPTYPE::NILSXP {
        return "NULL".into();
    }
    if v.is_object() {
        return describe_class(v);
    }
    let kind = v.type_name();
    if v.is_atomic() && v.len() == 1 {
        if v.is_na() {
            return if v.sexptype() == SEXPTYPE::STRSXP {
                "`NA_character_`".into()
            } else {
                "`NA`".into()
            };
        }
        if let Some(c) = v.single_string() {
            return format!("the string {}", c.quoted());
        }
        return format!("the {kind} {}", format_scalar(v));
    }
    match v.sexptype() {
        SEXPTYPE::CLOSXP | SEXPTYPE::BUILTINSXP | SEXPTYPE::SPECIALSXP => "a function".into(),
        SEXPTYPE::ENVSXP => "an environment".into(),
        _ => format!(
            "{} {kind} {} of length {}",
            a_or_an(&kind),
            if v.is_atomic() { "vector" } else { "object" },
            v.len()
        ),
    }
}

fn describe_class(v: Value<'_>) -> String {
    if v.inherits("data.frame") {
        return "a data frame".into();
    }
    let class = v.class();
    let Some(first) = class.first() else {
        return "an object".into();
    };
    if !v.is_atomic() || v.is_s4() {
        return format!("an object of class {}", first.quoted());
    }
    let name = first.text();
    let out = format!("{} {name}", a_or_an(&name));
    match r_length(v) {
        Some(1) => out,
        Some(n) => format!("{out} of length {n}"),
        None => format!("{out} of length NA"),
    }
}

/// `fun(x)` for a function `fun` of R's base environment (length, dim,
/// class: methods of the value's class may answer), evaluated silently;
/// None when it failed. An error (or any other jump) in R code stops in
/// the top-level context R_tryEvalSilent runs it in, and never crosses
/// these frames.
fn call_base(fun: &'static CStr, x: SEXP) -> Option<Robj> {
    let mut failed = 0;
    // SAFETY: on R's main thread; the call is built from a permanent symbol
    // and `x` (protected by the caller), and protected while it is
    // evaluated; the result is protected from its Robj on.
    unsafe {
        use extendr_ffi::{R_BaseEnv, Rf_cons, Rf_lcons, Rf_protect, Rf_unprotect};
        // fun(quote(x)): a symbol or a call is passed as it is, not
        // evaluated.
        let quoted = Rf_protect(Rf_lcons(ffi::symbol(c"quote"), Rf_cons(x, R_NilValue)));
        let args = Rf_protect(Rf_cons(quoted, R_NilValue));
        let call = Rf_protect(Rf_lcons(ffi::symbol(fun), args));
        let out = extendr_ffi::R_tryEvalSilent(call, R_BaseEnv, &mut failed);
        let out = (failed == 0).then(|| Robj::from_sexp(out));
        Rf_unprotect(3);
        out
    }
}

/// length(x) as R computes it for an object (a length() method of its
/// class may say otherwise than its data, or fail: None).
fn r_length(v: Value<'_>) -> Option<i64> {
    let n = call_base(c"length", v.sexp)?;
    let n = Value::of(&n);
    let n = (n.len() == 1).then(|| n.number()).flatten();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a length is an integral number well within i64"
    )]
    n.map(|n| n as i64)
}

/// class() of a vector that is no object, as R makes it up: from its dim
/// (a matrix or an array) or its type; None for other values.
fn implicit_class(v: Value<'_>) -> Option<&'static [&'static str]> {
    use SEXPTYPE::*;
    let by_type: &'static [&'static str] = match v.sexptype() {
        REALSXP => &["numeric"],
        INTSXP => &["integer"],
        STRSXP => &["character"],
        LGLSXP => &["logical"],
        CPLXSXP => &["complex"],
        RAWSXP => &["raw"],
        VECSXP => &["list"],
        NILSXP => &["NULL"],
        _ => return None,
    };
    // SAFETY: reading the dim attribute of a protected value.
    let dim = unsafe { extendr_ffi::Rf_getAttrib(v.sexp, extendr_ffi::R_DimSymbol) };
    // SAFETY: as above; Rf_xlength only reads it.
    Some(
        match unsafe { (TYPEOF(dim), extendr_ffi::Rf_xlength(dim)) } {
            (NILSXP, _) => by_type,
            (_, 2) => &["matrix", "array"],
            _ => &["array"],
        },
    )
}

/// What the catalog records of an object sent: its class (as UTF-8, a
/// byte that is not text shown as "<e9>"), type, length and dim (as R's
/// length() and dim() say, methods included; a method that fails gives
/// length NA, recorded as 0, or no dim).
pub fn object_meta(obj: &Robj, description: Option<String>) -> yaplr_core::Meta {
    let v = Value::of(obj);
    let class = if v.is_object() { v.class() } else { Vec::new() };
    let class: Vec<String> =
        if let Some(implicit) = class.is_empty().then(|| implicit_class(v)).flatten() {
            implicit.iter().map(|c| c.to_string()).collect()
        } else if class.is_empty() {
            // The implicit class of anything else (functions, calls, ...).
            call_base(c"class", v.sexp)
                .and_then(|c| {
                    let c = Value::of(&c);
                    (c.sexptype() == SEXPTYPE::STRSXP).then(|| {
                        (0..c.len())
                            .map(|i| c.string(i).map_or_else(|| "NA".into(), Chars::label))
                            .collect()
                    })
                })
                .unwrap_or_default()
        } else {
            class.into_iter().map(Chars::label).collect()
        };
    let (length, dim) = if v.is_object() {
        let dim = call_base(c"dim", v.sexp);
        (r_length(v), dim)
    } else {
        // SAFETY: reading the dim attribute of a protected value.
        let dim = unsafe { extendr_ffi::Rf_getAttrib(v.sexp, extendr_ffi::R_DimSymbol) };
        // SAFETY: an attribute of `obj`, which keeps it alive.
        let dim = (dim != unsafe { R_NilValue }).then(|| unsafe { Robj::from_sexp(dim) });
        (i64::try_from(v.len()).ok(), dim)
    };
    let dim = dim
        .map(|d| {
            let d = Value::of(&d);
            match d.sexptype() {
                // SAFETY: Rf_xlength only reads the (protected) vector.
                SEXPTYPE::INTSXP | SEXPTYPE::REALSXP => (0..unsafe { Rf_xlength(d.sexp) })
                    .map(|i| {
                        // SAFETY: an integer or double vector with more than
                        // `i` elements.
                        let x = unsafe {
                            if d.sexptype() == SEXPTYPE::INTSXP {
                                let x = INTEGER_ELT(d.sexp, i);
                                if x == R_NaInt {
                                    f64::NAN
                                } else {
                                    f64::from(x)
                                }
                            } else {
                                REAL_ELT(d.sexp, i)
                            }
                        };
                        bytes_from_r(x)
                    })
                    .collect(),
                _ => Vec::new(),
            }
        })
        .unwrap_or_default();
    yaplr_core::Meta {
        class,
        rtype: v.type_name(),
        length: length.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
        dim,
        description,
    }
}

fn a_or_an(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u', 'A', 'E', 'I', 'O', 'U']) {
        "an"
    } else {
        "a"
    }
}

/// format() of an atomic vector of length 1 that is not NA or a string.
fn format_scalar(v: Value<'_>) -> String {
    // SAFETY: an atomic vector of length 1 (callers check), protected; the
    // accessors only read its element.
    unsafe {
        match v.sexptype() {
            SEXPTYPE::LGLSXP => {
                if LOGICAL_ELT(v.sexp, 0) != 0 {
                    "TRUE".into()
                } else {
                    "FALSE".into()
                }
            }
            SEXPTYPE::INTSXP => INTEGER_ELT(v.sexp, 0).to_string(),
            SEXPTYPE::REALSXP => format_real(REAL_ELT(v.sexp, 0)),
            SEXPTYPE::CPLXSXP => {
                let z = COMPLEX_ELT(v.sexp, 0);
                let sign = if z.i < 0.0 { "-" } else { "+" };
                format!("{}{sign}{}i", format_real(z.r), format_real(z.i.abs()))
            }
            SEXPTYPE::RAWSXP => format!("{:02x}", *RAW(v.sexp)),
            _ => String::new(),
        }
    }
}

/// format() of a double (not NA): R's formatReal() and encodeReal0() of
/// src/main/format.c for one number, with getOption("digits") and
/// getOption("scipen").
fn format_real(x: f64) -> String {
    if x.is_infinite() {
        return if x > 0.0 { "Inf" } else { "-Inf" }.into();
    }
    if x.is_nan() {
        return "NaN".into();
    }
    // SAFETY: reads R's options on R's main thread; "scipen" is a permanent
    // symbol and the option value is only read.
    let (digits, scipen) = unsafe {
        let scipen = ffi::Rf_GetOption1(extendr_ffi::Rf_install(c"scipen".as_ptr()));
        let scipen = Value {
            sexp: scipen,
            _arg: PhantomData,
        };
        let scipen = if scipen.len() == 1 {
            scipen.number()
        } else {
            None
        };
        (ffi::Rf_GetOptionDigits(), scipen)
    };
    let digits = usize::try_from(digits.clamp(1, 22)).unwrap_or(7);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "scipen is an integer option"
    )]
    let scipen = scipen.map_or(0, |s| s as i64);
    let x = if x == 0.0 { 0.0 } else { x }; // no "-0"
    let (neg, kpower, nsig, widens) = scientific(x, digits);
    let mut left = kpower + 1;
    if widens {
        left -= 1;
    }
    let sleft = neg + if left <= 0 { 1 } else { left };
    let mut rgt = (nsig - left).max(0);
    let mxsl = if left < 0 { 1 + neg } else { sleft };
    if digits == 0 {
        rgt = 0;
    }
    let w_fixed = mxsl + rgt + i64::from(rgt != 0);
    let e = if left > 100 || left <= -99 { 2 } else { 1 };
    let d = nsig - 1;
    let w_sci = neg + i64::from(d > 0) + d + 4 + e;
    if w_fixed <= w_sci + scipen {
        format!("{:.*}", usize::try_from(rgt).unwrap_or(0), x)
    } else {
        // As C's "%.*e": a mantissa and an exponent of two digits or more.
        let s = format!("{:.*e}", usize::try_from(d).unwrap_or(0), x);
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i64 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// R's scientific() of format.c for a finite `x`: whether it is negative,
/// its power of ten, its significant digits (at most `digits`), and whether
/// rounding to them widens it in fixed notation.
fn scientific(x: f64, digits: usize) -> (i64, i64, i64, bool) {
    if x == 0.0 {
        return (0, 0, 1, false);
    }
    let neg = i64::from(x < 0.0);
    let r = x.abs();
    // Rounded to `digits` significant digits, exactly.
    let s = format!("{:.*e}", digits - 1, r);
    let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let kpower: i64 = exp.parse().unwrap_or(0);
    let sig = mantissa.replace('.', "");
    let nsig = i64::try_from(sig.trim_end_matches('0').len().max(1)).unwrap_or(1);
    // 9996 with 3 digits is 1e+04 in scientific, but 9996 in fixed.
    const KP_MAX: i64 = 27;
    let rgt = (i64::try_from(digits).unwrap_or(7) - kpower).clamp(0, KP_MAX);
    let fuzz = 0.5 / 10f64.powi(i32::try_from(rgt).unwrap_or(0));
    let widens =
        kpower > 0 && kpower <= KP_MAX && r < 10f64.powi(i32::try_from(kpower).unwrap_or(0)) - fuzz;
    (neg, kpower, nsig, widens)
}

/// namespace_arg_(): the check of a namespace, for yaplr_store().
/// @noRd
#[extendr]
fn namespace_arg_(namespace: Robj) -> std::result::Result<String, RError> {
    self::namespace(&namespace)
}

extendr_module! {
    mod args;
    fn namespace_arg_;
}
