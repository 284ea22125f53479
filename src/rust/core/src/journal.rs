//! The helper's journal: an append-only log of catalog changes in the store
//! directory. Small objects live in it inline (no file per object); large
//! ones are referenced by their object file id. Every record is appended
//! before the change is acknowledged, so a killed helper loses nothing: the
//! next one replays the journal. Records carry a checksum; a torn record at
//! the end (the helper died mid-append) is cut off on replay.

use crate::error::{Error, Result};
use crate::object_file::fnv1a64;
use crate::protocol::Meta;
use crate::store::{Dir, How};
use bincode::{Decode, Encode};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const JOURNAL_NAME: &str = "catalog.journal";
/// The new journal while a compaction writes it.
pub const JOURNAL_TMP_NAME: &str = "catalog.tmp";
const MAGIC: &[u8; 8] = b"YAPLRJN3";
/// Journals smaller than this are never compacted.
const COMPACT_MIN: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Record {
    /// A small object, stored inline.
    Put {
        namespace: String,
        tag: String,
        ctime_ns: i64,
        kind: u32,
        bytes: Vec<u8>,
        meta: Meta,
        /// Store-wide sequence number: the object's version.
        seq: u64,
    },
    /// An object stored in its own file.
    Link {
        namespace: String,
        tag: String,
        id: String,
        ctime_ns: i64,
        kind: u32,
        size: u64,
        meta: Meta,
        seq: u64,
    },
    Remove {
        namespace: String,
        tag: String,
    },
    /// The store's capacity (None: unlimited).
    Capacity {
        bytes: Option<u64>,
    },
    /// Several changes that take effect together or not at all (one
    /// record, one checksum).
    Batch(Vec<Record>),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<{ 64 << 20 }>()
}

fn encode_record(rec: &Record) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    let n = bincode::encode_into_std_write(rec, &mut out, config()).unwrap_or(0);
    let sum = fnv1a64(&out[12..]);
    out[..4].copy_from_slice(&(n as u32).to_le_bytes());
    out[4..12].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Parse records. A record whose body is damaged but whose length is
/// intact is skipped (later records survive); parsing stops at a record
/// that runs past the end (a torn last append) or can not be framed.
/// Returns the records, the length of the parsable prefix, and whether any
/// record was skipped.
fn parse(bytes: &[u8]) -> (Vec<Record>, usize, bool) {
    let mut recs = Vec::new();
    let mut skipped = false;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return (recs, 0, false);
    }
    let mut at = MAGIC.len();
    while at + 12 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let sum = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().unwrap());
        let Some(body) = bytes.get(at + 12..at + 12 + n) else {
            break;
        };
        let decoded = if fnv1a64(body) == sum {
            match bincode::decode_from_slice::<Record, _>(body, config()) {
                Ok((rec, used)) if used == n => Some(rec),
                _ => None,
            }
        } else {
            None
        };
        match decoded {
            Some(rec) => recs.push(rec),
            None => skipped = true,
        }
        at += 12 + n;
    }
    (recs, at, skipped)
}

pub struct Journal {
    file: File,
    dir: Dir,
    path: PathBuf,
    len: u64,
    /// fdatasync after each append (stores on a disk).
    durable: bool,
    /// Whether open() had to cut damaged records off.
    damaged: bool,
}

impl Journal {
    /// Open the journal of the store in `dir`. Returns the records of an
    /// existing journal (None when there was none, or it was unreadable),
    /// with a torn tail cut off.
    pub fn open(dir: &Path, durable: bool) -> Result<(Journal, Option<Vec<Record>>)> {
        let path = dir.join(JOURNAL_NAME);
        let dir = Dir::open(dir)?;
        // Never through a link, never a file of another user.
        let mut file = dir.open_file(JOURNAL_NAME, How::ReadWrite)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let existing = if bytes.is_empty() { None } else { Some(bytes) };
        let (records, valid, skipped) = match &existing {
            Some(b) => {
                let (r, valid, skipped) = parse(b);
                if valid == 0 {
                    (None, 0, false)
                } else {
                    (Some(r), valid, skipped)
                }
            }
            None => (None, 0, false),
        };
        let mut j = Journal {
            file,
            dir,
            path,
            len: 0,
            durable,
            damaged: skipped || existing.as_ref().is_some_and(|b| valid < b.len()),
        };
        if valid == 0 {
            j.file
                .set_len(0)
                .map_err(|e| Error::io("resetting the journal", e))?;
            j.write_at_end(MAGIC)?;
        } else {
            j.file
                .set_len(valid as u64)
                .map_err(|e| Error::io("trimming the journal", e))?;
            j.len = valid as u64;
        }
        Ok((j, records))
    }

    fn write_at_end(&mut self, bytes: &[u8]) -> Result<()> {
        use std::os::unix::fs::FileExt;
        if let Err(e) = self.file.write_all_at(bytes, self.len) {
            // Leave no partial record behind: the next append overwrites it.
            let _ = self.file.set_len(self.len);
            return Err(Error::io(format!("writing {}", self.path.display()), e));
        }
        self.len += bytes.len() as u64;
        if self.durable {
            self.file
                .sync_data()
                .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))?;
        }
        Ok(())
    }

    /// Append one record (durable against a crash of the helper: it is in
    /// the page cache as soon as this returns).
    pub fn append(&mut self, rec: &Record) -> Result<()> {
        self.write_at_end(&encode_record(rec))
    }

    /// True when records were lost to damage (not just a torn last append
    /// can look like this, so callers should then trust file headers more).
    pub fn was_damaged(&self) -> bool {
        self.damaged
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len <= MAGIC.len() as u64
    }

    /// Whether the journal has grown to twice `baseline` (its length after
    /// the last rewrite) and past COMPACT_MIN.
    pub fn wants_compaction(&self, baseline: u64) -> bool {
        self.len > 2 * baseline + COMPACT_MIN
    }

    /// Replace the journal by one holding just `live`, atomically (write a
    /// new file, then rename it over the old one).
    pub fn rewrite(&mut self, live: &[Record]) -> Result<()> {
        let mut out = Vec::with_capacity(1 << 16);
        out.extend_from_slice(MAGIC);
        for r in live {
            out.extend_from_slice(&encode_record(r));
        }
        // A leftover (or planted) temporary file is removed, never reused:
        // the new one is created with O_EXCL and without following links.
        let _ = self.dir.unlink(JOURNAL_TMP_NAME);
        let write = || -> Result<File> {
            let mut f = self.dir.open_file(JOURNAL_TMP_NAME, How::CreateNew)?;
            let io = |e| Error::io(format!("compacting {}", self.path.display()), e);
            f.write_all(&out).map_err(io)?;
            if self.durable {
                f.sync_data().map_err(io)?;
            }
            self.dir
                .rename(JOURNAL_TMP_NAME, JOURNAL_NAME)
                .map_err(io)?;
            Ok(f)
        };
        match write() {
            Ok(f) => {
                self.file = f;
                self.len = out.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.dir.unlink(JOURNAL_TMP_NAME);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("yaplr-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(tag: &str, b: &[u8]) -> Record {
        Record::Put {
            namespace: "default".into(),
            tag: tag.into(),
            ctime_ns: 1,
            kind: 1,
            bytes: b.to_vec(),
            meta: Meta::default(),
            seq: 1,
        }
    }

    #[test]
    fn records_survive_reopen_and_torn_tails_are_cut() {
        let d = temp_dir("reopen");
        {
            let (mut j, recs) = Journal::open(&d, false).unwrap();
            assert!(recs.is_none());
            j.append(&put("a", b"one")).unwrap();
            j.append(&Record::Remove {
                namespace: "default".into(),
                tag: "a".into(),
            })
            .unwrap();
            j.append(&put("b", b"two")).unwrap();
        }
        let path = d.join(JOURNAL_NAME);
        let full = std::fs::read(&path).unwrap();
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(recs.unwrap().len(), 3);
        // Cut the last record in half, as a helper killed mid-append would.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (mut j, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(
            recs.unwrap(),
            vec![
                put("a", b"one"),
                Record::Remove {
                    namespace: "default".into(),
                    tag: "a".into()
                }
            ]
        );
        j.append(&put("c", b"three")).unwrap();
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(recs.unwrap().last().unwrap(), &put("c", b"three"));
        // A flipped bit in a body loses that record only.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 0x40;
        let first_body = 8 + 12 + 3;
        bytes[first_body] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        assert!(j.was_damaged());
        let recs = recs.unwrap();
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert!(matches!(&recs[0], Record::Remove { .. }));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rewrite_keeps_only_live_records() {
        let d = temp_dir("rewrite");
        let (mut j, _) = Journal::open(&d, false).unwrap();
        for i in 0..100 {
            j.append(&put("x", &vec![i as u8; 1000])).unwrap();
        }
        let before = j.len();
        j.rewrite(&[put("x", b"last")]).unwrap();
        assert!(j.len() < before / 10);
        j.append(&put("y", b"after")).unwrap();
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(recs.unwrap(), vec![put("x", b"last"), put("y", b"after")]);
        assert!(!d.join("catalog.tmp").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn rewrite_never_writes_through_a_planted_link() {
        let d = temp_dir("planted");
        let victim = d.with_extension("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let (mut j, _) = Journal::open(&d, false).unwrap();
        std::os::unix::fs::symlink(&victim, d.join(JOURNAL_TMP_NAME)).unwrap();
        j.rewrite(&[put("x", b"live")]).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let (_, recs) = Journal::open(&d, false).unwrap();
        assert_eq!(recs.unwrap(), vec![put("x", b"live")]);
        // A journal that is a link is refused, not followed.
        std::fs::remove_file(d.join(JOURNAL_NAME)).unwrap();
        std::os::unix::fs::symlink(&victim, d.join(JOURNAL_NAME)).unwrap();
        let err = Journal::open(&d, false).err().unwrap();
        assert_eq!(err.kind(), "store");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_file(&victim).unwrap();
    }

    #[test]
    fn garbage_journal_is_treated_as_absent() {
        let d = temp_dir("garbage");
        std::fs::write(d.join(JOURNAL_NAME), b"not a journal at all").unwrap();
        let (j, recs) = Journal::open(&d, false).unwrap();
        assert!(recs.is_none());
        assert!(j.is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
