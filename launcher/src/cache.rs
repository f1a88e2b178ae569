//! Step 2, cache: layers unpacked once into a directory named by their
//! digest, and each container's private state directory.
//!
//! ```text
//! <root>/layers/sha256/<hex>/      a layer, unpacked, whiteouts in overlay form
//! <root>/layers/sha256/<hex>.lock  held (flock) while it is being unpacked
//! <root>/tmp/<layer>-<pid>/        an unpack in progress, renamed into place when done
//! <root>/tmp/container-<random>/   a container's directory, until renamed into containers/
//! <root>/tmp/<name>.lock           held (flock) while tmp/<name>/ is in progress
//! <root>/containers/<id>/lock      held (flock) by the launcher running <id>; pid + start time
//! <root>/containers/<id>/{upper,work,rootfs,etc}   made by the child, in a tmpfs of its
//!                                  mount namespace (on disk with `--keep`)
//! ```
//!
//! `<root>` is `$CRADLE_ROOT`, else `/var/lib/cradle` as root, else
//! `$XDG_DATA_HOME/cradle` (`~/.local/share/cradle`). Every directory of a
//! container is removed when it ends; what a SIGKILLed launcher left behind
//! (an unlocked lock file) is removed by the next run.

use crate::image::Image;
use crate::{Error, Result};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The cache root for this user.
pub fn default_root() -> PathBuf {
    if let Some(root) = std::env::var_os("CRADLE_ROOT").filter(|r| !r.is_empty()) {
        return root.into();
    }
    if rootless() {
        let data = std::env::var_os("XDG_DATA_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        return data.join("cradle");
    }
    PathBuf::from("/var/lib/cradle")
}

/// True when the launcher is not root and must use a user namespace.
pub fn rootless() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// Marks a state directory kept with `--keep`, which is never reclaimed
/// (only replaced by a later run with the same `--name`).
const KEPT: &str = "kept";

/// Records the first host id of a `--userns=auto` container's range.
const USERNS: &str = "userns";

#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
}

/// A container's state directory, locked for the launcher's lifetime and
/// removed on drop unless kept.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub dir: PathBuf,
    keep: bool,
    _lock: File,
}

impl Container {
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// Removes the state directory (unless `--keep`). Idempotent.
    pub fn remove(&self) -> Result<()> {
        if self.keep {
            // The writable layer stays; only the mount point and work dir
            // go. The marker keeps the next runs from reclaiming it, so it
            // is written first, and a failure to write it is reported.
            let marker = self.dir.join(KEPT);
            fs::write(&marker, "").map_err(Error::io("writing", &marker))?;
            let rootfs = self.rootfs();
            match fs::remove_dir(&rootfs) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io("removing", rootfs)(e));
                }
                _ => {}
            }
            let work = self.work();
            return remove_tree(&work).map_err(Error::io("removing", work));
        }
        remove_tree(&self.dir).map_err(Error::io("removing", &self.dir))
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // After an error; a run that ends well has removed it and reported
        // what failed.
        let _ = self.remove();
    }
}

impl Cache {
    pub fn open(root: PathBuf) -> Result<Self> {
        // Absolute: the child and `--userns=auto`'s setns change directory.
        let root = std::path::absolute(&root).map_err(Error::io("resolving", &root))?;
        // As root, the path to the layers and state directories must be
        // searchable (not listable) by a `--userns=auto` container's root,
        // which is an unprivileged id on the host.
        let mode = if rootless() { 0o700 } else { 0o711 };
        for sub in ["layers/sha256", "tmp", "containers"] {
            let dir = root.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(&dir)
                .map_err(Error::io("creating cache directory", &dir))?;
        }
        for dir in [
            root.clone(),
            root.join("layers"),
            root.join("layers/sha256"),
            root.join("containers"),
        ] {
            let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(mode));
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes state directories and unpacks left by launchers that died
    /// without cleaning up (their lock is no longer held). Best effort: a
    /// failure here must not stop this run.
    pub fn reclaim_stale(&self) {
        for sub in ["containers", "tmp"] {
            let Ok(dir) = fs::read_dir(self.root.join(sub)) else {
                continue;
            };
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "lock") || path.join(KEPT).exists() {
                    continue;
                }
                let lock = match sub {
                    "containers" => path.join("lock"),
                    _ => path.with_extension("lock"),
                };
                if let Some(guard) = try_lock(&lock) {
                    let _ = remove_tree(&path);
                    let _ = fs::remove_file(&lock);
                    drop(guard);
                }
            }
        }
    }

    /// The directory of every layer of `image`, bottom first, unpacking the
    /// ones not cached yet. A cached layer is not read again.
    pub fn unpack_layers(&self, image: &Image) -> Result<Vec<PathBuf>> {
        image
            .layers
            .iter()
            .map(|layer| {
                let hex = layer
                    .digest
                    .strip_prefix("sha256:")
                    .unwrap_or(&layer.digest);
                let dir = self.root.join("layers/sha256").join(hex);
                if !dir.exists() {
                    self.unpack_layer(image, layer, &dir)?;
                }
                Ok(dir)
            })
            .collect()
    }

    fn unpack_layer(
        &self,
        image: &Image,
        layer: &builder::archive::Layer,
        dir: &Path,
    ) -> Result<()> {
        // Concurrent runs of one image: one unpacks, the others wait on the
        // lock and then find the directory in place.
        let lock_path = dir.with_extension("lock");
        let _lock = lock(&lock_path)?;
        if dir.exists() {
            return Ok(());
        }
        let hex = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{hex}-{}", std::process::id()));
        let tmp_lock = lock(&tmp.with_extension("lock"))?;
        let _ = remove_tree(&tmp);
        let unpacked = unpack_into_place(image, layer, &tmp, dir);
        if unpacked.is_err() {
            let _ = remove_tree(&tmp);
        }
        let _ = fs::remove_file(tmp.with_extension("lock"));
        drop(tmp_lock);
        unpacked
    }

    /// Runs `choose` with the `--userns=auto` ranges of the live containers
    /// and records the one it picks for this container, under a lock, so
    /// two launchers never pick the same range.
    pub fn claim_userns_range(
        &self,
        container: &Container,
        choose: impl FnOnce(&[u32]) -> Result<u32>,
    ) -> Result<u32> {
        let _guard = lock(&self.root.join("containers/.userns.lock"))?;
        let mut taken = Vec::new();
        if let Ok(dir) = fs::read_dir(self.root.join("containers")) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path == container.dir || try_lock(&path.join("lock")).is_some() {
                    continue; // ours, or no launcher is running it
                }
                if let Some(start) = fs::read_to_string(path.join(USERNS))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    taken.push(start);
                }
            }
        }
        let start = choose(&taken)?;
        let path = container.dir.join(USERNS);
        fs::write(&path, start.to_string()).map_err(Error::io("writing", path))?;
        Ok(start)
    }

    /// Makes and locks a fresh state directory for one container.
    ///
    /// The directory appears under `containers/` with its lock already
    /// held, so another launcher's [`Cache::reclaim_stale`] can never take
    /// it for stale: it is made as `tmp/container-<random>/`, its `lock`
    /// created and flocked inside, then renamed into place (rename(2) is
    /// atomic). Making the directory and its lock file in place and locking
    /// it after left a window in which a reclaimer could lock it first and
    /// remove the directory. While staged, `tmp/container-<random>.lock`
    /// (taken before the directory exists) keeps reclaimers off it, and
    /// lets them remove it if this launcher dies before the rename.
    pub fn create_container(&self, name: Option<&str>, keep: bool) -> Result<Container> {
        let id = match name {
            Some(n) => {
                if n.is_empty() || n.contains('/') || n.starts_with('.') {
                    return Err(Error::Invalid {
                        what: "container name",
                        value: n.into(),
                    });
                }
                n.to_string()
            }
            None => random_id(),
        };
        let dir = self.root.join("containers").join(&id);
        let staging = self
            .root
            .join("tmp")
            .join(format!("container-{}", random_id()));
        let staging_lock = lock(&staging.with_extension("lock"))?;
        let made = stage_container(&staging).and_then(|lock| {
            move_into_place(&staging, &dir, name.is_some())?;
            Ok(lock)
        });
        if made.is_err() {
            let _ = remove_tree(&staging);
        }
        let _ = fs::remove_file(staging.with_extension("lock"));
        drop(staging_lock);
        Ok(Container {
            id,
            dir,
            keep,
            _lock: made?,
        })
    }
}

/// Verifies `layer`, unpacks it into `tmp` and renames that to `dir`.
fn unpack_into_place(
    image: &Image,
    layer: &builder::archive::Layer,
    tmp: &Path,
    dir: &Path,
) -> Result<()> {
    let blob = image.verified_layer(layer)?;
    fs::create_dir(tmp).map_err(Error::io("creating", tmp))?;
    unpack::layer(blob, tmp).map_err(|source| Error::Unpack {
        digest: layer.digest.clone(),
        source: Box::new(source),
    })?;
    fs::rename(tmp, dir).map_err(Error::io("renaming unpacked layer to", dir))
}

/// Makes `staging` with its lock file, locked, recording the launcher's
/// pid and start time (field 22 of /proc/self/stat).
fn stage_container(staging: &Path) -> Result<File> {
    fs::create_dir(staging).map_err(Error::io("creating", staging))?;
    let mut lock = lock(&staging.join("lock"))?;
    let start = fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().nth(19).unwrap_or("").to_string())
        })
        .unwrap_or_default();
    let _ = writeln!(lock, "{} {start}", std::process::id());
    Ok(lock)
}

/// Renames the staged directory to `dir`. rename(2) replaces only an empty
/// directory, and a container's directory is never empty while it is in
/// use (it holds its lock file from the start), so a live one is never
/// replaced. A `named` container takes over a kept or stale directory of
/// that name whose lock nobody holds.
fn move_into_place(staging: &Path, dir: &Path, named: bool) -> Result<()> {
    let exists = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY));
    let name_in_use = || Error::NameInUse {
        name: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    match fs::rename(staging, dir) {
        Ok(()) => return Ok(()),
        Err(e) if exists(&e) && named => {}
        Err(e) => return Err(Error::io("moving a new state directory to", dir)(e)),
    }
    let Some(_old) = try_lock(&dir.join("lock")) else {
        return Err(name_in_use());
    };
    remove_tree(dir).map_err(Error::io("removing old state of", dir))?;
    match fs::rename(staging, dir) {
        Ok(()) => Ok(()),
        // Another launcher of that name got there between the two renames.
        Err(e) if exists(&e) => Err(name_in_use()),
        Err(e) => Err(Error::io("moving a new state directory to", dir)(e)),
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 16];
    let ok = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if ok.is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens (creating) and locks `path` exclusively, waiting for it.
fn lock(path: &Path) -> Result<File> {
    loop {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io("opening lock file", path))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::io("locking", path)(io::Error::last_os_error()));
        }
        if still_named(&file, path) {
            return Ok(file);
        }
        // Removed by its previous holder while we waited: lock the new one.
    }
}

/// Locks `path` if nobody holds it (and it exists).
fn try_lock(path: &Path) -> Option<File> {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ok()?;
    // SAFETY: flock on an fd we own.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    (locked && still_named(&file, path)).then_some(file)
}

/// True when `path` still names the open `file`. A lock file is removed by
/// whoever holds it (with its directory), and a name can be reused at once
/// (`--name`): a lock taken on a file opened before that is a lock on
/// nothing anybody else will look at, and must not count.
fn still_named(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// `rm -rf`, also through directories without write or search permission
/// (overlayfs leaves `work/work` as mode 000).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return fs::remove_file(path),
        Ok(_) => {}
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(_) => {
            fix_permissions(path);
            fs::remove_dir_all(path)
        }
    }
}

fn fix_permissions(path: &Path) {
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o700));
    if let Ok(dir) = fs::read_dir(path) {
        for entry in dir.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fix_permissions(&entry.path());
            }
        }
    }
}

/// Unpacking one layer into a directory of its own, for overlayfs.
mod unpack {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    const WHITEOUT: &str = ".wh.";
    const OPAQUE: &str = ".wh..wh..opq";

    /// Unpacks a layer with the builder's safe unpacking into `dest`, its
    /// OCI whiteouts in overlayfs form: `.wh.NAME` becomes a 0/0 character
    /// device `NAME`, `.wh..wh..opq` an `overlay.opaque` xattr on its
    /// directory. overlayfs reads `trusted.overlay.opaque` when mounted by
    /// root on the host, `user.overlay.opaque` in a user namespace (mount
    /// option `userxattr`: rootless and `--userns=auto`), so root writes
    /// both: the markers are unpacked as files and converted here.
    pub fn layer(blob: impl Read, dest: &Path) -> Result<(), builder::Error> {
        let root = !rootless();
        let opts = builder::unpack::Options {
            keep_owners: root,
            allow_devices: root,
            ..Default::default()
        };
        builder::unpack::extract(blob, dest, &opts)?;
        let xattrs: &[&str] = match root {
            true => &["trusted.overlay.opaque", "user.overlay.opaque"],
            false => &["user.overlay.opaque"],
        };
        convert_markers(dest, xattrs).map_err(|source| builder::Error::Io {
            op: "converting whiteouts in",
            path: dest.to_path_buf(),
            source,
        })
    }

    /// Turns whiteout marker files under `dir` into overlayfs whiteouts
    /// (never following symlinks: `read_dir` entries' own types).
    fn convert_markers(dir: &Path, xattrs: &[&str]) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let path = entry.path();
            let kind = entry.file_type()?;
            if name.as_bytes() == OPAQUE.as_bytes() {
                fs::remove_file(&path)?;
                for xattr in xattrs {
                    set_xattr(dir, xattr, b"y")?;
                }
            } else if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT.as_bytes()) {
                // `.wh..` would remove the layer's parent directory: the
                // cache's tmp/, with other launchers' unpacks in it.
                if matches!(hidden, b"" | b"." | b"..") {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("whiteout `{}` names no entry", path.display()),
                    ));
                }
                fs::remove_file(&path)?;
                let target = dir.join(std::ffi::OsStr::from_bytes(hidden));
                let _ = remove_tree(&target);
                make_whiteout(&target)?;
            } else if kind.is_dir() {
                convert_markers(&path, xattrs)?;
            }
        }
        Ok(())
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        let p = CString::new(path.as_os_str().as_bytes())?;
        let n = CString::new(name)?;
        // SAFETY: valid C strings and a value buffer of the given length.
        let rc = unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn make_whiteout(path: &Path) -> io::Result<()> {
        let p = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: a valid C string; a 0/0 character device is overlayfs's
        // whiteout, which unprivileged users may create since Linux 5.8.
        let rc = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR, 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn tar_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn turns_whiteouts_into_overlay_form() {
        if !testkit_is_root() {
            return; // trusted.* xattrs and mknod need root; covered end to end
        }
        let dir = tempfile::tempdir().unwrap();
        let data = tar_with(&[
            ("etc/keep", b"x"),
            ("etc/.wh.gone", b""),
            ("var/.wh..wh..opq", b""),
        ]);
        unpack::layer(&data[..], dir.path()).unwrap();
        assert!(dir.path().join("etc/keep").exists());
        let gone = fs::symlink_metadata(dir.path().join("etc/gone")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &gone.file_type()
        ));
        assert!(!dir.path().join("etc/.wh.gone").exists());
        assert!(!dir.path().join("var/.wh..wh..opq").exists());
    }

    /// An OCI image archive at `path` with one uncompressed layer.
    pub(crate) fn image_with_layer(path: &Path, layer: &[u8]) {
        image_with_layer_stored_as(path, layer, layer);
    }

    /// An OCI archive whose manifest lists `layer` but whose blob of it
    /// holds `stored` (tampered with, when they differ).
    pub(crate) fn image_with_layer_stored_as(path: &Path, layer: &[u8], stored: &[u8]) {
        use sha2::{Digest as _, Sha256};
        let mut out = tar::Builder::new(Vec::new());
        let mut blob = |data: &[u8], stored: &[u8]| {
            let hex = hex::encode(Sha256::digest(data));
            let mut h = tar::Header::new_gnu();
            h.set_size(stored.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.append_data(&mut h, format!("blobs/sha256/{hex}"), stored)
                .unwrap();
            serde_json::json!({"digest": format!("sha256:{hex}"), "size": data.len(),
                "mediaType": "application/vnd.oci.image.layer.v1.tar"})
        };
        let layer = blob(layer, stored);
        let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64",
            "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}))
        .unwrap();
        let config = blob(&config, &config);
        let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": [layer]}))
        .unwrap();
        let manifest = blob(&manifest, &manifest);
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "manifests": [manifest]}))
        .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(index.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, "index.json", &index[..]).unwrap();
        fs::write(path, out.into_inner().unwrap()).unwrap();
    }

    #[test]
    fn a_layer_that_fails_to_unpack_leaves_nothing_in_tmp() {
        let root = tempfile::tempdir().unwrap();
        let archive = root.path().join("image.tar");
        let mut layer = tar_with(&[("ok", b"x")]);
        // The tar crate will not write `..`; the header takes it as it is.
        let mut evil = tar::Header::new_gnu();
        evil.as_old_mut().name[..7].copy_from_slice(b"../evil");
        evil.set_mode(0o644);
        evil.set_size(0);
        evil.set_cksum();
        layer.splice(
            layer.len() - 1024..layer.len() - 1024,
            evil.as_bytes().iter().copied(),
        );
        image_with_layer(&archive, &layer);
        let image = crate::image::read(&archive).unwrap();
        let cache = Cache::open(root.path().join("cache")).unwrap();
        let err = cache.unpack_layers(&image).unwrap_err();
        assert!(matches!(err, Error::Unpack { .. }), "{err}");
        let left: Vec<_> = fs::read_dir(root.path().join("cache/tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn refuses_whiteouts_of_dot_and_dot_dot() {
        for name in [".wh.", ".wh..", ".wh...", "etc/.wh..."] {
            let dir = tempfile::tempdir().unwrap();
            let sibling = dir.path().join("sibling");
            fs::write(&sibling, "x").unwrap();
            let layer = dir.path().join("layer");
            let data = tar_with(&[("etc/keep", b"x"), (name, b"")]);
            let err = unpack::layer(&data[..], &layer).unwrap_err();
            assert!(
                err.to_string().contains("converting whiteouts"),
                "{name}: {err}"
            );
            assert!(sibling.exists(), "{name} removed the layer's parent");
            assert!(layer.join("etc/keep").exists(), "{name}");
        }
    }

    #[test]
    fn a_kept_container_whose_marker_cannot_be_written_says_so() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path().to_path_buf()).unwrap();
        let kept = cache.create_container(Some("kept"), true).unwrap();
        fs::create_dir(kept.dir.join(KEPT)).unwrap();
        let err = kept.remove().unwrap_err();
        assert!(err.to_string().starts_with("writing `"), "{err}");
        fs::remove_dir(kept.dir.join(KEPT)).unwrap();
        fs::create_dir(kept.work()).unwrap();
        kept.remove().unwrap();
        kept.remove().unwrap();
        assert!(kept.dir.join(KEPT).exists() && !kept.work().exists());
    }

    #[test]
    fn reclaims_unlocked_state_and_keeps_locked() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path().to_path_buf()).unwrap();
        let live = cache.create_container(Some("live"), false).unwrap();
        let dead = root.path().join("containers/dead");
        fs::create_dir_all(dead.join("upper/x")).unwrap();
        fs::write(dead.join("lock"), "1 1").unwrap();
        cache.reclaim_stale();
        assert!(!dead.exists());
        assert!(live.dir.exists());
        assert!(matches!(
            cache.create_container(Some("live"), false),
            Err(Error::NameInUse { .. })
        ));
        let dir = live.dir.clone();
        drop(live);
        assert!(!dir.exists());
    }

    /// Launchers sharing a cache reclaim while others create (some reusing
    /// a name at once): a container's directory must stay until its owner
    /// removes it. flock is per open file description, so threads with
    /// their own descriptors race as processes do. Before the directory was
    /// staged under tmp/, about 1 in 25 was lost here.
    #[test]
    fn concurrent_reclaims_never_remove_a_live_container() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path().to_path_buf()).unwrap();
        let lost = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (cache, lost) = (&cache, &lost);
                s.spawn(move || {
                    let name = format!("named-{t}");
                    for i in 0..400 {
                        let name = (t % 2 == 0).then_some(name.as_str());
                        let container = cache.create_container(name, false).unwrap();
                        cache.reclaim_stale();
                        if i % 3 == 0 {
                            std::thread::yield_now();
                        }
                        if !container.dir.join("lock").exists() {
                            lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(lost.into_inner(), 0, "live containers reclaimed");
        let left: Vec<_> = fs::read_dir(root.path().join("containers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != ".userns.lock")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// A reclaimer that opened a lock file just before its owner removed
    /// it, and locks it after the name was reused, holds a lock on nothing:
    /// it must not take the new container for stale.
    #[test]
    fn a_lock_on_a_removed_lock_file_does_not_count() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path().to_path_buf()).unwrap();
        let old = cache.create_container(Some("reused"), false).unwrap();
        let path = old.dir.join("lock");
        let opened_before = File::open(&path).unwrap();
        drop(old);
        let new = cache.create_container(Some("reused"), false).unwrap();
        // SAFETY: flock on an fd we own.
        let rc = unsafe { libc::flock(opened_before.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "the old file is nobody's any more");
        assert!(!still_named(&opened_before, &path));
        assert!(
            try_lock(&path).is_none(),
            "the new container holds its lock"
        );
        cache.reclaim_stale();
        assert!(new.dir.join("lock").exists());
    }

    fn testkit_is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }
}
