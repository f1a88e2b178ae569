//! Step 2, cache: layers unpacked once into a directory named by their
//! digest, and each container's private state directory.
//!
//! ```text
//! <root>/                          0700 when the launcher makes it (see Cache::open)
//! <root>/layers/sha256/<hex>/      a layer, unpacked, whiteouts in overlay form
//! <root>/layers/sha256/<hex>.lock  shared (flock) by the launchers using the layer,
//!                                  exclusive while it is unpacked or removed
//! <root>/images/<key>.json         an image pulled or run: archive, layers, last use
//! <root>/images/<key>.lock         shared by the launchers running that image
//! <root>/images/<hex>.tar          a pulled image archive (pull.rs)
//! <root>/images/pull.lock          shared by pulls; their work files are reclaimed
//!                                  only when nobody holds it
//! <root>/tmp/<layer>-<pid>/        an unpack in progress, renamed into place when done
//! <root>/tmp/container-<random>/   a container's directory, until renamed into containers/
//! <root>/tmp/write-<random>        an image record, until renamed into images/
//! <root>/tmp/<name>.lock           held (flock) while tmp/<name> is in progress
//! <root>/containers/<id>/lock      held (flock) by the launcher running <id>; pid + start time
//! <root>/containers/<id>/{upper,work,rootfs,etc}   made by the child, in a tmpfs of its
//!                                  mount namespace (on disk with `--keep`)
//! <root>/detached/<id>/            a detached container's record, monitor lock and
//!                                  log (crate::state); its runs use containers/<id>
//! ```
//!
//! `<root>` is `$CRADLE_ROOT`, else `/var/lib/cradle` as root, else
//! `$XDG_DATA_HOME/cradle` (`~/.local/share/cradle`). Every directory the
//! launcher makes here is 0700: an unpacked layer or a kept upper holds the
//! image's setuid files, device nodes and file capabilities, which any local
//! user could use through a path they can traverse (CVE-2021-41091; docker's
//! storage is 0700 since). Containers reach their layers and state only
//! before pivot_root, by path, as root or as the rootless user (the owner);
//! the root of a `--userns=auto` container, an unmapped id on the host, gets
//! a search-only ACL entry on `<root>` and `containers/` while it runs, and
//! its layers are attached by the launcher ([`crate::namespaces`]).
//!
//! Every directory of a container is removed when it ends, and a lock file
//! by the last holder; what a SIGKILLed launcher left behind (a lock nobody
//! holds, and what it guarded) is removed by the next run.

use crate::image::Image;
use crate::{Error, Result};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// The launcher's directories below the root, each 0700.
const DIRS: [&str; 5] = ["layers", "layers/sha256", "images", "tmp", "containers"];

/// Held shared by pulls while the builder's work files are in `images/`.
pub(crate) const PULL_LOCK: &str = "pull.lock";

/// What the builder names its work files while it pulls into `images/`
/// (a work directory, then the archive before its rename).
const PULL_LEFTOVERS: [&str; 2] = [".cradle-pull-", ".image-"];

/// Marks a state directory kept with `--keep`, which is never reclaimed
/// (`launcher rm NAME` removes it; a later run of the name is refused).
const KEPT: &str = "kept";

/// Records the first host id of a `--userns=auto` container's range.
const USERNS: &str = "userns";

#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
    /// Shared locks on the image and layers this launcher uses, held until
    /// it ends: a prune never removes what a running container is made of.
    in_use: Mutex<Vec<Lock>>,
}

/// A container's state directory, locked for the launcher's lifetime and
/// removed on drop unless kept.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub dir: PathBuf,
    keep: bool,
    /// Its `--userns=auto` root may search the cache's directories (an ACL
    /// entry), until the container is removed.
    may_search: AtomicBool,
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
        let removed = self.remove_state();
        if self.may_search.swap(false, Ordering::SeqCst)
            && let Some(root) = self.dir.parent().and_then(Path::parent)
        {
            revoke_search(root, Some(&self.dir))?;
        }
        removed
    }

    fn remove_state(&self) -> Result<()> {
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
        remove_container_dir(&self.dir).map_err(Error::io("removing", &self.dir))
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
    /// Opens the cache at `root`, making what is missing.
    ///
    /// A missing root is made 0700 (its parents with their default modes).
    /// An existing one may be the user's (`CRADLE_ROOT`): it must be theirs
    /// and writable by them alone, else it is refused (whoever can write it
    /// can put their own layers and state in place), and its mode is left
    /// alone, but for a cache older launchers made 0711. The directories
    /// below it are the launcher's: made 0700, or made 0700 again when an
    /// older launcher left them open.
    pub fn open(root: PathBuf) -> Result<Self> {
        // Absolute: the child and `--userns=auto`'s setns change directory.
        let root = std::path::absolute(&root).map_err(Error::io("resolving", &root))?;
        prepare_root(&root)?;
        for sub in DIRS {
            make_private_dir(&root.join(sub))?;
        }
        Ok(Self {
            root,
            in_use: Mutex::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keeps `lock` until this launcher ends (the cache is dropped).
    pub(crate) fn hold(&self, lock: Lock) {
        self.in_use
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(lock);
    }

    /// The directory of the layer with `digest` (`sha256:<hex>`).
    pub(crate) fn layer_dir(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join("layers/sha256").join(hex)
    }

    /// Removes what launchers that died without cleaning up left behind:
    /// state directories, unpacks and records in progress, lock files, the
    /// work files of pulls, and search ACL entries of their containers.
    /// Only what nobody holds a lock on goes. Best effort: a failure here
    /// must not stop this run.
    pub fn reclaim_stale(&self) {
        self.reclaim_containers();
        self.reclaim_tmp();
        for dir in ["layers/sha256", "images"] {
            reclaim_lock_files(&self.root.join(dir));
        }
        self.reclaim_pulls();
        if [self.root.clone(), self.root.join("containers")]
            .iter()
            .any(|d| acl::has_search_entries(d))
        {
            let _ = revoke_search(&self.root, None);
        }
    }

    fn reclaim_containers(&self) {
        let Ok(dir) = fs::read_dir(self.root.join("containers")) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "lock") || path.join(KEPT).exists() {
                continue;
            }
            // A directory without its lock file is one whose launcher died
            // removing it (the lock goes last): the lock is made to take it.
            if let Some(_guard) = Lock::try_exclusive(&path.join("lock"), true) {
                let _ = remove_tree(&path);
            }
        }
    }

    /// `tmp/<name>` and `tmp/<name>.lock`: taken together when the lock is
    /// free; a lock file whose work is gone, and work whose lock file is
    /// gone, go as well.
    fn reclaim_tmp(&self) {
        let Ok(dir) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in dir.flatten() {
            let path = entry.path();
            let (work, lock) = match path.extension() {
                Some(e) if e == "lock" => (path.with_extension(""), path),
                _ => (path.clone(), path.with_extension("lock")),
            };
            if let Some(_guard) = Lock::try_exclusive(&lock, true) {
                let _ = remove_tree(&work);
            }
        }
    }

    /// The builder's work files of pulls that did not finish, when no pull
    /// is running (it holds [`PULL_LOCK`] shared).
    fn reclaim_pulls(&self) {
        let images = self.root.join("images");
        let Ok(dir) = fs::read_dir(&images) else {
            return;
        };
        let left: Vec<PathBuf> = dir
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                PULL_LEFTOVERS.iter().any(|p| name.starts_with(p))
            })
            .map(|e| e.path())
            .collect();
        if left.is_empty() {
            return;
        }
        if let Some(_pulls) = Lock::try_exclusive(&images.join(PULL_LOCK), true) {
            for path in left {
                let _ = remove_tree(&path);
            }
        }
    }

    /// The directory of every layer of `image`, bottom first, unpacking the
    /// ones not cached yet. A cached layer is not read again. The image is
    /// recorded as used (for `launcher image ls` and `prune`), and it and
    /// its layers stay locked (shared) until this launcher ends.
    pub fn unpack_layers(&self, image: &Image) -> Result<Vec<PathBuf>> {
        crate::store::record_use(self, image)?;
        image
            .layers
            .iter()
            .map(|layer| self.use_layer(image, layer))
            .collect()
    }

    /// The directory of `layer`, unpacked first when missing, and held.
    fn use_layer(&self, image: &Image, layer: &builder::archive::Layer) -> Result<PathBuf> {
        let dir = self.layer_dir(&layer.digest);
        let lock = dir.with_extension("lock");
        loop {
            let held = Lock::shared_kept(&lock)?;
            if dir.exists() {
                self.hold(held);
                return Ok(dir);
            }
            drop(held);
            // Missing, or removed by a prune between the unpack and the
            // shared lock: unpacked (again).
            self.unpack_layer(image, layer, &dir)?;
        }
    }

    fn unpack_layer(
        &self,
        image: &Image,
        layer: &builder::archive::Layer,
        dir: &Path,
    ) -> Result<()> {
        // Concurrent runs of one image: one unpacks, the others wait on the
        // lock and then find the directory in place.
        let _lock = Lock::exclusive(&dir.with_extension("lock"))?;
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
        let _tmp_lock = Lock::exclusive(&tmp.with_extension("lock"))?;
        let _ = remove_tree(&tmp);
        let unpacked = unpack_into_place(image, layer, &tmp, dir);
        if unpacked.is_err() {
            let _ = remove_tree(&tmp);
        }
        unpacked
    }

    /// Writes `bytes` to `dest` whole or not at all: into `tmp/` first (so
    /// that what a SIGKILL leaves is reclaimed), then renamed into place.
    pub(crate) fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = self.root.join("tmp").join(format!("write-{}", random_id()));
        let _lock = Lock::exclusive(&tmp.with_extension("lock"))?;
        let written = fs::write(&tmp, bytes)
            .map_err(Error::io("writing", &tmp))
            .and_then(|()| fs::rename(&tmp, dest).map_err(Error::io("renaming into place", dest)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Runs `choose` with the `--userns=auto` ranges of the live containers
    /// and records the one it picks for this container, under a lock, so
    /// two launchers never pick the same range. The range's root, nobody on
    /// the host, may then search `<root>` and `containers/` (a search-only
    /// ACL entry) on its way to its state directory, until the container is
    /// removed: the 0700 directories would stop it before pivot_root.
    pub fn claim_userns_range(
        &self,
        container: &Container,
        choose: impl FnOnce(&[u32]) -> Result<u32>,
    ) -> Result<u32> {
        let _guard = Lock::exclusive(&self.root.join("containers/.userns.lock"))?;
        let mut taken = live_userns_starts(&self.root, Some(&container.dir));
        let start = choose(&taken)?;
        let path = container.dir.join(USERNS);
        fs::write(&path, start.to_string()).map_err(Error::io("writing", path))?;
        container.may_search.store(true, Ordering::SeqCst);
        taken.push(start);
        allow_search(&self.root, &taken)?;
        Ok(start)
    }

    /// The state directory `containers/<name>` of a container run in the
    /// foreground with `--keep --name`, when it ended (its lock is free).
    pub fn kept_container(&self, name: &str) -> Option<PathBuf> {
        let dir = self.root.join("containers").join(name);
        let valid = !(name.is_empty() || name.contains('/') || name.starts_with('.'));
        (valid && dir.join(KEPT).exists()).then_some(dir)
    }

    /// Removes a kept container's directory ([`Cache::kept_container`]),
    /// unless a launcher of that name runs (holds its lock).
    pub fn remove_kept(&self, dir: &Path) -> Result<()> {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(_lock) = try_lock(&dir.join("lock")) else {
            return Err(Error::ContainerRunning { id: name });
        };
        remove_container_dir(dir).map_err(Error::io("removing", dir))
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
        let staging_lock = Lock::exclusive(&staging.with_extension("lock"))?;
        let made = stage_container(&staging).and_then(|lock| {
            move_into_place(&staging, &dir, name.is_some())?;
            Ok(lock)
        });
        if made.is_err() {
            let _ = remove_tree(&staging);
        }
        drop(staging_lock);
        Ok(Container {
            id,
            dir,
            keep,
            may_search: AtomicBool::new(false),
            _lock: made?,
        })
    }
}

/// Makes a missing root 0700, or checks an existing one (see [`Cache::open`]).
fn prepare_root(root: &Path) -> Result<()> {
    if let Some(parent) = root.parent() {
        fs::create_dir_all(parent).map_err(Error::io("creating", parent))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("creating state directory", root)(e)),
    }
    // Followed when a symlink: the user may point CRADLE_ROOT through one;
    // what it points at is what is checked.
    let meta = fs::metadata(root).map_err(Error::io("examining state directory", root))?;
    check_private(root, &meta)?;
    // Older launchers set 0711 on every run: a cache with it is theirs.
    if meta.mode() & 0o7777 == 0o711 && root.join("layers/sha256").is_dir() {
        set_mode(root, 0o700)?;
    }
    Ok(())
}

/// Makes `dir` 0700, or makes an existing one 0700 again (it is the
/// launcher's). A symlink, or a directory not ours or writable by others,
/// is refused rather than followed or changed. A search ACL entry (group
/// bits `--x`, the entry's mask) is a running `--userns=auto` container's,
/// and stays.
fn make_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("creating cache directory", dir)(e)),
    }
    let meta = fs::symlink_metadata(dir).map_err(Error::io("examining", dir))?;
    check_private(dir, &meta)?;
    let mode = meta.mode() & 0o7777;
    let searched = mode == 0o710 && acl::has_search_entries(dir);
    if mode != 0o700 && !searched {
        set_mode(dir, 0o700)?;
    }
    Ok(())
}

/// Refuses what is not a directory of ours that only we can write: whoever
/// else can write it can swap what is in it.
fn check_private(dir: &Path, meta: &fs::Metadata) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::UnsafeRoot {
            path: dir.to_path_buf(),
            why,
        })
    };
    let me = nix::unistd::geteuid().as_raw();
    if !meta.is_dir() {
        return refuse("is not a directory".into());
    }
    if meta.uid() != me {
        return refuse(format!("belongs to uid {}, not to uid {me}", meta.uid()));
    }
    match meta.mode() & 0o022 {
        0 => Ok(()),
        0o020 => refuse("is writable by its group".into()),
        _ => refuse("is writable by others".into()),
    }
}

fn set_mode(dir: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(Error::io("restricting the mode of", dir))
}

/// Removes the lock files in `dir` nobody holds, but those of a layer (a
/// directory of the same name) or an image (its `.json` record) still
/// there, which are kept ([`Lock::shared_kept`]).
fn reclaim_lock_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "lock")
            && !path.with_extension("").exists()
            && !path.with_extension("json").exists()
        {
            drop(Lock::try_exclusive(&path, false));
        }
    }
}

/// The host ids of the `--userns=auto` containers whose launcher runs
/// (holds their lock), but `except`'s.
fn live_userns_starts(root: &Path, except: Option<&Path>) -> Vec<u32> {
    let mut taken = Vec::new();
    let Ok(dir) = fs::read_dir(root.join("containers")) else {
        return taken;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if Some(path.as_path()) == except || try_lock(&path.join("lock")).is_some() {
            continue; // ours, or no launcher is running it
        }
        if let Some(start) = fs::read_to_string(path.join(USERNS))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            taken.push(start);
        }
    }
    taken
}

/// The search ACL entries of `<root>` and `containers/`: exactly `uids`.
fn allow_search(root: &Path, uids: &[u32]) -> Result<()> {
    for dir in [root.to_path_buf(), root.join("containers")] {
        acl::set_search_entries(&dir, uids)
            .map_err(Error::io("setting the search ACL entries of", &dir))?;
    }
    Ok(())
}

/// Drops the search ACL entries of containers no launcher runs any more
/// (and `except`'s, which is being removed).
fn revoke_search(root: &Path, except: Option<&Path>) -> Result<()> {
    let _guard = Lock::exclusive(&root.join("containers/.userns.lock"))?;
    allow_search(root, &live_userns_starts(root, except))
}

/// Verifies `layer` while unpacking it into `tmp`, from one read of its
/// blob, and renames `tmp` to `dir` only when the bytes read were the
/// manifest's. Hashing one read and unpacking a second let bytes changed in
/// between into the cache under the genuine digest, for every later image
/// with that layer. The unverified bytes only ever reach `tmp`, private to
/// this launcher, which the caller removes on error.
fn unpack_into_place(
    image: &Image,
    layer: &builder::archive::Layer,
    tmp: &Path,
    dir: &Path,
) -> Result<()> {
    let image_error = |source| Error::Image {
        path: image.archive.path().to_path_buf(),
        source: Box::new(source),
    };
    let mut blob = image.archive.layer_reader(layer).map_err(image_error)?;
    fs::create_dir(tmp).map_err(Error::io("creating", tmp))?;
    let unpacked = unpack::layer(&mut blob, tmp);
    // Checked first: bytes that are not the manifest's are that error,
    // whatever unpacking them did.
    blob.finish().map_err(image_error)?;
    unpacked.map_err(|source| Error::Unpack {
        digest: layer.digest.clone(),
        source: Box::new(source),
    })?;
    fs::rename(tmp, dir).map_err(Error::io("renaming unpacked layer to", dir))
}

/// Makes `staging` with its lock file, locked, recording the launcher's
/// pid and start time (field 22 of /proc/self/stat).
fn stage_container(staging: &Path) -> Result<File> {
    fs::create_dir(staging).map_err(Error::io("creating", staging))?;
    let mut lock = flock_waiting(&staging.join("lock"), libc::LOCK_EX)?;
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
/// replaced. A `named` container takes over a stale directory of that name
/// whose lock nobody holds; a kept one is refused as in use.
fn move_into_place(staging: &Path, dir: &Path, named: bool) -> Result<()> {
    let exists = |e: &io::Error| matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY));
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name_in_use = || Error::NameInUse {
        id: name.clone(),
        name: name.clone(),
    };
    match fs::rename(staging, dir) {
        Ok(()) => return Ok(()),
        Err(e) if exists(&e) && named => {}
        Err(e) => return Err(Error::io("moving a new state directory to", dir)(e)),
    }
    let Some(_old) = try_lock(&dir.join("lock")) else {
        return Err(name_in_use());
    };
    // A kept writable layer is the user's data: it goes with `launcher rm
    // NAME`, never as a side effect of reusing the name (docker refuses the
    // name of a stopped container too).
    if dir.join(KEPT).exists() {
        return Err(name_in_use());
    }
    remove_tree(dir).map_err(Error::io("removing old state of", dir))?;
    match fs::rename(staging, dir) {
        Ok(()) => Ok(()),
        // Another launcher of that name got there between the two renames.
        Err(e) if exists(&e) => Err(name_in_use()),
        Err(e) => Err(Error::io("moving a new state directory to", dir)(e)),
    }
}

/// Removes a container's directory: first moved out of `containers/` into
/// `tmp/` under a fresh name (with its lock, still held), then removed
/// there. Removed in place, a directory went through a moment without its
/// lock file, when a reclaiming launcher took it for a dead one's and, as
/// a new container of the same name was renamed over the emptied
/// directory, removed the live one. A launcher killed after the move
/// leaves `tmp/removing-…`, which [`Cache::reclaim_stale`] takes.
pub(crate) fn remove_container_dir(dir: &Path) -> io::Result<()> {
    let Some(root) = dir.parent().and_then(Path::parent) else {
        return remove_tree(dir);
    };
    let doomed = root.join("tmp").join(format!("removing-{}", random_id()));
    match fs::rename(dir, &doomed) {
        Ok(()) => remove_tree(&doomed),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => remove_tree(dir),
    }
}

pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    // getrandom(2): no file to open, and it works where /dev is bare.
    // SAFETY: writing at most 16 bytes into a 16-byte buffer.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A lock file, flocked. The last holder removes the file, so that lock
/// files do not pile up; one opened before that and locked after is a lock
/// on nothing, which [`still_named`] tells, and is taken again. The locks
/// of layers and images are kept ([`Lock::shared_kept`]): one per layer or
/// image, removed with it, so that a warm run makes and removes no inode
/// for them (ext4's inode allocator, scanning past recently deleted
/// inodes, cost a run 0.3 ms per file here).
#[derive(Debug)]
pub(crate) struct Lock {
    file: File,
    path: PathBuf,
    exclusive: bool,
    keep: bool,
}

impl Lock {
    /// Waits for `path` (created when missing), exclusively.
    pub(crate) fn exclusive(path: &Path) -> Result<Lock> {
        Ok(Lock {
            file: flock_waiting(path, libc::LOCK_EX)?,
            path: path.to_path_buf(),
            exclusive: true,
            keep: false,
        })
    }

    /// Waits for `path` (created when missing), shared with other users.
    pub(crate) fn shared(path: &Path) -> Result<Lock> {
        Ok(Lock {
            file: flock_waiting(path, libc::LOCK_SH)?,
            path: path.to_path_buf(),
            exclusive: false,
            keep: false,
        })
    }

    /// [`Lock::shared`], leaving the file when released: the lock of
    /// something that outlives the run (a layer, an image), removed by
    /// whoever removes that, holding it exclusively.
    pub(crate) fn shared_kept(path: &Path) -> Result<Lock> {
        Ok(Lock {
            file: flock_waiting(path, libc::LOCK_SH)?,
            path: path.to_path_buf(),
            exclusive: false,
            keep: true,
        })
    }

    /// `path` exclusively if nobody holds it; when it is missing, made
    /// (`create`) or None.
    pub(crate) fn try_exclusive(path: &Path, create: bool) -> Option<Lock> {
        let file = fs::OpenOptions::new()
            .create(create)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .ok()?;
        // SAFETY: flock on an fd we own.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        (locked && still_named(&file, path)).then(|| Lock {
            file,
            path: path.to_path_buf(),
            exclusive: true,
            keep: false,
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // A shared holder is the last when its lock converts to an
        // exclusive one without waiting (flock(2): conversion drops the
        // shared lock first, so of two leaving at once one gets it).
        // SAFETY: flock on an fd we own.
        if self.keep {
            return;
        }
        let last = self.exclusive
            || unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if last && still_named(&self.file, &self.path) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Opens (creating) and flocks `path` with `operation`, waiting for it.
fn flock_waiting(path: &Path, operation: libc::c_int) -> Result<File> {
    loop {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io("opening lock file", path))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } != 0 {
            return Err(Error::io("locking", path)(io::Error::last_os_error()));
        }
        if still_named(&file, path) {
            return Ok(file);
        }
        // Removed by its previous holder while we waited: lock the new one.
    }
}

/// Locks `path` if nobody holds it (and it exists).
pub(crate) fn try_lock(path: &Path) -> Option<File> {
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
    match (file.metadata(), fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.dev() == named.dev() && held.ino() == named.ino(),
        _ => false,
    }
}

/// `rm -rf`, also through directories without write or search permission
/// (overlayfs leaves `work/work` as mode 000). What another remover took
/// first is gone all the same.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
        Ok(m) if !m.is_dir() => return ignore_gone(fs::remove_file(path)),
        Ok(_) => {}
    }
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(_) => {
            fix_permissions(path);
            ignore_gone(fs::remove_dir_all(path))
        }
    }
}

fn ignore_gone(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
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

/// The search-only ACL entries (`user:<id>:--x`) the root of a
/// `--userns=auto` container gets on the directories above its state
/// directory, in the `system.posix_acl_access` xattr (acl(5); the format is
/// the kernel's `posix_acl_xattr`). Other entries are kept as they are; the
/// mask is recomputed as setfacl(1) does. With none of ours and no other
/// named entry left, the ACL written is the minimal one, which the kernel
/// turns back into the directory's mode (its group bits from the group
/// entry, as before) and drops.
mod acl {
    use std::ffi::CString;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    const XATTR: &std::ffi::CStr = c"system.posix_acl_access";
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const EXECUTE: u16 = 0x01;
    const UNDEFINED_ID: u32 = u32::MAX;
    /// The host ids `--userns=auto` gives container roots: the slots of
    /// [`crate::namespaces::choose_auto_start`], 2^20 up to 2^28.
    const AUTO_IDS: std::ops::Range<u32> = 1 << 20..1 << 28;

    /// In the order the kernel wants them: by tag, then by id.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Entry {
        tag: u16,
        id: u32,
        perm: u16,
    }

    fn ours(e: &Entry) -> bool {
        e.tag == USER && e.perm == EXECUTE && AUTO_IDS.contains(&e.id)
    }

    pub fn has_search_entries(dir: &Path) -> bool {
        read(dir).is_ok_and(|acl| acl.is_some_and(|entries| entries.iter().any(ours)))
    }

    pub fn set_search_entries(dir: &Path, uids: &[u32]) -> io::Result<()> {
        let existing = read(dir)?;
        let mut entries = match &existing {
            Some(entries) => entries.clone(),
            None if uids.is_empty() => return Ok(()),
            None => {
                let mode = std::fs::metadata(dir)?.mode();
                let perm = |shift: u32| ((mode >> shift) & 7) as u16;
                vec![
                    entry(USER_OBJ, UNDEFINED_ID, perm(6)),
                    entry(GROUP_OBJ, UNDEFINED_ID, perm(3)),
                    entry(OTHER, UNDEFINED_ID, perm(0)),
                ]
            }
        };
        entries.retain(|e| !ours(e) && e.tag != MASK);
        entries.extend(uids.iter().map(|&id| entry(USER, id, EXECUTE)));
        if entries.iter().any(|e| e.tag == USER || e.tag == GROUP) {
            let mask = entries
                .iter()
                .filter(|e| matches!(e.tag, USER | GROUP | GROUP_OBJ))
                .fold(0, |m, e| m | e.perm);
            entries.push(entry(MASK, UNDEFINED_ID, mask));
        }
        entries.sort();
        entries.dedup();
        if existing.as_ref() == Some(&entries) {
            return Ok(());
        }
        write(dir, &entries)
    }

    fn entry(tag: u16, id: u32, perm: u16) -> Entry {
        Entry { tag, id, perm }
    }

    /// The ACL entries, sorted; None when the directory has no ACL (or its
    /// filesystem none at all).
    fn read(dir: &Path) -> io::Result<Option<Vec<Entry>>> {
        let path = CString::new(dir.as_os_str().as_bytes())?;
        let mut buf = vec![0u8; 4 + 8 * 64];
        loop {
            // SAFETY: a valid C string and a buffer of the given length.
            let n = unsafe {
                libc::lgetxattr(
                    path.as_ptr(),
                    XATTR.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENODATA | libc::EOPNOTSUPP) => return Ok(None),
                Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
                _ => return Err(err),
            }
        }
        let invalid = || io::Error::new(io::ErrorKind::InvalidData, "malformed ACL");
        let (version, body) = buf.split_first_chunk::<4>().ok_or_else(invalid)?;
        if u32::from_le_bytes(*version) != VERSION || body.len() % 8 != 0 {
            return Err(invalid());
        }
        let mut entries: Vec<Entry> = body
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        for e in &mut entries {
            if !matches!(e.tag, USER | GROUP) {
                e.id = UNDEFINED_ID;
            }
        }
        entries.sort();
        Ok(Some(entries))
    }

    fn write(dir: &Path, entries: &[Entry]) -> io::Result<()> {
        let path = CString::new(dir.as_os_str().as_bytes())?;
        let mut bytes = VERSION.to_le_bytes().to_vec();
        for e in entries {
            bytes.extend_from_slice(&e.tag.to_le_bytes());
            bytes.extend_from_slice(&e.perm.to_le_bytes());
            bytes.extend_from_slice(&e.id.to_le_bytes());
        }
        // SAFETY: valid C strings and a value buffer of the given length.
        let rc = unsafe {
            libc::lsetxattr(
                path.as_ptr(),
                XATTR.as_ptr(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Unpacking one layer into a directory of its own, for overlayfs.
mod unpack {
    use super::*;

    /// Unpacks a layer with the builder's safe unpacking into `dest`, its
    /// OCI whiteouts written in overlayfs form as they come: `.wh.NAME` as a
    /// 0/0 character device `NAME`, `.wh..wh..opq` as an `overlay.opaque`
    /// xattr on its directory. overlayfs reads `trusted.overlay.opaque` when
    /// mounted by root on the host, `user.overlay.opaque` in a user
    /// namespace (mount option `userxattr`: rootless and `--userns=auto`),
    /// so root writes both. Written during the unpack, before directory
    /// mtimes are set, so directories keep the layer's mtimes (converting
    /// afterwards gave them the unpack time). `CRADLE_MAX_LAYER_SIZE`
    /// (`64G`, `512M` …) bounds what a layer may expand to.
    pub fn layer(blob: impl Read, dest: &Path) -> Result<(), builder::Error> {
        let root = !rootless();
        let mut opts = builder::unpack::Options {
            keep_owners: root,
            allow_devices: root,
            overlay_whiteouts: true,
            overlay_opaque_xattrs: match root {
                true => &["trusted.overlay.opaque", "user.overlay.opaque"],
                false => &["user.overlay.opaque"],
            },
            ..Default::default()
        };
        if let Some(size) = std::env::var_os("CRADLE_MAX_LAYER_SIZE") {
            let text = size.to_string_lossy();
            opts.max_size =
                builder::unpack::parse_size(&text).ok_or_else(|| builder::Error::Io {
                    op: "reading CRADLE_MAX_LAYER_SIZE",
                    path: dest.to_path_buf(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("`{text}` is not a size (`64G`, `512M`)"),
                    ),
                })?;
        }
        builder::unpack::extract(blob, dest, &opts).map(drop)
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

    /// Directories that received a whiteout or an opaque marker keep the
    /// layer's mtime, as podman and `launcher export` give them (converting
    /// the markers after the unpack stamped them with the unpack time).
    #[test]
    fn directories_with_whiteouts_keep_the_layers_mtime() {
        if !testkit_is_root() {
            return; // trusted.* xattrs and mknod need root; covered end to end
        }
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, mtime) in [
            ("d/", tar::EntryType::Directory, 1000),
            ("d/.wh.x", tar::EntryType::Regular, 0),
            ("e/", tar::EntryType::Directory, 2000),
            ("e/.wh..wh..opq", tar::EntryType::Regular, 0),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(mtime);
            h.set_cksum();
            b.append_data(&mut h, name, std::io::empty()).unwrap();
        }
        let data = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        unpack::layer(&data[..], dir.path()).unwrap();
        let mtime = |p: &str| {
            std::os::unix::fs::MetadataExt::mtime(&fs::metadata(dir.path().join(p)).unwrap())
        };
        assert_eq!(mtime("d"), 1000);
        assert_eq!(mtime("e"), 2000);
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &fs::symlink_metadata(dir.path().join("d/x"))
                .unwrap()
                .file_type()
        ));
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
                err.to_string().contains("refusing archive entry"),
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

    /// Answers fanotify permission events for reads of one file
    /// (FAN_ACCESS_PERM: each read(2) of it waits for the answer), so that
    /// the file can change at a chosen read: from the second read after
    /// [`ChangesAfterFirstRead::arm`] on, `evil` is written over it before
    /// the read is let through. A file another writer rewrites between
    /// two reads, deterministically. The mark is set before the archive is
    /// opened: the kernel skips permission events on files opened while
    /// none were watched.
    struct ChangesAfterFirstRead {
        armed: std::sync::Arc<AtomicBool>,
        stop: std::sync::Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<usize>>,
    }

    impl ChangesAfterFirstRead {
        fn watch(path: &Path, evil: Vec<u8>) -> ChangesAfterFirstRead {
            use std::os::unix::ffi::OsStrExt;
            use std::os::unix::fs::FileExt;
            let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
            // SAFETY: plain syscalls; the fd is closed by the thread.
            let fan = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as u32) };
            assert!(fan >= 0, "fanotify_init: {}", io::Error::last_os_error());
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
            // SAFETY: a valid C string.
            let rc = unsafe {
                libc::fanotify_mark(
                    fan,
                    libc::FAN_MARK_ADD,
                    libc::FAN_ACCESS_PERM,
                    libc::AT_FDCWD,
                    c.as_ptr(),
                )
            };
            assert_eq!(rc, 0, "fanotify_mark: {}", io::Error::last_os_error());
            let writer = fs::OpenOptions::new().write(true).open(path).unwrap();
            let armed = std::sync::Arc::new(AtomicBool::new(false));
            let stop = std::sync::Arc::new(AtomicBool::new(false));
            let (a, st) = (armed.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                let mut reads = 0;
                const META: usize = std::mem::size_of::<libc::fanotify_event_metadata>();
                let mut buf = [0u8; 64 * META];
                while !st.load(Ordering::SeqCst) {
                    let mut pfd = libc::pollfd {
                        fd: fan,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one pollfd; a buffer of its length.
                    let n = unsafe {
                        libc::poll(&mut pfd, 1, 20);
                        libc::read(fan, buf.as_mut_ptr().cast(), buf.len())
                    };
                    let mut at = 0;
                    while n > 0 && at + META <= n as usize {
                        // SAFETY: the kernel wrote whole events.
                        let event: libc::fanotify_event_metadata =
                            unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                        if a.load(Ordering::SeqCst) {
                            reads += 1;
                            if reads >= 2 {
                                writer.write_all_at(&evil, 0).unwrap();
                            }
                        }
                        let answer = libc::fanotify_response {
                            fd: event.fd,
                            response: libc::FAN_ALLOW,
                        };
                        // SAFETY: the answer struct, and the event's fd, ours.
                        unsafe {
                            libc::write(
                                fan,
                                (&answer as *const libc::fanotify_response).cast(),
                                std::mem::size_of::<libc::fanotify_response>(),
                            );
                            libc::close(event.fd);
                        }
                        at += event.event_len as usize;
                    }
                }
                // SAFETY: ours; closing it lets any read still waiting through.
                unsafe { libc::close(fan) };
                reads
            });
            ChangesAfterFirstRead {
                armed,
                stop,
                thread: Some(thread),
            }
        }

        fn arm(&self) {
            self.armed.store(true, Ordering::SeqCst);
        }

        /// The reads of the file since it was armed.
        fn reads(mut self) -> usize {
            self.stop.store(true, Ordering::SeqCst);
            self.thread.take().unwrap().join().unwrap()
        }
    }

    impl Drop for ChangesAfterFirstRead {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// An archive whose layer reads genuine once and poisoned after (same
    /// length, another file content), and the genuine layer. The file is
    /// larger than one read of an unpacker, smaller than one of a hash.
    fn archive_that_changes(dir: &Path) -> (PathBuf, Vec<u8>, ChangesAfterFirstRead) {
        let genuine = tar_with(&[("etc/motd", &[b'g'; 64 << 10])]);
        let poisoned = tar_with(&[("etc/motd", &[b'p'; 64 << 10])]);
        let archive = dir.join("image.tar");
        let evil = dir.join("evil.tar");
        image_with_layer(&archive, &genuine);
        image_with_layer_stored_as(&evil, &genuine, &poisoned);
        let evil = fs::read(evil).unwrap();
        assert_eq!(evil.len() as u64, fs::metadata(&archive).unwrap().len());
        let watch = ChangesAfterFirstRead::watch(&archive, evil);
        (archive, genuine, watch)
    }

    fn digest_of(bytes: &[u8]) -> String {
        use sha2::{Digest as _, Sha256};
        hex::encode(Sha256::digest(bytes))
    }

    /// The layer's bytes are rewritten between the first read of the
    /// archive and the next (fanotify holds each read until the test
    /// thread has answered, so the moment is exact). Hashing one read and
    /// unpacking a second put the poisoned file in the cache under the
    /// genuine digest, for every later image with that layer; unpacked
    /// from the bytes it hashes, the cache gets the genuine layer or,
    /// as here, an error and nothing.
    #[test]
    fn a_layer_rewritten_after_its_first_read_never_lands_in_the_cache() {
        if !testkit::require(testkit_is_root(), "fanotify permission events need root") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (archive, genuine, watch) = archive_that_changes(dir.path());
        let image = crate::image::read(&archive).unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        watch.arm();
        let unpacked = cache.unpack_layers(&image);
        assert!(watch.reads() >= 2, "the archive was read once only");
        let layer = cache.layer_dir(&format!("sha256:{}", digest_of(&genuine)));
        match unpacked {
            Ok(_) => assert!(
                fs::read(layer.join("etc/motd")).unwrap() == [b'g'; 64 << 10],
                "the poisoned file is in the cache under the genuine digest"
            ),
            Err(err) => {
                let text = format!("{:#}", anyhow::Error::from(err));
                assert!(
                    text.contains(&archive.display().to_string())
                        && text.contains(&format!(
                            "sha256 of `blobs/sha256/{}` is",
                            digest_of(&genuine)
                        )),
                    "{text}"
                );
                assert!(!layer.exists(), "a layer that failed its digest is cached");
            }
        }
        let left: Vec<_> = fs::read_dir(dir.path().join("cache/tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// `launcher export` (and `bundle`) unpack into the user's directory
    /// from the bytes they hash: here the unpacker's one read takes the
    /// whole layer, genuine, so the export is; a hash of one read and an
    /// unpack of a second exported the poisoned file. Had the rewrite
    /// fallen inside the layer's reads, it would be the image's digest
    /// error, naming the archive and the layer.
    #[test]
    fn an_export_whose_layer_is_rewritten_while_read_fails_naming_layer_and_archive() {
        if !testkit::require(testkit_is_root(), "fanotify permission events need root") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (archive, genuine, watch) = archive_that_changes(dir.path());
        let image = crate::image::read(&archive).unwrap();
        let out = dir.path().join("out");
        watch.arm();
        let exported = crate::bundle::flatten_layers(&image, &out);
        assert!(watch.reads() >= 1, "the archive was not read");
        match exported {
            Ok(()) => assert!(
                fs::read(out.join("etc/motd")).unwrap() == [b'g'; 64 << 10],
                "the poisoned file was exported as the genuine layer"
            ),
            Err(err) => {
                let text = format!("{:#}", anyhow::Error::from(err));
                assert!(
                    text.starts_with(&format!("reading image `{}`", archive.display()))
                        && text.contains(&format!("blobs/sha256/{}", digest_of(&genuine))),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn a_missing_root_is_made_private_with_its_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a/b/cradle");
        Cache::open(root.clone()).unwrap();
        for sub in ["", "layers", "layers/sha256", "images", "tmp", "containers"] {
            let mode = fs::metadata(root.join(sub)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{sub}");
        }
        let parent = fs::metadata(dir.path().join("a/b")).unwrap().mode() & 0o7777;
        assert_ne!(parent, 0o700, "parents keep their default mode");
    }

    /// `CRADLE_ROOT=/tmp`: a 1777 directory became 0711, and anyone could
    /// plant layers in it. It is refused, and left as it was.
    #[test]
    fn a_root_others_can_write_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        for (mode, why) in [
            (0o1777, "is writable by others"),
            (0o775, "is writable by its group"),
        ] {
            let root = dir.path().join(format!("{mode:o}"));
            fs::create_dir(&root).unwrap();
            fs::set_permissions(&root, fs::Permissions::from_mode(mode)).unwrap();
            let err = Cache::open(root.clone()).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "state directory `{}` {why}; use a directory only you can write",
                    root.display()
                )
            );
            assert_eq!(fs::metadata(&root).unwrap().mode() & 0o7777, mode);
            assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "made inside");
        }
    }

    #[test]
    fn a_root_of_the_user_keeps_its_mode_and_an_old_cache_is_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("users");
        fs::create_dir(&users).unwrap();
        fs::set_permissions(&users, fs::Permissions::from_mode(0o755)).unwrap();
        Cache::open(users.clone()).unwrap();
        assert_eq!(fs::metadata(&users).unwrap().mode() & 0o7777, 0o755);
        assert_eq!(
            fs::metadata(users.join("layers")).unwrap().mode() & 0o7777,
            0o700
        );
        // As older launchers left it: 0711 down to the layers, images/ 0755.
        let old = dir.path().join("old");
        for sub in ["layers/sha256", "containers", "tmp", "images"] {
            fs::create_dir_all(old.join(sub)).unwrap();
        }
        for (sub, mode) in [
            ("", 0o711),
            ("layers", 0o711),
            ("layers/sha256", 0o711),
            ("containers", 0o711),
            ("tmp", 0o711),
            ("images", 0o755),
        ] {
            fs::set_permissions(old.join(sub), fs::Permissions::from_mode(mode)).unwrap();
        }
        Cache::open(old.clone()).unwrap();
        for sub in ["", "layers", "layers/sha256", "containers", "tmp", "images"] {
            let mode = fs::metadata(old.join(sub)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o700, "{sub}");
        }
    }

    #[test]
    fn a_symlinked_cache_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("layers")).unwrap();
        let err = Cache::open(root.clone()).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
    }

    /// A `--userns=auto` root gets search on the root and containers/ while
    /// its container lives; the modes are as before once it is removed, or
    /// once its launcher died and the next run reclaimed.
    #[test]
    fn search_entries_for_userns_auto_roots_come_and_go() {
        if !testkit::require(
            testkit_is_root(),
            "setting ACLs of root's directories needs root",
        ) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().join("cache")).unwrap();
        let root = cache.root().to_path_buf();
        let mode = |d: &Path| fs::metadata(d).unwrap().mode() & 0o7777;
        let a = cache.create_container(None, false).unwrap();
        let b = cache.create_container(None, false).unwrap();
        let start_a = cache.claim_userns_range(&a, |_| Ok(1 << 20)).unwrap();
        let start_b = cache
            .claim_userns_range(&b, |taken| {
                assert_eq!(taken, [start_a]);
                Ok(2 << 20)
            })
            .unwrap();
        assert_eq!(start_b, 2 << 20);
        for d in [root.clone(), root.join("containers")] {
            assert_eq!(mode(&d), 0o710, "{}", d.display());
            assert!(acl::has_search_entries(&d));
        }
        assert_eq!(mode(&root.join("layers")), 0o700);
        // Another launcher's open leaves the entries of live containers.
        Cache::open(root.clone()).unwrap();
        assert_eq!(mode(&root.join("containers")), 0o710);
        a.remove().unwrap();
        assert!(acl::has_search_entries(&root), "b's entry goes with b");
        // b's launcher dies: its lock goes, its directory stays.
        let dir_b = b.dir.clone();
        std::mem::forget(b);
        let lock = dir_b.join("lock");
        let stale = fs::read(&lock).unwrap();
        fs::remove_file(&lock).unwrap();
        fs::write(&lock, stale).unwrap();
        cache.reclaim_stale();
        for d in [root.clone(), root.join("containers")] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
            assert!(!acl::has_search_entries(&d));
        }
        assert!(!dir_b.exists());
    }

    /// What SIGKILLed launchers leave: lock files nobody holds (of layers,
    /// images, pulls, unpacks), half-unpacked layers, records half written,
    /// a container directory whose lock went first, and pull work files.
    /// A held lock keeps what it guards.
    #[test]
    fn reclaims_lock_files_and_work_nobody_holds() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path().to_path_buf()).unwrap();
        let root = cache.root();
        let left = [
            "layers/sha256/aa.lock",
            "images/bb.lock",
            "images/pull.lock",
            "tmp/cc-1.lock",
            "tmp/write-dd",
            "images/.image-x",
        ];
        for file in left {
            fs::write(root.join(file), "").unwrap();
        }
        for d in [
            "tmp/ee-2/etc",
            "containers/ff",
            "images/.cradle-pull-y/blobs",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::create_dir_all(root.join("tmp/live-3/etc")).unwrap();
        let live = Lock::exclusive(&root.join("tmp/live-3.lock")).unwrap();
        let layer = Lock::shared(&root.join("layers/sha256/11.lock")).unwrap();
        cache.reclaim_stale();
        for gone in left
            .iter()
            .chain(&["tmp/ee-2", "containers/ff", "images/.cradle-pull-y"])
        {
            assert!(!root.join(gone).exists(), "{gone} left");
        }
        assert!(
            root.join("tmp/live-3/etc").exists() && root.join("layers/sha256/11.lock").exists()
        );
        drop((live, layer));
        assert!(
            !root.join("tmp/live-3.lock").exists(),
            "the last holder removes it"
        );
        assert!(
            !root.join("layers/sha256/11.lock").exists(),
            "the last holder removes it"
        );
    }

    #[test]
    fn the_last_shared_holder_removes_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let a = Lock::shared(&path).unwrap();
        let b = Lock::shared(&path).unwrap();
        assert!(Lock::try_exclusive(&path, false).is_none());
        drop(a);
        assert!(path.exists(), "b still holds it");
        drop(b);
        assert!(!path.exists());
    }

    fn testkit_is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }
}
