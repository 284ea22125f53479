//! The yaplrd command line, run as a user would.

use std::path::{Path, PathBuf};
use std::process::Command;

const D: &str = yaplr_core::object_file::DEFAULT_NAMESPACE;

fn yaplrd(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_yaplrd"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("yaplr-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Stops the store's helper and removes it even when an assertion fails.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = yaplrd(&self.0, &["stop"]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn status_list_info_rm_stop() {
    let dir = temp_dir();
    let _cleanup = Cleanup(dir.clone());
    let (code, out, _) = yaplrd(&dir, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("no yaplr helper is running"), "{out}");
    let (code, _, err) = yaplrd(&dir, &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no yaplr store"), "{err}");

    // Store two objects through the client library, as R would.
    use yaplr_core::client::{CallOptions, Client};
    let exe = Path::new(env!("CARGO_BIN_EXE_yaplrd"));
    let no = || false;
    let opts = CallOptions {
        timeout: std::time::Duration::from_secs(10),
        autostart: true,
        helper_exe: Some(exe),
        interrupted: &no,
    };
    let mut c = Client::new(yaplr_core::store::Store::new(&dir));
    c.put_inline(
        D,
        "small \"one\"",
        1,
        vec![1, 2, 3],
        Default::default(),
        &opts,
    )
    .unwrap();
    c.put_inline(D, "two", 1, vec![0; 1500], Default::default(), &opts)
        .unwrap();

    let (code, out, _) = yaplrd(&dir, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("objects: 2 (1.5 kB)"), "{out}");
    let (_, out, _) = yaplrd(&dir, &["list"]);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    assert!(
        out.contains("small \"one\"") && out.contains("two"),
        "{out}"
    );
    let (_, out, _) = yaplrd(&dir, &["list", "--json"]);
    assert!(
        out.starts_with("[{\"namespace\":\"default\",\"tag\":\"small \\\"one\\\"\""),
        "{out}"
    );
    let (_, out, _) = yaplrd(&dir, &["info", "two"]);
    assert!(out.contains("size:      1.5 kB (1500 bytes)"), "{out}");
    assert!(out.contains("inline"), "{out}");
    let (code, _, err) = yaplrd(&dir, &["info", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no object is stored under tag \"nope\""),
        "{err}"
    );
    // Namespaces: list one or all; info and rm use "default" unless told.
    c.put_inline("other", "two", 1, vec![7; 10], Default::default(), &opts)
        .unwrap();
    let (_, out, _) = yaplrd(&dir, &["list", "--namespace", "other"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = yaplrd(&dir, &["info", "two", "--namespace", "other"]);
    assert!(out.contains("10 B"), "{out}");
    let (_, out, _) = yaplrd(&dir, &["list"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    let (code, out, _) = yaplrd(&dir, &["rm", "two"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed \"two\""), "{out}");
    let (code, _, err) = yaplrd(&dir, &["rm"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = yaplrd(&dir, &["stop", "--json"]);
    assert_eq!((code, out.trim()), (0, "{\"stopped\":true}"));
    assert!(!dir.exists());
    let (_, out, _) = yaplrd(&dir, &["status", "--json"]);
    assert!(out.starts_with("{\"running\":false"), "{out}");
}
