//! `--network slirp4netns`: user-mode networking, for rootless containers
//! too (podman's default before pasta). slirp4netns joins the container's
//! network namespace, makes `tap0` there (10.0.2.100/24, gateway 10.0.2.2,
//! DNS 10.0.2.3) and carries its traffic through ordinary sockets of the
//! host; published ports are added over its API socket. It runs as long as
//! the launcher holds the write end of its exit pipe, so a SIGKILLed
//! launcher takes it along.
//!
//! `--disable-host-loopback` keeps 10.0.2.2 from reaching the host's
//! 127.0.0.0/8 (the CVE-2020-8558 class, as the bridge's firewall does).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Error, PortMapping, Result};

/// The container's address on `tap0`.
pub const ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 2, 100);
/// The name server slirp4netns answers on.
pub const DNS: &str = "10.0.2.3";

/// How long slirp4netns may take to set `tap0` up.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running slirp4netns.
#[derive(Debug)]
pub struct Slirp {
    child: Child,
    /// Its exit pipe: slirp4netns exits when this closes.
    exit: Option<OwnedFd>,
    /// The private directory of its API socket.
    dir: PathBuf,
}

fn error(
    op: &'static str,
    operand: impl std::fmt::Display,
) -> impl FnOnce(std::io::Error) -> Error {
    let operand = operand.to_string();
    move |source| Error::Netlink {
        op,
        operand,
        source,
    }
}

impl Slirp {
    /// Starts slirp4netns for the network namespace of `pid` (and its user
    /// namespace when `userns`), waits until `tap0` is up, and publishes
    /// `ports`.
    pub fn start(pid: u32, userns: bool, ports: &[PortMapping]) -> Result<Slirp> {
        let (exit_r, exit_w) = pipe()?;
        let (ready_r, ready_w) = pipe()?;
        let dir = private_dir()?;
        let socket = dir.join("api.sock");
        let mut cmd = Command::new("slirp4netns");
        cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
            .arg(format!("--exit-fd={}", exit_r.as_raw_fd()))
            .arg(format!("--ready-fd={}", ready_w.as_raw_fd()))
            .arg("--api-socket")
            .arg(&socket);
        if userns {
            cmd.arg(format!("--userns-path=/proc/{pid}/ns/user"));
        }
        cmd.arg(pid.to_string())
            .arg("tap0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let (exit_raw, ready_raw) = (exit_r.as_raw_fd(), ready_w.as_raw_fd());
        // SAFETY: between fork and exec the closure only clears FD_CLOEXEC
        // on two fds this process owns (fcntl is async-signal-safe).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                for fd in [exit_raw, ready_raw] {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(error("start", "slirp4netns"))?;
        drop((exit_r, ready_w));
        let mut slirp = Slirp {
            child,
            exit: Some(exit_w),
            dir,
        };
        slirp.wait_ready(ready_r)?;
        for port in ports {
            slirp.publish(&socket, port)?;
        }
        Ok(slirp)
    }

    /// One byte on the ready pipe; EOF or the deadline means it failed
    /// (its stderr says why).
    fn wait_ready(&mut self, ready: OwnedFd) -> Result<()> {
        let mut fds = [libc::pollfd {
            fd: ready.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, left.as_millis() as i32) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        let mut byte = [0u8; 1];
        let got = std::fs::File::from(ready).read(&mut byte).unwrap_or(0);
        if got == 1 {
            return Ok(());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut why = String::new();
        if let Some(stderr) = self.child.stderr.take() {
            let _ = stderr.take(64 << 10).read_to_string(&mut why);
        }
        // Its own words: `open("/dev/net/tun"): Permission denied: child failed(1)`.
        let why: Vec<&str> = why
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        Err(Error::Netlink {
            op: "set up the container's network with",
            operand: "slirp4netns".into(),
            source: std::io::Error::other(match why.is_empty() {
                true => "it exited before tap0 was up".to_string(),
                false => why.join(": "),
            }),
        })
    }

    /// `add_hostfwd` over the API socket.
    fn publish(&self, socket: &std::path::Path, port: &PortMapping) -> Result<()> {
        let request = serde_json::json!({
            "execute": "add_hostfwd",
            "arguments": {
                "proto": port.protocol.as_str(),
                "host_addr": port.host_ip.map_or("0.0.0.0".to_string(), |ip| ip.to_string()),
                "host_port": port.host_port,
                "guest_port": port.container_port,
            }
        });
        let mut stream =
            UnixStream::connect(socket).map_err(error("connect to", socket.display()))?;
        stream
            .set_read_timeout(Some(READY_WITHIN))
            .and_then(|()| stream.write_all(request.to_string().as_bytes()))
            .and_then(|()| stream.shutdown(std::net::Shutdown::Write))
            .map_err(error("publish", port))?;
        let mut reply = String::new();
        stream
            .take(64 << 10)
            .read_to_string(&mut reply)
            .map_err(error("publish", port))?;
        let json: serde_json::Value = serde_json::from_str(&reply).unwrap_or_default();
        if json.get("return").is_none() {
            let why = json["error"]["desc"].as_str().unwrap_or(&reply).to_string();
            return Err(Error::Netlink {
                op: "publish",
                operand: port.to_string(),
                source: std::io::Error::other(why),
            });
        }
        Ok(())
    }

    /// Closes the exit pipe, waits for slirp4netns, removes its socket.
    pub fn stop(&mut self) {
        if self.exit.take().is_none() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes `cradle-slirp-PID-N` directories of `base` that are this
/// user's and whose launcher PID is gone. Best effort: another launcher
/// may remove one first.
fn remove_stale(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name) else {
            continue;
        };
        let ours =
            std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if ours && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The launcher's pid in a directory name `cradle-slirp-PID-N`.
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("cradle-slirp-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Netlink {
        op: "create a pipe for",
        operand: "slirp4netns".into(),
        source: e.into(),
    })
}

/// A directory only this user can enter, for the API socket: under
/// $XDG_RUNTIME_DIR when set, else the temporary directory. Those of
/// launchers that are gone (SIGKILLed: their slirp4netns went with them,
/// the directory stayed) are removed first.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    remove_stale(&base);
    for attempt in 0..100u32 {
        let dir = base.join(format!("cradle-slirp-{}-{attempt}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(error("create", dir.display())(e)),
        }
    }
    Err(error("create", base.display())(
        std::io::Error::from_raw_os_error(libc::EEXIST),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gone_launchers_directories_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let gone = base.path().join("cradle-slirp-2147483646-0");
        let alive = base
            .path()
            .join(format!("cradle-slirp-{}-0", std::process::id()));
        let other = base.path().join("cradle-slirp-x-0");
        for dir in [&gone, &alive, &other] {
            std::fs::create_dir(dir).unwrap();
        }
        remove_stale(base.path());
        assert!(!gone.exists());
        assert!(alive.exists() && other.exists());
        assert_eq!(stale_pid("cradle-slirp-12-3"), Some(12));
        assert_eq!(stale_pid("cradle-slirp-12"), None);
    }
}
