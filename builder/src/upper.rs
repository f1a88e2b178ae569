//! Upper step: what a `[[run]]` step changed, read from its overlay upper
//! directory, as one OCI layer. Overlayfs's forms become OCI's: a whiteout
//! (a character device 0/0) is an empty `.wh.NAME`, an opaque directory
//! (`trusted.overlay.opaque`, or `user.overlay.opaque` rootless, = `y`)
//! gets a `.wh..wh..opq` entry first; overlayfs's own attributes are never
//! recorded. Entries as every layer of ours has them: sorted by name,
//! parents first, numeric owners as the container saw them, mtimes clamped
//! to the epoch, the same gzip as `pack`.
//!
//! The directory was written by the image's own code and is hostile: it is
//! walked by file descriptor (`openat` beneath the directory's fd, never
//! through a symlink), a symlink is recorded as its target text, a FIFO is
//! not opened for reading, a device node other than a whiteout is refused
//! unless a container with real root made it, and the files must add up to
//! no more than a bound (a sparse 1 TB file is refused by its size, before
//! a byte of it is read).

use crate::error::{Error, Result};
use crate::pack::{self, Blobs, LayerBlob, Tar};
use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Entries one step may leave, at most.
pub const MAX_ENTRIES: usize = 1_000_000;

/// How the container's ids appear on the host: what a rootless sandbox's
/// files are owned by outside its user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMap {
    /// No user namespace (the builder is root): ids as they are.
    Host,
    /// Root inside is `uid`/`gid` outside, and ids 1.. inside are the
    /// subordinate ranges `(start, count)` (one id alone when `None`).
    Rootless {
        uid: u32,
        gid: u32,
        uids: Option<(u32, u32)>,
        gids: Option<(u32, u32)>,
    },
}

impl IdMap {
    /// The container's id for the host's `id`; `None` for an id the
    /// namespace does not map (no container could have made it).
    pub fn inside(&self, id: u32, is_uid: bool) -> Option<u32> {
        match self {
            IdMap::Host => Some(id),
            IdMap::Rootless {
                uid,
                gid,
                uids,
                gids,
            } => {
                let (own, range) = if is_uid { (uid, uids) } else { (gid, gids) };
                if id == *own {
                    return Some(0);
                }
                let (start, count) = (*range)?;
                (id >= start && id - start < count).then(|| id - start + 1)
            }
        }
    }

    fn rootless(&self) -> bool {
        !matches!(self, IdMap::Host)
    }
}

/// What the layer is made under.
#[derive(Debug, Clone)]
pub struct Options {
    /// Mtimes later than this are clamped to it.
    pub epoch: u64,
    /// Regular files (hard links once) may add up to this many bytes.
    pub max_size: u64,
    pub ids: IdMap,
    /// Says which step, for errors: `step 2 (RUN …)`.
    pub step: String,
}

/// Paths the launcher makes on the image's own filesystem as mount points
/// (launcher/src/rootfs/files.rs, dev.rs, proc.rs, sysfs.rs): what the step
/// writes there lands in the mount, so an entry here is the launcher's
/// empty placeholder, never the step's work, and is left out of the layer.
const MOUNT_POINTS: [&str; 7] = [
    "sbin/cradle-init",
    "etc/hosts",
    "etc/hostname",
    "etc/resolv.conf",
    "dev",
    "proc",
    "sys",
];

/// The changes in `upper` as a layer in `blobs`.
pub fn layer(upper: &Path, blobs: &Blobs, opts: &Options) -> Result<LayerBlob> {
    let root = open_dir_at(None, upper).map_err(Error::io("opening", upper))?;
    pack::write_layer(blobs, |tar| {
        let mut walk = Walk {
            tar,
            opts,
            upper,
            links: HashMap::new(),
            size: 0,
            entries: 0,
        };
        walk.dir(&root, Path::new(""))
    })
}

struct Walk<'a> {
    tar: &'a mut Tar,
    opts: &'a Options,
    upper: &'a Path,
    /// (dev, ino) of a file with several links → its first name.
    links: HashMap<(u64, u64), PathBuf>,
    size: u64,
    entries: usize,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &File, rel: &Path) -> Result<()> {
        let path = self.upper.join(rel);
        let mut names = list(dir).map_err(Error::io("listing", &path))?;
        // Byte order: the same on every machine and locale.
        names.sort();
        for name in names {
            let rel = rel.join(&name);
            let st = stat_at(dir, &name).map_err(Error::io("reading", self.upper.join(&rel)))?;
            let kind = st.st_mode & libc::S_IFMT;
            if is_mount_point(&rel, kind, st.st_size) {
                continue;
            }
            self.count(&rel)?;
            match kind {
                libc::S_IFCHR if st.st_rdev == 0 => self.whiteout(&rel, &st)?,
                libc::S_IFDIR => {
                    let sub = open_dir_at(Some(dir), Path::new(&name))
                        .or_else(|e| self.retry_readable(dir, &name, &st, e, 0o500, true))
                        .map_err(Error::io("opening", self.upper.join(&rel)))?;
                    let xattrs = self.xattrs(dir, &name, &rel)?;
                    let opaque = self.check_overlay_attributes(&xattrs, &rel)?;
                    if !opaque && holds_only_mount_points(&sub, &rel) {
                        continue;
                    }
                    self.append(&rel, &st, tar::EntryType::Directory, &xattrs)?;
                    if opaque {
                        self.opaque(&rel, &st)?;
                    }
                    self.dir(&sub, &rel)?;
                }
                libc::S_IFREG => self.file(dir, &name, &rel, &st)?,
                libc::S_IFLNK => {
                    let target = read_link_at(dir, &name)
                        .map_err(Error::io("reading the symlink", self.upper.join(&rel)))?;
                    let mut header = self.header(tar::EntryType::Symlink, &st, &rel)?;
                    self.tar
                        .append_link(&mut header, &rel, Path::new(&target))
                        .map_err(Error::io("adding to the layer", self.upper.join(&rel)))?;
                }
                libc::S_IFIFO => {
                    let xattrs = self.xattrs(dir, &name, &rel)?;
                    self.check_overlay_attributes(&xattrs, &rel)?;
                    self.append(&rel, &st, tar::EntryType::Fifo, &xattrs)?;
                }
                libc::S_IFCHR | libc::S_IFBLK => self.device(dir, &name, &rel, &st)?,
                // A socket a daemon of the step left bound cannot be
                // archived (tar and docker skip them too).
                _ => {}
            }
        }
        Ok(())
    }

    fn count(&mut self, rel: &Path) -> Result<()> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(self.refuse(
                rel,
                format!("the step leaves more than the limit of {MAX_ENTRIES} entries"),
            ));
        }
        Ok(())
    }

    fn refuse(&self, rel: &Path, what: String) -> Error {
        Error::RunLayer {
            step: self.opts.step.clone(),
            file: Path::new("/").join(rel),
            what,
        }
    }

    /// A rootless builder owns every file of the upper directory but may
    /// still be denied one the container made `0000`: it gives itself the
    /// permission `bits` on it (the directory is thrown away afterwards)
    /// and opens it again. As root, or for any other error, `err` stands.
    fn retry_readable(
        &self,
        dir: &File,
        name: &OsStr,
        st: &libc::stat,
        err: io::Error,
        bits: u32,
        is_dir: bool,
    ) -> io::Result<File> {
        if err.raw_os_error() != Some(libc::EACCES) || !self.opts.ids.rootless() {
            return Err(err);
        }
        let c_name = cstr(name)?;
        // SAFETY: dir is an open directory fd; c_name is NUL-terminated.
        // fchmodat follows a symlink, but `name` was just stat'ed as no
        // symlink, and the sandbox that wrote the directory is gone.
        let rc = unsafe {
            libc::fchmodat(
                dir.as_raw_fd(),
                c_name.as_ptr(),
                (st.st_mode & 0o7777) | bits,
                0,
            )
        };
        if rc != 0 {
            return Err(err);
        }
        match is_dir {
            true => open_dir_at(Some(dir), Path::new(name)),
            false => open_file_at(dir, name),
        }
    }

    fn file(&mut self, dir: &File, name: &OsStr, rel: &Path, st: &libc::stat) -> Result<()> {
        let path = self.upper.join(rel);
        let xattrs = self.xattrs(dir, name, rel)?;
        self.check_overlay_attributes(&xattrs, rel)?;
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1
            && let Some(first) = self.links.get(&key).cloned()
        {
            let mut header = self.header(tar::EntryType::Link, st, rel)?;
            return self
                .tar
                .append_link(&mut header, rel, &first)
                .map_err(Error::io("adding to the layer", &path));
        }
        let size = st.st_size.max(0) as u64;
        self.size = self.size.saturating_add(size);
        if self.size > self.opts.max_size {
            return Err(self.refuse(
                rel,
                format!(
                    "it takes the step's layer past the limit of {} bytes (CRADLE_MAX_COPY_SIZE); it is {size} bytes",
                    self.opts.max_size
                ),
            ));
        }
        let file = open_file_at(dir, name)
            .or_else(|e| self.retry_readable(dir, name, st, e, 0o400, false))
            .map_err(Error::io("opening", &path))?;
        // The file opened must be the one stat'ed (nothing swapped it).
        let opened = file.metadata().map_err(Error::io("reading", &path))?;
        use std::os::unix::fs::MetadataExt;
        if opened.ino() != st.st_ino || opened.dev() != st.st_dev || !opened.is_file() {
            return Err(self.refuse(rel, "it changed while the layer was made".into()));
        }
        if st.st_nlink > 1 {
            self.links.insert(key, rel.to_path_buf());
        }
        let mut header = self.header(tar::EntryType::Regular, st, rel)?;
        self.pax(&xattrs, rel)?;
        header.set_size(size);
        let reader = ExactLen {
            inner: io::BufReader::with_capacity((size as usize).clamp(512, 256 * 1024), file)
                .take(size),
            left: size,
        };
        self.tar
            .append_data(&mut header, rel, reader)
            .map_err(Error::io("adding to the layer", &path))
    }

    fn device(&mut self, dir: &File, name: &OsStr, rel: &Path, st: &libc::stat) -> Result<()> {
        // Only a container with real root (CAP_MKNOD in the host's user
        // namespace) can make a device node; a user namespace cannot, so one
        // in a rootless sandbox's upper came from elsewhere. Kept as root
        // (docker keeps them too; the launcher's device rules stop their
        // use in a container), refused rootless.
        if self.opts.ids.rootless() {
            return Err(self.refuse(
                rel,
                "it is a device node, which a rootless step cannot make".into(),
            ));
        }
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFBLK => tar::EntryType::Block,
            _ => tar::EntryType::Char,
        };
        let xattrs = self.xattrs(dir, name, rel)?;
        self.check_overlay_attributes(&xattrs, rel)?;
        let mut header = self.header(kind, st, rel)?;
        let failed = Error::io("adding to the layer", self.upper.join(rel));
        header
            .set_device_major(libc::major(st.st_rdev))
            .and_then(|()| header.set_device_minor(libc::minor(st.st_rdev)))
            .map_err(Error::io("adding to the layer", self.upper.join(rel)))?;
        self.pax(&xattrs, rel)?;
        self.tar
            .append_data(&mut header, rel, io::empty())
            .map_err(failed)
    }

    /// A whiteout: `.wh.NAME` beside where NAME was.
    fn whiteout(&mut self, rel: &Path, st: &libc::stat) -> Result<()> {
        let name = rel.file_name().unwrap_or_default();
        let mut marker = OsString::from(".wh.");
        marker.push(name);
        let at = rel.with_file_name(marker);
        self.marker(&at, st)
    }

    fn opaque(&mut self, rel: &Path, st: &libc::stat) -> Result<()> {
        self.marker(&rel.join(".wh..wh..opq"), st)
    }

    fn marker(&mut self, at: &Path, st: &libc::stat) -> Result<()> {
        let mtime = (st.st_mtime.max(0) as u64).min(self.opts.epoch);
        let mut header = pack::header(tar::EntryType::Regular, 0o644, (0, 0), mtime);
        self.tar
            .append_data(&mut header, at, io::empty())
            .map_err(Error::io("adding to the layer", self.upper.join(at)))
    }

    fn append(
        &mut self,
        rel: &Path,
        st: &libc::stat,
        kind: tar::EntryType,
        xattrs: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let mut header = self.header(kind, st, rel)?;
        self.pax(xattrs, rel)?;
        self.tar
            .append_data(&mut header, rel, io::empty())
            .map_err(Error::io("adding to the layer", self.upper.join(rel)))
    }

    fn header(&self, kind: tar::EntryType, st: &libc::stat, rel: &Path) -> Result<tar::Header> {
        let uid = self.opts.ids.inside(st.st_uid, true);
        let gid = self.opts.ids.inside(st.st_gid, false);
        let (Some(uid), Some(gid)) = (uid, gid) else {
            return Err(self.refuse(
                rel,
                format!(
                    "it is owned by {}:{} on this machine, which the sandbox's user namespace does not map",
                    st.st_uid, st.st_gid
                ),
            ));
        };
        let mtime = (st.st_mtime.max(0) as u64).min(self.opts.epoch);
        Ok(pack::header(
            kind,
            st.st_mode & 0o7777,
            (u64::from(uid), u64::from(gid)),
            mtime,
        ))
    }

    fn pax(&mut self, xattrs: &[(String, Vec<u8>)], rel: &Path) -> Result<()> {
        let kept: Vec<(String, &[u8])> = xattrs
            .iter()
            .filter(|(name, _)| keeps_xattr(name))
            .map(|(name, value)| (format!("SCHILY.xattr.{name}"), value.as_slice()))
            .collect();
        if kept.is_empty() {
            return Ok(());
        }
        self.tar
            .append_pax_extensions(kept.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(Error::io("adding to the layer", self.upper.join(rel)))
    }

    /// The extended attributes of `name` in `dir`, sorted, not following a
    /// symlink: read by `/proc/self/fd/DIR/NAME` with the `l` calls, so
    /// that neither a device is opened nor a path outside is resolved.
    fn xattrs(&self, dir: &File, name: &OsStr, rel: &Path) -> Result<Vec<(String, Vec<u8>)>> {
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.as_bytes());
        let path = OsString::from_vec(path);
        read_xattrs(Path::new(&path)).map_err(Error::io(
            "reading extended attributes of",
            self.upper.join(rel),
        ))
    }

    /// Checks overlayfs's attributes on an entry (those of the prefix the
    /// launcher's overlay used) and says whether the directory is opaque.
    /// A redirect or metacopy entry is refused: its content or name lives
    /// in a lower layer, which a layer of its own cannot say.
    fn check_overlay_attributes(&self, xattrs: &[(String, Vec<u8>)], rel: &Path) -> Result<bool> {
        let prefix = match self.opts.ids.rootless() {
            true => "user.overlay.",
            false => "trusted.overlay.",
        };
        let mut opaque = false;
        for (name, value) in xattrs {
            let Some(attr) = name.strip_prefix(prefix) else {
                continue;
            };
            match attr {
                "opaque" => opaque = value.as_slice() == b"y",
                "redirect" | "metacopy" => {
                    return Err(self.refuse(
                        rel,
                        format!("overlayfs marked it `{attr}`, which a layer cannot hold"),
                    ));
                }
                _ => {}
            }
        }
        Ok(opaque)
    }
}

/// Reads exactly the length the header says: a file that shrank (it cannot,
/// the sandbox is gone, but the tar would be corrupt) is an error.
struct ExactLen<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactLen<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The overlay's own attributes are the filesystem's bookkeeping, and an
/// SELinux label belongs to the build machine: neither goes in a layer. A
/// `user.overlay.` attribute the step set itself would turn into an opaque
/// directory or a redirect for a rootless runtime that unpacks the layer.
fn keeps_xattr(name: &str) -> bool {
    !(name.starts_with("trusted.overlay.")
        || name.starts_with("user.overlay.")
        || name == "security.selinux")
}

/// True for `etc` or `sbin` holding nothing but the launcher's mount
/// points: the overlay copied the directory up (or made it) for them alone,
/// not for the step.
fn holds_only_mount_points(dir: &File, rel: &Path) -> bool {
    if !MOUNT_POINTS
        .iter()
        .any(|p| Path::new(p).parent() == Some(rel))
    {
        return false;
    }
    let Ok(names) = list(dir) else {
        return false;
    };
    names.iter().all(|name| {
        stat_at(dir, name)
            .is_ok_and(|st| is_mount_point(&rel.join(name), st.st_mode & libc::S_IFMT, st.st_size))
    })
}

fn is_mount_point(rel: &Path, kind: u32, size: i64) -> bool {
    let Some(text) = rel.to_str() else {
        return false;
    };
    match MOUNT_POINTS.iter().position(|p| *p == text) {
        // Files: only the empty placeholder; directories: the mount's own.
        Some(i) if i < 4 => kind == libc::S_IFREG && size == 0,
        Some(_) => kind == libc::S_IFDIR,
        None => false,
    }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn stat_at(dir: &File, name: &OsStr) -> io::Result<libc::stat> {
    let c_name = cstr(name)?;
    // SAFETY: zeroed is a valid libc::stat; the fd and name are live.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn open_at(dir: Option<&File>, name: &Path, flags: libc::c_int) -> io::Result<File> {
    let c_name = cstr(name.as_os_str())?;
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `at` is AT_FDCWD or an open directory fd; c_name is
    // NUL-terminated.
    let fd = unsafe {
        libc::openat(
            at,
            c_name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn open_dir_at(dir: Option<&File>, name: &Path) -> io::Result<File> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// A regular file, opened without blocking (a FIFO swapped in is not
/// waited on) and without becoming a controlling terminal.
fn open_file_at(dir: &File, name: &OsStr) -> io::Result<File> {
    open_at(
        Some(dir),
        Path::new(name),
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
    )
}

fn read_link_at(dir: &File, name: &OsStr) -> io::Result<OsString> {
    let c_name = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: the fd, name and buffer are live; the length is the buffer's.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsString::from_vec(buf))
}

/// The names in `dir` but `.` and `..`, read through a duplicate of its fd.
fn list(dir: &File) -> io::Result<Vec<OsString>> {
    // SAFETY: dup of an open fd; fdopendir takes the duplicate, closedir
    // closes it.
    let fd = unsafe { libc::dup(dir.as_raw_fd()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let stream = unsafe { libc::fdopendir(fd) };
    if stream.is_null() {
        let err = io::Error::last_os_error();
        unsafe { libc::close(fd) };
        return Err(err);
    }
    // The duplicate shares the offset: start from the beginning.
    unsafe { libc::rewinddir(stream) };
    let mut names = Vec::new();
    loop {
        // SAFETY: errno is reset to tell the end from an error.
        unsafe { *libc::__errno_location() = 0 };
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            let errno = io::Error::last_os_error();
            unsafe { libc::closedir(stream) };
            return match errno.raw_os_error() {
                Some(0) | None => Ok(names),
                _ => Err(errno),
            };
        }
        // SAFETY: readdir returned a live entry with a NUL-terminated name.
        let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
}

/// The extended attributes of `path`, not following a symlink, sorted by
/// name; one listed and then gone (or unreadable by us) is left out.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let c_path = cstr(path.as_os_str())?;
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: c_path is NUL-terminated; names is a live buffer of its length.
    let len = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(err),
        };
    }
    let mut found = Vec::new();
    for name in names[..len as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let c_name = CString::new(name)?;
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: both strings are NUL-terminated; value is a live buffer.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            // Listed, then gone or not readable by us (a trusted.* as a user).
            if matches!(err.raw_os_error(), Some(libc::ENODATA | libc::EPERM)) {
                continue;
            }
            return Err(err);
        }
        value.truncate(n as usize);
        found.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootless_ids_map_back_to_what_the_container_saw() {
        let ids = IdMap::Rootless {
            uid: 1000,
            gid: 1001,
            uids: Some((100_000, 65536)),
            gids: None,
        };
        let cases: &[(u32, bool, Option<u32>)] = &[
            (1000, true, Some(0)),
            (100_000, true, Some(1)),
            (100_032, true, Some(33)),
            (165_535, true, Some(65536)),
            (165_536, true, None),
            (0, true, None),
            (1001, false, Some(0)),
            (1000, false, None),
            (100_000, false, None),
        ];
        for &(id, is_uid, want) in cases {
            assert_eq!(ids.inside(id, is_uid), want, "{id} uid={is_uid}");
        }
        assert_eq!(IdMap::Host.inside(33, true), Some(33));
    }

    #[test]
    fn only_the_launchers_empty_placeholders_are_left_out() {
        let cases: &[(&str, u32, i64, bool)] = &[
            ("etc/hosts", libc::S_IFREG, 0, true),
            ("etc/hosts", libc::S_IFREG, 9, false),
            ("sbin/cradle-init", libc::S_IFREG, 0, true),
            ("proc", libc::S_IFDIR, 0, true),
            ("proc", libc::S_IFREG, 0, false),
            ("etc/passwd", libc::S_IFREG, 0, false),
            ("etc", libc::S_IFDIR, 0, false),
        ];
        for &(path, kind, size, skipped) in cases {
            assert_eq!(
                is_mount_point(Path::new(path), kind, size),
                skipped,
                "{path}"
            );
        }
    }

    #[test]
    fn overlay_attributes_and_selinux_labels_stay_out_of_the_layer() {
        for name in [
            "trusted.overlay.opaque",
            "user.overlay.opaque",
            "user.overlay.redirect",
            "security.selinux",
        ] {
            assert!(!keeps_xattr(name), "{name}");
        }
        for name in ["user.mime_type", "security.capability", "trusted.other"] {
            assert!(keeps_xattr(name), "{name}");
        }
    }
}
