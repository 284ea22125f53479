//! yaplr-core: everything of yaplr that does not need R. The store
//! directory and its file formats, the control protocol, the helper
//! (`yaplrd`) and its client, and one public API for every client
//! program: [`Session`].
//!
//! # The public API
//!
//! A [`Session`] talks to one store through a [`backend::Backend`] (the
//! local store, `local`, is the first; a Redis server or a catalog in
//! shared memory are further implementations). Its methods are typed:
//! `put`, `put_many`, `get`, `get_many`, `exists`, `remove`,
//! `remove_namespace`, `list`, `info`, `set_capacity`, `start`, `ping`,
//! `quit`, `save`, `load`, `verify`. A value to store is a
//! [`session::Source`] (it writes its payload); a looked-up value is a
//! [`Found`], read with [`Found::content`]. Errors are one type,
//! [`Error`], whose variants carry what failed and a [`error::Hint`] that
//! each front end phrases in its own terms. Everything else is private to
//! the crate (the `internals` feature opens it to the integration tests).
//!
//! # Layers
//!
//! Each layer uses only the layers above it in this list; there is no
//! import cycle (`tests/layers.rs` checks both).
//!
//! | Layer | Modules | Owns |
//! |---|---|---|
//! | rules | `key`, `error`, `codec`, `sys` | tag and namespace rules and limits; the error type and its hints; checksums, byte and time helpers; system calls (peer uid, fd passing, fallocate, the helper's log) |
//! | store | `store`, `lock` | the store directory: paths, ownership and mode checks, entries opened without following links; file locks (singleton helper, spawning) |
//! | coordination | `coord`, `index` | the coordination region: a file of the store mapped shared by the helper and every client, a table of named counters and locks (robust process-shared mutexes) found by lock-free lookup; the store's index: the catalog and small payloads in a mapped file, written by the helper, read by clients without a lock or a round trip |
//! | formats | `object_file`, `journal`, `dump` | each with its own versioned types: the object file (header with named offsets, writer, mappings), the catalog journal, the dump file |
//! | protocol | `protocol`, `conn` | frames, answers (`Response`, the typed `Failure`), the messages that open a connection; reading and writing frames with bounded, interruptible waits |
//! | client, catalog | `backend`, `client`, `catalog` | the `Backend` trait and call options; the connection to the helper (connect, spawn, stop, one bounded wait); the helper's catalog (state, commit, compaction, recovery) |
//! | requests | `requests` | one module per request kind: its message, its handler on the catalog and its client method; a registry generates the `Request` enum and the dispatch |
//! | programs | `server`, `local`, `progress`, `session`, `cli` | the helper (start-up, connections, one exit path); the local store as a `Backend`; progress hooks; `Session`; the `yaplrd` command line |
//!
//! # Counters and locks across processes
//!
//! The module `coord` keeps a *coordination region*: one file of the store
//! (`coord`), made by the helper when it starts and mapped shared,
//! read-write, by every client. It holds a fixed table of slots (65,536 by
//! default), each a named counter or a named lock, so that processes count
//! and lock together without a round trip to the helper: lookups are
//! lock-free, each slot has a robust process-shared mutex (a lock whose
//! holder dies passes to the next locker, who is told), and every wait is
//! bounded. Its header documents the file layout and the concurrency rules.
//!
//! # One `send_object()` call, hop by hop
//!
//! 1. R: `send_object(x, "t")` (R/objects.R) calls `send_object_(session(), x, "t", ...)`.
//! 2. Glue (`yaplr-r`, objects.rs): checks the arguments once (args.rs), makes a `Key`, wraps `x` in a `Source` and calls `Session::put` on the session handle.
//! 3. `session::Session::put`: connects (starting the helper if allowed), then stages the payload (session/stage.rs): in memory while it is small, else into `Backend::create`.
//! 4. `local::Local::create`: an `object_file::ObjectWriter` (unnamed file, space reserved); the glue's serializer writes into it; `commit` names it.
//! 5. `Backend::put` → `requests::publish` (or `put_inline` for a small value): the client method encodes the request (`protocol::Outgoing`).
//! 6. `client::Client::call`: numbers the change, adds its deadline, writes one frame (`conn`), waits for the answer, retries once on a new connection if the helper died.
//! 7. Helper: `server::connection` reads the frame and calls `Request::dispatch` (requests/mod.rs).
//! 8. `requests::publish::Publish::handle` under the catalog lock (`catalog`): checks capacity, journals the change (`journal`), links the entry, answers.
//! 9. Back in the client: a `Failure` becomes an `Error`; the glue turns it into a classed R condition whose message phrases the hint in R terms.

/// Modules private to the crate; the `internals` feature (for the
/// integration tests only) makes them public.
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}

internal!(
    catalog,
    client,
    codec,
    conn,
    coord,
    dump,
    index,
    journal,
    local,
    lock,
    object_file,
    protocol,
    requests,
    server,
    store,
    sys,
);

pub mod backend;
pub mod cli;
pub mod error;
pub mod key;
pub mod progress;
pub mod session;

#[cfg(test)]
mod testing;

pub use backend::{CallOptions, Found, Key, Payload};
pub use error::{Error, Result};
pub use session::Session;

/// The catalog's description of objects, as `Session` returns it.
pub use protocol::{Entry, Meta, ServerInfo};

/// The object file format, as far as a language binding reads and writes
/// payloads itself (zero-copy views, raw vectors).
pub mod format {
    pub use crate::codec::Hasher;
    pub use crate::object_file::{
        check_complete, Header, ObjectMap, VectorHeader, HEADER_SIZE, KIND_R_SERIALIZED,
        KIND_R_VECTOR, KIND_SHARED_VECTOR, VECTOR_HEADER_SIZE,
    };
    pub use crate::store::{default_dir, INLINE_MAX};
}

/// What the `yaplrd` program needs beyond `cli`: serving a store.
pub mod helper {
    pub use crate::server::{log, serve};
    pub use crate::store::Store;
}
