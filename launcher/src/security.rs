//! The workload's privileges, decided in the parent before the clone:
//! capabilities (`--cap-add`, `--cap-drop`, `--privileged`), the seccomp
//! filters and `no_new_privs` (`--security-opt`), resource limits
//! (`--ulimit`). [`crate::exec`] applies them in the child.
//!
//! Unlike docker, `no_new_privs` is on unless `--security-opt
//! no-new-privileges=false` (or `--privileged`) turns it off: a setuid
//! program or a file capability in a hostile image then gains nothing.

use crate::sys::Cap;
use crate::{Error, Options, Result};
use seccompiler::BpfProgram;
use std::path::PathBuf;

/// What [`crate::exec::into_workload`] applies.
#[derive(Debug, Clone)]
pub struct Security {
    /// Bounding, effective and permitted set (cleared by a switch to a uid
    /// other than 0, as for docker's non-root users).
    pub caps: Vec<Cap>,
    pub no_new_privs: bool,
    /// Empty: unconfined.
    pub seccomp: Vec<BpfProgram>,
    pub rlimits: Vec<Rlimit>,
}

/// One `--ulimit`: resource, soft and hard limit (`RLIM_INFINITY` for -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// `--security-opt seccomp=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seccomp {
    Default,
    Unconfined,
    Profile(PathBuf),
}

/// The privileges of `opts`; a bad value is an error naming it.
pub fn decide(opts: &Options) -> Result<Security> {
    let caps = crate::capabilities::resolve(&opts.cap_add, &opts.cap_drop, opts.privileged)?;
    let (seccomp, no_new_privs) = parse_security_opts(&opts.security_opt)?;
    let seccomp = match (seccomp, opts.privileged) {
        // As docker: a privileged container has no seccomp filter.
        (_, true) | (Seccomp::Unconfined, _) => Vec::new(),
        (Seccomp::Profile(path), false) => crate::seccomp_profile::load(&path, &caps)?,
        (Seccomp::Default, false) => match crate::seccomp_profile::widened_default(&caps)? {
            Some(widened) => widened,
            None => crate::seccomp::default_profile(),
        },
    };
    let rlimits = opts
        .ulimits
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<Result<Vec<_>>>()?;
    Ok(Security {
        caps,
        no_new_privs: no_new_privs.unwrap_or(!opts.privileged),
        seccomp,
        rlimits,
    })
}

/// `seccomp=unconfined|PATH`, `no-new-privileges[=true|false]` (or with
/// `:`, docker's older spelling); `apparmor=…` and `label=…` are accepted
/// and do nothing, as this launcher applies neither LSM.
fn parse_security_opts(opts: &[String]) -> Result<(Seccomp, Option<bool>)> {
    parse_all(opts).map(|(seccomp, nnp, _)| (seccomp, nnp))
}

/// `--security-opt systempaths=unconfined`: /proc without docker's masked
/// and read-only paths (and /sys without its masks), as docker has it.
pub fn system_paths_unconfined(opts: &[String]) -> Result<bool> {
    parse_all(opts).map(|(_, _, unconfined)| unconfined)
}

fn parse_all(opts: &[String]) -> Result<(Seccomp, Option<bool>, bool)> {
    let mut seccomp = Seccomp::Default;
    let mut nnp = None;
    let mut system_paths = false;
    for (i, opt) in opts.iter().enumerate() {
        let bad = |why: &str| Error::Flag {
            flag: "--security-opt",
            value: opt.clone(),
            why: format!("option {}: {why}", i + 1),
        };
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None) => nnp = Some(true),
            ("no-new-privileges", Some(v)) => {
                nnp = Some(match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("no-new-privileges takes true or false")),
                })
            }
            ("seccomp", Some("unconfined")) => seccomp = Seccomp::Unconfined,
            ("seccomp", Some("builtin")) => seccomp = Seccomp::Default,
            ("seccomp", Some(path)) if !path.is_empty() => {
                seccomp = Seccomp::Profile(PathBuf::from(path))
            }
            ("systempaths", Some("unconfined")) => system_paths = true,
            ("apparmor" | "label", Some(_)) => {}
            _ => {
                return Err(bad(
                    "expected seccomp=unconfined|PROFILE.json, no-new-privileges[=true|false], \
                     systempaths=unconfined, apparmor=… or label=…",
                ));
            }
        }
    }
    Ok((seccomp, nnp, system_paths))
}

/// docker's `--ulimit` names (setrlimit(2)). The numbers are u32 with
/// glibc and i32 with musl.
#[allow(clippy::unnecessary_cast)]
const ULIMITS: &[(&str, u32)] = &[
    ("as", libc::RLIMIT_AS as u32),
    ("core", libc::RLIMIT_CORE as u32),
    ("cpu", libc::RLIMIT_CPU as u32),
    ("data", libc::RLIMIT_DATA as u32),
    ("fsize", libc::RLIMIT_FSIZE as u32),
    ("locks", libc::RLIMIT_LOCKS as u32),
    ("memlock", libc::RLIMIT_MEMLOCK as u32),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as u32),
    ("nice", libc::RLIMIT_NICE as u32),
    ("nofile", libc::RLIMIT_NOFILE as u32),
    ("nproc", libc::RLIMIT_NPROC as u32),
    ("rss", libc::RLIMIT_RSS as u32),
    ("rtprio", libc::RLIMIT_RTPRIO as u32),
    ("rttime", libc::RLIMIT_RTTIME as u32),
    ("sigpending", libc::RLIMIT_SIGPENDING as u32),
    ("stack", libc::RLIMIT_STACK as u32),
];

/// The name of resource `resource`, for messages.
pub fn ulimit_name(resource: u32) -> &'static str {
    ULIMITS
        .iter()
        .find(|(_, r)| *r == resource)
        .map_or("?", |(n, _)| n)
}

/// `NAME=SOFT[:HARD]`, -1 meaning unlimited, the hard limit the soft one
/// when not given (docker's units package).
pub fn parse_ulimit(spec: &str) -> Result<Rlimit> {
    let bad = |why: String| Error::Flag {
        flag: "--ulimit",
        value: spec.into(),
        why,
    };
    let (name, limits) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected NAME=SOFT[:HARD]".into()))?;
    let resource = ULIMITS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .ok_or_else(|| bad(format!("invalid ulimit type: {name}")))?;
    let number = |text: &str| match text {
        "-1" => Ok(libc::RLIM_INFINITY),
        _ => text
            .parse::<u64>()
            .map_err(|_| bad(format!("invalid ulimit argument: {text}"))),
    };
    let (soft, hard) = match limits.split_once(':') {
        Some((s, h)) => (number(s)?, number(h)?),
        None => (number(limits)?, number(limits)?),
    };
    if soft > hard {
        return Err(bad(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )));
    }
    Ok(Rlimit {
        resource,
        soft,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(f: impl FnOnce(&mut Options)) -> Options {
        let mut o = Options::default();
        f(&mut o);
        o
    }

    #[test]
    #[allow(clippy::unnecessary_cast)] // i32 with musl
    fn ulimits_read_like_dockers() {
        assert_eq!(
            parse_ulimit("nofile=1024:2048").unwrap(),
            Rlimit {
                resource: libc::RLIMIT_NOFILE as u32,
                soft: 1024,
                hard: 2048
            }
        );
        let core = parse_ulimit("core=-1").unwrap();
        assert_eq!((core.soft, core.hard), (u64::MAX, u64::MAX));
        for (spec, want) in [
            ("nofile=2048:1024", "soft limit must be less than or equal"),
            ("nofiles=1", "invalid ulimit type: nofiles"),
            ("nofile=x", "invalid ulimit argument: x"),
            ("nofile", "NAME=SOFT[:HARD]"),
        ] {
            let err = parse_ulimit(spec).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(spec), "{err}");
        }
    }

    #[test]
    fn security_opts_and_privileged_decide_seccomp_and_no_new_privs() {
        let d = decide(&Options::default()).unwrap();
        assert!(d.no_new_privs && !d.seccomp.is_empty());
        let d = decide(&opts(|o| {
            o.security_opt = vec![
                "seccomp=unconfined".into(),
                "no-new-privileges=false".into(),
            ]
        }))
        .unwrap();
        assert!(!d.no_new_privs && d.seccomp.is_empty());
        let d = decide(&opts(|o| o.privileged = true)).unwrap();
        assert!(!d.no_new_privs && d.seccomp.is_empty() && d.caps.contains(&21));
        let d = decide(&opts(|o| {
            o.privileged = true;
            o.security_opt = vec!["no-new-privileges".into()];
        }))
        .unwrap();
        assert!(d.no_new_privs);
        assert!(system_paths_unconfined(&["systempaths=unconfined".into()]).unwrap());
        assert!(!system_paths_unconfined(&[]).unwrap());
        for bad in ["seccomp", "no-new-privileges=maybe", "systempaths=x", "foo"] {
            let err = decide(&opts(|o| o.security_opt = vec![bad.into()])).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        let err = decide(&opts(|o| {
            o.security_opt = vec!["seccomp=/nonexistent/profile.json".into()]
        }))
        .unwrap_err();
        assert!(
            err.to_string().contains("`/nonexistent/profile.json`"),
            "{err}"
        );
    }
}
