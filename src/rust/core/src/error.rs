//! The one error type of yaplr-core. Each variant maps to an R condition
//! class `yaplr_<kind>` at the R boundary (see `Error::kind`). Uses nothing
//! in the crate but `key`.

use crate::key::{KeyError, DEFAULT_NAMESPACE};
use std::fmt;
use std::io;

/// What the user can do about an error. The core says which; each front
/// end (the R package, the command line, other languages) phrases it in
/// its own terms: R options and functions, command-line flags.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub enum Hint {
    /// Give the store as an absolute directory.
    SetStore,
    /// Use another store directory.
    OtherStore,
    /// Use a directory that belongs to this user.
    OwnStore,
    /// Use a directory this user can write.
    WritableStore,
    /// Use a store directory with a shorter path.
    ShorterStore,
    /// Use a private subdirectory such as `suggestion`, or take the write
    /// permission of the group and others away.
    PrivateStore { suggestion: String },
    /// Another user planted an entry: remove it (check it first), or use
    /// another store.
    RemovePlanted,
    /// Remove the entry, or use another store.
    RemoveEntry,
    /// Remove objects, or raise the store's capacity.
    RaiseCapacity,
    /// Remove objects, or use a store on a larger filesystem.
    LargerStore,
    /// Remove the damaged object and send it again.
    Resend,
    /// Allow replacing the objects that exist.
    Overwrite,
    /// Stop the helper of another version of yaplr (its objects are
    /// removed).
    StopHelper,
    /// Allow a longer wait.
    RaiseTimeout,
    /// Start the helper, or allow it to start automatically.
    StartHelper,
}

impl Hint {
    /// The advice in words that name no front end's settings.
    pub fn neutral(&self) -> String {
        match self {
            Hint::SetStore => "give the store as an absolute directory path".into(),
            Hint::OtherStore => "choose another store directory".into(),
            Hint::OwnStore => "choose a directory of your own".into(),
            Hint::WritableStore => "choose a writable directory".into(),
            Hint::ShorterStore => "choose a store directory with a shorter path".into(),
            Hint::PrivateStore { suggestion } => format!(
                "use a subdirectory that yaplr creates private, such as \"{suggestion}\", \
                 or remove the write permission with chmod go-w"
            ),
            Hint::RemovePlanted => "yaplr will not use this store until it is removed \
                                    (check it first), or choose another store"
                .into(),
            Hint::RemoveEntry => "remove it, or choose another store".into(),
            Hint::RaiseCapacity => "remove objects or raise the store's capacity".into(),
            Hint::LargerStore => "remove objects or choose a larger store".into(),
            Hint::Resend => "remove it and send it again".into(),
            Hint::Overwrite => "allow overwriting to replace it".into(),
            Hint::StopHelper => "stop it (its objects are removed)".into(),
            Hint::RaiseTimeout => "allow a longer wait".into(),
            Hint::StartHelper => "start one, or allow it to start automatically".into(),
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// A tag that can not name an object.
    BadTag(String),
    /// An argument other than a tag is invalid.
    BadArgument(String),
    /// No object under this tag.
    NotFound { tag: String, namespace: String },
    /// An object exists where none may (loading a dump without overwrite).
    Exists { tag: String, namespace: String },
    /// A conditional change found another state than it required: the
    /// version `expected` (None: no object at all), where `found` is the
    /// stored version (None: none is stored). Nothing was changed.
    Conflict {
        tag: String,
        namespace: String,
        expected: Option<u64>,
        found: Option<u64>,
    },
    /// The store's filesystem (or capacity) has no room for the object.
    NoSpace {
        message: String,
        /// Bytes the change needed (0: not known).
        needed: u64,
        hint: Option<Hint>,
    },
    /// A bounded wait ran out.
    Timeout { waited_for: String, seconds: f64 },
    /// The user interrupted a wait.
    Interrupted { waited_for: String },
    /// The store directory can not be used.
    Store { message: String, hint: Option<Hint> },
    /// The helper of `store` is not running and may not be started
    /// automatically.
    NoServer { store: String },
    /// The helper reported a failure, or could not be started.
    Server { message: String },
    /// A malformed frame, or an answer that makes no sense.
    Protocol { message: String },
    /// The connection to the helper broke before an answer (the helper
    /// may have exited).
    Closed,
    /// The helper (pid `pid`) speaks another protocol version.
    Version { pid: u32, helper: u32, ours: u32 },
    /// An object file is damaged.
    Corrupt { message: String, hint: Option<Hint> },
    /// Any other operating system error, with what was being done.
    Io { context: String, source: io::Error },
}

impl Error {
    /// The condition kind used to build the R class `yaplr_<kind>`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadTag(_) => "bad_tag",
            Error::BadArgument(_) | Error::Exists { .. } => "bad_argument",
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::NoSpace { .. } => "no_space",
            Error::Timeout { .. } => "timeout",
            Error::Interrupted { .. } => "interrupted",
            Error::Store { .. } => "store",
            Error::NoServer { .. } => "no_server",
            Error::Server { .. } => "server",
            Error::Protocol { .. } | Error::Closed | Error::Version { .. } => "protocol",
            Error::Corrupt { .. } => "corrupt",
            Error::Io { .. } => "io",
        }
    }

    /// A store that can not be used, with what to do.
    pub fn store(message: impl Into<String>, hint: Hint) -> Error {
        Error::Store {
            message: message.into(),
            hint: Some(hint),
        }
    }

    /// A damaged object.
    pub fn corrupt(message: impl Into<String>) -> Error {
        Error::Corrupt {
            message: message.into(),
            hint: None,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            return Error::NoSpace {
                message: format!("{context}: {source}"),
                needed: 0,
                hint: None,
            };
        }
        Error::Io { context, source }
    }

    /// What the user can do about it, if anything is to say.
    pub fn hint(&self) -> Option<Hint> {
        match self {
            Error::NoSpace { hint, .. }
            | Error::Store { hint, .. }
            | Error::Corrupt { hint, .. } => hint.clone(),
            Error::Exists { .. } => Some(Hint::Overwrite),
            Error::Timeout { .. } => Some(Hint::RaiseTimeout),
            Error::NoServer { .. } => Some(Hint::StartHelper),
            Error::Version { .. } => Some(Hint::StopHelper),
            _ => None,
        }
    }

    /// The facts of the error, without the advice of `hint`.
    pub fn facts(&self) -> String {
        match self {
            Error::BadTag(m) | Error::BadArgument(m) => m.clone(),
            Error::NotFound { tag, namespace } => {
                let mut m = format!("no object is stored under tag \"{tag}\"");
                if namespace != DEFAULT_NAMESPACE {
                    m.push_str(&format!(" in namespace \"{namespace}\""));
                }
                m
            }
            Error::Conflict {
                tag,
                namespace,
                expected,
                found,
            } => {
                let mut m = format!("\"{tag}\"");
                if namespace != DEFAULT_NAMESPACE {
                    m.push_str(&format!(" (namespace \"{namespace}\")"));
                }
                let wanted = match expected {
                    None => "no object to be stored under the tag".to_string(),
                    Some(v) => format!("version {v}"),
                };
                let is = match found {
                    None => "none is stored".to_string(),
                    Some(v) => format!("version {v} is stored"),
                };
                format!("{m} was not changed: the call required {wanted}, but {is}")
            }
            Error::Exists { tag, namespace } => format!(
                "the store already holds \"{tag}\" (namespace \"{namespace}\"); nothing was loaded"
            ),
            Error::Timeout {
                waited_for,
                seconds,
            } => format!("timed out after {seconds} s waiting for {waited_for}"),
            Error::Interrupted { waited_for } => {
                format!("interrupted while waiting for {waited_for}")
            }
            Error::NoServer { store } => {
                format!("no yaplr helper is running for the store \"{store}\"")
            }
            Error::Version { pid, helper, ours } => format!(
                "the yaplr helper (pid {pid}) of this store speaks protocol version {helper}, \
                 this session version {ours}: it belongs to another version of yaplr"
            ),
            Error::NoSpace { message, .. }
            | Error::Store { message, .. }
            | Error::Server { message }
            | Error::Protocol { message }
            | Error::Corrupt { message, .. } => message.clone(),
            Error::Closed => {
                "the connection to the helper was closed (the helper may have exited)".into()
            }
            Error::Io { context, source } => format!("{context}: {source}"),
        }
    }

    /// The message with the advice phrased by `phrase` (a front end's
    /// words for a hint).
    pub fn message_with(&self, phrase: impl Fn(&Hint) -> String) -> String {
        match self.hint() {
            Some(h) => format!("{}; {}", self.facts(), phrase(&h)),
            None => self.facts(),
        }
    }

    /// An operating system error saying the file or directory does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// True when the connection that produced this error can not be reused.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::Interrupted { .. }
                | Error::Protocol { .. }
                | Error::Closed
                | Error::Io { .. }
        )
    }
}

/// The facts and the advice in neutral words.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message_with(Hint::neutral))
    }
}

impl From<KeyError> for Error {
    fn from(e: KeyError) -> Error {
        match e {
            KeyError::Tag(m) => Error::BadTag(m),
            KeyError::Namespace(m) => Error::BadArgument(m),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{check_namespace, check_tag};

    #[test]
    fn refused_keys_keep_their_condition_kinds() {
        let kind = |e: KeyError| Error::from(e).kind();
        assert_eq!(kind(check_tag("").unwrap_err()), "bad_tag");
        assert_eq!(kind(check_tag("a\0b").unwrap_err()), "bad_tag");
        assert_eq!(kind(check_tag(&"x".repeat(1025)).unwrap_err()), "bad_tag");
        assert_eq!(kind(check_namespace("").unwrap_err()), "bad_argument");
        let e = Error::from(check_tag("").unwrap_err());
        assert_eq!(e.to_string(), "`tag` must be a non-empty string, not \"\"");
    }
}
