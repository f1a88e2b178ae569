//! The seam between the init's steps and the kernel: the [`Sys`] trait, its
//! [`Linux`] implementation, and the plain types they exchange.

use crate::errno::Errno;
use crate::prelude::*;
use alloc::ffi::CString;
use core::ffi::CStr;
use core::time::Duration;

/// A command line for [`Sys::execvp`], everything it needs built before the
/// fork: the child of a multi-threaded parent (a runtime embedding the init)
/// must not allocate, as another thread may have held the allocator's lock
/// when it forked (fork(2), signal-safety(7)).
pub struct Argv<'a> {
    strings: &'a [CString],
    ptrs: Vec<*const libc::c_char>,
    /// `/bin/sh FILE ARGS…` for a file the kernel will not execute (no
    /// `#!`); slot 1 is set to the file found, in the child.
    script: Vec<core::cell::Cell<*const libc::c_char>>,
    /// `PATH`, or its default when unset.
    search: &'a CStr,
}

/// The search path when `PATH` is unset: musl's, which is glibc's with
/// /usr/local/bin first.
const DEFAULT_PATH: &CStr = c"/usr/local/bin:/bin:/usr/bin";
/// What a file without `#!` is run with, as execvp(3) does (POSIX).
const SHELL: &CStr = c"/bin/sh";

impl<'a> Argv<'a> {
    pub fn new(strings: &'a [CString]) -> Argv<'a> {
        let ptrs: Vec<_> = strings
            .iter()
            .map(|a| a.as_ptr())
            .chain([core::ptr::null()])
            .collect();
        let script = [SHELL.as_ptr(), core::ptr::null()]
            .into_iter()
            .chain(ptrs.iter().skip(1).copied())
            .map(core::cell::Cell::new)
            .collect();
        // SAFETY: getenv returns null or a NUL-terminated string of the
        // environment, which nothing in the init changes.
        let path = unsafe { libc::getenv(c"PATH".as_ptr()) };
        let search = if path.is_null() {
            DEFAULT_PATH
        } else {
            // SAFETY: as above; it lives as long as the process.
            unsafe { CStr::from_ptr(path) }
        };
        Argv {
            strings,
            ptrs,
            script,
            search,
        }
    }

    pub fn strings(&self) -> &'a [CString] {
        self.strings
    }
}

/// A process or process-group id, as the kernel has it.
pub type Pid = libc::pid_t;

/// A file descriptor owned by the init.
pub type Fd = libc::c_int;

/// A set of signals 1..=64, bit `n - 1` for signal `n`: the kernel's own
/// sigset layout, so [`Linux`] hands it to the syscalls as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigMask(pub u64);

impl SigMask {
    /// Every signal.
    pub const ALL: SigMask = SigMask(u64::MAX);

    /// Whether `sig` (1..=64) is in the set.
    pub fn contains(self, sig: i32) -> bool {
        (1..=64).contains(&sig) && self.0 & (1 << (sig - 1)) != 0
    }
}

/// How a waited-for process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It called exit with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

/// One signal read from the signalfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received {
    pub signo: i32,
    /// The sender (0 for the kernel).
    pub pid: Pid,
}

/// Which side of a fork this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fork {
    Parent(Pid),
    Child,
}

/// Where a log line goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Every system call the init makes. Steps take `&impl Sys`, so they run
/// against the kernel ([`Linux`]) or against a fake that records the calls.
pub trait Sys {
    fn getpid(&self) -> Pid;
    /// Blocks `set` and returns the mask that was in force before.
    fn block_signals(&self, set: SigMask) -> Result<SigMask, Errno>;
    /// Replaces the signal mask.
    fn set_signal_mask(&self, set: SigMask) -> Result<(), Errno>;
    /// Whether `sig` is set to be ignored (SIG_IGN).
    fn is_ignored(&self, sig: i32) -> bool;
    /// Sets `sig` to SIG_IGN, or to SIG_DFL.
    fn set_ignored(&self, sig: i32, ignored: bool) -> Result<(), Errno>;
    /// Takes the pending signals of `set` out of the queue, without waiting.
    fn take_pending(&self, set: SigMask) -> SigMask;
    /// A close-on-exec signalfd for `set`.
    fn signalfd(&self, set: SigMask) -> Result<Fd, Errno>;
    /// Reads the pending signals from `fd`, waiting at most `timeout` (for
    /// ever when None); an empty list means the time ran out.
    fn read_signals(&self, fd: Fd, timeout: Option<Duration>) -> Result<Vec<Received>, Errno>;
    /// Whether a proc filesystem is mounted at `path`.
    fn is_proc(&self, path: &CStr) -> Result<bool, Errno>;
    fn mount_proc(&self, path: &CStr) -> Result<(), Errno>;
    /// Whether the caller is marked a child subreaper (a parent may have
    /// marked it before exec'ing it: the mark survives exec).
    fn is_child_subreaper(&self) -> Result<bool, Errno>;
    fn set_child_subreaper(&self, on: bool) -> Result<(), Errno>;
    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno>;
    /// A close-on-exec pipe: (read end, write end).
    fn pipe(&self) -> Result<(Fd, Fd), Errno>;
    /// Reads up to `buf.len()` bytes; 0 at end of file.
    fn read(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno>;
    fn write(&self, fd: Fd, buf: &[u8]) -> Result<usize, Errno>;
    fn close(&self, fd: Fd);
    fn fork(&self) -> Result<Fork, Errno>;
    fn setpgid_self(&self) -> Result<(), Errno>;
    fn setsid(&self) -> Result<(), Errno>;
    /// The caller's session id.
    fn getsid(&self) -> Pid;
    /// Gives up the controlling terminal on `fd` (TIOCNOTTY); as the session
    /// leader, for the whole session.
    fn detach_controlling_tty(&self, fd: Fd) -> Result<(), Errno>;
    /// The current directory, opened for [`Sys::fchdir`] (close-on-exec).
    fn open_cwd(&self) -> Result<Fd, Errno>;
    fn chdir(&self, path: &CStr) -> Result<(), Errno>;
    fn fchdir(&self, fd: Fd) -> Result<(), Errno>;
    fn isatty(&self, fd: Fd) -> bool;
    fn tcsetpgrp(&self, fd: Fd, pgrp: Pid) -> Result<(), Errno>;
    fn tcgetpgrp(&self, fd: Fd) -> Result<Pid, Errno>;
    /// Makes the terminal on `fd` the caller's controlling terminal.
    fn set_controlling_tty(&self, fd: Fd) -> Result<(), Errno>;
    /// Replaces the process with `argv`, its program looked up on `PATH`
    /// when it has no `/`, a file without `#!` run by `/bin/sh`; returns
    /// only on failure. Allocates nothing.
    fn execvp(&self, argv: &Argv<'_>) -> Errno;
    /// Ends a forked child at once, without running any destructor.
    fn exit_child(&self, code: i32) -> !;
    /// Reaps one ended child without waiting; None when none has ended.
    fn reap_one(&self) -> Result<Option<(Pid, Status)>, Errno>;
    /// The signal that stopped child `pid`, if it stopped since last asked;
    /// never reaps it.
    fn stopped(&self, pid: Pid) -> Option<i32>;
    fn getpgrp(&self) -> Pid;
    fn kill(&self, pid: Pid, sig: i32) -> Result<(), Errno>;
    /// Every process below the caller, for signalling them when `kill(-1)`
    /// would reach too far (the init is not PID 1).
    fn descendants(&self) -> Vec<Pid>;
    /// A monotonic clock.
    fn now(&self) -> Duration;
    fn log(&self, stream: Stream, line: &str);
}

/// The real kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Linux;

fn check(ret: libc::c_long) -> Result<libc::c_long, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

fn check_int(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// The kernel's struct sigaction (x86_64 and aarch64 layout), for the raw
/// syscall: the C libraries refuse the signals they reserve (32-34).
#[derive(Default)]
#[repr(C)]
struct KernelSigaction {
    handler: libc::c_ulong,
    flags: libc::c_ulong,
    restorer: libc::c_ulong,
    mask: u64,
}

/// execve(2) of `path` with `argv`'s arguments and the process environment;
/// a file the kernel refuses as no executable format (ENOEXEC: a script
/// without `#!`) is run by `/bin/sh`, as execvp(3) does. Returns only the
/// error.
fn execve_or_sh(path: &CStr, argv: &Argv<'_>) -> Errno {
    // SAFETY: null-terminated arrays of pointers to C strings that outlive
    // the call; environ is the process environment.
    unsafe { libc::execve(path.as_ptr(), argv.ptrs.as_ptr(), environ) };
    let err = Errno::last();
    if err != Errno::ENOEXEC {
        return err;
    }
    argv.script[1].set(path.as_ptr());
    // SAFETY: Cell<*const c_char> has the layout of *const c_char, so the
    // cells are a null-terminated array of pointers to C strings that
    // outlive the call.
    unsafe {
        libc::execve(
            SHELL.as_ptr(),
            argv.script.as_ptr().cast::<*const libc::c_char>(),
            environ,
        )
    };
    Errno::last()
}

unsafe extern "C" {
    /// The process environment, as the C runtime keeps it.
    static environ: *const *const libc::c_char;
}

/// The kernel's sigset is 64 bits on every Linux architecture this builds
/// for; rt_sigprocmask and signalfd4 take it directly with size 8, which
/// spares building a libc `sigset_t` (128 bytes on musl) signal by signal.
const KERNEL_SIGSET_SIZE: libc::size_t = 8;

impl Sys for Linux {
    fn getpid(&self) -> Pid {
        // SAFETY: getpid has no preconditions.
        unsafe { libc::getpid() }
    }

    fn block_signals(&self, set: SigMask) -> Result<SigMask, Errno> {
        let mut old = 0u64;
        // SAFETY: both pointers are to live u64s, the size the kernel expects.
        check(unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_BLOCK,
                &set.0 as *const u64,
                &mut old as *mut u64,
                KERNEL_SIGSET_SIZE,
            )
        })?;
        Ok(SigMask(old))
    }

    fn set_signal_mask(&self, set: SigMask) -> Result<(), Errno> {
        // SAFETY: as in block_signals; no old mask is asked for.
        check(unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &set.0 as *const u64,
                core::ptr::null_mut::<u64>(),
                KERNEL_SIGSET_SIZE,
            )
        })
        .map(drop)
    }

    fn is_ignored(&self, sig: i32) -> bool {
        let mut old = KernelSigaction::default();
        // SAFETY: a live struct of the kernel's layout and size; no new
        // action is given.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                core::ptr::null::<KernelSigaction>(),
                &mut old as *mut KernelSigaction,
                KERNEL_SIGSET_SIZE,
            )
        };
        rc == 0 && old.handler == libc::SIG_IGN as libc::c_ulong
    }

    fn set_ignored(&self, sig: i32, ignored: bool) -> Result<(), Errno> {
        let handler = if ignored {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        let action = KernelSigaction {
            handler: handler as libc::c_ulong,
            ..KernelSigaction::default()
        };
        // SAFETY: a live struct of the kernel's layout and size; no old
        // action is asked for.
        check(unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &action as *const KernelSigaction,
                core::ptr::null_mut::<KernelSigaction>(),
                KERNEL_SIGSET_SIZE,
            )
        })
        .map(drop)
    }

    fn take_pending(&self, set: SigMask) -> SigMask {
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let mut taken = SigMask(0);
        loop {
            // SAFETY: the set is a live u64 of the kernel's size, the
            // timeout a live timespec; no siginfo is asked for.
            let sig = unsafe {
                libc::syscall(
                    libc::SYS_rt_sigtimedwait,
                    &set.0 as *const u64,
                    core::ptr::null_mut::<libc::siginfo_t>(),
                    &zero as *const libc::timespec,
                    KERNEL_SIGSET_SIZE,
                )
            };
            match sig {
                1..=64 => taken.0 |= 1 << (sig - 1),
                _ => return taken,
            }
        }
    }

    fn signalfd(&self, set: SigMask) -> Result<Fd, Errno> {
        // SAFETY: the mask pointer is to a live u64 of the kernel's size.
        check(unsafe {
            libc::syscall(
                libc::SYS_signalfd4,
                -1,
                &set.0 as *const u64,
                KERNEL_SIGSET_SIZE,
                libc::SFD_CLOEXEC,
            )
        })
        .map(|fd| fd as Fd)
    }

    fn read_signals(&self, fd: Fd, timeout: Option<Duration>) -> Result<Vec<Received>, Errno> {
        if let Some(timeout) = timeout {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
            // SAFETY: one live pollfd.
            if check_int(unsafe { libc::poll(&mut pfd, 1, ms) })? == 0 {
                return Ok(Vec::new());
            }
        }
        const N: usize = 16;
        // SAFETY: signalfd_siginfo is plain data; all zeroes is valid.
        let mut infos: [libc::signalfd_siginfo; N] = unsafe { core::mem::zeroed() };
        let size = core::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: the buffer is N live records of the size the kernel writes.
        let n =
            check(unsafe { libc::read(fd, infos.as_mut_ptr().cast(), N * size) as libc::c_long })?
                as usize;
        Ok(infos[..n / size]
            .iter()
            .map(|i| Received {
                signo: i.ssi_signo as i32,
                pid: i.ssi_pid as Pid,
            })
            .collect())
    }

    fn is_proc(&self, path: &CStr) -> Result<bool, Errno> {
        // SAFETY: statfs is plain data; the kernel fills it.
        let mut st: libc::statfs = unsafe { core::mem::zeroed() };
        // SAFETY: a valid C string and a live statfs.
        check_int(unsafe { libc::statfs(path.as_ptr(), &mut st) })?;
        // f_type is i64 on glibc and u64 on musl; the magic fits both.
        #[allow(clippy::unnecessary_cast)]
        Ok(st.f_type as i64 == libc::PROC_SUPER_MAGIC as i64)
    }

    fn mount_proc(&self, path: &CStr) -> Result<(), Errno> {
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        // SAFETY: valid C strings; no data argument.
        check_int(unsafe {
            libc::mount(
                c"proc".as_ptr(),
                path.as_ptr(),
                c"proc".as_ptr(),
                flags,
                core::ptr::null(),
            )
        })
        .map(drop)
    }

    fn is_child_subreaper(&self) -> Result<bool, Errno> {
        let mut on: libc::c_int = 0;
        // SAFETY: PR_GET_CHILD_SUBREAPER writes an int through the pointer.
        check_int(unsafe {
            libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut on as *mut libc::c_int)
        })?;
        Ok(on != 0)
    }

    fn set_child_subreaper(&self, on: bool) -> Result<(), Errno> {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument.
        check_int(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, on as libc::c_ulong) })
            .map(drop)
    }

    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno> {
        // SAFETY: PR_SET_PDEATHSIG takes one integer argument.
        check_int(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) }).map(drop)
    }

    fn pipe(&self) -> Result<(Fd, Fd), Errno> {
        let mut fds = [0; 2];
        // SAFETY: a live array of two ints.
        check_int(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
        Ok((fds[0], fds[1]))
    }

    fn read(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
        loop {
            // SAFETY: a live buffer of the given length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            match check(n as libc::c_long) {
                Err(Errno::EINTR) => continue,
                other => return other.map(|n| n as usize),
            }
        }
    }

    fn write(&self, fd: Fd, buf: &[u8]) -> Result<usize, Errno> {
        // SAFETY: a live buffer of the given length.
        check(unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) as libc::c_long })
            .map(|n| n as usize)
    }

    fn close(&self, fd: Fd) {
        // SAFETY: closing an fd the init owns; errors do not matter here.
        unsafe { libc::close(fd) };
    }

    fn fork(&self) -> Result<Fork, Errno> {
        // SAFETY: the child only makes system calls (no allocation, no
        // lock: an embedding runtime may have other threads) until it
        // execs or _exits; see spawn::workload.
        match check_int(unsafe { libc::fork() })? {
            0 => Ok(Fork::Child),
            pid => Ok(Fork::Parent(pid)),
        }
    }

    fn setpgid_self(&self) -> Result<(), Errno> {
        // SAFETY: no pointers.
        check_int(unsafe { libc::setpgid(0, 0) }).map(drop)
    }

    fn setsid(&self) -> Result<(), Errno> {
        // SAFETY: no pointers.
        check_int(unsafe { libc::setsid() }).map(drop)
    }

    fn getsid(&self) -> Pid {
        // SAFETY: no pointers.
        unsafe { libc::getsid(0) }
    }

    fn detach_controlling_tty(&self, fd: Fd) -> Result<(), Errno> {
        // SAFETY: TIOCNOTTY takes no argument.
        check_int(unsafe { libc::ioctl(fd, libc::TIOCNOTTY) }).map(drop)
    }

    fn open_cwd(&self) -> Result<Fd, Errno> {
        // O_PATH: needs no read permission on the directory.
        // SAFETY: a valid C string.
        check_int(unsafe {
            libc::open(
                c".".as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
    }

    fn chdir(&self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: a valid C string.
        check_int(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
    }

    fn fchdir(&self, fd: Fd) -> Result<(), Errno> {
        // SAFETY: no pointers.
        check_int(unsafe { libc::fchdir(fd) }).map(drop)
    }

    fn isatty(&self, fd: Fd) -> bool {
        // SAFETY: no pointers.
        unsafe { libc::isatty(fd) == 1 }
    }

    fn tcsetpgrp(&self, fd: Fd, pgrp: Pid) -> Result<(), Errno> {
        // SAFETY: no pointers.
        check_int(unsafe { libc::tcsetpgrp(fd, pgrp) }).map(drop)
    }

    fn tcgetpgrp(&self, fd: Fd) -> Result<Pid, Errno> {
        // SAFETY: no pointers.
        check_int(unsafe { libc::tcgetpgrp(fd) })
    }

    fn set_controlling_tty(&self, fd: Fd) -> Result<(), Errno> {
        // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
        check_int(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
    }

    fn execvp(&self, argv: &Argv<'_>) -> Errno {
        let Some(prog) = argv.strings.first() else {
            return Errno::ENOENT;
        };
        let name = prog.to_bytes();
        if name.is_empty() {
            return Errno::ENOENT;
        }
        if name.contains(&b'/') {
            return execve_or_sh(prog, argv);
        }
        // The search of execvp(3), written out so that the static (musl) and
        // a glibc build behave the same: musl's execvp returns ENOEXEC for a
        // file without `#!` where glibc's runs it with /bin/sh.
        let mut buf = [0u8; libc::PATH_MAX as usize + 1];
        let mut denied = false;
        for dir in argv.search.to_bytes().split(|b| *b == b':') {
            // An empty entry is the current directory.
            let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
            let len = dir.len() + 1 + name.len();
            if len >= buf.len() {
                continue;
            }
            buf[..dir.len()].copy_from_slice(dir);
            buf[dir.len()] = b'/';
            buf[dir.len() + 1..len].copy_from_slice(name);
            buf[len] = 0;
            let Ok(path) = CStr::from_bytes_with_nul(&buf[..=len]) else {
                continue;
            };
            match execve_or_sh(path, argv) {
                // Not here: on to the next entry (glibc's list).
                Errno(
                    libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT,
                ) => {}
                // Found but not executable: remember it, keep looking.
                Errno::EACCES => denied = true,
                err => return err,
            }
        }
        if denied { Errno::EACCES } else { Errno::ENOENT }
    }

    fn exit_child(&self, code: i32) -> ! {
        // SAFETY: _exit never returns and runs nothing of the parent's.
        unsafe { libc::_exit(code) }
    }

    fn reap_one(&self) -> Result<Option<(Pid, Status)>, Errno> {
        let mut raw = 0;
        // SAFETY: a live int for the status.
        match check_int(unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) })? {
            0 => Ok(None),
            pid if libc::WIFSIGNALED(raw) => Ok(Some((pid, Status::Signaled(libc::WTERMSIG(raw))))),
            pid => Ok(Some((pid, Status::Exited(libc::WEXITSTATUS(raw))))),
        }
    }

    fn stopped(&self, pid: Pid) -> Option<i32> {
        // SAFETY: siginfo_t is plain data; all zeroes is valid.
        let mut info: libc::siginfo_t = unsafe { core::mem::zeroed() };
        // WSTOPPED without WEXITED: reports a stop, never an exit, so this
        // reaps nothing.
        // SAFETY: a live siginfo_t.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WNOHANG,
            )
        };
        // SAFETY: waitid filled the fields of a CLD_STOPPED record, or left
        // si_pid zero when nothing stopped.
        (rc == 0 && unsafe { info.si_pid() } != 0).then(|| unsafe { info.si_status() })
    }

    fn getpgrp(&self) -> Pid {
        // SAFETY: no preconditions.
        unsafe { libc::getpgrp() }
    }

    fn kill(&self, pid: Pid, sig: i32) -> Result<(), Errno> {
        // SAFETY: no pointers.
        check_int(unsafe { libc::kill(pid, sig) }).map(drop)
    }

    fn descendants(&self) -> Vec<Pid> {
        descendants_of(self.getpid())
    }

    fn now(&self) -> Duration {
        // SAFETY: timespec is plain data; all zeroes is valid.
        let mut ts: libc::timespec = unsafe { core::mem::zeroed() };
        // SAFETY: a live timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn log(&self, stream: Stream, line: &str) {
        let fd = match stream {
            Stream::Stdout => libc::STDOUT_FILENO,
            Stream::Stderr => libc::STDERR_FILENO,
        };
        // One write per line, so lines from the init and its workload do not
        // interleave mid-line; a failed write has nowhere else to go.
        let _ = self.write(fd, line.as_bytes());
    }
}

/// Every process whose chain of parents leads to `root`, read from /proc.
fn descendants_of(root: Pid) -> Vec<Pid> {
    let parents = all_parents();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == p)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// (pid, parent pid) of every process in /proc.
fn all_parents() -> Vec<(Pid, Pid)> {
    // SAFETY: a valid C string.
    let dir = unsafe { libc::opendir(c"/proc".as_ptr()) };
    if dir.is_null() {
        return Vec::new();
    }
    let mut out = Vec::new();
    loop {
        // SAFETY: dir is open; readdir returns null at the end.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the entry.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        let pid = core::str::from_utf8(name.to_bytes())
            .ok()
            .and_then(|n| n.parse::<Pid>().ok());
        if let Some((pid, parent)) = pid.and_then(|pid| Some((pid, parent_of(pid)?))) {
            out.push((pid, parent));
        }
    }
    // SAFETY: dir is open and closed once.
    unsafe { libc::closedir(dir) };
    out
}

/// The parent pid from `/proc/PID/stat`: the field after the command name,
/// which is in parentheses and may itself contain spaces and parentheses.
fn parent_of(pid: Pid) -> Option<Pid> {
    let path = CString::new(format!("/proc/{pid}/stat")).ok()?;
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // The command name is at most 64 bytes, so the parent pid is well
    // within the first 512.
    let mut buf = [0u8; 512];
    let n = Linux.read(fd, &mut buf).unwrap_or(0);
    Linux.close(fd);
    let stat = &buf[..n];
    let after = &stat[stat.iter().rposition(|b| *b == b')')? + 1..];
    let text = core::str::from_utf8(after).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}
