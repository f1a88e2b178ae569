//! The init as a library embedded in a glibc program (this test binary):
//! `Init::run` runs in a forked child of the test, so that what it changes
//! in its process is never the test's, and that child reports what it sees.

mod common;

use common::*;
use init::{Init, Linux};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `f` in a forked child and returns its pid and exit code.
fn in_child(f: impl FnOnce() -> i32) -> (i32, i32) {
    // SAFETY: the child only runs `f` and _exits; what `f` allocates comes
    // from glibc's malloc, which its fork handlers leave usable in the child
    // of a multi-threaded parent.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(101);
        // SAFETY: ends the child without running the test harness's exit.
        unsafe { libc::_exit(code) };
    }
    let deadline = std::time::Instant::now() + LIMIT;
    let mut status = 0;
    loop {
        // SAFETY: a live int for the status of our own child.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            0 => {
                // SAFETY: our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the child still ran after {LIMIT:?}");
            }
            _ => break,
        }
    }
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    (pid, libc::WEXITSTATUS(status))
}

fn is_subreaper() -> bool {
    let mut on: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes an int through the pointer.
    unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut on as *mut libc::c_int) };
    on != 0
}

#[test]
fn run_puts_back_the_subreaper_mark_and_directory_it_changed() {
    // Not PID 1, the init marks itself a child subreaper so the workload's
    // orphans come to it, and moves to /. Once run returns, the embedding
    // program has neither changed: the README says the library installs
    // nothing.
    let scratch = Scratch::new("library");
    let report = scratch.path().join("orphan-parent");
    let script = format!(
        "(sh -c 'sleep 0.2; set -- $(cat /proc/$$/stat); echo $4 > {}' &); sleep 0.5",
        report.display()
    );
    let cwd = scratch.path().canonicalize().unwrap();
    let (pid, code) = in_child(|| {
        std::env::set_current_dir(&cwd).unwrap();
        if is_subreaper() {
            return 10;
        }
        let init = Init::new(["sh", "-c", script.as_str()]).verbosity(0);
        match init.run(&Linux) {
            Ok(code) if code.0 == 0 => {}
            _ => return 11,
        }
        if is_subreaper() {
            return 12;
        }
        if std::env::current_dir().ok() != Some(cwd.clone()) {
            return 13;
        }
        0
    });
    assert_eq!(
        code, 0,
        "10: marked before, 11: run failed, 12: still marked, 13: moved"
    );
    // The mark was set while it ran: the orphan's new parent was the child.
    let parent = std::fs::read_to_string(&report).unwrap();
    assert_eq!(parent.trim(), pid.to_string(), "the orphan's parent");
}

#[test]
fn a_script_without_a_shebang_runs_through_bin_sh_as_in_the_static_binary() {
    // glibc's execvp runs a file without `#!` with /bin/sh, musl's fails with
    // ENOEXEC: the init searches and execs itself, so the embedded library
    // and the static binary (static_binary.rs) both run it with /bin/sh.
    let scratch = Scratch::new("library-script");
    let script = scratch.path().join("no-shebang");
    std::fs::write(&script, "exit 7\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (_, code) = in_child(|| {
        let init = Init::new([script.to_str().unwrap()]).verbosity(0);
        init.run(&Linux).map_or(100, |code| i32::from(code.0))
    });
    assert_eq!(code, 7);
}
