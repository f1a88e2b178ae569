//! Tests of the network step with real namespaces, veth pairs, a bridge and
//! nftables rules.
//!
//! Each test first moves a thread of its own into a new network namespace,
//! its "host", and does everything from there: the bridge, NAT, forwarding
//! and 127.0.0.1 it uses are that namespace's, never the machine's, so tests
//! run in parallel, and whatever a failure leaves dies with the thread. The
//! "containers" are `unshare --net` children. Traffic only ever goes to
//! 127.0.0.1 or to addresses inside these namespaces.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn tools_present() -> bool {
    testkit::require(testkit::is_root(), "needs root for network namespaces")
        && ["unshare", "nsenter", "busybox", "nft", "ip"]
            .iter()
            .all(|t| testkit::require_tool(t).is_some())
}

/// Runs `f` on a thread of its own in a new network namespace (with `lo`
/// up), which ends with the thread. Threads and processes started by `f`
/// inherit the namespace (clone(2) copies the caller's).
fn in_new_host<T: Send>(f: impl FnOnce(Config) -> T + Send) -> T {
    let state = tempfile::tempdir().unwrap();
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let tag = (std::process::id() * 64 + n) % 0xffff;
    let config = Config {
        state_dir: state.path().to_path_buf(),
        bridge: format!("crt{tag:04x}"),
        subnet: Subnet::new(Ipv4Addr::new(10, 199, (n % 200) as u8, 0), 24).unwrap(),
        veth_range: Subnet::new(Ipv4Addr::new(169, 254, 100 + (n % 100) as u8, 0), 24).unwrap(),
    };
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: affects this thread only, which ends with the test.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare: {}",
                io::Error::last_os_error()
            );
            let mut nl = Netlink::open().unwrap();
            let lo = nl.link_index("lo").unwrap().unwrap();
            nl.set_up(lo).unwrap();
            f(config)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A stand-in container: a process in a network namespace of its own,
/// killed when dropped.
struct Container {
    child: Child,
}

impl Container {
    fn start() -> Self {
        let mut child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "echo ready; exec sleep 60"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Only once it has printed is it in its new namespace.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Self { child }
    }

    fn netns(&self) -> Netns {
        Netns::Pid(self.child.id())
    }

    /// Runs `args` inside the container's network namespace.
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", self.child.id()))
            .arg("--")
            .args(args)
            .output()
            .unwrap()
    }

    /// One echo answered within 5 tries of 1s: ARP resolution and a loaded
    /// machine (the parallel tests) may cost the first one.
    fn ping(&self, addr: Ipv4Addr) -> bool {
        (0..5).any(|_| {
            self.run(&["busybox", "ping", "-c1", "-W1", &addr.to_string()])
                .status
                .success()
        })
    }

    /// A TCP listener in the container's namespace that answers every
    /// connection with `reply` (bounded: 16 connections, then it stops).
    fn serve(&self, port: u16, reply: &'static str) {
        let ns = self.netns().open().unwrap();
        let listener = listen_in(&ns, port);
        std::thread::spawn(move || {
            for conn in listener.incoming().take(16) {
                let Ok(mut conn) = conn else { break };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
    }
}

impl Container {
    /// Like [`Container::serve`], answering with the address the
    /// connection came from.
    fn serve_peer_address(&self, port: u16) {
        let ns = self.netns().open().unwrap();
        let listener = listen_in(&ns, port);
        std::thread::spawn(move || {
            for conn in listener.incoming().take(16) {
                let Ok(mut conn) = conn else { break };
                let peer = conn
                    .peer_addr()
                    .map(|a| a.ip().to_string())
                    .unwrap_or_default();
                let _ = conn.write_all(format!("{peer}\n").as_bytes());
            }
        });
    }

    /// Connects from inside the container and reads the answer.
    fn fetch_from_inside(&self, addr: Ipv4Addr, port: u16) -> std::io::Result<String> {
        let ns = self.netns().open().unwrap();
        let fd = ns.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: this thread only, which ends right after.
                assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0);
                fetch(addr, port)
            })
            .join()
            .unwrap()
        })
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Binds in `netns` the way the launcher opens netlink there: a thread that
/// enters and exits. The socket stays in the namespace it was made in.
fn listen_in(netns: &OwnedFd, port: u16) -> TcpListener {
    let fd = netns.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: this thread only, which ends right after.
            assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0);
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap()
        })
        .join()
        .unwrap()
    })
}

fn fetch(addr: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text)
}

fn links() -> Vec<String> {
    let mut names = Netlink::open().unwrap().link_names().unwrap();
    names.sort();
    names
}

/// What `ip -o link` and `nft list ruleset` say, to cross-check the
/// library's own counts with the tools people use.
fn tool_counts() -> (usize, usize) {
    let run = |prog: &str, args: &[&str]| {
        String::from_utf8(Command::new(prog).args(args).output().unwrap().stdout).unwrap()
    };
    let links = run("ip", &["-o", "link"]).lines().count();
    let rules = run("nft", &["list", "ruleset"])
        .lines()
        .filter(|l| l.contains("comment \"cradle:"))
        .count();
    (links, rules)
}

/// Lines of `nft list ruleset` whose tag starts with `prefix`.
fn tool_counts_tagged(prefix: &str) -> usize {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.contains(&format!("comment \"{prefix}")))
        .count()
}

fn lease_files(config: &Config) -> usize {
    let Ok(pools) = std::fs::read_dir(config.state_dir.join("leases")) else {
        return 0;
    };
    pools
        .flatten()
        .map(|p| std::fs::read_dir(p.path()).map_or(0, |d| d.count()))
        .sum()
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn none_mode_sees_only_lo_and_it_is_up() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let ctr = Container::start();
        let mut net = Network::prepare(Mode::None, &config, &[]).unwrap();
        net.attach(&ctr.netns()).unwrap();
        let out = text(&ctr.run(&["ip", "-o", "link"]));
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("lo:") && out.contains("UP"), "{out}");
        assert_eq!(net.address(), None);
        net.teardown().unwrap();
    });
}

#[test]
fn none_and_host_modes_refuse_published_ports() {
    let port: PortMapping = "8080:80".parse().unwrap();
    for mode in [Mode::None, Mode::Host] {
        let err = Network::prepare(mode, &Config::default(), &[port]).unwrap_err();
        assert!(matches!(err, Error::PortsNeedAddress(_)), "{err}");
    }
}

#[test]
fn bridge_containers_reach_the_host_and_each_other() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let (a, b) = (Container::start(), Container::start());
        let mut net_a = Network::prepare(Mode::Bridge, &config, &[]).unwrap();
        let mut net_b = Network::prepare(Mode::Bridge, &config, &[]).unwrap();
        net_a.attach(&a.netns()).unwrap();
        net_b.attach(&b.netns()).unwrap();
        let gateway = config.subnet.gateway();
        let (ip_a, ip_b) = (net_a.address().unwrap(), net_b.address().unwrap());
        assert_eq!(net_a.gateway(), Some(gateway));
        assert_ne!(ip_a, ip_b);
        assert!(config.subnet.contains(ip_a) && config.subnet.contains(ip_b));
        let inside = text(&a.run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]));
        assert!(inside.contains(&format!("{ip_a}/24")), "{inside}");
        let route = text(&a.run(&["ip", "route", "show", "default"]));
        assert!(
            route.contains(&format!("default via {gateway} dev eth0")),
            "{route}"
        );
        assert!(a.ping(gateway), "container → host bridge");
        assert!(a.ping(ip_b), "container a → container b");
        assert!(b.ping(ip_a), "container b → container a");
        assert!(net_a.hosts("web").ends_with(&format!("{ip_a}\tweb\n")));
        let host_if = net_a.host_interface().unwrap().to_string();
        assert!(links().contains(&host_if));
        net_a.teardown().unwrap();
        net_b.teardown().unwrap();
        assert!(!links().contains(&host_if));
        assert_eq!(lease_files(&config), 0);
        // The bridge stays for the next container; its NAT rule too.
        assert!(links().contains(&config.bridge));
        assert_eq!(tool_counts_tagged("cradle-nat-"), 1);
        // Until it is removed, which waits for the last container.
        let mut again = Network::prepare(Mode::Bridge, &config, &[]).unwrap();
        again.attach(&a.netns()).unwrap(); // its old eth0 went with the old pair
        assert!(a.ping(gateway));
        assert!(!remove_bridge(&config).unwrap());
        again.teardown().unwrap();
        assert!(remove_bridge(&config).unwrap());
        assert!(!links().contains(&config.bridge));
        assert_eq!(tool_counts_tagged("cradle-nat-"), 0);
    });
}

#[test]
fn published_port_reaches_a_server_in_the_container_from_127_0_0_1() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let ctr = Container::start();
        ctr.serve(80, "hello from the container\n");
        let ports: Vec<PortMapping> = ["18080:80", "127.0.0.1:18081:80/tcp"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let mut net = Network::prepare(Mode::Bridge, &config, &ports).unwrap();
        net.attach(&ctr.netns()).unwrap();
        assert_eq!(count_port_rules(), 4);
        assert_eq!(
            fetch(Ipv4Addr::LOCALHOST, 18080).unwrap(),
            "hello from the container\n"
        );
        assert_eq!(
            fetch(Ipv4Addr::LOCALHOST, 18081).unwrap(),
            "hello from the container\n"
        );
        // And on the host's address on the bridge, for "every local address".
        assert_eq!(
            fetch(config.subnet.gateway(), 18080).unwrap(),
            "hello from the container\n"
        );
        net.teardown().unwrap();
        assert_eq!(count_port_rules(), 0);
        assert!(
            fetch(Ipv4Addr::LOCALHOST, 18080).is_err(),
            "the port is still forwarded after teardown"
        );
    });
}

#[test]
fn veth_mode_gives_a_point_to_point_pair_with_a_slash_30() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let ctr = Container::start();
        ctr.serve(8000, "veth\n");
        let port: PortMapping = "18000:8000".parse().unwrap();
        let mut net = Network::prepare(Mode::Veth, &config, &[port]).unwrap();
        net.attach(&ctr.netns()).unwrap();
        let base = u32::from(config.veth_range.network);
        assert_eq!(net.gateway(), Some(Ipv4Addr::from(base + 1)));
        assert_eq!(net.address(), Some(Ipv4Addr::from(base + 2)));
        let inside = text(&ctr.run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]));
        assert!(
            inside.contains(&format!("{}/30", Ipv4Addr::from(base + 2))),
            "{inside}"
        );
        assert!(ctr.ping(Ipv4Addr::from(base + 1)));
        assert_eq!(fetch(Ipv4Addr::LOCALHOST, 18000).unwrap(), "veth\n");
        // A second container gets the next /30.
        let other = Network::prepare(Mode::Veth, &config, &[]).unwrap();
        assert_eq!(other.address(), Some(Ipv4Addr::from(base + 6)));
        drop(other);
        let host_if = net.host_interface().unwrap().to_string();
        net.teardown().unwrap();
        assert!(!links().contains(&host_if));
        assert_eq!((count_port_rules(), lease_files(&config)), (0, 0));
    });
}

#[test]
fn reclaims_what_a_killed_launcher_left() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let ctr = Container::start();
        let port: PortMapping = "18090:80".parse().unwrap();
        let mut net = Network::prepare(Mode::Bridge, &config, &[port]).unwrap();
        net.attach(&ctr.netns()).unwrap();
        let host_if = net.host_interface().unwrap().to_string();
        let address = net.address().unwrap();
        net.abandon();
        assert!(links().contains(&host_if));
        assert_eq!((count_port_rules(), lease_files(&config)), (2, 1));
        let reclaimed = reclaim_stale(&config).unwrap();
        assert_eq!(reclaimed.len(), 1);
        assert_eq!(reclaimed[0].address, address);
        assert!(!links().contains(&host_if));
        assert_eq!((count_port_rules(), lease_files(&config)), (0, 0));
        // Live leases are left alone.
        let ctr2 = Container::start();
        let mut live = Network::prepare(Mode::Bridge, &config, &[port]).unwrap();
        live.attach(&ctr2.netns()).unwrap();
        assert!(reclaim_stale(&config).unwrap().is_empty());
        assert_eq!(count_port_rules(), 2);
        live.teardown().unwrap();
    });
}

#[test]
fn a_hundred_parallel_attach_detach_cycles_leave_nothing_behind() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        // The bridge and its NAT exist from the first run on: count after it.
        Network::prepare(Mode::Bridge, &config, &[])
            .unwrap()
            .teardown()
            .unwrap();
        let before = (links(), count_port_rules(), lease_files(&config));
        let tools_before = tool_counts();
        for batch in 0..10u16 {
            std::thread::scope(|s| {
                for i in 0..10u16 {
                    let config = &config;
                    s.spawn(move || {
                        let ctr = Container::start();
                        let port = PortMapping {
                            host_ip: None,
                            host_port: 20000 + batch * 10 + i,
                            container_port: 80,
                            protocol: Protocol::Tcp,
                        };
                        let mut net = Network::prepare(Mode::Bridge, config, &[port]).unwrap();
                        net.attach(&ctr.netns()).unwrap();
                        assert!(ctr.ping(config.subnet.gateway()));
                        net.teardown().unwrap();
                    });
                }
            });
        }
        let after = (links(), count_port_rules(), lease_files(&config));
        assert_eq!(before, after);
        assert_eq!((after.1, after.2), (0, 0));
        assert_eq!(tool_counts(), tools_before);
        assert_eq!(tools_before.1, 0);
    });
}

#[test]
fn outbound_traffic_leaves_with_the_hosts_address() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        // "The world": a namespace of the test's own, behind the host on a
        // veth pair, that tells each client the address it came from.
        let world = Container::start();
        let mut world_net = Network::prepare(Mode::Veth, &config, &[]).unwrap();
        world_net.attach(&world.netns()).unwrap();
        world.serve_peer_address(9000);
        let ctr = Container::start();
        let mut net = Network::prepare(Mode::Bridge, &config, &[]).unwrap();
        net.attach(&ctr.netns()).unwrap();
        let seen = ctr
            .fetch_from_inside(world_net.address().unwrap(), 9000)
            .unwrap();
        // Masqueraded: the host's address on the way out, not the container's.
        assert_eq!(seen.trim(), world_net.gateway().unwrap().to_string());
        net.teardown().unwrap();
        world_net.teardown().unwrap();
    });
}

#[test]
fn attach_to_a_missing_namespace_names_it() {
    let mut net = Network::prepare(Mode::None, &Config::default(), &[]).unwrap();
    let err = net
        .attach(&Netns::Path("/nonexistent/netns".into()))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "open network namespace `/nonexistent/netns`"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn modes_parse_from_their_names() {
    for mode in [
        Mode::None,
        Mode::Host,
        Mode::Veth,
        Mode::Bridge,
        Mode::Slirp4netns,
    ] {
        assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
    }
    assert_eq!(
        "slirp".parse::<Mode>().unwrap_err().to_string(),
        "network mode `slirp` is not one of none, host, veth, bridge, slirp4netns"
    );
}

#[test]
fn bring_up_loopback_works_inside_a_fresh_namespace() {
    if !tools_present() {
        return;
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: this thread only, which ends with the test.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            // A fresh namespace's lo is down: 127.0.0.1 is unreachable.
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let at = listener.local_addr().unwrap();
            assert!(TcpStream::connect_timeout(&at, Duration::from_secs(1)).is_err());
            bring_up_loopback().unwrap();
            TcpStream::connect_timeout(&at, Duration::from_secs(1)).unwrap();
        })
        .join()
        .unwrap();
    });
}

#[test]
fn published_udp_port_answers_from_127_0_0_1() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let ctr = Container::start();
        let ns = ctr.netns().open().unwrap();
        let fd = ns.as_raw_fd();
        let server = std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: this thread only, which ends right after.
                assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0);
                UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 5353)).unwrap()
            })
            .join()
            .unwrap()
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            server
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            if let Ok((n, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..n], from);
            }
        });
        let port: PortMapping = "15353:5353/udp".parse().unwrap();
        let mut net = Network::prepare(Mode::Bridge, &config, &[port]).unwrap();
        net.attach(&ctr.netns()).unwrap();
        let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client
            .send_to(b"ping", (Ipv4Addr::LOCALHOST, 15353))
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        net.teardown().unwrap();
    });
}

#[test]
fn a_leftover_veth_with_the_leased_name_is_replaced() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let ctr = Container::start();
        let mut net = Network::prepare(Mode::Bridge, &config, &[]).unwrap();
        let name = net.host_interface().unwrap().to_string();
        let made = Command::new("ip")
            .args([
                "link",
                "add",
                &name,
                "type",
                "veth",
                "peer",
                "name",
                "leftover0",
            ])
            .status()
            .unwrap();
        assert!(made.success());
        net.attach(&ctr.netns()).unwrap();
        assert!(ctr.ping(config.subnet.gateway()));
        assert!(!links().contains(&"leftover0".to_string()));
        net.teardown().unwrap();
        assert!(!links().contains(&name));
    });
}

impl Container {
    /// Runs `f` on a thread moved into the container's network namespace.
    fn inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.netns().open().unwrap();
        let fd = ns.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: this thread only, which ends right after.
                assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0);
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// Routes 127.0.0.1 to `gateway` instead of `lo`, both ways: what a
    /// container with CAP_NET_RAW gets by writing and reading its own
    /// frames, here with plain sockets (the stand-in has every capability).
    fn route_loopback_to(&self, gateway: Ipv4Addr) {
        let via = format!("ip route add 127.0.0.1/32 via {gateway} dev eth0");
        for script in [
            "ip addr del 127.0.0.1/8 dev lo",
            &via,
            "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet",
        ] {
            let args = ["sh", "-c", script];
            let out = self.run(&args);
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
    }
}

fn route_localnet(interface: &str) -> String {
    let path = format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
    std::fs::read_to_string(&path).unwrap().trim().to_string()
}

// CVE-2020-8558: with route_localnet on, which publishing on 127.0.0.1
// needs, a packet from the container addressed to 127.0.0.1 reached the
// host's loopback services.
#[test]
fn containers_cannot_reach_the_hosts_127_0_0_1() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let mut reached = Vec::new();
        for mode in [Mode::Bridge, Mode::Veth] {
            let ctr = Container::start();
            let port: PortMapping = "127.0.0.1:18095:80".parse().unwrap();
            let mut net = Network::prepare(mode, &config, &[port]).unwrap();
            net.attach(&ctr.netns()).unwrap();
            ctr.route_loopback_to(net.gateway().unwrap());
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let (udp_at, tcp_at) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
            let connected = ctr.inside(|| {
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
                sock.send_to(b"from the container", udp_at).unwrap();
                TcpStream::connect_timeout(&tcp_at, Duration::from_secs(1)).is_ok()
            });
            if connected {
                reached.push(format!("{mode:?}: tcp {tcp_at}"));
            }
            udp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            if udp.recv_from(&mut [0u8; 64]).is_ok() {
                reached.push(format!("{mode:?}: udp {udp_at}"));
            }
            net.teardown().unwrap();
        }
        assert_eq!(reached, Vec::<String>::new());
    });
}

// route_localnet lifts the kernel's martian checks on its interface: only
// the interface IP routes the host's 127.0.0.1 connections through gets it,
// and only for a port published there; those connections still work.
#[test]
fn route_localnet_is_on_only_where_a_port_is_published_on_loopback() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let ctr = Container::start();
        let mut net = Network::prepare(Mode::Bridge, &config, &[]).unwrap();
        net.attach(&ctr.netns()).unwrap();
        let port = net.host_interface().unwrap().to_string();
        assert_eq!(
            (route_localnet(&config.bridge), route_localnet(&port)),
            ("0".into(), "0".into())
        );
        net.teardown().unwrap();

        let published: PortMapping = "127.0.0.1:18096:80".parse().unwrap();
        ctr.serve(80, "bridge\n");
        let mut net = Network::prepare(Mode::Bridge, &config, &[published]).unwrap();
        net.attach(&ctr.netns()).unwrap();
        // The bridge is what IP routes through; its ports stay as they were.
        let port = net.host_interface().unwrap().to_string();
        assert_eq!(
            (route_localnet(&config.bridge), route_localnet(&port)),
            ("1".into(), "0".into())
        );
        assert_eq!(fetch(Ipv4Addr::LOCALHOST, 18096).unwrap(), "bridge\n");
        net.teardown().unwrap();

        // A port published on another address of the host's needs none.
        let elsewhere = PortMapping {
            host_ip: Some(config.subnet.gateway()),
            ..published
        };
        for (ports, expected) in [
            (vec![], "0"),
            (vec![elsewhere], "0"),
            (vec![published], "1"),
        ] {
            let ctr = Container::start();
            let mut net = Network::prepare(Mode::Veth, &config, &ports).unwrap();
            net.attach(&ctr.netns()).unwrap();
            let host_if = net.host_interface().unwrap().to_string();
            assert_eq!(route_localnet(&host_if), expected, "{ports:?}");
            net.teardown().unwrap();
        }
    });
}

// Before NAT (priority raw) the container's answers to the host's
// 127.0.0.1 are still addressed to the host's bridge or veth address, so
// the drop needs no conntrack exception; added once, however many runs.
#[test]
fn martian_rules_precede_nat_and_are_added_once() {
    if !tools_present() {
        return;
    }
    in_new_host(|config| {
        let port: PortMapping = "18097:80".parse().unwrap();
        for mode in [Mode::Bridge, Mode::Bridge, Mode::Veth] {
            Network::prepare(mode, &config, &[port])
                .unwrap()
                .teardown()
                .unwrap();
        }
        let out = Command::new("nft")
            .args(["list", "chain", "ip", FIREWALL_TABLE, "martians"])
            .output()
            .unwrap();
        let chain = String::from_utf8_lossy(&out.stdout);
        assert!(
            chain.contains("type filter hook prerouting priority raw;"),
            "{chain}"
        );
        for rule in [
            "iifname != \"lo\" ip daddr 127.0.0.0/8 drop comment \"cradle-martian-dst\"",
            "iifname != \"lo\" ip saddr 127.0.0.0/8 drop comment \"cradle-martian-src\"",
        ] {
            assert_eq!(chain.matches(rule).count(), 1, "{chain}");
        }
        assert_eq!(tool_counts_tagged("cradle-martian-"), 2);
    });
}
