//! Shared by the process tests: running the init binary (directly, as a
//! subreaper child, or as PID 1 of new namespaces via `unshare`), reading
//! its output with timeouts, and scratch directories.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The init binary cargo built for these tests.
pub fn init_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_init"))
}

/// A command with a clean environment for messages: no RUST_BACKTRACE and
/// none of the variables the init reads.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for var in [
        "RUST_BACKTRACE",
        "CRADLE_GRACE",
        "CRADLE_LOG",
        "TINI_SUBREAPER",
        "TINI_VERBOSITY",
        "TINI_KILL_PROCESS_GROUP",
        "DUMB_INIT_SETSID",
        "DUMB_INIT_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Whether the init can be run as PID 1 of new namespaces here.
#[track_caller]
pub fn can_unshare() -> bool {
    testkit::require(
        testkit::is_root(),
        "needs root to create PID and mount namespaces",
    ) && testkit::require_tool("unshare").is_some()
}

/// `unshare --pid --fork --mount-proc INIT ARGS…`: the init as PID 1 of a
/// new PID and mount namespace with a fresh /proc.
pub fn as_pid1(args: &[&str]) -> Command {
    let mut cmd = command("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(init_bin())
        .args(args);
    cmd
}

/// What a finished run printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `cmd` to the end, killing it after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning");
    let out = drain(child.stdout.take().expect("piped"));
    let err = drain(child.stderr.take().expect("piped"));
    let status = wait_limit(&mut child, limit);
    Output {
        status,
        stdout: out.recv().unwrap_or_default(),
        stderr: err.recv().unwrap_or_default(),
        took: started.elapsed(),
    }
}

fn drain(mut r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = r.read_to_end(&mut s);
        let _ = tx.send(String::from_utf8_lossy(&s).into_owned());
    });
    rx
}

/// Waits for `child`, killing it (and failing) after `limit`.
pub fn wait_limit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running init whose stdout lines arrive on a channel.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawning");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line equal to `want`, failing after `limit`.
    pub fn expect_line(&mut self, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.seen.iter().any(|l| l == want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line `{want}` within {limit:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Waits for a line that `matches`, failing at `deadline`.
    pub fn expect_line_matching(&mut self, matches: impl Fn(&str) -> bool, deadline: Instant) {
        while !self.seen.iter().any(|l| matches(l)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no matching line in time; saw {:?}", self.seen),
            }
        }
    }

    /// The pid of the init itself: the child of `unshare`, or the process
    /// started when there is no `unshare` in front.
    pub fn init_pid(&self, through_unshare: bool) -> i32 {
        let me = self.child.id() as i32;
        if !through_unshare {
            return me;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().expect("a pid");
            }
            assert!(Instant::now() < deadline, "unshare started no child");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the end, collecting the remaining lines.
    pub fn finish(mut self, limit: Duration) -> (ExitStatus, Vec<String>) {
        let status = wait_limit(&mut self.child, limit);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status, self.seen)
    }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: no pointers; the pid is one of our test's processes.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A fresh scratch directory under the target dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = testkit::target_dir()
            .join("init-tests")
            .join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A symlink to the init named `name`, to pick a personality.
    pub fn init_as(&self, name: &str) -> PathBuf {
        let link = self.0.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(init_bin(), &link).expect("symlinking the init");
        link
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Processes whose command line contains `marker`.
pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// Replaces every run of digits after `(` or `:` in `text` with `N`, so two
/// runs' messages compare equal whatever their pids.
pub fn without_pids(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() && (prev == '(' || prev == ':' || prev == '[') {
            while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                chars.next();
            }
            out.push('N');
            prev = 'N';
            continue;
        }
        out.push(c);
        prev = c;
    }
    out
}

/// Kills every process of session `sid` when dropped, so that a test that
/// fails midway leaves nothing behind, stopped processes included.
pub struct SessionGuard(pub i32);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // Fields after the command: state, ppid, pgrp, session.
            let session = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(3));
            if session == Some(&self.0.to_string()) {
                // SAFETY: no pointers; a process of the test's own session.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}
