//! `/sys`: read-only, at the image's real `/sys` directory, with docker's
//! masks. A new network namespace gets a sysfs of its own (checked to be
//! sysfs once mounted); the host's network namespace gets the host's `/sys`
//! bound read-only, as rootless podman does, since sysfs cannot be mounted
//! afresh there without owning the network namespace.

use super::proc::mask_paths;
use super::{NOSUID_NODEV_NOEXEC, mount_system, remount_read_only, system_target_error};
use crate::Result;
use crate::sys::{Node, Resolve, Sys};
use nix::mount::MsFlags;
use std::path::Path;

pub(super) fn mount_sys(sys: &impl Sys, plan: &super::Plan) -> Result<()> {
    let (root, fresh, nodes) = (plan.root.as_path(), plan.fresh_sysfs, plan.dev_nodes);
    let privileged = plan.flags.privileged;
    let target = Path::new("/sys");
    if fresh {
        // docker --privileged: writable, unmasked.
        let read_only = match privileged {
            true => MsFlags::empty(),
            false => MsFlags::MS_RDONLY,
        };
        mount_system(
            sys,
            root,
            target,
            ("sysfs", libc::SYSFS_MAGIC),
            read_only | NOSUID_NODEV_NOEXEC,
            None,
        )?;
        if privileged {
            return Ok(());
        }
    } else {
        sys.mount_in(
            root,
            target,
            Node::Dir,
            Resolve::NoSymlinks,
            Some(Path::new("/sys")),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(|e| system_target_error("binding the host's `/sys`".into(), target, e))?;
        if privileged {
            return Ok(());
        }
        remount_read_only(sys, root, target, NOSUID_NODEV_NOEXEC, Resolve::NoSymlinks)?;
    }
    if plan.flags.unmasked {
        return Ok(());
    }
    mask_paths(sys, root, "/sys", nodes)
}
