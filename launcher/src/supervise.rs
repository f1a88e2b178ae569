//! Step 8, supervise: until the container's PID 1 exits, forward every
//! catchable signal to it, copy the terminal through the pty with `-t` (raw
//! mode, restored after; SIGWINCH resizes), and stop it with SIGKILL when a
//! SIGTERM/SIGINT/SIGHUP/SIGQUIT has not ended it within the grace period.
//! Returns the exit status: the workload's, or 128+N for signal N.

use crate::spawn::Child;
use crate::{Error, Options, Result};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Signals that ask the container to stop: after forwarding one, the
/// launcher waits `--stop-timeout` seconds, then sends SIGKILL (docker stop).
pub(crate) const STOPPING: [i32; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Every signal a process may catch, less the ones the launcher keeps for
/// itself (SIGCHLD, SIGPIPE) and the ones signal-hook refuses (fault
/// signals, SIGKILL, SIGSTOP).
pub fn forwarded_signals() -> Vec<i32> {
    let own = [libc::SIGCHLD, libc::SIGPIPE];
    (1..libc::SIGRTMAX())
        .filter(|s| !signal_hook::consts::FORBIDDEN.contains(s) && !own.contains(s))
        .filter(|s| !(32..libc::SIGRTMIN()).contains(s))
        .chain([libc::SIGCHLD])
        .collect()
}

/// The launcher's signals, caught from before the clone on, so that none
/// sent while the container starts is lost (or kills the launcher): blocked
/// and read from a signalfd. Two system calls, where a handler per signal
/// took some 120 (and signal-hook's registry copies its table for each).
/// Blocked, they stay blocked to the end: one that comes during the clean-up
/// waits, unread, instead of cutting it short. Every process the launcher
/// starts empties its mask first (the container's child, `exec`'s child,
/// and std's `Command`).
pub struct Signals {
    fd: OwnedFd,
    /// Read while the container started, to act on once it runs.
    held: Vec<i32>,
    /// Whether the kernel's signals count ([`Signals::skip_kernel`]).
    skip_kernel: bool,
}

/// Starts catching [`forwarded_signals`].
pub fn catch_signals() -> Result<Signals> {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset; the
    // mask is this thread's (the launcher's only one by then); signalfd
    // returns a new fd or -1.
    let fd = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in forwarded_signals() {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(Error::sys("blocking the forwarded signals")(Errno::last()));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        if fd < 0 {
            return Err(Error::sys("creating the signalfd")(Errno::last()));
        }
        OwnedFd::from_raw_fd(fd)
    };
    Ok(Signals {
        fd,
        held: Vec::new(),
        skip_kernel: false,
    })
}

impl Signals {
    /// Readable when a signal waits.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// From now on, the kernel's signals (SIGCHLD aside) do not count: the
    /// detach client's ([`crate::detach`]), whose launcher gets the
    /// terminal's (SIGWINCH, a hangup's SIGHUP) itself.
    pub fn skip_kernel(&mut self) {
        self.skip_kernel = true;
    }

    /// The signals that came, in order: those held first.
    pub fn pending(&mut self) -> Vec<i32> {
        let mut got = std::mem::take(&mut self.held);
        const SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
        let mut buf = [0u8; SIZE * 16];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                if n < 0 && Errno::last() == Errno::EINTR {
                    continue;
                }
                return got;
            }
            for info in buf[..n as usize].chunks_exact(SIZE) {
                // ssi_signo, ssi_errno, ssi_code: the record's first
                // three fields, 32 bits each.
                let field = |i: usize| {
                    i32::from_ne_bytes([
                        info[4 * i],
                        info[4 * i + 1],
                        info[4 * i + 2],
                        info[4 * i + 3],
                    ])
                };
                let (signo, code) = (field(0), field(2));
                if !(self.skip_kernel && code == libc::SI_KERNEL && signo != libc::SIGCHLD) {
                    got.push(signo);
                }
            }
        }
    }

    /// Keeps `signals` for the next [`Signals::pending`].
    pub fn hold(&mut self, signals: Vec<i32>) {
        self.held.extend(signals);
    }
}

/// Waits for the container to exit, forwarding signals and the terminal. A
/// SIGTERM is forwarded as `stop_signal` (the image's StopSignal). The
/// first stop signal starts the grace period and says so on `notify` (the
/// wait is not silent); a second one while it runs kills the container at
/// once, as docker's CLI does on a second ^C. With `detach` (a terminal on
/// stdin), the detach keys typed there make the container a detached one
/// ([`crate::detach`]): the terminal is given back and the pty's output goes
/// to the log.
pub fn until_exit(
    child: Child,
    mut signals: Signals,
    stop_signal: i32,
    opts: &Options,
    notify: &mut dyn FnMut(&str),
    mut detach: Option<&mut crate::detach::Pending<'_>>,
) -> Result<i32> {
    let stdin = std::io::stdin();
    let tty_in = opts.tty && termios::tcgetattr(stdin.as_fd()).is_ok();
    let mut raw = match tty_in {
        true => RawMode::enter(stdin.as_fd()),
        false => None,
    };
    let mut keys = detach.as_ref().filter(|_| tty_in).map(|d| d.keys());
    // After a detach: the log the pty's output goes to.
    let mut log: Option<crate::logs::Writer> = None;
    if let Some(master) = &child.pty {
        resize(master.as_raw_fd());
        set_nonblocking(master.as_raw_fd());
    }
    let grace = Duration::from_secs(opts.stop_timeout);
    let mut deadline: Option<Instant> = None;
    let mut stop_requested = false;
    let mut status = reap(&child)?;
    let mut stdin_open = opts.tty && opts.interactive;
    // `-t` without `-i`: the terminal is read for the detach keys alone.
    let mut keys_only = keys.is_some() && !stdin_open;
    let mut pty_open = child.pty.is_some();
    // Input read from stdin that the pty master has not taken yet: the
    // master is non-blocking (so that the container's output keeps flowing
    // while its input is full), and a write it refuses with EAGAIN is kept
    // here, stdin unread, until POLLOUT says the pty has room.
    let mut to_pty: Vec<u8> = Vec::new();
    // The terminal on stdin hung up (its end of file in raw mode): the
    // container gets the SIGHUP a hangup means, as any foreground job
    // would. The kernel sends one only to the session's leader, which is
    // neither this launcher nor, often, anything that passes it on (a
    // non-interactive shell, tmux or ssh running the launcher itself, whose
    // SIGHUP the detach client drops as the kernel's).
    let mut hung_up = false;
    let mut hangup_due = false;
    while status.is_none() || pty_open {
        if status.is_some() {
            // Exited: copy what the pty still holds, then stop.
            if let Some(m) = &child.pty {
                drain(m.as_raw_fd(), &mut log);
            }
            break;
        }
        let sig_fd = signals.fd();
        let master = child
            .pty
            .as_ref()
            .map(|m| m.as_raw_fd())
            .filter(|_| pty_open);
        let mut fds = vec![pollfd(sig_fd, libc::POLLIN)];
        if (stdin_open && master.is_some() && to_pty.is_empty()) || keys_only {
            fds.push(pollfd(0, libc::POLLIN));
        }
        if let Some(m) = master {
            let out = if to_pty.is_empty() { 0 } else { libc::POLLOUT };
            fds.push(pollfd(m, libc::POLLIN | out));
        }
        let timeout = match deadline {
            _ if hangup_due => 0,
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32,
            None => -1,
        };
        // SAFETY: fds is a valid array of pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 && Errno::last() != Errno::EINTR {
            return Err(Error::sys("waiting for the container")(Errno::last()));
        }
        let mut pending = signals.pending();
        if std::mem::take(&mut hangup_due) && !stop_requested {
            pending.push(libc::SIGHUP);
        }
        for sig in pending {
            match sig {
                libc::SIGCHLD => {}
                // The hangup's own SIGHUP, passed on by a session leader
                // after the one sent for it: not a second request.
                libc::SIGHUP if hung_up && stop_requested => {}
                libc::SIGWINCH if child.pty.is_some() => {
                    if let Some(m) = &child.pty {
                        resize(m.as_raw_fd());
                    }
                }
                s if stop_requested && STOPPING.contains(&s) => {
                    notify(&raw_line(
                        &raw,
                        format!(
                            "got {} while stopping: killing the container",
                            signal_name(s)
                        ),
                    ));
                    let _ = kill(child.pid, Signal::SIGKILL);
                    deadline = None;
                }
                s => {
                    let stopping = STOPPING.contains(&s) || s == stop_signal;
                    let s = if s == libc::SIGTERM { stop_signal } else { s };
                    if let Ok(s) = Signal::try_from(s) {
                        let _ = kill(child.pid, s);
                    } else {
                        // SAFETY: kill with a real-time signal number.
                        unsafe { libc::kill(child.pid.as_raw(), s) };
                    }
                    if stopping && !stop_requested {
                        stop_requested = true;
                        // None past the clock's end: no SIGKILL, not a panic.
                        deadline = Instant::now().checked_add(grace);
                        notify(&raw_line(
                            &raw,
                            format!(
                                "stopping the container: sent {}; SIGKILL in {} s, or at once on a second signal",
                                signal_name(s),
                                opts.stop_timeout
                            ),
                        ));
                    }
                }
            }
        }
        for fd in fds.iter().skip(1) {
            if fd.revents == 0 {
                continue;
            }
            if fd.fd == 0 {
                let mut typed = Vec::new();
                let open = read_into(0, &mut typed);
                let mut passed = Vec::new();
                let detaching = match keys.as_mut() {
                    Some(k) => k.feed(&typed, &mut passed),
                    None => {
                        passed = typed;
                        false
                    }
                };
                if stdin_open {
                    to_pty.extend_from_slice(&passed);
                    if !open {
                        // End of our stdin: the terminal's end-of-file
                        // character (^D in the default modes) tells the
                        // reader, after the input still pending.
                        to_pty.push(4);
                    }
                }
                if !open {
                    stdin_open = false;
                    keys_only = false;
                    if raw.is_some() && !hung_up {
                        hung_up = true;
                        hangup_due = true;
                        notify("the terminal hung up");
                    }
                }
                if detaching && let Some(d) = detach.as_deref_mut() {
                    // The terminal first: the client the shell waits for
                    // ends as soon as it hears of the detach.
                    drop(raw.take());
                    match d.detach() {
                        Ok(writer) => {
                            log = Some(writer);
                            (stdin_open, keys_only, keys) = (false, false, None);
                        }
                        Err(err) => {
                            notify(&format!("cannot detach: {}", crate::monitor::chain(&err)));
                            raw = RawMode::enter(stdin.as_fd());
                        }
                    }
                }
                if let Some(m) = master {
                    write_pending(m, &mut to_pty);
                }
                continue;
            }
            if fd.revents & libc::POLLOUT != 0 {
                write_pending(fd.fd, &mut to_pty);
            }
            if fd.revents & !libc::POLLOUT != 0 && !copy_out(fd.fd, &mut log) {
                pty_open = false;
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = kill(child.pid, Signal::SIGKILL);
            deadline = None;
        }
        if status.is_none() {
            status = reap(&child)?;
        }
    }
    drop(signals);
    Ok(status.unwrap_or(crate::EXIT_LAUNCHER_FAILED))
}

/// `text` to print while the terminal is in raw mode: ended by a carriage
/// return too, or the next line would start where this one stops.
fn raw_line(raw: &Option<RawMode>, text: String) -> String {
    match raw {
        Some(_) => text + "\r",
        None => text,
    }
}

/// `SIGTERM`, or the number of a signal nix has no name for.
fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The exit status if the child has exited.
fn reap(child: &Child) -> Result<Option<i32>> {
    loop {
        match waitpid(child.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Some(128 + sig as i32)),
            Ok(_) => return Ok(None),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("waiting for the container")(e)),
        }
    }
}

/// Copies what is readable from `from` to `to`; false at EOF or error
/// (EIO on a pty master: every slave is closed).
fn copy(from: RawFd, to: RawFd) -> bool {
    let mut buf = Vec::new();
    let open = read_into(from, &mut buf);
    write_all(to, &buf);
    open
}

/// Appends what one read of `from` returns to `buf`; false at EOF or error.
fn read_into(from: RawFd, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 << 10];
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(from, chunk.as_mut_ptr().cast(), chunk.len()) };
    if n < 0 {
        return Errno::last() == Errno::EAGAIN || Errno::last() == Errno::EINTR;
    }
    if n == 0 {
        return false;
    }
    buf.extend_from_slice(&chunk[..n as usize]);
    true
}

/// Writes as much of `pending` to the non-blocking `fd` as it takes now,
/// and keeps the rest. On an error other than EAGAIN (EIO: the container's
/// side of the pty is closed) nobody will read the rest: it is dropped.
fn write_pending(fd: RawFd, pending: &mut Vec<u8>) {
    let mut done = 0;
    while done < pending.len() {
        let rest = &pending[done..];
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        match Errno::last() {
            Errno::EINTR if n < 0 => continue,
            Errno::EAGAIN if n < 0 => break,
            _ => {
                done = pending.len();
                break;
            }
        }
    }
    pending.drain(..done);
}

/// [`copy`] to our stdout, or after a detach to the log.
fn copy_out(from: RawFd, log: &mut Option<crate::logs::Writer>) -> bool {
    let Some(log) = log else {
        return copy(from, 1);
    };
    let mut buf = Vec::new();
    let open = read_into(from, &mut buf);
    if !buf.is_empty() {
        log.write(crate::logs::Stream::Stdout, &buf);
    }
    open
}

fn drain(fd: RawFd, log: &mut Option<crate::logs::Writer>) {
    while copy_out(fd, log) {
        let mut p = [pollfd(fd, libc::POLLIN)];
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(p.as_mut_ptr(), 1, 0) } <= 0 {
            break;
        }
    }
}

/// Writes all of `data` to `fd` (our stdout, blocking unless the caller
/// made it not).
fn write_all(fd: RawFd, mut data: &[u8]) {
    while !data.is_empty() {
        // SAFETY: writing from a valid buffer.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        data = &data[n as usize..];
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Gives the pty the size of the launcher's terminal.
fn resize(master: RawFd) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ read and write a winsize we own.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        for fd in [0, 1, 2] {
            if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0 {
                libc::ioctl(master, libc::TIOCSWINSZ, &ws);
                return;
            }
        }
    }
}

/// The launcher's terminal in raw mode, restored on drop (also when
/// supervision ends with an error or a forwarded SIGTERM).
struct RawMode {
    fd: RawFd,
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'_>) -> Option<Self> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(Self {
            fd: fd.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: the fd is stdin, open for the whole run.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = termios::tcsetattr(fd, SetArg::TCSADRAIN, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // raise(3) signals this thread only, so the test harness's other
    // threads (which do not block them) never see these.
    #[test]
    fn signals_are_read_from_the_signalfd_and_held_ones_come_first() {
        let mut signals = catch_signals().unwrap();
        assert!(signals.pending().is_empty());
        // SAFETY: raising signals this thread now blocks.
        unsafe {
            libc::raise(libc::SIGUSR2);
            libc::raise(libc::SIGWINCH);
        }
        let got = signals.pending();
        assert_eq!(got, [libc::SIGUSR2, libc::SIGWINCH]);
        signals.hold(vec![libc::SIGHUP]);
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGUSR1) };
        assert_eq!(signals.pending(), [libc::SIGHUP, libc::SIGUSR1]);
        assert!(signals.pending().is_empty());
        // SAFETY: unblocking what catch_signals blocked; nothing is pending.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
    }

    #[test]
    fn forwards_catchable_signals_but_keeps_its_own() {
        let sigs = forwarded_signals();
        for s in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGUSR1,
            libc::SIGWINCH,
            libc::SIGRTMIN(),
        ] {
            assert!(sigs.contains(&s), "{s}");
        }
        for s in [libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV, libc::SIGPIPE] {
            assert!(!sigs.contains(&s), "{s}");
        }
    }
}
