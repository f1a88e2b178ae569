//! Supervise step for services: one event loop over the signalfd, each
//! service's output pipes and readiness descriptor, and the control socket,
//! with `poll` and no periodic wakeup: timers only for restart backoff,
//! readiness checks that must poll (tcp, command) and stop timeouts. It
//! starts services in dependency order, restarts them with backoff, starts
//! the main workload once all are up, and stops everything in reverse
//! order. It never fails: it returns the code to exit with.

use super::definition::{Def, Kind, Ready, Restart};
use super::{Plan, ctl, os};
use crate::errno::Errno;
use crate::log::log;
use crate::prelude::*;
use crate::signals;
use crate::spawn::{self, Inherited};
use crate::supervise::{exit_code, stop_all};
use crate::sys::{Fd, Pid, Status, Sys};
use crate::{ExitCode, Init};
use core::time::Duration;

/// Up this long, a service's restart count in a row starts again at 0.
const HEALTHY: Duration = Duration::from_secs(10);
/// The second restart in a row waits this long, doubling up to the max.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// tcp and command readiness are tried again after this, doubling to 1 s.
const CHECK_FIRST: Duration = Duration::from_millis(10);
const CHECK_MAX: Duration = Duration::from_secs(1);
/// How long the main workload has between SIGTERM and SIGKILL.
const MAIN_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// What is left after the services stopped gets this long (or `--grace`).
const REST_GRACE: Duration = Duration::from_secs(5);
/// Once SIGKILL went to everything, look for stragglers this often.
const RESCAN: Duration = Duration::from_millis(50);
/// A service output line longer than this is split into several.
pub const LINE_MAX: usize = 1024;

/// Where a service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started: what it depends on is not ready yet.
    Waiting,
    Running,
    /// Its `finish` script runs (s6).
    Finishing,
    /// Waiting to be started again.
    Backoff,
    /// A oneshot that exited 0.
    Done,
    /// Given up on, or a dependency was.
    Failed,
    /// Its stop signal went out.
    Stopping,
    Stopped,
}

struct Svc {
    def: Def,
    state: State,
    ready: bool,
    pid: Pid,
    since: Duration,
    restarts: u32,
    in_row: u32,
    last: Option<Status>,
    timer: Option<Duration>,
    check_delay: Duration,
    /// A readiness command or `finish` script running.
    helper: Pid,
    /// Read ends of its stdout and stderr pipes (-1: none).
    out: [Fd; 2],
    partial: [Vec<u8>; 2],
    ready_fd: Fd,
    notify_fd: Fd,
    notify_path: Option<String>,
    /// False after `ctl stop`: not restarted.
    wanted: bool,
    /// Start again once stopped (`ctl restart`).
    again: bool,
}

/// Where the end of the run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rest {
    /// Services still stopping.
    Services,
    /// SIGTERM went to what is left; SIGKILL at the deadline.
    Term(Duration),
    Kill,
}

pub struct Supervisor<'a, S: Sys> {
    sys: &'a S,
    init: &'a Init,
    svcs: Vec<Svc>,
    inherited: Inherited,
    sigfd: Fd,
    ctl_fd: Fd,
    ctl_path: String,
    main: Option<Pid>,
    main_started: bool,
    main_deadline: Option<Duration>,
    code: Option<ExitCode>,
    shutting: bool,
    rest: Rest,
    none_left: bool,
}

/// Runs the services (and the main workload, when there is one) until the
/// end, and returns the code to exit with.
pub fn run(sys: &impl Sys, sigfd: Fd, init: &Init, plan: Plan, inherited: Inherited) -> ExitCode {
    let mut s = Supervisor {
        sys,
        init,
        svcs: plan.defs.into_iter().map(new_svc).collect(),
        inherited,
        sigfd,
        ctl_fd: -1,
        ctl_path: init.services.ctl_socket().into(),
        main: None,
        main_started: false,
        main_deadline: None,
        code: None,
        shutting: false,
        rest: Rest::Services,
        none_left: false,
    };
    s.open_sockets();
    let code = loop {
        s.advance();
        if let Some(code) = s.finished() {
            break code;
        }
        let timeout = s.next_timer();
        s.wait(timeout);
    };
    s.close_sockets();
    code
}

fn new_svc(def: Def) -> Svc {
    Svc {
        def,
        state: State::Waiting,
        ready: false,
        pid: 0,
        since: Duration::ZERO,
        restarts: 0,
        in_row: 0,
        last: None,
        timer: None,
        check_delay: CHECK_FIRST,
        helper: 0,
        out: [-1, -1],
        partial: [Vec::new(), Vec::new()],
        ready_fd: -1,
        notify_fd: -1,
        notify_path: None,
        wanted: true,
        again: false,
    }
}

impl<S: Sys> Supervisor<'_, S> {
    fn open_sockets(&mut self) {
        match os::bind_unix(&self.ctl_path, libc::SOCK_STREAM) {
            Ok(fd) => self.ctl_fd = fd,
            Err(err) => log!(
                self.sys,
                self.init,
                Warn,
                "control socket `{}`: {err}; `ctl` will not work",
                self.ctl_path
            ),
        }
        for i in 0..self.svcs.len() {
            if self.svcs[i].def.ready != Ready::Notify {
                continue;
            }
            let path = format!("{}.{}.notify", self.ctl_path, self.svcs[i].def.name);
            match os::bind_unix(&path, libc::SOCK_DGRAM) {
                Ok(fd) => {
                    // The socket is 0600: a service running as another
                    // user gets it as its own, or could not send to it.
                    if let Some((uid, gid)) =
                        self.svcs[i].def.user.as_deref().and_then(os::resolve_user)
                    {
                        os::chown(&path, uid, gid);
                    }
                    self.svcs[i].notify_fd = fd;
                    self.svcs[i].notify_path = Some(path);
                }
                Err(err) => log!(
                    self.sys,
                    self.init,
                    Error,
                    "notify socket `{path}` for `{}`: {err}",
                    self.svcs[i].def.name
                ),
            }
        }
    }

    fn close_sockets(&mut self) {
        if self.ctl_fd >= 0 {
            os::close(self.ctl_fd);
            os::unlink(&self.ctl_path);
        }
        for i in 0..self.svcs.len() {
            // What a service wrote just before the end is still relayed.
            for at in 0..2 {
                if self.svcs[i].out[at] >= 0 {
                    self.pump(i, at);
                }
            }
            let svc = &mut self.svcs[i];
            if let Some(path) = svc.notify_path.take() {
                os::close(svc.notify_fd);
                os::unlink(&path);
            }
            for at in 0..2 {
                flush_partial(svc, at);
                os::close(svc.out[at]);
            }
        }
    }

    fn is_up(&self, name: &str) -> bool {
        self.svcs.iter().any(|s| {
            s.def.name == name && ((s.state == State::Running && s.ready) || s.state == State::Done)
        })
    }

    fn settled(svc: &Svc) -> bool {
        match svc.state {
            State::Running => svc.ready,
            State::Done | State::Failed | State::Stopped => true,
            _ => false,
        }
    }

    /// Everything that is due: starts, readiness checks, restarts, stops.
    fn advance(&mut self) {
        let now = self.sys.now();
        for i in 0..self.svcs.len() {
            self.advance_timer(i, now);
        }
        if !self.shutting {
            for i in 0..self.svcs.len() {
                if self.svcs[i].state != State::Waiting || !self.svcs[i].wanted {
                    continue;
                }
                let deps = self.svcs[i].def.depends_on.clone();
                if let Some(dep) = deps.iter().find(|d| {
                    self.svcs
                        .iter()
                        .any(|s| s.def.name == **d && s.state == State::Failed)
                }) {
                    log!(
                        self.sys,
                        self.init,
                        Error,
                        "service `{}` not started: `{dep}` failed",
                        self.svcs[i].def.name
                    );
                    self.svcs[i].state = State::Failed;
                    continue;
                }
                if deps.iter().all(|d| self.is_up(d)) {
                    self.start(i);
                }
            }
            if !self.main_started
                && !self.init.argv.is_empty()
                && self.svcs.iter().all(Self::settled)
            {
                self.start_main();
            }
            return;
        }
        if let Some(main) = self.main {
            if self.main_deadline.is_some_and(|at| at <= now) {
                log!(
                    self.sys,
                    self.init,
                    Warn,
                    "workload {main} still running after SIGTERM; killing it"
                );
                let _ = self
                    .sys
                    .kill(signals::target(self.init, main), libc::SIGKILL);
                self.main_deadline = None;
            }
            return;
        }
        for i in (0..self.svcs.len()).rev() {
            match self.svcs[i].state {
                State::Waiting | State::Backoff => {
                    self.svcs[i].state = State::Stopped;
                    self.svcs[i].timer = None;
                }
                State::Running if !self.has_live_dependent(i) => self.stop(i),
                // A finish script that hangs must not hold the stop up.
                State::Finishing => {
                    let _ = kill_group(self.sys, self.svcs[i].helper, libc::SIGKILL);
                    self.svcs[i].helper = 0;
                    self.svcs[i].state = State::Stopped;
                }
                _ => {}
            }
        }
    }

    fn advance_timer(&mut self, i: usize, now: Duration) {
        let Some(at) = self.svcs[i].timer else { return };
        if at > now {
            return;
        }
        self.svcs[i].timer = None;
        let svc = &mut self.svcs[i];
        match svc.state {
            State::Backoff if !self.shutting => self.start(i),
            State::Stopping => {
                log!(
                    self.sys,
                    self.init,
                    Warn,
                    "service `{}` still running {:?} after its stop signal; killing it",
                    svc.def.name,
                    svc.def.stop_timeout
                );
                let _ = kill_group(self.sys, svc.pid, libc::SIGKILL);
            }
            State::Running if !svc.ready => match &svc.def.ready {
                Ready::Tcp(port) => {
                    if os::tcp_accepts(*port) {
                        self.set_ready(i);
                    } else {
                        svc.timer = Some(now + svc.check_delay);
                        svc.check_delay = (svc.check_delay * 2).min(CHECK_MAX);
                    }
                }
                Ready::Command(argv) if svc.helper == 0 => {
                    let argv = argv.clone();
                    match self.spawn_helper(&argv, &[]) {
                        Ok(pid) => self.svcs[i].helper = pid,
                        Err(err) => log!(
                            self.sys,
                            self.init,
                            Error,
                            "readiness command of `{}`: {err}",
                            self.svcs[i].def.name
                        ),
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// Whether a service that needs `i`, directly or through others, still
    /// runs: stops go in the reverse of the start order.
    fn has_live_dependent(&self, i: usize) -> bool {
        let name = &self.svcs[i].def.name;
        self.svcs.iter().enumerate().any(|(j, s)| {
            matches!(s.state, State::Running | State::Stopping | State::Finishing)
                && self.needs(j, name, 0)
        })
    }

    /// Whether service `j` depends on `name`, directly or not.
    fn needs(&self, j: usize, name: &str, depth: usize) -> bool {
        // The graph has no cycle (checked at load); the depth bounds it all the same.
        depth <= self.svcs.len()
            && self.svcs[j].def.depends_on.iter().any(|d| {
                d == name
                    || self
                        .svcs
                        .iter()
                        .position(|s| s.def.name == *d)
                        .is_some_and(|k| self.needs(k, name, depth + 1))
            })
    }

    /// The code, once everything is over.
    fn finished(&mut self) -> Option<ExitCode> {
        if !self.shutting || self.main.is_some() {
            return None;
        }
        let busy = self.svcs.iter().any(|s| {
            matches!(s.state, State::Running | State::Stopping | State::Finishing) || s.helper != 0
        });
        if busy {
            return None;
        }
        self.reap();
        if self.none_left {
            return Some(self.code.unwrap_or(ExitCode(0)));
        }
        let now = self.sys.now();
        match self.rest {
            Rest::Services => {
                let grace = self.init.grace.unwrap_or(REST_GRACE);
                log!(
                    self.sys,
                    self.init,
                    Debug,
                    "services stopped; stopping the rest within {grace:?}"
                );
                stop_all(self.sys, self.init, libc::SIGTERM);
                self.rest = Rest::Term(now.saturating_add(grace));
            }
            Rest::Term(deadline) if deadline <= now => {
                stop_all(self.sys, self.init, libc::SIGKILL);
                self.rest = Rest::Kill;
            }
            _ => {}
        }
        None
    }

    fn next_timer(&self) -> Option<Duration> {
        let mut next = self.svcs.iter().filter_map(|s| s.timer).min();
        let mut add = |t: Option<Duration>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        add(self.main_deadline);
        match self.rest {
            Rest::Term(deadline) => add(Some(deadline)),
            Rest::Kill => add(Some(self.sys.now() + RESCAN)),
            Rest::Services => {}
        }
        next
    }

    /// Polls every descriptor until one is readable or `until` passes, and
    /// handles what came.
    fn wait(&mut self, until: Option<Duration>) {
        #[derive(Clone, Copy)]
        enum Src {
            Signals,
            Ctl,
            Out(usize, usize),
            ReadyFd(usize),
            Notify(usize),
        }
        let mut fds = Vec::with_capacity(2 + self.svcs.len() * 2);
        let mut srcs = Vec::with_capacity(fds.capacity());
        let mut watch = |fd: Fd, src: Src| {
            if fd >= 0 {
                fds.push(libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                });
                srcs.push(src);
            }
        };
        watch(self.sigfd, Src::Signals);
        watch(self.ctl_fd, Src::Ctl);
        for (i, svc) in self.svcs.iter().enumerate() {
            watch(svc.out[0], Src::Out(i, 0));
            watch(svc.out[1], Src::Out(i, 1));
            watch(svc.ready_fd, Src::ReadyFd(i));
            watch(svc.notify_fd, Src::Notify(i));
        }
        let timeout = match until {
            None => -1,
            Some(at) => {
                let left = at.saturating_sub(self.sys.now());
                // Rounded up: a timer never fires early and spins.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
            }
        };
        os::poll(&mut fds, timeout);
        for (pfd, src) in fds.iter().zip(srcs) {
            if pfd.revents == 0 {
                continue;
            }
            match src {
                Src::Signals => self.read_signals(),
                Src::Ctl => {
                    while let Some((conn, uid)) = os::accept(self.ctl_fd) {
                        ctl::serve(self, conn, uid);
                    }
                }
                Src::Out(i, at) => self.pump(i, at),
                Src::ReadyFd(i) => self.read_ready_fd(i),
                Src::Notify(i) => self.read_notify(i),
            }
        }
    }

    fn read_signals(&mut self) {
        let received = match self.sys.read_signals(self.sigfd, Some(Duration::ZERO)) {
            Ok(received) => received,
            Err(err) => {
                log!(self.sys, self.init, Error, "reading signals: {err}");
                return;
            }
        };
        for r in received {
            match r.signo {
                libc::SIGCHLD => {}
                sig => {
                    if let Some(main) = self.main {
                        signals::forward(self.sys, self.init, main, sig);
                    }
                    if sig == libc::SIGTERM || sig == libc::SIGINT {
                        log!(
                            self.sys,
                            self.init,
                            Info,
                            "{} received; stopping",
                            signals::name(sig)
                        );
                        self.begin_shutdown(false);
                    }
                }
            }
        }
        self.reap();
    }

    fn reap(&mut self) {
        loop {
            match self.sys.reap_one() {
                Ok(Some((pid, status))) => self.reaped(pid, status),
                Ok(None) => return,
                Err(Errno::ECHILD) => {
                    self.none_left = true;
                    return;
                }
                Err(Errno::EINTR) => {}
                Err(err) => {
                    log!(self.sys, self.init, Warn, "waitpid: {err}");
                    return;
                }
            }
        }
    }

    fn reaped(&mut self, pid: Pid, status: Status) {
        if self.main == Some(pid) {
            log!(
                self.sys,
                self.init,
                Debug,
                "workload {pid} ended: {status:?}"
            );
            self.main = None;
            self.main_deadline = None;
            self.code.get_or_insert(exit_code(self.init, status));
            self.begin_shutdown(true);
        } else if let Some(i) = self.svcs.iter().position(|s| s.pid == pid) {
            self.exited(i, status);
        } else if let Some(i) = self.svcs.iter().position(|s| s.helper == pid) {
            self.helper_exited(i, status);
        } else {
            log!(self.sys, self.init, Debug, "reaped {pid}: {status:?}");
        }
    }

    fn begin_shutdown(&mut self, main_gone: bool) {
        if self.shutting {
            return;
        }
        self.shutting = true;
        if self.main.is_some() && !main_gone {
            self.main_deadline = Some(self.main_stop_deadline());
        }
    }

    /// The workload gets `--grace` (10 s by default) between SIGTERM and
    /// SIGKILL.
    fn main_stop_deadline(&self) -> Duration {
        let timeout = self.init.grace.unwrap_or(MAIN_STOP_TIMEOUT);
        self.sys.now().saturating_add(timeout)
    }

    fn start_main(&mut self) {
        self.main_started = true;
        self.none_left = false;
        match spawn::workload(self.sys, self.init, self.inherited) {
            Ok(child) => self.main = Some(child.pid),
            Err(err) => {
                log!(self.sys, self.init, Error, "starting the workload: {err}");
                self.code.get_or_insert(ExitCode(1));
                self.begin_shutdown(true);
            }
        }
    }

    /// Stops the main workload when something else ends the run.
    fn stop_main(&mut self) {
        if let Some(main) = self.main {
            signals::forward(self.sys, self.init, main, libc::SIGTERM);
            self.main_deadline = Some(self.main_stop_deadline());
        }
    }

    fn start(&mut self, i: usize) {
        let extra_env = {
            let svc = &self.svcs[i];
            let mut env = svc.def.env.clone();
            if let Some(path) = &svc.notify_path {
                env.push(os::cstr(&format!("NOTIFY_SOCKET={path}")));
            }
            env
        };
        let env = os::environment(&extra_env);
        let svc = &mut self.svcs[i];
        for at in 0..2 {
            flush_partial(svc, at);
            os::close(svc.out[at]);
            svc.out[at] = -1;
        }
        let user = match &svc.def.user {
            None => None,
            Some(spec) => match os::resolve_user(spec) {
                Some(ids) => Some(ids),
                None => {
                    log!(
                        self.sys,
                        self.init,
                        Error,
                        "service `{}`: no user `{spec}` in /etc/passwd",
                        svc.def.name
                    );
                    self.svcs[i].last = Some(Status::Exited(126));
                    self.give_up(i, Status::Exited(126));
                    return;
                }
            },
        };
        let mut stdio = [-1, -1, -1];
        let mut write_ends = Vec::new();
        if svc.def.log_prefix {
            for at in 0..2 {
                if let Ok((r, w)) = os::pipe() {
                    svc.out[at] = r;
                    stdio[at + 1] = w;
                    write_ends.push(w);
                }
            }
        }
        let mut extra = None;
        if let Ready::Fd(n) = svc.def.ready
            && let Ok((r, w)) = os::pipe()
        {
            svc.ready_fd = r;
            extra = Some((w, n));
            write_ends.push(w);
        }
        let spawn = os::Spawn {
            program: os::find_program(&svc.def.command[0], &env),
            argv: svc.def.command.clone(),
            env,
            workdir: svc.def.workdir.clone(),
            user,
            stdio,
            extra,
            mask: self.inherited.mask,
        };
        let spawned = os::spawn(&spawn);
        for w in write_ends {
            os::close(w);
        }
        self.none_left = false;
        let now = self.sys.now();
        let svc = &mut self.svcs[i];
        match spawned {
            Ok(pid) => {
                log!(
                    self.sys,
                    self.init,
                    Debug,
                    "service `{}` started as {pid}",
                    svc.def.name
                );
                svc.pid = pid;
                svc.since = now;
                svc.state = State::Running;
                svc.ready = false;
                svc.check_delay = CHECK_FIRST;
                match svc.def.ready {
                    Ready::Started if svc.def.kind == Kind::Longrun => svc.ready = true,
                    Ready::Tcp(_) | Ready::Command(_) => svc.timer = Some(now),
                    _ => {}
                }
                if svc.ready {
                    self.set_ready(i);
                }
            }
            Err(err) => {
                log!(
                    self.sys,
                    self.init,
                    Error,
                    "starting service `{}`: {err}",
                    svc.def.name
                );
                svc.since = now;
                self.decide(i, Status::Exited(127));
            }
        }
    }

    fn set_ready(&mut self, i: usize) {
        let svc = &mut self.svcs[i];
        svc.ready = true;
        svc.timer = None;
        os::close(svc.ready_fd);
        svc.ready_fd = -1;
        log!(
            self.sys,
            self.init,
            Debug,
            "service `{}` is ready",
            svc.def.name
        );
    }

    fn spawn_helper(&self, argv: &[alloc::ffi::CString], args: &[String]) -> Result<Pid, Errno> {
        let env = os::environment(&[]);
        let mut argv = argv.to_vec();
        argv.extend(args.iter().map(|a| os::cstr(a)));
        os::spawn(&os::Spawn {
            program: os::find_program(&argv[0], &env),
            argv,
            env,
            workdir: None,
            user: None,
            stdio: [-1, -1, -1],
            extra: None,
            mask: self.inherited.mask,
        })
    }

    fn exited(&mut self, i: usize, status: Status) {
        let svc = &mut self.svcs[i];
        log!(
            self.sys,
            self.init,
            Debug,
            "service `{}` ({}) ended: {status:?}",
            svc.def.name,
            svc.pid
        );
        svc.pid = 0;
        svc.last = Some(status);
        svc.ready = false;
        svc.timer = None;
        os::close(svc.ready_fd);
        svc.ready_fd = -1;
        if svc.helper != 0 {
            let _ = self.sys.kill(svc.helper, libc::SIGKILL);
            svc.helper = 0;
        }
        if svc.state == State::Stopping || !svc.wanted || self.shutting {
            self.stopped(i);
            return;
        }
        if let Some(finish) = svc.def.finish.clone() {
            let (code, sig) = match status {
                Status::Exited(c) => (c, 0),
                Status::Signaled(s) => (256, s),
            };
            if let Ok(pid) = self.spawn_helper(&[finish], &[format!("{code}"), format!("{sig}")]) {
                self.svcs[i].helper = pid;
                self.svcs[i].state = State::Finishing;
                return;
            }
        }
        self.decide(i, status);
    }

    fn stopped(&mut self, i: usize) {
        let svc = &mut self.svcs[i];
        svc.state = State::Stopped;
        if svc.again && !self.shutting {
            svc.again = false;
            svc.wanted = true;
            svc.in_row = 0;
            svc.state = State::Waiting;
        }
    }

    fn helper_exited(&mut self, i: usize, status: Status) {
        let svc = &mut self.svcs[i];
        svc.helper = 0;
        match svc.state {
            State::Finishing => {
                let last = svc.last.unwrap_or(Status::Exited(0));
                if !svc.wanted || self.shutting {
                    self.stopped(i);
                } else if status == Status::Exited(125) {
                    // s6-supervise: a finish script exiting 125 keeps the
                    // service down.
                    svc.state = State::Stopped;
                } else {
                    self.decide(i, last);
                }
            }
            State::Running if !svc.ready => {
                if status == Status::Exited(0) {
                    self.set_ready(i);
                } else {
                    svc.timer = Some(self.sys.now() + svc.check_delay);
                    svc.check_delay = (svc.check_delay * 2).min(CHECK_MAX);
                }
            }
            _ => {}
        }
    }

    /// After an exit: done, restarted after a backoff, or given up.
    fn decide(&mut self, i: usize, status: Status) {
        let now = self.sys.now();
        let svc = &mut self.svcs[i];
        let failed = status != Status::Exited(0);
        if svc.def.kind == Kind::Oneshot && !failed {
            svc.state = State::Done;
            log!(
                self.sys,
                self.init,
                Debug,
                "service `{}` done",
                svc.def.name
            );
            return;
        }
        if now.saturating_sub(svc.since) >= HEALTHY {
            svc.in_row = 0;
        }
        let restart = match svc.def.restart {
            Restart::Always => true,
            Restart::OnFailure => failed,
            Restart::Never => false,
        };
        if !restart {
            if failed {
                self.give_up(i, status);
            } else {
                svc.state = State::Stopped;
            }
            return;
        }
        if svc.in_row >= svc.def.restart_limit {
            log!(
                self.sys,
                self.init,
                Error,
                "service `{}` failed {} times in a row",
                svc.def.name,
                svc.in_row + 1
            );
            self.give_up(i, status);
            return;
        }
        let delay = match svc.in_row {
            0 => Duration::ZERO,
            n => BACKOFF_FIRST
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_MAX),
        };
        log!(
            self.sys,
            self.init,
            Info,
            "service `{}` ended ({}); restarting in {delay:?}",
            svc.def.name,
            describe(status)
        );
        svc.in_row += 1;
        svc.restarts += 1;
        svc.state = State::Backoff;
        svc.timer = Some(now + delay);
    }

    fn give_up(&mut self, i: usize, status: Status) {
        let svc = &mut self.svcs[i];
        svc.state = State::Failed;
        svc.timer = None;
        log!(
            self.sys,
            self.init,
            Error,
            "service `{}` failed ({})",
            svc.def.name,
            describe(status)
        );
        if svc.def.critical && !self.shutting {
            log!(
                self.sys,
                self.init,
                Error,
                "service `{}` is critical; stopping the container",
                svc.def.name
            );
            self.code.get_or_insert(exit_code(self.init, status));
            self.begin_shutdown(false);
            self.stop_main();
        }
    }

    /// Sends a running service its stop signal; SIGKILL after its timeout.
    fn stop(&mut self, i: usize) {
        let now = self.sys.now();
        let svc = &mut self.svcs[i];
        log!(
            self.sys,
            self.init,
            Debug,
            "stopping service `{}` ({}) with {}",
            svc.def.name,
            svc.pid,
            signals::name(svc.def.stop_signal)
        );
        let _ = kill_group(self.sys, svc.pid, svc.def.stop_signal);
        svc.state = State::Stopping;
        svc.timer = Some(now.saturating_add(svc.def.stop_timeout));
    }

    /// Copies what service `i` wrote to its stream `at` (0 stdout, 1
    /// stderr) to ours, a whole line at a time, each after `[name] `.
    fn pump(&mut self, i: usize, at: usize) {
        let svc = &mut self.svcs[i];
        let mut buf = [0u8; 4096];
        loop {
            match os::read(svc.out[at], &mut buf) {
                Ok(0) => {
                    flush_partial(svc, at);
                    os::close(svc.out[at]);
                    svc.out[at] = -1;
                    return;
                }
                Ok(n) => split_lines(svc, at, &buf[..n]),
                Err(Errno::EINTR) => {}
                Err(_) => break,
            }
        }
        if svc.partial[at].is_empty() {
            // Idle services hold no buffer.
            svc.partial[at] = Vec::new();
        }
    }

    fn read_ready_fd(&mut self, i: usize) {
        let mut buf = [0u8; 64];
        let fd = self.svcs[i].ready_fd;
        match os::read(fd, &mut buf) {
            Ok(n) if buf[..n].contains(&b'\n') => self.set_ready(i),
            Ok(0) => {
                os::close(fd);
                self.svcs[i].ready_fd = -1;
            }
            _ => {}
        }
    }

    fn read_notify(&mut self, i: usize) {
        let mut buf = [0u8; 512];
        let fd = self.svcs[i].notify_fd;
        while let Ok(n) = os::read(fd, &mut buf) {
            let ready = buf[..n].split(|b| *b == b'\n').any(|l| l == b"READY=1");
            if ready && self.svcs[i].state == State::Running && !self.svcs[i].ready {
                self.set_ready(i);
            }
        }
    }

    /// Answers one `ctl` request.
    pub fn request(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let find = |name: &str| self.svcs.iter().position(|s| s.def.name == name);
        match words[..] {
            ["status"] => self.status(),
            ["start" | "stop" | "restart", name] | ["signal", _, name] if find(name).is_none() => {
                format!("error: no service `{name}`\n")
            }
            ["start" | "restart", _] if self.shutting => "error: shutting down\n".into(),
            ["start", name] => {
                let i = find(name).unwrap_or_default();
                let svc = &mut self.svcs[i];
                svc.wanted = true;
                if matches!(svc.state, State::Stopped | State::Failed | State::Done) {
                    svc.in_row = 0;
                    svc.state = State::Waiting;
                }
                "ok\n".into()
            }
            ["stop", name] => {
                let i = find(name).unwrap_or_default();
                self.svcs[i].wanted = false;
                match self.svcs[i].state {
                    State::Running => self.stop(i),
                    State::Waiting | State::Backoff => {
                        self.svcs[i].timer = None;
                        self.svcs[i].state = State::Stopped;
                    }
                    _ => {}
                }
                "ok\n".into()
            }
            ["restart", name] => {
                let i = find(name).unwrap_or_default();
                match self.svcs[i].state {
                    State::Running => {
                        self.svcs[i].wanted = false;
                        self.svcs[i].again = true;
                        self.stop(i);
                    }
                    State::Stopping | State::Finishing => self.svcs[i].again = true,
                    _ => {
                        self.svcs[i].wanted = true;
                        self.svcs[i].in_row = 0;
                        self.svcs[i].timer = None;
                        self.svcs[i].state = State::Waiting;
                    }
                }
                "ok\n".into()
            }
            ["signal", sig, name] => {
                let Some(sig) = signals::parse(sig) else {
                    return format!("error: no signal `{sig}`\n");
                };
                let i = find(name).unwrap_or_default();
                let svc = &self.svcs[i];
                if svc.pid == 0 {
                    return format!("error: `{name}` is not running\n");
                }
                match self.sys.kill(svc.pid, sig) {
                    Ok(()) => "ok\n".into(),
                    Err(err) => format!("error: kill {}: {err}\n", svc.pid),
                }
            }
            _ => "error: usage: status | start NAME | stop NAME | restart NAME | signal SIG NAME\n"
                .into(),
        }
    }

    fn status(&self) -> String {
        use core::fmt::Write;
        let now = self.sys.now();
        let mut out = String::from("NAME STATE PID UPTIME RESTARTS LAST\n");
        for svc in &self.svcs {
            let state = match svc.state {
                State::Running if svc.ready => "up",
                State::Running => "starting",
                State::Waiting => "waiting",
                State::Finishing => "finishing",
                State::Backoff => "backoff",
                State::Done => "done",
                State::Failed => "failed",
                State::Stopping => "stopping",
                State::Stopped => "stopped",
            };
            let uptime = if svc.pid != 0 {
                format!("{}s", now.saturating_sub(svc.since).as_secs())
            } else {
                "-".into()
            };
            let pid = if svc.pid != 0 {
                format!("{}", svc.pid)
            } else {
                "-".into()
            };
            let last = svc.last.map_or("-".into(), describe);
            let _ = writeln!(
                out,
                "{} {state} {pid} {uptime} {} {last}",
                svc.def.name, svc.restarts
            );
        }
        out
    }
}

/// `exit N` or `signal SIGX`.
fn describe(status: Status) -> String {
    match status {
        Status::Exited(code) => format!("exit {code}"),
        Status::Signaled(sig) => format!("signal {}", signals::name(sig)),
    }
}

/// Signals a service's process group (it leads its own session), or the
/// process alone when the group is gone.
fn kill_group(sys: &impl Sys, pid: Pid, sig: i32) -> Result<(), Errno> {
    if pid <= 0 {
        return Ok(());
    }
    sys.kill(-pid, sig).or_else(|_| sys.kill(pid, sig))
}

/// Adds `data` to the line being read from `svc`'s stream `at`, writing
/// out every complete line, and a line that reached [`LINE_MAX`] as one
/// line of its own.
fn split_lines(svc: &mut Svc, at: usize, mut data: &[u8]) {
    while !data.is_empty() {
        let room = LINE_MAX - svc.partial[at].len();
        let window = &data[..data.len().min(room)];
        match window.iter().position(|b| *b == b'\n') {
            Some(nl) => {
                if svc.partial[at].is_empty() {
                    emit(&svc.def.name, at, &window[..nl]);
                } else {
                    svc.partial[at].extend_from_slice(&window[..nl]);
                    let line = core::mem::take(&mut svc.partial[at]);
                    emit(&svc.def.name, at, &line);
                }
                data = &data[nl + 1..];
            }
            None => {
                svc.partial[at].extend_from_slice(window);
                data = &data[window.len()..];
                if svc.partial[at].len() == LINE_MAX {
                    let line = core::mem::take(&mut svc.partial[at]);
                    emit(&svc.def.name, at, &line);
                }
            }
        }
    }
}

fn flush_partial(svc: &mut Svc, at: usize) {
    if !svc.partial[at].is_empty() {
        let line = core::mem::take(&mut svc.partial[at]);
        emit(&svc.def.name, at, &line);
    }
}

/// One write per line, so that lines of different services never mix
/// (a pipe takes writes up to PIPE_BUF, 4096 bytes, whole).
fn emit(name: &str, at: usize, line: &[u8]) {
    let mut buf = [0u8; LINE_MAX + 80];
    let mut len = 0;
    for part in [b"[".as_slice(), name.as_bytes(), b"] ", line, b"\n"] {
        buf[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    os::write_all(1 + at as Fd, &buf[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;

    #[test]
    fn long_lines_are_split_never_mixed() {
        let mut svc = new_svc(Def::longrun("x", "x", vec![c"x".to_owned()]));
        split_lines(&mut svc, 0, b"abc");
        assert_eq!(svc.partial[0], b"abc");
        split_lines(&mut svc, 0, b"def\nghi");
        assert_eq!(svc.partial[0], b"ghi");
        let long = vec![b'z'; LINE_MAX * 2 + 5];
        split_lines(&mut svc, 0, &long);
        // "ghi" + LINE_MAX-3 z went out, then LINE_MAX z, 8 left.
        assert_eq!(svc.partial[0].len(), 8);
    }

    fn supervisor<'a>(
        fake: &'a crate::fake::Fake,
        init: &'a Init,
        def: Def,
    ) -> Supervisor<'a, crate::fake::Fake> {
        Supervisor {
            sys: fake,
            init,
            svcs: vec![new_svc(def)],
            inherited: Inherited {
                mask: crate::sys::SigMask(0),
                sigchld_ignored: false,
                cwd: None,
            },
            sigfd: -1,
            ctl_fd: -1,
            ctl_path: String::new(),
            main: None,
            main_started: false,
            main_deadline: None,
            code: None,
            shutting: false,
            rest: Rest::Services,
            none_left: false,
        }
    }

    #[test]
    fn backoff_doubles_to_the_max_then_gives_up_and_starts_over_after_a_healthy_run() {
        // The fake's clock stands at 100 s.
        let fake = crate::fake::Fake::new();
        let init = Init::new(["x"]);
        let mut def = Def::longrun("x", "x", vec![c"x".to_owned()]);
        def.restart_limit = 12;
        def.critical = true;
        let mut s = supervisor(&fake, &init, def);
        let mut delays = Vec::new();
        for _ in 0..12 {
            s.svcs[0].since = Duration::from_secs(99);
            s.decide(0, Status::Exited(1));
            assert_eq!(s.svcs[0].state, State::Backoff);
            delays.push(s.svcs[0].timer.unwrap() - Duration::from_secs(100));
        }
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            delays,
            [
                ms(0),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(6400),
                ms(12800),
                ms(25600),
                ms(30000),
                ms(30000)
            ]
        );
        // Up 10 s: the count in a row starts over, the restart is at once.
        s.svcs[0].since = Duration::from_secs(90);
        s.decide(0, Status::Signaled(9));
        assert_eq!(s.svcs[0].timer, Some(Duration::from_secs(100)));
        // The limit reached: given up, and critical: the run ends with its code.
        for _ in 0..12 {
            s.svcs[0].since = Duration::from_secs(99);
            s.decide(0, Status::Exited(7));
        }
        assert_eq!(s.svcs[0].state, State::Failed);
        assert_eq!((s.code, s.shutting), (Some(ExitCode(7)), true));
        assert_eq!(s.svcs[0].restarts, 12 + 1 + 11);
    }

    #[test]
    fn a_oneshot_is_done_on_0_and_given_up_otherwise() {
        let fake = crate::fake::Fake::new();
        let init = Init::new(["x"]);
        let mut def = Def::longrun("x", "x", vec![c"x".to_owned()]);
        def.kind = Kind::Oneshot;
        def.restart = Restart::Never;
        let mut s = supervisor(&fake, &init, def);
        s.decide(0, Status::Exited(0));
        assert_eq!(s.svcs[0].state, State::Done);
        s.decide(0, Status::Exited(2));
        assert_eq!((s.svcs[0].state, s.code), (State::Failed, None));
    }
}
