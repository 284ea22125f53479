//! The control protocol between clients and yaplrd: frames of a u32 (little
//! endian) length followed by a bincode payload. Lengths are bounded before
//! anything is allocated. A connection starts with a Hello carrying the
//! protocol version.

use crate::error::{Error, Hint};
use bincode::{Decode, Encode};

pub const PROTOCOL_VERSION: u32 = 11;
/// Payloads up to this size travel inline in frames and live in the
/// helper's journal instead of a file of their own.
pub use crate::store::INLINE_MAX;
/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
/// What decoding an answer of the helper may allocate (see
/// decode_response).
const MAX_DECODED: usize = 256 << 20;
/// The most objects one batch (`PutMany`) may hold: decoding a request may
/// allocate at most MAX_FRAME bytes, and each item takes a few hundred.
pub const MAX_BATCH_ITEMS: usize = 40_000;
/// The longest description of an object, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 64 << 10;
/// A batch of changes carries at most this many inline payload bytes (the
/// rest of its objects go to files), so that it fits in one frame.
pub const BATCH_INLINE_BUDGET: usize = 8 << 20;

/// The first message of every connection (`Request::Hello`): the helper
/// answers with its own Hello, or refuses another protocol version.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Hello {
    pub version: u32,
    pub pid: u32,
    /// Names this client (one process) for as long as it lives: with
    /// `Call::seq` it lets the helper recognise a retried request.
    pub client: u64,
}

/// Numbers the next request of this connection and gives it a deadline
/// (`Request::Call`); sent in the same write as that request, and not
/// answered itself. The helper applies a change at most once (a retry with
/// the same `seq` gets the first answer and changes nothing) and never once
/// its deadline (CLOCK_MONOTONIC, nanoseconds; 0: none) has passed.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Call {
    pub seq: u64,
    pub deadline_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Entry {
    pub namespace: String,
    pub tag: String,
    pub size: u64,
    pub ctime_ns: i64,
    pub kind: u32,
    pub meta: Meta,
    /// Increases with every value stored in the store, so an overwrite
    /// always gets a larger version than the value it replaced.
    pub version: u64,
    /// Kept inline in the journal rather than in a file of its own.
    pub inline: bool,
    /// xxh3 of the payload (0: not known, e.g. a file written by an older
    /// version).
    pub checksum: u64,
}

/// What the sender said about an object, for listings.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct Meta {
    /// The R class vector.
    pub class: Vec<String>,
    /// The R type (typeof).
    pub rtype: String,
    pub length: u64,
    pub dim: Vec<u64>,
    pub description: Option<String>,
}

// The formats keep their own copy of the metadata (their layout is
// versioned with them; today field for field the same); the conversions
// live here, above both.
macro_rules! meta_conversions {
    ($($format:ident),*) => {$(
        impl From<&Meta> for crate::$format::Meta {
            fn from(m: &Meta) -> Self {
                crate::$format::Meta {
                    class: m.class.clone(),
                    rtype: m.rtype.clone(),
                    length: m.length,
                    dim: m.dim.clone(),
                    description: m.description.clone(),
                }
            }
        }

        impl From<&crate::$format::Meta> for Meta {
            fn from(m: &crate::$format::Meta) -> Self {
                Meta {
                    class: m.class.clone(),
                    rtype: m.rtype.clone(),
                    length: m.length,
                    dim: m.dim.clone(),
                    description: m.description.clone(),
                }
            }
        }
    )*};
}

meta_conversions!(journal, dump, index);

impl Meta {
    /// Check what a sender may say about an object.
    pub fn check(&self) -> crate::Result<()> {
        if let Some(d) = &self.description {
            if d.len() > MAX_DESCRIPTION_BYTES {
                return Err(crate::Error::BadArgument(format!(
                    "`description` must be at most {MAX_DESCRIPTION_BYTES} bytes long, not {} bytes",
                    d.len()
                )));
            }
        }
        let class_bytes: usize = self.class.iter().map(|c| c.len()).sum();
        if class_bytes > MAX_DESCRIPTION_BYTES {
            return Err(crate::Error::BadArgument(format!(
                "the object's class attribute is too long to record ({class_bytes} bytes; at most {MAX_DESCRIPTION_BYTES})"
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct ServerInfo {
    pub pid: u32,
    pub dir: String,
    pub objects: u64,
    pub bytes: u64,
    /// The store's capacity in bytes, if one was set.
    pub capacity: Option<u64>,
    /// Free bytes: capacity minus used, or the filesystem's free space.
    pub free: u64,
    pub started_ns: i64,
    pub version: String,
}

/// When a value may be stored: a compare-and-swap on a whole object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Encode, Decode)]
pub enum Condition {
    /// Always, replacing any value.
    #[default]
    Always,
    /// Only when no object is stored under the key.
    Absent,
    /// Only when the stored value has this version.
    Version(u64),
}

impl Condition {
    /// Whether a value may be stored where the stored version is `found`
    /// (None: no object).
    pub fn holds(self, found: Option<u64>) -> bool {
        match self {
            Condition::Always => true,
            Condition::Absent => found.is_none(),
            Condition::Version(v) => found == Some(v),
        }
    }

    /// The version it requires (None: no object), for a conflict.
    pub fn expected(self) -> Option<u64> {
        match self {
            Condition::Version(v) => Some(v),
            Condition::Always | Condition::Absent => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Response {
    Hello {
        version: u32,
        pid: u32,
    },
    Ok,
    /// Answer to Lookup; the fd of the object file travels with the frame.
    Found(Entry),
    /// Answer to Lookup for an object stored inline.
    FoundInline {
        entry: Entry,
        bytes: Vec<u8>,
    },
    /// Answer to LookupMany: per key, its entry and its inline payload
    /// (None: file-backed, its fd travels with the frame, in order).
    FoundMany(Vec<(Entry, Option<Vec<u8>>)>),
    Bool(bool),
    Count(u64),
    List(Vec<Entry>),
    Info(ServerInfo),
    Pong,
    /// A connection refused before its Hello was accepted (another
    /// protocol version, no Hello first). Its layout never changes, so
    /// that a client of any version can read why.
    Refused {
        kind: String,
        message: String,
    },
    /// A request that failed.
    Failed(Failure),
    /// Two counts (a queue's ready and leased items).
    Counts(u64, u64),
    /// Answer to QueuePop: the item's entry, its inline payload (None:
    /// file-backed, its fd travels with the frame) and its lease's token
    /// (0: not leased).
    Popped {
        entry: Entry,
        bytes: Option<Vec<u8>>,
        token: u64,
    },
}

/// A failure as it crosses the socket: its kind with its data, never a
/// string to parse.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Failure {
    BadTag(String),
    BadArgument(String),
    NotFound {
        namespace: String,
        tag: String,
    },
    NoSpace {
        message: String,
        needed: u64,
        hint: Option<Hint>,
    },
    /// The change's deadline passed, or a newer change of the same client
    /// was made first: it was not applied.
    Expired,
    /// A conditional change found another version (see Error::Conflict).
    Conflict {
        namespace: String,
        tag: String,
        expected: Option<u64>,
        found: Option<u64>,
    },
    /// A wait for an object ran out (see requests::wait).
    WaitedOut {
        waited_for: String,
        seconds: f64,
    },
    Store {
        message: String,
        hint: Option<Hint>,
    },
    Server(String),
    Protocol(String),
    Version {
        pid: u32,
        helper: u32,
        ours: u32,
    },
    Corrupt {
        message: String,
        hint: Option<Hint>,
    },
    /// An operating system error of the helper.
    Io(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        match e {
            Error::BadTag(m) => Failure::BadTag(m),
            Error::BadArgument(m) => Failure::BadArgument(m),
            e @ Error::Exists { .. } => Failure::BadArgument(e.to_string()),
            Error::NotFound { tag, namespace } => Failure::NotFound { namespace, tag },
            Error::NoSpace {
                message,
                needed,
                hint,
            } => Failure::NoSpace {
                message,
                needed,
                hint,
            },
            Error::Conflict {
                tag,
                namespace,
                expected,
                found,
            } => Failure::Conflict {
                namespace,
                tag,
                expected,
                found,
            },
            Error::Timeout { .. } => Failure::Expired,
            Error::Store { message, hint } => Failure::Store { message, hint },
            Error::Version { pid, helper, ours } => Failure::Version { pid, helper, ours },
            Error::Corrupt { message, hint } => Failure::Corrupt { message, hint },
            e @ (Error::Interrupted { .. } | Error::NoServer { .. } | Error::Server { .. }) => {
                Failure::Server(e.to_string())
            }
            Error::Protocol { message } => Failure::Protocol(message),
            e @ Error::Closed => Failure::Protocol(e.to_string()),
            e @ Error::Io { .. } => Failure::Io(e.to_string()),
        }
    }
}

impl Failure {
    /// The error this failure means to the client; `expired` is what a
    /// change that was not applied in time waited for.
    pub fn into_error(self, expired: impl FnOnce() -> Error) -> Error {
        match self {
            Failure::BadTag(m) => Error::BadTag(m),
            Failure::BadArgument(m) => Error::BadArgument(m),
            Failure::NotFound { namespace, tag } => Error::NotFound { tag, namespace },
            Failure::NoSpace {
                message,
                needed,
                hint,
            } => Error::NoSpace {
                message,
                needed,
                hint,
            },
            Failure::Expired => expired(),
            Failure::Conflict {
                namespace,
                tag,
                expected,
                found,
            } => Error::Conflict {
                tag,
                namespace,
                expected,
                found,
            },
            Failure::WaitedOut {
                waited_for,
                seconds,
            } => Error::Timeout {
                waited_for,
                seconds,
            },
            Failure::Store { message, hint } => Error::Store { message, hint },
            Failure::Server(message) | Failure::Io(message) => Error::Server { message },
            Failure::Protocol(message) => Error::Protocol { message },
            Failure::Version { pid, helper, ours } => Error::Version { pid, helper, ours },
            Failure::Corrupt { message, hint } => Error::Corrupt { message, hint },
        }
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Encode a message that is known to be small (a fixed request, an error)
/// as one frame (length prefix included). Anything that may be large goes
/// through `try_encode`.
pub fn encode<T: Encode>(msg: &T) -> Vec<u8> {
    try_encode(msg).unwrap_or_else(|| {
        let mut out = vec![0u8; 4];
        let n = bincode::encode_into_std_write(
            Response::Failed(Failure::Protocol(format!(
                "a message larger than {MAX_FRAME} bytes"
            ))),
            &mut out,
            config(),
        )
        .unwrap_or(0);
        // A short error message: its length fits.
        set_len(&mut out, u32::try_from(n).unwrap_or(0));
        out
    })
}

/// The monotonic clock (CLOCK_MONOTONIC, shared by every process of the
/// machine) in nanoseconds: deadlines in requests are on this clock.
pub fn monotonic_ns() -> u64 {
    // SAFETY: timespec is plain data (integers), for which all zeroes is a
    // valid value.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime only writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    // The monotonic clock is never negative.
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

/// The messages that open a connection and number a change, encoded
/// exactly like the first two variants of `requests::Request` (its
/// registry lists Hello and Call first), so that the client's connection
/// code needs no request kind.
#[derive(Debug, Encode)]
pub(crate) enum Head {
    Hello(Hello),
    Call(Call),
}

/// A request encoded as one frame, ready for the client's connection
/// code, which numbers it when it is a change.
pub(crate) struct Outgoing {
    pub frame: Vec<u8>,
    pub change: bool,
}

impl Outgoing {
    /// Encode `msg`; a request too large for one frame is refused.
    pub(crate) fn new<T: Encode>(msg: &T, change: bool) -> crate::Result<Outgoing> {
        match try_encode(msg) {
            Some(frame) => Ok(Outgoing { frame, change }),
            None => Err(Error::BadArgument(format!(
                "the request is larger than the {MAX_FRAME} bytes a message may hold; \
                 send fewer or smaller objects at once"
            ))),
        }
    }
}

/// Encode a message as one frame, or None when it exceeds MAX_FRAME (a
/// List of very many objects).
pub fn try_encode<T: Encode>(msg: &T) -> Option<Vec<u8>> {
    let mut out = vec![0u8; 4];
    // bincode's limit applies to decoding only: check the size here.
    let n = bincode::encode_into_std_write(msg, &mut out, config()).ok()?;
    if n > MAX_FRAME {
        return None;
    }
    set_len(&mut out, u32::try_from(n).ok()?);
    Some(out)
}

/// Write a frame's length into its prefix (its first four bytes).
fn set_len(frame: &mut [u8], n: u32) {
    for (b, v) in frame.iter_mut().zip(n.to_le_bytes()) {
        *b = v;
    }
}

#[derive(Debug, PartialEq)]
pub enum DecodeError {
    /// The length prefix announces more than MAX_FRAME bytes.
    TooLong(usize),
    /// The payload is not a valid message.
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLong(n) => {
                write!(f, "frame of {n} bytes exceeds the limit of {MAX_FRAME}")
            }
            DecodeError::Malformed(m) => write!(f, "malformed frame: {m}"),
        }
    }
}

/// Read the length prefix, refusing lengths over MAX_FRAME.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, DecodeError> {
    let n = u32::from_le_bytes(prefix) as usize;
    if n > MAX_FRAME {
        return Err(DecodeError::TooLong(n));
    }
    Ok(n)
}

/// Decode a frame payload (without its prefix); trailing bytes are an error.
pub fn decode<T: Decode<()>>(payload: &[u8]) -> Result<T, DecodeError> {
    finish(
        bincode::decode_from_slice::<T, _>(payload, config()),
        payload.len(),
    )
}

/// Decode an answer of the helper. bincode charges each element's in-memory
/// size against the limit before allocating; a List of many entries needs
/// more room than its frame, and the helper (same user) is trusted not to
/// send a small frame that claims a huge list.
pub fn decode_response(payload: &[u8]) -> Result<Response, DecodeError> {
    let config = bincode::config::standard().with_limit::<MAX_DECODED>();
    finish(
        bincode::decode_from_slice::<Response, _>(payload, config),
        payload.len(),
    )
}

fn finish<T>(
    r: Result<(T, usize), bincode::error::DecodeError>,
    len: usize,
) -> Result<T, DecodeError> {
    match r {
        Ok((msg, used)) if used == len => Ok(msg),
        Ok((_, used)) => Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            len - used
        ))),
        Err(e) => Err(DecodeError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::requests::{
        list, lookup, ping, publish, put_inline, quit, remove_namespace, Request,
    };

    fn round_trip<T: Encode + Decode<()> + PartialEq + std::fmt::Debug>(m: T) {
        let f = encode(&m);
        let n = frame_len(f[..4].try_into().unwrap()).unwrap();
        assert_eq!(n, f.len() - 4);
        assert_eq!(decode::<T>(&f[4..]).unwrap(), m);
    }

    #[test]
    fn messages_round_trip() {
        round_trip(Request::Hello(Hello {
            version: PROTOCOL_VERSION,
            pid: 7,
            client: 99,
        }));
        round_trip(Request::Call(Call {
            seq: 3,
            deadline_ns: 12345,
        }));
        round_trip(Request::Publish(publish::Publish {
            namespace: "ns".into(),
            tag: "\u{e9}t\u{e9}".into(),
            id: "0".repeat(32),
            meta: Meta::default(),
            condition: Default::default(),
        }));
        round_trip(Request::Lookup(lookup::Lookup {
            namespace: "default".into(),
            tag: "x".repeat(1024),
        }));
        round_trip(Request::List(list::List { namespace: None }));
        round_trip(Request::List(list::List {
            namespace: Some("a".into()),
        }));
        round_trip(Request::RemoveNamespace(
            remove_namespace::RemoveNamespace {
                namespace: "a".into(),
            },
        ));
        round_trip(Response::Count(7));
        round_trip(Request::PutInline(put_inline::PutInline {
            namespace: "n".into(),
            tag: "t".into(),
            kind: 1,
            ctime_ns: 3,
            bytes: vec![1, 2, 3],
            meta: Meta {
                class: vec!["data.frame".into()],
                rtype: "list".into(),
                length: 3,
                dim: vec![10, 3],
                description: Some("d".into()),
            },
            condition: Default::default(),
        }));
        round_trip(Response::FoundInline {
            entry: Entry {
                namespace: "n".into(),
                tag: "t".into(),
                size: 3,
                ctime_ns: 3,
                kind: 1,
                meta: Meta::default(),
                version: 1,
                inline: true,
                checksum: 5,
            },
            bytes: vec![1, 2, 3],
        });
        round_trip(Request::Quit(quit::Quit { keep: true }));
        round_trip(Response::List(vec![Entry {
            namespace: "default".into(),
            tag: "a".into(),
            size: 1,
            ctime_ns: -5,
            kind: 1,
            meta: Meta::default(),
            version: 1,
            inline: true,
            checksum: 0,
        }]));
        round_trip(Response::Failed(Failure::NotFound {
            namespace: "n".into(),
            tag: "t".into(),
        }));
        round_trip(Response::Failed(Failure::NoSpace {
            message: "m".into(),
            needed: 3,
            hint: Some(Hint::PrivateStore {
                suggestion: "/s".into(),
            }),
        }));
        round_trip(Response::Info(ServerInfo {
            pid: 1,
            dir: "/d".into(),
            objects: 2,
            bytes: 3,
            capacity: Some(9),
            free: 6,
            started_ns: 4,
            version: "v".into(),
        }));
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocation() {
        assert_eq!(
            frame_len(u32::MAX.to_le_bytes()),
            Err(DecodeError::TooLong(u32::MAX as usize))
        );
        assert!(frame_len(u32::try_from(MAX_FRAME).unwrap().to_le_bytes()).is_ok());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<Request>(&[]).is_err());
        assert!(decode::<Request>(&[255, 255, 255, 255, 255]).is_err());
        // A string whose announced length is far beyond the payload.
        assert!(decode::<Request>(&[1, 0xfc, 0xff, 0xff, 0xff, 0x7f]).is_err());
        let mut f = encode(&Request::Ping(ping::Ping));
        f.push(0);
        assert!(decode::<Request>(&f[4..]).is_err());
        // Every truncation of a valid frame fails cleanly.
        let f = encode(&Request::Publish(publish::Publish {
            namespace: "default".into(),
            tag: "tag".into(),
            id: "0".repeat(32),
            meta: Meta::default(),
            condition: Default::default(),
        }));
        for cut in 0..f.len() - 4 {
            assert!(decode::<Request>(&f[4..4 + cut]).is_err());
        }
        // Pseudo-random bytes never panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut buf = [0u8; 24];
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x.to_le_bytes()[0];
            }
            let len = (x % 25) as usize;
            let _ = decode::<Request>(&buf[..len]);
            let _ = decode::<Response>(&buf[..len]);
        }
    }
}
