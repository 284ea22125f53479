//! yaplrd, the helper: owns the catalog ((namespace, tag) -> object) of one store,
//! answers clients on a Unix socket, one thread per connection, and cleans
//! up after writers that died. Small objects live inline in its journal,
//! large ones in their own files; every change is journaled before it is
//! acknowledged. Exactly one runs per store, guaranteed by an
//! exclusive flock on the store's helper lock file.
//!
//! `serve` starts it; `catalog` holds the catalog and its journal,
//! `recovery` what it starts from and the sweep, `connection` the sockets;
//! each request's handler is in its module of `requests`. A serving helper
//! ends only through `exit`.

pub(crate) mod connection;

pub use crate::sys::log;

use crate::conn::Conn;
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::protocol::Response;
use crate::store::Store;
use crate::sys;
use crate::catalog::{lock_state, recovery, Catalog, Hub, Shared};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::sync::MutexGuard;
use std::time::Duration;

/// How often the helper looks for files left by dead writers.
const SWEEP_EVERY: Duration = Duration::from_secs(2);

/// Run the helper for `store` until a Quit request. Returns Ok(false) at
/// once when another helper already serves this store.
/// `ready` is called once the socket accepts connections, or when another
/// helper is found to serve the store, so a launcher can wait for either.
pub fn serve(store: Store, ready: impl FnOnce()) -> Result<bool> {
    store.prepare()?;
    store.check_entries()?;
    let Some(lock) = FileLock::try_lock(&store.helper_lock_path())? else {
        log("another helper already serves this store; exiting");
        ready();
        return Ok(false);
    };
    {
        let mut f = lock.file();
        let _ = f.set_len(0);
        let _ = writeln!(f, "{}", sys::getpid());
    }
    // Clients stop reading the index a dead helper left: what recovery
    // drops must not be read meanwhile.
    crate::index::Writer::close_existing(&store);
    let mut st = recovery::load(&store)?;
    st.coord = match crate::coord::Region::create(&store) {
        Ok(r) => Some(r),
        Err(e) => {
            log(&format!("could not make the coordination table: {e}"));
            None
        }
    };
    st.make_index();
    log(&format!(
        "serving {} with {} object(s)",
        store.dir().display(),
        st.objects.len()
    ));
    let (listener, sock_ino) = bind(&store)?;
    ready();
    let shared: Shared = Hub::new(st);
    start_sweeper(shared.clone(), sock_ino)?;
    connection::accept(&listener, &shared);
    drop(lock);
    Ok(true)
}

/// Listen on the store's socket; also returns its inode, by which the
/// sweeper knows the socket is still this helper's.
fn bind(store: &Store) -> Result<(UnixListener, u64)> {
    let sock = store.socket_path();
    let _ = std::fs::remove_file(&sock);
    // The socket is born private (no thread runs yet, so the process-wide
    // umask can be changed for this one call): no chmod through a path.
    // SAFETY: umask has no preconditions.
    let old_mask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(&sock);
    // SAFETY: as above.
    unsafe { libc::umask(old_mask) };
    let listener = bound.map_err(|e| Error::io(format!("binding {}", sock.display()), e))?;
    let sock_ino = std::fs::symlink_metadata(&sock)
        .map(|m| m.ino())
        .unwrap_or(0);
    Ok((listener, sock_ino))
}

/// Every SWEEP_EVERY, remove what dead writers left and hand back the
/// queue items of dead consumers; leave once the socket is gone.
fn start_sweeper(shared: Shared, sock_ino: u64) -> Result<()> {
    let sweeper = move || loop {
        std::thread::sleep(SWEEP_EVERY);
        let mut st = lock_state(&shared);
        // Without its socket nobody can reach this helper: it has been
        // replaced or its directory removed, so it leaves.
        let ours = std::fs::symlink_metadata(st.store.socket_path())
            .map(|m| m.ino() == sock_ino)
            .unwrap_or(false);
        if !ours {
            exit(st, Exit::SocketGone);
        }
        recovery::sweep(&st);
        // Queue items of consumers that died go back to their queues.
        let reclaimed = st.reclaim_leases(None);
        drop(st);
        match reclaimed {
            Ok(true) => shared.notify(),
            Ok(false) => {}
            Err(e) => log(&format!("could not hand back leased queue items: {e}")),
        }
    };
    std::thread::Builder::new()
        .name("yaplrd-sweep".into())
        .spawn(sweeper)
        .map(|_| ())
        .map_err(|e| Error::io("starting the sweep thread", e))
}

/// Why a serving helper ends.
pub(crate) enum Exit<'a> {
    /// Its socket was removed or replaced: nobody can reach it any more.
    SocketGone,
    /// A client asked it to; with `keep` the objects and the journal stay
    /// for the next helper. `answer` is told once the files are gone.
    Quit { keep: bool, answer: &'a Conn },
}

/// The one way a serving helper ends: say why, remove what the reason
/// calls for, answer a Quit, and exit with status 0. The catalog stays
/// locked (`st`) until the process is gone: no change is made meanwhile.
pub(crate) fn exit(mut st: MutexGuard<'_, Catalog>, why: Exit<'_>) -> ! {
    // Clients that map the index see it closed and ask the helper (or the
    // next one) from now on.
    st.close_index();
    match why {
        Exit::SocketGone => log("the socket was removed; exiting"),
        Exit::Quit { keep, answer } => {
            if keep {
                log(&format!("quitting; keeping {} object(s)", st.objects.len()));
                st.store.remove_runtime_files();
            } else {
                log(&format!(
                    "quitting; removing {} object(s)",
                    st.objects.len()
                ));
                // Clients that mapped the region see it closed, and let go
                // of it.
                if let Some(r) = &st.coord {
                    r.close();
                }
                st.store.remove_all();
            }
            let _ = connection::reply(answer, &Response::Ok, &[]);
        }
    }
    std::process::exit(0)
}
