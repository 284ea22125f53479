// TEMPORARY STUB, replaced by the real module.
use crate::error::{Error, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};
pub struct FileLock { file: File }
impl FileLock {
    pub fn try_lock(path: &Path) -> Result<Option<FileLock>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path).map_err(|e| Error::io("lock", e))?;
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 { return Ok(None); }
        Ok(Some(FileLock { file }))
    }
    pub fn lock(path: &Path, timeout: Duration, what: &str, interrupted: &dyn Fn() -> bool) -> Result<FileLock> {
        let d = Instant::now() + timeout;
        loop {
            if let Some(l) = Self::try_lock(path)? { return Ok(l); }
            if interrupted() { return Err(Error::Interrupted { waited_for: what.into() }); }
            if Instant::now() >= d { return Err(Error::Timeout { waited_for: what.into(), seconds: timeout.as_secs_f64() }); }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    pub fn is_held(path: &Path) -> Result<bool> {
        let Ok(file) = File::open(path) else { return Ok(false) };
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
        Ok(r != 0)
    }
    pub fn file(&self) -> &File { &self.file }
}
