//! Inspect step: reads an image archive back (ours, any OCI layout, or a
//! `docker save` archive) through [`crate::archive`], which checks the
//! config and every layer against its digest, and finds the image's tag.

use crate::archive::{ImageArchive, Layer};
use crate::error::{Error, Result};
use oci_spec::image::ImageConfiguration;
use std::io::Read;
use std::path::Path;

/// What `builder inspect` shows.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The OCI `org.opencontainers.image.ref.name`, or docker's first `RepoTags`.
    pub tag: Option<String>,
    /// `sha256:…` of the manifest (OCI) or of the config (`docker save`).
    pub id: String,
    /// `sha256:…` of the config: the image id podman and docker show.
    pub config_digest: Option<String>,
    pub config: ImageConfiguration,
    /// Bottom first; each was read and checked against its digest.
    pub layers: Vec<Layer>,
}

/// Reads the image archive at `path` and verifies every blob in it.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let archive = ImageArchive::open(path)?;
    let image = archive.image(None)?;
    for layer in &image.layers {
        archive.verified_layer(layer)?;
    }
    let names = names_of(path)?;
    Ok(Inspection {
        tag: names.0,
        config_digest: names.1,
        id: image.id,
        config: image.config,
        layers: image.layers,
    })
}

/// The tag and the config digest, from `index.json` and the manifest it
/// names (OCI) or from `manifest.json` (`docker save`).
fn names_of(path: &Path) -> Result<(Option<String>, Option<String>)> {
    if let Some(index) = json_entry(path, "index.json")? {
        let first = &index["manifests"][0];
        let tag = first["annotations"][crate::oci::REF_NAME]
            .as_str()
            .map(str::to_string);
        let manifest = match first["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
        {
            Some(hex) => json_entry(path, &format!("blobs/sha256/{hex}"))?,
            None => None,
        };
        let config = manifest.and_then(|m| m["config"]["digest"].as_str().map(str::to_string));
        return Ok((tag, config));
    }
    let docker = json_entry(path, "manifest.json")?.unwrap_or_default();
    let tag = docker[0]["RepoTags"][0].as_str().map(str::to_string);
    let config = docker[0]["Config"]
        .as_str()
        .and_then(|c| c.strip_prefix("blobs/sha256/").or(c.strip_suffix(".json")))
        .map(|hex| format!("sha256:{hex}"));
    Ok((tag, config))
}

/// The entry `wanted` of the tar at `path` (`./` prefixes ignored), as JSON.
fn json_entry(path: &Path, wanted: &str) -> Result<Option<serde_json::Value>> {
    let archive_error = |source| Error::Archive {
        archive: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    for entry in tar.entries_with_seek().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let name = entry.path().map_err(archive_error)?.display().to_string();
        if name.trim_start_matches("./") != wanted {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(archive_error)?;
        let json = serde_json::from_slice(&bytes).map_err(|source| Error::JsonRead {
            what: "an index or manifest",
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Some(json));
    }
    Ok(None)
}
