//! yaplrd: the helper process of a yaplr store, started by the R package
//! (`yaplrd serve --dir DIR --daemon`), and a command-line tool to look
//! into a store (`yaplrd list`, `status`, `info TAG`, `rm TAG`, `stop`).

use std::time::Duration;
use yaplr_core::cli::{self, Cli};
use yaplr_core::server;
use yaplr_core::store::{self, Store};

const USAGE: &str = "\
usage: yaplrd COMMAND [--dir DIR] [--json]

Commands on a yaplr store (default: $YAPLR_DIR, else /dev/shm/yaplr-<uid>):
  status      is a helper running? its pid, number of objects, bytes
  list        the stored objects: namespace, tag, size, when sent, kind
  info TAG    one object (of namespace \"default\" unless --namespace)
  rm TAG      remove one object (idem)
  stop        stop the helper; it removes every object of the store
  serve       run the helper (the R package starts it with --daemon)

Options:
  --dir DIR      the store directory
  --namespace NS the namespace (for list: only this one; default: all)
  --json         machine-readable output
  --timeout SEC  how long to wait for the helper (default 10)
  --version, --help";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = std::env::var_os("YAPLR_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(store::default_dir);
    let mut daemon = false;
    let mut json = false;
    let mut namespace: Option<String> = None;
    let mut timeout = 10.0;
    let mut cmd: Option<&str> = None;
    let mut arg: Option<&str> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => match it.next() {
                Some(d) => dir = d.into(),
                None => fail("--dir needs a directory"),
            },
            "--daemon" => daemon = true,
            "--json" => json = true,
            "--namespace" | "-n" => match it.next() {
                Some(n) if !n.is_empty() => namespace = Some(n.clone()),
                _ => fail("--namespace needs a name"),
            },
            "--timeout" => match it.next().and_then(|t| t.parse::<f64>().ok()) {
                Some(t) if t > 0.0 && t.is_finite() => timeout = t,
                _ => fail("--timeout needs a positive number of seconds"),
            },
            "--version" | "-V" => {
                println!("yaplrd {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            c @ ("serve" | "status" | "list" | "info" | "rm" | "stop") if cmd.is_none() => {
                cmd = Some(c)
            }
            other if cmd.is_some() && arg.is_none() && !other.starts_with("--") => {
                arg = Some(other)
            }
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    let Some(cmd) = cmd else {
        fail("no command given")
    };
    if cmd != "serve" {
        if matches!(cmd, "info" | "rm") != arg.is_some() {
            fail(&format!(
                "`{cmd}` takes {}",
                if arg.is_some() {
                    "no argument"
                } else {
                    "a TAG"
                }
            ));
        }
        let exe = std::env::current_exe().ok();
        let cli = Cli {
            dir: &dir,
            namespace: namespace.as_deref(),
            json,
            timeout: Duration::from_secs_f64(timeout),
            exe: exe.as_deref(),
        };
        match cli.run(cmd, arg) {
            Ok(out) => {
                print!("{out}");
                return;
            }
            Err(e) => {
                // A tag in the message must not drive the terminal.
                eprintln!("yaplrd {cmd}: {}", cli::terminal_text(&e.to_string()));
                std::process::exit(1);
            }
        }
    }
    // With --daemon the launcher's child exits only once the helper serves
    // (or found another helper serving), so whoever started it can connect
    // at once; a helper that fails to start makes it exit with status 1.
    let mut ready_fd: Option<libc::c_int> = None;
    if daemon {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds has room for the two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            fail(&format!("pipe failed: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: no threads exist yet.
        match unsafe { libc::fork() } {
            -1 => fail(&format!("fork failed: {}", std::io::Error::last_os_error())),
            0 => {
                // SAFETY: plain syscalls on descriptors we own.
                unsafe {
                    libc::close(fds[0]);
                    libc::setsid();
                }
                ready_fd = Some(fds[1]);
            }
            _ => {
                let mut b = [0u8; 1];
                // SAFETY: closing our copy of the write end, then reading one
                // byte into b; EOF means the helper died before it was ready.
                let n = unsafe {
                    libc::close(fds[1]);
                    loop {
                        let n = libc::read(fds[0], b.as_mut_ptr() as *mut libc::c_void, 1);
                        if n >= 0
                            || std::io::Error::last_os_error().kind()
                                != std::io::ErrorKind::Interrupted
                        {
                            break n;
                        }
                    }
                };
                std::process::exit(if n == 1 { 0 } else { 1 });
            }
        }
    }
    let ready = move || {
        if let Some(fd) = ready_fd {
            // SAFETY: writing one byte to, then closing, our pipe end.
            unsafe {
                libc::write(fd, b"R".as_ptr() as *const libc::c_void, 1);
                libc::close(fd);
            }
        }
    };
    raise_fd_limit();
    match server::serve(Store::new(dir), ready) {
        Ok(_) => {}
        Err(e) => {
            server::log(&format!("error: {e}"));
            std::process::exit(1);
        }
    }
}

/// One descriptor per client connection and per looked-up object: take the
/// hard limit rather than the usual soft 1024.
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a plain struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("yaplrd: {msg}\n{USAGE}");
    std::process::exit(2);
}
