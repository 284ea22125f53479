//! yaplr-core: the store directory, the object file format, cross-process
//! locks, the control protocol, the helper (`yaplrd`) and its client.
//! Nothing here depends on R.
//!
//! Layers, each using only those before it: `key`; `error`; `codec`;
//! `sys`; `store`; `lock`; the formats (`object_file`, `journal`);
//! `protocol`; `conn`; then `requests`, `client` and `server`, one layer:
//! each request kind has a module in `requests` with its message, its
//! handler in the helper and its client method, and the registry there
//! generates the `Request` enum that `protocol` re-exports; then `dump`,
//! `verify`, `progress` and `cli`. (The journal still converts to and from
//! `protocol::Meta`; `progress` uses `cli::human_size`.)

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
    dump,
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
        KIND_R_VECTOR, VECTOR_HEADER_SIZE,
    };
    pub use crate::store::{default_dir, INLINE_MAX};
}

/// What the `yaplrd` program needs beyond `cli`: serving a store.
pub mod helper {
    pub use crate::server::{log, serve};
    pub use crate::store::Store;
}
