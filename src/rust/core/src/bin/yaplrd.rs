//! yaplrd: the helper process of a yaplr store, started by the R package
//! (`yaplrd serve --dir DIR --daemon`), and a command-line tool to look
//! into a store (`yaplrd list`, `status`, `info TAG`, `rm TAG`, `stop`).

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use yaplr_core::cli::{self, Cli, EXIT_ERROR, EXIT_USAGE};
use yaplr_core::format::default_dir;
use yaplr_core::helper::{self as server, Store};

const USAGE: &str = "\
usage: yaplrd COMMAND [--dir DIR] [--json] [--timeout SEC]

Commands on a yaplr store (default: $YAPLR_DIR, else /dev/shm/yaplr-<uid>):
  status      is a helper running? its pid, number of objects, bytes
  list        the stored objects: namespace, tag, size, when sent, kind
  info TAG    one object (of namespace \"default\" unless --namespace)
  rm TAG      remove one object (idem)
  verify      check every object (of --namespace, or all) against the
              checksum written with it; exit status 1 when one is damaged
  stop        stop the helper; it removes every object of the store
  serve       run the helper (the R package starts it with --daemon)

list, info, rm and verify ask the store's running helper. When none runs (it was
stopped, or died and left its objects in the store) they fail and say so,
unless given --start: then they start a helper, which serves the objects
the store kept.

Options:
  --dir DIR      the store directory
  --namespace NS the namespace (for list: only this one; default: all)
  --json         machine-readable output; an error is then also printed on
                 standard output, as {\"error\":{\"kind\":...,\"message\":...}}
  --timeout SEC  how long to wait for the helper (default 10)
  --start        list, info, rm, verify: start a helper if none runs
  --force        stop: end a helper that does not answer within --timeout
                 by signal (SIGTERM, then SIGKILL) and remove its files
  --version, --help

Tables show control characters in tags, namespaces and descriptions escaped
(\\n, \\x1b, \\u{202e}); --json gives the exact text.

Exit status: 0 done; 1 failed (the reason is on standard error); 2 the
command line is wrong; 3 `status` found no helper running. `serve` exits
with 1 when another helper already serves the store (with --daemon, 0: a
helper serves it).";

/// Longest --timeout: far beyond any useful wait, and small enough that a
/// deadline computed from it can not overflow.
const MAX_TIMEOUT: f64 = 1e9;

struct Args {
    cmd: String,
    arg: Option<String>,
    dir: PathBuf,
    daemon: bool,
    json: bool,
    namespace: Option<String>,
    timeout: Duration,
    start: bool,
    force: bool,
}

enum Action {
    Help,
    Version,
    Run(Args),
}

/// Whether --json is on the command line, so that even an error in
/// reading the command line is reported as JSON.
fn wants_json(args: &[OsString]) -> bool {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--json") => return true,
            Some("--dir" | "--namespace" | "-n" | "--timeout") => {
                it.next();
            }
            _ => {}
        }
    }
    false
}

fn parse(args: &[OsString]) -> Result<Action, String> {
    let mut a = Args {
        cmd: String::new(),
        arg: None,
        dir: std::env::var_os("YAPLR_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_dir),
        daemon: false,
        json: false,
        namespace: None,
        timeout: Duration::from_secs(10),
        start: false,
        force: false,
    };
    let mut it = args.iter();
    while let Some(os) = it.next() {
        let Some(s) = os.to_str() else {
            return Err(format!("argument {os:?} is not valid UTF-8"));
        };
        match s {
            "--dir" => match it.next() {
                Some(d) => a.dir = d.into(),
                None => return Err("--dir needs a directory".into()),
            },
            "--daemon" => a.daemon = true,
            "--json" => a.json = true,
            "--start" => a.start = true,
            "--force" => a.force = true,
            "--namespace" | "-n" => match it.next().and_then(|n| n.to_str()) {
                Some(n) if !n.is_empty() => a.namespace = Some(n.into()),
                _ => return Err("--namespace needs a name".into()),
            },
            "--timeout" => match it
                .next()
                .and_then(|t| t.to_str())
                .and_then(|t| t.trim().parse::<f64>().ok())
            {
                // NaN and infinities fail these comparisons too.
                Some(t) if t > 0.0 && t <= MAX_TIMEOUT => a.timeout = Duration::from_secs_f64(t),
                _ => {
                    return Err(format!(
                        "--timeout needs a positive number of seconds, at most {MAX_TIMEOUT}"
                    ))
                }
            },
            "--version" | "-V" => return Ok(Action::Version),
            "--help" | "-h" => return Ok(Action::Help),
            c @ ("serve" | "status" | "list" | "info" | "rm" | "stop" | "verify")
                if a.cmd.is_empty() =>
            {
                a.cmd = c.into()
            }
            other if !a.cmd.is_empty() && a.arg.is_none() && !other.starts_with("--") => {
                a.arg = Some(other.into())
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let cmd = a.cmd.as_str();
    if cmd.is_empty() {
        return Err("no command given".into());
    }
    if matches!(cmd, "info" | "rm") != a.arg.is_some() {
        return Err(format!(
            "`{cmd}` takes {}",
            if a.arg.is_some() {
                "no argument"
            } else {
                "a TAG"
            }
        ));
    }
    for (given, flag, applies) in [
        (
            a.start,
            "--start",
            matches!(cmd, "list" | "info" | "rm" | "verify"),
        ),
        (a.force, "--force", cmd == "stop"),
        (a.daemon, "--daemon", cmd == "serve"),
    ] {
        if given && !applies {
            return Err(format!("{flag} does not apply to `{cmd}`"));
        }
    }
    Ok(Action::Run(a))
}

/// Print without panicking when the reader went away (`yaplrd list | head`).
fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn print_err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// Report a failure: on standard error for people (control characters
/// escaped), and with --json also on standard output; then exit.
fn fail_with(json: bool, prefix: &str, kind: &str, message: &str, status: i32) -> ! {
    if json {
        print_out(&format!("{}\n", cli::error_json(kind, message)));
    }
    print_err(&format!("{prefix}: {}\n", cli::terminal_text(message)));
    if status == EXIT_USAGE && !json {
        print_err(&format!("{USAGE}\n"));
    }
    std::process::exit(status);
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let json = wants_json(&args);
    let a = match parse(&args) {
        Ok(Action::Run(a)) => a,
        Ok(Action::Help) => return print_out(&format!("{USAGE}\n")),
        Ok(Action::Version) => {
            return print_out(&format!("yaplrd {}\n", env!("CARGO_PKG_VERSION")))
        }
        Err(msg) => fail_with(json, "yaplrd", "usage", &msg, EXIT_USAGE),
    };
    let cmd = a.cmd.as_str();
    if cmd != "serve" {
        let exe = std::env::current_exe().ok();
        let cli = Cli {
            dir: &a.dir,
            namespace: a.namespace.as_deref(),
            json: a.json,
            timeout: a.timeout,
            start: a.start,
            force: a.force,
            exe: exe.as_deref(),
        };
        match cli.run(cmd, a.arg.as_deref()) {
            Ok(out) => {
                print_out(&out.text);
                std::process::exit(out.status);
            }
            Err(e) => fail_with(
                a.json,
                &format!("yaplrd {cmd}"),
                e.kind(),
                &cli.message(cmd, &e),
                EXIT_ERROR,
            ),
        }
    }
    let (dir, daemon) = (a.dir, a.daemon);
    // With --daemon the launcher's child exits only once the helper serves
    // (or found another helper serving), so whoever started it can connect
    // at once; a helper that fails to start makes it exit with status 1.
    let mut ready_fd: Option<libc::c_int> = None;
    if daemon {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: fds has room for the two descriptors.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            fail_with(
                a.json,
                "yaplrd serve",
                "io",
                &format!("pipe failed: {}", std::io::Error::last_os_error()),
                EXIT_ERROR,
            );
        }
        // SAFETY: no threads exist yet.
        match unsafe { libc::fork() } {
            -1 => fail_with(
                a.json,
                "yaplrd serve",
                "io",
                &format!("fork failed: {}", std::io::Error::last_os_error()),
                EXIT_ERROR,
            ),
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
    match server::serve(Store::new(&dir), ready) {
        Ok(true) => {}
        // Another helper holds the store. The launcher of --daemon has
        // already exited with 0 (`ready` ran): the store is served, which
        // is what whoever started it waits for, even when several sessions
        // raced to start a helper. Run by hand, it is an error.
        Ok(false) if daemon => {}
        Ok(false) => {
            let pid = other_helper_pid(&Store::new(&dir), a.timeout);
            fail_with(
                a.json,
                "yaplrd serve",
                "already_running",
                &format!(
                    "another helper{} already serves {}",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                    dir.display()
                ),
                EXIT_ERROR,
            );
        }
        Err(e) => {
            server::log(&format!("error: {e}"));
            std::process::exit(EXIT_ERROR);
        }
    }
}

/// The pid of the helper that holds the store. It writes its pid just
/// after taking the lock, so give it a moment to.
fn other_helper_pid(store: &Store, timeout: Duration) -> Option<u32> {
    let deadline = Instant::now() + timeout.min(Duration::from_secs(1));
    loop {
        let pid = store.helper_pid_from_lock();
        if pid.is_some() || Instant::now() >= deadline {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(5));
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
