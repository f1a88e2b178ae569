//! The launcher: runs an OCI image archive in new UTS, IPC, PID, mount,
//! network, cgroup and (rootless, or `--userns=auto`) user namespaces, with
//! cradle's init as PID 1.
//!
//! The steps follow the data: [`image`] reads and verifies the archive,
//! [`cache`] unpacks layers once by digest and makes the container's state
//! directory, [`spawn`] clones the child and runs its side: [`namespaces`]
//! (hostname, loopback, id maps), [`rootfs`] (overlay, /proc, /dev, /sys …),
//! [`pivot`], [`exec`] (user, capabilities, seccomp, execve); then
//! [`supervise`] forwards signals and the terminal until the container ends.
//! Around the clone, [`resources`] makes the container's cgroup
//! ([`cgroups`]) and network ([`network`]) and undoes them at exit.

/// `eprintln!` that never panics: on a stderr that is closed or hung up
/// (EPIPE, EIO: the terminal window closed, the monitor gone) the line is
/// lost, not the launcher with its container.
#[macro_export]
macro_rules! stderr_line {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod bundle;
pub mod cache;
pub mod capabilities;
pub mod cgroups;
pub mod control;
pub mod detach;
pub mod enter;
pub mod exec;
pub mod health;
pub mod image;
pub mod logs;
pub mod monitor;
pub mod namespaces;
pub mod network;
pub mod pivot;
pub mod pull;
pub mod record;
pub mod resources;
pub mod rootfs;
pub mod seccomp;
pub mod seccomp_profile;
pub mod security;
pub mod spawn;
pub mod state;
pub mod store;
pub mod supervise;
pub mod sys;
pub mod sysctl;

use nix::errno::Errno;
use std::path::PathBuf;

pub use sys::{Linux, Sys};

/// The default cap of a container's in-memory writable layer (and of each
/// `--tmpfs` without `size=`): 1 GiB.
pub const DEFAULT_STORAGE_SIZE: u64 = 1 << 30;

/// Docker's exit status for a failure of the runtime itself.
pub const EXIT_LAUNCHER_FAILED: i32 = 125;

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// A new network namespace with only `lo`, up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A veth pair with a /30 of its own (root only).
    Veth,
    /// A veth pair on the host bridge, NAT out, published ports in (root only).
    Bridge,
    /// User-mode networking by slirp4netns, published ports too (rootless).
    Slirp4netns,
}

/// `--userns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Userns {
    /// A user namespace only when not root (rootless).
    #[default]
    Host,
    /// A new user namespace, mapped to an unused subordinate range as root.
    Auto,
}

/// What `launcher run` was asked to do (the command line, parsed).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub image: PathBuf,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub entrypoint: Option<String>,
    pub volumes: Vec<String>,
    pub read_only: bool,
    pub tty: bool,
    pub interactive: bool,
    pub network: Network,
    pub name: Option<String>,
    pub keep: bool,
    /// `--upper-dir DIR` (hidden, the builder's): the overlay's upper and
    /// work directories are `DIR/upper` and `DIR/work`, made by the caller
    /// and left to it, instead of the state directory's.
    pub upper_dir: Option<PathBuf>,
    pub init_path: Option<PathBuf>,
    pub no_init: bool,
    pub userns: Userns,
    /// Seconds between forwarding SIGTERM/SIGINT and sending SIGKILL.
    pub stop_timeout: u64,
    /// `-p/--publish` specs, as given.
    pub publish: Vec<String>,
    /// `--memory`, `--memory-swap`, `--pids-limit`, `--cpus`, `--cpu-shares`.
    pub limits: cgroups::Limits,
    /// `--cgroup-parent`.
    pub cgroup_parent: Option<String>,
    /// `--storage-opt size=`: the cap of the in-memory writable layer, bytes.
    pub storage_size: u64,
    /// `--tmpfs PATH[:OPTIONS]`, as given.
    pub tmpfs: Vec<String>,
    /// The bridge, subnets and state directory of `veth` and `bridge` modes.
    pub net_config: network::Config,
    /// `--cap-add`, `--cap-drop`: capability names (or `ALL`), as given.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `--privileged`: every capability and device, no seccomp, writable
    /// /proc and /sys. Not a container boundary.
    pub privileged: bool,
    /// `--security-opt`, as given ([`security`]).
    pub security_opt: Vec<String>,
    /// `--ulimit NAME=SOFT[:HARD]`, as given.
    pub ulimits: Vec<String>,
    /// `--device HOST[:CTR][:rwm]`, as given.
    pub devices: Vec<String>,
    /// `--device-cgroup-rule 'c|b|a MAJOR:MINOR rwm'`, as given.
    pub device_cgroup_rules: Vec<String>,
    /// `--add-host NAME:IP`, `--dns`, `--dns-search`, as given.
    pub add_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// `--dns-option`: resolv.conf `options`, replacing the generated ones.
    pub dns_options: Vec<String>,
    /// `-l/--label K=V`, kept in the container's record.
    pub labels: Vec<String>,
    /// `--mount type=…,…`, as given.
    pub mounts: Vec<String>,
    /// `--stop-signal`: overrides the image's StopSignal.
    pub stop_signal: Option<String>,
    /// `--sysctl NAME=VALUE`, as given.
    pub sysctls: Vec<String>,
    /// `--shm-size`: the size of /dev/shm, bytes (default 64 MiB).
    pub shm_size: Option<u64>,
    /// `--group-add`: supplementary groups, names or ids.
    pub group_add: Vec<String>,
    /// `--pull`, `--ca-cert`, `--authfile`, `--tls-verify` for a reference.
    pub pull: pull::PullOptions,
    /// A foreground `-t` run forked off its detach client
    /// ([`detach::fork_client`]): the detach keys and the client.
    pub detach: Option<std::sync::Arc<detach::Link>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading image `{}`", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: Box<builder::Error>,
    },
    #[error(
        "image archive `{}` holds several images; name one as `{}:NAME`: {names}",
        path.display(), path.display()
    )]
    SeveralImages { path: PathBuf, names: String },
    #[error("image archive `{}` has no image named `{name}`; it has {names}", path.display())]
    NoSuchImageInArchive {
        path: PathBuf,
        name: String,
        names: String,
    },
    #[error("pulling `{reference}`")]
    Pull {
        reference: String,
        #[source]
        source: Box<builder::Error>,
    },
    #[error("building the runtime spec's {what}")]
    Spec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("image `{}` has nothing to run (no Entrypoint or Cmd, and no command given)", path.display())]
    NoCommand { path: PathBuf },
    #[error("invalid {what} `{value}`")]
    Invalid { what: &'static str, value: String },
    #[error("invalid environment variable `{entry}`: {why}")]
    InvalidEnv { entry: String, why: String },
    #[error("env file `{}` line {line}: {why}", path.display())]
    EnvFile {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("invalid volume `{spec}`: {why}")]
    InvalidVolume { spec: String, why: String },
    /// A flag's value that cannot be used; `why` says what is wrong.
    #[error("invalid {flag} `{value}`: {why}")]
    Flag {
        flag: &'static str,
        value: String,
        why: String,
    },
    #[error("invalid {flag}: unknown capability: \"{name}\"")]
    UnknownCapability { flag: &'static str, name: String },
    #[error("loading the seccomp profile `{}`: {why}", path.display())]
    SeccompProfile { path: PathBuf, why: String },
    #[error("unpacking layer `{digest}`")]
    Unpack {
        digest: String,
        #[source]
        source: Box<builder::Error>,
    },
    #[error("{op} `{}`", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "choosing a --userns=auto range: all {slots} slots of 65536 ids in {first}..{end} \
         are held by running containers"
    )]
    UsernsExhausted { slots: usize, first: u32, end: u64 },
    /// This and the next two in docker's words (capitals and all), so that
    /// scripts matching them keep working.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse { name: String, id: String },
    #[error("No such container: {name}")]
    NoSuchContainer { name: String },
    #[error(
        "You cannot remove a running container {id}. Stop the container before attempting \
         removal or force remove"
    )]
    ContainerRunning { id: String },
    #[error("container name or id prefix `{name}` matches {count} containers; give more of the id")]
    AmbiguousContainer { name: String, count: usize },
    #[error("container `{name}` is not running")]
    NotRunning { name: String },
    /// A detached container that did not start: the monitor's report of
    /// the launcher's error, and the status it exited with.
    #[error("{message}")]
    StartFailed { code: i32, message: String },
    /// The state directory (or one below it) is not one only the launcher's
    /// user can write.
    #[error("state directory `{}` {why}; use a directory only you can write", path.display())]
    UnsafeRoot { path: PathBuf, why: String },
    #[error("no image `{name}` in the store")]
    NoSuchImage { name: String },
    #[error("image `{reference}` is not in the store, and --pull=never forbids pulling it")]
    NotPulled { reference: String },
    #[error("image `{name}` is used by a running container")]
    ImageInUse { name: String },
    #[error(
        "no cradle-init found (looked at {tried}); the launcher runs every workload through it, \
         as PID 1 unless --no-init; pass --init-path"
    )]
    NoInit { tried: String },
    #[error("compiling the seccomp profile")]
    Seccomp(#[source] seccompiler::BackendError),
    #[error("{step}")]
    Sys {
        step: String,
        #[source]
        source: Errno,
    },
    #[error("writing the id maps of {pid} with `{program}`: {status}")]
    IdMapTool {
        pid: i32,
        program: String,
        status: std::process::ExitStatus,
    },
    #[error("writing the id maps of {pid} with `{program}`")]
    IdMapToolStart {
        pid: i32,
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// A step in the container's setup failed; the child reported it over
    /// the sync pipe.
    #[error("{step}")]
    Child {
        step: String,
        #[source]
        source: Errno,
    },
    #[error(transparent)]
    Cgroup(#[from] cgroups::Error),
    #[error(transparent)]
    Network(#[from] network::Error),
    #[error("network `{mode}` needs root; a rootless container can have none or host")]
    NetworkNeedsRoot { mode: &'static str },
    /// The kernel's OOM killer killed a process of the container.
    #[error("container killed: out of memory{}", resources::limit_note(*memory))]
    OutOfMemory { memory: Option<u64> },
}

impl Error {
    /// The status to exit with for this error: docker's 127 (command not
    /// found) and 126 (not executable) when the exec itself failed, else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            // As docker: 128 + SIGKILL.
            Error::OutOfMemory { .. } => 137,
            Error::StartFailed { code, .. } => *code,
            Error::Child { step, source } if step.starts_with("executing ") => match source {
                Errno::ENOENT => 127,
                Errno::EACCES | Errno::ENOEXEC => 126,
                _ => EXIT_LAUNCHER_FAILED,
            },
            _ => EXIT_LAUNCHER_FAILED,
        }
    }

    /// A closure making an [`Error::Sys`] for `step`, for `map_err`.
    pub fn sys(step: impl Into<String>) -> impl FnOnce(Errno) -> Error {
        let step = step.into();
        move |source| Error::Sys { step, source }
    }
    /// A closure making an [`Error::Io`], for `map_err`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `launcher run`: reads the image, prepares its root, runs it, and returns
/// the exit status to exit with (the workload's, or 128+N for a signal).
/// What the run goes on without (no cgroup for the limits, a cleanup that
/// failed) goes to `warn`, one line each, when it happens: the library
/// does not print.
pub fn run(opts: &Options, sys: &impl Sys, warn: &mut dyn FnMut(&str)) -> Result<i32> {
    run_observed(opts, sys, warn, &mut |_, _| {})
}

/// [`run`], calling `started` once the workload runs (its exec succeeded):
/// a detached container's monitor records its pid and process there.
pub fn run_observed(
    opts: &Options,
    sys: &impl Sys,
    warn: &mut dyn FnMut(&str),
    started: &mut dyn FnMut(&spawn::Child, &spawn::Plan),
) -> Result<i32> {
    // Before anything else, and held until the container is gone: a host
    // port that is taken is refused, never shadowed (docker-proxy's rule).
    // slirp4netns binds and holds the ports itself: only checked for it.
    let mut ports = Some(network::reserve_ports(&opts.publish)?);
    if opts.network == Network::Slirp4netns {
        ports = None;
    }
    let _ports = ports;
    let etc_flags = network::dns::Custom::parse(opts)?;
    record::parse_labels(&opts.labels)?;
    let archive = pull::resolve(&opts.image, &cache::default_root(), &opts.pull)?;
    let image = image::read(&archive)?;
    let cache = cache::Cache::open(cache::default_root())?;
    cache.reclaim_stale();
    state::refuse_detached_name(&cache, opts.name.as_deref())?;
    let layers = cache.unpack_layers(&image)?;
    let container = cache.create_container(opts.name.as_deref(), opts.keep)?;
    // Only where something reads it: labels, or a kept layer's record. A
    // file made and removed on every run costs ext4 an inode allocation.
    if !opts.labels.is_empty() || opts.keep {
        record::write(&container, opts)?;
    }
    let mut plan = spawn::plan(opts, &image, &layers, &cache, &container)?;
    if pivot::is_initramfs(sys) {
        warn(
            "`/` is the initial ramfs, where pivot_root cannot work: entering the root with MS_MOVE and chroot instead",
        );
    }
    let mut signals = supervise::catch_signals()?;
    let mut resources = resources::prepare(opts, &container.id, warn)?;
    resources.write_etc(&plan.hostname, &mut plan.rootfs.etc);
    etc_flags.apply(&mut plan.rootfs.etc);
    plan.rootfs.cgroup_fs = resources.cgroup_fs();
    let entry = resources.cgroup_entry()?;
    let child = spawn::container(sys, &plan, entry, &mut signals, |pid, entered| {
        resources.join(pid, entered)
    })?;
    started(&child, &plan);
    let mut detach = opts
        .detach
        .as_deref()
        .map(|link| detach::Pending::new(link, &cache, &container, &child, &plan, opts));
    let status = supervise::until_exit(
        child,
        signals,
        plan.stop_signal,
        opts,
        warn,
        detach.as_mut(),
    )?;
    if let Err(err) = container.remove() {
        let cause = std::error::Error::source(&err)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        warn(&format!("cleaning up: {err}{cause}"));
    } else if opts.keep && opts.name.is_none() {
        warn(&format!(
            "the writable layer is kept in `{}`; `launcher rm {}` removes it",
            container.upper().display(),
            container.id
        ));
    }
    let status = resources.release(status, warn);
    if let Some(detached) = detach {
        detached.end(status.as_ref().map_or_else(Error::exit_code, |code| *code));
    }
    status
}

/// `launcher export IMAGE DIR`: the image's layers flattened into `dir`
/// (whiteouts applied), e.g. as the rootfs of an OCI bundle for crun or runc.
pub fn export(image: &std::path::Path, dir: &std::path::Path) -> Result<()> {
    bundle::flatten_layers(&image::read(image)?, dir)
}
