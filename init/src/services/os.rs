//! The system calls the supervisor makes beyond the init's [`Sys`] seam:
//! files and directories, pipes and sockets, `poll`, and the fork and exec
//! of one service. Linux only; everything a forked child needs is built
//! before the fork, so the child allocates nothing.
//!
//! [`Sys`]: crate::Sys

use crate::errno::Errno;
use crate::prelude::*;
use crate::sys::{Fd, Pid, SigMask};
use alloc::borrow::ToOwned;
use alloc::ffi::CString;
use core::ffi::CStr;

fn check(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(ret) }
}

pub fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Reads a whole regular file of at most `limit` bytes.
pub fn read_file(path: &str, limit: usize) -> Result<Vec<u8>, Errno> {
    let p = cstr(path);
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
        )
    })?;
    // SAFETY: plain C data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: a live stat buffer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG {
        close(fd);
        return Err(Errno(libc::EINVAL));
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        // SAFETY: a live buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let err = Errno::last();
            if err == Errno::EINTR {
                continue;
            }
            close(fd);
            return Err(err);
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n as usize]);
        if out.len() > limit {
            close(fd);
            return Err(Errno(libc::EFBIG));
        }
    }
    close(fd);
    Ok(out)
}

/// The kind of file at `path` (without following a final symlink when
/// `follow` is false): `S_IFDIR`, `S_IFREG`, …; None when there is none.
pub fn file_type(path: &str, follow: bool) -> Option<u32> {
    let p = cstr(path);
    // SAFETY: plain C data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { core::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a live stat buffer.
    let rc = unsafe {
        if follow {
            libc::stat(p.as_ptr(), &mut st)
        } else {
            libc::lstat(p.as_ptr(), &mut st)
        }
    };
    (rc == 0).then_some(st.st_mode & libc::S_IFMT)
}

pub fn is_dir(path: &str) -> bool {
    file_type(path, true) == Some(libc::S_IFDIR)
}

/// Whether `path` is a file we may execute.
pub fn is_executable(path: &str) -> bool {
    let p = cstr(path);
    // SAFETY: a NUL-terminated path.
    file_type(path, true) == Some(libc::S_IFREG)
        && unsafe { libc::access(p.as_ptr(), libc::X_OK) } == 0
}

/// The names in a directory, `.` and `..` left out, sorted bytewise.
pub fn list_dir(path: &str) -> Result<Vec<String>, Errno> {
    let p = cstr(path);
    // SAFETY: a NUL-terminated path; the stream is closed below.
    let dir = unsafe { libc::opendir(p.as_ptr()) };
    if dir.is_null() {
        return Err(Errno::last());
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: a stream opendir returned and not closed yet.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the entry.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
        let name = name.to_string_lossy();
        if name != "." && name != ".." {
            names.push(name.into_owned());
        }
    }
    // SAFETY: as above, once.
    unsafe { libc::closedir(dir) };
    names.sort_unstable();
    Ok(names)
}

pub fn close(fd: Fd) {
    if fd >= 0 {
        // SAFETY: closing a descriptor we own.
        unsafe { libc::close(fd) };
    }
}

/// A close-on-exec, non-blocking pipe: (read end, write end). Only the
/// read end is non-blocking (the service writes to a blocking pipe).
pub fn pipe() -> Result<(Fd, Fd), Errno> {
    let mut fds = [0; 2];
    // SAFETY: a live array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    set_nonblocking(fds[0]);
    Ok((fds[0], fds[1]))
}

fn set_nonblocking(fd: Fd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

/// Reads what is there without waiting: Ok(0) at end of file, EAGAIN
/// when nothing is.
pub fn read(fd: Fd, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: a live buffer of its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(Errno::last())
    } else {
        Ok(n as usize)
    }
}

/// Writes all of `buf`, retrying on EINTR and short writes.
pub fn write_all(fd: Fd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: a live buffer of its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

/// Sends all of `buf` on a socket, without SIGPIPE when the peer left:
/// the init blocks every signal and forwards what it reads, so a client
/// hanging up must not turn into a SIGPIPE for the workload.
pub fn send_all(fd: Fd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: a live buffer of its length.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

fn sockaddr(path: &str) -> Result<(libc::sockaddr_un, libc::socklen_t), Errno> {
    // SAFETY: plain C data, for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { core::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = core::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// A unix socket of `kind` bound at `path` (a stale socket there is
/// replaced; anything else there is an error), mode 0600.
pub fn bind_unix(path: &str, kind: libc::c_int) -> Result<Fd, Errno> {
    let (addr, len) = sockaddr(path)?;
    match file_type(path, false) {
        None => {}
        Some(libc::S_IFSOCK) => {
            let p = cstr(path);
            // SAFETY: a NUL-terminated path.
            unsafe { libc::unlink(p.as_ptr()) };
        }
        Some(_) => return Err(Errno(libc::EEXIST)),
    }
    // SAFETY: plain socket creation.
    let fd = check(unsafe {
        libc::socket(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // Bound with umask 077: nobody else may connect between bind and chmod.
    // SAFETY: umask has no preconditions; the address is live.
    let rc = unsafe {
        let old = libc::umask(0o077);
        let rc = libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len);
        libc::umask(old);
        rc
    };
    if rc != 0 || (kind == libc::SOCK_STREAM && unsafe { libc::listen(fd, 16) } != 0) {
        let err = Errno::last();
        close(fd);
        return Err(err);
    }
    Ok(fd)
}

pub fn chown(path: &str, uid: u32, gid: u32) {
    let p = cstr(path);
    // SAFETY: a NUL-terminated path.
    unsafe { libc::chown(p.as_ptr(), uid, gid) };
}

pub fn unlink(path: &str) {
    let p = cstr(path);
    // SAFETY: a NUL-terminated path.
    unsafe { libc::unlink(p.as_ptr()) };
}

/// A connected stream socket to the unix socket at `path` (blocking).
pub fn connect_unix(path: &str) -> Result<Fd, Errno> {
    let (addr, len) = sockaddr(path)?;
    // SAFETY: plain socket creation; the address is live.
    let fd =
        check(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    if unsafe { libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) } != 0 {
        let err = Errno::last();
        close(fd);
        return Err(err);
    }
    Ok(fd)
}

/// Accepts one connection without waiting; with its peer's uid.
pub fn accept(fd: Fd) -> Option<(Fd, u32)> {
    // SAFETY: no address is asked for.
    let conn = unsafe {
        libc::accept4(
            fd,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if conn < 0 {
        return None;
    }
    // SAFETY: plain C data, for which all zeroes is a valid value.
    let mut cred: libc::ucred = unsafe { core::mem::zeroed() };
    let mut len = core::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a live ucred and its length.
    let rc = unsafe {
        libc::getsockopt(
            conn,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        close(conn);
        return None;
    }
    Some((conn, cred.uid))
}

/// Whether a TCP connect to 127.0.0.1:`port` succeeds (loopback answers
/// at once: accepted or refused).
pub fn tcp_accepts(port: u16) -> bool {
    // SAFETY: plain socket creation; the address is live; closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return false;
        }
        let mut addr: libc::sockaddr_in = core::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        let rc = libc::connect(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            core::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        libc::close(fd);
        rc == 0
    }
}

/// Waits for any of `fds` to be readable, at most `timeout_ms` (-1: for
/// ever). The revents are written back.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) {
    // SAFETY: a live array of pollfds of its length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
}

/// The user a service runs as: uid, gid.
pub fn resolve_user(spec: &str) -> Option<(u32, u32)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_file("/etc/passwd", 1 << 20).unwrap_or_default();
    let passwd = String::from_utf8_lossy(&passwd);
    let entry = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        let (uid, gid) = (
            f.get(2)?.parse::<u32>().ok()?,
            f.get(3)?.parse::<u32>().ok()?,
        );
        (f[0] == user || user.parse::<u32>() == Ok(uid)).then_some((uid, gid))
    });
    let (uid, gid) = match (entry, user.parse::<u32>()) {
        (Some(e), _) => e,
        (None, Ok(uid)) => (uid, uid),
        (None, Err(_)) => return None,
    };
    let gid = match group {
        None => gid,
        Some(g) => g.parse().ok().or_else(|| {
            let groups = read_file("/etc/group", 1 << 20).unwrap_or_default();
            String::from_utf8_lossy(&groups).lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.first() == Some(&g)).then(|| f.get(2)?.parse().ok())?
            })
        })?,
    };
    Some((uid, gid))
}

/// Everything the child of [`spawn`] needs, built before the fork.
pub struct Spawn {
    pub program: CString,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub workdir: Option<CString>,
    pub user: Option<(u32, u32)>,
    /// The descriptors for 0, 1 and 2 (-1: /dev/null for stdin, or as
    /// inherited for 1 and 2).
    pub stdio: [Fd; 3],
    /// A descriptor to give the child as another number (notification-fd).
    pub extra: Option<(Fd, i32)>,
    /// The signal mask to restore.
    pub mask: SigMask,
}

unsafe extern "C" {
    static environ: *const *const libc::c_char;
}

/// The process environment with `extra` (`K=V`) replacing or added.
pub fn environment(extra: &[CString]) -> Vec<CString> {
    let key = |e: &[u8]| e.split(|b| *b == b'=').next().unwrap_or_default().to_vec();
    let extra_keys: Vec<Vec<u8>> = extra.iter().map(|e| key(e.as_bytes())).collect();
    let mut out = Vec::new();
    // SAFETY: environ is a null-terminated array of C strings kept by the
    // C runtime; the single-threaded init does not change it.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p);
            if !extra_keys.contains(&key(entry.to_bytes())) {
                out.push(entry.to_owned());
            }
            p = p.add(1);
        }
    }
    out.extend(extra.iter().cloned());
    out
}

/// The program for `argv0`: itself when it has a `/`, else the first
/// executable of that name on `PATH` (of `env`), else itself.
pub fn find_program(argv0: &CStr, env: &[CString]) -> CString {
    let name = argv0.to_string_lossy();
    if name.contains('/') {
        return argv0.to_owned();
    }
    let path = env
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "/usr/local/bin:/bin:/usr/bin".into());
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = format!("{dir}/{name}");
        if is_executable(&candidate) {
            return cstr(&candidate);
        }
    }
    argv0.to_owned()
}

/// Forks and execs a service in a session of its own (so that its whole
/// process group can be signalled). A failed exec exits 127 (126 when the
/// file is there) after saying why on the service's stderr.
pub fn spawn(s: &Spawn) -> Result<Pid, Errno> {
    let argv: Vec<*const libc::c_char> = s
        .argv
        .iter()
        .map(|a| a.as_ptr())
        .chain([core::ptr::null()])
        .collect();
    let envp: Vec<*const libc::c_char> = s
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain([core::ptr::null()])
        .collect();
    // SAFETY: fork has no preconditions; the child only makes
    // async-signal-safe calls on memory prepared above, then execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid > 0 {
        return Ok(pid);
    }
    // SAFETY: the child, see above.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        for (target, fd) in s.stdio.iter().enumerate() {
            let fd = if *fd >= 0 {
                *fd
            } else if target == 0 {
                null
            } else {
                target as i32
            };
            if fd != target as i32 {
                libc::dup2(fd, target as i32);
            }
        }
        if null > 2 {
            libc::close(null);
        }
        if let Some((fd, as_fd)) = s.extra {
            if fd == as_fd {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else {
                libc::dup2(fd, as_fd);
            }
        }
        let fail = |what: &[u8]| -> ! {
            let errno = Errno::last();
            libc::write(2, what.as_ptr().cast(), what.len());
            let mut digits = [0u8; 12];
            let mut n = errno.0.unsigned_abs();
            let mut at = digits.len() - 1;
            digits[at] = b'\n';
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            libc::write(2, digits[at..].as_ptr().cast(), digits.len() - at);
            libc::_exit(if errno == Errno::ENOENT { 127 } else { 126 });
        };
        if let Some(dir) = &s.workdir
            && libc::chdir(dir.as_ptr()) != 0
        {
            fail(b"cradle-init: chdir to the workdir failed, errno ");
        }
        if let Some((uid, gid)) = s.user
            && (libc::setgroups(0, core::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0)
        {
            fail(b"cradle-init: switching user failed, errno ");
        }
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &s.mask.0 as *const u64,
            core::ptr::null_mut::<u64>(),
            8usize,
        );
        libc::execve(s.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(b"cradle-init: exec failed, errno ");
    }
}
