//! Resource limits: one cgroup per container, made before the container's
//! first process runs, joined by it, watched for OOM kills, and removed at exit.
//!
//! In `launcher run`:
//!
//! ```text
//! let root = CgroupRoot::detect()?;
//! cgroups::reclaim_stale(&root, parent, "cradle-")?;   // cgroups of dead launchers
//! let name = format!("cradle-{}-{id}", cgroups::owner_tag());
//! let devices = Some(&devices::ALLOWED[..]);   // None in a user namespace
//! let cg = Cgroup::create(&root, parent, &name, &limits, devices)?;   // before clone
//! let entry = cg.entry()?;              // v2: clone3 into it; v1: the child
//! // writes 0 to each `tasks` (no CLONE_NEWCGROUP), then unshares CLONE_NEWCGROUP
//! // release the child; wait for it
//! let oom = cg.oom_killed()?;           // before remove: exit 137, "out of memory"
//! cg.remove()?;                         // also on Drop, best effort
//! ```

pub mod devices;
mod hierarchy;
mod limits;
pub mod mountinfo;

use std::collections::BTreeMap;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use hierarchy::{CONTROLLERS, CgroupRoot, Hierarchy};
pub use limits::{CPU_PERIOD_US, Limits, Setting, shares_to_weight};

/// The parent used without `--cgroup-parent`. v2: absolute, at the root of
/// the tree, because a v2 cgroup with processes cannot hand controllers to
/// children (the "no internal processes" rule) and the launcher's own cgroup
/// has one: the launcher. v1 has no such rule, so there the containers nest
/// below the launcher's own cgroup and stay under whatever limits its caller set.
///
/// Rootless on v2 it is relative, so beside the launcher's own cgroup (see
/// [`Hierarchy::resolve_v2`]): inside the subtree systemd delegates to the
/// user (`user@UID.service/…`), the only place the user may make cgroups, as
/// podman makes its own there.
pub fn default_parent(root: &CgroupRoot) -> &'static str {
    if root.is_unified() && !crate::cache::rootless() {
        "/cradle"
    } else {
        "cradle"
    }
}

/// How long [`Cgroup::remove`] waits for killed processes to leave.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("find a cgroup hierarchy: neither cgroup v1 controllers nor cgroup2 are mounted")]
    NoHierarchy,
    #[error("cgroup controller `{controller}` is not available in `{}`", path.display())]
    ControllerMissing { controller: String, path: PathBuf },
    #[error("create cgroup `{}`", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write `{value}` to `{}`", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("limit `--{name}` {value} is invalid: {why}")]
    InvalidLimit {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("empty cgroup `{}`: processes still there after {:?}", path.display(), DRAIN_TIMEOUT)]
    Busy { path: PathBuf },
    #[error("{step} the device program of cgroup `{}`", path.display())]
    DeviceProgram {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove cgroup `{}`", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the container's first process enters its cgroup, opened by the
/// launcher before the clone.
///
/// Writing another process's pid to `cgroup.procs` write-locks the kernel's
/// global threadgroup semaphore, whose first writer waits for an RCU grace
/// period: 5 to 20 ms here, most of a container's start. Both ways below
/// take only the read side:
#[derive(Debug)]
pub enum Entry {
    /// v2: the cgroup's directory, for clone3's `CLONE_INTO_CGROUP`: the
    /// child is born inside, with the device program already attached.
    Born(OwnedFd),
    /// v1: each tree's `tasks` file. The child, still one thread, writes `0`
    /// (itself) to each before it does anything else; a thread moving
    /// itself needs no lock on its thread group. Opened by the launcher, so
    /// a child in a user namespace passes the same permission check.
    Tasks(Vec<(PathBuf, OwnedFd)>),
}

/// A container's cgroup: one directory in v2, one per controller tree in v1.
/// Removed by [`Cgroup::remove`], or best-effort when dropped.
#[derive(Debug)]
pub struct Cgroup {
    unified: bool,
    /// Controller (`""` in v2) → directory; comounted v1 controllers repeat a directory.
    dirs: BTreeMap<String, PathBuf>,
    removed: bool,
    /// The process that made it: a forked child that drops a copy (the
    /// container's own process before exec) must not remove it.
    owner: u32,
    /// Parent directories this launcher made (`/cradle` …), parents first;
    /// each is marked ([`MADE_MARK`]) so that whichever launcher removes the
    /// last container in it removes it too.
    made_parents: Vec<PathBuf>,
}

impl Cgroup {
    /// Makes `parent/name` (parent: see [`Hierarchy::resolve`] and
    /// [`default_parent`]) and writes the limits. With `devices`, every
    /// device is denied but those ([`devices::ALLOWED`]): v1 in the
    /// `devices` controller, v2 by an eBPF program; without, device access
    /// is left as it is (a user namespace refuses device nodes already).
    /// Fails when the cgroup exists: two containers never share one.
    pub fn create(
        root: &CgroupRoot,
        parent: Option<&str>,
        name: &str,
        limits: &Limits,
        devices: Option<&[devices::Rule]>,
    ) -> Result<Self> {
        let parent = parent.unwrap_or(default_parent(root));
        let settings = limits.settings(root.is_unified())?;
        let mut needed = limits.controllers();
        // v2 has no devices controller: the program needs none.
        if devices.is_some() && !root.is_unified() {
            needed.push("devices");
        }
        // Another launcher may remove a parent it made between our making
        // (or finding) it and making the cgroup in it: make it again.
        let mut attempt = 0;
        let mut cg = loop {
            let made = match root {
                CgroupRoot::Unified(h) => create_unified(h, parent, name, &needed),
                CgroupRoot::Legacy(map) => create_legacy(map, parent, name, &needed),
            };
            match made {
                Err(Error::Create { source, .. })
                    if source.kind() == io::ErrorKind::NotFound && attempt < 5 =>
                {
                    attempt += 1;
                }
                other => break other?,
            }
        };
        // On failure `cg` is dropped, which removes what was made.
        cg.apply(&settings)?;
        if let Some(rules) = devices {
            cg.restrict_devices(rules)?;
        }
        Ok(cg)
    }

    /// The controllers it has a directory for: v1 names, or `""` for the
    /// one v2 cgroup (as the `0::` line of /proc/self/cgroup).
    pub fn controllers(&self) -> Vec<&str> {
        self.dirs.keys().map(String::as_str).collect()
    }

    /// The directories, one per distinct tree.
    pub fn paths(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = self.dirs.values().map(PathBuf::as_path).collect();
        out.sort();
        out.dedup();
        out
    }

    /// How the container's first process gets in without a migration of
    /// a whole process, opened before the clone ([`Entry`]).
    pub fn entry(&self) -> Result<Entry> {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |path: PathBuf, options: &std::fs::OpenOptions| match options.open(&path) {
            Ok(file) => Ok((path, OwnedFd::from(file))),
            Err(source) => Err(Error::Read { path, source }),
        };
        if self.unified {
            let mut options = std::fs::OpenOptions::new();
            options.read(true).custom_flags(libc::O_DIRECTORY);
            let (_, dir) = open(self.dirs[""].clone(), &options)?;
            return Ok(Entry::Born(dir));
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true);
        let tasks = self
            .paths()
            .into_iter()
            .map(|dir| open(dir.join("tasks"), &options))
            .collect::<Result<_>>()?;
        Ok(Entry::Tasks(tasks))
    }

    /// Moves `pid` (and its later children) into the cgroup, from outside:
    /// the way in when [`Cgroup::entry`]'s cannot be taken (a kernel or
    /// seccomp filter without clone3). Done while the child waits on the
    /// sync pipe, before it unshares its cgroup namespace, so that the
    /// namespace's root is this cgroup.
    pub fn add_process(&self, pid: u32) -> Result<()> {
        for dir in self.paths() {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the cgroup (in every tree, without repeats).
    pub fn procs(&self) -> Result<Vec<u32>> {
        let mut pids = Vec::new();
        for dir in self.paths() {
            let text = read_optional(&dir.join("cgroup.procs"))?.unwrap_or_default();
            pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// True when the kernel's OOM killer killed a process of this cgroup.
    /// v2: `oom_kill` in memory.events. v1: `oom_kill` in memory.oom_control
    /// (kernel 4.13+); older kernels lack it, and hitting the limit
    /// (memory.failcnt) is the closest sign left.
    pub fn oom_killed(&self) -> Result<bool> {
        let Some(dir) = self.dirs.get(if self.unified { "" } else { "memory" }) else {
            return Ok(false);
        };
        if self.unified {
            let events = read_optional(&dir.join("memory.events"))?.unwrap_or_default();
            return Ok(keyed(&events, "oom_kill").is_some_and(|n| n > 0));
        }
        let control = read_optional(&dir.join("memory.oom_control"))?.unwrap_or_default();
        if let Some(kills) = keyed(&control, "oom_kill") {
            return Ok(kills > 0);
        }
        let failcnt = read_optional(&dir.join("memory.failcnt"))?.unwrap_or_default();
        Ok(failcnt.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// CPU time used by the cgroup's processes: v2 `usage_usec` of cpu.stat,
    /// v1 cpuacct.usage (nanoseconds).
    pub fn cpu_usage(&self) -> Result<Duration> {
        if self.unified {
            let stat = read_optional(&self.dirs[""].join("cpu.stat"))?.unwrap_or_default();
            return Ok(Duration::from_micros(
                keyed(&stat, "usage_usec").unwrap_or(0),
            ));
        }
        let Some(dir) = self.dirs.get("cpuacct") else {
            return Ok(Duration::ZERO);
        };
        let ns = read_optional(&dir.join("cpuacct.usage"))?.unwrap_or_default();
        Ok(Duration::from_nanos(ns.trim().parse().unwrap_or(0)))
    }

    /// Kills what is left inside, waits until it is gone, removes the
    /// directories.
    pub fn remove(mut self) -> Result<()> {
        self.remove_dirs()
    }

    fn remove_dirs(&mut self) -> Result<()> {
        if self.removed {
            return Ok(());
        }
        for dir in self.paths() {
            kill_all(dir)?;
        }
        for dir in self.paths() {
            remove_dir(dir)?;
        }
        self.removed = true;
        // Deepest first, every marked parent (ours or another launcher's);
        // one that still holds a container (ENOTEMPTY, EBUSY) stays for the
        // launcher of that container to remove.
        let dirs: Vec<PathBuf> = self.dirs.values().cloned().collect();
        for dir in dirs {
            for parent in dir.ancestors().skip(1) {
                if !(self.made_parents.iter().any(|p| p == parent) || is_marked(parent))
                    || std::fs::remove_dir(parent).is_err()
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Before any process joins: v1 denies all in `devices.deny`, then
    /// allows each rule in `devices.allow` (cgroup-v1/devices.rst); v2
    /// attaches the eBPF program that allows the same.
    fn restrict_devices(&self, rules: &[devices::Rule]) -> Result<()> {
        if self.unified {
            return devices::attach(&self.dirs[""], rules);
        }
        let dir = &self.dirs["devices"];
        write(&dir.join("devices.deny"), devices::V1_DENY_ALL)?;
        // One rule per write(2), all through one open file.
        let path = dir.join("devices.allow");
        let mut allow = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|source| Error::Write {
                path: path.clone(),
                value: String::new(),
                source,
            })?;
        for line in devices::v1_lines(rules) {
            std::io::Write::write_all(&mut allow, line.as_bytes()).map_err(|source| {
                Error::Write {
                    path: path.clone(),
                    value: line,
                    source,
                }
            })?;
        }
        Ok(())
    }

    fn apply(&mut self, settings: &[Setting]) -> Result<()> {
        for s in settings {
            let dir = &self.dirs[if self.unified { "" } else { s.controller }];
            let path = dir.join(s.file);
            if s.optional && !path.exists() {
                continue;
            }
            write(&path, &s.value)?;
        }
        Ok(())
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        let _ = self.remove_dirs();
    }
}

/// v2: enables the controllers in `cgroup.subtree_control` on every level
/// from the root down to the parent (a child only gets what its parent
/// delegates), then makes the container's directory.
fn create_unified(h: &Hierarchy, parent: &str, name: &str, needed: &[&str]) -> Result<Cgroup> {
    let available = read_optional(&h.mount.join("cgroup.controllers"))?.unwrap_or_default();
    if let Some(missing) = needed
        .iter()
        .find(|c| !available.split_whitespace().any(|a| a == **c))
    {
        return Err(Error::ControllerMissing {
            controller: missing.to_string(),
            path: h.mount.clone(),
        });
    }
    let parent_dir = h.resolve_v2(parent);
    let below = parent_dir.strip_prefix(&h.mount).unwrap_or(Path::new(""));
    let mut level = h.mount.clone();
    let mut made_parents = Vec::new();
    for part in below.components() {
        enable_controllers(&level, needed)?;
        level.push(part);
        if make_dir(&level, true)? {
            made_parents.push(level.clone());
        }
    }
    let mut cg = Cgroup {
        unified: true,
        dirs: BTreeMap::new(),
        removed: false,
        owner: std::process::id(),
        made_parents,
    };
    enable_controllers(&level, needed)?;
    let dir = level.join(name);
    make_dir(&dir, false)?;
    cg.dirs.insert(String::new(), dir);
    Ok(cg)
}

fn enable_controllers(dir: &Path, needed: &[&str]) -> Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = read_optional(&path)?.unwrap_or_default();
    let missing: Vec<String> = needed
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&path, &missing.join(" "))
}

/// v1: a directory in each tree we use. Trees the limits do not need are
/// still joined when mounted: memory for OOM reports, cpuacct for usage,
/// pids so that a fork bomb can at least be counted. `devices` only when
/// `needed`: a container in a user namespace has no use for it, and every
/// v1 tree joined costs a migration.
fn create_legacy(
    map: &BTreeMap<String, Hierarchy>,
    parent: &str,
    name: &str,
    needed: &[&str],
) -> Result<Cgroup> {
    if let Some(missing) = needed.iter().find(|c| !map.contains_key(**c)) {
        return Err(Error::ControllerMissing {
            controller: missing.to_string(),
            path: "/proc/self/mountinfo".into(),
        });
    }
    let mut cg = Cgroup {
        unified: false,
        dirs: BTreeMap::new(),
        removed: false,
        owner: std::process::id(),
        made_parents: Vec::new(),
    };
    // memory always: the OOM kill count (global OOM kills too), and the
    // processes to kill at exit. The others only for a limit (or the device
    // allowlist): joining a tree costs a directory made and removed, and a
    // mount inside, that nothing reads without one. cpuacct goes with cpu,
    // for its usage.
    let wanted = |ctrl: &str| match ctrl {
        "memory" => true,
        "cpuacct" => needed.contains(&"cpu"),
        other => needed.contains(&other),
    };
    for (ctrl, h) in map.iter().filter(|(c, _)| wanted(c)) {
        let dir = h.resolve(parent).join(name);
        if !cg.dirs.values().any(|d| d == &dir) {
            let parent_dir = dir.parent().unwrap_or(&h.mount);
            let missing: Vec<&Path> = parent_dir
                .ancestors()
                .take_while(|a| a.starts_with(&h.mount) && *a != h.mount && !a.exists())
                .collect();
            for level in missing.into_iter().rev() {
                if make_dir(level, true)? {
                    cg.made_parents.push(level.to_path_buf());
                }
            }
            make_dir(&dir, false)?;
        }
        cg.dirs.insert(ctrl.clone(), dir);
    }
    Ok(cg)
}

/// Removes the cgroups below `parent` whose name starts with `prefix` and
/// carries the owner tag of a launcher that is gone ([`owner_tag`]), killing
/// what is left in them. Returns the removed directories.
pub fn reclaim_stale(
    root: &CgroupRoot,
    parent: Option<&str>,
    prefix: &str,
) -> Result<Vec<PathBuf>> {
    let parent = parent.unwrap_or(default_parent(root));
    let trees: Vec<(&str, &Hierarchy)> = match root {
        CgroupRoot::Unified(h) => vec![("", h)],
        CgroupRoot::Legacy(map) => map.iter().map(|(c, h)| (c.as_str(), h)).collect(),
    };
    let mut removed = Vec::new();
    for (_, h) in trees {
        let dir = match root {
            CgroupRoot::Unified(_) => h.resolve_v2(parent),
            CgroupRoot::Legacy(_) => h.resolve(parent),
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(tag) = name.strip_prefix(prefix) else {
                continue;
            };
            if !entry.path().is_dir() || owner_alive(tag) {
                continue;
            }
            let path = entry.path();
            if removed.contains(&path) {
                continue;
            }
            kill_all(&path)?;
            remove_dir(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// `PID-STARTTIME` of this process: put it right after the prefix in a
/// cgroup name so that [`reclaim_stale`] can tell a dead owner from a live
/// one, even after the pid is reused.
pub fn owner_tag() -> String {
    let pid = std::process::id();
    format!("{pid}-{}", start_time(pid).unwrap_or(0))
}

/// True when the tag at the start of `tag` (`PID-STARTTIME[-…]`) names a
/// living process. Names we cannot parse count as alive: never remove what
/// we do not understand.
fn owner_alive(tag: &str) -> bool {
    let mut parts = tag.splitn(3, '-');
    let (Some(Ok(pid)), Some(Ok(start))) = (
        parts.next().map(str::parse::<u32>),
        parts.next().map(str::parse::<u64>),
    ) else {
        return true;
    };
    // A zombie holds nothing: its launcher is gone (a SIGKILLed monitor's
    // runner stays one until init reaps it).
    start_time(pid) == Some(start) && is_running(pid as i32)
}

/// Field 22 of /proc/PID/stat, after the parenthesised command name which
/// may itself hold spaces and parentheses (proc(5)).
pub(crate) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

fn kill_all(dir: &Path) -> Result<()> {
    // cgroup.kill (v2, Linux 5.14) kills atomically, racing no fork.
    let kill_file = dir.join("cgroup.kill");
    let atomic = kill_file.exists();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let text = read_optional(&dir.join("cgroup.procs"))?.unwrap_or_default();
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        let alive: Vec<i32> = pids.into_iter().filter(|&p| is_running(p)).collect();
        if alive.is_empty() {
            return Ok(());
        }
        if atomic {
            write(&kill_file, "1")?;
        } else {
            // v1 has no atomic kill: repeat until a forking process is caught too.
            for pid in &alive {
                // SAFETY: plain kill(2) of a pid read from the cgroup.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Busy {
                path: dir.to_path_buf(),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// False for a pid that is gone or a zombie: a zombie holds no resources
/// and leaves the cgroup when its parent reaps it, which may be us later.
fn is_running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3));
    !matches!(state, None | Some("Z") | Some("X"))
}

/// rmdir, retried briefly: a killed task may keep the cgroup busy (EBUSY)
/// until its parent reaps it.
fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
    }
}

/// The extended attribute on a parent cgroup that a launcher made. cgroupfs
/// keeps `trusted.` attributes (root) and, since Linux 5.7, `user.` ones
/// (a delegated subtree).
const MADE_MARK: [&std::ffi::CStr; 2] = [c"trusted.cradle.made", c"user.cradle.made"];

/// Marks `dir` as made by a launcher; best effort (without the mark, only
/// the launcher that made it removes it).
fn mark_made(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    for name in MADE_MARK {
        // SAFETY: valid C strings and a one-byte value.
        if unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) } == 0
        {
            return;
        }
    }
}

fn is_marked(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    MADE_MARK.iter().any(|name| {
        // SAFETY: valid C strings; a zero-size query writes nothing.
        unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) >= 0 }
    })
}

/// mkdir; whether it made the directory (false: it existed, `exist_ok`).
/// A parent it made (`exist_ok`) is marked ([`mark_made`]).
fn make_dir(dir: &Path, exist_ok: bool) -> Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            if exist_ok {
                mark_made(dir);
            }
            Ok(true)
        }
        Err(e) if exist_ok && e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(Error::Create {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// `std::fs::write` opens with O_CREAT|O_TRUNC, which cgroupfs accepts for
/// its existing files (as `echo > file` does), and which lets tests run the
/// same code over a plain directory tree.
fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|source| Error::Write {
        path: path.to_path_buf(),
        value: value.into(),
        source,
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The number after `key ` in flat-keyed files (memory.events, cpu.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

#[cfg(test)]
mod tests;
