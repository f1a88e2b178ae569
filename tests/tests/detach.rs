//! End to end: docker's detach keys. A foreground `run -it` under a real
//! terminal (tmux) is left running with Ctrl-P Ctrl-Q (or `--detach-keys`)
//! and becomes a detached container the lifecycle commands act on; the
//! keys' prefix followed by another key reaches the workload; a SIGKILL of
//! the process the shell waits for, before or after the detach, does what
//! it should.

mod common;

use common::{eventually, stdout};

use common::{CgroupParent, Kit, Tmux};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A shell script in tmux running `launcher run ARGS`, then writing `$?`.
struct Session {
    tmux: Tmux,
    status: PathBuf,
}

impl Session {
    /// `args` is shell text (quoted as needed) after `launcher run`.
    fn start(kit: &Kit, tag: &str, args: &str) -> Option<Session> {
        testkit::require_tool("tmux")?;
        let dir = kit.root.path();
        let script = dir.join(format!("{tag}.sh"));
        let status = dir.join(format!("{tag}.status"));
        std::fs::write(
            &script,
            format!(
                "trap \"echo script-term\" TERM\nstty -a > {s}.before\nenv -u RUST_BACKTRACE CRADLE_ROOT={d} {l} run {args}\nrc=$?\nstty -a > {s}.after\necho $rc > {s}\nsleep 600\n",
                d = dir.display(),
                l = kit.launcher.display(),
                s = status.display(),
            ),
        )
        .unwrap();
        let socket = format!("cradle-detach-{}-{tag}", std::process::id());
        let tmux = Tmux::start(socket, &script);
        Some(Session { tmux, status })
    }

    /// The status the shell saw, once it saw one.
    fn status(&self, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !std::fs::read_to_string(&self.status).is_ok_and(|s| s.ends_with('\n')) {
            let screen = self.tmux.screen();
            assert!(Instant::now() < deadline, "no $? from the shell:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.status)
            .unwrap()
            .trim()
            .to_string()
    }

    fn exited(&self) -> bool {
        self.status.exists()
    }

    /// The pid of the pane's shell: the session leader, whose process
    /// group the launcher's client is in.
    fn shell(&self) -> i32 {
        let out = self
            .tmux
            .cmd()
            .args(["display-message", "-p", "-t", "t", "#{pane_pid}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }

    /// Detaches with `keys` and returns the id the launcher printed.
    fn detach(&self, keys: &[&str]) -> String {
        self.tmux.send(keys);
        let screen = self.tmux.wait_for("read escape sequence: container ", 10);
        assert_eq!(self.status(10), "0", "{screen}");
        let id: String = screen
            .split("read escape sequence: container ")
            .nth(1)
            .unwrap()
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        assert_eq!(id.len(), 32, "{screen}");
        // The terminal has its modes back (the size may differ).
        let modes = |end: &str| {
            let text = std::fs::read_to_string(self.status.with_extension(end)).unwrap();
            text.lines().skip(1).collect::<Vec<_>>().join("\n")
        };
        assert_eq!(modes("status.before"), modes("status.after"));
        id
    }
}

fn launcher(kit: &Kit, args: &[&str]) -> Output {
    Command::new(&kit.launcher)
        .env("CRADLE_ROOT", kit.root.path())
        .env_remove("RUST_BACKTRACE")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The pids of processes whose command line is `text`.
fn processes(text: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == text)
        })
        .collect()
}

/// The state letter of /proc/PID/stat (`S`, `T` …).
fn state(pid: i32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .map(|(_, rest)| rest[..1].to_string())
        .unwrap_or_default()
}

/// A unique `sleep` argument, so that the test finds its own workload.
fn marker() -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("1{}{n}.5", std::process::id() % 100_000)
}

/// Nothing of the container is left: no mount, cgroup, state directory,
/// record.
fn assert_nothing_left(kit: &Kit, parent: &CgroupParent) {
    let root = kit.root.path().display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounts: Vec<&str> = mounts.lines().filter(|l| l.contains(&root)).collect();
    assert!(mounts.is_empty(), "{mounts:?}");
    assert!(parent.containers().is_empty(), "{:?}", parent.containers());
    for sub in ["containers", "tmp", "detached"] {
        let dir = kit.root.path().join(sub);
        if dir.exists() {
            let left = common::entries(&dir);
            assert!(left.is_empty(), "left in {sub}: {left:?}");
        }
    }
}

/// busybox (od, stty) with cradle-init in front.
fn busybox_image(kit: &Kit) -> Option<PathBuf> {
    let busybox = testkit::require_tool("busybox")?;
    let init = common::init()?;
    let out = kit.root.path().join("busybox.tar");
    let mut top = common::Layer::default();
    top.file("sbin/cradle-init", &std::fs::read(init).ok()?, 0o755);
    common::write_image_with(
        &out,
        &[common::busybox_layer(&busybox), top],
        serde_json::json!({
            "Entrypoint": ["/sbin/cradle-init", "--"],
            "Cmd": ["/bin/sh"],
            "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
        }),
    );
    Some(out)
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// The defect: Ctrl-Z stops a non-shell workload and nothing resumes it.
/// Ctrl-P Ctrl-Q gives the shell back (0, the id) and leaves it running
/// detached: `ps`, `exec`, `inspect` see it, `rm -f` ends it and nothing is
/// left.
#[test]
fn ctrl_p_ctrl_q_frees_a_terminal_wedged_by_ctrl_z_and_leaves_the_container_detached() {
    let Some(kit) = Kit::new() else { return };
    let parent = CgroupParent::new();
    let sleep = marker();
    let Some(session) = Session::start(
        &kit,
        "wedged",
        &format!(
            "-it --cgroup-parent {} {} sleep {sleep}",
            parent.name,
            shell_quote(&kit.image)
        ),
    ) else {
        return;
    };
    let mut pids = Vec::new();
    eventually(10, "the workload", || {
        pids = processes(&format!("sleep {sleep}"));
        pids.len() == 1
    });
    let pid = pids[0];
    session.tmux.send(&["C-z"]);
    eventually(5, "Ctrl-Z to stop the workload", || state(pid) == "T");
    // Wedged: Ctrl-C reaches a stopped process no more than Ctrl-Z did.
    session.tmux.send(&["C-c"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!session.exited(), "the run ended before the detach");
    let id = session.detach(&["C-p", "C-q"]);
    assert_eq!(state(pid), "T", "the container went with the client");
    let out = launcher(&kit, &["ps"]);
    let row = stdout(&out);
    let row = row.lines().find(|l| l.starts_with(&id[..12]));
    assert!(row.is_some_and(|r| r.contains("Up ")), "{out:?}");
    let out = launcher(&kit, &["exec", &id[..12], "cat", "/etc/hostname"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), format!("{}\n", &id[..12]));
    let out = launcher(&kit, &["inspect", &id]);
    let state_json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        state_json[0]["State"]["Pid"].as_i64(),
        Some(i64::from(
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("PPid:"))
                        .and_then(|p| p.trim().parse::<i32>().ok())
                })
                .unwrap()
        )),
        "the recorded pid is not the workload's init"
    );
    assert_eq!(state_json[0]["Config"]["Tty"], true);
    let out = launcher(&kit, &["rm", "-f", &id[..12]]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the workload outlived rm -f"
    );
    assert_nothing_left(&kit, &parent);
    assert_eq!(launcher(&kit, &["inspect", &id]).status.code(), Some(1));
}

/// Ctrl-P then another key: both reach the workload (docker's rule); after
/// the detach, the output goes to the log.
#[test]
fn ctrl_p_then_another_key_passes_both_and_later_output_is_logged() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = busybox_image(&kit) else {
        return;
    };
    let script =
        "stty -ixon; echo ready; od -c; i=0; while :; do echo tick-$i; i=$((i+1)); sleep 0.1; done";
    let Some(session) = Session::start(
        &kit,
        "passes",
        &format!("-it {} sh -c '{script}'", shell_quote(&image)),
    ) else {
        return;
    };
    session.tmux.wait_for("ready", 10);
    session
        .tmux
        .send(&["C-p", "x", "Enter", "C-p", "C-p", "y", "Enter", "C-d"]);
    session.tmux.wait_for("020   x  \\n", 10);
    session.tmux.wait_for("020 020   y  \\n", 10);
    session.tmux.wait_for("tick-", 10);
    assert!(!session.exited());
    let id = session.detach(&["C-p", "C-q"]);
    let ticks = |out: &Output| {
        stdout(out)
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("tick-"))
            .filter_map(|n| n.parse::<u64>().ok())
            .max()
    };
    let mut first = None;
    eventually(10, "output in the log", || {
        first = ticks(&launcher(&kit, &["logs", &id]));
        first.is_some()
    });
    eventually(10, "more output in the log", || {
        ticks(&launcher(&kit, &["logs", &id])) > first
    });
    let out = launcher(&kit, &["kill", &id]);
    assert!(out.status.success(), "{out:?}");
    eventually(10, "the record to go (removed at the end, as --rm)", || {
        launcher(&kit, &["inspect", &id]).status.code() == Some(1)
    });
}

/// `--detach-keys` replaces Ctrl-P Ctrl-Q (which then reaches the
/// workload), also for `-t` without `-i`; `""` turns detaching off; a key
/// docker would refuse is refused, naming it.
#[test]
fn detach_keys_override_the_sequence_and_empty_turns_it_off() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = busybox_image(&kit) else {
        return;
    };
    let image = shell_quote(&image);
    let script = "stty -ixon; echo ready; od -c; echo od-done; exec sleep 1000";
    let Some(other) = Session::start(
        &kit,
        "other",
        &format!("-it --detach-keys ctrl-a,d {image} sh -c '{script}'"),
    ) else {
        return;
    };
    other.tmux.wait_for("ready", 10);
    other.tmux.send(&["C-p", "C-q", "z", "Enter", "C-d"]);
    other.tmux.wait_for("020 021   z  \\n", 10);
    other.tmux.wait_for("od-done", 10);
    assert!(!other.exited());
    let id = other.detach(&["C-a", "d"]);
    assert!(launcher(&kit, &["rm", "-f", &id]).status.success());

    let Some(no_i) = Session::start(
        &kit,
        "noi",
        &format!("-t --detach-keys q {image} sh -c 'echo ready; exec sleep 1000'"),
    ) else {
        return;
    };
    no_i.tmux.wait_for("ready", 10);
    let id = no_i.detach(&["q"]);
    assert!(launcher(&kit, &["rm", "-f", &id]).status.success());

    let script = "stty -ixon; echo ready; od -c; exit 3";
    let Some(off) = Session::start(
        &kit,
        "off",
        &format!("-it --detach-keys '' {image} sh -c '{script}'"),
    ) else {
        return;
    };
    off.tmux.wait_for("ready", 10);
    off.tmux.send(&["C-p", "C-q", "w", "Enter", "C-d"]);
    off.tmux.wait_for("020 021   w  \\n", 10);
    assert_eq!(off.status(10), "3");

    let out = Command::new(&kit.launcher)
        .env("CRADLE_ROOT", kit.root.path())
        .args(["run", "-it", "--detach-keys", "ctrl-1"])
        .arg(&kit.image)
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid detach key `ctrl-1`"), "{err}");
    for sub in ["containers", "detached"] {
        let dir = kit.root.path().join(sub);
        assert!(!dir.exists() || common::entries(&dir).is_empty(), "{sub}");
    }
}

/// A container detached by the keys keeps its name (refused to another),
/// and its exit status is what `wait` prints.
#[test]
fn wait_prints_the_exit_code_of_a_container_detached_by_the_keys() {
    let Some(kit) = Kit::new() else { return };
    let script = "trap \"exit 7\" TERM; echo ready; while :; do sleep 0.1; done";
    let Some(session) = Session::start(
        &kit,
        "waited",
        &format!(
            "-it --name keyed {} sh -c '{script}'",
            shell_quote(&kit.image)
        ),
    ) else {
        return;
    };
    session.tmux.wait_for("ready", 10);
    let id = session.detach(&["C-p", "C-q"]);
    let out = Command::new(&kit.launcher)
        .env("CRADLE_ROOT", kit.root.path())
        .args(["run", "-d", "--name", "keyed"])
        .arg(&kit.image)
        .args(["sleep", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is already in use"),
        "{out:?}"
    );
    let waiter = Command::new(&kit.launcher)
        .env("CRADLE_ROOT", kit.root.path())
        .args(["wait", "keyed"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = launcher(&kit, &["kill", "-s", "TERM", "keyed"]);
    assert!(out.status.success(), "{out:?}");
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "7\n");
    assert_eq!(launcher(&kit, &["inspect", &id]).status.code(), Some(1));
}

/// After the detach, the process the shell waited for is gone and the
/// launcher is out of its process group and session: a SIGKILL to the
/// group and the terminal's hangup do not touch the container.
#[test]
fn a_sigkill_of_the_clients_group_after_the_detach_leaves_the_container_running() {
    let Some(kit) = Kit::new() else { return };
    let parent = CgroupParent::new();
    let sleep = marker();
    let Some(session) = Session::start(
        &kit,
        "after",
        &format!(
            "-it --cgroup-parent {} {} sleep {sleep}",
            parent.name,
            shell_quote(&kit.image)
        ),
    ) else {
        return;
    };
    eventually(10, "the workload", || {
        processes(&format!("sleep {sleep}")).len() == 1
    });
    let id = session.detach(&["C-p", "C-q"]);
    let shell = session.shell();
    // SAFETY: kill(2) of the process group of the tmux pane this test made.
    assert_eq!(unsafe { libc::kill(-shell, libc::SIGKILL) }, 0);
    drop(session);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(processes(&format!("sleep {sleep}")).len(), 1);
    let out = launcher(&kit, &["inspect", &id]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["State"]["Status"], "running", "{out:?}");
    let out = launcher(&kit, &["stop", "-t", "1", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(processes(&format!("sleep {sleep}")).is_empty());
    assert_nothing_left(&kit, &parent);
}

/// Before the detach, the client is the launcher as far as anyone can
/// tell: its SIGKILL takes the container down (the launcher behind it dies
/// with it), as does a SIGKILL of the launcher behind it (the client exits
/// 137 and gives the terminal back), and what they leave is reclaimed by
/// the next run, as for a SIGKILLed launcher.
#[test]
fn a_sigkilled_client_or_launcher_before_the_detach_leaves_nothing() {
    let Some(kit) = Kit::new() else { return };
    let parent = CgroupParent::new();
    for victim in ["client", "launcher"] {
        let sleep = marker();
        let Some(session) = Session::start(
            &kit,
            &format!("before-{victim}"),
            &format!(
                "-it --cgroup-parent {} {} sleep {sleep}",
                parent.name,
                shell_quote(&kit.image)
            ),
        ) else {
            return;
        };
        eventually(10, "the workload", || {
            processes(&format!("sleep {sleep}")).len() == 1
        });
        let child_of = |pid: i32| -> i32 {
            let children =
                std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
            children.split_whitespace().next().unwrap().parse().unwrap()
        };
        let client = child_of(session.shell());
        let pid = match victim {
            "client" => client,
            _ => child_of(client),
        };
        // SAFETY: kill(2) of a process this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert_eq!(session.status(10), "137", "{victim}");
        eventually(10, "the container to die with its launcher", || {
            processes(&format!("sleep {sleep}")).is_empty()
        });
        let out = launcher(&kit, &["ps", "-a", "-q"]);
        assert_eq!(stdout(&out), "", "{out:?}");
        let out = Command::new(&kit.launcher)
            .env("CRADLE_ROOT", kit.root.path())
            .args(["run", "--cgroup-parent", &parent.name])
            .arg(&kit.image)
            .arg("true")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_nothing_left(&kit, &parent);
    }
}

/// The launcher runs behind its client, in a process group of its own
/// that has the terminal: a SIGTERM sent to the client's group (as
/// `timeout` and shells send them) reaches it once, through the client,
/// and stops the container gracefully (not lost, not doubled into the
/// second signal that kills at once).
#[test]
fn a_signal_to_the_clients_process_group_reaches_the_container_once() {
    let Some(kit) = Kit::new() else { return };
    let script =
        "trap \"echo got-term; sleep 1; exit 4\" TERM; echo ready; while :; do sleep 0.1; done";
    let Some(session) = Session::start(
        &kit,
        "group",
        &format!("-it {} sh -c '{script}'", shell_quote(&kit.image)),
    ) else {
        return;
    };
    session.tmux.wait_for("ready", 10);
    let shell = session.shell();
    // SAFETY: kill(2) of the process group of the tmux pane this test made.
    assert_eq!(unsafe { libc::kill(-shell, libc::SIGTERM) }, 0);
    assert_eq!(session.status(10), "4", "{}", session.tmux.screen());
    let screen = session.tmux.screen();
    assert_eq!(screen.matches("sent SIGTERM").count(), 1, "{screen}");
    assert!(!screen.contains("while stopping"), "{screen}");
    // Printed in raw mode, the message still ends its line: nothing after
    // it starts where it stopped (a staircase of indented lines).
    assert!(
        screen
            .lines()
            .all(|l| l.trim().is_empty() || !l.starts_with(' ')),
        "{screen}"
    );
}

/// The launcher that became the container's monitor is SIGKILLed: the
/// container dies with it, and the next command reports it exited with 137
/// and reclaims what it left, as for a `run -d` monitor.
#[test]
fn a_sigkilled_monitor_of_a_container_detached_by_the_keys_is_reported_and_cleaned_up() {
    let Some(kit) = Kit::new() else { return };
    let parent = CgroupParent::new();
    let sleep = marker();
    let Some(session) = Session::start(
        &kit,
        "monitor",
        &format!(
            "-it --cgroup-parent {} {} sleep {sleep}",
            parent.name,
            shell_quote(&kit.image)
        ),
    ) else {
        return;
    };
    eventually(10, "the workload", || {
        processes(&format!("sleep {sleep}")).len() == 1
    });
    let id = session.detach(&["C-p", "C-q"]);
    let lock = kit
        .root
        .path()
        .join("detached")
        .join(&id)
        .join("monitor.lock");
    let lock = std::fs::read_to_string(lock).unwrap();
    let monitor: i32 = lock.split_whitespace().next().unwrap().parse().unwrap();
    // It keeps no hold on the caller's directory, as `run -d`'s monitor.
    assert_eq!(
        std::fs::read_link(format!("/proc/{monitor}/cwd")).unwrap(),
        Path::new("/")
    );
    // SAFETY: kill(2) of the launcher this test started.
    assert_eq!(unsafe { libc::kill(monitor, libc::SIGKILL) }, 0);
    eventually(10, "the container to die with its monitor", || {
        processes(&format!("sleep {sleep}")).is_empty()
    });
    let out = launcher(&kit, &["wait", &id]);
    assert_eq!(stdout(&out), "137\n", "{out:?}");
    let out = launcher(&kit, &["rm", &id]);
    assert!(out.status.success(), "{out:?}");
    assert_nothing_left(&kit, &parent);
}

/// The terminal hangs up under a foreground `-it` run (the window closed,
/// ssh gone, the tmux server killed): the container gets the SIGHUP a
/// hangup means and the run ends, leaving nothing, whether a
/// non-interactive shell leads the terminal's session (it passes no SIGHUP
/// on) or the launcher's client leads it itself (`exec`, as tmux or `ssh
/// -t` run a command). The launcher's stderr is the dead terminal, so its
/// messages fail with EIO on the way: they are lost, the launcher is not.
/// Before, the first case left the container running with nobody to stop
/// it, and a message to the dead terminal panicked the launcher.
#[test]
fn a_terminal_that_hangs_up_sends_the_container_sighup_and_the_run_ends() {
    let Some(kit) = Kit::new() else { return };
    if testkit::require_tool("tmux").is_none() {
        return;
    }
    let parent = CgroupParent::new();
    for (case, exec) in [("shell", ""), ("leader", "exec ")] {
        let out = kit.root.path().join(format!("out-{case}"));
        std::fs::create_dir(&out).unwrap();
        let script = kit.root.path().join(format!("hangup-{case}.sh"));
        std::fs::write(
            &script,
            format!(
                "{exec}env -u RUST_BACKTRACE CRADLE_ROOT={d} {l} run -it --cgroup-parent {p} -v {o}:/out {i} \
                 sh -c 'trap \"echo hup > /out/got; exit 3\" HUP; echo ready; while :; do sleep 0.1; done'\nsleep 600\n",
                d = kit.root.path().display(),
                l = kit.launcher.display(),
                p = parent.name,
                o = out.display(),
                i = shell_quote(&kit.image),
            ),
        )
        .unwrap();
        let socket = format!("cradle-hangup-{}-{case}", std::process::id());
        let tmux = common::Tmux::start(socket, &script);
        tmux.wait_for("ready", 10);
        assert_eq!(parent.containers().len(), 1, "{case}");
        drop(tmux);
        eventually(10, &format!("the workload's SIGHUP ({case})"), || {
            std::fs::read_to_string(out.join("got")).is_ok_and(|s| s == "hup\n")
        });
        eventually(10, &format!("the run to end ({case})"), || {
            parent.containers().is_empty()
        });
        assert_nothing_left(&kit, &parent);
    }
}
