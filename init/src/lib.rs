//! cradle's PID 1, as a library.
//!
//! It blocks every signal and reads them from a signalfd, mounts `/proc`
//! when it is PID 1 and none is mounted, starts the workload in a process
//! group of its own with the terminal, forwards every signal it gets to it,
//! reaps every zombie, and returns the workload's exit status. Invoked as
//! `tini`/`docker-init`, `dumb-init` or `catatonit`/`podman-init`, it takes
//! on that init's defaults and messages ([`Personality`]). Under its own
//! name, with service definitions present, it supervises them too
//! ([`services`]): started in dependency order, restarted with backoff,
//! stopped in reverse order, controlled over a unix socket.
//!
//! Embedding it in another runtime, in the child that is to become PID 1:
//!
//! ```no_run
//! use core::time::Duration;
//!
//! let code = init::Init::new(["/bin/sh", "-c", "exec my-server"])
//!     .forward_to_group(true)
//!     .grace(Duration::from_secs(10))
//!     .run(&init::Linux)?;
//! std::process::exit(i32::from(code.0));
//! # Ok::<(), init::Error>(())
//! ```
//!
//! The library never exits the process and never installs a logger; its
//! few diagnostics go through [`Sys::log`], filtered by
//! [`Init::verbosity`]. Until the workload is spawned, `run` returns errors;
//! after that it only returns an [`ExitCode`].
//!
//! The crate is `no_std` (it needs `alloc` and the C library), so that the
//! static binary links no std at all: 100 KB instead of over 460 KB, most of that
//! std's panic and backtrace machinery.

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;
// thiserror without std (see the root Cargo.toml), under its usual name,
// which its derive refers to.
extern crate thiserror_no_std as thiserror;

pub mod args;
mod errno;
mod log;
mod mounts;
mod personality;
mod reap;
pub mod services;
mod signals;
mod spawn;
mod supervise;
mod sys;

#[cfg(test)]
mod fake;

pub use args::{Invocation, Printout};
pub use errno::Errno;
pub use personality::Personality;
pub use sys::{Fd, Fork, Linux, Pid, Received, SigMask, Status, Stream, Sys};

use crate::prelude::*;
use alloc::ffi::CString;
use core::time::Duration;

/// What can stop the init before its workload runs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{message}")]
    Usage { message: String },
    #[error("argument `{arg}` contains a NUL byte")]
    NulInArgument { arg: String },
    #[error("blocking signals")]
    BlockSignals {
        #[source]
        source: Errno,
    },
    #[error("creating the signalfd")]
    SignalFd {
        #[source]
        source: Errno,
    },
    #[error("mounting proc on `/proc`")]
    MountProc {
        #[source]
        source: Errno,
    },
    #[error("registering as a child subreaper")]
    Subreaper {
        #[source]
        source: Errno,
    },
    #[error("setting the parent death signal `{signal}`")]
    ParentDeathSignal {
        signal: String,
        #[source]
        source: Errno,
    },
    #[error("creating the exec status pipe")]
    Pipe {
        #[source]
        source: Errno,
    },
    #[error("forking the workload")]
    Fork {
        #[source]
        source: Errno,
    },
    /// A service definition refused before anything ran; `key` is empty
    /// when the whole file is at fault.
    #[error("service definition `{file}`{}: {problem}", if key.is_empty() { String::new() } else { format!(", key `{key}`") })]
    Service {
        file: String,
        key: String,
        problem: String,
    },
}

pub type Result<T, E = Error> = core::result::Result<T, E>;

/// The code the init process should exit with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCode(pub u8);

/// What every module uses from `alloc` (a `no_std` crate has no prelude
/// for it).
pub(crate) mod prelude {
    pub use alloc::boxed::Box;
    pub use alloc::format;
    pub use alloc::string::{String, ToString};
    pub use alloc::vec;
    pub use alloc::vec::Vec;
}

/// One run of the init: the workload and how to look after it. Build it
/// from a command line ([`Init::from_args`], [`args::parse`]) or from fields
/// ([`Init::new`] and the builder methods).
#[derive(Clone, Debug)]
pub struct Init {
    pub(crate) argv: Vec<CString>,
    pub(crate) personality: Personality,
    pub(crate) name: String,
    pub(crate) pause: bool,
    pub(crate) subreaper: bool,
    pub(crate) forward_to_group: bool,
    pub(crate) own_group: bool,
    pub(crate) new_session: bool,
    pub(crate) rewrites: Vec<(i32, i32)>,
    pub(crate) remap_to_zero: Vec<u8>,
    pub(crate) parent_death_signal: Option<i32>,
    pub(crate) grace: Option<Duration>,
    pub(crate) verbosity: u8,
    pub(crate) warn_on_reap: bool,
    pub(crate) mount_proc: bool,
    /// dumb-init says "Running in debug mode." when DUMB_INIT_DEBUG=1.
    pub(crate) announce_debug: bool,
    /// Where services are defined (cradle's own personality only).
    pub(crate) services: services::Sources,
}

impl Init {
    /// An init for the workload `argv` (its first element is looked up on
    /// `PATH`), with cradle's own defaults. Arguments with a NUL byte are cut
    /// there; [`args::parse`] refuses them instead.
    pub fn new<I, S>(argv: I) -> Init
    where
        I: IntoIterator<Item = S>,
        S: Into<Vec<u8>>,
    {
        let argv = argv
            .into_iter()
            .map(|a| {
                let mut bytes: Vec<u8> = a.into();
                bytes.truncate(bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len()));
                CString::new(bytes).unwrap_or_default()
            })
            .collect();
        Init {
            argv,
            personality: Personality::Cradle,
            name: "init".into(),
            pause: false,
            subreaper: true,
            forward_to_group: false,
            own_group: true,
            new_session: false,
            rewrites: Vec::new(),
            remap_to_zero: Vec::new(),
            parent_death_signal: None,
            grace: None,
            verbosity: Personality::Cradle.default_verbosity(),
            warn_on_reap: false,
            mount_proc: true,
            announce_debug: false,
            services: services::Sources::default(),
        }
    }

    /// Parses a full command line, `argv[0]` included (it picks the
    /// personality), reading the `CRADLE_…`, `TINI_…` and `DUMB_INIT_…`
    /// variables from the environment. Asking for help or the version, or a
    /// usage error, is an [`Error::Usage`] with the text; [`args::parse`]
    /// tells them apart.
    pub fn from_args<I, S>(argv: I) -> Result<Init>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let argv: Vec<S> = argv.into_iter().collect();
        let env = Env::from_process();
        match args::parse(&argv, |k| env.get(k))? {
            Invocation::Run(init) => Ok(*init),
            Invocation::Print(p) => Err(Error::Usage { message: p.text }),
        }
    }

    /// Takes on `personality`'s defaults: subreaper, process group or
    /// session, verbosity, messages and exit codes.
    pub fn personality(mut self, personality: Personality) -> Init {
        self.personality = personality;
        self.verbosity = personality.default_verbosity();
        self.subreaper = matches!(personality, Personality::Cradle | Personality::Catatonit);
        self.new_session = personality == Personality::DumbInit;
        self.own_group = personality != Personality::DumbInit;
        if personality == Personality::DumbInit {
            self = self.dumb_init_job_control();
        }
        self
    }

    /// dumb-init in session mode turns the terminal stop signals into
    /// SIGSTOP for the session (SIGTSTP & co. may be ignored by the children).
    fn dumb_init_job_control(mut self) -> Init {
        for sig in [libc::SIGTSTP, libc::SIGTTOU, libc::SIGTTIN] {
            if !self.rewrites.iter().any(|(from, _)| *from == sig) {
                self.rewrites.insert(0, (sig, libc::SIGSTOP));
            }
        }
        self
    }

    /// The name used in messages (cradle's own format).
    pub fn name(mut self, name: impl Into<String>) -> Init {
        self.name = name.into();
        self
    }

    /// Sends forwarded signals to the workload's process group (`-g`).
    pub fn forward_to_group(mut self, yes: bool) -> Init {
        self.forward_to_group = yes;
        self
    }

    /// Registers as a child subreaper when not PID 1 (`-s`).
    pub fn subreaper(mut self, yes: bool) -> Init {
        self.subreaper = yes;
        self
    }

    /// Starts the workload in a session of its own with the terminal, and
    /// signals the whole session (dumb-init's default; off with `-c`).
    pub fn new_session(mut self, yes: bool) -> Init {
        self.new_session = yes;
        if yes {
            self.own_group = false;
        } else {
            self.rewrites.retain(|(_, to)| *to != libc::SIGSTOP);
        }
        self
    }

    /// Starts the workload in a process group of its own, the terminal's
    /// foreground one (the default, as tini does).
    pub fn own_group(mut self, yes: bool) -> Init {
        self.own_group = yes;
        self
    }

    /// Forwards signal `from` as `to`; `to == 0` drops it (`-r from:to`).
    pub fn rewrite(mut self, from: i32, to: i32) -> Init {
        self.rewrites.retain(|(f, _)| *f != from);
        self.rewrites.push((from, to));
        self
    }

    /// Exits 0 when the workload exits with `code` (`-e code`).
    pub fn remap_exit(mut self, code: u8) -> Init {
        self.remap_to_zero.push(code);
        self
    }

    /// Gets `sig` when the init's parent dies (`-p SIG`).
    pub fn parent_death_signal(mut self, sig: i32) -> Init {
        self.parent_death_signal = Some(sig);
        self
    }

    /// On the workload's exit or a stop signal, SIGTERM to what is left and
    /// SIGKILL after `grace`, everything reaped before returning.
    pub fn grace(mut self, grace: Duration) -> Init {
        self.grace = Some(grace);
        self
    }

    /// 0 errors only, 1 warnings (the default), 2 info, 3 debug, 4 trace.
    pub fn verbosity(mut self, level: u8) -> Init {
        self.verbosity = level;
        self
    }

    /// Warns for every zombie reaped that was not the workload (`-w`).
    pub fn warn_on_reap(mut self, yes: bool) -> Init {
        self.warn_on_reap = yes;
        self
    }

    /// Mounts `/proc` when PID 1 and none is mounted (the default).
    pub fn mount_proc(mut self, yes: bool) -> Init {
        self.mount_proc = yes;
        self
    }

    /// Runs no workload: reaps until SIGINT or SIGTERM (catatonit `-P`).
    pub fn pause(mut self, yes: bool) -> Init {
        self.pause = yes;
        self
    }

    /// Supervises the services defined in `dir` (`--services DIR`), which
    /// must exist, instead of `/etc/cradle/services.d`.
    pub fn services_dir(mut self, dir: impl Into<String>) -> Init {
        self.services.dir = Some(dir.into());
        self
    }

    /// Looks for `etc/cradle/services.d`, `etc/cont-init.d` and
    /// `etc/services.d` under `root` instead of `/` (`--root DIR`).
    pub fn services_root(mut self, root: impl Into<String>) -> Init {
        self.services.root = Some(root.into());
        self
    }

    /// The control socket (`CRADLE_CTL_SOCKET`; `/run/cradle-init.sock`).
    pub fn ctl_socket(mut self, path: impl Into<String>) -> Init {
        self.services.ctl_socket = Some(path.into());
        self
    }

    /// The workload's program, for messages.
    pub fn program(&self) -> alloc::borrow::Cow<'_, str> {
        self.argv.first().map_or("".into(), |p| p.to_string_lossy())
    }

    /// Runs the init: sets up signals, `/proc` and reaping, starts the
    /// workload and looks after it until it ends. What it changes in the
    /// process for the run (the signal mask, SIGCHLD's disposition, the
    /// child-subreaper mark, the current directory) is put back before it
    /// returns; a terminal given up to the workload's session (dumb-init)
    /// stays given up.
    pub fn run(&self, sys: &impl Sys) -> Result<ExitCode> {
        let mut undo = Undo::default();
        let code = self.run_steps(sys, &mut undo);
        undo.apply(sys);
        code
    }

    fn run_steps(&self, sys: &impl Sys, undo: &mut Undo) -> Result<ExitCode> {
        if self.announce_debug {
            log::log!(sys, self, Debug, "Running in debug mode.");
        }
        // Every definition is read and checked before anything runs.
        let plan = match self.personality {
            Personality::Cradle if !self.pause => services::load(self)?,
            _ => None,
        };
        let mask = signals::block_all(sys)?;
        undo.mask = Some(mask);
        let fd = signals::open_fd(sys)?;
        undo.signal_fd = Some(fd);
        undo.sigchld_ignored = signals::default_sigchld(sys);
        mounts::mount_proc_if_missing(sys, self)?;
        undo.subreaper = reap::become_subreaper(sys, self)?;
        self.set_parent_death_signal(sys)?;
        undo.cwd = spawn::leave_cwd(sys, self);
        if self.pause {
            return Ok(supervise::pause(sys, fd, self));
        }
        spawn::hand_off_tty(sys, self);
        let inherited = spawn::Inherited {
            mask,
            sigchld_ignored: undo.sigchld_ignored,
            cwd: undo.cwd,
        };
        if let Some(plan) = plan {
            return Ok(services::run(sys, fd, self, plan, inherited));
        }
        let child = spawn::workload(sys, self, inherited)?;
        Ok(supervise::until_exit(sys, fd, child, self))
    }

    fn set_parent_death_signal(&self, sys: &impl Sys) -> Result<()> {
        match self.parent_death_signal {
            Some(sig) => {
                sys.set_parent_death_signal(sig)
                    .map_err(|source| Error::ParentDeathSignal {
                        signal: signals::name(sig),
                        source,
                    })
            }
            None => Ok(()),
        }
    }
}

/// What [`Init::run`] changed in the process, to put back when it returns.
#[derive(Default)]
struct Undo {
    mask: Option<SigMask>,
    signal_fd: Option<Fd>,
    sigchld_ignored: bool,
    subreaper: bool,
    cwd: Option<Fd>,
}

impl Undo {
    /// In the reverse order of the changes; none of these can fail in a way
    /// the caller could act on.
    fn apply(self, sys: &impl Sys) {
        if let Some(cwd) = self.cwd {
            let _ = sys.fchdir(cwd);
            sys.close(cwd);
        }
        if self.subreaper {
            let _ = sys.set_child_subreaper(false);
        }
        if self.sigchld_ignored {
            let _ = sys.set_ignored(libc::SIGCHLD, true);
        }
        if let Some(fd) = self.signal_fd {
            sys.close(fd);
        }
        if let Some(mask) = self.mask {
            let _ = sys.set_signal_mask(mask);
        }
    }
}

/// A variable from the process environment.
pub fn getenv(name: &str) -> Option<Vec<u8>> {
    Env::from_process().get(name)
}

/// The variables the init reads (`CRADLE_…`, `TINI_…`, `DUMB_INIT_…`),
/// picked out of the environment in one pass: a getenv per variable would
/// scan the whole environment eight times, a quarter of what the init
/// executes for `-- /bin/true`.
#[derive(Clone, Debug, Default)]
pub struct Env(Vec<&'static [u8]>);

unsafe extern "C" {
    static environ: *const *const core::ffi::c_char;
}

impl Env {
    pub fn from_process() -> Env {
        let mut ours = Vec::new();
        // SAFETY: environ is a null-terminated array of NUL-terminated
        // strings that the C runtime keeps for the life of the process, and
        // nothing in the single-threaded init changes it.
        unsafe {
            let mut p = environ;
            while !p.is_null() && !(*p).is_null() {
                // Compare the prefix byte by byte before measuring the whole
                // entry: most of the environment is not ours.
                let starts_with = |pre: &[u8]| {
                    pre.iter()
                        .enumerate()
                        .all(|(i, b)| *(*p).add(i) as u8 == *b)
                };
                if [&b"CRADLE_"[..], b"TINI_", b"DUMB_INIT_"]
                    .iter()
                    .any(|pre| starts_with(pre))
                {
                    ours.push(core::ffi::CStr::from_ptr(*p).to_bytes());
                }
                p = p.add(1);
            }
        }
        Env(ours)
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.0.iter().find_map(|entry| {
            let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
            Some(value.to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, Fake};

    #[test]
    fn builds_from_args_or_refuses_with_the_text() {
        let init = Init::from_args(["tini", "-g", "--", "sleep", "1"]).unwrap();
        assert_eq!(
            (init.personality, init.forward_to_group, init.program()),
            (Personality::Tini, true, "sleep".into())
        );
        match Init::from_args(["init"]) {
            Err(Error::Usage { message }) => {
                assert!(message.contains("no command given"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_blocks_then_mounts_then_spawns_in_order() {
        let fake = Fake::new()
            .pid(1)
            .proc_mounted(false)
            .fork_parent(2)
            .reaps([Some((2, Status::Exited(3)))]);
        let code = Init::new(["true"]).run(&fake).unwrap();
        assert_eq!(code, ExitCode(3));
        assert_eq!(
            fake.calls(),
            [
                Call::Block(SigMask::ALL),
                Call::SignalFd(SigMask::ALL),
                Call::IsIgnored(libc::SIGCHLD),
                Call::IsProc("/proc".into()),
                Call::MountProc("/proc".into()),
                Call::OpenCwd,
                Call::Chdir("/".into()),
                Call::Pipe,
                Call::Fork,
                Call::Close(11),
                Call::Read(10),
                Call::Close(10),
                Call::Reap,
                Call::Reap,
                Call::Fchdir(5),
                Call::Close(5),
                Call::Close(3),
                Call::SetMask(SigMask(0)),
            ]
        );
    }

    #[test]
    fn run_puts_back_the_subreaper_mark_sigchld_and_directory() {
        let fake = Fake::new()
            .pid(9)
            .sigchld_ignored(true)
            .fork_parent(10)
            .reaps([Some((10, Status::Exited(0)))]);
        Init::new(["true"]).run(&fake).unwrap();
        assert_eq!(
            fake.calls(),
            [
                Call::Block(SigMask::ALL),
                Call::SignalFd(SigMask::ALL),
                Call::IsIgnored(libc::SIGCHLD),
                Call::SetIgnored(libc::SIGCHLD, false),
                Call::IsSubreaper,
                Call::Subreaper(true),
                Call::OpenCwd,
                Call::Chdir("/".into()),
                Call::Pipe,
                Call::Fork,
                Call::Close(11),
                Call::Read(10),
                Call::Close(10),
                Call::Isatty(0),
                Call::Reap,
                Call::Reap,
                Call::Fchdir(5),
                Call::Close(5),
                Call::Subreaper(false),
                Call::SetIgnored(libc::SIGCHLD, true),
                Call::Close(3),
                Call::SetMask(SigMask(0)),
            ]
        );
        // Marked by its parent already: the mark is the caller's, and stays.
        let fake = Fake::new()
            .pid(9)
            .subreaper(true)
            .fork_parent(10)
            .reaps([Some((10, Status::Exited(0)))]);
        Init::new(["true"]).run(&fake).unwrap();
        assert!(!fake.calls().contains(&Call::Subreaper(false)));
    }
}
