//! What the container's `/sys/fs/cgroup` should be made of on this host,
//! read from the host's mountinfo and the container's cgroup: the parent
//! decides it before the clone, and [`crate::rootfs::cgroup`] mounts it.

use super::Cgroup;
use crate::rootfs::CgroupFs;
use crate::rootfs::cgroup::CGROUP_DIR;

/// What the container's `/sys/fs/cgroup` should be on this host, from
/// `/proc/self/mountinfo`, the symlinks in the host's `/sys/fs/cgroup`, and
/// the controllers of the container's cgroup (none without one).
pub fn cgroup_fs(cgroup: Option<&Cgroup>) -> CgroupFs {
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
    let controllers = cgroup.map(Cgroup::controllers).unwrap_or_default();
    cgroup_fs_from(&mountinfo, links, &controllers)
}

/// [`cgroup_fs`] from the text of mountinfo, the host's symlinks and the
/// controllers the container has a cgroup of its own for: v1 names, or
/// `""` for a v2 cgroup ([`Cgroup::controllers`]).
///
/// Only hierarchies where the container has a cgroup of its own are
/// mounted: it unshared its cgroup namespace there, so its cgroup is the
/// root it sees. Elsewhere the namespace's root is the launcher's cgroup,
/// often the host's root: a v1 `freezer` or `blkio` mounted there would show
/// the host's whole tree and every other container in it (issue 9). Links
/// (`cpu -> cpu,cpuacct`) are kept when they point at a mounted hierarchy.
///
/// The hybrid layout's cgroup2 at `/sys/fs/cgroup/unified` is left out, as
/// runc and crun leave it, for the same reason: the launcher makes no
/// cgroup there.
///
/// Without a cgroup (rootless on v1, or on a v2 tree not delegated to the
/// user) nothing is mounted. runc binds the host's `/sys/fs/cgroup` then,
/// which shows the host's whole tree; skipping shows nothing rather than
/// the wrong thing, with no error.
pub fn cgroup_fs_from(
    mountinfo: &str,
    links: Vec<(String, String)>,
    controllers: &[&str],
) -> CgroupFs {
    let mut hierarchies: Vec<(String, String)> = Vec::new();
    for (point, fstype, options) in mountinfo.lines().filter_map(cgroup_mount) {
        if fstype == "cgroup2" && point == CGROUP_DIR {
            return match controllers.contains(&"") {
                true => CgroupFs::Unified,
                false => CgroupFs::Skip,
            };
        }
        let Some(name) = point.strip_prefix("/sys/fs/cgroup/") else {
            continue;
        };
        if fstype != "cgroup" || name.contains('/') || hierarchies.iter().any(|(n, _)| n == name) {
            continue;
        }
        let options = v1_options(options);
        if options.split(',').any(|o| controllers.contains(&o)) {
            hierarchies.push((name.to_string(), options));
        }
    }
    if hierarchies.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
            cgroup_fs_from(HYBRID, links, &["cpu", "cpuacct", "memory"]),
            CgroupFs::Legacy {
                hierarchies: names(&[("cpu,cpuacct", "cpu,cpuacct"), ("memory", "memory")]),
                links: names(&[("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")]),
            }
        );
    }

    #[test]
    fn hierarchies_without_a_cgroup_of_the_containers_own_are_not_mounted() {
        let info = "\
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
";
        // freezer's link goes with it.
        let links = names(&[("mem", "memory"), ("frz", "freezer")]);
        assert_eq!(
            cgroup_fs_from(info, links, &["devices", "memory"]),
            CgroupFs::Legacy {
                hierarchies: names(&[("memory", "memory"), ("devices", "devices")]),
                links: names(&[("mem", "memory")]),
            }
        );
        assert_eq!(cgroup_fs_from(info, vec![], &["pids"]), CgroupFs::Skip);
    }

    #[test]
    fn unified_gets_cgroup2_and_no_cgroup_gets_nothing() {
        let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup_fs_from(v2, vec![], &[""]), CgroupFs::Unified);
        assert_eq!(cgroup_fs_from(v2, vec![], &[]), CgroupFs::Skip);
        assert_eq!(cgroup_fs_from(HYBRID, vec![], &[]), CgroupFs::Skip);
        assert_eq!(cgroup_fs_from("", vec![], &["memory"]), CgroupFs::Skip);
    }
}
