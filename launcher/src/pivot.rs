//! Step 6, pivot: the assembled rootfs becomes `/` and the old root is
//! detached, so nothing of the host's tree stays reachable.

use crate::sys::Sys;
use crate::{Error, Result};
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::path::Path;

/// pivot_root(".", ".") stacks the old root on top of the new one; unmounting
/// "." then drops the old root without needing a directory for it
/// (pivot_root(2), NOTES). runc and LXC do the same. `/` was made a recursive
/// slave first (see [`crate::rootfs::prepare`]), so the detach does not
/// propagate to the host.
///
/// pivot_root is impossible when `/` is the initial ramfs (EINVAL: the
/// rootfs cannot be unmounted), as in a VM booted into its initramfs; only
/// then the root is moved over `/` and entered with chroot, as runc's
/// `--no-pivot` does, after detaching every mount outside the new root
/// (what pivot_root's umount would have dropped), so that even a chroot
/// escape finds nothing of the host's tree but the covered ramfs.
pub fn into(sys: &impl Sys, root: &Path) -> Result<()> {
    let dot = Path::new(".");
    sys.chdir(root)
        .map_err(Error::sys(format!("entering `{}`", root.display())))?;
    match sys.pivot_root(dot, dot) {
        Ok(()) => sys
            .umount2(dot, MntFlags::MNT_DETACH)
            .map_err(Error::sys("detaching the old root"))?,
        Err(Errno::EINVAL) if is_initramfs(sys) => move_root(sys, root)?,
        Err(e) => {
            return Err(Error::sys(format!("pivot_root into `{}`", root.display()))(
                e,
            ));
        }
    }
    sys.chdir(Path::new("/"))
        .map_err(Error::sys("entering the new `/`"))
}

/// Whether `/` is the initial ramfs (ramfs, or tmpfs with
/// `rootfstype=tmpfs`), where pivot_root cannot work.
pub fn is_initramfs(sys: &impl Sys) -> bool {
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let root = Path::new("/");
    let ramfs =
        matches!(sys.fs_type_in(root, root), Ok(t) if t == RAMFS_MAGIC || t == libc::TMPFS_MAGIC);
    // A tmpfs `/` that is not the first mount (a container's own) can pivot.
    ramfs
        && sys
            .mount_points()
            .is_ok_and(|points| points.first().is_some_and(|p| p == root))
}

/// The no-pivot path: detach every mount that is neither the new root, below
/// it, nor above it (deepest first), move the root over `/`, chroot into it.
fn move_root(sys: &impl Sys, root: &Path) -> Result<()> {
    let points = sys
        .mount_points()
        .map_err(Error::sys("reading the mount points"))?;
    let outside = points
        .iter()
        .rev()
        .filter(|p| !p.starts_with(root) && !root.starts_with(p));
    for point in outside {
        match sys.umount2(point, MntFlags::MNT_DETACH) {
            // Already gone with a parent detached before it.
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::sys(format!("detaching `{}`", point.display()))(e));
            }
        }
    }
    sys.mount(
        Some(Path::new(".")),
        Path::new("/"),
        None,
        MsFlags::MS_MOVE,
        None,
    )
    .map_err(Error::sys(format!("moving `{}` over `/`", root.display())))?;
    sys.chroot(Path::new("."))
        .map_err(Error::sys(format!("chroot into `{}`", root.display())))
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
            flags: Default::default(),
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

    #[test]
    fn initramfs_root_falls_back_to_moving_the_root_and_chroot() {
        let fake = Fake {
            pivot_fails: true,
            mount_points: vec![
                "/".into(),
                "/proc".into(),
                "/c".into(),
                "/c/rootfs".into(),
                "/c/rootfs/proc".into(),
                "/sys".into(),
            ],
            ..Default::default()
        };
        // The fake's statfs of an unmounted path answers 0: make `/` look
        // like the ramfs by "mounting" it.
        fake.mounted.borrow_mut().push(("/".into(), "tmpfs".into()));
        into(&fake, Path::new("/c/rootfs")).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Call::Chdir("/c/rootfs".into()),
                Call::PivotRoot(".".into(), ".".into()),
                Call::Umount2("/sys".into(), MntFlags::MNT_DETACH),
                Call::Umount2("/proc".into(), MntFlags::MNT_DETACH),
                Call::Mount {
                    src: Some(".".into()),
                    dst: "/".into(),
                    fstype: None,
                    flags: MsFlags::MS_MOVE,
                    data: None
                },
                Call::Chroot(".".into()),
                Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn pivot_root_failing_elsewhere_is_an_error_not_a_fallback() {
        let fake = Fake {
            pivot_fails: true,
            mount_points: vec!["/".into()],
            ..Default::default()
        };
        let err = into(&fake, Path::new("/c/rootfs")).unwrap_err();
        assert!(err.to_string().contains("pivot_root into"), "{err}");
    }
}
