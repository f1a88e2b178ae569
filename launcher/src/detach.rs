//! Docker's detach keys: Ctrl-P Ctrl-Q (or `--detach-keys`) typed on the
//! terminal of a foreground `run -t` leaves the container running as a
//! detached one, as `run -d` makes them ([`crate::monitor`]), and gives the
//! shell its prompt back.
//!
//! The container's processes are the launcher's children, so the launcher
//! must outlive the shell's wait:
//!
//! 1. [`fork_client`], before the run: the process the shell waits for
//!    becomes a thin client ([`Client::wait`]) that forwards the signals
//!    sent to it and exits with the launcher's status, or with 0 once it
//!    detached. The launcher goes on in its child, which dies with the
//!    client until then (parent-death signal SIGKILL), so that a killed
//!    client leaves what a killed launcher leaves. The child takes a
//!    process group of its own and the terminal's foreground: a signal
//!    sent to the client's group (the shell's job, `timeout`) reaches it
//!    once, through the client (had it both, the two copies would merge
//!    into one pending signal, and a filter dropping one lost both), and
//!    the terminal's own (SIGWINCH, SIGHUP) reach it directly;
//! 2. [`Keys`] finds the sequence in what is typed (a prefix of it followed
//!    by anything else passes on whole, as docker does);
//! 3. on the sequence, [`Pending::detach`]: the record and monitor lock
//!    of a detached container (its name checked as `run -d` checks it), the
//!    parent-death signal cleared, a session of its own and stdio on
//!    /dev/null, then the word to the client. The launcher is now the
//!    container's monitor: the pty's output goes to the log, and at the end
//!    [`Pending::end`] records the exit status for `wait` and removes the
//!    record, as a foreground run's state is removed (`--rm` semantics).
//!
//! Only runs that can detach pay for the fork: `-t` with a terminal on
//! stdin and a detach sequence.

use crate::cache::{self, Cache};
use crate::logs;
use crate::state::{self, Handle, Identity, Record, Status};
use crate::{Error, Options, Result};
use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Docker's default: Ctrl-P Ctrl-Q.
pub const DEFAULT_KEYS: &str = "ctrl-p,ctrl-q";

/// `--detach-keys`, docker's syntax: a comma-separated list of `ctrl-X`
/// (X a letter or one of `@[\]^_`) and single characters. Empty: detaching
/// is off.
pub fn parse_keys(text: &str) -> std::result::Result<Vec<u8>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |key: &str, why: &str| format!("invalid detach key `{key}` in `{text}`: {why}");
    text.split(',')
        .map(|key| {
            let lower = key.to_ascii_lowercase();
            match lower.strip_prefix("ctrl-") {
                Some(rest) if rest.len() == 1 => match rest.as_bytes()[0] {
                    c @ b'a'..=b'z' => Ok(c - b'a' + 1),
                    b'@' => Ok(0),
                    c @ (b'[' | b'\\' | b']' | b'^' | b'_') => Ok(c - b'@'),
                    _ => Err(bad(key, "ctrl- takes a letter or one of @[\\]^_")),
                },
                Some(_) => Err(bad(key, "ctrl- takes one character")),
                None if key.len() == 1 => Ok(key.as_bytes()[0]),
                None => Err(bad(key, "a key is `ctrl-X` or one character")),
            }
        })
        .collect()
}

/// The detach sequence, found across reads.
#[derive(Debug, Clone)]
pub struct Keys {
    sequence: Vec<u8>,
    /// How many of its bytes the input ended with so far (held back).
    matched: usize,
}

impl Keys {
    pub fn new(sequence: Vec<u8>) -> Keys {
        Keys {
            sequence,
            matched: 0,
        }
    }

    /// Appends to `out` what `input` passes on to the container; true when
    /// the whole sequence was typed (what follows it is dropped). A prefix
    /// of the sequence is held until the next byte tells: the rest of the
    /// sequence, or anything else, which passes on with it.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &byte in input {
            if self.sequence.is_empty() {
                out.push(byte);
                continue;
            }
            if byte == self.sequence[self.matched] {
                self.matched += 1;
                if self.matched == self.sequence.len() {
                    self.matched = 0;
                    return true;
                }
                continue;
            }
            out.extend_from_slice(&self.sequence[..self.matched]);
            self.matched = 0;
            // The byte may begin the sequence again (Ctrl-P Ctrl-P Ctrl-Q).
            if byte == self.sequence[0] {
                self.matched = 1;
                if self.sequence.len() == 1 {
                    self.matched = 0;
                    return true;
                }
            } else {
                out.push(byte);
            }
        }
        false
    }
}

/// What the launcher's process (the client's child) knows of its client.
#[derive(Debug)]
pub struct Link {
    pub keys: Vec<u8>,
    /// The client: signals from it (and the terminal's) are the only ones
    /// the launcher forwards, so that one sent to the whole process group
    /// reaches the container once.
    pub client: Pid,
    /// The client's process group, given the terminal back on a detach.
    group: libc::pid_t,
    /// Where the launcher says `detached ID`.
    report: OwnedFd,
}

/// The two sides of [`fork_client`].
pub enum Side {
    /// The caller is the client: [`Client::wait`], then exit.
    Client(Client),
    /// The caller is the launcher, which runs the container.
    Launcher(std::sync::Arc<Link>),
}

/// The process the shell waits for.
pub struct Client {
    launcher: Pid,
    pidfd: OwnedFd,
    report: OwnedFd,
}

/// How the client ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The launcher exited with this status (or 128+N for signal N).
    Exited(i32),
    /// The user detached from container ID.
    Detached(String),
}

/// Forks the launcher off the process the shell waits for.
pub fn fork_client(keys: Vec<u8>) -> Result<Side> {
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Error::sys("creating a pipe"))?;
    let client = nix::unistd::getpid();
    // SAFETY: getpgrp cannot fail.
    let group = unsafe { libc::getpgrp() };
    // SAFETY: the launcher is single-threaded here (nothing before has
    // started a thread); the child goes on as the launcher.
    match unsafe { nix::unistd::fork() }.map_err(Error::sys("forking the launcher"))? {
        ForkResult::Child => {
            drop(report_r);
            // SAFETY: prctl with integer arguments; the parent check closes
            // the race with a client that died before it.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != client.as_raw() {
                    libc::_exit(crate::EXIT_LAUNCHER_FAILED);
                }
            }
            take_the_foreground(group);
            Ok(Side::Launcher(std::sync::Arc::new(Link {
                keys,
                client,
                group,
                report: report_w,
            })))
        }
        ForkResult::Parent { child } => {
            drop(report_w);
            // SAFETY: pidfd_open with integer arguments.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
            if fd < 0 {
                let err = Errno::last();
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                return Err(Error::sys("opening a pidfd of the launcher")(err));
            }
            Ok(Side::Client(Client {
                launcher: child,
                // SAFETY: the kernel just gave us this fd.
                pidfd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
                report: report_r,
            }))
        }
    }
}

impl Client {
    /// Forwards the signals sent to the client to the launcher until it
    /// exits or detaches. The terminal's own signals (SIGWINCH, SIGHUP)
    /// are not forwarded: they reach the launcher directly, whose group is
    /// the terminal's foreground one (or the client's).
    pub fn wait(self) -> Result<Ending> {
        let mut signals = crate::supervise::catch_signals()?;
        signals.skip_kernel();
        let mut said = Vec::new();
        let mut report_open = true;
        loop {
            let mut fds = vec![
                pollfd(signals.fd()),
                pollfd(self.pidfd.as_raw_fd()),
                pollfd(if report_open {
                    self.report.as_raw_fd()
                } else {
                    -1
                }),
            ];
            // SAFETY: a valid array of pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 && Errno::last() != Errno::EINTR {
                return Err(Error::sys("waiting for the launcher")(Errno::last()));
            }
            for sig in signals.pending() {
                if sig != libc::SIGCHLD {
                    // SAFETY: kill(2) of our own child.
                    unsafe { libc::kill(self.launcher.as_raw(), sig) };
                }
            }
            if fds[2].revents != 0 {
                let mut chunk = [0u8; 256];
                // SAFETY: reading into a valid buffer.
                let got = unsafe { libc::read(fds[2].fd, chunk.as_mut_ptr().cast(), chunk.len()) };
                match got {
                    n if n > 0 => said.extend_from_slice(&chunk[..n as usize]),
                    _ => report_open = false,
                }
                let text = String::from_utf8_lossy(&said);
                if let Some(line) = text.strip_suffix('\n')
                    && let Some(id) = line.strip_prefix("detached ")
                {
                    return Ok(Ending::Detached(id.to_string()));
                }
            }
            if fds[1].revents != 0 {
                let code = reap(self.launcher);
                // The launcher's group had the terminal: back to ours (the
                // shell's job), so that the shell's next read is not a
                // background one.
                give_the_terminal(self.launcher.as_raw(), own_group());
                return Ok(Ending::Exited(code));
            }
        }
    }
}

/// In the launcher: a process group of its own, made the terminal's
/// foreground one, if the client's group had it (a client run in the
/// background leaves things as they are).
fn take_the_foreground(client_group: libc::pid_t) {
    // SAFETY: tcgetpgrp, setpgid and getpgrp with integer arguments.
    unsafe {
        if libc::tcgetpgrp(0) != client_group || libc::setpgid(0, 0) != 0 {
            return;
        }
    }
    if !give_the_terminal(client_group, own_group()) {
        // SAFETY: back into the client's group, in the same session.
        unsafe { libc::setpgid(0, client_group) };
    }
}

fn own_group() -> libc::pid_t {
    // SAFETY: getpgrp cannot fail.
    unsafe { libc::getpgrp() }
}

/// Makes `to` the foreground group of the terminal on stdin if `from` is;
/// true when `to` has it. SIGTTOU is blocked meanwhile: a background
/// group may only take the terminal so (tcsetpgrp(3)).
fn give_the_terminal(from: libc::pid_t, to: libc::pid_t) -> bool {
    // SAFETY: sigset_t is plain data filled by sigemptyset/sigaddset; the
    // mask is restored as it was; tcgetpgrp/tcsetpgrp on stdin.
    unsafe {
        if libc::tcgetpgrp(0) != from {
            return libc::tcgetpgrp(0) == to;
        }
        let mut ttou: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut ttou);
        libc::sigaddset(&mut ttou, libc::SIGTTOU);
        libc::pthread_sigmask(libc::SIG_BLOCK, &ttou, &mut old);
        let done = libc::tcsetpgrp(0, to) == 0;
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        done
    }
}

fn reap(pid: Pid) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Err(Errno::EINTR) | Ok(_) => continue,
            Err(_) => return crate::EXIT_LAUNCHER_FAILED,
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// A running foreground container that may still detach: its record,
/// ready to be written.
pub struct Pending<'a> {
    link: &'a Link,
    cache: &'a Cache,
    record: Record,
    /// Once detached: its directory and the monitor's lock.
    detached: Option<(Handle, File)>,
}

impl<'a> Pending<'a> {
    /// The record of the container `child`, as `run -d`'s monitor writes
    /// it once its workload runs. Its id is the state directory's when it
    /// has no name (its hostname's first 12 characters are the id's).
    pub fn new(
        link: &'a Link,
        cache: &'a Cache,
        container: &cache::Container,
        child: &crate::spawn::Child,
        plan: &crate::spawn::Plan,
        opts: &Options,
    ) -> Pending<'a> {
        let id = match opts.name {
            Some(_) => cache::random_id(),
            None => container.id.clone(),
        };
        let name = opts.name.clone().unwrap_or_else(|| id[..12].to_string());
        let detach = crate::monitor::Detach {
            restart: state::Restart::No,
            auto_remove: true,
            // A foreground run runs no health check, before or after.
            health: crate::health::Flags {
                none: true,
                ..Default::default()
            },
        };
        let mut record = Record::new(id, name, crate::monitor::config(opts, &detach));
        let pid = child.pid.as_raw();
        record.config.hostname = plan.hostname.clone();
        record.config.command = crate::monitor::command_shown(&plan.process.argv);
        record.state.status = Status::Running;
        record.state.pid = pid;
        record.state.pid_start = crate::cgroups::start_time(pid as u32).unwrap_or(0);
        record.state.started_at = state::now();
        record.state.process = state::Process {
            env: plan.process.env.clone(),
            cwd: plan.process.cwd.clone(),
            user: plan.process.user.clone(),
            stop_signal: plan.stop_signal,
        };
        Pending {
            link,
            cache,
            record,
            detached: None,
        }
    }

    pub fn keys(&self) -> Keys {
        Keys::new(self.link.keys.clone())
    }

    /// Makes the container a detached one: the writer of its log for the
    /// pty's output from now on. Called with the terminal restored; the
    /// client, told last, prints the id and exits 0. An error (the name
    /// taken by a detached container meanwhile) leaves it attached.
    pub fn detach(&mut self) -> Result<logs::Writer> {
        let pid = std::process::id();
        self.record.monitor = Identity {
            pid: pid as i32,
            start: crate::cgroups::start_time(pid).unwrap_or(0),
        };
        let (handle, mut lock) = state::create_detaching(self.cache, &self.record)?;
        state::write_identity(&mut lock, self.record.monitor);
        let log = logs::max_size()
            .and_then(|max| logs::Writer::open(&handle.dir, max))
            .and_then(|log| leave_terminal(self.link.group).map(|()| log));
        let log = match log {
            Ok(log) => log,
            Err(err) => {
                let _ = cache::remove_container_dir(&handle.dir);
                return Err(err);
            }
        };
        let word = format!("detached {}\n", self.record.id);
        // SAFETY: writing from a valid buffer to our pipe.
        unsafe {
            libc::write(
                self.link.report.as_raw_fd(),
                word.as_ptr().cast(),
                word.len(),
            )
        };
        self.detached = Some((handle, lock));
        Ok(log)
    }

    /// After the container's end and clean-up: the exit status, in the
    /// lock file for `wait`, and the record removed.
    pub fn end(self, code: i32) {
        let Some((handle, mut lock)) = self.detached else {
            return;
        };
        let mut record = self.record;
        record.state.status = Status::Exited;
        record.state.exit_code = code;
        record.state.pid = 0;
        record.state.finished_at = state::now();
        let _ = state::write_record(self.cache, &handle.dir, &record);
        state::write_exit(&mut lock, code);
        let _ = cache::remove_container_dir(&handle.dir);
    }
}

/// The launcher leaves the client's terminal (the foreground back to the
/// client's group) and session: it must outlive them (no parent-death
/// signal, no SIGHUP when the terminal closes), and hold nothing of the
/// terminal (stdio on /dev/null) nor the caller's directory (it works from
/// `/`, as `run -d`'s monitor: what it still uses is under the absolute
/// state root).
fn leave_terminal(client_group: libc::pid_t) -> Result<()> {
    std::env::set_current_dir("/").map_err(Error::io("entering", "/"))?;
    give_the_terminal(own_group(), client_group);
    // setsid(2) refuses a group leader: back into the client's group (its
    // leader waits for our word) to leave it with the session.
    // SAFETY: setpgid with integer arguments, within our session.
    unsafe { libc::setpgid(0, client_group) };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(Error::io("opening", "/dev/null"))?;
    // SAFETY: prctl with integer arguments; setsid; dup2 onto the standard
    // fds, which this process owns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0);
        if libc::setsid() < 0 {
            return Err(Error::sys("making a session for the detached container")(
                Errno::last(),
            ));
        }
        for fd in 0..3 {
            if libc::dup2(null.as_raw_fd(), fd) < 0 {
                return Err(Error::sys("redirecting the launcher's stdio")(Errno::last()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_read_as_docker_reads_them() {
        assert_eq!(parse_keys(DEFAULT_KEYS), Ok(vec![0x10, 0x11]));
        assert_eq!(parse_keys("ctrl-a,x"), Ok(vec![1, b'x']));
        assert_eq!(parse_keys("Ctrl-Z"), Ok(vec![26]));
        assert_eq!(
            parse_keys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_"),
            Ok(vec![0, 27, 28, 29, 30, 31])
        );
        assert_eq!(parse_keys(""), Ok(vec![]));
        for bad in ["ctrl-", "ctrl-1", "ctrl-ab", "ab", "ctrl-p,", ",x"] {
            let err = parse_keys(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn the_sequence_is_found_across_reads_and_other_bytes_pass_on() {
        let feed = |keys: &mut Keys, input: &[u8]| {
            let mut out = Vec::new();
            let done = keys.feed(input, &mut out);
            (out, done)
        };
        let mut keys = Keys::new(vec![0x10, 0x11]);
        assert_eq!(feed(&mut keys, b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(feed(&mut keys, b"\x11rest"), (vec![], true));
        // Ctrl-P then another key: both pass on.
        assert_eq!(feed(&mut keys, b"\x10x"), (b"\x10x".to_vec(), false));
        assert_eq!(feed(&mut keys, b"\x10"), (vec![], false));
        assert_eq!(feed(&mut keys, b"y"), (b"\x10y".to_vec(), false));
        // Ctrl-P Ctrl-P Ctrl-Q: the first passes on, then it detaches.
        assert_eq!(feed(&mut keys, b"\x10\x10\x11"), (b"\x10".to_vec(), true));
        // One key.
        let mut one = Keys::new(vec![b'q']);
        assert_eq!(feed(&mut one, b"abq"), (b"ab".to_vec(), true));
        // None: everything passes on.
        let mut none = Keys::new(vec![]);
        assert_eq!(feed(&mut none, b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }
}
