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

/// Runs `cmd` as a session leader with `slave` as its controlling terminal
/// and standard streams, as a container runtime does with `-t`.
fn on_terminal(cmd: &mut std::process::Command, slave: OwnedFd) {
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
    on_terminal(&mut cmd, slave);
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
    on_terminal(&mut cmd, slave);
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

/// Every line the terminal shows until the last slave descriptor closes.
fn all_lines(rx: &Receiver<String>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(LIMIT) {
        seen.push(line);
    }
    seen
}

/// Runs `program ARGS` on a new terminal as its session leader, as a
/// container runtime runs PID 1 with `-t`; returns its status and what the
/// terminal showed.
fn run_on_terminal(program: &std::path::Path, args: &[&str]) -> (Option<i32>, Vec<String>) {
    let (master, slave) = openpty();
    let mut cmd = command(program);
    cmd.args(args);
    on_terminal(&mut cmd, slave);
    let mut child = cmd.spawn().unwrap();
    let _guard = SessionGuard(child.id() as i32);
    drop(cmd);
    let rx = lines_of(master);
    let status = wait_limit(&mut child, LIMIT);
    (status.code(), all_lines(&rx))
}

/// `lines` as `&str`s, to compare with literals.
fn strs(lines: &[String]) -> Vec<&str> {
    lines.iter().map(String::as_str).collect()
}

#[test]
fn as_dumb_init_the_workload_gets_the_terminal() {
    // dumb-init's default: the workload leads a session of its own, and the
    // init hands it the terminal, so it can open /dev/tty and is the
    // terminal's foreground group (job control works in it). The SIGHUP and
    // SIGCONT that giving the terminal up sends the init are not forwarded.
    let scratch = Scratch::new("dumb-init-tty");
    let ours = scratch.init_as("dumb-init");
    let script = "trap 'echo got-hup' HUP; exec 3</dev/tty && echo tty-ok; \
                  set -- $(cat /proc/$$/stat); [ \"$8\" = \"$5\" ] && [ \"$6\" = $$ ] && echo foreground; \
                  sleep 0.2; echo done";
    let want = ["tty-ok", "foreground", "done"];
    let (code, lines) = run_on_terminal(&ours, &["sh", "-c", script]);
    assert_eq!((code, strs(&lines)), (Some(0), want.to_vec()));
    if let Some(real) = testkit::which("dumb-init") {
        let (code, lines) = run_on_terminal(&real, &["sh", "-c", script]);
        assert_eq!(
            (code, strs(&lines)),
            (Some(0), want.to_vec()),
            "the real one"
        );
    }
    if testkit::which("bash").is_some() {
        // bash -m says "no job control" when it cannot take the terminal.
        let (code, lines) = run_on_terminal(
            &ours,
            &["bash", "-m", "-c", "sleep 0.1 & fg >/dev/null; echo fg-ok"],
        );
        assert_eq!((code, strs(&lines)), (Some(0), vec!["fg-ok"]));
    }
}

#[test]
fn as_dumb_init_its_hand_off_debug_lines_match() {
    let Some(real) = testkit::require_tool("dumb-init") else {
        return;
    };
    let scratch = Scratch::new("dumb-init-tty-v");
    let ours = scratch.init_as("dumb-init");
    let lines = |program: &std::path::Path| {
        // The workload outlives the hand-off: dumb-init takes its pending
        // signals lowest first, so a child that exits at once would put
        // SIGCHLD (17) ahead of the hand-off's SIGCONT (18) and end the run
        // before SIGCONT is logged, by chance.
        let (code, lines) = run_on_terminal(program, &["-v", "sh", "-c", "sleep 0.3; exit 4"]);
        let mut lines: Vec<String> = lines
            .iter()
            .map(|l| {
                let digits = |c: char| c.is_ascii_digit();
                match l.split_once("PID ") {
                    Some((head, tail)) => format!("{head}PID N{}", tail.trim_start_matches(digits)),
                    None => l.clone(),
                }
            })
            .collect();
        lines.sort();
        (code, lines)
    };
    let want = lines(&real);
    assert!(
        want.1
            .iter()
            .any(|l| l == "[dumb-init] Ignoring tty hand-off signal 1."),
        "{want:?}"
    );
    assert_eq!(lines(&ours), want);
}
