//! Copy step: the definition's `[[copy]]` tables, files of the build
//! context (the definition's folder) put anywhere in the image, as one
//! layer. The context is untrusted the way an archive is: a source is
//! relative and never leaves it (no absolute path, no `..`, no symlink on
//! the way, every file opened beneath the context's directory one component
//! at a time with `O_NOFOLLOW`), a symlink met inside a copied directory is
//! copied as the symlink it is (it then resolves inside the container),
//! FIFOs, sockets and devices are refused, and the total size is bounded.
//! Entries are written sorted, owned by the numbers given (root's by
//! default), mtimes clamped to the epoch: the layer is reproducible.

use crate::def::CopyDef;
use crate::error::{Error, Result};
use crate::pack::{self, Blobs, LayerBlob, Tar};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// Bytes all copies may add up to when `CRADLE_MAX_COPY_SIZE` is unset.
pub const DEFAULT_MAX_SIZE: u64 = 16 << 30;
/// Entries all copies may add up to.
pub const MAX_ENTRIES: usize = 1_000_000;

/// Checks a `[[copy]]` table as the definition is read; the message says
/// what is wrong with which field.
pub fn check(copy: &CopyDef) -> std::result::Result<(), String> {
    let src = Path::new(&copy.src);
    if copy.src.is_empty() || src.is_absolute() {
        return Err(format!(
            "`[[copy]]` src `{}` must be a path relative to the definition's folder",
            copy.src
        ));
    }
    if src.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "`[[copy]]` src `{}` has `..`: sources stay inside the definition's folder",
            copy.src
        ));
    }
    let dest = Path::new(&copy.dest);
    if !dest.is_absolute() || dest.components().any(|c| c == Component::ParentDir) {
        return Err(format!(
            "`[[copy]]` dest `{}` must be an absolute path without `..`",
            copy.dest
        ));
    }
    if let Some(owner) = &copy.owner {
        parse_owner(owner)
            .ok_or_else(|| format!("`[[copy]]` owner `{owner}` is not UID[:GID] (numbers)"))?;
    }
    if let Some(mode) = &copy.mode {
        parse_mode(mode)
            .ok_or_else(|| format!("`[[copy]]` mode `{mode}` is not an octal mode (`0644`)"))?;
    }
    Ok(())
}

fn parse_owner(owner: &str) -> Option<(u64, u64)> {
    let (uid, gid) = owner.split_once(':').unwrap_or((owner, owner));
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

fn parse_mode(mode: &str) -> Option<u32> {
    u32::from_str_radix(mode, 8).ok().filter(|m| *m <= 0o7777)
}

/// One entry of the layer.
#[derive(Debug)]
enum Entry {
    /// A destination's parent that no copy names. A layer's directory entry
    /// replaces the one below it (overlayfs shows the top one's owner and
    /// mode), so it is written as the base has it: from the base's rootfs
    /// when there is one, else as `layout` makes it (`/tmp` 1777 …).
    Parent { mode: u32, owner: (u64, u64) },
    Dir {
        mode: u32,
        owner: (u64, u64),
        mtime: u64,
    },
    /// A file: the directory it is in (an fd beneath the context) and its
    /// name there; opened again when written.
    File {
        dir: Rc<OwnedFd>,
        name: OsString,
        shown: PathBuf,
        mode: u32,
        owner: (u64, u64),
        mtime: u64,
        size: u64,
    },
    Symlink {
        target: OsString,
        owner: (u64, u64),
        mtime: u64,
    },
}

/// The layer of `copies`, sources beneath `context`, or None when there
/// are none. `max_size` bounds the bytes of all files together; `base` is
/// the base's unpacked rootfs, when it has one.
pub fn layer(
    copies: &[CopyDef],
    context: &Path,
    base: Option<&Path>,
    blobs: &Blobs,
    epoch: u64,
    max_size: u64,
) -> Result<Option<LayerBlob>> {
    if copies.is_empty() {
        return Ok(None);
    }
    let root = open_dir_path(context)?;
    let mut plan = Plan {
        entries: BTreeMap::new(),
        size: 0,
        max_size,
        context: context.to_path_buf(),
        base: base.map(Path::to_path_buf),
        ignore: None,
    };
    for copy in copies {
        plan.add(&root, copy, epoch)?;
    }
    let entries = plan.entries;
    let layer = pack::write_layer(blobs, |tar| {
        for (path, entry) in &entries {
            write_entry(tar, path, entry, epoch)?;
        }
        Ok(())
    })?;
    Ok(Some(layer))
}

struct Plan {
    /// Image path (relative, no leading `/`) → entry; sorted by bytes.
    entries: BTreeMap<PathBuf, Entry>,
    size: u64,
    max_size: u64,
    context: PathBuf,
    base: Option<PathBuf>,
    /// The context's `.dockerignore`, for the copy being added.
    ignore: Option<crate::dockerignore::Ignore>,
}

impl Plan {
    fn add(&mut self, root: &OwnedFd, copy: &CopyDef, epoch: u64) -> Result<()> {
        self.ignore.clone_from(&copy.ignore);
        let owner = copy
            .owner
            .as_deref()
            .and_then(parse_owner)
            .unwrap_or((0, 0));
        let mode = copy.mode.as_deref().and_then(parse_mode);
        let dest = Path::new(&copy.dest)
            .strip_prefix("/")
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let opts = Copy {
            owner,
            mode,
            epoch,
            exclude: &copy.exclude,
            src: &copy.src,
        };
        let globbed = copy.src.contains(['*', '?', '[']);
        let matches = self.expand(root, Path::new(&copy.src))?;
        if matches.is_empty() {
            return Err(self.refuse(&copy.src, "matches nothing in the build context"));
        }
        for (dir, name, rel) in matches {
            let st = stat_at(&dir, &name).map_err(Error::io("reading", self.context.join(&rel)))?;
            let into_dir = globbed || copy.dest.ends_with('/');
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {
                    let target = if globbed {
                        dest.join(&name)
                    } else {
                        dest.clone()
                    };
                    let fd = Rc::new(
                        open_at(&dir, &name, true)
                            .map_err(Error::io("opening", self.context.join(&rel)))?,
                    );
                    self.add_parents(&target)?;
                    if !target.as_os_str().is_empty() {
                        self.entries.insert(target.clone(), dir_entry(&st, &opts));
                    }
                    self.add_tree(&fd, &rel, &target, Path::new(""), &opts)?;
                }
                _ => {
                    let target = if into_dir {
                        dest.join(&name)
                    } else {
                        dest.clone()
                    };
                    if target.as_os_str().is_empty() {
                        return Err(self.refuse(&copy.src, "a file cannot be copied to `/`"));
                    }
                    self.add_parents(&target)?;
                    self.add_leaf(dir, name, &rel, target, &st, &opts)?;
                }
            }
        }
        Ok(())
    }

    /// The sources `src` names: (the directory fd it is in, its name, its
    /// path in the context). Every component is looked up beneath `root`
    /// without following a symlink; `*`, `?` and `[…]` match within one.
    fn expand(&self, root: &OwnedFd, src: &Path) -> Result<Vec<(Rc<OwnedFd>, OsString, PathBuf)>> {
        let parts: Vec<&OsStr> = src
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p),
                _ => None,
            })
            .collect();
        let Some((last, parents)) = parts.split_last() else {
            // `.`: the context's contents (a Containerfile's `COPY . /app`).
            if src.components().all(|c| c == Component::CurDir) && src.as_os_str() != "" {
                return Ok(vec![(Rc::new(dup(root)?), ".".into(), PathBuf::new())]);
            }
            return Err(self.refuse(
                &src.display().to_string(),
                "names the build context itself; copy its files by name or with `*`",
            ));
        };
        let mut dirs = vec![(Rc::new(dup(root)?), PathBuf::new())];
        for part in parents {
            let mut next = Vec::new();
            for (fd, rel) in &dirs {
                for name in self.names(fd, rel, part)? {
                    let rel = rel.join(&name);
                    let st = stat_at(fd, &name)
                        .map_err(Error::io("reading", self.context.join(&rel)))?;
                    match st.st_mode & libc::S_IFMT {
                        libc::S_IFDIR => {
                            let sub = open_at(fd, &name, true)
                                .map_err(Error::io("opening", self.context.join(&rel)))?;
                            next.push((Rc::new(sub), rel));
                        }
                        libc::S_IFLNK => {
                            return Err(self.refuse(
                                &rel.display().to_string(),
                                "is a symlink; sources are not followed through symlinks",
                            ));
                        }
                        _ if is_pattern(part) => {}
                        _ => {
                            return Err(
                                self.refuse(&rel.display().to_string(), "is not a directory")
                            );
                        }
                    }
                }
            }
            dirs = next;
        }
        let mut out = Vec::new();
        for (fd, rel) in dirs {
            for name in self.names(&fd, &rel, last)? {
                let path = rel.join(&name);
                // What `.dockerignore` excludes is not in the context.
                if self.ignore.as_ref().is_some_and(|i| i.excludes(&path)) {
                    continue;
                }
                out.push((fd.clone(), name, path));
            }
        }
        Ok(out)
    }

    /// The names in `dir` that `part` matches (itself when it is no pattern
    /// and exists), sorted.
    fn names(&self, dir: &OwnedFd, rel: &Path, part: &OsStr) -> Result<Vec<OsString>> {
        if !is_pattern(part) {
            return match stat_at(dir, part) {
                Ok(_) => Ok(vec![part.to_os_string()]),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(Error::io("reading", self.context.join(rel).join(part))(e)),
            };
        }
        let mut names: Vec<OsString> = list(dir)
            .map_err(Error::io("listing", self.context.join(rel)))?
            .into_iter()
            .filter(|n| glob_match(part.as_bytes(), n.as_bytes()))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every entry under the directory `fd` (`rel` in the context), put
    /// under `target`; `inner` is the path below the copied directory,
    /// which `exclude` patterns match.
    fn add_tree(
        &mut self,
        fd: &Rc<OwnedFd>,
        rel: &Path,
        target: &Path,
        inner: &Path,
        opts: &Copy,
    ) -> Result<()> {
        let mut names = list(fd).map_err(Error::io("listing", self.context.join(rel)))?;
        names.sort();
        for name in names {
            let inner = inner.join(&name);
            if opts.exclude.iter().any(|p| path_match(p, &inner)) {
                continue;
            }
            let rel = rel.join(&name);
            let ignored = self.ignore.as_ref().is_some_and(|i| i.excludes(&rel));
            // Below an ignored directory only an exception can bring a
            // path back: looked for when the ignore file has one.
            if ignored && !self.ignore.as_ref().is_some_and(|i| i.has_exceptions()) {
                continue;
            }
            let target = target.join(&name);
            let st = stat_at(fd, &name).map_err(Error::io("reading", self.context.join(&rel)))?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let sub = Rc::new(
                    open_at(fd, &name, true)
                        .map_err(Error::io("opening", self.context.join(&rel)))?,
                );
                if !ignored {
                    self.insert(target.clone(), dir_entry(&st, opts))?;
                }
                self.add_tree(&sub, &rel, &target, &inner, opts)?;
            } else if ignored {
                continue;
            } else {
                self.add_parents(&target)?;
                self.add_leaf(fd.clone(), name, &rel, target, &st, opts)?;
            }
        }
        Ok(())
    }

    /// A file or a symlink; anything else is refused.
    fn add_leaf(
        &mut self,
        dir: Rc<OwnedFd>,
        name: OsString,
        rel: &Path,
        target: PathBuf,
        st: &libc::stat,
        opts: &Copy,
    ) -> Result<()> {
        let mtime = clamp(st.st_mtime, opts.epoch);
        let entry = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let size = st.st_size as u64;
                self.size = self.size.saturating_add(size);
                if self.size > self.max_size {
                    return Err(self.refuse(
                        &rel.display().to_string(),
                        &format!(
                            "takes the copies past the limit of {} bytes (CRADLE_MAX_COPY_SIZE)",
                            self.max_size
                        ),
                    ));
                }
                Entry::File {
                    dir,
                    name,
                    shown: self.context.join(rel),
                    mode: opts.mode.unwrap_or(st.st_mode & 0o7777),
                    owner: opts.owner,
                    mtime,
                    size,
                }
            }
            libc::S_IFLNK => {
                // A directory's symlink is copied as a symlink: resolved in
                // the container, never here. Named as a source, it is refused.
                let named = Path::new(opts.src)
                    .components()
                    .filter(|c| matches!(c, Component::Normal(_)));
                if rel.components().eq(named) {
                    return Err(self.refuse(
                        opts.src,
                        "is a symlink; sources are not followed through symlinks",
                    ));
                }
                let target = read_link_at(&dir, &name)
                    .map_err(Error::io("reading the symlink", self.context.join(rel)))?;
                Entry::Symlink {
                    target,
                    owner: opts.owner,
                    mtime,
                }
            }
            _ => {
                return Err(self.refuse(
                    &rel.display().to_string(),
                    "is a FIFO, socket or device; only files, directories and symlinks are copied",
                ));
            }
        };
        self.insert(target, entry)
    }

    fn insert(&mut self, target: PathBuf, entry: Entry) -> Result<()> {
        self.entries.insert(target, entry);
        if self.entries.len() > MAX_ENTRIES {
            return Err(self.refuse(
                "",
                &format!("the copies have more than {MAX_ENTRIES} entries"),
            ));
        }
        Ok(())
    }

    /// Directories for `target`'s parents that no copy made, as the base
    /// has them. One that is a symlink in the base is refused: a directory
    /// here would replace it.
    fn add_parents(&mut self, target: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        for parent in target.ancestors().skip(1) {
            if parent.as_os_str().is_empty() || self.entries.contains_key(parent) {
                continue;
            }
            let known = crate::layout::DIRS
                .iter()
                .find(|(dir, _)| Path::new(dir) == parent)
                .map_or(0o755, |(_, mode)| *mode);
            let mut entry = Entry::Parent {
                mode: known,
                owner: (0, 0),
            };
            if let Some(base) = &self.base
                && let Ok(meta) = std::fs::symlink_metadata(base.join(parent))
            {
                if meta.file_type().is_symlink() {
                    return Err(Error::CopyRefused {
                        src: Path::new("/").join(target),
                        what: format!(
                            "`/{}` is a symlink in the base; copy to the path it points to",
                            parent.display()
                        ),
                    });
                }
                if meta.is_dir() {
                    // Recorded as the base layer records it (all root's
                    // when it was unpacked without privileges).
                    let owner = crate::base::stamp(0)
                        .owner
                        .unwrap_or((u64::from(meta.uid()), u64::from(meta.gid())));
                    entry = Entry::Parent {
                        mode: meta.mode() & 0o7777,
                        owner,
                    };
                }
            }
            self.entries.insert(parent.to_path_buf(), entry);
        }
        Ok(())
    }

    fn refuse(&self, src: &str, what: &str) -> Error {
        Error::CopyRefused {
            src: self.context.join(src),
            what: what.to_string(),
        }
    }
}

/// What a `[[copy]]` table sets for each entry.
struct Copy<'a> {
    owner: (u64, u64),
    mode: Option<u32>,
    epoch: u64,
    exclude: &'a [String],
    src: &'a str,
}

fn dir_entry(st: &libc::stat, opts: &Copy) -> Entry {
    Entry::Dir {
        mode: st.st_mode & 0o7777,
        owner: opts.owner,
        mtime: clamp(st.st_mtime, opts.epoch),
    }
}

fn clamp(mtime: i64, epoch: u64) -> u64 {
    (mtime.max(0) as u64).min(epoch)
}

fn write_entry(tar: &mut Tar, path: &Path, entry: &Entry, epoch: u64) -> Result<()> {
    use tar::EntryType as T;
    let failed = |p: &Path| Error::io("adding to the layer", p.to_path_buf());
    match entry {
        Entry::Parent { mode, owner } => {
            let mut h = pack::header(T::Directory, *mode, *owner, epoch);
            tar.append_data(&mut h, path, std::io::empty())
                .map_err(failed(path))
        }
        Entry::Dir { mode, owner, mtime } => {
            let mut h = pack::header(T::Directory, *mode, *owner, *mtime);
            tar.append_data(&mut h, path, std::io::empty())
                .map_err(failed(path))
        }
        Entry::Symlink {
            target,
            owner,
            mtime,
        } => {
            let mut h = pack::header(T::Symlink, 0o777, *owner, *mtime);
            tar.append_link(&mut h, path, Path::new(target))
                .map_err(failed(path))
        }
        Entry::File {
            dir,
            name,
            shown,
            mode,
            owner,
            mtime,
            size,
        } => {
            // Opened without following a symlink and checked again: the
            // file may have been swapped since it was listed.
            let file = File::from(open_at(dir, name, false).map_err(Error::io("opening", shown))?);
            let meta = file.metadata().map_err(Error::io("reading", shown))?;
            if !meta.is_file() || meta.len() != *size {
                return Err(Error::CopyRefused {
                    src: shown.clone(),
                    what: "changed while the image was built".into(),
                });
            }
            let mut h = pack::header(T::Regular, *mode, *owner, *mtime);
            h.set_size(*size);
            let mut reader = file.take(*size);
            tar.append_data(&mut h, path, &mut reader)
                .map_err(Error::io("adding to the layer", shown))
        }
    }
}

/// Opens the directory `path`: the context itself, which the user named
/// (reached through symlinks if they say so); below it, only [`open_at`].
fn open_dir_path(path: &Path) -> Result<OwnedFd> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(Error::io("opening the build context", path))?;
    Ok(OwnedFd::from(file))
}

/// Opens the regular file `rel` beneath `context` as a source is opened:
/// one name at a time, never through a symlink (an ADD's tarball).
pub(crate) fn open_beneath(context: &Path, rel: &Path) -> std::io::Result<File> {
    let mut dir = OwnedFd::from(File::open(context)?);
    let parts: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let Some((last, parents)) = parts.split_last() else {
        return Err(std::io::ErrorKind::IsADirectory.into());
    };
    for part in parents {
        dir = open_at(&dir, part, true)?;
    }
    Ok(File::from(open_at(&dir, last, false)?))
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    fd.try_clone()
        .map_err(Error::io("opening", "the build context"))
}

fn c_name(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

/// `fstatat` without following a symlink.
fn stat_at(dir: &OwnedFd, name: &OsStr) -> std::io::Result<libc::stat> {
    let name = c_name(name)?;
    // SAFETY: a zeroed stat is a valid out-buffer; the name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc == 0 {
        Ok(st)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `openat` of one name in `dir`, never through a symlink, never blocking
/// on a FIFO; a directory when `directory`, else it must be a regular file.
fn open_at(dir: &OwnedFd, name: &OsStr, directory: bool) -> std::io::Result<OwnedFd> {
    let c = c_name(name)?;
    let flags = libc::O_RDONLY
        | libc::O_NOFOLLOW
        | libc::O_CLOEXEC
        | libc::O_NONBLOCK
        | libc::O_NOCTTY
        | if directory { libc::O_DIRECTORY } else { 0 };
    // SAFETY: openat with a NUL-terminated name on an fd we own.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if !directory {
        let meta = File::from(fd.try_clone()?).metadata()?;
        if !meta.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
    }
    Ok(fd)
}

fn read_link_at(dir: &OwnedFd, name: &OsStr) -> std::io::Result<OsString> {
    let c = c_name(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is a live buffer of its length; the name is NUL-terminated.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsStr::from_bytes(&buf).to_os_string())
}

/// The names in the directory `fd` (listed through `/proc/self/fd`, so it
/// is the directory opened, whatever its path names now).
fn list(fd: &OwnedFd) -> std::io::Result<Vec<OsString>> {
    std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect()
}

fn is_pattern(part: &OsStr) -> bool {
    part.as_bytes()
        .iter()
        .any(|b| matches!(b, b'*' | b'?' | b'['))
}

/// `pattern` against a relative path, component by component.
fn path_match(pattern: &str, path: &Path) -> bool {
    let pattern: Vec<&[u8]> = pattern
        .trim_matches('/')
        .split('/')
        .map(str::as_bytes)
        .collect();
    let parts: Vec<&[u8]> = path.iter().map(|p| p.as_bytes()).collect();
    pattern.len() == parts.len() && pattern.iter().zip(&parts).all(|(p, n)| glob_match(p, n))
}

/// Shell-style matching within one name ([`crate::glob::match_name`]), but
/// names starting with `.` are matched only by a pattern starting with `.`,
/// as in the shell.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    if name.first() == Some(&b'.') && pattern.first() != Some(&b'.') {
        return false;
    }
    crate::glob::match_name(pattern, name)
}

/// `CRADLE_MAX_COPY_SIZE` (bytes, or with K, M, G, T), else the default.
pub fn max_size_from_env() -> u64 {
    std::env::var("CRADLE_MAX_COPY_SIZE")
        .ok()
        .and_then(|v| crate::unpack::parse_size(v.trim()))
        .unwrap_or(DEFAULT_MAX_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_a_name() {
        for (pattern, name, want) in [
            ("*.conf", "app.conf", true),
            ("*.conf", "app.confx", false),
            ("*", ".hidden", false),
            (".*", ".hidden", true),
            ("a?c", "abc", true),
            ("[a-c]x", "bx", true),
            ("[!a-c]x", "bx", false),
            ("file", "file", true),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), name.as_bytes()),
                want,
                "{pattern} {name}"
            );
        }
        assert!(path_match("cache/*", Path::new("cache/x")));
        assert!(!path_match("cache/*", Path::new("cache")));
    }

    #[test]
    fn refuses_sources_out_of_the_context_as_the_definition_is_read() {
        let copy = |src: &str, dest: &str| CopyDef {
            src: src.into(),
            dest: dest.into(),
            owner: None,
            mode: None,
            exclude: vec![],
            context: None,
            ignore: None,
        };
        assert!(check(&copy("app.sh", "/app/")).is_ok());
        for (src, dest) in [
            ("/etc/passwd", "/x"),
            ("../secret", "/x"),
            ("a/../../b", "/x"),
            ("", "/x"),
            ("a", "relative"),
            ("a", "/x/../../y"),
        ] {
            assert!(check(&copy(src, dest)).is_err(), "{src} -> {dest}");
        }
    }
}
