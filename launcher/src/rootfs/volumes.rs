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
}

pub(super) fn mount_volumes(sys: &impl Sys, plan: &Plan) -> Result<()> {
    for v in &plan.volumes {
        let step = format!(
            "binding volume `{}` on `{}`",
            v.host.display(),
            v.target.display()
        );
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
