//! End to end: images that attack the launcher through what its child reads
//! before it execs the workload (issue 9, items 7 and 9): an /etc/passwd or
//! /etc/group that is a device or a FIFO, or has ids that are not numbers,
//! and an Env of 100,000 entries; and a child stuck before its exec, which
//! must neither outlive the launcher nor keep it from stopping.

mod common;

use common::{CgroupParent, Kit, Layer};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a run may take before the test calls it hung, kills it and
/// fails: a guard against the attack under test, not a measure of speed.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// The variable that marks a test's launcher and its child (see [`Marker`]).
const MARKER_VAR: &str = "CRADLE_E2E_MARKER";

/// A value in the launcher's environment. Its child is a copy of the
/// launcher until it execs the workload (which gets the image's environment,
/// not the launcher's), so the processes holding the value are the launcher
/// and a child that has not exec'd. Dropping the marker kills them all, so
/// that a failing test leaves none behind.
struct Marker(String);

impl Marker {
    fn new() -> Marker {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Marker(format!("hostile-{}-{n}", std::process::id()))
    }

    fn set(&self, cmd: &mut Command) {
        cmd.env(MARKER_VAR, &self.0);
    }

    /// The pids whose environment holds the marker.
    fn holders(&self) -> Vec<i32> {
        let needle = format!("{MARKER_VAR}={}", self.0).into_bytes();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle))
            })
            .collect()
    }

    /// The holders still there after waiting up to [`HANG_GUARD`] for them
    /// to go (a killed process takes a moment to be reaped).
    fn left_after_waiting(&self) -> Vec<i32> {
        let start = Instant::now();
        loop {
            let left = self.holders();
            if left.is_empty() || start.elapsed() > HANG_GUARD {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_holders(&self) {
        for pid in self.holders() {
            // SAFETY: kill(2) of a process this test started (it holds the
            // test's marker).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        self.kill_holders();
    }
}

/// busybox, our init and the image's files, under `top` (the attack), with
/// `env` as the image's Env.
fn image_with(kit: &Kit, name: &str, top: Layer, env: &[String]) -> Option<PathBuf> {
    let busybox = testkit::require_tool("busybox")?;
    let init = std::fs::read(common::init()?).ok()?;
    let mut base = common::busybox_layer(&busybox);
    base.file("sbin/cradle-init", &init, 0o755);
    let image = kit.root.path().join(format!("{name}.tar"));
    let config = serde_json::json!({
        "Entrypoint": ["/sbin/cradle-init", "--"],
        "Cmd": ["/bin/sh"],
        "Env": env,
    });
    common::write_image_with(&image, &[base, top], config);
    Some(image)
}

fn default_env() -> Vec<String> {
    vec![format!(
        "PATH={}",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )]
}

/// Runs `cmd` (marked) to its end. One still running after [`HANG_GUARD`]
/// is killed, with its child, and the test fails.
fn run_guarded(mut cmd: Command, marker: &Marker) -> Output {
    marker.set(&mut cmd);
    let mut launcher = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the launcher");
    let start = Instant::now();
    while launcher.try_wait().expect("waiting").is_none() {
        if start.elapsed() > HANG_GUARD {
            let _ = launcher.kill();
            let _ = launcher.wait();
            let orphans = marker.holders();
            // Its child holds the output pipes: reading them would hang too.
            marker.kill_holders();
            panic!(
                "the launcher hung: killed after {HANG_GUARD:?}, leaving {} process(es) of \
                 its container that had not exec'd",
                orphans.len()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    launcher.wait_with_output().expect("reading the output")
}

/// The launcher fails as docker does when the runtime fails (125), with an
/// error naming `file`, and leaves no process behind.
fn assert_refused_naming(out: &Output, file: &str, marker: &Marker) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr.contains(&format!("`{file}`")), "{stderr}");
    assert_eq!(marker.left_after_waiting(), Vec::<i32>::new());
}

// The image made /etc/passwd a symlink to /dev/zero: read whole, it was an
// endless allocation in the still-privileged child. The address-space limit
// keeps a launcher that reads it whole from taking the machine with it.
#[test]
fn passwd_symlinked_to_dev_zero_is_refused_naming_it() {
    use std::os::unix::process::CommandExt;
    let Some(kit) = Kit::new() else { return };
    let mut top = Layer::default();
    top.symlink("etc/passwd", "/dev/zero");
    let Some(image) = image_with(&kit, "passwd-zero", top, &default_env()) else {
        return;
    };
    let marker = Marker::new();
    let mut cmd = kit.cmd(&[]);
    cmd.arg(&image).arg("true");
    // SAFETY: setrlimit(2) is async-signal-safe; it only limits the child.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let out = run_guarded(cmd, &marker);
    assert_refused_naming(&out, "/etc/passwd", &marker);
}

// A FIFO with no writer: opening it blocked the child forever, and with it
// the launcher.
#[test]
fn passwd_that_is_a_fifo_is_refused_without_hanging() {
    let Some(kit) = Kit::new() else { return };
    let mut top = Layer::default();
    top.fifo("etc/passwd");
    let Some(image) = image_with(&kit, "passwd-fifo", top, &default_env()) else {
        return;
    };
    let marker = Marker::new();
    let mut cmd = kit.cmd(&[]);
    cmd.arg(&image).arg("true");
    let out = run_guarded(cmd, &marker);
    assert_refused_naming(&out, "/etc/passwd", &marker);
}

#[test]
fn group_that_is_a_fifo_is_refused_without_hanging() {
    let Some(kit) = Kit::new() else { return };
    let mut top = Layer::default();
    top.fifo("etc/group");
    let Some(image) = image_with(&kit, "group-fifo", top, &default_env()) else {
        return;
    };
    let marker = Marker::new();
    let mut cmd = kit.cmd(&["-u", "bob"]);
    cmd.arg(&image).arg("true");
    let out = run_guarded(cmd, &marker);
    assert_refused_naming(&out, "/etc/group", &marker);
}

// glibc follows a symlinked /etc/passwd; so do we, inside the root.
#[test]
fn passwd_symlinked_to_a_file_inside_the_root_is_followed() {
    let Some(kit) = Kit::new() else { return };
    let mut top = Layer::default();
    top.file(
        "usr/share/base-passwd/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nbob:x:1000:1000:bob:/home/bob:/bin/sh\n",
        0o644,
    )
    .symlink("etc/passwd", "../usr/share/base-passwd/passwd")
    .symlink("etc/group", "/usr/share/base-passwd/group")
    .file(
        "usr/share/base-passwd/group",
        b"root:x:0:\nbob:x:1000:\nwheel:x:10:bob\n",
        0o644,
    );
    let Some(image) = image_with(&kit, "passwd-link", top, &default_env()) else {
        return;
    };
    let marker = Marker::new();
    let mut cmd = kit.cmd(&["-u", "bob"]);
    cmd.arg(&image)
        .args(["sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
    let out = run_guarded(cmd, &marker);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n1000\n1000 10\n/home/bob\n"
    );
}

// `bob:x:1000:abc:…` ran bob with gid 0 (root's group).
#[test]
fn non_numeric_gid_in_passwd_is_refused_naming_the_user() {
    let Some(kit) = Kit::new() else { return };
    let mut top = Layer::default();
    top.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nbob:x:1000:abc:bob:/home/bob:/bin/sh\n",
        0o644,
    );
    let Some(image) = image_with(&kit, "passwd-gid", top, &default_env()) else {
        return;
    };
    let marker = Marker::new();
    let mut cmd = kit.cmd(&["-u", "bob"]);
    cmd.arg(&image).args(["sh", "-c", "id -g"]);
    let out = run_guarded(cmd, &marker);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_refused_naming(&out, "/etc/passwd", &marker);
    assert!(
        stderr.contains("`bob`") && stderr.contains("`abc`"),
        "{stderr}"
    );
}

// A group naming bob as a member with gid `ten` was skipped: bob ran
// without a group the image gives him.
#[test]
fn non_numeric_gid_in_group_is_refused_naming_the_group() {
    let Some(kit) = Kit::new() else { return };
    let mut top = Layer::default();
    top.file(
        "etc/group",
        b"root:x:0:\nbob:x:1000:\nwheel:x:ten:bob\n",
        0o644,
    );
    let Some(image) = image_with(&kit, "group-gid", top, &default_env()) else {
        return;
    };
    let marker = Marker::new();
    let mut cmd = kit.cmd(&["-u", "bob"]);
    cmd.arg(&image).args(["sh", "-c", "id -G"]);
    let out = run_guarded(cmd, &marker);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_refused_naming(&out, "/etc/group", &marker);
    assert!(
        stderr.contains("`wheel`") && stderr.contains("`ten`"),
        "{stderr}"
    );
}

/// The fd the launcher gets its seccomp listener on, for the test to take.
const LISTENER_FD: i32 = 200;

/// The audit architecture of this machine's syscalls, for the filter.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// A launcher whose child is stuck before its exec, as a hung mount or a
/// hostile file could leave it: its sethostname(2), a step after the
/// launcher has released it (and the parent-death signal's place since the
/// fix), waits on a seccomp listener (SECCOMP_RET_USER_NOTIF) that the
/// test holds and never answers. The filter is installed in the launcher
/// before it runs, and inherited by its child; nothing else in either calls
/// sethostname. Returns the launcher and the listener, which is to be kept
/// open while the child must stay stuck (closed, the call fails ENOSYS).
fn launcher_with_child_stuck_before_exec(
    kit: &Kit,
    marker: &Marker,
    parent: &CgroupParent,
) -> Option<(Child, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    use std::os::unix::process::CommandExt;
    let arch = AUDIT_ARCH;
    if !testkit::require(
        arch.is_some(),
        "the test's seccomp filter knows x86_64 and aarch64",
    ) {
        return None;
    }
    // SAFETY: BPF_STMT and BPF_JUMP only build plain structs.
    let filter = unsafe {
        [
            libc::BPF_STMT((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 4),
            libc::BPF_JUMP(
                (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                arch.unwrap_or(0),
                1,
                0,
            ),
            libc::BPF_STMT(
                (libc::BPF_RET | libc::BPF_K) as u16,
                libc::SECCOMP_RET_ALLOW,
            ),
            libc::BPF_STMT((libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, 0),
            libc::BPF_JUMP(
                (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
                libc::SYS_sethostname as u32,
                0,
                1,
            ),
            libc::BPF_STMT(
                (libc::BPF_RET | libc::BPF_K) as u16,
                libc::SECCOMP_RET_USER_NOTIF,
            ),
            libc::BPF_STMT(
                (libc::BPF_RET | libc::BPF_K) as u16,
                libc::SECCOMP_RET_ALLOW,
            ),
        ]
    };
    let mut cmd = kit.cmd(&["--cgroup-parent", &parent.name]);
    cmd.arg(&kit.image)
        .arg("true")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    marker.set(&mut cmd);
    // SAFETY: only syscalls between fork and exec, on memory made before.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            let fd = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &prog,
            );
            // dup2 leaves the copy open across the exec.
            if fd < 0 || libc::dup2(fd as i32, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let launcher = cmd.spawn().expect("starting the launcher");
    // SAFETY: pidfd_open and pidfd_getfd of the launcher we started and
    // have not waited for; the fds they return are ours.
    let listener = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, launcher.id(), 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let fd = libc::syscall(
            libc::SYS_pidfd_getfd,
            std::os::fd::AsRawFd::as_raw_fd(&pidfd),
            LISTENER_FD,
            0,
        );
        assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        std::os::fd::OwnedFd::from_raw_fd(fd as i32)
    };
    // A pending notification: the child is in its sethostname.
    let mut poll = [libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&listener),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(poll.as_mut_ptr(), 1, HANG_GUARD.as_millis() as i32) };
    assert_eq!(ready, 1, "the child never reached its sethostname");
    Some((launcher, listener))
}

// Before the fix, the child set its parent-death signal only just before
// exec: a child stuck earlier outlived a SIGKILLed launcher, with all its
// capabilities.
#[test]
fn a_child_stuck_before_exec_dies_with_a_sigkilled_launcher() {
    let Some(kit) = Kit::new() else { return };
    let marker = Marker::new();
    let parent = CgroupParent::new();
    let Some((mut launcher, _listener)) =
        launcher_with_child_stuck_before_exec(&kit, &marker, &parent)
    else {
        return;
    };
    launcher.kill().expect("killing the launcher");
    launcher.wait().expect("waiting for the launcher");
    assert_eq!(
        marker.left_after_waiting(),
        Vec::<i32>::new(),
        "the child outlived the launcher"
    );
}

// Before the fix, the launcher caught SIGTERM and SIGINT from before the
// clone but acted on them only once the workload ran: with its child stuck
// before exec, it waited forever.
#[test]
fn sigterm_or_sigint_stops_a_launcher_whose_child_is_stuck_before_exec() {
    let Some(kit) = Kit::new() else { return };
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let marker = Marker::new();
        let parent = CgroupParent::new();
        let Some((mut launcher, _listener)) =
            launcher_with_child_stuck_before_exec(&kit, &marker, &parent)
        else {
            return;
        };
        // SAFETY: kill(2) of the launcher we started and have not waited for.
        unsafe { libc::kill(launcher.id() as i32, signal) };
        let start = Instant::now();
        while launcher.try_wait().expect("waiting").is_none() {
            if start.elapsed() > HANG_GUARD {
                let _ = launcher.kill();
                let _ = launcher.wait();
                marker.kill_holders();
                panic!("the launcher ignored signal {signal} for {HANG_GUARD:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = launcher.wait_with_output().expect("reading the output");
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("starting the container"), "{stderr}");
        assert_eq!(marker.left_after_waiting(), Vec::<i32>::new());
    }
}

// 100,000 entries were merged in quadratic time (38 s). What the workload
// gets is docker's: each name where it first came, the image's last value
// of a duplicate, `-e` over the image, HOME added.
#[test]
fn an_image_env_of_100000_entries_reaches_the_workload_in_order() {
    let Some(kit) = Kit::new() else { return };
    let mut env = default_env();
    env.push("DUP=first".into());
    env.extend((0..100_000).map(|i| format!("V{i}=x")));
    env.push("DUP=second".into());
    env.push("CLI=image".into());
    let Some(image) = image_with(&kit, "env-100000", Layer::default(), &env) else {
        return;
    };
    // busybox `env` prints its environment in order (a shell would
    // reorder it, and takes a minute to import 100,000 variables).
    let out = kit
        .cmd(&["-e", "CLI=flag"])
        .arg(&image)
        .arg("env")
        .output()
        .expect("running the launcher");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let got: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.starts_with("HOSTNAME="))
        .collect();
    let mut want = vec![env[0].clone(), "DUP=second".into()];
    want.extend((0..100_000).map(|i| format!("V{i}=x")));
    want.extend(["CLI=flag".into(), "HOME=/root".into()]);
    assert!(got == want, "{} lines, from {:?}", got.len(), &got[..3]);
}
