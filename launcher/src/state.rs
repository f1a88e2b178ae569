//! Detached containers' records (`launcher run -d`), one directory each:
//!
//! ```text
//! <root>/detached/<id>/record.json   the record (written whole: temp + rename)
//! <root>/detached/<id>/monitor.lock  flocked by the monitor for its life; holds
//!                                    `PID STARTTIME` of the monitor, then
//!                                    `exited CODE` once the container is done
//! <root>/detached/<id>/stopped       the user stopped it (`stop`, `kill`, `rm -f`):
//!                                    no restart
//! <root>/detached/<id>/log, log.1    its stdout and stderr ([`crate::logs`])
//! <root>/detached/.names.lock        held while a name is checked and claimed
//! ```
//!
//! Only the monitor writes the record while it lives. A monitor that died
//! without finishing (SIGKILL, OOM) is told by its free lock (flock locks
//! go with their last holder): [`settle`] then records the container as
//! exited with 137 (its processes were killed with the monitor: the runner
//! and the container's init have SIGKILL as their parent-death signal) and
//! reclaims what it left (state directory, cgroup, network lease) with the
//! same code as `run` uses for SIGKILLed launchers.

use crate::cache::{self, Cache};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the records live, below the state root.
pub const DIR: &str = "detached";
pub const RECORD: &str = "record.json";
pub const MONITOR_LOCK: &str = "monitor.lock";
pub const STOPPED: &str = "stopped";

/// The exit status recorded for a container whose monitor died: docker's
/// 137 (128 + SIGKILL), which is what happened to the container.
pub const EXIT_MONITOR_DIED: i32 = 137;

/// The most of a record that is read: a few kilobytes in practice.
const MAX_RECORD: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Restarting,
    Exited,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
        }
    }
}

/// `--restart`: docker's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    No,
    /// At most `max` restarts (0: no bound) after a non-zero exit.
    OnFailure {
        max: u32,
    },
    Always,
    UnlessStopped,
}

impl std::str::FromStr for Restart {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{text}`: the restart policies are no, on-failure[:N], always, unless-stopped")
        };
        match text.split_once(':') {
            None => match text {
                "no" => Ok(Restart::No),
                "on-failure" => Ok(Restart::OnFailure { max: 0 }),
                "always" => Ok(Restart::Always),
                "unless-stopped" => Ok(Restart::UnlessStopped),
                _ => Err(bad()),
            },
            Some(("on-failure", n)) => n
                .parse()
                .map(|max| Restart::OnFailure { max })
                .map_err(|_| bad()),
            Some(_) => Err(bad()),
        }
    }
}

impl Restart {
    pub fn name(self) -> &'static str {
        match self {
            Restart::No => "no",
            Restart::OnFailure { .. } => "on-failure",
            Restart::Always => "always",
            Restart::UnlessStopped => "unless-stopped",
        }
    }

    /// Whether a container that exited with `code` after `restarts`
    /// restarts is started again; never once the user stopped it.
    pub fn wants_restart(self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            Restart::No => false,
            Restart::OnFailure { max } => code != 0 && (max == 0 || restarts < max),
            Restart::Always | Restart::UnlessStopped => true,
        }
    }
}

/// What the container was made with, for `inspect` and the commands that
/// act on it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Config {
    pub image: String,
    /// The command as given (or the image's), without our init in front.
    pub command: Vec<String>,
    pub hostname: String,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub tty: bool,
    pub network: String,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub cgroup_parent: Option<String>,
    pub network_state: PathBuf,
    pub init_path: Option<PathBuf>,
    pub restart: Restart,
    pub auto_remove: bool,
    /// `-l/--label`s, as docker's inspect shows them.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// What `exec` starts with besides: the run's privilege flags, as given
    /// ([`crate::security::decide`] decides from them again).
    #[serde(default)]
    pub privileges: Privileges,
    /// The health check run (the flags' and the image's), once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::health::Check>,
}

/// `run`'s `--cap-add`, `--cap-drop`, `--privileged`, `--security-opt`,
/// `--ulimit`, `--group-add`: a process `exec` starts gets what the
/// container's first process got, as with docker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges {
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub privileged: bool,
    pub security_opt: Vec<String>,
    pub ulimits: Vec<String>,
    pub group_add: Vec<String>,
}

impl Privileges {
    pub fn of(opts: &crate::Options) -> Privileges {
        Privileges {
            cap_add: opts.cap_add.clone(),
            cap_drop: opts.cap_drop.clone(),
            privileged: opts.privileged,
            security_opt: opts.security_opt.clone(),
            ulimits: opts.ulimits.clone(),
            group_add: opts.group_add.clone(),
        }
    }

    /// As the [`crate::Options`] that [`crate::security::decide`] reads.
    pub fn options(&self) -> crate::Options {
        crate::Options {
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            privileged: self.privileged,
            security_opt: self.security_opt.clone(),
            ulimits: self.ulimits.clone(),
            group_add: self.group_add.clone(),
            ..Default::default()
        }
    }
}

/// The running process as the container's init was started: what `exec`
/// starts from (docker exec's defaults are the container's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Process {
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub stop_signal: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The container's first process, as the host sees it (0: none).
    pub pid: i32,
    /// Its start time (field 22 of /proc/PID/stat), so that a reused pid is
    /// never signalled.
    pub pid_start: u64,
    pub exit_code: i32,
    /// Unix time in nanoseconds; 0 when it never happened.
    pub started_at: u64,
    pub finished_at: u64,
    pub oom_killed: bool,
    pub restart_count: u32,
    pub error: String,
    pub process: Process,
    /// With a health check: the current start's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
}

/// The monitor, for `ps` and `rm -f` (its liveness is told by its lock).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Identity {
    pub pid: i32,
    pub start: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub created: u64,
    pub config: Config,
    pub monitor: Identity,
    pub state: State,
}

impl Record {
    pub fn new(id: String, name: String, config: Config) -> Record {
        Record {
            id,
            name,
            created: now(),
            config,
            monitor: Identity::default(),
            state: State {
                status: Status::Created,
                pid: 0,
                pid_start: 0,
                exit_code: 0,
                started_at: 0,
                finished_at: 0,
                oom_killed: false,
                restart_count: 0,
                error: String::new(),
                process: Process::default(),
                health: None,
            },
        }
    }
}

/// A detached container's directory, found by name or id.
#[derive(Debug, Clone)]
pub struct Handle {
    pub id: String,
    pub dir: PathBuf,
}

impl Handle {
    pub fn record(&self) -> Result<Record> {
        read_record(&self.dir)
    }
    pub fn stopped_by_user(&self) -> bool {
        self.dir.join(STOPPED).exists()
    }
    /// Marks the container as stopped by the user: its monitor restarts it
    /// no more.
    pub fn mark_stopped(&self) -> Result<()> {
        let path = self.dir.join(STOPPED);
        fs::write(&path, "").map_err(Error::io("writing", &path))
    }
}

/// `<root>/detached`, made 0700 when missing.
pub fn records_dir(cache: &Cache) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = cache.root().join(DIR);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(Error::io("creating", &dir)(e))
        }
        _ => Ok(dir),
    }
}

pub fn read_record(dir: &Path) -> Result<Record> {
    let path = dir.join(RECORD);
    let mut text = Vec::new();
    File::open(&path)
        .and_then(|f| f.take(MAX_RECORD).read_to_end(&mut text))
        .map_err(Error::io("reading", &path))?;
    serde_json::from_slice(&text).map_err(|e| {
        Error::io("parsing", &path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })
}

pub fn write_record(cache: &Cache, dir: &Path, record: &Record) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record).unwrap_or_default();
    cache.write_atomically(&dir.join(RECORD), &bytes)
}

/// Every detached container, in no particular order.
pub fn list(cache: &Cache) -> Result<Vec<Handle>> {
    let dir = cache.root().join(DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("reading", &dir)(e)),
    };
    Ok(entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter(|e| e.path().join(RECORD).is_file())
        .map(|e| Handle {
            id: e.file_name().to_string_lossy().into_owned(),
            dir: e.path(),
        })
        .collect())
}

/// The container named `what`, or whose id is `what` or starts with it
/// (docker's lookup: a full id, a name, then a unique prefix).
pub fn resolve(cache: &Cache, what: &str) -> Result<Handle> {
    let all = list(cache)?;
    if let Some(h) = all.iter().find(|h| h.id == what) {
        return Ok(h.clone());
    }
    let named = |h: &&Handle| read_record(&h.dir).is_ok_and(|r| r.name == what);
    if let Some(h) = all.iter().find(named) {
        return Ok(h.clone());
    }
    let prefixed: Vec<&Handle> = match what.is_empty() {
        true => Vec::new(),
        false => all.iter().filter(|h| h.id.starts_with(what)).collect(),
    };
    match prefixed[..] {
        [one] => Ok(one.clone()),
        [] => Err(Error::NoSuchContainer { name: what.into() }),
        _ => Err(Error::AmbiguousContainer {
            name: what.into(),
            count: prefixed.len(),
        }),
    }
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Ok(());
    }
    Err(Error::Invalid {
        what: "container name (allowed: [a-zA-Z0-9][a-zA-Z0-9_.-]*)",
        value: name.into(),
    })
}

/// A foreground `run --name NAME` is refused when a detached container has
/// that name (docker's message, with its id).
pub fn refuse_detached_name(cache: &Cache, name: Option<&str>) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    let Ok(all) = list(cache) else { return Ok(()) };
    for h in all {
        if read_record(&h.dir).is_ok_and(|r| r.name == name) {
            return Err(Error::NameInUse {
                name: name.into(),
                id: h.id,
            });
        }
    }
    Ok(())
}

/// Makes the directory of a new detached container with its record, its
/// monitor lock already held (returned: the monitor inherits it), after
/// checking, under a lock, that no container has its name. Staged under
/// `tmp/` and renamed into place, as [`Cache::create_container`] does, so
/// that nobody ever sees the directory without its lock held.
pub fn create(cache: &Cache, record: &Record) -> Result<(Handle, File)> {
    create_with(cache, record, refuse_name)
}

/// [`create`] for a foreground container that detaches: its own state
/// directory holds its name already; only detached containers' are checked.
pub fn create_detaching(cache: &Cache, record: &Record) -> Result<(Handle, File)> {
    create_with(cache, record, |cache, name| {
        refuse_detached_name(cache, Some(name))
    })
}

fn create_with(
    cache: &Cache,
    record: &Record,
    refuse: fn(&Cache, &str) -> Result<()>,
) -> Result<(Handle, File)> {
    let records = records_dir(cache)?;
    let staging = cache
        .root()
        .join("tmp")
        .join(format!("detached-{}", cache::random_id()));
    let _staging_lock = cache::Lock::exclusive(&staging.with_extension("lock"))?;
    let made = stage(cache, &staging, record).and_then(|lock| {
        let _names = cache::Lock::exclusive(&records.join(".names.lock"))?;
        refuse(cache, &record.name)?;
        let dir = records.join(&record.id);
        fs::rename(&staging, &dir).map_err(Error::io("moving into place", &dir))?;
        Ok((
            Handle {
                id: record.id.clone(),
                dir,
            },
            lock,
        ))
    });
    if made.is_err() {
        let _ = cache::remove_tree(&staging);
    }
    made
}

fn stage(cache: &Cache, staging: &Path, record: &Record) -> Result<File> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(staging)
        .map_err(Error::io("creating", staging))?;
    let path = staging.join(MONITOR_LOCK);
    let lock = fs::OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(Error::io("creating", &path))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::io("locking", &path)(std::io::Error::last_os_error()));
    }
    write_record(cache, staging, record)?;
    Ok(lock)
}

/// A name in use by a detached container, or by a container run in the
/// foreground with `--name` (running, or kept with `--keep`).
fn refuse_name(cache: &Cache, name: &str) -> Result<()> {
    refuse_detached_name(cache, Some(name))?;
    let dir = cache.root().join("containers").join(name);
    if dir.exists() {
        return Err(Error::NameInUse {
            name: name.into(),
            id: name.into(),
        });
    }
    Ok(())
}

/// Writes the monitor's identity into its lock file.
pub fn write_identity(lock: &mut File, me: Identity) {
    let _ = lock.set_len(0);
    let _ = lock.rewind();
    let _ = writeln!(lock, "{} {}", me.pid, me.start);
}

/// Appends the final status to the lock file, for `wait` (which reads it
/// through its own descriptor even when `--rm` removed the directory).
pub fn write_exit(lock: &mut File, code: i32) {
    let _ = lock.seek(std::io::SeekFrom::End(0));
    let _ = writeln!(lock, "exited {code}");
}

/// The `exited CODE` line of a lock file's text.
pub fn exit_in_lock(text: &str) -> Option<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix("exited "))
        .and_then(|c| c.trim().parse().ok())
}

/// True while the container's monitor runs (holds its lock).
pub fn monitor_alive(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(MONITOR_LOCK)) else {
        return false;
    };
    // SAFETY: flock on an fd we own; released when it is closed.
    let free = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0;
    !free
}

/// The record, brought up to date: a container whose monitor died is
/// recorded as exited ([`EXIT_MONITOR_DIED`]) and what it left reclaimed.
pub fn settle(cache: &Cache, handle: &Handle) -> Result<Record> {
    let record = handle.record()?;
    if record.state.status == Status::Exited {
        return Ok(record);
    }
    if record.monitor.pid > 0 && !process_alive(record.monitor.pid, record.monitor.start) {
        // The monitor is gone; its runner, which shares the lock, follows
        // it in a moment (its parent-death signal).
        wait_for_lock(&handle.dir, DYING);
    }
    // Taken only when the monitor (and the runner that shares its lock) is
    // gone; held while the record is rewritten, so that two commands do
    // not both reclaim.
    let Some(_lock) = cache::try_lock(&handle.dir.join(MONITOR_LOCK)) else {
        return Ok(record);
    };
    let mut record = handle.record()?;
    if record.state.status == Status::Exited {
        return Ok(record);
    }
    kill_if_same(record.state.pid, record.state.pid_start, libc::SIGKILL);
    reclaim(cache, &record.config);
    record.state.status = Status::Exited;
    record.state.exit_code = EXIT_MONITOR_DIED;
    record.state.pid = 0;
    record.state.finished_at = now();
    record.state.error = "the container's monitor died; its processes were killed".into();
    write_record(cache, &handle.dir, &record)?;
    Ok(record)
}

/// How long a dead monitor's runner may take to follow it.
const DYING: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits up to `timeout` for the monitor's lock to be free.
fn wait_for_lock(dir: &Path, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while monitor_alive(dir) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// True when `pid` is the process that started at `start` and is not a
/// zombie (field 3 of /proc/PID/stat, after the parenthesised name).
pub fn process_alive(pid: i32, start: u64) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(after) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return false;
    };
    let fields: Vec<&str> = after.split(' ').collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    !zombie && fields.get(19).and_then(|s| s.parse().ok()) == Some(start)
}

/// What a dead monitor's container left: its state directory (a lock
/// nobody holds), its cgroup (named with a dead owner), its lease. Best
/// effort, as in `run`: what cannot go now goes with the next run.
pub fn reclaim(cache: &Cache, config: &Config) {
    cache.reclaim_stale();
    if let Ok(root) = crate::cgroups::CgroupRoot::detect() {
        let _ = crate::cgroups::reclaim_stale(
            &root,
            config.cgroup_parent.as_deref(),
            crate::resources::CGROUP_PREFIX,
        );
    }
    if !cache::rootless() && config.network_state.exists() {
        let net = crate::network::Config {
            state_dir: config.network_state.clone(),
            ..Default::default()
        };
        let _ = crate::network::reclaim_stale(&net);
    }
}

/// Sends `signal` to `pid` if it is still the process that started at
/// `start` (a pidfd pins it between the check and the kill). False when
/// it is gone.
pub fn kill_if_same(pid: i32, start: u64, signal: i32) -> bool {
    let Some(fd) = pidfd_if_same(pid, start) else {
        return false;
    };
    // SAFETY: pidfd_send_signal with a pidfd we own and no siginfo.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    rc == 0
}

/// A pidfd for `pid`, if it is the process that started at `start`.
pub fn pidfd_if_same(pid: i32, start: u64) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this fd.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    // Checked after the pidfd is open: if this is still the process, the
    // pidfd is its, whatever happens to the pid later.
    (crate::cgroups::start_time(pid as u32) == Some(start)).then_some(fd)
}

/// Unix time now, in nanoseconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// RFC 3339 in UTC with nanoseconds (`2026-12-01T02:36:27.123456789Z`),
/// as docker prints times; `0001-01-01T00:00:00Z` for 0 (never).
pub fn rfc3339(nanos: u64) -> String {
    if nanos == 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    let secs = nanos / 1_000_000_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        nanos % 1_000_000_000
    )
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, public domain algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Docker's words for a duration (`units.HumanDuration`): `Less than a
/// second`, `3 seconds`, `About a minute`, `5 minutes`, `About an hour` …
pub fn human_duration(nanos: u64) -> String {
    let secs = nanos / 1_000_000_000;
    let plural = |n: u64, unit: &str| match n {
        1 => format!("1 {unit}"),
        n => format!("{n} {unit}s"),
    };
    match secs {
        0 => "Less than a second".into(),
        1..60 => plural(secs, "second"),
        60..120 => "About a minute".into(),
        120..3600 => plural(secs / 60, "minute"),
        3600..7200 => "About an hour".into(),
        7200..172_800 => plural(secs / 3600, "hour"),
        172_800..1_209_600 => plural(secs / 86_400, "day"),
        1_209_600..5_184_000 => plural(secs / 604_800, "week"),
        5_184_000..63_072_000 => plural(secs / 2_592_000, "month"),
        _ => plural(secs / 31_536_000, "year"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_read_and_decide_like_docker() {
        assert_eq!("no".parse(), Ok(Restart::No));
        assert_eq!("on-failure".parse(), Ok(Restart::OnFailure { max: 0 }));
        assert_eq!("on-failure:3".parse(), Ok(Restart::OnFailure { max: 3 }));
        assert_eq!("always".parse(), Ok(Restart::Always));
        assert_eq!("unless-stopped".parse(), Ok(Restart::UnlessStopped));
        for bad in ["", "sometimes", "on-failure:x", "always:3", "on-failure:-1"] {
            let err = bad.parse::<Restart>().unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
        let three = Restart::OnFailure { max: 3 };
        assert!(three.wants_restart(1, 2, false));
        assert!(!three.wants_restart(1, 3, false));
        assert!(!three.wants_restart(0, 0, false));
        assert!(Restart::OnFailure { max: 0 }.wants_restart(1, 1000, false));
        assert!(Restart::Always.wants_restart(0, 9, false));
        assert!(!Restart::Always.wants_restart(1, 0, true));
        assert!(!Restart::No.wants_restart(1, 0, false));
    }

    #[test]
    fn times_print_as_docker_prints_them() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339(1), "1970-01-01T00:00:00.000000001Z");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.
        assert_eq!(
            rfc3339(951_827_696_000_000_000),
            "2000-02-29T12:34:56.000000000Z"
        );
        assert_eq!(
            rfc3339(1_796_092_587_500_000_000),
            "2026-12-01T02:36:27.500000000Z"
        );
        let s = 1_000_000_000;
        assert_eq!(human_duration(s / 2), "Less than a second");
        assert_eq!(human_duration(s), "1 second");
        assert_eq!(human_duration(3 * s), "3 seconds");
        assert_eq!(human_duration(90 * s), "About a minute");
        assert_eq!(human_duration(300 * s), "5 minutes");
        assert_eq!(human_duration(4000 * s), "About an hour");
        assert_eq!(human_duration(3 * 86_400 * s), "3 days");
    }

    #[test]
    fn names_follow_dockers_rule() {
        for good in ["web", "a", "x.y_z-1", "0abc"] {
            check_name(good).unwrap();
        }
        for bad in ["", "-x", ".x", "_x", "a/b", "a b", "a:b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_lock_file_carries_the_exit_status() {
        assert_eq!(exit_in_lock("12 345\nexited 3\n"), Some(3));
        assert_eq!(exit_in_lock("12 345\n"), None);
    }

    #[test]
    fn names_are_refused_while_taken_and_prefixes_resolve() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path().to_path_buf()).unwrap();
        let rec = |id: &str, name: &str| Record::new(id.into(), name.into(), Config::default());
        let (a, _lock_a) = create(&cache, &rec("abc123", "web")).unwrap();
        let err = create(&cache, &rec("abd456", "web")).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "Conflict. The container name \"/web\" is already in use by container \"abc123\""
            ),
            "{err}"
        );
        let (_b, _lock_b) = create(&cache, &rec("abd456", "db")).unwrap();
        assert_eq!(resolve(&cache, "web").unwrap().id, "abc123");
        assert_eq!(resolve(&cache, "abc").unwrap().id, "abc123");
        assert_eq!(resolve(&cache, "abd456").unwrap().id, "abd456");
        assert!(matches!(
            resolve(&cache, "ab"),
            Err(Error::AmbiguousContainer { count: 2, .. })
        ));
        assert!(matches!(
            resolve(&cache, "nope"),
            Err(Error::NoSuchContainer { .. })
        ));
        assert!(refuse_detached_name(&cache, Some("db")).is_err());
        assert!(refuse_detached_name(&cache, Some("other")).is_ok());
        // Nothing staged is left, and the monitor's lock is held.
        assert!(monitor_alive(&a.dir));
        let tmp: Vec<_> = fs::read_dir(root.path().join("tmp")).unwrap().collect();
        assert!(tmp.is_empty(), "{tmp:?}");
    }
}
