//! Firewall rules: outbound NAT for a bridge's subnet, DNAT for published
//! ports and the drop of martian 127.0.0.0/8 traffic that route_localnet
//! would let in, all in one nftables table of our own, `ip cradle`.
//!
//! nftables rather than iptables: a table of our own never mixes with the
//! host's rules, a script is applied atomically by `nft -f -`, and this
//! machine's iptables is only a front end to nf_tables anyway. As netavark
//! does, rules go through the `nft` program: its netlink protocol is large
//! and unstable to speak by hand. Every rule carries a comment (its tag),
//! by which it is found and deleted. Callers hold the state lock.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::Error;
use super::ports::PortMapping;
use super::subnet::Subnet;

/// The table's name, in family `ip`.
pub const TABLE: &str = "cradle";

/// The tag of the rule masquerading traffic from 127.0.0.0/8 that DNAT sent
/// out of `lo` (route_localnet), so that the container answers the host.
const LOCALNET_TAG: &str = "cradle-localnet";

/// The chain dropping martians and the tags of its two rules: whatever
/// arrives on an interface other than `lo` to or from 127.0.0.0/8.
///
/// route_localnet, which publishing on 127.0.0.1 needs, also turns off the
/// kernel's martian checks on its interface: a container with CAP_NET_RAW
/// writes a frame to the gateway's MAC addressed to 127.0.0.1 and reaches
/// what the host binds there (CVE-2020-8558), or claims a source in
/// 127.0.0.0/8 (127.0.0.2; the kernel still refuses its own 127.0.0.1).
/// Kubernetes drops the former in INPUT ("block incoming localnet
/// connections"), after NAT, so it has to let DNAT'ed and established
/// connections by. This chain runs at priority raw, before conntrack and
/// NAT, where no packet we need has such an address: the host's packets to
/// a port published on 127.0.0.1 are outgoing (no prerouting) and leave
/// masqueraded to the host's address on the bridge or veth (LOCALNET_TAG),
/// so the container's answers arrive addressed to that and become
/// 127.0.0.1 only at dstnat, after this chain.
const MARTIAN_CHAIN: &str = "martians";
const MARTIAN_DST_TAG: &str = "cradle-martian-dst";
const MARTIAN_SRC_TAG: &str = "cradle-martian-src";

/// The table, its three NAT chains and the localnet rule, and the chain
/// dropping martians; `add` of an existing table or chain is a no-op, a
/// rule is added unless its tag is listed. Runs before any route_localnet
/// is set.
pub fn ensure_base() -> Result<(), Error> {
    let listing = list_table().unwrap_or_default();
    let mut script = format!(
        "add table ip {TABLE}\n\
         add chain ip {TABLE} {MARTIAN_CHAIN} {{ type filter hook prerouting priority raw; policy accept; }}\n\
         add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}\n\
         add chain ip {TABLE} output {{ type nat hook output priority -100; policy accept; }}\n\
         add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
    );
    let rules = [
        (
            MARTIAN_DST_TAG,
            MARTIAN_CHAIN,
            "iifname != \"lo\" ip daddr 127.0.0.0/8 drop",
        ),
        (
            MARTIAN_SRC_TAG,
            MARTIAN_CHAIN,
            "iifname != \"lo\" ip saddr 127.0.0.0/8 drop",
        ),
        (
            LOCALNET_TAG,
            "postrouting",
            "ip saddr 127.0.0.0/8 oifname != \"lo\" masquerade",
        ),
    ];
    for (tag, chain, rule) in rules {
        if !listing.contains(&comment(tag)) {
            script += &format!("add rule ip {TABLE} {chain} {rule} {}\n", comment(tag));
        }
    }
    run_nft(&script)
}

/// The tag of a bridge's outbound NAT rule.
pub fn nat_tag(bridge: &str) -> String {
    format!("cradle-nat-{bridge}")
}

/// Masquerades what leaves the subnet through another interface: the
/// containers reach the world with the host's address. Added once.
pub fn ensure_masquerade(bridge: &str, subnet: Subnet) -> Result<(), Error> {
    let tag = nat_tag(bridge);
    if list_table()?.contains(&comment(&tag)) {
        return Ok(());
    }
    run_nft(&format!(
        "add rule ip {TABLE} postrouting ip saddr {subnet} ip daddr != {subnet} oifname != \"{bridge}\" masquerade {}\n",
        comment(&tag)
    ))
}

/// DNAT for each published port, in prerouting (from outside) and output
/// (from the host itself, 127.0.0.1 included). Without a host address the
/// rule matches every local address (`fib daddr type local`, the
/// `--dst-type LOCAL` of docker's rules).
pub fn add_port_rules(tag: &str, ports: &[PortMapping], to: Ipv4Addr) -> Result<(), Error> {
    let mut script = String::new();
    for p in ports {
        let daddr = p
            .host_ip
            .map(|ip| format!("ip daddr {ip} "))
            .unwrap_or_default();
        let proto = p.protocol.as_str();
        for chain in ["prerouting", "output"] {
            script += &format!(
                "add rule ip {TABLE} {chain} {daddr}fib daddr type local {proto} dport {} dnat to {to}:{} {}\n",
                p.host_port,
                p.container_port,
                comment(tag)
            );
        }
    }
    if script.is_empty() {
        return Ok(());
    }
    run_nft(&script)
}

/// Deletes every rule tagged `tag`; returns how many there were.
pub fn delete_tagged(tag: &str) -> Result<usize, Error> {
    let Ok(listing) = list_table() else {
        return Ok(0);
    };
    let handles = tagged_handles(&listing, tag);
    if handles.is_empty() {
        return Ok(0);
    }
    let script: String = handles
        .iter()
        .map(|(chain, handle)| format!("delete rule ip {TABLE} {chain} handle {handle}\n"))
        .collect();
    run_nft(&script)?;
    Ok(handles.len())
}

/// The rules of our table whose tag starts with `prefix`, as listed.
pub fn count_tagged(prefix: &str) -> usize {
    let listing = list_table().unwrap_or_default();
    listing
        .lines()
        .filter(|l| l.contains(&format!("comment \"{prefix}")))
        .count()
}

/// `(chain, handle)` of the rules tagged exactly `tag` in `nft -a list` output:
/// `chain output { # handle 2` … `… comment "TAG" # handle 7`.
fn tagged_handles(listing: &str, tag: &str) -> Vec<(String, u64)> {
    let wanted = format!("{} # handle ", comment(tag));
    let mut chain = String::new();
    let mut out = Vec::new();
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.split_whitespace().next().unwrap_or("").to_string();
        } else if let Some(at) = line.find(&wanted)
            && let Ok(handle) = line[at + wanted.len()..].trim().parse()
        {
            out.push((chain.clone(), handle));
        }
    }
    out
}

fn comment(tag: &str) -> String {
    format!("comment \"{tag}\"")
}

fn list_table() -> Result<String, Error> {
    let out = Command::new("nft")
        .args(["-a", "list", "table", "ip", TABLE])
        .stderr(Stdio::piped())
        .output()
        .map_err(|source| Error::Firewall {
            script: "list table".into(),
            detail: String::new(),
            source: Some(source),
        })?;
    if !out.status.success() {
        return Err(Error::Firewall {
            script: "list table".into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().into(),
            source: None,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Applies `script` as one transaction.
fn run_nft(script: &str) -> Result<(), Error> {
    let fail = |detail: String, source| Error::Firewall {
        script: script.trim().into(),
        detail,
        source,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(String::new(), Some(e)))?;
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script.as_bytes()));
    let out = child
        .wait_with_output()
        .map_err(|e| fail(String::new(), Some(e)))?;
    if let Some(Err(e)) = written {
        return Err(fail(String::new(), Some(e)));
    }
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().into(),
            None,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_handles_by_exact_tag_per_chain() {
        let listing = r#"table ip cradle { # handle 4
	chain prerouting { # handle 1
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local tcp dport 8080 dnat to 10.89.0.2:80 comment "cradle:b:10.89.0.2" # handle 5
		fib daddr type local tcp dport 8081 dnat to 10.89.0.20:80 comment "cradle:b:10.89.0.20" # handle 6
	}
	chain output { # handle 2
		fib daddr type local tcp dport 8080 dnat to 10.89.0.2:80 comment "cradle:b:10.89.0.2" # handle 7
	}
}"#;
        assert_eq!(
            tagged_handles(listing, "cradle:b:10.89.0.2"),
            [("prerouting".to_string(), 5), ("output".to_string(), 7)]
        );
    }
}
