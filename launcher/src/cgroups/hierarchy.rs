//! Finding the cgroup hierarchy: unified (v2), or one v1 mount per
//! controller (legacy and hybrid layouts), and this process's place in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Error;

/// The v1 controllers the launcher uses: the three it limits, `cpuacct`
/// for the usage counter where it is mounted apart from `cpu`, and
/// `devices` for the device allowlist ([`super::devices`]).
pub const CONTROLLERS: [&str; 5] = ["memory", "pids", "cpu", "cpuacct", "devices"];

/// Where cgroups are made. Detected with [`CgroupRoot::detect`], or built by
/// hand over a fake tree in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    /// cgroup v2: one tree for every controller.
    Unified(Hierarchy),
    /// cgroup v1: a tree per controller (several may share a mount).
    Legacy(BTreeMap<String, Hierarchy>),
}

/// One mounted tree and the directory of this process's cgroup in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    pub current: PathBuf,
}

impl Hierarchy {
    /// The directory for a `--cgroup-parent`: absolute names start at the
    /// root of the tree (docker's cgroupfs driver), relative ones below this
    /// process's own cgroup.
    pub fn resolve(&self, parent: &str) -> PathBuf {
        match parent.strip_prefix('/') {
            Some(abs) => self.mount.join(abs),
            None => self.current.join(parent),
        }
    }

    /// [`Hierarchy::resolve`] for cgroup v2, where a cgroup holding
    /// processes cannot give its children controllers (the "no internal
    /// processes" rule) and this process's own cgroup holds at least this
    /// process: relative names go beside it, below its parent (a systemd
    /// slice, or the delegated `user@UID.service` subtree of a rootless
    /// caller), and below the root when it is the root.
    pub fn resolve_v2(&self, parent: &str) -> PathBuf {
        match parent.strip_prefix('/') {
            Some(abs) => self.mount.join(abs),
            None => match self.current.parent() {
                Some(up) if self.current != self.mount && up.starts_with(&self.mount) => {
                    up.join(parent)
                }
                _ => self.mount.join(parent),
            },
        }
    }
}

impl CgroupRoot {
    /// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn detect() -> Result<Self, Error> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let cgroup = read("/proc/self/cgroup")?;
        Self::from_proc(&mountinfo, &cgroup)
    }

    /// Decides from the text of mountinfo and /proc/self/cgroup. A v1 mount
    /// of any controller we use wins over a cgroup2 mount: on hybrid layouts
    /// (systemd's, or this project's CI with only hugetlb in
    /// /sys/fs/cgroup/unified) the cgroup2 tree cannot get those controllers
    /// while v1 holds them. crun refuses such machines; we use v1 there.
    pub fn from_proc(mountinfo: &str, proc_cgroup: &str) -> Result<Self, Error> {
        let paths = parse_proc_cgroup(proc_cgroup);
        let mut legacy = BTreeMap::new();
        let mut unified = None;
        for mount in mountinfo.lines().filter_map(parse_mount_line) {
            match mount.fstype.as_str() {
                "cgroup" => {
                    for ctrl in mount.options.split(',') {
                        if !CONTROLLERS.contains(&ctrl) || legacy.contains_key(ctrl) {
                            continue;
                        }
                        let Some(path) = paths.get(ctrl) else {
                            continue;
                        };
                        legacy.insert(ctrl.to_string(), hierarchy_of(&mount, path));
                    }
                }
                // The first cgroup2 mount, unless one sits at the standard place.
                "cgroup2" if unified.is_none() || mount.point == Path::new("/sys/fs/cgroup") => {
                    if let Some(path) = paths.get("") {
                        unified = Some(hierarchy_of(&mount, path));
                    }
                }
                _ => {}
            }
        }
        if !legacy.is_empty() {
            return Ok(Self::Legacy(legacy));
        }
        unified.map(Self::Unified).ok_or(Error::NoHierarchy)
    }

    /// True for cgroup v2.
    pub fn is_unified(&self) -> bool {
        matches!(self, Self::Unified(_))
    }
}

fn read(path: &str) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })
}

struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    options: String,
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
/// (proc(5)): the optional fields end at the lone `-`.
fn parse_mount_line(line: &str) -> Option<Mount> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let mut post = post.split(' ');
    let fstype = post.next()?.to_string();
    let _source = post.next()?;
    let options = post.next().unwrap_or("").to_string();
    Some(Mount {
        root: unescape(pre.get(3)?),
        point: PathBuf::from(unescape(pre.get(4)?)),
        fstype,
        options,
    })
}

/// mountinfo writes space, tab, newline and backslash as `\040`-style octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `4:memory:/a/b` → memory → /a/b; `2:cpu,cpuacct:/x` gives both; the v2
/// line `0::/x` is stored under the empty name.
fn parse_proc_cgroup(text: &str) -> BTreeMap<String, String> {
    let mut paths = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        for ctrl in ctrls.split(',') {
            paths.insert(ctrl.to_string(), path.to_string());
        }
    }
    paths
}

/// The mount shows the tree from `root` on (a bind mount or a cgroup
/// namespace shows a subtree), so our cgroup's directory is the mount point
/// plus the part of our path below that root.
fn hierarchy_of(mount: &Mount, path: &str) -> Hierarchy {
    let below = path
        .strip_prefix(mount.root.trim_end_matches('/'))
        .unwrap_or(path);
    let below = below.trim_start_matches('/');
    Hierarchy {
        mount: mount.point.clone(),
        current: if below.is_empty() {
            mount.point.clone()
        } else {
            mount.point.join(below)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/02a4
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn hybrid_layout_is_treated_as_v1() {
        let root = CgroupRoot::from_proc(HYBRID, HYBRID_CGROUP).unwrap();
        let CgroupRoot::Legacy(map) = root else {
            panic!("not v1: {root:?}")
        };
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["cpu", "cpuacct", "memory", "pids"]
        );
        assert_eq!(
            map["memory"].current,
            Path::new("/sys/fs/cgroup/memory/process_api/02a4")
        );
        assert_eq!(map["pids"].current, Path::new("/sys/fs/cgroup/pids"));
    }

    #[test]
    fn comounted_controllers_share_a_directory() {
        let info = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let root = CgroupRoot::from_proc(info, "3:cpu,cpuacct:/a\n").unwrap();
        let CgroupRoot::Legacy(map) = root else {
            panic!()
        };
        assert_eq!(map["cpu"], map["cpuacct"]);
        assert_eq!(
            map["cpu"].current,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/a")
        );
    }

    #[test]
    fn unified_layout_is_v2() {
        let info = "\
25 21 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
30 21 0:25 / /sys/fs/bpf rw - bpf bpf rw
";
        let root = CgroupRoot::from_proc(info, "0::/user.slice/session-1.scope\n").unwrap();
        assert_eq!(
            root,
            CgroupRoot::Unified(Hierarchy {
                mount: "/sys/fs/cgroup".into(),
                current: "/sys/fs/cgroup/user.slice/session-1.scope".into(),
            })
        );
    }

    #[test]
    fn mount_root_is_cut_from_the_current_path() {
        // Inside a cgroup namespace or a bind mount of a subtree.
        let info = "25 21 0:22 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let root = CgroupRoot::from_proc(info, "0::/kubepods/pod1/c1\n").unwrap();
        let CgroupRoot::Unified(h) = root else {
            panic!()
        };
        assert_eq!(h.current, Path::new("/sys/fs/cgroup/c1"));
    }

    #[test]
    fn escaped_mount_points_are_decoded() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/x\\y"), r"/x\\y");
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let info = "30 21 0:25 / /sys/fs/bpf rw - bpf bpf rw\n";
        assert!(matches!(
            CgroupRoot::from_proc(info, "0::/\n"),
            Err(Error::NoHierarchy)
        ));
    }

    #[test]
    fn parent_names_resolve_absolute_from_the_mount() {
        let h = Hierarchy {
            mount: "/cg".into(),
            current: "/cg/me".into(),
        };
        assert_eq!(h.resolve("/cradle"), Path::new("/cg/cradle"));
        assert_eq!(h.resolve("cradle"), Path::new("/cg/me/cradle"));
        assert_eq!(h.resolve_v2("/cradle"), Path::new("/cg/cradle"));
        assert_eq!(h.resolve_v2("cradle"), Path::new("/cg/cradle"));
        let deep = Hierarchy {
            mount: "/cg".into(),
            current: "/cg/user.slice/user-0.slice/session-1.scope".into(),
        };
        assert_eq!(
            deep.resolve_v2("rel0"),
            Path::new("/cg/user.slice/user-0.slice/rel0")
        );
        let at_root = Hierarchy {
            mount: "/cg".into(),
            current: "/cg".into(),
        };
        assert_eq!(at_root.resolve_v2("rel0"), Path::new("/cg/rel0"));
    }
}
