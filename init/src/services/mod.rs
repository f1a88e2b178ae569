//! Services step: besides (or instead of) its one workload, the init
//! supervises the services defined in `/etc/cradle/services.d/*.toml` (or
//! `--services DIR`) and an s6-overlay layout (`/etc/cont-init.d/*`,
//! `/etc/services.d/NAME/run`). Everything is read and checked before
//! anything runs; with no definitions the init is the plain drop-in it
//! always was.

pub mod ctl;
pub mod definition;
mod os;
mod supervise;
mod toml;

use crate::prelude::*;
use crate::{Error, Init};
use definition::{Def, Kind, Restart};

pub use supervise::run;

/// The control socket's default path.
pub const CTL_SOCKET: &str = "/run/cradle-init.sock";
/// A definition file is read up to this size.
const MAX_DEFINITION: usize = 64 * 1024;

/// Where the services come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// `--services DIR`: must exist.
    pub dir: Option<String>,
    /// `--root DIR`: where `etc/cradle/services.d`, `etc/cont-init.d` and
    /// `etc/services.d` are looked for (`/` by default).
    pub root: Option<String>,
    /// The control socket (`CRADLE_CTL_SOCKET`).
    pub ctl_socket: Option<String>,
}

impl Sources {
    fn under_root(&self, path: &str) -> String {
        match &self.root {
            Some(root) => format!("{}/{path}", root.trim_end_matches('/')),
            None => format!("/{path}"),
        }
    }

    pub fn ctl_socket(&self) -> &str {
        self.ctl_socket.as_deref().unwrap_or(CTL_SOCKET)
    }

    /// Whether anything is there to supervise (decides whether the init
    /// may run with no command).
    pub fn any(&self) -> bool {
        self.dir.is_some()
            || ["etc/cradle/services.d", "etc/cont-init.d", "etc/services.d"]
                .iter()
                .any(|d| os::is_dir(&self.under_root(d)))
    }
}

/// The checked services, in a start order.
#[derive(Debug)]
pub struct Plan {
    pub defs: Vec<Def>,
}

fn refuse(file: &str, key: &str, problem: String) -> Error {
    Error::Service {
        file: file.into(),
        key: key.into(),
        problem,
    }
}

/// Reads every definition and checks them all; None when there is nothing
/// to supervise.
pub fn load(init: &Init) -> Result<Option<Plan>, Error> {
    let sources = &init.services;
    let mut defs = Vec::new();
    // s6-overlay: cont-init.d scripts one after the other, each critical,
    // before every service.
    let cont_init = sources.under_root("etc/cont-init.d");
    if os::is_dir(&cont_init) {
        for name in os::list_dir(&cont_init).map_err(|e| refuse(&cont_init, "", format!("{e}")))? {
            let file = format!("{cont_init}/{name}");
            if !os::is_executable(&file) {
                return Err(refuse(&file, "", "is no executable file".into()));
            }
            let mut def = s6_def(&name, &file, vec![os::cstr(&file)])?;
            def.kind = Kind::Oneshot;
            def.restart = Restart::Never;
            def.critical = true;
            if let Some(prev) = defs.last() {
                def.depends_on = vec![Def::name_of(prev)];
            }
            defs.push(def);
        }
    }
    let first_services = defs.len();
    let dir = match &sources.dir {
        Some(dir) if !os::is_dir(dir) => {
            return Err(refuse(dir, "", "is no directory".into()));
        }
        Some(dir) => Some(dir.clone()),
        None => Some(sources.under_root("etc/cradle/services.d")).filter(|d| os::is_dir(d)),
    };
    if let Some(dir) = dir {
        let names = os::list_dir(&dir).map_err(|e| refuse(&dir, "", format!("{e}")))?;
        for file_name in names.iter().filter(|n| n.ends_with(".toml")) {
            let file = format!("{dir}/{file_name}");
            let name = file_name.trim_end_matches(".toml");
            let text = os::read_file(&file, MAX_DEFINITION).map_err(|e| {
                let problem = match e.0 {
                    libc::EFBIG => format!("is larger than {MAX_DEFINITION} bytes"),
                    libc::EINVAL => "is no regular file".into(),
                    _ => format!("reading: {e}"),
                };
                refuse(&file, "", problem)
            })?;
            let text = core::str::from_utf8(&text)
                .map_err(|_| refuse(&file, "", "is not UTF-8".into()))?;
            defs.push(definition::parse(name, &file, text).map_err(from_refusal)?);
        }
    }
    let services_d = sources.under_root("etc/services.d");
    if os::is_dir(&services_d) {
        for name in
            os::list_dir(&services_d).map_err(|e| refuse(&services_d, "", format!("{e}")))?
        {
            let dir = format!("{services_d}/{name}");
            if !os::is_dir(&dir) {
                continue;
            }
            let run = format!("{dir}/run");
            if !os::is_executable(&run) {
                return Err(refuse(&run, "", "is no executable file".into()));
            }
            let mut def = s6_def(&name, &run, vec![os::cstr(&run)])?;
            def.workdir = Some(os::cstr(&dir));
            // s6's readiness: the descriptor the service writes a newline to.
            let fd_file = format!("{dir}/notification-fd");
            if os::file_type(&fd_file, false).is_some() {
                let text = os::read_file(&fd_file, 64).unwrap_or_default();
                let fd = core::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                    .filter(|n| (3..=1023).contains(n))
                    .ok_or_else(|| {
                        refuse(&fd_file, "", "expected a descriptor number 3-1023".into())
                    })?;
                def.ready = definition::Ready::Fd(fd);
            }
            let finish = format!("{dir}/finish");
            if os::is_executable(&finish) {
                def.finish = Some(os::cstr(&finish));
            }
            defs.push(def);
        }
    }
    // Every service waits for the last cont-init script.
    if first_services > 0 {
        let last = Def::name_of(&defs[first_services - 1]);
        for def in &mut defs[first_services..] {
            def.depends_on.push(last.clone());
        }
    }
    for (i, def) in defs.iter().enumerate() {
        if let Some(other) = defs[..i].iter().find(|d| d.name == def.name) {
            return Err(refuse(
                &def.file,
                "",
                format!("service `{}` is also defined by `{}`", def.name, other.file),
            ));
        }
    }
    if defs.is_empty() && sources.dir.is_none() {
        return Ok(None);
    }
    let order = definition::order(&defs).map_err(from_refusal)?;
    let mut ordered: Vec<Option<Def>> = defs.into_iter().map(Some).collect();
    let defs = order.iter().filter_map(|i| ordered[*i].take()).collect();
    Ok(Some(Plan { defs }))
}

fn s6_def(name: &str, file: &str, command: Vec<alloc::ffi::CString>) -> Result<Def, Error> {
    if !definition::valid_name(name) {
        return Err(refuse(file, "", format!("`{name}` is no service name")));
    }
    Ok(Def::longrun(name, file, command))
}

fn from_refusal(r: definition::Refusal) -> Error {
    Error::Service {
        file: r.file,
        key: r.key,
        problem: r.problem,
    }
}

impl Def {
    fn name_of(def: &Def) -> String {
        def.name.clone()
    }
}
