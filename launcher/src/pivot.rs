//! Step 6, pivot: the assembled rootfs becomes `/` and the old root is
//! detached, so nothing of the host's tree stays reachable.

use crate::sys::Sys;
use crate::{Error, Result};
use nix::mount::MntFlags;
use std::path::Path;

/// pivot_root(".", ".") stacks the old root on top of the new one; unmounting
/// "." then drops the old root without needing a directory for it
/// (pivot_root(2), NOTES). runc and LXC do the same. `/` was made a recursive
/// slave first (see [`crate::rootfs::prepare`]), so the detach does not
/// propagate to the host.
pub fn into(sys: &impl Sys, root: &Path) -> Result<()> {
    let dot = Path::new(".");
    sys.chdir(root)
        .map_err(Error::sys(format!("entering `{}`", root.display())))?;
    sys.pivot_root(dot, dot)
        .map_err(Error::sys(format!("pivot_root into `{}`", root.display())))?;
    sys.umount2(dot, MntFlags::MNT_DETACH)
        .map_err(Error::sys("detaching the old root"))?;
    sys.chdir(Path::new("/"))
        .map_err(Error::sys("entering the new `/`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs;
    use crate::sys::fake::{Call, Fake};
    use nix::mount::MsFlags;

    #[test]
    fn pivots_with_dot_dot_and_detaches_the_old_root() {
        let fake = Fake::default();
        into(&fake, Path::new("/c/rootfs")).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Call::Chdir("/c/rootfs".into()),
                Call::PivotRoot(".".into(), ".".into()),
                Call::Umount2(".".into(), MntFlags::MNT_DETACH),
                Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn root_is_a_slave_and_bound_before_the_pivot() {
        let fake = Fake::default();
        let plan = rootfs::Plan {
            state: "/c".into(),
            in_memory: false,
            storage_size: "1g".into(),
            root: "/c/rootfs".into(),
            overlay: rootfs::Overlay {
                lower: vec!["/l".into()],
                upper: "/u".into(),
                work: "/w".into(),
                userxattr: true,
            },
            volumes: vec![],
            tmpfs: vec![],
            init: None,
            etc: vec![],
            read_only: false,
            fresh_sysfs: true,
            tty_gid: None,
            dev_nodes: rootfs::DevNodes::Bind,
            workdir: None,
            idmapped_layers: None,
            cgroup_fs: rootfs::CgroupFs::Skip,
        };
        rootfs::prepare(&fake, &plan).unwrap();
        into(&fake, &plan.root).unwrap();
        let calls = fake.calls();
        let n = calls.len();
        assert_eq!(
            calls[0],
            Call::Mount {
                src: None,
                dst: "/".into(),
                fstype: None,
                flags: MsFlags::MS_REC | MsFlags::MS_SLAVE,
                data: None
            }
        );
        assert_eq!(
            calls[9],
            Call::Mount {
                src: Some("/c/rootfs".into()),
                dst: "/c/rootfs".into(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None
            }
        );
        assert_eq!(calls[n - 3], Call::PivotRoot(".".into(), ".".into()));
    }
}
