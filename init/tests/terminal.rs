//! Through a real pseudo-terminal: the workload gets the foreground process
//! group, so it reads the terminal and changes its modes without SIGTTIN or
//! SIGTTOU stopping it, and Ctrl-Z and Ctrl-C reach it.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// A pty pair: (master, slave).
fn openpty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: two live ints; no name, termios or window size.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh descriptors we now own.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    }
}

/// Lines the terminal shows, `\r` stripped.
fn lines_of(mut master: std::fs::File) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut pending = Vec::new();
        let mut buf = [0u8; 512];
        // EIO once the last slave descriptor closes.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending
                    .drain(..=end)
                    .filter(|b| *b != b'\r' && *b != b'\n')
                    .collect();
                if tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    rx
}

/// Waits for a line `want`, maybe after an interactive shell's `$ ` prompt.
fn expect(rx: &Receiver<String>, want: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + LIMIT;
    while !seen
        .iter()
        .any(|l| l.strip_prefix("$ ").unwrap_or(l) == want)
    {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the terminal never showed `{want}`; it showed {seen:?}"),
        }
    }
}

#[test]
fn workload_owns_the_terminal_and_job_control_reaches_it() {
    if !can_unshare() {
        return;
    }
    let (master, slave) = openpty();
    let writer = master.try_clone().unwrap();
    let script = "set -- $(cat /proc/$$/stat); [ \"$5\" = \"$8\" ] && [ \"$5\" = $$ ] && echo foreground; \
                  stty -echo; echo ready; read line; echo got:$line; \
                  trap 'echo tstp' TSTP; trap 'echo int; exit 9' INT; echo armed; \
                  while :; do :; done";
    // The session leader with the terminal as its controlling one, as a
    // container runtime makes it with `-t`; the init runs as PID 1 below it.
    let mut cmd = as_pid1(&["--", "sh", "-c", script]);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let _guard = SessionGuard(child.id() as i32);
    drop(cmd);
    let rx = lines_of(master);
    let mut seen = Vec::new();
    let mut writer = writer;
    expect(&rx, "ready", &mut seen);
    assert!(
        seen.iter().any(|l| l == "foreground"),
        "the workload's group is the terminal's foreground: {seen:?}"
    );
    writer.write_all(b"hello\n").unwrap();
    expect(&rx, "got:hello", &mut seen);
    expect(&rx, "armed", &mut seen);
    writer.write_all(b"\x1a").unwrap(); // Ctrl-Z: SIGTSTP to the foreground group
    expect(&rx, "tstp", &mut seen);
    writer.write_all(b"\x03").unwrap(); // Ctrl-C: SIGINT to the foreground group
    expect(&rx, "int", &mut seen);
    let status = wait_limit(&mut child, LIMIT);
    assert_eq!(status.code(), Some(9), "{seen:?}");
}

#[test]
fn ctrl_z_from_an_interactive_shell_stops_the_init_with_its_workload_and_fg_resumes_both() {
    // Outside a container: an interactive shell runs the init as a job.
    // Ctrl-Z stops the workload (it has the terminal); the init must stop
    // too, or the shell would wait for it for ever. `fg` resumes both.
    let (master, slave) = openpty();
    let mut writer = master.try_clone().unwrap();
    let mut cmd = command("sh");
    cmd.args(["-i", "-m"])
        .env("PS1", "$ ")
        .env("ENV", "/dev/null");
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut shell = cmd.spawn().unwrap();
    let _guard = SessionGuard(shell.id() as i32);
    drop(cmd);
    let rx = lines_of(master);
    let mut seen = Vec::new();
    // The workload says when it runs again, so Ctrl-C is not typed before
    // `fg` has given it the terminal back (a fixed sleep was flaky under
    // load). It loops without forking: dash vforks its commands, and a
    // parent waiting on a vfork child that Ctrl-Z stopped before its exec
    // does not stop itself, so the init would see nothing to follow.
    let line = format!(
        "{} -- sh -c 'trap \"echo resumed\" CONT; echo started; while :; do :; done'\n",
        init_bin().display()
    );
    writer.write_all(line.as_bytes()).unwrap();
    expect(&rx, "started", &mut seen);
    writer.write_all(b"\x1a").unwrap(); // Ctrl-Z
    writer.write_all(b"echo back-in-shell\n").unwrap();
    expect(&rx, "back-in-shell", &mut seen);
    writer.write_all(b"fg\n").unwrap();
    expect(&rx, "resumed", &mut seen);
    writer.write_all(b"\x03").unwrap(); // Ctrl-C: only a resumed workload can die of it
    writer.write_all(b"echo status=$?\n").unwrap();
    expect(&rx, "status=130", &mut seen);
    writer.write_all(b"exit\n").unwrap();
    let status = wait_limit(&mut shell, LIMIT);
    assert!(status.success(), "{seen:?}");
}
