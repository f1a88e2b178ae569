//! End to end: device access of a container (issue 9). As root without a
//! user namespace the container holds CAP_MKNOD, so its cgroup denies every
//! device but docker's allowlist: mknod works, opening what it made does
//! not, nor a device node its image ships. In a user namespace (rootless,
//! `--userns=auto`) mknod itself is refused. The container's /sys/fs/cgroup
//! shows only its own cgroups, never the host's trees.

mod common;

use common::{CgroupParent, Kit, Layer};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EPERM_TEXT: &str = "Operation not permitted";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

/// `launcher run ARGS IMAGE sh -c SCRIPT`.
fn sh(kit: &Kit, args: &[&str], image: &Path, script: &str) -> Output {
    kit.cmd(args)
        .arg(image)
        .args(["sh", "-c", script])
        .output()
        .expect("running the launcher")
}

/// The value of `key=` in the output's lines.
fn field(out: &Output, key: &str) -> String {
    stdout(out)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no `{key}=` in {out:?}"))
}

/// Prints `NAME=ok` or `NAME=ERROR` for `try NAME COMMAND…`.
const TRY: &str = r#"try() { n=$1; shift; if e=$("$@" 2>&1 >/dev/null); then echo "$n=ok"; else echo "$n=$e"; fi; }; "#;

/// Makes a block node of the host's first loop device and reads it.
const MKNOD_AND_READ: &str = "try mknod mknod /x b 7 0; try read dd if=/x of=/dev/null count=1";

/// A kit, and the image of [`busybox_image`] with its nodes.
fn setup() -> Option<(Kit, PathBuf)> {
    let kit = Kit::new()?;
    let image = busybox_image(&kit, true)?;
    Some((kit, image))
}

#[test]
fn root_can_mknod_a_block_device_but_not_read_it() {
    let Some((kit, image)) = setup() else { return };
    let out = sh(&kit, &[], &image, &format!("{TRY}{MKNOD_AND_READ}"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(field(&out, "mknod"), "ok", "{out:?}");
    let read = field(&out, "read");
    assert!(read.contains(EPERM_TEXT), "read /x: {read}");
    eprintln!("mknod /x b 7 0: ok; dd if=/x: {read}");
}

/// busybox (the default image has neither mknod nor dd) and the init,
/// with device nodes under /nodes when `nodes`: the container's /dev is a
/// tmpfs of its own, so an image can only ship them elsewhere.
fn busybox_image(kit: &Kit, nodes: bool) -> Option<PathBuf> {
    let busybox = testkit::require_tool("busybox")?;
    let init = common::init()?;
    let mut top = Layer::default();
    top.file("sbin/cradle-init", &std::fs::read(init).unwrap(), 0o755);
    if nodes {
        top.dir("nodes")
            .node("nodes/mem", 'c', 1, 1)
            .node("nodes/loop-control", 'c', 10, 237)
            .node("nodes/loop0", 'b', 7, 0)
            .node("nodes/null", 'c', 1, 3);
    }
    let image = kit.root.path().join(format!("busybox-nodes-{nodes}.tar"));
    common::write_image(
        &image,
        &[common::busybox_layer(&busybox), top],
        &["/sbin/cradle-init", "--"],
        &["/bin/sh"],
    );
    Some(image)
}

/// Opens each of the image's nodes for reading.
const OPEN_NODES: &str = "for n in mem loop-control loop0 null; do \
     try $n sh -c 'exec 3<\"$0\"' /nodes/$n; done";

#[test]
fn device_nodes_an_image_ships_cannot_be_opened() {
    let Some((kit, image)) = setup() else { return };
    let out = sh(&kit, &[], &image, &format!("{TRY}{OPEN_NODES}"));
    assert!(out.status.success(), "{out:?}");
    eprintln!("{}", stdout(&out).trim());
    for node in ["mem", "loop-control", "loop0"] {
        let got = field(&out, node);
        assert!(got.contains(EPERM_TEXT), "/nodes/{node}: {got}");
    }
    // Where it lies does not matter: null is null.
    assert_eq!(field(&out, "null"), "ok", "{out:?}");
}

#[test]
fn the_usual_devices_work() {
    let Some((kit, image)) = setup() else { return };
    let script = format!(
        "{TRY}for d in null zero full random urandom; do try $d head -c 1 /dev/$d; done; \
         try write-null sh -c 'echo x >/dev/null'; try ptmx sh -c 'exec 3<>/dev/ptmx'"
    );
    let out = sh(&kit, &[], &image, &script);
    assert!(out.status.success(), "{out:?}");
    // head -c 1 of /dev/null reads nothing, and fails on nothing.
    for d in [
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "write-null",
        "ptmx",
    ] {
        assert_eq!(field(&out, d), "ok", "/dev/{d}: {out:?}");
    }
    // With -t: the controlling terminal and its pts node.
    let script = format!(
        "{TRY}try tty sh -c 'exec 3<>/dev/tty'; try pts sh -c 'exec 3<>\"$(tty)\"'; \
         echo name=$(tty)"
    );
    let out = sh(&kit, &["-t"], &image, &script);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(field(&out, "tty"), "ok", "{out:?}");
    assert_eq!(field(&out, "pts"), "ok", "{out:?}");
    assert!(field(&out, "name").starts_with("/dev/pts/"), "{out:?}");
}

#[test]
fn userns_auto_refuses_mknod_and_shipped_nodes() {
    let Some((kit, image)) = setup() else { return };
    let script = format!("{TRY}{MKNOD_AND_READ}; {OPEN_NODES}");
    let out = sh(&kit, &["--userns", "auto"], &image, &script);
    assert!(out.status.success(), "{out:?}");
    let mknod = field(&out, "mknod");
    assert!(mknod.contains(EPERM_TEXT), "mknod: {mknod}");
    // The user namespace's mounts ignore device nodes (SB_I_NODEV): even
    // null is refused there, as in any rootless runtime.
    for node in ["mem", "loop-control", "loop0"] {
        let got = field(&out, node);
        assert_ne!(got, "ok", "/nodes/{node}: {out:?}");
    }
    eprintln!(
        "--userns=auto: mknod: {mknod}; /nodes/mem: {}",
        field(&out, "mem")
    );
}

#[test]
fn rootless_refuses_mknod() {
    use std::os::unix::fs::PermissionsExt;
    let Some(kit) = Kit::new() else { return };
    // Without nodes: a rootless launcher refuses to unpack them.
    let Some(busybox) = busybox_image(&kit, false) else {
        return;
    };
    let Some(setpriv) = testkit::require_tool("setpriv") else {
        return;
    };
    let top = tempfile::Builder::new()
        .prefix("cradle-rootless-devices-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = top.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(65534), Some(65534)).unwrap();
    let image = top.path().join("image.tar");
    std::fs::copy(&busybox, &image).unwrap();
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(setpriv)
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&kit.launcher)
        .env("CRADLE_ROOT", &cache)
        .env_remove("RUST_BACKTRACE")
        .arg("run")
        .arg(&image)
        .args(["sh", "-c", &format!("{TRY}{MKNOD_AND_READ}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mknod = field(&out, "mknod");
    assert!(mknod.contains(EPERM_TEXT), "mknod: {mknod}");
}

/// The container's directory in the devices tree of `parent`, if any.
fn devices_dirs(parent: &CgroupParent) -> Vec<PathBuf> {
    let Some((_, dir)) = parent.dirs.iter().find(|(c, _)| c == "devices") else {
        return Vec::new();
    };
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// A v1 devices tree, which this test's checks read.
fn v1_parent() -> Option<CgroupParent> {
    let parent = CgroupParent::new();
    let v1 = parent.dirs.iter().any(|(c, _)| c == "devices");
    testkit::require(v1, "needs the v1 devices controller").then_some(parent)
}

#[test]
fn the_device_cgroup_holds_the_allowlist_and_is_removed_at_exit() {
    let Some((kit, image)) = setup() else { return };
    let Some(parent) = v1_parent() else { return };
    let out = sh(
        &kit,
        &["--cgroup-parent", &parent.name],
        &image,
        "sed 's/^/list=/' /sys/fs/cgroup/devices/devices.list; grep devices /proc/self/cgroup",
    );
    assert!(out.status.success(), "{out:?}");
    let list: Vec<String> = common::values(&common::report(&out), "list");
    assert_eq!(
        list,
        [
            "c *:* m",
            "b *:* m",
            "c 1:3 rwm",
            "c 1:5 rwm",
            "c 1:7 rwm",
            "c 1:8 rwm",
            "c 1:9 rwm",
            "c 5:0 rwm",
            "c 5:1 rwm",
            "c 5:2 rwm",
            "c 136:* rwm",
            "c 10:200 rwm",
        ],
        "{out:?}"
    );
    // Its own cgroup, the root of its namespace.
    assert!(stdout(&out).contains(":devices:/\n"), "{out:?}");
    assert_eq!(devices_dirs(&parent), Vec::<PathBuf>::new(), "left behind");
    assert_eq!(parent.containers(), Vec::<String>::new(), "left behind");
}

#[test]
fn a_sigkilled_launchers_device_cgroup_is_reclaimed_by_the_next_run() {
    let Some(kit) = Kit::new() else { return };
    let Some(parent) = v1_parent() else { return };
    let mut launcher = kit
        .cmd(&["--cgroup-parent", &parent.name])
        .arg(&kit.image)
        .args(["sh", "-c", "echo ready; exec sleep 60"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(launcher.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let left = devices_dirs(&parent);
    assert_eq!(left.len(), 1, "{left:?}");
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    // The container dies with its launcher (PR_SET_PDEATHSIG); its
    // cgroups stay for the next run to reclaim.
    let deadline = Instant::now() + Duration::from_secs(10);
    while procs(&left[0]) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(left[0].exists(), "removed by whom?");
    let out = sh(&kit, &["--cgroup-parent", &parent.name], &kit.image, "true");
    assert!(out.status.success(), "{out:?}");
    assert!(!left[0].exists(), "not reclaimed: {}", left[0].display());
    assert_eq!(devices_dirs(&parent), Vec::<PathBuf>::new(), "left behind");
    assert_eq!(parent.containers(), Vec::<String>::new(), "left behind");
}

fn procs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A directory made in the root of a host hierarchy, removed when dropped.
struct HostCgroup(PathBuf);

impl Drop for HostCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn the_hosts_cgroup_trees_are_not_visible_inside() {
    let Some((kit, image)) = setup() else { return };
    let Some(parent) = v1_parent() else { return };
    let marker = format!("cradle-e2e-host-{}", std::process::id());
    // The host's own cgroups, in trees the launcher joins and in trees it
    // does not; a sibling container's cgroup below the same parent.
    let mut made = Vec::new();
    for tree in ["devices", "freezer", "blkio", "memory"] {
        let dir = Path::new("/sys/fs/cgroup").join(tree).join(&marker);
        if std::fs::create_dir(&dir).is_ok() {
            made.push(HostCgroup(dir));
        }
    }
    assert!(!made.is_empty(), "no host hierarchy to make a cgroup in");
    for (_, dir) in &parent.dirs {
        let sibling = dir.join("cradle-e2e-sibling");
        std::fs::create_dir_all(&sibling).unwrap();
        made.push(HostCgroup(sibling));
    }
    let out = sh(
        &kit,
        &["--cgroup-parent", &parent.name],
        &image,
        "echo trees=$(ls /sys/fs/cgroup); find /sys/fs/cgroup/ -mindepth 2 -type d",
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(!text.contains(&marker), "the host's cgroups: {text}");
    assert!(!text.contains("cradle-e2e-sibling"), "a sibling: {text}");
    // Only the trees the container has a cgroup of its own in.
    let trees = field(&out, "trees");
    for own in ["devices", "memory"] {
        assert!(trees.split(' ').any(|t| t == own), "{own} in {trees}");
    }
    // Without limits: not the cpu, cpuacct and pids trees either.
    for host in [
        "freezer", "blkio", "cpuset", "systemd", "unified", "cpu", "cpuacct", "pids",
    ] {
        assert!(!trees.split(' ').any(|t| t == host), "{host} in {trees}");
    }
    eprintln!("/sys/fs/cgroup inside: {trees}");
    drop(made);
}
