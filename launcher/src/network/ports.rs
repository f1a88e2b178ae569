//! Published ports: parsing `-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]`, and
//! reserving the host ports ([`reserve_ports`]) for the container's life.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::str::FromStr;

use super::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One `-p` mapping. No host address means every local address, 127.0.0.1
/// included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let bad = |why| Error::Publish {
            spec: spec.into(),
            why,
        };
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some(_) => return Err(bad("the protocol must be tcp or udp")),
            None => (spec, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, container_port) = match parts[..] {
            [h, c] => (None, h, c),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| bad("the host address is not an IPv4 address"))?;
                (Some(ip).filter(|ip| !ip.is_unspecified()), h, c)
            }
            [_] => {
                return Err(bad(
                    "expected HOSTPORT:CTRPORT; a lone port is not published",
                ));
            }
            _ => return Err(bad("expected [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]")),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0);
        Ok(Self {
            host_ip,
            host_port: port(host_port)
                .ok_or_else(|| bad("the host port must be within 1..=65535"))?,
            container_port: port(container_port)
                .ok_or_else(|| bad("the container port must be within 1..=65535"))?,
            protocol,
        })
    }
}

/// The host ports of a container's `-p` mappings, bound and held: while
/// it lives nobody else can bind them, and a forwarding rule of ours never
/// shadows a host service's port. Released when dropped.
#[derive(Debug)]
pub struct Reservation {
    _sockets: Vec<OwnedFd>,
}

/// Parses `specs` and binds each host port (its address, or every local
/// one), as docker's docker-proxy does before a container starts: the
/// nftables rules alone forwarded a port that a host service or another
/// container already had, silently taking its traffic. A port in use is
/// [`Error::PortAllocated`]. The sockets are bound without SO_REUSEADDR
/// and never listen: nothing else can bind the port, not even a service
/// that sets SO_REUSEADDR, and a packet the rules miss is refused, not
/// queued. Close-on-exec: the workload does not inherit them.
pub fn reserve_ports(specs: &[String]) -> Result<Reservation, Error> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};
    let mut sockets = Vec::new();
    for spec in specs {
        let mapping: PortMapping = spec.parse()?;
        let kind = match mapping.protocol {
            Protocol::Tcp => SockType::Stream,
            Protocol::Udp => SockType::Datagram,
        };
        let address = SocketAddrV4::new(
            mapping.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            mapping.host_port,
        );
        let fail = |source| match source {
            nix::errno::Errno::EADDRINUSE => Error::PortAllocated { mapping, address },
            source => Error::PortBind {
                mapping,
                address,
                source,
            },
        };
        let socket =
            socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None).map_err(fail)?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            &SockaddrIn::from(address),
        )
        .map_err(fail)?;
        sockets.push(socket);
    }
    Ok(Reservation { _sockets: sockets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> PortMapping {
        spec.parse().unwrap()
    }

    #[test]
    fn parses_the_docker_forms() {
        assert_eq!(
            p("8080:80"),
            PortMapping {
                host_ip: None,
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(p("53:5353/udp").protocol, Protocol::Udp);
        let local = p("127.0.0.1:8080:80/tcp");
        assert_eq!(local.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(local.to_string(), "127.0.0.1:8080:80/tcp");
        assert_eq!(p("0.0.0.0:1:2").host_ip, None);
    }

    #[test]
    fn a_reserved_port_cannot_be_reserved_again_until_released() {
        // An unused port: the kernel's pick for an ephemeral one.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let spec = vec![format!("127.0.0.1:{port}:80")];
        let held = reserve_ports(&spec).unwrap();
        let err = reserve_ports(&spec).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "publish `127.0.0.1:{port}:80/tcp`: bind for 127.0.0.1:{port} failed: port is already allocated"
            )
        );
        // A service that sets SO_REUSEADDR (std's listener does) is kept out too.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_err());
        drop(held);
        reserve_ports(&spec).unwrap();
    }

    #[test]
    fn refuses_bad_specs_naming_them() {
        for (spec, why) in [
            ("80", "lone port"),
            ("8080:80/sctp", "tcp or udp"),
            ("x:8080:80", "IPv4"),
            ("0:80", "host port"),
            ("8080:70000", "container port"),
            ("1:2:3:4", "expected"),
            ("::1:80:80", "expected"),
        ] {
            let err = spec.parse::<PortMapping>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains(spec) && text.contains(why), "{spec}: {text}");
        }
    }
}
