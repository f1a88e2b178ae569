//! `/sys/fs/cgroup`: the container's own cgroup, read-only, mounted in its
//! cgroup namespace after `/sys` and its masks. What to mount is decided by
//! the parent from the host's mounts and the container's cgroup
//! ([`crate::cgroups::mountinfo`]).

use super::{NOSUID_NODEV_NOEXEC, remount_read_only};
use crate::sys::{Node, Resolve, Sys};
use crate::{Error, Result};
use nix::mount::MsFlags;
use std::path::Path;

/// Where the container's cgroup filesystem goes.
pub const CGROUP_DIR: &str = "/sys/fs/cgroup";

/// The container's `/sys/fs/cgroup`, mounted in its cgroup namespace so
/// that its own cgroup is the root it sees (cgroup_namespaces(7)). Decided by
/// the parent from the host's mounts, as runc and crun do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CgroupFs {
    /// Nothing mounted: the image's empty directory stays.
    #[default]
    Skip,
    /// cgroup v2 at `/sys/fs/cgroup`.
    Unified,
    /// cgroup v1: a tmpfs at `/sys/fs/cgroup` holding one `cgroup` mount per
    /// host hierarchy the container has a cgroup of its own in, and the
    /// host's symlinks to those (`cpu -> cpu,cpuacct`).
    Legacy {
        /// (directory under `/sys/fs/cgroup`, mount options), as on the host.
        hierarchies: Vec<(String, String)>,
        /// (link name, target).
        links: Vec<(String, String)>,
    },
}

/// Mounted after `/sys`, in the cgroup namespace the child unshared once in
/// its cgroup: a cgroup filesystem mounted there has that cgroup as its root.
///
/// With the host's `/sys` bound (`--network host`), `/sys/fs/cgroup` is the
/// host's whole tree: it is covered first by an empty tmpfs, so that nothing
/// of the host's tree shows, and so that cgroup2 can go on top (the same
/// filesystem mounted again on its own mount point is EBUSY).
pub(super) fn mount_cgroup_fs(
    sys: &impl Sys,
    root: &Path,
    fs: &CgroupFs,
    host_sys: bool,
) -> Result<()> {
    let dir = Path::new(CGROUP_DIR);
    let ro = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
    let cover = |flags: MsFlags| {
        sys.mount_in(
            root,
            dir,
            Node::Dir,
            Resolve::NoSymlinks,
            Some(Path::new("tmpfs")),
            Some("tmpfs"),
            flags,
            Some("mode=755"),
        )
        .map_err(Error::sys("mounting a tmpfs on `/sys/fs/cgroup`"))
    };
    match fs {
        CgroupFs::Skip if host_sys => cover(ro),
        CgroupFs::Skip => Ok(()),
        CgroupFs::Unified => {
            if host_sys {
                cover(ro)?;
            }
            sys.mount_in(
                root,
                dir,
                Node::Dir,
                Resolve::NoSymlinks,
                Some(Path::new("cgroup2")),
                Some("cgroup2"),
                ro,
                None,
            )
            .map_err(Error::sys("mounting `cgroup2` on `/sys/fs/cgroup`"))
        }
        CgroupFs::Legacy { hierarchies, links } => {
            cover(NOSUID_NODEV_NOEXEC)?;
            for (name, options) in hierarchies {
                let target = dir.join(name);
                sys.mount_in(
                    root,
                    &target,
                    Node::Dir,
                    Resolve::NoSymlinks,
                    Some(Path::new("cgroup")),
                    Some("cgroup"),
                    ro,
                    Some(options),
                )
                .map_err(Error::sys(format!(
                    "mounting cgroup `{options}` on `{}`",
                    target.display()
                )))?;
            }
            for (name, target) in links {
                let link = dir.join(name);
                sys.symlink_in(root, target, &link)
                    .map_err(Error::sys(format!(
                        "linking `{}` to `{target}`",
                        link.display()
                    )))?;
            }
            // Read-only only once populated: the tmpfs had to take the
            // mount points and links first.
            remount_read_only(sys, root, dir, NOSUID_NODEV_NOEXEC, Resolve::NoSymlinks)
        }
    }
}
