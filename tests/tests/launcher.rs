//! End to end: images run by the launcher, probed from inside.

mod common;

use common::{Kit, report, value, values};

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
        "bob",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp/work",
        "--read-only",
    ]);
    cmd.arg(&kit.image).args(["sh", "-c", "echo $GREETING $HOME $(pwd) $(id -u):$(id -g); touch /x 2>&1 || echo ro; grep CapEff /proc/self/status"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "hi /home/bob /tmp/work 1000:1000", "{text}");
    assert!(
        text.contains("Read-only file system") || text.contains("ro"),
        "{text}"
    );
    assert!(text.contains("CapEff:\t0000000000000000"), "{text}");
}
