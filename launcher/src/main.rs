//! `launcher run [OPTIONS] IMAGE.tar [CMD [ARGS…]]`, with docker's flag names,
//! `launcher ps|stop|kill|wait|rm|logs|inspect|exec` for detached containers,
//! and `launcher image ls|rm|prune` for the store. Prints one error chain and
//! exits 125 when the launcher itself fails.

use clap::{Parser, Subcommand};

/// See Cargo.toml: musl's allocator unmaps too eagerly for a short-lived
/// process that allocates in bursts.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

use launcher::network::Subnet;
use launcher::{Linux, Network, Options, Userns, stderr_line};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "launcher",
    version,
    about = "Run an OCI image archive in new namespaces, cradle's init as PID 1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run IMAGE: an archive (ours, an OCI image layout, `docker save`), an
    /// OCI image layout directory, or a
    /// registry reference, pulled into the store as --pull says.
    Run(Box<Run>),
    /// Unpack IMAGE.tar's layers, flattened, into DIR (an OCI bundle's rootfs);
    /// a failed export into a DIR that had files leaves what it unpacked.
    Export {
        /// The image archive (`FILE.tar`, or `FILE.tar:NAME` to pick one of several).
        image: PathBuf,
        /// The directory to unpack into (created when missing).
        dir: PathBuf,
    },
    /// Write an OCI runtime bundle (config.json and rootfs/) of IMAGE.tar
    /// into DIR, for `crun run` or `runc run`, with `run`'s defaults.
    Bundle(Box<Bundle>),
    /// List or remove the images in the store (pulled archives, unpacked
    /// layers), under $CRADLE_ROOT.
    #[command(subcommand)]
    Image(Image),
    /// List the detached containers (running ones; -a: all).
    Ps {
        /// Show every container, also the ones that exited.
        #[arg(short = 'a', long = "all")]
        all: bool,
        /// Only the ids.
        #[arg(short = 'q', long = "quiet")]
        quiet: bool,
    },
    /// Stop containers: their StopSignal (SIGTERM), then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Send a signal (default SIGKILL) to containers' first process.
    Kill {
        /// The signal: a name (`TERM`, `SIGHUP`) or a number.
        #[arg(short = 's', long = "signal", default_value = "KILL", value_parser = parse_signal)]
        signal: i32,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Block until containers are done, then print their exit codes.
    Wait {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Remove containers that are done (with -f, kill running ones first).
    Rm {
        /// Kill a running container, then remove it.
        #[arg(short = 'f', long = "force")]
        force: bool,
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Print a container's stdout and stderr.
    Logs {
        /// Follow the output until the container is done.
        #[arg(short = 'f', long = "follow")]
        follow: bool,
        /// Only the last N lines.
        #[arg(short = 'n', long = "tail", value_name = "N")]
        tail: Option<String>,
        /// Show the time each line was written.
        #[arg(short = 't', long = "timestamps")]
        timestamps: bool,
        name: String,
    },
    /// Print containers' state and configuration as JSON.
    Inspect {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
    /// Run a command in a running container's namespaces and cgroup.
    Exec(Box<Exec>),
}

#[derive(clap::Args)]
struct Exec {
    /// Keep stdin open and pass it to the command.
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// UID[:GID], or a name from the container's /etc/passwd.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// Set an environment variable (NAME=VALUE, or NAME to pass the launcher's).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    name: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum Image {
    /// List the images: reference or archive path, id, layers, size on disk, last use.
    Ls,
    /// Remove IMAGEs (a reference, an archive path, or an id or its prefix)
    /// and the layers no other image uses; never the archive of a path.
    Rm {
        /// A reference, an archive path, or an id or its prefix (`image ls` shows them).
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove the layers no image uses and what interrupted runs left.
    Prune {
        /// Also remove every image no running container uses.
        #[arg(short = 'a', long = "all")]
        all: bool,
    },
}

#[derive(clap::Args)]
struct Bundle {
    /// Set an environment variable (NAME=VALUE).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env)]
    env: Vec<String>,
    /// UID[:GID], or a name from the image's /etc/passwd.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// The container's hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Replace the image's Entrypoint (and drop its Cmd); the init stays PID 1 unless --no-init.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Do not add an init: the command runs as PID 1.
    #[arg(long = "no-init")]
    no_init: bool,
    /// Bind mount HOST:CONTAINER[:ro].
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// The static init to bind-mount into images without one (its path on this machine).
    #[arg(long = "init-path", env = "CRADLE_INIT_PATH")]
    init_path: Option<PathBuf>,
    #[command(flatten)]
    limits: Limits,
    /// The image archive (`FILE.tar`, or `FILE.tar:NAME` to pick one of several).
    image: PathBuf,
    /// The bundle directory (created; must be empty).
    dir: PathBuf,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::Args)]
struct Run {
    /// Set an environment variable (NAME=VALUE, or NAME to pass the launcher's).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]", value_parser = parse_env)]
    env: Vec<String>,
    /// Read environment variables from a file (NAME=VALUE lines).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_parser = parse_workdir)]
    workdir: Option<String>,
    /// UID[:GID], or a name from the image's /etc/passwd.
    #[arg(short = 'u', long = "user")]
    user: Option<String>,
    /// The container's hostname (default: the first 12 characters of its id).
    #[arg(long)]
    hostname: Option<String>,
    /// Replace the image's Entrypoint (and drop its Cmd); the init stays PID 1 unless --no-init.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Bind mount HOST:CONTAINER[:ro].
    #[arg(short = 'v', long = "volume")]
    volume: Vec<String>,
    /// Mount the container's root read-only.
    #[arg(long = "read-only")]
    read_only: bool,
    /// Mount a tmpfs: PATH[:OPTIONS] (ro, exec, suid, dev, size=, mode=,
    /// uid=, gid=, nr_inodes=); noexec,nosuid,nodev and the writable
    /// layer's size cap unless said otherwise.
    #[arg(long = "tmpfs", value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// size=SIZE: the cap of the in-memory writable layer (default 1g);
    /// writes past it fail with ENOSPC inside. Not applied with --keep.
    #[arg(long = "storage-opt", value_name = "size=SIZE", value_parser = parse_storage_opt)]
    storage_opt: Option<u64>,
    /// Allocate a pseudo-terminal. On a terminal, Ctrl-P Ctrl-Q detaches:
    /// the container runs on as with -d (see --detach-keys).
    #[arg(short = 't', long = "tty")]
    tty: bool,
    /// Keep stdin open and pass it to the container.
    #[arg(short = 'i', long = "interactive")]
    interactive: bool,
    /// none (a new network namespace with `lo`), host, bridge (a veth on
    /// the host bridge, NAT out; root), veth (a point-to-point /30; root)
    /// or slirp4netns (user-mode networking, rootless too).
    #[arg(long, visible_alias = "net", default_value = "none", value_parser = ["none", "host", "bridge", "veth", "slirp4netns"])]
    network: String,
    /// Publish a container port: [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp] (bridge, veth, slirp4netns).
    #[arg(short = 'p', long = "publish", value_name = "SPEC")]
    publish: Vec<String>,
    #[command(flatten)]
    limits: Limits,
    /// The bridge of `--network bridge` (default cradle0).
    #[arg(long = "bridge-name", env = "CRADLE_BRIDGE", hide = true)]
    bridge_name: Option<String>,
    /// The bridge's subnet (default 10.89.0.0/16).
    #[arg(long, env = "CRADLE_SUBNET", hide = true)]
    subnet: Option<Subnet>,
    /// The range `--network veth` cuts into /30s (default 169.254.1.0/24).
    #[arg(long = "veth-subnet", env = "CRADLE_VETH_SUBNET", hide = true)]
    veth_subnet: Option<Subnet>,
    /// Address leases and their lock (default /run/cradle/network).
    #[arg(long = "network-state", env = "CRADLE_NETWORK_STATE", hide = true)]
    network_state: Option<PathBuf>,
    /// Name of the container (its state directory).
    #[arg(long)]
    name: Option<String>,
    /// Keep the container's writable layer after it exits.
    #[arg(long)]
    keep: bool,
    /// The builder's: DIR/upper and DIR/work (made by the caller, on one
    /// filesystem) are the writable layer, left in place when the container
    /// ends, so that a `[[run]]` step's changes can be read from them. A
    /// directory the caller owns and removes, unlike --keep's state
    /// directory, which outlives a builder killed before its `launcher rm`.
    #[arg(long = "upper-dir", value_name = "DIR", hide = true, conflicts_with_all = ["keep", "detach"])]
    upper_dir: Option<PathBuf>,
    /// Run an init as PID 1: the default, accepted as docker has it.
    #[arg(long = "init", conflicts_with = "no_init")]
    _init: bool,
    /// The static init to bind-mount into images without one.
    #[arg(long = "init-path", env = "CRADLE_INIT_PATH")]
    init_path: Option<PathBuf>,
    /// Do not add an init: the command runs as PID 1.
    #[arg(long = "no-init")]
    no_init: bool,
    /// host (a user namespace only when rootless) or auto (a new one, mapped to an unused range).
    #[arg(long, default_value = "host", value_parser = ["host", "auto"])]
    userns: String,
    /// Seconds to wait after forwarding SIGTERM/SIGINT before SIGKILL.
    #[arg(long = "stop-timeout", default_value_t = 10)]
    stop_timeout: u64,
    /// Run in the background: print the container's id and return; a
    /// monitor keeps it and its log until `launcher rm`.
    #[arg(short = 'd', long = "detach")]
    detach: bool,
    /// Remove the container when it ends (always so in the foreground).
    #[arg(long = "rm")]
    rm: bool,
    /// The keys that detach a -t run from its terminal, leaving the
    /// container running detached (default ctrl-p,ctrl-q; `ctrl-X` or one
    /// character each, comma-separated; "": never detach).
    #[arg(long = "detach-keys", value_name = "KEYS", value_parser = parse_detach_keys)]
    detach_keys: Option<DetachKeys>,
    /// With -d: no, on-failure[:N], always, unless-stopped.
    #[arg(long, default_value = "no", value_parser = |s: &str| s.parse::<launcher::state::Restart>())]
    restart: launcher::state::Restart,
    /// Add a capability (a name with or without CAP_, any case, or ALL).
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability (a name with or without CAP_, any case, or ALL).
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Every capability and device, no seccomp, writable /proc and /sys:
    /// not a container boundary (see SECURITY.md).
    #[arg(long)]
    privileged: bool,
    /// seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false]
    /// (default true here, unlike docker), systempaths=unconfined.
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<String>,
    /// A resource limit: NAME=SOFT[:HARD] (nofile, nproc, core, memlock,
    /// stack, …; -1: unlimited).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    ulimit: Vec<String>,
    /// Give the container a host device: HOST[:CONTAINER][:rwm] (root).
    #[arg(long = "device", value_name = "HOST[:CTR][:rwm]")]
    device: Vec<String>,
    /// Allow devices in the device cgroup: `c|b|a MAJOR|*:MINOR|* rwm` (root).
    #[arg(long = "device-cgroup-rule", value_name = "RULE")]
    device_cgroup_rule: Vec<String>,
    /// Add a line to /etc/hosts: NAME:IP.
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// A name server for /etc/resolv.conf.
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<String>,
    /// A search domain for /etc/resolv.conf.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// An `options` entry for /etc/resolv.conf (ndots:2, edns0, …).
    #[arg(long = "dns-option", visible_alias = "dns-opt", value_name = "OPTION")]
    dns_option: Vec<String>,
    /// A label, kept in the container's record: KEY=VALUE.
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// A mount in docker's syntax: type=bind|tmpfs|volume,src=…,dst=…[,ro][,…].
    #[arg(long = "mount", value_name = "SPEC")]
    mount: Vec<String>,
    /// The signal a SIGTERM to the launcher is forwarded as (default: the image's StopSignal).
    #[arg(long = "stop-signal", value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// A namespaced kernel parameter: NAME=VALUE (net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*).
    #[arg(long = "sysctl", value_name = "NAME=VALUE")]
    sysctl: Vec<String>,
    /// The size of /dev/shm (default 64m).
    #[arg(long = "shm-size", value_name = "SIZE", value_parser = launcher::resources::parse_bytes)]
    shm_size: Option<u64>,
    /// With -d: a health check, run as `/bin/sh -c CMD` in the container
    /// as `exec` runs commands (replaces the image's HEALTHCHECK).
    #[arg(long = "health-cmd", value_name = "CMD")]
    health_cmd: Option<String>,
    /// With -d: the time between checks (default 30s; at least 100ms).
    #[arg(long = "health-interval", value_name = "DURATION", allow_hyphen_values = true, value_parser = launcher::health::parse_positive)]
    health_interval: Option<std::time::Duration>,
    /// With -d: a check running longer is killed and fails (default 30s).
    #[arg(long = "health-timeout", value_name = "DURATION", allow_hyphen_values = true, value_parser = launcher::health::parse_positive)]
    health_timeout: Option<std::time::Duration>,
    /// With -d: failures in a row that make the container unhealthy (default 3).
    #[arg(long = "health-retries", value_name = "N", allow_hyphen_values = true, value_parser = clap::value_parser!(u32).range(1..))]
    health_retries: Option<u32>,
    /// With -d: failures this long after a start do not count (default 0s).
    #[arg(long = "health-start-period", value_name = "DURATION", allow_hyphen_values = true, value_parser = launcher::health::parse_not_negative)]
    health_start_period: Option<std::time::Duration>,
    /// Run no health check, not even the image's HEALTHCHECK.
    #[arg(long = "no-healthcheck")]
    no_healthcheck: bool,
    /// A supplementary group for the workload (a name in the image's /etc/group, or a number).
    #[arg(long = "group-add", value_name = "GROUP")]
    group_add: Vec<String>,
    /// When to pull a registry reference: missing (default), always, never.
    #[arg(long, default_value = "missing", value_parser = ["always", "missing", "never"])]
    pull: String,
    /// A PEM certificate to trust for the registry, besides the system's.
    #[arg(long = "ca-cert", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// The credential file to read for the registry (podman's auth.json format).
    #[arg(long = "authfile", value_name = "FILE")]
    authfile: Option<PathBuf>,
    /// false: speak plain http to the registry.
    #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    tls_verify: bool,
    /// An image archive (`FILE.tar`, or `FILE.tar:NAME` to pick one of several)
    /// or a registry reference (`registry.example.com/repo:tag`), pulled as --pull says.
    #[arg(value_name = "IMAGE")]
    image: PathBuf,
    /// Command and arguments (replace the image's Cmd).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The network configuration, the defaults but for what the hidden flags
/// (or their `CRADLE_…` variables) set; tests use them for bridges and
/// subnets of their own.
fn net_config(
    bridge: Option<String>,
    subnet: Option<Subnet>,
    veth_range: Option<Subnet>,
    state_dir: Option<PathBuf>,
) -> launcher::network::Config {
    let default = launcher::network::Config::default();
    launcher::network::Config {
        state_dir: state_dir.unwrap_or(default.state_dir),
        bridge: bridge.unwrap_or(default.bridge),
        subnet: subnet.unwrap_or(default.subnet),
        veth_range: veth_range.unwrap_or(default.veth_range),
    }
}

/// The resource limits `run` applies and `bundle` writes into config.json.
#[derive(clap::Args)]
struct Limits {
    /// Memory limit (b, k, m, g: `32m`; at least 6m); the container is killed past it.
    #[arg(long, value_parser = parse_memory)]
    memory: Option<u64>,
    /// Memory plus swap (-1: unlimited swap; default: twice --memory for `run`, the runtime's for `bundle`).
    #[arg(long = "memory-swap", value_parser = launcher::resources::parse_memory_swap, allow_hyphen_values = true)]
    memory_swap: Option<i64>,
    /// Most processes and threads at once (0 or -1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// CPU time per wall time (`0.5`: half a core), 0.01 up to the number of CPUs.
    #[arg(long, value_parser = parse_cpus)]
    cpus: Option<f64>,
    /// Relative CPU weight (2..=262144, default 1024).
    #[arg(long = "cpu-shares")]
    cpu_shares: Option<u64>,
    /// Parent cgroup: absolute from the hierarchy's root, or relative to the launcher's (the runtime's for `bundle`).
    #[arg(long = "cgroup-parent")]
    cgroup_parent: Option<String>,
}

impl Limits {
    fn split(self) -> (launcher::cgroups::Limits, Option<String>) {
        let limits = launcher::cgroups::Limits {
            memory: self.memory,
            memory_swap: self.memory_swap,
            pids: self.pids_limit,
            cpus: self.cpus,
            cpu_shares: self.cpu_shares,
        };
        (limits, self.cgroup_parent)
    }
}

fn main() {
    // docker exits 125 for a usage error too; --help and --version exit 0.
    let cli = Cli::try_parse().unwrap_or_else(|err| {
        let to_stderr = err.use_stderr();
        let _ = without_hidden_suggestion(err).print();
        std::process::exit(if to_stderr {
            launcher::EXIT_LAUNCHER_FAILED
        } else {
            0
        })
    });
    let run = match cli.command {
        Command::Run(run) => run,
        Command::Bundle(b) => bundle(b),
        Command::Image(command) => image(command),
        Command::Exec(e) => exec(*e),
        Command::Export { image, dir } => {
            if let Err(err) = launcher::export(&image, &dir) {
                stderr_line!("launcher: {:#}", anyhow::Error::from(err));
                std::process::exit(launcher::EXIT_LAUNCHER_FAILED);
            }
            return;
        }
        other => containers(other),
    };
    let (limits, cgroup_parent) = run.limits.split();
    let mut opts = Options {
        image: run.image,
        command: run.command,
        env: run.env,
        env_files: run.env_file,
        workdir: run.workdir,
        user: run.user,
        hostname: run.hostname,
        entrypoint: run.entrypoint,
        volumes: run.volume,
        read_only: run.read_only,
        storage_size: run.storage_opt.unwrap_or(launcher::DEFAULT_STORAGE_SIZE),
        tmpfs: run.tmpfs,
        tty: run.tty,
        interactive: run.interactive,
        network: match run.network.as_str() {
            "host" => Network::Host,
            "bridge" => Network::Bridge,
            "veth" => Network::Veth,
            "slirp4netns" => Network::Slirp4netns,
            _ => Network::None,
        },
        name: run.name,
        keep: run.keep,
        upper_dir: run
            .upper_dir
            .map(|dir| std::path::absolute(&dir).unwrap_or(dir)),
        init_path: run.init_path,
        no_init: run.no_init,
        userns: if run.userns == "auto" {
            Userns::Auto
        } else {
            Userns::Host
        },
        stop_timeout: run.stop_timeout,
        publish: run.publish,
        limits,
        cgroup_parent,
        net_config: net_config(
            run.bridge_name,
            run.subnet,
            run.veth_subnet,
            run.network_state,
        ),
        cap_add: run.cap_add,
        cap_drop: run.cap_drop,
        privileged: run.privileged,
        security_opt: run.security_opt,
        ulimits: run.ulimit,
        devices: run.device,
        device_cgroup_rules: run.device_cgroup_rule,
        add_hosts: run.add_host,
        dns: run.dns,
        dns_search: run.dns_search,
        dns_options: run.dns_option,
        labels: run.label,
        mounts: run.mount,
        stop_signal: run.stop_signal,
        sysctls: run.sysctl,
        shm_size: run.shm_size,
        group_add: run.group_add,
        pull: launcher::pull::PullOptions {
            policy: match run.pull.as_str() {
                "always" => launcher::pull::Policy::Always,
                "never" => launcher::pull::Policy::Never,
                _ => launcher::pull::Policy::Missing,
            },
            ca_cert: run.ca_cert,
            auth_file: run.authfile,
            insecure: !run.tls_verify,
        },
        detach: None,
    };
    let health = launcher::health::Flags {
        cmd: run.health_cmd,
        interval: run.health_interval,
        timeout: run.health_timeout,
        start_period: run.health_start_period,
        retries: run.health_retries,
        none: run.no_healthcheck,
    };
    if health.any() && !run.detach {
        // `ps` and `inspect` show only detached containers: a foreground
        // check would have nowhere to report.
        stderr_line!(
            "launcher: --health-* needs -d (health is shown by `ps` and `inspect`, which list detached containers)"
        );
        std::process::exit(launcher::EXIT_LAUNCHER_FAILED);
    }
    if let Some(interval) = health
        .interval
        .filter(|&i| i < launcher::health::MIN_INTERVAL)
    {
        stderr_line!(
            "launcher: WARN --health-interval {interval:?} is below {:?}: checks run every {:?}",
            launcher::health::MIN_INTERVAL,
            launcher::health::MIN_INTERVAL
        );
    }
    if run.detach {
        let detach = launcher::monitor::Detach {
            restart: run.restart,
            auto_remove: run.rm,
            health,
        };
        match launcher::monitor::start(&opts, detach) {
            Ok(id) => {
                print_out(&format!("{id}\n"));
                std::process::exit(0)
            }
            Err(err) => {
                let code = err.exit_code();
                stderr_line!("launcher: {:#}", anyhow::Error::from(err));
                std::process::exit(code)
            }
        }
    }
    if run.restart != launcher::state::Restart::No {
        stderr_line!(
            "launcher: --restart needs -d (a foreground container is removed when it ends)"
        );
        std::process::exit(launcher::EXIT_LAUNCHER_FAILED);
    }
    // Only a run that can detach (-t, a terminal on stdin, a sequence)
    // pays for the fork.
    if opts.tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        let keys = run.detach_keys.map_or_else(
            || launcher::detach::parse_keys(launcher::detach::DEFAULT_KEYS).unwrap_or_default(),
            |keys| keys.0,
        );
        if !keys.is_empty() {
            opts.detach = Some(detach_client(keys));
        }
    }
    let warn = &mut |warning: &str| stderr_line!("launcher: WARN {warning}");
    let code = match launcher::run(&opts, &Linux, warn) {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            stderr_line!("launcher: {:#}", anyhow::Error::from(err));
            code
        }
    };
    std::process::exit(code);
}

/// Forks the launcher off the process the shell waits for, which stays a
/// client ([`launcher::detach`]): this returns in the launcher; the client
/// exits with its status, or with 0 when the user detached.
fn detach_client(keys: Vec<u8>) -> std::sync::Arc<launcher::detach::Link> {
    use launcher::detach::{Ending, Side};
    let client = match launcher::detach::fork_client(keys) {
        Ok(Side::Launcher(link)) => return link,
        Ok(Side::Client(client)) => client,
        Err(err) => {
            stderr_line!("launcher: {:#}", anyhow::Error::from(err));
            std::process::exit(launcher::EXIT_LAUNCHER_FAILED)
        }
    };
    match client.wait() {
        Ok(Ending::Exited(code)) => std::process::exit(code),
        Ok(Ending::Detached(id)) => {
            // docker says only "read escape sequence"; the id and what to
            // do with it are more use.
            let short = &id[..12.min(id.len())];
            stderr_line!(
                "\nlauncher: read escape sequence: container {id} runs on, detached \
                 (`launcher logs {short}`, `launcher stop {short}`)"
            );
            std::process::exit(0)
        }
        Err(err) => {
            stderr_line!("launcher: {:#}", anyhow::Error::from(err));
            std::process::exit(launcher::EXIT_LAUNCHER_FAILED)
        }
    }
}

/// `--detach-keys`' sequence (empty: off).
#[derive(Clone)]
struct DetachKeys(Vec<u8>);

fn parse_detach_keys(text: &str) -> Result<DetachKeys, String> {
    launcher::detach::parse_keys(text).map(DetachKeys)
}

/// `launcher image …`: prints the table or what was removed, exits 0, or 1
/// with the error (as `export`).
fn image(command: Image) -> ! {
    use launcher::{cache::Cache, store};
    let done = Cache::open(launcher::cache::default_root()).and_then(|cache| match command {
        Image::Ls => store::list(&cache).map(|rows| store::table(&cache, &rows)),
        Image::Rm { images } => store::remove(&cache, &images).map(|r| r.report(&cache)),
        Image::Prune { all } => store::prune(&cache, all).map(|r| r.report(&cache)),
    });
    match done {
        Ok(text) => {
            print_out(&text);
            std::process::exit(0)
        }
        Err(err) => {
            stderr_line!("launcher: {:#}", anyhow::Error::from(err));
            std::process::exit(1)
        }
    }
}

/// `launcher bundle`: exits 0 with the path of config.json, or 125.
fn bundle(b: Box<Bundle>) -> ! {
    let (limits, cgroup_parent) = b.limits.split();
    let opts = Options {
        image: b.image,
        command: b.command,
        env: b.env,
        user: b.user,
        hostname: b.hostname,
        entrypoint: b.entrypoint,
        no_init: b.no_init,
        init_path: b.init_path,
        volumes: b.volume,
        limits,
        cgroup_parent,
        ..Default::default()
    };
    match launcher::bundle::write(&opts, &b.dir) {
        Ok(config) => {
            print_out(&format!("{}\n", config.display()));
            std::process::exit(0)
        }
        Err(err) => {
            stderr_line!("launcher: {:#}", anyhow::Error::from(err));
            std::process::exit(launcher::EXIT_LAUNCHER_FAILED)
        }
    }
}

/// `err` without a "similar argument exists" that names a hidden flag: the
/// test-only flags (`--subnet` …) are no answer to a mistyped `--mount`.
fn without_hidden_suggestion(err: clap::Error) -> clap::Error {
    use clap::CommandFactory;
    use clap::error::{ContextKind, ContextValue};
    let hidden = |flag: &str| {
        let cli = Cli::command();
        let mut commands = vec![&cli];
        let mut found = false;
        while let Some(command) = commands.pop() {
            found |= command
                .get_arguments()
                .any(|a| a.is_hide_set() && a.get_long().is_some_and(|l| flag == format!("--{l}")));
            commands.extend(command.get_subcommands());
        }
        found
    };
    let suggests_hidden = match err.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(flag)) => hidden(flag),
        Some(ContextValue::Strings(flags)) => flags.iter().any(|f| hidden(f)),
        _ => false,
    };
    if !suggests_hidden {
        return err;
    }
    let mut plain = clap::Error::new(err.kind()).with_cmd(&Cli::command());
    for (kind, value) in err.context() {
        if kind != ContextKind::SuggestedArg {
            plain.insert(kind, value.clone());
        }
    }
    plain
}

/// `-e NAME[=VALUE]`: docker refuses an empty name; a name with blanks
/// could never be read back by a shell either.
fn parse_env(text: &str) -> Result<String, String> {
    launcher::image::check_env_name(text.split_once('=').map_or(text, |(name, _)| name))
        .map(|()| text.to_string())
        .map_err(|why| format!("invalid environment variable `{text}`: {why}"))
}

/// `-w DIR`: absolute, as docker and the OCI runtime spec want (a relative
/// one became `/DIR`).
fn parse_workdir(text: &str) -> Result<String, String> {
    match text.starts_with('/') {
        true => Ok(text.to_string()),
        false => Err(format!(
            "the working directory `{text}` is invalid: it must be an absolute path"
        )),
    }
}

/// docker's smallest `--memory`: below it the container's first process
/// cannot even start, and the run ended in an OOM report.
const MIN_MEMORY: u64 = 6 << 20;

fn parse_memory(text: &str) -> Result<u64, String> {
    match launcher::resources::parse_bytes(text)? {
        n if n < MIN_MEMORY => Err(format!(
            "`{text}` is below the minimum memory limit of 6m (6291456 bytes)"
        )),
        n => Ok(n),
    }
}

/// `--cpus`: from 0.01 to the CPUs this process may run on (docker's range;
/// a quota above them limits nothing).
fn parse_cpus(text: &str) -> Result<f64, String> {
    let cpus = usable_cpus();
    let n: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of CPUs"))?;
    if !(0.01..=cpus as f64).contains(&n) {
        return Err(format!(
            "`{text}`: the range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
        ));
    }
    Ok(n)
}

/// The CPUs this process may run on (Go's runtime.NumCPU, which docker
/// uses), at least 1.
fn usable_cpus() -> usize {
    use nix::sched::{CpuSet, sched_getaffinity};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(0)).unwrap_or_else(|_| CpuSet::new());
    let n = (0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .count();
    n.max(1)
}

/// `--storage-opt size=SIZE`, the one storage option there is.
fn parse_storage_opt(text: &str) -> Result<u64, String> {
    let size = text
        .strip_prefix("size=")
        .ok_or_else(|| format!("`{text}`: the only storage option is size=SIZE"))?;
    match launcher::resources::parse_bytes(size)? {
        0 => Err("size=0 would leave the writable layer unbounded".into()),
        n => Ok(n),
    }
}

/// Writes `text` to stdout. A reader that went away (`launcher image ls |
/// head -1`) is a quiet end, as for any Unix tool, not the panic of
/// `print!` on EPIPE.
fn print_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_all(text.as_bytes()).and_then(|()| out.flush())
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        stderr_line!("launcher: writing to stdout: {err}");
        std::process::exit(1);
    }
}

/// `launcher ps|stop|kill|wait|rm|logs|inspect`: as docker's CLI, each
/// NAME is acted on in turn (`stop`, `kill`, `rm` print it, `wait` its exit
/// code), an error is printed and the rest go on; exits 1 if any failed.
fn containers(command: Command) -> ! {
    use launcher::control;
    let cache = match control::open_cache() {
        Ok(cache) => cache,
        Err(err) => fail(err),
    };
    let each = |names: &[String], act: &dyn Fn(&str) -> launcher::Result<String>| -> ! {
        let mut failed = false;
        for name in names {
            match act(name) {
                Ok(text) => print_out(&text),
                Err(err) => {
                    stderr_line!("launcher: {:#}", anyhow::Error::from(err));
                    failed = true;
                }
            }
        }
        std::process::exit(i32::from(failed))
    };
    match command {
        Command::Ps { all, quiet } => match control::ps(&cache, all, quiet) {
            Ok(table) => {
                print_out(&table);
                std::process::exit(0)
            }
            Err(err) => fail(err),
        },
        Command::Stop { time, names } => each(&names, &|n| {
            control::stop(&cache, n, std::time::Duration::from_secs(time))
                .map(|()| format!("{n}\n"))
        }),
        Command::Kill { signal, names } => each(&names, &|n| {
            control::kill(&cache, n, signal).map(|()| format!("{n}\n"))
        }),
        Command::Wait { names } => each(&names, &|n| {
            control::wait(&cache, n).map(|code| format!("{code}\n"))
        }),
        Command::Rm { force, names } => each(&names, &|n| {
            control::rm(&cache, n, force).map(|()| format!("{n}\n"))
        }),
        Command::Inspect { names } => {
            let mut found = Vec::new();
            let mut failed = false;
            for name in &names {
                match control::inspect(&cache, name) {
                    Ok(value) => found.push(value),
                    Err(err) => {
                        stderr_line!("launcher: {:#}", anyhow::Error::from(err));
                        failed = true;
                    }
                }
            }
            let text = serde_json::to_string_pretty(&found).unwrap_or_default();
            print_out(&format!("{text}\n"));
            std::process::exit(i32::from(failed))
        }
        Command::Logs {
            follow,
            tail,
            timestamps,
            name,
        } => {
            let tail = match tail.as_deref() {
                None | Some("all") => None,
                Some(n) => match n.parse::<usize>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        stderr_line!("launcher: invalid --tail `{n}`: a number of lines, or `all`");
                        std::process::exit(1)
                    }
                },
            };
            let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
            let mut output = launcher::logs::Output::new(&mut out, &mut err, timestamps);
            match control::logs(&cache, &name, follow, tail, &mut output) {
                Ok(()) => std::process::exit(0),
                Err(launcher::Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    std::process::exit(0)
                }
                Err(err) => fail(err),
            }
        }
        _ => unreachable!("dispatched in main"),
    }
}

/// `launcher exec`: exits with the command's status, or 125 (126, 127 when
/// the command cannot be run) with the error.
fn exec(e: Exec) -> ! {
    let request = launcher::enter::Request {
        command: e.command,
        env: e.env,
        user: e.user,
        workdir: e.workdir,
        tty: e.tty,
        interactive: e.interactive,
    };
    let code = match launcher::control::open_cache()
        .and_then(|cache| launcher::enter::exec(&cache, &e.name, &request, &Linux))
    {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            stderr_line!("launcher: {:#}", anyhow::Error::from(err));
            code
        }
    };
    std::process::exit(code)
}

fn fail(err: launcher::Error) -> ! {
    stderr_line!("launcher: {:#}", anyhow::Error::from(err));
    std::process::exit(1)
}

/// `kill -s`: a signal name (`KILL`, `SIGTERM`) or number.
fn parse_signal(text: &str) -> Result<i32, String> {
    launcher::image::signal_number(text).ok_or_else(|| format!("`{text}` is not a signal"))
}
