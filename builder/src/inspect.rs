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
    Ok(Inspection {
        tag: tag_of(path)?,
        id: image.id,
        config: image.config,
        layers: image.layers,
    })
}

/// The tag in `index.json` (OCI) or `manifest.json` (`docker save`).
fn tag_of(path: &Path) -> Result<Option<String>> {
    let archive_error = |source| Error::Archive {
        archive: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(Error::io("opening", path))?;
    let mut tar = tar::Archive::new(std::io::BufReader::new(file));
    for entry in tar.entries_with_seek().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let name = entry.path().map_err(archive_error)?.display().to_string();
        let name = name.trim_start_matches("./");
        if name != "index.json" && name != "manifest.json" {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(archive_error)?;
        let json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| Error::JsonRead {
                what: "the index",
                path: path.to_path_buf(),
                source,
            })?;
        let tag = if name == "index.json" {
            json["manifests"][0]["annotations"][crate::oci::REF_NAME].as_str()
        } else {
            json[0]["RepoTags"][0].as_str()
        };
        return Ok(tag.map(str::to_string));
    }
    Ok(None)
}
