//! Shared mutable vectors: a fixed-length vector of raw elements in an
//! object file of the store (kind KIND_SHARED_VECTOR), mapped shared and
//! writable by every process that attaches to it, so that a write is seen
//! by all at once. It is an object of the catalog like any other (listed,
//! removed, stopped with the store); a process that attached keeps its
//! mapping when the object is removed.

use super::stage::{stage, Source};
use super::Session;
use crate::backend::{CallOptions, Condition, Payload, PayloadSink};
use crate::error::{Error, Result};
use crate::object_file::{VectorHeader, HEADER_SIZE, KIND_SHARED_VECTOR, VECTOR_HEADER_SIZE};
use crate::progress::{Meter, Silent};
use crate::protocol::Meta;
use crate::Key;
use memmap2::{MmapOptions, MmapRaw};
use std::os::fd::AsRawFd;

/// What a new shared vector holds: `length` elements of R type `sexptype`,
/// `elt_size` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorSpec {
    pub sexptype: u32,
    pub elt_size: u32,
    pub length: u64,
}

/// A shared vector mapped into this process.
pub struct SharedVector {
    map: MmapRaw,
    spec: VectorSpec,
}

impl SharedVector {
    pub fn spec(&self) -> VectorSpec {
        self.spec
    }

    /// The first element: `spec().length` elements follow, aligned for
    /// their type. Valid, and shared with every attached process, as long
    /// as this value lives.
    pub fn data(&self) -> *mut u8 {
        // HEADER_SIZE + VECTOR_HEADER_SIZE is within the mapping: attach
        // checked the payload's length.
        self.map
            .as_mut_ptr()
            .wrapping_add(HEADER_SIZE + VECTOR_HEADER_SIZE)
    }
}

/// The payload of a new shared vector: its header, then zeroes.
struct Zeroed(VectorSpec);

impl Source for Zeroed {
    fn kind(&self) -> u32 {
        KIND_SHARED_VECTOR
    }

    fn size_hint(&self) -> Option<u64> {
        Some(VECTOR_HEADER_SIZE as u64 + self.0.length * u64::from(self.0.elt_size))
    }

    fn write(&mut self, out: &mut dyn PayloadSink, _: &mut Meter<'_>) -> Result<()> {
        let h = VectorHeader {
            sexptype: self.0.sexptype,
            elt_size: self.0.elt_size,
            length: self.0.length,
            object: 0,
        };
        out.write(&h.encode())?;
        out.write_zeros(h.data_len())
    }
}

impl Session {
    /// Attach to the shared vector `key`; with `create`, first create it
    /// (all zeroes) unless it exists. An existing one must match `create`
    /// (else `Error::Conflict`); an object that is no shared vector is
    /// refused.
    pub fn shared_vector(
        &mut self,
        key: &Key,
        create: Option<VectorSpec>,
        meta: Meta,
        opts: &CallOptions<'_>,
    ) -> Result<SharedVector> {
        if let Some(spec) = create {
            match self.create_shared(key, spec, meta, opts) {
                Ok(()) | Err(Error::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let v = self.attach_shared(key, opts)?;
        if let Some(spec) = create {
            if v.spec != spec {
                return Err(Error::BadArgument(format!(
                    "the shared vector \"{}\" exists with {} elements of another type or \
                     length; attach to it with its name only, or remove it first",
                    key.tag(),
                    v.spec.length
                )));
            }
        }
        Ok(v)
    }

    fn create_shared(
        &mut self,
        key: &Key,
        spec: VectorSpec,
        meta: Meta,
        opts: &CallOptions<'_>,
    ) -> Result<()> {
        self.backend.connect(opts)?;
        let mut silent = Silent;
        let mut meter = Meter::new(&mut silent, None);
        // Never inline: it must be a file to be mapped.
        let mut staged = stage(
            &mut *self.backend,
            key,
            &mut Zeroed(spec),
            meta,
            false,
            &mut meter,
        )?;
        drop(meter);
        staged.condition = Condition::Absent;
        self.backend.put(staged, opts).map(|_| ())
    }

    fn attach_shared(&mut self, key: &Key, opts: &CallOptions<'_>) -> Result<SharedVector> {
        let found = self.backend.get(key, opts)?;
        let not_shared = || {
            Error::BadArgument(format!(
                "\"{}\" is an object, not a shared vector: create a shared vector under \
                 another name with shared_vector(name, type, length)",
                key.tag()
            ))
        };
        if found.entry.kind != KIND_SHARED_VECTOR {
            return Err(not_shared());
        }
        let Payload::File(file) = found.payload else {
            return Err(not_shared());
        };
        // The helper passed the file read-only; this user owns it, so it
        // may open it again for writing, whatever became of its name.
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| Error::io(format!("opening the shared vector \"{}\"", key.tag()), e))?;
        let header = crate::object_file::read_header(&rw)?;
        crate::object_file::check_complete(&rw, &header)?;
        let map = MmapOptions::new()
            .map_raw(&rw)
            .map_err(|e| Error::io(format!("mapping the shared vector \"{}\"", key.tag()), e))?;
        // SAFETY: the mapping holds the whole file (check_complete), whose
        // payload starts at HEADER_SIZE.
        let payload = unsafe {
            std::slice::from_raw_parts(
                map.as_ptr().add(HEADER_SIZE),
                usize::try_from(header.payload_len)
                    .unwrap_or(0)
                    .min(map.len() - HEADER_SIZE),
            )
        };
        let h = VectorHeader::decode(payload)?;
        Ok(SharedVector {
            map,
            spec: VectorSpec {
                sexptype: h.sexptype,
                elt_size: h.elt_size,
                length: h.length,
            },
        })
    }
}
