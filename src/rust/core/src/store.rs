//! The store directory: where it is, checking it is ours and private, and
//! the names of the files the helper keeps there. Object files are named by
//! an id, never by their tag.

use crate::error::{Error, Hint, Result};
use crate::sys;
use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of committed or in-progress object files.
pub const OBJECT_SUFFIX: &str = ".yobj";
pub const SOCKET_NAME: &str = "yaplrd.sock";
pub const HELPER_LOCK_NAME: &str = "yaplrd.lock";
pub const SPAWN_LOCK_NAME: &str = "spawn.lock";
pub const LOG_NAME: &str = "yaplrd.log";
/// The helper's journal (see `journal`).
pub const JOURNAL_NAME: &str = "catalog.journal";
/// The new journal while a compaction writes it.
pub const JOURNAL_TMP_NAME: &str = "catalog.tmp";
/// A damaged journal is kept under this name before it is cut.
pub const JOURNAL_DAMAGED_NAME: &str = "catalog.journal.damaged";
/// The coordination region: counters and locks shared by every process
/// that maps it (see `coord`).
pub const COORD_NAME: &str = "coord";
/// A new coordination region while the helper initializes it, before it is
/// renamed to `COORD_NAME`.
pub const COORD_TMP_NAME: &str = "coord.tmp";
/// The store's index: the catalog and small payloads, read by clients
/// without the helper (see `index`).
pub const INDEX_NAME: &str = "index";
/// A new index while the helper writes it, before it is renamed.
pub const INDEX_TMP_NAME: &str = "index.tmp";
/// Payloads up to this size (64 KiB) are small: they travel inline in
/// protocol frames and live in the helper's journal; larger ones get an
/// object file of their own.
pub const INLINE_MAX: usize = 64 << 10;
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
    pub fn coord_path(&self) -> PathBuf {
        self.dir.join(COORD_NAME)
    }
    pub fn object_path(&self, id: &str) -> PathBuf {
        self.dir.join(object_file_name(id))
    }

    /// If the directory exists, check it is a real directory of this user
    /// (before trusting a socket found in it). A missing one is fine.
    pub fn check_owner(&self) -> Result<()> {
        // A relative path would name a socket in whatever directory the
        // process happens to be in.
        if !self.dir.is_absolute() {
            return Err(Error::store(
                format!(
                    "the store directory \"{}\" is not an absolute path",
                    self.dir.display()
                ),
                Hint::SetStore,
            ));
        }
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::store(
                    format!(
                        "can not inspect the store directory \"{}\": {e}",
                        self.dir.display()
                    ),
                    Hint::OtherStore,
                ))
            }
        };
        if !meta.is_dir() {
            return Err(Error::store(format!(
                    "the store path \"{}\" exists but is not a directory (a symbolic link is refused too)",
                    self.dir.display()
                ), Hint::OtherStore));
        }
        check_dir_meta(&self.dir, &meta)
    }

    /// Create the directory (mode 0700) if needed, or check that an
    /// existing one is a directory owned by this user that nobody else can
    /// write to. The mode of an existing directory is never changed.
    pub fn prepare(&self) -> Result<()> {
        let dir = &self.dir;
        if dir.as_os_str().is_empty() {
            return Err(Error::store(
                "the store directory is an empty path",
                Hint::SetStore,
            ));
        }
        if !dir.is_absolute() {
            return Err(Error::Store {
                message: format!(
                    "the store directory \"{}\" is not an absolute path",
                    dir.display()
                ),
                hint: None,
            });
        }
        if dir.parent().is_none() {
            return Err(Error::store(
                "the root directory \"/\" can not be a store",
                Hint::OwnStore,
            ));
        }
        // Parents as needed; the store directory itself is created here,
        // private, or found to exist.
        if let Some(parent) = dir.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                let _ = fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent);
            }
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::store(
                    format!(
                        "can not create the store directory \"{}\": {e}",
                        dir.display()
                    ),
                    Hint::WritableStore,
                ))
            }
        }
        // A directory (not a link) of this user, writable by nobody else.
        self.check_owner()?;
        if !writable(dir) {
            return Err(Error::store(
                format!("the store directory \"{}\" is not writable", dir.display()),
                Hint::OtherStore,
            ));
        }
        self.check_socket_path()
    }

    /// Check every entry of an existing store: each must be owned by this
    /// user and none may be a symbolic link. A store whose directory was
    /// once writable by others may hold entries planted to make the helper
    /// write elsewhere or adopt foreign data: refuse it, naming the entry.
    pub fn check_entries(&self) -> Result<()> {
        let d = match Dir::open(&self.dir) {
            Ok(d) => d,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) => return Err(Error::io(format!("reading {}", self.dir.display()), e)),
        };
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            // Only the names yaplr uses: a store at the root of a
            // filesystem may hold lost+found, say.
            let ours = name.ends_with(OBJECT_SUFFIX)
                || [
                    SOCKET_NAME,
                    HELPER_LOCK_NAME,
                    SPAWN_LOCK_NAME,
                    LOG_NAME,
                    JOURNAL_NAME,
                    JOURNAL_TMP_NAME,
                    JOURNAL_DAMAGED_NAME,
                    COORD_NAME,
                    COORD_TMP_NAME,
                    INDEX_NAME,
                    INDEX_TMP_NAME,
                ]
                .contains(&name);
            if !ours {
                continue;
            }
            match d.lstat(name) {
                Ok(st) => check_entry(&self.dir, name, st.st_uid, st.st_mode)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("inspecting {}", self.dir.join(name).display()),
                        e,
                    ))
                }
            }
        }
        Ok(())
    }

    /// The socket path must fit in a sockaddr_un.
    pub fn check_socket_path(&self) -> Result<()> {
        if self.socket_path().as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::store(format!(
                    "the store directory path \"{}\" is too long for a Unix socket ({} bytes at most)",
                    self.dir.display(),
                    MAX_SOCKET_PATH - SOCKET_NAME.len() - 1
                ), Hint::ShorterStore));
        }
        Ok(())
    }

    /// Remove every file the store holds (objects, journal, coordination
    /// region, socket, lock files, log), then the directory itself if
    /// nothing else is in it.
    pub fn remove_all(&self) {
        let Ok(d) = Dir::open(&self.dir) else {
            return;
        };
        let _ = d.unlink(SOCKET_NAME);
        if let Ok(ids) = self.object_ids() {
            for id in ids {
                let _ = d.unlink(&format!("{id}{OBJECT_SUFFIX}"));
            }
        }
        let _ = d.unlink(JOURNAL_TMP_NAME);
        let _ = d.unlink(JOURNAL_DAMAGED_NAME);
        let _ = d.unlink(JOURNAL_NAME);
        let _ = d.unlink(COORD_TMP_NAME);
        let _ = d.unlink(COORD_NAME);
        let _ = d.unlink(INDEX_TMP_NAME);
        let _ = d.unlink(INDEX_NAME);
        let _ = d.unlink(SPAWN_LOCK_NAME);
        let _ = d.unlink(LOG_NAME);
        let _ = d.unlink(HELPER_LOCK_NAME);
        drop(d);
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
        // SAFETY: statfs is plain data (integers), for which all zeroes is
        // a valid value.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid NUL-terminated string and st a writable statfs.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        let t = st.f_type as i64;
        t == TMPFS_MAGIC || t == RAMFS_MAGIC
    }

    /// Remove the helper's socket and lock files but keep the objects and
    /// the journal (a persistent store between helpers).
    pub fn remove_runtime_files(&self) {
        let Ok(d) = Dir::open(&self.dir) else {
            return;
        };
        let _ = d.unlink(SOCKET_NAME);
        let _ = d.unlink(INDEX_TMP_NAME);
        let _ = d.unlink(INDEX_NAME);
        let _ = d.unlink(SPAWN_LOCK_NAME);
        let _ = d.unlink(HELPER_LOCK_NAME);
    }

    /// The pid the helper wrote into its lock file, if any.
    pub fn helper_pid_from_lock(&self) -> Option<u32> {
        use std::io::Read;
        let mut f = open_entry(&self.helper_lock_path(), How::Read).ok()?;
        let mut s = String::new();
        f.read_to_string(&mut s).ok()?;
        s.trim().parse().ok()
    }

    /// Open an object file of this store for reading (never through a
    /// link, never a file of another user).
    pub fn open_object(&self, id: &str) -> Result<File> {
        open_entry(&self.object_path(id), How::Read)
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

/// An existing store directory must be a directory (not a link) of this
/// user that neither its group nor others can write to: anyone who can
/// create entries in it could plant links or files for the helper to use.
fn check_dir_meta(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    if !meta.is_dir() {
        return Err(Error::store(format!(
                "the store path \"{}\" exists but is not a directory (a symbolic link is refused too)",
                dir.display()
            ), Hint::OtherStore));
    }
    let uid = sys::getuid();
    if meta.uid() != uid {
        return Err(Error::store(
            format!(
                "the store directory \"{}\" belongs to uid {}, not to this user (uid {uid})",
                dir.display(),
                meta.uid()
            ),
            Hint::OwnStore,
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let who = if mode & 0o002 != 0 {
            "every user"
        } else {
            "its group"
        };
        return Err(Error::store(
            format!(
                "the store directory \"{}\" can be written by {who} (mode {mode:04o}), who could plant files in it; \
                 yaplr does not change the mode of a directory it did not create",
                dir.display(),
            ),
            Hint::PrivateStore {
                suggestion: dir.join("yaplr").display().to_string(),
            },
        ));
    }
    Ok(())
}

/// Refuse an entry of the store (of this owner and st_mode) that belongs to
/// another user or is a symbolic link.
fn check_entry(dir: &Path, name: &str, owner: u32, mode: u32) -> Result<()> {
    let uid = sys::getuid();
    let path = dir.join(name);
    if owner != uid {
        return Err(Error::store(format!(
                "the store entry \"{}\" belongs to uid {}, not to this user (uid {uid}): another user has planted it",
                path.display(),
                owner
            ), Hint::RemovePlanted));
    }
    if mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(Error::store(
            format!(
                "the store entry \"{}\" is a symbolic link: yaplr never follows links in its store",
                path.display()
            ),
            Hint::RemoveEntry,
        ));
    }
    Ok(())
}

/// How `open_entry` opens an entry of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// An existing entry, read only.
    Read,
    /// An existing entry, read and write (never created).
    Update,
    /// An existing entry, or a new one (mode 0600), read and write.
    ReadWrite,
    /// A new entry that must not exist yet (mode 0600), read and write.
    CreateNew,
    /// An existing or new entry (mode 0600), for appending.
    Append,
}

/// The store directory, opened (never through a link) so that its entries
/// can be opened relative to it.
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn cstring(s: &[u8]) -> std::io::Result<CString> {
    CString::new(s)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

impl Dir {
    pub fn open(path: &Path) -> Result<Dir> {
        let c = cstring(path.as_os_str().as_bytes())
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        // SAFETY: c is a valid NUL-terminated string, alive for the call;
        // the result is checked below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) {
                return Err(Error::store(format!(
                        "the store path \"{}\" exists but is not a directory (a symbolic link is refused too)",
                        path.display()
                    ), Hint::OtherStore));
            }
            return Err(Error::io(format!("opening {}", path.display()), e));
        }
        Ok(Dir {
            // SAFETY: fd is a descriptor just opened, which nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// Check, on the open descriptor, that the directory is this user's
    /// and that nobody else can write to it (as `Store::check_owner`).
    pub fn check_private(&self) -> Result<()> {
        let context = || format!("inspecting {}", self.path.display());
        let f = File::from(self.fd.try_clone().map_err(|e| Error::io(context(), e))?);
        let meta = f.metadata().map_err(|e| Error::io(context(), e))?;
        check_dir_meta(&self.path, &meta)
    }

    /// lstat of an entry (links are not followed).
    pub fn lstat(&self, name: &str) -> std::io::Result<libc::stat> {
        let c = cstring(name.as_bytes())?;
        // SAFETY: stat is plain data (integers), for which all zeroes is a
        // valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: c is a valid NUL-terminated string and st a writable
        // stat, both alive for the call; our descriptor is open.
        let r = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(st)
    }

    /// Open an entry: never through a symbolic link, new files with O_EXCL,
    /// and only files of this user (a foreign entry is `Error::Store`).
    pub fn open_file(&self, name: &str, how: How) -> Result<File> {
        let path = self.path.join(name);
        let c = cstring(name.as_bytes())
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let base = libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let flags = base
            | match how {
                How::Read => libc::O_RDONLY,
                How::Update => libc::O_RDWR,
                How::ReadWrite => libc::O_RDWR | libc::O_CREAT,
                How::CreateNew => libc::O_RDWR | libc::O_CREAT | libc::O_EXCL,
                How::Append => libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
            };
        // SAFETY: c is a valid NUL-terminated string, alive for the call;
        // the mode is passed as the varargs unsigned int openat(2) reads;
        // the result is checked below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ELOOP) {
                if let Ok(st) = self.lstat(name) {
                    check_entry(&self.path, name, st.st_uid, st.st_mode)?;
                }
            }
            return Err(Error::io(format!("opening {}", path.display()), e));
        }
        // SAFETY: fd is a descriptor just opened, which nothing else owns.
        let file = unsafe { File::from_raw_fd(fd) };
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
        check_entry(&self.path, name, meta.uid(), meta.mode())?;
        if !meta.file_type().is_file() {
            return Err(Error::store(
                format!(
                    "the store entry \"{}\" is not a regular file",
                    path.display()
                ),
                Hint::RemoveEntry,
            ));
        }
        Ok(file)
    }

    /// A new file in this directory that has no name yet (O_TMPFILE, mode
    /// 0600): if its writer dies before `link_unnamed`, nothing is left.
    /// Fails with EOPNOTSUPP (or EISDIR, EINVAL) where the filesystem can
    /// not do this.
    pub fn create_unnamed(&self) -> std::io::Result<File> {
        // SAFETY: "." is a valid NUL-terminated string; the mode is passed
        // as the varargs unsigned int openat(2) reads; the result is
        // checked below.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c".".as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o600 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a descriptor just opened, which nothing else owns.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Give a file made by `create_unnamed` the name `name` (which must not
    /// exist).
    pub fn link_unnamed(&self, file: &File, name: &str) -> std::io::Result<()> {
        let target = cstring(name.as_bytes())?;
        let proc_path = cstring(format!("/proc/self/fd/{}", file.as_raw_fd()).as_bytes())?;
        // SAFETY: both paths are valid NUL-terminated strings, alive for
        // the call, and both descriptors are open. (Through /proc, linkat
        // needs no privilege.)
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc_path.as_ptr(),
                self.fd.as_raw_fd(),
                target.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let first = std::io::Error::last_os_error();
        // Without /proc: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH).
        // SAFETY: as above; "" with AT_EMPTY_PATH names the file's
        // descriptor itself.
        let r = unsafe {
            libc::linkat(
                file.as_raw_fd(),
                c"".as_ptr(),
                self.fd.as_raw_fd(),
                target.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(first)
        }
    }

    /// Whether files made by `create_unnamed` can be given a name here (it
    /// takes /proc, or a privilege): probed once per process, with a file
    /// that is named and removed at once.
    pub fn can_name_unnamed(&self) -> bool {
        use std::sync::atomic::AtomicU8;
        static WORKS: AtomicU8 = AtomicU8::new(0);
        match WORKS.load(Ordering::Relaxed) {
            1 => return true,
            2 => return false,
            _ => {}
        }
        let Ok(f) = self.create_unnamed() else {
            // The filesystem can not make unnamed files: the caller sees
            // that when it tries, and names its file at once.
            return true;
        };
        let name = format!(".probe-{}-{}", sys::getpid(), new_id());
        let works = self.link_unnamed(&f, &name).is_ok();
        if works {
            let _ = self.unlink(&name);
        }
        WORKS.store(if works { 1 } else { 2 }, Ordering::Relaxed);
        works
    }

    /// Make the directory's entries durable (after a link or rename).
    pub fn sync(&self) -> std::io::Result<()> {
        // SAFETY: fsync takes no pointers; our descriptor is open.
        if unsafe { libc::fsync(self.fd.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Remove an entry (a link is removed, never followed).
    pub fn unlink(&self, name: &str) -> std::io::Result<()> {
        let c = cstring(name.as_bytes())?;
        // SAFETY: c is a valid NUL-terminated string, alive for the call;
        // our descriptor is open.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Rename an entry over another, atomically.
    pub fn rename(&self, from: &str, to: &str) -> std::io::Result<()> {
        let a = cstring(from.as_bytes())?;
        let b = cstring(to.as_bytes())?;
        let fd = self.fd.as_raw_fd();
        // SAFETY: a and b are valid NUL-terminated strings, alive for the
        // call; both names are relative to our open directory.
        if unsafe { libc::renameat(fd, a.as_ptr(), fd, b.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Open the entry `path` of a store (its parent is the store directory)
/// as `Dir::open_file` does.
pub fn open_entry(path: &Path, how: How) -> Result<File> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
    else {
        return Err(Error::Store {
            message: format!("\"{}\" is not a file of a store", path.display()),
            hint: None,
        });
    };
    Dir::open(parent)?.open_file(name, how)
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c is a valid NUL-terminated string, alive for the call.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

/// The name of the object file `id` in its store directory.
pub fn object_file_name(id: &str) -> String {
    format!("{id}{OBJECT_SUFFIX}")
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
    // The low 64 bits of the wall clock in ns; hex formats an i64 as its
    // two's complement, so this is 16 hex digits even if it were negative.
    let now = crate::codec::now_ns();
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mix = (u64::from(sys::getpid()) << 32) ^ (c & 0xffff_ffff);
    format!("{now:016x}{mix:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
    fn prepare_makes_a_private_dir_and_never_changes_an_existing_one() {
        let base = std::env::temp_dir().join(format!("yaplr-store-test-{}", sys::getpid()));
        let dir = base.join("s");
        let store = Store::new(&dir);
        store.prepare().unwrap();
        let mode = fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // An existing directory nobody else can write to is used as it is.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        store.prepare().unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o755);
        // One its group can write to is refused, and left alone.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o2775)).unwrap();
        let err = store.prepare().unwrap_err();
        assert_eq!(err.kind(), "store");
        assert!(err.to_string().contains("mode 2775"), "{err}");
        assert!(err.to_string().contains("subdirectory"), "{err}");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o2775);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(store
            .prepare()
            .unwrap_err()
            .to_string()
            .contains("every user"));
        assert_eq!(store.check_owner().unwrap_err().kind(), "store");
        let file = base.join("f");
        fs::write(&file, b"x").unwrap();
        let err = Store::new(&file).prepare().unwrap_err();
        assert_eq!(err.kind(), "store");
        assert!(Store::new("relative/dir").prepare().is_err());
        assert_eq!(Store::new("/").prepare().unwrap_err().kind(), "store");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn entries_are_never_opened_through_links_nor_reused_from_others() {
        let dir = std::env::temp_dir().join(format!("yaplr-store-links-{}", sys::getpid()));
        let _ = fs::remove_dir_all(&dir);
        let store = Store::new(&dir);
        store.prepare().unwrap();
        let victim = std::env::temp_dir().join(format!("yaplr-victim-{}", sys::getpid()));
        fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(LOG_NAME)).unwrap();
        for how in [
            How::Read,
            How::Update,
            How::ReadWrite,
            How::Append,
            How::CreateNew,
        ] {
            let err = open_entry(&dir.join(LOG_NAME), how).unwrap_err();
            assert!(matches!(err.kind(), "store" | "io"), "{how:?}: {err}");
        }
        let err = open_entry(&dir.join(LOG_NAME), How::Append).unwrap_err();
        assert_eq!(err.kind(), "store");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let err = store.check_entries().unwrap_err();
        assert!(err.to_string().contains(LOG_NAME), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        fs::remove_file(dir.join(LOG_NAME)).unwrap();
        store.check_entries().unwrap();
        // A file of another user (only root can make one here).
        if sys::getuid() == 0 {
            let planted = dir.join(HELPER_LOCK_NAME);
            fs::write(&planted, b"").unwrap();
            std::os::unix::fs::chown(&planted, Some(65534), Some(65534)).unwrap();
            let err = open_entry(&planted, How::ReadWrite).unwrap_err();
            assert_eq!(err.kind(), "store");
            assert!(err.to_string().contains("uid 65534"), "{err}");
            assert!(err.to_string().contains(HELPER_LOCK_NAME), "{err}");
            assert_eq!(store.check_entries().unwrap_err().kind(), "store");
        }
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_file(&victim).unwrap();
    }
}
