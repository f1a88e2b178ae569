//! SBOM step: an SPDX 2.3 JSON document of what a built image holds, read
//! from the image's own layers the way a runtime stacks them (bottom first,
//! OCI whiteouts and opaque directories applied, a file replacing a
//! directory dropping what was under it): the packages its package
//! databases list (dpkg's `var/lib/dpkg/status`, the `status.d/` files that
//! distroless images have instead, apk's `lib/apk/db/installed`) and the
//! files the build put on top of its base.
//!
//! Everything is read from the layers' tar entries, never from a path on
//! this machine: a database that is a symlink (to the host's
//! `/var/lib/dpkg/status`, say) is an entry of type symlink, and it is
//! reported, not followed. The databases belong to the image's author, so
//! each read is bounded, and what cannot be read is a warning naming the
//! file, not a guess.

use crate::error::{Error, Result};
use crate::unpack::{Compression, decoder};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufRead, BufReader, Read};

/// The media type of the document, and the `artifactType` of the manifest
/// that attaches it to its image.
pub const MEDIA_TYPE: &str = "application/spdx+json";

/// One database file is read up to this much; a bigger one is reported and
/// left out. Debian's with a desktop installed is about 4 MiB.
pub const MAX_DB_SIZE: u64 = 32 << 20;
/// All database files together (`status.d/` can hold one per package).
const MAX_DB_TOTAL: u64 = 128 << 20;
/// Paths remembered from the added layers (the base's are not kept).
const MAX_PATHS: usize = 1_000_000;
/// Longest name, version or architecture taken from a database.
const MAX_FIELD: usize = 256;
/// Longest license text taken from a database.
const MAX_LICENSE: usize = 1024;

const DPKG_STATUS: &str = "var/lib/dpkg/status";
const DPKG_STATUS_D: &str = "var/lib/dpkg/status.d";
const APK_INSTALLED: &str = "lib/apk/db/installed";
/// Directories that belong to a package manager: one that is a symlink or a
/// file is reported (a generic one such as `lib`, a symlink to `usr/lib` in
/// every merged-/usr Debian, is not).
const DB_DIRS: [&str; 4] = ["var/lib/dpkg", DPKG_STATUS_D, "lib/apk", "lib/apk/db"];
/// Every directory a database is under, generic ones included.
const DB_ANCESTORS: [&str; 7] = [
    "var",
    "var/lib",
    "var/lib/dpkg",
    DPKG_STATUS_D,
    "lib",
    "lib/apk",
    "lib/apk/db",
];

/// The package manager a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Deb,
    Apk,
}

impl Kind {
    /// The PURL type and namespace.
    fn purl_prefix(self) -> &'static str {
        match self {
            Kind::Deb => "pkg:deb/debian",
            Kind::Apk => "pkg:apk/alpine",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Deb => "deb",
            Kind::Apk => "apk",
        }
    }
}

/// A package a database lists as installed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub kind: Kind,
    pub name: String,
    pub version: String,
    pub arch: Option<String>,
    /// As the database has it (apk's `L:`; dpkg keeps none).
    pub license: Option<String>,
    /// The database file it was read from (`/var/lib/dpkg/status`).
    pub source: String,
}

impl Package {
    /// `pkg:deb/debian/NAME@VERSION?arch=ARCH`, each part percent-encoded.
    pub fn purl(&self) -> String {
        let mut purl = format!(
            "{}/{}@{}",
            self.kind.purl_prefix(),
            percent_encode(&self.name),
            percent_encode(&self.version)
        );
        if let Some(arch) = &self.arch {
            purl += &format!("?arch={}", percent_encode(arch));
        }
        purl
    }
}

/// A regular file the build added over its base, as the final image has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedFile {
    /// Relative to the root, without a leading `/` (`app/hello.sh`).
    pub path: String,
    pub size: u64,
    /// Hex digests: SPDX 2.3 requires SHA-1 for a file; SHA-256 is what
    /// anyone checks today.
    pub sha1: String,
    pub sha256: String,
}

/// What the layers hold, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// Sorted by kind, name, version and architecture, without duplicates.
    pub packages: Vec<Package>,
    /// Sorted by path.
    pub files: Vec<AddedFile>,
    /// Each names the file it is about.
    pub warnings: Vec<String>,
}

/// What a path is in the stacked layers so far.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    /// A regular file; its digests when it is in an added layer.
    File(Option<(u64, String, String)>),
    /// A symlink, a hardlink whose target is unknown, a device, a FIFO.
    Other(&'static str),
}

/// A database file's contents, or why they were not read.
#[derive(Debug, Clone)]
enum Db {
    Read(Vec<u8>),
    Unread(String),
}

/// The layers stacked so far: the nodes that matter (everything in the
/// added layers; only the databases' directories in the base's) with the
/// layer each came from.
#[derive(Default)]
struct Stack {
    nodes: BTreeMap<String, (usize, Node)>,
    dbs: BTreeMap<String, (usize, Db)>,
    db_bytes: u64,
}

/// Reads the image's layers, bottom first, `count` of them, each opened by
/// `open(i)` as its blob (compressed or not); those from `base_layers` up
/// are the build's own, whose files are listed. `what(i)` names layer `i`
/// in errors.
pub fn scan<'a>(
    count: usize,
    base_layers: usize,
    mut open: impl FnMut(usize) -> Result<Box<dyn Read + 'a>>,
    what: impl Fn(usize) -> String,
) -> Result<Contents> {
    let mut stack = Stack::default();
    let mut warnings = Vec::new();
    for i in 0..count {
        let layer_error = |source| Error::SbomLayer {
            layer: what(i),
            source,
        };
        let mut input = BufReader::with_capacity(1 << 20, open(i)?);
        let kind = Compression::detect(input.fill_buf().map_err(layer_error)?);
        let stream = decoder(input, kind).map_err(layer_error)?;
        stack
            .apply_layer(stream, i, i >= base_layers, &mut warnings)
            .map_err(layer_error)?;
    }
    let packages = stack.packages(&mut warnings);
    let files = stack.added_files(base_layers);
    Ok(Contents {
        packages,
        files,
        warnings,
    })
}

/// Makes the SBOM of the assembled `image`, whose first `base_layers`
/// layers are its base's, and attaches it ([`crate::oci::attach_sbom`]).
/// Returns what could not be read, each line saying so.
pub fn attach(
    image: &mut crate::oci::Image,
    base_layers: usize,
    tag: &str,
    epoch: u64,
) -> Result<Vec<String>> {
    let layers = image.layers.clone();
    let blobs = &image.blobs;
    let contents = scan(
        layers.len(),
        base_layers,
        |i| {
            let path = blobs.path_of(&layers[i].blob.digest);
            let file = std::fs::File::open(&path).map_err(Error::io("opening", &path))?;
            Ok(Box::new(file))
        },
        |i| layers[i].blob.digest.clone(),
    )?;
    let subject = Subject {
        name: tag,
        digest: &image.manifest.digest,
        epoch,
    };
    let document = document(&contents, &subject)?;
    crate::oci::attach_sbom(image, &document, tag)?;
    Ok(contents
        .warnings
        .into_iter()
        .map(|w| format!("SBOM: {w}"))
        .collect())
}

impl Stack {
    fn apply_layer(
        &mut self,
        stream: impl Read,
        layer: usize,
        added: bool,
        warnings: &mut Vec<String>,
    ) -> io::Result<()> {
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let Some(path) = normalize(&entry.path_bytes()) else {
                continue;
            };
            let (dir, base) = match path.rsplit_once('/') {
                Some((dir, base)) => (dir, base),
                None => ("", path.as_str()),
            };
            if base == ".wh..wh..opq" {
                self.remove_under(dir, layer);
                continue;
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                let hidden = join(dir, hidden);
                self.remove_under(&hidden, layer);
                self.remove(&hidden, layer);
                continue;
            }
            let kind = entry.header().entry_type();
            if !kind.is_dir() {
                // A file over a directory: what was under it is gone.
                self.remove_under(&path, layer + 1);
            }
            let tracked = added || DB_ANCESTORS.contains(&path.as_str()) || is_db(&path);
            if !tracked {
                // A base layer's file replacing a database's directory
                // still hides what was under it (done just above).
                self.nodes.remove(&path);
                self.dbs.remove(&path);
                continue;
            }
            let node = match kind {
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut read = Vec::new();
                    if is_db(&path) {
                        let (db, bytes) = self.read_db(&mut entry)?;
                        self.dbs.insert(path.clone(), (layer, db));
                        read = bytes;
                    }
                    if added {
                        Node::File(Some(digests(&read, &mut entry)?))
                    } else {
                        Node::File(None)
                    }
                }
                tar::EntryType::Link => {
                    // Same contents as the entry it links to, when we have it.
                    let target = entry.link_name_bytes().and_then(|t| normalize(&t));
                    match target.and_then(|t| self.nodes.get(&t).cloned()) {
                        Some((_, node @ Node::File(_))) => node,
                        _ => Node::Other("a hardlink"),
                    }
                }
                tar::EntryType::Symlink => Node::Other("a symlink"),
                _ => Node::Other("not a regular file"),
            };
            if is_db(&path) && !matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
            {
                let what = match kind {
                    tar::EntryType::Directory => "a directory",
                    tar::EntryType::Link => "a hardlink",
                    tar::EntryType::Symlink => "a symlink",
                    _ => "not a regular file",
                };
                self.dbs
                    .insert(path.clone(), (layer, Db::Unread(format!("it is {what}"))));
            }
            if self.nodes.len() >= MAX_PATHS && !self.nodes.contains_key(&path) {
                warnings.push(format!(
                    "the layers add more than {MAX_PATHS} paths: the rest are not listed"
                ));
                warnings.dedup();
                continue;
            }
            self.nodes.insert(path, (layer, node));
        }
        Ok(())
    }

    /// Reads a database file, bounded by [`MAX_DB_SIZE`] and
    /// [`MAX_DB_TOTAL`]; also returns the bytes read, kept or not.
    fn read_db(&mut self, entry: &mut impl Read) -> io::Result<(Db, Vec<u8>)> {
        let left = MAX_DB_TOTAL.saturating_sub(self.db_bytes);
        let limit = MAX_DB_SIZE.min(left);
        let mut bytes = Vec::new();
        entry.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            let why = if limit < MAX_DB_SIZE {
                format!("the package databases are over {MAX_DB_TOTAL} bytes together")
            } else {
                format!("it is over {MAX_DB_SIZE} bytes")
            };
            return Ok((Db::Unread(why), bytes));
        }
        self.db_bytes += bytes.len() as u64;
        Ok((Db::Read(bytes.clone()), bytes))
    }

    /// Drops `path` when a lower layer than `layer` made it.
    fn remove(&mut self, path: &str, layer: usize) {
        if self.nodes.get(path).is_some_and(|(l, _)| *l < layer) {
            self.nodes.remove(path);
        }
        if self.dbs.get(path).is_some_and(|(l, _)| *l < layer) {
            self.dbs.remove(path);
        }
    }

    /// Drops what lower layers than `layer` made under `dir` (not `dir`).
    fn remove_under(&mut self, dir: &str, layer: usize) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let under = |path: &String| path.starts_with(&prefix) && path.len() > prefix.len();
        let lower = |l: &usize| *l < layer;
        self.nodes.retain(|path, (l, _)| !(under(path) && lower(l)));
        self.dbs.retain(|path, (l, _)| !(under(path) && lower(l)));
    }

    /// The packages of every database still in the image.
    fn packages(&self, warnings: &mut Vec<String>) -> Vec<Package> {
        for dir in DB_DIRS {
            let what = match self.nodes.get(dir) {
                Some((_, Node::Other(what))) => what,
                Some((_, Node::File(_))) => "a file",
                Some((_, Node::Dir)) | None => continue,
            };
            warnings.push(format!(
                "`/{dir}` is {what}, not a directory: the package database in it is not read"
            ));
        }
        let mut packages = BTreeSet::new();
        for (path, (_, db)) in &self.dbs {
            let shown = format!("/{path}");
            if let Some(ancestor) = self.non_dir_ancestor(path) {
                warnings.push(format!(
                    "`{shown}` is under `/{ancestor}`, which is not a directory: not read"
                ));
                continue;
            }
            let bytes = match db {
                Db::Read(bytes) => bytes,
                Db::Unread(why) => {
                    warnings.push(format!("`{shown}`: {why}: not read"));
                    continue;
                }
            };
            let text = String::from_utf8_lossy(bytes);
            let (found, skipped) = if path == APK_INSTALLED {
                parse_apk(&text, &shown)
            } else {
                parse_dpkg(&text, &shown, path != DPKG_STATUS)
            };
            let key = if path == APK_INSTALLED {
                "P:"
            } else {
                "Package:"
            };
            if found.is_empty() && !text.trim().is_empty() && !text.contains(key) {
                warnings.push(format!(
                    "`{shown}` has no `{key}` line: not a package database"
                ));
            }
            if skipped > 0 {
                warnings.push(format!(
                    "`{shown}`: {skipped} entries without a well-formed name, version or architecture were left out"
                ));
            }
            packages.extend(found);
        }
        dedup_packages(packages)
    }

    fn non_dir_ancestor(&self, path: &str) -> Option<&str> {
        DB_ANCESTORS.into_iter().find(|a| {
            path.starts_with(&format!("{a}/"))
                && self
                    .nodes
                    .get(*a)
                    .is_some_and(|(_, node)| *node != Node::Dir)
        })
    }

    fn added_files(&self, base_layers: usize) -> Vec<AddedFile> {
        self.nodes
            .iter()
            .filter(|(_, (layer, _))| *layer >= base_layers)
            .filter_map(|(path, (_, node))| match node {
                Node::File(Some((size, sha1, sha256))) => Some(AddedFile {
                    path: path.clone(),
                    size: *size,
                    sha1: sha1.clone(),
                    sha256: sha256.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

/// One package per kind, name, version and architecture (the same one in
/// `status` and in `status.d/` is listed once).
fn dedup_packages(packages: BTreeSet<Package>) -> Vec<Package> {
    let mut out: Vec<Package> = Vec::new();
    for p in packages {
        if let Some(last) = out.last()
            && (last.kind, &last.name, &last.version, &last.arch)
                == (p.kind, &p.name, &p.version, &p.arch)
        {
            continue;
        }
        out.push(p);
    }
    out
}

fn is_db(path: &str) -> bool {
    path == DPKG_STATUS
        || path == APK_INSTALLED
        || path.strip_prefix(DPKG_STATUS_D).is_some_and(|rest| {
            rest.strip_prefix('/').is_some_and(|name| {
                !name.is_empty() && !name.contains('/') && !name.ends_with(".md5sums")
            })
        })
}

/// A tar entry's name relative to the root (`./a/b/` → `a/b`); `None` for
/// the root itself and for names with `..`, which no runtime unpacks.
fn normalize(name: &[u8]) -> Option<String> {
    let name = String::from_utf8_lossy(name);
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Size, SHA-1 and SHA-256 of `read` (what was already read of a file)
/// followed by what `entry` has left.
fn digests(read: &[u8], entry: &mut impl Read) -> io::Result<(u64, String, String)> {
    let (mut sha1, mut sha256) = (Sha1::new(), Sha256::new());
    sha1.update(read);
    sha256.update(read);
    let mut size = read.len() as u64;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha1.update(&buf[..n]);
        sha256.update(&buf[..n]);
        size += n as u64;
    }
    Ok((
        size,
        hex::encode(sha1.finalize()),
        hex::encode(sha256.finalize()),
    ))
}

/// The paragraphs of a deb822 file: the fields of each, continuation lines
/// dropped (none of the fields read here has them).
fn paragraphs(text: &str, separator: char) -> Vec<BTreeMap<&str, &str>> {
    let mut out = Vec::new();
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !fields.is_empty() {
                out.push(std::mem::take(&mut fields));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((key, value)) = line.split_once(separator) {
            fields.entry(key).or_insert(value.trim());
        }
    }
    if !fields.is_empty() {
        out.push(fields);
    }
    out
}

/// dpkg's `status` (packages whose `Status` says installed), or one of
/// distroless' `status.d/` files (no `Status`: all installed). Returns the
/// packages and how many paragraphs were malformed.
fn parse_dpkg(text: &str, source: &str, status_d: bool) -> (Vec<Package>, usize) {
    let mut found = Vec::new();
    let mut skipped = 0;
    for fields in paragraphs(text, ':') {
        match fields.get("Status") {
            Some(status) if status.split_whitespace().nth(2) != Some("installed") => continue,
            None if !status_d => continue,
            _ => {}
        }
        let package = well_formed(&fields, "Package", "Version", "Architecture").map(
            |(name, version, arch)| Package {
                kind: Kind::Deb,
                name,
                version,
                arch: Some(arch),
                license: None,
                source: source.to_string(),
            },
        );
        match package {
            Some(p) => found.push(p),
            None => skipped += 1,
        }
    }
    (found, skipped)
}

/// apk's `installed`: `P:` name, `V:` version, `A:` architecture, `L:`
/// license, one paragraph per package.
fn parse_apk(text: &str, source: &str) -> (Vec<Package>, usize) {
    let mut found = Vec::new();
    let mut skipped = 0;
    for fields in paragraphs(text, ':') {
        let license = fields
            .get("L")
            .filter(|l| !l.is_empty() && l.len() <= MAX_LICENSE && !l.contains(char::is_control))
            .map(|l| l.to_string());
        match well_formed(&fields, "P", "V", "A") {
            Some((name, version, arch)) => found.push(Package {
                kind: Kind::Apk,
                name,
                version,
                arch: Some(arch),
                license,
                source: source.to_string(),
            }),
            None => skipped += 1,
        }
    }
    (found, skipped)
}

/// The name, version and architecture fields, when each is there and made
/// of the characters package managers allow (no spaces, no control or
/// escape characters: they end up on terminals and in PURLs).
fn well_formed(
    fields: &BTreeMap<&str, &str>,
    name: &str,
    version: &str,
    arch: &str,
) -> Option<(String, String, String)> {
    let field = |key: &str, extra: &str| {
        let value = *fields.get(key)?;
        let ok = !value.is_empty()
            && value.len() <= MAX_FIELD
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || extra.contains(c));
        ok.then(|| value.to_string())
    };
    Some((
        field(name, "+.-_")?,
        field(version, "+.-_~:")?,
        field(arch, "-_")?,
    ))
}

/// Percent-encodes all but the unreserved characters (RFC 3986), as the
/// PURL spec asks of each component.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// The image the document describes.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// Its tag (`localhost/cradle/app:latest`).
    pub name: &'a str,
    /// `sha256:…` of its manifest.
    pub digest: &'a str,
    /// `SOURCE_DATE_EPOCH`: the document's creation time.
    pub epoch: u64,
}

/// The SPDX 2.3 JSON document of `contents`: the image as the package the
/// document describes, which contains each database's packages and each
/// added file. The same contents and subject give the same bytes: sorted
/// lists, sorted keys, the time from `SOURCE_DATE_EPOCH`, the namespace
/// from the image digest.
pub fn document(contents: &Contents, subject: &Subject) -> Result<Vec<u8>> {
    use serde_json::{Value, json};
    let image_id = "SPDXRef-Image";
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": subject.name,
        "versionInfo": subject.digest,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": oci_purl(subject.name, subject.digest),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let mut contains = |id: &str| {
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    };
    for (n, p) in contents.packages.iter().enumerate() {
        let id = format!(
            "SPDXRef-Package-{}-{}-{}",
            p.kind.name(),
            id_part(&p.name),
            n + 1
        );
        let (declared, comment) = match p.license.as_deref().map(license_expression) {
            Some(Ok(expression)) => (expression, None),
            Some(Err(text)) => ("NOASSERTION".to_string(), Some(text)),
            None => ("NOASSERTION".to_string(), None),
        };
        let mut package = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("installed, as listed in {}", p.source),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl(),
            }],
        });
        if let Some(text) = comment {
            package["licenseComments"] = Value::String(format!("the database says: {text}"));
        }
        packages.push(package);
        contains(&id);
    }
    let mut files = Vec::new();
    for (n, f) in contents.files.iter().enumerate() {
        let id = format!("SPDXRef-File-{}", n + 1);
        files.push(json!({
            "SPDXID": id,
            "fileName": format!("./{}", f.path),
            "checksums": [
                {"algorithm": "SHA1", "checksumValue": f.sha1},
                {"algorithm": "SHA256", "checksumValue": f.sha256},
            ],
            "licenseConcluded": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        contains(&id);
    }
    let hex = subject.digest.trim_start_matches("sha256:");
    let doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.name,
        "documentNamespace": format!(
            "https://cradle.invalid/spdx/{}/sha256-{hex}",
            id_part(subject.name)
        ),
        "creationInfo": {
            "created": crate::oci::rfc3339(subject.epoch),
            "creators": [format!("Tool: cradle-builder-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "files": files,
        "relationships": relationships,
    });
    // serde_json's maps are sorted by key (no `preserve_order` here).
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(|source| Error::Json {
        what: "the SBOM",
        source,
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `pkg:oci/NAME@DIGEST?repository_url=REPO&tag=TAG` for a tag
/// `REPO[:TAG]`.
fn oci_purl(name: &str, digest: &str) -> String {
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (name, None),
    };
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let mut purl = format!(
        "pkg:oci/{}@{}?repository_url={}",
        percent_encode(last),
        percent_encode(digest),
        percent_encode(repo)
    );
    if let Some(tag) = tag {
        purl += &format!("&tag={}", percent_encode(tag));
    }
    purl
}

/// `text` with every character an SPDX identifier may not have (it allows
/// letters, digits, `.` and `-`) made a `-`.
fn id_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// An SPDX license expression from a database's license text: taken as it
/// is when it reads as one (identifiers joined by AND, OR, WITH, in
/// parentheses), a bare list of identifiers (apk writes `MIT BSD-2-Clause`)
/// joined with AND; anything else is returned as the error, for a comment.
fn license_expression(text: &str) -> std::result::Result<String, String> {
    let spaced = text.replace('(', " ( ").replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let is_op = |t: &str| matches!(t, "AND" | "OR" | "WITH");
    let is_id = |t: &str| {
        !is_op(t)
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '+')
            && t != "("
            && t != ")"
    };
    if !tokens.is_empty() && tokens.iter().all(|t| is_id(t)) {
        return Ok(tokens.join(" AND "));
    }
    // id (op id)*, with balanced parentheses around sub-expressions.
    let mut depth = 0i32;
    let mut want_operand = true;
    for t in &tokens {
        match *t {
            "(" if want_operand => depth += 1,
            ")" if !want_operand && depth > 0 => depth -= 1,
            t if want_operand && is_id(t) => want_operand = false,
            t if !want_operand && is_op(t) => want_operand = true,
            _ => return Err(text.to_string()),
        }
    }
    if want_operand || depth != 0 {
        return Err(text.to_string());
    }
    Ok(tokens.join(" ").replace("( ", "(").replace(" )", ")"))
}

/// A package line of `builder inspect`, from an SPDX document: kind, name,
/// version and PURL of each package other than the image.
pub fn summary(document: &[u8]) -> std::result::Result<Vec<[String; 3]>, serde_json::Error> {
    let doc: serde_json::Value = serde_json::from_slice(document)?;
    let mut lines = Vec::new();
    for p in doc["packages"].as_array().into_iter().flatten() {
        if p["SPDXID"] == "SPDXRef-Image" {
            continue;
        }
        let text = |v: &serde_json::Value| printable(v.as_str().unwrap_or("?"));
        let purl = p["externalRefs"]
            .as_array()
            .and_then(|refs| refs.iter().find(|r| r["referenceType"] == "purl"))
            .map_or_else(|| "?".to_string(), |r| text(&r["referenceLocator"]));
        lines.push([text(&p["name"]), text(&p["versionInfo"]), purl]);
    }
    Ok(lines)
}

/// `text` without control characters (an attached document may come from
/// elsewhere; its strings go to a terminal).
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_installed_packages_from_dpkg_status() {
        let status = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n continued\n\nPackage: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\nPackage: bad name\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n";
        let (found, skipped) = parse_dpkg(status, "/var/lib/dpkg/status", false);
        assert_eq!(skipped, 1);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].purl(),
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
        );
    }

    #[test]
    fn reads_apk_installed_with_licenses() {
        let db = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\nF:lib\nR:ld-musl-x86_64.so.1\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\nL:GPL-2.0-only\n";
        let (found, skipped) = parse_apk(db, "/lib/apk/db/installed");
        assert_eq!(skipped, 0);
        let names: Vec<_> = found.iter().map(|p| p.purl()).collect();
        assert_eq!(
            names,
            [
                "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
                "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64"
            ]
        );
        assert_eq!(found[0].license.as_deref(), Some("MIT"));
    }

    #[test]
    fn license_texts_become_expressions_or_comments() {
        let cases = [
            ("MIT", Ok("MIT")),
            ("MIT BSD-2-Clause", Ok("MIT AND BSD-2-Clause")),
            (
                "GPL-2.0-or-later AND (MIT OR Apache-2.0)",
                Ok("GPL-2.0-or-later AND (MIT OR Apache-2.0)"),
            ),
            (
                "GPL-2.0 WITH Classpath-exception-2.0",
                Ok("GPL-2.0 WITH Classpath-exception-2.0"),
            ),
            ("MIT AND", Err("MIT AND")),
            ("(MIT", Err("(MIT")),
            (
                "Public Domain, see COPYING",
                Err("Public Domain, see COPYING"),
            ),
        ];
        for (text, want) in cases {
            let want = want.map(str::to_string).map_err(str::to_string);
            assert_eq!(license_expression(text), want, "{text}");
        }
    }

    /// A layer: (name, kind, contents or link target), kind `f` file,
    /// `d` directory, `l` symlink, `h` hardlink.
    fn layer(entries: &[(&str, char, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            let (kind, size) = match kind {
                'f' => (tar::EntryType::Regular, data.len()),
                'd' => (tar::EntryType::Directory, 0),
                'l' => (tar::EntryType::Symlink, 0),
                _ => (tar::EntryType::Link, 0),
            };
            h.set_entry_type(kind);
            h.set_size(size as u64);
            if size == 0 && !data.is_empty() {
                h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
            }
            let data: &[u8] = if size == 0 { &[] } else { data };
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn scan_layers(layers: &[Vec<u8>], base_layers: usize) -> Contents {
        scan(
            layers.len(),
            base_layers,
            |i| Ok(Box::new(std::io::Cursor::new(layers[i].clone()))),
            |i| format!("layer {i}"),
        )
        .unwrap()
    }

    const STATUS: &[u8] =
        b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36\n";

    fn names(contents: &Contents) -> Vec<String> {
        contents.packages.iter().map(Package::purl).collect()
    }

    #[test]
    fn a_whiteout_in_a_later_layer_removes_a_database() {
        let base = layer(&[("var/lib/dpkg/status", 'f', STATUS)]);
        let found = scan_layers(std::slice::from_ref(&base), 1);
        assert_eq!(names(&found), ["pkg:deb/debian/libc6@2.36?arch=amd64"]);
        let whiteout = layer(&[("var/lib/dpkg/.wh.status", 'f', b"")]);
        assert!(
            scan_layers(&[base.clone(), whiteout], 1)
                .packages
                .is_empty()
        );
        let opaque = layer(&[("var/lib/dpkg/.wh..wh..opq", 'f', b"")]);
        assert!(scan_layers(&[base.clone(), opaque], 1).packages.is_empty());
        let parent_gone = layer(&[("var/lib/.wh.dpkg", 'f', b"")]);
        assert!(
            scan_layers(&[base.clone(), parent_gone], 1)
                .packages
                .is_empty()
        );
        // A file where the directory was hides what was under it.
        let replaced = layer(&[("var/lib/dpkg", 'f', b"not a directory")]);
        assert!(scan_layers(&[base, replaced], 2).packages.is_empty());
    }

    #[test]
    fn a_database_rewritten_in_a_later_layer_is_the_one_read() {
        let base = layer(&[("var/lib/dpkg/status", 'f', STATUS)]);
        let newer = STATUS
            .iter()
            .copied()
            .chain(b"\nPackage: curl\nStatus: install ok installed\nArchitecture: amd64\nVersion: 8.0\n".iter().copied())
            .collect::<Vec<u8>>();
        let top = layer(&[("var/lib/dpkg/status", 'f', &newer)]);
        let found = scan_layers(&[base, top], 1);
        assert_eq!(
            names(&found),
            [
                "pkg:deb/debian/curl@8.0?arch=amd64",
                "pkg:deb/debian/libc6@2.36?arch=amd64"
            ]
        );
        // The added layer's status file is listed as a file the build added.
        let files: Vec<_> = found.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(files, ["var/lib/dpkg/status"]);
        assert_eq!(found.files[0].sha256, hex::encode(Sha256::digest(&newer)));
    }

    #[test]
    fn a_symlinked_database_is_reported_not_followed() {
        for (name, target) in [
            ("var/lib/dpkg/status", "/var/lib/dpkg/status"),
            ("var/lib/dpkg/status.d/libc6", "../../../../etc/passwd"),
            ("lib/apk/db/installed", "/lib/apk/db/installed"),
        ] {
            let found = scan_layers(&[layer(&[(name, 'l', target.as_bytes())])], 1);
            assert!(found.packages.is_empty(), "{name}");
            assert_eq!(
                found.warnings,
                [format!("`/{name}`: it is a symlink: not read")]
            );
        }
        let found = scan_layers(&[layer(&[("var/lib/dpkg/status", 'd', b"")])], 1);
        assert_eq!(
            found.warnings,
            ["`/var/lib/dpkg/status`: it is a directory: not read"]
        );
        let found = scan_layers(
            &[layer(&[
                ("etc/passwd", 'f', b"root"),
                ("var/lib/dpkg/status", 'h', b"etc/passwd"),
            ])],
            1,
        );
        assert_eq!(
            found.warnings,
            ["`/var/lib/dpkg/status`: it is a hardlink: not read"]
        );
        // The database's directory a symlink to the host's.
        let found = scan_layers(&[layer(&[("var/lib/dpkg", 'l', b"/var/lib/dpkg")])], 1);
        assert!(found.packages.is_empty());
        assert_eq!(
            found.warnings,
            [
                "`/var/lib/dpkg` is a symlink, not a directory: the package database in it is not read"
            ]
        );
        // A database written through a symlinked directory of a lower layer.
        let lower = layer(&[("var", 'l', b"/host")]);
        let upper = layer(&[("var/lib/dpkg/status", 'f', STATUS)]);
        let found = scan_layers(&[lower, upper], 2);
        assert!(found.packages.is_empty());
        assert_eq!(
            found.warnings,
            ["`/var/lib/dpkg/status` is under `/var`, which is not a directory: not read"]
        );
    }

    #[test]
    fn hostile_fields_are_left_out_with_a_warning() {
        let status = b"Package: \x1b]0;owned\x07\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n\nPackage: ok\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1 2\n\nPackage: good\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n";
        let found = scan_layers(&[layer(&[("var/lib/dpkg/status", 'f', status)])], 1);
        assert_eq!(names(&found), ["pkg:deb/debian/good@1?arch=amd64"]);
        assert_eq!(
            found.warnings,
            [
                "`/var/lib/dpkg/status`: 2 entries without a well-formed name, version or architecture were left out"
            ]
        );
    }

    #[test]
    fn distroless_status_d_files_are_read_and_their_md5sums_skipped() {
        let base = layer(&[
            (
                "var/lib/dpkg/status.d/libc6",
                'f',
                b"Package: libc6\nArchitecture: amd64\nVersion: 2.36\n",
            ),
            ("var/lib/dpkg/status.d/libc6.md5sums", 'f', b"0123  lib/x\n"),
            (
                "var/lib/dpkg/status.d/base",
                'f',
                b"Package: base-files\nArchitecture: amd64\nVersion: 12.4\n",
            ),
            ("var/lib/dpkg/status", 'f', STATUS),
        ]);
        let found = scan_layers(&[base], 1);
        assert_eq!(
            names(&found),
            [
                "pkg:deb/debian/base-files@12.4?arch=amd64",
                "pkg:deb/debian/libc6@2.36?arch=amd64"
            ]
        );
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    }

    #[test]
    fn hardlinks_in_added_layers_have_their_targets_digests() {
        let top = layer(&[("app/a", 'f', b"same"), ("app/b", 'h', b"app/a")]);
        let found = scan_layers(&[top], 0);
        assert_eq!(found.files.len(), 2);
        assert_eq!(found.files[0].sha256, found.files[1].sha256);
        assert_eq!(found.files[1].path, "app/b");
    }

    /// Database text from fragments real files have, random field values
    /// and random bytes: reading it never panics, and what it lists has
    /// only the characters package names, versions and PURLs allow.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn fragment() -> impl Strategy<Value = Vec<u8>> {
            let key = prop::sample::select(vec![
                "Package",
                "Version",
                "Architecture",
                "Status",
                "P",
                "V",
                "A",
                "L",
                "C",
                " ",
            ]);
            let value = prop::collection::vec(any::<u8>(), 0..24);
            prop_oneof![
                (key, value).prop_map(|(k, v)| {
                    let mut line = format!("{k}:").into_bytes();
                    line.extend(v);
                    line.push(b'\n');
                    line
                }),
                Just(b"Status: install ok installed\n".to_vec()),
                Just(b"\n".to_vec()),
                prop::collection::vec(any::<u8>(), 0..64),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(testkit::fuzz::cases(256)))]
            #[test]
            fn databases_never_panic_and_list_only_clean_fields(
                parts in prop::collection::vec(fragment(), 0..40),
                which in 0usize..3,
            ) {
                let text: Vec<u8> = parts.concat();
                let name = ["var/lib/dpkg/status", "var/lib/dpkg/status.d/x", "lib/apk/db/installed"][which];
                let found = scan_layers(&[layer(&[(name, 'f', &text)])], 1);
                for p in &found.packages {
                    let purl = p.purl();
                    prop_assert!(purl.bytes().all(|b| b.is_ascii_graphic()), "{purl}");
                    for field in [&p.name, &p.version] {
                        prop_assert!(!field.is_empty() && field.len() <= MAX_FIELD);
                        prop_assert!(field.bytes().all(|b| b.is_ascii_graphic()), "{field:?}");
                    }
                    if let Some(l) = &p.license {
                        prop_assert!(!l.contains(char::is_control));
                    }
                }
                let subject = Subject { name: "localhost/x:1", digest: "sha256:00", epoch: 0 };
                let doc = document(&found, &subject).unwrap();
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&doc).is_ok());
            }
        }
    }

    #[test]
    fn normalizes_entry_names() {
        assert_eq!(
            normalize(b"./var/lib/dpkg/status").as_deref(),
            Some(DPKG_STATUS)
        );
        assert_eq!(normalize(b"/var//lib/").as_deref(), Some("var/lib"));
        assert_eq!(normalize(b"./"), None);
        assert_eq!(normalize(b"var/../../etc/passwd"), None);
    }

    #[test]
    fn knows_the_database_files() {
        assert!(is_db("var/lib/dpkg/status"));
        assert!(is_db("var/lib/dpkg/status.d/libc6"));
        assert!(!is_db("var/lib/dpkg/status.d/libc6.md5sums"));
        assert!(!is_db("var/lib/dpkg/status.d/x/y"));
        assert!(!is_db("var/lib/dpkg/status-old"));
        assert!(is_db("lib/apk/db/installed"));
    }

    #[test]
    fn oci_purl_of_a_tag() {
        assert_eq!(
            oci_purl("localhost/cradle/app:latest", "sha256:ab"),
            "pkg:oci/app@sha256%3Aab?repository_url=localhost%2Fcradle%2Fapp&tag=latest"
        );
        assert_eq!(
            oci_purl("localhost:5000/app", "sha256:ab"),
            "pkg:oci/app@sha256%3Aab?repository_url=localhost%3A5000%2Fapp"
        );
    }
}
