//! The store directory: where it is, checking it is ours and private, and
//! the names of the files the helper keeps there. Object files are named by
//! an id, never by their tag.

use crate::error::{Error, Result};
use crate::sys;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of committed or in-progress object files.
pub const OBJECT_SUFFIX: &str = ".yobj";
pub const SOCKET_NAME: &str = "yaplrd.sock";
pub const HELPER_LOCK_NAME: &str = "yaplrd.lock";
pub const SPAWN_LOCK_NAME: &str = "spawn.lock";
pub const LOG_NAME: &str = "yaplrd.log";
/// Longest socket path the kernel accepts in sockaddr_un (108 with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// The default store of this user: tmpfs when there is one.
pub fn default_dir() -> PathBuf {
    let uid = sys::getuid();
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join(format!("yaplr-{uid}"))
    } else {
        std::env::temp_dir().join(format!("yaplr-{uid}"))
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A handle on a store directory, without touching the filesystem.
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join(SOCKET_NAME)
    }
    pub fn helper_lock_path(&self) -> PathBuf {
        self.dir.join(HELPER_LOCK_NAME)
    }
    pub fn spawn_lock_path(&self) -> PathBuf {
        self.dir.join(SPAWN_LOCK_NAME)
    }
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(LOG_NAME)
    }
    pub fn object_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{OBJECT_SUFFIX}"))
    }

    /// If the directory exists, check it is a real directory of this user
    /// (before trusting a socket found in it). A missing one is fine.
    pub fn check_owner(&self) -> Result<()> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::Store {
                    message: format!(
                        "can not inspect the store directory \"{}\": {e}; choose another with options(yaplr.dir = )",
                        self.dir.display()
                    ),
                })
            }
        };
        if !meta.is_dir() {
            return Err(Error::Store {
                message: format!(
                    "the store path \"{}\" exists but is not a directory (a symbolic link is refused too); \
                     choose another with options(yaplr.dir = )",
                    self.dir.display()
                ),
            });
        }
        let uid = sys::getuid();
        if meta.uid() != uid {
            return Err(Error::Store {
                message: format!(
                    "the store directory \"{}\" belongs to uid {}, not to this user (uid {uid}); \
                     remove it or choose another with options(yaplr.dir = )",
                    self.dir.display(),
                    meta.uid()
                ),
            });
        }
        Ok(())
    }

    /// Create the directory (mode 0700) if needed and check that it is a
    /// directory owned by this user, private, and writable.
    pub fn prepare(&self) -> Result<()> {
        let dir = &self.dir;
        if dir.as_os_str().is_empty() {
            return Err(Error::Store {
                message:
                    "the store directory is an empty path; set options(yaplr.dir = ) to a directory"
                        .into(),
            });
        }
        if !dir.is_absolute() {
            return Err(Error::Store {
                message: format!(
                    "the store directory \"{}\" is not an absolute path",
                    dir.display()
                ),
            });
        }
        if let Err(e) = fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            return Err(Error::Store {
                message: format!(
                    "can not create the store directory \"{}\": {e}; choose a writable directory with options(yaplr.dir = )",
                    dir.display()
                ),
            });
        }
        // A directory (not a link) of this user; then make it private.
        self.check_owner()?;
        let meta = fs::symlink_metadata(dir)
            .map_err(|e| Error::io("inspecting the store directory", e))?;
        if meta.mode() & 0o777 != 0o700 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                Error::Store {
                    message: format!(
                        "can not make the store directory \"{}\" private (mode 0700): {e}",
                        dir.display()
                    ),
                }
            })?;
        }
        if !writable(dir) {
            return Err(Error::Store {
                message: format!(
                    "the store directory \"{}\" is not writable; choose another with options(yaplr.dir = )",
                    dir.display()
                ),
            });
        }
        self.check_socket_path()
    }

    /// The socket path must fit in a sockaddr_un.
    pub fn check_socket_path(&self) -> Result<()> {
        if self.socket_path().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Store {
                message: format!(
                    "the store directory path \"{}\" is too long for a Unix socket ({} bytes at most); choose a shorter one with options(yaplr.dir = )",
                    self.dir.display(),
                    MAX_SOCKET_PATH - SOCKET_NAME.len() - 1
                ),
            });
        }
        Ok(())
    }

    /// Remove every file the store holds (objects, journal, socket, lock
    /// files, log), then the directory itself if nothing else is in it.
    pub fn remove_all(&self) {
        let _ = fs::remove_file(self.socket_path());
        if let Ok(ids) = self.object_ids() {
            for id in ids {
                let _ = fs::remove_file(self.object_path(&id));
            }
        }
        let journal = self.dir.join(crate::journal::JOURNAL_NAME);
        let _ = fs::remove_file(journal.with_extension("tmp"));
        let _ = fs::remove_file(&journal);
        let _ = fs::remove_file(self.spawn_lock_path());
        let _ = fs::remove_file(self.log_path());
        let _ = fs::remove_file(self.helper_lock_path());
        let _ = fs::remove_dir(&self.dir);
    }

    /// Whether the store lives in memory (tmpfs or ramfs): then nothing
    /// survives a reboot anyway and writes need no fsync. A store on a disk
    /// syncs object files and the journal so it survives a crash.
    pub fn is_volatile(&self) -> bool {
        use std::os::unix::ffi::OsStrExt;
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        let Ok(c) = std::ffi::CString::new(self.dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statfs is plain data; c is a valid C string.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        let t = st.f_type as i64;
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    }

    /// Remove the helper's socket and lock files but keep the objects and
    /// the journal (a persistent store between helpers).
    pub fn remove_runtime_files(&self) {
        let _ = fs::remove_file(self.socket_path());
        let _ = fs::remove_file(self.spawn_lock_path());
        let _ = fs::remove_file(self.helper_lock_path());
    }

    /// The pid the helper wrote into its lock file, if any.
    pub fn helper_pid_from_lock(&self) -> Option<u32> {
        fs::read_to_string(self.helper_lock_path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Ids of the object files in the directory (in no particular order).
    pub fn object_ids(&self) -> Result<Vec<String>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", self.dir.display()), e)),
        };
        let mut ids = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(OBJECT_SUFFIX)) {
                if is_valid_id(id) {
                    ids.push(id.to_string());
                }
            }
        }
        Ok(ids)
    }
}

fn writable(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// Object ids are 32 lowercase hex digits.
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh object id: time, pid and a counter, so ids never repeat on one
/// machine (files are also created with O_EXCL).
pub fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = ((sys::getpid() as u64) << 32) ^ (c & 0xffff_ffff);
    format!("{now:016x}{mix:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_and_unique() {
        let a = new_id();
        let b = new_id();
        assert!(is_valid_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_valid_id("../etc/passwd"));
        assert!(!is_valid_id("ABCDEF0123456789ABCDEF0123456789"));
    }

    #[test]
    fn prepare_makes_a_private_dir_and_refuses_files() {
        let base = std::env::temp_dir().join(format!("yaplr-store-test-{}", sys::getpid()));
        let dir = base.join("s");
        let store = Store::new(&dir);
        store.prepare().unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        store.prepare().unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        let file = base.join("f");
        fs::write(&file, b"x").unwrap();
        let err = Store::new(&file).prepare().unwrap_err();
        assert_eq!(err.kind(), "store");
        assert!(Store::new("relative/dir").prepare().is_err());
        fs::remove_dir_all(&base).unwrap();
    }
}
