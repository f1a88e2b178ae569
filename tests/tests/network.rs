//! End to end: `--network none|bridge|veth` and `-p`, with the launcher's
//! cgroups, and what is left (or not) after runs ended, signalled or killed.
//!
//! The bridge and veth tests start their launchers from a thread of their
//! own moved into a new network namespace, the test's "host": the bridge,
//! its NAT rules, the forwarding sysctls and the 127.0.0.1 they use are that
//! namespace's, never the machine's, and whatever a failure leaves there
//! dies with the thread. Each also uses a bridge name, subnet, lease
//! directory and cgroup parent of its own. Traffic only goes to 127.0.0.1
//! and to addresses inside these namespaces.

mod common;

use common::{CgroupParent, Kit, report, value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A test's network: a bridge, subnets and lease directory of its own.
struct Net {
    state: tempfile::TempDir,
    bridge: String,
    subnet: String,
    gateway: Ipv4Addr,
    veth_subnet: String,
}

impl Net {
    fn new() -> Net {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = (std::process::id() * 64 + n) & 0xfffff;
        let third = (n % 250) as u8;
        Net {
            state: tempfile::Builder::new()
                .prefix("cradle-e2e-net-")
                .tempdir()
                .unwrap(),
            // Not cradle0: never the machine's default bridge.
            bridge: format!("crt{tag:x}"),
            subnet: format!("10.231.{third}.0/24"),
            gateway: Ipv4Addr::new(10, 231, third, 1),
            veth_subnet: format!("169.254.{}.0/24", 100 + third % 100),
        }
    }

    /// `launcher run` on this network, with the kit's cache and probe.
    fn cmd(&self, kit: &Kit, args: &[&str]) -> Command {
        let mut cmd = kit.cmd(args);
        cmd.env("CRADLE_NETWORK_STATE", self.state.path())
            .env("CRADLE_BRIDGE", &self.bridge)
            .env("CRADLE_SUBNET", &self.subnet)
            .env("CRADLE_VETH_SUBNET", &self.veth_subnet);
        cmd
    }

    /// Host ends of veth pairs, port rules and leases in the calling
    /// thread's network namespace.
    fn left(&self) -> (usize, usize, usize) {
        let leases = std::fs::read_dir(self.state.path().join("leases"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|pool| std::fs::read_dir(pool.path()).ok())
            .map(|files| files.count())
            .sum();
        (veths(), port_rules(), leases)
    }
}

/// Links named as the launcher names the host end of a pair: `cr` and the
/// address in 8 hex digits. /proc/thread-self/net is this thread's namespace.
fn veths() -> usize {
    std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .filter(|n| {
            n.len() == 10 && n.starts_with("cr") && n[2..].bytes().all(|b| b.is_ascii_hexdigit())
        })
        .count()
}

/// The containers' rules (not the bridge's NAT) in the launcher's table.
fn port_rules() -> usize {
    let out = Command::new("nft")
        .args(["list", "table", "ip", "cradle"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("comment \"cradle:"))
        .count()
}

/// Runs `f` on a thread moved into a new network namespace with `lo` up.
/// Processes it starts inherit the namespace (clone(2) copies the caller's).
fn in_private_host<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: affects this thread only, which ends with the test.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            loopback_up();
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn loopback_up() {
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS on a datagram socket, with an
    // ifreq naming `lo`; the socket is closed after.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(sock >= 0);
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        assert_eq!(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req), 0);
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(sock, libc::SIOCSIFFLAGS, &req), 0);
        libc::close(sock);
    }
}

/// Root, the launcher's artifacts, and nft (to count rules).
fn kit() -> Option<Kit> {
    let kit = Kit::new()?;
    testkit::require_tool("nft")?;
    Some(kit)
}

/// Starts `cmd` and reads its stdout up to the line `ready`; returns the
/// lines before it.
fn spawn_ready(mut cmd: Command) -> (Child, BufReader<ChildStdout>, Vec<String>) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut before = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        if line.trim() == "ready" {
            return (child, out, before);
        }
        before.push(line.trim().to_string());
        line.clear();
    }
    let status = child.wait().unwrap();
    panic!("ended before `ready` ({status}): {before:?}");
}

fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The line a server in a container sends, fetched from this namespace.
fn fetch(addr: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&(addr, port).into(), Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text.trim().to_string())
}

#[test]
fn none_sees_only_lo() {
    let Some(kit) = kit() else { return };
    let out = kit.probe_run(&["--network", "none"], &["report"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(value(&report(&out), "netdevs"), "lo");
}

#[test]
fn bridge_containers_reach_the_host_and_each_other() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let parent = CgroupParent::new();
    in_private_host(|| {
        // The server: its address is the last line of its /etc/hosts (the
        // default image has cat, not tail).
        let mut cmd = net.cmd(&kit, &["--network", "bridge", "--hostname", "server"]);
        cmd.args(["--cgroup-parent", &parent.name])
            .arg(&kit.image)
            .args(["sh", "-c", "cat /etc/hosts; exec /probe serve 8080 1"]);
        let (mut server, _out, before) = spawn_ready(cmd);
        let hosts_line = before.last().expect("a hosts line").clone();
        let (address, name) = hosts_line.split_once('\t').expect("ADDRESS\tNAME");
        assert_eq!(name, "server");
        let address: Ipv4Addr = address.parse().unwrap();
        assert_eq!(address.octets()[..3], net.gateway.octets()[..3]);
        // The host: a listener on the bridge's address, which exists now.
        let listener = TcpListener::bind((net.gateway, 9090)).unwrap();
        let host = std::thread::spawn(move || {
            let (mut conn, peer) = listener.accept().unwrap();
            conn.write_all(b"hello from host\n").unwrap();
            peer
        });
        let script = format!(
            "/probe connect {} 9090 && /probe connect {address} 8080",
            net.gateway
        );
        let mut cmd = net.cmd(&kit, &["--network", "bridge", "--hostname", "client"]);
        cmd.args(["--cgroup-parent", &parent.name])
            .arg(&kit.image)
            .args(["sh", "-c", &script]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "got hello from host\ngot hello from server\n"
        );
        // The host saw the client's own address, not a NATed one.
        let peer = host.join().unwrap();
        assert_ne!(peer.ip(), std::net::IpAddr::V4(net.gateway));
        assert!(wait_bounded(&mut server, Duration::from_secs(10)).success());
        assert_eq!(net.left(), (0, 0, 0));
    });
    assert_eq!(parent.containers(), Vec::<String>::new());
}

#[test]
fn published_port_reaches_a_server_in_the_container_from_127_0_0_1() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    in_private_host(|| {
        for (mode, port) in [("bridge", 18080), ("veth", 18081)] {
            let spec = format!("127.0.0.1:{port}:8080");
            let mut cmd = net.cmd(&kit, &["--network", mode, "-p", &spec, "--hostname", mode]);
            cmd.arg(&kit.image).args(["/probe", "serve", "8080", "1"]);
            let (mut server, _out, _) = spawn_ready(cmd);
            assert_eq!(net.left(), (1, 2, 1), "{mode}: veth, rules, lease");
            let got = fetch(Ipv4Addr::LOCALHOST, port);
            assert!(wait_bounded(&mut server, Duration::from_secs(10)).success());
            assert_eq!(got.unwrap(), format!("hello from {mode}"), "{mode}");
            assert_eq!(net.left(), (0, 0, 0), "{mode}");
        }
    });
}

#[test]
fn veth_mode_gives_eth0_a_slash_30_and_a_default_route() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    in_private_host(|| {
        let mut cmd = net.cmd(&kit, &["--network", "veth", "--hostname", "p2p"]);
        cmd.arg(&kit.image).args([
            "sh",
            "-c",
            "cat /etc/hosts /proc/net/route; ls /sys/class/net",
        ]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let hosts_line = text.lines().find(|l| l.ends_with("\tp2p")).expect("hosts");
        let address: Ipv4Addr = hosts_line.split('\t').next().unwrap().parse().unwrap();
        assert_eq!(address.octets()[3] % 4, 2, "{text}");
        let mask_30 = "FCFFFFFF";
        assert!(
            text.lines().any(|l| l.starts_with("eth0\t00000000\t")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("eth0\t") && l.contains(mask_30)),
            "{text}"
        );
        assert!(text.ends_with("eth0\nlo\n"), "{text}");
        assert_eq!(net.left(), (0, 0, 0));
    });
}

#[test]
fn a_hundred_bridge_runs_in_parallel_batches_leave_nothing_behind() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let parent = CgroupParent::new();
    // One cache for all: concurrent launchers reclaim stale state while
    // others create theirs (cache::tests covers that race on its own).
    in_private_host(|| {
        assert_eq!(net.left(), (0, 0, 0));
        let start = Instant::now();
        for batch in 0..10 {
            let children: Vec<Child> = (0..10)
                .map(|i| {
                    let spec = format!("127.0.0.1:{}:80", 20000 + batch * 10 + i);
                    let mut cmd = net.cmd(&kit, &["--network", "bridge", "-p", &spec]);
                    cmd.args(["--cgroup-parent", &parent.name])
                        .arg(&kit.image)
                        .arg("true")
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    cmd.spawn().unwrap()
                })
                .collect();
            for (i, child) in children.into_iter().enumerate() {
                let out = child.wait_with_output().unwrap();
                assert!(out.status.success(), "batch {batch} run {i}: {out:?}");
            }
        }
        eprintln!("100 bridge runs in 10 batches of 10: {:?}", start.elapsed());
        assert_eq!(net.left(), (0, 0, 0), "veths, port rules, leases");
    });
    assert_eq!(parent.containers(), Vec::<String>::new(), "cgroups");
}

#[test]
fn sigterm_and_a_failed_start_undo_the_network_and_the_cgroup() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let parent = CgroupParent::new();
    in_private_host(|| {
        let mut cmd = net.cmd(&kit, &["--network", "bridge", "-p", "127.0.0.1:18082:8080"]);
        cmd.args(["--cgroup-parent", &parent.name])
            .arg(&kit.image)
            .args(["/probe", "serve", "8080"]);
        let (mut server, _out, _) = spawn_ready(cmd);
        assert_eq!(net.left(), (1, 2, 1));
        assert_eq!(parent.containers().len(), 1);
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
        let status = wait_bounded(&mut server, Duration::from_secs(15));
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
        assert_eq!(net.left(), (0, 0, 0), "after SIGTERM");
        assert_eq!(parent.containers(), Vec::<String>::new(), "after SIGTERM");
        // The exec fails after the network and cgroup were made and joined.
        let mut cmd = net.cmd(&kit, &["--network", "bridge", "-p", "127.0.0.1:18083:8080"]);
        cmd.args(["--cgroup-parent", &parent.name, "--no-init"])
            .args(["--entrypoint", "/no/such/program"])
            .arg(&kit.image);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(127), "{out:?}");
        assert_eq!(net.left(), (0, 0, 0), "after a failed start");
    });
    assert_eq!(
        parent.containers(),
        Vec::<String>::new(),
        "after a failed start"
    );
}

#[test]
fn a_sigkilled_launchers_leftovers_are_reclaimed_by_the_next_run() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let parent = CgroupParent::new();
    in_private_host(|| {
        let mut cmd = net.cmd(&kit, &["--network", "bridge", "-p", "127.0.0.1:18084:8080"]);
        cmd.args(["--cgroup-parent", &parent.name])
            .arg(&kit.image)
            .args(["/probe", "serve", "8080"]);
        let (mut server, _out, _) = spawn_ready(cmd);
        assert_eq!(net.left(), (1, 2, 1));
        server.kill().unwrap();
        server.wait().unwrap();
        // The container dies with its launcher (PR_SET_PDEATHSIG), and its
        // veth pair with its namespace; the rest stays.
        let deadline = Instant::now() + Duration::from_secs(10);
        while veths() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, rules, leases) = net.left();
        assert_eq!((rules, leases), (2, 1), "what SIGKILL left");
        assert_eq!(parent.containers().len(), 1, "the cgroup SIGKILL left");
        let mut cmd = net.cmd(&kit, &["--network", "bridge"]);
        cmd.args(["--cgroup-parent", &parent.name])
            .arg(&kit.image)
            .arg("true");
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(net.left(), (0, 0, 0), "reclaimed");
    });
    assert_eq!(parent.containers(), Vec::<String>::new(), "reclaimed");
}

/// Runs `/probe rawsend ARGS` in a container on `mode` that publishes
/// `published` on the host's 127.0.0.1 (what turns route_localnet on, the
/// precondition of CVE-2020-8558); returns the probe's stdout.
fn rawsend_from(kit: &Kit, net: &Net, mode: &str, published: u16, args: &[&str]) -> String {
    let spec = format!("127.0.0.1:{published}:8080");
    let mut cmd = net.cmd(kit, &["--network", mode, "-p", &spec]);
    cmd.arg(&kit.image).args(["/probe", "rawsend"]).args(args);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{mode}: {out:?}");
    assert_eq!(net.left(), (0, 0, 0), "{mode}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `host` received within 1s, if anything. The probe has exited by
/// then: whatever got through is queued already.
fn datagram(host: &UdpSocket) -> Option<String> {
    host.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = host.recv_from(&mut buf).ok()?;
    Some(format!(
        "{:?} from {from}",
        String::from_utf8_lossy(&buf[..n])
    ))
}

// CVE-2020-8558: a container that writes a frame to the gateway's MAC with
// destination 127.0.0.1 reached a service the host bound to 127.0.0.1 only.
#[test]
fn containers_cannot_send_udp_to_the_hosts_127_0_0_1() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let reached = in_private_host(|| {
        let mut reached = Vec::new();
        for (mode, published) in [("bridge", 18085), ("veth", 18086)] {
            let host = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let port = host.local_addr().unwrap().port().to_string();
            let out = rawsend_from(&kit, &net, mode, published, &["udp", "127.0.0.1", &port]);
            assert_eq!(out, "rawsend udp sent\n", "{mode}");
            if let Some(got) = datagram(&host) {
                reached.push(format!("{mode}: 127.0.0.1:{port} got {got}"));
            }
        }
        reached
    });
    assert_eq!(reached, Vec::<String>::new());
}

// The same with TCP: the SYN must not be answered, so no connection can be
// completed (the probe ACKs a SYN-ACK, which would queue one to accept).
#[test]
fn containers_cannot_open_tcp_to_the_hosts_127_0_0_1() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let reached = in_private_host(|| {
        let mut reached = Vec::new();
        for (mode, published) in [("bridge", 18087), ("veth", 18088)] {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            let port = listener.local_addr().unwrap().port().to_string();
            let out = rawsend_from(&kit, &net, mode, published, &["tcp", "127.0.0.1", &port]);
            listener.set_nonblocking(true).unwrap();
            let queued = listener.accept().map(|(_, peer)| peer);
            if out != "rawsend tcp none\n" || queued.is_ok() {
                reached.push(format!("{mode}: {} and accept {queued:?}", out.trim()));
            }
        }
        reached
    });
    assert_eq!(reached, Vec::<String>::new());
}

// route_localnet also lets in a source in 127.0.0.0/8 from a container (the
// kernel still refuses 127.0.0.1 itself, an address of the host's): a host
// service that trusts loopback peers would take it for a local one, and
// the answers of a published port, masqueraded as 127.0.0.0/8 traffic,
// would be un-NATed to the host's loopback.
#[test]
fn containers_cannot_send_from_the_hosts_127_0_0_0_8() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let reached = in_private_host(|| {
        let mut reached = Vec::new();
        for (mode, published) in [("bridge", 18089), ("veth", 18090)] {
            // Every address of this (private) host: the gateway's included.
            let host = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            let port = host.local_addr().unwrap().port().to_string();
            for src in ["127.0.0.1", "127.0.0.2"] {
                let args = ["udp", "gateway", &port, src];
                let out = rawsend_from(&kit, &net, mode, published, &args);
                assert_eq!(out, "rawsend udp sent\n", "{mode}");
                if let Some(got) = datagram(&host) {
                    reached.push(format!("{mode}: port {port} got {got}"));
                }
            }
        }
        reached
    });
    assert_eq!(reached, Vec::<String>::new());
}

// `-p` never checked the host port: a second container on the same port,
// or one on the port of a running host service, silently took its traffic.
// The launcher binds the port first (docker-proxy's rule) and holds it for
// the container's life; a taken one is refused before anything is set up.
#[test]
fn a_host_port_in_use_is_refused_before_anything_is_set_up() {
    let Some(kit) = kit() else { return };
    let net = Net::new();
    let parent = CgroupParent::new();
    in_private_host(|| {
        let containers = kit.root.path().join("containers");
        let state = || {
            let dirs = match containers.exists() {
                true => common::entries(&containers).len(),
                false => 0,
            };
            (net.left(), parent.containers(), dirs)
        };
        // Refused, and nothing of the refused run left: the state is what
        // it was before it.
        let refused = |cmd: &mut Command, address: &str| {
            let before = state();
            let out = cmd.output().unwrap();
            assert_eq!(out.status.code(), Some(125), "{out:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(&format!(
                    "bind for {address} failed: port is already allocated"
                )),
                "{err}"
            );
            assert_eq!(state(), before, "{err}");
        };
        let run = |spec: &str, args: &[&str]| {
            let mut cmd = net.cmd(&kit, &["--network", "bridge", "-p", spec]);
            cmd.args(["--cgroup-parent", &parent.name])
                .arg(&kit.image)
                .args(args);
            cmd
        };
        // A host service, listening on every address.
        let service = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 18090)).unwrap();
        refused(&mut run("18090:80", &["true"]), "0.0.0.0:18090");
        // On one address of the host: taken all the same.
        refused(&mut run("127.0.0.1:18090:80", &["true"]), "127.0.0.1:18090");
        drop(service);

        // A running container's port, tcp and udp alike.
        let mut cmd = net.cmd(
            &kit,
            &[
                "--network",
                "bridge",
                "-p",
                "18091:8080",
                "--hostname",
                "first",
            ],
        );
        cmd.args(["--cgroup-parent", &parent.name])
            .arg(&kit.image)
            .args(["/probe", "serve", "8080", "1"]);
        let (mut first, _out, _) = spawn_ready(cmd);
        refused(&mut run("18091:80", &["true"]), "0.0.0.0:18091");
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, 18091)).is_err());
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 18092)).unwrap();
        refused(&mut run("18092:53/udp", &["true"]), "0.0.0.0:18092");
        drop(udp);
        // The first still gets its traffic, and frees the port when it ends.
        assert_eq!(
            fetch(Ipv4Addr::LOCALHOST, 18091).unwrap(),
            "hello from first"
        );
        assert!(wait_bounded(&mut first, Duration::from_secs(10)).success());
        let out = run("18091:80", &["true"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, 18091)).is_ok());
        assert_eq!(state(), ((0, 0, 0), vec![], 0));
    });
}
