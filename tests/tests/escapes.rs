//! Issue 9's escapes, attacked as a hostile image author and as root inside
//! a default container would: each test builds the hostile image or runs
//! the attack, as root with default options (and in a user namespace where
//! that differs), and fails if the hole reopens.

mod common;

use common::{Kit, Layer};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A foreign image (no init inside: ours is bound at run time) of busybox
/// without the top-level directories in `skip`, plus `evil`.
fn hostile_image(kit: &Kit, name: &str, skip: &[&str], evil: Layer) -> PathBuf {
    let busybox = testkit::which("busybox").expect("busybox");
    let image = kit.root.path().join(format!("{name}.tar"));
    common::write_image(
        &image,
        &[common::busybox_layer_without(&busybox, skip), evil],
        &[],
        &["/bin/sh"],
    );
    image
}

/// `launcher run --init-path INIT [flags] IMAGE sh -c SCRIPT`.
fn run_sh(kit: &Kit, flags: &[&str], image: &Path, script: &str) -> Output {
    let init = common::init().expect("the static init");
    kit.cmd(&["--init-path", init.to_str().unwrap()])
        .args(flags)
        .arg(image)
        .args(["sh", "-c", script])
        .output()
        .expect("running the launcher")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The image made /proc a symlink through a directory of its own
/// (`proc -> /d/x/..`): procfs would land on /d and every mask and
/// read-only path would then be "absent" and skipped, leaving
/// /proc/sys/kernel/core_pattern writable. The image is refused instead.
#[test]
fn proc_symlinked_through_its_mount_point_is_refused() {
    let Some(kit) = Kit::new() else { return };
    let mut evil = Layer::default();
    evil.dir("d").dir("d/x").symlink("proc", "/d/x/..");
    let image = hostile_image(&kit, "proc-link", &["proc"], evil);
    let out = run_sh(
        &kit,
        &[],
        &image,
        "echo pwned > /proc/sys/kernel/core_pattern; cat /d/keys",
    );
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr(&out).contains("`/proc` in the image is a symlink"),
        "{out:?}"
    );
}

/// The same with /sys (`sys -> /f/x/..`), which left /sys/firmware unmasked.
#[test]
fn sys_symlinked_through_its_mount_point_is_refused() {
    let Some(kit) = Kit::new() else { return };
    let mut evil = Layer::default();
    evil.dir("f").dir("f/x").symlink("sys", "/f/x/..");
    let image = hostile_image(&kit, "sys-link", &["sys"], evil);
    let out = run_sh(&kit, &[], &image, "ls /f/firmware");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr(&out).contains("`/sys` in the image is a symlink"),
        "{out:?}"
    );
}

/// /dev as a symlink into the image would put the container's device nodes
/// (and the masks' null) wherever the image says.
#[test]
fn dev_symlinked_elsewhere_is_refused() {
    let Some(kit) = Kit::new() else { return };
    let mut evil = Layer::default();
    evil.dir("elsewhere").symlink("dev", "/elsewhere");
    let image = hostile_image(&kit, "dev-link", &["dev"], evil);
    let out = run_sh(&kit, &[], &image, "true");
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        stderr(&out).contains("`/dev` in the image is a symlink"),
        "{out:?}"
    );
}

/// Inside a default container, /proc/sys is read-only and the masked files
/// read empty, as docker's.
#[test]
fn proc_sys_is_read_only_and_keys_masked_in_a_default_container() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&[], &["write", "/proc/sys/kernel/core_pattern"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "write /proc/sys/kernel/core_pattern err 30",
        "{out:?}"
    );
    for path in ["/proc/keys", "/proc/timer_list", "/proc/kcore"] {
        let out = kit.probe_run(&[], &["read", path]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // Absent on a kernel without it is fine; readable with content is not.
        assert!(
            text.trim() == format!("read {path} ok 0") || text.contains(" err 2"),
            "{path}: {text}"
        );
    }
}

/// Restores the host's node modes if a test broke them (it fails then).
struct HostNodes(Vec<(PathBuf, u32)>);

impl HostNodes {
    fn save() -> HostNodes {
        HostNodes(
            ["null", "zero", "full", "random", "urandom", "tty"]
                .iter()
                .map(|n| Path::new("/dev").join(n))
                .map(|p| {
                    let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                    (p, mode)
                })
                .collect(),
        )
    }
    fn changed(&self) -> Vec<String> {
        self.0
            .iter()
            .filter(|(p, mode)| {
                std::fs::metadata(p).unwrap().permissions().mode() & 0o7777 != *mode
            })
            .map(|(p, _)| p.display().to_string())
            .collect()
    }
}

impl Drop for HostNodes {
    fn drop(&mut self) {
        for (p, mode) in &self.0 {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(*mode));
        }
    }
}

/// The container's /dev nodes were the host's inodes: `chmod 000 /dev/null`
/// inside changed the host's. As root they are the container's own nodes
/// now; in a user namespace the bound host nodes cannot be changed.
#[test]
fn chmod_of_dev_nodes_inside_leaves_the_hosts_alone() {
    let Some(kit) = Kit::new() else { return };
    let host = HostNodes::save();
    let host_null = std::fs::metadata("/dev/null").unwrap();
    let script = "for n in null zero full random urandom tty; do chmod 000 /dev/$n; done; \
                  chmod 000 /proc/kcore 2>/dev/null; \
                  stat -c '%t:%T %a' /dev/null; echo ok > /dev/null && echo written";
    for flags in [&[][..], &["--userns", "auto"][..]] {
        let out = kit
            .cmd(flags)
            .arg(&kit.image)
            .args(["sh", "-c", script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{flags:?}: {out:?}");
        assert_eq!(host.changed(), Vec::<String>::new(), "{flags:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("1:3 "), "{flags:?}: {text}");
        if flags.is_empty() {
            // Our own node, changed inside only; still a working null.
            assert!(text.starts_with("1:3 0\n"), "{text}");
        }
    }
    // Not a bind of the host's inode.
    let out = kit
        .cmd(&[])
        .arg(&kit.image)
        .args(["stat", "-c", "%d:%i", "/dev/null"])
        .output()
        .unwrap();
    let inside = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_ne!(
        inside,
        format!("{}:{}", host_null.dev(), host_null.ino()),
        "{out:?}"
    );
}

/// `-v HOST:/data` where the image's /data points at its root (`/`, or
/// `../../..`): the volume would replace the root and the launcher would
/// then create /sbin/cradle-init, /proc, /dev, /sys and /etc files in the
/// host directory, even for a read-only volume. Refused, and nothing is
/// written there.
#[test]
fn volume_target_resolving_to_the_root_is_refused() {
    let Some(kit) = Kit::new() else { return };
    let mut evil = Layer::default();
    evil.symlink("data", "/").symlink("up", "../../..");
    let image = hostile_image(&kit, "volume-root", &[], evil);
    for (target, suffix) in [("/data", ""), ("/data", ":ro"), ("/up", "")] {
        let host = tempfile::tempdir().unwrap();
        let volume = format!("{}:{target}{suffix}", host.path().display());
        let out = run_sh(&kit, &["-v", &volume], &image, "true");
        assert_eq!(out.status.code(), Some(125), "{volume}: {out:?}");
        assert!(
            stderr(&out).contains("resolves to the container's root"),
            "{volume}: {out:?}"
        );
        assert_eq!(common::entries(host.path()).len(), 0, "{volume}");
    }
}

/// The image points the files the launcher makes (the init's place, the
/// /etc files) into where a volume will be: they are made in the image's
/// own filesystem, never in the volume's host directory.
#[test]
fn nothing_is_made_in_a_volume_through_image_symlinks() {
    let Some(kit) = Kit::new() else { return };
    let mut evil = Layer::default();
    evil.dir("data")
        .symlink("sbin", "/data/sbin")
        .symlink("etc/hosts", "/data/hosts")
        .symlink("etc/hostname", "../data/hostname")
        .symlink("etc/resolv.conf", "/data/x/y/resolv.conf");
    let image = hostile_image(&kit, "volume-files", &["sbin"], evil);
    for suffix in ["", ":ro"] {
        let host = tempfile::tempdir().unwrap();
        let volume = format!("{}:/data{suffix}", host.path().display());
        let out = run_sh(&kit, &["-v", &volume], &image, "true");
        // Whether it runs (the volume hides the init the image pointed
        // there) does not matter; the host directory must stay empty.
        assert_eq!(
            common::entries(host.path()),
            Vec::<std::ffi::OsString>::new(),
            "{volume}: {out:?}"
        );
    }
}

/// `--no-init --entrypoint /proc/self/exe` made the container's PID 1 the
/// host's launcher binary (CVE-2019-5736 class). The workload is now
/// executed by a sealed in-memory copy of the init, so /proc/self/exe at
/// that moment is no host file.
#[test]
fn no_init_pid1_is_never_a_host_binary() {
    let Some(kit) = Kit::new() else { return };
    let out = kit
        .cmd(&["--no-init", "--entrypoint", "/proc/self/exe"])
        .arg(&kit.image)
        .arg("--version")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!text.contains("launcher"), "{out:?}");
    // A script whose interpreter is /proc/self/exe, as PID 1.
    let mut evil = Layer::default();
    evil.file("x", b"#!/proc/self/exe\n", 0o755);
    let image = hostile_image(&kit, "self-exe", &[], evil);
    let out = kit
        .cmd(&["--no-init", "--entrypoint", "/x"])
        .arg(&image)
        .arg("--version")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(!text.contains("launcher"), "{out:?}");
    // What PID 1 runs from is no host file: not the launcher, not the init.
    let out = kit
        .cmd(&["--no-init", "--entrypoint", "/proc/self/exe"])
        .arg(&kit.image)
        .args([
            "--",
            "/bin/sh",
            "-c",
            "stat -L -c %d:%i /proc/1/exe; readlink /proc/1/exe",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for host in [kit.launcher.clone(), common::init().unwrap()] {
        let meta = std::fs::metadata(&host).unwrap();
        assert!(
            !text.contains(&format!("{}:{}", meta.dev(), meta.ino())),
            "{}: {text} {out:?}",
            host.display()
        );
    }
}

/// `--no-init` with our own images (Entrypoint `/sbin/cradle-init --`): the
/// command is PID 1, as in docker without `--init`.
#[test]
fn no_init_makes_the_command_pid1_even_for_our_images() {
    let Some(kit) = Kit::new() else { return };
    let out = kit
        .cmd(&["--no-init"])
        .arg(&kit.image)
        .args(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("sh -c "), "{text}");
}
