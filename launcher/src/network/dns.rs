//! What the container's `/etc/resolv.conf` and `/etc/hosts` say. The
//! launcher writes them into the rootfs; this step only makes the text.

use std::net::{IpAddr, Ipv4Addr};

/// Name servers used when the host has only loopback ones, as docker does.
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// The host's resolv.conf for a container in its own network namespace:
/// loopback name servers (a local dnsmasq, systemd-resolved's 127.0.0.53)
/// are not reachable from there and are dropped; search and options stay.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("nameserver"), Some(addr)) => {
                if addr.parse::<IpAddr>().is_ok_and(|a| a.is_loopback()) {
                    continue;
                }
                servers += 1;
                out.push_str(&format!("nameserver {addr}\n"));
            }
            (Some("search" | "domain" | "options"), Some(_)) => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    if servers == 0 {
        for addr in FALLBACK_NAMESERVERS {
            out.push_str(&format!("nameserver {addr}\n"));
        }
    }
    out
}

/// The host's resolv.conf, preferring systemd-resolved's list of real
/// upstream servers when the usual file only points at its stub.
pub fn read_host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if main.contains("nameserver 127.0.0.53")
        && let Ok(upstream) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return upstream;
    }
    main
}

/// localhost lines, and the container's name on its address (or on
/// 127.0.1.1 without one, as Debian does for the host's own name).
pub fn hosts(hostname: &str, addr: Option<Ipv4Addr>) -> String {
    let own = addr.unwrap_or(Ipv4Addr::new(127, 0, 1, 1));
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n\
         {own}\t{hostname}\n"
    )
}

/// `--add-host`, `--dns` and `--dns-search`: what the user adds to (or
/// puts in place of) the generated `/etc/hosts` and `/etc/resolv.conf`,
/// whatever the network mode, as docker does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Custom {
    hosts: Vec<(String, IpAddr)>,
    servers: Vec<IpAddr>,
    /// `.` alone: no search domains at all.
    search: Vec<String>,
    options: Vec<String>,
}

impl Custom {
    /// Checks every value: `NAME:IP` (or `NAME=IP`; an IPv6 address after
    /// the first `:`), addresses, domain names.
    pub fn parse(opts: &crate::Options) -> crate::Result<Custom> {
        let (add_hosts, dns, search) = (&opts.add_hosts, &opts.dns, &opts.dns_search);
        let bad = |flag, value: &str, why: &str| crate::Error::Flag {
            flag,
            value: value.into(),
            why: why.into(),
        };
        let mut hosts = Vec::new();
        for spec in add_hosts {
            let (name, ip) = spec
                .split_once('=')
                .or_else(|| spec.split_once(':'))
                .ok_or_else(|| bad("--add-host", spec, "bad format for add-host (want NAME:IP)"))?;
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if ip == "host-gateway" {
                return Err(bad(
                    "--add-host",
                    spec,
                    "host-gateway is not supported; give the address",
                ));
            }
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| bad("--add-host", spec, "invalid IP address in add-host"))?;
            if !valid_name(name) {
                return Err(bad("--add-host", spec, "invalid host name in add-host"));
            }
            hosts.push((name.to_string(), ip));
        }
        let servers = dns
            .iter()
            .map(|d| {
                d.parse::<IpAddr>()
                    .map_err(|_| bad("--dns", d, "not an IP address"))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        for domain in search {
            if domain != "." && !valid_name(domain.trim_end_matches('.')) {
                return Err(bad("--dns-search", domain, "not a valid domain name"));
            }
        }
        for option in &opts.dns_options {
            let ok = !option.is_empty()
                && option
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b":-_.".contains(&b));
            if !ok {
                return Err(bad("--dns-option", option, "not a resolv.conf option"));
            }
        }
        Ok(Custom {
            hosts,
            servers,
            search: search.to_vec(),
            options: opts.dns_options.clone(),
        })
    }

    /// Appends the hosts to `/etc/hosts`; in `/etc/resolv.conf` the given
    /// name servers replace the generated ones, the given search domains
    /// the generated ones (`.`: none), as docker's `--dns` and
    /// `--dns-search` do.
    pub fn apply(&self, etc: &mut [(&'static str, String)]) {
        for (name, text) in etc.iter_mut() {
            match *name {
                "hosts" => {
                    for (host, ip) in &self.hosts {
                        text.push_str(&format!("{ip}\t{host}\n"));
                    }
                }
                "resolv.conf" => *text = self.resolv_conf(text),
                _ => {}
            }
        }
    }

    fn resolv_conf(&self, generated: &str) -> String {
        let mut out = String::new();
        for line in generated.lines() {
            let key = line.split_whitespace().next().unwrap_or_default();
            let replaced = match key {
                "nameserver" => !self.servers.is_empty(),
                "search" | "domain" => !self.search.is_empty(),
                "options" => !self.options.is_empty(),
                _ => false,
            };
            if !replaced {
                out.push_str(line);
                out.push('\n');
            }
        }
        let search: Vec<&str> = self
            .search
            .iter()
            .map(String::as_str)
            .filter(|d| *d != ".")
            .collect();
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        for server in &self.servers {
            out.push_str(&format!("nameserver {server}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// A host or domain name: dot-separated labels of letters, digits, `-`
/// and `_`, none empty, 253 bytes at most; nothing that could break the
/// line it is written on.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn parse(hosts: &[&str], dns: &[&str], search: &[&str]) -> crate::Result<Custom> {
        Custom::parse(&crate::Options {
            add_hosts: strings(hosts),
            dns: strings(dns),
            dns_search: strings(search),
            ..Default::default()
        })
    }

    #[test]
    fn dns_options_replace_the_generated_ones() {
        let custom = Custom::parse(&crate::Options {
            dns_options: strings(&["ndots:2", "edns0"]),
            ..Default::default()
        })
        .unwrap();
        let mut etc = vec![(
            "resolv.conf",
            "nameserver 1.1.1.1\noptions rotate\n".to_string(),
        )];
        custom.apply(&mut etc);
        assert_eq!(etc[0].1, "nameserver 1.1.1.1\noptions ndots:2 edns0\n");
        let bad = Custom::parse(&crate::Options {
            dns_options: strings(&["ndots:2\nnameserver 6.6.6.6"]),
            ..Default::default()
        });
        assert!(bad.is_err());
    }

    #[test]
    fn custom_entries_are_checked_and_added() {
        let custom = parse(
            &["db:10.0.0.5", "v6=::1", "box.lan:[fe80::1]"],
            &["192.0.2.1", "2001:db8::1"],
            &["corp.example", "lan"],
        )
        .unwrap();
        let mut etc = vec![
            ("hosts", "127.0.0.1\tlocalhost\n".to_string()),
            (
                "resolv.conf",
                "nameserver 8.8.8.8\nsearch home\noptions edns0\n".to_string(),
            ),
        ];
        custom.apply(&mut etc);
        assert_eq!(
            etc[0].1,
            "127.0.0.1\tlocalhost\n10.0.0.5\tdb\n::1\tv6\nfe80::1\tbox.lan\n"
        );
        assert_eq!(
            etc[1].1,
            "options edns0\nsearch corp.example lan\nnameserver 192.0.2.1\nnameserver 2001:db8::1\n"
        );
        let none = parse(&[], &[], &["."]).unwrap();
        let mut etc = vec![("resolv.conf", "nameserver 1.1.1.1\nsearch a\n".to_string())];
        none.apply(&mut etc);
        assert_eq!(etc[0].1, "nameserver 1.1.1.1\n");
        for (hosts, dns, search) in [
            (vec!["nocolon"], vec![], vec![]),
            (vec!["a:1.2.3"], vec![], vec![]),
            (vec!["bad name:1.2.3.4"], vec![], vec![]),
            (vec!["x\ny:1.2.3.4"], vec![], vec![]),
            (vec![], vec!["dns.example"], vec![]),
            (vec![], vec![], vec!["a b"]),
        ] {
            let got = parse(&hosts, &dns, &search);
            assert!(got.is_err(), "{hosts:?} {dns:?} {search:?}");
        }
    }

    #[test]
    fn loopback_name_servers_are_dropped() {
        let host = "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch lan\noptions edns0\n";
        assert_eq!(
            resolv_conf(host),
            "nameserver 192.0.2.53\nsearch lan\noptions edns0\n"
        );
    }

    #[test]
    fn only_loopback_servers_fall_back_to_public_ones() {
        assert_eq!(
            resolv_conf("nameserver ::1\n"),
            "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
    }

    #[test]
    fn hosts_name_the_container_on_its_address() {
        let text = hosts("web", Some(Ipv4Addr::new(10, 89, 0, 2)));
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.ends_with("10.89.0.2\tweb\n"));
        assert!(hosts("batch", None).ends_with("127.0.1.1\tbatch\n"));
    }
}
