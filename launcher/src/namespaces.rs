//! Step 4, namespaces: which ones the child is cloned into, the user
//! namespace's id maps (written by the parent while the child waits), and the
//! child's first steps inside them (hostname, loopback up).

use crate::sys::Sys;
use crate::{Error, Result};
use nix::sched::CloneFlags;
use std::path::Path;
use std::process::Command;

/// How the container's ids map to the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMapping {
    /// No user namespace: the host's ids.
    Host,
    /// One id: the (unprivileged) user is root inside; setgroups denied.
    Single { uid: u32, gid: u32 },
    /// Root inside is the user, ids 1.. are a subordinate range
    /// (`newuidmap`/`newgidmap` from /etc/subuid and /etc/subgid).
    Subordinate {
        uid: u32,
        gid: u32,
        uid_range: (u32, u32),
        gid_range: (u32, u32),
    },
    /// As root with `--userns=auto`: 0..count inside is start.. outside.
    Range { start: u32, count: u32 },
}

/// The namespaces to clone into. Not the cgroup namespace: the child
/// unshares it once released ([`enter_cgroup_namespace`]).
pub fn clone_flags(new_net: bool, mapping: &IdMapping) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS;
    if new_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if *mapping != IdMapping::Host {
        flags |= CloneFlags::CLONE_NEWUSER;
    }
    flags
}

/// The mapping for this run: rootless when not root, with subordinate ids
/// when /etc/subuid has a range for the user; as root, the host's ids
/// (`--userns=auto` takes a range from [`choose_auto_start`] instead).
pub fn choose_mapping(rootless: bool) -> IdMapping {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    if rootless {
        let name = user_name(uid);
        let sub_u = subordinate("/etc/subuid", uid, name.as_deref());
        let sub_g = subordinate("/etc/subgid", uid, name.as_deref());
        let tools = which("newuidmap").is_some() && which("newgidmap").is_some();
        return match (sub_u, sub_g, tools) {
            (Some(u), Some(g), true) => IdMapping::Subordinate {
                uid,
                gid,
                uid_range: u,
                gid_range: g,
            },
            _ => IdMapping::Single { uid, gid },
        };
    }
    IdMapping::Host
}

/// The ids in one `--userns=auto` slot.
pub const AUTO_RANGE_SIZE: u32 = 1 << 16;
/// The `--userns=auto` slots: 65536 ids each, from 2^20 up to 2^28.
const AUTO_SLOTS: std::ops::Range<u32> = 16..4096;

/// The start of the first `--userns=auto` slot that no live container holds
/// (`taken`: the starts recorded in their state directories). With every
/// slot held this is an error: falling back to a held slot would give two
/// containers the same host ids, so each could act on the other's files and
/// processes as their owner.
pub fn choose_auto_start(taken: &[u32]) -> Result<u32> {
    AUTO_SLOTS
        .map(|slot| slot * AUTO_RANGE_SIZE)
        .find(|s| !taken.contains(s))
        .ok_or(Error::UsernsExhausted {
            slots: AUTO_SLOTS.len(),
            first: AUTO_SLOTS.start * AUTO_RANGE_SIZE,
            end: u64::from(AUTO_SLOTS.end) * u64::from(AUTO_RANGE_SIZE),
        })
}

/// Writes the child's uid and gid maps (the child waits for this).
pub fn write_id_maps(pid: i32, mapping: &IdMapping) -> Result<()> {
    let proc = format!("/proc/{pid}");
    let write = |file: &str, text: &str| {
        let path = Path::new(&proc).join(file);
        std::fs::write(&path, text).map_err(Error::io("writing", path))
    };
    match *mapping {
        IdMapping::Host => Ok(()),
        IdMapping::Single { uid, gid } => {
            // An unprivileged process may write a single-id gid map only
            // after denying setgroups (user_namespaces(7)).
            write("setgroups", "deny")?;
            write("uid_map", &format!("0 {uid} 1\n"))?;
            write("gid_map", &format!("0 {gid} 1\n"))
        }
        IdMapping::Subordinate {
            uid,
            gid,
            uid_range,
            gid_range,
        } => {
            run_map_tool("newuidmap", pid, uid, uid_range)?;
            run_map_tool("newgidmap", pid, gid, gid_range)
        }
        IdMapping::Range { start, count } => {
            write("uid_map", &format!("0 {start} {count}\n"))?;
            write("gid_map", &format!("0 {start} {count}\n"))
        }
    }
}

fn run_map_tool(program: &str, pid: i32, id: u32, (start, count): (u32, u32)) -> Result<()> {
    let args = [
        pid.to_string(),
        "0".into(),
        id.to_string(),
        "1".into(),
        "1".into(),
        start.to_string(),
        count.to_string(),
    ];
    let status = Command::new(program).args(&args).status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(status) => Err(Error::IdMapTool {
            pid,
            program: program.into(),
            status,
        }),
        Err(source) => Err(Error::IdMapToolStart {
            pid,
            program: program.into(),
            source,
        }),
    }
}

const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// struct mount_attr (mount_setattr(2)).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `--userns=auto`: the cached layers belong to the host's root, which the
/// container's user namespace does not map. Each layer directory is cloned
/// as a detached mount idmapped to the child's user namespace (which needs
/// CAP_SYS_ADMIN over the layer's filesystem, so the parent does it), then
/// attached at `targets` inside the child's mount namespace, which the
/// parent enters for that and leaves again (setns(2); the launcher is
/// single-threaded, and every path it uses afterwards is absolute).
pub fn attach_idmapped_layers(
    pid: i32,
    layers: &[std::path::PathBuf],
    targets: &[std::path::PathBuf],
) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let open = |what: String| std::fs::File::open(&what).map_err(Error::io("opening", what));
    let userns = open(format!("/proc/{pid}/ns/user"))?;
    let their_mnt = open(format!("/proc/{pid}/ns/mnt"))?;
    let our_mnt = open("/proc/self/ns/mnt".into())?;
    let cwd = open(".".into())?;
    let mut trees = Vec::new();
    for layer in layers {
        let step = || format!("idmapping layer `{}`", layer.display());
        let c = std::ffi::CString::new(layer.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::sys(step())(nix::errno::Errno::EINVAL))?;
        // SAFETY: open_tree with a valid path; the fd is owned below.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                c.as_ptr(),
                OPEN_TREE_CLONE | AT_RECURSIVE | libc::O_CLOEXEC as u32,
            )
        };
        if fd < 0 {
            return Err(Error::sys(step())(nix::errno::Errno::last()));
        }
        // SAFETY: the kernel just gave us this fd.
        let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        // SAFETY: mount_setattr on our detached tree with a valid attr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | AT_RECURSIVE as i32,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc < 0 {
            return Err(Error::sys(step())(nix::errno::Errno::last()));
        }
        trees.push(tree);
    }
    nix::sched::setns(&their_mnt, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(Error::sys("entering the container's mount namespace"))?;
    let attached = trees.iter().zip(targets).try_for_each(|(tree, target)| {
        let to = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
            .map_err(|_| nix::errno::Errno::EINVAL)?;
        // SAFETY: move_mount of our detached tree onto a path.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        if rc < 0 {
            Err(nix::errno::Errno::last())
        } else {
            Ok(())
        }
    });
    let back = nix::sched::setns(&our_mnt, nix::sched::CloneFlags::CLONE_NEWNS)
        .and_then(|()| nix::unistd::fchdir(&cwd));
    attached.map_err(Error::sys("attaching the idmapped layers"))?;
    back.map_err(Error::sys("returning to the launcher's mount namespace"))
}

const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;

/// The first range for `uid` (by name or number) in a subid file.
fn subordinate(file: &str, uid: u32, name: Option<&str>) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let ours = who == uid.to_string() || Some(who) == name;
        ours.then(|| Some((start.parse().ok()?, count.parse().ok()?)))?
    })
}

fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The child's first step once released: a cgroup namespace of its own. A
/// cgroup namespace's root is the cgroup its creator is in at that moment
/// (cgroup_namespaces(7)), and the parent moves the child into the
/// container's cgroup only after the clone, while it waits; so unsharing
/// here, not cloning with CLONE_NEWCGROUP, makes the container see its own
/// cgroup as `/`.
pub fn enter_cgroup_namespace(sys: &impl Sys) -> Result<()> {
    sys.unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(Error::sys("unsharing the cgroup namespace"))
}

/// The child's first steps: its hostname and, in a new network namespace,
/// `lo` up.
pub fn set_identity(sys: &impl Sys, hostname: &str, new_net: bool) -> Result<()> {
    sys.sethostname(hostname)
        .map_err(Error::sys(format!("setting the hostname to `{hostname}`")))?;
    if new_net {
        sys.loopback_up().map_err(Error::sys("bringing up `lo`"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, Fake};

    #[test]
    fn rootless_clone_adds_a_user_namespace() {
        let single = IdMapping::Single {
            uid: 1000,
            gid: 1000,
        };
        assert!(
            clone_flags(true, &single)
                .contains(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
        );
        let host = clone_flags(false, &IdMapping::Host);
        assert!(!host.intersects(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET));
        assert!(host.contains(CloneFlags::CLONE_NEWPID));
        // The child unshares it after joining the container's cgroup.
        assert!(!host.contains(CloneFlags::CLONE_NEWCGROUP));
    }

    #[test]
    fn auto_range_skips_taken_slots() {
        assert_eq!(choose_auto_start(&[]).unwrap(), 16 << 16);
        assert_eq!(choose_auto_start(&[16 << 16]).unwrap(), 17 << 16);
        assert_eq!(
            choose_auto_start(&[17 << 16, 16 << 16, 18 << 16]).unwrap(),
            19 << 16
        );
    }

    #[test]
    fn auto_range_refuses_when_every_slot_is_held() {
        let all: Vec<u32> = (16u32..4096).map(|slot| slot << 16).collect();
        let err = choose_auto_start(&all).unwrap_err();
        assert!(
            matches!(err, Error::UsernsExhausted { slots: 4080, .. }),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), crate::EXIT_LAUNCHER_FAILED);
        assert_eq!(
            err.to_string(),
            "choosing a --userns=auto range: all 4080 slots of 65536 ids in \
             1048576..268435456 are held by running containers"
        );
        // One slot free again, at the end: that one.
        assert_eq!(
            choose_auto_start(&all[..all.len() - 1]).unwrap(),
            4095 << 16
        );
    }

    #[test]
    fn cgroup_namespace_is_unshared_by_the_child() {
        let fake = Fake::default();
        enter_cgroup_namespace(&fake).unwrap();
        assert_eq!(fake.calls(), [Call::Unshare(CloneFlags::CLONE_NEWCGROUP)]);
    }

    #[test]
    fn sets_hostname_then_loopback() {
        let fake = Fake::default();
        set_identity(&fake, "box", true).unwrap();
        assert_eq!(
            fake.calls(),
            [Call::Sethostname("box".into()), Call::LoopbackUp]
        );
    }
}
