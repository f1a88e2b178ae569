//! Test support shared by every crate: deciding whether a test that needs
//! root, namespaces or an outside tool can run here, and where the built
//! artifacts (static init, probe, images) are.
//!
//! A test that cannot run says so on stderr and returns; when the
//! environment variable [`STRICT_VAR`] is set (CI sets it), it panics instead,
//! so a skipped test can never pass CI unnoticed.

use std::path::{Path, PathBuf};

/// Set to `1` to turn every "cannot run here, skipped" into a failure.
pub const STRICT_VAR: &str = "CRADLE_TEST_STRICT";

/// True when skipped tests must fail instead.
pub fn strict() -> bool {
    std::env::var_os(STRICT_VAR).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Returns true when the test may go on. Otherwise reports why it cannot run
/// here and returns false, or panics when [`strict`] is set.
///
/// ```no_run
/// if !testkit::require(testkit::is_root(), "needs root to create namespaces") { return; }
/// ```
#[track_caller]
pub fn require(ok: bool, why: &str) -> bool {
    if ok {
        return true;
    }
    let at = std::panic::Location::caller();
    if strict() {
        panic!("{STRICT_VAR} is set but this test cannot run here ({at}): {why}");
    }
    eprintln!("SKIPPED ({at}): {why}; set {STRICT_VAR}=1 to make this a failure");
    false
}

/// True when running as uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The full path of `program` on `PATH`, if any.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Requires `program` on `PATH`; see [`require`].
#[track_caller]
pub fn require_tool(program: &str) -> Option<PathBuf> {
    let found = which(program);
    require(found.is_some(), &format!("`{program}` is not installed"))
        .then(|| found.expect("checked above"))
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit lives at tests/testkit")
        .to_path_buf()
}

/// The cargo target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// A built artifact under the target directory, made by a `cargo xtask`
/// command (`what` names it in the message). Returns None, after
/// [`require`], when it is missing.
#[track_caller]
pub fn require_artifact(relative: &str, made_by: &str) -> Option<PathBuf> {
    let path = target_dir().join(relative);
    require(
        path.exists(),
        &format!("`{}` is missing; `{made_by}` makes it", path.display()),
    )
    .then_some(path)
}

/// Fuzz targets' helpers: the number of cases and a per-case deadline.
pub mod fuzz {
    use std::sync::mpsc::{RecvTimeoutError, sync_channel};
    use std::time::Duration;

    /// A case running longer than this is a hang (the slack is for a
    /// machine busy with other tests).
    pub const DEADLINE: Duration = Duration::from_secs(5);

    /// `CRADLE_FUZZ_CASES` when set (a longer run by hand), else `default`
    /// (what CI runs).
    pub fn cases(default: u32) -> u32 {
        std::env::var("CRADLE_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(default)
    }

    /// `thread::spawn`, tried again for a while when the machine is out of
    /// threads for a moment (EAGAIN: other test suites share it).
    fn spawn_retrying(f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
        // A failed spawn drops its closure: `f` stays here until one starts.
        let f = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
        for _ in 0..50 {
            let mine = std::sync::Arc::clone(&f);
            let spawned = std::thread::Builder::new().spawn(move || {
                let f = mine.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(f) = f {
                    f();
                }
            });
            match spawned {
                Ok(handle) => return handle,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("spawning a thread: {e}"),
            }
        }
        panic!("spawning a thread: EAGAIN for 5 s")
    }

    /// Runs `case` on a thread of its own and returns what it returns; its
    /// panic is passed on, and it not returning within [`DEADLINE`] is one.
    pub fn within_deadline<T: Send + 'static>(case: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = sync_channel(1);
        let worker = spawn_retrying(move || {
            let _ = tx.send(case());
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(value) => {
                let _ = worker.join();
                value
            }
            Err(RecvTimeoutError::Disconnected) => match worker.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the case neither returned nor panicked"),
            },
            // The worker is left running: a thread cannot be stopped.
            Err(RecvTimeoutError::Timeout) => panic!("the case ran past {DEADLINE:?}: a hang"),
        }
    }
}
