//! What the helper answers: a response with the object files that travel
//! with it, and the failures it sends.

use crate::error::Error;
use crate::protocol::{Failure, Response};
use std::fs::File;

/// The answer to one request.
pub(crate) struct Reply {
    pub(crate) response: Response,
    /// Open object files, passed with the answer in order.
    pub(crate) files: Vec<File>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply {
            response,
            files: Vec::new(),
        }
    }
}

/// A failure as it is sent.
pub(crate) fn error_response(e: Error) -> Response {
    Response::Failed(Failure::from(e))
}

/// The failure sent for an error that arose while handling a request:
/// errors that have no counterpart across the socket (an operating system
/// error, say) go as a helper failure with their text.
pub(crate) fn failed(e: Error) -> Response {
    Response::Failed(failure(e))
}

/// The failure `failed` sends.
pub(crate) fn failure(e: Error) -> Failure {
    let e = match e {
        e @ (Error::Io { .. }
        | Error::Exists { .. }
        | Error::Interrupted { .. }
        | Error::NoServer { .. }
        | Error::Server { .. }) => Error::Server {
            message: e.to_string(),
        },
        e => e,
    };
    Failure::from(e)
}

pub(crate) fn not_found(ns: &str, tag: &str) -> Response {
    Response::Failed(Failure::NotFound {
        namespace: ns.to_string(),
        tag: tag.to_string(),
    })
}

/// The answer that closes a connection before its Hello was accepted.
pub(crate) fn refused(message: String) -> Response {
    Response::Refused {
        kind: "protocol".into(),
        message,
    }
}
