//! `--sysctl NAME=VALUE`: kernel parameters of the container's own
//! namespaces only, as docker (runc's `validateSysctl`) allows them: IPC
//! (`kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`), UTS
//! (`kernel.domainname`), and `net.*` when the container has a network
//! namespace of its own. Anything else would change the host, and is
//! refused before anything is made. The child writes them under the
//! container's /proc/sys before it turns read-only.

use crate::{Error, Result};
use std::path::PathBuf;

/// IPC namespace sysctls (ipc_namespaces(7)), by full name.
const IPC: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Each `NAME=VALUE` as its path below the container's root and its value.
pub fn parse(specs: &[String], new_net: bool) -> Result<Vec<(PathBuf, String)>> {
    specs.iter().map(|spec| parse_one(spec, new_net)).collect()
}

fn parse_one(spec: &str, new_net: bool) -> Result<(PathBuf, String)> {
    let bad = |why: &str| Error::Flag {
        flag: "--sysctl",
        value: spec.into(),
        why: why.into(),
    };
    let (name, value) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=VALUE"))?;
    // runc accepts `net/ipv4/ip_forward` too.
    let name = name.trim().replace('/', ".");
    if name.split('.').any(|part| part.is_empty() || part == "..") || name.contains('\0') {
        return Err(bad("not a sysctl name"));
    }
    if value.contains(['\n', '\0']) {
        return Err(bad("the value must be one line"));
    }
    let namespaced = IPC.contains(&name.as_str())
        || name.starts_with("fs.mqueue.")
        || name == "kernel.domainname";
    if name.starts_with("net.") {
        if !new_net {
            return Err(bad(
                "sysctl not allowed in the host's network namespace (--network host)",
            ));
        }
    } else if !namespaced {
        return Err(bad(
            "sysctl is not in a separate kernel namespace of the container; it would change \
             the host (allowed: net.*, kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, \
             kernel.domainname)",
        ));
    }
    let path = PathBuf::from("/proc/sys").join(name.replace('.', "/"));
    Ok((path, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_sysctls_pass() {
        let ok = parse(
            &[
                "net.ipv4.ip_unprivileged_port_start=80".into(),
                "kernel.shmmax=1000000".into(),
                "fs.mqueue.msg_max=20".into(),
                "net/ipv4/ping_group_range=0 2147483647".into(),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            ok[0],
            (
                "/proc/sys/net/ipv4/ip_unprivileged_port_start".into(),
                "80".into()
            )
        );
        assert_eq!(ok[3].1, "0 2147483647");
        for (spec, new_net, want) in [
            ("kernel.core_pattern=|/x", true, "would change the host"),
            ("vm.overcommit_memory=1", true, "would change the host"),
            ("net.ipv4.ip_forward=1", false, "host's network namespace"),
            ("kernel.shmmax", true, "NAME=VALUE"),
            ("net..x=1", true, "not a sysctl name"),
            ("net.ipv4.ip_forward=1\n2", true, "one line"),
        ] {
            let err = parse(&[spec.into()], new_net).unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }
}
