//! The builder: from an image definition to a reproducible OCI image
//! archive. Steps, in order: `def` (read image.toml), `init` (the static
//! init, checked), `base` (a rootfs by `fetch`, `verify`, `unpack` or
//! `host`, completed by `layout`; or an image's layers), `copy` (the build
//! context's files), `oci`, `pack`; `inspect` reads a built archive back.

pub mod archive;
pub mod base;
pub mod cache;
pub mod containerfile;
pub mod copy;
pub mod def;
pub mod dockerignore;
mod error;
pub mod fetch;
mod glob;
pub mod host;
pub mod init;
pub mod inspect;
pub mod layout;
pub mod oci;
pub mod pack;
#[cfg(feature = "fetch")]
pub mod registry;
pub mod sbom;
/// Without `fetch`, only the reference syntax (image definitions check
/// their tags with it).
#[cfg(not(feature = "fetch"))]
pub mod registry {
    pub mod reference;
    pub use reference::Reference;
}
pub mod run;
pub mod unpack;
pub mod upper;
pub mod verify;

pub use def::{CopyDef, ImageDef, RunDef, Source, Step};
pub use error::{Error, Refusal, Result};

use std::path::{Path, PathBuf};

/// Where the inputs are and the output goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The static init, added at `/sbin/cradle-init`.
    pub init: PathBuf,
    /// The image archive to write.
    pub output: PathBuf,
    pub fetch: fetch::Options,
    /// Mtimes are clamped to this, and it is the image's creation time
    /// (`SOURCE_DATE_EPOCH`, else 0).
    pub epoch: u64,
    /// How `[[run]]` steps run (the step cache, progress, the launcher).
    pub run: run::Options,
    /// Leave the init out: no `/sbin/cradle-init` layer, and the
    /// entrypoint is the definition's own (`builder build --no-init`, and
    /// a Containerfile's intermediate stages).
    pub no_init: bool,
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Built {
    pub output: PathBuf,
    /// `sha256:…` of the manifest: the image's digest.
    pub digest: String,
    /// `sha256:…` of the config: the image id podman and docker show.
    pub config: String,
    /// Bytes of the archive.
    pub size: u64,
    /// What the caller should tell the user (a command missing from the rootfs …).
    pub warnings: Vec<String>,
    /// The definition's steps (copies in a row are one), and how many of
    /// them came from the step cache.
    pub steps: usize,
    pub cached: usize,
}

/// Builds the image `def` into `opts.output`.
pub fn build(def: &ImageDef, opts: &Options) -> Result<Built> {
    build_at(def, opts, 0)
}

/// [`build`] of a definition `depth` bases down.
pub(crate) fn build_at(def: &ImageDef, opts: &Options, depth: usize) -> Result<Built> {
    if !opts.no_init {
        init::check_static(&opts.init)?;
    }
    let work = WorkDir::beside(&opts.output, BUILD_PREFIX)?;
    let blobs = pack::Blobs::create(work.path().join("blobs"))?;
    let (base, mut warnings) = base::prepare(def, opts, work.path(), &blobs, depth)?;
    let base_layers = base.layers.len();
    let mut added = Vec::new();
    if let Some(layer) = programs_layer(def, work.path(), &blobs, opts.epoch)? {
        added.push((layer, "cradle builder: host programs".to_string()));
    }
    let max_copy = copy::max_size_from_env();
    let rootfs = work.path().join("rootfs");
    let rootfs = rootfs.is_dir().then_some(rootfs.as_path());
    let groups = step_groups(def);
    let mut sandbox = None;
    let mut cached = 0;
    for (i, group) in groups.iter().enumerate() {
        let progress = |event: run::Progress| {
            if let Some(report) = opts.run.progress {
                report(&event);
            }
        };
        progress(run::Progress::Step {
            number: i + 1,
            total: groups.len(),
            what: group.describe(),
        });
        match group {
            Group::Copies(copies) => {
                let context = copies[0].context.as_deref().unwrap_or(&def.dir);
                let Some(layer) =
                    copy::layer(copies, context, rootfs, &blobs, opts.epoch, max_copy)?
                else {
                    continue;
                };
                let sources: Vec<&str> = copies.iter().map(|c| c.src.as_str()).collect();
                progress(run::Progress::Made {
                    digest: layer.blob.digest.clone(),
                });
                added.push((
                    oci::Layer::packed(layer),
                    format!("cradle builder: copy {}", sources.join(" ")),
                ));
            }
            Group::Run(def_run) => {
                // Made at the first step: a definition without any needs
                // no launcher and no step cache.
                let sandbox = match &mut sandbox {
                    Some(sandbox) => sandbox,
                    None => sandbox.insert(run::Sandbox::new(opts)?),
                };
                let layers: Vec<oci::Layer> = base
                    .layers
                    .iter()
                    .chain(added.iter().map(|(layer, _)| layer))
                    .cloned()
                    .collect();
                let step = run::Step {
                    def: def_run,
                    name: format!("step {} ({})", i + 1, group.describe()),
                    layers: &layers,
                    base: base.config.as_ref(),
                };
                let (layer, hit) = run::layer(&step, sandbox, work.path(), &blobs)?;
                cached += usize::from(hit);
                let digest = layer.blob.digest.clone();
                progress(match hit {
                    true => run::Progress::Cached { digest },
                    false => run::Progress::Made { digest },
                });
                added.push((
                    layer,
                    format!("cradle builder: run {}", def_run.argv().join(" ")),
                ));
            }
        }
    }
    drop(sandbox);
    if !opts.no_init {
        let init = pack::layer_with_file(&opts.init, oci::INIT_PATH, 0o755, &blobs, opts.epoch)?;
        added.push((
            oci::Layer::packed(init),
            format!("cradle builder: /{}", oci::INIT_PATH),
        ));
    }
    let mut image = oci::assemble(base, added, def, blobs, opts.epoch, !opts.no_init)?;
    if def.sbom {
        warnings.extend(sbom::attach(&mut image, base_layers, &def.tag, opts.epoch)?);
    }
    let size = work.publish(&opts.output, |packed| {
        pack::archive(&image.blobs, &image.index, packed, opts.epoch)
    })?;
    Ok(Built {
        output: opts.output.clone(),
        digest: image.manifest.digest,
        config: image.config.digest,
        size,
        warnings,
        steps: groups.len(),
        cached,
    })
}

/// What a definition's steps make, in order: each run its own layer,
/// consecutive copies from the same context one layer together.
enum Group<'a> {
    Copies(Vec<CopyDef>),
    Run(&'a RunDef),
}

impl Group<'_> {
    /// `COPY a b` or `RUN argv…`, as progress and errors show the step.
    fn describe(&self) -> String {
        match self {
            Group::Copies(copies) => {
                let sources: Vec<&str> = copies.iter().map(|c| c.src.as_str()).collect();
                format!("COPY {}", sources.join(" "))
            }
            Group::Run(run) => match &run.shell {
                Some(line) => format!("RUN {line}"),
                None => format!("RUN {}", run.command.join(" ")),
            },
        }
    }
}

fn step_groups(def: &ImageDef) -> Vec<Group<'_>> {
    // A definition made in code may leave `steps` empty: copies, then runs.
    let steps: Vec<Step> = if def.steps.is_empty() {
        (0..def.copy.len())
            .map(Step::Copy)
            .chain((0..def.run.len()).map(Step::Run))
            .collect()
    } else {
        def.steps.clone()
    };
    let mut groups: Vec<Group> = Vec::new();
    for step in steps {
        match step {
            Step::Copy(i) => {
                let copy = &def.copy[i];
                if let Some(Group::Copies(copies)) = groups.last_mut()
                    && copies[0].context == copy.context
                {
                    copies.push(copy.clone());
                } else {
                    groups.push(Group::Copies(vec![copy.clone()]));
                }
            }
            Step::Run(i) => groups.push(Group::Run(&def.run[i])),
        }
    }
    groups
}

/// With a base other than `host`, the definition's `programs` in a layer
/// of their own (with `host` they are the rootfs already).
fn programs_layer(
    def: &ImageDef,
    work: &Path,
    blobs: &pack::Blobs,
    epoch: u64,
) -> Result<Option<oci::Layer>> {
    let (programs, optional) = (&def.rootfs.programs, &def.rootfs.optional_programs);
    if matches!(def.source(), Source::Host(..)) || (programs.is_empty() && optional.is_empty()) {
        return Ok(None);
    }
    let dir = work.join("programs");
    host::copy_programs(programs, optional, &dir)?;
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    let layer = pack::layer_from_dir(&dir, blobs, base::stamp(epoch))?;
    Ok(Some(oci::Layer::packed(layer)))
}

/// `SOURCE_DATE_EPOCH` from the environment, else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The directory `output` goes in (`.` for a bare name), created.
pub(crate) fn parent_of(output: &Path) -> Result<&Path> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    Ok(dir)
}

/// A scratch directory next to the output (same filesystem, so nothing is
/// copied across devices), removed when dropped even if read-only
/// directories from the rootfs are in it. It is flocked for as long as it
/// lives, which is how [`reclaim_stale`] tells it from the leftover of a
/// killed build.
pub(crate) struct WorkDir {
    temp: Option<tempfile::TempDir>,
    _lock: std::fs::File,
}

impl WorkDir {
    /// Reclaims what killed runs left beside `output` (both kinds of work
    /// directory share the place), then makes a fresh `<prefix>*` there.
    pub(crate) fn beside(output: &Path, prefix: &str) -> Result<WorkDir> {
        let dir = parent_of(output)?;
        for stale in [BUILD_PREFIX, PULL_PREFIX] {
            reclaim_stale(dir, stale);
        }
        // A reclaimer may have removed it between mkdir and our flock (it
        // looked unlocked): try again with a new name.
        for _ in 0..8 {
            // 0700: a `[[run]]` step's upper directory (setuid files,
            // device nodes) lies below it.
            let temp = tempfile::Builder::new()
                .prefix(prefix)
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir_in(dir)
                .map_err(Error::io("creating a work directory in", dir))?;
            if let Some(lock) = lock_if_still_there(temp.path(), true)? {
                return Ok(WorkDir {
                    temp: Some(temp),
                    _lock: lock,
                });
            }
        }
        Err(Error::io("locking a work directory in", dir)(
            std::io::Error::other("removed by another build each time"),
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        self.temp.as_ref().map_or(Path::new("."), |t| t.path())
    }

    /// Has `write` make the archive inside the work directory, then renames
    /// it over `output`: [`pack::archive`] keeps its temporary file beside
    /// the path it is given, and one beside `output` would outlive a kill
    /// (only the work directory is reclaimed).
    pub(crate) fn publish(
        &self,
        output: &Path,
        write: impl FnOnce(&Path) -> Result<u64>,
    ) -> Result<u64> {
        let packed = self.path().join("image.tar");
        let size = write(&packed)?;
        std::fs::rename(&packed, output).map_err(Error::io("renaming into", output))?;
        // The rename is durable once the directory is synced too.
        if let Ok(dir) = std::fs::File::open(parent_of(output)?) {
            let _ = dir.sync_all();
        }
        Ok(size)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // Removed while still locked (the lock field drops after this).
        if let Some(temp) = self.temp.take() {
            make_writable(temp.path());
            let _ = temp.close();
        }
    }
}

pub(crate) const BUILD_PREFIX: &str = ".cradle-build-";
pub(crate) const PULL_PREFIX: &str = ".cradle-pull-";
pub(crate) const PARTIAL_PREFIX: &str = ".partial-";

/// A temporary file `<prefix>*` in `dir`, flocked while it lives (see
/// [`reclaim_stale`]).
pub(crate) fn locked_tempfile(dir: &Path, prefix: &str) -> Result<tempfile::NamedTempFile> {
    for _ in 0..8 {
        let temp = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(dir)
            .map_err(Error::io("creating a temporary file in", dir))?;
        if flock(temp.as_file(), libc::LOCK_EX).map_err(Error::io("locking", temp.path()))?
            && still_there(temp.as_file(), temp.path())
        {
            return Ok(temp);
        }
    }
    Err(Error::io("locking a temporary file in", dir)(
        std::io::Error::other("removed by another build each time"),
    ))
}

/// Opens `path` (a directory when `dir`, never through a symlink), flocks
/// it exclusively, waiting, and returns the lock if `path` is still the
/// entry locked: a reclaimer that locked it first has removed it meanwhile
/// (None then, as when it is gone before it could be opened).
fn lock_if_still_there(path: &Path, dir: bool) -> Result<Option<std::fs::File>> {
    let file = match open_nofollow(path, dir) {
        Ok(file) => file,
        // Removed before we could even open it: the same race, earlier.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("opening", path)(e)),
    };
    let locked = flock(&file, libc::LOCK_EX).map_err(Error::io("locking", path))?;
    Ok((locked && still_there(&file, path)).then_some(file))
}

fn open_nofollow(path: &Path, dir: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_NOFOLLOW | if dir { libc::O_DIRECTORY } else { 0 };
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
}

/// flock(2) with `operation`; false when `LOCK_NB` found it held.
fn flock(file: &std::fs::File, operation: libc::c_int) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// True when `path` still names the inode `file` has open.
fn still_there(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Removes the entries `<prefix>*` of `dir` that no live process holds: a
/// build, download or pull flocks its temporary file or work directory
/// until it ends, so one whose flock can be taken at once was left by a
/// killed process (the kernel drops a dead holder's flocks). Best effort:
/// an entry that cannot be opened, locked or removed stays for next time.
pub(crate) fn reclaim_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(prefix.as_bytes())
        {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        // Only what we make: a symlink or a FIFO with the name is left alone.
        if !kind.is_dir() && !kind.is_file() {
            continue;
        }
        let path = entry.path();
        let Ok(file) = open_nofollow(&path, kind.is_dir()) else {
            continue;
        };
        if !matches!(flock(&file, libc::LOCK_EX | libc::LOCK_NB), Ok(true))
            || !still_there(&file, &path)
        {
            continue;
        }
        // Removed while we hold the lock, so a creator that raced us to it
        // sees its entry gone and makes another.
        if kind.is_dir() {
            make_writable(&path);
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Adds `u+rwx` to every directory under `dir` (not through symlinks), so
/// that a user without privileges can delete a rootfs with `0555` ones.
pub(crate) fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of each kind a live process holds (flock is per open file
    /// description, so a second open in this process is another holder).
    #[test]
    fn reclaim_keeps_what_a_live_process_holds_and_removes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let held_file = dir.path().join(".partial-held");
        let held_dir = dir.path().join(".cradle-build-held");
        let dead_file = dir.path().join(".partial-dead");
        let dead_dir = dir.path().join(".cradle-build-dead");
        std::fs::write(&held_file, b"half").unwrap();
        std::fs::write(&dead_file, b"half").unwrap();
        for d in [&held_dir, &dead_dir] {
            std::fs::create_dir_all(d.join("rootfs/ro")).unwrap();
            make_readonly(&d.join("rootfs/ro"));
        }
        let locks = [
            open_nofollow(&held_file, false),
            open_nofollow(&held_dir, true),
        ]
        .map(|f| f.unwrap());
        for lock in &locks {
            assert!(flock(lock, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        }
        // Not ours to remove: another name, and a symlink with our prefix.
        std::fs::write(dir.path().join("output.tar"), b"").unwrap();
        std::os::unix::fs::symlink(&held_dir, dir.path().join(".cradle-build-link")).unwrap();

        reclaim_stale(dir.path(), PARTIAL_PREFIX);
        reclaim_stale(dir.path(), BUILD_PREFIX);

        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".cradle-build-held",
                ".cradle-build-link",
                ".partial-held",
                "output.tar"
            ]
        );
        assert!(held_dir.join("rootfs/ro").is_dir());

        drop(locks);
        reclaim_stale(dir.path(), PARTIAL_PREFIX);
        reclaim_stale(dir.path(), BUILD_PREFIX);
        assert!(!held_file.exists() && !held_dir.exists());
        make_writable(dir.path());
    }

    #[test]
    fn a_work_directory_is_not_reclaimed_while_its_build_lives() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("image.tar");
        let work = WorkDir::beside(&output, BUILD_PREFIX).unwrap();
        let temp = locked_tempfile(dir.path(), PARTIAL_PREFIX).unwrap();
        reclaim_stale(dir.path(), BUILD_PREFIX);
        reclaim_stale(dir.path(), PARTIAL_PREFIX);
        assert!(work.path().is_dir());
        assert!(temp.path().is_file());
        // A second build beside it reclaims nothing of the first's.
        let second = WorkDir::beside(&output, BUILD_PREFIX).unwrap();
        assert!(work.path().is_dir() && second.path().is_dir());
    }

    /// Builds starting beside one another each reclaim what looks dead,
    /// which a new work directory does between its mkdir and its flock:
    /// one removed that early is made again, never an error (seen in CI as
    /// ``opening `.cradle-build-…`: No such file or directory``).
    #[test]
    fn work_directories_made_while_others_reclaim_are_made_again_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("image.tar");
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        reclaim_stale(dir.path(), BUILD_PREFIX);
                    }
                });
            }
            let builders: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        for _ in 0..300 {
                            let work = WorkDir::beside(&output, BUILD_PREFIX).unwrap();
                            assert!(work.path().is_dir());
                        }
                    })
                })
                .collect();
            for b in builders {
                let result = b.join();
                done.store(true, std::sync::atomic::Ordering::Relaxed);
                result.unwrap();
            }
        });
    }

    fn make_readonly(dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.join("file"), b"").unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
}
