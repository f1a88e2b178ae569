//! The seam between the container's setup steps and the kernel: every
//! syscall the child makes between `clone` and `execve` goes through [`Sys`],
//! so the steps can be tested without root against [`fake::Fake`], which
//! records one ordered list of calls.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::convert::Infallible;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What to create at a mount target that does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
}

/// How a mount target inside the container's root is looked up. Neither
/// way leaves the root (openat2 RESOLVE_IN_ROOT); they differ in what the
/// image may do with symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// No symlink anywhere on the way (ELOOP): the system mounts (`/proc`,
    /// `/dev`, `/sys` and what lies below them), whose place the image must
    /// not choose (runc after CVE-2019-16884 and CVE-2019-19921).
    NoSymlinks,
    /// Symlinks are followed as if the root were `/`, as docker follows an
    /// image's `/etc/resolv.conf -> ../run/…`. A target that exists may lie
    /// on any mount inside the root; missing components are created only on
    /// the root's own filesystem or in the container's `/dev` (EXDEV
    /// elsewhere), so nothing is ever made in a volume's host directory.
    InRoot,
}

/// A Linux capability number (`CAP_CHOWN` = 0 …).
pub type Cap = u32;

pub trait Sys {
    /// mount(2) with host paths (the launcher's own state directory).
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// mount(2) onto `target` inside `root`, looked up as `resolve` says
    /// (never out of `root`), created as `node` when missing. `src` is a
    /// host path. A target that turns out to be `root` itself is EBUSY.
    #[allow(clippy::too_many_arguments)]
    fn mount_in(
        &self,
        root: &Path,
        target: &Path,
        node: Node,
        resolve: Resolve,
        src: Option<&Path>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno>;
    /// Binds `path` inside `root` (no symlink on the way) on itself,
    /// recursively: the first half of making it read-only.
    fn bind_on_itself_in(&self, root: &Path, path: &Path) -> Result<(), Errno>;
    /// The filesystem type (statfs(2) `f_type`) of `path` inside `root`, no
    /// symlink on the way: what a mount there really put there.
    fn fs_type_in(&self, root: &Path, path: &Path) -> Result<i64, Errno>;
    /// mknod(2) of a device `path` inside `root` (a character device when
    /// `mode` has only permission bits; S_IFBLK in it for a block one) (its parent
    /// without symlinks), then chmod to `mode` whatever the umask.
    fn mknod_in(&self, root: &Path, path: &Path, mode: u32, dev: u64) -> Result<(), Errno>;
    /// Writes one byte to `fd` and waits for one back (a step the parent
    /// does while the child waits).
    fn handshake(&self, fd: RawFd) -> Result<(), Errno>;
    /// Writes `contents` to the new or truncated file `path` inside `root`.
    fn write_in(&self, root: &Path, path: &Path, contents: &[u8]) -> Result<(), Errno>;
    /// mkdir -p of `path` inside `root`, resolved inside it.
    fn mkdir_in(&self, root: &Path, path: &Path) -> Result<(), Errno>;
    /// What `path` inside `root` is, None when it does not exist; a symlink
    /// on the way is an error (ELOOP), not "absent".
    fn kind_in(&self, root: &Path, path: &Path) -> Result<Option<Node>, Errno>;
    /// symlink(2) at `link` inside `root` (its parent without symlinks).
    fn symlink_in(&self, root: &Path, target: &str, link: &Path) -> Result<(), Errno>;
    fn umount2(&self, path: &Path, flags: MntFlags) -> Result<(), Errno>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno>;
    fn chroot(&self, path: &Path) -> Result<(), Errno>;
    /// The mount points of this mount namespace (mountinfo's fifth field,
    /// unescaped), in mountinfo's order (parents before children).
    fn mount_points(&self) -> Result<Vec<PathBuf>, Errno>;
    fn chdir(&self, path: &Path) -> Result<(), Errno>;
    fn getcwd(&self) -> Result<std::path::PathBuf, Errno>;
    fn sethostname(&self, name: &str) -> Result<(), Errno>;
    /// unshare(2): new namespaces for the calling process.
    fn unshare(&self, flags: nix::sched::CloneFlags) -> Result<(), Errno>;
    /// Sets the `lo` interface up (SIOCSIFFLAGS), without `ip`.
    fn loopback_up(&self) -> Result<(), Errno>;
    fn setsid(&self) -> Result<(), Errno>;
    /// A new pty from the container's own devpts (`/dev/ptmx` after the
    /// pivot): (master, slave).
    fn open_pty(&self) -> Result<(OwnedFd, OwnedFd), Errno>;
    /// Sends `fd` over the unix socket `socket` (SCM_RIGHTS).
    fn send_fd(&self, socket: RawFd, fd: RawFd) -> Result<(), Errno>;
    /// Makes `fd` the controlling terminal and stdin/stdout/stderr.
    fn set_ctty(&self, fd: RawFd) -> Result<(), Errno>;
    /// Drops every capability but `keep` from the bounding set.
    fn drop_bounding(&self, keep: &[Cap]) -> Result<(), Errno>;
    /// capset(2): effective, permitted, inheritable.
    fn set_caps(
        &self,
        effective: &[Cap],
        permitted: &[Cap],
        inheritable: &[Cap],
    ) -> Result<(), Errno>;
    fn clear_ambient(&self) -> Result<(), Errno>;
    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), Errno>;
    fn set_no_new_privs(&self) -> Result<(), Errno>;
    /// Copies what `path` inside `root` holds, when it is a directory, into
    /// the empty directory `dest` on the host: a named volume's first use.
    /// `path` is resolved inside `root`; below it nothing is followed
    /// (symlinks are copied as symlinks), and device nodes, FIFOs and
    /// sockets are left out.
    fn copy_up_in(&self, root: &Path, path: &Path, dest: &Path) -> Result<(), Errno>;
    /// setrlimit(2): `resource`'s soft and hard limit.
    fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno>;
    /// PR_SET_PDEATHSIG, so the container dies with a SIGKILLed launcher.
    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno>;
    /// Marks every fd from `first` up close-on-exec (close_range(2)).
    fn cloexec_from(&self, first: RawFd) -> Result<(), Errno>;
    fn apply_seccomp(&self, program: &[seccompiler::sock_filter]) -> Result<(), Errno>;
    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> Result<Infallible, Errno>;
    /// execveat(2) of the file open at `fd` (AT_EMPTY_PATH).
    fn execve_fd(&self, fd: RawFd, argv: &[CString], env: &[CString]) -> Result<Infallible, Errno>;
    /// `path` (inside the current root) opened without following a magic
    /// link, when it is a regular file holding a static ELF executable (no
    /// program interpreter); None otherwise.
    fn open_static_executable(&self, path: &Path) -> Option<OwnedFd>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

fn cpath(p: &Path) -> Result<CString, Errno> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// openat2(2) with RESOLVE_IN_ROOT (plus `resolve`): `rel` is resolved as if
/// `dirfd` were `/`, so neither `..` nor an absolute symlink can leave it.
fn open_in_root(dirfd: RawFd, rel: &Path, flags: i32, resolve: u64) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let rel = cpath(rel)?;
    // SAFETY: open_how is plain data; zero is its "nothing set" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS | resolve;
    // SAFETY: rel is a valid C string and how a valid open_how of the given size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// [`open_in_root`] with no symlink allowed on the way.
fn open_no_symlinks(dirfd: RawFd, rel: &Path, flags: i32) -> Result<OwnedFd, Errno> {
    open_in_root(dirfd, rel, flags, libc::RESOLVE_NO_SYMLINKS)
}

/// Roots kept open, by their host path.
type KeptRoots = Vec<(PathBuf, std::rc::Rc<OwnedFd>)>;

thread_local! {
    /// The roots `*_in` calls resolve in, kept open while a [`RootCache`]
    /// lives: None when off.
    static ROOTS: std::cell::RefCell<Option<KeptRoots>> = const { std::cell::RefCell::new(None) };
}

/// While one lives (on this thread), the `*_in` calls keep each root they
/// open instead of walking its host path again for every mount and file:
/// assembling a root makes some 60 of them. An open root goes stale when
/// something is mounted over it, so every call that changes mounts or
/// namespaces forgets the roots it could have covered: mount, umount2,
/// pivot_root, chroot and unshare all of them, a mount inside a root every
/// other one (one of them may lie below the new mount).
pub struct RootCache(());

impl RootCache {
    pub fn enable() -> RootCache {
        ROOTS.with(|r| *r.borrow_mut() = Some(Vec::new()));
        RootCache(())
    }
}

impl Drop for RootCache {
    fn drop(&mut self) {
        ROOTS.with(|r| *r.borrow_mut() = None);
    }
}

/// `root` opened as a directory: the kept one when a [`RootCache`] has it.
fn open_root(root: &Path) -> Result<std::rc::Rc<OwnedFd>, Errno> {
    let kept = ROOTS.with(|r| {
        r.borrow().as_ref().and_then(|roots| {
            roots
                .iter()
                .find(|(p, _)| p == root)
                .map(|(_, fd)| fd.clone())
        })
    });
    if let Some(fd) = kept {
        return Ok(fd);
    }
    let fd = std::rc::Rc::new(open_dir(root)?);
    ROOTS.with(|r| {
        if let Some(roots) = r.borrow_mut().as_mut() {
            roots.push((root.to_path_buf(), fd.clone()));
        }
    });
    Ok(fd)
}

/// Forgets every kept root but `keep`.
fn forget_roots(keep: Option<&Path>) {
    ROOTS.with(|r| {
        if let Some(roots) = r.borrow_mut().as_mut() {
            roots.retain(|(p, _)| Some(p.as_path()) == keep);
        }
    });
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    let c = cpath(path)?;
    // SAFETY: c is a valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The path relative to the root, without leading `/`.
fn relative(target: &Path) -> &Path {
    target.strip_prefix("/").unwrap_or(target)
}

/// `target` inside `root` with every symlink replaced by what it points to,
/// each resolved as if `root` were `/` (`..` stops at the root): the path a
/// missing mount target must be created at, so that a dangling symlink in
/// the image (`/etc/hostname -> /../../tmp/x`) leads to a file inside the
/// root rather than to an error or outside. (The "SecureJoin" of runc; the
/// opens that follow use RESOLVE_IN_ROOT anyway, so a race cannot escape.)
fn secure_join(root: &OwnedFd, target: &Path) -> Result<PathBuf, Errno> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    let mut todo: VecDeque<OsString> = VecDeque::new();
    let push_front = |todo: &mut VecDeque<OsString>, path: &Path| {
        for c in path.components().rev() {
            match c {
                Component::Normal(n) => todo.push_front(n.to_os_string()),
                Component::ParentDir => todo.push_front("..".into()),
                _ => {}
            }
        }
    };
    push_front(&mut todo, target);
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let parent =
            match open_in_root(root.as_raw_fd(), &done, libc::O_PATH | libc::O_DIRECTORY, 0) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    done.push(&c);
                    continue;
                }
                Err(e) => return Err(e),
            };
        let name = CString::new(c.as_bytes()).map_err(|_| Errno::EINVAL)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: readlinkat into a buffer of the given size.
        let n = unsafe {
            libc::readlinkat(
                parent.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            match Errno::last() {
                Errno::EINVAL | Errno::ENOENT => done.push(&c),
                e => return Err(e),
            }
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(Errno::ELOOP);
        }
        buf.truncate(n as usize);
        let link = PathBuf::from(std::ffi::OsStr::from_bytes(&buf));
        if link.is_absolute() {
            done = PathBuf::new();
        }
        push_front(&mut todo, &link);
    }
    Ok(done)
}

/// Creates `name` in the directory `parent` as `node`; one that exists is
/// left as it is.
fn create_node(parent: &OwnedFd, name: &std::ffi::OsStr, node: Node) -> Result<(), Errno> {
    let cname = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: parent is an open directory fd and cname a valid C string.
    let rc = unsafe {
        match node {
            Node::File => {
                let fd = libc::openat(
                    parent.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Node::Dir => libc::mkdirat(parent.as_raw_fd(), cname.as_ptr(), 0o755),
        }
    };
    if rc < 0 && Errno::last() != Errno::EEXIST {
        return Err(Errno::last());
    }
    Ok(())
}

/// Creates the missing components of the symlink-free `rel` below `base`:
/// directories, then `node`. Every parent is opened with `resolve` added
/// to RESOLVE_IN_ROOT.
fn create_below(base: &OwnedFd, rel: &Path, node: Node, resolve: u64) -> Result<(), Errno> {
    let parts: Vec<_> = rel.components().collect();
    let mut sofar = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else {
            return Err(Errno::EINVAL);
        };
        let last = i + 1 == parts.len();
        let parent = open_in_root(
            base.as_raw_fd(),
            &sofar,
            libc::O_PATH | libc::O_DIRECTORY,
            resolve,
        )?;
        create_node(&parent, name, if last { node } else { Node::Dir })?;
        sofar.push(name);
    }
    Ok(())
}

/// Opens `target` inside `root` as `resolve` says, creating what is missing:
/// directories for the parents, `node` for the last one.
fn ensure_in_root(
    root: &OwnedFd,
    target: &Path,
    node: Node,
    resolve: Resolve,
) -> Result<OwnedFd, Errno> {
    let rel = relative(target);
    match resolve {
        Resolve::NoSymlinks => match open_no_symlinks(root.as_raw_fd(), rel, libc::O_PATH) {
            Err(Errno::ENOENT) => {
                create_below(root, rel, node, libc::RESOLVE_NO_SYMLINKS)?;
                open_no_symlinks(root.as_raw_fd(), rel, libc::O_PATH)
            }
            other => other,
        },
        Resolve::InRoot => match open_in_root(root.as_raw_fd(), rel, libc::O_PATH, 0) {
            Err(Errno::ENOENT) => {
                let rel = secure_join(root, target)?;
                // The container's /dev is a tmpfs of ours: what is made there
                // (`-v /dev/log:/dev/log`) lands in no host directory.
                let dev = open_no_symlinks(root.as_raw_fd(), Path::new("dev"), libc::O_PATH);
                match (rel.strip_prefix("dev"), dev) {
                    (Ok(below), Ok(dev)) if !below.as_os_str().is_empty() && is_mount(&dev) => {
                        create_below(&dev, below, node, libc::RESOLVE_NO_XDEV)?;
                    }
                    _ => create_below(root, &rel, node, libc::RESOLVE_NO_XDEV)?,
                }
                open_in_root(root.as_raw_fd(), &rel, libc::O_PATH, 0)
            }
            other => other,
        },
    }
}

/// Whether `fd` is the top of a mount (statx STATX_ATTR_MOUNT_ROOT).
fn is_mount(fd: &OwnedFd) -> bool {
    // SAFETY: statx into a zeroed buffer of the right type.
    unsafe {
        let mut st: libc::statx = std::mem::zeroed();
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            0,
            &mut st,
        ) == 0
            && st.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
            && st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
    }
}

/// Whether two fds name the same inode.
fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    let stat = |fd: &OwnedFd| nix::sys::stat::fstat(fd).map(|s| (s.st_dev, s.st_ino));
    matches!((stat(a), stat(b)), (Ok(x), Ok(y)) if x == y)
}

/// Whether `file` is a 64-bit little-endian ELF executable with no
/// PT_INTERP program header (elf(5)): one the kernel runs without opening
/// any other file by path.
fn is_static_elf(file: &mut std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    const PT_INTERP: u32 = 3;
    let mut head = [0u8; 64];
    if file.read_exact_at(&mut head, 0).is_err()
        || head[..4] != *b"\x7fELF"
        || head[4] != 2
        || head[5] != 1
    {
        return false;
    }
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as usize;
    let phoff = u64::from_le_bytes(head[32..40].try_into().unwrap_or([0; 8])) as usize;
    let (phentsize, phnum) = (u16_at(&head, 54), u16_at(&head, 56));
    if phentsize < 4 || phnum == 0 || phnum > 64 || phoff > 1 << 20 {
        return false;
    }
    let mut table = vec![0u8; phentsize * phnum];
    let read = file.read_exact_at(&mut table, phoff as u64);
    read.is_ok()
        && table
            .chunks(phentsize)
            .all(|ph| u32::from_le_bytes([ph[0], ph[1], ph[2], ph[3]]) != PT_INTERP)
}

/// mountinfo's escapes (`\040` for a space …) undone (proc(5)).
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4);
        match digits {
            Some(d) if bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) => {
                out.push(d.iter().fold(0u8, |n, b| n.wrapping_mul(8) + (b - b'0')));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Mode and owner of `src` onto `dst`, without following either. An owner
/// that cannot be given (a user namespace without it mapped) is left.
fn copy_attributes(src: &Path, dst: &Path) -> Result<(), Errno> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(src).map_err(io_errno)?;
    match std::os::unix::fs::lchown(dst, Some(meta.uid()), Some(meta.gid())) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EINVAL)) => {}
        other => other.map_err(io_errno)?,
    }
    if !meta.file_type().is_symlink() {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_errno)?;
    }
    Ok(())
}

/// [`Sys::copy_up_in`]'s walk: directories, regular files and symlinks,
/// none followed.
fn copy_tree(src: &Path, dst: &Path) -> Result<(), Errno> {
    use std::os::unix::fs::OpenOptionsExt;
    for entry in std::fs::read_dir(src).map_err(io_errno)? {
        let entry = entry.map_err(io_errno)?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().map_err(io_errno)?;
        if kind.is_dir() {
            std::fs::create_dir(&to).map_err(io_errno)?;
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            let mut input = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&from)
                .map_err(io_errno)?;
            let mut output = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&to)
                .map_err(io_errno)?;
            std::io::copy(&mut input, &mut output).map_err(io_errno)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).map_err(io_errno)?;
            std::os::unix::fs::symlink(target, &to).map_err(io_errno)?;
        } else {
            continue;
        }
        copy_attributes(&from, &to)?;
    }
    Ok(())
}

fn check(rc: libc::c_int) -> Result<(), Errno> {
    if rc < 0 { Err(Errno::last()) } else { Ok(()) }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn cap_bits(caps: &[Cap]) -> [u32; 2] {
    let mut bits = [0u32; 2];
    for &c in caps {
        bits[(c / 32) as usize] |= 1 << (c % 32);
    }
    bits
}

/// The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap).
fn last_cap() -> Cap {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl Sys for Linux {
    fn mount(
        &self,
        src: Option<&Path>,
        dst: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        forget_roots(None);
        nix::mount::mount(src, dst, fstype, flags, data)
    }

    fn mount_in(
        &self,
        root: &Path,
        target: &Path,
        node: Node,
        resolve: Resolve,
        src: Option<&Path>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), Errno> {
        let rootfd = open_root(root)?;
        let fd = ensure_in_root(&rootfd, target, node, resolve)?;
        if same_file(&fd, &rootfd) {
            return Err(Errno::EBUSY);
        }
        forget_roots(Some(root));
        nix::mount::mount(src, fd_path(&fd).as_str(), fstype, flags, data)
    }

    fn bind_on_itself_in(&self, root: &Path, path: &Path) -> Result<(), Errno> {
        let rootfd = open_root(root)?;
        let fd = open_no_symlinks(rootfd.as_raw_fd(), relative(path), libc::O_PATH)?;
        let at = fd_path(&fd);
        // Bound on itself, the root is another mount than the one kept.
        forget_roots(None);
        nix::mount::mount(
            Some(at.as_str()),
            at.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
    }

    fn fs_type_in(&self, root: &Path, path: &Path) -> Result<i64, Errno> {
        let rootfd = open_root(root)?;
        let fd = open_no_symlinks(rootfd.as_raw_fd(), relative(path), libc::O_PATH)?;
        // The magic is an i64 with glibc, a u64 with musl.
        #[allow(clippy::unnecessary_cast)]
        nix::sys::statfs::fstatfs(&fd).map(|s| s.filesystem_type().0 as i64)
    }

    fn mknod_in(&self, root: &Path, path: &Path, mode: u32, dev: u64) -> Result<(), Errno> {
        let rootfd = open_root(root)?;
        let rel = relative(path);
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or(Errno::EINVAL)?;
        let dir = open_no_symlinks(rootfd.as_raw_fd(), parent, libc::O_PATH | libc::O_DIRECTORY)?;
        let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        // Permission bits alone: a character device.
        let kind = match mode & libc::S_IFMT {
            0 => libc::S_IFCHR,
            _ => 0,
        };
        // SAFETY: valid C string and an open directory fd; fchmodat does
        // not follow the node (it is not a symlink: we just made it).
        unsafe {
            check(libc::mknodat(dir.as_raw_fd(), n.as_ptr(), kind | mode, dev))?;
            check(libc::fchmodat(
                dir.as_raw_fd(),
                n.as_ptr(),
                mode & 0o7777,
                0,
            ))
        }
    }

    fn handshake(&self, fd: RawFd) -> Result<(), Errno> {
        let mut byte = [b'r'];
        // SAFETY: one-byte reads and writes on a socket we own.
        unsafe {
            if libc::write(fd, byte.as_ptr().cast(), 1) != 1 {
                return Err(Errno::last());
            }
            match libc::read(fd, byte.as_mut_ptr().cast(), 1) {
                1 => Ok(()),
                0 => Err(Errno::EPIPE),
                _ => Err(Errno::last()),
            }
        }
    }

    fn write_in(&self, root: &Path, path: &Path, contents: &[u8]) -> Result<(), Errno> {
        use std::io::Write;
        let rootfd = open_root(root)?;
        ensure_in_root(&rootfd, path, Node::File, Resolve::InRoot)?;
        let fd = open_in_root(
            rootfd.as_raw_fd(),
            relative(path),
            libc::O_WRONLY | libc::O_TRUNC | libc::O_NOFOLLOW,
            0,
        )?;
        std::fs::File::from(fd)
            .write_all(contents)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
    }

    fn mkdir_in(&self, root: &Path, path: &Path) -> Result<(), Errno> {
        let rootfd = open_root(root)?;
        ensure_in_root(&rootfd, path, Node::Dir, Resolve::InRoot).map(drop)
    }

    fn kind_in(&self, root: &Path, path: &Path) -> Result<Option<Node>, Errno> {
        let rootfd = open_root(root)?;
        let fd = match open_no_symlinks(rootfd.as_raw_fd(), relative(path), libc::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let stat = nix::sys::stat::fstat(&fd)?;
        let dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
        Ok(Some(if dir { Node::Dir } else { Node::File }))
    }

    fn symlink_in(&self, root: &Path, target: &str, link: &Path) -> Result<(), Errno> {
        let rootfd = open_root(root)?;
        let rel = relative(link);
        let parent = rel.parent().unwrap_or(Path::new(""));
        let name = rel.file_name().ok_or(Errno::EINVAL)?;
        let dir = open_no_symlinks(rootfd.as_raw_fd(), parent, libc::O_PATH | libc::O_DIRECTORY)?;
        let t = CString::new(target).map_err(|_| Errno::EINVAL)?;
        let n = CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)?;
        // SAFETY: valid C strings and an open directory fd.
        match check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) }) {
            Err(Errno::EEXIST) => Ok(()),
            other => other,
        }
    }

    fn umount2(&self, path: &Path, flags: MntFlags) -> Result<(), Errno> {
        forget_roots(None);
        nix::mount::umount2(path, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
        forget_roots(None);
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn chroot(&self, path: &Path) -> Result<(), Errno> {
        forget_roots(None);
        nix::unistd::chroot(path)
    }

    fn mount_points(&self) -> Result<Vec<PathBuf>, Errno> {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        Ok(text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(&unescape_octal(p))))
            .collect())
    }

    fn chdir(&self, path: &Path) -> Result<(), Errno> {
        nix::unistd::chdir(path)
    }

    fn getcwd(&self) -> Result<std::path::PathBuf, Errno> {
        nix::unistd::getcwd()
    }

    fn sethostname(&self, name: &str) -> Result<(), Errno> {
        nix::unistd::sethostname(name)
    }

    fn unshare(&self, flags: nix::sched::CloneFlags) -> Result<(), Errno> {
        forget_roots(None);
        nix::sched::unshare(flags)
    }

    fn loopback_up(&self) -> Result<(), Errno> {
        // SAFETY: a plain datagram socket, closed by OwnedFd.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if sock < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the kernel just gave us this fd.
        let sock = unsafe { OwnedFd::from_raw_fd(sock) };
        // SAFETY: ifreq is plain data; the name "lo" fits in IFNAMSIZ.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
        unsafe {
            check(libc::ioctl(
                sock.as_raw_fd(),
                libc::SIOCGIFFLAGS as _,
                &mut req,
            ))?;
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req))
        }
    }

    fn setsid(&self) -> Result<(), Errno> {
        nix::unistd::setsid().map(drop)
    }

    fn open_pty(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
        // SAFETY: opening a fixed path; the fd is owned below.
        let fd = unsafe {
            libc::open(
                c"/dev/ptmx".as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Errno::last());
        }
        // SAFETY: the kernel just gave us this fd.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        let unlock: libc::c_int = 0;
        // SAFETY: TIOCSPTLCK reads an int; TIOCGPTPEER opens the slave of
        // this very master, without a path lookup (Linux 4.13).
        unsafe {
            check(libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock))?;
            let slave = libc::ioctl(
                master.as_raw_fd(),
                libc::TIOCGPTPEER,
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            if slave < 0 {
                return Err(Errno::last());
            }
            Ok((master, OwnedFd::from_raw_fd(slave)))
        }
    }

    fn send_fd(&self, socket: RawFd, fd: RawFd) -> Result<(), Errno> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let fds = [fd];
        let iov = [std::io::IoSlice::new(b"t")];
        sendmsg::<()>(
            socket,
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .map(drop)
    }

    fn set_ctty(&self, fd: RawFd) -> Result<(), Errno> {
        // SAFETY: plain syscalls on an fd we own.
        unsafe {
            check(libc::ioctl(fd, libc::TIOCSCTTY, 0))?;
            for target in 0..3 {
                check(libc::dup2(fd, target))?;
            }
        }
        Ok(())
    }

    fn drop_bounding(&self, keep: &[Cap]) -> Result<(), Errno> {
        for cap in 0..=last_cap() {
            if !keep.contains(&cap) {
                // SAFETY: prctl with integer arguments.
                check(unsafe {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0)
                })?;
            }
        }
        Ok(())
    }

    fn set_caps(
        &self,
        effective: &[Cap],
        permitted: &[Cap],
        inheritable: &[Cap],
    ) -> Result<(), Errno> {
        let (e, p, i) = (
            cap_bits(effective),
            cap_bits(permitted),
            cap_bits(inheritable),
        );
        let mut header = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3: two 32-bit words
            pid: 0,
        };
        let data = [0, 1].map(|w| CapData {
            effective: e[w],
            permitted: p[w],
            inheritable: i[w],
        });
        // SAFETY: header and a two-element data array, as capset(2) v3 wants.
        check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) as libc::c_int })
    }

    fn clear_ambient(&self) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        })
    }

    fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), Errno> {
        // SAFETY: plain syscalls; groups outlives the call. The raw syscalls
        // act on this thread only, which is the whole process here (the child
        // of clone has one thread).
        unsafe {
            let set = check(
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) as libc::c_int,
            );
            // A single-id user namespace denies setgroups (the parent wrote
            // "deny" before the gid map); the process has no other group.
            let denied =
                std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
            if !(set == Err(Errno::EPERM) && denied) {
                set?;
            }
            check(libc::syscall(libc::SYS_setresgid, gid, gid, gid) as libc::c_int)?;
            check(libc::syscall(libc::SYS_setresuid, uid, uid, uid) as libc::c_int)
        }
    }

    fn set_no_new_privs(&self) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
    }

    fn copy_up_in(&self, root: &Path, path: &Path, dest: &Path) -> Result<(), Errno> {
        let rootfd = open_root(root)?;
        let dir = match open_in_root(
            rootfd.as_raw_fd(),
            relative(path),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(()),
            Err(e) => return Err(e),
        };
        // The directory's own path, symlinks resolved inside the root. No
        // process of the container runs yet: nothing can swap what lies
        // below it while it is walked.
        let real = std::fs::read_link(fd_path(&dir)).map_err(io_errno)?;
        if !real.starts_with(root) {
            return Err(Errno::EXDEV);
        }
        copy_attributes(&real, dest)?;
        copy_tree(&real, dest)
    }

    fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: a valid rlimit for the duration of the call.
        check(unsafe { libc::setrlimit(resource as _, &limit) })
    }

    fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno> {
        // SAFETY: prctl with integer arguments.
        check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })
    }

    fn cloexec_from(&self, first: RawFd) -> Result<(), Errno> {
        // SAFETY: close_range only changes fd flags.
        check(unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) as libc::c_int
        })
    }

    fn apply_seccomp(&self, program: &[seccompiler::sock_filter]) -> Result<(), Errno> {
        // Not seccompiler::apply_filter, which sets no_new_privs first:
        // whether to set it is `--security-opt no-new-privileges`'s call,
        // made by the caller. Without it the kernel asks for CAP_SYS_ADMIN.
        let len = u16::try_from(program.len()).map_err(|_| Errno::E2BIG)?;
        // seccompiler's sock_filter is the kernel's struct, as libc's is.
        let prog = libc::sock_fprog {
            len,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: a valid sock_fprog pointing at `program`, which outlives
        // the call; the kernel copies the filter.
        check(unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            ) as libc::c_int
        })
    }

    fn execve(&self, path: &CStr, argv: &[CString], env: &[CString]) -> Result<Infallible, Errno> {
        nix::unistd::execve(path, argv, env)
    }

    fn open_static_executable(&self, path: &Path) -> Option<OwnedFd> {
        let root = open_dir(Path::new("/")).ok()?;
        let fd = open_in_root(root.as_raw_fd(), relative(path), libc::O_RDONLY, 0).ok()?;
        let stat = nix::sys::stat::fstat(&fd).ok()?;
        let mut file = std::fs::File::from(fd);
        (stat.st_mode & libc::S_IFMT == libc::S_IFREG && is_static_elf(&mut file))
            .then(|| OwnedFd::from(file))
    }

    fn execve_fd(&self, fd: RawFd, argv: &[CString], env: &[CString]) -> Result<Infallible, Errno> {
        let argv: Vec<*const libc::c_char> = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let env: Vec<*const libc::c_char> = env
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        // SAFETY: null-terminated arrays of valid C strings that outlive
        // the call; on success it does not return.
        unsafe {
            libc::syscall(
                libc::SYS_execveat,
                fd,
                c"".as_ptr(),
                argv.as_ptr(),
                env.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
        }
        Err(Errno::last())
    }
}

#[cfg(test)]
mod elf_tests {
    use super::is_static_elf;
    use std::io::Write;

    /// An ELF64 little-endian header and program header table of `types`.
    fn elf(types: &[u32]) -> std::fs::File {
        let mut bytes = vec![0u8; 64];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[32..40].copy_from_slice(&64u64.to_le_bytes());
        bytes[54..56].copy_from_slice(&56u16.to_le_bytes());
        bytes[56..58].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            bytes.extend(ph);
        }
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        file
    }

    #[test]
    fn only_elf_without_an_interpreter_counts_as_static() {
        assert!(is_static_elf(&mut elf(&[1, 1])));
        // PT_INTERP: the kernel would open the interpreter by path.
        assert!(!is_static_elf(&mut elf(&[1, 3])));
        assert!(!is_static_elf(&mut elf(&[])));
        let mut script = tempfile::tempfile().unwrap();
        script.write_all(b"#!/proc/self/exe\n").unwrap();
        assert!(!is_static_elf(&mut script));
        let mut sh = std::fs::File::open("/bin/sh").unwrap();
        assert!(!is_static_elf(&mut sh), "/bin/sh is dynamic here");
    }
}

#[cfg(test)]
pub mod fake {
    //! A [`Sys`] that records every call, in order, and fails nothing.
    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Call {
        Mount {
            src: Option<PathBuf>,
            dst: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Symlink {
            target: String,
            link: PathBuf,
        },
        Mkdir(PathBuf),
        /// path, mode, device number
        Mknod(PathBuf, u32, u64),
        Write(PathBuf, String),
        Handshake(RawFd),
        OpenPty,
        Umount2(PathBuf, MntFlags),
        PivotRoot(PathBuf, PathBuf),
        Chroot(PathBuf),
        Chdir(PathBuf),
        Sethostname(String),
        Unshare(nix::sched::CloneFlags),
        LoopbackUp,
        Setsid,
        SetCtty(RawFd),
        DropBounding(Vec<Cap>),
        SetCaps(Vec<Cap>, Vec<Cap>, Vec<Cap>),
        ClearAmbient,
        SetIds(u32, u32, Vec<u32>),
        NoNewPrivs,
        Rlimit(u32, u64, u64),
        /// image path, volume directory
        CopyUp(PathBuf, PathBuf),
        ParentDeathSignal(i32),
        CloexecFrom(RawFd),
        Seccomp,
        Execve(String, Vec<String>),
    }

    #[derive(Default)]
    pub struct Fake {
        pub calls: RefCell<Vec<Call>>,
        pub cwd: RefCell<PathBuf>,
        /// Paths that [`Sys::kind_in`] reports as directories; every other
        /// path is a file.
        pub dirs: Vec<PathBuf>,
        /// Paths below which [`Sys::kind_in`] meets a symlink (ELOOP).
        pub symlinked: Vec<PathBuf>,
        /// Mount targets where [`Sys::fs_type_in`] finds another filesystem
        /// than the one mounted (as if the mount had landed elsewhere).
        pub impostors: Vec<PathBuf>,
        /// [`Sys::pivot_root`] fails with EINVAL (an initramfs root).
        pub pivot_fails: bool,
        /// What [`Sys::mount_points`] answers.
        pub mount_points: Vec<PathBuf>,
        /// Each [`Sys::mount_in`] target and how it was resolved.
        pub resolved: RefCell<Vec<(PathBuf, Resolve)>>,
        /// Each [`Sys::mount_in`] target and the filesystem type mounted.
        pub mounted: RefCell<Vec<(PathBuf, String)>>,
    }

    impl Fake {
        pub fn calls(&self) -> Vec<Call> {
            self.calls.borrow().clone()
        }
        fn push(&self, call: Call) -> Result<(), Errno> {
            self.calls.borrow_mut().push(call);
            Ok(())
        }
    }

    fn own(p: Option<&Path>) -> Option<PathBuf> {
        p.map(Path::to_path_buf)
    }

    impl Sys for Fake {
        fn mount(
            &self,
            src: Option<&Path>,
            dst: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> Result<(), Errno> {
            self.push(Call::Mount {
                src: own(src),
                dst: dst.to_path_buf(),
                fstype: fstype.map(String::from),
                flags,
                data: data.map(String::from),
            })
        }
        fn mount_in(
            &self,
            root: &Path,
            target: &Path,
            _node: Node,
            resolve: Resolve,
            src: Option<&Path>,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> Result<(), Errno> {
            self.resolved
                .borrow_mut()
                .push((target.to_path_buf(), resolve));
            if resolve == Resolve::NoSymlinks
                && self.symlinked.iter().any(|d| target.starts_with(d))
            {
                return Err(Errno::ELOOP);
            }
            if let Some(fstype) = fstype {
                self.mounted
                    .borrow_mut()
                    .push((target.to_path_buf(), fstype.to_string()));
            }
            self.mount(src, &root.join(relative(target)), fstype, flags, data)
        }
        fn bind_on_itself_in(&self, root: &Path, path: &Path) -> Result<(), Errno> {
            let at = root.join(relative(path));
            self.mount(
                Some(&at),
                &at,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
        }
        fn fs_type_in(&self, _root: &Path, path: &Path) -> Result<i64, Errno> {
            let mounted = self.mounted.borrow();
            let fstype = mounted
                .iter()
                .rev()
                .find(|(p, _)| p == path)
                .map(|(_, t)| t.as_str());
            Ok(match fstype {
                _ if self.impostors.iter().any(|p| p == path) => 0x6969, // NFS
                Some("proc") => libc::PROC_SUPER_MAGIC,
                Some("sysfs") => libc::SYSFS_MAGIC,
                Some("tmpfs") => libc::TMPFS_MAGIC,
                _ => 0,
            })
        }
        fn mknod_in(&self, root: &Path, path: &Path, mode: u32, dev: u64) -> Result<(), Errno> {
            self.push(Call::Mknod(root.join(relative(path)), mode, dev))
        }
        fn handshake(&self, fd: RawFd) -> Result<(), Errno> {
            self.push(Call::Handshake(fd))
        }
        fn write_in(&self, root: &Path, path: &Path, contents: &[u8]) -> Result<(), Errno> {
            self.push(Call::Write(
                root.join(relative(path)),
                String::from_utf8_lossy(contents).into_owned(),
            ))
        }
        fn mkdir_in(&self, root: &Path, path: &Path) -> Result<(), Errno> {
            self.push(Call::Mkdir(root.join(relative(path))))
        }
        fn kind_in(&self, _root: &Path, path: &Path) -> Result<Option<Node>, Errno> {
            if self.symlinked.iter().any(|d| path.starts_with(d)) {
                return Err(Errno::ELOOP);
            }
            Ok(Some(if self.dirs.iter().any(|d| d == path) {
                Node::Dir
            } else {
                Node::File
            }))
        }
        fn symlink_in(&self, root: &Path, target: &str, link: &Path) -> Result<(), Errno> {
            self.push(Call::Symlink {
                target: target.into(),
                link: root.join(relative(link)),
            })
        }
        fn umount2(&self, path: &Path, flags: MntFlags) -> Result<(), Errno> {
            self.push(Call::Umount2(path.into(), flags))
        }
        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), Errno> {
            self.push(Call::PivotRoot(new_root.into(), put_old.into()))?;
            match self.pivot_fails {
                true => Err(Errno::EINVAL),
                false => Ok(()),
            }
        }
        fn chroot(&self, path: &Path) -> Result<(), Errno> {
            self.push(Call::Chroot(path.into()))
        }
        fn mount_points(&self) -> Result<Vec<PathBuf>, Errno> {
            Ok(self.mount_points.clone())
        }
        fn chdir(&self, path: &Path) -> Result<(), Errno> {
            *self.cwd.borrow_mut() = path.into();
            self.push(Call::Chdir(path.into()))
        }
        fn getcwd(&self) -> Result<PathBuf, Errno> {
            Ok(self.cwd.borrow().clone())
        }
        fn sethostname(&self, name: &str) -> Result<(), Errno> {
            self.push(Call::Sethostname(name.into()))
        }
        fn unshare(&self, flags: nix::sched::CloneFlags) -> Result<(), Errno> {
            self.push(Call::Unshare(flags))
        }
        fn loopback_up(&self) -> Result<(), Errno> {
            self.push(Call::LoopbackUp)
        }
        fn setsid(&self) -> Result<(), Errno> {
            self.push(Call::Setsid)
        }
        fn set_ctty(&self, fd: RawFd) -> Result<(), Errno> {
            self.push(Call::SetCtty(fd))
        }
        fn open_pty(&self) -> Result<(OwnedFd, OwnedFd), Errno> {
            self.push(Call::OpenPty)?;
            Err(Errno::ENOTTY)
        }
        fn send_fd(&self, _socket: RawFd, _fd: RawFd) -> Result<(), Errno> {
            Ok(())
        }
        fn drop_bounding(&self, keep: &[Cap]) -> Result<(), Errno> {
            self.push(Call::DropBounding(keep.to_vec()))
        }
        fn set_caps(&self, e: &[Cap], p: &[Cap], i: &[Cap]) -> Result<(), Errno> {
            self.push(Call::SetCaps(e.to_vec(), p.to_vec(), i.to_vec()))
        }
        fn clear_ambient(&self) -> Result<(), Errno> {
            self.push(Call::ClearAmbient)
        }
        fn set_ids(&self, uid: u32, gid: u32, groups: &[u32]) -> Result<(), Errno> {
            self.push(Call::SetIds(uid, gid, groups.to_vec()))
        }
        fn set_no_new_privs(&self) -> Result<(), Errno> {
            self.push(Call::NoNewPrivs)
        }
        fn set_rlimit(&self, resource: u32, soft: u64, hard: u64) -> Result<(), Errno> {
            self.push(Call::Rlimit(resource, soft, hard))
        }
        fn copy_up_in(&self, root: &Path, path: &Path, dest: &Path) -> Result<(), Errno> {
            self.push(Call::CopyUp(root.join(relative(path)), dest.into()))
        }
        fn set_parent_death_signal(&self, sig: i32) -> Result<(), Errno> {
            self.push(Call::ParentDeathSignal(sig))
        }
        fn cloexec_from(&self, first: RawFd) -> Result<(), Errno> {
            self.push(Call::CloexecFrom(first))
        }
        fn apply_seccomp(&self, _: &[seccompiler::sock_filter]) -> Result<(), Errno> {
            self.push(Call::Seccomp)
        }
        fn execve(
            &self,
            path: &CStr,
            argv: &[CString],
            _env: &[CString],
        ) -> Result<Infallible, Errno> {
            self.push(Call::Execve(
                path.to_string_lossy().into(),
                argv.iter().map(|a| a.to_string_lossy().into()).collect(),
            ))?;
            Err(Errno::ENOSYS)
        }
        fn open_static_executable(&self, _path: &Path) -> Option<OwnedFd> {
            None
        }
        fn execve_fd(
            &self,
            fd: RawFd,
            argv: &[CString],
            _env: &[CString],
        ) -> Result<Infallible, Errno> {
            self.push(Call::Execve(
                format!("fd:{fd}"),
                argv.iter().map(|a| a.to_string_lossy().into()).collect(),
            ))?;
            Err(Errno::ENOSYS)
        }
    }
}
