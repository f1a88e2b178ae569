//! `--cap-add`, `--cap-drop`, `--privileged`: which capabilities the
//! workload gets, by docker's rules (moby `oci/caps/utils.go`,
//! TweakCapabilities): `ALL` in `--cap-add` starts from every capability
//! less the dropped ones, `ALL` in `--cap-drop` starts from nothing plus the
//! added ones, otherwise the default set less the dropped plus the added.
//! Names are matched without case, with or without `CAP_`.

use crate::exec::DEFAULT_CAPS;
use crate::sys::Cap;
use crate::{Error, Result};

/// Every capability by number (linux/capability.h), up to
/// CAP_CHECKPOINT_RESTORE (Linux 5.9).
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability named `name` (`net_admin`, `CAP_NET_ADMIN`), or None.
pub fn number(name: &str) -> Option<Cap> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|n| n as Cap)
}

/// `CAP_NET_ADMIN` for 12.
pub fn name(cap: Cap) -> String {
    NAMES
        .get(cap as usize)
        .map_or_else(|| format!("CAP_{cap}"), |n| format!("CAP_{n}"))
}

/// Every capability the launcher itself may hand out: those of its own
/// bounding set, of those we know. capset(2) refuses the rest (the kernel's
/// unknown bits, or what the launcher's own parent dropped), as docker
/// gives a privileged container only what the daemon holds.
pub fn all() -> Vec<Cap> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    (0..NAMES.len() as Cap)
        .filter(|c| bounding & (1 << c) != 0)
        .collect()
}

/// The workload's capabilities for `--cap-add add`, `--cap-drop drop` and
/// `--privileged`, in ascending order. An unknown name is an error naming
/// it and its flag, as docker's `unknown capability: "CAP_FOO"`.
pub fn resolve(add: &[String], drop: &[String], privileged: bool) -> Result<Vec<Cap>> {
    let add = parse_list("--cap-add", add)?;
    let drop = parse_list("--cap-drop", drop)?;
    let mut caps: Vec<Cap> = if privileged {
        all()
    } else if add.contains(&None) {
        all()
            .into_iter()
            .filter(|c| !drop.contains(&Some(*c)))
            .collect()
    } else if drop.contains(&None) {
        add.iter().flatten().copied().collect()
    } else {
        DEFAULT_CAPS
            .iter()
            .copied()
            .filter(|c| !drop.contains(&Some(*c)))
            .chain(add.iter().flatten().copied())
            .collect()
    };
    caps.sort_unstable();
    caps.dedup();
    Ok(caps)
}

/// Each name as a capability, `ALL` as None.
fn parse_list(flag: &'static str, names: &[String]) -> Result<Vec<Option<Cap>>> {
    names
        .iter()
        .map(|n| {
            if n.trim().eq_ignore_ascii_case("all") {
                return Ok(None);
            }
            number(n).map(Some).ok_or_else(|| Error::UnknownCapability {
                flag,
                name: n.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names_match_without_case_and_prefix() {
        assert_eq!(number("net_admin"), Some(12));
        assert_eq!(number("CAP_NET_ADMIN"), Some(12));
        assert_eq!(number("cap_sys_admin"), Some(21));
        assert_eq!(number("checkpoint_restore"), Some(40));
        assert_eq!(number("CAP_"), None);
        assert_eq!(number("NET_ADMINX"), None);
        assert_eq!(name(21), "CAP_SYS_ADMIN");
    }

    #[test]
    fn add_and_drop_follow_dockers_rules() {
        let default = resolve(&[], &[], false).unwrap();
        assert_eq!(default, DEFAULT_CAPS.to_vec());
        let caps = resolve(&s(&["net_admin"]), &s(&["CAP_CHOWN", "kill"]), false).unwrap();
        assert!(caps.contains(&12) && !caps.contains(&0) && !caps.contains(&5));
        assert_eq!(caps.len(), DEFAULT_CAPS.len() - 1);
        // ALL in --cap-drop: only what is added.
        assert_eq!(resolve(&s(&["chown"]), &s(&["ALL"]), false).unwrap(), [0]);
        assert!(resolve(&[], &s(&["all"]), false).unwrap().is_empty());
        // ALL in --cap-add: everything but what is dropped.
        let caps = resolve(&s(&["ALL"]), &s(&["sys_admin"]), false).unwrap();
        assert!(!caps.contains(&21) && caps.contains(&12) && caps.len() > 30);
        assert!(resolve(&[], &[], true).unwrap().contains(&21));
    }

    #[test]
    fn unknown_names_are_refused_naming_them() {
        let err = resolve(&s(&["CAP_FOO"]), &[], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --cap-add: unknown capability: \"CAP_FOO\""
        );
        let err = resolve(&[], &s(&["bar"]), false).unwrap_err();
        assert!(err.to_string().contains("--cap-drop"), "{err}");
    }
}
