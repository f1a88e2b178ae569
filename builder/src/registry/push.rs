//! Push: an image archive's blobs, then its manifest (or index and
//! manifests), into a repository. A blob the repository has is skipped
//! (`HEAD`); one the registry has in another repository is mounted from
//! there; others are uploaded, in one `PUT` when small, else in `PATCH`
//! chunks. Every blob is verified in the archive before it is sent. A
//! `docker save` archive has no manifest to push: one is made for it (OCI,
//! its config and layers as they are), as podman does when it pushes one.

use crate::archive::{ImageArchive, Layer};
use crate::error::{Error, Result};
use crate::registry::client::{Access, Session, encode, status_error};
use crate::registry::reference::Reference;
use crate::registry::{Memo, Options, is_index};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use reqwest::Method;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use std::io::Read;
use std::path::Path;

/// What a push did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pushed {
    /// `sha256:…` of the manifest (or index) pushed under the reference.
    pub digest: String,
    pub uploaded: usize,
    pub mounted: usize,
    /// Blobs the repository already had.
    pub skipped: usize,
}

/// Pushes the image in `archive` (the first entry of its index) to `reference`.
pub fn push(archive: &Path, reference: &Reference, opts: &Options) -> Result<Pushed> {
    let archive = ImageArchive::open(archive)?;
    if !archive.has_index() {
        return push_docker_save(&archive, reference, opts);
    }
    let index = archive.index()?;
    let top = index
        .manifests()
        .first()
        .cloned()
        .ok_or_else(|| Error::NotAnImage {
            path: archive.path().to_path_buf(),
            what: "its index lists no manifest".into(),
        })?;
    let session = Session::open(reference, Access::Push, opts)?;
    let mut memo = Memo::load(opts.memo.as_deref());
    let mut pushed = Pushed::default();
    let digest = push_tree(
        &session,
        &archive,
        &top,
        reference.target(),
        &mut memo,
        &mut pushed,
        opts,
    )?;
    memo.save();
    pushed.digest = digest;
    Ok(pushed)
}

/// Pushes the image of a `docker save` archive (its first) under an OCI
/// manifest made for it.
fn push_docker_save(
    archive: &ImageArchive,
    reference: &Reference,
    opts: &Options,
) -> Result<Pushed> {
    let image = archive.image(None)?;
    let config = archive.config_bytes(&image)?;
    let config_blob = Layer {
        digest: image.config_digest.clone(),
        size: config.len() as u64,
        entry: image.config_entry.clone(),
    };
    let layers = image
        .layers
        .iter()
        .map(|layer| Ok((layer.clone(), archive.layer_media_type(layer)?)))
        .collect::<Result<Vec<_>>>()?;
    let manifest = crate::oci::manifest_for(
        &image.config_digest,
        config_blob.size,
        layers
            .iter()
            .map(|(l, media)| (l.digest.as_str(), l.size, media.clone())),
        None,
    )?;
    let session = Session::open(reference, Access::Push, opts)?;
    let mut memo = Memo::load(opts.memo.as_deref());
    let mut pushed = Pushed::default();
    for blob in std::iter::once(&config_blob).chain(layers.iter().map(|(l, _)| l)) {
        push_blob(&session, archive, blob, &mut memo, &mut pushed, opts)?;
    }
    let media_type = oci_spec::image::MediaType::ImageManifest.to_string();
    put_manifest(
        &session,
        reference.target(),
        &manifest.digest,
        &media_type,
        manifest.bytes,
    )?;
    memo.save();
    pushed.digest = manifest.digest;
    Ok(pushed)
}

/// Pushes the manifest or index `desc` and everything under it; the top one
/// is stored under `target` (a tag or its digest), the others by digest.
fn push_tree(
    session: &Session,
    archive: &ImageArchive,
    desc: &Descriptor,
    target: &str,
    memo: &mut Memo,
    pushed: &mut Pushed,
    opts: &Options,
) -> Result<String> {
    let digest = desc.digest().to_string();
    let bytes = archive.read_blob(&digest, desc.size())?;
    let media_type = desc.media_type().to_string();
    let json = |what| {
        move |source| Error::JsonRead {
            what,
            path: archive.path().to_path_buf(),
            source,
        }
    };
    if is_index(&media_type) {
        let index: ImageIndex = serde_json::from_slice(&bytes).map_err(json("image index"))?;
        for child in index.manifests() {
            let child_digest = child.digest().to_string();
            push_tree(session, archive, child, &child_digest, memo, pushed, opts)?;
        }
    } else {
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(json("image manifest"))?;
        let blobs = std::iter::once(manifest.config()).chain(manifest.layers());
        for blob in blobs {
            let blob = archive.layout_blob(blob.digest().as_ref(), blob.size())?;
            push_blob(session, archive, &blob, memo, pushed, opts)?;
        }
    }
    put_manifest(session, target, &digest, &media_type, bytes)?;
    Ok(digest)
}

fn push_blob(
    session: &Session,
    archive: &ImageArchive,
    desc: &Layer,
    memo: &mut Memo,
    pushed: &mut Pushed,
    opts: &Options,
) -> Result<()> {
    let digest = desc.digest.clone();
    let registry = session.reference.registry.clone();
    let repository = session.reference.repository.clone();
    if blob_exists(session, &digest)? {
        pushed.skipped += 1;
        memo.record(&registry, &digest, &repository);
        return Ok(());
    }
    let location = match memo.other_repository(&registry, &digest, &repository) {
        Some(from) => match mount_blob(session, &digest, &from)? {
            Mount::Done => {
                pushed.mounted += 1;
                memo.record(&registry, &digest, &repository);
                return Ok(());
            }
            Mount::Upload(location) => location,
        },
        None => start_upload(session)?,
    };
    let blob = archive.verified_layer(desc)?;
    if desc.size > opts.chunk_size {
        upload_chunked(session, location, blob, &digest, desc.size, opts)?;
    } else {
        upload_whole(session, &location, blob, &digest, desc.size)?;
    }
    pushed.uploaded += 1;
    memo.record(&registry, &digest, &repository);
    Ok(())
}

fn blob_exists(session: &Session, digest: &str) -> Result<bool> {
    let url = session.url(&format!("blobs/{digest}"));
    let response = session.send(Method::HEAD, &url, &Ok)?;
    match response.status().as_u16() {
        200 => Ok(true),
        404 => Ok(false),
        status => Err(status_error("checking blob", &url, status, response)),
    }
}

enum Mount {
    Done,
    /// The registry would not mount, and opened an upload instead.
    Upload(String),
}

/// Asks the registry to link `digest` from repository `from` (same registry).
fn mount_blob(session: &Session, digest: &str, from: &str) -> Result<Mount> {
    let url = session.url(&format!(
        "blobs/uploads/?mount={}&from={}",
        encode(digest),
        encode(from)
    ));
    let response = session.send(Method::POST, &url, &|r| Ok(r.header(CONTENT_LENGTH, 0)))?;
    match response.status().as_u16() {
        201 => Ok(Mount::Done),
        202 => Ok(Mount::Upload(location(session, &url, &response)?)),
        status => Err(status_error("mounting blob", &url, status, response)),
    }
}

/// Opens an upload session; returns its URL.
fn start_upload(session: &Session) -> Result<String> {
    let url = session.url("blobs/uploads/");
    let response = session.send(Method::POST, &url, &|r| Ok(r.header(CONTENT_LENGTH, 0)))?;
    match response.status().as_u16() {
        202 => location(session, &url, &response),
        status => Err(status_error(
            "starting an upload at",
            &url,
            status,
            response,
        )),
    }
}

fn location(
    session: &Session,
    url: &str,
    response: &reqwest::blocking::Response,
) -> Result<String> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| session.absolute(l))
        .ok_or_else(|| Error::RegistryStatus {
            op: "starting an upload at",
            url: url.to_string(),
            status: response.status().as_u16(),
            detail: ", without a Location".into(),
        })
}

/// `location` with `digest=` added to its query.
fn with_digest(location: &str, digest: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={}", encode(digest))
}

/// Monolithic upload: the whole blob in the closing `PUT`.
fn upload_whole(
    session: &Session,
    location: &str,
    mut blob: impl Read,
    digest: &str,
    size: u64,
) -> Result<()> {
    let mut bytes = Vec::with_capacity(size as usize);
    blob.read_to_end(&mut bytes)
        .map_err(Error::io("reading blob", digest))?;
    let url = with_digest(location, digest);
    let response = session.send(Method::PUT, &url, &|r| {
        Ok(r.header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes.clone()))
    })?;
    match response.status().as_u16() {
        201 => Ok(()),
        status => Err(status_error("uploading blob", &url, status, response)),
    }
}

/// Chunked upload: `PATCH`es of `opts.chunk_size` bytes with their
/// `Content-Range`, each to the `Location` the last one returned, then a
/// `PUT` with the digest and no body.
fn upload_chunked(
    session: &Session,
    mut location: String,
    mut blob: impl Read,
    digest: &str,
    size: u64,
    opts: &Options,
) -> Result<()> {
    let bar = opts.progress_bar(digest, size);
    let mut sent = 0u64;
    let mut chunk = Vec::with_capacity(opts.chunk_size as usize);
    while sent < size {
        chunk.clear();
        (&mut blob)
            .take(opts.chunk_size)
            .read_to_end(&mut chunk)
            .map_err(Error::io("reading blob", digest))?;
        if chunk.is_empty() {
            break;
        }
        let end = sent + chunk.len() as u64 - 1;
        let response = session.send(Method::PATCH, &location, &|r| {
            Ok(r.header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_RANGE, format!("{sent}-{end}"))
                .body(chunk.clone()))
        })?;
        match response.status().as_u16() {
            202 => location = self::location(session, &location, &response)?,
            status => {
                return Err(status_error(
                    "uploading a chunk of blob",
                    &location,
                    status,
                    response,
                ));
            }
        }
        sent = end + 1;
        if let Some(bar) = &bar {
            bar.set_position(sent);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let url = with_digest(&location, digest);
    let response = session.send(Method::PUT, &url, &|r| Ok(r.header(CONTENT_LENGTH, 0)))?;
    match response.status().as_u16() {
        201 => Ok(()),
        status => Err(status_error(
            "closing the upload of blob",
            &url,
            status,
            response,
        )),
    }
}

/// PUTs a manifest; the digest the registry says it stored must be ours
/// (a registry that rewrote it would serve another image under the tag).
fn put_manifest(
    session: &Session,
    target: &str,
    digest: &str,
    media_type: &str,
    bytes: Vec<u8>,
) -> Result<()> {
    let url = session.url(&format!("manifests/{target}"));
    let response = session.send(Method::PUT, &url, &|r| {
        Ok(r.header(CONTENT_TYPE, media_type).body(bytes.clone()))
    })?;
    match response.status().as_u16() {
        200 | 201 => {}
        status => return Err(status_error("putting manifest", &url, status, response)),
    }
    let stored = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok());
    match stored {
        Some(stored) if stored != digest => Err(Error::StoredDigest {
            reference: session.reference.to_string(),
            digest: digest.to_string(),
            stored: stored.to_string(),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_digest_to_upload_location() {
        assert_eq!(
            with_digest("http://r/v2/a/blobs/uploads/u?_state=x", "sha256:ab"),
            "http://r/v2/a/blobs/uploads/u?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(
            with_digest("http://r/u", "sha256:ab"),
            "http://r/u?digest=sha256%3Aab"
        );
    }
}
