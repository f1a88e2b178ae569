//! End to end: resource limits through the container's cgroup (`--memory`,
//! `--pids-limit`, `--cpus`), which the launcher makes, joins the container
//! to, and removes at exit. Every test uses a `--cgroup-parent` of its own.

mod common;

use common::{CgroupParent, Kit, host_state, report, value};
use std::io::BufRead;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A kit and a cgroup parent, when the machine can limit memory, pids and cpu.
fn setup() -> Option<(Kit, CgroupParent)> {
    let kit = Kit::new()?;
    let parent = CgroupParent::new();
    let controllers: Vec<&str> = parent.dirs.iter().map(|(c, _)| c.as_str()).collect();
    let v2 = controllers == [""];
    let ok = v2
        || ["memory", "pids", "cpu", "cpuacct"]
            .iter()
            .all(|c| controllers.contains(c));
    testkit::require(
        ok,
        "needs the memory, pids and cpu cgroup controllers (v1, hybrid or v2)",
    )
    .then_some((kit, parent))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_container_reads_its_own_limit_from_a_read_only_sys_fs_cgroup() {
    let Some((kit, parent)) = setup() else { return };
    let v2 = parent.dirs.iter().all(|(c, _)| c.is_empty());
    let (limit, expected) = if v2 {
        ("/sys/fs/cgroup/memory.max", "67108864")
    } else {
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "67108864")
    };
    let before = host_state(kit.root.path());
    let script = format!(
        "echo limit=$(cat {limit}); sed 's/^/cgroup=/' /proc/self/cgroup; \
         /probe write {limit}; /probe write /sys/fs/cgroup/new"
    );
    let out = kit
        .cmd(&["--memory", "64m", "--cgroup-parent", &parent.name])
        .arg(&kit.image)
        .args(["sh", "-c", &script])
        .output()
        .expect("running the launcher");
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(value(&r, "limit"), expected, "{out:?}");
    // Every hierarchy's path is its root: the cgroup namespace's root is
    // the container's cgroup, and so is the root of what is mounted.
    let paths = common::values(&r, "cgroup");
    assert!(!paths.is_empty(), "{out:?}");
    for line in &paths {
        assert!(line.ends_with(":/"), "{line} in {paths:?}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let erofs = libc::EROFS;
    assert!(
        stdout.contains(&format!("write {limit} err {erofs}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("write /sys/fs/cgroup/new err {erofs}")),
        "{stdout}"
    );
    assert_eq!(host_state(kit.root.path()), before, "mounts or state left");
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
    eprintln!("/sys/fs/cgroup: {limit} = {expected}, read-only, /proc/self/cgroup at /");
}

#[test]
fn past_the_memory_limit_the_container_is_killed_and_exits_137_saying_so() {
    let Some((kit, parent)) = setup() else { return };
    let out = kit.probe_run(
        &["--memory", "32m", "--cgroup-parent", &parent.name],
        &["alloc", "200"],
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("launcher: container killed: out of memory (--memory 32m)"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("alloc="));
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
    eprintln!("oom: 200M under --memory 32m: exit 137, {}", err.trim());
}

/// Docker keeps the workload's status when only another process of the
/// container was OOM-killed; so do we (the launcher said 137 whenever any
/// process was), with a warning.
#[test]
fn oom_kill_of_a_child_keeps_the_workloads_status() {
    let Some((kit, parent)) = setup() else { return };
    let out = kit
        .cmd(&["--memory", "32m", "--cgroup-parent", &parent.name])
        .arg(&kit.image)
        .args(["sh", "-c", "/probe alloc 200; echo survived"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived"));
    let err = stderr(&out);
    assert!(
        err.contains("a process of the container was killed: out of memory (--memory 32m)"),
        "{err}"
    );
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
}

#[test]
fn within_the_memory_limit_nothing_is_reported() {
    let Some((kit, parent)) = setup() else { return };
    let out = kit.probe_run(
        &["--memory", "64m", "--cgroup-parent", &parent.name],
        &["alloc", "8"],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(value(&report(&out), "alloc"), "8");
    assert!(!stderr(&out).contains("out of memory"), "{out:?}");
}

#[test]
fn a_fork_loop_stops_at_the_pids_limit() {
    let Some((kit, parent)) = setup() else { return };
    let out = kit.probe_run(
        &["--pids-limit", "10", "--cgroup-parent", &parent.name],
        &["fork", "100"],
    );
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    let forked: u32 = value(&r, "forked").parse().unwrap();
    // The init and the probe count too: 8 children reach the limit of 10.
    assert_eq!(forked, 8, "{r:?}");
    assert_eq!(value(&r, "fork_errno"), libc::EAGAIN.to_string(), "{r:?}");
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
    eprintln!("pids-limit 10: {forked} children forked (+ init + probe), then EAGAIN");
}

/// CPU time of the container's cgroup: v1 cpuacct.usage, v2 cpu.stat.
fn cpu_usage(parent: &CgroupParent) -> Option<Duration> {
    if let Some(dir) = parent.container_dir("cpuacct")
        && let Ok(ns) = std::fs::read_to_string(dir.join("cpuacct.usage"))
    {
        return Some(Duration::from_nanos(ns.trim().parse().ok()?));
    }
    let stat = std::fs::read_to_string(parent.container_dir("")?.join("cpu.stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_micros)
}

fn nr_throttled(parent: &CgroupParent) -> u64 {
    let dir = parent.container_dir("cpu").unwrap();
    std::fs::read_to_string(dir.join("cpu.stat"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn cpus_hold_busy_loops_near_half_a_core() {
    let Some((kit, parent)) = setup() else { return };
    // The highest weight as well: the quota is what is measured, so other
    // builds on the machine must not take the container's half core away.
    let mut cmd = kit.cmd(&[
        "--cpus",
        "0.5",
        "--cpu-shares",
        "262144",
        "--stop-timeout",
        "1",
        "--cgroup-parent",
        &parent.name,
    ]);
    // Two loops could use two cores; the quota must hold them to half of one.
    cmd.arg(&kit.image).args([
        "sh",
        "-c",
        "while :; do :; done & echo ready; while :; do :; done",
    ]);
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (cpu_usage(&parent).expect("usage"), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_usage(&parent).expect("usage") - u0;
    let share = used.as_secs_f64() / t0.elapsed().as_secs_f64();
    let throttled = nr_throttled(&parent);
    let load = load_average();
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    eprintln!(
        "cpus 0.5: measured {share:.3} of a core over 2s, throttled in {throttled} periods, load {load:.1}"
    );
    assert!(share <= 0.65, "measured {share:.3} of a core");
    assert!(throttled > 0, "the quota never throttled two busy loops");
    if load < 4.0 {
        assert!(
            share >= 0.35,
            "measured {share:.3} of a core at load {load:.1}"
        );
    } else {
        eprintln!("cpus 0.5: lower bound not checked, load average {load:.1}");
    }
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
}

#[test]
fn without_limits_the_container_still_gets_a_cgroup_removed_at_exit() {
    let Some((kit, parent)) = setup() else { return };
    // -i: the shell waits for the end of our stdin.
    let mut cmd = kit.cmd(&["-i", "--cgroup-parent", &parent.name]);
    cmd.arg(&kit.image).args([
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo ready; read x; echo done",
    ]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.ends_with("ready\n") {
        assert!(out.read_line(&mut seen).unwrap() > 0, "{seen}");
    }
    // Inside, its cgroup namespace's root is its own cgroup.
    assert!(
        seen.contains(":memory:/\n") || seen.contains("0::/\n"),
        "{seen}"
    );
    let names = parent.containers();
    assert_eq!(names.len(), 1, "{names:?}");
    let dir = parent
        .container_dir("memory")
        .or_else(|| parent.container_dir(""))
        .unwrap();
    // In every tree, not only the one looked at above: the first process
    // moves itself into each (v1) or is born inside (v2) before it execs.
    // Trees it does not join without a limit (cpu, cpuacct, pids) have no
    // directory for it; memory (v1) or the one v2 tree always does.
    let mut trees = 0;
    for controller in ["cpu", "cpuacct", "devices", "memory", "pids", ""] {
        let Some(dir) = parent.container_dir(controller).filter(|d| d.exists()) else {
            assert!(controller != "memory" || parent.container_dir("").is_some());
            continue;
        };
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert!(
            procs.lines().count() >= 2,
            "init and sh in `{}`: {procs}",
            dir.display()
        );
        trees += 1;
    }
    assert!(trees >= 1);
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
    assert!(!dir.exists());
}

#[test]
fn inconsistent_limits_are_refused_naming_the_flag() {
    let Some((kit, parent)) = setup() else { return };
    let out = kit.probe_run(
        &[
            "--memory",
            "32m",
            "--memory-swap",
            "16m",
            "--cgroup-parent",
            &parent.name,
        ],
        &["exit", "0"],
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr(&out).contains("limit `--memory-swap` 16777216 is invalid"),
        "{out:?}"
    );
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
}

/// `launcher run ARGS IMAGE CMD…` as the user nobody, with a cache it owns.
fn run_as_nobody(kit: &Kit, args: &[&str], cmd: &[&str]) -> Option<std::process::Output> {
    use std::os::unix::fs::PermissionsExt;
    let setpriv = testkit::require_tool("setpriv")?;
    let top = tempfile::Builder::new()
        .prefix("cradle-rootless-limits-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = top.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let image = top.path().join("image.tar");
    std::fs::copy(&kit.image, &image).unwrap();
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(setpriv)
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&kit.launcher)
        .env("CRADLE_ROOT", &cache)
        .env_remove("RUST_BACKTRACE")
        .arg("run")
        .args(args)
        .arg(&image)
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Some(out)
}

#[test]
fn rootless_runs_without_a_cgroup_warning_only_when_limits_were_asked() {
    let Some((kit, _parent)) = setup() else {
        return;
    };
    let Some(plain) = run_as_nobody(&kit, &[], &["true"]) else {
        return;
    };
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(stderr(&plain), "", "{plain:?}");
    let limited = run_as_nobody(&kit, &["--memory", "32m"], &["true"]).unwrap();
    assert!(limited.status.success(), "{limited:?}");
    assert!(
        stderr(&limited).starts_with("launcher: WARN not limiting resources"),
        "{limited:?}"
    );
    let bridge = run_as_nobody(&kit, &["--network", "bridge"], &["true"]).unwrap();
    assert_eq!(bridge.status.code(), Some(125), "{bridge:?}");
    assert!(
        stderr(&bridge).contains("network `bridge` needs root"),
        "{bridge:?}"
    );
}
