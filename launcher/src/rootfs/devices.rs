//! `--device HOST[:CTR][:rwm]` and `--privileged`'s devices: host device
//! nodes recreated in the container (made with mknod(2) as root, bound from
//! the host in a user namespace), and the matching entries of the device
//! cgroup's allowlist ([`cgroup_rules`]), which without them denies every
//! device but docker's defaults.

use super::DevNodes;
use crate::cgroups::devices::{self, Kind, Rule};
use crate::sys::{Node, Resolve, Sys};
use crate::{Error, Options, Result};
use nix::mount::MsFlags;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A host device given to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub host: PathBuf,
    /// Where it appears in the container (absolute).
    pub target: PathBuf,
    pub kind: Kind,
    pub major: u32,
    pub minor: u32,
    /// The host node's permission bits.
    pub mode: u32,
    /// What the cgroup allows: [`devices::READ`], `WRITE`, `MKNOD` or'ed.
    pub access: u8,
}

impl Device {
    pub fn rule(&self) -> Rule {
        Rule {
            kind: self.kind,
            major: Some(self.major),
            minor: Some(self.minor),
            access: self.access,
        }
    }
}

/// The devices of `opts`: every host device with `--privileged`, then each
/// `--device`.
pub fn plan(opts: &Options) -> Result<Vec<Device>> {
    let mut out = if opts.privileged {
        host_devices(Path::new("/dev"))
    } else {
        Vec::new()
    };
    for spec in &opts.devices {
        let device = parse(spec)?;
        out.retain(|d| d.target != device.target);
        out.push(device);
    }
    // Checked here too, before anything is made; applied by cgroup_rules.
    for spec in &opts.device_cgroup_rules {
        parse_rule(spec)?;
    }
    Ok(out)
}

/// The device cgroup's allowlist for `opts`: docker's defaults and the
/// `--device`s; every device with `--privileged`.
pub fn cgroup_rules(opts: &Options) -> Result<Vec<Rule>> {
    if opts.privileged {
        return Ok(vec![
            Rule {
                kind: Kind::Char,
                major: None,
                minor: None,
                access: devices::RWM,
            },
            Rule {
                kind: Kind::Block,
                major: None,
                minor: None,
                access: devices::RWM,
            },
        ]);
    }
    let mut rules = devices::ALLOWED.to_vec();
    for spec in &opts.devices {
        rules.push(parse(spec)?.rule());
    }
    for spec in &opts.device_cgroup_rules {
        rules.extend(parse_rule(spec)?);
    }
    Ok(rules)
}

/// `--device-cgroup-rule`: the v1 `devices.allow` syntax, `c 1:3 rwm`,
/// `b 8:* r`, `a` (every device, as `a *:* rwm`).
pub fn parse_rule(spec: &str) -> Result<Vec<Rule>> {
    let bad = || Error::Flag {
        flag: "--device-cgroup-rule",
        value: spec.into(),
        why: "invalid device cgroup format (want `c|b|a MAJOR:MINOR rwm`)".into(),
    };
    let words: Vec<&str> = spec.split_whitespace().collect();
    let number = |n: &str| match n {
        "*" => Ok(None),
        _ => n.parse::<u32>().map(Some).map_err(|_| bad()),
    };
    let (kinds, major, minor, access) = match words[..] {
        ["a"] => (vec![Kind::Char, Kind::Block], None, None, "rwm"),
        [kind, numbers, access] => {
            let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
            let kinds = match kind {
                "c" => vec![Kind::Char],
                "b" => vec![Kind::Block],
                "a" => vec![Kind::Char, Kind::Block],
                _ => return Err(bad()),
            };
            (kinds, number(major)?, number(minor)?, access)
        }
        _ => return Err(bad()),
    };
    if access.is_empty() || !access.chars().all(|c| "rwm".contains(c)) {
        return Err(bad());
    }
    let bits = [
        ('r', devices::READ),
        ('w', devices::WRITE),
        ('m', devices::MKNOD),
    ];
    let access = bits
        .iter()
        .filter(|(c, _)| access.contains(*c))
        .fold(0, |acc, (_, b)| acc | b);
    Ok(kinds
        .into_iter()
        .map(|kind| Rule {
            kind,
            major,
            minor,
            access,
        })
        .collect())
}

/// `HOST[:CTR][:rwm]`, docker's syntax: a second field made only of `r`,
/// `w` and `m` is the access; the host path must be a device node (a
/// symlink to one is followed, as `/dev/disk/by-id/…` are).
pub fn parse(spec: &str) -> Result<Device> {
    let bad = |why: String| Error::Flag {
        flag: "--device",
        value: spec.into(),
        why,
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let is_access = |s: &str| !s.is_empty() && s.len() <= 3 && s.chars().all(|c| "rwm".contains(c));
    let (host, target, access) = match parts[..] {
        [h] => (h, h, "rwm"),
        [h, a] if is_access(a) => (h, h, a),
        [h, c] => (h, c, "rwm"),
        [h, c, a] => (h, c, a),
        _ => return Err(bad("bad format (want HOST[:CONTAINER][:rwm])".into())),
    };
    if !is_access(access) {
        return Err(bad(format!("invalid device mode: {access}")));
    }
    if !host.starts_with('/') || !target.starts_with('/') || target.split('/').any(|c| c == "..") {
        return Err(bad("paths must be absolute, without `..`".into()));
    }
    let meta = std::fs::metadata(host)
        .map_err(|e| bad(format!("error gathering device information: {e}")))?;
    let kind = if meta.file_type().is_char_device() {
        Kind::Char
    } else if meta.file_type().is_block_device() {
        Kind::Block
    } else {
        return Err(bad(format!("`{host}` is not a device node")));
    };
    let bits = [
        ('r', devices::READ),
        ('w', devices::WRITE),
        ('m', devices::MKNOD),
    ];
    Ok(Device {
        host: host.into(),
        target: target.into(),
        kind,
        major: libc::major(meta.rdev()),
        minor: libc::minor(meta.rdev()),
        mode: meta.mode() & 0o7777,
        access: bits
            .iter()
            .filter(|(c, _)| access.contains(*c))
            .fold(0, |acc, (_, b)| acc | b),
    })
}

/// Every device node below `dir`, as runc's privileged containers get them:
/// not the ptys (the container has its own devpts), not the nodes every
/// container has ([`super::dev::DEVICES`]), not what lies below a hidden
/// directory, not symlinks.
fn host_devices(dir: &Path) -> Vec<Device> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let file_type = meta.file_type();
        if file_type.is_dir() {
            if !name.starts_with('.') && !["pts", "shm", "mqueue"].contains(&name.as_str()) {
                out.extend(host_devices(&path));
            }
            continue;
        }
        let kind = if file_type.is_char_device() {
            Kind::Char
        } else if file_type.is_block_device() {
            Kind::Block
        } else {
            continue;
        };
        let standard = dir == Path::new("/dev")
            && (super::dev::DEVICES.iter().any(|(n, _, _)| *n == name)
                || ["ptmx", "console"].contains(&name.as_str()));
        if standard {
            continue;
        }
        out.push(Device {
            host: path.clone(),
            target: path,
            kind,
            major: libc::major(meta.rdev()),
            minor: libc::minor(meta.rdev()),
            mode: meta.mode() & 0o7777,
            access: devices::RWM,
        });
    }
    out
}

/// Makes each device at its target, after `/dev` is mounted: mknod as
/// root, a bind of the host's node in a user namespace (where mknod is
/// refused). A missing parent directory is made inside the root.
pub(super) fn make_devices(
    sys: &impl Sys,
    root: &Path,
    list: &[Device],
    nodes: DevNodes,
) -> Result<()> {
    for d in list {
        let step = || format!("making device `{}`", d.target.display());
        if let Some(parent) = d.target.parent().filter(|p| *p != Path::new("/")) {
            sys.mkdir_in(root, parent).map_err(Error::sys(step()))?;
        }
        match nodes {
            DevNodes::Mknod => {
                let kind = match d.kind {
                    Kind::Char => libc::S_IFCHR,
                    Kind::Block => libc::S_IFBLK,
                };
                sys.mknod_in(
                    root,
                    &d.target,
                    kind | d.mode,
                    libc::makedev(d.major, d.minor),
                )
            }
            DevNodes::Bind => sys.mount_in(
                root,
                &d.target,
                Node::File,
                Resolve::InRoot,
                Some(&d.host),
                None,
                MsFlags::MS_BIND,
                None,
            ),
        }
        .map_err(Error::sys(step()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_specs_read_like_dockers() {
        let d = parse("/dev/null").unwrap();
        assert_eq!(
            (d.target.as_path(), d.kind, d.major, d.minor, d.access),
            (Path::new("/dev/null"), Kind::Char, 1, 3, devices::RWM)
        );
        let d = parse("/dev/zero:r").unwrap();
        assert_eq!(
            (d.target.as_path(), d.access),
            (Path::new("/dev/zero"), devices::READ)
        );
        let d = parse("/dev/zero:/dev/nothing:rw").unwrap();
        assert_eq!(
            (d.target.as_path(), d.access),
            (Path::new("/dev/nothing"), devices::READ | devices::WRITE)
        );
        for (spec, want) in [
            ("/dev/zero:/x:rwx", "invalid device mode: rwx"),
            ("/etc/passwd", "is not a device node"),
            ("/nonexistent", "error gathering device information"),
            ("dev/zero", "absolute"),
            ("/dev/zero:/dev/../etc/x", "absolute"),
            ("/a:/b:r:w", "bad format"),
        ] {
            let err = parse(spec).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(spec), "{spec}: {err}");
        }
    }

    #[test]
    fn device_cgroup_rules_read_like_v1_lines() {
        let lines = |spec| {
            parse_rule(spec)
                .unwrap()
                .iter()
                .map(Rule::v1_line)
                .collect::<Vec<_>>()
        };
        assert_eq!(lines("c 1:3 rwm"), ["c 1:3 rwm"]);
        assert_eq!(lines("b 8:* r"), ["b 8:* r"]);
        assert_eq!(lines("a"), ["c *:* rwm", "b *:* rwm"]);
        for bad in [
            "",
            "c 1:3",
            "x 1:3 rwm",
            "c 1-3 rwm",
            "c 1:3 rwx",
            "c a:3 r",
        ] {
            let err = parse_rule(bad).unwrap_err().to_string();
            assert!(err.contains("invalid device cgroup format"), "{bad}: {err}");
        }
    }

    #[test]
    fn privileged_allows_every_device_and_devices_add_rules() {
        let opts = Options {
            devices: vec!["/dev/zero:/dev/z:r".into()],
            ..Default::default()
        };
        let rules = cgroup_rules(&opts).unwrap();
        assert_eq!(rules.len(), devices::ALLOWED.len() + 1);
        assert_eq!(rules.last().unwrap().v1_line(), "c 1:5 r");
        let privileged = Options {
            privileged: true,
            ..Default::default()
        };
        let lines: Vec<String> = cgroup_rules(&privileged)
            .unwrap()
            .iter()
            .map(Rule::v1_line)
            .collect();
        assert_eq!(lines, ["c *:* rwm", "b *:* rwm"]);
    }
}
