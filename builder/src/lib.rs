//! The builder: from a rootfs tarball to a reproducible OCI image archive.
//! Steps, in order: `def` (read image.toml), `fetch`, `verify`, `unpack`
//! (or `host`, for an image of this machine's programs), `layout`, `oci`,
//! `pack`; `inspect` reads a built archive back.

pub mod archive;
pub mod def;
mod error;
pub mod fetch;
pub mod host;
pub mod inspect;
pub mod layout;
pub mod oci;
pub mod pack;
#[cfg(feature = "fetch")]
pub mod registry;
pub mod unpack;
pub mod verify;

pub use def::{ImageDef, Source};
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
}

/// Builds the image `def` into `opts.output`.
pub fn build(def: &ImageDef, opts: &Options) -> Result<Built> {
    std::fs::metadata(&opts.init).map_err(Error::io("reading the init", &opts.init))?;
    let work = WorkDir::beside(&opts.output)?;
    let rootfs = work.path().join("rootfs");
    match def.source() {
        Source::Host(programs, optional) => host::copy_programs(&programs, &optional, &rootfs)?,
        source => {
            let expected = def.rootfs.sha256.as_deref().unwrap_or_default();
            let tarball = fetch::download(&source, expected, &opts.fetch)?;
            let tarball = verify::sha256(tarball, expected)?;
            unpack::extract_file(tarball.path(), &rootfs, &unpack::Options::default())?;
        }
    }
    let warnings = layout::complete(&rootfs, def)?;
    let image = oci::assemble(
        &rootfs,
        &opts.init,
        def,
        &work.path().join("blobs"),
        stamp(opts.epoch),
    )?;
    let size = pack::archive(&image.blobs, &image.index, &opts.output, opts.epoch)?;
    Ok(Built {
        output: opts.output.clone(),
        digest: image.manifest.digest,
        config: image.config.digest,
        size,
        warnings,
    })
}

/// Owners are kept when we could set them while unpacking (root); a rootfs
/// unpacked without privileges is all ours, and recorded as root's.
fn stamp(epoch: u64) -> pack::Stamp {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    pack::Stamp {
        epoch,
        owner: (!root).then_some((0, 0)),
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, else 0.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A scratch directory next to the output (same filesystem, so nothing is
/// copied across devices), removed when dropped even if read-only
/// directories from the rootfs are in it.
struct WorkDir(Option<tempfile::TempDir>);

impl WorkDir {
    fn beside(output: &Path) -> Result<WorkDir> {
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let temp = tempfile::Builder::new()
            .prefix(".cradle-build-")
            .tempdir_in(dir)
            .map_err(Error::io("creating a work directory in", dir))?;
        Ok(WorkDir(Some(temp)))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().map_or(Path::new("."), |t| t.path())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(temp) = self.0.take() {
            make_writable(temp.path());
            let _ = temp.close();
        }
    }
}

/// Adds `u+rwx` to every directory under `dir` (not through symlinks), so
/// that a user without privileges can delete a rootfs with `0555` ones.
fn make_writable(dir: &Path) {
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
