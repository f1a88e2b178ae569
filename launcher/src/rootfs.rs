//! Step 5, rootfs: in the child's new mount namespace, `/` made a recursive
//! slave, the overlay over the cached layers mounted and bound on itself,
//! then volumes, the init, `/proc` (docker's masked and read-only paths),
//! `/dev`, `/sys` (with the container's own `/sys/fs/cgroup`, read-only) and
//! the `/etc` files mounted into it. Every target inside
//! the rootfs is resolved by [`Sys::mount_in`], never through a symlink out.
//!
//! `/proc` is mounted here, before `pivot_root`, by the child that is already
//! PID 1 of the new PID namespace: the kernel takes the mounter's namespace,
//! so it is the container's `/proc`, and its target can still be resolved by
//! file descriptor against the rootfs.

use crate::sys::{Node, Sys};
use crate::{Error, Result};
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};

/// Docker's masked paths: bound over with /dev/null (files) or an empty
/// read-only tmpfs (directories).
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

/// Device nodes bound from the host into the container's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

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

/// The overlay: cached layers below, the container's private dirs above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Bottom first, as in the manifest.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Rootless: overlay's xattrs in `user.`, as the layers were unpacked.
    pub userxattr: bool,
}

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
    /// Where the root is assembled (`state/rootfs`).
    pub root: PathBuf,
    pub overlay: Overlay,
    pub volumes: Vec<Volume>,
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
    /// The working directory, made when missing (before a read-only root).
    pub workdir: Option<PathBuf>,
    /// `--userns=auto`: the layers are idmapped by the parent and attached
    /// at `state/lower/N` (see [`crate::namespaces::attach_idmapped_layers`]);
    /// this is the socket to tell it the mount points are ready and wait.
    pub idmapped_layers: Option<std::os::fd::RawFd>,
    /// What `/sys/fs/cgroup` is made of ([`cgroup_fs`]).
    pub cgroup_fs: CgroupFs,
}

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
    /// host hierarchy and the host's symlinks to them (`cpu -> cpu,cpuacct`).
    Legacy {
        /// (directory under `/sys/fs/cgroup`, mount options), as on the host.
        hierarchies: Vec<(String, String)>,
        /// (link name, target).
        links: Vec<(String, String)>,
    },
}

const NONE: Option<&Path> = None;
const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Assembles the container's root at `plan.root`.
pub fn prepare(sys: &impl Sys, plan: &Plan) -> Result<()> {
    make_root_slave(sys)?;
    make_state(sys, plan)?;
    mount_overlay(sys, plan)?;
    bind_on_itself(sys, &plan.root)?;
    make_workdir(sys, plan)?;
    mount_volumes(sys, plan)?;
    mount_init(sys, plan)?;
    mount_proc(sys, &plan.root)?;
    mount_dev(sys, &plan.root, plan.tty_gid)?;
    mount_sys(sys, &plan.root, plan.fresh_sysfs)?;
    mount_cgroup_fs(sys, &plan.root, &plan.cgroup_fs)?;
    mount_etc_files(sys, plan)?;
    if plan.read_only {
        remount_read_only(sys, &plan.root, &plan.root, MsFlags::empty())?;
    }
    Ok(())
}

/// Nothing mounted from here on propagates back to the host, while the
/// host's later mounts still reach us (crun, runc: rslave by default).
fn make_root_slave(sys: &impl Sys) -> Result<()> {
    sys.mount(
        NONE,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None,
    )
    .map_err(Error::sys("making `/` a recursive slave"))
}

fn make_state(sys: &impl Sys, plan: &Plan) -> Result<()> {
    if plan.in_memory {
        sys.mount(
            Some(Path::new("tmpfs")),
            &plan.state,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=700"),
        )
        .map_err(Error::sys(format!(
            "mounting a tmpfs on `{}`",
            plan.state.display()
        )))?;
    }
    for dir in ["upper", "work", "rootfs", "etc"] {
        sys.mkdir_in(&plan.state, Path::new(dir))
            .map_err(Error::sys(format!(
                "making `{}/{dir}`",
                plan.state.display()
            )))?;
    }
    if let Some(socket) = plan.idmapped_layers {
        for i in 0..plan.overlay.lower.len() {
            sys.mkdir_in(&plan.state, &Path::new("lower").join(i.to_string()))
                .map_err(Error::sys("making the layer mount points"))?;
        }
        sys.handshake(socket)
            .map_err(Error::sys("waiting for the idmapped layers"))?;
    }
    for (name, contents) in &plan.etc {
        let path = Path::new("etc").join(name);
        sys.write_in(&plan.state, &path, contents.as_bytes())
            .map_err(Error::sys(format!(
                "writing `{}`",
                plan.state.join(&path).display()
            )))?;
    }
    Ok(())
}

/// Where `--userns=auto` attaches the idmapped layers, bottom first.
pub fn idmapped_targets(state: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| state.join("lower").join(i.to_string()))
        .collect()
}

pub fn overlay_options(o: &Overlay) -> String {
    // overlayfs lists lowerdir top first; the manifest lists bottom first.
    let lower: Vec<String> = o
        .lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mut data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        o.upper.display(),
        o.work.display()
    );
    if o.userxattr {
        data.push_str(",userxattr");
    }
    data
}

fn mount_overlay(sys: &impl Sys, plan: &Plan) -> Result<()> {
    let mut overlay = plan.overlay.clone();
    if plan.idmapped_layers.is_some() {
        overlay.lower = idmapped_targets(&plan.state, overlay.lower.len());
    }
    let data = overlay_options(&overlay);
    sys.mount(
        Some(Path::new("overlay")),
        &plan.root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&data),
    )
    .map_err(Error::sys(format!(
        "mounting the overlay on `{}`",
        plan.root.display()
    )))
}

/// pivot_root wants the new root to be a mount point of its own.
fn bind_on_itself(sys: &impl Sys, root: &Path) -> Result<()> {
    sys.mount(
        Some(root),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(Error::sys(format!(
        "binding `{}` on itself",
        root.display()
    )))
}

/// docker makes a missing working directory; it must exist before the
/// root may become read-only.
fn make_workdir(sys: &impl Sys, plan: &Plan) -> Result<()> {
    match &plan.workdir {
        Some(dir) => sys.mkdir_in(&plan.root, dir).map_err(Error::sys(format!(
            "making the working directory `{}`",
            dir.display()
        ))),
        None => Ok(()),
    }
}

fn mount_volumes(sys: &impl Sys, plan: &Plan) -> Result<()> {
    for v in &plan.volumes {
        let step = || {
            format!(
                "binding volume `{}` on `{}`",
                v.host.display(),
                v.target.display()
            )
        };
        sys.mount_in(
            &plan.root,
            &v.target,
            v.node,
            Some(&v.host),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(Error::sys(step()))?;
        if v.read_only {
            remount_read_only(sys, &plan.root, &v.target, v.locked)?;
        }
    }
    Ok(())
}

fn mount_init(sys: &impl Sys, plan: &Plan) -> Result<()> {
    let Some((init, locked)) = &plan.init else {
        return Ok(());
    };
    let target = Path::new(crate::image::INIT_IN_IMAGE);
    sys.mount_in(
        &plan.root,
        target,
        Node::File,
        Some(init),
        None,
        MsFlags::MS_BIND,
        None,
    )
    .map_err(Error::sys(format!(
        "binding the init `{}` on `{}`",
        init.display(),
        target.display()
    )))?;
    remount_read_only(sys, &plan.root, target, *locked)
}

/// A bind mount is made read-only by a second, remounting call
/// (mount(2): MS_RDONLY is ignored with MS_BIND). `locked` repeats the flags a
/// user namespace does not let us clear.
fn remount_read_only(sys: &impl Sys, root: &Path, target: &Path, locked: MsFlags) -> Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked;
    let step = || format!("remounting `{}` read-only", target.display());
    if target == root {
        sys.mount(NONE, root, None, flags, None)
            .map_err(Error::sys(step()))
    } else {
        sys.mount_in(root, target, Node::Dir, None, None, flags, None)
            .map_err(Error::sys(step()))
    }
}

fn mount_proc(sys: &impl Sys, root: &Path) -> Result<()> {
    sys.mount_in(
        root,
        Path::new("/proc"),
        Node::Dir,
        Some(Path::new("proc")),
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    )
    .map_err(Error::sys("mounting `proc` on `/proc`"))?;
    mask_paths(sys, root, "/proc")?;
    for path in READ_ONLY {
        let path = Path::new(path);
        if sys.kind_in(root, path).is_none() {
            continue;
        }
        sys.mount_in(
            root,
            path,
            Node::File,
            Some(&root.join(path.strip_prefix("/").unwrap_or(path))),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(Error::sys(format!(
            "binding `{}` on itself",
            path.display()
        )))?;
        remount_read_only(sys, root, path, NOSUID_NODEV_NOEXEC)?;
    }
    Ok(())
}

/// Masks the paths of [`MASKED`] under `prefix` that exist.
fn mask_paths(sys: &impl Sys, root: &Path, prefix: &str) -> Result<()> {
    for path in MASKED.iter().filter(|p| p.starts_with(prefix)) {
        let path = Path::new(path);
        let step = || format!("masking `{}`", path.display());
        match sys.kind_in(root, path) {
            None => continue,
            Some(Node::Dir) => sys.mount_in(
                root,
                path,
                Node::Dir,
                Some(Path::new("tmpfs")),
                Some("tmpfs"),
                MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
                Some("size=0"),
            ),
            Some(Node::File) => sys.mount_in(
                root,
                path,
                Node::File,
                Some(Path::new("/dev/null")),
                None,
                MsFlags::MS_BIND,
                None,
            ),
        }
        .map_err(Error::sys(step()))?;
    }
    Ok(())
}

fn mount_dev(sys: &impl Sys, root: &Path, tty_gid: Option<u32>) -> Result<()> {
    let dev = Path::new("/dev");
    sys.mount_in(
        root,
        dev,
        Node::Dir,
        Some(Path::new("tmpfs")),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(Error::sys("mounting a tmpfs on `/dev`"))?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        sys.mount_in(
            root,
            &host,
            Node::File,
            Some(&host),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(Error::sys(format!("binding `{}`", host.display())))?;
    }
    // A devpts instance of our own: the container's ptys are not the host's,
    // and /dev/ptmx points into it (devpts(5), "newinstance").
    let mut pts = String::from("newinstance,ptmxmode=0666,mode=0620");
    if let Some(gid) = tty_gid {
        pts.push_str(&format!(",gid={gid}"));
    }
    sys.mount_in(
        root,
        Path::new("/dev/pts"),
        Node::Dir,
        Some(Path::new("devpts")),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&pts),
    )
    .map_err(Error::sys("mounting `devpts` on `/dev/pts`"))?;
    sys.mount_in(
        root,
        Path::new("/dev/shm"),
        Node::Dir,
        Some(Path::new("shm")),
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(Error::sys("mounting a tmpfs on `/dev/shm`"))?;
    sys.mount_in(
        root,
        Path::new("/dev/mqueue"),
        Node::Dir,
        Some(Path::new("mqueue")),
        Some("mqueue"),
        NOSUID_NODEV_NOEXEC,
        None,
    )
    .map_err(Error::sys("mounting `mqueue` on `/dev/mqueue`"))?;
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

fn mount_sys(sys: &impl Sys, root: &Path, fresh: bool) -> Result<()> {
    let target = Path::new("/sys");
    let flags = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
    if fresh {
        sys.mount_in(
            root,
            target,
            Node::Dir,
            Some(Path::new("sysfs")),
            Some("sysfs"),
            flags,
            None,
        )
        .map_err(Error::sys("mounting `sysfs` on `/sys`"))?;
    } else {
        // The host's network namespace: sysfs cannot be mounted afresh
        // rootless, so the host's is bound read-only (as rootless podman does).
        sys.mount_in(
            root,
            target,
            Node::Dir,
            Some(Path::new("/sys")),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(Error::sys("binding the host's `/sys`"))?;
        remount_read_only(sys, root, target, NOSUID_NODEV_NOEXEC)?;
    }
    mask_paths(sys, root, "/sys")
}

const CGROUP_DIR: &str = "/sys/fs/cgroup";

/// What the container's `/sys/fs/cgroup` should be on this host, from
/// `/proc/self/mountinfo` and the symlinks in the host's `/sys/fs/cgroup`.
pub fn cgroup_fs(rootless: bool) -> CgroupFs {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let links = std::fs::read_dir(CGROUP_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.path()).ok()?;
            Some((
                entry.file_name().to_str()?.to_string(),
                target.to_str()?.to_string(),
            ))
        })
        .collect();
    cgroup_fs_from(&mountinfo, links, rootless)
}

/// [`cgroup_fs`] from the text of mountinfo and the host's symlinks.
///
/// The hybrid layout's cgroup2 at `/sys/fs/cgroup/unified` is left out, as
/// runc and crun leave it: the launcher makes no cgroup there, so its root
/// in the container would be the host's whole tree.
///
/// Rootless on v1 nothing is mounted: a user namespace may mount a v1
/// hierarchy only where the kernel lets it and the launcher could make no
/// cgroup there anyway (no delegation on v1), so the container's own cgroup
/// would not be its root. runc binds the host's `/sys/fs/cgroup` instead,
/// which shows the host's whole tree; skipping shows nothing rather than
/// the wrong thing, with no error.
pub fn cgroup_fs_from(mountinfo: &str, links: Vec<(String, String)>, rootless: bool) -> CgroupFs {
    let mut hierarchies: Vec<(String, String)> = Vec::new();
    for (point, fstype, options) in mountinfo.lines().filter_map(cgroup_mount) {
        if fstype == "cgroup2" && point == CGROUP_DIR {
            return CgroupFs::Unified;
        }
        let Some(name) = point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if fstype != "cgroup" || name.contains('/') || hierarchies.iter().any(|(n, _)| n == name) {
            continue;
        }
        hierarchies.push((name.to_string(), v1_options(options)));
    }
    if hierarchies.is_empty() || rootless {
        return CgroupFs::Skip;
    }
    let links = links
        .into_iter()
        .filter(|(name, target)| {
            hierarchies.iter().any(|(n, _)| n == target)
                && !hierarchies.iter().any(|(n, _)| n == name)
        })
        .collect();
    CgroupFs::Legacy { hierarchies, links }
}

/// (mount point, fstype, super options) of a cgroup or cgroup2 line of
/// mountinfo (proc(5)); the names under /sys/fs/cgroup have nothing to
/// unescape.
fn cgroup_mount(line: &str) -> Option<(&str, &str, &str)> {
    let (pre, post) = line.split_once(" - ")?;
    let point = pre.split(' ').nth(4)?;
    let mut post = post.split(' ');
    let fstype = post.next()?;
    let _source = post.next()?;
    let options = post.next().unwrap_or("");
    matches!(fstype, "cgroup" | "cgroup2").then_some((point, fstype, options))
}

/// The options that name a v1 hierarchy: its controllers and `name=`. A
/// mount of an existing hierarchy must name the same ones (EBUSY otherwise);
/// the rest (`rw`, `xattr`, `release_agent=` …) belongs to the host's mount.
fn v1_options(options: &str) -> String {
    const NOT_NAMES: &[&str] = &[
        "rw",
        "ro",
        "xattr",
        "noprefix",
        "clone_children",
        "cpuset_v2_mode",
        "favordynmods",
        "none",
    ];
    options
        .split(',')
        .filter(|o| !NOT_NAMES.contains(o) && !o.starts_with("release_agent="))
        .collect::<Vec<_>>()
        .join(",")
}

/// Mounted after `/sys`, in the cgroup namespace the child unshared once in
/// its cgroup: a cgroup filesystem mounted there has that cgroup as its root.
fn mount_cgroup_fs(sys: &impl Sys, root: &Path, fs: &CgroupFs) -> Result<()> {
    let dir = Path::new(CGROUP_DIR);
    let ro = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
    match fs {
        CgroupFs::Skip => Ok(()),
        CgroupFs::Unified => sys
            .mount_in(
                root,
                dir,
                Node::Dir,
                Some(Path::new("cgroup2")),
                Some("cgroup2"),
                ro,
                None,
            )
            .map_err(Error::sys("mounting `cgroup2` on `/sys/fs/cgroup`")),
        CgroupFs::Legacy { hierarchies, links } => {
            sys.mount_in(
                root,
                dir,
                Node::Dir,
                Some(Path::new("tmpfs")),
                Some("tmpfs"),
                NOSUID_NODEV_NOEXEC,
                Some("mode=755"),
            )
            .map_err(Error::sys("mounting a tmpfs on `/sys/fs/cgroup`"))?;
            for (name, options) in hierarchies {
                let target = dir.join(name);
                sys.mount_in(
                    root,
                    &target,
                    Node::Dir,
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
            remount_read_only(sys, root, dir, NOSUID_NODEV_NOEXEC)
        }
    }
}

fn mount_etc_files(sys: &impl Sys, plan: &Plan) -> Result<()> {
    for (name, _) in &plan.etc {
        let host = plan.state.join("etc").join(name);
        let target = Path::new("/etc").join(name);
        sys.mount_in(
            &plan.root,
            &target,
            Node::File,
            Some(&host),
            None,
            MsFlags::MS_BIND,
            None,
        )
        .map_err(Error::sys(format!("binding `{}`", target.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, Fake};

    fn plan() -> Plan {
        Plan {
            state: "/c".into(),
            in_memory: true,
            root: "/c/rootfs".into(),
            overlay: Overlay {
                lower: vec!["/l/a".into(), "/l/b".into()],
                upper: "/c/upper".into(),
                work: "/c/work".into(),
                userxattr: false,
            },
            volumes: vec![],
            init: None,
            etc: vec![("hostname", "box\n".into())],
            read_only: false,
            fresh_sysfs: true,
            tty_gid: Some(5),
            workdir: None,
            idmapped_layers: None,
            cgroup_fs: CgroupFs::Skip,
        }
    }

    fn mount(
        src: Option<&str>,
        dst: &str,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Call {
        Call::Mount {
            src: src.map(PathBuf::from),
            dst: dst.into(),
            fstype: fstype.map(String::from),
            flags,
            data: data.map(String::from),
        }
    }

    #[test]
    fn overlay_lists_top_layer_first() {
        let p = plan();
        assert_eq!(
            overlay_options(&p.overlay),
            "lowerdir=/l/b:/l/a,upperdir=/c/upper,workdir=/c/work"
        );
    }

    #[test]
    fn root_is_made_slave_before_anything_is_mounted() {
        let fake = Fake::default();
        prepare(&fake, &plan()).unwrap();
        let calls = fake.calls();
        assert_eq!(
            calls[..9],
            [
                mount(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None),
                mount(
                    Some("tmpfs"),
                    "/c",
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=700")
                ),
                Call::Mkdir("/c/upper".into()),
                Call::Mkdir("/c/work".into()),
                Call::Mkdir("/c/rootfs".into()),
                Call::Mkdir("/c/etc".into()),
                Call::Write("/c/etc/hostname".into(), "box\n".into()),
                mount(
                    Some("overlay"),
                    "/c/rootfs",
                    Some("overlay"),
                    MsFlags::empty(),
                    Some("lowerdir=/l/b:/l/a,upperdir=/c/upper,workdir=/c/work")
                ),
                mount(
                    Some("/c/rootfs"),
                    "/c/rootfs",
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None
                ),
            ]
        );
        let proc_at = calls
            .iter()
            .position(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "proc"))
            .unwrap();
        let kcore = mount(
            Some("/dev/null"),
            "/c/rootfs/proc/kcore",
            None,
            MsFlags::MS_BIND,
            None,
        );
        assert!(calls[proc_at..].contains(&kcore));
        let ro_sys = mount(
            Some("sysfs"),
            "/c/rootfs/sys",
            Some("sysfs"),
            MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
            None,
        );
        assert!(calls.contains(&ro_sys));
        assert!(calls.contains(&mount(
            Some("devpts"),
            "/c/rootfs/dev/pts",
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5")
        )));
        assert!(calls.contains(&Call::Symlink {
            target: "pts/ptmx".into(),
            link: "/c/rootfs/dev/ptmx".into()
        }));
        assert_eq!(
            calls.last(),
            Some(&mount(
                Some("/c/etc/hostname"),
                "/c/rootfs/etc/hostname",
                None,
                MsFlags::MS_BIND,
                None
            ))
        );
    }

    #[test]
    fn masks_directories_with_read_only_tmpfs() {
        let fake = Fake {
            dirs: vec!["/proc/acpi".into()],
            ..Default::default()
        };
        mask_paths(&fake, Path::new("/r"), "/proc").unwrap();
        assert!(fake.calls().contains(&mount(
            Some("tmpfs"),
            "/r/proc/acpi",
            Some("tmpfs"),
            MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
            Some("size=0")
        )));
    }

    #[test]
    fn read_only_volume_and_root_are_remounted() {
        let fake = Fake::default();
        let mut p = plan();
        p.read_only = true;
        p.volumes.push(Volume {
            host: "/h".into(),
            target: "/data".into(),
            read_only: true,
            node: Node::Dir,
            locked: MsFlags::MS_NOSUID,
        });
        prepare(&fake, &p).unwrap();
        let calls = fake.calls();
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        let bind = calls
            .iter()
            .position(|c| {
                *c == mount(
                    Some("/h"),
                    "/c/rootfs/data",
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
            })
            .unwrap();
        assert_eq!(
            calls[bind + 1],
            mount(None, "/c/rootfs/data", None, ro | MsFlags::MS_NOSUID, None)
        );
        assert_eq!(
            calls.last(),
            Some(&mount(None, "/c/rootfs", None, ro, None))
        );
    }
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:32 / /mnt/memory rw,relatime - cgroup cgroup rw,memory
";

    fn names(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn v1_hierarchies_keep_their_names_and_links_but_not_unified() {
        let links = names(&[
            ("cpu", "cpu,cpuacct"),
            ("cpuacct", "cpu,cpuacct"),
            ("elsewhere", "/tmp"),
        ]);
        assert_eq!(
            cgroup_fs_from(HYBRID, links, false),
            CgroupFs::Legacy {
                hierarchies: names(&[
                    ("cpu,cpuacct", "cpu,cpuacct"),
                    ("memory", "memory"),
                    ("systemd", "name=systemd"),
                ]),
                links: names(&[("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")]),
            }
        );
    }

    #[test]
    fn unified_host_gets_cgroup2_and_rootless_v1_gets_nothing() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup_fs_from(v2, vec![], false), CgroupFs::Unified);
        assert_eq!(cgroup_fs_from(v2, vec![], true), CgroupFs::Unified);
        assert_eq!(cgroup_fs_from(HYBRID, vec![], true), CgroupFs::Skip);
        assert_eq!(cgroup_fs_from("", vec![], false), CgroupFs::Skip);
    }

    #[test]
    fn v1_cgroup_fs_is_populated_then_made_read_only() {
        let fake = Fake::default();
        let fs = CgroupFs::Legacy {
            hierarchies: names(&[("cpu,cpuacct", "cpu,cpuacct"), ("systemd", "name=systemd")]),
            links: names(&[("cpu", "cpu,cpuacct")]),
        };
        mount_cgroup_fs(&fake, Path::new("/r"), &fs).unwrap();
        let ro = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
        assert_eq!(
            fake.calls(),
            [
                mount(
                    Some("tmpfs"),
                    "/r/sys/fs/cgroup",
                    Some("tmpfs"),
                    NOSUID_NODEV_NOEXEC,
                    Some("mode=755")
                ),
                mount(
                    Some("cgroup"),
                    "/r/sys/fs/cgroup/cpu,cpuacct",
                    Some("cgroup"),
                    ro,
                    Some("cpu,cpuacct")
                ),
                mount(
                    Some("cgroup"),
                    "/r/sys/fs/cgroup/systemd",
                    Some("cgroup"),
                    ro,
                    Some("name=systemd")
                ),
                Call::Symlink {
                    target: "cpu,cpuacct".into(),
                    link: "/r/sys/fs/cgroup/cpu".into()
                },
                mount(
                    None,
                    "/r/sys/fs/cgroup",
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
                    None
                ),
            ]
        );
    }

    #[test]
    fn cgroup_fs_is_mounted_after_sys_and_its_masks() {
        let fake = Fake::default();
        let mut p = plan();
        p.cgroup_fs = CgroupFs::Unified;
        prepare(&fake, &p).unwrap();
        let calls = fake.calls();
        let sys_at = calls
            .iter()
            .position(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "sysfs"))
            .unwrap();
        let etc_at = calls
            .iter()
            .position(|c| matches!(c, Call::Mount { dst, .. } if dst.starts_with("/c/rootfs/etc")))
            .unwrap();
        let mask = |path: &str| mount(Some("/dev/null"), path, None, MsFlags::MS_BIND, None);
        assert_eq!(
            calls[sys_at + 1..etc_at],
            [
                mask("/c/rootfs/sys/firmware"),
                mask("/c/rootfs/sys/devices/virtual/powercap"),
                mount(
                    Some("cgroup2"),
                    "/c/rootfs/sys/fs/cgroup",
                    Some("cgroup2"),
                    MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
                    None
                )
            ]
        );
    }
}
