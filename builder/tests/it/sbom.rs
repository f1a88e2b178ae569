//! `--sbom`: the SPDX document lists exactly the packages of the base's
//! dpkg and apk databases and the files the build added, with SPDX 2.3's
//! required fields; the same image gives the same bytes; hostile databases
//! (a symlink to this machine's, one too big, garbage) are reported and
//! read no further; `builder inspect` prints the summary and the document.

use crate::bases::definition;
use crate::support::{Tar, Workspace, builder_bin, sha256_hex};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const DPKG_STATUS: &str = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: removed-long-ago
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: base-files
Status: install ok installed
Essential: yes
Architecture: amd64
Version: 12.4+deb12u5
";

const STATUS_D_TZDATA: &str = "\
Package: tzdata
Architecture: all
Version: 2024a-0+deb12u1
";

const APK_INSTALLED: &str = "\
C:Q1Jtb+Dw2u2vC4vlMuhrrtPDnPfhg=
P:musl
V:1.2.4-r2
A:x86_64
S:383152
I:622592
T:the musl c library (libc) implementation
L:MIT
o:musl
F:lib
R:ld-musl-x86_64.so.1

C:Q1ZaZMIMPVE7Jhm6Xk1xTNqO2FRe0=
P:busybox
V:1.36.1-r5
A:x86_64
L:GPL-2.0-only
F:bin
R:busybox
";

/// A rootfs tarball with both kinds of databases, and `extra` entries.
fn rootfs(extra: impl FnOnce(&mut Tar)) -> Vec<u8> {
    let mut tar = Tar::new();
    tar.dir("./", 0o755)
        .dir("bin/", 0o755)
        .file_mode("bin/hello", 0o755, b"#!/bin/sh\necho hello\n")
        .dir("var/", 0o755)
        .dir("var/lib/", 0o755)
        .dir("var/lib/dpkg/", 0o755)
        .dir("var/lib/dpkg/status.d/", 0o755)
        .file("var/lib/dpkg/status.d/tzdata", STATUS_D_TZDATA.as_bytes())
        .file(
            "var/lib/dpkg/status.d/tzdata.md5sums",
            b"d41d8cd9  usr/share/zoneinfo/UTC\n",
        )
        .dir("lib/", 0o755)
        .dir("lib/apk/", 0o755)
        .dir("lib/apk/db/", 0o755)
        .file("lib/apk/db/installed", APK_INSTALLED.as_bytes());
    extra(&mut tar);
    tar.gzip()
}

/// `images/app`: the tarball as its base, a file copied in, `sbom = true`.
fn app(ws: &Workspace, tarball: &[u8]) -> builder::ImageDef {
    let folder = ws.dir.path().join("images/app");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("rootfs.tar.gz"), tarball).unwrap();
    std::fs::write(folder.join("app.conf"), "greeting = hello\n").unwrap();
    let toml = definition(
        ws.dir.path(),
        "app",
        &format!(
            "tag = \"localhost/cradle-test/sbom:1\"\nsbom = true\n\
             [base]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{}\"\n\
             [[copy]]\nsrc = \"app.conf\"\ndest = \"/etc/app/\"\n\
             [config]\ncmd = [\"/bin/hello\"]\n",
            sha256_hex(tarball)
        ),
    );
    builder::ImageDef::load(&toml).unwrap()
}

fn build(ws: &Workspace, def: &builder::ImageDef, name: &str) -> (builder::Built, Value) {
    let built = builder::build(def, &ws.options(name)).unwrap();
    let image = builder::inspect::inspect(&built.output).unwrap();
    let document = image.sbom.expect("an SBOM is attached");
    (built, serde_json::from_slice(&document).unwrap())
}

fn purls(doc: &Value) -> BTreeSet<String> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"] != "SPDXRef-Image")
        .map(|p| {
            p["externalRefs"][0]["referenceLocator"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn warnings(built: &builder::Built) -> Vec<&str> {
    built
        .warnings
        .iter()
        .filter(|w| w.starts_with("SBOM: "))
        .map(String::as_str)
        .collect()
}

/// The fields SPDX 2.3 requires of a document, its packages, files and
/// relationships (spdx-spec v2.3, clauses 6 to 11), and no SPDX id twice.
fn assert_valid_spdx_2_3(doc: &Value) {
    let text = |v: &Value, what: &str| {
        assert!(
            v.as_str().is_some_and(|s| !s.is_empty()),
            "{what} missing in {doc:#}"
        )
    };
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["dataLicense"], "CC0-1.0");
    assert_eq!(doc["SPDXID"], "SPDXRef-DOCUMENT");
    text(&doc["name"], "name");
    let namespace = doc["documentNamespace"].as_str().unwrap();
    assert!(namespace.starts_with("https://") && !namespace.contains('#'));
    text(&doc["creationInfo"]["created"], "created");
    let creators = doc["creationInfo"]["creators"].as_array().unwrap();
    assert!(!creators.is_empty());
    for c in creators {
        let c = c.as_str().unwrap();
        assert!(
            ["Tool: ", "Person: ", "Organization: "]
                .iter()
                .any(|p| c.starts_with(p)),
            "{c}"
        );
    }
    let id_ok = |id: &str| {
        id.strip_prefix("SPDXRef-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
    };
    let mut ids = BTreeSet::from(["SPDXRef-DOCUMENT".to_string()]);
    for p in doc["packages"].as_array().unwrap() {
        let id = p["SPDXID"].as_str().unwrap();
        assert!(id_ok(id), "{id}");
        assert!(ids.insert(id.to_string()), "{id} twice");
        text(&p["name"], "package name");
        text(&p["downloadLocation"], "downloadLocation");
        if p["filesAnalyzed"] != false {
            assert!(p["packageVerificationCode"].is_object(), "{p}");
        }
    }
    for f in doc["files"].as_array().into_iter().flatten() {
        let id = f["SPDXID"].as_str().unwrap();
        assert!(id_ok(id), "{id}");
        assert!(ids.insert(id.to_string()), "{id} twice");
        text(&f["fileName"], "fileName");
        let algorithms: Vec<&str> = f["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["algorithm"].as_str().unwrap())
            .collect();
        assert!(algorithms.contains(&"SHA1"), "a file's SHA1 is required");
    }
    let relationships = doc["relationships"].as_array().unwrap();
    assert!(
        relationships
            .iter()
            .any(|r| r["spdxElementId"] == "SPDXRef-DOCUMENT"
                && r["relationshipType"] == "DESCRIBES"),
        "no DESCRIBES relationship"
    );
    for r in relationships {
        for end in ["spdxElementId", "relatedSpdxElement"] {
            let id = r[end].as_str().unwrap();
            assert!(ids.contains(id), "relationship to unknown `{id}`");
        }
    }
}

#[test]
fn lists_exactly_the_packages_of_the_dpkg_and_apk_databases() {
    let ws = Workspace::new();
    let tarball = rootfs(|t| {
        t.file("var/lib/dpkg/status", DPKG_STATUS.as_bytes());
    });
    let (built, doc) = build(&ws, &app(&ws, &tarball), "app.tar");
    assert_valid_spdx_2_3(&doc);
    assert_eq!(
        purls(&doc),
        BTreeSet::from(
            [
                "pkg:apk/alpine/busybox@1.36.1-r5?arch=x86_64",
                "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64",
                "pkg:deb/debian/base-files@12.4%2Bdeb12u5?arch=amd64",
                "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64",
                "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all",
            ]
            .map(String::from)
        )
    );
    assert!(warnings(&built).is_empty(), "{:?}", built.warnings);
    let musl = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "musl")
        .unwrap();
    assert_eq!(musl["licenseDeclared"], "MIT");
    assert_eq!(musl["versionInfo"], "1.2.4-r2");
    // The files the build added, not the base's, with their digests.
    let files: Vec<(&str, &str)> = doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["fileName"].as_str().unwrap(),
                f["checksums"][1]["checksumValue"].as_str().unwrap(),
            )
        })
        .collect();
    let init = std::fs::read(ws.dir.path().join("init")).unwrap();
    assert_eq!(
        files,
        [
            (
                "./etc/app/app.conf",
                sha256_hex(b"greeting = hello\n").as_str()
            ),
            ("./sbin/cradle-init", sha256_hex(&init).as_str()),
        ]
    );
    // The document is about this image.
    let image = &doc["packages"][0];
    assert_eq!(image["SPDXID"], "SPDXRef-Image");
    assert_eq!(image["versionInfo"], built.digest.as_str());
    assert!(
        doc["documentNamespace"]
            .as_str()
            .unwrap()
            .ends_with(&built.digest.replace(':', "-"))
    );
}

#[test]
fn the_same_image_gives_the_same_sbom_bytes() {
    let ws = Workspace::new();
    let tarball = rootfs(|t| {
        t.file("var/lib/dpkg/status", DPKG_STATUS.as_bytes());
    });
    let def = app(&ws, &tarball);
    let mut opts = ws.options("a.tar");
    opts.epoch = 1_700_000_000;
    let a = builder::build(&def, &opts).unwrap();
    opts.output = ws.out().join("b.tar");
    let b = builder::build(&def, &opts).unwrap();
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(
        sha256_hex(&bytes(&a.output)),
        sha256_hex(&bytes(&b.output)),
        "two builds with an SBOM differ"
    );
    let document = builder::inspect::inspect(&a.output).unwrap().sbom.unwrap();
    let doc: Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    // The image digest does not depend on the SBOM being attached.
    let mut plain = def.clone();
    plain.sbom = false;
    opts.output = ws.out().join("plain.tar");
    let c = builder::build(&plain, &opts).unwrap();
    assert_eq!(c.digest, a.digest);
    assert!(builder::inspect::inspect(&c.output).unwrap().sbom.is_none());
}

/// The rootfs's dpkg status is a symlink to this machine's: it is not
/// followed (this machine's packages would be listed), it is reported.
#[test]
fn a_status_symlinked_to_the_hosts_is_reported_not_followed() {
    let ws = Workspace::new();
    let tarball = rootfs(|t| {
        t.symlink("var/lib/dpkg/status", "/var/lib/dpkg/status");
    });
    let (built, doc) = build(&ws, &app(&ws, &tarball), "app.tar");
    let debs: Vec<String> = purls(&doc)
        .into_iter()
        .filter(|p| p.starts_with("pkg:deb/"))
        .collect();
    assert_eq!(debs, ["pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all"]);
    assert_eq!(
        warnings(&built),
        ["SBOM: `/var/lib/dpkg/status`: it is a symlink: not read"]
    );
    assert_valid_spdx_2_3(&doc);
}

#[test]
fn an_oversized_status_is_reported_and_not_read() {
    let ws = Workspace::new();
    let mut huge = DPKG_STATUS.as_bytes().to_vec();
    huge.resize(builder::sbom::MAX_DB_SIZE as usize + 1, b'\n');
    let tarball = rootfs(|t| {
        t.file("var/lib/dpkg/status", &huge);
    });
    let (built, doc) = build(&ws, &app(&ws, &tarball), "app.tar");
    assert!(!purls(&doc).iter().any(|p| p.contains("libc6")));
    assert_eq!(
        warnings(&built),
        [format!(
            "SBOM: `/var/lib/dpkg/status`: it is over {} bytes: not read",
            builder::sbom::MAX_DB_SIZE
        )]
    );
}

#[test]
fn a_garbage_database_gives_no_packages_and_a_warning() {
    let ws = Workspace::new();
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .chain(b"\n\nPackage: \x1b[2J\nVersion: 1\nArchitecture: amd64\nStatus: install ok installed\n".iter().copied())
        .collect();
    let tarball = rootfs(|t| {
        t.file("var/lib/dpkg/status", &garbage);
    });
    let (built, doc) = build(&ws, &app(&ws, &tarball), "app.tar");
    let debs: Vec<String> = purls(&doc)
        .into_iter()
        .filter(|p| p.starts_with("pkg:deb/"))
        .collect();
    assert_eq!(debs, ["pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all"]);
    let w = warnings(&built);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("SBOM: `/var/lib/dpkg/status`: ") && w[0].ends_with("were left out"),
        "{w:?}"
    );
    assert_valid_spdx_2_3(&doc);
}

#[test]
fn inspect_prints_the_package_summary_and_the_document() {
    let ws = Workspace::new();
    let tarball = rootfs(|t| {
        t.file("var/lib/dpkg/status", DPKG_STATUS.as_bytes());
    });
    let mut def = app(&ws, &tarball);
    def.sbom = false;
    let plain = builder::build(&def, &ws.options("plain.tar")).unwrap();
    // `--sbom` on the command line, over a definition without the key.
    let toml = ws.dir.path().join("images/app/image.toml");
    let text = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("sbom = true\n", "");
    std::fs::write(&toml, text).unwrap();
    let output = ws.out().join("cli.tar");
    let out = Command::new(builder_bin())
        .args(["build", "--sbom", "--init"])
        .arg(ws.dir.path().join("init"))
        .arg("--cache")
        .arg(ws.cache())
        .arg("-o")
        .arg(&output)
        .arg(&toml)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inspect = |args: &[&str], archive: &Path| {
        Command::new(builder_bin())
            .arg("inspect")
            .args(args)
            .arg(archive)
            .output()
            .unwrap()
    };
    let summary = inspect(&[], &output);
    let summary = String::from_utf8(summary.stdout).unwrap();
    let tail = &summary[summary.find("\nsbom:").expect("a summary") + 1..];
    let lines: Vec<Vec<&str>> = tail
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["sbom:", "5", "packages"]);
    assert!(
        lines[1..].contains(&vec![
            "libc6",
            "2.36-9+deb12u4",
            "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64"
        ]),
        "{tail}"
    );
    let printed = inspect(&["--sbom"], &output);
    assert!(printed.status.success());
    let attached = builder::inspect::inspect(&output).unwrap().sbom.unwrap();
    assert_eq!(printed.stdout, attached);
    // An image without one: an error naming it, nothing on stdout.
    let none = inspect(&["--sbom"], &plain.output);
    assert!(!none.status.success() && none.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        stderr.contains(&format!(
            "`{}` has no SBOM attached",
            plain.output.display()
        )),
        "{stderr}"
    );
    assert!(!summary_of(&plain.output).contains("\nsbom:"));
}

fn summary_of(archive: &Path) -> String {
    let out = Command::new(builder_bin())
        .arg("inspect")
        .arg(archive)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// The attached document is checked against its digest like any blob: one
/// changed after the build is an error, not a document shown as the
/// image's.
#[test]
fn a_tampered_sbom_is_refused() {
    let ws = Workspace::new();
    let tarball = rootfs(|t| {
        t.file("var/lib/dpkg/status", DPKG_STATUS.as_bytes());
    });
    let (built, _) = build(&ws, &app(&ws, &tarball), "app.tar");
    let mut bytes = std::fs::read(&built.output).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"SPDX-2.3")
        .expect("the document is in the archive");
    bytes[at + 5..at + 8].copy_from_slice(b"9.9");
    std::fs::write(&built.output, &bytes).unwrap();
    let err = builder::inspect::inspect(&built.output).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("sha256"), "{text}");
}
