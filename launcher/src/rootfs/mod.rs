//! Step 5, rootfs: in the child's new mount namespace, the container's root
//! is assembled at `plan.root`. [`prepare`] lists the steps in order; each
//! concern has a file of its own:
//!
//! - [`overlay`]: `/` made a recursive slave, the state directory, the
//!   overlay over the cached layers, bound on itself;
//! - [`files`]: the working directory, our init and the `/etc` files, all on
//!   the image's own filesystem, before anything is mounted over it;
//! - [`dev`], [`proc`], [`sysfs`], [`cgroup`]: the system mounts, at real
//!   directories of the image (a symlink there is refused), each checked
//!   after mounting to be the filesystem that was mounted;
//! - [`volumes`]: the user's bind mounts, last, so that nothing the
//!   launcher makes afterwards can land in a volume's host directory.
//!
//! Every target is resolved inside the root by [`Sys::mount_in`], never
//! through a symlink out of it. `/proc` is mounted here, before
//! `pivot_root`, by the child that is already PID 1 of the new PID
//! namespace: the kernel takes the mounter's namespace, so it is the
//! container's `/proc`, and its target can still be resolved by file
//! descriptor against the rootfs.

pub mod cgroup;
pub mod dev;
pub mod devices;
pub mod files;
pub mod mounts;
pub mod overlay;
pub mod proc;
pub mod sysfs;
pub mod volumes;

use crate::sys::{Node, Resolve, Sys};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

pub use cgroup::CgroupFs;
pub use dev::DevNodes;
pub use overlay::{Overlay, idmapped_targets, overlay_options};
pub use proc::{MASKED, READ_ONLY};
pub use volumes::Volume;

/// Everything the child mounts, decided by the parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The container's state directory: upper, work, etc, rootfs.
    pub state: PathBuf,
    /// The state lives in a tmpfs mounted on `state` in the container's own
    /// mount namespace: it vanishes with the container, costs no disk
    /// writes, and nothing of it can outlive a killed launcher. Without it
    /// (`--keep`) the upper directory is on disk and stays.
    pub in_memory: bool,
    /// The size cap of that tmpfs, as tmpfs's `size=` (`1g`).
    pub storage_size: String,
    /// Where the root is assembled (`state/rootfs`).
    pub root: PathBuf,
    pub overlay: Overlay,
    pub volumes: Vec<Volume>,
    /// `--tmpfs PATH[:OPTIONS]`, mounted after the volumes.
    pub tmpfs: Vec<volumes::Tmpfs>,
    /// Our static init, bound read-only at /sbin/cradle-init.
    pub init: Option<(PathBuf, MsFlags)>,
    /// The contents of /etc/hostname, /etc/hosts, /etc/resolv.conf, written
    /// to `state/etc/` and bound over the image's, as docker does.
    pub etc: Vec<(&'static str, String)>,
    pub read_only: bool,
    /// A new network namespace: a fresh sysfs can be mounted.
    pub fresh_sysfs: bool,
    /// The devpts `gid=` (tty group 5), when that gid is mapped.
    pub tty_gid: Option<u32>,
    /// How `/dev/null` & co. are made ([`DevNodes`]).
    pub dev_nodes: DevNodes,
    /// The working directory, made when missing (before a read-only root).
    pub workdir: Option<PathBuf>,
    /// `--userns=auto`: the layers are idmapped by the parent and attached
    /// at `state/lower/N` (see [`crate::namespaces::attach_idmapped_layers`]);
    /// this is the socket to tell it the mount points are ready and wait.
    pub idmapped_layers: Option<std::os::fd::RawFd>,
    /// What `/sys/fs/cgroup` is made of ([`CgroupFs`]).
    pub cgroup_fs: CgroupFs,
    /// What `run`'s flags add: devices, sysctls, /dev/shm's size, and
    /// `--privileged`'s writable /proc and /sys.
    pub flags: Flags,
}

/// `--privileged`, `--device`, `--shm-size`, `--sysctl`, `--mount`'s
/// extra mounts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    /// /proc and /sys writable and unmasked: not a container boundary.
    pub privileged: bool,
    /// `--security-opt systempaths=unconfined`: no masked or read-only
    /// paths in /proc and /sys (which stays read-only).
    pub unmasked: bool,
    pub devices: Vec<devices::Device>,
    /// The size of /dev/shm, bytes; None: 64 MiB.
    pub shm_size: Option<u64>,
    /// `--sysctl`s, checked to be namespaced: path below /proc/sys, value.
    pub sysctls: Vec<(PathBuf, String)>,
}

impl Flags {
    /// The flags of `opts`, checked; `new_net`: the container has a
    /// network namespace of its own (for `net.*` sysctls).
    pub fn from_options(opts: &crate::Options, new_net: bool) -> Result<Flags> {
        Ok(Flags {
            privileged: opts.privileged,
            unmasked: crate::security::system_paths_unconfined(&opts.security_opt)?,
            devices: devices::plan(opts)?,
            // 0 is docker's default too (a tmpfs with size=0 has no cap).
            shm_size: opts.shm_size.filter(|&n| n > 0),
            sysctls: crate::sysctl::parse(&opts.sysctls, new_net)?,
        })
    }
}

const NONE: Option<&Path> = None;
const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Assembles the container's root at `plan.root`.
pub fn prepare(sys: &impl Sys, plan: &Plan) -> Result<()> {
    let _roots = crate::sys::RootCache::enable();
    overlay::make_root_slave(sys)?;
    overlay::make_state(sys, plan)?;
    overlay::mount_overlay(sys, plan)?;
    overlay::bind_on_itself(sys, &plan.root)?;
    files::make_workdir(sys, plan)?;
    files::mount_init(sys, plan)?;
    files::mount_etc_files(sys, plan)?;
    dev::mount_dev(sys, plan)?;
    devices::make_devices(sys, &plan.root, &plan.flags.devices, plan.dev_nodes)?;
    proc::mount_proc(sys, &plan.root, plan.dev_nodes, &plan.flags)?;
    sysfs::mount_sys(sys, plan)?;
    cgroup::mount_cgroup_fs(sys, &plan.root, &plan.cgroup_fs, !plan.fresh_sysfs)?;
    volumes::mount_volumes(sys, plan)?;
    volumes::mount_tmpfs(sys, plan)?;
    if plan.read_only {
        remount_read_only(
            sys,
            &plan.root,
            &plan.root,
            MsFlags::empty(),
            Resolve::InRoot,
        )?;
    }
    Ok(())
}

/// A bind mount is made read-only by a second, remounting call
/// (mount(2): MS_RDONLY is ignored with MS_BIND). `locked` repeats the flags a
/// user namespace does not let us clear.
fn remount_read_only(
    sys: &impl Sys,
    root: &Path,
    target: &Path,
    locked: MsFlags,
    resolve: Resolve,
) -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked;
    let step = || format!("remounting `{}` read-only", target.display());
    if target == root {
        sys.mount(NONE, root, None, flags, None)
            .map_err(Error::sys(step()))
    } else {
        sys.mount_in(root, target, Node::Dir, resolve, None, None, flags, None)
            .map_err(Error::sys(step()))
    }
}

/// Mounts a filesystem of the container's own (`proc`, `sysfs`, a tmpfs …)
/// at `target`, a real directory of the image, then checks by file
/// descriptor that what is there is what was mounted: the image chooses
/// nothing about where a system mount lands.
fn mount_system(
    sys: &impl Sys,
    root: &Path,
    target: &Path,
    (fstype, magic): (&str, i64),
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    let src = if fstype == "tmpfs" { "tmpfs" } else { fstype };
    let step = || format!("mounting `{fstype}` on `{}`", target.display());
    sys.mount_in(
        root,
        target,
        Node::Dir,
        Resolve::NoSymlinks,
        Some(Path::new(src)),
        Some(fstype),
        flags,
        data,
    )
    .map_err(|e| system_target_error(step(), target, e))?;
    let found = sys
        .fs_type_in(root, target)
        .map_err(|e| system_target_error(step(), target, e))?;
    if found != magic {
        return Err(Error::Child {
            step: format!(
                "{}: the filesystem there afterwards is not `{fstype}` (type {found:#x})",
                step()
            ),
            source: Errno::EXDEV,
        });
    }
    Ok(())
}

/// The error for a system mount target: a symlink on the way (ELOOP) is
/// the image's doing and said so.
fn system_target_error(step: String, target: &Path, errno: Errno) -> Error {
    if errno == Errno::ELOOP {
        return Error::Child {
            step: format!(
                "{step}: `{}` in the image is a symlink (or lies below one); \
                 it must be a real directory",
                target.display()
            ),
            source: errno,
        };
    }
    Error::sys(step)(errno)
}

#[cfg(test)]
mod tests;
