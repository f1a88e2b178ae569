//! Spawn step: fork the workload, give it its process group (or session)
//! and the terminal, restore what the init changed, and exec it. A failed
//! exec comes back to the parent over a close-on-exec pipe.

use crate::errno::Errno;
use crate::log::log;
use crate::personality::Personality;
use crate::sys::{Argv, Fd, Fork, Pid, SigMask, Sys};
use crate::{Error, Init};

/// The started workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child {
    pub pid: Pid,
    /// Why exec failed, when it did; the child then exits with the
    /// personality's code and is reaped like any other.
    pub exec_error: Option<Errno>,
}

/// What the init changed in itself that the workload gets back as the
/// init's caller left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inherited {
    /// The signal mask.
    pub mask: SigMask,
    /// SIGCHLD was ignored: the init needs it at its default to wait for
    /// its children (ignored, the kernel reaps them unasked).
    pub sigchld_ignored: bool,
    /// The caller's directory, when the init left it (see [`leave_cwd`]).
    pub cwd: Option<Fd>,
}

const STDIN: i32 = 0;

/// dumb-init and we move the init to `/`, so that it keeps no directory of
/// the caller's busy (a file system under it could not be unmounted) for
/// as long as the workload runs. The workload still starts there: the
/// directory is opened before the init leaves it and the child goes back
/// into it by that descriptor (fchdir), so it is the very directory the
/// caller was in, even if its path was renamed or replaced meanwhile.
/// Returns the descriptor, or None when the init stays where it is.
pub fn leave_cwd(sys: &impl Sys, init: &Init) -> Option<Fd> {
    if !matches!(
        init.personality,
        Personality::Cradle | Personality::DumbInit
    ) {
        return None;
    }
    let cwd = match sys.open_cwd() {
        Ok(fd) => fd,
        Err(err) => {
            log!(sys, init, Debug, "opening the current directory: {err}");
            return None;
        }
    };
    if let Err(err) = sys.chdir(c"/") {
        log!(
            sys,
            init,
            Debug,
            "Unable to chdir(\"/\") (errno={} {})",
            err.0,
            desc(err)
        );
        sys.close(cwd);
        return None;
    }
    Some(cwd)
}

/// dumb-init's hand-off of the terminal to the workload's session, before
/// the fork: the init gives its controlling terminal up, so that the child,
/// leading a new session, can take it (TIOCSCTTY refuses a terminal that is
/// another session's; without it the workload has no job control and no
/// /dev/tty). When the init leads its session, giving it up sends the
/// terminal's foreground group, the init's own here, SIGHUP and SIGCONT
/// (disassociate_ctty in the kernel's tty_jobctrl.c): those are taken out
/// of the queue at once instead of being forwarded.
pub fn hand_off_tty(sys: &impl Sys, init: &Init) {
    if !init.new_session {
        return;
    }
    let leader = sys.getsid() == sys.getpid();
    if let Err(err) = sys.detach_controlling_tty(STDIN) {
        log!(
            sys,
            init,
            Debug,
            "Unable to detach from controlling tty (errno={} {}).",
            err.0,
            desc(err)
        );
        return;
    }
    if !leader {
        log!(
            sys,
            init,
            Debug,
            "Detached from controlling tty, but was not session leader."
        );
        return;
    }
    log!(
        sys,
        init,
        Debug,
        "Detached from controlling tty, ignoring the first SIGHUP and SIGCONT we receive."
    );
    let hand_off = SigMask(1 << (libc::SIGHUP - 1) | 1 << (libc::SIGCONT - 1));
    let taken = sys.take_pending(hand_off);
    for sig in [libc::SIGHUP, libc::SIGCONT] {
        if taken.contains(sig) {
            log!(sys, init, Debug, "Received signal {sig}.");
            log!(sys, init, Debug, "Ignoring tty hand-off signal {sig}.");
        }
    }
}

/// Forks and execs the workload with what it inherits restored.
pub fn workload(sys: &impl Sys, init: &Init, inherited: Inherited) -> Result<Child, Error> {
    let argv = Argv::new(&init.argv);
    let (rd, wr) = sys.pipe().map_err(|source| Error::Pipe { source })?;
    let pid = match sys.fork() {
        Ok(Fork::Child) => {
            sys.close(rd);
            let err = exec(sys, init, inherited, &argv);
            let _ = sys.write(wr, &err.0.to_ne_bytes());
            sys.exit_child(i32::from(init.personality.exec_failure_code(err)));
        }
        Ok(Fork::Parent(pid)) => pid,
        Err(source) => {
            sys.close(rd);
            sys.close(wr);
            return Err(Error::Fork { source });
        }
    };
    sys.close(wr);
    if init.personality == Personality::DumbInit {
        log!(sys, init, Debug, "Child spawned with PID {pid}.");
    }
    let mut buf = [0u8; 4];
    // End of file: exec closed the pipe, so the workload runs.
    let exec_error = match sys.read(rd, &mut buf) {
        Ok(4) => Some(Errno(i32::from_ne_bytes(buf))),
        _ => None,
    };
    sys.close(rd);
    // tini says it spawned the child before the child says its exec failed.
    match (exec_error, init.personality) {
        (_, Personality::DumbInit) | (Some(_), Personality::Cradle | Personality::Catatonit) => {}
        (None, _) | (Some(_), Personality::Tini) => log!(
            sys,
            init,
            Info,
            "Spawned child process '{}' with pid '{pid}'",
            init.program()
        ),
    }
    if let Some(err) = exec_error {
        report_exec_failure(sys, init, err);
    }
    Ok(Child { pid, exec_error })
}

/// In the child: detach into its own process group or session, take the
/// terminal, give back what the init changed, and exec. Returns only the
/// error of a failed exec. `argv` is `init`'s, made before the fork; nothing
/// here allocates.
pub fn exec(sys: &impl Sys, init: &Init, inherited: Inherited, argv: &Argv<'_>) -> Errno {
    let mut no_tty = false;
    if init.new_session {
        // dumb-init: a session of its own, with the terminal the init gave
        // up (hand_off_tty) as its controlling one.
        let _ = sys.setsid();
        if let Err(err) = sys.set_controlling_tty(STDIN) {
            log!(
                sys,
                init,
                Debug,
                "Unable to attach to controlling tty (errno={} {}).",
                err.0,
                desc(err)
            );
        }
        log!(sys, init, Debug, "setsid complete.");
    } else if init.own_group {
        // tini's isolate_child: a group of its own, made the terminal's
        // foreground group so Ctrl-C reaches it and reading the terminal does
        // not stop it with SIGTTIN. SIGTTOU is still blocked here, so the
        // kernel lets this background process change the foreground.
        let _ = sys.setpgid_self();
        if sys.isatty(STDIN) {
            let _ = sys.tcsetpgrp(STDIN, sys.getpid());
        } else {
            no_tty = true;
        }
    }
    if let Some(cwd) = inherited.cwd
        && let Err(err) = sys.fchdir(cwd)
    {
        return err;
    }
    // Other dispositions are the caller's: exec resets caught signals to
    // their default and keeps ignored ones ignored, as tini and dumb-init
    // leave them (a workload started under `nohup` keeps SIGHUP ignored).
    if inherited.sigchld_ignored {
        let _ = sys.set_ignored(libc::SIGCHLD, true);
    }
    if let Err(err) = sys.set_signal_mask(inherited.mask) {
        return err;
    }
    let err = sys.execvp(argv);
    // tini's child says this into its stdio buffer, which only a failed
    // exec lives to flush (at exit).
    if no_tty && init.personality == Personality::Tini {
        log!(sys, init, Debug, "tcsetpgrp failed: no tty (ok to proceed)");
    }
    err
}

/// An errno's description, as a `str` that needs no allocation.
fn desc(err: Errno) -> &'static str {
    core::str::from_utf8(err.strerror()).unwrap_or_default()
}

/// Logs a failed exec, in the words of the personality.
fn report_exec_failure(sys: &impl Sys, init: &Init, err: Errno) {
    let program = init.program();
    match init.personality {
        Personality::Tini => log!(sys, init, Error, "exec {program} failed: {}", err.desc()),
        Personality::DumbInit => log!(sys, init, Error, "{program}: {}", err.desc()),
        Personality::Catatonit => log!(sys, init, Error, "failed to exec pid1: {}", err.desc()),
        Personality::Cradle => log!(sys, init, Error, "exec `{program}`: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    /// What the caller gave: a mask, SIGCHLD at its default, its directory.
    fn inherited(mask: SigMask) -> Inherited {
        Inherited {
            mask,
            sigchld_ignored: false,
            cwd: Some(5),
        }
    }

    #[test]
    fn child_takes_group_and_terminal_then_restores_mask() {
        let fake = Fake::new().pid(42).tty(true);
        let init = Init::new(["sh", "-c", "true"]);
        let err = exec(
            &fake,
            &init,
            inherited(SigMask(0b100)),
            &Argv::new(&init.argv),
        );
        assert_eq!(err, Errno::ENOENT);
        assert_eq!(
            fake.calls(),
            [
                Call::Setpgid,
                Call::Isatty(0),
                Call::Tcsetpgrp(0, 42),
                Call::Fchdir(5),
                Call::SetMask(SigMask(0b100)),
                Call::Exec(alloc::vec!["sh".into(), "-c".into(), "true".into()]),
            ]
        );
    }

    #[test]
    fn child_gets_an_ignored_sigchld_back() {
        let fake = Fake::new();
        let init = Init::new(["x"]).own_group(false);
        let given = Inherited {
            mask: SigMask(0),
            sigchld_ignored: true,
            cwd: None,
        };
        exec(&fake, &init, given, &Argv::new(&init.argv));
        assert_eq!(
            fake.calls(),
            [
                Call::SetIgnored(libc::SIGCHLD, true),
                Call::SetMask(SigMask(0)),
                Call::Exec(alloc::vec!["x".into()]),
            ]
        );
    }

    #[test]
    fn dumb_init_child_leads_a_session_with_the_terminal() {
        let fake = Fake::new().pid(42).tty(true);
        let init = Init::new(["x"]).personality(Personality::DumbInit);
        exec(&fake, &init, inherited(SigMask(0)), &Argv::new(&init.argv));
        assert_eq!(
            fake.calls(),
            [
                Call::Setsid,
                Call::SetCtty(0),
                Call::Fchdir(5),
                Call::SetMask(SigMask(0)),
                Call::Exec(alloc::vec!["x".into()]),
            ]
        );
    }

    #[test]
    fn dumb_init_gives_up_the_terminal_and_drops_the_hand_off_signals() {
        let hup_cont = SigMask(1 << (libc::SIGHUP - 1) | 1 << (libc::SIGCONT - 1));
        let init = Init::new(["x"])
            .personality(Personality::DumbInit)
            .verbosity(3);
        let fake = Fake::new().pid(42).session(42).pending(hup_cont);
        hand_off_tty(&fake, &init);
        assert_eq!(
            fake.calls(),
            [
                Call::DetachTty(0),
                Call::Log(
                    "[dumb-init] Detached from controlling tty, ignoring the first SIGHUP and SIGCONT we receive.\n"
                        .into()
                ),
                Call::TakePending(hup_cont),
                Call::Log("[dumb-init] Received signal 1.\n".into()),
                Call::Log("[dumb-init] Ignoring tty hand-off signal 1.\n".into()),
                Call::Log("[dumb-init] Received signal 18.\n".into()),
                Call::Log("[dumb-init] Ignoring tty hand-off signal 18.\n".into()),
            ]
        );
        // Not the session leader: nothing is sent, nothing is taken.
        let fake = Fake::new().pid(42).session(7).pending(hup_cont);
        hand_off_tty(&fake, &init.clone().verbosity(0));
        assert_eq!(fake.calls(), [Call::DetachTty(0)]);
        // tini and ours keep their terminal.
        let fake = Fake::new().pid(42).session(42);
        hand_off_tty(&fake, &Init::new(["x"]));
        assert_eq!(fake.calls(), []);
    }

    #[test]
    fn leaves_the_callers_directory_as_dumb_init_and_ours_only() {
        for (personality, leaves) in [
            (Personality::Cradle, true),
            (Personality::DumbInit, true),
            (Personality::Tini, false),
            (Personality::Catatonit, false),
        ] {
            let fake = Fake::new();
            let cwd = leave_cwd(&fake, &Init::new(["x"]).personality(personality));
            if leaves {
                assert_eq!(cwd, Some(5), "{personality:?}");
                assert_eq!(fake.calls(), [Call::OpenCwd, Call::Chdir("/".into())]);
            } else {
                assert_eq!(
                    (cwd, fake.calls()),
                    (None, alloc::vec![]),
                    "{personality:?}"
                );
            }
        }
    }

    #[test]
    fn parent_learns_exec_failure_from_the_pipe() {
        let fake = Fake::new()
            .fork_parent(42)
            .pipe_bytes(Errno::EACCES.0.to_ne_bytes().to_vec());
        let init = Init::new(["./x"]).verbosity(0);
        let child = workload(&fake, &init, inherited(SigMask(0))).unwrap();
        assert_eq!(
            child,
            Child {
                pid: 42,
                exec_error: Some(Errno::EACCES)
            }
        );
        assert_eq!(
            fake.calls(),
            [
                Call::Pipe,
                Call::Fork,
                Call::Close(11),
                Call::Read(10),
                Call::Close(10),
                Call::Log("init[42]: ERROR exec `./x`: EACCES: Permission denied\n".into())
            ]
        );
    }
}
