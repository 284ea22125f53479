//! yaplrd: the helper process of a yaplr store. Started by the R package
//! (`yaplrd serve --dir DIR --daemon`); it can also be run by hand.

use yaplr_core::server;
use yaplr_core::store::{self, Store};

const USAGE: &str = "usage: yaplrd serve [--dir DIR] [--daemon]\n       yaplrd --version";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = std::env::var_os("YAPLR_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(store::default_dir);
    let mut daemon = false;
    let mut cmd = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => match it.next() {
                Some(d) => dir = d.into(),
                None => fail("--dir needs a directory"),
            },
            "--daemon" => daemon = true,
            "--version" | "-V" => {
                println!("yaplrd {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            "serve" if cmd.is_none() => cmd = Some("serve"),
            other => fail(&format!("unknown argument {other:?}")),
        }
    }
    if cmd != Some("serve") {
        fail("no command given");
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
    match server::serve(Store::new(dir), ready) {
        Ok(_) => {}
        Err(e) => {
            server::log(&format!("error: {e}"));
            std::process::exit(1);
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("yaplrd: {msg}\n{USAGE}");
    std::process::exit(2);
}
