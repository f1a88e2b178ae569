//! Reading image archives: ours, any OCI image layout in a tar (several
//! layers, nested indexes), and `docker save` archives (`manifest.json` plus
//! layer tars). Every blob is checked against its digest and size: small
//! ones (index, manifests, configs) before they are used, a layer as it is
//! used, through a [`LayerReader`] that hashes the very bytes it hands out
//! and checks them at the end ([`LayerReader::finish`]).
//!
//! The archive is indexed once (one pass over the tar headers, seeking over
//! the contents), then blobs are read in place with `pread`: nothing is
//! copied out, and a layer that the caller already has (a warm cache) is
//! never read at all.
//!
//! An OCI image layout may also be a directory (what `skopeo copy oci:DIR`
//! writes, and what the builder hands the launcher for a `[[run]]` step, so
//! that a big base is never archived again per step). Its entries are opened
//! beneath the directory, one component at a time without following a
//! symlink, and must be regular files; each is read through the one open
//! file that was checked, with the same digest checks as an archive's.

use crate::error::{Error, Result};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The annotation naming an image inside an OCI layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image archive, opened and indexed.
#[derive(Debug)]
pub struct ImageArchive {
    path: PathBuf,
    /// The tar archive, or the layout directory.
    file: File,
    /// The tar's regular files; empty for a directory.
    entries: HashMap<String, Region>,
    dir: bool,
}

/// Where a regular file's contents are inside the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    offset: u64,
    size: u64,
}

/// One image read from an archive: its verified config and its layers
/// (bottom first), not yet read.
#[derive(Debug, Clone)]
pub struct Image {
    /// `sha256:…` of the manifest (OCI) or of the config (`docker save`).
    pub id: String,
    /// The OCI `org.opencontainers.image.ref.name` (the one asked for, else
    /// the first manifest's), or docker's first `RepoTags`.
    pub tag: Option<String>,
    /// `sha256:…` of the config: the image id podman and docker show.
    pub config_digest: String,
    /// The archive entry holding the config.
    pub config_entry: String,
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
}

/// A layer blob in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:…` of the blob as stored (compressed or not): the cache key.
    pub digest: String,
    pub size: u64,
    /// The entry's name inside the archive.
    pub entry: String,
}

/// The contents of a verified blob, read in place.
#[derive(Debug)]
pub struct Blob<'a> {
    file: BlobFile<'a>,
    offset: u64,
    remaining: u64,
}

/// The file a blob is read from: the archive, or a layout directory's entry.
#[derive(Debug)]
enum BlobFile<'a> {
    Archive(&'a File),
    Entry(File),
}

impl BlobFile<'_> {
    fn get(&self) -> &File {
        match self {
            BlobFile::Archive(file) => file,
            BlobFile::Entry(file) => file,
        }
    }
}

impl Read for Blob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.get().read_at(&mut buf[..want], self.offset)?;
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A layer's contents as they are read, hashed on the way through. Until
/// [`LayerReader::finish`] returns Ok, what was read is unverified.
#[derive(Debug)]
pub struct LayerReader<'a> {
    archive: &'a ImageArchive,
    layer: Layer,
    blob: Blob<'a>,
    hasher: Sha256,
    read: u64,
}

impl Read for LayerReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.blob.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

impl LayerReader<'_> {
    /// Reads what the caller left (a tar reader stops at the end-of-archive
    /// blocks, a decompressor at the end of its stream) and checks that the
    /// bytes read, all of them through this reader, have the manifest's
    /// size and digest.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).map_err(self.archive.read_error())?;
        if self.read != self.layer.size {
            // The file shrank while it was read.
            return Err(self.archive.layer_size_error(&self.layer, self.read));
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        check_digest(&self.layer.entry, &self.layer.digest, &actual)
    }

    /// The layer being read.
    pub fn layer(&self) -> &Layer {
        &self.layer
    }
}

impl ImageArchive {
    /// Opens `path` and indexes its regular files; a directory is opened
    /// as an OCI image layout, its entries found when they are read.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(Error::io("opening image archive", path))?;
        let dir = file
            .metadata()
            .map_err(Error::io("opening image archive", path))?
            .is_dir();
        let entries = match dir {
            true => HashMap::new(),
            false => index_entries(path, &file)?,
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            entries,
            dir,
        })
    }

    /// True when the archive has the regular file `entry`.
    fn has(&self, entry: &str) -> bool {
        match self.dir {
            true => self.locate(entry).is_ok(),
            false => self.entries.contains_key(entry),
        }
    }

    /// The archive's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the image named `reference` (an OCI `ref.name` or a docker
    /// `RepoTags` entry), or the only/first image when `None`.
    pub fn image(&self, reference: Option<&str>) -> Result<Image> {
        if self.has("index.json") {
            self.oci_image(reference)
        } else if self.has("manifest.json") {
            self.docker_image(reference)
        } else {
            Err(self.not_an_image("neither `index.json` nor `manifest.json` is in it"))
        }
    }

    /// The names of the images in the archive, as [`Self::image`] takes
    /// them: the OCI index's `ref.name` annotations, or docker's `RepoTags`.
    pub fn names(&self) -> Result<Vec<String>> {
        if self.has("index.json") {
            let index: ImageIndex = self.json("index.json", &self.read_entry("index.json")?)?;
            Ok(index
                .manifests()
                .iter()
                .filter_map(|d| d.annotations().as_ref()?.get(REF_NAME).cloned())
                .collect())
        } else {
            let list: Vec<DockerManifest> =
                self.json("manifest.json", &self.read_entry("manifest.json")?)?;
            Ok(list
                .into_iter()
                .flat_map(|m| m.repo_tags.unwrap_or_default())
                .collect())
        }
    }

    /// `layer`'s contents, read once: the reader hashes what it hands out,
    /// and [`LayerReader::finish`] reads the rest and checks size and
    /// digest. Hashing one read and handing out a second let bytes changed
    /// in between pass as the genuine layer (and land in a cache under its
    /// digest); a caller keeps what it made from the bytes only once
    /// `finish` accepts them.
    pub fn layer_reader(&self, layer: &Layer) -> Result<LayerReader<'_>> {
        check_digest_form(&layer.digest)?;
        let blob = self.blob(&layer.entry)?;
        if blob.remaining != layer.size {
            return Err(self.layer_size_error(layer, blob.remaining));
        }
        Ok(LayerReader {
            archive: self,
            layer: layer.clone(),
            blob,
            hasher: Sha256::new(),
            read: 0,
        })
    }

    /// Checks `layer`'s size and digest, then returns its contents, read a
    /// second time: for callers that only check (`inspect`) or whose reader
    /// checks again (a registry verifies what is pushed). Code that keeps
    /// what it makes from the bytes reads them through
    /// [`Self::layer_reader`] instead.
    pub fn verified_layer(&self, layer: &Layer) -> Result<Blob<'_>> {
        self.layer_reader(layer)?.finish()?;
        self.blob(&layer.entry)
    }

    fn layer_size_error(&self, layer: &Layer, size: u64) -> Error {
        self.not_an_image(&format!(
            "layer `{}` is {size} bytes, the manifest says {}",
            layer.entry, layer.size
        ))
    }

    fn oci_image(&self, reference: Option<&str>) -> Result<Image> {
        let index: ImageIndex = self.json("index.json", &self.read_entry("index.json")?)?;
        let (id, manifest) = self.pick_manifest(&index, reference, 0)?;
        let config_desc = manifest.config();
        let config_entry = blob_entry(config_desc.digest().as_ref())?;
        let config_bytes = self.read_verified(
            &config_entry,
            config_desc.digest().as_ref(),
            Some(config_desc.size()),
        )?;
        let config: ImageConfiguration = self.json("image config", &config_bytes)?;
        let layers = manifest
            .layers()
            .iter()
            .map(|d| {
                let digest = d.digest().to_string();
                Ok(Layer {
                    entry: blob_entry(&digest)?,
                    digest,
                    size: d.size(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let tag = match reference {
            Some(r) => Some(r.to_string()),
            None => index.manifests().first().and_then(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .cloned()
            }),
        };
        Ok(Image {
            id,
            tag,
            config_digest: config_desc.digest().to_string(),
            config_entry,
            config,
            layers,
        })
    }

    /// Follows `index` down to one image manifest (and its digest): the one
    /// named `reference`, else the one for this platform, else the first.
    fn pick_manifest(
        &self,
        index: &ImageIndex,
        reference: Option<&str>,
        depth: u8,
    ) -> Result<(String, ImageManifest)> {
        if depth > 4 {
            return Err(self.not_an_image("indexes nest deeper than 4"));
        }
        let named = |d: &&oci_spec::image::Descriptor| {
            d.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME))
                .is_some_and(|name| Some(name.as_str()) == reference)
        };
        let for_us = |d: &&oci_spec::image::Descriptor| {
            d.platform().as_ref().is_none_or(|p| {
                p.architecture().to_string() == go_arch() && p.os().to_string() == "linux"
            })
        };
        let all = index.manifests();
        let chosen = match reference {
            Some(r) if depth == 0 => all
                .iter()
                .find(named)
                .ok_or_else(|| self.not_an_image(&format!("no image named `{r}` in its index")))?,
            _ => all
                .iter()
                .find(for_us)
                .or(all.first())
                .ok_or_else(|| self.not_an_image("its index lists no manifest"))?,
        };
        let digest = chosen.digest().to_string();
        let bytes = self.read_verified(&blob_entry(&digest)?, &digest, Some(chosen.size()))?;
        let media = chosen.media_type().to_string();
        if media.ends_with("image.index.v1+json") || media.ends_with("manifest.list.v2+json") {
            let nested: ImageIndex = self.json("nested image index", &bytes)?;
            return self.pick_manifest(&nested, reference, depth + 1);
        }
        Ok((digest, self.json("image manifest", &bytes)?))
    }

    fn docker_image(&self, reference: Option<&str>) -> Result<Image> {
        let list: Vec<DockerManifest> =
            self.json("manifest.json", &self.read_entry("manifest.json")?)?;
        let chosen = match reference {
            Some(r) => list
                .iter()
                .find(|m| m.repo_tags.iter().flatten().any(|t| t == r))
                .ok_or_else(|| {
                    self.not_an_image(&format!("no image tagged `{r}` in manifest.json"))
                })?,
            None => list
                .first()
                .ok_or_else(|| self.not_an_image("manifest.json lists no image"))?,
        };
        // The config's name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
        let config_entry = normalize(&chosen.config);
        let hex = config_entry
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".json")
            .to_string();
        let expected = format!("sha256:{hex}");
        let config_bytes = self.read_verified(&config_entry, &expected, None)?;
        let config: ImageConfiguration = self.json("image config", &config_bytes)?;
        // Layer blobs are named by digest in newer archives; in the legacy
        // layout (`<id>/layer.tar`) they are uncompressed, so their digest is
        // the config's diff_id at the same position.
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != chosen.layers.len() {
            return Err(self.not_an_image(&format!(
                "manifest.json lists {} layers, the config {} diff_ids",
                chosen.layers.len(),
                diff_ids.len()
            )));
        }
        let layers = chosen
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(name, diff_id)| {
                let entry = normalize(name);
                let digest = match entry.strip_prefix("blobs/sha256/") {
                    Some(hex) => format!("sha256:{hex}"),
                    None => diff_id.clone(),
                };
                // Checked here, not only when the blob is read: the launcher
                // names a layer's cache directory after its digest, and
                // finds a cached layer before reading it.
                check_digest_form(&digest)?;
                let size = self.region(&entry)?.size;
                Ok(Layer {
                    digest,
                    size,
                    entry,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Image {
            tag: chosen.repo_tags.iter().flatten().next().cloned(),
            config_digest: expected.clone(),
            config_entry,
            id: expected,
            config,
            layers,
        })
    }

    fn region(&self, entry: &str) -> Result<Region> {
        self.locate(entry).map(|(_, region)| region)
    }

    /// The file holding `entry` and where in it: the archive's region, or
    /// the layout directory's entry, opened beneath it.
    fn locate(&self, entry: &str) -> Result<(BlobFile<'_>, Region)> {
        let missing = || self.not_an_image(&format!("`{entry}` is missing"));
        if !self.dir {
            let region = self.entries.get(entry).copied().ok_or_else(missing)?;
            return Ok((BlobFile::Archive(&self.file), region));
        }
        let file = match open_beneath(&self.file, entry) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(self.read_error()(e)),
        };
        let meta = file.metadata().map_err(self.read_error())?;
        if !meta.is_file() {
            return Err(self.not_an_image(&format!("`{entry}` is not a regular file")));
        }
        let region = Region {
            offset: 0,
            size: meta.len(),
        };
        Ok((BlobFile::Entry(file), region))
    }

    fn blob(&self, entry: &str) -> Result<Blob<'_>> {
        let (file, region) = self.locate(entry)?;
        Ok(Blob {
            file,
            offset: region.offset,
            remaining: region.size,
        })
    }

    /// Reads a small metadata entry (index.json, manifest.json) whole.
    fn read_entry(&self, entry: &str) -> Result<Vec<u8>> {
        let mut blob = self.blob(entry)?;
        if blob.remaining > MAX_METADATA {
            return Err(self.not_an_image(&format!("`{entry}` is over {MAX_METADATA} bytes")));
        }
        let mut out = Vec::with_capacity(blob.remaining as usize);
        blob.read_to_end(&mut out).map_err(self.read_error())?;
        Ok(out)
    }

    /// Reads a small blob whole and checks its size and digest.
    fn read_verified(&self, entry: &str, digest: &str, size: Option<u64>) -> Result<Vec<u8>> {
        let bytes = self.read_entry(entry)?;
        if let Some(size) = size
            && size != bytes.len() as u64
        {
            return Err(self.not_an_image(&format!(
                "`{entry}` is {} bytes, its descriptor says {size}",
                bytes.len()
            )));
        }
        check_digest(entry, digest, &format!("sha256:{}", hex_sha256(&bytes)))?;
        Ok(bytes)
    }

    fn json<T: serde::de::DeserializeOwned>(&self, what: &'static str, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|source| Error::JsonRead {
            what,
            path: self.path.clone(),
            source,
        })
    }

    fn not_an_image(&self, what: &str) -> Error {
        Error::NotAnImage {
            path: self.path.clone(),
            what: what.to_string(),
        }
    }

    fn read_error(&self) -> impl FnOnce(io::Error) -> Error + '_ {
        |source| Error::Archive {
            archive: self.path.clone(),
            source,
        }
    }
}

/// Raw access for copying an OCI layout elsewhere (a registry push): the
/// index, and any blob by digest, each verified before it is handed out.
impl ImageArchive {
    /// The archive's `index.json` (OCI layouts only).
    pub fn index(&self) -> Result<ImageIndex> {
        if !self.has("index.json") {
            return Err(self.not_an_image("it has no `index.json` (a `docker save` archive?)"));
        }
        self.json("index.json", &self.read_entry("index.json")?)
    }

    /// The small blob `digest` (a manifest, index or config), whole, after
    /// checking its size and digest.
    pub fn read_blob(&self, digest: &str, size: u64) -> Result<Vec<u8>> {
        self.read_verified(&blob_entry(digest)?, digest, Some(size))
    }

    /// The blob `digest`, after checking its size and digest.
    pub fn verified_blob(&self, digest: &str, size: u64) -> Result<Blob<'_>> {
        self.verified_layer(&Layer {
            digest: digest.to_string(),
            size,
            entry: blob_entry(digest)?,
        })
    }
}

/// Reading an image's blobs whatever layout holds them, for copying them
/// into another image or a registry.
impl ImageArchive {
    /// The blob `digest` of an OCI layout, as a layer to read.
    pub fn layout_blob(&self, digest: &str, size: u64) -> Result<Layer> {
        Ok(Layer {
            digest: digest.to_string(),
            size,
            entry: blob_entry(digest)?,
        })
    }

    /// True when it holds an image: an OCI layout or a `docker save` archive.
    pub fn is_image(&self) -> bool {
        self.has("index.json") || self.has("manifest.json")
    }

    /// True for an OCI layout (`index.json`), false for `docker save`.
    pub fn has_index(&self) -> bool {
        self.has("index.json")
    }

    /// `image`'s config as the bytes that hash to its digest, checked.
    pub fn config_bytes(&self, image: &Image) -> Result<Vec<u8>> {
        self.read_verified(&image.config_entry, &image.config_digest, None)
    }

    /// The OCI media type of `layer`, from its first bytes: `docker save`
    /// lists layers without one (they are plain tars, or gzip in archives
    /// made from pulled images).
    pub fn layer_media_type(&self, layer: &Layer) -> Result<oci_spec::image::MediaType> {
        use oci_spec::image::MediaType;
        let mut magic = [0u8; 4];
        let n = self
            .blob(&layer.entry)?
            .read(&mut magic)
            .map_err(self.read_error())?;
        Ok(match magic[..n] {
            [0x1f, 0x8b, ..] => MediaType::ImageLayerGzip,
            [0x28, 0xb5, 0x2f, 0xfd] => MediaType::ImageLayerZstd,
            _ => MediaType::ImageLayer,
        })
    }
}

/// index.json, manifests and configs are small; refuse absurd ones rather
/// than read gigabytes into memory.
const MAX_METADATA: u64 = 16 << 20;

#[derive(Debug, serde::Deserialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The regular files of the tar archive `file`, by name. What is not a tar
/// archive, or one cut short, is said to be so (never with its bytes: a
/// random file's "header" printed raw garbled the terminal).
fn index_entries(path: &Path, file: &File) -> Result<HashMap<String, Region>> {
    let not_an_image = |what: String| Error::NotAnImage {
        path: path.to_path_buf(),
        what,
    };
    let len = file
        .metadata()
        .map_err(|source| Error::Archive {
            archive: path.to_path_buf(),
            source,
        })?
        .len();
    check_tar_start(file, len).map_err(not_an_image)?;
    let archive_error = |source: io::Error| Error::Archive {
        archive: path.to_path_buf(),
        source: io::Error::new(source.kind(), printable(&source.to_string())),
    };
    let truncated = |end: u64| {
        not_an_image(format!(
            "it is truncated: {len} bytes, its last entry ends at byte {end} \
             (an interrupted download or copy?)"
        ))
    };
    let mut archive = tar::Archive::new(file);
    let mut entries = HashMap::new();
    // Where the last entry's contents end, padded to a whole block.
    let mut end = 0;
    for entry in archive.entries_with_seek().map_err(archive_error)? {
        let entry = match entry {
            Ok(entry) => entry,
            // A header cut short: tar blocks are 512 bytes.
            Err(_) if len % 512 != 0 => return Err(truncated(end.max(len.next_multiple_of(512)))),
            Err(err) => return Err(archive_error(err)),
        };
        let region = Region {
            offset: entry.raw_file_position(),
            size: entry.size(),
        };
        end = region
            .offset
            .saturating_add(region.size)
            .next_multiple_of(512);
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry.path().map_err(archive_error)?;
        entries.insert(normalize(&name.to_string_lossy()), region);
    }
    // The tar reader stops quietly at the end of the file, even inside an
    // entry's contents or before the end-of-archive blocks that every tar
    // writer puts last.
    if end > len || len - end < 512 {
        return Err(truncated(end));
    }
    Ok(entries)
}

/// Opens `entry` (`blobs/sha256/<hex>`, `index.json`) of the directory
/// `dir` without leaving it: component by component, never through a
/// symlink, `.` or `..`; non-blocking, so that a FIFO put there is opened
/// (and refused as no regular file) instead of waiting for a writer.
fn open_beneath(dir: &File, entry: &str) -> io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let parts: Vec<&str> = entry.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{entry}` is not a plain relative name"),
        ));
    }
    let mut current: Option<File> = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let flags = libc::O_RDONLY
            | libc::O_NOFOLLOW
            | libc::O_CLOEXEC
            | if last {
                libc::O_NONBLOCK | libc::O_NOCTTY
            } else {
                libc::O_DIRECTORY
            };
        let name = std::ffi::CString::new(*part)?;
        let at = current.as_ref().unwrap_or(dir).as_raw_fd();
        // SAFETY: `at` is an open directory fd; `name` is NUL-terminated.
        let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openat returned a new fd that nothing else owns.
        current = Some(unsafe { File::from_raw_fd(fd) });
    }
    current.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// Checks that `file` starts with a tar header (its checksum adds up), and
/// else says what it looks like instead.
fn check_tar_start(file: &File, len: u64) -> std::result::Result<(), String> {
    let mut head = [0u8; 512];
    let n = file
        .read_at(&mut head, 0)
        .map_err(|e| format!("reading its first block: {e}"))?;
    let head = &head[..n];
    if len == 0 {
        return Err("it is empty".into());
    }
    if n == 512 && header_checksum_matches(head) {
        return Ok(());
    }
    let short = match n < 512 {
        true => format!(", {len} bytes, shorter than one tar header"),
        false => String::new(),
    };
    Err(format!(
        "it is not a tar archive{short}: it looks like {}",
        looks_like(head)
    ))
}

/// A tar header's checksum: the sum of its bytes, the checksum field (148..156,
/// octal) counted as spaces.
fn header_checksum_matches(head: &[u8]) -> bool {
    let field = String::from_utf8_lossy(&head[148..156]);
    let Ok(stored) = u64::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8)
    else {
        return false;
    };
    let sum: u64 = head
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    sum == stored
}

/// What a file that is not a tar archive seems to be, from its first bytes.
fn looks_like(head: &[u8]) -> &'static str {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"\x1f\x8b") {
        "gzip-compressed data (an image archive is a plain tar: decompress it first)"
    } else if starts(b"\x28\xb5\x2f\xfd") {
        "zstd-compressed data (an image archive is a plain tar: decompress it first)"
    } else if starts(b"\xfd7zXZ\x00") {
        "xz-compressed data (an image archive is a plain tar: decompress it first)"
    } else if starts(b"BZh") {
        "bzip2-compressed data (an image archive is a plain tar: decompress it first)"
    } else if starts(b"PK\x03\x04") {
        "a zip archive"
    } else if starts(b"\x7fELF") {
        "an ELF program"
    } else if starts(b"#!") {
        "a script"
    } else if head.trim_ascii_start().starts_with(b"{") || head.trim_ascii_start().starts_with(b"[")
    {
        "JSON"
    } else if std::str::from_utf8(head).is_ok_and(|t| !t.contains('\0')) {
        "text"
    } else {
        "binary data of some other kind"
    }
}

/// `text` with everything but printable ASCII escaped: the tar reader's
/// messages quote header bytes, which may be anything.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_ascii_graphic() || c == ' ' {
            true => c.to_string(),
            false => c.escape_default().to_string(),
        })
        .collect()
}

/// `./blobs/sha256/x` and `blobs/sha256/x` name the same entry.
fn normalize(name: &str) -> String {
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// The entry holding the blob with `digest` in an OCI layout.
fn blob_entry(digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some(("sha256", hex)) if is_sha256_hex(hex) => Ok(format!("blobs/sha256/{hex}")),
        _ => Err(Error::BadDigest {
            value: digest.to_string(),
        }),
    }
}

fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `sha256:` and 64 lowercase hex digits, so that a digest is safe as a
/// file name.
fn check_digest_form(digest: &str) -> Result<()> {
    if !digest.strip_prefix("sha256:").is_some_and(is_sha256_hex) {
        return Err(Error::BadDigest {
            value: digest.to_string(),
        });
    }
    Ok(())
}

fn check_digest(entry: &str, expected: &str, actual: &str) -> Result<()> {
    check_digest_form(expected)?;
    if expected != actual {
        return Err(Error::DigestMismatch {
            what: entry.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The OCI (Go) name of this machine's architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TarBuilder(tar::Builder<Vec<u8>>);

    impl TarBuilder {
        fn new() -> Self {
            Self(tar::Builder::new(Vec::new()))
        }
        fn add(&mut self, name: &str, data: &[u8]) -> &mut Self {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            self.0.append_data(&mut h, name, data).unwrap();
            self
        }
        fn blob(&mut self, data: &[u8]) -> String {
            let hex = hex_sha256(data);
            self.add(&format!("blobs/sha256/{hex}"), data);
            format!("sha256:{hex}")
        }
        fn write(self) -> tempfile::NamedTempFile {
            let bytes = self.0.into_inner().unwrap();
            let mut f = tempfile::NamedTempFile::new().unwrap();
            std::io::Write::write_all(&mut f, &bytes).unwrap();
            f
        }
    }

    fn config(diff_ids: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap()
    }

    fn oci(layers: &[&[u8]], corrupt: bool) -> tempfile::NamedTempFile {
        let mut t = TarBuilder::new();
        t.add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        let mut descs = vec![];
        for l in layers {
            let d = t.blob(l);
            descs.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d, "size": l.len()}));
        }
        let cfg = config(&[]);
        let cd = t.blob(&cfg);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cfg.len()},
            "layers": descs,
        }))
        .unwrap();
        let md = t.blob(&manifest);
        let size = if corrupt {
            manifest.len() + 1
        } else {
            manifest.len()
        };
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": md, "size": size,
                "annotations": {REF_NAME: "test"}}],
        }))
        .unwrap();
        t.add("index.json", &index);
        t.write()
    }

    /// The layout `oci` writes, unpacked into a directory.
    fn oci_dir(layers: &[&[u8]]) -> tempfile::TempDir {
        let tar = oci(layers, false);
        let dir = tempfile::tempdir().unwrap();
        tar::Archive::new(File::open(tar.path()).unwrap())
            .unpack(dir.path())
            .unwrap();
        dir
    }

    #[test]
    fn reads_an_oci_layout_directory_checking_its_layers() {
        let dir = oci_dir(&[b"one", b"two"]);
        let archive = ImageArchive::open(dir.path()).unwrap();
        assert!(archive.is_image());
        let image = archive.image(None).unwrap();
        assert_eq!(image.layers.len(), 2);
        let mut text = String::new();
        archive
            .verified_layer(&image.layers[1])
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "two");
        // A layer changed on disk fails its digest check.
        let hex = image.layers[0].digest.trim_start_matches("sha256:");
        std::fs::write(dir.path().join("blobs/sha256").join(hex), b"ONE").unwrap();
        let err = archive.verified_layer(&image.layers[0]).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    /// A layout directory is input like an archive: a blob that is a
    /// symlink (to a host file) or a FIFO is refused, not followed or
    /// waited on; a `..` entry never leaves the directory.
    #[test]
    fn a_layout_directory_entry_that_is_a_symlink_or_fifo_is_refused() {
        let dir = oci_dir(&[b"one"]);
        let archive = ImageArchive::open(dir.path()).unwrap();
        let image = archive.image(None).unwrap();
        let blob = dir
            .path()
            .join("blobs/sha256")
            .join(image.layers[0].digest.trim_start_matches("sha256:"));
        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"one").unwrap();
        std::fs::remove_file(&blob).unwrap();
        std::os::unix::fs::symlink(&outside, &blob).unwrap();
        let err = archive.verified_layer(&image.layers[0]).unwrap_err();
        assert!(
            format!("{err:#}").contains("Too many levels of symbolic links")
                || matches!(err, Error::Archive { .. }),
            "{err:#}"
        );
        std::fs::remove_file(&blob).unwrap();
        nix_mkfifo(&blob);
        let err = archive.verified_layer(&image.layers[0]).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = open_beneath(&archive.file, "blobs/../outside").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    fn nix_mkfifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn reads_oci_layout_with_several_layers() {
        let f = oci(&[b"one", b"two"], false);
        let archive = ImageArchive::open(f.path()).unwrap();
        let image = archive.image(None).unwrap();
        assert_eq!(image.tag.as_deref(), Some("test"));
        assert_eq!(
            image.config_digest,
            format!("sha256:{}", hex_sha256(&config(&[])))
        );
        assert_eq!(archive.names().unwrap(), ["test"]);
        let image = archive.image(Some("test")).unwrap();
        assert_eq!(image.layers.len(), 2);
        assert_eq!(
            image.layers[1].digest,
            format!("sha256:{}", hex_sha256(b"two"))
        );
        let mut data = String::new();
        archive
            .verified_layer(&image.layers[0])
            .unwrap()
            .read_to_string(&mut data)
            .unwrap();
        assert_eq!(data, "one");
    }

    #[test]
    fn refuses_manifest_of_wrong_size() {
        let f = oci(&[b"one"], true);
        let err = ImageArchive::open(f.path())
            .unwrap()
            .image(None)
            .unwrap_err();
        assert!(matches!(err, Error::NotAnImage { .. }), "{err}");
    }

    #[test]
    fn refuses_layer_with_wrong_digest() {
        let f = oci(&[b"one"], false);
        let archive = ImageArchive::open(f.path()).unwrap();
        let mut image = archive.image(None).unwrap();
        image.layers[0].digest = format!("sha256:{}", hex_sha256(b"other"));
        let err = archive.verified_layer(&image.layers[0]).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    /// The layer's bytes change after the reader handed out its first
    /// part (another writer of the archive file, between two reads): the
    /// reader hashed the bytes it handed out, and the mix of old and new
    /// ones fails the check. A hash of one read and a second read for use
    /// would have passed the new bytes as the genuine layer.
    #[test]
    fn a_layer_changed_while_it_is_read_fails_its_digest_check() {
        let layer = vec![7u8; 4096];
        let f = oci(&[&layer], false);
        let archive = ImageArchive::open(f.path()).unwrap();
        let image = archive.image(None).unwrap();
        let mut reader = archive.layer_reader(&image.layers[0]).unwrap();
        let mut first = [0u8; 1024];
        reader.read_exact(&mut first).unwrap();
        let region = archive.region(&image.layers[0].entry).unwrap();
        let writer = std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap();
        writer
            .write_all_at(&[9u8; 3072], region.offset + 1024)
            .unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, [9u8; 3072], "the reader hands out what is there");
        let err = reader.finish().unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn a_layer_reader_checks_what_its_caller_did_not_read() {
        let f = oci(&[b"one"], false);
        let archive = ImageArchive::open(f.path()).unwrap();
        let image = archive.image(None).unwrap();
        archive
            .layer_reader(&image.layers[0])
            .unwrap()
            .finish()
            .unwrap();
        let mut wrong = image.layers[0].clone();
        wrong.digest = format!("sha256:{}", hex_sha256(b"other"));
        let err = archive.layer_reader(&wrong).unwrap().finish().unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    #[test]
    fn refuses_unknown_reference() {
        let f = oci(&[b"one"], false);
        let err = ImageArchive::open(f.path())
            .unwrap()
            .image(Some("nope"))
            .unwrap_err();
        assert!(
            err.to_string().contains("not an OCI image archive"),
            "{err}"
        );
    }

    #[test]
    fn reads_legacy_docker_save_archive() {
        let layer = b"layer-bytes".as_slice();
        let diff_id = format!("sha256:{}", hex_sha256(layer));
        let cfg = config(std::slice::from_ref(&diff_id));
        let cfg_name = format!("{}.json", hex_sha256(&cfg));
        let mut t = TarBuilder::new();
        t.add(&cfg_name, &cfg);
        t.add("abc/layer.tar", layer);
        let manifest = serde_json::json!([{"Config": cfg_name, "RepoTags": ["x:latest"], "Layers": ["abc/layer.tar"]}]);
        t.add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        let f = t.write();
        let archive = ImageArchive::open(f.path()).unwrap();
        let image = archive.image(None).unwrap();
        assert_eq!(image.tag.as_deref(), Some("x:latest"));
        assert_eq!(image.config_digest, format!("sha256:{}", hex_sha256(&cfg)));
        let image = archive.image(Some("x:latest")).unwrap();
        assert_eq!(image.layers[0].digest, diff_id);
        assert!(archive.verified_layer(&image.layers[0]).is_ok());
    }

    #[test]
    fn refuses_docker_layer_whose_digest_is_a_path() {
        let layer = b"layer-bytes".as_slice();
        let diff_id = "sha256:../../../../etc".to_string();
        let cfg = config(std::slice::from_ref(&diff_id));
        let cfg_name = format!("{}.json", hex_sha256(&cfg));
        let mut t = TarBuilder::new();
        t.add(&cfg_name, &cfg);
        t.add("abc/layer.tar", layer);
        let manifest = serde_json::json!([{"Config": cfg_name, "Layers": ["abc/layer.tar"]}]);
        t.add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        let f = t.write();
        let err = ImageArchive::open(f.path())
            .unwrap()
            .image(None)
            .unwrap_err();
        assert!(matches!(err, Error::BadDigest { .. }), "{err}");
    }

    #[test]
    fn refuses_docker_config_with_wrong_digest() {
        let cfg = config(&[]);
        let mut t = TarBuilder::new();
        t.add(&format!("{}.json", hex_sha256(b"x")), &cfg);
        let manifest =
            serde_json::json!([{"Config": format!("{}.json", hex_sha256(b"x")), "Layers": []}]);
        t.add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
        let f = t.write();
        let err = ImageArchive::open(f.path())
            .unwrap()
            .image(None)
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }
}
