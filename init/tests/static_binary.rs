//! The static init that `cargo xtask build-init` makes: no program
//! interpreter, smaller than tini-static, and working as podman's
//! `--init-path` (where it runs as `podman-init`, catatonit's personality).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);
/// /usr/bin/tini-static from Debian's tini package.
const TINI_STATIC_SIZE: u64 = 708_080;

fn static_init() -> Option<PathBuf> {
    testkit::require_artifact("static/cradle-init", "cargo xtask build-init")
}

/// Whether the ELF64 file has a PT_INTERP program header (None: not ELF64).
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let at = |off: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(off..off + len)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, b| acc << 8 | u64::from(*b)),
        )
    };
    let (phoff, phentsize, phnum) = (
        at(0x20, 8)? as usize,
        at(0x36, 2)? as usize,
        at(0x38, 2)? as usize,
    );
    (0..phnum).try_fold(false, |found, i| {
        Some(found || at(phoff + i * phentsize, 4)? == 3)
    })
}

#[test]
fn static_init_has_no_program_interpreter() {
    let Some(path) = static_init() else { return };
    let elf = std::fs::read(&path).unwrap();
    assert_eq!(
        has_interpreter(&elf),
        Some(false),
        "{} is not static",
        path.display()
    );
    // The checker itself: the dynamically linked test binary has one.
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert_eq!(has_interpreter(&me), Some(true));
}

#[test]
fn static_init_is_smaller_than_tini_static() {
    let Some(path) = static_init() else { return };
    let size = path.metadata().unwrap().len();
    assert!(size < TINI_STATIC_SIZE, "{size} bytes");
}

#[test]
fn static_init_runs_docker_init_style() {
    let Some(path) = static_init() else { return };
    let scratch = Scratch::new("static");
    let docker_init = scratch.path().join("docker-init");
    std::os::unix::fs::symlink(&path, &docker_init).unwrap();
    let out = run(
        command(&docker_init).args(["-s", "--", "sh", "-c", "exit 3"]),
        LIMIT,
    );
    assert_eq!((out.code(), out.stderr.as_str()), (Some(3), ""), "{out:?}");
    if can_unshare() {
        let mut cmd = command("unshare");
        cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
            .arg(&path);
        cmd.args([
            "--",
            "sh",
            "-c",
            "(sleep 0.1 &); sleep 0.4; grep -l '^State:.Z' /proc/[0-9]*/status | wc -l",
        ]);
        let out = run(&mut cmd, LIMIT);
        assert_eq!((out.code(), out.stdout.trim()), (Some(0), "0"), "{out:?}");
    }
}

/// A one-layer busybox image imported into podman, removed on drop.
struct Image {
    name: String,
    env: Vec<(String, PathBuf)>,
}

impl Image {
    fn import(scratch: &Path, busybox: &Path) -> Image {
        let root = scratch.join("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        for dir in ["proc", "sys", "dev", "tmp", "etc", "run"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "cat", "grep", "wc", "true", "kill", "echo"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        let tarball = scratch.join("rootfs.tar");
        let out = run(
            command("tar")
                .arg("-C")
                .arg(&root)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
            LIMIT,
        );
        assert!(out.status.success(), "{out:?}");
        // podman here needs runc and ulimits it may set (see the CI notes).
        let conf = scratch.join("containers.conf");
        std::fs::write(
            &conf,
            "[engine]\nruntime = \"runc\"\n[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )
        .unwrap();
        let image = Image {
            name: format!("localhost/cradle-init-test:{}", std::process::id()),
            env: vec![("CONTAINERS_CONF".into(), conf)],
        };
        let out = run(
            image
                .podman()
                .args(["import", "--quiet"])
                .arg(&tarball)
                .arg(&image.name),
            LIMIT,
        );
        assert!(out.status.success(), "podman import: {out:?}");
        image
    }

    fn podman(&self) -> std::process::Command {
        let mut cmd = command("podman");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = self.podman().args(["rmi", "--force", &self.name]).output();
    }
}

#[test]
fn works_as_podman_init_path() {
    let Some(init) = static_init() else { return };
    let (Some(_), Some(busybox)) = (
        testkit::require_tool("podman"),
        testkit::require_tool("busybox"),
    ) else {
        return;
    };
    if !testkit::require(testkit::is_root(), "podman runs rootful here") {
        return;
    }
    let scratch = Scratch::new("podman");
    let image = Image::import(scratch.path(), &busybox);
    let podman_run = |script: &str| {
        let mut cmd = image.podman();
        cmd.args(["run", "--rm", "--init", "--init-path"])
            .arg(&init)
            .args([&image.name, "sh", "-c", script]);
        run(&mut cmd, LIMIT)
    };
    let out = podman_run("exit 3");
    assert_eq!(out.code(), Some(3), "{out:?}");
    let out =
        podman_run("cat /proc/1/cmdline | tr '\\0' ' ' 2>/dev/null || cat /proc/1/cmdline; echo");
    assert!(
        out.stdout.contains("podman-init"),
        "the init is PID 1: {out:?}"
    );
    let out = podman_run(
        "(sleep 0.1 &); (sleep 0.1 &); sleep 0.5; grep -l '^State:.Z' /proc/[0-9]*/status | wc -l",
    );
    assert_eq!(
        (out.code(), out.stdout.trim()),
        (Some(0), "0"),
        "orphans reaped: {out:?}"
    );
    let out = podman_run("kill -TERM $$; sleep 5");
    assert_eq!(out.code(), Some(143), "{out:?}");
}

#[test]
fn static_init_runs_a_script_without_a_shebang_through_bin_sh() {
    // musl's execvp gives up with ENOEXEC (exit 126) where glibc's, and a
    // program embedding the library (library.rs), runs /bin/sh.
    let Some(path) = static_init() else { return };
    let scratch = Scratch::new("static-script");
    let script = scratch.path().join("no-shebang");
    std::fs::write(&script, "echo \"$0\" \"$1\"; exit 7\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run(command(&path).arg("--").arg(&script).arg("x"), LIMIT);
    assert_eq!(out.code(), Some(7), "{out:?}");
    assert_eq!(out.stdout, format!("{} x\n", script.display()));
}
