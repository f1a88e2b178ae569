//! Tests of the cgroup step: v2 against a fake tree in a tempdir, and both
//! versions against the real kernel where this machine has them.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

const M: u64 = 1 << 20;

fn fake_v2(controllers: &str) -> (tempfile::TempDir, CgroupRoot) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cgroup.controllers"), controllers).unwrap();
    std::fs::write(dir.path().join("cgroup.subtree_control"), "").unwrap();
    let current = dir.path().join("user.slice");
    std::fs::create_dir(&current).unwrap();
    let root = CgroupRoot::Unified(Hierarchy {
        mount: dir.path().into(),
        current,
    });
    (dir, root)
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Simulates the kernel emptying and removing a fake cgroup's files, so
/// that `remove` finds what rmdir on cgroupfs would.
fn empty_fake(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_file() {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
}

#[test]
fn v2_enables_controllers_from_the_root_down_and_writes_limits() {
    let (tmp, root) = fake_v2("cpuset cpu io memory hugetlb pids");
    let limits = Limits {
        memory: Some(32 * M),
        pids: Some(64),
        cpus: Some(0.5),
        cpu_shares: Some(1024),
        ..Default::default()
    };
    let cg = Cgroup::create(&root, None, "c1", &limits, None).unwrap();
    let dir = tmp.path().join("cradle/c1");
    assert_eq!(cg.paths(), [dir.as_path()]);
    assert_eq!(
        read(tmp.path().join("cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    assert_eq!(
        read(tmp.path().join("cradle/cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    assert_eq!(read(dir.join("memory.max")), "33554432");
    assert_eq!(read(dir.join("pids.max")), "64");
    assert_eq!(read(dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(dir.join("cpu.weight")), "100");
    // The implied swap limit is skipped where the kernel has no swap file.
    assert!(!dir.join("memory.swap.max").exists());
    empty_fake(&dir);
    cg.remove().unwrap();
    assert!(!dir.exists());
}

/// The launcher's own cgroup holds processes (itself at least), so v2
/// cannot enable controllers for children there (EBUSY): a relative parent
/// goes beside it, below its parent.
#[test]
fn v2_relative_parent_goes_beside_the_current_cgroup() {
    let (tmp, root) = fake_v2("memory pids");
    let CgroupRoot::Unified(mut h) = root else {
        unreachable!()
    };
    h.current = tmp.path().join("user.slice/session-1.scope");
    std::fs::create_dir(&h.current).unwrap();
    let root = CgroupRoot::Unified(h);
    std::fs::write(tmp.path().join("cgroup.subtree_control"), "memory pids").unwrap();
    let limits = Limits {
        pids: Some(5),
        ..Default::default()
    };
    let cg = Cgroup::create(&root, Some("ctrs"), "c2", &limits, None).unwrap();
    let dir = tmp.path().join("user.slice/ctrs/c2");
    assert_eq!(cg.paths(), [dir.as_path()]);
    // Already enabled at the root: left as it was.
    assert_eq!(
        read(tmp.path().join("cgroup.subtree_control")),
        "memory pids"
    );
    assert_eq!(
        read(tmp.path().join("user.slice/cgroup.subtree_control")),
        "+pids"
    );
    // Nothing written into the launcher's own cgroup.
    assert!(
        !tmp.path()
            .join("user.slice/session-1.scope/cgroup.subtree_control")
            .exists()
    );
    empty_fake(&dir);
    cg.remove().unwrap();
}

#[test]
fn v2_refuses_a_controller_the_tree_lacks() {
    let (_tmp, root) = fake_v2("hugetlb");
    let err = Cgroup::create(
        &root,
        None,
        "c",
        &Limits {
            memory: Some(M),
            ..Default::default()
        },
        None,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ControllerMissing { controller, .. } if controller == "memory"),
        "{err}"
    );
}

#[test]
fn v2_refuses_an_existing_cgroup() {
    let (tmp, root) = fake_v2("memory");
    std::fs::create_dir_all(tmp.path().join("cradle/taken")).unwrap();
    let err = Cgroup::create(&root, None, "taken", &Limits::default(), None).unwrap_err();
    assert!(matches!(err, Error::Create { .. }), "{err}");
}

#[test]
fn v2_reports_oom_kills_usage_and_processes_from_its_files() {
    let (tmp, root) = fake_v2("memory cpu");
    let cg = Cgroup::create(&root, None, "c", &Limits::default(), None).unwrap();
    let dir = tmp.path().join("cradle/c");
    assert!(!cg.oom_killed().unwrap());
    std::fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
    )
    .unwrap();
    assert!(!cg.oom_killed().unwrap());
    std::fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n",
    )
    .unwrap();
    assert!(cg.oom_killed().unwrap());
    std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
    assert_eq!(cg.cpu_usage().unwrap(), Duration::from_micros(1500));
    cg.add_process(4242).unwrap();
    assert_eq!(read(dir.join("cgroup.procs")), "4242");
    assert_eq!(cg.procs().unwrap(), [4242]);
    empty_fake(&dir);
    cg.remove().unwrap();
}

/// A v1 tree per controller in a tempdir, this process at its root.
fn fake_v1(controllers: &[&str]) -> (tempfile::TempDir, CgroupRoot) {
    let dir = tempfile::tempdir().unwrap();
    let map = controllers
        .iter()
        .map(|c| {
            let mount = dir.path().join(c);
            std::fs::create_dir(&mount).unwrap();
            let h = Hierarchy {
                current: mount.clone(),
                mount,
            };
            (c.to_string(), h)
        })
        .collect();
    (dir, CgroupRoot::Legacy(map))
}

#[test]
fn v1_devices_tree_is_joined_only_to_restrict_devices() {
    let (tmp, root) = fake_v1(&["memory", "devices"]);
    let open = Cgroup::create(&root, None, "userns", &Limits::default(), None).unwrap();
    assert_eq!(open.controllers(), ["memory"]);
    assert!(!tmp.path().join("devices/cradle/userns").exists());
    let cg = Cgroup::create(
        &root,
        None,
        "root",
        &Limits::default(),
        Some(&devices::ALLOWED),
    )
    .unwrap();
    assert_eq!(cg.controllers(), ["devices", "memory"]);
    let dir = tmp.path().join("devices/cradle/root");
    // The kernel takes one rule per write; the fake file keeps them all.
    assert_eq!(read(dir.join("devices.deny")), "a");
    assert_eq!(
        read(dir.join("devices.allow")),
        devices::v1_lines(&devices::ALLOWED).concat()
    );
}

/// A tree costs a directory made and removed and a mount inside: memory
/// always (OOM kills, what to kill at exit), pids for a pids limit, cpu and
/// cpuacct for a cpu limit.
#[test]
fn v1_trees_are_joined_for_accounting_and_limits_only() {
    let (tmp, root) = fake_v1(&["memory", "pids", "cpu", "cpuacct", "devices"]);
    let plain = Cgroup::create(&root, None, "plain", &Limits::default(), None).unwrap();
    assert_eq!(plain.controllers(), ["memory"]);
    assert!(!tmp.path().join("pids/cradle/plain").exists());
    assert!(!tmp.path().join("cpu/cradle/plain").exists());
    assert!(!tmp.path().join("cpuacct/cradle/plain").exists());
    let cpus = Limits {
        cpus: Some(1.0),
        ..Default::default()
    };
    let limited = Cgroup::create(&root, None, "cpus", &cpus, None).unwrap();
    assert_eq!(limited.controllers(), ["cpu", "cpuacct", "memory"]);
    assert_eq!(
        read(tmp.path().join("cpu/cradle/cpus/cpu.cfs_quota_us")),
        "100000"
    );
}

#[test]
fn v1_without_a_devices_tree_refuses_to_restrict_devices() {
    let (_tmp, root) = fake_v1(&["memory"]);
    let err = Cgroup::create(
        &root,
        None,
        "c",
        &Limits::default(),
        Some(&devices::ALLOWED),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::ControllerMissing { controller, .. } if controller == "devices"),
        "{err}"
    );
}

#[test]
fn reclaims_cgroups_of_dead_owners_only() {
    let (tmp, root) = fake_v2("memory");
    let parent = tmp.path().join("cradle");
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let mine = format!("ctr-{}", owner_tag());
    let gone = format!("ctr-{}-12345-web", dead.id());
    for name in [
        &mine,
        &gone,
        &"ctr-unparsable".to_string(),
        &format!("other-{}-1", dead.id()),
    ] {
        std::fs::create_dir_all(parent.join(name)).unwrap();
    }
    let removed = reclaim_stale(&root, None, "ctr-").unwrap();
    assert_eq!(removed, [parent.join(&gone)]);
    assert!(parent.join(&mine).exists() && parent.join("ctr-unparsable").exists());
}

#[test]
fn owner_tag_names_this_process() {
    let tag = owner_tag();
    assert!(tag.starts_with(&format!("{}-", std::process::id())));
    assert!(owner_alive(&tag));
    assert!(!owner_alive(&format!("{}-1", std::process::id())));
}

// ---- the real kernel ------------------------------------------------------

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A parent cgroup of its own per test, removed with all it holds when
/// the test ends, failed or not.
struct ParentGuard {
    root: CgroupRoot,
    name: String,
}

impl ParentGuard {
    /// Absolute in v2 (below the root, as [`default_parent`] explains),
    /// below the test's own cgroup in v1.
    fn new(root: CgroupRoot) -> Self {
        let slash = if root.is_unified() { "/" } else { "" };
        let name = format!(
            "{slash}cradle-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        Self { root, name }
    }

    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = match &self.root {
            CgroupRoot::Unified(h) => vec![h.resolve(&self.name)],
            CgroupRoot::Legacy(map) => map.values().map(|h| h.resolve(&self.name)).collect(),
        };
        dirs.dedup();
        dirs
    }
}

impl Drop for ParentGuard {
    fn drop(&mut self) {
        for dir in self.dirs() {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten().filter(|e| e.path().is_dir()) {
                    let _ = kill_all(&e.path());
                    let _ = remove_dir(&e.path());
                }
            }
            let _ = remove_dir(&dir);
        }
    }
}

/// The machine's hierarchy, when it can limit memory, pids and cpu: v1
/// (this machine's hybrid layout) or v2 with those controllers.
fn real_root() -> Option<CgroupRoot> {
    if !testkit::require(testkit::is_root(), "needs root to create cgroups") {
        return None;
    }
    let root = CgroupRoot::detect().unwrap();
    let ok = match &root {
        CgroupRoot::Legacy(m) => CONTROLLERS.iter().all(|c| m.contains_key(*c)),
        CgroupRoot::Unified(h) => {
            let have =
                std::fs::read_to_string(h.mount.join("cgroup.controllers")).unwrap_or_default();
            ["memory", "pids", "cpu"]
                .iter()
                .all(|c| have.split_whitespace().any(|h| h == *c))
        }
    };
    testkit::require(
        ok,
        "needs the memory, pids and cpu cgroup controllers (v1, hybrid or v2)",
    )
    .then_some(root)
}

/// The directory holding `controller`'s files.
fn dir_of<'a>(cg: &'a Cgroup, controller: &str) -> &'a Path {
    cg.dirs.get(controller).or_else(|| cg.dirs.get("")).unwrap()
}

fn version(root: &CgroupRoot) -> &'static str {
    if root.is_unified() { "v2" } else { "v1" }
}

/// `sh -c script` that waits for a line on stdin before it starts, so that
/// it can be put in the cgroup first.
fn held_shell(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", &format!("read go; {script}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn release(child: &mut Child) {
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    let Some(root) = real_root() else { return };
    let guard = ParentGuard::new(root.clone());
    let cg = Cgroup::create(
        &root,
        Some(&guard.name),
        "oom",
        &Limits {
            memory: Some(32 * M),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    // tail keeps the last lines, and /dev/zero has no newline: all 200M in memory.
    let mut child = held_shell("head -c 200M /dev/zero | tail >/dev/null");
    cg.add_process(child.id()).unwrap();
    release(&mut child);
    let status = wait_bounded(&mut child, Duration::from_secs(30))
        .expect("allocator still running after 30s");
    assert!(
        !status.success(),
        "allocating 200M under a 32M limit succeeded"
    );
    assert!(cg.oom_killed().unwrap());
    let file = if root.is_unified() {
        "memory.events"
    } else {
        "memory.oom_control"
    };
    let events = read(dir_of(&cg, "memory").join(file));
    eprintln!(
        "oom ({}): 200M under 32M ended with {status}; {file}: {}",
        version(&root),
        events.trim().replace('\n', ", ")
    );
    let paths: Vec<PathBuf> = cg.paths().into_iter().map(Path::to_path_buf).collect();
    cg.remove().unwrap();
    assert!(paths.iter().all(|p| !p.exists()));
}

#[test]
fn pids_limit_stops_a_fork_loop() {
    let Some(root) = real_root() else { return };
    let guard = ParentGuard::new(root.clone());
    let cg = Cgroup::create(
        &root,
        Some(&guard.name),
        "pids",
        &Limits {
            pids: Some(10),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let mut child = held_shell("i=0; while [ $i -lt 100 ]; do sleep 5 & i=$((i+1)); done; wait");
    cg.add_process(child.id()).unwrap();
    release(&mut child);
    std::thread::sleep(Duration::from_millis(1500));
    let pids_dir = dir_of(&cg, "pids").to_path_buf();
    let current: u64 = read(pids_dir.join("pids.current")).trim().parse().unwrap();
    let refused = keyed(&read(pids_dir.join("pids.events")), "max").unwrap();
    assert!(current <= 10, "{current} tasks under a limit of 10");
    assert!(refused > 0, "no fork was refused");
    assert!(!cg.oom_killed().unwrap());
    let paths: Vec<PathBuf> = cg.paths().into_iter().map(Path::to_path_buf).collect();
    cg.remove().unwrap();
    let _ = child.wait();
    assert!(paths.iter().all(|p| !p.exists()));
    eprintln!(
        "pids ({}): {current} tasks at a limit of 10, {refused} forks refused",
        version(&root)
    );
}

#[test]
fn cpus_hold_two_busy_loops_near_half_a_core() {
    let Some(root) = real_root() else { return };
    let guard = ParentGuard::new(root.clone());
    // The highest weight as well: the quota is what is measured, so other
    // builds on the machine must not take the cgroup's half core away.
    let cg = Cgroup::create(
        &root,
        Some(&guard.name),
        "cpu",
        &Limits {
            cpus: Some(0.5),
            cpu_shares: Some(262_144),
            ..Default::default()
        },
        None,
    )
    .unwrap();
    // Two loops could use both cores; the quota must hold them to half of one.
    let mut child = held_shell("while :; do :; done & while :; do :; done");
    cg.add_process(child.id()).unwrap();
    release(&mut child);
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (cg.cpu_usage().unwrap(), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let share = (cg.cpu_usage().unwrap() - u0).as_secs_f64() / t0.elapsed().as_secs_f64();
    // nr_throttled: periods in which the quota stopped the loops (v1 and v2).
    let throttled = keyed(&read(dir_of(&cg, "cpu").join("cpu.stat")), "nr_throttled").unwrap_or(0);
    let load = load_average();
    cg.remove().unwrap();
    let _ = child.wait();
    eprintln!(
        "cpus 0.5 ({}): measured {share:.3} of a core over 2s, throttled in {throttled} periods, load {load:.1}",
        version(&root)
    );
    // The limit holds.
    assert!(share <= 0.65, "measured {share:.3} of a core");
    // Near half a core, and it is the quota that holds it, unless the
    // machine is so loaded that the loops could not get even that (other
    // builds share these 2 cores): then no period reaches the quota.
    if load < 4.0 {
        assert!(
            share >= 0.35,
            "measured {share:.3} of a core at load {load:.1}"
        );
        assert!(throttled > 0, "the quota never throttled two busy loops");
    } else {
        eprintln!("cpus 0.5: lower bound and throttling not checked, load average {load:.1}");
    }
}

/// The 1-minute load average.
fn load_average() -> f64 {
    let text = read("/proc/loadavg");
    text.split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn detection_finds_this_process_in_its_cgroups() {
    let Some(root) = real_root() else { return };
    let own = read("/proc/self/cgroup");
    let path_of = |ctrl: &str| {
        own.lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, c, p) = (f.next()?, f.next()?, f.next()?);
                c.split(',')
                    .any(|c| c == ctrl)
                    .then(|| p.trim_start_matches('/').to_string())
            })
            .unwrap()
    };
    let trees: Vec<(String, Hierarchy)> = match root {
        CgroupRoot::Unified(h) => vec![(String::new(), h)],
        CgroupRoot::Legacy(map) => map.into_iter().collect(),
    };
    for (ctrl, h) in trees {
        assert!(
            h.current.join("cgroup.procs").is_file(),
            "{}",
            h.current.display()
        );
        assert!(
            h.current.ends_with(path_of(&ctrl)),
            "{ctrl}: {}",
            h.current.display()
        );
    }
}

#[test]
fn v2_real_tree_holds_a_process_and_removes_it() {
    let Some(root) = real_v2_root() else { return };
    let guard = ParentGuard::new(root.clone());
    let cg = Cgroup::create(&root, Some(&guard.name), "c", &Limits::default(), None).unwrap();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = child.id();
    cg.add_process(pid).unwrap();
    let own = read(format!("/proc/{pid}/cgroup"));
    assert!(own.contains(&format!("0::{}/c", guard.name)), "{own}");
    assert_eq!(cg.procs().unwrap(), [pid]);
    let reaper = std::thread::spawn(move || child.wait());
    let dir = cg.paths()[0].to_path_buf();
    cg.remove().unwrap();
    assert!(!reaper.join().unwrap().unwrap().success());
    assert!(!dir.exists());
}

/// Runs, in `cg`, a shell that opens /dev/null, /dev/loop-control and a
/// block node 7:0 it makes itself; returns `what=ok` or `what=ERROR` lines.
fn device_report(cg: &Cgroup) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let script = r#"read go
try() { what=$1; shift; if err=$("$@" 2>&1); then echo "$what=ok"; else echo "$what=$err"; fi; }
try null sh -c 'exec 3<>/dev/null'
try loop-control sh -c 'exec 3</dev/loop-control'
try mknod mknod "$0/loop" b 7 0
try loop sh -c 'exec 3<"$0"' "$0/loop"
"#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .arg(tmp.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cg.add_process(child.id()).unwrap();
    release(&mut child);
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of [`device_report`] for a cgroup with docker's allowlist.
fn assert_devices_restricted(report: &str) {
    let line = |what: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{what}=")))
            .unwrap_or_else(|| panic!("no {what} in {report}"))
    };
    assert_eq!(line("null"), "ok", "{report}");
    assert_eq!(line("mknod"), "ok", "{report}");
    for denied in ["loop-control", "loop"] {
        assert!(
            line(denied).contains("Operation not permitted"),
            "{denied}: {report}"
        );
    }
}

#[test]
fn v1_devices_cgroup_allows_mknod_but_not_opening_a_block_device() {
    let Some(root) = real_root() else { return };
    if !testkit::require(!root.is_unified(), "needs the v1 devices controller") {
        return;
    }
    let guard = ParentGuard::new(root.clone());
    let cg = Cgroup::create(
        &root,
        Some(&guard.name),
        "dev",
        &Limits::default(),
        Some(&devices::ALLOWED),
    )
    .unwrap();
    let list = read(dir_of(&cg, "devices").join("devices.list"));
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        devices::v1_lines(&devices::ALLOWED)
    );
    let report = device_report(&cg);
    eprintln!("v1 devices: {}", report.trim().replace('\n', ", "));
    assert_devices_restricted(&report);
    cg.remove().unwrap();
}

/// The cgroup2 mount alone: the unified tree of a hybrid machine, or the
/// whole tree of a v2 machine.
fn real_v2_root() -> Option<CgroupRoot> {
    if !testkit::require(testkit::is_root(), "needs root to create cgroups") {
        return None;
    }
    let mountinfo = read("/proc/self/mountinfo");
    let v2_only: String = mountinfo
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .map(|l| format!("{l}\n"))
        .collect();
    let root = CgroupRoot::from_proc(&v2_only, &read("/proc/self/cgroup")).ok();
    testkit::require(root.is_some(), "needs a cgroup2 mount").then_some(root?)
}

// The kernel runs a cgroup2 device program for every device access of the
// tasks in the cgroup, beside the v1 controller on hybrid machines
// (devcgroup_check_permission), so the program is tested on this
// machine's cgroup2 mount even though the launcher uses v1 here.
#[test]
fn v2_device_program_allows_mknod_but_not_opening_a_block_device() {
    let Some(root) = real_v2_root() else { return };
    let guard = ParentGuard::new(root.clone());
    let cg = Cgroup::create(
        &root,
        Some(&guard.name),
        "dev",
        &Limits::default(),
        Some(&devices::ALLOWED),
    )
    .unwrap();
    let report = device_report(&cg);
    eprintln!("v2 device program: {}", report.trim().replace('\n', ", "));
    assert_devices_restricted(&report);
    // Without the program the same cgroup opens everything.
    let open = Cgroup::create(&root, Some(&guard.name), "open", &Limits::default(), None).unwrap();
    let report = device_report(&open);
    assert!(report.contains("loop=ok"), "{report}");
    cg.remove().unwrap();
    open.remove().unwrap();
}

#[test]
fn reclaim_removes_a_dead_launchers_cgroup() {
    let Some(root) = real_root() else { return };
    let guard = ParentGuard::new(root.clone());
    let mut dead = Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let stale = Cgroup::create(
        &root,
        Some(&guard.name),
        &format!("ctr-{}-1", dead.id()),
        &Limits::default(),
        None,
    )
    .unwrap();
    let live = Cgroup::create(
        &root,
        Some(&guard.name),
        &format!("ctr-{}", owner_tag()),
        &Limits::default(),
        None,
    )
    .unwrap();
    // A leftover process of the dead launcher is killed too.
    let mut orphan = Command::new("sleep").arg("30").spawn().unwrap();
    stale.add_process(orphan.id()).unwrap();
    let stale_paths: Vec<PathBuf> = stale.paths().into_iter().map(Path::to_path_buf).collect();
    std::mem::forget(stale); // as a SIGKILLed launcher would
    let reaper = std::thread::spawn(move || orphan.wait());
    let removed = reclaim_stale(&root, Some(&guard.name), "ctr-").unwrap();
    assert_eq!(removed.len(), stale_paths.len());
    assert!(stale_paths.iter().all(|p| !p.exists()));
    assert!(live.paths().iter().all(|p| p.exists()));
    assert!(!reaper.join().unwrap().unwrap().success());
    live.remove().unwrap();
}

#[test]
fn a_hundred_parallel_cgroups_leave_nothing_behind() {
    let Some(root) = real_root() else { return };
    let guard = ParentGuard::new(root.clone());
    let limits = Limits {
        memory: Some(64 * M),
        pids: Some(16),
        cpus: Some(1.0),
        ..Default::default()
    };
    for batch in 0..10 {
        std::thread::scope(|s| {
            for i in 0..10 {
                let (root, limits, parent) = (&root, &limits, &guard.name);
                s.spawn(move || {
                    let cg = Cgroup::create(
                        root,
                        Some(&format!("{parent}/nested")),
                        &format!("c{batch}-{i}"),
                        limits,
                        None,
                    )
                    .unwrap();
                    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
                    cg.add_process(child.id()).unwrap();
                    let reaper = std::thread::spawn(move || child.wait());
                    cg.remove().unwrap();
                    assert!(!reaper.join().unwrap().unwrap().success());
                });
            }
        });
    }
    // The trees the cgroups were made in: not devices, which they did not restrict.
    for dir in guard.dirs().into_iter().filter(|d| d.exists()) {
        let left: Vec<_> = std::fs::read_dir(dir.join("nested"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        remove_dir(&dir.join("nested")).unwrap();
    }
}

/// Parents the launcher made (`/cradle`, a `--cgroup-parent` that did not
/// exist) go with the last container in them; one that existed stays.
#[test]
fn parents_it_made_are_removed_with_the_cgroup() {
    let Some(root) = real_root() else { return };
    let top = format!("/cradle-made-{}", std::process::id());
    let trees: Vec<PathBuf> = match &root {
        CgroupRoot::Unified(h) => vec![h.resolve(&top)],
        // Without limits or device rules only memory is joined.
        CgroupRoot::Legacy(map) => map
            .iter()
            .filter(|(c, _)| c.as_str() == "memory")
            .map(|(_, h)| h.resolve(&top))
            .collect(),
    };
    let limits = Limits::default();
    let first = Cgroup::create(&root, Some(&format!("{top}/a/b")), "c1", &limits, None).unwrap();
    let second = Cgroup::create(&root, Some(&format!("{top}/a/b")), "c2", &limits, None).unwrap();
    first.remove().unwrap();
    // The second container still lives in them.
    assert!(trees.iter().all(|t| t.join("a/b").is_dir()), "{trees:?}");
    second.remove().unwrap();
    for t in &trees {
        assert!(!t.exists(), "`{}` was left", t.display());
    }
    // A parent that existed before is not the launcher's to remove.
    for t in &trees {
        std::fs::create_dir_all(t).unwrap();
    }
    let third = Cgroup::create(&root, Some(&top), "c3", &limits, None).unwrap();
    third.remove().unwrap();
    for t in &trees {
        assert!(t.is_dir(), "`{}` was removed", t.display());
        std::fs::remove_dir(t).unwrap();
    }
}
