//! The typed messages encode exactly as the struct variants of the
//! protocol did before them (version 10, with the conditions of Publish and
//! PutInline added in version 11).

use super::*;
use super::put_many::PutItem;
use crate::protocol::{self, Meta, PROTOCOL_VERSION};

/// `Request` as it was written before the message types, field for field.
#[derive(Encode)]
enum Old {
    Hello {
        version: u32,
        pid: u32,
        client: u64,
    },
    Call {
        seq: u64,
        deadline_ns: u64,
    },
    Publish {
        namespace: String,
        tag: String,
        id: String,
        meta: Meta,
        condition: protocol::Condition,
    },
    PutInline {
        namespace: String,
        tag: String,
        kind: u32,
        ctime_ns: i64,
        bytes: Vec<u8>,
        meta: Meta,
        condition: protocol::Condition,
    },
    Lookup {
        namespace: String,
        tag: String,
    },
    Remove {
        namespace: String,
        tag: String,
    },
    Exists {
        namespace: String,
        tag: String,
    },
    List {
        namespace: Option<String>,
    },
    RemoveNamespace {
        namespace: String,
    },
    Info,
    Ping,
    Discard {
        id: String,
    },
    PutMany {
        items: Vec<PutItem>,
    },
    LookupMany {
        keys: Vec<(String, String)>,
    },
    SetCapacity {
        bytes: Option<u64>,
    },
    Quit {
        keep: bool,
    },
}

fn meta() -> Meta {
    Meta {
        class: vec!["data.frame".into()],
        rtype: "list".into(),
        length: 3,
        dim: vec![10, 3],
        description: Some("d\u{e9}".into()),
    }
}

fn item(inline: bool) -> PutItem {
    PutItem {
        namespace: "n".into(),
        tag: "t".into(),
        kind: 2,
        ctime_ns: -7,
        inline: inline.then(|| vec![1, 2, 3]),
        id: (!inline).then(|| "0".repeat(32)),
        meta: meta(),
    }
}

/// One request of every kind, old and new.
fn pairs() -> Vec<(Old, Request)> {
    let ns = || String::from("ns");
    let tag = || String::from("t\u{e9}g");
    vec![
        (
            Old::Hello {
                version: PROTOCOL_VERSION,
                pid: 7,
                client: u64::MAX,
            },
            Request::Hello(Hello {
                version: PROTOCOL_VERSION,
                pid: 7,
                client: u64::MAX,
            }),
        ),
        (
            Old::Call {
                seq: 3,
                deadline_ns: 1 << 40,
            },
            Request::Call(Call {
                seq: 3,
                deadline_ns: 1 << 40,
            }),
        ),
        (
            Old::Publish {
                namespace: ns(),
                tag: tag(),
                id: "f".repeat(32),
                meta: meta(),
                condition: protocol::Condition::Always,
            },
            Request::Publish(publish::Publish {
                namespace: ns(),
                tag: tag(),
                id: "f".repeat(32),
                meta: meta(),
                condition: Default::default(),
            }),
        ),
        (
            Old::PutInline {
                namespace: ns(),
                tag: tag(),
                kind: 1,
                ctime_ns: i64::MIN,
                bytes: vec![0, 255, 7],
                meta: Meta::default(),
                condition: protocol::Condition::Always,
            },
            Request::PutInline(put_inline::PutInline {
                namespace: ns(),
                tag: tag(),
                kind: 1,
                ctime_ns: i64::MIN,
                bytes: vec![0, 255, 7],
                meta: Meta::default(),
                condition: Default::default(),
            }),
        ),
        (
            Old::Lookup {
                namespace: ns(),
                tag: tag(),
            },
            Request::Lookup(lookup::Lookup {
                namespace: ns(),
                tag: tag(),
            }),
        ),
        (
            Old::Remove {
                namespace: ns(),
                tag: tag(),
            },
            Request::Remove(remove::Remove {
                namespace: ns(),
                tag: tag(),
            }),
        ),
        (
            Old::Exists {
                namespace: ns(),
                tag: tag(),
            },
            Request::Exists(exists::Exists {
                namespace: ns(),
                tag: tag(),
            }),
        ),
        (
            Old::List { namespace: None },
            Request::List(list::List { namespace: None }),
        ),
        (
            Old::List {
                namespace: Some(ns()),
            },
            Request::List(list::List {
                namespace: Some(ns()),
            }),
        ),
        (
            Old::RemoveNamespace { namespace: ns() },
            Request::RemoveNamespace(remove_namespace::RemoveNamespace { namespace: ns() }),
        ),
        (Old::Info, Request::Info(info::Info)),
        (Old::Ping, Request::Ping(ping::Ping)),
        (
            Old::Discard { id: "a".repeat(32) },
            Request::Discard(discard::Discard { id: "a".repeat(32) }),
        ),
        (
            Old::PutMany {
                items: vec![item(true), item(false)],
            },
            Request::PutMany(put_many::PutMany {
                items: vec![item(true), item(false)],
            }),
        ),
        (
            Old::LookupMany {
                keys: vec![(ns(), tag()), (ns(), "u".into())],
            },
            Request::LookupMany(lookup_many::LookupMany {
                keys: vec![(ns(), tag()), (ns(), "u".into())],
            }),
        ),
        (
            Old::SetCapacity {
                bytes: Some(1 << 33),
            },
            Request::SetCapacity(set_capacity::SetCapacity {
                bytes: Some(1 << 33),
            }),
        ),
        (
            Old::SetCapacity { bytes: None },
            Request::SetCapacity(set_capacity::SetCapacity { bytes: None }),
        ),
        (
            Old::Quit { keep: true },
            Request::Quit(quit::Quit { keep: true }),
        ),
        (
            Old::Quit { keep: false },
            Request::Quit(quit::Quit { keep: false }),
        ),
    ]
}

#[test]
fn every_request_encodes_as_before() {
    let pairs = pairs();
    // Every kind is covered (Request has 16 variants).
    let kinds: std::collections::HashSet<_> = pairs
        .iter()
        .map(|(_, new)| std::mem::discriminant(new))
        .collect();
    assert_eq!(kinds.len(), 16);
    for (old, new) in pairs {
        let bytes = protocol::encode(&new);
        assert_eq!(protocol::encode(&old), bytes, "{new:?}");
        assert_eq!(
            protocol::decode::<Request>(&bytes[4..]).unwrap(),
            new,
            "{new:?}"
        );
    }
}

#[test]
fn variant_indexes_are_fixed() {
    // A frame: the u32 length, then the variant index (a one-byte varint)
    // and the fields.
    assert_eq!(
        protocol::encode(&Request::Hello(Hello {
            version: 10,
            pid: 1,
            client: 2
        })),
        [4, 0, 0, 0, 0, 10, 1, 2]
    );
    assert_eq!(
        protocol::encode(&Request::Ping(ping::Ping)),
        [1, 0, 0, 0, 10]
    );
    assert_eq!(
        protocol::encode(&Request::Info(info::Info)),
        [1, 0, 0, 0, 9]
    );
    assert_eq!(
        protocol::encode(&Request::Quit(quit::Quit { keep: true })),
        [2, 0, 0, 0, 15, 1]
    );
    assert_eq!(
        protocol::encode(&Request::Remove(remove::Remove {
            namespace: "n".into(),
            tag: "t".into()
        })),
        [5, 0, 0, 0, 5, 1, b'n', 1, b't']
    );
}

#[test]
fn changes_are_the_same_kinds_as_before() {
    let changes: Vec<bool> = pairs().iter().map(|(_, r)| r.is_change()).collect();
    let expected: Vec<bool> = pairs()
        .iter()
        .map(|(old, _)| {
            matches!(
                old,
                Old::Publish { .. }
                    | Old::PutInline { .. }
                    | Old::Remove { .. }
                    | Old::RemoveNamespace { .. }
                    | Old::PutMany { .. }
                    | Old::SetCapacity { .. }
            )
        })
        .collect();
    assert_eq!(changes, expected);
}

#[test]
fn the_connection_head_encodes_like_the_first_requests() {
    use crate::protocol::{Call, Head, Hello};
    let hello = Hello {
        version: PROTOCOL_VERSION,
        pid: 42,
        client: 7,
    };
    let call = Call {
        seq: 3,
        deadline_ns: 99,
    };
    assert_eq!(
        protocol::encode(&Head::Hello(hello.clone())),
        protocol::encode(&Request::Hello(hello))
    );
    assert_eq!(
        protocol::encode(&Head::Call(call.clone())),
        protocol::encode(&Request::Call(call))
    );
}
