//! `/dev`: a tmpfs of the container's own with the six usual nodes, a
//! devpts instance, `/dev/shm`, `/dev/mqueue` and the standard links.
//!
//! As root without a user namespace the nodes are made with mknod(2), as
//! runc does: they are the container's inodes, so `chmod 000 /dev/null`
//! inside changes nothing on the host. In a user namespace mknod is refused,
//! so the host's nodes are bound; there the container cannot chown or chmod
//! them (their owner is not mapped).

use super::{NOSUID_NODEV_NOEXEC, mount_system};
use crate::sys::{Node, Resolve, Sys};
use crate::{Error, Result};
use nix::mount::MsFlags;
use std::path::Path;

/// The nodes of the container's /dev: name, major, minor (devices.txt).
pub const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// How the nodes of [`DEVICES`] get into the container's `/dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevNodes {
    /// mknod(2), mode 0666: root in the host's user namespace.
    #[default]
    Mknod,
    /// Bind mounts of the host's nodes: inside a user namespace.
    Bind,
}

pub(super) fn mount_dev(sys: &impl Sys, plan: &super::Plan) -> Result<()> {
    let (root, tty_gid, nodes) = (plan.root.as_path(), plan.tty_gid, plan.dev_nodes);
    // Without --shm-size, docker's 64 MiB.
    let shm = format!(
        "mode=1777,size={}",
        plan.flags
            .shm_size
            .map_or("65536k".to_string(), |n| n.to_string())
    );
    mount_system(
        sys,
        root,
        Path::new("/dev"),
        ("tmpfs", libc::TMPFS_MAGIC),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for &(name, major, minor) in DEVICES {
        let node = Path::new("/dev").join(name);
        match nodes {
            DevNodes::Mknod => sys
                .mknod_in(
                    root,
                    &node,
                    0o666,
                    libc::makedev(major as u32, minor as u32),
                )
                .map_err(Error::sys(format!("making `{}`", node.display()))),
            DevNodes::Bind => sys
                .mount_in(
                    root,
                    &node,
                    Node::File,
                    Resolve::NoSymlinks,
                    Some(&node),
                    None,
                    MsFlags::MS_BIND,
                    None,
                )
                .map_err(Error::sys(format!("binding `{}`", node.display()))),
        }?;
    }
    // A devpts instance of our own: the container's ptys are not the host's,
    // and /dev/ptmx points into it (devpts(5), "newinstance").
    let mut pts = String::from("newinstance,ptmxmode=0666,mode=0620");
    if let Some(gid) = tty_gid {
        pts.push_str(&format!(",gid={gid}"));
    }
    for (target, src, fstype, flags, data) in [
        (
            "/dev/pts",
            "devpts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(pts.as_str()),
        ),
        (
            "/dev/shm",
            "shm",
            "tmpfs",
            NOSUID_NODEV_NOEXEC,
            Some(shm.as_str()),
        ),
        ("/dev/mqueue", "mqueue", "mqueue", NOSUID_NODEV_NOEXEC, None),
    ] {
        sys.mount_in(
            root,
            Path::new(target),
            Node::Dir,
            Resolve::NoSymlinks,
            Some(Path::new(src)),
            Some(fstype),
            flags,
            data,
        )
        .map_err(Error::sys(format!("mounting `{fstype}` on `{target}`")))?;
    }
    for (target, link) in [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        sys.symlink_in(root, target, Path::new(link))
            .map_err(Error::sys(format!("linking `{link}` to `{target}`")))?;
    }
    Ok(())
}
