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

#[cfg(test)]
mod tests {
    use super::*;

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
