//! Whole builds: the same definition gives the same bytes; the epoch
//! (`SOURCE_DATE_EPOCH`) changes timestamps and what hashes them, nothing
//! else; the command line builds and inspects.

use crate::support::{Workspace, builder_bin, rootfs_tar_gz, sha256_hex};
use builder::unpack;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn host_def(ws: &Workspace) -> builder::ImageDef {
    let text = "tag = \"localhost/cradle-test/host:latest\"\n[rootfs]\nsource = \"host\"\nprograms = [\"sh\", \"ls\", \"cat\"]\n[config]\ncmd = [\"sh\"]\n[config.labels]\nb = \"2\"\na = \"1\"\nc = \"3\"\n";
    builder::ImageDef::parse(text, Path::new("image.toml"), ws.dir.path().to_path_buf()).unwrap()
}

fn tarball_def(ws: &Workspace) -> builder::ImageDef {
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    ws.def("rootfs.tar.gz", &sha256_hex(&body))
}

#[test]
fn same_definition_twice_gives_the_same_digest() {
    let ws = Workspace::new();
    for (name, def) in [("host", host_def(&ws)), ("tarball", tarball_def(&ws))] {
        let a = builder::build(&def, &ws.options(&format!("{name}-a.tar"))).unwrap();
        let b = builder::build(&def, &ws.options(&format!("{name}-b.tar"))).unwrap();
        assert_eq!(a.digest, b.digest, "{name}");
        let bytes = |p: &Path| std::fs::read(p).unwrap();
        assert!(
            bytes(&a.output) == bytes(&b.output),
            "{name}: archives differ"
        );
    }
}

/// Every entry of the archive's layers: name → (kind, mode, uid, size,
/// sha256 of the contents or link target), and name → mtime.
type Listing = (
    BTreeMap<String, (u8, u32, u64, u64, String)>,
    BTreeMap<String, u64>,
);

fn layers_of(archive: &Path) -> Listing {
    let image = builder::inspect::inspect(archive).unwrap();
    let mut files = BTreeMap::new();
    let mut mtimes = BTreeMap::new();
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut blobs = BTreeMap::new();
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        blobs.insert(name, bytes);
    }
    for layer in &image.layers {
        let gz = &blobs[&layer.entry];
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let name = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            if let Some(link) = entry.link_name_bytes() {
                bytes.extend_from_slice(&link);
            }
            let kind = h.entry_type().as_byte();
            files.insert(
                name.clone(),
                (
                    kind,
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.size().unwrap(),
                    sha256_hex(&bytes),
                ),
            );
            mtimes.insert(name, h.mtime().unwrap());
        }
    }
    (files, mtimes)
}

#[test]
fn source_date_epoch_changes_only_timestamps() {
    let ws = Workspace::new();
    let def = tarball_def(&ws);
    let epoch = 1_700_000_000;
    let zero = builder::build(&def, &ws.options("zero.tar")).unwrap();
    let later = builder::build(
        &def,
        &builder::Options {
            epoch,
            ..ws.options("later.tar")
        },
    )
    .unwrap();
    assert_ne!(zero.digest, later.digest);
    let (zero_files, zero_mtimes) = layers_of(&zero.output);
    let (later_files, later_mtimes) = layers_of(&later.output);
    assert_eq!(zero_files, later_files, "only timestamps may differ");
    assert!(zero_mtimes.values().all(|&t| t == 0), "{zero_mtimes:?}");
    // Older files keep their time; newer ones (the init, made today) are clamped.
    assert_eq!(later_mtimes["bin/hello"], 1_000_000);
    assert_eq!(later_mtimes["sbin/cradle-init"], epoch);
    let zero_image = builder::inspect::inspect(&zero.output).unwrap();
    let later_image = builder::inspect::inspect(&later.output).unwrap();
    assert_eq!(zero_image.config.config(), later_image.config.config());
    assert_eq!(
        zero_image.config.created().as_deref(),
        Some("1970-01-01T00:00:00Z")
    );
    assert_eq!(
        later_image.config.created().as_deref(),
        Some("2023-11-14T22:13:20Z")
    );
}

#[test]
fn puts_the_init_in_its_own_layer_and_in_front_of_the_entrypoint() {
    let ws = Workspace::new();
    let built = builder::build(&tarball_def(&ws), &ws.options("image.tar")).unwrap();
    let image = builder::inspect::inspect(&built.output).unwrap();
    assert_eq!(
        image.tag.as_deref(),
        Some("localhost/cradle-test/fetch:latest")
    );
    let config = image.config.config().clone().unwrap();
    assert_eq!(
        config.entrypoint().clone().unwrap(),
        ["/sbin/cradle-init", "--"]
    );
    assert_eq!(config.cmd().clone().unwrap(), ["hello"]);
    assert_eq!(image.layers.len(), 2);
    let (files, _) = layers_of(&built.output);
    let init = &files["sbin/cradle-init"];
    assert_eq!((init.1, init.2), (0o755, 0));
    // Layout completed, with the usual modes.
    assert_eq!(files["tmp"].1, 0o1777);
    assert_eq!(files["proc"].1, 0o555);
    assert_eq!(files["var/empty"].1, 0o555);
    assert!(files.contains_key("etc/passwd"));
    assert!(built.warnings.is_empty(), "{:?}", built.warnings);
}

#[test]
fn warns_when_the_command_is_not_in_the_rootfs() {
    let ws = Workspace::new();
    let mut def = tarball_def(&ws);
    def.config.cmd = vec!["/usr/bin/missing".into()];
    let built = builder::build(&def, &ws.options("image.tar")).unwrap();
    assert_eq!(
        built.warnings,
        ["the command `/usr/bin/missing` is not an executable in the rootfs"]
    );
}

#[test]
fn keeps_owners_when_root() {
    if !testkit::require(testkit::is_root(), "needs root to unpack with owners") {
        return;
    }
    let ws = Workspace::new();
    let dir = ws.dir.path().join("rootfs");
    let mut tar = crate::support::Tar::new();
    tar.file("owned", b"x");
    let mut bytes = tar.bytes();
    // uid field at offset 108 in the first header: set 1234 (octal 2322).
    bytes[108..116].copy_from_slice(b"0002322\0");
    let header = tar::Header::from_byte_slice(&bytes[..512]).clone();
    let mut header = header;
    header.set_cksum();
    bytes[..512].copy_from_slice(header.as_bytes());
    unpack::extract(bytes.as_slice(), &dir, &unpack::Options::default()).unwrap();
    assert_eq!(std::fs::metadata(dir.join("owned")).unwrap().uid(), 1234);
}

#[test]
fn command_line_builds_and_inspects() {
    let ws = Workspace::new();
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    let toml = ws.dir.path().join("image.toml");
    let text = format!(
        "tag = \"localhost/cradle-test/cli:latest\"\n[rootfs]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{}\"\n[config]\ncmd = [\"/bin/hello\"]\n",
        sha256_hex(&body)
    );
    std::fs::write(&toml, text).unwrap();
    let out = ws.out().join("cli.tar");
    let build = std::process::Command::new(builder_bin())
        .arg("build")
        .arg(&toml)
        .arg("-o")
        .arg(&out)
        .arg("--init")
        .arg(ws.dir.path().join("init"))
        .arg("--cache")
        .arg(ws.cache())
        .env_remove("RUST_BACKTRACE")
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let digest = String::from_utf8(build.stdout).unwrap();
    assert!(digest.trim().starts_with("sha256:"), "{digest}");
    let inspect = std::process::Command::new(builder_bin())
        .arg("inspect")
        .arg(&out)
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let text = String::from_utf8(inspect.stdout).unwrap();
    assert!(
        text.contains("tag:     localhost/cradle-test/cli:latest"),
        "{text}"
    );
    assert!(
        text.contains(&format!("digest:  {}", digest.trim())),
        "{text}"
    );
}

#[test]
fn every_definition_in_images_parses() {
    let images = testkit::workspace_root().join("images");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&images).unwrap() {
        let toml = entry.unwrap().path().join("image.toml");
        if toml.exists() {
            let def = builder::ImageDef::load(&toml)
                .unwrap_or_else(|e| panic!("{}: {e:#}", toml.display()));
            names.push(def.tag);
        }
    }
    names.sort();
    assert!(names.len() >= 2, "{names:?}");
}

#[test]
fn umask_does_not_change_the_image() {
    let ws = Workspace::new();
    let body = crate::support::Tar::new()
        .file("implied/dir/file", b"x")
        .gzip();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    let toml = ws.dir.path().join("image.toml");
    let text = format!(
        "tag = \"localhost/cradle-test/umask:latest\"\n[rootfs]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{}\"\n[config]\ncmd = [\"/bin/x\"]\n",
        sha256_hex(&body)
    );
    std::fs::write(&toml, text).unwrap();
    let host_toml = ws.dir.path().join("host.toml");
    std::fs::write(
        &host_toml,
        "tag = \"t\"\n[rootfs]\nsource = \"host\"\nprograms = [\"sh\"]\n",
    )
    .unwrap();
    let digest = |umask: &str, toml: &Path| {
        // The child gets the umask; this process keeps its own.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask}; exec \"$@\""))
            .arg("sh")
            .arg(builder_bin())
            .arg("build")
            .arg(toml)
            .arg("-o")
            .arg(ws.out().join(format!("{umask}.tar")))
            .arg("--init")
            .arg(ws.dir.path().join("init"))
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for toml in [&toml, &host_toml] {
        assert_eq!(
            digest("022", toml),
            digest("077", toml),
            "{}",
            toml.display()
        );
    }
}

/// Builds `body` (a rootfs tarball) with the definition of [`Workspace::def`].
fn build_tarball(ws: &Workspace, body: &[u8], output: &str) -> builder::Result<builder::Built> {
    std::fs::write(ws.dir.path().join("rootfs.tar"), body).unwrap();
    let def = ws.def("rootfs.tar", &sha256_hex(body));
    builder::build(&def, &ws.options(output))
}

/// The blobs of the image archive at `archive`, by entry name.
fn blobs_of(archive: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut blobs = BTreeMap::new();
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        blobs.insert(name, bytes);
    }
    blobs
}

#[test]
fn builds_a_rootfs_with_a_fifo_from_gnu_tar_in_gnu_and_posix_formats() {
    let Some(tar) = testkit::require_tool("tar") else {
        return;
    };
    let Some(mkfifo) = testkit::require_tool("mkfifo") else {
        return;
    };
    let ws = Workspace::new();
    let src = ws.dir.path().join("src");
    std::fs::create_dir_all(src.join("run")).unwrap();
    std::fs::write(src.join("run/file"), "x").unwrap();
    let status = std::process::Command::new(&mkfifo)
        .arg("-m")
        .arg("0600")
        .arg(src.join("run/pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    for format in ["gnu", "posix"] {
        let out = std::process::Command::new(&tar)
            .arg(format!("--format={format}"))
            .args(["--numeric-owner", "-cf", "-", "-C"])
            .arg(&src)
            .arg(".")
            .output()
            .unwrap();
        assert!(out.status.success());
        let built = build_tarball(&ws, &out.stdout, &format!("{format}.tar"))
            .unwrap_or_else(|e| panic!("{format}: {e:#}"));
        // The layer's FIFO entry has numbers in its device fields, and the
        // layer unpacks (as the launcher's cache does) to a FIFO.
        let image = builder::inspect::inspect(&built.output).unwrap();
        let blobs = blobs_of(&built.output);
        let rootfs = &blobs[&image.layers[0].entry];
        let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(rootfs.as_slice()));
        let mut fifos = 0;
        for entry in layer.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.header().entry_type() == tar::EntryType::Fifo {
                assert_eq!(entry.path().unwrap(), Path::new("run/pipe"), "{format}");
                assert_eq!(entry.header().device_major().unwrap(), Some(0), "{format}");
                assert_eq!(entry.header().device_minor().unwrap(), Some(0), "{format}");
                fifos += 1;
            }
        }
        assert_eq!(fifos, 1, "{format}");
        let unpacked = ws.dir.path().join(format!("{format}-unpacked"));
        unpack::extract(rootfs.as_slice(), &unpacked, &unpack::Options::default()).unwrap();
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::symlink_metadata(unpacked.join("run/pipe")).unwrap();
        assert!(meta.file_type().is_fifo(), "{format}: {meta:?}");
        assert_eq!(meta.mode() & 0o7777, 0o600, "{format}");
    }
}

#[test]
fn refuses_a_rootfs_past_the_size_limit_and_leaves_nothing_behind() {
    // A few hundred bytes of gzip asking for a file 1 GiB past the limit.
    let ws = Workspace::new();
    let huge = unpack::DEFAULT_MAX_SIZE + (1 << 30);
    let body = crate::support::Tar::new()
        .file("etc/os-release", b"ID=test\n")
        .sparse("huge", huge, 0, &[])
        .gzip();
    let err = build_tarball(&ws, &body, "image.tar").unwrap_err();
    assert!(
        matches!(
            &err,
            builder::Error::TooLarge { archive, entry, limit }
                if archive == &ws.dir.path().join("rootfs.tar")
                    && entry == Path::new("huge")
                    && *limit == unpack::DEFAULT_MAX_SIZE
        ),
        "{err:?}"
    );
    assert_eq!(crate::support::tree(&ws.out()), Vec::<String>::new());
}

#[test]
fn services_land_in_the_image_where_the_init_reads_them() {
    let ws = Workspace::new();
    let text = "tag = \"localhost/cradle-test/services:latest\"\n[rootfs]\nsource = \"host\"\n\
                programs = [\"sh\", \"sleep\"]\n[config]\ncmd = [\"sh\"]\n\
                [services.web]\ncommand = [\"sleep\", \"1000\"]\nready = { tcp = 8080 }\n\
                [services.setup]\ntype = \"oneshot\"\ncommand = [\"sh\", \"-c\", \"true\"]\n";
    let def = builder::ImageDef::parse(text, Path::new("image.toml"), ws.dir.path().to_path_buf())
        .unwrap();
    let built = builder::build(&def, &ws.options("image.tar")).unwrap();
    let (files, _) = layers_of(&built.output);
    for (name, text) in def.service_files() {
        let entry = &files[&format!("etc/cradle/services.d/{name}.toml")];
        assert_eq!((entry.1, entry.2), (0o644, 0), "{name}");
        assert_eq!(entry.4, sha256_hex(text.as_bytes()), "{name}");
    }
}

/// `images/hello-app`, as `cargo xtask build-image hello-app` builds it
/// (the real static init, images/default built first as its base), run by
/// the launcher: the copied script reads the copied config.
#[test]
fn the_example_application_image_builds_and_runs() {
    let Some(init) = testkit::require_artifact("static/cradle-init", "cargo xtask build-init")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let toml = testkit::workspace_root().join("images/hello-app/image.toml");
    let def = builder::ImageDef::load(&toml).unwrap();
    let opts = builder::Options {
        init,
        output: dir.path().join("hello-app.tar"),
        fetch: builder::fetch::Options::new(dir.path().join("cache")),
        epoch: 0,
        run: Default::default(),
    };
    let built = builder::build(&def, &opts).unwrap();
    let image = builder::inspect::inspect(&built.output).unwrap();
    assert_eq!(
        image.layers.len(),
        3,
        "default's rootfs, the copies, the init"
    );
    let config = image.config.config().clone().unwrap();
    assert_eq!(config.cmd().clone().unwrap(), ["/app/hello.sh"]);
    assert_eq!(config.working_dir().as_deref(), Some("/app"));
    if !testkit::require(testkit::is_root(), "the launcher runs images as root here") {
        return;
    }
    let Some(launcher) = testkit::require_artifact("debug/launcher", "cargo build -p launcher")
    else {
        return;
    };
    let out = std::process::Command::new(&launcher)
        .arg("run")
        .arg(&built.output)
        .env("CRADLE_ROOT", dir.path().join("root"))
        .env_remove("RUST_BACKTRACE")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Hello, cradle! (pid 2, in /app)\n"
    );
}
