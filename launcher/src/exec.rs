//! Step 7, exec: inside the new root, the process becomes the workload: new
//! session (and controlling terminal with `-t`), user and groups from the
//! image's /etc/passwd, docker's 14 capabilities, cwd checked inside the
//! root, inherited fds closed, no_new_privs, seccomp, execve.

use crate::sys::{Cap, Sys};
use crate::{Error, Result};
use seccompiler::BpfProgram;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Docker's default capabilities (moby `oci/caps/defaults.go`): CapEff
/// 00000000a80425fb.
pub const DEFAULT_CAPS: [Cap; 14] = [
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// What the child becomes, decided by the parent (the user is looked up in
/// the child, in the image's /etc/passwd).
#[derive(Debug, Clone, Default)]
pub struct Process {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// The pty's slave end, with `-t`.
    pub tty: Option<RawFd>,
    pub seccomp: Vec<BpfProgram>,
    /// The sealed in-memory copy of the init that execs the workload
    /// ([`seal_stub`]); None only in tests of the step sequence.
    pub stub: Option<Arc<OwnedFd>>,
}

/// A user resolved in the container: ids, supplementary groups, home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Becomes the workload. `parent_alive` is a pipe end that reads EOF once
/// the launcher is gone.
pub fn into_workload(sys: &impl Sys, p: &Process, parent_alive: RawFd) -> Result<Infallible> {
    start_session(sys, p.tty)?;
    let user = resolve_user(Path::new("/etc"), p.user.as_deref())?;
    let cwd = p.cwd.clone().unwrap_or_else(|| "/".into());
    set_capabilities(sys, &user)?;
    enter_workdir(sys, &cwd)?;
    sys.cloexec_from(3)
        .map_err(Error::sys("closing inherited file descriptors"))?;
    sys.set_no_new_privs()
        .map_err(Error::sys("setting no_new_privs"))?;
    die_with_parent(sys, parent_alive)?;
    let (path, argv, env) = command(p, &user)?;
    for program in &p.seccomp {
        sys.apply_seccomp(program)
            .map_err(Error::sys("installing the seccomp filter"))?;
    }
    let step = format!("executing `{}`", path.to_string_lossy());
    match &p.stub {
        Some(stub) => {
            let mut through = vec![c"cradle-exec".to_owned(), path];
            through.extend(argv);
            sys.execve_fd(stub.as_raw_fd(), &through, &env)
        }
        None => sys.execve(&path, &argv, &env),
    }
    .map_err(Error::sys(step))
}

/// The largest init the launcher copies into memory as its exec stub.
const STUB_MAX: u64 = 16 << 20;

/// A sealed, executable in-memory copy of the static init at `init`, run as
/// `cradle-exec` to exec the workload (see the init's `exec_stub`): at that
/// moment `/proc/self/exe` of the container's first process is this copy,
/// which nothing can write, instead of the launcher's binary on the host.
pub fn seal_stub(init: &Path) -> Result<Arc<OwnedFd>> {
    use std::io::{Read, Write};
    let step = || format!("copying the init `{}` into memory", init.display());
    let io = |e: std::io::Error| Error::Io {
        op: "copying into memory",
        path: init.to_path_buf(),
        source: e,
    };
    // MFD_EXEC (Linux 6.3) says it is to be executed; older kernels refuse
    // the flag and are executable anyway.
    const MFD_EXEC: libc::c_uint = 0x10;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a valid C string name and flags; the fd is owned below.
    let fd = unsafe {
        match libc::memfd_create(c"cradle-exec".as_ptr(), flags | MFD_EXEC) {
            -1 if nix::errno::Errno::last() == nix::errno::Errno::EINVAL => {
                libc::memfd_create(c"cradle-exec".as_ptr(), flags)
            }
            fd => fd,
        }
    };
    if fd < 0 {
        return Err(Error::sys(step())(nix::errno::Errno::last()));
    }
    // SAFETY: the kernel just gave us this fd.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    std::fs::File::open(init)
        .and_then(|f| f.take(STUB_MAX + 1).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > STUB_MAX {
        return Err(Error::Invalid {
            what: "init (larger than 16 MiB)",
            value: init.display().to_string(),
        });
    }
    let mut file = std::fs::File::from(memfd);
    file.write_all(&bytes).map_err(io)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(Error::sys(step())(nix::errno::Errno::last()));
    }
    Ok(Arc::new(OwnedFd::from(file)))
}

fn start_session(sys: &impl Sys, tty: Option<RawFd>) -> Result<()> {
    sys.setsid().map_err(Error::sys("starting a new session"))?;
    if let Some(fd) = tty {
        sys.set_ctty(fd)
            .map_err(Error::sys("taking the terminal"))?;
    }
    Ok(())
}

/// Bounding set first (needs CAP_SETPCAP), then the sets, then the ids: a
/// change to a non-zero uid clears permitted and effective, as docker's
/// non-root users have none (capabilities(7), "Effect of user ID changes").
/// Inheritable stays empty, as in moby since CVE-2022-24769.
fn set_capabilities(sys: &impl Sys, user: &User) -> Result<()> {
    sys.drop_bounding(&DEFAULT_CAPS)
        .map_err(Error::sys("dropping capabilities from the bounding set"))?;
    sys.set_caps(&DEFAULT_CAPS, &DEFAULT_CAPS, &[])
        .map_err(Error::sys("setting capabilities"))?;
    sys.set_ids(user.uid, user.gid, &user.groups)
        .map_err(Error::sys(format!(
            "switching to uid {} gid {}",
            user.uid, user.gid
        )))?;
    sys.clear_ambient()
        .map_err(Error::sys("clearing ambient capabilities"))
}

fn enter_workdir(sys: &impl Sys, cwd: &str) -> Result<()> {
    sys.chdir(Path::new(cwd)).map_err(Error::sys(format!(
        "entering the working directory `{cwd}`"
    )))?;
    // getcwd(3) reports a directory outside the root as "(unreachable)…" or
    // fails with ENOENT: either means a symlink or an fd led out of it.
    match sys.getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        Ok(_) => Err(Error::Child {
            step: format!("working directory `{cwd}` is outside the container's root"),
            source: nix::errno::Errno::EXDEV,
        }),
        Err(e) => Err(Error::sys(format!(
            "checking the working directory `{cwd}`"
        ))(e)),
    }
}

/// PR_SET_PDEATHSIG is cleared by uid changes, so it is set after them;
/// then the parent must still be there (else the signal was already missed).
fn die_with_parent(sys: &impl Sys, parent_alive: RawFd) -> Result<()> {
    sys.set_parent_death_signal(libc::SIGKILL)
        .map_err(Error::sys("setting the parent death signal"))?;
    if parent_alive >= 0 {
        let mut fds = [libc::pollfd {
            fd: parent_alive,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
        if n > 0 && fds[0].revents & (libc::POLLHUP | libc::POLLIN) != 0 {
            return Err(Error::sys("checking the launcher is alive")(
                nix::errno::Errno::ESRCH,
            ));
        }
    }
    Ok(())
}

/// The program to exec (argv[0] looked up in the container's PATH), argv and
/// the environment with HOME added.
fn command(p: &Process, user: &User) -> Result<(CString, Vec<CString>, Vec<CString>)> {
    let first = p.argv.first().cloned().unwrap_or_default();
    let path_var = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(crate::image::DEFAULT_PATH);
    let program = if first.contains('/') {
        PathBuf::from(&first)
    } else {
        path_var
            .split(':')
            .map(|d| Path::new(d).join(&first))
            .find(|c| is_executable(c))
            .ok_or_else(|| Error::Child {
                step: format!("executing `{first}`: not found in PATH `{path_var}`"),
                source: nix::errno::Errno::ENOENT,
            })?
    };
    let mut env = p.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let c = |s: &str| {
        CString::new(s).map_err(|_| Error::Invalid {
            what: "argument or variable with a NUL byte",
            value: s.replace('\0', "\\0"),
        })
    };
    Ok((
        c(&program.to_string_lossy())?,
        p.argv.iter().map(|a| c(a)).collect::<Result<_>>()?,
        env.iter().map(|e| c(e)).collect::<Result<_>>()?,
    ))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`) against the
/// passwd and group files in `etc`. Unknown numeric ids are allowed (gid 0,
/// home `/`), unknown names are not.
pub fn resolve_user(etc: &Path, spec: Option<&str>) -> Result<User> {
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(etc.join("group")).unwrap_or_default();
    let spec = spec.unwrap_or("0");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 7)
        .collect();
    let entry = entries
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let unknown = |what: &str| Error::Child {
        step: format!("{what} `{spec}` is not in the image's /etc/passwd or /etc/group"),
        source: nix::errno::Errno::ENOENT,
    };
    let (uid, mut gid, name, home) = match (entry, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| unknown("user"))?,
            f[3].parse().unwrap_or(0),
            Some(f[0]),
            f[5].to_string(),
        ),
        (None, Ok(uid)) => (
            uid,
            0,
            None,
            if uid == 0 { "/root".into() } else { "/".into() },
        ),
        (None, Err(_)) => return Err(unknown("user")),
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| unknown("group"))?,
        };
    }
    let mut supplementary = vec![gid];
    if let Some(name) = name {
        for f in &groups {
            if f[3].split(',').any(|m| m == name)
                && let Ok(n) = f[2].parse::<u32>()
                && !supplementary.contains(&n)
            {
                supplementary.push(n);
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups: supplementary,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{Call, Fake};

    #[test]
    fn default_caps_are_dockers() {
        let mask: u64 = DEFAULT_CAPS.iter().map(|c| 1u64 << c).sum();
        assert_eq!(format!("{mask:016x}"), "00000000a80425fb");
    }

    fn etc() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:100::/home/bob:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("group"),
            "root:x:0:\nusers:x:100:\nwheel:x:10:bob,alice\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn resolves_users_like_docker() {
        let d = etc();
        let r = |s| resolve_user(d.path(), s);
        assert_eq!(
            r(None).unwrap(),
            User {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into()
            }
        );
        assert_eq!(
            r(Some("bob")).unwrap(),
            User {
                uid: 1000,
                gid: 100,
                groups: vec![100, 10],
                home: "/home/bob".into()
            }
        );
        assert_eq!(r(Some("1000:wheel")).unwrap().gid, 10);
        assert_eq!(
            r(Some("4242:7")).unwrap(),
            User {
                uid: 4242,
                gid: 7,
                groups: vec![7],
                home: "/".into()
            }
        );
        assert!(r(Some("nobody-here")).is_err());
        assert!(r(Some("bob:nogroup")).is_err());
    }

    #[test]
    fn sequence_ends_in_seccomp_then_execve() {
        let fake = Fake::default();
        let p = Process {
            argv: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: Some("/".into()),
            user: Some("0".into()),
            tty: Some(5),
            seccomp: vec![vec![]],
            stub: None,
        };
        let err = into_workload(&fake, &p, -1).unwrap_err();
        assert!(err.to_string().contains("executing `/bin/true`"), "{err}");
        assert_eq!(
            fake.calls(),
            [
                Call::Setsid,
                Call::SetCtty(5),
                Call::DropBounding(DEFAULT_CAPS.to_vec()),
                Call::SetCaps(DEFAULT_CAPS.to_vec(), DEFAULT_CAPS.to_vec(), vec![]),
                Call::SetIds(0, 0, vec![0]),
                Call::ClearAmbient,
                Call::Chdir("/".into()),
                Call::CloexecFrom(3),
                Call::NoNewPrivs,
                Call::ParentDeathSignal(libc::SIGKILL),
                Call::Seccomp,
                Call::Execve("/bin/true".into(), vec!["/bin/true".into()]),
            ]
        );
    }
}
