//! `launcher run -d`: a detached container and the small process that keeps
//! it, as conmon or containerd's shim do.
//!
//! 1. [`start`] checks the name and makes the container's record
//!    ([`crate::state`]) with the monitor's lock held, forks the monitor,
//!    and returns the id once the workload runs (or the error that kept it
//!    from starting, with its status: 125, 126, 127);
//! 2. the monitor (a new session, stdio on /dev/null) forks a runner per
//!    start, which is `launcher run` itself ([`crate::run_observed`]) with
//!    its stdout and stderr on pipes: the monitor writes what comes through
//!    them to the log ([`crate::logs`]), records the container's pid,
//!    status and exit code, and restarts it as `--restart` says, 100 ms
//!    after the first exit, doubling up to a minute (reset after a run of
//!    10 s, as docker does); with a health check ([`crate::health`]) it
//!    runs the checks of each start, their timer its `poll`'s timeout;
//! 3. at the end it records the exit status, also in its lock file for
//!    `wait`, and with `--rm` (or when it never started: `run -d` said
//!    why) removes the container's directory.
//!
//! The runner, and the container's first process through it, die with the
//! monitor (parent-death signal SIGKILL), so that a killed monitor never
//! leaves a container nobody accounts for; what they leave is reclaimed as
//! a SIGKILLed launcher's is ([`crate::state::settle`]).

use crate::cache::{self, Cache};
use crate::health;
use crate::logs::{self, Stream};
use crate::state::{self, Handle, Identity, Record, Restart, Status};
use crate::{Error, Linux, Options, Result};
use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The first wait before a restart, doubled after each one up to
/// [`BACKOFF_MAX`]; back to the first after a run of [`BACKOFF_RESET`].
pub const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
pub const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// What `-d` adds to `run`.
#[derive(Debug, Clone, Default)]
pub struct Detach {
    pub restart: Restart,
    /// `--rm`: the record and log go when the container ends for good.
    pub auto_remove: bool,
    /// `--health-*`, `--no-healthcheck`: merged with the image's check.
    pub health: health::Flags,
}

/// What a runner tells its monitor, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Event {
    Started {
        pid: i32,
        start: u64,
        hostname: String,
        argv: Vec<String>,
        process: state::Process,
        healthcheck: health::ImageCheck,
    },
    Failed {
        code: i32,
        message: String,
        oom: bool,
    },
}

/// Starts `opts` detached; the container's id once it runs.
pub fn start(opts: &Options, detach: Detach) -> Result<String> {
    let cache = Cache::open(cache::default_root())?;
    cache.reclaim_stale();
    if let Some(name) = &opts.name {
        state::check_name(name)?;
    }
    if detach.auto_remove && detach.restart != Restart::No {
        // Docker's rule: a container removed at its end has nothing to restart.
        return Err(Error::Invalid {
            what: "--restart with --rm (conflicting options)",
            value: detach.restart.name().into(),
        });
    }
    if opts.keep && detach.restart != Restart::No {
        // Each start makes a fresh writable layer; a kept one would have
        // to be the last start's.
        return Err(Error::Invalid {
            what: "--restart with --keep (each start has a writable layer of its own)",
            value: detach.restart.name().into(),
        });
    }
    let max_log = logs::max_size()?;
    let id = format!("{}{}", cache::random_id(), cache::random_id());
    let name = opts.name.clone().unwrap_or_else(|| id[..12].to_string());
    // The monitor works from `/` (it must not keep the caller's directory
    // busy): paths given relative to the caller's are made absolute.
    let given = opts.image.display().to_string();
    let opts = &absolute_paths(opts);
    let mut record = Record::new(id.clone(), name, config(opts, &detach));
    // Shown as the user gave it, as docker shows the image's name.
    record.config.image = given;
    let (handle, lock) = state::create(&cache, &record)?;
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("creating a pipe"))?;
    // Forked twice, as conmon is: the monitor's parent exits at once, so
    // that it belongs to init (or the nearest subreaper) and is never a
    // zombie of the caller's.
    // SAFETY: the launcher is single-threaded here (nothing before has
    // started a thread); the children only fork, or run the monitor, and
    // never return.
    match unsafe { nix::unistd::fork() }.map_err(Error::sys("forking the monitor"))? {
        ForkResult::Child => {
            drop(report_r);
            let _ = nix::unistd::setsid();
            // SAFETY: as above.
            if let Ok(ForkResult::Parent { .. }) | Err(_) = unsafe { nix::unistd::fork() } {
                // SAFETY: ends the intermediate process, no destructors.
                unsafe { libc::_exit(0) }
            }
            let code = match Monitor::new(opts, detach, cache, handle, lock, record, max_log) {
                Ok(monitor) => monitor.run(report_w),
                Err(err) => {
                    let code = crate::EXIT_LAUNCHER_FAILED;
                    send_report(report_w, &format!("{code}\n{}", chain(&err)));
                    code
                }
            };
            // SAFETY: ends the monitor without running the front's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop((report_w, lock));
            let _ = nix::sys::wait::waitpid(child, None);
            wait_for_start(report_r, &id)
        }
    }
}

/// `opts` with its relative paths (an image archive that exists, env
/// files, the init) made absolute against the current directory.
fn absolute_paths(opts: &Options) -> Options {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut opts = opts.clone();
    // `FILE.tar:NAME` picks an image in an archive; a reference is no path.
    let archive = opts
        .image
        .to_string_lossy()
        .split(':')
        .next()
        .map(std::path::PathBuf::from);
    if opts.image.is_relative() && archive.is_some_and(|a| a.exists()) {
        opts.image = absolute(&opts.image);
    }
    opts.env_files = opts.env_files.iter().map(|f| absolute(f)).collect();
    opts.init_path = opts.init_path.as_deref().map(absolute);
    opts
}

/// The record's config of `opts`.
pub(crate) fn config(opts: &Options, detach: &Detach) -> state::Config {
    state::Config {
        image: opts.image.display().to_string(),
        command: opts.command.clone(),
        hostname: opts.hostname.clone().unwrap_or_default(),
        user: opts.user.clone(),
        workdir: opts.workdir.clone(),
        entrypoint: opts.entrypoint.clone(),
        env: opts.env.clone(),
        tty: opts.tty,
        network: format!("{:?}", opts.network).to_lowercase(),
        ports: opts.publish.clone(),
        volumes: opts.volumes.clone(),
        cgroup_parent: opts.cgroup_parent.clone(),
        network_state: opts.net_config.state_dir.clone(),
        init_path: opts.init_path.clone(),
        restart: detach.restart,
        auto_remove: detach.auto_remove,
        // Checked by run before the monitor starts.
        labels: crate::record::parse_labels(&opts.labels).unwrap_or_default(),
        privileges: state::Privileges::of(opts),
        healthcheck: None,
    }
}

/// The monitor's word: `ok`, or `CODE` and the message; EOF when it died.
fn wait_for_start(report: OwnedFd, id: &str) -> Result<String> {
    let mut text = String::new();
    let _ = File::from(report).read_to_string(&mut text);
    if text == "ok\n" {
        return Ok(id.to_string());
    }
    match text.split_once('\n') {
        Some((code, message)) if code.parse::<i32>().is_ok() => Err(Error::StartFailed {
            code: code.parse().unwrap_or(crate::EXIT_LAUNCHER_FAILED),
            message: message.trim_end().to_string(),
        }),
        _ => Err(Error::StartFailed {
            code: crate::EXIT_LAUNCHER_FAILED,
            message: format!("the monitor of container {id} ended before the container started"),
        }),
    }
}

/// How one start ended.
struct Outcome {
    code: i32,
    oom: bool,
    error: String,
    ran: Duration,
}

struct Monitor<'a> {
    opts: &'a Options,
    detach: Detach,
    cache: Cache,
    handle: Handle,
    lock: File,
    record: Record,
    log: logs::Writer,
    out: (OwnedFd, OwnedFd),
    err: (OwnedFd, OwnedFd),
    events: (OwnedFd, OwnedFd),
    /// The health checks of the current start, when there is a check.
    probe: Option<health::Probe>,
}

impl<'a> Monitor<'a> {
    /// In the forked monitor: detaches from the caller's session and
    /// terminal, and opens the log and the pipes.
    fn new(
        opts: &'a Options,
        detach: Detach,
        cache: Cache,
        handle: Handle,
        mut lock: File,
        mut record: Record,
        max_log: u64,
    ) -> Result<Self> {
        detach_stdio()?;
        std::env::set_current_dir("/").map_err(Error::io("entering", "/"))?;
        let pid = std::process::id();
        record.monitor = Identity {
            pid: pid as i32,
            start: crate::cgroups::start_time(pid).unwrap_or(0),
        };
        state::write_identity(&mut lock, record.monitor);
        let log = logs::Writer::open(&handle.dir, max_log)?;
        // Only the monitor's end is non-blocking: the other is the
        // container's stdout or stderr, which must block as usual.
        let pipe = || {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(Error::sys("creating a pipe"))?;
            // SAFETY: fcntl on an fd we own.
            unsafe {
                let flags = libc::fcntl(read.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(read.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
            Ok::<_, Error>((read, write))
        };
        Ok(Monitor {
            opts,
            detach,
            cache,
            handle,
            lock,
            record,
            log,
            out: pipe()?,
            err: pipe()?,
            events: pipe()?,
            probe: None,
        })
    }

    /// Starts, watches and restarts the container; returns the monitor's
    /// exit status.
    fn run(mut self, report: OwnedFd) -> i32 {
        let mut report = Some(report);
        let mut delay = BACKOFF_FIRST;
        loop {
            let outcome = match self.start_once(&mut report) {
                Ok(outcome) => outcome,
                Err(err) => self.could_not_start(&err),
            };
            if let Some(report) = report.take() {
                // It never started: `run -d` says why; nothing is kept.
                return self.end(&outcome, Some(report));
            }
            self.record_exit(&outcome);
            let state = &self.record.state;
            let stopped = self.handle.stopped_by_user();
            if !self
                .detach
                .restart
                .wants_restart(outcome.code, state.restart_count, stopped)
            {
                return self.end(&outcome, None);
            }
            self.record.state.status = Status::Restarting;
            self.save();
            if outcome.ran >= BACKOFF_RESET {
                delay = BACKOFF_FIRST;
            }
            if !self.back_off(delay) {
                return self.end(&outcome, None);
            }
            delay = (delay * 2).min(BACKOFF_MAX);
            self.record.state.restart_count += 1;
        }
    }

    /// A start the monitor itself could not make (fork, pidfd): logged.
    fn could_not_start(&mut self, err: &Error) -> Outcome {
        let message = chain(err);
        let line = format!("launcher: {message}\n");
        self.log.write(Stream::Stderr, line.as_bytes());
        Outcome {
            code: crate::EXIT_LAUNCHER_FAILED,
            oom: false,
            error: message,
            ran: Duration::ZERO,
        }
    }

    fn record_exit(&mut self, outcome: &Outcome) {
        let state = &mut self.record.state;
        state.exit_code = outcome.code;
        state.oom_killed = outcome.oom;
        state.error = outcome.error.clone();
        state.pid = 0;
        state.finished_at = state::now();
    }

    /// The end: the final record, the status in the lock file for `wait`,
    /// and with `--rm` the directory removed. A container that never ran
    /// (`unstarted`: the report to `run -d`) is removed too, before the
    /// report, so that nothing is left once `run -d` returns.
    fn end(mut self, outcome: &Outcome, unstarted: Option<OwnedFd>) -> i32 {
        self.record_exit(outcome);
        self.record.state.status = Status::Exited;
        self.save();
        state::write_exit(&mut self.lock, outcome.code);
        if self.detach.auto_remove || unstarted.is_some() {
            let _ = cache::remove_container_dir(&self.handle.dir);
        }
        if let Some(report) = unstarted {
            send_report(report, &format!("{}\n{}", outcome.code, outcome.error));
        }
        0
    }

    /// Writes the record; a failure is logged (the container goes on).
    fn save(&mut self) {
        if let Err(err) = state::write_record(&self.cache, &self.handle.dir, &self.record) {
            let text = format!("launcher: WARN {}\n", chain(&err));
            self.log.write(Stream::Stderr, text.as_bytes());
        }
    }

    /// Waits `delay` before a restart, logging what the last processes
    /// still write; false when the user stopped the container meanwhile.
    fn back_off(&mut self, delay: Duration) -> bool {
        let end = Instant::now() + delay;
        while Instant::now() < end {
            if self.handle.stopped_by_user() {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            let mut fds = [
                pollfd(self.out.0.as_raw_fd()),
                pollfd(self.err.0.as_raw_fd()),
            ];
            let ms = left.min(Duration::from_millis(100)).as_millis() as i32;
            // SAFETY: a valid array of pollfd.
            unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
            self.copy_output();
        }
        !self.handle.stopped_by_user()
    }

    /// One start: forks the runner and watches it until it exits.
    fn start_once(&mut self, report: &mut Option<OwnedFd>) -> Result<Outcome> {
        let began = Instant::now();
        let monitor = nix::unistd::getpid();
        // SAFETY: the monitor is single-threaded; the child runs `runner`,
        // which never returns.
        let runner = match unsafe { nix::unistd::fork() }.map_err(Error::sys("forking"))? {
            ForkResult::Child => {
                // The front waits for EOF on the report pipe: only the
                // monitor may hold it.
                if let Some(r) = report.as_ref() {
                    // SAFETY: closing our copy of the fd; the runner never
                    // returns, so its OwnedFd is never dropped.
                    unsafe { libc::close(r.as_raw_fd()) };
                }
                self.runner(monitor)
            }
            ForkResult::Parent { child } => child,
        };
        let pidfd = pidfd_open(runner)?;
        let mut outcome = Outcome {
            code: crate::EXIT_LAUNCHER_FAILED,
            oom: false,
            error: String::new(),
            ran: Duration::ZERO,
        };
        let mut events = Vec::new();
        loop {
            let mut fds = vec![
                pollfd(pidfd.as_raw_fd()),
                pollfd(self.out.0.as_raw_fd()),
                pollfd(self.err.0.as_raw_fd()),
                pollfd(self.events.0.as_raw_fd()),
            ];
            // The health check's timer and fds; none (and no wakeup)
            // without a check.
            let timeout = self.probe.as_ref().map_or(-1, |p| p.poll_timeout());
            fds.extend(self.probe.iter().flat_map(|p| p.fds()).map(pollfd));
            // SAFETY: a valid array of pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 && Errno::last() != Errno::EINTR {
                self.probe = None;
                return Err(Error::sys("waiting for the container")(Errno::last()));
            }
            self.copy_output();
            read_available(self.events.0.as_raw_fd(), &mut events);
            self.handle_events(&mut events, &mut outcome, report);
            if fds[0].revents != 0 {
                break;
            }
            self.check_health();
        }
        // A check under way ends with the container (dropping the probe
        // kills its checker).
        self.probe = None;
        let status = loop {
            match nix::sys::wait::waitpid(runner, None) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        self.copy_output();
        read_available(self.events.0.as_raw_fd(), &mut events);
        self.handle_events(&mut events, &mut outcome, report);
        outcome.code = match status {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => 128 + sig as i32,
            _ => outcome.code,
        };
        outcome.ran = began.elapsed();
        Ok(outcome)
    }

    /// Runs the health check when it is due, and ends one that is done;
    /// the record is written when the health changed.
    fn check_health(&mut self) {
        let Some(probe) = &mut self.probe else {
            return;
        };
        if probe.service(&self.record) {
            self.record.state.health = Some(probe.health.clone());
            self.save();
        }
    }

    /// Acts on the whole lines in `buf`, leaving a partial one.
    fn handle_events(
        &mut self,
        buf: &mut Vec<u8>,
        outcome: &mut Outcome,
        report: &mut Option<OwnedFd>,
    ) {
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            match serde_json::from_slice::<Event>(&line) {
                Ok(Event::Started {
                    pid,
                    start,
                    hostname,
                    argv,
                    process,
                    healthcheck,
                }) => {
                    let flags = &self.detach.health;
                    let (image_check, broken) = match healthcheck {
                        Ok(check) => (check, None),
                        Err(why) => (None, Some(why)),
                    };
                    let check = health::decide(flags, image_check.as_ref());
                    self.probe = check.clone().map(health::Probe::new);
                    let record = &mut self.record;
                    record.state.health = match (&check, broken) {
                        (Some(_), _) => Some(health::Health::default()),
                        (None, Some(why)) if !flags.none => Some(health::Health::broken(why)),
                        (None, _) => None,
                    };
                    record.config.healthcheck = check;
                    record.config.hostname = hostname;
                    record.config.command = argv;
                    let state = &mut record.state;
                    state.status = Status::Running;
                    state.pid = pid;
                    state.pid_start = start;
                    state.started_at = state::now();
                    state.process = process;
                    state.error.clear();
                    self.save();
                    if let Some(r) = report.take() {
                        send_report(r, "ok\n");
                    }
                }
                Ok(Event::Failed { code, message, oom }) => {
                    outcome.code = code;
                    outcome.oom = oom;
                    outcome.error = message;
                }
                Err(_) => {}
            }
        }
    }

    /// Copies what the container wrote to the log: what the pipes hold,
    /// up to 1 MiB each, so that a workload writing without end does not
    /// keep the monitor from its other work (its runner's events, its exit).
    fn copy_output(&mut self) {
        for (fd, stream) in [
            (self.out.0.as_raw_fd(), Stream::Stdout),
            (self.err.0.as_raw_fd(), Stream::Stderr),
        ] {
            for _ in 0..64 {
                let mut buf = [0u8; 16 << 10];
                // SAFETY: reading into a valid buffer from our non-blocking pipe.
                let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    break;
                }
                self.log.write(stream, &buf[..n as usize]);
            }
        }
    }

    /// The forked runner: `launcher run` of the container, its stdout and
    /// stderr on the monitor's pipes, dying with the monitor.
    fn runner(&self, monitor: Pid) -> ! {
        // SAFETY: prctl with integer arguments; then dup2 onto fds 1 and 2,
        // which this process owns.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != monitor.as_raw() {
                libc::_exit(crate::EXIT_LAUNCHER_FAILED);
            }
            libc::dup2(self.out.1.as_raw_fd(), 1);
            libc::dup2(self.err.1.as_raw_fd(), 2);
        }
        // SAFETY: a dup of our pipe's write end, owned by the File.
        let mut events = unsafe {
            File::from_raw_fd(libc::fcntl(
                self.events.1.as_raw_fd(),
                libc::F_DUPFD_CLOEXEC,
                3,
            ))
        };
        let mut opts = self.opts.clone();
        // The state directory of each start is `containers/<id>`, its
        // hostname the id's first 12 characters, as for a foreground run.
        opts.name = Some(self.handle.id.clone());
        opts.interactive = false;
        let warn = &mut |w: &str| crate::stderr_line!("launcher: WARN {w}");
        let result = crate::run_observed(&opts, &Linux, warn, &mut |child, plan| {
            let pid = child.pid.as_raw();
            let argv = command_shown(&plan.process.argv);
            send_event(
                &mut events,
                &Event::Started {
                    pid,
                    start: crate::cgroups::start_time(pid as u32).unwrap_or(0),
                    hostname: plan.hostname.clone(),
                    argv,
                    process: state::Process {
                        env: plan.process.env.clone(),
                        cwd: plan.process.cwd.clone(),
                        user: plan.process.user.clone(),
                        stop_signal: plan.stop_signal,
                    },
                    healthcheck: plan.healthcheck.clone(),
                },
            );
        });
        let code = match result {
            Ok(code) => code,
            Err(err) => {
                let message = chain(&err);
                crate::stderr_line!("launcher: {message}");
                let code = err.exit_code();
                send_event(
                    &mut events,
                    &Event::Failed {
                        code,
                        message,
                        oom: matches!(err, Error::OutOfMemory { .. }),
                    },
                );
                code
            }
        };
        std::process::exit(code)
    }
}

/// The container's command as `ps` and `inspect` show it: without our
/// init in front.
pub(crate) fn command_shown(argv: &[String]) -> Vec<String> {
    let mut argv = argv.to_vec();
    if argv
        .first()
        .is_some_and(|a| a == crate::image::INIT_IN_IMAGE)
    {
        let skip = if argv.get(1).is_some_and(|a| a == "--") {
            2
        } else {
            1
        };
        argv.drain(..skip.min(argv.len()));
    }
    argv
}

fn send_event(to: &mut File, event: &Event) {
    if let Ok(mut line) = serde_json::to_vec(event) {
        line.push(b'\n');
        let _ = to.write_all(&line);
    }
}

fn send_report(to: OwnedFd, text: &str) {
    let _ = File::from(to).write_all(text.as_bytes());
}

/// The error and its causes, `: `-separated, as `main` prints errors.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

/// stdin, stdout and stderr on /dev/null: the monitor holds nothing of the
/// caller's (a pipe it kept open would keep `$(launcher run -d …)` waiting).
fn detach_stdio() -> Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(Error::io("opening", "/dev/null"))?;
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard fds, which this process owns.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(Error::sys("redirecting the monitor's stdio")(Errno::last()));
        }
    }
    Ok(())
}

pub(crate) fn pidfd_open(pid: Pid) -> Result<OwnedFd> {
    // SAFETY: pidfd_open with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(Error::sys("opening a pidfd of the runner")(Errno::last()));
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub(crate) fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Appends what the non-blocking `fd` holds now to `buf`.
pub(crate) fn read_available(fd: RawFd, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        // SAFETY: reading into a valid buffer.
        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n <= 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
}
