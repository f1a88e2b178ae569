//! Health checks of detached containers (`--health-cmd`, the image's
//! `Healthcheck`), as docker runs them.
//!
//! 1. [`decide`] merges the flags with the image's check, field by field;
//! 2. the monitor ([`crate::monitor`]) holds a [`Probe`] per start: its
//!    timer is the timeout of the monitor's own `poll`, so a container
//!    without a check costs no wakeup;
//! 3. each check is a process forked by the monitor (the checker) that
//!    enters the container as `launcher exec` does ([`crate::enter::spawn`])
//!    and reaps the command, killing its process group at the timeout; the
//!    monitor reads its output (the first [`OUTPUT_MAX`] bytes kept, the
//!    rest drained) and its result, and never waits for either;
//! 4. the results make the container's [`Health`]: `starting` until a
//!    success (`healthy`) or `retries` failures in a row past the start
//!    period (`unhealthy`), with the last [`LOG_MAX`] results.
//!
//! The checker dies with the monitor (parent-death signal), and the
//! command with the checker, so a SIGKILLed monitor leaves no check behind.

use crate::state::{self, Record};
use crate::{Error, Result};
use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Docker's defaults.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;
/// The shortest interval run: a shorter one (docker takes 1 ms) is run at
/// this pace, so that checks cannot keep the monitor from its other work.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// The bytes of a check's output kept (docker's 4 KiB).
pub const OUTPUT_MAX: usize = 4096;
/// The results kept (docker's 5).
pub const LOG_MAX: usize = 5;
/// How long past its timeout a checker may take to report before the
/// monitor kills it.
const GRACE: Duration = Duration::from_secs(5);

/// A health check: what runs and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The command's argv: `CMD-SHELL` is `/bin/sh -c CMD`.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub start_period: Duration,
    pub retries: u32,
}

/// `run`'s `--health-*` flags; None where not given.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub cmd: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
    /// `--no-healthcheck`.
    pub none: bool,
}

impl Flags {
    /// True when a flag other than `--no-healthcheck` was given.
    pub fn any(&self) -> bool {
        self.cmd.is_some()
            || self.interval.is_some()
            || self.timeout.is_some()
            || self.start_period.is_some()
            || self.retries.is_some()
    }
}

/// The check to run: the image's, with each flag given in its place;
/// none with `--no-healthcheck`, or when neither has a command.
pub fn decide(flags: &Flags, image: Option<&Check>) -> Option<Check> {
    if flags.none {
        return None;
    }
    let test = match (&flags.cmd, image) {
        (Some(cmd), _) => shell(cmd),
        (None, Some(check)) => check.test.clone(),
        (None, None) => return None,
    };
    let base = |pick: fn(&Check) -> Duration, default| {
        image.map(pick).filter(|d| !d.is_zero()).unwrap_or(default)
    };
    Some(Check {
        test,
        interval: flags
            .interval
            .unwrap_or_else(|| base(|c| c.interval, DEFAULT_INTERVAL))
            .max(MIN_INTERVAL),
        timeout: flags
            .timeout
            .unwrap_or_else(|| base(|c| c.timeout, DEFAULT_TIMEOUT)),
        start_period: flags
            .start_period
            .unwrap_or_else(|| base(|c| c.start_period, Duration::ZERO)),
        retries: flags
            .retries
            .or(image.map(|c| c.retries).filter(|&r| r > 0))
            .unwrap_or(DEFAULT_RETRIES),
    })
}

fn shell(cmd: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), cmd.into()]
}

/// The image config's `config.Healthcheck`, as docker writes it: `Test`
/// (`["NONE"]`, `["CMD", argv…]`, `["CMD-SHELL", "cmd"]`; empty: none),
/// and its durations in nanoseconds (0: the default). None when there is
/// no check, or `NONE`; an unknown `Test` kind is an error naming it.
pub fn from_image_config(config: &serde_json::Value) -> Result<Option<Check>> {
    let Some(hc) = config
        .pointer("/config/Healthcheck")
        .filter(|v| !v.is_null())
    else {
        return Ok(None);
    };
    let invalid = |value: String| Error::Invalid {
        what: "Healthcheck in the image config",
        value,
    };
    let test: Vec<String> = match hc.get("Test") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(t) => serde_json::from_value(t.clone()).map_err(|_| invalid(t.to_string()))?,
    };
    let argv = match test.split_first() {
        None => return Ok(None),
        Some((kind, _)) if kind == "NONE" => return Ok(None),
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((kind, [cmd])) if kind == "CMD-SHELL" => shell(cmd),
        _ => return Err(invalid(serde_json::to_string(&test).unwrap_or_default())),
    };
    let nanos = |key: &str| -> Result<Duration> {
        match hc.get(key) {
            None | Some(serde_json::Value::Null) => Ok(Duration::ZERO),
            Some(v) => v
                .as_u64()
                .map(Duration::from_nanos)
                .ok_or_else(|| invalid(format!("{key} {v}"))),
        }
    };
    let retries = match hc.get("Retries") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .and_then(|r| u32::try_from(r).ok())
            .ok_or_else(|| invalid(format!("Retries {v}")))?,
    };
    Ok(Some(Check {
        test: argv,
        interval: nanos("Interval")?,
        timeout: nanos("Timeout")?,
        start_period: nanos("StartPeriod")?,
        retries,
    }))
}

/// The image's check as read: none, one, or why its `Healthcheck` could
/// not be read (reported as the container's health, not refused: the
/// image still runs in the foreground, bundles and exports).
pub type ImageCheck = std::result::Result<Option<Check>, String>;

/// A duration in docker's (Go's) syntax: `500ms`, `10s`, `1m30s`, `1.5h`;
/// units ns, us (µs), ms, s, m, h; a sign in front. Negative values parse
/// (the caller refuses them with the flag's name).
pub fn parse_duration(text: &str) -> std::result::Result<(bool, Duration), String> {
    let bad = || format!("`{text}` is not a duration (such as 500ms, 10s, 1m30s)");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_end].parse().map_err(|_| bad())?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total)
        .map(|d| (negative, d))
        .map_err(|_| bad())
}

/// A `--health-interval` or `--health-timeout`: a duration above zero.
pub fn parse_positive(text: &str) -> std::result::Result<Duration, String> {
    match parse_duration(text)? {
        (false, d) if !d.is_zero() => Ok(d),
        _ => Err("must be above zero (such as 500ms, 10s, 1m30s)".into()),
    }
}

/// A `--health-start-period`: zero or more.
pub fn parse_not_negative(text: &str) -> std::result::Result<Duration, String> {
    match parse_duration(text)? {
        (false, d) => Ok(d),
        (true, d) if d.is_zero() => Ok(d),
        _ => Err("must not be negative".into()),
    }
}

/// A container's health, as `inspect` shows it (`State.Health`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: Status,
    pub failing_streak: u32,
    pub log: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Healthy => "healthy",
            Status::Unhealthy => "unhealthy",
        }
    }

    /// What `ps` adds after `Up …`, as docker.
    pub fn ps_suffix(self) -> &'static str {
        match self {
            Status::Starting => " (health: starting)",
            Status::Healthy => " (healthy)",
            Status::Unhealthy => " (unhealthy)",
        }
    }
}

/// One check's result: times in Unix nanoseconds, docker's -1 for a check
/// that could not run or timed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub start: u64,
    pub end: u64,
    pub exit_code: i32,
    pub output: String,
}

impl Health {
    /// The health of a container whose image's check could not be read:
    /// unhealthy, with why.
    pub fn broken(why: String) -> Health {
        let now = state::now();
        Health {
            status: Status::Unhealthy,
            failing_streak: 1,
            log: vec![Entry {
                start: now,
                end: now,
                exit_code: -1,
                output: why,
            }],
        }
    }

    /// Counts `result`: a success makes the container healthy; a failure
    /// past the start period (`counted`) adds to the streak, and `retries`
    /// of them in a row make it unhealthy.
    pub fn add(&mut self, result: Entry, counted: bool, retries: u32) {
        if result.exit_code == 0 {
            self.status = Status::Healthy;
            self.failing_streak = 0;
        } else if counted {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = Status::Unhealthy;
            }
        }
        self.log.push(result);
        let extra = self.log.len().saturating_sub(LOG_MAX);
        self.log.drain(..extra);
    }
}

/// The health checks of one start of a container.
pub struct Probe {
    pub check: Check,
    pub health: Health,
    started: Instant,
    /// A success ends the start period early, as docker.
    in_start_period: bool,
    due: Instant,
    running: Option<Running>,
}

/// A check under way.
struct Running {
    checker: Pid,
    pidfd: OwnedFd,
    output: OwnedFd,
    result: OwnedFd,
    kept: Vec<u8>,
    began: u64,
    deadline: Instant,
}

impl Probe {
    /// The probe of a start that began now: the first check after one
    /// interval, as docker.
    pub fn new(check: Check) -> Probe {
        let now = Instant::now();
        Probe {
            due: now + check.interval,
            check,
            health: Health::default(),
            started: now,
            in_start_period: true,
            running: None,
        }
    }

    /// The `poll` timeout in milliseconds until the probe has work to do,
    /// rounded up so that it never spins.
    pub fn poll_timeout(&self) -> i32 {
        let at = match &self.running {
            Some(r) => r.deadline,
            None => self.due,
        };
        let left = at.saturating_duration_since(Instant::now());
        left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
    }

    /// The fds to poll for: a running check's end and output.
    pub fn fds(&self) -> Vec<RawFd> {
        match &self.running {
            Some(r) => vec![r.pidfd.as_raw_fd(), r.output.as_raw_fd()],
            None => Vec::new(),
        }
    }

    /// Does what is due: drains a running check's output, ends it when
    /// its checker has exited (or is past its grace), starts the next one.
    /// True when the health changed (the record is to be written).
    pub fn service(&mut self, record: &Record) -> bool {
        let now = Instant::now();
        let mut changed = false;
        if let Some(running) = &mut self.running {
            drain(running.output.as_raw_fd(), &mut running.kept);
            let exited = readable(running.pidfd.as_raw_fd());
            if exited || now >= running.deadline {
                let running = self.running.take().expect("a running check");
                let result = finish(running, !exited, self.check.timeout);
                let counted = !self.in_start_period
                    || now.duration_since(self.started) >= self.check.start_period;
                if result.exit_code == 0 {
                    self.in_start_period = false;
                }
                self.health.add(result, counted, self.check.retries);
                self.due = Instant::now() + self.check.interval;
                changed = true;
            }
        }
        if self.running.is_none() && Instant::now() >= self.due {
            match start(record, &self.check) {
                Ok(running) => self.running = Some(running),
                Err(err) => {
                    let now = state::now();
                    let result = Entry {
                        start: now,
                        end: now,
                        exit_code: -1,
                        output: crate::monitor::chain(&err),
                    };
                    self.health.add(result, true, self.check.retries);
                    self.due = Instant::now() + self.check.interval;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Ends a running check at once (the container ended): its checker is
    /// killed, and the command with it.
    pub fn abort(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = nix::sys::signal::kill(r.checker, nix::sys::signal::Signal::SIGKILL);
            reap(r.checker);
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Forks the checker of `check` in the container of `record`.
fn start(record: &Record, check: &Check) -> Result<Running> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
            .map_err(Error::sys("creating a pipe"))
    };
    let (out_r, out_w) = pipe()?;
    let (result_r, result_w) = pipe()?;
    // The command's end of the output pipe blocks, as any stdout.
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(out_w.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(out_w.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    let monitor = nix::unistd::getpid();
    let began = state::now();
    // SAFETY: the monitor is single-threaded; the child runs `checker`,
    // which never returns.
    match unsafe { nix::unistd::fork() }.map_err(Error::sys("forking a health check"))? {
        ForkResult::Child => {
            drop((out_r, result_r));
            checker(record, check, monitor, out_w, result_w)
        }
        ForkResult::Parent { child } => {
            drop((out_w, result_w));
            let pidfd = match crate::monitor::pidfd_open(child) {
                Ok(fd) => fd,
                Err(err) => {
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    reap(child);
                    return Err(err);
                }
            };
            Ok(Running {
                checker: child,
                pidfd,
                output: out_r,
                result: result_r,
                kept: Vec::new(),
                began,
                deadline: Instant::now() + check.timeout + GRACE,
            })
        }
    }
}

/// The checker: enters the container, runs the command with its stdout
/// and stderr on `out`, and writes `exit N`, `timeout` or `error MESSAGE`
/// to `result`.
fn checker(record: &Record, check: &Check, monitor: Pid, out: OwnedFd, result: OwnedFd) -> ! {
    // SAFETY: prctl with integer arguments; dup2 onto fds 1 and 2, which
    // this process owns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != monitor.as_raw() {
            libc::_exit(1);
        }
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    drop(out);
    let request = crate::enter::Request {
        command: check.test.clone(),
        ..Default::default()
    };
    let line = match crate::enter::spawn(record, &request, &crate::Linux) {
        Err(err) => format!("error {}", crate::monitor::chain(&err)),
        Ok(child) => match wait_until(child.pid, check.timeout) {
            Some(code) => format!("exit {code}"),
            None => "timeout".to_string(),
        },
    };
    let _ = File::from(result).write_all(line.as_bytes());
    // SAFETY: ends the checker without running the monitor's destructors.
    unsafe { libc::_exit(0) }
}

/// Waits for `pid` up to `timeout`; its exit status, or None when it was
/// killed at the timeout with its process group (it leads one: the
/// command starts a session, as a workload does).
fn wait_until(pid: Pid, timeout: Duration) -> Option<i32> {
    let end = Instant::now() + timeout;
    if let Ok(pidfd) = crate::monitor::pidfd_open(pid) {
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
            let mut fds = [crate::monitor::pollfd(pidfd.as_raw_fd())];
            // SAFETY: a valid array of pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
            if n > 0 || (n == 0 && left.is_zero()) || (n < 0 && Errno::last() != Errno::EINTR) {
                break;
            }
        }
    }
    let status = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    let code = |status| match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => Some(code),
        Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        _ => None,
    };
    if let Some(code) = code(status) {
        return Some(code);
    }
    // SAFETY: kill with integer arguments; the group's leader is our
    // unreaped child, so its id is no one else's.
    unsafe {
        libc::kill(-pid.as_raw(), libc::SIGKILL);
        libc::kill(pid.as_raw(), libc::SIGKILL);
    }
    reap(pid);
    None
}

/// The result of a check whose checker exited (or, `killed`, was killed
/// past its grace).
fn finish(running: Running, killed: bool, timeout: Duration) -> Entry {
    if killed {
        let _ = nix::sys::signal::kill(running.checker, nix::sys::signal::Signal::SIGKILL);
    }
    reap(running.checker);
    let mut kept = running.kept;
    drain(running.output.as_raw_fd(), &mut kept);
    let mut line = Vec::new();
    crate::monitor::read_available(running.result.as_raw_fd(), &mut line);
    let line = String::from_utf8_lossy(&line).into_owned();
    let mut output = String::from_utf8_lossy(&kept).into_owned();
    // A character cut at the bound became U+FFFD: still within it.
    output.truncate(output.floor_char_boundary(OUTPUT_MAX));
    let timed_out = format!("Health check exceeded timeout ({timeout:?})");
    let (exit_code, output) = if let Some(code) = line.strip_prefix("exit ") {
        (code.trim().parse().unwrap_or(-1), output)
    } else if let Some(message) = line.strip_prefix("error ") {
        (-1, message.to_string())
    } else {
        (-1, timed_out)
    };
    Entry {
        start: running.began,
        end: state::now(),
        exit_code,
        output,
    }
}

/// Reads what `fd` holds now, up to 1 MiB, keeping the first
/// [`OUTPUT_MAX`] bytes in `kept`: a check printing without end is
/// drained, not stored, and never holds the monitor.
fn drain(fd: RawFd, kept: &mut Vec<u8>) {
    for _ in 0..64 {
        let mut buf = [0u8; 16 << 10];
        // SAFETY: reading into a valid buffer from our non-blocking pipe.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
        let room = OUTPUT_MAX.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..(n as usize).min(room)]);
    }
}

fn readable(fd: RawFd) -> bool {
    let mut fds = [crate::monitor::pollfd(fd)];
    // SAFETY: a valid array of pollfd.
    unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) > 0 && fds[0].revents != 0 }
}

fn reap(pid: Pid) {
    while let Err(Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_durations() {
        let ok = |t: &str| parse_duration(t).unwrap();
        assert_eq!(ok("500ms"), (false, Duration::from_millis(500)));
        assert_eq!(ok("1m30s"), (false, Duration::from_secs(90)));
        assert_eq!(ok("1.5s"), (false, Duration::from_millis(1500)));
        assert_eq!(ok("-10s"), (true, Duration::from_secs(10)));
        assert_eq!(ok("0"), (false, Duration::ZERO));
        for bad in ["", "10", "s", "1x", "1..5s", "-"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_override_the_image_field_by_field() {
        let image = Check {
            test: vec!["true".into()],
            interval: Duration::from_secs(5),
            timeout: Duration::ZERO,
            start_period: Duration::from_secs(2),
            retries: 7,
        };
        let flags = Flags {
            timeout: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let check = decide(&flags, Some(&image)).unwrap();
        assert_eq!(check.test, ["true"]);
        assert_eq!(check.interval, Duration::from_secs(5));
        assert_eq!(check.timeout, Duration::from_secs(1));
        assert_eq!(check.start_period, Duration::from_secs(2));
        assert_eq!(check.retries, 7);
        let none = Flags {
            none: true,
            ..Default::default()
        };
        assert_eq!(decide(&none, Some(&image)), None);
        assert_eq!(decide(&Flags::default(), None), None);
    }

    #[test]
    fn reads_the_image_healthcheck() {
        let config = serde_json::json!({"config": {"Healthcheck": {
            "Test": ["CMD-SHELL", "test -f /ok"], "Interval": 2_000_000_000u64, "Retries": 2}}});
        let check = from_image_config(&config).unwrap().unwrap();
        assert_eq!(check.test, ["/bin/sh", "-c", "test -f /ok"]);
        assert_eq!(check.interval, Duration::from_secs(2));
        assert_eq!(check.retries, 2);
        let none = serde_json::json!({"config": {"Healthcheck": {"Test": ["NONE"]}}});
        assert_eq!(from_image_config(&none).unwrap(), None);
        let bad = serde_json::json!({"config": {"Healthcheck": {"Test": ["WHAT"]}}});
        assert!(from_image_config(&bad).is_err());
    }

    #[test]
    fn unhealthy_after_retries_past_the_start_period() {
        let fail = |code| Entry {
            start: 0,
            end: 0,
            exit_code: code,
            output: String::new(),
        };
        let mut h = Health::default();
        h.add(fail(1), false, 2);
        h.add(fail(1), false, 2);
        assert_eq!((h.status, h.failing_streak), (Status::Starting, 0));
        h.add(fail(1), true, 2);
        h.add(fail(1), true, 2);
        assert_eq!((h.status, h.failing_streak), (Status::Unhealthy, 2));
        for _ in 0..5 {
            h.add(fail(0), true, 2);
        }
        assert_eq!(
            (h.status, h.failing_streak, h.log.len()),
            (Status::Healthy, 0, 5)
        );
    }
}
