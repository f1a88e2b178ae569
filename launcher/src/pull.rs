//! Step 0, pull: `launcher run REGISTRY/REPO[:TAG]` brings the image from
//! its registry into the cache as an image archive
//! (`<root>/images/<sha256 of the reference>.tar`), with the builder's
//! verified pull, once; later runs of the same reference use that archive
//! without asking the registry again (as `docker run` does). A path that
//! exists, or that looks like one, is left alone. A pulled archive is an
//! image of the store ([`crate::store`]) from then on. `--pull always`
//! pulls again (the new archive replaces the old by rename, so a container
//! starting from it meanwhile reads one or the other, whole), `--pull
//! never` only uses the store.

use crate::cache::{Cache, Lock, PULL_LOCK};
use crate::{Error, Result, store};
use builder::registry::{self, Reference};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// `--pull` and the registry flags of `launcher run REF`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOptions {
    pub policy: Policy,
    /// `--ca-cert FILE`: a PEM certificate to trust besides the system's.
    pub ca_cert: Option<PathBuf>,
    /// `--authfile FILE`: the one credential file to read.
    pub auth_file: Option<PathBuf>,
    /// `--tls-verify=false`: plain http to the registry.
    pub insecure: bool,
}

/// `--pull always|missing|never`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Pull when the store has no copy of the reference (docker's default).
    #[default]
    Missing,
    /// Pull every time; the copy is replaced when the registry has another.
    Always,
    /// Never ask the registry: the store's copy, or an error.
    Never,
}

/// The image archive to run for `image`: the file itself, or the cached
/// pull of the reference.
pub fn resolve(image: &Path, cache_root: &Path, flags: &PullOptions) -> Result<PathBuf> {
    if !is_reference(image) {
        return Ok(image.to_path_buf());
    }
    let text = image.to_string_lossy();
    let reference = Reference::parse(&text).map_err(|source| Error::Pull {
        reference: text.to_string(),
        source: Box::new(source),
    })?;
    // Opened first: its checks and modes hold before anything is written.
    let cache = Cache::open(cache_root.to_path_buf())?;
    let images = cache.root().join("images");
    let hex = hex::encode(Sha256::digest(reference.to_string().as_bytes()));
    let archive = images.join(format!("{hex}.tar"));
    match (flags.policy, archive.is_file()) {
        (Policy::Missing | Policy::Never, true) => return Ok(archive),
        (Policy::Never, false) => {
            return Err(Error::NotPulled {
                reference: reference.to_string(),
            });
        }
        (Policy::Missing | Policy::Always, _) => {}
    }
    // Held while the builder's work files are in images/: a reclaim
    // removes them only when no pull holds it.
    let _pulling = Lock::shared(&images.join(PULL_LOCK))?;
    let opts = registry::Options {
        progress: true,
        insecure: flags.insecure,
        ca_cert: flags.ca_cert.clone(),
        auth_file: flags.auth_file.clone(),
        ..Default::default()
    };
    registry::pull(&reference, &archive, &opts).map_err(|source| Error::Pull {
        reference: reference.to_string(),
        source: Box::new(source),
    })?;
    store::record_pulled(&cache, &archive)?;
    Ok(archive)
}

/// A registry reference, not a file: it does not exist, does not end in
/// `.tar` (or `.tar:NAME`, where NAME may have colons of its own), is not
/// an existing file followed by `:NAME`, and is not written as a path
/// (`/…`, `./…`).
pub fn is_reference(image: &Path) -> bool {
    let text = image.to_string_lossy();
    let file_like = text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || text.ends_with(".tar")
        || text.match_indices(':').any(|(at, _)| {
            let file = &text[..at];
            file.ends_with(".tar") || Path::new(file).is_file()
        });
    !file_like && !image.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_references_from_files() {
        assert!(is_reference(Path::new("127.0.0.1:5000/cradle/default:v1")));
        assert!(is_reference(Path::new("quay.io/a/b")));
        assert!(!is_reference(Path::new("missing.tar")));
        assert!(!is_reference(Path::new("images.tar:alpine")));
        assert!(!is_reference(Path::new(
            "saved.tar:docker.io/library/alpine:3.19"
        )));
        assert!(!is_reference(Path::new("/abs/image")));
        assert!(!is_reference(Path::new("./image")));
    }
}
