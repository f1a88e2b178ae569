//! Networking of one container: `none`, `host`, `veth` (the seed's
//! point-to-point pair), `bridge` (a host bridge with NAT and published
//! ports), set up over netlink around the clone and undone at exit, or
//! `slirp4netns` (user-mode networking, rootless too: [`slirp`]).
//!
//! In `launcher run`:
//!
//! ```text
//! network::reclaim_stale(&config)?;                    // what SIGKILLed launchers left
//! let ports = specs.iter().map(|s| s.parse()).collect::<Result<Vec<PortMapping>, _>>()?;
//! let mut net = Network::prepare(mode, &config, &ports)?;   // before clone: lease, bridge
//! // write net.resolv_conf() and net.hosts(hostname) into the rootfs
//! // clone(CLONE_NEWNET | …): the child waits on the sync pipe
//! net.attach(&Netns::Pid(child))?;                     // veth, eth0, route, DNAT
//! // release the child; wait for it
//! net.teardown()?;                                     // also on Drop, best effort
//! ```

pub mod dns;
mod firewall;
mod lease;
mod netlink;
mod netns;
mod ports;
pub mod slirp;
mod subnet;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use dns::{hosts, read_host_resolv_conf, resolv_conf};
pub use firewall::TABLE as FIREWALL_TABLE;
pub use lease::Record as LeaseRecord;
pub use netlink::Netlink;
pub use netns::{Netns, bring_up_loopback, open_netlink_in};
pub use ports::{PortMapping, Protocol, Reservation, reserve_ports};
pub use subnet::Subnet;

use lease::{Lease, StateLock};

/// The container side of every veth pair.
pub const CONTAINER_IF: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("publish `{spec}`: {why}")]
    Publish { spec: String, why: &'static str },
    /// The host port is taken: by a host service, or another container's
    /// reservation ([`reserve_ports`]).
    #[error("publish `{mapping}`: bind for {address} failed: port is already allocated")]
    PortAllocated {
        mapping: PortMapping,
        address: std::net::SocketAddrV4,
    },
    #[error("publish `{mapping}`: binding {address}")]
    PortBind {
        mapping: PortMapping,
        address: std::net::SocketAddrV4,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("network mode `{0}` is not one of none, host, veth, bridge, slirp4netns")]
    Mode(String),
    #[error(
        "publish ports with `--network {0}`: only veth, bridge and slirp4netns have an address \
         to forward to"
    )]
    PortsNeedAddress(&'static str),
    #[error("{op} `{operand}`")]
    Netlink {
        op: &'static str,
        operand: String,
        #[source]
        source: io::Error,
    },
    #[error("update network state `{}`", path.display())]
    State {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("allocate an address in pool `{pool}`: every address is leased")]
    PoolExhausted { pool: String },
    #[error("apply nftables rules `{script}`: {detail}")]
    Firewall {
        script: String,
        detail: String,
        #[source]
        source: Option<io::Error>,
    },
    #[error("write `{value}` to `{}`", path.display())]
    Sysctl {
        path: PathBuf,
        value: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Its own namespace with only `lo`.
    None,
    /// The host's namespace: nothing to do.
    Host,
    /// A veth pair with a /30 of its own: host end .1, container end .2.
    Veth,
    /// A veth pair whose host end is on the bridge, NAT out, ports in.
    Bridge,
    /// User-mode networking by slirp4netns: `tap0`, ports through its API.
    Slirp4netns,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Host => "host",
            Self::Veth => "veth",
            Self::Bridge => "bridge",
            Self::Slirp4netns => "slirp4netns",
        }
    }
}

impl FromStr for Mode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Self::None,
            "host" => Self::Host,
            "veth" => Self::Veth,
            "bridge" => Self::Bridge,
            "slirp4netns" => Self::Slirp4netns,
            other => return Err(Error::Mode(other.into())),
        })
    }
}

/// Where and how containers are networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Leases and the lock. Under /run: leases die with a reboot, as the
    /// links and rules they describe do.
    pub state_dir: PathBuf,
    /// The bridge, made on first use.
    pub bridge: String,
    /// The bridge's subnet; the bridge takes the first host address.
    /// Not podman's 10.88.0.0/16, so that both can run on one machine.
    pub subnet: Subnet,
    /// The range that `veth` mode cuts into /30s.
    pub veth_range: Subnet,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/run/cradle/network"),
            bridge: "cradle0".into(),
            subnet: Subnet::new(Ipv4Addr::new(10, 89, 0, 0), 16).expect("valid"),
            veth_range: Subnet::new(Ipv4Addr::new(169, 254, 1, 0), 24).expect("valid"),
        }
    }
}

/// The lease pool of `veth` mode (bridges use their own name).
const VETH_POOL: &str = "veth";

/// A container's network, from before the clone to after the exit.
#[derive(Debug)]
pub struct Network {
    mode: Mode,
    config: Config,
    ports: Vec<PortMapping>,
    lease: Option<Lease>,
    /// The gateway and prefix length of the container's address.
    gateway: Option<(Ipv4Addr, u8)>,
    rules: bool,
    torn_down: bool,
    /// The process that made it: a forked child that drops a copy must not
    /// tear down its parent's network.
    owner: u32,
    /// `slirp4netns` mode's process, once attached.
    slirp: Option<slirp::Slirp>,
}

impl Network {
    /// Before the clone: reclaims what dead launchers left, makes the
    /// bridge and its NAT on first use, and leases the container's address,
    /// so that its hosts file can be written before it starts.
    pub fn prepare(mode: Mode, config: &Config, ports: &[PortMapping]) -> Result<Self> {
        let mut net = Self {
            mode,
            config: config.clone(),
            ports: ports.to_vec(),
            lease: None,
            gateway: None,
            rules: false,
            torn_down: false,
            owner: std::process::id(),
            slirp: None,
        };
        match mode {
            Mode::None | Mode::Host if !ports.is_empty() => {
                return Err(Error::PortsNeedAddress(mode.as_str()));
            }
            Mode::None | Mode::Host | Mode::Slirp4netns => {}
            Mode::Bridge => {
                let _lock = StateLock::take(&config.state_dir)?;
                ensure_bridge(config)?;
                let subnet = config.subnet;
                // .0 is the network, .1 the bridge, the last the broadcast.
                let candidates =
                    (2..subnet.size().saturating_sub(1)).filter_map(move |n| subnet.nth(n));
                net.lease = Some(lease::acquire(
                    &config.state_dir,
                    &config.bridge,
                    candidates,
                    record_for,
                    undo,
                )?);
                net.gateway = Some((subnet.gateway(), subnet.prefix));
            }
            Mode::Veth => {
                let _lock = StateLock::take(&config.state_dir)?;
                if !ports.is_empty() {
                    firewall::ensure_base()?;
                }
                let range = config.veth_range;
                // Every /30 of the range: .0 network, .1 host, .2 container, .3 broadcast.
                let candidates = (0..range.size() / 4).filter_map(move |n| range.nth(4 * n + 2));
                let lease =
                    lease::acquire(&config.state_dir, VETH_POOL, candidates, record_for, undo)?;
                net.gateway = Some((Ipv4Addr::from(u32::from(lease.record.address) - 1), 30));
                net.lease = Some(lease);
            }
        }
        Ok(net)
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The container's address, in `veth`, `bridge` and `slirp4netns` modes.
    pub fn address(&self) -> Option<Ipv4Addr> {
        match self.mode {
            Mode::Slirp4netns => Some(slirp::ADDRESS),
            _ => self.lease.as_ref().map(|l| l.record.address),
        }
    }

    /// The host's side: the bridge's address or the veth's host end.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gateway.map(|(gw, _)| gw)
    }

    /// The host end of the veth pair, in `veth` and `bridge` modes.
    pub fn host_interface(&self) -> Option<&str> {
        self.lease.as_ref().map(|l| l.record.host_if.as_str())
    }

    /// The container's `/etc/resolv.conf`; `host` mode shares the host's.
    pub fn resolv_conf(&self) -> String {
        let host = read_host_resolv_conf();
        match self.mode {
            Mode::Host => host,
            // Its own name server, which asks the host's (loopback ones too).
            Mode::Slirp4netns => {
                let kept: String = resolv_conf(&host)
                    .lines()
                    .filter(|l| !l.starts_with("nameserver"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                format!("nameserver {}\n{kept}", slirp::DNS)
            }
            _ => resolv_conf(&host),
        }
    }

    /// The container's `/etc/hosts`.
    pub fn hosts(&self, hostname: &str) -> String {
        hosts(hostname, self.address())
    }

    /// After the clone, while the child waits: brings up `lo` in the
    /// container's namespace and, in `veth` and `bridge` modes, makes the
    /// pair with `eth0` born inside, addresses both ends, routes by default
    /// through the host, and forwards the published ports.
    pub fn attach(&mut self, netns: &Netns) -> Result<()> {
        if self.mode == Mode::Host {
            return Ok(());
        }
        if self.mode == Mode::Slirp4netns {
            // slirp4netns enters the namespace itself; the child brings up
            // `lo` (the launcher may not enter a rootless one).
            let Netns::Pid(pid) = *netns else {
                return Err(Error::Mode("slirp4netns without a process".into()));
            };
            // SAFETY: geteuid cannot fail.
            let rootless = unsafe { libc::geteuid() } != 0;
            self.slirp = Some(slirp::Slirp::start(pid, rootless, &self.ports)?);
            return Ok(());
        }
        let ns_fd = netns
            .open()
            .map_err(nl_err("open network namespace", netns.path().display()))?;
        let mut inside =
            open_netlink_in(&ns_fd).map_err(nl_err("open netlink in", netns.path().display()))?;
        let lo = inside
            .link_index("lo")
            .map_err(nl_err("find link", "lo"))?
            .unwrap_or(1);
        inside.set_up(lo).map_err(nl_err("bring up", "lo"))?;
        let (Some(lease), Some((gateway, prefix))) = (&self.lease, self.gateway) else {
            return Ok(());
        };
        let record = lease.record.clone();
        let mut host = Netlink::open().map_err(nl_err("open netlink", "host"))?;
        if let Err(e) = host.add_veth(&record.host_if, CONTAINER_IF, &ns_fd) {
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(Error::Netlink {
                    op: "create veth pair",
                    operand: record.host_if,
                    source: e,
                });
            }
            // The name comes from our leased address, so a link by that name
            // is a leftover whose lease is gone (its state dir wiped, say).
            delete_link_if_present(&record.host_if)?;
            host.add_veth(&record.host_if, CONTAINER_IF, &ns_fd)
                .map_err(nl_err("create veth pair", &record.host_if))?;
        }
        let index = link_index(&mut host, &record.host_if)?;
        if self.mode == Mode::Bridge {
            let bridge = link_index(&mut host, &self.config.bridge)?;
            host.set_master(index, bridge)
                .map_err(nl_err("attach to the bridge", &record.host_if))?;
        } else {
            host.add_address(index, gateway, prefix)
                .map_err(nl_err("add address", gateway))?;
        }
        host.set_up(index)
            .map_err(nl_err("bring up", &record.host_if))?;
        let eth0 = link_index(&mut inside, CONTAINER_IF)?;
        inside
            .add_address(eth0, record.address, prefix)
            .map_err(nl_err("add address", record.address))?;
        inside
            .set_up(eth0)
            .map_err(nl_err("bring up", CONTAINER_IF))?;
        inside
            .add_default_route(gateway)
            .map_err(nl_err("add default route via", gateway))?;
        if publishes_on_loopback(&self.ports) {
            // The host's interface the packets are routed through: the
            // bridge, not its ports, which IP never sees. prepare made the
            // firewall drop martians first (firewall::ensure_base).
            let routed = match self.mode {
                Mode::Bridge => self.config.bridge.as_str(),
                _ => record.host_if.as_str(),
            };
            set_route_localnet(routed)?;
        }
        if !self.ports.is_empty() {
            let _lock = StateLock::take(&self.config.state_dir)?;
            self.rules = true;
            firewall::add_port_rules(&record.tag, &self.ports, record.address)?;
        }
        Ok(())
    }

    /// Deletes the port rules and the veth pair and releases the lease.
    /// Goes through every step even when one fails; returns the first error.
    pub fn teardown(mut self) -> Result<()> {
        self.undo_all()
    }

    fn undo_all(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Ok(());
        }
        if let Some(mut slirp) = self.slirp.take() {
            slirp.stop();
        }
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let mut first = Ok(());
        if self.rules {
            let lock = StateLock::take(&self.config.state_dir);
            first = lock.and_then(|_lock| firewall::delete_tagged(&lease.record.tag).map(drop));
        }
        let deleted = delete_link_if_present(&lease.record.host_if);
        let released = lease.release();
        first.and(deleted).and(released)
    }
}

#[cfg(test)]
impl Network {
    /// Leaves everything in place and lets go of the lease's lock, as a
    /// SIGKILLed launcher does.
    fn abandon(mut self) {
        self.torn_down = true;
        if let Some(lease) = self.lease.take() {
            lease.abandon();
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        let _ = self.undo_all();
    }
}

/// Undoes what every stale lease (of a launcher that is gone, SIGKILL
/// included) records: its port rules, its veth, the lease itself. Returns
/// the records undone. `prepare` does the same for the leases it meets.
pub fn reclaim_stale(config: &Config) -> Result<Vec<LeaseRecord>> {
    let _lock = StateLock::take(&config.state_dir)?;
    let mut out = Vec::new();
    for pool in lease::pools(&config.state_dir) {
        out.extend(lease::reclaim_stale(&config.state_dir, &pool, undo)?);
    }
    Ok(out)
}

/// Removes the bridge and its NAT rule, after reclaiming stale leases, when
/// no container uses it any more. Returns false (and changes nothing) while
/// one does. Containers make the bridge again on first use.
pub fn remove_bridge(config: &Config) -> Result<bool> {
    let _lock = StateLock::take(&config.state_dir)?;
    lease::reclaim_stale(&config.state_dir, &config.bridge, undo)?;
    let pool = config.state_dir.join("leases").join(&config.bridge);
    let in_use = std::fs::read_dir(&pool).map_or(0, |d| d.count());
    if in_use > 0 {
        return Ok(false);
    }
    firewall::delete_tagged(&firewall::nat_tag(&config.bridge))?;
    delete_link_if_present(&config.bridge)?;
    Ok(true)
}

/// The number of firewall rules of the containers (not the bridges' NAT)
/// in this network namespace: zero when every container is gone.
pub fn count_port_rules() -> usize {
    firewall::count_tagged("cradle:")
}

/// Makes the bridge unless it exists: address, up, forwarding, outbound NAT.
fn ensure_bridge(config: &Config) -> Result<()> {
    let mut nl = Netlink::open().map_err(nl_err("open netlink", "host"))?;
    let index = match nl
        .link_index(&config.bridge)
        .map_err(nl_err("find link", &config.bridge))?
    {
        Some(index) => index,
        None => {
            match nl.add_bridge(&config.bridge, random_mac()) {
                Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                    return Err(Error::Netlink {
                        op: "create bridge",
                        operand: config.bridge.clone(),
                        source: e,
                    });
                }
                _ => {}
            }
            link_index(&mut nl, &config.bridge)?
        }
    };
    let gateway = config.subnet.gateway();
    nl.add_address(index, gateway, config.subnet.prefix)
        .map_err(nl_err("add address", gateway))?;
    nl.set_up(index)
        .map_err(nl_err("bring up", &config.bridge))?;
    // Routing between the bridge and the world. route_localnet waits for a
    // port published on 127.0.0.1 (attach).
    sysctl(Path::new("/proc/sys/net/ipv4/ip_forward"), "1")?;
    firewall::ensure_base()?;
    firewall::ensure_masquerade(&config.bridge, config.subnet)
}

/// A random locally administered unicast MAC address (02:…).
fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom fills the buffer it is given, of the length given.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        // Without entropy, still a valid address, unique enough per host.
        mac[2..6].copy_from_slice(&std::process::id().to_be_bytes());
    }
    mac[0] = (mac[0] & 0xfc) | 0x02;
    mac
}

/// A lease's record: the veth is named after the address (unique while the
/// lease is held, and within the 15 bytes of IFNAMSIZ).
fn record_for(address: Ipv4Addr) -> LeaseRecord {
    LeaseRecord {
        address,
        host_if: format!("cr{:08x}", u32::from(address)),
        tag: format!("cradle:{address}"),
        pid: std::process::id(),
    }
}

/// Undoes a stale lease's rules and veth, best effort: a rule or link
/// already gone is what we want anyway.
fn undo(record: &LeaseRecord) {
    let _ = firewall::delete_tagged(&record.tag);
    let _ = delete_link_if_present(&record.host_if);
}

fn delete_link_if_present(name: &str) -> Result<()> {
    let mut nl = Netlink::open().map_err(nl_err("open netlink", "host"))?;
    // The pair dies with the container's namespace; often nothing is left.
    match nl.link_index(name).map_err(nl_err("find link", name))? {
        Some(index) => match nl.delete_link(index) {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => Err(Error::Netlink {
                op: "delete link",
                operand: name.into(),
                source: e,
            }),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

fn link_index(nl: &mut Netlink, name: &str) -> Result<u32> {
    nl.link_index(name)
        .map_err(nl_err("find link", name))?
        .ok_or_else(|| Error::Netlink {
            op: "find link",
            operand: name.into(),
            source: io::Error::from_raw_os_error(libc::ENODEV),
        })
}

/// Whether a mapping forwards from 127.0.0.1: one on a loopback address,
/// or on every local address (the output rule's `fib daddr type local`).
fn publishes_on_loopback(ports: &[PortMapping]) -> bool {
    ports
        .iter()
        .any(|p| p.host_ip.is_none_or(|ip| ip.is_loopback()))
}

/// Lets packets from or to 127.0.0.0/8 be routed through `interface`: the
/// host's connection to 127.0.0.1 goes out of it after DNAT, and the
/// container's answers, un-NATed to 127.0.0.1, come in through it. Without
/// it the kernel drops both as martians (ip_route_input_slow,
/// __mkroute_output); with it, it no longer drops what a container sends
/// there, which firewall::ensure_base's martian rules do instead.
fn set_route_localnet(interface: &str) -> Result<()> {
    sysctl(
        &Path::new("/proc/sys/net/ipv4/conf")
            .join(interface)
            .join("route_localnet"),
        "1",
    )
}

/// Writes a sysctl of the calling thread's network namespace.
fn sysctl(path: &Path, value: &'static str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Sysctl {
        path: path.into(),
        value,
        source,
    })
}

fn nl_err(op: &'static str, operand: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    let operand = operand.to_string();
    move |source| Error::Netlink {
        op,
        operand,
        source,
    }
}

#[cfg(test)]
mod tests;
