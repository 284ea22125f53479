//! How a failure reaches R: every glue function returns
//! `Result<T, RError>`, and extendr (feature `result_condition`) hands an
//! `Err` to R as a condition of class "extendr_error" whose `value` is the
//! `RError` turned into an R object here, in `From<RError> for Robj`, the
//! one place yaplr's conditions are built. The R layer (check_result())
//! signals that `value` with the call of the exported function.

use extendr_api::prelude::*;
use yaplr_core::error::Hint;
use yaplr_core::Error;

/// The message of a core error for R users: its facts, and its advice in
/// terms of R's options and yaplr's functions.
pub fn r_message(e: &Error) -> String {
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

/// A failed call of the glue.
pub enum RError {
    /// A failure of yaplr-core, or an argument the glue refused (kind
    /// `bad_tag` or `bad_argument`), with the fields of its condition.
    Failed {
        error: Error,
        /// The `tag` field: the tag concerned (NULL when none).
        tag: Option<Robj>,
        /// The `store` field: the store directory (NULL for an argument).
        store: Option<String>,
    },
    /// A condition the R layer made and passed instead of an argument it
    /// could not prepare (a store directory or a size): raised in its turn
    /// among the argument checks, as it is.
    Prepared(Robj),
}

impl RError {
    /// A refused argument; `tag` is the condition's `tag` field.
    pub fn argument(error: Error, tag: Option<Robj>) -> RError {
        RError::Failed {
            error,
            tag,
            store: None,
        }
    }

    /// A failure of yaplr-core on the store `store`, about `tag` if known.
    pub fn core(error: Error, tag: Option<&str>, store: &str) -> RError {
        RError::Failed {
            error,
            tag: tag.map(Robj::from),
            store: Some(store.to_string()),
        }
    }
}

/// A failure of R's API (building a list, setting a class): an internal
/// error, which leaves the store as it was.
impl From<extendr_api::Error> for RError {
    fn from(e: extendr_api::Error) -> RError {
        RError::Failed {
            error: Error::Server {
                message: format!("internal error in yaplr ({e}); please report it"),
            },
            tag: None,
            store: None,
        }
    }
}

/// An R condition object of class c("yaplr_<kind>", "yaplr_error", "error",
/// "condition") (an interrupt: "interrupt" instead of "error"), with fields
/// message, call (NULL: the R layer sets it), tag and store.
impl From<RError> for Robj {
    fn from(e: RError) -> Robj {
        let (error, tag, store) = match e {
            RError::Failed { error, tag, store } => (error, tag, store),
            RError::Prepared(condition) => return condition,
        };
        let mut class = vec![format!("yaplr_{}", error.kind()), "yaplr_error".into()];
        // Ctrl-C, as R's own: tryCatch(interrupt = ) sees it, and like R's
        // own it is no "error", so try() does not swallow it.
        class.push(if matches!(error, Error::Interrupted { .. }) {
            "interrupt".into()
        } else {
            "error".into()
        });
        class.push("condition".into());
        let store: Robj = store.map_or_else(|| ().into(), Robj::from);
        let message = r_message(&error);
        let condition = List::from_names_and_values(
            ["message", "call", "tag", "store"],
            [
                Robj::from(message.as_str()),
                ().into(),
                tag.unwrap_or_else(|| ().into()),
                store,
            ],
        )
        .and_then(|mut l| {
            l.set_class(class)?;
            Ok(Robj::from(l))
        });
        // Four names and four values, and a list takes a class: this can
        // not fail; if it did, R would still get the message.
        condition.unwrap_or_else(|_| Robj::from(message))
    }
}
