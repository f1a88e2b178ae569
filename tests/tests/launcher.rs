//! End to end: images run by the launcher, probed from inside.

mod common;

use common::{Kit, entries, report, value, values};

#[test]
fn probe_sees_its_own_namespaces_and_dockers_defaults() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&["--hostname", "cradled"], &["report"]);
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(
        value(&r, "pid1"),
        "/sbin/cradle-init -- /probe report",
        "{r:?}"
    );
    assert_eq!(value(&r, "hostname"), "cradled");
    assert_eq!(value(&r, "netdevs"), "lo");
    assert_eq!(value(&r, "CapEff"), "00000000a80425fb");
    assert_eq!(value(&r, "CapBnd"), "00000000a80425fb");
    assert_eq!(value(&r, "CapAmb"), "0000000000000000");
    assert_eq!(value(&r, "Seccomp"), "2");
    assert_eq!(value(&r, "NoNewPrivs"), "1");
    let host = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .display()
            .to_string()
    };
    for ns in ["ipc", "net", "uts", "pid", "mnt", "cgroup"] {
        assert_ne!(
            value(&r, &format!("ns.{ns}")),
            host(ns),
            "{ns} namespace is the host's"
        );
    }
    let mounts = values(&r, "mount");
    assert!(
        mounts.iter().any(|m| m.starts_with("/ overlay ")),
        "{mounts:?}"
    );
    for masked in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if std::path::Path::new(masked).exists() {
            assert!(
                mounts.iter().any(|m| m.starts_with(&format!("{masked} "))),
                "{masked} not masked: {mounts:?}"
            );
        }
    }
    let sys = mounts
        .iter()
        .find(|m| m.starts_with("/sys sysfs"))
        .expect("sysfs mounted");
    assert!(
        sys.split(' ').nth(2).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
    assert!(
        mounts.iter().any(|m| m.starts_with("/dev/pts devpts")),
        "{mounts:?}"
    );
}

#[test]
fn masked_kcore_reads_empty_and_sys_is_read_only() {
    let Some(kit) = Kit::new() else { return };
    // This kernel may be built without /proc/kcore; the masking is the same
    // for every masked file.
    for masked in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if !std::path::Path::new(masked).exists() {
            continue;
        }
        let out = kit.probe_run(&[], &["read", masked]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("read {masked} ok 0"),
            "{out:?}"
        );
    }
    let out = kit.probe_run(&[], &["write", "/sys/kernel/cradle-test"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("write /sys/kernel/cradle-test err {}", libc::EROFS),
        "{out:?}"
    );
}

#[test]
fn exit_codes_and_signals_pass_through() {
    let Some(kit) = Kit::new() else { return };
    for code in [0, 1, 2, 42, 125, 126, 127, 255] {
        let out = kit.probe_run(&[], &["exit", &code.to_string()]);
        assert_eq!(out.status.code(), Some(code), "{out:?}");
    }
    for sig in [libc::SIGKILL, libc::SIGTERM, libc::SIGUSR1] {
        let out = kit.probe_run(&[], &["kill", &sig.to_string()]);
        assert_eq!(out.status.code(), Some(128 + sig), "{out:?}");
    }
    // Without the init, the probe is PID 1 and its status is the container's.
    let out = kit.probe_run(&["--no-init"], &["exit", "7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

#[test]
fn launcher_failure_exits_125_naming_the_step() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&["-u", "nosuchuser"], &["report"]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("launcher: user `nosuchuser` is not in the image's /etc/passwd"),
        "{err}"
    );
    let out = kit.cmd(&[]).arg("/nonexistent/image.tar").output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reading image `/nonexistent/image.tar`"),
        "{out:?}"
    );
    let out = kit
        .cmd(&["--no-such-flag"])
        .arg(&kit.image)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let out = kit.probe_run(&["--no-init", "--entrypoint", "/no/such/program"], &[]);
    assert_eq!(out.status.code(), Some(127), "{out:?}");
}

fn spawn_until_ready(
    mut cmd: std::process::Command,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (child, out)
}

#[test]
fn sigterm_to_the_launcher_reaches_the_workload() {
    use std::io::Read;
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&[]);
    cmd.arg(&kit.image).args(["/probe", "wait-signal"]);
    let (mut child, mut out) = spawn_until_ready(cmd);
    let start = std::time::Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), format!("got {}", libc::SIGTERM));
    assert_eq!(status.code(), Some(0));
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    // It cleaned up before exiting.
    let left = entries(&kit.root.path().join("containers"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_stop_timeout_past_the_clock_s_end_forwards_sigterm_without_panicking() {
    use std::io::Read;
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&["--stop-timeout", &u64::MAX.to_string()]);
    cmd.arg(&kit.image).args(["/probe", "wait-signal"]);
    let (mut child, mut out) = spawn_until_ready(cmd);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), format!("got {}", libc::SIGTERM));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn sigterm_ignored_inside_is_followed_by_sigkill_after_the_grace_period() {
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&["--stop-timeout", "1"]);
    cmd.arg(&kit.image).args([
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    ]);
    let (mut child, _out) = spawn_until_ready(cmd);
    let start = std::time::Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let took = start.elapsed();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{status:?}");
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn orphans_made_inside_are_reaped() {
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&[]);
    cmd.arg(&kit.image)
        .args(["sh", "-c", "/probe orphans 5 && sleep 1 && /probe zombies"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "orphans=5\nzombies=0\n"
    );
}

#[test]
fn flags_set_user_env_workdir_and_read_only_root() {
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&[
        "-u",
        "1000:1000",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp/work",
        "--read-only",
    ]);
    cmd.arg(&kit.image).args([
        "sh",
        "-c",
        "echo $GREETING $(pwd); /probe write /x; /probe report",
    ]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "hi /tmp/work", "{text}");
    assert_eq!(lines[1], format!("write /x err {}", libc::EROFS), "{text}");
    let r = report(&out);
    assert_eq!(
        (value(&r, "uid"), value(&r, "gid")),
        ("1000".into(), "1000".into())
    );
    // docker: a non-root user has no effective capabilities.
    assert_eq!(value(&r, "CapEff"), "0000000000000000");
    assert_eq!(value(&r, "CapBnd"), "00000000a80425fb");
}

#[test]
fn rootless_run_as_an_ordinary_user() {
    let Some(kit) = Kit::new() else { return };
    let Some(setpriv) = testkit::require_tool("setpriv") else {
        return;
    };
    let sandbox = Sandbox::new(&kit, &kit.image, 65534, 65534);
    let out = sandbox
        .run_as(&setpriv)
        .arg("-v")
        .arg(format!("{}:/probe:ro", sandbox.probe.display()))
        .arg(&sandbox.image)
        .args(["/probe", "report"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(value(&r, "uid"), "0", "root inside");
    assert!(value(&r, "uid_map").starts_with("0 65534 1"), "{r:?}");
    assert_eq!(value(&r, "pid1"), "/sbin/cradle-init -- /probe report");
    assert_eq!(value(&r, "netdevs"), "lo");
    assert_eq!(value(&r, "CapEff"), "00000000a80425fb");
    assert_eq!(value(&r, "Seccomp"), "2");
    assert_ne!(
        value(&r, "ns.user"),
        std::fs::read_link("/proc/self/ns/user")
            .unwrap()
            .display()
            .to_string()
    );
    // Its state is gone; only the layer cache stays.
    let left = entries(&sandbox.cache.join("containers"));
    assert!(left.is_empty(), "{left:?}");
}

/// Three layers: a base with files, one that deletes a file (whiteout) and
/// replaces a directory's contents (opaque), and the init.
fn layered_image(kit: &Kit, docker_save: bool) -> std::path::PathBuf {
    use common::Layer;
    let busybox = testkit::which("busybox").expect("busybox");
    let mut base = common::busybox_layer(&busybox);
    base.dir("data")
        .dir("data/old")
        .file("data/old/file", b"old", 0o644)
        .file("etc/gone", b"x", 0o644)
        .file("etc/kept", b"k", 0o644);
    let mut change = Layer::default();
    change
        .file("etc/.wh.gone", b"", 0o644)
        .dir("data")
        .file("data/.wh..wh..opq", b"", 0o644)
        .file("data/new", b"new", 0o644);
    let mut init = Layer::default();
    init.file(
        "sbin/cradle-init",
        &std::fs::read(common::init().unwrap()).unwrap(),
        0o755,
    );
    let out = kit.root.path().join(if docker_save {
        "layered-docker.tar"
    } else {
        "layered.tar"
    });
    if docker_save {
        common::write_docker_save(
            &out,
            &[base, change, init],
            &["/sbin/cradle-init", "--"],
            &["/bin/sh"],
        );
    } else {
        common::write_image(
            &out,
            &[base, change, init],
            &["/sbin/cradle-init", "--"],
            &["/bin/sh"],
        );
    }
    out
}

#[test]
fn multi_layer_image_with_whiteouts_and_opaque_dir_runs() {
    let Some(kit) = Kit::new() else { return };
    if common::init().is_none() {
        return;
    }
    for (docker_save, userns) in [(false, "host"), (true, "host"), (false, "auto")] {
        let image = layered_image(&kit, docker_save);
        for _ in 0..2 {
            // cold, then warm
            let out = kit
                .cmd(&["--userns", userns])
                .arg(&image)
                .args([
                    "sh",
                    "-c",
                    "ls /etc/gone 2>/dev/null; cat /etc/kept; echo; ls /data",
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "k\nnew\n",
                "docker_save={docker_save}"
            );
        }
    }
}

#[test]
fn foreign_image_gets_our_init_bound_read_only() {
    use common::Layer;
    let Some(kit) = Kit::new() else { return };
    let Some(init) = common::init() else { return };
    let busybox = testkit::which("busybox").expect("busybox");
    let image = kit.root.path().join("foreign.tar");
    common::write_image(
        &image,
        &[common::busybox_layer(&busybox), Layer::default()],
        &[],
        &["/bin/sh"],
    );
    let mut cmd = kit.cmd(&["--init-path", init.to_str().unwrap()]);
    cmd.arg(&image).args(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; grep ' /sbin/cradle-init ' /proc/self/mountinfo | cut -d' ' -f6"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("/sbin/cradle-init -- sh -c"), "{text}");
    assert!(
        text.lines()
            .nth(1)
            .unwrap_or("")
            .split(',')
            .any(|o| o == "ro"),
        "{text}"
    );
}

#[test]
fn tampered_layer_is_refused_before_use() {
    let Some(kit) = Kit::new() else { return };
    if common::init().is_none() {
        return;
    }
    let image = layered_image(&kit, false);
    let mut bytes = std::fs::read(&image).unwrap();
    // Flip one byte inside the first layer's data (busybox's ELF header is
    // early in the first blob).
    let at = bytes.windows(4).position(|w| w == b"\x7fELF").unwrap();
    bytes[at + 8] ^= 0xff;
    let bad = kit.root.path().join("tampered.tar");
    std::fs::write(&bad, bytes).unwrap();
    let out = kit.cmd(&[]).arg(&bad).arg("true").output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sha256 of"),
        "{out:?}"
    );
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(marker)
            })
        })
        .count()
}

#[test]
fn nothing_is_left_behind_after_200_runs_some_killed() {
    let Some(kit) = Kit::new() else { return };
    let root = kit.root.path().display().to_string();
    let marker = format!("1{}.5", std::process::id() % 100000);
    for i in 0..200 {
        if i % 20 == 10 {
            // The launcher is SIGKILLed while the container runs: the
            // container dies with it (PR_SET_PDEATHSIG), its state is
            // reclaimed by a later run.
            let mut cmd = kit.cmd(&[]);
            cmd.arg(&kit.image)
                .args(["sh", "-c", &format!("echo ready; exec sleep {marker}")]);
            let (mut child, _out) = spawn_until_ready(cmd);
            child.kill().unwrap();
            child.wait().unwrap();
            continue;
        }
        let out = kit.cmd(&[]).arg(&kit.image).arg("true").output().unwrap();
        assert!(out.status.success(), "run {i}: {out:?}");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while processes_with(&format!("sleep {marker}")) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        processes_with(&format!("sleep {marker}")),
        0,
        "containers outlived their launcher"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&root),
        "mounts left under {root}:\n{mounts}"
    );
    for sub in ["containers", "tmp"] {
        let left = entries(&kit.root.path().join(sub));
        assert!(left.is_empty(), "left in {sub}: {left:?}");
    }
}

#[test]
fn keep_leaves_the_writable_layer_and_nothing_else() {
    let Some(kit) = Kit::new() else { return };
    let out = kit
        .cmd(&["--keep", "--name", "kept"])
        .arg(&kit.image)
        .args(["sh", "-c", "echo data > /written"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let dir = kit.root.path().join("containers/kept");
    assert_eq!(
        std::fs::read_to_string(dir.join("upper/written")).unwrap(),
        "data\n"
    );
    assert!(!dir.join("rootfs").exists() && !dir.join("work").exists());
    // Another run does not reclaim it; running the name again is refused
    // (as docker refuses the name of a stopped container), `rm` removes it.
    let out = kit.cmd(&[]).arg(&kit.image).arg("true").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join("upper/written").exists());
    let out = kit
        .cmd(&["--name", "kept"])
        .arg(&kit.image)
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(dir.join("upper/written").exists());
    let out = std::process::Command::new(&kit.launcher)
        .env("CRADLE_ROOT", kit.root.path())
        .args(["rm", "kept"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.exists());
}

#[test]
fn concurrent_cold_runs_share_one_cache() {
    let Some(kit) = Kit::new() else { return };
    let children: Vec<_> = (0..6)
        .map(|_| {
            kit.cmd(&[])
                .arg(&kit.image)
                .arg("true")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let layers: Vec<_> = std::fs::read_dir(kit.root.path().join("layers/sha256"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .collect();
    let expected = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&kit.image)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("blobs/sha256/"))
                .count()
        })
        .unwrap_or(0);
    // One directory per layer digest (config and manifest are blobs too).
    assert!(
        !layers.is_empty() && layers.len() <= expected.saturating_sub(2),
        "{layers:?}"
    );
    let tmp = entries(&kit.root.path().join("tmp"));
    assert!(tmp.is_empty(), "{tmp:?}");
}

#[test]
fn userns_auto_maps_root_to_an_unused_range_with_idmapped_layers() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&["--userns", "auto"], &["report"]);
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    let map = value(&r, "uid_map");
    let fields: Vec<&str> = map.split(' ').collect();
    assert_eq!((fields[0], fields[2]), ("0", "65536"), "{map}");
    assert_ne!(fields[1], "0", "container root must not be host root");
    assert_eq!(value(&r, "uid"), "0");
    assert_eq!(value(&r, "CapEff"), "00000000a80425fb");
    // The layers show their real owners (idmapped), and root may write.
    let out = kit
        .cmd(&["--userns", "auto"])
        .arg(&kit.image)
        .args(["sh", "-c", "echo x > /etc/written && ls -ln /bin/sh"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ls = String::from_utf8_lossy(&out.stdout);
    assert!(ls.split_whitespace().nth(2) == Some("0"), "{ls}");
}

#[test]
fn concurrent_userns_auto_containers_get_distinct_ranges() {
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&["--userns", "auto"]);
    cmd.arg(&kit.image)
        .args(["sh", "-c", "cat /proc/self/uid_map; echo ready; sleep 5"]);
    let mut first = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(first.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let second = kit.probe_run(&["--userns", "auto"], &["report"]);
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    let _ = first.wait();
    let a = line.split_whitespace().nth(1).unwrap().to_string();
    let b = value(&report(&second), "uid_map")
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    assert_ne!(a, b, "both containers got the range at {a}");
}

#[test]
fn mount_targets_cannot_escape_through_image_symlinks() {
    use common::Layer;
    let Some(kit) = Kit::new() else { return };
    let Some(init) = common::init() else { return };
    let busybox = testkit::which("busybox").expect("busybox");
    // /etc/hostname and /proc point out of the root; mounting onto them must
    // stay inside it.
    let escape = kit.root.path().join("escaped");
    let mut evil = Layer::default();
    evil.symlink(
        "etc/hostname",
        &format!("../../../../../../..{}", escape.display()),
    )
    .file("sbin/cradle-init", &std::fs::read(init).unwrap(), 0o755);
    let image = kit.root.path().join("evil.tar");
    common::write_image(
        &image,
        &[common::busybox_layer(&busybox), evil],
        &["/sbin/cradle-init", "--"],
        &["/bin/sh"],
    );
    let out = kit
        .cmd(&["--hostname", "inside"])
        .arg(&image)
        .args(["cat", "/etc/hostname"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "inside\n");
    assert!(
        !escape.exists(),
        "a mount target was created outside the root"
    );
}

/// A directory an unprivileged user can reach wherever the checkout is: a
/// cache it owns, and copies of the image, the launcher and the probe.
struct Sandbox {
    _top: tempfile::TempDir,
    uid: u32,
    gid: u32,
    cache: std::path::PathBuf,
    image: std::path::PathBuf,
    launcher: std::path::PathBuf,
    probe: std::path::PathBuf,
}

impl Sandbox {
    fn new(kit: &Kit, image: &std::path::Path, uid: u32, gid: u32) -> Sandbox {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::Builder::new()
            .prefix("cradle-rootless-")
            .tempdir()
            .unwrap();
        let dir = top.path();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cache = dir.join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::os::unix::fs::chown(&cache, Some(uid), Some(gid)).unwrap();
        let copy = |from: &std::path::Path, name: &str, mode: u32| {
            let to = dir.join(name);
            common::copy_file(from, &to, mode);
            to
        };
        // As installed: cradle-init next to the launcher, which starts every
        // workload through it.
        copy(
            &common::init().expect("the static init"),
            "cradle-init",
            0o755,
        );
        Sandbox {
            uid,
            gid,
            cache: cache.clone(),
            image: copy(image, "image.tar", 0o644),
            launcher: copy(&kit.launcher, "launcher", 0o755),
            probe: copy(&kit.probe, "probe", 0o755),
            _top: top,
        }
    }

    /// `launcher run` as the sandbox's user, with its cache.
    fn run_as(&self, setpriv: &std::path::Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(setpriv);
        cmd.args(["--reuid", &self.uid.to_string()])
            .args(["--regid", &self.gid.to_string(), "--clear-groups"])
            .arg(&self.launcher)
            .env("CRADLE_ROOT", &self.cache)
            .env_remove("RUST_BACKTRACE")
            .arg("run");
        cmd
    }
}

/// A temporary user with a subordinate id range, removed on drop.
struct TempUser {
    name: String,
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel")
            .arg(&self.name)
            .status();
    }
}

#[test]
fn rootless_with_subordinate_ids_maps_a_range_with_newuidmap() {
    let Some(kit) = Kit::new() else { return };
    let (Some(_), Some(_), Some(setpriv), Some(_)) = (
        testkit::require_tool("useradd"),
        testkit::require_tool("newuidmap"),
        testkit::require_tool("setpriv"),
        testkit::require_tool("usermod"),
    ) else {
        return;
    };
    let name = format!("cradle-t{}", std::process::id() % 100000);
    let ok = std::process::Command::new("useradd")
        .args(["-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", &name])
        .status()
        .unwrap();
    assert!(ok.success(), "useradd failed");
    let user = TempUser { name };
    // useradd gives a new user a range when /etc/login.defs says so; else
    // add one.
    let range = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{}:", user.name))
                    .map(|r| r.replace(':', " "))
            })
    };
    if range("/etc/subuid").is_none() || range("/etc/subgid").is_none() {
        let ok = std::process::Command::new("usermod")
            .args([
                "--add-subuids",
                "400000-465535",
                "--add-subgids",
                "400000-465535",
                &user.name,
            ])
            .status()
            .unwrap();
        assert!(ok.success(), "usermod failed");
    }
    let subuid = range("/etc/subuid").unwrap();
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .arg(flag)
            .arg(&user.name)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (uid, gid) = (id("-u"), id("-g"));
    let sandbox = Sandbox::new(&kit, &kit.image, uid.parse().unwrap(), gid.parse().unwrap());
    let out = sandbox
        .run_as(&setpriv)
        .args(["-u", "1000:1000", "-v"])
        .arg(format!("{}:/probe:ro", sandbox.probe.display()))
        .arg(&sandbox.image)
        .args(["/probe", "report"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(value(&r, "uid_map"), format!("0 {uid} 1,1 {subuid}"));
    assert_eq!(value(&r, "uid"), "1000");
}

#[test]
fn interactive_passes_stdin_and_env_file_sets_variables() {
    use std::io::Write;
    let Some(kit) = Kit::new() else { return };
    let env_file = kit.root.path().join("env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\nSHARED=file\n").unwrap();
    let mut child = kit
        .cmd(&[
            "-i",
            "--env-file",
            env_file.to_str().unwrap(),
            "-e",
            "SHARED=flag",
        ])
        .arg(&kit.image)
        .args(["sh", "-c", "read line; echo got $line $FROM_FILE $SHARED"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got hello yes flag\n");
    // Without -i the container reads /dev/null.
    let out = kit
        .cmd(&[])
        .arg(&kit.image)
        .args(["sh", "-c", "read line || echo eof"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "eof\n", "{out:?}");
}

#[test]
fn network_host_shares_the_hosts_interfaces() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&["--network", "host"], &["report"]);
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    let host_net = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    assert_eq!(value(&r, "ns.net"), host_net);
    assert_ne!(
        value(&r, "ns.uts"),
        std::fs::read_link("/proc/self/ns/uts")
            .unwrap()
            .display()
            .to_string()
    );
    let sys = values(&r, "mount")
        .into_iter()
        .find(|m| m.starts_with("/sys "))
        .expect("/sys mounted");
    assert!(
        sys.split(' ').nth(2).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
}

#[test]
fn every_catchable_signal_is_forwarded() {
    use std::io::Read;
    let Some(kit) = Kit::new() else { return };
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGINT] {
        let mut cmd = kit.cmd(&[]);
        cmd.arg(&kit.image).args(["/probe", "wait-signal"]);
        let (mut child, mut out) = spawn_until_ready(cmd);
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        assert_eq!(rest.trim(), format!("got {sig}"));
        assert_eq!(status.code(), Some(0));
    }
}

#[test]
fn sigterm_becomes_the_images_stop_signal() {
    use std::io::Read;
    let Some(kit) = Kit::new() else { return };
    let Some(init) = common::init() else { return };
    let busybox = testkit::which("busybox").expect("busybox");
    let mut top = common::Layer::default();
    top.file("sbin/cradle-init", &std::fs::read(init).unwrap(), 0o755);
    let image = kit.root.path().join("stopsignal.tar");
    let config = serde_json::json!({"Entrypoint": ["/sbin/cradle-init", "--"], "Cmd": ["/bin/sh"], "StopSignal": "SIGUSR1"});
    common::write_image_with(&image, &[common::busybox_layer(&busybox), top], config);
    let mut cmd = kit.cmd(&[]);
    cmd.arg(&image).args(["/probe", "wait-signal"]);
    let (mut child, mut out) = spawn_until_ready(cmd);
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), format!("got {}", libc::SIGUSR1));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn rootless_multi_layer_image_with_whiteouts_runs() {
    let Some(kit) = Kit::new() else { return };
    let Some(setpriv) = testkit::require_tool("setpriv") else {
        return;
    };
    if common::init().is_none() {
        return;
    }
    let sandbox = Sandbox::new(&kit, &layered_image(&kit, false), 65534, 65534);
    for _ in 0..2 {
        let out = sandbox
            .run_as(&setpriv)
            .arg(&sandbox.image)
            .args([
                "sh",
                "-c",
                "ls /etc/gone 2>/dev/null; cat /etc/kept; echo; ls /data",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "k\nnew\n");
    }
}

#[test]
fn user_by_name_comes_from_the_images_passwd_and_group() {
    let Some(kit) = Kit::new() else { return };
    if common::init().is_none() {
        return;
    }
    let image = layered_image(&kit, false);
    let out = kit
        .cmd(&["-u", "bob"])
        .arg(&image)
        .args(["sh", "-c", "id -u; id -g; id -G; echo $HOME"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n1000\n1000 10\n/home/bob\n"
    );
}

#[test]
fn tty_with_piped_stdin_reaches_end_of_file() {
    use std::io::Write;
    let Some(kit) = Kit::new() else { return };
    let mut child = kit
        .cmd(&["-i", "-t"])
        .arg(&kit.image)
        .args(["sh", "-c", "while read l; do echo got-$l; done; echo done"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a\nb\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(
        text.contains("got-a\n") && text.contains("got-b\n") && text.ends_with("done\n"),
        "{text}"
    );
}
