//! `-v HOST:CTR[:ro]`: the user's bind mounts, mounted last. A target
//! follows the image's symlinks inside the root (as docker's), but one that
//! resolves to the root itself is refused, and a missing one is made only
//! on the image's own filesystem or in the container's `/dev`: never in
//! another volume's host directory. Nothing is made after them.

use super::{Plan, remount_read_only};
use crate::sys::{Node, Resolve, Sys};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::mount::MsFlags;
use std::path::PathBuf;

/// A `-v HOST:CTR[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub host: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    pub node: Node,
    /// Flags of the host mount that a remount must keep (nosuid, nodev,
    /// noexec are locked in a user namespace).
    pub locked: MsFlags,
    /// A named volume made for this run: the image's content at `target`
    /// is copied into it first, as docker does on a volume's first use.
    pub copy_up: bool,
}

pub(super) fn mount_volumes(sys: &impl Sys, plan: &Plan) -> Result<()> {
    for v in &plan.volumes {
        let step = format!(
            "binding volume `{}` on `{}`",
            v.host.display(),
            v.target.display()
        );
        if v.copy_up {
            sys.copy_up_in(&plan.root, &v.target, &v.host)
                .map_err(Error::sys(format!(
                    "copying the image's `{}` into volume `{}`",
                    v.target.display(),
                    v.host.display()
                )))?;
        }
        sys.mount_in(
            &plan.root,
            &v.target,
            v.node,
            Resolve::InRoot,
            Some(&v.host),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(|errno| {
            let why = match errno {
                Errno::EBUSY => ": the target resolves to the container's root",
                Errno::EXDEV => {
                    ": the target is missing and would have to be made inside another \
                     mount (a volume or a system mount); make it in the image or the volume"
                }
                _ => "",
            };
            Error::sys(format!("{step}{why}"))(errno)
        })?;
        if v.read_only {
            remount_read_only(sys, &plan.root, &v.target, v.locked, Resolve::InRoot)?;
        }
    }
    Ok(())
}

/// A `--tmpfs PATH[:OPTIONS]`: a tmpfs of the container's own at `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    pub target: PathBuf,
    pub flags: MsFlags,
    /// tmpfs's own options (`size=…,mode=…`), `size=` always set.
    pub data: String,
}

/// Parses `PATH[:OPTIONS]` as docker does: `noexec,nosuid,nodev` unless the
/// options say `exec`, `suid` or `dev`; `ro`; tmpfs's `size=`, `mode=`,
/// `uid=`, `gid=`, `nr_inodes=`. Without `size=` the tmpfs gets
/// `default_size`, as the writable layer does: nothing a container writes
/// in memory is unbounded.
pub fn parse_tmpfs(spec: &str, default_size: u64) -> Result<Tmpfs> {
    let invalid = |why: &str| Error::Invalid {
        what: "--tmpfs (PATH[:OPTIONS])",
        value: format!("{spec}: {why}"),
    };
    let (path, options) = spec.split_once(':').unwrap_or((spec, ""));
    if !path.starts_with('/') || path == "/" {
        return Err(invalid("the path must be absolute and not `/`"));
    }
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut data: Vec<String> = Vec::new();
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "nodev" => flags |= MsFlags::MS_NODEV,
            _ => {
                let (key, value) = option
                    .split_once('=')
                    .ok_or_else(|| invalid(&format!("unknown option `{option}`")))?;
                let ok = match key {
                    "size" => {
                        let bytes =
                            crate::resources::parse_bytes(value).map_err(|e| invalid(&e))?;
                        if bytes == 0 {
                            return Err(invalid("`size=0` would be unbounded"));
                        }
                        data.push(format!("size={bytes}"));
                        continue;
                    }
                    "nr_inodes" => !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()),
                    "mode" => {
                        !value.is_empty() && value.bytes().all(|b| (b'0'..=b'7').contains(&b))
                    }
                    "uid" | "gid" => value.parse::<u32>().is_ok(),
                    _ => return Err(invalid(&format!("unknown option `{key}`"))),
                };
                if !ok {
                    return Err(invalid(&format!("bad value for `{key}`")));
                }
                data.push(option.to_string());
            }
        }
    }
    if !data.iter().any(|o| o.starts_with("size=")) {
        data.push(format!("size={default_size}"));
    }
    Ok(Tmpfs {
        target: PathBuf::from(path),
        flags,
        data: data.join(","),
    })
}

pub(super) fn mount_tmpfs(sys: &impl Sys, plan: &Plan) -> Result<()> {
    for t in &plan.tmpfs {
        sys.mount_in(
            &plan.root,
            &t.target,
            Node::Dir,
            Resolve::InRoot,
            Some(std::path::Path::new("tmpfs")),
            Some("tmpfs"),
            t.flags,
            Some(&t.data),
        )
        .map_err(Error::sys(format!(
            "mounting a tmpfs on `{}`",
            t.target.display()
        )))?;
    }
    Ok(())
}
