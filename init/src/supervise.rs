//! Supervise step: the loop after the workload runs. It reads signals,
//! forwards them, reaps on SIGCHLD, runs the graceful stop, and returns the
//! exit code. It never fails: a PID 1 that dies takes the container with it.

use crate::log::log;
use crate::personality::Personality;
use crate::prelude::*;
use crate::reap;
use crate::signals;
use crate::spawn::Child;
use crate::sys::{Fd, Received, Status, Sys};
use crate::{ExitCode, Init};
use core::time::Duration;

/// Signals that mean "stop" and start the grace period when one is set.
const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT];
/// The job-control signals dumb-init suspends itself on.
const TTY_STOP_SIGNALS: [i32; 3] = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
/// The terminal the workload may be given.
const STDIN: i32 = 0;
/// How often to look again for stragglers once SIGKILL went out.
const RESCAN: Duration = Duration::from_millis(50);

/// Where the graceful stop is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// SIGTERM went out; SIGKILL at the deadline.
    Terminating {
        deadline: Duration,
    },
    /// SIGKILL went out; reaping what is left.
    Killing,
}

/// Runs until the workload has ended (and, with a grace period, everything
/// else too), and returns the code to exit with.
pub fn until_exit(sys: &impl Sys, fd: Fd, child: Child, init: &Init) -> ExitCode {
    let mut status: Option<Status> = None;
    let mut phase = Phase::Running;
    // Reap at the start, then only after a SIGCHLD (or a timeout): a child
    // that ends after a wait found nothing leaves its SIGCHLD pending for
    // the next read, so nothing is missed, and a forwarded signal costs no
    // wait of its own. tini and dumb-init wait for the first SIGCHLD, which
    // a workload that ended already has queued (signals were blocked before
    // the fork), so that their debug lines come in their order.
    let mut reap_due = !matches!(init.personality, Personality::Tini | Personality::DumbInit);
    let mut none_left = false;
    let job_control = init.personality == Personality::Cradle
        && init.own_group
        && sys.getpid() != 1
        && sys.isatty(STDIN);
    let mut rest_termed = false;
    loop {
        if reap_due {
            let reaped = reap::reap_all(sys, init, child.pid);
            if reaped.workload.is_some() {
                status = reaped.workload;
            }
            none_left = reaped.none_left;
            if job_control
                && status.is_none()
                && let Some(sig) = sys.stopped(child.pid)
                && TTY_STOP_SIGNALS.contains(&sig)
            {
                suspend_with_workload(sys, init, child);
            }
        }
        if let Some(status) = status {
            match init.grace {
                None => return finish(sys, init, child, status),
                Some(_) if none_left => return finish(sys, init, child, status),
                Some(grace) if !rest_termed => {
                    log!(
                        sys,
                        init,
                        Debug,
                        "workload ended; stopping the rest within {grace:?}"
                    );
                    stop_all(sys, init, libc::SIGTERM);
                    rest_termed = true;
                    // A stop already asked for keeps its deadline, so the
                    // whole stop takes at most one grace period.
                    if phase == Phase::Running {
                        phase = Phase::Terminating {
                            deadline: sys.now().saturating_add(grace),
                        };
                    }
                }
                Some(_) => {}
            }
        }
        let timeout = match phase {
            Phase::Running => None,
            Phase::Terminating { deadline } => Some(deadline.saturating_sub(sys.now())),
            Phase::Killing => Some(RESCAN),
        };
        let received = match sys.read_signals(fd, timeout) {
            Ok(received) => received,
            Err(err) => {
                log!(sys, init, Error, "reading signals: {err}");
                Vec::new()
            }
        };
        reap_due = received.is_empty() || received.iter().any(|r| r.signo == libc::SIGCHLD);
        if received.is_empty() && timeout.is_some() {
            if phase != Phase::Killing {
                log!(sys, init, Debug, "grace period over; killing what is left");
            }
            stop_all(sys, init, libc::SIGKILL);
            phase = Phase::Killing;
        }
        for r in received {
            report_received(sys, init, r);
            if r.signo == libc::SIGCHLD {
                continue;
            }
            signals::forward(sys, init, child.pid, r.signo);
            if let (Some(grace), Phase::Running) = (init.grace, phase)
                && STOP_SIGNALS.contains(&r.signo)
            {
                phase = Phase::Terminating {
                    deadline: sys.now().saturating_add(grace),
                };
            }
            if init.personality == Personality::DumbInit && TTY_STOP_SIGNALS.contains(&r.signo) {
                suspend_self(sys, init);
            }
        }
    }
}

/// Logs a signal read, in the words of the personality.
fn report_received(sys: &impl Sys, init: &Init, r: Received) {
    match init.personality {
        Personality::DumbInit => log!(sys, init, Debug, "Received signal {}.", r.signo),
        // tini says "Passing signal" for the others as it forwards them.
        Personality::Tini if r.signo == libc::SIGCHLD => log!(sys, init, Debug, "Received SIGCHLD"),
        Personality::Tini => {}
        _ => log!(
            sys,
            init,
            Trace,
            "received {} from {}",
            signals::name(r.signo),
            r.pid
        ),
    }
}

/// Pause mode (catatonit `-P`): no workload; reap, and end with 0 on SIGINT
/// or SIGTERM.
pub fn pause(sys: &impl Sys, fd: Fd, init: &Init) -> ExitCode {
    loop {
        reap::reap_all(sys, init, 0);
        let received = match sys.read_signals(fd, None) {
            Ok(received) => received,
            Err(err) => {
                log!(sys, init, Error, "reading signals: {err}");
                Vec::new()
            }
        };
        if received
            .iter()
            .any(|r| r.signo == libc::SIGINT || r.signo == libc::SIGTERM)
        {
            if let Some(grace) = init.grace {
                stop_gracefully(sys, fd, init, grace);
            }
            return ExitCode(0);
        }
    }
}

/// SIGTERM to everything left, SIGKILL after `grace`, reaping until none is
/// left (pause mode, which has no workload to wait for first).
fn stop_gracefully(sys: &impl Sys, fd: Fd, init: &Init, grace: Duration) {
    stop_all(sys, init, libc::SIGTERM);
    let deadline = sys.now().saturating_add(grace);
    let mut killed = false;
    while !reap::reap_all(sys, init, 0).none_left {
        let timeout = if killed {
            RESCAN
        } else {
            deadline.saturating_sub(sys.now())
        };
        if let Ok(received) = sys.read_signals(fd, Some(timeout))
            && received.is_empty()
        {
            stop_all(sys, init, libc::SIGKILL);
            killed = true;
        }
    }
}

/// Sends `sig` to every process left: all of the namespace as its PID 1,
/// else every descendant (kill(-1) would reach the whole machine).
pub(crate) fn stop_all(sys: &impl Sys, init: &Init, sig: i32) {
    if sys.getpid() == 1 {
        if let Err(err) = sys.kill(-1, sig)
            && err != crate::errno::Errno::ESRCH
        {
            log!(
                sys,
                init,
                Warn,
                "sending {} to all: {err}",
                signals::name(sig)
            );
        }
        return;
    }
    for pid in sys.descendants() {
        let _ = sys.kill(pid, sig);
    }
}

/// Our job control outside a container (started from an interactive
/// shell): the workload stopped on a terminal signal (Ctrl-Z), so take the
/// terminal back for our own group and stop too, so that the shell sees its
/// job stopped and gets the terminal; once continued (`fg`), give the
/// terminal back to the workload and continue it. SIGTTOU is blocked, so
/// the init may set the foreground group from the background.
fn suspend_with_workload(sys: &impl Sys, init: &Init, child: Child) {
    log!(sys, init, Debug, "workload stopped; stopping with it");
    let _ = sys.tcsetpgrp(STDIN, sys.getpgrp());
    // Stops before kill returns; runs on from here after SIGCONT.
    let _ = sys.kill(sys.getpid(), libc::SIGSTOP);
    let _ = sys.tcsetpgrp(STDIN, child.pid);
    let _ = sys.kill(-child.pid, libc::SIGCONT);
}

/// dumb-init's job control outside a container: after passing SIGTSTP &
/// co. on, stop too, so the shell that started us gets the terminal back;
/// its SIGCONT is forwarded in turn. As PID 1 the kernel ignores this.
fn suspend_self(sys: &impl Sys, init: &Init) {
    let me = sys.getpid();
    if me != 1 {
        log!(sys, init, Debug, "Suspending self due to TTY signal.");
        let _ = sys.kill(me, libc::SIGSTOP);
    }
}

/// The code to exit with for the workload's `status`, after `-e` remaps;
/// dumb-init first passes SIGTERM (rewritten like any other) to the session
/// the workload leaves behind.
fn finish(sys: &impl Sys, init: &Init, child: Child, status: Status) -> ExitCode {
    let code = exit_code(init, status);
    if init.personality == Personality::DumbInit {
        let session = init.new_session.then_some(-child.pid);
        signals::forward_to(sys, init, session, libc::SIGTERM);
        log!(
            sys,
            init,
            Debug,
            "Child exited with status {}. Goodbye.",
            code.0
        );
    }
    code
}

/// The workload's exit code, 128+N when signal N killed it, then remapped.
pub fn exit_code(init: &Init, status: Status) -> ExitCode {
    let code = match status {
        Status::Exited(code) => code as u8,
        Status::Signaled(sig) => (128 + sig) as u8,
    };
    if init.remap_to_zero.contains(&code) {
        ExitCode(0)
    } else {
        ExitCode(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    /// The workload as spawned: pid 7, exec succeeded.
    fn workload() -> Child {
        Child {
            pid: 7,
            exec_error: None,
        }
    }

    fn got(signo: i32) -> Vec<Received> {
        vec![Received { signo, pid: 99 }]
    }

    #[test]
    fn exit_codes_follow_status_and_remaps() {
        let init = Init::new(["x"]).remap_exit(3);
        assert_eq!(exit_code(&init, Status::Exited(0)), ExitCode(0));
        assert_eq!(exit_code(&init, Status::Exited(3)), ExitCode(0));
        assert_eq!(exit_code(&init, Status::Exited(4)), ExitCode(4));
        assert_eq!(exit_code(&init, Status::Signaled(9)), ExitCode(137));
    }

    #[test]
    fn forwards_then_returns_the_workload_status() {
        let fake = Fake::new()
            .pid(1)
            .reaps([None, Some((7, Status::Exited(5)))])
            .signals([got(libc::SIGUSR1), got(libc::SIGCHLD)]);
        let code = until_exit(&fake, 3, workload(), &Init::new(["x"]));
        assert_eq!(code, ExitCode(5));
        assert_eq!(
            fake.calls(),
            [
                Call::Reap,
                Call::ReadSignals(None),
                Call::Kill(7, libc::SIGUSR1),
                Call::ReadSignals(None),
                Call::Reap,
                Call::Reap,
            ]
        );
    }

    #[test]
    fn grace_terms_the_rest_then_kills_at_the_deadline() {
        let fake = Fake::new()
            .pid(1)
            .reaps([Some((7, Status::Exited(0))), None, None])
            .signals([vec![], got(libc::SIGCHLD)]);
        let init = Init::new(["x"]).grace(Duration::from_secs(2));
        let code = until_exit(&fake, 3, workload(), &init);
        assert_eq!(code, ExitCode(0));
        assert_eq!(
            fake.calls(),
            [
                Call::Reap,
                Call::Reap,
                Call::Kill(-1, libc::SIGTERM),
                Call::ReadSignals(Some(Duration::from_secs(2))),
                Call::Kill(-1, libc::SIGKILL),
                Call::Reap,
                Call::ReadSignals(Some(RESCAN)),
                Call::Reap,
            ]
        );
    }

    #[test]
    fn a_grace_period_past_the_clock_s_end_does_not_panic() {
        let fake = Fake::new()
            .pid(1)
            .reaps([None, Some((7, Status::Exited(0))), None])
            .signals([got(libc::SIGTERM), got(libc::SIGCHLD), got(libc::SIGCHLD)]);
        // CRADLE_GRACE=18446744073709551615 gives this.
        let init = Init::new(["x"]).grace(Duration::from_secs(u64::MAX));
        let child = workload();
        assert_eq!(until_exit(&fake, 3, child, &init), ExitCode(0));
    }

    #[test]
    fn a_stop_signal_keeps_its_deadline_and_the_rest_still_gets_sigterm() {
        let fake = Fake::new()
            .pid(1)
            .reaps([None, Some((7, Status::Exited(0))), None])
            .signals([got(libc::SIGTERM), got(libc::SIGCHLD), got(libc::SIGCHLD)]);
        let init = Init::new(["x"]).grace(Duration::from_secs(2));
        let code = until_exit(&fake, 3, workload(), &init);
        assert_eq!(code, ExitCode(0));
        assert_eq!(
            fake.calls(),
            [
                Call::Reap,
                Call::ReadSignals(None),
                Call::Kill(7, libc::SIGTERM),
                Call::ReadSignals(Some(Duration::from_secs(2))),
                Call::Reap,
                Call::Reap,
                Call::Kill(-1, libc::SIGTERM),
                Call::ReadSignals(Some(Duration::from_secs(2))),
                Call::Reap,
            ]
        );
    }

    #[test]
    fn stops_with_a_workload_stopped_from_the_terminal_then_hands_it_back() {
        let fake = Fake::new()
            .pid(5)
            .tty(true)
            .stopped_by(libc::SIGTSTP)
            .reaps([None, Some((7, Status::Exited(0)))])
            .signals([got(libc::SIGCHLD)]);
        let code = until_exit(&fake, 3, workload(), &Init::new(["x"]));
        assert_eq!(code, ExitCode(0));
        assert_eq!(
            fake.calls(),
            [
                Call::Isatty(0),
                Call::Reap,
                Call::Stopped(7),
                Call::Tcsetpgrp(0, 5),
                Call::Kill(5, libc::SIGSTOP),
                Call::Tcsetpgrp(0, 7),
                Call::Kill(-7, libc::SIGCONT),
                Call::ReadSignals(None),
                Call::Reap,
                Call::Reap,
            ]
        );
    }

    #[test]
    fn dumb_init_terms_its_session_on_exit() {
        let fake = Fake::new()
            .pid(1)
            .reaps([Some((7, Status::Signaled(2))), None])
            .signals([got(libc::SIGCHLD)]);
        let init = Init::new(["x"]).personality(Personality::DumbInit);
        let code = until_exit(&fake, 3, workload(), &init);
        assert_eq!(code, ExitCode(130));
        assert_eq!(
            fake.calls(),
            [
                Call::ReadSignals(None),
                Call::Reap,
                Call::Reap,
                Call::Kill(-7, libc::SIGTERM)
            ]
        );
    }
}
