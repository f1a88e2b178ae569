//! The image store, what `launcher image ls`, `rm` and `prune` show and
//! remove. An image in the store is a record, `images/<key>.json`, written
//! whole (renamed into place) when a reference is pulled and each time an
//! image is run: its archive (a pulled one in `images/`, or the user's
//! file), its id and name, the layers it needs, and when it was last used.
//! A layer stays while a record names it. A running launcher holds its
//! image's lock and its layers' locks shared ([`Cache::unpack_layers`]),
//! and nothing held is removed: `rm` refuses, `prune` passes over it.
//!
//! A pulled archive removed while another launcher is between finding it
//! and opening it makes that run fail to read it; it pulls again next time.

use crate::cache::{Cache, Lock, remove_tree};
use crate::image::Image;
use crate::{Error, Result};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// `sha256:…` of the manifest (OCI) or of the config (`docker save`).
    pub id: String,
    /// The reference it was pulled as, or the archive's tag for the image.
    pub name: Option<String>,
    /// The archive it is read from: in `images/` when pulled.
    pub archive: PathBuf,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
    /// Seconds since the epoch.
    pub last_used: u64,
}

/// A row of `launcher image ls`.
#[derive(Debug)]
pub struct Listed {
    pub record: Record,
    /// Bytes on disk: its layers and, when pulled, its archive. A layer
    /// two images share counts in both.
    pub size: u64,
    /// A launcher is running it.
    pub in_use: bool,
}

/// What `rm` or `prune` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub images: Vec<Record>,
    pub layers: Vec<String>,
    /// Records that could not be read, pulled archives that are none.
    pub leftovers: usize,
    pub bytes: u64,
}

impl Record {
    /// The record's file name: one per archive and image name, so that an
    /// archive rebuilt in place replaces its record (and its old layers
    /// become unreferenced).
    fn key(&self) -> String {
        let name = self.name.as_deref().unwrap_or("");
        let text = format!("{}\n{name}", self.archive.display());
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn pulled(&self, cache: &Cache) -> bool {
        self.archive.parent() == Some(&cache.root().join("images"))
    }

    /// The reference of a pulled image, else the archive's path.
    pub fn display_name(&self, cache: &Cache) -> String {
        match (&self.name, self.pulled(cache)) {
            (Some(name), true) => name.clone(),
            _ => self.archive.display().to_string(),
        }
    }

    fn to_json(&self) -> Vec<u8> {
        let value = json!({
            "id": self.id,
            "name": self.name,
            "archive": self.archive,
            "layers": self.layers,
            "last_used": self.last_used,
        });
        let mut bytes = value.to_string().into_bytes();
        bytes.push(b'\n');
        bytes
    }

    fn from_json(bytes: &[u8]) -> Option<Record> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(Record {
            id: v.get("id")?.as_str()?.to_string(),
            name: v.get("name").and_then(|n| n.as_str()).map(String::from),
            archive: v.get("archive")?.as_str()?.into(),
            layers: v
                .get("layers")?
                .as_array()?
                .iter()
                .map(|l| l.as_str().map(String::from))
                .collect::<Option<_>>()?,
            last_used: v.get("last_used")?.as_u64()?,
        })
    }
}

/// Records that this launcher runs `image` and holds its lock until it
/// ends, before its layers are looked up: a prune then either sees the
/// record (and keeps the layers) or removes a layer this run unpacks again.
pub(crate) fn record_use(cache: &Cache, image: &Image) -> Result<()> {
    let (id, name) = identify(image);
    let path = image.archive.path();
    let record = Record {
        id,
        name,
        archive: std::path::absolute(path).map_err(Error::io("resolving", path))?,
        layers: image.layers.iter().map(|l| l.digest.clone()).collect(),
        last_used: now(),
    };
    cache.hold(Lock::shared_kept(&lock_path(cache, &record))?);
    // "Last used" to the minute: a record that says the same, written less
    // than a minute ago, is left alone. Replacing a file by rename on every
    // run made ext4 start writing it back (auto_da_alloc) on the warm path.
    let fresh = fs::read(record_path(cache, &record))
        .ok()
        .and_then(|b| Record::from_json(&b))
        .is_some_and(|old| {
            record.last_used.saturating_sub(old.last_used) < 60
                && Record {
                    last_used: record.last_used,
                    ..old
                } == record
        });
    if fresh {
        return Ok(());
    }
    write(cache, &record)
}

/// Records the archive `pull` just wrote.
pub(crate) fn record_pulled(cache: &Cache, archive: &Path) -> Result<()> {
    let image_error = |source| Error::Image {
        path: archive.to_path_buf(),
        source: Box::new(source),
    };
    let opened = builder::archive::ImageArchive::open(archive).map_err(image_error)?;
    let image = opened.image(None).map_err(image_error)?;
    write(
        cache,
        &Record {
            id: image.id,
            name: image.tag,
            archive: archive.to_path_buf(),
            layers: image.layers.into_iter().map(|l| l.digest).collect(),
            last_used: now(),
        },
    )
}

/// The images in the store, the last used first.
pub fn list(cache: &Cache) -> Result<Vec<Listed>> {
    let mut rows: Vec<Listed> = records(cache)?
        .into_iter()
        .filter_map(|(_, record)| record)
        .map(|record| Listed {
            size: image_size(cache, &record),
            in_use: Lock::try_exclusive(&lock_path(cache, &record), false).is_none()
                && lock_path(cache, &record).exists(),
            record,
        })
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.record.last_used));
    Ok(rows)
}

/// Removes the images `names` (a reference, an archive path, or an id or
/// its prefix) and the layers no other image needs. All or nothing: an
/// image that is not there or that a launcher runs is an error before
/// anything is removed.
pub fn remove(cache: &Cache, names: &[String]) -> Result<Removed> {
    let records: Vec<Record> = records(cache)?
        .into_iter()
        .filter_map(|(_, record)| record)
        .collect();
    let mut chosen: Vec<&Record> = Vec::new();
    for name in names {
        for record in matching(&records, name, cache)? {
            if !chosen.contains(&record) {
                chosen.push(record);
            }
        }
    }
    let locks = chosen
        .iter()
        .map(|record| {
            Lock::try_exclusive(&lock_path(cache, record), true).ok_or_else(|| Error::ImageInUse {
                name: record.display_name(cache),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut removed = Removed::default();
    let mut layers = HashSet::new();
    for record in chosen {
        removed.bytes += remove_image(cache, record)?;
        layers.extend(record.layers.iter().cloned());
        removed.images.push(record.clone());
    }
    drop(locks);
    remove_unreferenced_layers(cache, Some(&layers), &mut removed)?;
    Ok(removed)
}

/// Removes what launchers left ([`Cache::reclaim_stale`]), records whose
/// archive is gone, and every layer no record names; with `all`, also
/// every image no launcher runs.
pub fn prune(cache: &Cache, all: bool) -> Result<Removed> {
    cache.reclaim_stale();
    let mut removed = Removed::default();
    adopt_pulled(cache, &mut removed)?;
    for (path, record) in records(cache)? {
        let Some(record) = record else {
            fs::remove_file(&path).map_err(Error::io("removing", &path))?;
            removed.leftovers += 1;
            continue;
        };
        if !all && record.archive.exists() {
            continue;
        }
        let Some(_running) = Lock::try_exclusive(&lock_path(cache, &record), true) else {
            continue;
        };
        removed.bytes += remove_image(cache, &record)?;
        removed.images.push(record);
    }
    remove_unreferenced_layers(cache, None, &mut removed)?;
    Ok(removed)
}

/// `launcher image ls`: one line per image, in columns.
pub fn table(cache: &Cache, rows: &[Listed]) -> String {
    let now = now();
    let mut lines = vec![["IMAGE", "ID", "LAYERS", "SIZE", "LAST USED"].map(String::from)];
    for row in rows {
        let r = &row.record;
        let id = r.id.strip_prefix("sha256:").unwrap_or(&r.id);
        lines.push([
            r.display_name(cache),
            id.chars().take(12).collect(),
            r.layers.len().to_string(),
            human_size(row.size),
            match row.in_use {
                true => "in use".into(),
                false => ago(now.saturating_sub(r.last_used)),
            },
        ]);
    }
    let mut widths = [0; 5];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

impl Removed {
    /// What was removed, a line each, and the space it took.
    pub fn report(&self, cache: &Cache) -> String {
        let mut out = String::new();
        for image in &self.images {
            out.push_str(&format!(
                "removed {} {}\n",
                image.display_name(cache),
                image.id
            ));
        }
        for layer in &self.layers {
            out.push_str(&format!("removed layer {layer}\n"));
        }
        if self.leftovers > 0 {
            out.push_str(&format!("removed {} leftovers\n", self.leftovers));
        }
        out.push_str(&format!("reclaimed {}\n", human_size(self.bytes)));
        out
    }
}

/// The id and name of `image` as its archive has them: the archive's image
/// with these layers (an archive may hold several); for an archive that
/// somehow has none, the digest of the layer list.
fn identify(image: &Image) -> (String, Option<String>) {
    let archive = &image.archive;
    let names = archive.names().unwrap_or_default();
    std::iter::once(None)
        .chain(names.iter().map(|n| Some(n.as_str())))
        .filter_map(|name| archive.image(name).ok())
        .find(|found| found.layers == image.layers)
        .map(|found| (found.id, found.tag))
        .unwrap_or_else(|| {
            let list: Vec<&str> = image.layers.iter().map(|l| l.digest.as_str()).collect();
            let digest = Sha256::digest(list.join("\n").as_bytes());
            (format!("sha256:{}", hex::encode(digest)), None)
        })
}

fn lock_path(cache: &Cache, record: &Record) -> PathBuf {
    cache
        .root()
        .join("images")
        .join(format!("{}.lock", record.key()))
}

fn record_path(cache: &Cache, record: &Record) -> PathBuf {
    cache
        .root()
        .join("images")
        .join(format!("{}.json", record.key()))
}

fn write(cache: &Cache, record: &Record) -> Result<()> {
    cache.write_atomically(&record_path(cache, record), &record.to_json())
}

/// Every `images/*.json`, with its record when it can be read.
fn records(cache: &Cache) -> Result<Vec<(PathBuf, Option<Record>)>> {
    let dir = cache.root().join("images");
    let entries = fs::read_dir(&dir).map_err(Error::io("listing", &dir))?;
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let record = fs::read(&p).ok().and_then(|b| Record::from_json(&b));
            (p, record)
        })
        .collect())
}

/// The records `name` means: those pulled as that reference or named so,
/// or read from that archive; else those whose id starts with it.
fn matching<'a>(records: &'a [Record], name: &str, cache: &Cache) -> Result<Vec<&'a Record>> {
    let reference = builder::registry::Reference::parse(name)
        .ok()
        .map(|r| r.to_string());
    let path = std::path::absolute(name).ok();
    let named: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.name.as_deref() == Some(name)
                || (r.pulled(cache) && r.name.is_some() && r.name == reference)
                || Some(&r.archive) == path.as_ref()
        })
        .collect();
    if !named.is_empty() {
        return Ok(named);
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    let is_hex = hex.len() >= 4 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    let by_id: Vec<&Record> = records
        .iter()
        .filter(|r| {
            is_hex
                && r.id
                    .strip_prefix("sha256:")
                    .unwrap_or(&r.id)
                    .starts_with(hex)
        })
        .collect();
    let ids: HashSet<&str> = by_id.iter().map(|r| r.id.as_str()).collect();
    match ids.len() {
        0 => Err(Error::NoSuchImage { name: name.into() }),
        1 => Ok(by_id),
        _ => Err(Error::Invalid {
            what: "image id prefix (it matches several images)",
            value: name.into(),
        }),
    }
}

/// Removes the record, and the archive when it was pulled (never a file of
/// the user's); the caller holds the image's lock. Returns the bytes freed.
fn remove_image(cache: &Cache, record: &Record) -> Result<u64> {
    let mut bytes = 0;
    if record.pulled(cache) {
        bytes += disk_usage(&record.archive);
        remove_tree(&record.archive).map_err(Error::io("removing", &record.archive))?;
    }
    let path = record_path(cache, record);
    remove_tree(&path).map_err(Error::io("removing", &path))?;
    Ok(bytes)
}

/// Pulled archives without a record (a pull SIGKILLed after its rename)
/// get one; what is no image archive goes. Only while no pull runs.
fn adopt_pulled(cache: &Cache, removed: &mut Removed) -> Result<()> {
    let images = cache.root().join("images");
    let Some(_pulls) = Lock::try_exclusive(&images.join(crate::cache::PULL_LOCK), true) else {
        return Ok(());
    };
    let recorded: HashSet<PathBuf> = records(cache)?
        .into_iter()
        .filter_map(|(_, r)| r.map(|r| r.archive))
        .collect();
    let entries = fs::read_dir(&images).map_err(Error::io("listing", &images))?;
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "tar") || recorded.contains(&path) {
            continue;
        }
        if record_pulled(cache, &path).is_err() {
            removed.bytes += disk_usage(&path);
            remove_tree(&path).map_err(Error::io("removing", &path))?;
            removed.leftovers += 1;
        }
    }
    Ok(())
}

/// Removes the layers no record names (of `only`, when given) that nobody
/// holds.
fn remove_unreferenced_layers(
    cache: &Cache,
    only: Option<&HashSet<String>>,
    removed: &mut Removed,
) -> Result<()> {
    let referenced: HashSet<String> = records(cache)?
        .into_iter()
        .filter_map(|(_, r)| r)
        .flat_map(|r| r.layers)
        .collect();
    let dir = cache.root().join("layers/sha256");
    let entries = fs::read_dir(&dir).map_err(Error::io("listing", &dir))?;
    for path in entries.flatten().map(|e| e.path()) {
        let Some(hex) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let digest = format!("sha256:{hex}");
        if path.extension().is_some_and(|e| e == "lock")
            || referenced.contains(&digest)
            || only.is_some_and(|only| !only.contains(&digest))
        {
            continue;
        }
        let Some(_lock) = Lock::try_exclusive(&path.with_extension("lock"), true) else {
            continue; // a launcher is using or unpacking it
        };
        if !path.exists() {
            continue;
        }
        removed.bytes += disk_usage(&path);
        remove_tree(&path).map_err(Error::io("removing", &path))?;
        removed.layers.push(digest);
    }
    Ok(())
}

/// Its layers and, when pulled, its archive, on disk.
fn image_size(cache: &Cache, record: &Record) -> u64 {
    let layers: u64 = record
        .layers
        .iter()
        .map(|l| disk_usage(&cache.layer_dir(l)))
        .sum();
    let archive = match record.pulled(cache) {
        true => disk_usage(&record.archive),
        false => 0,
    };
    layers + archive
}

/// Bytes on disk under `path` (blocks, as du(1)), a hard-linked file once.
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sizes as docker prints them: decimal units, three significant digits.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < units.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let digits = match size {
        100.0.. => 0,
        10.0.. => 1,
        _ => 2,
    };
    let text = format!("{size:.digits$}");
    let text = match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.'),
        false => &text,
    };
    format!("{text}{}", units[unit])
}

fn ago(seconds: u64) -> String {
    let (n, unit) = match seconds {
        0..60 => return "just now".into(),
        60..3600 => (seconds / 60, "minute"),
        3600..86400 => (seconds / 3600, "hour"),
        _ => (seconds / 86400, "day"),
    };
    let s = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{s} ago")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let record = Record {
            id: "sha256:ab".into(),
            name: Some("r/x:1".into()),
            archive: "/a/b.tar".into(),
            layers: vec!["sha256:1".into(), "sha256:2".into()],
            last_used: 7,
        };
        assert_eq!(Record::from_json(&record.to_json()), Some(record));
        assert_eq!(Record::from_json(b"{\"id\": 1}"), None);
    }

    #[test]
    fn sizes_and_ages_read_as_docker_prints_them() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(7_340_000), "7.34MB");
        assert_eq!(human_size(12_500), "12.5kB");
        assert_eq!(human_size(100_000), "100kB");
        assert_eq!(ago(5), "just now");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(7200), "2 hours ago");
    }
}
