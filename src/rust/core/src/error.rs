//! The one error type of yaplr-core. Each variant maps to an R condition
//! class `yaplr_<kind>` at the R boundary (see `Error::kind`).

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
                if namespace != crate::object_file::DEFAULT_NAMESPACE {
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

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
