//! Recovery: the catalog a helper starts with (replayed from the journal,
//! or rebuilt from the object files' headers when there is none), and the
//! sweep that removes what dead writers left behind.

use super::{Catalog, Data, Key, Obj};
use crate::sys::log;
use crate::error::Result;
use crate::journal::{self, Journal};
use crate::object_file::{self, STATE_COMMITTED, STATE_WRITING};
use crate::store::Store;
use crate::sys;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Files whose header is unreadable are left alone this long (a writer may
/// be about to write it).
const UNREADABLE_GRACE: Duration = Duration::from_secs(60);

/// The catalog of `store` as its journal (or, without one, its object
/// files) says. A journal that was missing or damaged is rewritten.
pub(crate) fn load(store: &Store) -> Result<Catalog> {
    let (journal, records) = Journal::open(store.dir(), !store.is_volatile())?;
    let replayed = records.is_some();
    let damaged = journal.was_damaged();
    let mut st = Catalog::new(store.clone(), journal);
    match records {
        Some(recs) => replay(&mut st, recs, damaged)?,
        None => st.objects = rebuild(store)?,
    }
    st.recount();
    if !replayed || damaged {
        // Serve anyway when this fails (a full filesystem): the journal
        // as it is still replays to the same catalog.
        if let Err(e) = st.compact() {
            log(&format!("could not rewrite the journal at start: {e}"));
        }
    }
    Ok(st)
}

/// Build the catalog from committed headers; remove what dead writers left.
fn rebuild(store: &Store) -> Result<HashMap<Key, Obj>> {
    let mut objects: HashMap<Key, Obj> = HashMap::new();
    for id in store.object_ids()? {
        let path = store.object_path(&id);
        let header = match store.open_object(&id).map(|f| object_file::read_header(&f)) {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                remove_if_stale(&path, &e.to_string());
                continue;
            }
            Err(_) => continue,
        };
        match header.state {
            STATE_COMMITTED => {}
            STATE_WRITING if !sys::pid_alive(header.creator_pid) => {
                log(&format!(
                    "removing {id}: its writer (pid {}) died",
                    header.creator_pid
                ));
                let _ = std::fs::remove_file(&path);
                continue;
            }
            _ => continue,
        }
        let obj = Obj {
            data: Data::File(id.clone()),
            size: header.payload_len,
            ctime_ns: header.ctime_ns,
            kind: header.kind,
            meta: journal::Meta::default(),
            // Renumbered below, in order of creation.
            seq: 0,
        };
        let key = (header.namespace, header.tag);
        match objects.get(&key) {
            Some(old) if (old.ctime_ns, old.file_id()) > (obj.ctime_ns, obj.file_id()) => {
                let _ = std::fs::remove_file(&path);
            }
            Some(old) => {
                if let Some(old_id) = old.file_id() {
                    let _ = std::fs::remove_file(store.object_path(old_id));
                }
                objects.insert(key, obj);
            }
            None => {
                objects.insert(key, obj);
            }
        }
    }
    let mut order: Vec<(i64, Key)> = objects
        .iter()
        .map(|(k, o)| (o.ctime_ns, k.clone()))
        .collect();
    order.sort();
    for (i, (_, k)) in order.into_iter().enumerate() {
        if let Some(o) = objects.get_mut(&k) {
            o.seq = i as u64 + 1;
        }
    }
    Ok(objects)
}

/// Rebuild the catalog from the journal, then check it against the files:
/// links to missing or damaged files are dropped, files nobody links to are
/// removed once their writer is gone.
fn replay(st: &mut Catalog, records: Vec<journal::Stored>, damaged: bool) -> Result<()> {
    for s in records {
        let mut at = s.payload_at;
        st.apply_stored(s.record, &mut at);
    }
    let store = st.store.clone();
    st.objects.retain(|(ns, tag), obj| {
        let Some(id) = obj.file_id() else { return true };
        let ok = store
            .open_object(id)
            .and_then(|f| object_file::read_header(&f))
            .map(|h| {
                h.state == STATE_COMMITTED
                    && h.tag == super::queue::public_tag(tag)
                    && &h.namespace == ns
            })
            .unwrap_or(false);
        if !ok {
            log(&format!(
                "dropping \"{tag}\" ({ns}): its object file {id} is missing or damaged"
            ));
        }
        ok
    });
    let linked: HashSet<String> = st
        .objects
        .values()
        .filter_map(|o| o.file_id().map(String::from))
        .collect();
    for id in store.object_ids()? {
        if linked.contains(&id) {
            continue;
        }
        let path = store.object_path(&id);
        match store.open_object(&id).map(|f| object_file::read_header(&f)) {
            Ok(Ok(h)) => {
                let superseded = st
                    .objects
                    .get(&(h.namespace.clone(), h.tag.clone()))
                    .is_some_and(|o| o.ctime_ns >= h.ctime_ns);
                if damaged && !superseded && h.state == STATE_COMMITTED {
                    // The journal lost records: this may be a published
                    // object whose record was among them. Keep it.
                    log(&format!(
                        "adopting object file {id} (\"{}\") after journal damage",
                        h.tag
                    ));
                    let obj = Obj {
                        data: Data::File(id.clone()),
                        size: h.payload_len,
                        ctime_ns: h.ctime_ns,
                        kind: h.kind,
                        meta: journal::Meta::default(),
                        seq: 0,
                    };
                    st.objects.insert((h.namespace, h.tag), obj);
                } else if !sys::pid_alive(h.creator_pid) {
                    // A live writer's file stays, even when a newer value
                    // holds its tag: its publish may be on its way (a retry
                    // after this restart), and it then wins as the later
                    // change. The writer, or the sweep once it is gone,
                    // removes it otherwise.
                    log(&format!(
                        "removing unpublished object file {id} (\"{}\")",
                        h.tag
                    ));
                    let _ = std::fs::remove_file(&path);
                }
            }
            Ok(Err(e)) => remove_if_stale(&path, &e.to_string()),
            Err(_) => {}
        }
    }
    Ok(())
}

fn remove_if_stale(path: &std::path::Path, why: &str) {
    // A yaplr object file this version can not read (a newer format, or a
    // damaged header) is never removed: only garbage that is not one.
    let mut magic = [0u8; 8];
    let is_ours = std::fs::File::open(path)
        .and_then(|f| {
            use std::os::unix::fs::FileExt;
            f.read_exact_at(&mut magic, 0)
        })
        .is_ok()
        && &magic == object_file::MAGIC;
    if is_ours {
        return;
    }
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|age| age > UNREADABLE_GRACE)
        .unwrap_or(false);
    if old {
        log(&format!("removing unreadable {}: {why}", path.display()));
        let _ = std::fs::remove_file(path);
    }
}

/// Remove files whose writer died: half-written ones, and committed ones the
/// writer never published.
pub(crate) fn sweep(st: &Catalog) {
    let Ok(ids) = st.store.object_ids() else {
        return;
    };
    let files = st
        .objects
        .values()
        .filter(|o| o.file_id().is_some())
        .count();
    if ids.len() == files {
        return;
    }
    let known: HashSet<&str> = st.objects.values().filter_map(|o| o.file_id()).collect();
    for id in ids {
        if known.contains(id.as_str()) {
            continue;
        }
        let path = st.store.object_path(&id);
        match st
            .store
            .open_object(&id)
            .map(|f| object_file::read_header(&f))
        {
            Ok(Ok(h)) if !sys::pid_alive(h.creator_pid) => {
                log(&format!(
                    "removing {id} (\"{}\"): its writer (pid {}) died before publishing it",
                    h.tag, h.creator_pid
                ));
                let _ = std::fs::remove_file(&path);
            }
            Ok(Err(e)) => remove_if_stale(&path, &e.to_string()),
            _ => {}
        }
    }
}
