//! A fake [`Sys`] for unit tests: answers from scripted queues and records
//! one ordered list of the calls made.

use crate::errno::Errno;
use crate::prelude::*;
use crate::sys::{Argv, Fd, Fork, Pid, Received, SigMask, Status, Stream, Sys};
use alloc::collections::VecDeque;
use core::cell::RefCell;
use core::ffi::CStr;
use core::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Block(SigMask),
    SetMask(SigMask),
    IsIgnored(i32),
    SetIgnored(i32, bool),
    TakePending(SigMask),
    SignalFd(SigMask),
    ReadSignals(Option<Duration>),
    IsProc(String),
    MountProc(String),
    IsSubreaper,
    Subreaper(bool),
    DeathSignal(i32),
    Pipe,
    Read(Fd),
    Write(Fd),
    Close(Fd),
    Fork,
    Setpgid,
    Setsid,
    DetachTty(Fd),
    OpenCwd,
    Chdir(String),
    Fchdir(Fd),
    Isatty(Fd),
    Tcsetpgrp(Fd, Pid),
    SetCtty(Fd),
    Exec(Vec<String>),
    Reap,
    Stopped(Pid),
    Kill(Pid, i32),
    Log(String),
}

#[derive(Default)]
pub struct Fake {
    pid: Pid,
    proc_mounted: bool,
    tty: bool,
    session: Pid,
    subreaper: bool,
    sigchld_ignored: bool,
    pending: RefCell<SigMask>,
    fork: Option<Pid>,
    pipe_bytes: Vec<u8>,
    stop_signal: RefCell<Option<i32>>,
    reaps: RefCell<VecDeque<Option<(Pid, Status)>>>,
    signals: RefCell<VecDeque<Vec<Received>>>,
    calls: RefCell<Vec<Call>>,
}

impl Fake {
    pub fn new() -> Fake {
        Fake {
            pid: 42,
            ..Fake::default()
        }
    }
    pub fn pid(mut self, pid: Pid) -> Fake {
        self.pid = pid;
        self
    }
    pub fn proc_mounted(mut self, yes: bool) -> Fake {
        self.proc_mounted = yes;
        self
    }
    pub fn tty(mut self, yes: bool) -> Fake {
        self.tty = yes;
        self
    }
    /// The session id `getsid` answers.
    pub fn session(mut self, sid: Pid) -> Fake {
        self.session = sid;
        self
    }
    /// Whether the process is marked a child subreaper already.
    pub fn subreaper(mut self, yes: bool) -> Fake {
        self.subreaper = yes;
        self
    }
    pub fn sigchld_ignored(mut self, yes: bool) -> Fake {
        self.sigchld_ignored = yes;
        self
    }
    /// Signals pending for `take_pending`.
    pub fn pending(self, set: SigMask) -> Fake {
        *self.pending.borrow_mut() = set;
        self
    }
    pub fn fork_parent(mut self, child: Pid) -> Fake {
        self.fork = Some(child);
        self
    }
    /// What `stopped` answers, once.
    pub fn stopped_by(self, sig: i32) -> Fake {
        *self.stop_signal.borrow_mut() = Some(sig);
        self
    }
    pub fn pipe_bytes(mut self, bytes: Vec<u8>) -> Fake {
        self.pipe_bytes = bytes;
        self
    }
    /// What successive waitpid calls find; ECHILD once these run out.
    pub fn reaps(self, reaps: impl IntoIterator<Item = Option<(Pid, Status)>>) -> Fake {
        self.reaps.borrow_mut().extend(reaps);
        self
    }
    /// What successive signalfd reads return.
    pub fn signals(self, batches: impl IntoIterator<Item = Vec<Received>>) -> Fake {
        self.signals.borrow_mut().extend(batches);
        self
    }
    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }
    fn record(&self, call: Call) {
        self.calls.borrow_mut().push(call);
    }
}

impl Sys for Fake {
    fn getpid(&self) -> Pid {
        self.pid
    }
    fn block_signals(&self, set: SigMask) -> Result<SigMask, Errno> {
        self.record(Call::Block(set));
        Ok(SigMask(0))
    }
    fn set_signal_mask(&self, set: SigMask) -> Result<(), Errno> {
        self.record(Call::SetMask(set));
        Ok(())
    }
    fn is_ignored(&self, sig: i32) -> bool {
        self.record(Call::IsIgnored(sig));
        sig == libc::SIGCHLD && self.sigchld_ignored
    }
    fn set_ignored(&self, sig: i32, ignored: bool) -> Result<(), Errno> {
        self.record(Call::SetIgnored(sig, ignored));
        Ok(())
    }
    fn take_pending(&self, set: SigMask) -> SigMask {
        self.record(Call::TakePending(set));
        let mut pending = self.pending.borrow_mut();
        let taken = SigMask(pending.0 & set.0);
        pending.0 &= !set.0;
        taken
    }
    fn signalfd(&self, set: SigMask) -> Result<Fd, Errno> {
        self.record(Call::SignalFd(set));
        Ok(3)
    }
    fn read_signals(&self, _fd: Fd, timeout: Option<Duration>) -> Result<Vec<Received>, Errno> {
        self.record(Call::ReadSignals(timeout));
        match self.signals.borrow_mut().pop_front() {
            Some(batch) => Ok(batch),
            None => panic!(
                "the fake has no more signals; calls so far: {:?}",
                self.calls()
            ),
        }
    }
    fn is_proc(&self, path: &CStr) -> Result<bool, Errno> {
        self.record(Call::IsProc(path.to_string_lossy().into()));
        Ok(self.proc_mounted)
    }
    fn mount_proc(&self, path: &CStr) -> Result<(), Errno> {
        self.record(Call::MountProc(path.to_string_lossy().into()));
        Ok(())
    }
    fn is_child_subreaper(&self) -> Result<bool, Errno> {
        self.record(Call::IsSubreaper);
        Ok(self.subreaper)
    }
    fn set_child_subreaper(&self, on: bool) -> Result<(), Errno> {
        self.record(Call::Subreaper(on));
        Ok(())
    }
    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno> {
        self.record(Call::DeathSignal(sig));
        Ok(())
    }
    fn pipe(&self) -> Result<(Fd, Fd), Errno> {
        self.record(Call::Pipe);
        Ok((10, 11))
    }
    fn read(&self, fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
        self.record(Call::Read(fd));
        let n = self.pipe_bytes.len().min(buf.len());
        buf[..n].copy_from_slice(&self.pipe_bytes[..n]);
        Ok(n)
    }
    fn write(&self, fd: Fd, buf: &[u8]) -> Result<usize, Errno> {
        self.record(Call::Write(fd));
        Ok(buf.len())
    }
    fn close(&self, fd: Fd) {
        self.record(Call::Close(fd));
    }
    fn fork(&self) -> Result<Fork, Errno> {
        self.record(Call::Fork);
        Ok(self.fork.map_or(Fork::Child, Fork::Parent))
    }
    fn setpgid_self(&self) -> Result<(), Errno> {
        self.record(Call::Setpgid);
        Ok(())
    }
    fn setsid(&self) -> Result<(), Errno> {
        self.record(Call::Setsid);
        Ok(())
    }
    fn getsid(&self) -> Pid {
        self.session
    }
    fn detach_controlling_tty(&self, fd: Fd) -> Result<(), Errno> {
        self.record(Call::DetachTty(fd));
        Ok(())
    }
    fn open_cwd(&self) -> Result<Fd, Errno> {
        self.record(Call::OpenCwd);
        Ok(5)
    }
    fn chdir(&self, path: &CStr) -> Result<(), Errno> {
        self.record(Call::Chdir(path.to_string_lossy().into()));
        Ok(())
    }
    fn fchdir(&self, fd: Fd) -> Result<(), Errno> {
        self.record(Call::Fchdir(fd));
        Ok(())
    }
    fn isatty(&self, fd: Fd) -> bool {
        self.record(Call::Isatty(fd));
        self.tty
    }
    fn tcsetpgrp(&self, fd: Fd, pgrp: Pid) -> Result<(), Errno> {
        self.record(Call::Tcsetpgrp(fd, pgrp));
        Ok(())
    }
    fn tcgetpgrp(&self, _fd: Fd) -> Result<Pid, Errno> {
        Ok(self.pid)
    }
    fn set_controlling_tty(&self, fd: Fd) -> Result<(), Errno> {
        self.record(Call::SetCtty(fd));
        Ok(())
    }
    fn execvp(&self, argv: &Argv<'_>) -> Errno {
        self.record(Call::Exec(
            argv.strings()
                .iter()
                .map(|a| a.to_string_lossy().into())
                .collect(),
        ));
        Errno::ENOENT
    }
    fn exit_child(&self, code: i32) -> ! {
        panic!(
            "the fake's child exited with {code}; calls: {:?}",
            self.calls()
        )
    }
    fn reap_one(&self) -> Result<Option<(Pid, Status)>, Errno> {
        self.record(Call::Reap);
        self.reaps.borrow_mut().pop_front().ok_or(Errno::ECHILD)
    }
    fn stopped(&self, pid: Pid) -> Option<i32> {
        self.record(Call::Stopped(pid));
        self.stop_signal.borrow_mut().take()
    }
    fn getpgrp(&self) -> Pid {
        self.pid
    }
    fn kill(&self, pid: Pid, sig: i32) -> Result<(), Errno> {
        self.record(Call::Kill(pid, sig));
        Ok(())
    }
    fn descendants(&self) -> Vec<Pid> {
        vec![]
    }
    fn now(&self) -> Duration {
        Duration::from_secs(100)
    }
    fn log(&self, _stream: Stream, line: &str) {
        self.record(Call::Log(line.into()));
    }
}
