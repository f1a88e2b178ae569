//! The init as a supervisor of several services, as PID 1 of new PID and
//! mount namespaces: definitions in `--services DIR`, the s6-overlay layout
//! under `--root DIR`, the control socket (`CRADLE_CTL_SOCKET`).

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

/// A scratch directory with `services/` and a control socket path.
struct Setup {
    scratch: Scratch,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let scratch = Scratch::new(name);
        std::fs::create_dir(scratch.path().join("services")).unwrap();
        Setup { scratch }
    }

    fn dir(&self) -> &Path {
        self.scratch.path()
    }

    fn services(&self) -> String {
        self.dir().join("services").display().to_string()
    }

    fn socket(&self) -> String {
        self.dir().join("ctl.sock").display().to_string()
    }

    fn log(&self) -> String {
        self.dir().join("log").display().to_string()
    }

    fn define(&self, name: &str, toml: &str) {
        std::fs::write(
            self.dir().join("services").join(format!("{name}.toml")),
            toml,
        )
        .unwrap();
    }

    fn logged(&self) -> Vec<String> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The init as PID 1 with these services and `workload`.
    fn init(&self, workload: &[&str]) -> std::process::Command {
        let services = self.services();
        let mut args = vec!["--services", services.as_str()];
        if !workload.is_empty() {
            args.push("--");
            args.extend(workload);
        }
        let mut cmd = as_pid1(&args);
        cmd.env("CRADLE_CTL_SOCKET", self.socket());
        cmd
    }

    /// Lets other users reach the scratch directory (search permission on
    /// the way to it), for services and clients that are not root.
    fn open_to_others(&self) {
        use std::os::unix::fs::PermissionsExt;
        let mut dir = self.dir().to_path_buf();
        while dir.pop() {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            if mode & 0o001 == 0 {
                let _ =
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o001));
            }
            if dir == testkit::target_dir() {
                break;
            }
        }
        std::fs::set_permissions(self.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = command(init_bin());
        cmd.arg("ctl")
            .args(args)
            .env("CRADLE_CTL_SOCKET", self.socket());
        run(&mut cmd, LIMIT)
    }
}

/// A TOML array of strings for `sh -c SCRIPT`.
fn sh(script: &str) -> String {
    format!("[\"sh\", \"-c\", {script:?}]")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `done` holds, failing after `limit`.
fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn starts_in_dependency_order_with_each_readiness_kind() {
    if !can_unshare() || testkit::require_tool("socat").is_none() {
        return;
    }
    let s = Setup::new("svc-order");
    let log = s.log();
    let port = free_port();
    // Each becomes ready only a while after it starts: a dependent started
    // early would log its start before the line that says ready.
    s.define(
        "a",
        &format!(
            "command = {}\nready = {{ fd = 3 }}\n",
            sh(&format!(
                "echo a start >> {log}; sleep 0.3; echo a ready >> {log}; echo >&3; exec sleep 1000"
            ))
        ),
    );
    s.define(
        "b",
        &format!(
            "command = {}\ndepends_on = [\"a\"]\nready = {{ notify = true }}\n",
            sh(&format!(
                "echo b start >> {log}; sleep 0.3; echo b ready >> {log}; \
                 printf 'STATUS=up\\nREADY=1\\n' | socat - UNIX-SENDTO:$NOTIFY_SOCKET; exec sleep 1000"
            ))
        ),
    );
    s.define(
        "c",
        &format!(
            "command = {}\ndepends_on = [\"b\"]\nready = {{ tcp = {port} }}\n",
            sh(&format!(
                "echo c start >> {log}; sleep 0.3; echo c ready >> {log}; \
                 exec socat TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork SYSTEM:true"
            ))
        ),
    );
    let flag = s.dir().join("d-ready").display().to_string();
    s.define(
        "d",
        &format!(
            "command = {}\ndepends_on = [\"c\", \"setup\"]\nready = {{ command = [\"test\", \"-e\", {flag:?}] }}\n",
            sh(&format!(
                "echo d start >> {log}; sleep 0.3; echo d ready >> {log}; touch {flag}; exec sleep 1000"
            ))
        ),
    );
    s.define(
        "setup",
        &format!(
            "type = \"oneshot\"\ncommand = {}\n",
            sh(&format!(
                "echo setup start >> {log}; sleep 0.2; echo setup ready >> {log}"
            ))
        ),
    );
    let out = run(
        &mut s.init(&["sh", "-c", &format!("echo main >> {log}")]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    let logged = s.logged();
    let pos = |line: &str| {
        logged
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| panic!("no `{line}` in {logged:?}"))
    };
    for (before, after) in [
        ("a ready", "b start"),
        ("b ready", "c start"),
        ("c ready", "d start"),
        ("setup ready", "d start"),
        ("d ready", "main"),
    ] {
        assert!(pos(before) < pos(after), "{before} / {after}: {logged:?}");
    }
    assert_eq!(
        logged.last().map(String::as_str),
        Some("main"),
        "{logged:?}"
    );
}

#[test]
fn notify_readiness_works_for_a_service_of_another_user() {
    if !can_unshare() || testkit::require_tool("socat").is_none() {
        return;
    }
    let s = Setup::new("svc-notify-user");
    s.open_to_others();
    s.define(
        "n",
        "command = [\"sh\", \"-c\", \"printf READY=1 | socat - UNIX-SENDTO:$NOTIFY_SOCKET; exec sleep 1000\"]\n\
         user = \"nobody\"\nready = { notify = true }\n",
    );
    let out = run(&mut s.init(&["true"]), Duration::from_secs(15));
    assert_eq!(out.code(), Some(0), "{out:?}");
}

#[test]
fn a_crash_loop_backs_off_then_fails_the_container_when_critical() {
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-crash");
    let log = s.log();
    s.define(
        "crash",
        &format!(
            "command = {}\nrestart = \"always\"\ncritical = true\nrestart_limit = 4\n",
            sh(&format!("date +%s%N >> {log}; exit 3"))
        ),
    );
    let out = run(&mut s.init(&["sleep", "100"]), LIMIT);
    assert_eq!(
        out.code(),
        Some(3),
        "the critical service's status: {out:?}"
    );
    assert!(out.took < Duration::from_secs(20), "{out:?}");
    assert!(
        out.stderr.contains("service `crash` is critical"),
        "{out:?}"
    );
    let starts: Vec<u128> = s.logged().iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(starts.len(), 5, "a first run and 4 restarts: {starts:?}");
    let gaps: Vec<u128> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .collect();
    // At once, then 100, 200, 400 ms.
    // (Each gap also holds a shell's start, longer on a loaded machine.)
    assert!(gaps[0] < 100, "the first restart is at once: {gaps:?}");
    for (gap, least) in gaps[1..].iter().zip([100, 200, 400]) {
        assert!(
            *gap >= least - 5 && *gap < least * 2 + 200,
            "backoff doubles from 100 ms: {gaps:?}"
        );
    }
}

#[test]
fn stops_in_reverse_dependency_order_with_each_stop_signal() {
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-stop");
    let log = s.log();
    // b needs a through a oneshot, long done when the stop comes: the
    // order still holds across it.
    s.define(
        "m",
        "type = \"oneshot\"\ncommand = [\"true\"]\ndepends_on = [\"a\"]\n",
    );
    for (name, deps, sig) in [
        ("a", "[]", "TERM"),
        ("b", "[\"m\"]", "USR1"),
        ("c", "[\"b\"]", "INT"),
    ] {
        s.define(
            name,
            &format!(
                "command = {}\ndepends_on = {deps}\nstop_signal = \"SIG{sig}\"\n",
                sh(&format!(
                    "trap 'sleep 0.2; echo {name} {sig} >> {log}; exit 0' {sig}; \
                     echo {name} up >> {log}; sleep 1000 & wait"
                ))
            ),
        );
    }
    let init = Running::start(s.init(&[]).stderr(std::process::Stdio::null()));
    let pid = init.init_pid(true);
    wait_for("all three up", LIMIT, || s.logged().len() == 3);
    let started = Instant::now();
    kill(pid, libc::SIGTERM);
    let (status, _) = init.finish(LIMIT);
    assert_eq!(status.code(), Some(0), "a stop signal with no workload: 0");
    assert_eq!(
        s.logged()[3..],
        ["c INT", "b USR1", "a TERM"],
        "{:?}",
        s.logged()
    );
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[test]
fn a_stop_timeout_ends_in_sigkill() {
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-stop-timeout");
    s.define(
        "stubborn",
        "command = [\"sh\", \"-c\", \"trap '' TERM; while :; do sleep 1; done\"]\nstop_timeout = \"300ms\"\n",
    );
    let started = Instant::now();
    let out = run(&mut s.init(&["sleep", "0.3"]), LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{out:?}");
    assert!(out.stderr.contains("killing it"), "{out:?}");
}

#[test]
fn a_workload_that_ignores_sigterm_is_killed_after_the_grace_period() {
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-main-kill");
    s.define("one", "command = [\"sleep\", \"1000\"]\n");
    let services = s.services();
    let mut cmd = as_pid1(&[
        "--grace",
        "0.3",
        "--services",
        &services,
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    cmd.env("CRADLE_CTL_SOCKET", s.socket());
    let mut init = Running::start(cmd.stderr(std::process::Stdio::null()));
    let pid = init.init_pid(true);
    init.expect_line("ready", LIMIT);
    let started = Instant::now();
    kill(pid, libc::SIGTERM);
    let (status, _) = init.finish(LIMIT);
    assert_eq!(status.code(), Some(128 + 9), "the workload's status");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn ctl_status_signal_stop_and_start() {
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-ctl");
    s.define("one", "command = [\"sleep\", \"1000\"]\n");
    s.define(
        "two",
        "command = [\"sleep\", \"1000\"]\ndepends_on = [\"one\"]\n",
    );
    let init = Running::start(s.init(&[]).stderr(std::process::Stdio::null()));
    let pid = init.init_pid(true);
    let status = |s: &Setup| {
        let out = s.ctl(&["status"]);
        assert_eq!(out.code(), Some(0), "{out:?}");
        out.stdout
    };
    let field = |text: &str, name: &str, n: usize| -> String {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(n))
            .unwrap_or_default()
            .to_string()
    };
    wait_for("the socket", LIMIT, || Path::new(&s.socket()).exists());
    wait_for("both up", LIMIT, || {
        let text = status(&s);
        field(&text, "one", 1) == "up" && field(&text, "two", 1) == "up"
    });
    let text = status(&s);
    assert!(
        text.starts_with("NAME STATE PID UPTIME RESTARTS LAST\n"),
        "{text}"
    );
    let old = field(&text, "two", 2);

    let out = s.ctl(&["signal", "KILL", "two"]);
    assert_eq!((out.code(), out.stdout.as_str()), (Some(0), ""), "{out:?}");
    wait_for("restarted", LIMIT, || {
        let text = status(&s);
        field(&text, "two", 4) == "1" && field(&text, "two", 1) == "up"
    });
    let text = status(&s);
    assert_ne!(field(&text, "two", 2), old, "a new pid: {text}");
    assert!(
        text.contains("two up ") && text.contains(" 1 signal SIGKILL\n"),
        "{text}"
    );

    let before = field(&status(&s), "two", 2);
    assert_eq!(s.ctl(&["restart", "two"]).code(), Some(0));
    wait_for("restarted by ctl", LIMIT, || {
        let text = status(&s);
        field(&text, "two", 1) == "up" && field(&text, "two", 2) != before
    });

    assert_eq!(s.ctl(&["stop", "two"]).code(), Some(0));
    wait_for("stopped", LIMIT, || {
        field(&status(&s), "two", 1) == "stopped"
    });
    assert_eq!(s.ctl(&["start", "two"]).code(), Some(0));
    wait_for("started", LIMIT, || field(&status(&s), "two", 1) == "up");

    let out = s.ctl(&["stop", "nosuch"]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("no service `nosuch`"), "{out:?}");
    let out = s.ctl(&["signal", "SIGNOPE", "one"]);
    assert_eq!(out.code(), Some(1), "{out:?}");

    kill(pid, libc::SIGTERM);
    let (status, _) = init.finish(LIMIT);
    assert_eq!(status.code(), Some(0));
    assert!(!Path::new(&s.socket()).exists(), "the socket is removed");
}

#[test]
fn ctl_refuses_another_user_whatever_the_socket_mode() {
    if !can_unshare() || testkit::require_tool("setpriv").is_none() {
        return;
    }
    let s = Setup::new("svc-ctl-user");
    s.define("one", "command = [\"sleep\", \"1000\"]\n");
    let init = Running::start(s.init(&[]).stderr(std::process::Stdio::null()));
    let pid = init.init_pid(true);
    wait_for("the socket", LIMIT, || Path::new(&s.socket()).exists());
    // A hostile local user got the socket opened up (or the directory
    // was): the peer's credentials still decide.
    use std::os::unix::fs::PermissionsExt;
    s.open_to_others();
    std::fs::set_permissions(s.socket(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(init_bin())
        .args(["ctl", "signal", "KILL", "one"])
        .env("CRADLE_CTL_SOCKET", s.socket());
    let out = run(&mut cmd, LIMIT);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("permission denied"), "{out:?}");
    let text = s.ctl(&["status"]).stdout;
    assert!(
        text.contains("one up ") && text.contains(" 0 -\n"),
        "{text}"
    );
    kill(pid, libc::SIGTERM);
    init.finish(LIMIT);
}

#[test]
fn reaps_the_orphans_of_every_service() {
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-orphans");
    for name in ["x", "y"] {
        s.define(
            name,
            "command = [\"sh\", \"-c\", \"for i in 1 2 3; do (sleep 0.1 &); done; exec sleep 1000\"]\n",
        );
    }
    // The workload looks for zombies in the namespace once the orphans ended.
    let check = "sleep 1; for f in /proc/[0-9]*/stat; do read -r l < $f; \
                 case \"$l\" in *') Z '*) echo zombie $l;; esac; done";
    let out = run(&mut s.init(&["sh", "-c", check]), LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(!out.stdout.contains("zombie"), "{out:?}");
}

#[test]
fn output_lines_are_prefixed_and_never_mixed() {
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-output");
    for name in ["p", "q"] {
        let letter = if name == "p" { "P" } else { "Q" };
        s.define(
            name,
            &format!(
                "type = \"oneshot\"\ncommand = {}\n",
                sh(&format!(
                    "line=$(printf '{letter}%.0s' $(seq 300)); \
                     for i in $(seq 200); do echo $line; done; printf '{letter}%.0s' $(seq 2500)"
                ))
            ),
        );
    }
    s.define(
        "quiet",
        "type = \"oneshot\"\ncommand = [\"echo\", \"raw\"]\nlog_prefix = false\n",
    );
    let out = run(&mut s.init(&["true"]), LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let mut counts = [0, 0];
    for line in out.stdout.lines() {
        if line == "raw" {
            continue;
        }
        let (prefix, letter, at) = match line.as_bytes().get(1) {
            Some(b'p') => ("[p] ", 'P', 0),
            Some(b'q') => ("[q] ", 'Q', 1),
            _ => panic!("an unprefixed line: {line:.80}"),
        };
        let body = line.strip_prefix(prefix).unwrap();
        assert!(body.chars().all(|c| c == letter), "mixed: {line:.80}");
        counts[at] += body.len();
    }
    // Everything arrived; the 2500-byte last line split at 1024.
    assert_eq!(counts, [200 * 300 + 2500, 200 * 300 + 2500]);
    assert!(out.stdout.lines().any(|l| l == "raw"), "{out:?}");
}

#[test]
fn runs_an_s6_overlay_layout_unchanged() {
    if !can_unshare() {
        return;
    }
    let scratch = Scratch::new("svc-s6");
    let root = scratch.path();
    let log = root.join("log").display().to_string();
    let script = |path: &Path, body: &str| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script(
        &root.join("etc/cont-init.d/10-first"),
        &format!("sleep 0.2; echo init 10 >> {log}"),
    );
    script(
        &root.join("etc/cont-init.d/20-second"),
        &format!("echo init 20 >> {log}"),
    );
    script(
        &root.join("etc/services.d/app/run"),
        &format!(
            "echo app run $(pwd) >> {log}; sleep 0.3; echo app ready >> {log}; echo >&5; exec sleep 1000"
        ),
    );
    std::fs::write(root.join("etc/services.d/app/notification-fd"), "5\n").unwrap();
    script(
        &root.join("etc/services.d/flaky/run"),
        &format!("echo flaky run >> {log}; exit 4"),
    );
    script(
        &root.join("etc/services.d/flaky/finish"),
        &format!("echo flaky finish $1 $2 >> {log}; exit 125"),
    );
    let root_arg = root.display().to_string();
    let out = run(
        &mut as_pid1(&[
            "--root",
            &root_arg,
            "--",
            "sh",
            "-c",
            &format!("echo main >> {log}; exit 6"),
        ]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(6), "the workload's status: {out:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(lines[..2], ["init 10", "init 20"], "{lines:?}");
    let app = root.join("etc/services.d/app").display().to_string();
    // The workload starts once app said it is ready (notification-fd).
    assert_eq!(lines.last(), Some(&"main"), "{lines:?}");
    let mut rest = lines[2..lines.len() - 1].to_vec();
    rest.sort();
    // finish exiting 125 keeps flaky down (s6-supervise).
    assert_eq!(
        rest,
        [
            "app ready",
            format!("app run {app}").as_str(),
            "flaky finish 4 0",
            "flaky run"
        ],
        "{lines:?}"
    );

    // A failing cont-init script stops the container before any service.
    script(
        &root.join("etc/cont-init.d/15-fails"),
        &format!("echo init 15 >> {log}; exit 5"),
    );
    std::fs::remove_file(&log).unwrap();
    let out = run(&mut as_pid1(&["--root", &root_arg, "--", "true"]), LIMIT);
    assert_eq!(out.code(), Some(5), "{out:?}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged, "init 10\ninit 15\n");
}

#[test]
fn refuses_bad_definitions_naming_file_and_key_before_anything_runs() {
    if !can_unshare() {
        return;
    }
    for (files, file, key) in [
        (
            &[(
                "web",
                "command = [\"touch\", \"MARK\"]\nrestrat = \"always\"\n",
            )][..],
            "web.toml",
            "restrat",
        ),
        (
            &[("web", "type = \"longrun\"\n")][..],
            "web.toml",
            "command",
        ),
        (
            &[
                (
                    "a",
                    "command = [\"touch\", \"MARK\"]\ndepends_on = [\"b\"]\n",
                ),
                (
                    "b",
                    "command = [\"touch\", \"MARK\"]\ndepends_on = [\"a\"]\n",
                ),
            ][..],
            "a.toml",
            "depends_on",
        ),
        (
            &[(
                "w",
                "command = [\"touch\", \"MARK\"]\nstop_timeout = \"soon\"\n",
            )][..],
            "w.toml",
            "stop_timeout",
        ),
        (
            &[("bad name", "command = [\"touch\", \"MARK\"]\n")][..],
            "bad name.toml",
            "",
        ),
    ] {
        let s = Setup::new("svc-bad");
        let mark = s.dir().join("mark").display().to_string();
        for (name, text) in files {
            s.define(name, &text.replace("MARK", &mark));
        }
        let out = run(&mut s.init(&["touch", &mark]), LIMIT);
        assert_eq!(out.code(), Some(1), "{out:?}");
        let path = format!("{}/{file}", s.services());
        let want = if key.is_empty() {
            format!("init: service definition `{path}`: ")
        } else {
            format!("init: service definition `{path}`, key `{key}`: ")
        };
        assert!(out.stderr.starts_with(&want), "{want}\n{out:?}");
        assert!(!Path::new(&mark).exists(), "nothing ran: {out:?}");
        assert!(!Path::new(&s.socket()).exists(), "nothing left behind");
    }
    // A definition that is a FIFO (nobody would ever write it) or huge:
    // refused at once, nothing read for ever.
    for (make, what) in [
        (
            (|p: &Path| {
                let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
                // SAFETY: a NUL-terminated path.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            }) as fn(&Path),
            "is no regular file",
        ),
        (
            |p: &Path| std::fs::write(p, vec![b'#'; 1 << 20]).unwrap(),
            "is larger than 65536 bytes",
        ),
    ] {
        let s = Setup::new("svc-hostile");
        let file = s.dir().join("services").join("web.toml");
        make(&file);
        let out = run(&mut s.init(&["true"]), Duration::from_secs(10));
        assert_eq!(out.code(), Some(1), "{out:?}");
        assert!(
            out.stderr
                .contains(&format!("`{}`: {what}", file.display())),
            "{out:?}"
        );
    }
    let out = run(
        &mut as_pid1(&["--services", "/nonexistent/services", "--", "true"]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("service definition `/nonexistent/services`: is no directory"),
        "{out:?}"
    );
}

#[test]
fn without_services_it_stays_the_plain_init() {
    let out = run(
        command(init_bin()).args(["--", "sh", "-c", "exit 3"]),
        LIMIT,
    );
    assert_eq!((out.code(), out.stderr.as_str()), (Some(3), ""), "{out:?}");
    let out = run(&mut command(init_bin()), LIMIT);
    assert_eq!(out.code(), Some(1), "still asks for a command: {out:?}");
}

/// `name: N kB` from /proc/PID/status.
fn status_field(pid: i32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {pid}"))
}

#[test]
fn the_static_init_stays_under_256_kib_and_asleep_with_20_services() {
    let Some(init_path) = testkit::require_artifact("static/cradle-init", "cargo xtask build-init")
    else {
        return;
    };
    if !can_unshare() {
        return;
    }
    let s = Setup::new("svc-rss");
    for i in 0..20 {
        s.define(&format!("s{i:02}"), "command = [\"sleep\", \"1000\"]\n");
    }
    let mut cmd = command("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(&init_path)
        .args(["--services", &s.services()])
        .env("CRADLE_CTL_SOCKET", s.socket());
    let init = Running::start(cmd.stderr(std::process::Stdio::null()));
    let pid = init.init_pid(true);
    wait_for("20 up", LIMIT, || {
        let out = s.ctl(&["status"]);
        out.stdout.lines().filter(|l| l.contains(" up ")).count() == 20
    });
    let rss = status_field(pid, "VmRSS");
    assert!(rss <= 256, "VmRSS {rss} kB with 20 services");
    // Nothing happens: no wakeup at all (no periodic polling).
    let before = status_field(pid, "voluntary_ctxt_switches");
    std::thread::sleep(Duration::from_secs(2));
    let after = status_field(pid, "voluntary_ctxt_switches");
    assert_eq!(after, before, "wakeups while idle");
    kill(pid, libc::SIGTERM);
    let (status, _) = init.finish(LIMIT);
    assert_eq!(status.code(), Some(0));
}
