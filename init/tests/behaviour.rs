//! The init binary doing its job for real: as PID 1 of new PID and mount
//! namespaces (through `unshare`), and as a subreaper child of the test.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn exits_with_the_workload_status() {
    let out = run(
        command(init_bin()).args(["--", "sh", "-c", "exit 3"]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(3), "{out:?}");
    let out = run(
        command(init_bin()).args(["sh", "-c", "kill -TERM $$"]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(128 + 15), "{out:?}");
    let out = run(
        command(init_bin()).args(["-e", "3", "-e", "4", "--", "sh", "-c", "exit 4"]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(0), "-e remaps: {out:?}");
}

#[test]
fn exec_failures_exit_127_and_126_naming_the_program() {
    let out = run(command(init_bin()).args(["--", "/nonexistent/prog"]), LIMIT);
    assert_eq!(out.code(), Some(127), "{out:?}");
    assert!(
        out.stderr.contains("exec `/nonexistent/prog`: ENOENT"),
        "{out:?}"
    );
    let scratch = Scratch::new("exec");
    let file = scratch.path().join("not-executable");
    std::fs::write(&file, "#!/bin/sh\n").unwrap();
    let out = run(command(init_bin()).arg("--").arg(&file), LIMIT);
    assert_eq!(out.code(), Some(126), "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("exec `{}`: EACCES", file.display())),
        "{out:?}"
    );
    let out = run(command(init_bin()).args(["no-such-program-on-path"]), LIMIT);
    assert_eq!(out.code(), Some(127), "{out:?}");
}

#[test]
fn is_quiet_on_the_happy_path() {
    let out = run(command(init_bin()).args(["--", "true"]), LIMIT);
    assert_eq!(
        (out.code(), out.stdout.as_str(), out.stderr.as_str()),
        (Some(0), "", "")
    );
    if can_unshare() {
        let out = run(&mut as_pid1(&["--", "true"]), LIMIT);
        assert_eq!(
            (out.code(), out.stdout.as_str(), out.stderr.as_str()),
            (Some(0), "", "")
        );
    }
}

#[test]
fn is_pid_1_and_the_workload_its_child() {
    if !can_unshare() {
        return;
    }
    let out = run(
        &mut as_pid1(&["--", "sh", "-c", "echo $$ $PPID; cat /proc/1/comm"]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "2 1\ninit\n");
}

#[test]
fn mounts_proc_when_missing() {
    if !can_unshare() {
        return;
    }
    // New PID and mount namespaces, /proc unmounted, then the init execs as
    // PID 1 (unshare's forked child is PID 1; `exec` keeps it so).
    let script = format!(
        "umount -l /proc && ! test -e /proc/self && exec {} -- sh -c 'cat /proc/1/comm; grep -c \" /proc proc \" /proc/mounts'",
        init_bin().display()
    );
    let mut cmd = command("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount",
        "--propagation",
        "private",
        "--kill-child",
        "sh",
        "-c",
        &script,
    ]);
    let out = run(&mut cmd, LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout, "init\n1\n",
        "a /proc of the new PID namespace, mounted once"
    );
}

#[test]
fn leaves_a_mounted_proc_alone() {
    if !can_unshare() {
        return;
    }
    let count = "grep -c ' /proc proc ' /proc/mounts";
    let out = run(&mut as_pid1(&["--", "sh", "-c", count]), LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let mut cmd = command("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "sh",
        "-c",
        count,
    ]);
    let without_init = run(&mut cmd, LIMIT);
    assert_eq!(
        out.stdout, without_init.stdout,
        "no proc mounted on top of unshare's"
    );
}

/// A workload that makes `n` orphans, waits for them to die, and counts the
/// zombies left in its PID namespace.
fn orphans_then_count_zombies(n: u32) -> String {
    format!(
        "i=0; while [ $i -lt {n} ]; do (sleep 0.3 &); i=$((i+1)); done; \
         sleep 1.5; z=0; for s in /proc/[0-9]*/stat; do \
         read -r pid comm state rest < $s 2>/dev/null && [ \"$state\" = Z ] && z=$((z+1)); done; \
         echo zombies=$z"
    )
}

#[test]
fn reaps_500_orphans_as_pid_1() {
    if !can_unshare() {
        return;
    }
    let out = run(
        &mut as_pid1(&["--", "sh", "-c", &orphans_then_count_zombies(500)]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "zombies=0\n", "{out:?}");
}

#[test]
fn becomes_a_subreaper_and_reaps_orphans_when_not_pid_1() {
    // $PPID is fixed when a shell starts, so the orphan reads its parent
    // from /proc once it has been re-parented.
    let script = "(sh -c 'sleep 0.3; set -- $(cat /proc/$$/stat); echo parent=$4' &); \
                  i=0; while [ $i -lt 100 ]; do (true &); i=$((i+1)); done; sleep 1; \
                  z=0; for s in /proc/[0-9]*/stat; do set -- $(cat $s 2>/dev/null); \
                  [ \"$3\" = Z ] && [ \"$4\" = $PPID ] && z=$((z+1)); done; \
                  echo init=$PPID zombies=$z";
    let mut child = command(init_bin())
        .args(["--", "sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let init_pid = child.id();
    let status = wait_limit(&mut child, LIMIT);
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{stdout}");
    // The orphaned `sh` was re-parented to the init, not to the machine's init.
    assert!(stdout.contains(&format!("parent={init_pid}")), "{stdout}");
    assert!(
        stdout.contains(&format!("init={init_pid} zombies=0")),
        "{stdout}"
    );
}

/// Signals the tests forward: every catchable one in 1–31 (not KILL, STOP,
/// CHLD), fault signals included, and some real-time ones.
fn forwardable() -> Vec<i32> {
    let mut sigs: Vec<i32> = (1..=31)
        .filter(|s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(s))
        .collect();
    sigs.extend([libc::SIGRTMIN(), libc::SIGRTMIN() + 1, 50, libc::SIGRTMAX()]);
    sigs
}

/// A shell that traps `sigs`, printing `got N` for each, until the file
/// `$STOP_FILE` appears (a file, so that every signal can be tested).
fn trapping_script(sigs: &[i32]) -> String {
    let traps: String = sigs
        .iter()
        .map(|s| format!("trap 'echo got {s}' {s}; "))
        .collect();
    format!("{traps} echo ready; while [ ! -e \"$STOP_FILE\" ]; do sleep 0.02; done; echo done")
}

fn forwards_every_signal(through_unshare: bool) {
    let scratch = Scratch::new("signals");
    let stop = scratch.path().join("stop");
    let sigs = forwardable();
    let script = trapping_script(&sigs);
    let args = ["--", "sh", "-c", script.as_str()];
    let mut cmd = if through_unshare {
        as_pid1(&args)
    } else {
        command(init_bin())
    };
    if !through_unshare {
        cmd.args(args);
    }
    cmd.env("STOP_FILE", &stop);
    let mut running = Running::start(&mut cmd);
    running.expect_line("ready", LIMIT);
    let init = running.init_pid(through_unshare);
    for sig in &sigs {
        kill(init, *sig);
        running.expect_line(&format!("got {sig}"), Duration::from_secs(10));
    }
    std::fs::write(&stop, "").unwrap();
    let (status, lines) = running.finish(LIMIT);
    assert!(status.success(), "{lines:?}");
}

#[test]
fn forwards_every_catchable_signal_as_pid_1() {
    if can_unshare() {
        forwards_every_signal(true);
    }
}

#[test]
fn forwards_every_catchable_signal_as_subreaper() {
    forwards_every_signal(false);
}

#[test]
fn forwards_to_the_process_group_with_g() {
    if !can_unshare() {
        return;
    }
    // An inner shell in the workload's group reports SIGUSR1 too, with -g only.
    let script = "trap 'echo outer' USR1; \
                  sh -c 'trap \"echo inner; exit 0\" USR1; echo ready-inner; while :; do sleep 0.02; done' & \
                  echo ready-outer; wait; wait; echo end";
    for (group, want_inner) in [(true, true), (false, false)] {
        let mut args = vec![];
        if group {
            args.push("-g");
        }
        args.extend(["--", "sh", "-c", script]);
        let mut running = Running::start(&mut as_pid1(&args));
        running.expect_line("ready-inner", LIMIT);
        running.expect_line("ready-outer", LIMIT);
        let init = running.init_pid(true);
        kill(init, libc::SIGUSR1);
        running.expect_line("outer", LIMIT);
        if want_inner {
            running.expect_line("inner", LIMIT);
            running.expect_line("end", LIMIT);
        } else {
            std::thread::sleep(Duration::from_millis(300));
            kill(init, libc::SIGTERM);
        }
        let (_, lines) = running.finish(LIMIT);
        assert_eq!(
            lines.iter().any(|l| l == "inner"),
            want_inner,
            "-g {group}: {lines:?}"
        );
    }
}

#[test]
fn grace_terms_then_kills_the_rest_and_reaps_all_before_exit() {
    // Not PID 1 (so the kernel would not clean up): one straggler stops on
    // SIGTERM, one ignores it and must be killed after the grace period.
    let marker = format!("cradle-grace-{}", std::process::id());
    let script = format!(
        "sh -c 'trap \"echo polite-bye; exit 0\" TERM; while :; do sleep 0.02; done' & \
         sh -c 'trap \"\" TERM; while :; do sleep 0.05; done' {marker} & \
         sleep 0.3; exit 5"
    );
    let out = run(
        command(init_bin()).args(["--grace", "1", "--", "sh", "-c", &script]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(5), "{out:?}");
    assert!(out.stdout.contains("polite-bye"), "{out:?}");
    assert!(
        out.took >= Duration::from_millis(1200),
        "waited the grace period: {:?}",
        out.took
    );
    assert!(out.took < Duration::from_secs(10), "{:?}", out.took);
    assert_eq!(
        processes_with(&marker),
        Vec::<i32>::new(),
        "nothing left behind"
    );
}

#[test]
fn grace_from_the_environment_kills_a_workload_that_ignores_sigterm() {
    if !can_unshare() {
        return;
    }
    let mut cmd = as_pid1(&[
        "--",
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 0.02; done",
    ]);
    cmd.env("CRADLE_GRACE", "0.5");
    let mut running = Running::start(&mut cmd);
    running.expect_line("ready", LIMIT);
    let init = running.init_pid(true);
    let sent = std::time::Instant::now();
    kill(init, libc::SIGTERM);
    let (status, _) = running.finish(LIMIT);
    assert_eq!(
        status.code(),
        Some(128 + 9),
        "SIGKILLed after the grace period"
    );
    assert!(
        sent.elapsed() >= Duration::from_millis(500) && sent.elapsed() < Duration::from_secs(10)
    );
}

#[test]
fn without_grace_sigterm_is_only_forwarded() {
    let out = run(
        command(init_bin()).args([
            "--",
            "sh",
            "-c",
            "trap 'echo term' TERM; kill -TERM $PPID; sleep 0.3; exit 0",
        ]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "term\n");
}

#[test]
fn its_own_file_descriptors_are_close_on_exec() {
    // The workload has exactly the descriptors it has without the init (the
    // test harness may pass some on, a jobserver's for one).
    let list = "for f in /proc/$$/fd/*; do echo ${f##*/} $(readlink $f | sed 's/:.*//'); done";
    let out = run(command(init_bin()).args(["--", "sh", "-c", list]), LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let without_init = run(command("sh").args(["-c", list]), LIMIT);
    assert_eq!(out.stdout, without_init.stdout);
    assert!(!out.stdout.contains("signalfd"), "{}", out.stdout);
}

#[test]
fn pause_mode_reaps_and_exits_0_on_sigterm_or_sigint() {
    let scratch = Scratch::new("pause");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut child = command(scratch.init_as("catatonit"))
            .arg("-P")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        kill(child.id() as i32, sig);
        let status = wait_limit(&mut child, LIMIT);
        assert_eq!(status.code(), Some(0), "signal {sig}");
    }
}

/// The `SigBlk` and `SigIgn` lines of a `cat /proc/self/status` output (cat,
/// not grep: GNU grep catches SIGSEGV for its own stack overflows).
fn blocked_and_ignored(status: &str) -> Vec<&str> {
    status
        .lines()
        .filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:"))
        .collect()
}

#[test]
fn workload_starts_with_no_blocked_signals_and_its_callers_ignored_ones() {
    // Started with SIGINT and SIGHUP ignored (as `nohup` or a shell's
    // background job would), the init passes them on ignored, as exec does
    // and tini does; it blocks nothing in the workload. The workload sees
    // what it would see without the init in between.
    let script = format!(
        "trap '' INT HUP; exec {} -- cat /proc/self/status",
        init_bin().display()
    );
    let out = run(command("sh").args(["-c", &script]), LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let direct = run(
        command("sh").args(["-c", "trap '' INT HUP; exec cat /proc/self/status"]),
        LIMIT,
    );
    let want = blocked_and_ignored(&direct.stdout);
    assert_eq!(blocked_and_ignored(&out.stdout), want);
    assert_eq!(want[0], "SigBlk:\t0000000000000000");
    let ignored = u64::from_str_radix(want[1].trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(ignored & 0b11, 0b11, "INT and HUP: {want:?}");
}

/// `program ARGS` started with `ignored` set to SIG_IGN.
fn with_ignored(program: &Path, ignored: &'static [i32], args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = command(program);
    cmd.args(args);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for sig in ignored {
                if libc::signal(*sig, libc::SIG_IGN) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    run(&mut cmd, LIMIT)
}

#[test]
fn every_personality_keeps_the_signals_its_caller_ignored() {
    // tini's test: a program started with SIGINT, SIGTTOU and SIGSEGV
    // ignored sees them ignored, as it would without the init; the real
    // tini and catatonit, when installed, agree. (The real dumb-init
    // catches every signal, so its workload gets them all at the default.)
    const IGNORED: &[i32] = &[libc::SIGINT, libc::SIGTTOU, libc::SIGSEGV];
    let direct = with_ignored(Path::new("cat"), IGNORED, &["/proc/self/status"]);
    let want = blocked_and_ignored(&direct.stdout);
    let bits = IGNORED.iter().fold(0u64, |m, s| m | 1 << (s - 1));
    let ignored = u64::from_str_radix(want[1].trim_start_matches("SigIgn:\t"), 16).unwrap();
    assert_eq!(ignored & bits, bits, "{want:?}");
    let scratch = Scratch::new("ignored");
    let args = ["--", "cat", "/proc/self/status"];
    for name in ["cradle-init", "tini", "dumb-init", "catatonit"] {
        let args = if name == "dumb-init" {
            &args[1..]
        } else {
            &args[..]
        };
        let out = with_ignored(&scratch.init_as(name), IGNORED, args);
        assert_eq!(out.code(), Some(0), "{name}: {out:?}");
        assert_eq!(blocked_and_ignored(&out.stdout), want, "{name}");
        if let Some(real) = testkit::which(name).filter(|_| name != "dumb-init") {
            // SigIgn only: the real catatonit leaves SIGTSTP & co. blocked.
            let out = with_ignored(&real, IGNORED, args);
            assert_eq!(
                blocked_and_ignored(&out.stdout)[1],
                want[1],
                "the real {name}"
            );
        }
    }
}

#[test]
fn a_caller_that_ignored_sigchld_still_gets_the_workload_status() {
    // Ignored, SIGCHLD makes the kernel reap children unasked: the init
    // would lose its workload's status. The workload still gets it ignored.
    let direct = with_ignored(Path::new("cat"), &[libc::SIGCHLD], &["/proc/self/status"]);
    let want = blocked_and_ignored(&direct.stdout);
    let out = with_ignored(
        &init_bin(),
        &[libc::SIGCHLD],
        &["--", "cat", "/proc/self/status"],
    );
    assert_eq!(blocked_and_ignored(&out.stdout), want);
    // A shell sets SIGCHLD back to its default, to wait for its own children.
    let out = with_ignored(&init_bin(), &[libc::SIGCHLD], &["--", "sh", "-c", "exit 3"]);
    assert_eq!(out.code(), Some(3), "{out:?}");
}

#[test]
fn as_tini_an_inherited_subreaper_mark_is_not_warned_about() {
    use std::os::unix::process::CommandExt;
    // The mark survives exec: a parent that set it and exec'd tini gave it
    // a working reaper, and tini asks the kernel before warning.
    let scratch = Scratch::new("inherited-subreaper");
    let ours = scratch.init_as("tini");
    let real = testkit::which("tini");
    for program in [Some(&ours), real.as_ref()].into_iter().flatten() {
        let mut cmd = command(program);
        cmd.args([
            "--",
            "sh",
            "-c",
            "(sh -c 'sleep 0.3; set -- $(cat /proc/$$/stat); echo $4' &); sleep 0.6",
        ]);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| match libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
        let mut running = Running::start(cmd.stderr(std::process::Stdio::piped()));
        let pid = running.child.id();
        let mut stderr = running.child.stderr.take().unwrap();
        let (status, lines) = running.finish(LIMIT);
        let mut err = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut err).unwrap();
        assert!(status.success(), "{program:?}: {err}");
        assert_eq!(err, "", "{program:?}");
        // The mark was real: the orphan came to the init.
        assert_eq!(lines, [pid.to_string()], "{program:?}");
    }
    // Without the mark, the warning (so the check above is not vacuous).
    let out = run(command(&ours).args(["--", "true"]), LIMIT);
    assert!(out.stderr.contains("zombie reaping won't work"), "{out:?}");
}

#[test]
fn as_dumb_init_and_ours_the_init_leaves_the_callers_directory() {
    // The workload starts in the caller's directory; the init itself moves
    // to / as dumb-init does, so it keeps no directory busy. tini and
    // catatonit stay where they are started.
    let scratch = Scratch::new("cwd");
    let dir = scratch.path().join("here");
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    // The real dumb-init leaves after the fork: give it the time.
    let script = "pwd -P; sleep 0.3; readlink /proc/$PPID/cwd";
    for (name, init_cwd) in [
        ("cradle-init", "/"),
        ("dumb-init", "/"),
        ("tini", dir.to_str().unwrap()),
        ("catatonit", dir.to_str().unwrap()),
    ] {
        let mut programs = vec![scratch.init_as(name)];
        if name == "dumb-init" {
            programs.extend(testkit::which(name));
        }
        for program in programs {
            let out = run(
                command(&program)
                    .current_dir(&dir)
                    .args(["sh", "-c", script]),
                LIMIT,
            );
            assert_eq!(out.code(), Some(0), "{program:?}: {out:?}");
            assert_eq!(
                out.stdout,
                format!("{}\n{init_cwd}\n", dir.display()),
                "{program:?}"
            );
        }
    }
}

#[test]
fn a_script_without_a_shebang_runs_through_bin_sh() {
    // As execvp(3) in glibc, and tini, dumb-init and catatonit (all glibc):
    // a file the kernel refuses with ENOEXEC is run by /bin/sh, found by
    // path or on PATH.
    let scratch = Scratch::new("no-shebang");
    let script = scratch.path().join("no-shebang");
    std::fs::write(&script, "echo ran \"$0\" \"$1\"\nexit 7\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        scratch.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for program in ["no-shebang".to_string(), script.display().to_string()] {
        let out = run(
            command(init_bin())
                .env("PATH", &path)
                .args(["--", &program, "arg"]),
            LIMIT,
        );
        assert_eq!(out.code(), Some(7), "{program}: {out:?}");
        assert_eq!(out.stdout, format!("ran {} arg\n", script.display()));
    }
}

#[test]
fn parent_death_signal_reaches_the_workload() {
    let script = format!(
        "{} -p SIGUSR1 -- sh -c 'trap \"echo parent-died; exit 0\" USR1; while :; do sleep 0.02; done' & sleep 0.3",
        init_bin().display()
    );
    let out = run(command("sh").args(["-c", &script]), LIMIT);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, "parent-died\n");
}
