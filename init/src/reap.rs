//! Reap step: become a subreaper when not PID 1, and collect every ended
//! child, the workload's status among them.

use crate::errno::Errno;
use crate::log::log;
use crate::personality::Personality;
use crate::signals;
use crate::sys::{Pid, Status, Sys};
use crate::{Error, Init};

/// Registers as a child subreaper when not PID 1 and the personality or
/// flags ask for it, so orphans of the workload are re-parented here
/// (PR_SET_CHILD_SUBREAPER, Linux 3.4). tini only warns unless `-s`, and
/// not when its parent marked it already (the mark survives exec; tini asks
/// the kernel too). Returns whether it set the mark, for `Init::run` to
/// take it off again.
pub fn become_subreaper(sys: &impl Sys, init: &Init) -> Result<bool, Error> {
    if sys.getpid() == 1 || sys.is_child_subreaper().unwrap_or(false) {
        return Ok(false);
    }
    if init.subreaper {
        sys.set_child_subreaper(true)
            .map_err(|source| Error::Subreaper { source })?;
        return Ok(true);
    }
    if init.personality == Personality::Tini {
        log!(
            sys,
            init,
            Warn,
            "Tini is not running as PID 1 and isn't registered as a child subreaper.\n\
             Zombie processes will not be re-parented to Tini, so zombie reaping won't work.\n\
             To fix the problem, use the -s option or set the environment variable TINI_SUBREAPER \
             to register Tini as a child subreaper, or run Tini as PID 1."
        );
    }
    Ok(false)
}

/// What one round of reaping found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reaped {
    /// The workload's status, if it was among them.
    pub workload: Option<Status>,
    /// True when no child is left at all (ECHILD).
    pub none_left: bool,
}

/// Reaps until no ended child is left: one SIGCHLD may stand for many
/// (signals of one number coalesce), so never one wait per signal.
pub fn reap_all(sys: &impl Sys, init: &Init, workload: Pid) -> Reaped {
    let mut found = Reaped {
        workload: None,
        none_left: false,
    };
    loop {
        match sys.reap_one() {
            Ok(Some((pid, status))) => {
                report(sys, init, pid, status, pid == workload);
                if pid == workload {
                    found.workload = Some(status);
                }
            }
            Ok(None) => return found,
            Err(Errno::ECHILD) => {
                found.none_left = true;
                return found;
            }
            Err(Errno::EINTR) => {}
            Err(err) => {
                log!(sys, init, Warn, "waitpid: {err}");
                return found;
            }
        }
    }
}

/// Logs a reaped child, in the words of the personality.
fn report(sys: &impl Sys, init: &Init, pid: Pid, status: Status, is_workload: bool) {
    match (init.personality, status) {
        (Personality::Tini, _) => log!(sys, init, Debug, "Reaped child with pid: '{pid}'"),
        (Personality::DumbInit, Status::Exited(code)) => log!(
            sys,
            init,
            Debug,
            "A child with PID {pid} exited with exit status {code}."
        ),
        (Personality::DumbInit, Status::Signaled(sig)) => log!(
            sys,
            init,
            Debug,
            "A child with PID {pid} was terminated by signal {sig}."
        ),
        _ if is_workload => log!(sys, init, Debug, "workload {pid} ended: {status:?}"),
        _ if !init.warn_on_reap => log!(sys, init, Debug, "reaped {pid}: {status:?}"),
        _ => {}
    }
    match (init.personality, status) {
        (Personality::Tini, Status::Exited(code)) if is_workload => log!(
            sys,
            init,
            Info,
            "Main child exited normally (with status '{code}')"
        ),
        (Personality::Tini, Status::Signaled(sig)) if is_workload => log!(
            sys,
            init,
            Info,
            "Main child exited with signal (with signal '{}')",
            signals::Describe(sig)
        ),
        _ if init.warn_on_reap && !is_workload => {
            log!(sys, init, Warn, "Reaped zombie process with pid={pid}")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    #[test]
    fn reaps_until_empty_and_spots_the_workload() {
        let fake = Fake::new().reaps([
            Some((9, Status::Exited(0))),
            Some((7, Status::Signaled(15))),
            None,
        ]);
        let found = reap_all(&fake, &Init::new(["x"]), 7);
        assert_eq!(
            found,
            Reaped {
                workload: Some(Status::Signaled(15)),
                none_left: false
            }
        );
        assert_eq!(fake.calls(), [Call::Reap, Call::Reap, Call::Reap]);
    }

    #[test]
    fn subreaper_only_when_not_pid_1() {
        let fake = Fake::new().pid(1);
        assert!(!become_subreaper(&fake, &Init::new(["x"])).unwrap());
        assert_eq!(fake.calls(), []);
        let fake = Fake::new().pid(5);
        assert!(become_subreaper(&fake, &Init::new(["x"])).unwrap());
        assert_eq!(fake.calls(), [Call::IsSubreaper, Call::Subreaper(true)]);
        let fake = Fake::new().pid(5);
        become_subreaper(&fake, &Init::new(["x"]).subreaper(false)).unwrap();
        assert_eq!(fake.calls(), [Call::IsSubreaper]);
    }

    #[test]
    fn an_inherited_subreaper_mark_is_neither_set_nor_warned_about() {
        let tini = Init::new(["x"]).personality(Personality::Tini);
        let fake = Fake::new().pid(5).subreaper(true);
        assert!(!become_subreaper(&fake, &tini).unwrap());
        assert_eq!(fake.calls(), [Call::IsSubreaper]);
        let fake = Fake::new().pid(5);
        become_subreaper(&fake, &tini).unwrap();
        assert!(
            matches!(&fake.calls()[..], [Call::IsSubreaper, Call::Log(l)] if l.contains("zombie reaping won't work")),
            "{:?}",
            fake.calls()
        );
        let fake = Fake::new().pid(5).subreaper(true);
        assert!(!become_subreaper(&fake, &Init::new(["x"])).unwrap());
        assert_eq!(fake.calls(), [Call::IsSubreaper]);
    }
}
