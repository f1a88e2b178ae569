//! Signals step: block them all before the fork, read them from a signalfd,
//! and pass each on to the workload (or its process group), rewritten as
//! asked.

use crate::log::log;
use crate::personality::Personality;
use crate::prelude::*;
use crate::sys::{Fd, Pid, SigMask, Sys};
use crate::{Error, Init};

/// Blocks every signal and returns the mask to restore in the child.
///
/// Fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE…) are blocked too, unlike
/// tini: a real fault in the init still kills it, because the kernel
/// unblocks and resets a fault signal it must deliver (force_sig_fault in
/// kernel/signal.c), while one sent with kill(2) waits in the signalfd and
/// is forwarded like any other.
pub fn block_all(sys: &impl Sys) -> Result<SigMask, Error> {
    sys.block_signals(SigMask::ALL)
        .map_err(|source| Error::BlockSignals { source })
}

/// The signalfd every blocked signal is read from.
pub fn open_fd(sys: &impl Sys) -> Result<Fd, Error> {
    sys.signalfd(SigMask::ALL)
        .map_err(|source| Error::SignalFd { source })
}

/// Sets SIGCHLD to its default when the caller left it ignored (with it
/// ignored, the kernel reaps children unasked and the workload's status is
/// lost); returns whether it was, for the workload to get it back.
pub fn default_sigchld(sys: &impl Sys) -> bool {
    if !sys.is_ignored(libc::SIGCHLD) {
        return false;
    }
    let _ = sys.set_ignored(libc::SIGCHLD, false);
    true
}

/// Where signals for the workload `child` go: its process group when asked
/// (`-g`) or when it leads a session of its own (dumb-init), else itself.
pub fn target(init: &Init, child: Pid) -> Pid {
    if init.forward_to_group || init.new_session {
        -child
    } else {
        child
    }
}

/// The signal to send for `sig` after `-r` rewrites; None drops it.
pub fn rewrite(init: &Init, sig: i32) -> Option<i32> {
    let to = init
        .rewrites
        .iter()
        .rev()
        .find(|(from, _)| *from == sig)
        .map_or(sig, |(_, to)| *to);
    (to != 0).then_some(to)
}

/// Passes `sig` on to the workload, logging (never failing) when it cannot.
pub fn forward(sys: &impl Sys, init: &Init, child: Pid, sig: i32) {
    forward_to(sys, init, Some(target(init, child)), sig);
}

/// Passes `sig`, rewritten, to `to` (a pid, or a group as `-pgid`); with
/// None, only logs what it would do (dumb-init's SIGTERM on exit in
/// single-child mode, where the workload's pid may be another's already).
pub fn forward_to(sys: &impl Sys, init: &Init, to: Option<Pid>, sig: i32) {
    let dumb_init = init.personality == Personality::DumbInit;
    if dumb_init && let Some((_, to)) = init.rewrites.iter().rev().find(|(f, _)| *f == sig) {
        log!(sys, init, Debug, "Translating signal {sig} to {to}.");
    }
    let Some(sig) = rewrite(init, sig) else {
        if dumb_init {
            // dumb-init prints the signal it would send: 0.
            log!(
                sys,
                init,
                Debug,
                "Not forwarding signal 0 to children (ignored)."
            );
        } else {
            log!(
                sys,
                init,
                Debug,
                "not forwarding {}: rewritten to 0",
                name(sig)
            );
        }
        return;
    };
    match (init.personality, to) {
        (Personality::Tini, _) => log!(sys, init, Debug, "Passing signal: '{}'", Describe(sig)),
        (Personality::DumbInit, _) | (_, None) => {}
        (_, Some(to)) => log!(sys, init, Debug, "forwarding {} to {to}", name(sig)),
    }
    let sent = match to {
        Some(to) => sys.kill(to, sig),
        None => Ok(()),
    };
    match sent {
        // dumb-init says so whatever kill(2) answered.
        _ if dumb_init => log!(sys, init, Debug, "Forwarded signal {sig} to children."),
        Ok(()) => {}
        // The workload is gone and its SIGCHLD is on its way.
        Err(crate::errno::Errno::ESRCH) if init.personality == Personality::Tini => {
            log!(sys, init, Warn, "Child was dead when forwarding signal")
        }
        Err(crate::errno::Errno::ESRCH) => {}
        Err(err) => log!(
            sys,
            init,
            Warn,
            "forwarding {} to {}: {err}",
            name(sig),
            to.unwrap_or_default()
        ),
    }
}

/// What glibc's strsignal(3) says, which tini prints: `Terminated` for 15.
pub struct Describe(pub i32);

impl core::fmt::Display for Describe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let sig = self.0;
        match usize::try_from(sig)
            .ok()
            .and_then(|s| DESCRIPTIONS.get(s.wrapping_sub(1)))
        {
            Some(d) => f.write_str(d),
            // glibc numbers its real-time signals from its SIGRTMIN, 34.
            None if (34..=64).contains(&sig) => write!(f, "Real-time signal {}", sig - 34),
            None => write!(f, "Unknown signal {sig}"),
        }
    }
}

const DESCRIPTIONS: [&str; 31] = [
    "Hangup",
    "Interrupt",
    "Quit",
    "Illegal instruction",
    "Trace/breakpoint trap",
    "Aborted",
    "Bus error",
    "Floating point exception",
    "Killed",
    "User defined signal 1",
    "Segmentation fault",
    "User defined signal 2",
    "Broken pipe",
    "Alarm clock",
    "Terminated",
    "Stack fault",
    "Child exited",
    "Continued",
    "Stopped (signal)",
    "Stopped",
    "Stopped (tty input)",
    "Stopped (tty output)",
    "Urgent I/O condition",
    "CPU time limit exceeded",
    "File size limit exceeded",
    "Virtual timer expired",
    "Profiling timer expired",
    "Window changed",
    "I/O possible",
    "Power failure",
    "Bad system call",
];

const NAMES: [&str; 31] = [
    "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
    "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
    "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
];

/// `SIGTERM` for 15, `SIG34` past the named ones.
pub fn name(sig: i32) -> String {
    match usize::try_from(sig)
        .ok()
        .and_then(|s| NAMES.get(s.wrapping_sub(1)))
    {
        Some(n) => format!("SIG{n}"),
        None => format!("SIG{sig}"),
    }
}

/// A signal from its name (`SIGTERM`, `TERM`, any case) or number.
pub fn parse(text: &str) -> Option<i32> {
    if let Ok(n) = text.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(|i| i as i32 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_parses_signals() {
        assert_eq!(name(15), "SIGTERM");
        assert_eq!(name(1), "SIGHUP");
        assert_eq!(name(31), "SIGSYS");
        assert_eq!(name(40), "SIG40");
        for (text, want) in [
            ("SIGKILL", Some(9)),
            ("term", Some(15)),
            ("SIGUSR1", Some(10)),
            ("15", Some(15)),
            ("64", Some(64)),
            ("65", None),
            ("0", None),
            ("SIGNOPE", None),
        ] {
            assert_eq!(parse(text), want, "{text}");
        }
    }

    #[test]
    fn rewrites_and_drops_signals() {
        let init = Init::new(["x"]).rewrite(15, 2).rewrite(1, 0);
        assert_eq!(rewrite(&init, 15), Some(2));
        assert_eq!(rewrite(&init, 1), None);
        assert_eq!(rewrite(&init, 10), Some(10));
    }

    #[test]
    fn targets_group_with_g_or_session() {
        assert_eq!(target(&Init::new(["x"]), 7), 7);
        assert_eq!(target(&Init::new(["x"]).forward_to_group(true), 7), -7);
        assert_eq!(target(&Init::new(["x"]).new_session(true), 7), -7);
    }
}
