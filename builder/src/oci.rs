//! OCI step: assembles the image from its layers, bottom first: the base's
//! (a rootfs packed here, or an image's blobs as they were), then the host
//! programs and the copies when there are any, then the static init alone
//! at [`INIT_PATH`]; the config (`Entrypoint` = the init and `--`, the
//! base image's settings as defaults under the definition's), the manifest
//! (naming a pulled base by digest), and the index naming the image by its
//! tag. JSON is written from `oci-spec` structs with keys sorted, so equal
//! images are equal bytes.

use crate::def::ImageDef;
use crate::error::{Error, Result};
use crate::layout::DEFAULT_PATH;
use crate::pack::{Blob, Blobs, LayerBlob};
use oci_spec::image::{
    Arch, Config, ConfigBuilder, DescriptorBuilder, Digest, History, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os,
    PlatformBuilder, RootFsBuilder,
};
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

/// Where the init goes: not `/sbin/init`, which a distribution may have.
pub const INIT_PATH: &str = "sbin/cradle-init";

/// The annotation that names an image in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotations naming the image a build started from (image-spec,
/// annotations.md), so that what a tag pointed to then stays known.
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";

/// A layer blob in the image's blob directory, with what the config says
/// of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub blob: Blob,
    /// `sha256:…` of the uncompressed tar.
    pub diff_id: String,
    pub media_type: MediaType,
}

impl Layer {
    /// A gzipped layer this builder packed.
    pub fn packed(layer: LayerBlob) -> Layer {
        Layer {
            blob: layer.blob,
            diff_id: layer.diff_id,
            media_type: MediaType::ImageLayerGzip,
        }
    }
}

/// What the image starts from: its layers, and for an image base its
/// config (the defaults) and history.
#[derive(Debug, Clone, Default)]
pub struct Base {
    pub layers: Vec<Layer>,
    /// The base image's `config`, when the base is an image.
    pub config: Option<Config>,
    /// One entry per layer, and the base image's empty ones.
    pub history: Vec<History>,
    /// Added to the manifest ([`BASE_DIGEST`], [`BASE_NAME`]).
    pub annotations: BTreeMap<String, String>,
}

/// An assembled image: its blobs and the index that leads to them.
#[derive(Debug)]
pub struct Image {
    pub blobs: Blobs,
    /// `index.json`.
    pub index: Vec<u8>,
    pub manifest: Blob,
    pub config: Blob,
    /// Bottom first.
    pub layers: Vec<Layer>,
}

/// Writes the config, manifest and index for `base`'s layers topped by
/// `added` (each with the history line that says what it is) into `blobs`.
pub fn assemble(
    base: Base,
    added: Vec<(Layer, String)>,
    def: &ImageDef,
    blobs: Blobs,
    epoch: u64,
) -> Result<Image> {
    let created = rfc3339(epoch);
    let mut history = base.history;
    let mut layers = base.layers;
    for (layer, created_by) in added {
        history.push(history_entry(&created, created_by)?);
        layers.push(layer);
    }
    let config = blobs.add(&config_json(
        def,
        base.config.as_ref(),
        &layers,
        history,
        created,
    )?)?;
    let manifest = manifest_for(
        &config.digest,
        config.size,
        layers
            .iter()
            .map(|l| (l.blob.digest.as_str(), l.blob.size, l.media_type.clone())),
        Some(&base.annotations),
    )?;
    let manifest = Blob {
        size: manifest.bytes.len() as u64,
        digest: blobs.add(&manifest.bytes)?.digest,
    };
    let index = index_json(&manifest, &def.tag)?;
    Ok(Image {
        blobs,
        index,
        manifest,
        config,
        layers,
    })
}

/// A history line of a layer made now.
pub fn history_entry(created: &str, created_by: String) -> Result<History> {
    HistoryBuilder::default()
        .created(created.to_string())
        .created_by(created_by)
        .build()
        .map_err(|e| builder_error("history")(e.to_string()))
}

fn oci_error(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> Error {
    move |source| Error::Oci { what, source }
}

fn builder_error(what: &'static str) -> impl FnOnce(String) -> Error {
    move |message| Error::Oci {
        what,
        source: oci_spec::OciSpecError::Other(message),
    }
}

fn digest(value: &str, what: &'static str) -> Result<Digest> {
    Digest::from_str(value).map_err(oci_error(what))
}

/// The image config: platform, the settings (the definition's over the
/// base image's) with the init in front of the entrypoint, the layers'
/// diff ids and the history.
fn config_json(
    def: &ImageDef,
    base: Option<&Config>,
    layers: &[Layer],
    history: Vec<History>,
    created: String,
) -> Result<Vec<u8>> {
    let config = settings(def, base)?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>())
        .build()
        .map_err(|e| builder_error("rootfs")(e.to_string()))?;
    let image = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::default())
        .os(Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .history(history)
        .build()
        .map_err(|e| builder_error("config")(e.to_string()))?;
    canonical_json(&image, "the image config")
}

/// The container settings: the definition's `[config]`, each unset one
/// taken from the base image as docker's `FROM` does (an entrypoint set
/// here drops the base's cmd, since that was the base entrypoint's
/// argument list), environment merged by name; then the init in front.
fn settings(def: &ImageDef, base: Option<&Config>) -> Result<Config> {
    let c = &def.config;
    let empty = Config::default();
    let base = base.unwrap_or(&empty);
    let base_entrypoint = without_init(base.entrypoint().clone().unwrap_or_default());
    let (entrypoint, cmd) = if !c.entrypoint.is_empty() {
        (c.entrypoint.clone(), c.cmd.clone())
    } else if !c.cmd.is_empty() {
        (base_entrypoint, c.cmd.clone())
    } else {
        (base_entrypoint, base.cmd().clone().unwrap_or_default())
    };
    let mut init = vec![format!("/{INIT_PATH}"), "--".to_string()];
    init.extend(entrypoint);
    let mut env = base.env().clone().unwrap_or_default();
    for kv in &c.env {
        let name = kv.split('=').next().unwrap_or_default();
        env.retain(|old| old.split('=').next() != Some(name));
        env.push(kv.clone());
    }
    if !env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let mut config = ConfigBuilder::default().entrypoint(init).env(env);
    if !cmd.is_empty() {
        config = config.cmd(cmd);
    }
    if let Some(workdir) = c.workdir.clone().or_else(|| base.working_dir().clone()) {
        config = config.working_dir(workdir);
    }
    if let Some(user) = c.user.clone().or_else(|| base.user().clone()) {
        config = config.user(user);
    }
    let mut labels: BTreeMap<String, String> = base
        .labels()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(c.labels.clone());
    if !labels.is_empty() {
        config = config.labels(labels.into_iter().collect::<HashMap<_, _>>());
    }
    if let Some(signal) = c.stop_signal.clone().or_else(|| base.stop_signal().clone()) {
        config = config.stop_signal(signal);
    }
    config
        .build()
        .map_err(|e| builder_error("config")(e.to_string()))
}

/// `entrypoint` without a leading `/sbin/cradle-init --`: a base built
/// here has it, and the image gets its own.
fn without_init(mut entrypoint: Vec<String>) -> Vec<String> {
    if entrypoint.first().map(String::as_str) == Some(&format!("/{INIT_PATH}")) {
        let n = if entrypoint.get(1).map(String::as_str) == Some("--") {
            2
        } else {
            1
        };
        entrypoint.drain(..n);
    }
    entrypoint
}

/// A manifest's bytes and digest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: String,
}

/// The OCI manifest of a config and layers (digest, size, media type).
pub fn manifest_for<'a>(
    config_digest: &str,
    config_size: u64,
    layers: impl Iterator<Item = (&'a str, u64, MediaType)>,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Manifest> {
    use sha2::Digest as _;
    let config = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(digest(config_digest, "config descriptor")?)
        .size(config_size)
        .build()
        .map_err(|e| builder_error("config descriptor")(e.to_string()))?;
    let layers = layers
        .map(|(layer_digest, size, media_type)| {
            DescriptorBuilder::default()
                .media_type(media_type)
                .digest(digest(layer_digest, "layer descriptor")?)
                .size(size)
                .build()
                .map_err(|e| builder_error("layer descriptor")(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers);
    if let Some(annotations) = annotations.filter(|a| !a.is_empty()) {
        manifest = manifest.annotations(annotations.clone().into_iter().collect::<HashMap<_, _>>());
    }
    let manifest = manifest
        .build()
        .map_err(|e| builder_error("manifest")(e.to_string()))?;
    let bytes = canonical_json(&manifest, "the manifest")?;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
    Ok(Manifest { bytes, digest })
}

fn index_json(manifest: &Blob, tag: &str) -> Result<Vec<u8>> {
    let descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(digest(&manifest.digest, "manifest descriptor")?)
        .size(manifest.size)
        .platform(platform(Arch::default(), Os::Linux)?)
        .annotations(HashMap::from([(REF_NAME.to_string(), tag.to_string())]))
        .build()
        .map_err(|e| builder_error("manifest descriptor")(e.to_string()))?;
    index_of(vec![descriptor])
}

fn index_of(manifests: Vec<oci_spec::image::Descriptor>) -> Result<Vec<u8>> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| builder_error("index")(e.to_string()))?;
    canonical_json(&index, "the index")
}

fn platform(architecture: Arch, os: Os) -> Result<oci_spec::image::Platform> {
    PlatformBuilder::default()
        .architecture(architecture)
        .os(os)
        .build()
        .map_err(|e| builder_error("platform")(e.to_string()))
}

/// The annotations BuildKit puts on an attestation manifest in an image
/// index, naming the image manifest it is about; docker and containerd
/// tooling read them.
const DOCKER_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// The empty JSON object `{}`, the config of an artifact that has none
/// (image-spec, manifest.md, "Guidance for an Empty Descriptor"), and its
/// base64 for the descriptor's `data`.
const EMPTY_JSON: &[u8] = b"{}";
const EMPTY_JSON_BASE64: &str = "e30=";

/// Attaches `document`, an SPDX JSON SBOM, to `image` as an OCI 1.1
/// artifact: a manifest whose `artifactType` is [`crate::sbom::MEDIA_TYPE`],
/// whose one layer is the document and whose `subject` is the image
/// manifest, which is what `oras discover` and `cosign` look for. The
/// archive's index then names one image index, tagged, holding the image
/// manifest (for this platform) and the SBOM's (platform `unknown/unknown`,
/// as BuildKit marks its attestations): an index.json listing two
/// manifests side by side makes `podman load` and `skopeo` ask which one
/// to take, while a runtime picking by platform from an image index
/// takes the image and leaves the SBOM. The image manifest, and so the
/// image digest, is the same with or without the SBOM.
pub fn attach_sbom(image: &mut Image, document: &[u8], tag: &str) -> Result<()> {
    let sbom_type = MediaType::Other(crate::sbom::MEDIA_TYPE.to_string());
    let document = image.blobs.add(document)?;
    let empty = image.blobs.add(EMPTY_JSON)?;
    let config = DescriptorBuilder::default()
        .media_type(MediaType::EmptyJSON)
        .digest(digest(&empty.digest, "empty descriptor")?)
        .size(empty.size)
        .data(EMPTY_JSON_BASE64)
        .build()
        .map_err(|e| builder_error("empty descriptor")(e.to_string()))?;
    let layer = DescriptorBuilder::default()
        .media_type(sbom_type.clone())
        .digest(digest(&document.digest, "SBOM descriptor")?)
        .size(document.size)
        .build()
        .map_err(|e| builder_error("SBOM descriptor")(e.to_string()))?;
    let subject = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(digest(&image.manifest.digest, "subject descriptor")?)
        .size(image.manifest.size)
        .build()
        .map_err(|e| builder_error("subject descriptor")(e.to_string()))?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(sbom_type.clone())
        .config(config)
        .layers(vec![layer])
        .subject(subject)
        .build()
        .map_err(|e| builder_error("SBOM manifest")(e.to_string()))?;
    let manifest = image
        .blobs
        .add(&canonical_json(&manifest, "the SBOM manifest")?)?;
    let image_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(digest(&image.manifest.digest, "manifest descriptor")?)
        .size(image.manifest.size)
        .platform(platform(Arch::default(), Os::Linux)?)
        .build()
        .map_err(|e| builder_error("manifest descriptor")(e.to_string()))?;
    let unknown = || "unknown".to_string();
    let sbom_desc = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .artifact_type(sbom_type)
        .digest(digest(&manifest.digest, "SBOM manifest descriptor")?)
        .size(manifest.size)
        .platform(platform(Arch::Other(unknown()), Os::Other(unknown()))?)
        .annotations(HashMap::from([
            (
                DOCKER_REFERENCE_DIGEST.to_string(),
                image.manifest.digest.clone(),
            ),
            (
                DOCKER_REFERENCE_TYPE.to_string(),
                "attestation-manifest".to_string(),
            ),
        ]))
        .build()
        .map_err(|e| builder_error("SBOM manifest descriptor")(e.to_string()))?;
    let nested = image.blobs.add(&index_of(vec![image_desc, sbom_desc])?)?;
    let top = DescriptorBuilder::default()
        .media_type(MediaType::ImageIndex)
        .digest(digest(&nested.digest, "index descriptor")?)
        .size(nested.size)
        .annotations(HashMap::from([(REF_NAME.to_string(), tag.to_string())]))
        .build()
        .map_err(|e| builder_error("index descriptor")(e.to_string()))?;
    image.index = index_of(vec![top])?;
    Ok(())
}

/// Compact JSON with every object's keys sorted: `oci-spec` keeps labels and
/// annotations in `HashMap`s, whose order changes from run to run.
fn canonical_json(value: &impl serde::Serialize, what: &'static str) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value).map_err(|source| Error::Json { what, source })?;
    serde_json::to_vec(&sorted(value)).map_err(|source| Error::Json { what, source })
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// `secs` since the epoch as RFC 3339 in UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn sorts_json_keys() {
        let value = serde_json::json!({"b": 1, "a": {"d": 2, "c": [ {"f": 1, "e": 2} ]}});
        let text = String::from_utf8(serde_json::to_vec(&sorted(value)).unwrap()).unwrap();
        assert_eq!(text, r#"{"a":{"c":[{"e":2,"f":1}],"d":2},"b":1}"#);
    }
}
