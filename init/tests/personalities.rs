//! Invoked as `tini`, `docker-init`, `dumb-init`, `catatonit` or
//! `podman-init`, the init does what that init does: the same exit codes,
//! messages on the same streams, the same process group or session for the
//! workload. Each case runs the real tool too, when installed, and compares.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `program ARGS` and returns (code, stdout, stderr) with pids masked.
fn outcome(program: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = run(command(program).args(args), LIMIT);
    (
        out.code(),
        without_pids(&out.stdout),
        without_pids(&out.stderr),
    )
}

/// Workload scripts whose outcome must be the same under the real init and
/// ours.
const SCRIPTS: &[&[&str]] = &[
    &["sh", "-c", "exit 3"],
    &["sh", "-c", "kill -TERM $$"],
    &["sh", "-c", "kill -KILL $$"],
    &["/nonexistent/program"],
    &["/etc/hostname"],
    // Who leads the workload's process group and session.
    &[
        "sh",
        "-c",
        "set -- $(cat /proc/$$/stat); [ $5 = $$ ] && echo group-leader; [ $6 = $$ ] && echo session-leader; true",
    ],
];

fn compare_with_real(
    real: &str,
    ours_as: &str,
    extra: &[&str],
    normalise: impl Fn(String) -> String,
) {
    let Some(real) = testkit::require_tool(real) else {
        return;
    };
    let scratch = Scratch::new("personality");
    let ours = scratch.init_as(ours_as);
    for script in SCRIPTS {
        let args: Vec<&str> = extra.iter().chain(script.iter()).copied().collect();
        let want = outcome(&real, &args);
        let got = outcome(&ours, &args);
        let want = (want.0, normalise(want.1), normalise(want.2));
        let got = (got.0, normalise(got.1), normalise(got.2));
        assert_eq!(got, want, "{ours_as} {args:?}");
    }
}

#[test]
fn as_tini_behaves_as_tini() {
    // tini names itself by argv[0] in its usage and messages: call both tini.
    compare_with_real("tini", "tini", &["--"], |s| s);
    compare_with_real("tini", "tini", &["-s", "--"], |s| s);
}

#[test]
fn as_docker_init_behaves_as_tini() {
    let scratch = Scratch::new("docker-init");
    let ours = scratch.init_as("docker-init");
    let (code, out, err) = outcome(&ours, &["--version"]);
    assert_eq!((code, err.as_str()), (Some(0), ""));
    // `docker info` splits this on " - " and reads "git.COMMIT".
    assert!(out.starts_with("tini version 0.19.0 - git."), "{out}");
    let (code, _, err) = outcome(&ours, &["-s", "--", "/nonexistent/program"]);
    assert_eq!(code, Some(127));
    assert_eq!(
        err,
        "[FATAL tini (N)] exec /nonexistent/program failed: No such file or directory\n"
    );
    let (code, _, _) = outcome(&ours, &["-e", "3", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, Some(0));
}

#[test]
fn as_tini_usage_errors_match() {
    let Some(real) = testkit::require_tool("tini") else {
        return;
    };
    let scratch = Scratch::new("tini-usage");
    let ours = scratch.init_as("tini");
    for args in [&[][..], &["-h"][..], &["-V"][..]] {
        let want = outcome(&real, args);
        let got = outcome(&ours, args);
        assert_eq!(got.0, want.0, "tini {args:?}");
        assert_eq!(
            got.1.is_empty(),
            want.1.is_empty(),
            "stdout of tini {args:?}"
        );
        assert_eq!(
            got.2.is_empty(),
            want.2.is_empty(),
            "stderr of tini {args:?}"
        );
    }
    let (code, out, _) = outcome(&real, &["--version"]);
    let (our_code, our_out, _) = outcome(&ours, &["--version"]);
    assert_eq!(our_code, code);
    assert!(our_out.starts_with(out.trim_end()), "{our_out} vs {out}");
}

#[test]
fn as_dumb_init_behaves_as_dumb_init() {
    compare_with_real("dumb-init", "dumb-init", &[], |s| s);
    compare_with_real("dumb-init", "dumb-init", &["--single-child"], |s| s);
    compare_with_real("dumb-init", "dumb-init", &["-c"], |s| s);
    let Some(real) = testkit::require_tool("dumb-init") else {
        return;
    };
    let scratch = Scratch::new("dumb-init-usage");
    let ours = scratch.init_as("dumb-init");
    for args in [&["-V"][..], &["--version"][..], &[][..]] {
        let mask = |(code, out, err): (Option<i32>, String, String), path: &Path| {
            let path = path.to_string_lossy();
            (
                code,
                out.replace(&*path, "PROG"),
                err.replace(&*path, "PROG"),
            )
        };
        assert_eq!(
            mask(outcome(&ours, args), &ours),
            mask(outcome(&real, args), &real),
            "dumb-init {args:?}"
        );
    }
}

#[test]
fn dumb_init_honours_setsid_and_rewrites() {
    let scratch = Scratch::new("dumb-init-env");
    let ours = scratch.init_as("dumb-init");
    let leader = "set -- $(cat /proc/$$/stat); [ $6 = $$ ] && echo session-leader; true";
    let out = run(command(&ours).args(["sh", "-c", leader]), LIMIT);
    assert_eq!(out.stdout, "session-leader\n");
    let out = run(
        command(&ours)
            .env("DUMB_INIT_SETSID", "0")
            .args(["sh", "-c", leader]),
        LIMIT,
    );
    assert_eq!(out.stdout, "");
    // SIGTERM rewritten to SIGUSR1, SIGHUP dropped.
    let script = "trap 'echo usr1' USR1; trap 'echo hup' HUP; echo ready; \
                  while [ ! -e \"$STOP_FILE\" ]; do sleep 0.02; done; exit 0";
    let stop = scratch.path().join("stop");
    let mut running = Running::start(
        command(&ours)
            .env("STOP_FILE", &stop)
            .args(["-r", "15:10", "-r", "1:0", "sh", "-c", script]),
    );
    running.expect_line("ready", LIMIT);
    let pid = running.init_pid(false);
    kill(pid, libc::SIGHUP);
    kill(pid, libc::SIGTERM);
    running.expect_line("usr1", LIMIT);
    std::fs::write(&stop, "").unwrap();
    let (status, lines) = running.finish(LIMIT);
    assert!(status.success(), "{status:?} {lines:?}");
    assert!(!lines.iter().any(|l| l == "hup"), "{lines:?}");
}

#[test]
fn dumb_init_debug_output_goes_to_stderr() {
    let scratch = Scratch::new("dumb-init-debug");
    let ours = scratch.init_as("dumb-init");
    let out = run(
        command(&ours).env("DUMB_INIT_DEBUG", "1").args(["true"]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(0));
    assert!(out.stderr.starts_with("[dumb-init] "), "{out:?}");
    let quiet = run(command(&ours).args(["true"]), LIMIT);
    assert_eq!(quiet.stderr, "");
}

#[test]
fn as_catatonit_behaves_as_catatonit() {
    compare_with_real("catatonit", "catatonit", &["--"], |s| s);
    compare_with_real("catatonit", "catatonit", &["-g", "--"], |s| s);
    let Some(real) = testkit::require_tool("catatonit") else {
        return;
    };
    let scratch = Scratch::new("catatonit-usage");
    let ours = scratch.init_as("catatonit");
    for args in [&["-V"][..], &["--version"][..]] {
        assert_eq!(
            outcome(&ours, args),
            outcome(&real, args),
            "catatonit {args:?}"
        );
    }
    let (code, _, err) = outcome(&ours, &[]);
    let (real_code, _, real_err) = outcome(&real, &[]);
    assert_eq!(code, real_code);
    assert_eq!(err.lines().next(), real_err.lines().next());
}

#[test]
fn as_podman_init_behaves_as_catatonit() {
    let scratch = Scratch::new("podman-init");
    let ours = scratch.init_as("podman-init");
    let (code, out, _) = outcome(&ours, &["--version"]);
    assert_eq!(
        (code, out.as_str()),
        (Some(0), "tini version 0.1.7_catatonit\n")
    );
    let (code, _, err) = outcome(&ours, &["--", "/nonexistent/program"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "ERROR (catatonit:N): failed to exec pid1: No such file or directory\n"
    );
}

#[test]
fn own_name_takes_our_defaults() {
    // Becomes a subreaper when not PID 1 (catatonit), quiet, 127/126 (tini).
    let scratch = Scratch::new("own");
    let ours = scratch.init_as("cradle-init");
    let script =
        "(sh -c 'sleep 0.3; set -- $(cat /proc/$$/stat); echo $4' &); echo $PPID; sleep 0.8";
    let out = run(command(&ours).args(["sh", "-c", script]), LIMIT);
    assert_eq!(out.stderr, "");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(
        lines[0], lines[1],
        "the orphan's new parent is the init: {out:?}"
    );
    let (code, out, err) = outcome(&ours, &["--version"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(0), "cradle-init (cradle) 0.1.0\n", "")
    );
}

/// The state letter of `pid` (`S`, `T`, `Z`…) from /proc.
fn state_of(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

fn wait_for_state(pid: i32, want: &str) {
    let deadline = std::time::Instant::now() + LIMIT;
    while state_of(pid) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never reached state {want}: {}",
            state_of(pid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn dumb_init_stops_with_its_session_on_sigtstp_and_resumes_on_sigcont() {
    // dumb-init's job control outside a container: SIGTSTP becomes SIGSTOP
    // for the workload's session, and the init stops itself, so the shell
    // that started it gets the terminal back; SIGCONT resumes both.
    let scratch = Scratch::new("dumb-init-tstp");
    let ours = scratch.init_as("dumb-init");
    let mut running = Running::start(command(&ours).args(["sh", "-c", "echo $$; exec sleep 60"]));
    let init = running.init_pid(false);
    running.expect_line_matching(
        |l| l.parse::<i32>().is_ok(),
        std::time::Instant::now() + LIMIT,
    );
    let workload: i32 = running.seen.iter().find_map(|l| l.parse().ok()).unwrap();
    kill(init, libc::SIGTSTP);
    wait_for_state(init, "T");
    wait_for_state(workload, "T");
    kill(init, libc::SIGCONT);
    wait_for_state(init, "S");
    let deadline = std::time::Instant::now() + LIMIT;
    while state_of(workload) == "T" {
        assert!(
            std::time::Instant::now() < deadline,
            "the workload stayed stopped"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(init, libc::SIGTERM);
    let (status, _) = running.finish(LIMIT);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

/// `text` with the numbers that differ from run to run (pids) replaced by
/// `N`: every run of digits after `(`, `:`, `[`, `PID `, `pid: '`,
/// `pid '`, `pid=`.
fn masked(text: &str) -> String {
    let mut out = without_pids(text);
    for prefix in ["PID ", "pid: '", "pid '", "pid="] {
        let mut rest = out.as_str();
        let mut done = String::new();
        while let Some(at) = rest.find(prefix) {
            let (head, tail) = rest.split_at(at + prefix.len());
            done.push_str(head);
            let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                done.push('N');
            }
            rest = &tail[digits..];
        }
        done.push_str(rest);
        out = done;
    }
    out
}

/// Runs the real `original` and ours invoked by the same name with each of
/// `cases`, and asserts the same exit code, stdout and stderr, byte for
/// byte once pids and the programs' paths are masked (and `ours_only`, a
/// text only ours prints, removed). With `sorted`, lines are compared in
/// sorted order: the init's and its child's lines race.
fn compare_texts(original: &str, cases: &[&[&str]], env: &[(&str, &str)], sorted: bool) {
    let Some(real) = testkit::require_tool(original) else {
        return;
    };
    let scratch = Scratch::new("texts");
    let ours = scratch.init_as(original);
    let outcome = |program: &Path, args: &[&str]| {
        let out = run(command(program).envs(env.iter().copied()).args(args), LIMIT);
        let path = program.to_string_lossy();
        let clean = |s: &str| {
            let s = masked(&s.replace(&*path, "PROG")).replace(" - git.cradle", "");
            if sorted {
                let mut lines: Vec<&str> = s.lines().collect();
                lines.sort_unstable();
                lines.join("\n")
            } else {
                s
            }
        };
        (out.code(), clean(&out.stdout), clean(&out.stderr))
    };
    for args in cases {
        let want = outcome(&real, args);
        let got = outcome(&ours, args);
        assert_eq!(got, want, "{original} {args:?}");
    }
}

#[test]
fn as_dumb_init_prints_its_texts_byte_for_byte() {
    compare_texts(
        "dumb-init",
        &[
            &["--yolo", "true"],
            &["--yolo=3", "true"],
            &["-Z", "true"],
            &["-cZ", "true"],
            &["-h"],
            &["--help"],
            &["--he"],
            &["-vV"],
            &["--ve", "true"],
            &["--single-child=1", "true"],
            &["--rewrite"],
            &["-r"],
            // dumb-init takes signals 1 to 31 only, read as scanf("%d:%d").
            &["-r", "40:1", "true"],
            &["-r", "1:40", "true"],
            &["-r", "0:1", "true"],
            &["-r", "15:", "true"],
            &["-r", "3 :4", "true"],
            &["-r", " +3: 4x", "sh", "-c", "exit 4"],
            &["--rewrite=x", "true"],
            &["--sing", "sh", "-c", "exit 5"],
            &[],
        ],
        &[],
        false,
    );
    // Its -v lines, from the init and from the child before exec.
    compare_texts(
        "dumb-init",
        &[
            &["-v", "true"],
            &["--verbose", "-c", "sh", "-c", "kill -KILL $$"],
            &[
                "-v",
                "-r",
                "10:0",
                "-r",
                "12:15",
                "sh",
                "-c",
                "kill -USR1 $PPID; sleep 0.3; kill -USR2 $PPID; sleep 5",
            ],
        ],
        &[],
        true,
    );
    compare_texts(
        "dumb-init",
        &[&["sh", "-c", "exit 3"]],
        &[("DUMB_INIT_DEBUG", "1")],
        true,
    );
}

#[test]
fn as_tini_prints_its_texts_byte_for_byte() {
    compare_texts(
        "tini",
        &[
            // Options tini does not have are refused, not taken as ours.
            &["-P", "--", "true"],
            &["-c", "--", "true"],
            &["-r", "1:2", "--", "true"],
            &["--grace", "1", "--", "true"],
            &["--help"],
            &["--yolo"],
            &["-V"],
            &["-s", "--version"],
            &["-h"],
            &["-p"],
            &["-e"],
            &["-e", "300", "--", "true"],
            &["-e", "3x", "--", "true"],
            &["-s", "-e", " 4", "--", "sh", "-c", "exit 4"],
            &["-p", "15", "--", "true"],
            &["-p", "KILL", "--", "true"],
            &["-p", "sigkill", "--", "true"],
        ],
        &[],
        false,
    );
    compare_texts(
        "tini",
        &[
            &["-s", "--", "sh", "-c", "exit 3"],
            &["-s", "--", "sh", "-c", "kill -USR1 $PPID; sleep 5"],
            &["-s", "-g", "--", "sh", "-c", "kill -TERM $$"],
            &["-s", "--", "/nonexistent/program"],
        ],
        &[("TINI_VERBOSITY", "3")],
        false,
    );
}

#[test]
fn as_catatonit_prints_its_texts_byte_for_byte() {
    compare_texts(
        "catatonit",
        &[
            &["-c", "--", "true"],
            &["-s", "--", "true"],
            &["-v", "--", "true"],
            &["--yolo"],
            &["--help"],
            &["--grace", "1", "--", "true"],
            &["--vers"],
            &["--version=1"],
            &["-gV"],
            &["-h"],
            &[],
        ],
        &[],
        false,
    );
}

#[test]
fn own_name_keeps_real_time_signals_for_rewrite() {
    // dumb-init refuses -r 40:1; our own name takes every signal.
    let out = run(
        command(init_bin()).args(["-r", "40:1", "--rewrite=34:0", "--", "true"]),
        LIMIT,
    );
    assert_eq!((out.code(), out.stderr.as_str()), (Some(0), ""), "{out:?}");
}
