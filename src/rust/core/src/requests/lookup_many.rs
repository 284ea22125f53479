//! LookupMany: several objects looked up at one moment, answered in as
//! many frames as their descriptors and inline payloads need.

use super::Handle;
use crate::client::{CallOptions, Client, Found};
use crate::error::{Error, Result};
use crate::protocol::Response;
use crate::catalog::answer::{error_response, failed, not_found, Reply};
use crate::catalog::{Catalog, Data, Origin};
use bincode::{Decode, Encode};
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::time::Instant;

/// Look up several objects at one moment; answers FoundMany, with the
/// fds of the file-backed ones (at most MAX_PASSED_FDS a frame) in order.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct LookupMany {
    pub keys: Vec<(String, String)>,
}

impl Handle for LookupMany {
    const CHANGE: bool = false;

    fn handle(self, st: &mut Catalog, _: Origin) -> Reply {
        let keys = self.keys;
        let mut seen = HashSet::new();
        if let Some(k) = keys.iter().find(|k| !seen.insert(*k)) {
            let msg = format!("the tag \"{}\" is asked for twice", k.1);
            return error_response(Error::BadArgument(msg)).into();
        }
        let mut found = Vec::with_capacity(keys.len());
        let mut files = Vec::new();
        for key in keys {
            let Some(obj) = st.objects.get(&key) else {
                return not_found(&key.0, &key.1).into();
            };
            match &obj.data {
                Data::Inline { at, .. } => match st.journal.read(*at, obj.size) {
                    Ok(b) => found.push((obj.entry(&key), Some(b))),
                    Err(e) => return failed(e).into(),
                },
                Data::File(id) => {
                    // Every file is opened now, under the catalog lock:
                    // the answer is one moment, however many frames it
                    // takes (see connection::reply_many).
                    match st.store.open_object(id) {
                        Ok(f) => files.push(f),
                        Err(e) => return failed(e).into(),
                    }
                    found.push((obj.entry(&key), None));
                }
            }
        }
        Reply {
            response: Response::FoundMany(found),
            files,
        }
    }
}

impl Client {
    /// Look up several objects at one consistent moment, handing each to
    /// `f` as it arrives (so that only a frame's worth of descriptors is
    /// open at once, however many objects there are).
    pub fn lookup_many<T>(
        &mut self,
        keys: Vec<(String, String)>,
        opts: &CallOptions<'_>,
        mut f: impl FnMut(Found) -> Result<T>,
    ) -> Result<Vec<T>> {
        let n = keys.len();
        let mut frame = self.send(LookupMany { keys }.into(), opts)?;
        let mut out = Vec::with_capacity(n);
        let deadline = Instant::now() + opts.timeout;
        loop {
            if let Err(e) = take_chunk(frame, &mut out, &mut f) {
                // Frames may remain unread: this connection is done.
                self.disconnect();
                return Err(e);
            }
            if out.len() >= n {
                return Ok(out);
            }
            frame = self.read_more(opts, deadline)?;
        }
    }
}

/// Hand the items of one FoundMany frame to `f`.
fn take_chunk<T>(
    (resp, fds): (Response, Vec<OwnedFd>),
    out: &mut Vec<T>,
    f: &mut impl FnMut(Found) -> Result<T>,
) -> Result<()> {
    let Response::FoundMany(items) = resp else {
        return Err(crate::client::unexpected(resp));
    };
    if items.is_empty() && out.is_empty() {
        return Ok(());
    }
    if items.is_empty() {
        return Err(Error::Protocol {
            message: "the helper sent an empty part of an answer".into(),
        });
    }
    let mut fds = fds.into_iter();
    for (entry, inline) in items {
        let found = match inline {
            Some(bytes) => Found::Inline(entry, bytes),
            None => match fds.next() {
                Some(fd) => Found::File(entry, std::fs::File::from(fd)),
                None => {
                    return Err(Error::Protocol {
                        message: "the helper sent fewer descriptors than objects".into(),
                    })
                }
            },
        };
        out.push(f(found)?);
    }
    Ok(())
}
