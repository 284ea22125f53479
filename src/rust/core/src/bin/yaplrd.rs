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
    if daemon {
        // SAFETY: no threads exist yet; the parent only exits.
        match unsafe { libc::fork() } {
            -1 => fail(&format!("fork failed: {}", std::io::Error::last_os_error())),
            0 => {
                // SAFETY: plain syscall in the child.
                unsafe { libc::setsid() };
            }
            _ => std::process::exit(0),
        }
    }
    match server::serve(Store::new(dir)) {
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
