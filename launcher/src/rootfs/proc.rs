//! `/proc`: the container's procfs at the image's real `/proc` directory,
//! checked to be procfs once mounted, with docker's masked and read-only
//! paths. A mask or read-only path is looked up without following any
//! symlink, below a procfs (or sysfs) that was just checked, so "absent"
//! can only mean this kernel has no such file; anything else is an error,
//! never a silent skip.

use super::{DevNodes, NOSUID_NODEV_NOEXEC, mount_system, remount_read_only, system_target_error};
use crate::Result;
use crate::sys::{Node, Resolve, Sys};
use nix::mount::MsFlags;
use std::path::Path;

/// Docker's masked paths: bound over with the container's `/dev/null`
/// (files) or an empty read-only tmpfs (directories).
pub const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub(super) fn mount_proc(
    sys: &impl Sys,
    root: &Path,
    nodes: DevNodes,
    flags: &super::Flags,
) -> Result<()> {
    mount_system(
        sys,
        root,
        Path::new("/proc"),
        ("proc", libc::PROC_SUPER_MAGIC),
        NOSUID_NODEV_NOEXEC,
        None,
    )?;
    // Before /proc/sys turns read-only; their names were checked to be
    // of the container's own namespaces (crate::sysctl).
    for (path, value) in &flags.sysctls {
        sys.write_in(root, path, value.as_bytes())
            .map_err(crate::Error::sys(format!(
                "setting sysctl `{}`",
                path.display()
            )))?;
    }
    if flags.privileged || flags.unmasked {
        // docker --privileged or systempaths=unconfined: no masks,
        // /proc/sys writable.
        return Ok(());
    }
    mask_paths(sys, root, "/proc", nodes)?;
    for path in READ_ONLY {
        let path = Path::new(path);
        let step = || format!("making `{}` read-only", path.display());
        match sys.kind_in(root, path) {
            Ok(None) => continue,
            Ok(Some(_)) => {}
            Err(e) => return Err(system_target_error(step(), path, e)),
        }
        sys.bind_on_itself_in(root, path)
            .map_err(|e| system_target_error(step(), path, e))?;
        remount_read_only(sys, root, path, NOSUID_NODEV_NOEXEC, Resolve::NoSymlinks)?;
    }
    Ok(())
}

/// Masks the paths of [`MASKED`] under `prefix` that this kernel has.
/// Files get the container's own `/dev/null` (never the host's node), made
/// read-only where the launcher made that node (in a user namespace the
/// bound host node cannot be changed from inside anyway, and a remount
/// would have to repeat the host mount's locked flags).
pub(super) fn mask_paths(sys: &impl Sys, root: &Path, prefix: &str, nodes: DevNodes) -> Result<()> {
    let null = root.join("dev/null");
    for path in MASKED.iter().filter(|p| p.starts_with(prefix)) {
        let path = Path::new(path);
        let step = || format!("masking `{}`", path.display());
        let (src, fstype, flags, data) = match sys.kind_in(root, path) {
            Ok(None) => continue,
            Ok(Some(Node::Dir)) => (
                Path::new("tmpfs"),
                Some("tmpfs"),
                MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
                Some("size=0"),
            ),
            Ok(Some(Node::File)) => (null.as_path(), None, MsFlags::MS_BIND, None),
            Err(e) => return Err(system_target_error(step(), path, e)),
        };
        sys.mount_in(
            root,
            path,
            Node::File,
            Resolve::NoSymlinks,
            Some(src),
            fstype,
            flags,
            data,
        )
        .map_err(|e| system_target_error(step(), path, e))?;
        if fstype.is_none() && nodes == DevNodes::Mknod {
            remount_read_only(sys, root, path, MsFlags::MS_NOSUID, Resolve::NoSymlinks)?;
        }
    }
    Ok(())
}
