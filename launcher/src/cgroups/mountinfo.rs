//! What the container's `/sys/fs/cgroup` should be made of on this host,
//! read from the host's mountinfo: the parent decides it before the clone,
//! and [`crate::rootfs::cgroup`] mounts it.

use crate::rootfs::CgroupFs;
use crate::rootfs::cgroup::CGROUP_DIR;

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
}
