//! Reading a looked-up object: which payloads are checked, which are
//! mapped as zero-copy views, which are copied.

use crate::backend::{Found, Payload};
use crate::error::{Error, Hint, Result};
use crate::object_file::{
    self, Header, ObjectMap, VectorHeader, KIND_R_SERIALIZED, KIND_R_VECTOR, KIND_SHARED_VECTOR,
    VECTOR_HEADER_SIZE,
};
use crate::protocol::Entry;
use std::fs::File;

/// Stored vectors with a payload of at least this many bytes are read as
/// zero-copy views, smaller ones as copies. Each live view costs the
/// process one memory mapping (vm.max_map_count, 65530 by default, bounds
/// them all), and below this size a copy costs no more than a view:
/// bench/zero-copy.R measures where the view starts to win.
pub const MIN_ZERO_COPY_BYTES: u64 = 256 << 10;

/// Payload bytes in memory or in a read-only mapping.
pub enum Bytes {
    Owned(Vec<u8>),
    Mapped(ObjectMap),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m.payload(),
        }
    }
}

/// A payload ready to decode.
pub enum Content {
    /// An R serialization, checked against its checksum.
    Serialized(Bytes),
    /// A raw vector to copy out of its file; the reader checks it against
    /// `Header::checksum` as it reads (see `object_file::check_complete`).
    VectorFile(File, Header),
    /// A raw vector mapped copy-on-write, to be used as a zero-copy view
    /// (not read here, so not checked): the mapping, and its vector header
    /// and attribute bytes, read from the file. Nothing of the mapping is
    /// touched until the vector's elements are: a page touched now would
    /// cost a fault, and its page tables the unmapping.
    VectorView {
        map: ObjectMap,
        vector: VectorHeader,
        attributes: Vec<u8>,
    },
}

/// Whether the object of `entry` is read as a zero-copy view (unless the
/// reader asks for a copy).
pub fn is_zero_copy(entry: &Entry) -> bool {
    !entry.inline && zero_copy(entry.kind, entry.size)
}

fn zero_copy(kind: u32, payload_len: u64) -> bool {
    kind == KIND_R_VECTOR && payload_len >= MIN_ZERO_COPY_BYTES
}

impl Found {
    /// Whether `content` returns a zero-copy view unless asked to copy.
    pub fn is_zero_copy(&self) -> bool {
        is_zero_copy(&self.entry)
    }

    /// Open the payload for decoding; with `copy`, never as a view. Every
    /// payload that is read here is checked against its checksum.
    pub fn content(self, copy: bool) -> Result<Content> {
        let tag = self.entry.tag.clone();
        match self.payload {
            Payload::Bytes(bytes) => {
                crate::codec::verify(&bytes, self.entry.checksum, &tag).map_err(advise_resend)?;
                match self.entry.kind {
                    KIND_R_SERIALIZED => Ok(Content::Serialized(Bytes::Owned(bytes))),
                    other => Err(unknown_kind(&tag, other)),
                }
            }
            Payload::File(file) => {
                let header = object_file::read_header(&file).map_err(|e| damaged(e, &tag))?;
                let view = !copy && zero_copy(header.kind, header.payload_len);
                match header.kind {
                    KIND_R_VECTOR if view => {
                        view_content(&file, header).map_err(|e| damaged(e, &tag))
                    }
                    // A shared vector changes in place: always a copy.
                    KIND_R_VECTOR | KIND_SHARED_VECTOR => Ok(Content::VectorFile(file, header)),
                    KIND_R_SERIALIZED => {
                        let map = ObjectMap::open_with(&file, header, false)
                            .map_err(|e| damaged(e, &tag))?;
                        crate::codec::verify(map.payload(), map.header.checksum, &tag)
                            .map_err(advise_resend)?;
                        Ok(Content::Serialized(Bytes::Mapped(map)))
                    }
                    other => Err(unknown_kind(&tag, other)),
                }
            }
        }
    }
}

/// The content of a vector object to view: its mapping, and its vector
/// header and attributes read with pread.
fn view_content(file: &File, header: Header) -> Result<Content> {
    use std::os::unix::fs::FileExt;
    let short = |e: std::io::Error| Error::corrupt(format!("payload could not be read: {e}"));
    let base = object_file::HEADER_SIZE as u64;
    let mut head = [0u8; VECTOR_HEADER_SIZE];
    file.read_exact_at(&mut head, base).map_err(short)?;
    let vector = VectorHeader::decode_prefix(&head, header.payload_len)?;
    // decode_prefix checked that the elements fit the payload.
    let data_end = VECTOR_HEADER_SIZE as u64 + vector.data_len();
    let attr_len = usize::try_from(header.payload_len - data_end)
        .map_err(|_| Error::corrupt("attributes larger than memory"))?;
    let mut attributes = vec![0u8; attr_len];
    file.read_exact_at(&mut attributes, base + data_end)
        .map_err(short)?;
    let map = ObjectMap::open_with(file, header, true)?;
    Ok(Content::VectorView {
        map,
        vector,
        attributes,
    })
}

fn unknown_kind(tag: &str, kind: u32) -> Error {
    Error::corrupt(format!(
        "the stored object \"{tag}\" has payload kind {kind}, unknown to this version of yaplr"
    ))
}

/// A payload that fails its checksum: say what to do.
fn advise_resend(e: Error) -> Error {
    match e {
        Error::Corrupt { message, .. } => Error::Corrupt {
            message,
            hint: Some(Hint::Resend),
        },
        e => e,
    }
}

/// A damaged object file, explained with its tag and what to do.
pub fn damaged(e: Error, tag: &str) -> Error {
    match e {
        Error::Corrupt { message, .. } => Error::Corrupt {
            message: format!("the stored object \"{tag}\" is damaged ({message})"),
            hint: Some(Hint::Resend),
        },
        e => e,
    }
}
