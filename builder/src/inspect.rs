//! Inspect step: reads an image archive back (ours, any OCI layout, or a
//! `docker save` archive) through [`crate::archive`], which checks the
//! config and every layer against its digest, and finds the SBOM attached
//! to the image, if any.

use crate::archive::{ImageArchive, Layer};
use crate::error::Result;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
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
    /// The SPDX document attached to the image (`builder build --sbom`).
    pub sbom: Option<Vec<u8>>,
}

/// Reads the image archive at `path` and verifies every blob in it.
pub fn inspect(path: &Path) -> Result<Inspection> {
    let archive = ImageArchive::open(path)?;
    let image = archive.image(None)?;
    for layer in &image.layers {
        archive.verified_layer(layer)?;
    }
    let sbom = if archive.has_index() {
        find_sbom(&archive, &image.id)?
    } else {
        None
    };
    Ok(Inspection {
        sbom,
        tag: image.tag,
        config_digest: image.config_digest,
        id: image.id,
        config: image.config,
        layers: image.layers,
    })
}

/// The SPDX document of an artifact manifest whose `subject` is the
/// manifest `image_id`, listed in the archive's index or in an index it
/// names (where `builder build --sbom` puts it, beside the image). Other
/// entries of the index that cannot be read are not this image's (it was
/// read and checked already) and are passed over; the document, once
/// found, must match its digest.
fn find_sbom(archive: &ImageArchive, image_id: &str) -> Result<Option<Vec<u8>>> {
    let mut candidates: Vec<Descriptor> = Vec::new();
    for desc in archive.index()?.manifests() {
        if desc
            .media_type()
            .to_string()
            .ends_with("image.index.v1+json")
        {
            let nested = archive
                .read_blob(desc.digest().as_ref(), desc.size())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ImageIndex>(&bytes).ok());
            candidates.extend(nested.iter().flat_map(|n| n.manifests().iter().cloned()));
        } else {
            candidates.push(desc.clone());
        }
    }
    let is_spdx = |t: Option<String>| t.as_deref() == Some(crate::sbom::MEDIA_TYPE);
    for desc in candidates {
        if !is_spdx(desc.artifact_type().as_ref().map(|t| t.to_string())) {
            continue;
        }
        let manifest = archive
            .read_blob(desc.digest().as_ref(), desc.size())
            .ok()
            .and_then(|bytes| serde_json::from_slice::<ImageManifest>(&bytes).ok());
        let Some(manifest) = manifest else {
            continue;
        };
        if manifest.subject().as_ref().map(|s| s.digest().to_string()) != Some(image_id.into()) {
            continue;
        }
        let Some(layer) = manifest
            .layers()
            .iter()
            .find(|l| l.media_type().to_string() == crate::sbom::MEDIA_TYPE)
        else {
            continue;
        };
        return Ok(Some(
            archive.read_blob(layer.digest().as_ref(), layer.size())?,
        ));
    }
    Ok(None)
}
