//! Step 7, exec: inside the new root, the process becomes the workload: new
//! session (and controlling terminal with `-t`), user and groups from the
//! image's /etc/passwd, resource limits, the capabilities (docker's 14 by
//! default), cwd checked inside the root, inherited fds closed,
//! no_new_privs, seccomp, execve. Without no_new_privs the filter goes on
//! first, while the process still holds CAP_SYS_ADMIN (seccomp(2) asks for
//! one of the two), as runc does.

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
    /// Bounding, permitted and effective capabilities.
    pub caps: Vec<Cap>,
    pub no_new_privs: bool,
    /// `--ulimit`s, set while the process may still raise hard limits.
    pub rlimits: Vec<crate::security::Rlimit>,
    /// `--group-add`: more supplementary groups, names from the image's
    /// /etc/group or numbers.
    pub group_add: Vec<String>,
    /// The init that execs the workload from a sealed in-memory copy
    /// ([`Stub`]); None only in tests of the step sequence.
    pub stub: Option<Arc<Stub>>,
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
    set_rlimits(sys, &p.rlimits)?;
    let mut user = resolve_user_in(Path::new("/"), p.user.as_deref())?;
    add_groups(Path::new("/"), &mut user, &p.group_add)?;
    let cwd = p.cwd.clone().unwrap_or_else(|| "/".into());
    if !p.no_new_privs {
        install_seccomp(sys, p)?;
    }
    // The working directory is entered while still root, as runc does: an
    // image's `/root` is no less its workdir for `-u nobody` (runc and
    // podman start there; the process then holds a directory it could not
    // have entered). Where root is the one refused (root squashed on NFS),
    // the user may still enter it: tried again after the switch, as runc.
    let entered = enter_workdir(sys, &cwd);
    set_capabilities(sys, &user, &p.caps)?;
    match entered {
        Err(Error::Sys {
            source: nix::errno::Errno::EACCES | nix::errno::Errno::EPERM,
            ..
        }) => enter_workdir(sys, &cwd)?,
        other => other?,
    }
    sys.cloexec_from(3)
        .map_err(Error::sys("closing inherited file descriptors"))?;
    if p.no_new_privs {
        sys.set_no_new_privs()
            .map_err(Error::sys("setting no_new_privs"))?;
    }
    die_with_parent(sys, parent_alive)?;
    let (path, argv, env) = command(p, &user)?;
    // A static executable is exec'd from an fd opened without following a
    // magic link: the kernel then resolves no other path (no interpreter),
    // so /proc/self/exe cannot be reached and the stub's extra exec is
    // saved. Anything else goes through the stub. Both are ready before
    // the filter, which may forbid what making them takes (a filter
    // installed early, without no_new_privs, must allow them).
    let exe = sys.open_static_executable(Path::new(&*path.to_string_lossy()));
    let stub = match (&exe, &p.stub) {
        (None, Some(stub)) => Some(stub.seal()?),
        _ => None,
    };
    if p.no_new_privs {
        install_seccomp(sys, p)?;
    }
    let step = format!("executing `{}`", path.to_string_lossy());
    if let Some(fd) = exe {
        return sys
            .execve_fd(fd.as_raw_fd(), &argv, &env)
            .map_err(Error::sys(step));
    }
    match stub {
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

/// The static init on the host, opened before the clone, to become the
/// exec stub: run as `cradle-exec` to exec the workload (see the init's
/// `exec_stub`) from a sealed in-memory copy ([`Stub::seal`]), so that
/// `/proc/self/exe` of the container's first process is then that copy,
/// which nothing can write, instead of a binary on the host. Copied only
/// for a workload that needs it: a static executable is exec'd directly.
#[derive(Debug)]
pub struct Stub {
    init: std::fs::File,
    path: PathBuf,
}

impl Stub {
    /// Opens `init`, refusing one larger than [`STUB_MAX`].
    pub fn open(init: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            op: "opening",
            path: init.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(init).map_err(io)?;
        if file.metadata().map_err(io)?.len() > STUB_MAX {
            return Err(too_large(init));
        }
        Ok(Stub {
            init: file,
            path: init.to_path_buf(),
        })
    }

    /// A sealed, executable memfd holding the init: read at offsets, as
    /// the fd's position is shared with the launcher that opened it.
    pub fn seal(&self) -> Result<OwnedFd> {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let step = || format!("copying the init `{}` into memory", self.path.display());
        let io = |source| Error::Io {
            op: "copying into memory",
            path: self.path.clone(),
            source,
        };
        // MFD_EXEC (Linux 6.3) says it is to be executed; older kernels
        // refuse the flag and are executable anyway.
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
        let mut memfd = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut buf = vec![0u8; 64 << 10];
        let mut offset = 0u64;
        loop {
            let n = self.init.read_at(&mut buf, offset).map_err(io)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            if offset > STUB_MAX {
                return Err(too_large(&self.path));
            }
            memfd.write_all(&buf[..n]).map_err(io)?;
        }
        let seals =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        // SAFETY: fcntl on an fd we own.
        if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(Error::sys(step())(nix::errno::Errno::last()));
        }
        Ok(OwnedFd::from(memfd))
    }
}

fn too_large(init: &Path) -> Error {
    Error::Invalid {
        what: "init (larger than 16 MiB)",
        value: init.display().to_string(),
    }
}

fn start_session(sys: &impl Sys, tty: Option<RawFd>) -> Result<()> {
    sys.setsid().map_err(Error::sys("starting a new session"))?;
    if let Some(fd) = tty {
        sys.set_ctty(fd)
            .map_err(Error::sys("taking the terminal"))?;
    }
    Ok(())
}

fn install_seccomp(sys: &impl Sys, p: &Process) -> Result<()> {
    for program in &p.seccomp {
        sys.apply_seccomp(program)
            .map_err(Error::sys("installing the seccomp filter"))?;
    }
    Ok(())
}

/// Before the capabilities are dropped: raising a hard limit needs
/// CAP_SYS_RESOURCE.
fn set_rlimits(sys: &impl Sys, limits: &[crate::security::Rlimit]) -> Result<()> {
    for l in limits {
        sys.set_rlimit(l.resource, l.soft, l.hard)
            .map_err(Error::sys(format!(
                "setting --ulimit {}={}:{}",
                crate::security::ulimit_name(l.resource),
                l.soft as i64,
                l.hard as i64
            )))?;
    }
    Ok(())
}

/// `--group-add`: each name looked up in the image's /etc/group (an error
/// when it has none, as docker's "unable to find group"), each number
/// taken as it is.
pub fn add_groups(root: &Path, user: &mut User, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let group = read_user_file(root, "group")?;
    for name in names {
        let gid = match name.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let entry = group
                    .lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 4 && f[0] == name)
                    .ok_or_else(|| Error::Child {
                        step: format!(
                            "--group-add: unable to find group `{name}` in the image's /etc/group"
                        ),
                        source: nix::errno::Errno::ENOENT,
                    })?;
                id_field("group", entry[0], "gid", entry[2], "group")?
            }
        };
        if !user.groups.contains(&gid) {
            user.groups.push(gid);
        }
    }
    Ok(())
}

/// Bounding set first (needs CAP_SETPCAP), then the ids (with CAP_SETUID
/// and CAP_SETGID still effective, whatever `--cap-drop` said), then the
/// sets. A change to a non-zero uid clears permitted and effective, as
/// docker's non-root users have none (capabilities(7), "Effect of user ID
/// changes"); they are cleared explicitly too. Inheritable stays empty, as
/// in moby since CVE-2022-24769.
fn set_capabilities(sys: &impl Sys, user: &User, caps: &[Cap]) -> Result<()> {
    sys.drop_bounding(caps)
        .map_err(Error::sys("dropping capabilities from the bounding set"))?;
    sys.set_ids(user.uid, user.gid, &user.groups)
        .map_err(|errno| {
            let step = format!("switching to uid {} gid {}", user.uid, user.gid);
            // setuid(2) and setgroups(2) say EINVAL for an id the user
            // namespace does not map: rootless without subordinate ids,
            // only root (the user's own id) is.
            match errno {
                nix::errno::Errno::EINVAL => Error::Sys {
                    step: format!(
                        "{step}: an id not mapped in the container's user namespace; rootless, \
                         ids other than 0 need a range for your user in /etc/subuid and \
                         /etc/subgid (`usermod --add-subuids 100000-165535 --add-subgids \
                         100000-165535 USER`) and newuidmap/newgidmap (Debian's uidmap)"
                    ),
                    source: errno,
                },
                errno => Error::sys(step)(errno),
            }
        })?;
    let kept = if user.uid == 0 { caps } else { &[] };
    sys.set_caps(kept, kept, &[])
        .map_err(Error::sys("setting capabilities"))?;
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

/// Sets the parent-death signal, then checks that the launcher is still
/// there (else the signal was already missed). `parent_alive` is the read
/// end of the `go` pipe, whose write end only the launcher holds: it hangs
/// up when the launcher is gone, whether or not its one byte was read.
/// PR_SET_PDEATHSIG is cleared by uid and gid changes (prctl(2)), so the
/// child sets it first thing after the clone and again after each change.
pub(crate) fn die_with_parent(sys: &impl Sys, parent_alive: RawFd) -> Result<()> {
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
        // POLLHUP, not POLLIN: before the child has read the launcher's
        // byte, the pipe is readable with the launcher alive.
        if n > 0 && fds[0].revents & libc::POLLHUP != 0 {
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

/// The most of the image's /etc/passwd or /etc/group that is read. Real
/// ones are kilobytes; the image decides, and /dev/zero is endless.
pub const MAX_USER_FILE: u64 = 4 << 20;

/// [`resolve_user_in`] the root whose `/etc` is `etc` (its parent): for
/// callers that hold `<root>/etc`.
pub fn resolve_user(etc: &Path, spec: Option<&str>) -> Result<User> {
    resolve_user_in(etc.parent().unwrap_or(Path::new("/")), spec)
}

/// Resolves `spec` (`name`, `uid`, `name:group`, `uid:gid`) against the
/// image's /etc/passwd and /etc/group in `root` ([`read_user_file`]).
/// Unknown numeric ids are allowed (gid 0, home `/`), unknown names are
/// not, and neither is an id field that is not a number in an entry used.
pub fn resolve_user_in(root: &Path, spec: Option<&str>) -> Result<User> {
    let passwd = read_user_file(root, "passwd")?;
    let group = read_user_file(root, "group")?;
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
            id_field("user", f[0], "uid", f[2], "passwd")?,
            id_field("user", f[0], "gid", f[3], "passwd")?,
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
    let gid_of = |f: &[&str]| id_field("group", f[0], "gid", f[2], "group");
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match groups.iter().find(|f| f[0] == g) {
                Some(f) => gid_of(f)?,
                None => return Err(unknown("group")),
            },
        };
    }
    let mut supplementary = vec![gid];
    if let Some(name) = name {
        for f in &groups {
            if f[3].split(',').any(|m| m == name) {
                let n = gid_of(f)?;
                if !supplementary.contains(&n) {
                    supplementary.push(n);
                }
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

/// The id in `value`, a `field` of the entry `name` of the image's
/// /etc/`file`: a number, or an error. Not 0: `bob:x:1000:abc:…` made bob
/// a member of root's group.
fn id_field(kind: &str, name: &str, field: &str, value: &str, file: &str) -> Result<u32> {
    value.parse().map_err(|_| Error::Child {
        step: format!(
            "{kind} `{name}` in the image's `/etc/{file}` has {field} `{value}`, not a number"
        ),
        source: nix::errno::Errno::EINVAL,
    })
}

/// The image's `/etc/<name>` in `root`, "" when there is none (numeric ids
/// need no entry). The image controls the file, and the child reading it
/// is still root with every capability:
/// - resolved as if `root` were `/`, without /proc's magic links, so a
///   symlink may lead to another file of the image (as glibc follows
///   one), never out of it or to an fd of the launcher's;
/// - opened with O_NONBLOCK, so a FIFO with no writer cannot hang the
///   child (and the launcher waiting on it);
/// - refused unless a regular file: not /dev/zero, a FIFO or a directory;
/// - read up to [`MAX_USER_FILE`], larger being an error.
///
/// Bytes that are not UTF-8 (a Latin-1 GECOS field) become U+FFFD: the
/// names and ids that are used are ASCII.
fn read_user_file(root: &Path, name: &str) -> Result<String> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let shown = format!("`/etc/{name}`");
    let err = |what: String, errno| Error::Child {
        step: format!("{what} the image's {shown}"),
        source: errno,
    };
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| err(format!("opening `{}` to read", root.display()), e))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match nix::fcntl::openat2(&dir, format!("etc/{name}").as_str(), how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) => return Ok(String::new()),
        Err(e) => return Err(err("opening".into(), e)),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|e| err("checking".into(), e))?;
    let kind = match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => None,
        libc::S_IFIFO => Some("a FIFO"),
        libc::S_IFCHR => Some("a character device"),
        libc::S_IFBLK => Some("a block device"),
        libc::S_IFDIR => Some("a directory"),
        libc::S_IFSOCK => Some("a socket"),
        _ => Some("not a file"),
    };
    if let Some(kind) = kind {
        return Err(Error::Child {
            step: format!("reading the image's {shown}: {kind}, not a regular file"),
            source: nix::errno::Errno::EINVAL,
        });
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_USER_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| {
            let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            err("reading".into(), errno)
        })?;
    if bytes.len() as u64 > MAX_USER_FILE {
        return Err(Error::Child {
            step: format!(
                "reading the image's {shown}: larger than {} MiB",
                MAX_USER_FILE >> 20
            ),
            source: nix::errno::Errno::EFBIG,
        });
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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

    /// A root with `etc/passwd` and `etc/group`.
    fn root_with(passwd: &str, group: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), passwd).unwrap();
        std::fs::write(d.path().join("etc/group"), group).unwrap();
        d
    }

    fn root() -> tempfile::TempDir {
        root_with(
            "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:100::/home/bob:/bin/sh\n",
            "root:x:0:\nusers:x:100:\nwheel:x:10:bob,alice\n",
        )
    }

    fn error_text(r: Result<User>) -> String {
        r.expect_err("an error").to_string()
    }

    #[test]
    fn resolves_users_like_docker() {
        let d = root();
        let r = |s| resolve_user(&d.path().join("etc"), s);
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
    fn without_user_files_numeric_ids_still_work() {
        let d = tempfile::tempdir().unwrap();
        let r = |s| resolve_user_in(d.path(), s);
        assert_eq!(
            (r(None).unwrap().uid, r(None).unwrap().home),
            (0, "/root".into())
        );
        assert_eq!(r(Some("1000:7")).unwrap().groups, [7]);
        assert!(r(Some("bob")).is_err());
    }

    // Opening a FIFO with no writer blocked the child forever, and the
    // launcher waiting for it. The thread and the channel are a guard
    // against that hang, not a measure of speed.
    #[test]
    fn a_fifo_for_passwd_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        nix::unistd::mkfifo(&d.path().join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let root = d.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(resolve_user_in(&root, None)));
        let result = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("reading a FIFO for /etc/passwd blocked");
        let text = error_text(result);
        assert!(
            text.contains("`/etc/passwd`: a FIFO, not a regular file"),
            "{text}"
        );
    }

    #[test]
    fn user_files_that_are_directories_or_too_large_are_refused_naming_them() {
        let d = root();
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::fs::create_dir(d.path().join("etc/passwd")).unwrap();
        let text = error_text(resolve_user_in(d.path(), None));
        assert!(text.contains("`/etc/passwd`: a directory"), "{text}");

        let d = root();
        let big = "x".repeat(MAX_USER_FILE as usize + 1);
        std::fs::write(d.path().join("etc/group"), big).unwrap();
        let text = error_text(resolve_user_in(d.path(), None));
        assert!(text.contains("`/etc/group`: larger than 4 MiB"), "{text}");
        // At the limit, it is read.
        std::fs::write(
            d.path().join("etc/group"),
            "x".repeat(MAX_USER_FILE as usize),
        )
        .unwrap();
        assert!(resolve_user_in(d.path(), Some("bob")).is_ok());
    }

    // glibc follows a symlinked /etc/passwd; here only inside the root: one
    // pointing out of it (absolute or through `..`) resolves in the root,
    // where there is nothing, not to the host's file.
    #[test]
    fn user_file_symlinks_are_followed_inside_the_root_only() {
        let host = tempfile::tempdir().unwrap();
        let host_passwd = host.path().join("passwd");
        std::fs::write(&host_passwd, "bob:x:1000:1000::/home/bob:/bin/sh\n").unwrap();
        let up = "../".repeat(20);
        for target in [
            host_passwd.display().to_string(),
            format!("{up}{}", host_passwd.display()),
        ] {
            let d = root();
            std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
            std::os::unix::fs::symlink(&target, d.path().join("etc/passwd")).unwrap();
            let text = error_text(resolve_user_in(d.path(), Some("bob")));
            assert!(text.contains("user `bob` is not in"), "{target}: {text}");
        }

        let d = root();
        std::fs::create_dir_all(d.path().join("usr/share")).unwrap();
        std::fs::write(
            d.path().join("usr/share/passwd"),
            "carol:x:1001:1001::/home/carol:/bin/sh\n",
        )
        .unwrap();
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/usr/share/passwd", d.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user_in(d.path(), Some("carol")).unwrap().uid, 1001);
    }

    // `parse().unwrap_or(0)` made `bob:x:1000:abc:…` a member of root's
    // group, and a group naming bob with gid `ten` was skipped.
    #[test]
    fn ids_that_are_not_numbers_are_refused_naming_the_entry() {
        let group = "root:x:0:\nwheel:x:10:bob\n";
        let d = root_with("bob:x:1000:abc::/home/bob:/bin/sh\n", group);
        let text = error_text(resolve_user_in(d.path(), Some("bob")));
        assert_eq!(
            text,
            "user `bob` in the image's `/etc/passwd` has gid `abc`, not a number"
        );

        let d = root_with("eve:x:1e3:0::/:/bin/sh\n", group);
        let text = error_text(resolve_user_in(d.path(), Some("eve")));
        assert!(
            text.contains("user `eve`") && text.contains("uid `1e3`"),
            "{text}"
        );

        let passwd = "bob:x:1000:1000::/home/bob:/bin/sh\n";
        let d = root_with(passwd, "wheel:x:ten:bob\njunk:x:zz:alice\n");
        let text = error_text(resolve_user_in(d.path(), Some("bob")));
        assert_eq!(
            text,
            "group `wheel` in the image's `/etc/group` has gid `ten`, not a number"
        );
        let text = error_text(resolve_user_in(d.path(), Some("1000:junk")));
        assert!(text.contains("group `junk`"), "{text}");

        // An entry nobody uses may be malformed, as glibc skips it.
        let d = root_with(passwd, "junk:x:zz:alice\n");
        assert_eq!(
            resolve_user_in(d.path(), Some("bob")).unwrap().groups,
            [1000]
        );
    }

    #[test]
    fn parent_death_check_sees_a_gone_launcher_not_its_pending_byte() {
        use std::os::fd::AsRawFd;
        let fake = Fake::default();
        let (r, w) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&w, b"g").unwrap();
        // The launcher's byte, unread: it is alive.
        die_with_parent(&fake, r.as_raw_fd()).unwrap();
        drop(w);
        let err = die_with_parent(&fake, r.as_raw_fd()).unwrap_err();
        assert_eq!(err.to_string(), "checking the launcher is alive");
        assert_eq!(
            fake.calls(),
            [
                Call::ParentDeathSignal(libc::SIGKILL),
                Call::ParentDeathSignal(libc::SIGKILL)
            ]
        );
    }

    // Without no_new_privs seccomp(2) needs CAP_SYS_ADMIN, which the
    // capability step (or a uid change) takes away: the filter goes first.
    // Limits go before the capabilities, which CAP_SYS_RESOURCE leaves with.
    #[test]
    fn without_no_new_privs_the_filter_goes_on_before_the_capabilities() {
        let fake = Fake::default();
        let p = Process {
            argv: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: Some("/".into()),
            user: Some("0".into()),
            tty: None,
            seccomp: vec![vec![]],
            caps: vec![0, 21],
            no_new_privs: false,
            rlimits: vec![crate::security::Rlimit {
                resource: libc::RLIMIT_NOFILE,
                soft: 10,
                hard: 20,
            }],
            group_add: vec![],
            stub: None,
        };
        let _ = into_workload(&fake, &p, -1).unwrap_err();
        assert_eq!(
            fake.calls(),
            [
                Call::Setsid,
                Call::Rlimit(libc::RLIMIT_NOFILE, 10, 20),
                Call::Seccomp,
                // The workdir while still root, as with no_new_privs.
                Call::Chdir("/".into()),
                Call::DropBounding(vec![0, 21]),
                Call::SetIds(0, 0, vec![0]),
                Call::SetCaps(vec![0, 21], vec![0, 21], vec![]),
                Call::ClearAmbient,
                Call::CloexecFrom(3),
                Call::ParentDeathSignal(libc::SIGKILL),
                Call::Execve("/bin/true".into(), vec!["/bin/true".into()]),
            ]
        );
    }

    #[test]
    fn the_stub_is_a_sealed_copy_made_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init");
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&init, &bytes).unwrap();
        let stub = Stub::open(&init).unwrap();
        // Opened only: a file changed before the copy is copied as it is then.
        std::fs::write(&init, &bytes[..150_000]).unwrap();
        let memfd = stub.seal().unwrap();
        let copy = std::fs::read(format!("/proc/self/fd/{}", memfd.as_raw_fd())).unwrap();
        assert_eq!(copy, &bytes[..150_000]);
        // SAFETY: fcntl on an fd we own.
        let seals = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_GET_SEALS) };
        let wanted =
            libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
        assert_eq!(seals & wanted, wanted);
        let mut file = std::fs::File::from(memfd);
        assert!(std::io::Write::write_all(&mut file, b"x").is_err());
        // Two copies from one stub (the fd's position is not used).
        assert_eq!(stub.seal().map(drop).ok(), Some(()));
    }

    #[test]
    fn an_init_past_the_limit_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("huge-init");
        let file = std::fs::File::create(&init).unwrap();
        file.set_len(STUB_MAX + 1).unwrap();
        let err = Stub::open(&init).unwrap_err().to_string();
        assert!(err.contains("huge-init") || err.contains("16 MiB"), "{err}");
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
            caps: DEFAULT_CAPS.to_vec(),
            no_new_privs: true,
            rlimits: vec![],
            group_add: vec![],
            stub: None,
        };
        let err = into_workload(&fake, &p, -1).unwrap_err();
        assert!(err.to_string().contains("executing `/bin/true`"), "{err}");
        assert_eq!(
            fake.calls(),
            [
                Call::Setsid,
                Call::SetCtty(5),
                Call::Chdir("/".into()),
                Call::DropBounding(DEFAULT_CAPS.to_vec()),
                Call::SetIds(0, 0, vec![0]),
                Call::SetCaps(DEFAULT_CAPS.to_vec(), DEFAULT_CAPS.to_vec(), vec![]),
                Call::ClearAmbient,
                Call::CloexecFrom(3),
                Call::NoNewPrivs,
                Call::ParentDeathSignal(libc::SIGKILL),
                Call::Seccomp,
                Call::Execve("/bin/true".into(), vec!["/bin/true".into()]),
            ]
        );
    }
}
