//! Base step: what the image starts from, as layers in the image's blob
//! directory. A rootfs (host programs, or a tarball fetched, verified and
//! unpacked) is completed by `layout` and packed into one layer; an image
//! (an OCI or `docker save` archive, a registry reference pulled, another
//! definition built) gives its layer blobs as they are, each checked
//! against its digest while it is copied, and its config as the defaults;
//! `scratch` gives nothing.

use crate::archive::ImageArchive;
use crate::def::{ImageDef, Source};
use crate::error::{Error, Result};
use crate::oci::{self, Base, Layer};
use crate::pack::{self, Blobs, Stamp};
use crate::{Options, fetch, host, layout, unpack, verify};
use std::path::Path;

/// How deep definitions may be based on definitions: deeper is a cycle.
pub const MAX_DEPTH: usize = 8;

/// The base of `def` in `blobs`, using `work` for scratch; and warnings
/// for the user (a command missing from the rootfs).
pub(crate) fn prepare(
    def: &ImageDef,
    opts: &Options,
    work: &Path,
    blobs: &Blobs,
    depth: usize,
) -> Result<(Base, Vec<String>)> {
    let created = oci::rfc3339(opts.epoch);
    let rootfs = work.join("rootfs");
    let created_by = match def.source() {
        Source::Scratch => return Ok((Base::default(), Vec::new())),
        Source::Host(programs, optional) => {
            host::copy_programs(&programs, &optional, &rootfs)?;
            "host programs".to_string()
        }
        Source::File(path) if is_image_archive(&path) => {
            if let Some(expected) = &def.rootfs.sha256 {
                let fetched = fetch::download(&Source::File(path.clone()), expected, &opts.fetch)?;
                verify::sha256(fetched, expected)?;
            }
            let base = from_archive(&path, blobs)?;
            return Ok((base, Vec::new()));
        }
        Source::Registry(reference) => return from_registry(&reference, work, blobs),
        Source::Definition(toml) => {
            if depth >= MAX_DEPTH {
                return Err(Error::DefinitionInvalid {
                    path: toml,
                    what: format!("base definitions nest deeper than {MAX_DEPTH} (a cycle?)"),
                });
            }
            let base_def = ImageDef::load(&toml)?;
            let built = work.join("base.tar");
            let base_opts = Options {
                output: built.clone(),
                ..opts.clone()
            };
            crate::build_at(&base_def, &base_opts, depth + 1)?;
            return Ok((from_archive(&built, blobs)?, Vec::new()));
        }
        source => {
            let expected = def.rootfs.sha256.as_deref().unwrap_or_default();
            let tarball = fetch::download(&source, expected, &opts.fetch)?;
            let tarball = verify::sha256(tarball, expected)?;
            unpack::extract_file(tarball.path(), &rootfs, &unpack::Options::default())?;
            // The content, not where it was found: a mirror gives the same image.
            format!("sha256:{expected}")
        }
    };
    let warnings = layout::complete(&rootfs, def)?;
    let layer = pack::layer_from_dir(&rootfs, blobs, stamp(opts.epoch))?;
    let base = Base {
        layers: vec![Layer::packed(layer)],
        history: vec![oci::history_entry(
            &created,
            format!("cradle builder: rootfs from {created_by}"),
        )?],
        ..Base::default()
    };
    Ok((base, warnings))
}

/// True when `path` is a tar holding an image (OCI layout or `docker
/// save`), rather than a root filesystem.
pub fn is_image_archive(path: &Path) -> bool {
    ImageArchive::open(path).is_ok_and(|a| a.is_image())
}

/// Owners are kept when we could set them while unpacking (root); a rootfs
/// unpacked without privileges is all ours, and recorded as root's.
pub(crate) fn stamp(epoch: u64) -> Stamp {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    Stamp {
        epoch,
        owner: (!root).then_some((0, 0)),
    }
}

/// The image in the archive at `path` as a base: its layers copied into
/// `blobs` (each verified as it is copied), its config and history. An
/// image this builder made has the init as its top layer: that one is left
/// out, the image gets its own.
fn from_archive(path: &Path, blobs: &Blobs) -> Result<Base> {
    let archive = ImageArchive::open(path)?;
    let image = archive.image(None)?;
    let not_usable = |what: String| Error::NotAnImage {
        path: path.to_path_buf(),
        what,
    };
    let arch = image.config.architecture().to_string();
    if arch != oci_spec::image::Arch::default().to_string() {
        return Err(not_usable(format!(
            "it is an image for {arch}, this machine is {}",
            oci_spec::image::Arch::default()
        )));
    }
    let diff_ids = image.config.rootfs().diff_ids();
    if diff_ids.len() != image.layers.len() {
        return Err(not_usable(format!(
            "its manifest lists {} layers, its config {} diff_ids",
            image.layers.len(),
            diff_ids.len()
        )));
    }
    let mut history = image.config.history().clone().unwrap_or_default();
    let init_on_top = history.last().and_then(|h| h.created_by().as_deref())
        == Some(&format!("cradle builder: /{}", oci::INIT_PATH))
        && history.last().and_then(|h| h.empty_layer()) != Some(true);
    let keep = image.layers.len() - usize::from(init_on_top && !image.layers.is_empty());
    if init_on_top {
        history.pop();
    }
    let mut layers = Vec::new();
    for (layer, diff_id) in image.layers.iter().zip(diff_ids).take(keep) {
        let media_type = archive.layer_media_type(layer)?;
        let mut temp = tempfile::Builder::new()
            .prefix(".layer-")
            .tempfile_in(blobs.dir())
            .map_err(Error::io("creating a temporary file in", blobs.dir()))?;
        let mut reader = archive.layer_reader(layer)?;
        std::io::copy(&mut reader, temp.as_file_mut()).map_err(|source| Error::Archive {
            archive: path.to_path_buf(),
            source,
        })?;
        reader.finish()?;
        let dest = blobs.path_of(&layer.digest);
        temp.persist(&dest)
            .map_err(|e| Error::io("writing", &dest)(e.error))?;
        layers.push(Layer {
            blob: pack::Blob {
                digest: layer.digest.clone(),
                size: layer.size,
            },
            diff_id: diff_id.clone(),
            media_type,
        });
    }
    Ok(Base {
        layers,
        config: image.config.config().clone(),
        history,
        annotations: Default::default(),
    })
}

/// Pulls `reference` and uses it as the base, naming it by digest in the
/// manifest's annotations: the tag may move, the image built stays known.
#[cfg(feature = "fetch")]
fn from_registry(reference: &str, work: &Path, blobs: &Blobs) -> Result<(Base, Vec<String>)> {
    let parsed = crate::registry::Reference::parse(reference)?;
    let pulled_to = work.join("base.tar");
    let pulled = crate::registry::pull(&parsed, &pulled_to, &crate::registry::Options::default())?;
    let mut base = from_archive(&pulled_to, blobs)?;
    base.annotations
        .insert(oci::BASE_DIGEST.to_string(), pulled.digest);
    base.annotations
        .insert(oci::BASE_NAME.to_string(), parsed.to_string());
    Ok((base, Vec::new()))
}

#[cfg(not(feature = "fetch"))]
fn from_registry(reference: &str, _work: &Path, _blobs: &Blobs) -> Result<(Base, Vec<String>)> {
    Err(Error::NoFetch {
        url: format!("docker://{reference}"),
    })
}
