//! Pull: the manifest by tag or digest (an index is followed to this
//! platform's manifest), then its config and layers, each streamed into a
//! temporary file while its sha256 is computed and kept only when it is the
//! digest asked for. The image archive is written by [`crate::pack::archive`]
//! (atomically); on any failure the work directory beside it is removed and
//! nothing is left, and one a killed pull left is reclaimed by the next
//! build or pull there (see [`crate::reclaim_stale`]).

use crate::error::{Error, Result};
use crate::pack::Blobs;
use crate::registry::client::{Access, MANIFEST_TYPES, Session, status_error};
use crate::registry::reference::Reference;
use crate::registry::{Memo, Options, is_index};
use oci_spec::image::{ImageIndex, ImageManifest};
use reqwest::Method;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// What a pull wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// `sha256:…` of the image manifest in the archive.
    pub digest: String,
    /// Bytes of the archive.
    pub size: u64,
}

/// Manifests are small; no more than this is read of one (a longer one
/// then fails its digest check or its parse).
const MAX_MANIFEST: u64 = 4 << 20;

/// Pulls `reference` into the image archive `output`.
pub fn pull(reference: &Reference, output: &Path, opts: &Options) -> Result<Pulled> {
    let session = Session::open(reference, Access::Pull, opts)?;
    let work = crate::WorkDir::beside(output, crate::PULL_PREFIX)?;
    let blobs = Blobs::create(work.path().join("blobs"))?;
    let (mut media_type, mut bytes, mut digest) = get_manifest(&session, reference.target())?;
    if is_index(&media_type) {
        let chosen = pick_platform(&session, &bytes)?;
        (media_type, bytes, digest) = get_manifest(&session, &chosen)?;
    }
    blobs.add(&bytes)?;
    let manifest: ImageManifest =
        serde_json::from_slice(&bytes).map_err(|source| Error::JsonRead {
            what: "image manifest",
            path: reference.to_string().into(),
            source,
        })?;
    let mut memo = Memo::load(opts.memo.as_deref());
    for desc in std::iter::once(manifest.config()).chain(manifest.layers()) {
        let blob = desc.digest().to_string();
        get_blob(&session, &blobs, &blob, desc.size(), opts)?;
        memo.record(&reference.registry, &blob, &reference.repository);
    }
    let index = index_json(reference, &media_type, &digest, bytes.len() as u64)?;
    let size = work.publish(output, |packed| {
        crate::pack::archive(&blobs, &index, packed, 0)
    })?;
    memo.save();
    Ok(Pulled { digest, size })
}

/// GETs the manifest at `target` (tag or digest); returns its media type,
/// bytes and digest. A manifest asked for by digest must have that digest.
fn get_manifest(session: &Session, target: &str) -> Result<(String, Vec<u8>, String)> {
    let url = session.url(&format!("manifests/{target}"));
    let response = session.send(Method::GET, &url, &|r| {
        Ok(r.header(ACCEPT, MANIFEST_TYPES.join(", ")))
    })?;
    match response.status().as_u16() {
        200 => {}
        404 => {
            return Err(Error::ManifestUnknown {
                reference: session.reference.to_string(),
            });
        }
        status => return Err(status_error("getting manifest", &url, status, response)),
    }
    // By tag, the digest the registry announces is the one to match.
    let announced = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let media_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .unwrap_or_default();
    let mut bytes = Vec::new();
    response
        .take(MAX_MANIFEST)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Download {
            url: url.clone(),
            source,
        })?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    let expected = match target.starts_with("sha256:") {
        true => Some(target.to_string()),
        false => announced.filter(|a| a.starts_with("sha256:")),
    };
    if let Some(expected) = expected.filter(|e| *e != digest) {
        return Err(Error::BlobMismatch {
            digest: expected,
            reference: session.reference.to_string(),
            actual: digest,
        });
    }
    // The body's own mediaType wins over a generic Content-Type.
    let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_string));
    Ok((declared.unwrap_or(media_type), bytes, digest))
}

/// The digest of this platform's manifest in an index (linux and this
/// architecture), else of its first.
fn pick_platform(session: &Session, bytes: &[u8]) -> Result<String> {
    let index: ImageIndex = serde_json::from_slice(bytes).map_err(|source| Error::JsonRead {
        what: "image index",
        path: session.reference.to_string().into(),
        source,
    })?;
    let arch = oci_spec::image::Arch::default().to_string();
    let all = index.manifests();
    all.iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == arch
            })
        })
        .or(all.first())
        .map(|d| d.digest().to_string())
        .ok_or_else(|| Error::ManifestUnknown {
            reference: session.reference.to_string(),
        })
}

/// Streams blob `digest` into a temporary file among `blobs`, hashing it,
/// and moves it to its name only when size and digest are right.
fn get_blob(
    session: &Session,
    blobs: &Blobs,
    digest: &str,
    size: u64,
    opts: &Options,
) -> Result<()> {
    let url = session.url(&format!("blobs/{digest}"));
    let mut response = session.send(Method::GET, &url, &Ok)?;
    if response.status().as_u16() != 200 {
        let status = response.status().as_u16();
        return Err(status_error("getting blob", &url, status, response));
    }
    let final_path = blobs.path_of(digest);
    let dir = final_path.parent().unwrap_or(Path::new("."));
    // Inside the work directory: reclaimed with it if the pull is killed.
    let mut temp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(Error::io("creating a temporary file in", dir))?;
    let bar = opts.progress_bar(digest, size);
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut buf = vec![0u8; 256 << 10];
    let download_error = |source| Error::Download {
        url: url.clone(),
        source,
    };
    loop {
        let n = match response.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(download_error(e)),
        };
        hasher.update(&buf[..n]);
        temp.write_all(&buf[..n])
            .map_err(Error::io("writing", temp.path()))?;
        received += n as u64;
        if received > size {
            break;
        }
        if let Some(bar) = &bar {
            bar.set_position(received);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != digest || received != size {
        return Err(Error::BlobMismatch {
            digest: digest.to_string(),
            reference: session.reference.to_string(),
            actual: if received == size {
                actual
            } else {
                format!("{actual} ({received} bytes, not {size})")
            },
        });
    }
    temp.persist(&final_path)
        .map_err(|e| Error::io("writing", &final_path)(e.error))?;
    Ok(())
}

/// An `index.json` naming the one manifest by the reference pulled.
fn index_json(reference: &Reference, media_type: &str, digest: &str, size: u64) -> Result<Vec<u8>> {
    let name = match &reference.tag {
        Some(_) => Reference {
            digest: None,
            ..reference.clone()
        }
        .to_string(),
        None => reference.to_string(),
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": media_type,
            "digest": digest,
            "size": size,
            "annotations": { crate::archive::REF_NAME: name },
        }],
    });
    serde_json::to_vec(&index).map_err(|source| Error::Json {
        what: "the index",
        source,
    })
}
