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

pub mod backend;
pub mod cli;
pub mod client;
pub mod codec;
pub mod conn;
pub mod dump;
pub mod error;
pub mod journal;
pub mod key;
pub mod local;
pub mod lock;
pub mod object_file;
pub mod progress;
pub mod protocol;
pub mod requests;
pub mod server;
pub mod session;
pub mod store;
pub mod sys;

pub use backend::{CallOptions, Found, Key, Payload};
pub use error::{Error, Result};
pub use session::Session;
