//! Spawn step: fork the workload, give it its process group (or session)
//! and the terminal, restore what the init changed, and exec it. A failed
//! exec comes back to the parent over a close-on-exec pipe.

use crate::errno::Errno;
use crate::log::log;
use crate::personality::Personality;
use crate::sys::{Argv, Fork, Pid, SigMask, Sys};
use crate::{Error, Init};

/// The started workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child {
    pub pid: Pid,
    /// Why exec failed, when it did; the child then exits with the
    /// personality's code and is reaped like any other.
    pub exec_error: Option<Errno>,
}

const STDIN: i32 = 0;

/// Forks and execs the workload with the signal mask `saved` restored.
pub fn workload(sys: &impl Sys, init: &Init, saved: SigMask) -> Result<Child, Error> {
    let argv = Argv::new(&init.argv);
    let (rd, wr) = sys.pipe().map_err(|source| Error::Pipe { source })?;
    let pid = match sys.fork() {
        Ok(Fork::Child) => {
            sys.close(rd);
            let err = exec(sys, init, saved, &argv);
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
    let mut buf = [0u8; 4];
    // End of file: exec closed the pipe, so the workload runs.
    let exec_error = match sys.read(rd, &mut buf) {
        Ok(4) => Some(Errno(i32::from_ne_bytes(buf))),
        _ => None,
    };
    sys.close(rd);
    match exec_error {
        Some(err) => report_exec_failure(sys, init, err),
        None => log!(
            sys,
            init,
            Info,
            "Spawned child process '{}' with pid '{pid}'",
            init.program()
        ),
    }
    Ok(Child { pid, exec_error })
}

/// In the child: detach into its own process group or session, take the
/// terminal, undo the init's signal changes, and exec. Returns only the
/// error of a failed exec. `argv` is `init`'s, made before the fork.
pub fn exec(sys: &impl Sys, init: &Init, saved: SigMask, argv: &Argv<'_>) -> Errno {
    if init.new_session {
        // dumb-init: a session of its own, the terminal as its controlling one.
        let _ = sys.setsid();
        if sys.isatty(STDIN) {
            let _ = sys.set_controlling_tty(STDIN);
        }
    } else if init.own_group {
        // tini's isolate_child: a group of its own, made the terminal's
        // foreground group so Ctrl-C reaches it and reading the terminal does
        // not stop it with SIGTTIN. SIGTTOU is still blocked here, so the
        // kernel lets this background process change the foreground.
        let _ = sys.setpgid_self();
        if sys.isatty(STDIN) {
            let _ = sys.tcsetpgrp(STDIN, sys.getpid());
        }
    }
    sys.reset_signal_dispositions();
    if let Err(err) = sys.set_signal_mask(saved) {
        return err;
    }
    sys.execvp(argv)
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

    #[test]
    fn child_takes_group_and_terminal_then_restores_mask() {
        let fake = Fake::new().pid(42).tty(true);
        let init = Init::new(["sh", "-c", "true"]);
        let err = exec(&fake, &init, SigMask(0b100), &Argv::new(&init.argv));
        assert_eq!(err, Errno::ENOENT);
        assert_eq!(
            fake.calls(),
            [
                Call::Setpgid,
                Call::Isatty(0),
                Call::Tcsetpgrp(0, 42),
                Call::ResetDispositions,
                Call::SetMask(SigMask(0b100)),
                Call::Exec(alloc::vec!["sh".into(), "-c".into(), "true".into()]),
            ]
        );
    }

    #[test]
    fn dumb_init_child_leads_a_session_with_the_terminal() {
        let fake = Fake::new().pid(42).tty(true);
        let init = Init::new(["x"]).personality(Personality::DumbInit);
        exec(&fake, &init, SigMask(0), &Argv::new(&init.argv));
        assert_eq!(
            fake.calls(),
            [
                Call::Setsid,
                Call::Isatty(0),
                Call::SetCtty(0),
                Call::ResetDispositions,
                Call::SetMask(SigMask(0)),
                Call::Exec(alloc::vec!["x".into()]),
            ]
        );
    }

    #[test]
    fn parent_learns_exec_failure_from_the_pipe() {
        let fake = Fake::new()
            .fork_parent(42)
            .pipe_bytes(Errno::EACCES.0.to_ne_bytes().to_vec());
        let init = Init::new(["./x"]).verbosity(0);
        let child = workload(&fake, &init, SigMask(0)).unwrap();
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
