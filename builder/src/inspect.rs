//! Inspect step: reads an image archive back (ours, any OCI layout, or a
//! `docker save` archive) through [`crate::archive`], which checks the
//! config and every layer against its digest.

use crate::archive::{ImageArchive, Layer};
use crate::error::Result;
use oci_spec::image::ImageConfiguration;
use std::path::Path;

/// What `builder inspect` shows.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The OCI `org.opencontainers.image.ref.name`, or docker's first `RepoTags`.
    pub tag: Option<String>,
    /// `sha256:…` of the manifest (OCI) or of the config (`docker save`).
    pub id: String,
    /// `sha256:…` of the config: the image id podman and docker show.
    pub config_digest: String,
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
        tag: image.tag,
        config_digest: image.config_digest,
        id: image.id,
        config: image.config,
        layers: image.layers,
    })
}
