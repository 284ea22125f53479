//! Checking a whole store: every object's payload against the checksum
//! recorded when it was written (`verify_objects()` in R, `yaplrd verify`).

use super::Session;
use crate::backend::{CallOptions, Found, Key, Payload};
use crate::error::{Error, Result};
use crate::object_file::{self, HEADER_SIZE, STATE_COMMITTED};
use crate::protocol::Entry;
use std::os::unix::fs::FileExt;

/// What checking one object found.
pub struct Checked {
    pub entry: Entry,
    /// None: intact (or written without a checksum, see `recorded`).
    pub problem: Option<String>,
    /// Whether a checksum was recorded for it (objects written by versions
    /// before checksums have none).
    pub recorded: bool,
}

impl Session {
    /// Check every object of namespace `ns` (None: every namespace) against
    /// the checksum recorded when it was written. Objects removed meanwhile
    /// are skipped. The payloads are read in chunks, so the memory used
    /// stays small whatever their size.
    pub fn verify(&mut self, ns: Option<&str>, opts: &CallOptions<'_>) -> Result<Vec<Checked>> {
        let entries = self.list(ns, opts)?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let found = match self.get(&Key::new(&e.namespace, &e.tag)?, opts) {
                Ok(f) => f,
                Err(Error::NotFound { .. }) => continue,
                Err(Error::Corrupt { message, .. }) => {
                    out.push(Checked {
                        entry: e,
                        problem: Some(message),
                        recorded: false,
                    });
                    continue;
                }
                Err(err) => return Err(err),
            };
            out.push(check(found)?);
        }
        Ok(out)
    }
}

fn check(found: Found) -> Result<Checked> {
    let entry = found.entry;
    match found.payload {
        Payload::Bytes(bytes) => {
            let problem = crate::codec::verify(&bytes, entry.checksum, &entry.tag)
                .err()
                .map(|e| e.to_string());
            let recorded = entry.checksum != 0;
            Ok(Checked {
                entry,
                problem,
                recorded,
            })
        }
        Payload::File(file) => {
            let header = match object_file::read_header(&file) {
                Ok(h) => h,
                Err(e) => {
                    return Ok(Checked {
                        entry,
                        problem: Some(e.to_string()),
                        recorded: false,
                    })
                }
            };
            let recorded = header.checksum != 0;
            let problem = if header.state != STATE_COMMITTED {
                Some("it was never completely written".to_string())
            } else {
                let mut hasher = crate::codec::Hasher::new();
                let mut buf = vec![0u8; 8 << 20];
                let mut at = 0u64;
                let mut short = None;
                while at < header.payload_len {
                    let n = crate::codec::chunk(header.payload_len - at, buf.len());
                    if let Err(e) = file.read_exact_at(&mut buf[..n], HEADER_SIZE as u64 + at) {
                        short = Some(format!("its file could not be read whole: {e}"));
                        break;
                    }
                    hasher.update(&buf[..n]);
                    at += n as u64;
                }
                short.or_else(|| {
                    (recorded && hasher.digest() != header.checksum)
                        .then(|| "its checksum does not match what was written".to_string())
                })
            };
            Ok(Checked {
                entry,
                problem,
                recorded,
            })
        }
    }
}
