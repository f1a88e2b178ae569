//! End to end: `launcher bundle` output run by crun and runc, our init as
//! PID 1, the launcher's defaults inside, exit codes passed through.

mod common;

use common::{CgroupParent, Layer, report, value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The runtime, and how it is started here. crun runs on this machine only
/// in a private mount namespace with the cgroup2 mount at
/// /sys/fs/cgroup/unified (hugetlb only, beside the v1 controllers) gone.
#[derive(Clone, Copy)]
enum Runtime {
    Crun,
    Runc,
}

impl Runtime {
    fn name(self) -> &'static str {
        match self {
            Runtime::Crun => "crun",
            Runtime::Runc => "runc",
        }
    }

    /// `RUNTIME --root STATE run ID` in `bundle`.
    fn run(self, program: &Path, state: &Path, bundle: &Path, id: &str) -> Output {
        let mut cmd = match self {
            Runtime::Runc => {
                let mut cmd = Command::new(program);
                cmd.arg("--root").arg(state).args(["run", id]);
                cmd
            }
            Runtime::Crun => {
                let mut cmd = Command::new("unshare");
                cmd.args(["-m", "sh", "-c"])
                    .arg(r#"umount /sys/fs/cgroup/unified 2>/dev/null; exec "$0" --root "$1" run "$2""#)
                    .arg(program)
                    .arg(state)
                    .arg(id);
                cmd
            }
        };
        cmd.current_dir(bundle)
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .output()
            .expect("starting the runtime")
    }
}

struct Setup {
    launcher: PathBuf,
    probe: PathBuf,
    init: PathBuf,
    runtime: PathBuf,
    dir: tempfile::TempDir,
}

fn setup(runtime: Runtime) -> Option<Setup> {
    if !testkit::require(testkit::is_root(), "crun and runc are run as root here") {
        return None;
    }
    Some(Setup {
        runtime: testkit::require_tool(runtime.name())?,
        launcher: common::launcher()?,
        probe: common::probe()?,
        init: common::init()?,
        dir: tempfile::Builder::new()
            .prefix("cradle-bundle-")
            .tempdir()
            .ok()?,
    })
}

impl Setup {
    /// `launcher bundle -v PROBE:/probe:ro IMAGE DIR ARGS…`.
    fn bundle(&self, image: &Path, name: &str, args: &[&str]) -> PathBuf {
        self.bundle_with(&[], image, name, args)
    }

    /// `launcher bundle -v PROBE:/probe:ro FLAGS… IMAGE DIR ARGS…`.
    fn bundle_with(&self, flags: &[&str], image: &Path, name: &str, args: &[&str]) -> PathBuf {
        let dir = self.dir.path().join(name);
        let out = Command::new(&self.launcher)
            .arg("bundle")
            .arg("--init-path")
            .arg(&self.init)
            .arg("-v")
            .arg(format!("{}:/probe:ro", self.probe.display()))
            .args(flags)
            .arg(image)
            .arg(&dir)
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        dir
    }

    fn run(&self, runtime: Runtime, bundle: &Path) -> Output {
        let id = format!(
            "cradle-{}-{}-{}",
            runtime.name(),
            std::process::id(),
            bundle.file_name().unwrap().to_string_lossy()
        );
        runtime.run(&self.runtime, &self.dir.path().join("state"), bundle, &id)
    }
}

fn runs_our_image_with_init_as_pid_1(runtime: Runtime) {
    let Some(s) = setup(runtime) else { return };
    let Some(image) = common::default_image() else {
        return;
    };
    let bundle = s.bundle(&image, "report", &["/probe", "report"]);
    let out = s.run(runtime, &bundle);
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(
        value(&r, "pid1"),
        "/sbin/cradle-init -- /probe report",
        "{r:?}"
    );
    assert_eq!(value(&r, "ppid"), "1");
    assert_eq!(value(&r, "CapEff"), "00000000a80425fb");
    assert_eq!(value(&r, "CapBnd"), "00000000a80425fb");
    assert_eq!(value(&r, "NoNewPrivs"), "1");
    // Filter mode: the launcher's profile, written as linux.seccomp.
    assert_eq!(value(&r, "Seccomp"), "2");
    assert_eq!(value(&r, "hostname"), "cradle");
    assert_eq!(value(&r, "netdevs"), "lo");
    let mounts = String::from_utf8_lossy(&out.stdout);
    assert!(mounts.contains("mount=/sys sysfs ro,"), "{mounts}");
    assert!(mounts.contains("mount=/proc/sys proc ro,"), "{mounts}");
    assert!(mounts.contains("mount=/proc/keys "), "{mounts}");

    let bundle = s.bundle(&image, "exit", &["/probe", "exit", "7"]);
    assert_eq!(s.run(runtime, &bundle).status.code(), Some(7));
}

/// An image without the init (foreign): the bundle binds the host's static
/// init at /sbin/cradle-init; a whiteout in the upper layer removes a file.
fn runs_foreign_image_with_bound_init(runtime: Runtime) {
    let Some(s) = setup(runtime) else { return };
    let image = s.dir.path().join("foreign.tar");
    let mut base = Layer::default();
    base.dir("etc")
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .file("etc/gone", b"x", 0o644);
    let mut top = Layer::default();
    top.file("etc/.wh.gone", b"", 0o644);
    common::write_image(&image, &[base, top], &[], &["/probe", "report"]);
    let bundle = s.bundle(&image, "foreign", &[]);
    assert!(!bundle.join("rootfs/etc/gone").exists());
    assert!(!bundle.join("rootfs/etc/.wh.gone").exists());
    let out = s.run(runtime, &bundle);
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(
        value(&r, "pid1"),
        "/sbin/cradle-init -- /probe report",
        "{r:?}"
    );
    let mounts = String::from_utf8_lossy(&out.stdout);
    assert!(mounts.contains("mount=/sbin/cradle-init "), "{mounts}");
    assert!(mounts.contains("mount=/etc/hosts "), "{mounts}");
}

/// The runtime makes the `--cgroup-parent` in every hierarchy it joins
/// (blkio, devices … too, which [`CgroupParent`] does not know): removed
/// from each cgroup mount, the container's below it first.
struct EveryHierarchy<'a>(&'a CgroupParent);

impl Drop for EveryHierarchy<'_> {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            if !post.starts_with("cgroup") {
                continue;
            }
            let point = Path::new(pre.split(' ').nth(4).unwrap_or("/nonexistent"));
            let dir = point.join(&self.0.name[1..]);
            for child in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// `--memory 64m --pids-limit 20` become `linux.resources` below
/// `--cgroup-parent`; the container reads them from its own read-only
/// /sys/fs/cgroup, where its cgroup is the root, and its exit code passes.
fn applies_the_limits_of_the_bundle(runtime: Runtime) {
    let Some(s) = setup(runtime) else { return };
    let Some(image) = common::default_image() else {
        return;
    };
    let parent = CgroupParent::new();
    let _cleanup = EveryHierarchy(&parent);
    let v2 = parent.dirs.iter().all(|(c, _)| c.is_empty());
    let (memory, pids) = match v2 {
        true => ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max"),
        false => (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/pids/pids.max",
        ),
    };
    let script = format!(
        "echo memory=$(cat {memory}); echo pids=$(cat {pids}); \
         sed 's/^/cgroup=/' /proc/self/cgroup; /probe write {memory}; exit 7"
    );
    let flags = [
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "--cgroup-parent",
        &parent.name,
    ];
    let bundle = s.bundle_with(&flags, &image, "limits", &["sh", "-c", &script]);
    let out = s.run(runtime, &bundle);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let r = report(&out);
    assert_eq!(value(&r, "memory"), "67108864", "{out:?}");
    assert_eq!(value(&r, "pids"), "20", "{out:?}");
    let paths = common::values(&r, "cgroup");
    assert!(
        !paths.is_empty() && paths.iter().all(|l| l.ends_with(":/")),
        "{paths:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("write {memory} err {}", libc::EROFS)),
        "{stdout}"
    );
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroup left");
}

/// Root in the bundle's container holds CAP_MKNOD: the bundle's
/// `linux.resources.devices` (deny all, then `launcher run`'s allowlist)
/// lets it make a block node of the host's first loop device, not read it.
fn denies_a_block_device_of_the_bundle(runtime: Runtime) {
    let Some(s) = setup(runtime) else { return };
    let Some(busybox) = testkit::require_tool("busybox") else {
        return;
    };
    // busybox: the default image has neither mknod nor dd.
    let image = s.dir.path().join("busybox.tar");
    common::write_image(&image, &[common::busybox_layer(&busybox)], &[], &["sh"]);
    let script = "mknod /x b 7 0 && echo mknod=ok; \
                  echo read=$(dd if=/x of=/dev/null count=1 2>&1 && echo ok); \
                  echo null=$(dd if=/dev/zero of=/dev/null count=1 2>/dev/null && echo ok)";
    let bundle = s.bundle(&image, "devices", &["sh", "-c", script]);
    let out = s.run(runtime, &bundle);
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(value(&r, "mknod"), "ok", "{out:?}");
    assert!(
        value(&r, "read").contains("Operation not permitted"),
        "{out:?}"
    );
    assert_eq!(value(&r, "null"), "ok", "{out:?}");
}

#[test]
fn crun_denies_a_block_device_of_the_bundle() {
    denies_a_block_device_of_the_bundle(Runtime::Crun);
}

#[test]
fn runc_denies_a_block_device_of_the_bundle() {
    denies_a_block_device_of_the_bundle(Runtime::Runc);
}

#[test]
fn crun_applies_the_limits_of_the_bundle() {
    applies_the_limits_of_the_bundle(Runtime::Crun);
}

#[test]
fn runc_applies_the_limits_of_the_bundle() {
    applies_the_limits_of_the_bundle(Runtime::Runc);
}

#[test]
fn crun_runs_the_bundle_with_our_init_as_pid_1() {
    runs_our_image_with_init_as_pid_1(Runtime::Crun);
}

#[test]
fn runc_runs_the_bundle_with_our_init_as_pid_1() {
    runs_our_image_with_init_as_pid_1(Runtime::Runc);
}

#[test]
fn crun_runs_a_foreign_image_with_the_bound_init() {
    runs_foreign_image_with_bound_init(Runtime::Crun);
}

#[test]
fn runc_runs_a_foreign_image_with_the_bound_init() {
    runs_foreign_image_with_bound_init(Runtime::Runc);
}
