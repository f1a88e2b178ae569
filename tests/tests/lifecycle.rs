//! End to end: detached containers and their lifecycle commands, driven as
//! a user drives them: `launcher run -d`, `ps`, `logs`, `exec`, `stop`,
//! `kill`, `wait`, `rm`, `inspect`, a monitor killed at a bad moment,
//! restart policies, names in use.

mod common;

use common::{eventually, stderr, stdout};

use common::{CgroupParent, Kit, Tmux};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A private state root whose detached containers go when the test ends.
type Lc = common::Detached;

/// The mounts whose line names `root` (the state root of one test).
fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_string)
        .collect()
}

/// A busybox image whose StopSignal is SIGUSR1, with cradle-init in front.
fn image_with_stop_signal(kit: &Kit) -> Option<PathBuf> {
    let busybox = testkit::require_tool("busybox")?;
    let init = common::init()?;
    let out = kit.root.path().join("stopsignal.tar");
    let mut top = common::Layer::default();
    top.file("sbin/cradle-init", &std::fs::read(init).ok()?, 0o755);
    common::write_image_with(
        &out,
        &[common::busybox_layer(&busybox), top],
        serde_json::json!({
            "Entrypoint": ["/sbin/cradle-init", "--"],
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "StopSignal": "SIGUSR1",
        }),
    );
    Some(out)
}

#[test]
fn run_detached_returns_at_once_and_ps_lists_the_container() {
    let Some(lc) = Lc::new() else { return };
    let id = lc.detach(&["--name", "web"], &lc.kit.image, &["sleep", "1000"]);
    // Its record and log are the user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = lc.record_dir(&id);
    assert_eq!(mode(dir.parent().unwrap()), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("log")), 0o600);
    let out = lc.run(&["ps"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    for column in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().expect("a row for the container");
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains("\"sleep 1000\""), "{row}");
    assert!(row.contains(" Up "), "{row}");
    assert!(row.ends_with("web"), "{row}");
    // The prefix, the name and the full id all find it.
    for what in [&id[..5], "web", &id] {
        let state = lc.inspect(what);
        assert_eq!(state["Id"], id.as_str());
        assert_eq!(state["Name"], "/web");
        assert_eq!(state["State"]["Status"], "running");
        assert_eq!(state["State"]["Running"], true);
        assert!(state["State"]["Pid"].as_i64().unwrap() > 0, "{state}");
        assert_eq!(state["Config"]["Hostname"], &id[..12]);
        assert_eq!(state["RestartCount"], 0);
    }
    // Stopped, it leaves `ps` and stays in `ps -a`.
    let out = lc.run(&["kill", "web"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&lc.run(&["wait", "web"])).trim(), "137");
    assert!(!stdout(&lc.run(&["ps"])).contains("web"));
    let all = stdout(&lc.run(&["ps", "-a"]));
    assert!(all.contains("Exited (137)"), "{all}");
}

#[test]
fn logs_follow_the_output_until_the_container_ends() {
    let Some(lc) = Lc::new() else { return };
    let script = "echo ready; read go < /dev/null; for i in 1 2 3 4 5 6; do echo line $i; sleep 0.2; done; \
                  printf partial; sleep 0.2; echo ' end'; echo oops >&2";
    let id = lc.detach(&[], &lc.kit.image, &["sh", "-c", script]);
    let follower = lc
        .cmd(&["logs", "-f", &id[..8]])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    // It followed: it ended with the container, well after it started.
    assert!(started.elapsed() >= Duration::from_millis(800), "{out:?}");
    let want: String = std::iter::once("ready\n".to_string())
        .chain((1..=6).map(|i| format!("line {i}\n")))
        .chain(["partial end\n".to_string()])
        .collect();
    assert_eq!(stdout(&out), want);
    assert_eq!(stderr(&out), "oops\n");
    // Afterwards, the same whole; --tail takes the last lines.
    let out = lc.run(&["logs", &id]);
    assert_eq!(stdout(&out), want);
    // Lines of both streams count, as docker counts them.
    let out = lc.run(&["logs", "--tail", "3", &id]);
    assert_eq!(stdout(&out), "line 6\npartial end\n");
    assert_eq!(stderr(&out), "oops\n");
    // -t: each line after the time it was written.
    let out = lc.run(&["logs", "-t", "--tail", "1", &id]);
    let (time, rest) = stderr(&out)
        .split_once(' ')
        .map(|(t, r)| (t.to_string(), r.to_string()))
        .unwrap();
    assert!(time.starts_with("20") && time.ends_with('Z'), "{out:?}");
    assert_eq!(rest, "oops\n");
}

/// The workload writes what looks like the log's own records: they stay
/// its stdout, byte for byte, and never become stderr or extra lines.
#[test]
fn a_workload_cannot_forge_log_records() {
    let Some(lc) = Lc::new() else { return };
    let forged = "2026-01-01T00:00:00.000000000Z stderr F forged";
    let script = format!("printf '%s\\n' '{forged}'; printf '\\033[2J\\r x y\\n'");
    let id = lc.detach(&[], &lc.kit.image, &["sh", "-c", &script]);
    assert_eq!(stdout(&lc.run(&["wait", &id])), "0\n");
    let out = lc.run(&["logs", &id]);
    assert_eq!(stdout(&out), format!("{forged}\n\x1b[2J\r x y\n"));
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&lc.run(&["logs", "--tail", "1", &id])),
        "\x1b[2J\r x y\n"
    );
}

#[test]
fn logs_are_capped_with_one_rotation() {
    let Some(lc) = Lc::new() else { return };
    let out = lc
        .cmd(&["run", "-d", "--name", "chatty"])
        .env("CRADLE_LOG_MAX_SIZE", "8k")
        .arg(&lc.kit.image)
        .args([
            "sh",
            "-c",
            "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo line $i; done",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&lc.run(&["wait", "chatty"])).trim(), "0");
    let id = lc.inspect("chatty")["Id"].as_str().unwrap().to_string();
    let dir = lc.record_dir(&id);
    let size = |name: &str| std::fs::metadata(dir.join(name)).unwrap().len();
    assert!(size("log") <= 8192 && size("log.1") <= 8192);
    let text = stdout(&lc.run(&["logs", "chatty"]));
    let numbers: Vec<u32> = text
        .lines()
        .map(|l| l.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    // The newest lines, in order, without a gap, the oldest gone.
    assert_eq!(*numbers.last().unwrap(), 2000);
    assert!(numbers[0] > 1, "nothing rotated out");
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
}

#[test]
fn stop_sends_the_stop_signal_then_kills() {
    let Some(lc) = Lc::new() else { return };
    let Some(image) = image_with_stop_signal(&lc.kit) else {
        return;
    };
    let polite = "trap 'echo got USR1; exit 3' USR1; trap 'echo got TERM; exit 4' TERM; \
                  echo ready; while true; do sleep 0.1; done";
    lc.detach(&["--name", "polite"], &image, &["sh", "-c", polite]);
    eventually(10, "ready", || {
        stdout(&lc.run(&["logs", "polite"])).contains("ready")
    });
    let out = lc.run(&["stop", "polite"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "polite\n");
    assert_eq!(stdout(&lc.run(&["wait", "polite"])).trim(), "3");
    assert!(stdout(&lc.run(&["logs", "polite"])).contains("got USR1"));
    assert_eq!(lc.inspect("polite")["Config"]["StopSignal"], "SIGUSR1");

    // One that ignores it is killed once the timeout is over.
    let deaf = "trap '' USR1 TERM; echo ready; while true; do sleep 0.1; done";
    lc.detach(&["--name", "deaf"], &image, &["sh", "-c", deaf]);
    eventually(10, "ready", || {
        stdout(&lc.run(&["logs", "deaf"])).contains("ready")
    });
    let started = Instant::now();
    let out = lc.run(&["stop", "-t", "2", "deaf"]);
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "{took:?}"
    );
    assert_eq!(stdout(&lc.run(&["wait", "deaf"])).trim(), "137");
    // Stopping a stopped container is no error (docker's behaviour).
    assert!(lc.run(&["stop", "deaf"]).status.success());
}

#[test]
fn kill_sends_the_signal_and_wait_prints_the_exit_code() {
    let Some(lc) = Lc::new() else { return };
    let script = "trap 'exit 42' HUP; echo ready; while true; do sleep 0.1; done";
    let a = lc.detach(&[], &lc.kit.image, &["sh", "-c", script]);
    let b = lc.detach(&[], &lc.kit.image, &["sh", "-c", "sleep 0.5; exit 9"]);
    eventually(10, "ready", || {
        stdout(&lc.run(&["logs", &a])).contains("ready")
    });
    // `wait` blocks until the container ends.
    let waiter = lc
        .cmd(&["wait", &a, &b])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let out = lc.run(&["kill", "-s", "HUP", &a]);
    assert!(out.status.success(), "{out:?}");
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "42\n9\n");
    // Not running any more: kill is an error, wait answers at once.
    let out = lc.run(&["kill", &a]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not running"), "{out:?}");
    assert_eq!(stdout(&lc.run(&["wait", &b])), "9\n");
    let out = lc.run(&["wait", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("No such container: nosuch"),
        "{out:?}"
    );
    // With --rm the container goes at its end; `wait` still gets its code.
    let c = lc.detach(&["--rm"], &lc.kit.image, &["sh", "-c", "sleep 0.5; exit 4"]);
    assert_eq!(stdout(&lc.run(&["wait", &c])), "4\n");
    eventually(10, "the --rm container to go", || {
        !lc.record_dir(&c).exists()
    });
    assert!(!stdout(&lc.run(&["ps", "-a"])).contains(&c[..12]));
}

#[test]
fn rm_refuses_a_running_container_and_then_leaves_nothing() {
    let Some(lc) = Lc::new() else { return };
    let parent = CgroupParent::new();
    let id = lc.detach(
        &["--name", "doomed", "--cgroup-parent", &parent.name],
        &lc.kit.image,
        &["sleep", "1000"],
    );
    let pid = lc.inspect("doomed")["State"]["Pid"].as_i64().unwrap();
    assert_eq!(parent.containers().len(), 1, "no cgroup made");
    let out = lc.run(&["rm", "doomed"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("You cannot remove a running container {id}")),
        "{out:?}"
    );
    assert!(lc.inspect("doomed")["State"]["Running"] == true);
    let out = lc.run(&["rm", "-f", "doomed"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "doomed\n");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "still running"
    );
    assert!(!lc.record_dir(&id).exists());
    assert!(parent.containers().is_empty(), "{:?}", parent.containers());
    let mounts = mounts_under(lc.kit.root.path());
    assert!(mounts.is_empty(), "{mounts:?}");
    for sub in ["containers", "tmp", "detached"] {
        let left = common::entries(&lc.kit.root.path().join(sub));
        assert!(left.is_empty(), "left in {sub}: {left:?}");
    }
    let out = lc.run(&["inspect", "doomed"]);
    assert_eq!(out.status.code(), Some(1));
}

/// SIGKILL the monitor at a bad moment (the container running, its cgroup
/// and state directory in place): the next command says it exited with
/// 137 and reclaims all of it.
#[test]
fn a_sigkilled_monitor_is_reported_exited_and_cleaned_up() {
    let Some(lc) = Lc::new() else { return };
    let parent = CgroupParent::new();
    for next in ["ps", "wait", "rm"] {
        let name = format!("victim-{next}");
        let id = lc.detach(
            &["--name", &name, "--cgroup-parent", &parent.name],
            &lc.kit.image,
            &["sleep", "1000"],
        );
        let pid = lc.inspect(&name)["State"]["Pid"].as_i64().unwrap();
        let lock = std::fs::read_to_string(lc.record_dir(&id).join("monitor.lock")).unwrap();
        let monitor: i32 = lock.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) of the monitor this test started.
        assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);
        eventually(10, "the monitor to die", || {
            let stat = std::fs::read_to_string(format!("/proc/{monitor}/stat")).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        });
        let out = lc.run(&[next, &name]);
        match next {
            "ps" => {
                let out = lc.run(&["ps", "-a"]);
                let row = stdout(&out);
                let row = row.lines().find(|l| l.ends_with(&name)).unwrap();
                assert!(row.contains("Exited (137)"), "{row}");
            }
            "wait" => assert_eq!(stdout(&out), "137\n"),
            _ => assert!(out.status.success(), "{out:?}"),
        }
        eventually(10, "the container's processes to go", || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(parent.containers().is_empty(), "{:?}", parent.containers());
        let left = common::entries(&lc.kit.root.path().join("containers"));
        assert!(left.is_empty(), "left in containers: {left:?}");
        if next != "rm" {
            let state = lc.inspect(&name);
            assert_eq!(state["State"]["Status"], "exited");
            assert_eq!(state["State"]["ExitCode"], 137);
            assert!(lc.run(&["rm", &name]).status.success());
        }
        assert!(!lc.record_dir(&id).exists());
    }
    // Killed between two starts (backing off): exited, its last status
    // replaced by the kill's, no restart ever comes.
    lc.detach(
        &["--name", "between", "--restart", "always"],
        &lc.kit.image,
        &["sh", "-c", "sleep 0.3; exit 1"],
    );
    eventually(20, "a restart", || {
        lc.inspect("between")["RestartCount"].as_u64().unwrap() >= 1
    });
    let id = lc.inspect("between")["Id"].as_str().unwrap().to_string();
    let lock = std::fs::read_to_string(lc.record_dir(&id).join("monitor.lock")).unwrap();
    let monitor: i32 = lock.split_whitespace().next().unwrap().parse().unwrap();
    eventually(20, "a back-off", || {
        lc.inspect("between")["State"]["Status"] == "restarting"
    });
    // SAFETY: kill(2) of the monitor this test started.
    assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);
    eventually(10, "the monitor to die", || {
        let stat = std::fs::read_to_string(format!("/proc/{monitor}/stat")).unwrap_or_default();
        stat.is_empty() || stat.contains(") Z ")
    });
    assert_eq!(stdout(&lc.run(&["wait", "between"])), "137\n");
    let count = lc.inspect("between")["RestartCount"].clone();
    std::thread::sleep(Duration::from_millis(500));
    let state = lc.inspect("between");
    assert_eq!(state["State"]["Status"], "exited");
    assert_eq!(state["RestartCount"], count);
    assert!(common::entries(&lc.kit.root.path().join("containers")).is_empty());
    let mounts = mounts_under(lc.kit.root.path());
    assert!(mounts.is_empty(), "{mounts:?}");
}

#[test]
fn exec_runs_in_the_containers_namespaces_and_cgroup_with_its_restrictions() {
    let Some(lc) = Lc::new() else { return };
    let parent = CgroupParent::new();
    let id = lc.detach(
        &[
            "--name",
            "box",
            "--cgroup-parent",
            &parent.name,
            "-e",
            "FROM_RUN=1",
        ],
        &lc.kit.image,
        &["sleep", "1000"],
    );
    let pid = lc.inspect("box")["State"]["Pid"].as_i64().unwrap();
    let script = "echo host=$(hostname); for n in mnt uts ipc net pid cgroup; do echo $n=$(readlink /proc/self/ns/$n); done; \
                  echo env=$FROM_RUN$EXTRA; echo cwd=$(pwd); grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  cat /proc/1/cmdline | tr '\\0' ' '; echo";
    let out = lc.run(&[
        "exec", "-e", "EXTRA=2", "-w", "/tmp", "box", "sh", "-c", script,
    ]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains(&format!("host={}\n", &id[..12])), "{text}");
    for ns in ["mnt", "uts", "ipc", "net", "pid", "cgroup"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let line = format!("{ns}={}\n", theirs.display());
        assert!(text.contains(&line), "{ns}: {text}");
    }
    assert!(text.contains("env=12\n"), "{text}");
    assert!(text.contains("cwd=/tmp\n"), "{text}");
    assert!(text.contains("CapEff:\t00000000a80425fb"), "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    // PID 1 of the same PID namespace: the container's init.
    assert!(text.contains("cradle-init"), "{text}");
    // In the container's cgroup: counted there while it runs.
    let marker = lc
        .cmd(&["exec", "box", "sh", "-c", "echo $$; sleep 1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // memory (v1) or the one v2 tree: joined by every container.
    let cgroup = parent.container_dir("memory").unwrap();
    eventually(10, "the exec'd process in the container's cgroup", || {
        let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
        procs.lines().count() >= 3
    });
    let out = lc.run(&["rm", "-f", "box"]);
    assert!(out.status.success(), "{out:?}");
    let out = marker.wait_with_output().unwrap();
    assert!(!out.status.success());
    let id = lc.detach(&["--name", "box2"], &lc.kit.image, &["sleep", "1000"]);
    // -u and -i: another user, and stdin passed on.
    let out = lc.run(&["exec", "-u", "65534:65534", "box2", "id", "-u"]);
    assert_eq!(stdout(&out), "65534\n", "{out:?}");
    let mut cat = lc
        .cmd(&["exec", "-i", "box2", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut cat.stdin.take().unwrap(), b"through stdin\n").unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(stdout(&out), "through stdin\n", "{out:?}");
    // The status passes through; a command that cannot run is docker's 127.
    assert_eq!(
        lc.run(&["exec", &id[..6], "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    let out = lc.run(&["exec", "box2", "no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    // Not running: refused.
    lc.run(&["kill", "box2"]);
    lc.run(&["wait", "box2"]);
    let out = lc.run(&["exec", "box2", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr(&out).contains("is not running"), "{out:?}");
}

#[test]
fn exec_it_gives_a_shell_on_a_pty_in_the_container() {
    let Some(lc) = Lc::new() else { return };
    if testkit::require_tool("tmux").is_none() {
        return;
    }
    let id = lc.detach(&["--name", "tty"], &lc.kit.image, &["sleep", "1000"]);
    let dir = lc.kit.root.path();
    let script = dir.join("session.sh");
    std::fs::write(
        &script,
        format!(
            "env -u RUST_BACKTRACE CRADLE_ROOT={d} {l} exec -it tty /bin/sh\necho $? > {d}/status\nsleep 60\n",
            d = dir.display(),
            l = lc.kit.launcher.display(),
        ),
    )
    .unwrap();
    let tmux = Tmux::start(format!("cradle-lifecycle-{}", std::process::id()), &script);
    tmux.wait_for("#", 10);
    tmux.send(&[
        "echo typed-$((6*7)) $(hostname) $(readlink /proc/self/fd/0)",
        "Enter",
    ]);
    tmux.wait_for(&format!("typed-42 {} /dev/pts/", &id[..12]), 10);
    // The container's PID namespace: its init is PID 1, its sleep is there.
    tmux.send(&[
        "echo init=$(cat /proc/1/comm) sleeps=$(pidof sleep)",
        "Enter",
    ]);
    tmux.wait_for("init=cradle-init sleeps=", 10);
    tmux.send(&["exit 5", "Enter"]);
    let status = dir.join("status");
    eventually(10, "the exec's status", || {
        std::fs::read_to_string(&status).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&status).unwrap().trim(), "5");
    // The container runs on.
    assert_eq!(lc.inspect("tty")["State"]["Status"], "running");
}

#[test]
fn restart_on_failure_restarts_exactly_n_times() {
    let Some(lc) = Lc::new() else { return };
    let id = lc.detach(
        &["--name", "flaky", "--restart", "on-failure:3"],
        &lc.kit.image,
        &["sh", "-c", "echo attempt; exit 1"],
    );
    let out = lc.run(&["wait", "flaky"]);
    assert_eq!(stdout(&out), "1\n", "{out:?}");
    let runs = stdout(&lc.run(&["logs", "flaky"]));
    assert_eq!(runs, "attempt\n".repeat(4), "one run and three restarts");
    // Backing off: 100 ms before the first restart, doubling. The log's
    // records carry the time each line was read.
    let log = std::fs::read_to_string(lc.record_dir(&id).join("log")).unwrap();
    let times: Vec<f64> = log
        .lines()
        .map(|l| {
            let clock = l.split(['T', 'Z']).nth(1).unwrap();
            let parts: Vec<f64> = clock.split(':').map(|p| p.parse().unwrap()).collect();
            parts[0] * 3600.0 + parts[1] * 60.0 + parts[2]
        })
        .collect();
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, least) in gaps.iter().zip([0.1, 0.2, 0.4]) {
        assert!(*gap >= least, "restarted too soon: {gaps:?}");
    }
    let state = lc.inspect(&id);
    assert_eq!(state["RestartCount"], 3);
    assert_eq!(state["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(state["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(state["State"]["ExitCode"], 1);
    let ps = stdout(&lc.run(&["ps", "-a"]));
    assert!(
        ps.contains("Exited (1)") && ps.contains("(restarted 3 times)"),
        "{ps}"
    );

    // A success is not restarted; `always` is, until stopped.
    lc.detach(
        &["--name", "fine", "--restart", "on-failure"],
        &lc.kit.image,
        &["true"],
    );
    assert_eq!(stdout(&lc.run(&["wait", "fine"])), "0\n");
    assert_eq!(lc.inspect("fine")["RestartCount"], 0);
    lc.detach(
        &["--name", "forever", "--restart", "always"],
        &lc.kit.image,
        &["sh", "-c", "sleep 0.1"],
    );
    eventually(20, "two restarts", || {
        lc.inspect("forever")["RestartCount"].as_u64().unwrap() >= 2
    });
    let out = lc.run(&["stop", "forever"]);
    assert!(out.status.success(), "{out:?}");
    let count = lc.inspect("forever")["RestartCount"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(lc.inspect("forever")["State"]["Status"], "exited");
    assert_eq!(
        lc.inspect("forever")["RestartCount"].as_u64().unwrap(),
        count
    );
    let image = lc.kit.image.display().to_string();
    for bad in [
        &["run", "-d", "--restart", "sometimes", &image][..],
        &["run", "--restart", "always", &image, "true"],
        &["run", "-d", "--rm", "--restart", "always", &image, "true"],
        &["run", "-d", "--keep", "--restart", "always", &image, "true"],
    ] {
        let out = lc.run(bad);
        assert_eq!(out.status.code(), Some(125), "{bad:?}: {out:?}");
        assert!(stderr(&out).contains("restart"), "{bad:?}: {out:?}");
    }
    assert!(stdout(&lc.run(&["ps", "-a"])).lines().count() == 4);
}

#[test]
fn a_name_in_use_is_refused_with_dockers_message() {
    let Some(lc) = Lc::new() else { return };
    let id = lc.detach(&["--name", "taken"], &lc.kit.image, &["sleep", "1000"]);
    let conflict =
        format!("Conflict. The container name \"/taken\" is already in use by container \"{id}\"");
    for foreground in [false, true] {
        let mut cmd = lc.cmd(&["run"]);
        if !foreground {
            cmd.arg("-d");
        }
        let out = cmd
            .args(["--name", "taken"])
            .arg(&lc.kit.image)
            .arg("true")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert!(stderr(&out).contains(&conflict), "{out:?}");
    }
    // Still one container of that name, the first, untouched.
    assert_eq!(lc.inspect("taken")["Id"], id.as_str());
    // Exited, the name stays taken until rm.
    lc.run(&["kill", "taken"]);
    lc.run(&["wait", "taken"]);
    let out = lc.run(&[
        "run",
        "-d",
        "--name",
        "taken",
        &lc.kit.image.display().to_string(),
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(lc.run(&["rm", "taken"]).status.success());
    lc.detach(&["--name", "taken"], &lc.kit.image, &["true"]);
    // A bad name is refused, and leaves nothing.
    let out = lc.run(&[
        "run",
        "-d",
        "--name",
        "a/b",
        &lc.kit.image.display().to_string(),
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr(&out).contains("`a/b`"), "{out:?}");
    let out = lc.run(&["run", "-d", "/nonexistent/image.tar", "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr(&out).contains("/nonexistent/image.tar"), "{out:?}");
    let left = common::entries(&lc.kit.root.path().join("detached"));
    assert_eq!(left.len(), 1, "{left:?}");
}

/// `run --keep --name NAME` keeps the writable layer: reusing the name is
/// refused (it silently deleted the layer), `rm NAME` removes it; without
/// a name the launcher says where the layer is.
#[test]
fn a_kept_layer_is_never_removed_by_reusing_its_name() {
    let Some(lc) = Lc::new() else { return };
    let image = lc.kit.image.display().to_string();
    let out = lc.run(&[
        "run",
        "--keep",
        "--name",
        "kept",
        &image,
        "sh",
        "-c",
        "echo data > /written",
    ]);
    assert!(out.status.success(), "{out:?}");
    let upper = lc.kit.root.path().join("containers/kept/upper/written");
    let out = lc.run(&["run", "--name", "kept", &image, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr(&out).contains("The container name \"/kept\" is already in use"),
        "{out:?}"
    );
    assert_eq!(std::fs::read_to_string(&upper).unwrap(), "data\n");
    let out = lc.run(&["run", "-d", "--name", "kept", &image, "true"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let out = lc.run(&["rm", "kept"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!lc.kit.root.path().join("containers/kept").exists());

    let out = lc.run(&["run", "--keep", &image, "sh", "-c", "echo more > /written"]);
    assert!(out.status.success(), "{out:?}");
    let text = stderr(&out);
    let dir = lc.kit.root.path().join("containers");
    let kept = common::entries(&dir);
    assert_eq!(kept.len(), 1, "{kept:?}");
    let layer = dir.join(&kept[0]).join("upper");
    assert!(text.contains(&format!("`{}`", layer.display())), "{text}");
    assert_eq!(
        std::fs::read_to_string(layer.join("written")).unwrap(),
        "more\n"
    );
    let out = lc.run(&["rm", &kept[0].to_string_lossy()]);
    assert!(out.status.success(), "{out:?}");
    assert!(common::entries(&dir).is_empty());
}

/// An unprivileged user's launcher, its state under its own
/// `$HOME/.local/share/cradle` (no CRADLE_ROOT), every detached container
/// removed when the test ends.
struct AsUser {
    _top: tempfile::TempDir,
    home: PathBuf,
    launcher: PathBuf,
    image: PathBuf,
    setpriv: PathBuf,
}

impl AsUser {
    const UID: u32 = 65534;

    fn new(kit: &Kit) -> Option<AsUser> {
        use std::os::unix::fs::PermissionsExt;
        let setpriv = testkit::require_tool("setpriv")?;
        let top = tempfile::Builder::new()
            .prefix("cradle-lifecycle-user-")
            .tempdir()
            .ok()?;
        let dir = top.path();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).ok()?;
        let home = dir.join("home");
        std::fs::create_dir(&home).ok()?;
        std::os::unix::fs::chown(&home, Some(Self::UID), Some(Self::UID)).ok()?;
        let copy = |from: &Path, name: &str, mode: u32| {
            let to = dir.join(name);
            common::copy_file(from, &to, mode);
            to
        };
        copy(&common::init()?, "cradle-init", 0o755);
        Some(AsUser {
            launcher: copy(&kit.launcher, "launcher", 0o755),
            image: copy(&kit.image, "image.tar", 0o644),
            home,
            setpriv,
            _top: top,
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.setpriv)
            .args(["--reuid", &Self::UID.to_string()])
            .args(["--regid", &Self::UID.to_string(), "--clear-groups"])
            .arg(&self.launcher)
            .args(args)
            .env("HOME", &self.home)
            .env_remove("CRADLE_ROOT")
            .env_remove("XDG_DATA_HOME")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        let dir = self.home.join(".local/share/cradle/detached");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !id.starts_with('.') {
                let _ = self.run(&["rm", "-f", &id]);
            }
        }
    }
}

#[test]
fn rootless_commands_use_the_users_own_state_root() {
    let Some(lc) = Lc::new() else { return };
    let Some(user) = AsUser::new(&lc.kit) else {
        return;
    };
    let image = user.image.display().to_string();
    let out = user.run(&["run", "-d", "--name", "mine", &image, "sleep", "1000"]);
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out).trim().to_string();
    let record = user.home.join(".local/share/cradle/detached").join(&id);
    assert!(record.join("record.json").is_file());
    let ps = stdout(&user.run(&["ps"]));
    assert!(ps.contains(&id[..12]) && ps.contains("mine"), "{ps}");
    // Root's own state root knows nothing of it.
    assert!(!stdout(&lc.run(&["ps", "-a"])).contains("mine"));
    assert_eq!(lc.run(&["stop", "mine"]).status.code(), Some(1));
    // exec enters its user namespace too: root inside, the same hostname.
    let out = user.run(&["exec", "mine", "sh", "-c", "echo $(id -u) $(hostname)"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), format!("0 {}\n", &id[..12]));
    let out = user.run(&["stop", "-t", "1", "mine"]);
    assert!(out.status.success(), "{out:?}");
    let code = stdout(&user.run(&["wait", "mine"]));
    assert!(["137\n", "143\n"].contains(&code.as_str()), "{code}");
    let out = user.run(&["rm", "mine"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!record.exists());
}

/// The monitor works from `/`, so that the caller's directory is not kept
/// busy; an image given relative to it still restarts.
#[test]
fn the_monitor_keeps_no_hold_on_the_callers_directory() {
    let Some(lc) = Lc::new() else { return };
    let image = &lc.kit.image;
    let out = lc
        .cmd(&["run", "-d", "--name", "rel", "--restart", "on-failure:1"])
        .current_dir(image.parent().unwrap())
        .arg(image.file_name().unwrap())
        .args(["sh", "-c", "sleep 0.5; exit 1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = stdout(&out).trim().to_string();
    let lock = std::fs::read_to_string(lc.record_dir(&id).join("monitor.lock")).unwrap();
    let monitor = lock.split_whitespace().next().unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{monitor}/cwd")).unwrap(),
        Path::new("/")
    );
    assert_eq!(stdout(&lc.run(&["wait", "rel"])), "1\n");
    let state = lc.inspect("rel");
    assert_eq!(state["RestartCount"], 1);
    assert_eq!(state["Image"], image.file_name().unwrap().to_str().unwrap());
}

#[test]
fn an_oom_kill_is_in_the_state() {
    let Some(lc) = Lc::new() else { return };
    let parent = CgroupParent::new();
    let probe = format!("{}:/probe:ro", lc.kit.probe.display());
    lc.detach(
        &[
            "--name",
            "hog",
            "--memory",
            "32m",
            "--cgroup-parent",
            &parent.name,
            "-v",
            &probe,
        ],
        &lc.kit.image,
        &["/probe", "alloc", "200"],
    );
    assert_eq!(stdout(&lc.run(&["wait", "hog"])), "137\n");
    let state = lc.inspect("hog");
    assert_eq!(state["State"]["OOMKilled"], true, "{state}");
    let error = state["State"]["Error"].as_str().unwrap();
    assert!(error.contains("out of memory (--memory 32m)"), "{error}");
    assert!(parent.containers().is_empty(), "{:?}", parent.containers());
    // And a clean exit is not one.
    lc.detach(&["--name", "calm"], &lc.kit.image, &["true"]);
    assert_eq!(stdout(&lc.run(&["wait", "calm"])), "0\n");
    assert_eq!(lc.inspect("calm")["State"]["OOMKilled"], false);
    let quiet = stdout(&lc.run(&["ps", "-a", "-q"]));
    assert_eq!(quiet.lines().count(), 2, "{quiet}");
    assert!(quiet.lines().all(|l| l.len() == 12), "{quiet}");
}

/// Runs `f` on a thread moved into a new network namespace with `lo` up,
/// the test's "host" (as in network.rs): the bridge, rules and leases of
/// the containers it starts are that namespace's, never the machine's.
fn in_private_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: affects this thread only, which ends with the test.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS on a datagram socket, with
            // an ifreq naming `lo`; the socket is closed after.
            unsafe {
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                assert!(sock >= 0);
                let mut req: libc::ifreq = std::mem::zeroed();
                req.ifr_name[0] = b'l' as libc::c_char;
                req.ifr_name[1] = b'o' as libc::c_char;
                assert_eq!(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req), 0);
                req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                assert_eq!(libc::ioctl(sock, libc::SIOCSIFFLAGS, &req), 0);
                libc::close(sock);
            }
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The containers' port rules in the launcher's nft table of the calling
/// thread's network namespace, and the leases under `state`.
fn network_left(state: &Path) -> (usize, usize) {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "cradle"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("comment \"cradle:"))
        .count();
    let leases = std::fs::read_dir(state.join("leases"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|pool| std::fs::read_dir(pool.path()).ok())
        .map(|files| files.count())
        .sum();
    (rules, leases)
}

/// A killed monitor's container on the bridge, with a published port: the
/// next command removes its rules and lease (and cgroup) too.
#[test]
fn a_sigkilled_monitors_network_is_reclaimed() {
    let Some(lc) = Lc::new() else { return };
    if testkit::require_tool("nft").is_none() {
        return;
    }
    let parent = CgroupParent::new();
    let state = tempfile::Builder::new()
        .prefix("cradle-lifecycle-net-")
        .tempdir()
        .unwrap();
    let tag = std::process::id() & 0xfffff;
    let env = [
        ("CRADLE_NETWORK_STATE", state.path().display().to_string()),
        ("CRADLE_BRIDGE", format!("crl{tag:x}")),
        ("CRADLE_SUBNET", format!("10.232.{}.0/24", tag % 250)),
    ];
    in_private_host(|| {
        let probe = format!("{}:/probe:ro", lc.kit.probe.display());
        let out = lc
            .cmd(&["run", "-d", "--name", "net", "--network", "bridge"])
            .args(["-p", "127.0.0.1:18190:8080", "-v", &probe])
            .args(["--cgroup-parent", &parent.name])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .arg(&lc.kit.image)
            .args(["/probe", "serve", "8080"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let id = stdout(&out).trim().to_string();
        assert_eq!(network_left(state.path()), (2, 1), "rules and lease");
        let lock = std::fs::read_to_string(lc.record_dir(&id).join("monitor.lock")).unwrap();
        let monitor: i32 = lock.split_whitespace().next().unwrap().parse().unwrap();
        // SAFETY: kill(2) of the monitor this test started.
        assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);
        eventually(10, "the monitor to die", || {
            let stat = std::fs::read_to_string(format!("/proc/{monitor}/stat")).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        });
        let ps = stdout(&lc.run(&["ps", "-a"]));
        assert!(ps.contains("Exited (137)"), "{ps}");
        assert_eq!(network_left(state.path()), (0, 0), "reclaimed");
        assert!(lc.run(&["rm", "net"]).status.success());
    });
    assert!(parent.containers().is_empty(), "{:?}", parent.containers());
}

/// A workload writing as fast as it can, without a newline: `run -d`
/// returns, `ps` and `stop` work, and the log stays within its cap.
#[test]
fn a_workload_writing_without_end_is_still_kept_in_check() {
    let Some(lc) = Lc::new() else { return };
    let started = Instant::now();
    let out = lc
        .cmd(&["run", "-d", "--name", "flood"])
        .env("CRADLE_LOG_MAX_SIZE", "1m")
        .arg(&lc.kit.image)
        .args(["cat", "/dev/zero"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "run -d hung");
    let id = stdout(&out).trim().to_string();
    std::thread::sleep(Duration::from_secs(1));
    assert!(stdout(&lc.run(&["ps"])).contains("flood"));
    let out = lc.run(&["stop", "-t", "5", "flood"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(lc.inspect("flood")["State"]["Status"], "exited");
    let dir = lc.record_dir(&id);
    for name in ["log", "log.1"] {
        let size = std::fs::metadata(dir.join(name)).unwrap().len();
        assert!(size <= 1 << 20, "{name}: {size}");
    }
}
