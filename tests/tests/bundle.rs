//! End to end: `launcher bundle` output run by crun and runc, our init as
//! PID 1, the launcher's defaults inside, exit codes passed through.

mod common;

use common::{Layer, report, value};
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
        let dir = self.dir.path().join(name);
        let out = Command::new(&self.launcher)
            .arg("bundle")
            .arg("--init-path")
            .arg(&self.init)
            .arg("-v")
            .arg(format!("{}:/probe:ro", self.probe.display()))
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
