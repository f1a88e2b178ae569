//! Inspect step: reads a built image archive back: the tag, the manifest
//! and config digests, the layers and the config, each JSON document
//! checked against its digest.

use crate::error::{Error, Result};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// What `builder inspect` shows.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The `org.opencontainers.image.ref.name` of the first manifest.
    pub tag: Option<String>,
    /// `sha256:…` of the manifest: the image's digest.
    pub digest: String,
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

/// JSON documents are small; larger entries (layers) are skipped.
const MAX_JSON: u64 = 4 << 20;

/// Reads the OCI image archive at `path`.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let files = small_files(path)?;
    let not_image = |what: String| Error::NotAnImage {
        path: path.to_path_buf(),
        what,
    };
    let index_bytes = files
        .get("index.json")
        .ok_or_else(|| not_image("it has no `index.json`".into()))?;
    let index: ImageIndex = parse(index_bytes, "the index", path)?;
    let first = index
        .manifests()
        .first()
        .ok_or_else(|| not_image("its index lists no manifest".into()))?;
    let tag = first
        .annotations()
        .as_ref()
        .and_then(|a| a.get(crate::oci::REF_NAME).cloned());
    let digest = first.digest().to_string();
    let manifest: ImageManifest = parse(blob(&files, &digest, path)?, "the manifest", path)?;
    let config: ImageConfiguration = parse(
        blob(&files, manifest.config().digest().as_ref(), path)?,
        "the config",
        path,
    )?;
    Ok(Inspection {
        tag,
        digest,
        manifest,
        config,
    })
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    path: &Path,
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| Error::JsonRead {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The blob `digest` (`sha256:…`), checked against it.
fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str, path: &Path) -> Result<&'a [u8]> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let bytes = files
        .get(&format!("blobs/sha256/{hex}"))
        .ok_or_else(|| Error::NotAnImage {
            path: path.to_path_buf(),
            what: format!("blob {digest} is missing"),
        })?;
    let actual = hex::encode(Sha256::digest(bytes));
    if actual != hex {
        return Err(Error::DigestMismatch {
            what: format!("{}:blobs/sha256/{hex}", path.display()),
            expected: hex.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Every regular file of the tar at `path` up to [`MAX_JSON`] bytes, by name
/// (without a leading `./`).
fn small_files(path: &Path) -> Result<HashMap<String, Vec<u8>>> {
    let file = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let archive_error = |source| Error::Archive {
        archive: path.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut files = HashMap::new();
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        if entry.header().entry_type() != tar::EntryType::Regular || entry.size() > MAX_JSON {
            continue;
        }
        let name = entry.path().map_err(archive_error)?.display().to_string();
        let name = name.trim_start_matches("./").to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(archive_error)?;
        files.insert(name, bytes);
    }
    Ok(files)
}
