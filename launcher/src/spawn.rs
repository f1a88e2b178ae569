//! Step 3, spawn: decides everything the child will do ([`plan`]), then
//! clones it into the new namespaces and runs the handshake ([`container`]):
//!
//! 1. the child waits on the `go` pipe while the parent writes its id maps;
//! 2. the child sets itself up (namespaces → rootfs → pivot → exec);
//! 3. an error before `execve` is written to the `report` pipe, which is
//!    close-on-exec: the parent reads EOF when the exec succeeded, or the
//!    failed step and its errno, and reports it.

use crate::cache::{self, Container};
use crate::exec::Process;
use crate::image::{self, Image};
use crate::namespaces::{self, IdMapping};
use crate::rootfs::{self, Overlay, Volume};
use crate::sys::{Node, Sys};
use crate::{Error, Network, Options, Result, Userns};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::unistd::Pid;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Everything the child does, decided before the clone.
#[derive(Debug, Clone)]
pub struct Plan {
    pub hostname: String,
    pub new_net: bool,
    pub mapping: IdMapping,
    pub rootfs: rootfs::Plan,
    pub process: Process,
    pub tty: bool,
    pub interactive: bool,
}

/// The running container, as the parent sees it.
#[derive(Debug)]
pub struct Child {
    pub pid: Pid,
    /// The pty's master end, with `-t`.
    pub pty: Option<OwnedFd>,
    /// The write end of `go`: the child's "is the launcher alive" check sees
    /// it closed when the launcher dies.
    _alive: OwnedFd,
}

/// Works out the command, environment, mounts and mapping for `image`.
pub fn plan(
    opts: &Options,
    image: &Image,
    layers: &[PathBuf],
    container: &Container,
) -> Result<Plan> {
    let rootless = cache::rootless();
    let mapping = namespaces::choose_mapping(rootless, opts.userns == Userns::Auto, &[]);
    let new_net = opts.network == Network::None;
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| container.id.chars().take(12).collect());
    let mut argv = image::argv(image, opts)?;
    let mut init = None;
    if !opts.no_init && !image::starts_with_init(&argv) {
        let path = find_init(opts.init_path.as_deref())?;
        init = Some((path.clone(), locked_flags(&path)));
        argv.splice(0..0, [image::INIT_IN_IMAGE.to_string(), "--".to_string()]);
    }
    let env = image::env(image, opts, &hostname)?;
    let etc = write_etc_files(&container.dir.join("etc"), &hostname, opts.network)?;
    let volumes = opts
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    let mut lower = layers.to_vec();
    if lower.is_empty() {
        // overlayfs needs a lower directory; an image without layers gets
        // an empty one.
        let empty = container.dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(Error::io("creating", &empty))?;
        lower.push(empty);
    }
    let cwd = opts.workdir.clone().or_else(|| image.workdir.clone());
    let seccomp = crate::seccomp::default_profile().map_err(Error::Seccomp)?;
    Ok(Plan {
        hostname,
        new_net,
        rootfs: rootfs::Plan {
            root: container.rootfs(),
            overlay: Overlay {
                lower,
                upper: container.upper(),
                work: container.work(),
                userxattr: rootless,
            },
            volumes,
            init,
            etc,
            read_only: opts.read_only,
            fresh_sysfs: new_net,
            // A single-id map has no gid 5 to give devpts.
            tty_gid: (!matches!(mapping, IdMapping::Single { .. })).then_some(5),
            workdir: cwd.clone().map(PathBuf::from),
        },
        mapping,
        process: Process {
            argv,
            env,
            cwd,
            user: opts.user.clone().or_else(|| image.user.clone()),
            tty: None,
            seccomp,
        },
        tty: opts.tty,
        interactive: opts.interactive,
    })
}

/// Where the static init is looked for, in order, when the image has none:
/// `--init-path`, `$CRADLE_INIT_PATH`, `cradle-init` next to the launcher,
/// then the build outputs around it (`<target>/static/cradle-init`, the
/// musl build of `init`), then `/usr/libexec/cradle/cradle-init`.
pub fn init_candidates(flag: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = flag {
        out.push(p.to_path_buf());
        return out;
    }
    if let Some(p) = std::env::var_os("CRADLE_INIT_PATH").filter(|p| !p.is_empty()) {
        out.push(p.into());
        return out;
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join("cradle-init"));
        if let Some(target) = dir.parent() {
            out.push(target.join("static/cradle-init"));
            out.push(target.join("static/init"));
            out.push(target.join("x86_64-unknown-linux-musl/small/init"));
        }
    }
    out.push("/usr/libexec/cradle/cradle-init".into());
    out
}

pub fn find_init(flag: Option<&Path>) -> Result<PathBuf> {
    let candidates = init_candidates(flag);
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::NoInit {
            tried: candidates
                .iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The flags of the mount holding `path` that a read-only remount of a bind
/// of it must repeat (locked in a user namespace).
fn locked_flags(path: &Path) -> MsFlags {
    let mut flags = MsFlags::empty();
    if let Ok(st) = nix::sys::statvfs::statvfs(path) {
        use nix::sys::statvfs::FsFlags;
        let f = st.flags();
        for (from, to) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if f.contains(from) {
                flags |= to;
            }
        }
    }
    flags
}

/// `HOST:CTR[:ro|:rw]`; the host path must exist.
pub fn parse_volume(spec: &str) -> Result<Volume> {
    let invalid = || Error::Invalid {
        what: "volume (want HOST:CONTAINER[:ro])",
        value: spec.into(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, read_only) = match parts[..] {
        [h, c] => (h, c, false),
        [h, c, "ro"] => (h, c, true),
        [h, c, "rw"] => (h, c, false),
        _ => return Err(invalid()),
    };
    if !host.starts_with('/') || !target.starts_with('/') {
        return Err(invalid());
    }
    let host = std::fs::canonicalize(host).map_err(Error::io("finding volume source", host))?;
    let node = if host.is_dir() { Node::Dir } else { Node::File };
    Ok(Volume {
        locked: locked_flags(&host),
        host,
        target: target.into(),
        read_only,
        node,
    })
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf for the container, written
/// into its state directory and bound over the image's (as docker does).
pub fn write_etc_files(
    dir: &Path,
    hostname: &str,
    network: Network,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let hosts = match network {
        Network::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        Network::None => format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = [
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ];
    files
        .into_iter()
        .map(|(name, text)| {
            let host = dir.join(name);
            std::fs::write(&host, text).map_err(Error::io("writing", &host))?;
            Ok((host, Path::new("/etc").join(name)))
        })
        .collect()
}

/// Clones the child into its namespaces and runs the handshake; returns once
/// the child has exec'd the workload.
pub fn container(sys: &impl Sys, plan: &Plan) -> Result<Child> {
    let pty = match plan.tty {
        true => {
            Some(nix::pty::openpty(None, None).map_err(Error::sys("opening a pseudo-terminal"))?)
        }
        false => None,
    };
    let (go_read, go_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("creating the sync pipe"))?;
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(Error::sys("creating the report pipe"))?;
    let flags = namespaces::clone_flags(plan.new_net, &plan.mapping);
    // A fork-like clone (no new stack): the child gets a copy of this
    // single-threaded process, already inside the new namespaces.
    // SAFETY: raw clone without CLONE_VM; the child only runs child_side and
    // then _exits or execs.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags.bits() as libc::c_long | libc::SIGCHLD as libc::c_long,
            0,
            0,
            0,
            0,
        )
    };
    if pid < 0 {
        return Err(Error::sys("cloning into new namespaces")(Errno::last()));
    }
    if pid == 0 {
        drop((go_write, report_read));
        let tty = pty.as_ref().map(|p| p.slave.as_raw_fd());
        let err = child_side(sys, plan, go_read.as_raw_fd(), tty).unwrap_err();
        report_error(report_write.as_raw_fd(), &err);
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(crate::EXIT_LAUNCHER_FAILED) };
    }
    let pid = Pid::from_raw(pid as i32);
    drop((go_read, report_write));
    let master = pty.map(|p| p.master);
    let mut go = std::fs::File::from(go_write);
    let released = namespaces::write_id_maps(pid.as_raw(), &plan.mapping).and_then(|()| {
        go.write_all(b"g")
            .map_err(Error::io("releasing the child", "go pipe"))
    });
    if let Err(e) = released {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(e);
    }
    if let Some(err) = read_report(report_read) {
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(err);
    }
    Ok(Child {
        pid,
        pty: master,
        _alive: go.into(),
    })
}

/// The child, between clone and exec. Returns only on failure.
fn child_side(sys: &impl Sys, plan: &Plan, go: RawFd, tty: Option<RawFd>) -> Result<Infallible> {
    wait_for_parent(go)?;
    reset_signals();
    redirect_stdin(plan)?;
    namespaces::set_identity(sys, &plan.hostname, plan.new_net)?;
    rootfs::prepare(sys, &plan.rootfs)?;
    crate::pivot::into(sys, &plan.rootfs.root)?;
    let mut process = plan.process.clone();
    process.tty = tty;
    crate::exec::into_workload(sys, &process, go)
}

/// Blocks until the parent has written the id maps (one byte), or fails when
/// the parent is gone (EOF).
fn wait_for_parent(go: RawFd) -> Result<()> {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: reading one byte into a valid buffer.
        let n = unsafe { libc::read(go, byte.as_mut_ptr().cast(), 1) };
        match n {
            1 => return Ok(()),
            0 => return Err(Error::sys("waiting for the launcher")(Errno::EPIPE)),
            _ if Errno::last() == Errno::EINTR => continue,
            _ => return Err(Error::sys("waiting for the launcher")(Errno::last())),
        }
    }
}

/// The launcher ignores SIGPIPE (Rust's runtime does); an ignored signal
/// stays ignored across execve, so the workload gets the default back.
fn reset_signals() {
    // SAFETY: restoring default dispositions, no handlers involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Without `-i` (and `-t`), the workload reads from /dev/null, not from the
/// launcher's stdin.
fn redirect_stdin(plan: &Plan) -> Result<()> {
    if plan.interactive || plan.tty {
        return Ok(());
    }
    let null = std::fs::File::open("/dev/null").map_err(Error::io("opening", "/dev/null"))?;
    // SAFETY: dup2 onto fd 0, which we own in this process.
    if unsafe { libc::dup2(null.as_raw_fd(), 0) } < 0 {
        return Err(Error::sys("redirecting stdin")(Errno::last()));
    }
    Ok(())
}

/// `errno` and the failed step, one line each.
fn report_error(fd: RawFd, err: &Error) {
    let errno = match err {
        Error::Sys { source, .. } | Error::Child { source, .. } => *source as i32,
        Error::Io { source, .. } => source.raw_os_error().unwrap_or(0),
        _ => 0,
    };
    let text = format!("{errno}\n{err}");
    // SAFETY: writing a valid buffer to our end of the report pipe.
    unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
}

fn read_report(fd: OwnedFd) -> Option<Error> {
    let mut text = String::new();
    // SAFETY: fd is ours, taken over by the File.
    let mut file = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    let _ = file.read_to_string(&mut text);
    if text.is_empty() {
        return None;
    }
    let (errno, step) = text.split_once('\n').unwrap_or(("0", &text));
    Some(Error::Child {
        step: step.to_string(),
        source: Errno::from_raw(errno.parse().unwrap_or(0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_volumes() {
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!(
            (v.target.as_path(), v.read_only, v.node),
            (Path::new("/data"), true, Node::Dir)
        );
        assert!(!parse_volume("/tmp:/data").unwrap().read_only);
        assert!(parse_volume("tmp:/data").is_err());
        assert!(parse_volume("/tmp:/data:rx").is_err());
        assert!(parse_volume("/nonexistent-cradle:/x").is_err());
    }

    #[test]
    fn init_path_flag_wins() {
        assert_eq!(
            init_candidates(Some(Path::new("/x/init"))),
            [PathBuf::from("/x/init")]
        );
    }

    #[test]
    fn child_report_round_trips() {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        report_error(
            w.as_raw_fd(),
            &Error::sys("mounting `proc` on `/proc`")(Errno::EPERM),
        );
        drop(w);
        let err = read_report(r).unwrap();
        assert_eq!(err.to_string(), "mounting `proc` on `/proc`");
        assert!(matches!(
            err,
            Error::Child {
                source: Errno::EPERM,
                ..
            }
        ));
    }
}
