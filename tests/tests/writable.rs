//! The container's writable places are bounded (issue 10): the in-memory
//! writable layer has a size cap, `--tmpfs` mounts are capped too, and an
//! image of many layers still mounts.

mod common;

use common::{Kit, Layer};

fn sh(kit: &Kit, flags: &[&str], script: &str) -> std::process::Output {
    kit.cmd(flags)
        .arg(&kit.image)
        .args(["sh", "-c", script])
        .output()
        .expect("running the launcher")
}

/// Without a memory limit a container could pin half the host's RAM in its
/// writable layer; past the cap it gets ENOSPC and the host is fine. (The default image has no dd; head -c does.)
#[test]
fn writing_past_the_writable_layer_cap_fails_with_enospc() {
    let Some(kit) = Kit::new() else { return };
    let script =
        |mib: u32| format!("head -c {mib}M /dev/zero 2>&1 >/big; echo status=$?; rm -f /big");
    for (flags, mib) in [
        (&["--storage-opt", "size=16m"][..], 32),
        // The default cap, 1 GiB.
        (&[][..], 1100),
    ] {
        let out = sh(&kit, flags, &script(mib));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{flags:?}: {out:?}");
        assert!(
            text.contains("No space left on device"),
            "{flags:?}: {text}"
        );
        assert!(text.contains("status=1"), "{flags:?}: {text}");
    }
    // Under the cap, writing works.
    let out = sh(&kit, &["--storage-opt", "size=16m"], &script(8));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("status=0"),
        "{out:?}"
    );
    let bad = kit
        .cmd(&["--storage-opt", "size=0"])
        .arg(&kit.image)
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(125), "{bad:?}");
}

#[test]
fn tmpfs_flag_mounts_a_capped_noexec_tmpfs() {
    let Some(kit) = Kit::new() else { return };
    let out = sh(
        &kit,
        &["--tmpfs", "/scratch:size=8m,mode=1777"],
        "grep ' /scratch ' /proc/self/mountinfo; stat -c %a /scratch; \
         head -c 16M /dev/zero 2>&1 >/scratch/big; echo status=$?",
    );
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mount = text.lines().next().unwrap_or("");
    assert!(mount.contains(" - tmpfs "), "{text}");
    for flag in ["nosuid", "nodev", "noexec"] {
        assert!(mount.split([' ', ',']).any(|o| o == flag), "{flag}: {text}");
    }
    assert!(mount.contains("size=8192k"), "{text}");
    assert!(text.contains("\n1777\n"), "{text}");
    assert!(text.contains("No space left on device"), "{text}");
    for bad in ["relative", "/x:size=abc", "/x:bogus", "/"] {
        let out = kit
            .cmd(&["--tmpfs", bad])
            .arg(&kit.image)
            .arg("true")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{bad}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--tmpfs"),
            "{bad}: {out:?}"
        );
    }
}

/// Docker runs images of 125+ layers; the overlay's option string of 42
/// full layer paths already outgrew a page.
#[test]
fn image_of_128_layers_runs() {
    let Some(kit) = Kit::new() else { return };
    let Some(init) = common::init() else { return };
    let busybox = testkit::which("busybox").expect("busybox");
    let mut layers = vec![common::busybox_layer(&busybox)];
    for i in 1..128 {
        let mut l = Layer::default();
        l.file(&format!("f{i}"), format!("{i}\n").as_bytes(), 0o644);
        layers.push(l);
    }
    let image = kit.root.path().join("deep.tar");
    common::write_image(&image, &layers, &[], &["/bin/sh"]);
    let out = kit
        .cmd(&["--init-path", init.to_str().unwrap()])
        .arg(&image)
        .args(["sh", "-c", "cat /f1 /f64 /f127"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n64\n127\n");
}

/// `launcher image ls | head -1` and `launcher bundle … | …` whose reader
/// went away end quietly (print! panicked on EPIPE: exit 101, a backtrace).
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let Some(kit) = Kit::new() else { return };
    let closed = || {
        let mut fds = [0; 2];
        // SAFETY: fds is a valid out-array of two descriptors.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 returned two fresh descriptors nothing else owns.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read);
        write
    };
    // Something for `image ls` to list.
    let run = sh(&kit, &[], "true");
    assert!(run.status.success(), "{run:?}");
    let bundle = kit.root.path().join("bundle");
    for args in [
        vec!["image".to_string(), "ls".to_string()],
        vec![
            "bundle".to_string(),
            kit.image.display().to_string(),
            bundle.display().to_string(),
        ],
    ] {
        let out = std::process::Command::new(&kit.launcher)
            .env("CRADLE_ROOT", kit.root.path())
            .env("RUST_BACKTRACE", "1")
            .args(&args)
            .stdout(closed())
            .output()
            .unwrap();
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "{args:?}"
        );
    }
}
