//! Step 3, around [`spawn`](crate::spawn): the container's resources, its
//! cgroup ([`cgroups`]) and its network ([`network`]).
//!
//! 1. [`prepare`], before the clone: reclaims what SIGKILLed launchers
//!    left, makes the cgroup with the limits and the device allowlist,
//!    leases an address (and makes the bridge on first use);
//!    [`Resources::write_etc`] puts the matching /etc/hosts and
//!    /etc/resolv.conf in the plan, [`Resources::cgroup_fs`] what the
//!    container's /sys/fs/cgroup shows;
//! 2. [`Resources::cgroup_entry`], the child's own way into the cgroup
//!    (born in it, or moving itself before it unshares its cgroup
//!    namespace); [`Resources::join`], while the cloned child waits on the
//!    sync pipe: gives its network namespace the veth, address and route;
//! 3. [`Resources::release`], after it exited: reads the OOM kill count,
//!    removes the cgroup, tears the network down.
//!
//! Every part undoes itself when dropped, so an error or a signal that ends
//! `run` early cleans up too; what a SIGKILLed launcher leaves is reclaimed
//! by the next run's [`prepare`].

use crate::cgroups::{self, Cgroup, CgroupRoot, devices};
use crate::network::{self, Mode, Netns, PortMapping};
use crate::rootfs::CgroupFs;
use crate::{Error, Network, Options, Result, Userns};
use nix::unistd::Pid;

/// The first part of every container cgroup's name, before the owner tag
/// ([`cgroups::owner_tag`]) by which stale ones are found.
pub const CGROUP_PREFIX: &str = "cradle-";

/// A container's cgroup and network, from before the clone to after the exit.
#[derive(Debug)]
pub struct Resources {
    /// None when rootless and cgroups cannot be made (v1, no delegation).
    cgroup: Option<Cgroup>,
    network: network::Network,
    /// `--memory`, for the out-of-memory message.
    memory: Option<u64>,
}

/// Before the clone: the cgroup with `opts.limits` and the network of
/// `opts.network`, for the container `id`. What it goes on without (no
/// cgroup for limits, rootless) goes to `warn`.
pub fn prepare(opts: &Options, id: &str, warn: &mut dyn FnMut(&str)) -> Result<Resources> {
    let mode = mode(opts.network);
    let rootless = crate::cache::rootless();
    if rootless && matches!(mode, Mode::Veth | Mode::Bridge) {
        return Err(Error::NetworkNeedsRoot {
            mode: mode.as_str(),
        });
    }
    let ports = opts
        .publish
        .iter()
        .map(|spec| spec.parse())
        .collect::<Result<Vec<PortMapping>, _>>()?;
    let cgroup = create_cgroup(opts, id, rootless, warn)?;
    // Best effort, and only where a launcher ever kept state: a stale lease
    // that cannot be undone now is met again by the next run.
    if !rootless && opts.net_config.state_dir.exists() {
        let _ = network::reclaim_stale(&opts.net_config);
    }
    let network = network::Network::prepare(mode, &opts.net_config, &ports)?;
    Ok(Resources {
        cgroup,
        network,
        memory: opts.limits.memory,
    })
}

/// The container's cgroup, made after the stale ones of dead launchers are
/// gone. Made without limits too, so that every process of the container is
/// accounted and killed at exit. Rootless on cgroup v1 (or a v2 tree not
/// delegated to the user) nothing can be made: then the container runs
/// without one, with a warning when limits were asked for.
///
/// As root without a user namespace the container holds CAP_MKNOD and the
/// device nodes it makes or its image ships are the host's devices: its
/// cgroup denies every device but docker's allowlist, and a host where
/// that cannot be done is an error. In a user namespace (rootless,
/// `--userns=auto`) the kernel refuses mknod and opening device nodes on
/// the namespace's mounts already; no devices cgroup is joined there.
fn create_cgroup(
    opts: &Options,
    id: &str,
    rootless: bool,
    warn: &mut dyn FnMut(&str),
) -> Result<Option<Cgroup>> {
    let limited = opts.limits != cgroups::Limits::default();
    let userns = rootless || opts.userns == Userns::Auto;
    // docker's allowlist, the --device nodes; everything with --privileged.
    let rules: Vec<devices::Rule> = crate::rootfs::devices::cgroup_rules(opts)?;
    let devices = (!userns).then_some(&rules[..]);
    let parent = opts.cgroup_parent.as_deref();
    let made = CgroupRoot::detect().and_then(|root| {
        // Kills what a SIGKILLed launcher's container left running, too.
        let _ = cgroups::reclaim_stale(&root, parent, CGROUP_PREFIX);
        let name = format!("{CGROUP_PREFIX}{}-{id}", cgroups::owner_tag());
        Cgroup::create(&root, parent, &name, &opts.limits, devices)
    });
    match made {
        Ok(cg) => Ok(Some(cg)),
        Err(e @ cgroups::Error::InvalidLimit { .. }) => Err(e.into()),
        Err(e) if rootless => {
            if limited {
                warn(&warning(
                    "not limiting resources: rootless and no cgroup",
                    &e,
                ));
            }
            Ok(None)
        }
        // A machine without cgroupfs mounted: nothing to account with, and
        // nothing to restrict with, which only a user namespace makes safe.
        Err(cgroups::Error::NoHierarchy) if !limited && devices.is_none() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Resources {
    /// Replaces /etc/hosts (the container's name on its address) and
    /// /etc/resolv.conf (no loopback name servers, which the container's
    /// own namespace cannot reach) in `etc`; `host` mode keeps the host's.
    pub fn write_etc(&self, hostname: &str, etc: &mut [(&'static str, String)]) {
        if self.network.mode() == Mode::Host {
            return;
        }
        for (name, text) in etc.iter_mut() {
            match *name {
                "hosts" => *text = self.network.hosts(hostname),
                "resolv.conf" => *text = self.network.resolv_conf(),
                _ => {}
            }
        }
    }

    /// What the container's `/sys/fs/cgroup` shows: the hierarchies where
    /// it has a cgroup of its own, which its cgroup namespace makes their
    /// root ([`crate::cgroups::mountinfo`]).
    pub fn cgroup_fs(&self) -> CgroupFs {
        cgroups::mountinfo::cgroup_fs(self.cgroup.as_ref())
    }

    /// Before the clone: the child's own way into the cgroup
    /// ([`cgroups::Entry`]), None without a cgroup.
    pub fn cgroup_entry(&self) -> Result<Option<cgroups::Entry>> {
        Ok(self.cgroup.as_ref().map(Cgroup::entry).transpose()?)
    }

    /// While the child waits: into the cgroup unless it `entered` by its
    /// own way, then the veth pair, address and route into its network
    /// namespace. `none` needs nothing here (the child brings up `lo`
    /// itself, also rootless, where the launcher could not enter its
    /// namespace), `host` has nothing to do.
    pub fn join(&mut self, pid: Pid, entered: bool) -> Result<()> {
        if let Some(cg) = &self.cgroup
            && !entered
        {
            cg.add_process(pid.as_raw() as u32)?;
        }
        if matches!(
            self.network.mode(),
            Mode::Veth | Mode::Bridge | Mode::Slirp4netns
        ) {
            self.network.attach(&Netns::Pid(pid.as_raw() as u32))?;
        }
        Ok(())
    }

    /// After the container exited with `status`: an OOM kill that took the
    /// workload (status 137, SIGKILL) makes it [`Error::OutOfMemory`] (exit
    /// 137, as docker); one that took another process of the container, the
    /// workload surviving, is a warning and the workload's status stands (as
    /// docker keeps it, reporting OOMKilled apart). The cgroup and network
    /// are undone either way. A failure to undo goes to `warn`, it is not
    /// the container's status: the next run reclaims what is left.
    pub fn release(self, status: i32, warn: &mut dyn FnMut(&str)) -> Result<i32> {
        let Resources {
            cgroup,
            network,
            memory,
        } = self;
        // Before the removal, which takes the counter with it.
        let oom = cgroup
            .as_ref()
            .is_some_and(|cg| cg.oom_killed().unwrap_or(false));
        if let Some(cg) = cgroup
            && let Err(e) = cg.remove()
        {
            warn(&warning("cleaning up", &e));
        }
        if let Err(e) = network.teardown() {
            warn(&warning("cleaning up", &e));
        }
        oom_outcome(oom, status, memory, warn)
    }
}

/// [`Resources::release`]'s verdict on an OOM kill.
fn oom_outcome(
    oom: bool,
    status: i32,
    memory: Option<u64>,
    warn: &mut dyn FnMut(&str),
) -> Result<i32> {
    const KILLED: i32 = 128 + libc::SIGKILL;
    match (oom, status) {
        (true, KILLED) => Err(Error::OutOfMemory { memory }),
        (true, _) => {
            warn(&format!(
                "a process of the container was killed: out of memory{}; the workload \
                 went on and exited {status}",
                limit_note(memory)
            ));
            Ok(status)
        }
        (false, _) => Ok(status),
    }
}

/// The network module's name for `--network`.
fn mode(network: Network) -> Mode {
    match network {
        Network::None => Mode::None,
        Network::Host => Mode::Host,
        Network::Veth => Mode::Veth,
        Network::Bridge => Mode::Bridge,
        Network::Slirp4netns => Mode::Slirp4netns,
    }
}

/// ` (--memory 32m)` for the out-of-memory message, or nothing without a limit.
pub fn limit_note(memory: Option<u64>) -> String {
    memory.map_or(String::new(), |m| {
        format!(" (--memory {})", format_bytes(m))
    })
}

/// Bytes in the largest of docker's units that divides them: `32m`.
pub fn format_bytes(bytes: u64) -> String {
    for (shift, unit) in [(30, "g"), (20, "m"), (10, "k")] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}b")
}

/// A size in docker's units (`--memory 32m`): a number, optionally with a
/// fraction, then b, k, m, g, t or p (binary multiples, any case), an
/// optional `i` and `b` (`32MiB`, `32mb`), as docker's RAMInBytes reads it.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a size (a number and a unit b, k, m or g: `32m`)");
    let lower = text.trim().to_ascii_lowercase();
    let end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(end);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad()),
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(1 << shift).ok_or_else(bad);
    }
    let n: f64 = number.parse().map_err(|_| bad())?;
    let bytes = n * (1u64 << shift) as f64;
    match bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64 {
        true => Ok(bytes as u64),
        false => Err(bad()),
    }
}

/// `--memory-swap`: a size, or -1 for unlimited swap.
pub fn parse_memory_swap(text: &str) -> Result<i64, String> {
    if text.trim() == "-1" {
        return Ok(-1);
    }
    let bytes = parse_bytes(text)?;
    i64::try_from(bytes).map_err(|_| format!("`{text}` is too large"))
}

/// A warning's text: `what`, then the error's chain, as `main` prints
/// errors. The run goes on: nothing is lost but what the warning says.
fn warning(what: &str, err: &dyn std::error::Error) -> String {
    let mut line = format!("{what}: {err}");
    let mut source = err.source();
    while let Some(cause) = source {
        line += &format!(": {cause}");
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    #[test]
    fn sizes_read_like_docker() {
        for (text, want) in [
            ("32m", 32 * M),
            ("32M", 32 * M),
            ("32mb", 32 * M),
            ("32MiB", 32 * M),
            ("1g", 1 << 30),
            ("512k", 512 << 10),
            ("100", 100),
            ("100b", 100),
            ("1.5g", 3 << 29),
            ("64 m", 64 * M),
        ] {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
        for bad in ["", "m", "32x", "-1", "1..5m", "99999999999p"] {
            let err = parse_bytes(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        assert_eq!(parse_memory_swap("-1"), Ok(-1));
        assert_eq!(parse_memory_swap("64m"), Ok(64 * M as i64));
    }

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(format_bytes(32 * M), "32m");
        assert_eq!(format_bytes(1 << 30), "1g");
        assert_eq!(format_bytes(1536 << 10), "1536k");
        assert_eq!(format_bytes(1000), "1000b");
        assert_eq!(limit_note(Some(32 * M)), " (--memory 32m)");
        assert_eq!(limit_note(None), "");
        let err = Error::OutOfMemory {
            memory: Some(32 * M),
        };
        assert_eq!(
            err.to_string(),
            "container killed: out of memory (--memory 32m)"
        );
        assert_eq!(err.exit_code(), 137);
    }

    #[test]
    fn oom_kill_of_another_process_keeps_the_workloads_status() {
        let mut warnings = Vec::new();
        let mut warn = |w: &str| warnings.push(w.to_string());
        assert_eq!(oom_outcome(true, 0, Some(32 * M), &mut warn).unwrap(), 0);
        assert_eq!(oom_outcome(false, 137, None, &mut warn).unwrap(), 137);
        let err = oom_outcome(true, 137, None, &mut warn).unwrap_err();
        assert_eq!(err.exit_code(), 137);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("out of memory (--memory 32m)"),
            "{warnings:?}"
        );
    }

    #[test]
    fn etc_files_follow_the_network_mode() {
        let etc = || {
            vec![
                ("hostname", "box\n".to_string()),
                ("hosts", "host's hosts\n".to_string()),
                ("resolv.conf", "nameserver 127.0.0.53\n".to_string()),
            ]
        };
        let resources = |mode| Resources {
            cgroup: None,
            network: network::Network::prepare(mode, &Default::default(), &[]).unwrap(),
            memory: None,
        };
        let mut host = etc();
        resources(Mode::Host).write_etc("box", &mut host);
        assert_eq!(host, etc());
        let mut none = etc();
        resources(Mode::None).write_etc("box", &mut none);
        assert_eq!(none[0], etc()[0]);
        assert!(none[1].1.ends_with("127.0.1.1\tbox\n"), "{:?}", none[1]);
        assert!(!none[2].1.contains("127.0.0.53"), "{:?}", none[2]);
    }

    #[test]
    fn modes_map_one_to_one() {
        for (n, m) in [
            (Network::None, Mode::None),
            (Network::Host, Mode::Host),
            (Network::Veth, Mode::Veth),
            (Network::Bridge, Mode::Bridge),
        ] {
            assert_eq!(mode(n), m);
        }
    }
}
