//! End to end: containerd, the engine of Kubernetes nodes, imports our
//! archive (`ctr images import`) and runs it (`ctr run`): cradle-init is
//! PID 1 and the workload's exit code comes back through it; also with an
//! SBOM attached (an image index holding the image and the SBOM's artifact
//! manifest). Each test starts a containerd of its own (its own root,
//! state and socket in a temporary directory, runc through the v2 shim),
//! stopped and cleaned up when the test ends, failed or not.

mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Every `ctr` call and containerd's start are bounded by this.
const BOUND: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "cradle-test";

/// A containerd of the test's own; stopped, its containers killed and its
/// directory removed when dropped.
struct Containerd {
    daemon: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Option<Containerd> {
        if !testkit::require(testkit::is_root(), "containerd runs as root here") {
            return None;
        }
        let containerd = testkit::require_tool("containerd")?;
        testkit::require_tool("ctr")?;
        testkit::require_tool("containerd-shim-runc-v2")?;
        testkit::require_tool("runc")?;
        // Short: the socket's path must fit in sun_path (108 bytes).
        let dir = tempfile::Builder::new()
            .prefix("ctrd-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path().display();
        // The CRI plugin is what a kubelet talks to; ctr does not need it.
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\naddress = \"{d}/sock\"\n[ttrpc]\naddress = \"{d}/sock.ttrpc\"\n\
             [debug]\naddress = \"\"\n[metrics]\naddress = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\npath = \"{d}/opt\"\n\
             [plugins.\"io.containerd.runtime.v2.task\"]\nplatforms = [\"linux/amd64\"]\n"
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let mut daemon = Command::new(containerd);
        daemon
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group, so that a ^C of the test run reaches it
            // only through our Drop.
            .process_group(0);
        // SAFETY: prctl is async-signal-safe; it runs in the forked child.
        // A test process killed outright (SIGKILL) takes containerd with it.
        unsafe {
            daemon.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let daemon = daemon.spawn().expect("starting containerd");
        let ours = Containerd { daemon, dir };
        let deadline = Instant::now() + BOUND;
        while !ours.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer on `{}` within {BOUND:?}:\n{}",
                ours.socket().display(),
                ours.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(ours)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(self.socket())
            .arg("--namespace")
            .arg(NAMESPACE)
            .args(args)
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE");
        cmd
    }

    /// `ctr ARGS…` with `stdin` written to it, bounded by [`BOUND`].
    fn ctr_with_input(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting ctr");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin).unwrap();
        drop(input);
        wait_bounded(child, &format!("ctr {}", args.join(" ")))
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_with_input(args, b"")
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {}: {}\n{}\ncontainerd's log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Kills what is left of the test's containers, then containerd, then
    /// the shims it started (found by their `-address`, which is ours
    /// alone), and unmounts what is under the directory.
    fn stop(&mut self) {
        let tasks = self.ctr(&["tasks", "ls", "--quiet"]);
        for id in String::from_utf8_lossy(&tasks.stdout).lines() {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "delete", "--force", id]);
        }
        let containers = self.ctr(&["containers", "ls", "--quiet"]);
        for id in String::from_utf8_lossy(&containers.stdout).lines() {
            let _ = self.ctr(&["containers", "delete", id]);
        }
        // SAFETY: kill(2) of the child we spawned and have not reaped.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.daemon.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.daemon.kill();
                let _ = self.daemon.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in shims_of(&self.socket()) {
            // SAFETY: kill(2) of a shim whose command line names our socket.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        unmount_under(self.dir.path());
        // runc leaves the namespace's parent cgroup in every hierarchy; the
        // last test to stop removes it (rmdir fails while another's holds
        // a container).
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(NAMESPACE));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(NAMESPACE));
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for `child`, killing it past [`BOUND`].
fn wait_bounded(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + BOUND;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`{what}` took over {BOUND:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The pids of the containerd shims started with `-address SOCKET`.
fn shims_of(socket: &Path) -> Vec<i32> {
    let socket = socket.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == socket)
        })
        .collect()
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in points {
        let Ok(c) = std::ffi::CString::new(point) else {
            continue;
        };
        // SAFETY: umount2 with a NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Imports `archive`, checks that containerd lists `tag`, then runs it with
/// a shell script on stdin (the image's own entrypoint and cmd: the init
/// and `/bin/sh`): the script sees cradle-init as PID 1, and its exit code
/// 7 is `ctr run`'s.
fn imports_and_runs(containerd: &Containerd, archive: &Path, tag: &str) {
    let imported = containerd.ctr_ok(&["images", "import", archive.to_str().unwrap()]);
    assert!(imported.contains(tag), "ctr imported: {imported}");
    let listed = containerd.ctr_ok(&["images", "ls", "--quiet"]);
    assert!(listed.lines().any(|l| l == tag), "ctr images ls: {listed}");
    let out = containerd.ctr_with_input(
        &["run", "--rm", tag, "cradle-exit"],
        b"echo \"pid1=$(cat /proc/1/comm) shell=$$\"; exit 7\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "ctr run: {stdout}{}\ncontainerd's log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        containerd.log()
    );
    let shell = stdout
        .trim_end()
        .strip_prefix("pid1=cradle-init shell=")
        .unwrap_or_else(|| panic!("not run under cradle-init: {stdout}"));
    assert_ne!(shell, "1", "the shell ran as PID 1");
    // Exec form through the init, as a Kubernetes pod spec's command is.
    let out = containerd.ctr(&[
        "run",
        "--rm",
        tag,
        "cradle-exec",
        "/sbin/cradle-init",
        "--",
        "sh",
        "-c",
        "exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    // `--rm` left no container behind.
    assert_eq!(containerd.ctr_ok(&["containers", "ls", "--quiet"]), "");
}

#[test]
fn ctr_runs_our_image_with_cradle_init_as_pid_1_and_its_exit_code() {
    let Some(image) = testkit::require_artifact("images/default.tar", "cargo xtask build-image")
    else {
        return;
    };
    let Some(containerd) = Containerd::start() else {
        return;
    };
    imports_and_runs(&containerd, &image, "localhost/cradle/default:latest");
}

#[test]
fn ctr_runs_our_image_with_an_sbom_attached() {
    let Some(containerd) = Containerd::start() else {
        return;
    };
    let tag = "localhost/cradle-test/containerd-sbom:latest";
    let dir = tempfile::tempdir().unwrap();
    let Some(archive) = common::default_built_with_sbom(dir.path(), tag) else {
        return;
    };
    imports_and_runs(&containerd, &archive, tag);
    // containerd took the index with both manifests.
    let listed = containerd.ctr_ok(&["images", "ls"]);
    let line = listed.lines().find(|l| l.starts_with(tag)).unwrap();
    assert!(
        line.contains("application/vnd.oci.image.index.v1+json")
            && line.contains("unknown/unknown"),
        "{line}"
    );
}

/// `images/web-app` built from its Containerfile (a RUN step, USER,
/// WORKDIR, ENV, CMD), imported and run by containerd as its image says:
/// the init wraps the app, which runs as 1000:1000 in /app with its env.
#[test]
fn ctr_runs_the_web_app_built_from_its_containerfile() {
    let Some(builder) = testkit::require_artifact("debug/builder", "cargo build -p builder") else {
        return;
    };
    let Some(default) = testkit::require_artifact("images/default.tar", "cargo xtask build-image")
    else {
        return;
    };
    let Some(init) = common::init() else {
        return;
    };
    let Some(containerd) = Containerd::start() else {
        return;
    };
    let tag = "localhost/cradle-test/containerd-web-app:latest";
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("web-app.tar");
    let app = testkit::workspace_root().join("images/web-app");
    let out = Command::new(builder)
        .args(["build", "-t", tag, "--init"])
        .arg(init)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .arg("-o")
        .arg(&archive)
        .arg("-f")
        .arg(app.join("Containerfile"))
        .arg("--build-arg")
        .arg(format!("BASE=oci-archive:{}", default.display()))
        .arg(&app)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    containerd.ctr_ok(&["images", "import", archive.to_str().unwrap()]);
    let said = containerd.ctr_ok(&["run", "--rm", tag, "cradle-web-app"]);
    assert_eq!(
        said,
        "web-app: Hello from cradle on port 8080\n\
         user 1000:1000 in /app\n\
         defaults: greeting=\"Hello from cradle\"\n"
    );
    assert_eq!(containerd.ctr_ok(&["containers", "ls", "--quiet"]), "");
}
