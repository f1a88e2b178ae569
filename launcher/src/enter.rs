//! `launcher exec NAME CMD…`: a new process in a running container.
//!
//! 1. the container's first process is pinned with a pidfd (checked against
//!    its recorded start time), the exec stub sealed and the seccomp
//!    profile compiled, and its cgroup's `cgroup.procs` opened, all while
//!    the host's files are in view;
//! 2. the launcher enters the container's user, mount, UTS, IPC, network
//!    and PID namespaces in one `setns(pidfd, …)` (Linux 5.8), the same
//!    call runc and nsenter make, and forks: the child is in the container's
//!    PID namespace, so that when the launcher dies it is reparented to the
//!    container's init, which reaps it;
//! 3. the child joins the cgroup (writing `0` through the descriptors
//!    opened before), then the cgroup namespace, opens a pty in the
//!    container's devpts with `-t`, and becomes the command as `run`'s
//!    workload does ([`crate::exec::into_workload`]): docker's capabilities,
//!    no_new_privs, the seccomp filter, the exec stub;
//! 4. the launcher forwards signals and the terminal until it exits
//!    ([`crate::supervise`]) and exits with its status.

use crate::cache::Cache;
use crate::spawn::{Child, read_report, receive_fd, report_error, seqpacket_pair};
use crate::state::{self, Status};
use crate::sys::Sys;
use crate::{Error, Options, Result};
use nix::errno::Errno;
use nix::unistd::ForkResult;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What `launcher exec` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub tty: bool,
    pub interactive: bool,
}

/// The namespaces entered, by their name under /proc/PID/ns.
const NAMESPACES: [(&str, libc::c_int); 6] = [
    ("user", libc::CLONE_NEWUSER),
    ("mnt", libc::CLONE_NEWNS),
    ("uts", libc::CLONE_NEWUTS),
    ("ipc", libc::CLONE_NEWIPC),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
];

/// Runs `request` in the container `what`; its exit status.
pub fn exec(cache: &Cache, what: &str, request: &Request, sys: &impl Sys) -> Result<i32> {
    let (record, pidfd) = pin_running(cache, what)?;
    let target = Target::open(&record, pidfd, request)?;
    let signals = crate::supervise::catch_signals()?;
    setns(&target.pidfd, target.namespaces).map_err(Error::sys(format!(
        "entering the namespaces of container {}",
        record.id
    )))?;
    let child = target.fork(sys)?;
    let opts = Options {
        tty: request.tty,
        interactive: request.interactive,
        stop_timeout: 10,
        ..Default::default()
    };
    // Quiet: `exec` has no warning channel; a second stop signal still kills.
    crate::supervise::until_exit(child, signals, libc::SIGTERM, &opts, &mut |_| {}, None)
}

/// Starts `request` in the running container of `record` as [`exec`]
/// does, without waiting for it: the health checks of its monitor
/// ([`crate::health`]), which call it in a process of their own (it enters
/// the container's namespaces).
pub fn spawn(record: &state::Record, request: &Request, sys: &impl Sys) -> Result<Child> {
    let pidfd =
        state::pidfd_if_same(record.state.pid, record.state.pid_start).ok_or_else(|| {
            Error::NotRunning {
                name: record.name.clone(),
            }
        })?;
    let target = Target::open(record, pidfd, request)?;
    setns(&target.pidfd, target.namespaces).map_err(Error::sys(format!(
        "entering the namespaces of container {}",
        record.id
    )))?;
    target.fork(sys)
}

/// The running container's record and a pidfd of its first process.
fn pin_running(cache: &Cache, what: &str) -> Result<(state::Record, OwnedFd)> {
    let handle = state::resolve(cache, what)?;
    let record = state::settle(cache, &handle)?;
    let pidfd = match record.state.status {
        Status::Running => state::pidfd_if_same(record.state.pid, record.state.pid_start),
        _ => None,
    };
    match pidfd {
        Some(pidfd) => Ok((record, pidfd)),
        None => Err(Error::NotRunning { name: record.name }),
    }
}

/// Everything prepared while the host's files are in view.
struct Target {
    pidfd: OwnedFd,
    process: crate::exec::Process,
    /// The namespaces the launcher enters (its child inherits them).
    namespaces: libc::c_int,
    /// The cgroup namespace, entered by the child once in the cgroup.
    cgroupns: libc::c_int,
    cgroups: Vec<std::fs::File>,
    /// Without -i or -t, the command's stdin.
    null: Option<std::fs::File>,
    /// With -t: the child sends the pty's master over it.
    console: Option<(OwnedFd, OwnedFd)>,
    /// Reads EOF in the child once the launcher is gone.
    alive: (OwnedFd, OwnedFd),
    /// The child's failed step; EOF (close-on-exec) when it exec'd.
    report: (OwnedFd, OwnedFd),
}

impl Target {
    fn open(record: &state::Record, pidfd: OwnedFd, request: &Request) -> Result<Target> {
        let pid = record.state.pid;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("creating a pipe"))
        };
        let null = match request.interactive || request.tty {
            true => None,
            false => {
                Some(std::fs::File::open("/dev/null").map_err(Error::io("opening", "/dev/null"))?)
            }
        };
        Ok(Target {
            pidfd,
            process: process(record, request)?,
            namespaces: differing_namespaces(pid, &NAMESPACES)?,
            cgroupns: differing_namespaces(pid, &[("cgroup", libc::CLONE_NEWCGROUP)])?,
            cgroups: open_cgroup_procs(pid)?,
            null,
            console: request
                .tty
                .then(seqpacket_pair)
                .transpose()
                .map_err(Error::sys("creating the console socket"))?,
            alive: pipe()?,
            report: pipe()?,
        })
    }

    /// Forks the command's process (in the PID namespace entered) and
    /// waits for its exec, or its error.
    fn fork(self, sys: &impl Sys) -> Result<Child> {
        let Target {
            pidfd,
            process,
            cgroupns,
            cgroups,
            null,
            console,
            alive,
            report,
            ..
        } = self;
        // SAFETY: single-threaded (signal-hook's delivery starts no
        // thread); the child execs or _exits.
        let fork = unsafe { nix::unistd::fork() }.map_err(Error::sys("forking"))?;
        let child = match fork {
            ForkResult::Child => {
                drop((alive.1, report.0));
                let console = console.map(|(_, child)| child);
                let Err(err) = child_side(
                    sys,
                    &ChildSide {
                        process,
                        pidfd: &pidfd,
                        cgroupns,
                        cgroups: &cgroups,
                        null: null.as_ref().map(|n| n.as_raw_fd()),
                        console: console.as_ref().map(|c| c.as_raw_fd()),
                        alive: alive.0.as_raw_fd(),
                    },
                );
                report_error(report.1.as_raw_fd(), &err);
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(crate::EXIT_LAUNCHER_FAILED) }
            }
            ForkResult::Parent { child } => child,
        };
        drop((alive.0, report.1, cgroups, null));
        let master = console.and_then(|(parent, child_end)| {
            drop(child_end);
            receive_fd(&parent)
        });
        if let Some(err) = read_report(report.0) {
            let _ = nix::sys::wait::waitpid(child, None);
            return Err(err);
        }
        Ok(Child::adopt(child, master, alive.1))
    }
}

/// The container's process (env, user, cwd as it was started with), with
/// the request's command and changes, and `run`'s privileges and stub.
fn process(record: &state::Record, request: &Request) -> Result<crate::exec::Process> {
    let init = crate::spawn::find_init(record.config.init_path.as_deref())?;
    // The container's capabilities, seccomp filter, no_new_privs and limits.
    let security = crate::security::decide(&record.config.privileges.options())?;
    let mut env = record.state.process.env.clone();
    for var in &request.env {
        let var = match var.split_once('=') {
            Some(_) => var.clone(),
            None => match std::env::var(var) {
                Ok(value) => format!("{var}={value}"),
                Err(_) => continue,
            },
        };
        let key = var.split('=').next().unwrap_or_default().to_string();
        env.retain(|e| e.split('=').next() != Some(&key));
        env.push(var);
    }
    Ok(crate::exec::Process {
        argv: request.command.clone(),
        env,
        cwd: request
            .workdir
            .clone()
            .or_else(|| record.state.process.cwd.clone()),
        user: request
            .user
            .clone()
            .or_else(|| record.state.process.user.clone()),
        tty: None,
        seccomp: security.seccomp,
        caps: security.caps,
        no_new_privs: security.no_new_privs,
        rlimits: security.rlimits,
        group_add: record.config.privileges.group_add.clone(),
        stub: Some(std::sync::Arc::new(crate::exec::Stub::open(&init)?)),
    })
}

/// The flags of the namespaces in `names` where `pid` is not where we are.
/// setns refuses to enter one's own user namespace (EINVAL), and entering
/// the others we share would only be work.
fn differing_namespaces(pid: i32, names: &[(&str, libc::c_int)]) -> Result<libc::c_int> {
    let mut flags = 0;
    for (name, flag) in names {
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        let ino = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        let theirs = ino(&theirs).map_err(Error::io("examining", &theirs))?;
        if ino(&ours).ok() != Some(theirs) {
            flags |= flag;
        }
    }
    Ok(flags)
}

/// `cgroup.procs` (v2) or `tasks` (v1) of each hierarchy where the
/// container has a cgroup of its own (one the launcher made: `cradle-…`),
/// opened for writing.
fn open_cgroup_procs(pid: i32) -> Result<Vec<std::fs::File>> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).map_err(Error::io("reading", &path))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(Error::io("reading", "/proc/self/mountinfo"))?;
    let mut files = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(cgroup)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let last = cgroup.rsplit('/').next().unwrap_or_default();
        if !last.starts_with(crate::resources::CGROUP_PREFIX) {
            continue;
        }
        let Some(dir) = cgroup_dir(&mountinfo, controllers, cgroup) else {
            continue;
        };
        // v1: `tasks`, where a thread writing `0` moves itself without the
        // lock (and RCU grace period) that moving a process takes; the
        // child is one thread. v2 has only `cgroup.procs`.
        let procs = dir.join(if controllers.is_empty() {
            "cgroup.procs"
        } else {
            "tasks"
        });
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .map_err(Error::io("opening", &procs))?;
        files.push(file);
    }
    Ok(files)
}

/// The host directory of `cgroup` in the hierarchy of `controllers` (`""`
/// for cgroup2), from mountinfo.
fn cgroup_dir(mountinfo: &str, controllers: &str, cgroup: &str) -> Option<PathBuf> {
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(point)) = (pre.get(3), pre.get(4)) else {
            continue;
        };
        let matches = match (post.first().copied(), controllers) {
            (Some("cgroup2"), "") => true,
            (Some("cgroup"), c) if !c.is_empty() => {
                let options: Vec<&str> = post.get(2).copied().unwrap_or("").split(',').collect();
                c.split(',').all(|c| options.contains(&c))
            }
            _ => false,
        };
        if !matches {
            continue;
        }
        let relative = cgroup.strip_prefix(root.trim_end_matches('/'))?;
        return Some(Path::new(point).join(relative.trim_start_matches('/')));
    }
    None
}

fn setns(pidfd: &OwnedFd, flags: libc::c_int) -> Result<(), Errno> {
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: setns with a pidfd we own.
    match unsafe { libc::setns(pidfd.as_raw_fd(), flags) } {
        0 => Ok(()),
        _ => Err(Errno::last()),
    }
}

struct ChildSide<'a> {
    process: crate::exec::Process,
    pidfd: &'a OwnedFd,
    cgroupns: libc::c_int,
    cgroups: &'a [std::fs::File],
    null: Option<RawFd>,
    console: Option<RawFd>,
    alive: RawFd,
}

/// The child, in the container's PID namespace: cgroup, cgroup namespace,
/// stdin, terminal, then the workload's steps. Returns only on failure.
fn child_side(sys: &impl Sys, c: &ChildSide<'_>) -> Result<std::convert::Infallible> {
    crate::exec::die_with_parent(sys, c.alive)?;
    for file in c.cgroups {
        // `0`: the writer itself, in whatever PID namespace it is.
        // SAFETY: writing a valid buffer to an fd we own.
        if unsafe { libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return Err(Error::sys("joining the container's cgroup")(Errno::last()));
        }
    }
    setns(c.pidfd, c.cgroupns).map_err(Error::sys("entering the container's cgroup namespace"))?;
    // SAFETY: restoring default dispositions and an empty mask; dup2 onto
    // fd 0, which this process owns.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        if let Some(null) = c.null
            && libc::dup2(null, 0) < 0
        {
            return Err(Error::sys("redirecting stdin")(Errno::last()));
        }
    }
    let mut process = c.process.clone();
    let slave = match c.console {
        Some(console) => {
            let (master, slave) = sys
                .open_pty()
                .map_err(Error::sys("opening a terminal in the container"))?;
            sys.send_fd(console, master.as_raw_fd())
                .map_err(Error::sys("sending the terminal to the launcher"))?;
            Some(slave)
        }
        None => None,
    };
    process.tty = slave.as_ref().map(|s| s.as_raw_fd());
    crate::exec::into_workload(sys, &process, c.alive)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup_directories_in_v1_and_v2_mounts() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup_dir(mountinfo, "memory", "/cradle/cradle-1-2-x"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/cradle/cradle-1-2-x"))
        );
        assert_eq!(
            cgroup_dir(mountinfo, "cpu,cpuacct", "/a"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a"))
        );
        assert_eq!(
            cgroup_dir(mountinfo, "", "/b"),
            Some(PathBuf::from("/sys/fs/cgroup/unified/b"))
        );
        assert_eq!(cgroup_dir(mountinfo, "pids", "/c"), None);
    }
}
