//! The yaplrd command line, run as a user would.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use yaplr_core::client::{CallOptions, Client};
use yaplr_core::protocol::Meta;
use yaplr_core::store::Store;
use yaplr_core::sys;

const D: &str = yaplr_core::key::DEFAULT_NAMESPACE;
/// No yaplrd run by these tests may take longer than this.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_yaplrd"))
}

/// Run yaplrd with `args` and `--dir dir`; (exit status, stdout, stderr).
/// A run that outlives RUN_LIMIT is killed and fails the test.
fn yaplrd(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(exe());
    cmd.args(args).arg("--dir").arg(dir);
    run(cmd)
}

/// Output goes to files, not pipes: a helper started with --daemon keeps
/// its launcher's descriptors, and a pipe would never see end-of-file.
fn run(mut cmd: Command) -> (i32, String, String) {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let files =
        OutputFiles(["out", "err"].map(|s| {
            std::env::temp_dir().join(format!("yaplr-cli-{}-{n}.{s}", std::process::id()))
        }));
    let [out, err] = files.0.clone().map(|p| File::create(p).unwrap());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let [out, err] = files
        .0
        .clone()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned());
    (status.code().unwrap_or(-1), out, err)
}

struct OutputFiles([PathBuf; 2]);

impl Drop for OutputFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn opts(autostart: bool) -> CallOptions<'static> {
    CallOptions {
        timeout: Duration::from_secs(10),
        autostart,
        interrupted: &|| false,
    }
}

/// Wait until `cond` holds, or fail after 10 s.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `pid` is a live yaplrd (not a recycled pid of something else).
fn is_yaplrd(pid: u32) -> bool {
    sys::pid_alive(pid)
        && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "yaplrd")
}

/// The yaplrd processes (helpers or launchers) whose command line names `dir`.
fn yaplrd_pids(dir: &Path) -> Vec<u32> {
    let dir = dir.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if is_yaplrd(pid) && cmdline.split(|&b| b == 0).any(|a| a == dir) {
            pids.push(pid);
        }
    }
    pids
}

/// A store directory of one test. Dropping it ends every yaplrd that serves
/// it (waking a stopped one first) and removes the directory, even when an
/// assertion failed; tests check with `assert_clean` that nothing was left.
struct TempStore(PathBuf);

impl TempStore {
    fn new(name: &str) -> TempStore {
        let d = std::env::temp_dir().join(format!("yaplr-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        TempStore(d)
    }
    fn dir(&self) -> &Path {
        &self.0
    }
    fn client(&self) -> Client {
        Client::new(Store::new(&self.0), Some(exe().into()))
    }
    /// Start a helper as the R package does; returns its pid.
    fn start_helper(&self) -> u32 {
        let (code, _, err) = yaplrd(self.dir(), &["serve", "--daemon"]);
        assert_eq!(code, 0, "{err}");
        self.helper_pid().expect("a helper serves the store")
    }
    fn helper_pid(&self) -> Option<u32> {
        Store::new(&self.0)
            .helper_pid_from_lock()
            .filter(|&p| is_yaplrd(p))
    }
    fn kill_all(&self) {
        for pid in yaplrd_pids(&self.0).into_iter().chain(self.helper_pid()) {
            // A yaplrd of this test's store.
            let _ = sys::kill(pid, libc::SIGCONT);
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !yaplrd_pids(&self.0).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    fn assert_clean(&self) {
        assert_eq!(yaplrd_pids(&self.0), Vec::<u32>::new(), "helpers left");
        assert!(!self.0.exists(), "{} left behind", self.0.display());
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        self.kill_all();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn put(c: &mut Client, ns: &str, tag: &str, len: usize, description: Option<&str>) {
    let meta = Meta {
        description: description.map(String::from),
        ..Default::default()
    };
    c.put_inline(ns, tag, 1, vec![7; len], meta, &opts(false))
        .unwrap();
}

/// The one-line JSON error yaplrd prints on stdout with --json.
fn assert_json_error(out: &str, kind: &str) {
    let head = format!("{{\"error\":{{\"kind\":\"{kind}\",\"message\":\"");
    assert!(out.starts_with(&head), "{out}");
    assert!(out.ends_with("\"}}\n"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn status_list_info_rm_stop() {
    let store = TempStore::new("basic");
    let dir = store.dir();
    let (code, out, _) = yaplrd(dir, &["status"]);
    assert_eq!(code, 3);
    assert!(out.contains("no yaplr helper is running"), "{out}");
    let (code, _, err) = yaplrd(dir, &["list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no yaplr store"), "{err}");

    // Store two objects through the client library, as R would.
    let mut c = store.client();
    c.put_inline(
        D,
        "small \"one\"",
        1,
        vec![1, 2, 3],
        Default::default(),
        &opts(true),
    )
    .unwrap();
    put(&mut c, D, "two", 1500, None);

    let (code, out, _) = yaplrd(dir, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("objects: 2 (1.5 kB)"), "{out}");
    let (_, out, _) = yaplrd(dir, &["list"]);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    assert!(
        out.contains("small \"one\"") && out.contains("two"),
        "{out}"
    );
    let (_, out, _) = yaplrd(dir, &["list", "--json"]);
    assert!(
        out.starts_with("[{\"namespace\":\"default\",\"tag\":\"small \\\"one\\\"\""),
        "{out}"
    );
    let (_, out, _) = yaplrd(dir, &["info", "two"]);
    assert!(
        out.contains("\nsize:        1.5 kB (1500 bytes)\n"),
        "{out}"
    );
    assert!(out.contains("inline"), "{out}");
    let (code, _, err) = yaplrd(dir, &["info", "nope"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("no object is stored under tag \"nope\""),
        "{err}"
    );
    // Namespaces: list one or all; info and rm use "default" unless told.
    put(&mut c, "other", "two", 10, None);
    let (_, out, _) = yaplrd(dir, &["list", "--namespace", "other"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    let (_, out, _) = yaplrd(dir, &["info", "two", "--namespace", "other"]);
    assert!(out.contains("10 B"), "{out}");
    let (_, out, _) = yaplrd(dir, &["list"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    let (code, out, _) = yaplrd(dir, &["rm", "two"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed \"two\""), "{out}");
    let (code, _, err) = yaplrd(dir, &["rm"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = yaplrd(dir, &["stop", "--json"]);
    assert_eq!(
        (code, out.trim()),
        (0, "{\"stopped\":true,\"forced\":false}")
    );
    assert!(!dir.exists());
    let (code, out, _) = yaplrd(dir, &["status", "--json"]);
    assert_eq!(code, 3);
    assert!(out.starts_with("{\"running\":false"), "{out}");
    store.assert_clean();
}

#[test]
fn json_errors_go_to_stdout() {
    let store = TempStore::new("json");
    let dir = store.dir();
    let (code, out, err) = yaplrd(dir, &["info", "nope", "--json"]);
    assert_eq!(code, 1, "{err}");
    assert_json_error(&out, "store");
    assert!(out.contains("there is no yaplr store at"), "{out}");

    store.start_helper();
    let (code, out, _) = yaplrd(dir, &["info", "no \"such\" tag", "--json"]);
    assert_eq!(code, 1);
    assert_json_error(&out, "not_found");
    assert!(
        out.contains("no object is stored under tag \\\"no \\\"such\\\" tag\\\""),
        "{out}"
    );
    let (code, out, _) = yaplrd(dir, &["rm", "nope", "--json"]);
    assert_eq!(code, 1);
    assert_json_error(&out, "not_found");

    // Usage errors too, wherever --json is on the command line.
    for args in [
        &["--json", "rm"][..],
        &["bogus", "--json"],
        &["list", "--json", "--timeout", "soon"],
        &["list", "--timeout", "-1", "--json"],
        &["--json"],
    ] {
        let (code, out, _) = yaplrd(dir, args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert_json_error(&out, "usage");
    }
    // Without --json, errors stay on stderr only.
    let (code, out, err) = yaplrd(dir, &["bogus"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("unknown argument \"bogus\""), "{err}");

    let (code, _, _) = yaplrd(dir, &["stop"]);
    assert_eq!(code, 0);
    store.assert_clean();
}

#[test]
fn odd_arguments_are_refused_without_a_panic() {
    let store = TempStore::new("args");
    let dir = store.dir();
    for t in ["1e300", "1e19", "nan", "inf", "0"] {
        let (code, _, err) = yaplrd(dir, &["list", "--timeout", t]);
        assert_eq!(code, 2, "--timeout {t}: {err}");
        assert!(err.contains("--timeout needs"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // A tag that is not UTF-8 can not name an object.
    use std::os::unix::ffi::OsStrExt;
    let mut cmd = Command::new(exe());
    cmd.arg("info")
        .arg(std::ffi::OsStr::from_bytes(b"\xff"))
        .arg("--dir")
        .arg(dir);
    let (code, _, err) = run(cmd);
    assert_eq!(code, 2, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    store.assert_clean();
}

#[test]
fn control_characters_are_escaped_in_tables() {
    let store = TempStore::new("ctrl");
    let dir = store.dir();
    store.start_helper();
    let mut c = store.client();
    let evil = "evil\n\u{1b}[31mred\r\t\u{7}\u{9b}\u{202e}";
    put(&mut c, D, evil, 5, Some("line one\nline two\u{1b}[0m"));
    put(&mut c, "ns\n2", "plain", 3, None);
    put(&mut c, D, "caf\u{e9} \u{2615} \u{65e5}\u{672c}", 4, None);
    let escaped = "evil\\n\\x1b[31mred\\r\\t\\x07\\u{9b}\\u{202e}";

    let (code, out, err) = yaplrd(dir, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains(escaped), "{out}");
    assert!(out.contains("ns\\n2"), "{out}");
    // Printable UTF-8 stays as it is.
    assert!(out.contains("caf\u{e9} \u{2615} \u{65e5}\u{672c}"), "{out}");
    assert!(
        !out.chars()
            .any(|ch| (ch.is_control() && ch != '\n') || ch == '\u{202e}'),
        "{out:?}"
    );
    // The columns line up (in characters: the table has no wide ones).
    let col = |l: &str, what: &str| l.find(what).map(|i| l[..i].chars().count());
    let lines: Vec<&str> = out.lines().collect();
    let kind = col(lines[0], "KIND");
    assert!(kind.is_some(), "{out}");
    for l in &lines[1..] {
        assert_eq!(col(l, "R serialization"), kind, "{out}");
    }

    let (code, out, err) = yaplrd(dir, &["info", evil]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("\ntag:         {escaped}\n")),
        "{out}"
    );
    assert!(
        out.contains("description: line one\\nline two\\x1b[0m"),
        "{out}"
    );
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
    let (_, out, _) = yaplrd(dir, &["info", "plain", "--namespace", "ns\n2"]);
    assert!(out.contains("ns\\n2"), "{out}");
    // The exact text is in the JSON.
    let (_, out, _) = yaplrd(dir, &["info", evil, "--json"]);
    assert!(
        out.contains("\"tag\":\"evil\\n\\u001b[31mred\\r\\t\\u0007\\u009b\\u202e\""),
        "{out}"
    );
    // Error messages too.
    let (code, _, err) = yaplrd(dir, &["info", "x\u{1b}]0;title\u{7}"]);
    assert_eq!(code, 1);
    assert!(err.contains("x\\x1b]0;title\\x07"), "{err:?}");
    let (code, out, _) = yaplrd(dir, &["rm", evil]);
    assert_eq!(code, 0);
    assert!(out.contains(escaped), "{out:?}");

    let (code, _, _) = yaplrd(dir, &["stop"]);
    assert_eq!(code, 0);
    store.assert_clean();
}

#[test]
fn a_store_whose_helper_died_is_reported_not_restarted() {
    let store = TempStore::new("dead");
    let dir = store.dir();
    let pid = store.start_helper();
    let mut c = store.client();
    put(&mut c, D, "kept", 20, None);
    c.disconnect();
    let _ = sys::kill(pid, libc::SIGKILL);
    wait_until("the helper to die", || !sys::pid_alive(pid));
    assert!(dir.is_dir());

    let (code, out, err) = yaplrd(dir, &["status"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("no yaplr helper is running"), "{out}");
    assert!(out.contains("--start"), "{out}");
    let (code, out, _) = yaplrd(dir, &["status", "--json"]);
    assert_eq!(code, 3);
    assert!(out.starts_with("{\"running\":false,"), "{out}");
    for args in [&["list"][..], &["info", "kept"], &["rm", "kept"]] {
        let (code, out, err) = yaplrd(dir, args);
        assert_eq!((code, out.as_str()), (1, ""), "{args:?}");
        assert!(
            err.contains("no yaplr helper is running for the store") && err.contains("--start"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("options("), "{err}");
        assert!(!c.is_running().unwrap(), "{args:?} started a helper");
    }
    let (code, out, _) = yaplrd(dir, &["list", "--json"]);
    assert_eq!(code, 1);
    assert_json_error(&out, "no_server");
    assert!(!c.is_running().unwrap());

    // --start brings the kept objects back.
    let (code, out, err) = yaplrd(dir, &["list", "--start"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kept"), "{out}");
    assert!(c.is_running().unwrap());
    let (code, _, _) = yaplrd(dir, &["stop"]);
    assert_eq!(code, 0);
    store.assert_clean();
}

#[test]
fn start_refuses_a_directory_that_is_not_a_store() {
    let store = TempStore::new("notastore");
    let dir = store.dir();
    std::fs::create_dir(dir).unwrap();
    std::fs::write(dir.join("unrelated"), b"x").unwrap();
    let (code, _, err) = yaplrd(dir, &["list", "--start"]);
    assert_eq!(code, 1);
    assert!(err.contains("does not look like a yaplr store"), "{err}");
    assert!(!store.client().is_running().unwrap());
    assert!(!dir.join("yaplrd.lock").exists());
    std::fs::remove_dir_all(dir).unwrap();
    store.assert_clean();
}

#[test]
fn stop_force_ends_a_helper_that_does_not_answer() {
    let store = TempStore::new("stopped");
    let dir = store.dir();
    let pid = store.start_helper();
    put(&mut store.client(), D, "x", 10, None);
    // TempStore wakes and kills it whatever happens.
    let _ = sys::kill(pid, libc::SIGSTOP);
    wait_until("the helper to stop", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rfind(')')
            .is_some_and(|i| stat[i + 1..].trim_start().starts_with('T'))
    });

    // The CLI speaks of --timeout, not of R options.
    let (code, _, err) = yaplrd(dir, &["status", "--timeout", "0.5"]);
    assert_eq!(code, 1);
    assert!(err.contains("timed out after 0.5 s"), "{err}");
    assert!(err.contains("--timeout"), "{err}");
    assert!(!err.contains("options("), "{err}");

    let (code, out, err) = yaplrd(dir, &["stop", "--timeout", "0.5"]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(
        err.contains("--force") && err.contains("--timeout"),
        "{err}"
    );
    assert!(!err.contains("options("), "{err}");
    assert!(is_yaplrd(pid) && dir.is_dir());
    let (code, out, _) = yaplrd(dir, &["stop", "--timeout", "0.5", "--json"]);
    assert_eq!(code, 1);
    assert_json_error(&out, "timeout");
    assert!(out.contains("--force"), "{out}");

    let (code, out, err) = yaplrd(dir, &["stop", "--timeout", "0.5", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("(pid {pid})")) && out.contains("by signal"),
        "{out}"
    );
    assert!(!sys::pid_alive(pid));
    store.assert_clean();
}

#[test]
fn stop_force_is_quiet_about_a_helper_that_answers() {
    let store = TempStore::new("forceok");
    let dir = store.dir();
    store.start_helper();
    let (code, out, err) = yaplrd(dir, &["stop", "--force", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "{\"stopped\":true,\"forced\":false}");
    let (code, out, _) = yaplrd(dir, &["stop", "--force"]);
    assert_eq!(code, 0);
    assert!(out.contains("no yaplr helper was running"), "{out}");
    store.assert_clean();
}

#[test]
fn a_second_helper_on_a_served_store_fails() {
    let store = TempStore::new("second");
    let dir = store.dir();
    let pid = store.start_helper();
    let (code, out, err) = yaplrd(dir, &["serve"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains(&format!(
            "another helper (pid {pid}) already serves {}",
            dir.display()
        )),
        "{err}"
    );
    let (code, out, _) = yaplrd(dir, &["serve", "--json"]);
    assert_eq!(code, 1);
    assert_json_error(&out, "already_running");
    // The launcher the R package uses still succeeds: a helper serves.
    let (code, _, err) = yaplrd(dir, &["serve", "--daemon"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(store.helper_pid(), Some(pid));
    wait_until("one helper", || yaplrd_pids(dir) == vec![pid]);
    let (code, _, _) = yaplrd(dir, &["stop"]);
    assert_eq!(code, 0);
    store.assert_clean();
}

#[test]
fn concurrent_launchers_all_succeed_with_one_helper() {
    let store = TempStore::new("race");
    let dir = store.dir().to_path_buf();
    let launchers: Vec<_> = (0..4)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || yaplrd(&dir, &["serve", "--daemon"]))
        })
        .collect();
    for l in launchers {
        let (code, _, err) = l.join().unwrap();
        assert_eq!(code, 0, "{err}");
    }
    let pid = store.helper_pid().expect("a helper serves");
    wait_until("one helper", || yaplrd_pids(&dir) == vec![pid]);
    let (code, out, _) = yaplrd(&dir, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("(pid {pid})")), "{out}");
    let (code, _, _) = yaplrd(&dir, &["stop"]);
    assert_eq!(code, 0);
    store.assert_clean();
}

#[test]
fn verify_checks_every_object_and_names_the_damaged() {
    let t = TempStore::new("verify");
    t.start_helper();
    let mut c = t.client();
    put(&mut c, "default", "small", 100, None);
    let mut w =
        yaplr_core::object_file::ObjectWriter::create(c.store(), "default", "big", 1, 200_000)
            .unwrap();
    w.write(&[3u8; 200_000]).unwrap();
    let (id, _) = w.commit().unwrap();
    c.publish(
        "default",
        "big",
        &id,
        Meta::default(),
        Default::default(),
        &opts(false),
    )
    .unwrap();
    let (code, out, err) = yaplrd(t.dir(), &["verify"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 object(s) checked"), "{out}");
    assert!(out.contains(": 0 damaged"), "{out}");
    // Damage the large object's payload.
    let path = c.store().object_path(&id);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[0xff; 8], 2048 + 1000).unwrap();
    let (code, out, _) = yaplrd(t.dir(), &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("damaged: big (default)"), "{out}");
    assert!(out.contains(": 1 damaged"), "{out}");
    let (code, out, _) = yaplrd(t.dir(), &["verify", "--json"]);
    assert_eq!(code, 1);
    assert!(out.starts_with("{\"checked\":2,\"without_checksum\":0,\"damaged\":[{\"namespace\":\"default\",\"tag\":\"big\""), "{out}");
    let (code, _, _) = yaplrd(t.dir(), &["stop"]);
    assert_eq!(code, 0);
    drop(c);
    t.kill_all();
    t.assert_clean();
}
