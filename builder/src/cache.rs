//! Cache step: the layers `[[run]]` steps made, content-addressed by a key
//! of everything that decides them ([`crate::run`] computes it), so that
//! an unchanged step is not run again.
//!
//! ```text
//! <cache>/steps.lock              shared (flock) by builds, exclusive by `prune`
//! <cache>/steps/<key>.json        an entry: the layer's digest, size, diff id
//! <cache>/steps/blobs/<hex>       the layer blob, named by its digest
//! <cache>/steps/.partial-*        a write in progress, renamed into place
//! <cache>/sandbox/                the launcher's store for the steps' sandboxes
//! ```
//!
//! Every write goes to a flocked `.partial-*` file first and is renamed into
//! place (the blob before the entry that names it), so a killed build
//! leaves no half entry, only a temporary file the next build reclaims;
//! concurrent builds writing one key write the same bytes, and the last
//! rename wins. A hit copies the blob into the build while hashing it: a
//! blob that no longer matches its digest is a miss, and the step runs.
//!
//! Copies are not cached: their layer is made again each build from the
//! build context, cheaply, and its digest (the copied files' content and
//! metadata) is part of the key of every step after it.

use crate::error::{Error, Result};
use crate::oci::Layer;
use crate::pack::{Blob, Blobs, LayerBlob};
use sha2::{Digest as _, Sha256};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The step cache of one build, held shared until the build ends.
#[derive(Debug)]
pub struct StepCache {
    root: PathBuf,
    dir: PathBuf,
    _lock: File,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Entry {
    digest: String,
    size: u64,
    diff_id: String,
}

impl StepCache {
    /// Opens (making) the step cache under the builder's cache `root`, and
    /// reclaims what killed builds left there.
    pub fn open(root: &Path) -> Result<StepCache> {
        let dir = root.join("steps");
        let blobs = dir.join("blobs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&blobs)
            .map_err(cache_error("making", &blobs))?;
        // Whoever else can write these can plant the layer a step "made".
        for at in [root, &dir, &blobs] {
            check_private(at)?;
        }
        let lock = lock(root, libc::LOCK_SH)?;
        for at in [&dir, &blobs] {
            crate::reclaim_stale(at, crate::PARTIAL_PREFIX);
        }
        Ok(StepCache {
            root: root.to_path_buf(),
            dir,
            _lock: lock,
        })
    }

    /// The launcher's store for the sandboxes (`CRADLE_ROOT` of their runs).
    pub fn sandbox_store(&self) -> PathBuf {
        self.root.join("sandbox")
    }

    /// The layer cached under `key`, copied into `blobs` and checked
    /// against its digest on the way; `None` when there is none, or it is
    /// damaged (which is then removed).
    pub fn get(&self, key: &str, blobs: &Blobs) -> Result<Option<Layer>> {
        let entry_path = self.dir.join(format!("{key}.json"));
        let Some(entry) = open_regular(&entry_path).and_then(|f| {
            let mut bytes = Vec::new();
            f.take(64 << 10).read_to_end(&mut bytes).ok()?;
            serde_json::from_slice::<Entry>(&bytes).ok()
        }) else {
            if std::fs::symlink_metadata(&entry_path).is_ok_and(|m| !m.is_file()) {
                let _ = std::fs::remove_file(&entry_path);
            }
            return Ok(None);
        };
        let Some(hex) = entry
            .digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            let _ = std::fs::remove_file(&entry_path);
            return Ok(None);
        };
        let cached = self.dir.join("blobs").join(hex);
        let Some(mut from) = open_regular(&cached) else {
            if std::fs::symlink_metadata(&cached).is_ok() {
                let _ = std::fs::remove_file(&cached);
                let _ = std::fs::remove_file(&entry_path);
            }
            return Ok(None);
        };
        let mut temp = crate::locked_tempfile(blobs.dir(), crate::PARTIAL_PREFIX)?;
        let (size, actual) =
            copy_hashing(&mut from, temp.as_file_mut()).map_err(Error::io("copying", &cached))?;
        // The config names the layer by its diff id: the uncompressed
        // bytes must be what the entry says, not only the blob.
        let diff_id = (actual == entry.digest && size == entry.size)
            .then(|| diff_id_of(temp.as_file_mut()).ok())
            .flatten();
        if actual != entry.digest || size != entry.size || diff_id.as_ref() != Some(&entry.diff_id)
        {
            // Damaged (a disk error, a hand edit): made again, and replaced.
            let _ = std::fs::remove_file(&cached);
            let _ = std::fs::remove_file(&entry_path);
            return Ok(None);
        }
        let dest = blobs.path_of(&entry.digest);
        temp.persist(&dest)
            .map_err(|e| Error::io("writing", &dest)(e.error))?;
        Ok(Some(Layer::packed(LayerBlob {
            blob: Blob {
                digest: entry.digest,
                size,
            },
            diff_id: entry.diff_id,
        })))
    }

    /// Caches `layer` (a blob in `blobs`) under `key`.
    pub fn put(&self, key: &str, layer: &LayerBlob, blobs: &Blobs) -> Result<()> {
        let hex = layer.blob.digest.trim_start_matches("sha256:");
        let cached = self.dir.join("blobs").join(hex);
        if !cached.is_file() {
            let from = blobs.path_of(&layer.blob.digest);
            let mut src = File::open(&from).map_err(Error::io("opening", &from))?;
            let mut temp = crate::locked_tempfile(&self.dir.join("blobs"), crate::PARTIAL_PREFIX)?;
            std::io::copy(&mut src, temp.as_file_mut())
                .and_then(|_| temp.as_file().sync_all())
                .map_err(cache_error("writing to", &cached))?;
            temp.persist(&cached)
                .map_err(|e| cache_error("writing to", &cached)(e.error))?;
        }
        let entry = Entry {
            digest: layer.blob.digest.clone(),
            size: layer.blob.size,
            diff_id: layer.diff_id.clone(),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|source| Error::Json {
            what: "a step cache entry",
            source,
        })?;
        let path = self.dir.join(format!("{key}.json"));
        let mut temp = crate::locked_tempfile(&self.dir, crate::PARTIAL_PREFIX)?;
        temp.write_all(&bytes)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(cache_error("writing to", &path))?;
        temp.persist(&path)
            .map_err(|e| cache_error("writing to", &path)(e.error))?;
        Ok(())
    }
}

/// Empties the step cache and the sandboxes' store under the builder's
/// cache `root`, once no build uses them (waiting for those that do), and
/// says how many bytes that freed.
pub fn prune(root: &Path) -> Result<u64> {
    if !root.join("steps").exists() && !root.join("sandbox").exists() {
        return Ok(0);
    }
    let _lock = lock(root, libc::LOCK_EX)?;
    let mut freed = 0;
    for dir in [root.join("steps"), root.join("sandbox")] {
        if std::fs::symlink_metadata(&dir).is_err() {
            continue;
        }
        freed += size_of(&dir);
        crate::make_writable(&dir);
        std::fs::remove_dir_all(&dir).map_err(cache_error("emptying", &dir))?;
    }
    Ok(freed)
}

/// `path` opened for reading when it is a regular file, never through a
/// symlink and never waiting on a FIFO; None otherwise.
fn open_regular(path: &Path) -> Option<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    file.metadata().ok().filter(|m| m.is_file()).map(|_| file)
}

/// Refuses a cache directory that is not ours (a symlink, another
/// owner), and makes one of ours that others could write 0700 (a umask of
/// 002 made it so): whoever can write it can plant a step's layer.
fn check_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir).map_err(cache_error("examining", dir))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let problem = if !meta.is_dir() {
        "not a directory (a symlink is not followed)"
    } else if meta.uid() != me {
        "owned by another user"
    } else {
        if meta.mode() & 0o022 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(cache_error("making private", dir))?;
        }
        return Ok(());
    };
    Err(cache_error("trusting", dir)(std::io::Error::other(
        format!("{problem}: the step cache must be a directory of the user building"),
    )))
}

/// The diff id (`sha256:` of the gunzipped bytes) of the gzip blob in
/// `file`, read from its start.
fn diff_id_of(file: &mut File) -> std::io::Result<String> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut gz = flate2::read::MultiGzDecoder::new(&mut *file);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = gz.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// flock(2) of `<root>/steps.lock` with `operation`, waiting.
fn lock(root: &Path, operation: libc::c_int) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = root.join("steps.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&path)
        .map_err(cache_error("locking", &path))?;
    loop {
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(cache_error("locking", &path)(err));
        }
    }
}

fn cache_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Cache { op, path, source }
}

/// Copies `from` into `to`, returning the bytes copied and their digest.
fn copy_hashing(from: &mut File, to: &mut File) -> std::io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    Ok((size, format!("sha256:{}", hex::encode(hasher.finalize()))))
}

/// Bytes of the regular files under `path` (not following symlinks).
fn size_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| size_of(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bytes` gzipped as a blob, with their diff id.
    fn layer_in(blobs: &Blobs, bytes: &[u8]) -> LayerBlob {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        let blob = blobs.add(&gz.finish().unwrap()).unwrap();
        LayerBlob {
            blob,
            diff_id: format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
        }
    }

    #[test]
    fn an_entry_whose_diff_id_is_not_its_blobs_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let blobs = Blobs::create(work.path().join("blobs")).unwrap();
        let cache = StepCache::open(root.path()).unwrap();
        let mut made = layer_in(&blobs, b"layer bytes");
        made.diff_id = format!("sha256:{}", "d".repeat(64));
        cache.put("k", &made, &blobs).unwrap();
        assert!(cache.get("k", &blobs).unwrap().is_none());
    }

    #[test]
    fn a_cache_directory_of_another_user_is_refused_naming_it() {
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(root.path(), Some(65534), Some(65534)).unwrap();
        let err = StepCache::open(root.path()).unwrap_err().to_string();
        assert!(err.contains(&root.path().display().to_string()), "{err}");
    }

    #[test]
    fn a_cached_layer_comes_back_and_a_damaged_one_is_a_miss() {
        let root = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let blobs = Blobs::create(work.path().join("blobs")).unwrap();
        let cache = StepCache::open(root.path()).unwrap();
        assert!(cache.get("k", &blobs).unwrap().is_none());
        let made = layer_in(&blobs, b"layer bytes");
        cache.put("k", &made, &blobs).unwrap();
        std::fs::remove_file(blobs.path_of(&made.blob.digest)).unwrap();
        let hit = cache.get("k", &blobs).unwrap().unwrap();
        assert_eq!(
            (hit.blob, hit.diff_id),
            (made.blob.clone(), made.diff_id.clone())
        );
        assert!(blobs.path_of(&made.blob.digest).is_file());

        let cached = root
            .path()
            .join("steps/blobs")
            .join(made.blob.digest.trim_start_matches("sha256:"));
        std::fs::write(&cached, b"layer bytez").unwrap();
        assert!(cache.get("k", &blobs).unwrap().is_none());
        assert!(!cached.exists(), "the damaged blob is removed");
        // Nothing half-written is left in either directory.
        for dir in [
            root.path().join("steps"),
            root.path().join("steps/blobs"),
            blobs.dir().to_path_buf(),
        ] {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let name = entry.file_name().into_string().unwrap();
                assert!(
                    !name.starts_with(crate::PARTIAL_PREFIX),
                    "{name} in {}",
                    dir.display()
                );
            }
        }
    }

    #[test]
    fn prune_empties_the_cache_and_says_what_it_freed() {
        let root = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let blobs = Blobs::create(work.path().join("blobs")).unwrap();
        let cache = StepCache::open(root.path()).unwrap();
        // Bytes gzip cannot shrink much: an LCG's high bits.
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 24) as u8
            })
            .collect();
        let made = layer_in(&blobs, &noise);
        cache.put("k", &made, &blobs).unwrap();
        drop(cache);
        let freed = prune(root.path()).unwrap();
        assert!(freed >= 1000, "{freed}");
        assert!(!root.path().join("steps").exists());
        assert_eq!(prune(root.path()).unwrap(), 0);
    }
}
