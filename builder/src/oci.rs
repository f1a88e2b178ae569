//! OCI step: assembles the image from the completed rootfs and the static
//! init: the rootfs layer, the init in a layer of its own at
//! [`INIT_PATH`], the config (`Entrypoint` = the init and `--`), the
//! manifest, and the index naming the image by its tag. JSON is written
//! from `oci-spec` structs with keys sorted, so equal images are equal bytes.

use crate::def::{ImageDef, Source};
use crate::error::{Error, Result};
use crate::layout::DEFAULT_PATH;
use crate::pack::{self, Blob, Blobs, LayerBlob, Stamp};
use oci_spec::image::{
    Arch, ConfigBuilder, DescriptorBuilder, Digest, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, Os, PlatformBuilder, RootFsBuilder,
};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

/// Where the init goes: not `/sbin/init`, which a distribution may have.
pub const INIT_PATH: &str = "sbin/cradle-init";

/// The annotation that names an image in an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An assembled image: its blobs and the index that leads to them.
#[derive(Debug)]
pub struct Image {
    pub blobs: Blobs,
    /// `index.json`.
    pub index: Vec<u8>,
    pub manifest: Blob,
    pub config: Blob,
    /// Bottom first: the rootfs, then the init.
    pub layers: Vec<LayerBlob>,
}

/// Builds the layers and JSON documents into `blobs_dir`.
pub fn assemble(
    rootfs: &Path,
    init: &Path,
    def: &ImageDef,
    blobs_dir: &Path,
    stamp: Stamp,
) -> Result<Image> {
    let blobs = Blobs::create(blobs_dir.to_path_buf())?;
    let rootfs_layer = pack::layer_from_dir(rootfs, &blobs, stamp)?;
    let init_layer = pack::layer_with_file(init, INIT_PATH, 0o755, &blobs, stamp.epoch)?;
    let layers = vec![rootfs_layer, init_layer];
    let config = blobs.add(&config_json(def, &layers, stamp.epoch)?)?;
    let manifest = blobs.add(&manifest_json(&config, &layers)?)?;
    let index = index_json(&manifest, &def.tag)?;
    Ok(Image {
        blobs,
        index,
        manifest,
        config,
        layers,
    })
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

/// The image config: platform, the definition's `[config]` with the init in
/// front of the entrypoint, the layers' diff ids and a history line each.
fn config_json(def: &ImageDef, layers: &[LayerBlob], epoch: u64) -> Result<Vec<u8>> {
    let c = &def.config;
    let mut entrypoint = vec![format!("/{INIT_PATH}"), "--".to_string()];
    entrypoint.extend(c.entrypoint.iter().cloned());
    let mut env = c.env.clone();
    if !env.iter().any(|kv| kv.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let mut config = ConfigBuilder::default().entrypoint(entrypoint).env(env);
    if !c.cmd.is_empty() {
        config = config.cmd(c.cmd.clone());
    }
    if let Some(workdir) = &c.workdir {
        config = config.working_dir(workdir.clone());
    }
    if let Some(user) = &c.user {
        config = config.user(user.clone());
    }
    if !c.labels.is_empty() {
        config = config.labels(c.labels.clone().into_iter().collect::<HashMap<_, _>>());
    }
    if let Some(signal) = &c.stop_signal {
        config = config.stop_signal(signal.clone());
    }
    let config = config
        .build()
        .map_err(|e| builder_error("config")(e.to_string()))?;
    let created = rfc3339(epoch);
    let rootfs_from = match def.source() {
        Source::Host(..) => "host programs".to_string(),
        // The content, not where it was found: a mirror gives the same image.
        _ => format!(
            "sha256:{}",
            def.rootfs.sha256.as_deref().unwrap_or_default()
        ),
    };
    let history = [
        format!("cradle builder: rootfs from {rootfs_from}"),
        format!("cradle builder: /{INIT_PATH}"),
    ]
    .into_iter()
    .map(|created_by| {
        HistoryBuilder::default()
            .created(created.clone())
            .created_by(created_by)
            .build()
            .map_err(|e| builder_error("history")(e.to_string()))
    })
    .collect::<Result<Vec<_>>>()?;
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

fn manifest_json(config: &Blob, layers: &[LayerBlob]) -> Result<Vec<u8>> {
    let config = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(digest(&config.digest, "config descriptor")?)
        .size(config.size)
        .build()
        .map_err(|e| builder_error("config descriptor")(e.to_string()))?;
    let layers = layers
        .iter()
        .map(|layer| {
            DescriptorBuilder::default()
                .media_type(MediaType::ImageLayerGzip)
                .digest(digest(&layer.blob.digest, "layer descriptor")?)
                .size(layer.blob.size)
                .build()
                .map_err(|e| builder_error("layer descriptor")(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|e| builder_error("manifest")(e.to_string()))?;
    canonical_json(&manifest, "the manifest")
}

fn index_json(manifest: &Blob, tag: &str) -> Result<Vec<u8>> {
    let platform = PlatformBuilder::default()
        .architecture(Arch::default())
        .os(Os::Linux)
        .build()
        .map_err(|e| builder_error("platform")(e.to_string()))?;
    let descriptor = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(digest(&manifest.digest, "manifest descriptor")?)
        .size(manifest.size)
        .platform(platform)
        .annotations(HashMap::from([(REF_NAME.to_string(), tag.to_string())]))
        .build()
        .map_err(|e| builder_error("manifest descriptor")(e.to_string()))?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![descriptor])
        .build()
        .map_err(|e| builder_error("index")(e.to_string()))?;
    canonical_json(&index, "the index")
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
