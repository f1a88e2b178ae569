//! Unpack step: extracts a tar archive (plain, gzip, xz or zstd) into a
//! directory, treating every entry as hostile input.
//!
//! Every file is created relative to a directory file descriptor that was
//! reached from the target without following a symlink (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, or an `O_NOFOLLOW` walk where
//! `openat2` is missing), with `O_EXCL | O_NOFOLLOW`: an entry can neither
//! name a place outside the target nor write through a symlink that an
//! earlier entry planted. Decompression runs on the calling thread while a
//! second thread parses the tar stream and writes the files, as `tar xzf`
//! does with its `gzip` child.

use crate::error::{Error, Refusal, Result};
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// The default [`Options::max_size`]: 64 GiB of files per archive. Docker
/// and podman set no bound; we must, since a few bytes of gzip or of a
/// sparse entry's header can ask for terabytes. The largest images in common
/// use (CUDA and ML stacks, a full TeX Live) unpack to 10 to 20 GiB across
/// all their layers, so one layer past 64 GiB is an attack or a mistake.
pub const DEFAULT_MAX_SIZE: u64 = 64 << 30;

/// The default [`Options::max_entries`]: 4 million. A distribution's rootfs
/// has some 10 thousand entries, the largest images a few hundred thousand;
/// 10 million empty files cost gigabytes of inodes and many minutes.
pub const DEFAULT_MAX_ENTRIES: u64 = 4_000_000;

/// A size as people write it: bytes, or a number with a `K`, `M`, `G` or
/// `T` suffix (powers of 1024; `KiB`, `MiB`… too), for [`Options::max_size`]
/// from a flag or an environment variable. None when it is not one.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return None,
    };
    number.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// How to unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Apply OCI layer whiteouts: `.wh.NAME` removes `NAME`, `.wh..wh..opq`
    /// empties its directory of what earlier layers put there. The marker
    /// files themselves are not created.
    pub whiteouts: bool,
    /// Instead of applying whiteouts, convert them to overlayfs ones (a 0/0
    /// character device, `trusted.overlay.opaque=y`), for a layer that is
    /// used as an overlayfs lower directory. Takes precedence over
    /// `whiteouts`.
    pub overlay_whiteouts: bool,
    /// The xattrs (set to `y`) that mark an opaque directory with
    /// `overlay_whiteouts`: overlayfs reads `trusted.overlay.opaque` when
    /// mounted by root on the host, `user.overlay.opaque` with `userxattr`
    /// (in a user namespace). Setting one is never skipped: a directory
    /// left unmarked would show what the lower layers have in it.
    pub overlay_opaque_xattrs: &'static [&'static str],
    /// Give files the numeric uid and gid of their entries (needs root).
    pub keep_owners: bool,
    /// Create character and block devices; when false they are refused.
    pub allow_devices: bool,
    /// Restore extended attributes (`SCHILY.xattr.*` PAX records) where the
    /// filesystem and our privileges allow; others are skipped silently.
    pub xattrs: bool,
    /// Refuse the archive when its regular files add up to more than this
    /// many bytes, each counted by its length (a sparse file too: it costs
    /// that much wherever it is copied to). Hardlinks add nothing.
    pub max_size: u64,
    /// Refuse the archive when it has more than this many entries.
    pub max_entries: u64,
}

impl Default for Options {
    /// Owners and devices kept when running as root, as `tar` does.
    fn default() -> Self {
        let root = is_root();
        Options {
            whiteouts: false,
            overlay_whiteouts: false,
            overlay_opaque_xattrs: &["trusted.overlay.opaque"],
            keep_owners: root,
            allow_devices: root,
            xattrs: true,
            max_size: DEFAULT_MAX_SIZE,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// What an extraction created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub devices: u64,
    pub whiteouts: u64,
    /// Bytes of regular file data written (holes of sparse files left out).
    pub bytes: u64,
    /// The regular files' lengths added up, sparse ones too: what
    /// [`Options::max_size`] bounds.
    pub size: u64,
}

/// The compression of an archive, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    /// Recognises gzip, xz and zstd by their magic numbers; anything else is
    /// taken for a plain tar (which the tar parser then checks).
    pub fn detect(magic: &[u8]) -> Compression {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Extracts the archive at `archive` (compression detected from its magic
/// bytes) into `target`, which is created when missing.
pub fn extract_file(archive: &Path, target: &Path, opts: &Options) -> Result<Stats> {
    let file = File::open(archive).map_err(|source| Error::Archive {
        archive: archive.to_path_buf(),
        source,
    })?;
    extract_named(file, archive, target, opts, true)
}

/// Extracts a tar stream (compression detected from its magic bytes) into
/// `target`, which is created when missing.
pub fn extract(reader: impl Read, target: &Path, opts: &Options) -> Result<Stats> {
    extract_named(reader, Path::new("<stream>"), target, opts, true)
}

/// Size of the decompressed chunks handed from the reading thread to the
/// writing one, and how many may be in flight.
const CHUNK: usize = 256 * 1024;
const IN_FLIGHT: usize = 16;

/// `openat2`: false to test the `O_NOFOLLOW` walk that older kernels get.
fn extract_named(
    reader: impl Read,
    name: &Path,
    target: &Path,
    opts: &Options,
    openat2: bool,
) -> Result<Stats> {
    let archive_error = |source| Error::Archive {
        archive: name.to_path_buf(),
        source,
    };
    let mut input = BufReader::with_capacity(1 << 20, reader);
    let kind = Compression::detect(input.fill_buf().map_err(archive_error)?);
    let mut stream = decoder(input, kind).map_err(archive_error)?;
    let mut unpacker = Unpacker::open(target, name, opts)?;
    unpacker.openat2 = openat2;
    let (chunks_tx, chunks_rx) = sync_channel(IN_FLIGHT);
    let (spare_tx, spare_rx) = sync_channel(IN_FLIGHT + 2);
    std::thread::scope(|scope| {
        // A thread the system refuses (EAGAIN under a pids limit) is an
        // error naming the archive, not the panic of `Scope::spawn`.
        let writer = std::thread::Builder::new()
            .name("unpack-writer".into())
            .spawn_scoped(scope, move || {
                unpacker.run(Chunks::new(chunks_rx, spare_tx))
            })
            .map_err(archive_error)?;
        let produced = produce(&mut stream, &chunks_tx, &spare_rx);
        if produced.is_err() {
            // Stop the writer at once; the real cause is ours to report.
            let _ = chunks_tx.send(Err(io::Error::other("the archive could not be read")));
        }
        drop(chunks_tx);
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        produced.map_err(archive_error)?;
        written
    })
}

pub(crate) fn decoder<'r>(
    input: BufReader<impl Read + 'r>,
    kind: Compression,
) -> io::Result<Box<dyn Read + 'r>> {
    Ok(match kind {
        Compression::None => Box::new(input),
        // Multi-member, as `gzip -d` is: pigz and bgzip write several members.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        #[cfg(feature = "xz")]
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(input)),
        #[cfg(feature = "zstd")]
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        #[allow(unreachable_patterns)]
        other => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{other:?} compression is not built in"),
            ));
        }
    })
}

/// Decompresses into chunks for the writer until the end of the stream or
/// until the writer hangs up (it found the end of the archive, or failed).
fn produce(
    stream: &mut dyn Read,
    chunks: &SyncSender<io::Result<Vec<u8>>>,
    spare: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut len = 0;
        while len < CHUNK {
            match stream.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if len == 0 {
            return Ok(());
        }
        buf.truncate(len);
        if chunks.send(Ok(buf)).is_err() || len < CHUNK {
            return Ok(());
        }
    }
}

/// The writer's side of the channel, as a `Read` for the tar parser.
struct Chunks {
    rx: Receiver<io::Result<Vec<u8>>>,
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl Chunks {
    fn new(rx: Receiver<io::Result<Vec<u8>>>, spare: SyncSender<Vec<u8>>) -> Chunks {
        Chunks {
            rx,
            spare,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            let next = match self.rx.recv() {
                Ok(chunk) => chunk?,
                Err(_) => return Ok(0),
            };
            let used = std::mem::replace(&mut self.current, next);
            let _ = self.spare.try_send(used);
            self.pos = 0;
        }
        let n = out.len().min(self.current.len() - self.pos);
        out[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Owner, mode and time of an entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

impl Meta {
    fn of(header: &tar::Header) -> io::Result<Meta> {
        // An id past u32 is no id: truncated, 2^32 would be root.
        let id = |id: u64| {
            u32::try_from(id).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("owner id {id} is over 32 bits"),
                )
            })
        };
        Ok(Meta {
            mode: header.mode()? & 0o7777,
            uid: id(header.uid()?)?,
            gid: id(header.gid()?)?,
            mtime: header.mtime()? as i64,
        })
    }
}

/// The writing side: a target directory and what is left to do at the end.
struct Unpacker<'o> {
    opts: &'o Options,
    archive: PathBuf,
    root: OwnedFd,
    /// The last parent directory used, and a descriptor for it. Entries come
    /// grouped by directory, so this saves most lookups. Removing a
    /// directory anywhere but inside it forgets it (see [`Unpacker::remove`]).
    parent: Option<(PathBuf, OwnedFd)>,
    /// Directories get their mode, owner and mtime last, deepest first, so a
    /// read-only directory can still be filled and its mtime is not bumped.
    dirs: Vec<(PathBuf, Meta)>,
    dir_index: HashMap<PathBuf, usize>,
    /// What this archive created, when whiteouts are applied: an opaque
    /// directory hides only what earlier layers put there.
    created: HashSet<PathBuf>,
    openat2: bool,
    buf: Vec<u8>,
    stats: Stats,
}

impl<'o> Unpacker<'o> {
    fn open(target: &Path, archive: &Path, opts: &'o Options) -> Result<Unpacker<'o>> {
        std::fs::create_dir_all(target).map_err(Error::io("creating", target))?;
        let root = File::open(target).map_err(Error::io("opening", target))?;
        Ok(Unpacker {
            opts,
            archive: archive.to_path_buf(),
            root: root.into(),
            parent: None,
            dirs: Vec::new(),
            dir_index: HashMap::new(),
            created: HashSet::new(),
            openat2: true,
            buf: vec![0; CHUNK],
            stats: Stats::default(),
        })
    }

    fn run(mut self, chunks: Chunks) -> Result<Stats> {
        let mut archive = tar::Archive::new(chunks);
        let entries = archive.entries().map_err(|source| Error::Archive {
            archive: self.archive.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Archive {
                archive: self.archive.clone(),
                source,
            })?;
            self.apply(entry)?;
        }
        self.finish_dirs()?;
        Ok(self.stats)
    }

    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<()> {
        use tar::EntryType as T;
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        let name = entry
            .path()
            .map_err(|source| Error::Archive {
                archive: self.archive.clone(),
                source,
            })?
            .into_owned();
        let rel = sanitize(&name).map_err(|reason| Error::Refused {
            entry: name.clone(),
            reason,
        })?;
        let failed = |source| Error::Entry {
            entry: name.clone(),
            source,
        };
        self.stats.entries += 1;
        if self.stats.entries > self.opts.max_entries {
            return Err(Error::TooManyEntries {
                archive: self.archive.clone(),
                limit: self.opts.max_entries,
            });
        }
        let meta = Meta::of(entry.header()).map_err(failed)?;
        let Some(file_name) = rel.file_name().map(|n| cstring(n.as_bytes())) else {
            if kind.is_dir() {
                self.defer_dir(rel, meta);
                return Ok(());
            }
            return Err(Error::Refused {
                entry: name,
                reason: Refusal::TargetItself,
            });
        };
        let file_name = file_name.map_err(failed)?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let pfd = self.parent_fd(parent, &name)?;
        let whiteouts = self.opts.whiteouts || self.opts.overlay_whiteouts;
        if whiteouts && matches!(file_name.as_bytes(), b".wh." | b".wh.." | b".wh...") {
            // `.wh..` would whiteout `..`: the parent of this directory.
            return Err(Error::Refused {
                entry: name,
                reason: Refusal::DotDot,
            });
        }
        if whiteouts && self.whiteout(pfd, parent, &file_name).map_err(failed)? {
            self.stats.whiteouts += 1;
            return Ok(());
        }
        match kind {
            T::Directory => {
                self.make_dir(pfd, &file_name).map_err(failed)?;
                self.stats.dirs += 1;
                self.defer_dir(rel.clone(), meta);
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                if is_pax_sparse(&mut entry).map_err(failed)? {
                    return Err(Error::Refused {
                        entry: name,
                        reason: Refusal::PaxSparse,
                    });
                }
                // Counted before anything is written: a bomb's file is
                // refused, not filled up to the limit.
                self.count_size(entry.size(), &name)?;
                let xattrs = self.xattrs_of(&mut entry).map_err(failed)?;
                self.write_file(pfd, &file_name, &mut entry, &meta, &xattrs)
                    .map_err(failed)?;
                self.stats.files += 1;
            }
            T::Symlink => {
                let link = entry.link_name_bytes().unwrap_or_default();
                let link = cstring(&link).map_err(failed)?;
                self.replace(pfd, &file_name, |pfd, name| {
                    // SAFETY: both strings are NUL-terminated; pfd is open.
                    cvt(unsafe { libc::symlinkat(link.as_ptr(), pfd, name.as_ptr()) })
                })
                .map_err(failed)?;
                self.set_meta_at(pfd, &file_name, &meta).map_err(failed)?;
                self.stats.symlinks += 1;
            }
            T::Link => {
                let link = entry
                    .link_name()
                    .map_err(failed)?
                    .unwrap_or_default()
                    .into_owned();
                self.hardlink(pfd, &file_name, &rel, &name, &link)?;
                self.stats.hardlinks += 1;
            }
            T::Char | T::Block | T::Fifo => {
                if kind != T::Fifo && !self.opts.allow_devices {
                    return Err(Error::Refused {
                        entry: name,
                        reason: Refusal::Device,
                    });
                }
                let (format, dev) = match kind {
                    T::Char => (libc::S_IFCHR, device_of(entry.header()).map_err(failed)?),
                    T::Block => (libc::S_IFBLK, device_of(entry.header()).map_err(failed)?),
                    // A FIFO has no device number, and GNU tar's own format
                    // leaves its fields blank (NULs), which is no octal
                    // number: they are not read. mknod ignores it for FIFOs.
                    _ => (libc::S_IFIFO, 0),
                };
                self.replace(pfd, &file_name, |pfd, name| {
                    // SAFETY: name is NUL-terminated; pfd is open.
                    cvt(unsafe { libc::mknodat(pfd, name.as_ptr(), format | 0o600, dev) })
                })
                .map_err(failed)?;
                self.set_meta_at(pfd, &file_name, &meta).map_err(failed)?;
                // mknodat applies the umask and chown clears set-id bits.
                // SAFETY: as above; the node was just created, not a symlink.
                cvt(unsafe { libc::fchmodat(pfd, file_name.as_ptr(), meta.mode, 0) })
                    .map_err(failed)?;
                self.stats.devices += 1;
            }
            // Unknown kinds carry nothing we can create safely.
            _ => return Ok(()),
        }
        if self.opts.whiteouts && !self.opts.overlay_whiteouts {
            self.created.insert(rel);
        }
        Ok(())
    }

    /// A descriptor for directory `dir` (relative to the target), created
    /// when missing, reached without following any symlink.
    fn parent_fd(&mut self, dir: &Path, entry: &Path) -> Result<RawFd> {
        if dir.as_os_str().is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some((cached, fd)) = &self.parent
            && cached == dir
        {
            return Ok(fd.as_raw_fd());
        }
        let fd = self
            .open_dir(dir, true)
            .map_err(|source| refusal_or(entry, source, Refusal::SymlinkParent))?;
        let raw = fd.as_raw_fd();
        self.parent = Some((dir.to_path_buf(), fd));
        Ok(raw)
    }

    /// Opens `dir` (`O_PATH`) below the target without following symlinks;
    /// with `create`, makes missing components (mode 0755).
    fn open_dir(&mut self, dir: &Path, create: bool) -> io::Result<OwnedFd> {
        if dir.as_os_str().is_empty() {
            return dup(self.root.as_raw_fd());
        }
        if self.openat2 {
            match openat2_beneath(self.root.as_raw_fd(), dir) {
                Ok(fd) => return Ok(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {}
                // Older kernels (< 5.6) and some seccomp profiles.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    self.openat2 = false;
                }
                Err(e) => return Err(e),
            }
        }
        let mut fd = dup(self.root.as_raw_fd())?;
        for component in dir.components() {
            let name = cstring(component.as_os_str().as_bytes())?;
            if create {
                // SAFETY: name is NUL-terminated; fd is open.
                let made = cvt(unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o755) });
                match made {
                    // A directory the archive implies but does not list:
                    // 0755 whatever our umask, so that the rootfs (and the
                    // image made from it) does not depend on who unpacked it.
                    // SAFETY: as above; just created, so not a symlink.
                    Ok(()) => {
                        cvt(unsafe { libc::fchmodat(fd.as_raw_fd(), name.as_ptr(), 0o755, 0) })?
                    }
                    Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e),
                    Err(_) => {}
                }
            }
            fd = openat(
                fd.as_raw_fd(),
                &name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
        }
        Ok(fd)
    }

    fn make_dir(&mut self, pfd: RawFd, name: &CString) -> io::Result<()> {
        // SAFETY: name is NUL-terminated; pfd is open.
        match cvt(unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o755) }) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                if lstat_at(pfd, name)?.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Ok(());
                }
                self.remove(pfd, name)?;
                // SAFETY: as above.
                cvt(unsafe { libc::mkdirat(pfd, name.as_ptr(), 0o755) })
            }
            other => other,
        }
    }

    fn write_file<R: Read>(
        &mut self,
        pfd: RawFd,
        name: &CString,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        xattrs: &[(CString, Vec<u8>)],
    ) -> io::Result<()> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = match openat(pfd, name, flags, 0o600) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove(pfd, name)?;
                openat(pfd, name, flags, 0o600)?
            }
            other => other?,
        };
        let mut file = File::from(fd);
        // The tar crate reads a GNU sparse entry's holes as zeros; written
        // as they came, 134 bytes of gzip became 2 GiB on disk. Its zero runs
        // are skipped instead (written past with pwrite) and the length set
        // at the end, so holes stay holes, as GNU tar leaves them.
        let sparse = entry.header().entry_type().is_gnu_sparse();
        let mut offset = 0;
        loop {
            // Fill the buffer before writing: fewer, larger writes.
            let mut len = 0;
            while len < self.buf.len() {
                match entry.read(&mut self.buf[len..]) {
                    Ok(0) => break,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if len == 0 {
                break;
            }
            if sparse {
                self.stats.bytes += write_data_runs(&file, offset, &self.buf[..len])?;
            } else {
                file.write_all(&self.buf[..len])?;
                self.stats.bytes += len as u64;
            }
            offset += len as u64;
            if len < self.buf.len() {
                break;
            }
        }
        if sparse {
            file.set_len(offset)?;
        }
        self.set_meta_fd(file.as_raw_fd(), meta, xattrs)
    }

    fn xattrs_of<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
    ) -> io::Result<Vec<(CString, Vec<u8>)>> {
        let mut found = Vec::new();
        if !self.opts.xattrs {
            return Ok(found);
        }
        if let Some(extensions) = entry.pax_extensions()? {
            for ext in extensions {
                let ext = ext?;
                let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                // overlayfs reads its own attributes (redirects, metacopy,
                // opaque) from layers; only we may write those.
                if key.starts_with(b"trusted.overlay.") || key.starts_with(b"user.overlay.") {
                    continue;
                }
                found.push((cstring(key)?, ext.value_bytes().to_vec()));
            }
        }
        Ok(found)
    }

    /// Owner, mode, xattrs, then times: `chown` clears set-id bits and file
    /// capabilities, so it goes first.
    fn set_meta_fd(&self, fd: RawFd, meta: &Meta, xattrs: &[(CString, Vec<u8>)]) -> io::Result<()> {
        if self.opts.keep_owners {
            // SAFETY: fd is open.
            cvt(unsafe { libc::fchown(fd, meta.uid, meta.gid) })?;
        }
        // SAFETY: fd is open.
        cvt(unsafe { libc::fchmod(fd, meta.mode) })?;
        for (key, value) in xattrs {
            // SAFETY: key is NUL-terminated, value is a live buffer.
            let set = cvt(unsafe {
                libc::fsetxattr(fd, key.as_ptr(), value.as_ptr().cast(), value.len(), 0)
            });
            // "Where the filesystem allows": security.* and trusted.* need
            // privileges, tmpfs has no user.*.
            match set {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTSUP | libc::EPERM | libc::EACCES)
                    ) => {}
                other => other?,
            }
        }
        let times = [timespec(meta.mtime), timespec(meta.mtime)];
        // SAFETY: fd is open and times has two elements.
        cvt(unsafe { libc::futimens(fd, times.as_ptr()) })
    }

    /// Owner and times of a symlink or node, without following it.
    fn set_meta_at(&self, pfd: RawFd, name: &CString, meta: &Meta) -> io::Result<()> {
        if self.opts.keep_owners {
            // SAFETY: name is NUL-terminated; pfd is open.
            cvt(unsafe {
                libc::fchownat(
                    pfd,
                    name.as_ptr(),
                    meta.uid,
                    meta.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        let times = [timespec(meta.mtime), timespec(meta.mtime)];
        // SAFETY: as above; times has two elements.
        cvt(unsafe {
            libc::utimensat(
                pfd,
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    fn hardlink(
        &mut self,
        pfd: RawFd,
        name: &CString,
        rel: &Path,
        entry: &Path,
        link: &Path,
    ) -> Result<()> {
        let outside = || Error::Refused {
            entry: entry.to_path_buf(),
            reason: Refusal::LinkOutside(link.to_path_buf()),
        };
        let source = sanitize(link).map_err(|_| outside())?;
        let failed = |source| Error::Entry {
            entry: entry.to_path_buf(),
            source,
        };
        if source == rel {
            return Ok(());
        }
        let Some(source_name) = source.file_name() else {
            return Err(outside());
        };
        let source_name = cstring(source_name.as_bytes()).map_err(failed)?;
        let source_dir = source.parent().unwrap_or(Path::new(""));
        let source_fd = if source_dir.as_os_str().is_empty() {
            dup(self.root.as_raw_fd()).map_err(failed)?
        } else {
            self.open_dir(source_dir, false)
                .map_err(|e| refusal_or(entry, e, Refusal::LinkOutside(link.to_path_buf())))?
        };
        self.replace(pfd, name, |pfd, name| {
            // Flags 0: a symlink source is linked itself, never followed.
            // SAFETY: both names are NUL-terminated; both descriptors are open.
            cvt(unsafe {
                libc::linkat(
                    source_fd.as_raw_fd(),
                    source_name.as_ptr(),
                    pfd,
                    name.as_ptr(),
                    0,
                )
            })
        })
        .map_err(failed)
    }

    /// Runs `create`, and when the name is taken, removes what is there
    /// and runs it again.
    fn replace(
        &mut self,
        pfd: RawFd,
        name: &CString,
        create: impl Fn(RawFd, &CString) -> io::Result<()>,
    ) -> io::Result<()> {
        match create(pfd, name) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.remove(pfd, name)?;
                create(pfd, name)
            }
            other => other,
        }
    }

    /// Removes `name` in the directory `pfd` (the cached parent), a
    /// directory with everything in it.
    fn remove(&mut self, pfd: RawFd, name: &CString) -> io::Result<()> {
        let is_dir = lstat_at(pfd, name)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            let dir = openat(
                pfd,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            empty_dir(dir)?;
        }
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: name is NUL-terminated; pfd is open.
        cvt(unsafe { libc::unlinkat(pfd, name.as_ptr(), flags) })?;
        // `pfd` is the cached parent or the root. Removed from the root, a
        // directory may be the cached parent or hold it: a later entry below
        // it must walk again and meet what replaced it (a symlink is then
        // refused), not write into the unlinked directory.
        if is_dir
            && self
                .parent
                .as_ref()
                .is_some_and(|(_, fd)| fd.as_raw_fd() != pfd)
        {
            self.parent = None;
        }
        Ok(())
    }

    /// Handles `.wh.` entries; true when `name` was one.
    fn whiteout(&mut self, pfd: RawFd, dir: &Path, name: &CString) -> io::Result<bool> {
        let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") else {
            return Ok(false);
        };
        if hidden == b".wh..opq" {
            let dir_fd = openat(pfd, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            if self.opts.overlay_whiteouts {
                return mark_opaque(&dir_fd, self.opts.overlay_opaque_xattrs).map(|()| true);
            }
            for child in list_dir(&dir_fd)? {
                let rel = dir.join(std::ffi::OsStr::from_bytes(child.as_bytes()));
                if !self.created.contains(&rel) {
                    self.remove(pfd, &child)?;
                }
            }
            return Ok(true);
        }
        let hidden = cstring(hidden)?;
        match self.remove(pfd, &hidden) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            other => other?,
        }
        if self.opts.overlay_whiteouts {
            // SAFETY: hidden is NUL-terminated; pfd is open.
            cvt(unsafe {
                libc::mknodat(pfd, hidden.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0))
            })?;
        }
        Ok(true)
    }

    fn defer_dir(&mut self, rel: PathBuf, meta: Meta) {
        match self.dir_index.get(&rel) {
            Some(&i) => self.dirs[i].1 = meta,
            None => {
                self.dir_index.insert(rel.clone(), self.dirs.len());
                self.dirs.push((rel, meta));
            }
        }
    }

    /// Adds a regular file's length to the archive's total, or refuses
    /// the archive when that passes the limit.
    fn count_size(&mut self, len: u64, entry: &Path) -> Result<()> {
        let total = self.stats.size.saturating_add(len);
        if total > self.opts.max_size {
            return Err(Error::TooLarge {
                archive: self.archive.clone(),
                entry: entry.to_path_buf(),
                limit: self.opts.max_size,
            });
        }
        self.stats.size = total;
        Ok(())
    }

    /// Directory metadata, once every entry (whiteouts too, which remove
    /// from directories and so bump their mtimes) is done; deepest first,
    /// so that a parent is closed (made read-only, say) after its children.
    /// A directory that a later entry replaced is skipped.
    fn finish_dirs(&mut self) -> Result<()> {
        self.parent = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        // Stable: at one depth, the last listed first, as before.
        dirs.reverse();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, meta) in &dirs {
            let failed = |source| Error::Entry {
                entry: rel.clone(),
                source,
            };
            let fd = match rel.file_name() {
                None => dup(self.root.as_raw_fd()).map_err(failed)?,
                Some(name) => {
                    let opened = self
                        .open_dir(rel.parent().unwrap_or(Path::new("")), false)
                        .and_then(|pfd| {
                            let name = cstring(name.as_bytes())?;
                            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                            openat(pfd.as_raw_fd(), &name, flags, 0)
                        });
                    match opened {
                        Ok(fd) => fd,
                        Err(e)
                            if matches!(
                                e.raw_os_error(),
                                Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
                            ) =>
                        {
                            continue;
                        }
                        Err(e) => return Err(failed(e)),
                    }
                }
            };
            self.set_meta_fd(fd.as_raw_fd(), meta, &[])
                .map_err(failed)?;
        }
        Ok(())
    }
}

/// Whether `entry` is a sparse file in GNU tar's PAX formats (`tar --sparse
/// --format=posix`): `GNU.sparse.*` records, which the tar crate does not
/// read, so it would hand out the sparse map as contents under a made-up
/// name (`GNUSparseFile.N/…`).
fn is_pax_sparse<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<bool> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(false);
    };
    for ext in extensions {
        if ext?.key_bytes().starts_with(b"GNU.sparse.") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The device number of a character or block device entry. Its fields must
/// be numbers: a device node is nothing we guess.
fn device_of(header: &tar::Header) -> io::Result<libc::dev_t> {
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    Ok(libc::makedev(major, minor))
}

/// The granularity of holes in sparse files: a page, the block size of
/// most filesystems (a smaller hole would not be one).
const HOLE: usize = 4096;
static ZEROS: [u8; HOLE] = [0; HOLE];

/// Writes `chunk`, which starts at `offset` of the file, but for its pieces
/// of [`HOLE`] bytes that are all zeros (skipped: holes); returns the bytes
/// written. `offset` is a multiple of [`HOLE`] (the chunks are, but the last).
fn write_data_runs(file: &File, offset: u64, chunk: &[u8]) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    // Slice equality is a memcmp, fast even in a debug build.
    let zero =
        |at: usize| chunk[at..(at + HOLE).min(chunk.len())] == ZEROS[..HOLE.min(chunk.len() - at)];
    let mut written = 0;
    let mut at = 0;
    while at < chunk.len() {
        while at < chunk.len() && zero(at) {
            at += HOLE;
        }
        let start = at;
        while at < chunk.len() && !zero(at) {
            at += HOLE;
        }
        let end = at.min(chunk.len());
        if start < end {
            file.write_all_at(&chunk[start..end], offset + start as u64)?;
            written += (end - start) as u64;
        }
    }
    Ok(written)
}

/// Marks the directory `dir` opaque for overlayfs: each of `xattrs` set
/// to `y`. None given would leave it unmarked, so that is an error too.
fn mark_opaque(dir: &OwnedFd, xattrs: &[&str]) -> io::Result<()> {
    if xattrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no xattr is given to mark an opaque directory",
        ));
    }
    for name in xattrs {
        let name = cstring(name.as_bytes())?;
        // SAFETY: name is NUL-terminated, the value a live buffer; the fd is open.
        cvt(unsafe {
            libc::fsetxattr(dir.as_raw_fd(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0)
        })?;
    }
    Ok(())
}

/// The entry's name relative to the target, or why it is refused. `.`
/// components are dropped; an empty result names the target itself.
pub fn sanitize(name: &Path) -> Result<PathBuf, Refusal> {
    let mut rel = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::DotDot),
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::Absolute),
        }
    }
    Ok(rel)
}

/// A walk that met a symlink or a non-directory is a refusal; anything else
/// an I/O failure of the entry.
fn refusal_or(entry: &Path, source: io::Error, reason: Refusal) -> Error {
    match source.raw_os_error() {
        Some(libc::ELOOP | libc::ENOTDIR | libc::EXDEV) => Error::Refused {
            entry: entry.to_path_buf(),
            reason,
        },
        _ => Error::Entry {
            entry: entry.to_path_buf(),
            source,
        },
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a name"))
}

fn cvt(ret: libc::c_int) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn timespec(secs: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: secs as _,
        tv_nsec: 0,
    }
}

fn openat(
    dir: RawFd,
    name: &std::ffi::CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; dir is an open descriptor.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an open descriptor.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn lstat_at(dir: RawFd, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated; st is a valid out-pointer.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

// From linux/openat2.h.
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

/// `openat2(root, dir, O_PATH|O_DIRECTORY, RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)`:
/// fails with ELOOP when any component is a symlink, EXDEV when it leaves `root`.
fn openat2_beneath(root: RawFd, dir: &Path) -> io::Result<OwnedFd> {
    let path = cstring(dir.as_os_str().as_bytes())?;
    // SAFETY: open_how is plain data; zero is its "nothing set" value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    // SAFETY: path is NUL-terminated, how is a valid open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The names in directory `dir` (without `.` and `..`).
fn list_dir(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let fd = dup(dir.as_raw_fd())?;
    // SAFETY: fdopendir takes ownership of the fresh descriptor.
    let stream = unsafe { libc::fdopendir(fd.as_raw_fd()) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(fd);
    // SAFETY: rewind so that a reused descriptor starts at the beginning.
    unsafe { libc::rewinddir(stream) };
    let mut names = Vec::new();
    loop {
        // SAFETY: stream is a valid DIR*; readdir's result lives until the next call.
        let ent = unsafe { libc::readdir(stream) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    // SAFETY: stream is valid and closed once.
    unsafe { libc::closedir(stream) };
    Ok(names)
}

/// Removes everything inside the directory `dir`, never following a symlink.
fn empty_dir(dir: OwnedFd) -> io::Result<()> {
    for name in list_dir(&dir)? {
        let is_dir = lstat_at(dir.as_raw_fd(), &name)?.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if is_dir {
            let sub = openat(
                dir.as_raw_fd(),
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            empty_dir(sub)?;
        }
        let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
        // SAFETY: name is NUL-terminated; dir is open.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let cases: &[(&str, Result<&str, Refusal>)] = &[
            ("a/b", Ok("a/b")),
            ("./a/./b/", Ok("a/b")),
            ("./", Ok("")),
            ("/etc/passwd", Err(Refusal::Absolute)),
            ("a/../../b", Err(Refusal::DotDot)),
            ("..", Err(Refusal::DotDot)),
        ];
        for (name, want) in cases {
            let got = sanitize(Path::new(name));
            assert_eq!(got, want.clone().map(PathBuf::from), "{name}");
        }
    }

    /// A tar of `(name, kind, link)` entries; regular files contain "x".
    fn tar_of(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"x"
            } else {
                b""
            };
            h.set_size(data.len() as u64);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn walk_without_openat2_refuses_symlink_parents_too() {
        use tar::EntryType as T;
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = dir.path().join("target");
        let opts = Options::default();
        let good = tar_of(&[
            ("a/b/c/file", T::Regular, ""),
            ("a/b/link", T::Symlink, "c/file"),
        ]);
        extract_named(good.as_slice(), Path::new("good"), &target, &opts, false).unwrap();
        assert_eq!(std::fs::read(target.join("a/b/link")).unwrap(), b"x");
        let evil = tar_of(&[
            ("l", T::Symlink, "../outside"),
            ("l/new/evil", T::Regular, ""),
        ]);
        let err =
            extract_named(evil.as_slice(), Path::new("evil"), &target, &opts, false).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Refused {
                    reason: Refusal::SymlinkParent,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn refuses_entry_below_a_directory_replaced_by_a_symlink() {
        use tar::EntryType as T;
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = dir.path().join("target");
        let evil = tar_of(&[
            ("a/x", T::Regular, ""),
            ("a", T::Symlink, "../outside"),
            ("a/y", T::Regular, ""),
        ]);
        for openat2 in [true, false] {
            let err = extract_named(
                evil.as_slice(),
                Path::new("evil"),
                &target,
                &Options::default(),
                openat2,
            )
            .unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::Refused {
                        reason: Refusal::SymlinkParent,
                        ..
                    }
                ),
                "openat2 {openat2}: {err:?}"
            );
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
            std::fs::remove_dir_all(&target).unwrap();
        }
    }

    #[test]
    fn refuses_owner_ids_over_32_bits() {
        let mut h = tar::Header::new_gnu();
        h.set_path("f").unwrap();
        h.set_size(0);
        h.set_mode(0o4755);
        h.set_uid(1 << 32);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.resize(data.len() + 1024, 0);
        let dir = tempfile::tempdir().unwrap();
        let err = extract(data.as_slice(), dir.path(), &Options::default()).unwrap_err();
        assert!(
            std::error::Error::source(&err).is_some_and(|e| e.to_string().contains("over 32 bits")),
            "{err:?}"
        );
    }

    #[test]
    fn parse_size_table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("1048576", Some(1 << 20)),
            ("64G", Some(64 << 30)),
            ("64GiB", Some(64 << 30)),
            ("512 m", Some(512 << 20)),
            ("2T", Some(2 << 40)),
            ("", None),
            ("G", None),
            ("1.5G", None),
            ("-1", None),
            ("10X", None),
            ("99999999999T", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), *want, "{text}");
        }
    }

    #[test]
    fn detects_compression_by_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(b"\xfd7zXZ\0"), Compression::Xz);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"bin/"), Compression::None);
    }
}
