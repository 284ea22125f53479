//! The command-line side of yaplrd, for people who find a yaplr store in
//! /dev/shm or in htop and want to know what it holds:
//! `yaplrd status|list|info TAG|rm TAG|stop [--dir DIR] [--json]`.
//! Its messages speak of command-line options, never of R options.

use crate::backend::{CallOptions, Key, Payload};
use crate::error::{Error, Hint, Result};
use crate::object_file::{KIND_R_SERIALIZED, KIND_R_VECTOR, KIND_SHARED_VECTOR};
use crate::progress::human_size;
use crate::protocol::Entry;
use crate::session::{Checked, Session};
use crate::store::Store;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Exit status of a failed command (the reason is on standard error, and
/// with --json on standard output too).
pub const EXIT_ERROR: i32 = 1;
/// Exit status of a command line that could not be understood.
pub const EXIT_USAGE: i32 = 2;
/// Exit status of `status` when no helper runs for the store.
pub const EXIT_NOT_RUNNING: i32 = 3;

pub struct Cli<'a> {
    pub dir: &'a Path,
    /// The namespace of `info` and `rm` (default "default"); `list` shows
    /// every namespace unless one is given.
    pub namespace: Option<&'a str>,
    pub json: bool,
    pub timeout: Duration,
    /// `list`, `info` and `rm` start a helper when the store has none
    /// (--start); otherwise they say that none runs.
    pub start: bool,
    /// `stop` ends a helper that does not answer by signal (--force).
    pub force: bool,
    /// This program, to start a helper.
    pub exe: Option<&'a Path>,
}

/// What a command prints on standard output, and its exit status.
pub struct Output {
    pub text: String,
    pub status: i32,
}

impl Output {
    fn ok(text: String) -> Output {
        Output { text, status: 0 }
    }
}

fn never() -> bool {
    false
}

/// "YYYY-MM-DD HH:MM:SS UTC" for nanoseconds since the epoch.
pub fn utc_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Characters that would move the cursor, drive the terminal or reorder
/// the line: C0 and C1 controls, DEL, line and paragraph separators, and
/// the bidirectional marks, embeddings, overrides and isolates.
fn is_unsafe_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` as it may be shown on a terminal: the characters above escaped
/// (`\n`, `\r`, `\t`, `\x1b`, `\u{202e}`), everything else, printable UTF-8
/// included, as it is. A tag then can not break a table or colour it.
pub fn terminal_text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() && is_unsafe_on_terminal(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Controls JSON requires escaped, and the ones a terminal would
            // act on when the JSON is shown there (all in the BMP).
            c if (c as u32) < 0x20 || is_unsafe_on_terminal(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The one line printed on standard output for an error with --json.
pub fn error_json(kind: &str, message: &str) -> String {
    format!(
        "{{\"error\":{{\"kind\":{},\"message\":{}}}}}",
        json_string(kind),
        json_string(message)
    )
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        KIND_R_SERIALIZED => "R serialization",
        KIND_R_VECTOR => "R vector (zero-copy)",
        KIND_SHARED_VECTOR => "shared vector",
        _ => "unknown",
    }
}

fn entry_json(e: &Entry, storage: Option<&str>) -> String {
    let mut s = format!(
        "{{\"namespace\":{},\"tag\":{},\"size\":{},\"ctime\":{},\"kind\":{}",
        json_string(&e.namespace),
        json_string(&e.tag),
        e.size,
        json_string(&utc_time(e.ctime_ns)),
        json_string(kind_name(e.kind))
    );
    if let Some(d) = &e.meta.description {
        let _ = write!(s, ",\"description\":{}", json_string(d));
    }
    if let Some(st) = storage {
        let _ = write!(s, ",\"storage\":{}", json_string(st));
    }
    s.push('}');
    s
}

/// A hint of the core in terms of this program's options and commands.
fn cli_advice(h: &Hint) -> String {
    match h {
        Hint::SetStore => "give a directory with --dir DIR".into(),
        Hint::OtherStore => "choose another with --dir DIR".into(),
        Hint::OwnStore => "choose a directory of your own with --dir DIR".into(),
        Hint::WritableStore => "choose a writable directory with --dir DIR".into(),
        Hint::ShorterStore => "choose a shorter one with --dir DIR".into(),
        Hint::PrivateStore { suggestion } => format!(
            "use a subdirectory that yaplr creates private, such as --dir {}, \
             or remove the write permission with chmod go-w",
            terminal_text(suggestion)
        ),
        Hint::RemovePlanted => "yaplr will not use this store until it is removed \
                                (check it first), or choose another store with --dir DIR"
            .into(),
        Hint::RemoveEntry => "remove it, or choose another store with --dir DIR".into(),
        Hint::RaiseCapacity => {
            "remove objects (yaplrd rm TAG) or raise the store's capacity".into()
        }
        Hint::LargerStore => "remove objects (yaplrd rm TAG) or choose a larger store".into(),
        Hint::Resend => "remove it with `yaplrd rm TAG` and send it again".into(),
        Hint::Overwrite => "allow overwriting to replace it".into(),
        Hint::StopHelper => "stop it with `yaplrd stop --force` (its objects are removed)".into(),
        Hint::RaiseTimeout => "wait longer with --timeout SEC".into(),
        Hint::StartHelper => "add --start to start one".into(),
    }
}

impl Cli<'_> {
    fn opts(&self, autostart: bool) -> CallOptions<'_> {
        CallOptions {
            timeout: self.timeout,
            autostart: autostart && self.exe.is_some(),
            interrupted: &never,
        }
    }

    fn ns(&self) -> &str {
        self.namespace.unwrap_or(crate::key::DEFAULT_NAMESPACE)
    }

    fn session(&self) -> Session {
        Session::local(self.dir.to_path_buf(), self.exe.map(Path::to_path_buf))
    }

    fn key(&self, tag: &str) -> Result<Key> {
        Key::new(self.ns(), tag)
    }

    fn dir_text(&self) -> String {
        terminal_text(&self.dir.display().to_string()).into_owned()
    }

    /// Whether the directory holds what a helper leaves: a journal, object
    /// files or its lock files. --start refuses anything else, as a helper
    /// would make the directory private (mode 0700) and fill it.
    fn looks_like_store(&self) -> bool {
        let store = Store::new(self.dir);
        self.dir.is_dir()
            && (self.dir.join(crate::store::JOURNAL_NAME).exists()
                || store.helper_lock_path().exists()
                || store.spawn_lock_path().exists()
                || store.object_ids().is_ok_and(|ids| !ids.is_empty()))
    }

    /// Connect to the store's helper; start one only with --start, and only
    /// for an existing store: its objects may be waiting for one after a
    /// crash. A helper that holds the store but does not listen yet (it is
    /// starting) is waited for.
    fn connect(&self, c: &mut Session, start: bool) -> Result<()> {
        if !self.dir.is_dir() {
            return Err(Error::Store {
                message: format!("there is no yaplr store at \"{}\"", self.dir.display()),
                hint: None,
            });
        }
        if start && !c.is_running()? && !self.looks_like_store() {
            return Err(Error::Store {
                message: format!(
                    "\"{}\" does not look like a yaplr store (no catalog journal, object or lock \
                     file); not starting a helper there",
                    self.dir.display()
                ),
                hint: None,
            });
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match c.connect(&self.opts(start)) {
                Err(Error::NoServer { .. }) if c.is_running()? => {
                    if Instant::now() >= deadline {
                        return Err(self.unreachable());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                r => return r,
            }
        }
    }

    /// A helper holds the store's lock but accepts no connection.
    fn unreachable(&self) -> Error {
        Error::Timeout {
            waited_for: format!(
                "the yaplr helper{} of \"{}\" to accept connections",
                Store::new(self.dir)
                    .helper_pid_from_lock()
                    .map(|p| format!(" (pid {p})"))
                    .unwrap_or_default(),
                self.dir.display()
            ),
            seconds: self.timeout.as_secs_f64(),
        }
    }

    /// What an error says on the command line: the facts of the core's
    /// message, with advice in terms of this program's options.
    pub fn message(&self, cmd: &str, e: &Error) -> String {
        match e {
            Error::Timeout {
                waited_for,
                seconds,
            } => {
                let mut m = format!(
                    "timed out after {seconds} s waiting for {waited_for}; wait longer with --timeout SEC"
                );
                if cmd == "stop" && !self.force {
                    m.push_str(
                        ", or end the helper by signal with --force (`yaplrd stop --force`; \
                         the store's objects are removed)",
                    );
                }
                m
            }
            Error::NoServer { .. } => format!(
                "no yaplr helper is running for the store \"{}\" (its helper may have died); \
                 add --start to start one, which serves the objects the store kept",
                self.dir.display()
            ),
            e => e.message_with(cli_advice),
        }
    }

    fn not_running(&self) -> Output {
        let dir = self.dir.display().to_string();
        let store = self.looks_like_store();
        let text = if self.json {
            format!(
                "{{\"running\":false,\"dir\":{},\"store\":{store}}}\n",
                json_string(&dir)
            )
        } else if store {
            format!(
                "no yaplr helper is running for {}; the store is there (its helper may have died): \
                 `yaplrd list --start` starts one\n",
                self.dir_text()
            )
        } else {
            format!("no yaplr helper is running for {}\n", self.dir_text())
        };
        Output {
            text,
            status: EXIT_NOT_RUNNING,
        }
    }

    /// Ask the helper to quit. Ok(false) when none holds the store; a
    /// helper that holds it without accepting connections is waited for.
    fn quit(&self, c: &mut Session) -> Result<bool> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match c.quit(false, false, &self.opts(false))? {
                false if c.is_running()? => {
                    if Instant::now() >= deadline {
                        return Err(self.unreachable());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                stopped => return Ok(stopped),
            }
        }
    }

    /// Run one command; returns what to print on standard output.
    pub fn run(&self, cmd: &str, arg: Option<&str>) -> Result<Output> {
        let mut c = self.session();
        let dir = self.dir_text();
        match (cmd, arg) {
            ("status", None) => {
                if !c.is_running()? {
                    return Ok(self.not_running());
                }
                match self.connect(&mut c, false) {
                    // It exited since.
                    Err(Error::NoServer { .. }) => return Ok(self.not_running()),
                    r => r?,
                }
                let i = c.info(&self.opts(false))?;
                Ok(Output::ok(if self.json {
                    format!(
                        "{{\"running\":true,\"dir\":{},\"pid\":{},\"objects\":{},\"bytes\":{},\"started\":{},\"version\":{}}}\n",
                        json_string(&i.dir),
                        i.pid,
                        i.objects,
                        i.bytes,
                        json_string(&utc_time(i.started_ns)),
                        json_string(&i.version)
                    )
                } else {
                    format!(
                        "yaplrd {} (pid {}) serves {}\n  objects: {} ({})\n  started: {}\n",
                        terminal_text(&i.version),
                        i.pid,
                        terminal_text(&i.dir),
                        i.objects,
                        human_size(i.bytes),
                        utc_time(i.started_ns)
                    )
                }))
            }
            ("list", None) => {
                self.connect(&mut c, self.start)?;
                let entries = c.list(self.namespace, &self.opts(self.start))?;
                if self.json {
                    let items: Vec<String> = entries.iter().map(|e| entry_json(e, None)).collect();
                    return Ok(Output::ok(format!("[{}]\n", items.join(","))));
                }
                if entries.is_empty() {
                    return Ok(Output::ok(format!("no objects in {dir}\n")));
                }
                let rows: Vec<(Cow<str>, Cow<str>, &Entry)> = entries
                    .iter()
                    .map(|e| (terminal_text(&e.namespace), terminal_text(&e.tag), e))
                    .collect();
                // In characters, as shown: escapes included. Longer texts
                // than 40 push the rest of their row.
                let width = |texts: &mut dyn Iterator<Item = &Cow<str>>, min: usize| {
                    texts
                        .map(|t| t.chars().count())
                        .max()
                        .unwrap_or(min)
                        .clamp(min, 40)
                };
                let nw = width(&mut rows.iter().map(|r| &r.0), 9);
                let tw = width(&mut rows.iter().map(|r| &r.1), 3);
                let mut out = format!(
                    "{:<nw$}  {:<tw$}  {:>9}  {:<23}  KIND\n",
                    "NAMESPACE", "TAG", "SIZE", "SENT"
                );
                for (ns, tag, e) in &rows {
                    let _ = writeln!(
                        out,
                        "{:<nw$}  {:<tw$}  {:>9}  {:<23}  {}",
                        ns,
                        tag,
                        human_size(e.size),
                        utc_time(e.ctime_ns),
                        kind_name(e.kind)
                    );
                }
                Ok(Output::ok(out))
            }
            ("info", Some(tag)) => {
                self.connect(&mut c, self.start)?;
                let found = c.get(&self.key(tag)?, &self.opts(self.start))?;
                let storage = match found.payload {
                    Payload::File(_) => "own file",
                    Payload::Bytes(_) => "inline in the journal",
                };
                let entry = found.entry;
                if self.json {
                    return Ok(Output::ok(format!(
                        "{}\n",
                        entry_json(&entry, Some(storage))
                    )));
                }
                let mut out = format!(
                    "namespace:   {}\ntag:         {}\nsize:        {} ({} bytes)\nsent:        {}\n\
                     kind:        {}\n",
                    terminal_text(&entry.namespace),
                    terminal_text(&entry.tag),
                    human_size(entry.size),
                    entry.size,
                    utc_time(entry.ctime_ns),
                    kind_name(entry.kind),
                );
                if let Some(d) = &entry.meta.description {
                    let _ = writeln!(out, "description: {}", terminal_text(d));
                }
                let _ = write!(out, "storage:     {storage}\nstore:       {dir}\n");
                Ok(Output::ok(out))
            }
            ("verify", None) => {
                self.connect(&mut c, self.start)?;
                let checked = c.verify(self.namespace, &self.opts(self.start))?;
                let damaged: Vec<&Checked> =
                    checked.iter().filter(|c| c.problem.is_some()).collect();
                let unchecked = checked.iter().filter(|c| !c.recorded).count();
                let status = if damaged.is_empty() { 0 } else { EXIT_ERROR };
                if self.json {
                    let items: Vec<String> = damaged
                        .iter()
                        .map(|d| {
                            format!(
                                "{{\"namespace\":{},\"tag\":{},\"problem\":{}}}",
                                json_string(&d.entry.namespace),
                                json_string(&d.entry.tag),
                                json_string(d.problem.as_deref().unwrap_or_default())
                            )
                        })
                        .collect();
                    return Ok(Output {
                        text: format!(
                            "{{\"checked\":{},\"without_checksum\":{unchecked},\"damaged\":[{}]}}\n",
                            checked.len(),
                            items.join(",")
                        ),
                        status,
                    });
                }
                let mut out = String::new();
                for d in &damaged {
                    let _ = writeln!(
                        out,
                        "damaged: {} ({}): {}",
                        terminal_text(&d.entry.tag),
                        terminal_text(&d.entry.namespace),
                        terminal_text(d.problem.as_deref().unwrap_or_default())
                    );
                }
                let _ = writeln!(
                    out,
                    "{} object(s) checked in {dir}: {} damaged{}",
                    checked.len(),
                    damaged.len(),
                    if unchecked > 0 {
                        format!(", {unchecked} written without a checksum (by an older yaplr)")
                    } else {
                        String::new()
                    }
                );
                Ok(Output { text: out, status })
            }
            ("rm", Some(tag)) => {
                self.connect(&mut c, self.start)?;
                c.remove(&self.key(tag)?, &self.opts(self.start))?;
                Ok(Output::ok(if self.json {
                    format!("{{\"removed\":{}}}\n", json_string(tag))
                } else {
                    format!("removed \"{}\" from {dir}\n", terminal_text(tag))
                }))
            }
            ("stop", None) => {
                // The pid from the lock file: asking a hung helper would
                // spend the whole timeout.
                let pid = if c.is_running()? {
                    Store::new(self.dir).helper_pid_from_lock()
                } else {
                    None
                };
                let (stopped, forced) = match self.quit(&mut c) {
                    Ok(stopped) => (stopped, false),
                    Err(Error::Timeout { .. }) if self.force => {
                        (c.quit(false, true, &self.opts(false))?, true)
                    }
                    Err(e) => return Err(e),
                };
                let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                Ok(Output::ok(match (self.json, stopped, forced) {
                    (true, s, f) => format!("{{\"stopped\":{s},\"forced\":{f}}}\n"),
                    (false, true, false) => format!(
                        "stopped the yaplr helper{pid} of {dir}; its objects were removed\n"
                    ),
                    (false, true, true) => format!(
                        "stopped the yaplr helper{pid} of {dir} by signal (it did not answer); \
                         its objects were removed\n"
                    ),
                    (false, false, _) if self.looks_like_store() => format!(
                        "no yaplr helper was running for {dir}; the store's files were left as \
                         they are (`yaplrd list --start` serves them again)\n"
                    ),
                    (false, false, _) => format!("no yaplr helper was running for {dir}\n"),
                }))
            }
            (other, _) => Err(Error::BadArgument(format!(
                "unknown command or missing argument: {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1500), "1.5 kB");
        assert_eq!(human_size(80_000_000), "80.0 MB");
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc_time(1_795_000_000_000_000_000),
            "2026-11-18 11:06:40 UTC"
        );
        assert_eq!(utc_time(951_782_400_000_000_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
        assert_eq!(json_string("\u{e9}"), "\"\u{e9}\"");
        assert_eq!(
            json_string("\u{7f}\u{9b}\u{202e}\u{2028}"),
            "\"\\u007f\\u009b\\u202e\\u2028\""
        );
        assert_eq!(
            error_json("usage", "no \"x\""),
            "{\"error\":{\"kind\":\"usage\",\"message\":\"no \\\"x\\\"\"}}"
        );
    }

    #[test]
    fn terminal_text_escapes_controls_only() {
        assert!(matches!(
            terminal_text("caf\u{e9} \u{65e5} a\\b"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            terminal_text("a\n\r\t\u{1b}[31m\u{7f}\u{85}\u{202e}\u{2066}z\u{200d}"),
            "a\\n\\r\\t\\x1b[31m\\x7f\\u{85}\\u{202e}\\u{2066}z\u{200d}"
        );
    }
}
