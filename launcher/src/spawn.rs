//! Step 3, spawn: decides everything the child will do ([`plan`]), then
//! clones it into the new namespaces and runs the handshake ([`container`]):
//!
//! 1. the child is born in its cgroup (v2, clone3), or waits on the `go`
//!    pipe while the parent writes its id maps and joins it to its network
//!    (the `join` step), then moves itself into its cgroup (v1) and
//!    unshares its cgroup namespace;
//! 2. the child sets itself up (namespaces → rootfs → pivot → exec);
//! 3. an error before `execve` is written to the `report` pipe, which is
//!    close-on-exec: the parent reads EOF when the exec succeeded, or the
//!    failed step and its errno, and reports it.

use crate::cache::{self, Container};
use crate::cgroups;
use crate::exec::Process;
use crate::image::{self, Image};
use crate::namespaces::{self, IdMapping};
use crate::rootfs::{self, Overlay, Volume};
use crate::supervise::{STOPPING, Signals};
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
use std::sync::Arc;

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
    /// What a SIGTERM to the launcher is forwarded as: the image's
    /// StopSignal, else SIGTERM.
    pub stop_signal: i32,
    /// The image's health check, for the monitor of a detached container.
    pub healthcheck: crate::health::ImageCheck,
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

impl Child {
    /// A process started another way (`launcher exec`), for
    /// [`crate::supervise::until_exit`]: its pid, its pty's master, and the
    /// pipe end whose closing tells it the launcher is gone.
    pub fn adopt(pid: Pid, pty: Option<OwnedFd>, alive: OwnedFd) -> Child {
        Child {
            pid,
            pty,
            _alive: alive,
        }
    }
}

/// Works out the command, environment, mounts and mapping for `image`.
pub fn plan(
    opts: &Options,
    image: &Image,
    layers: &[PathBuf],
    cache: &cache::Cache,
    container: &Container,
) -> Result<Plan> {
    let rootless = cache::rootless();
    let mapping = if opts.userns == Userns::Auto && !rootless {
        let start = cache.claim_userns_range(container, namespaces::choose_auto_start)?;
        IdMapping::Range {
            start,
            count: namespaces::AUTO_RANGE_SIZE,
        }
    } else {
        namespaces::choose_mapping(rootless)
    };
    let new_net = opts.network != Network::Host;
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| container.id.chars().take(12).collect());
    let (argv, bind_init) = image::pid1_argv(image, opts)?;
    // Our init is needed either way: bound at /sbin/cradle-init when the
    // image has none, and always as the exec stub.
    let init_path = find_init(opts.init_path.as_deref())?;
    let init = bind_init.then(|| (init_path.clone(), locked_flags(&init_path)));
    let stub = Arc::new(crate::exec::Stub::open(&init_path)?);
    let env = image::env(image, opts, &hostname)?;
    let etc = etc_files(&hostname, opts.network);
    // Checked before named volumes are made, so that a bad flag leaves none.
    let security = crate::security::decide(opts)?;
    let flags = rootfs::Flags::from_options(opts, new_net)?;
    let volumes = rootfs::mounts::volumes(opts, cache.root())?;
    let storage_size = match opts.storage_size {
        0 => crate::DEFAULT_STORAGE_SIZE,
        n => n,
    };
    let tmpfs = rootfs::mounts::tmpfs(opts, storage_size, cache.root())?;
    let mut lower = layers.to_vec();
    if lower.is_empty() {
        // overlayfs needs a lower directory; an image without layers gets
        // an empty one.
        let empty = container.dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(Error::io("creating", &empty))?;
        lower.push(empty);
    }
    let cwd = opts.workdir.clone().or_else(|| image.workdir.clone());
    let upper_dir = opts
        .upper_dir
        .clone()
        .unwrap_or_else(|| container.dir.clone());
    Ok(Plan {
        hostname,
        new_net,
        rootfs: rootfs::Plan {
            state: container.dir.clone(),
            in_memory: !opts.keep,
            storage_size: storage_size.to_string(),
            root: container.rootfs(),
            overlay: Overlay {
                lower,
                upper: upper_dir.join("upper"),
                work: upper_dir.join("work"),
                userxattr: rootless || matches!(mapping, IdMapping::Range { .. }),
            },
            volumes,
            tmpfs,
            init,
            etc,
            read_only: opts.read_only,
            fresh_sysfs: new_net,
            // A single-id map has no gid 5 to give devpts.
            tty_gid: (!matches!(mapping, IdMapping::Single { .. })).then_some(5),
            dev_nodes: match mapping {
                IdMapping::Host => rootfs::DevNodes::Mknod,
                _ => rootfs::DevNodes::Bind,
            },
            workdir: cwd.clone().map(PathBuf::from),
            idmapped_layers: None,
            // Decided once the cgroup exists: `Resources::cgroup_fs` in `run`.
            cgroup_fs: rootfs::CgroupFs::Skip,
            flags,
        },
        mapping,
        process: Process {
            argv,
            env,
            cwd,
            user: opts.user.clone().or_else(|| image.user.clone()),
            tty: None,
            seccomp: security.seccomp,
            caps: security.caps,
            no_new_privs: security.no_new_privs,
            rlimits: security.rlimits,
            group_add: opts.group_add.clone(),
            stub: Some(stub),
        },
        tty: opts.tty,
        interactive: opts.interactive,
        stop_signal: match &opts.stop_signal {
            Some(flag) => crate::image::parse_stop_signal(flag)?,
            None => image
                .stop_signal
                .as_deref()
                .and_then(image::signal_number)
                .unwrap_or(libc::SIGTERM),
        },
        healthcheck: image.healthcheck.clone(),
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
    let invalid = |why: String| Error::InvalidVolume {
        spec: spec.into(),
        why,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, target, read_only) = match parts[..] {
        [h, c] => (h, c, false),
        [h, c, "ro"] => (h, c, true),
        [h, c, "rw"] => (h, c, false),
        [_, _, mode] => {
            return Err(invalid(format!("the mode `{mode}` is neither ro nor rw")));
        }
        _ => return Err(invalid("want HOST:CONTAINER[:ro|:rw]".into())),
    };
    if !host.starts_with('/') {
        // A bare name is a named volume, taken before this (see `mounts`).
        return Err(invalid(format!(
            "the host path `{host}` is not absolute (a named volume's name has no `/`; \
             write `$PWD/{host}` for a directory here)"
        )));
    }
    if !target.starts_with('/') {
        return Err(invalid(format!(
            "the container path `{target}` is not absolute"
        )));
    }
    let host = std::fs::canonicalize(host).map_err(Error::io("finding volume source", host))?;
    let node = if host.is_dir() { Node::Dir } else { Node::File };
    Ok(Volume {
        copy_up: false,
        locked: locked_flags(&host),
        host,
        target: target.into(),
        read_only,
        node,
    })
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf for the container.
pub fn etc_files(hostname: &str, network: Network) -> Vec<(&'static str, String)> {
    let hosts = match network {
        Network::Host => std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
        Network::None | Network::Veth | Network::Bridge | Network::Slirp4netns => format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    vec![
        ("hostname", format!("{hostname}\n")),
        ("hosts", hosts),
        ("resolv.conf", resolv),
    ]
}

/// Clones the child into its namespaces (and, given `cgroup`, its cgroup)
/// and runs the handshake; returns once the child has exec'd the workload.
/// `join` runs while the child waits, after its id maps are written; its
/// flag says whether the child is (or will put itself) in its cgroup
/// already; when not, `join` moves it.
pub fn container(
    sys: &impl Sys,
    plan: &Plan,
    cgroup: Option<cgroups::Entry>,
    signals: &mut Signals,
    join: impl FnOnce(Pid, bool) -> Result<()>,
) -> Result<Child> {
    let channels = Channels::open(plan)?;
    let stops = Stops(signals);
    let (born_in, tasks) = match cgroup {
        Some(cgroups::Entry::Born(dir)) => (Some(dir), Vec::new()),
        Some(cgroups::Entry::Tasks(tasks)) => (None, tasks),
        None => (None, Vec::new()),
    };
    let flags = namespaces::clone_flags(plan.new_net, &plan.mapping);
    match clone_into(flags, born_in.as_ref().map(|d| d.as_raw_fd()))? {
        (None, _) => child_main(sys, plan, &tasks, channels),
        (Some(pid), born) => {
            let entered = born || !tasks.is_empty();
            drop((born_in, tasks));
            parent_side(plan, pid, channels, stops, |pid| join(pid, entered))
        }
    }
}

/// SIGTERM, SIGINT, SIGHUP and SIGQUIT while the child sets itself up.
/// [`crate::supervise`] catches every signal from before the clone, so that
/// none is lost, but acts on them only once the workload runs; until then
/// the launcher waits on its child, and a child stuck before its exec (a
/// hung mount, a hostile image's file) kept it waiting through all of them.
/// While it waits, a stop signal kills the child instead; any other is held
/// for the supervisor to forward.
struct Stops<'a>(&'a mut Signals);

impl Stops<'_> {
    /// Waits until the child writes to `fd` or closes it; an error naming
    /// the signal when one of ours comes first.
    fn wait_for(&mut self, fd: RawFd) -> Result<()> {
        loop {
            let mut fds = [fd, self.0.fd()].map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: a valid array of two pollfd.
            if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    e => return Err(Error::sys("waiting for the container to start")(e)),
                }
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
            let got = self.0.pending();
            let stop = got.iter().copied().find(|s| STOPPING.contains(s));
            self.0.hold(got);
            if let Some(signal) = stop {
                let name = nix::sys::signal::Signal::try_from(signal)
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_else(|_| signal.to_string());
                return Err(Error::sys(format!(
                    "starting the container: the launcher got {name}"
                ))(Errno::EINTR));
            }
        }
    }
}

/// Both ends of every channel between the launcher and its child.
struct Channels {
    /// Parent → child: "id maps written, go"; EOF when the launcher died.
    go: (OwnedFd, OwnedFd),
    /// Child → parent: the failed step; EOF (close-on-exec) on success.
    report: (OwnedFd, OwnedFd),
    /// With `-t`, the child opens a pty in the container's own devpts (so
    /// `tty` and ttyname(3) inside name a device that exists there, as with
    /// docker) and sends the master here, as runc's console socket does.
    console: Option<(OwnedFd, OwnedFd)>,
    /// `--userns=auto`: the child says when the layer mount points exist;
    /// the parent attaches the idmapped layers and answers.
    layers: Option<(OwnedFd, OwnedFd)>,
}

impl Channels {
    fn open(plan: &Plan) -> Result<Self> {
        let pipe = |what: &str| {
            nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(Error::sys(format!("creating the {what} pipe")))
        };
        let socket = |what: &str| {
            seqpacket_pair().map_err(Error::sys(format!("creating the {what} socket")))
        };
        Ok(Channels {
            go: pipe("sync")?,
            report: pipe("report")?,
            console: plan.tty.then(|| socket("console")).transpose()?,
            layers: matches!(plan.mapping, IdMapping::Range { .. })
                .then(|| socket("layer"))
                .transpose()?,
        })
    }
}

/// `struct clone_args` of clone3(2), up to `cgroup` (kernel 5.7).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork-like clone (no new stack): the child gets a copy of this
/// single-threaded process, already inside the new namespaces, and, given
/// the fd of a cgroup v2 directory, inside that cgroup (clone3). None in
/// the child, the child's pid in the parent; and whether it was born in
/// the cgroup: not where clone3 is unknown (before 5.7, or a seccomp
/// filter such as docker's that answers ENOSYS).
fn clone_into(flags: nix::sched::CloneFlags, cgroup: Option<RawFd>) -> Result<(Option<Pid>, bool)> {
    if let Some(fd) = cgroup {
        let args = CloneArgs {
            flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            ..CloneArgs::default()
        };
        // SAFETY: clone3 without CLONE_VM or a stack, fork-like as below;
        // `args` outlives the call and its size is passed.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match pid {
            0 => return Ok((None, true)),
            p if p > 0 => return Ok((Some(Pid::from_raw(p as i32)), true)),
            _ if matches!(Errno::last(), Errno::ENOSYS | Errno::E2BIG) => {}
            _ => {
                return Err(Error::sys(
                    "cloning into new namespaces and the container's cgroup",
                )(Errno::last()));
            }
        }
    }
    // SAFETY: raw clone without CLONE_VM; the child only runs child_main,
    // which execs or _exits.
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
    match pid {
        p if p < 0 => Err(Error::sys("cloning into new namespaces")(Errno::last())),
        0 => Ok((None, false)),
        p => Ok((Some(Pid::from_raw(p as i32)), false)),
    }
}

/// The child: sets itself up and execs, or reports the failed step to the
/// parent and exits.
fn child_main(sys: &impl Sys, plan: &Plan, tasks: &[(PathBuf, OwnedFd)], channels: Channels) -> ! {
    let Channels {
        go,
        report,
        console,
        layers,
    } = channels;
    drop((go.1, report.0));
    // Only the child's ends stay open here, so that each side sees EOF
    // when the other is gone.
    let console = console.map(|(_parent, child)| child);
    let layers = layers.map(|(_parent, child)| child);
    let (console, layers) = (
        console.as_ref().map(|c| c.as_raw_fd()),
        layers.as_ref().map(|l| l.as_raw_fd()),
    );
    let Err(err) = child_side(sys, plan, tasks, go.0.as_raw_fd(), console, layers);
    report_error(report.1.as_raw_fd(), &err);
    // SAFETY: ends the child without running the parent's destructors.
    unsafe { libc::_exit(crate::EXIT_LAUNCHER_FAILED) }
}

/// The parent: writes the id maps, releases the child, serves its requests,
/// and waits for its exec (or its error).
fn parent_side(
    plan: &Plan,
    pid: Pid,
    channels: Channels,
    mut stops: Stops,
    join: impl FnOnce(Pid) -> Result<()>,
) -> Result<Child> {
    let Channels {
        go,
        report,
        console,
        layers,
    } = channels;
    drop((go.0, report.1));
    let (console, layers) = (
        console.map(|(parent, _)| parent),
        layers.map(|(parent, _)| parent),
    );
    let mut go = std::fs::File::from(go.1);
    let released = namespaces::write_id_maps(pid.as_raw(), &plan.mapping)
        .and_then(|()| join(pid))
        .and_then(|()| {
            go.write_all(b"g")
                .map_err(Error::io("releasing the child", "go pipe"))
        })
        .and_then(|()| match &layers {
            Some(socket) => stops
                .wait_for(socket.as_raw_fd())
                .and_then(|()| idmap_layers(pid.as_raw(), plan, socket)),
            None => Ok(()),
        });
    if let Err(e) = released {
        return Err(kill_child(pid, e));
    }
    // A child that fails before sending the master closes the socket; its
    // error then comes over the report pipe.
    let master = match &console {
        Some(socket) => match stops.wait_for(socket.as_raw_fd()) {
            Ok(()) => receive_fd(socket),
            Err(e) => return Err(kill_child(pid, e)),
        },
        None => None,
    };
    if let Err(e) = stops.wait_for(report.0.as_raw_fd()) {
        return Err(kill_child(pid, e));
    }
    if let Some(err) = read_report(report.0) {
        let _ = nix::sys::wait::waitpid(pid, None);
        return Err(err);
    }
    if console.is_some() && master.is_none() {
        return Err(kill_child(
            pid,
            Error::sys("receiving the container's terminal")(Errno::EPROTO),
        ));
    }
    Ok(Child {
        pid,
        pty: master,
        _alive: go.into(),
    })
}

fn kill_child(pid: Pid, err: Error) -> Error {
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    err
}

pub(crate) fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

/// One fd sent with SCM_RIGHTS, or None at EOF (the child failed first).
pub(crate) fn receive_fd(socket: &OwnedFd) -> Option<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let fd = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
        _ => None,
    })?;
    // SAFETY: the fd was just received and is ours.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Waits for the child's "mount points ready", attaches the idmapped layers
/// in its mount namespace, answers. A child that failed before closes the
/// socket (its error then comes over the report pipe).
fn idmap_layers(pid: i32, plan: &Plan, socket: &OwnedFd) -> Result<()> {
    let mut byte = [0u8; 1];
    // SAFETY: one-byte read and write on our socket.
    if unsafe { libc::read(socket.as_raw_fd(), byte.as_mut_ptr().cast(), 1) } != 1 {
        return Ok(());
    }
    let lower = &plan.rootfs.overlay.lower;
    let targets = rootfs::idmapped_targets(&plan.rootfs.state, lower.len());
    namespaces::attach_idmapped_layers(pid, lower, &targets)?;
    // SAFETY: as above.
    unsafe { libc::write(socket.as_raw_fd(), b"d".as_ptr().cast(), 1) };
    Ok(())
}

/// The child, between clone and exec. Returns only on failure.
fn child_side(
    sys: &impl Sys,
    plan: &Plan,
    tasks: &[(PathBuf, OwnedFd)],
    go: RawFd,
    tty: Option<RawFd>,
    layers: Option<RawFd>,
) -> Result<Infallible> {
    // Before anything that can block: a child stuck later (a hung mount, a
    // hostile image's file) dies with a SIGKILLed launcher, instead of
    // staying behind with every capability.
    // Named apart from the launcher in ps and in profiles, until its exec.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"cradle-child".as_ptr()) };
    crate::exec::die_with_parent(sys, go)?;
    wait_for_parent(go)?;
    enter_cgroup(tasks)?;
    namespaces::enter_cgroup_namespace(sys)?;
    reset_signals();
    redirect_stdin(plan)?;
    let mut rootfs = plan.rootfs.clone();
    if layers.is_some() {
        // Root of the new user namespace, so that what it creates is mapped.
        sys.set_ids(0, 0, &[])
            .map_err(Error::sys("becoming root of the user namespace"))?;
        // The uid change cleared the parent-death signal.
        crate::exec::die_with_parent(sys, go)?;
        rootfs.idmapped_layers = layers;
    }
    namespaces::set_identity(sys, &plan.hostname, plan.new_net)?;
    rootfs::prepare(sys, &rootfs)?;
    crate::pivot::into(sys, &plan.rootfs.root)?;
    let slave = match tty {
        Some(console) => Some(open_terminal(sys, console)?),
        None => None,
    };
    let mut process = plan.process.clone();
    process.tty = slave.as_ref().map(|s| s.as_raw_fd());
    crate::exec::into_workload(sys, &process, go)
}

/// Opens a pty in the container's devpts, sends the master to the parent,
/// keeps the slave for the workload.
fn open_terminal(sys: &impl Sys, console: RawFd) -> Result<OwnedFd> {
    let (master, slave) = sys
        .open_pty()
        .map_err(Error::sys("opening a terminal in the container"))?;
    sys.send_fd(console, master.as_raw_fd())
        .map_err(Error::sys("sending the terminal to the launcher"))?;
    Ok(slave)
}

/// v1: moves this process, one thread, into its cgroup in each tree by
/// writing `0` to the `tasks` files ([`cgroups::Entry::Tasks`]). They are
/// close-on-exec: the workload never holds them.
fn enter_cgroup(tasks: &[(PathBuf, OwnedFd)]) -> Result<()> {
    for (path, fd) in tasks {
        // SAFETY: writing a valid one-byte buffer to an fd we hold.
        if unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
            return Err(Error::sys(format!(
                "entering the cgroup `{}`",
                path.display()
            ))(Errno::last()));
        }
    }
    Ok(())
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

/// `errno` and the failed step, one line each, for the parent.
pub(crate) fn report_error(fd: RawFd, err: &Error) {
    let errno = match err {
        Error::Sys { source, .. } | Error::Child { source, .. } => *source as i32,
        Error::Io { source, .. } => source.raw_os_error().unwrap_or(0),
        _ => 0,
    };
    let text = format!("{errno}\n{err}");
    // SAFETY: writing a valid buffer to our end of the report pipe.
    unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
}

/// EOF (the exec succeeded: the pipe is close-on-exec) or the child's error.
pub(crate) fn read_report(fd: OwnedFd) -> Option<Error> {
    let mut text = String::new();
    let _ = std::fs::File::from(fd).read_to_string(&mut text);
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
