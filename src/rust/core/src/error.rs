//! The one error type of yaplr-core. Each variant maps to an R condition
//! class `yaplr_<kind>` at the R boundary (see `Error::kind`). Uses nothing
//! in the crate but `key`.

use crate::key::{KeyError, DEFAULT_NAMESPACE};
use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    /// A tag that can not name an object.
    BadTag(String),
    /// An argument other than a tag is invalid.
    BadArgument(String),
    /// No object under this tag.
    NotFound { tag: String, namespace: String },
    /// The store's filesystem (or capacity) has no room for the object.
    NoSpace { needed: u64, message: String },
    /// A bounded wait ran out.
    Timeout { waited_for: String, seconds: f64 },
    /// The user interrupted a wait.
    Interrupted { waited_for: String },
    /// The store directory can not be used.
    Store { message: String },
    /// The helper is not running and may not be started automatically.
    NoServer { message: String },
    /// The helper reported a failure, or could not be started.
    Server { message: String },
    /// A malformed frame, a version mismatch or a closed connection.
    Protocol { message: String },
    /// An object file is damaged.
    Corrupt { message: String },
    /// Any other operating system error, with what was being done.
    Io { context: String, source: io::Error },
}

impl Error {
    /// The condition kind used to build the R class `yaplr_<kind>`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadTag(_) => "bad_tag",
            Error::BadArgument(_) => "bad_argument",
            Error::NotFound { .. } => "not_found",
            Error::NoSpace { .. } => "no_space",
            Error::Timeout { .. } => "timeout",
            Error::Interrupted { .. } => "interrupted",
            Error::Store { .. } => "store",
            Error::NoServer { .. } => "no_server",
            Error::Server { .. } => "server",
            Error::Protocol { .. } => "protocol",
            Error::Corrupt { .. } => "corrupt",
            Error::Io { .. } => "io",
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.raw_os_error() == Some(libc::EDQUOT)
        {
            return Error::NoSpace {
                needed: 0,
                message: format!("{context}: {source}"),
            };
        }
        Error::Io { context, source }
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
                | Error::Io { .. }
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadTag(m) | Error::BadArgument(m) => write!(f, "{m}"),
            Error::NotFound { tag, namespace } => {
                write!(f, "no object is stored under tag \"{tag}\"")?;
                if namespace != DEFAULT_NAMESPACE {
                    write!(f, " in namespace \"{namespace}\"")?;
                }
                Ok(())
            }
            Error::NoSpace { message, .. } => write!(f, "{message}"),
            Error::Timeout {
                waited_for,
                seconds,
            } => write!(
                f,
                "timed out after {seconds} s waiting for {waited_for}; \
                 raise the limit with the `timeout` argument or options(yaplr.timeout = )"
            ),
            Error::Interrupted { waited_for } => {
                write!(f, "interrupted while waiting for {waited_for}")
            }
            Error::Store { message }
            | Error::NoServer { message }
            | Error::Server { message }
            | Error::Protocol { message }
            | Error::Corrupt { message } => write!(f, "{message}"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
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
