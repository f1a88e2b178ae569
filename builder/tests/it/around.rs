//! Around the build: where the init comes from and what it must be, tags
//! and sources refused as the definition is read, the download cache healing
//! itself, and archives every user can read.

use crate::support::{Workspace, builder_bin, rootfs_tar_gz, sha256_hex, write_static_elf};
use builder::Error;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn tarball_def(ws: &Workspace) -> builder::ImageDef {
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    ws.def("rootfs.tar.gz", &sha256_hex(&body))
}

fn write_toml(ws: &Workspace, text: &str) -> std::path::PathBuf {
    let path = ws.dir.path().join("image.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const TARBALL_TOML: &str = "tag = \"localhost/cradle-test/around:latest\"\n[rootfs]\nsource = \"rootfs.tar.gz\"\nsha256 = \"SHA\"\n[config]\ncmd = [\"hello\"]\n";

/// `builder build` without `--init` looks where the launcher looks: here a
/// copy of the builder in `DIR/bin` finds `DIR/static/cradle-init`, as
/// `target/debug/builder` finds `target/static/cradle-init`.
#[test]
fn build_without_init_flag_finds_the_init_where_the_launcher_does() {
    let ws = Workspace::new();
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    let toml = write_toml(&ws, &TARBALL_TOML.replace("SHA", &sha256_hex(&body)));
    let target = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(target.path().join("bin")).unwrap();
    std::fs::create_dir_all(target.path().join("static")).unwrap();
    let copy = target.path().join("bin/builder");
    std::fs::copy(builder_bin(), &copy).unwrap();
    let run = |env: Option<&Path>| {
        let mut cmd = Command::new(&copy);
        cmd.arg("build")
            .arg(&toml)
            .arg("-o")
            .arg(ws.out().join("image.tar"))
            .env("CRADLE_CACHE_DIR", ws.cache())
            .env_remove("RUST_BACKTRACE");
        match env {
            Some(path) => cmd.env("CRADLE_INIT_PATH", path),
            None => cmd.env_remove("CRADLE_INIT_PATH"),
        };
        cmd.output().unwrap()
    };
    let out = run(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no static init found: tried")
            && stderr.contains(&format!(
                "`{}`",
                target.path().join("static/cradle-init").display()
            )),
        "{stderr}"
    );
    write_static_elf(&target.path().join("static/cradle-init"));
    let out = run(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // $CRADLE_INIT_PATH comes first, and is checked like the flag.
    let out = run(Some(Path::new("/etc/passwd")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), stderr.trim()),
        (
            Some(1),
            "builder: refusing init `/etc/passwd`: not an ELF file; the init must be a static executable for this machine"
        )
    );
}

#[test]
fn refuses_an_init_that_is_not_a_static_executable_and_leaves_nothing() {
    let ws = Workspace::new();
    let def = tarball_def(&ws);
    for (init, why) in [
        ("/etc/passwd", "not an ELF file"),
        ("/bin/sh", "it is dynamically linked"),
        ("/", "not a regular file"),
    ] {
        let opts = builder::Options {
            init: init.into(),
            ..ws.options("image.tar")
        };
        let err = builder::build(&def, &opts).unwrap_err();
        assert!(matches!(err, Error::NotStaticInit { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("refusing init `{init}`: {why}")),
            "{text}"
        );
        assert!(ws.files_in(&ws.out()).is_empty());
    }
    // An ELF for another machine is refused too.
    let foreign = ws.dir.path().join("foreign");
    write_static_elf(&foreign);
    let mut bytes = std::fs::read(&foreign).unwrap();
    bytes[18] = 0x28; // EM_ARM
    std::fs::write(&foreign, bytes).unwrap();
    let opts = builder::Options {
        init: foreign.clone(),
        ..ws.options("image.tar")
    };
    let text = builder::build(&def, &opts).unwrap_err().to_string();
    assert!(text.contains("built for ELF machine 40"), "{text}");
}

#[test]
fn refuses_a_tag_that_is_not_a_reference_before_building() {
    let ws = Workspace::new();
    let toml = write_toml(
        &ws,
        &TARBALL_TOML
            .replace("SHA", &"0".repeat(64))
            .replace("localhost/cradle-test/around:latest", "not a valid tag!!"),
    );
    let err = builder::ImageDef::load(&toml).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "image definition `{}`: `tag = \"not a valid tag!!\"` is not an image reference ([REGISTRY/]REPOSITORY[:TAG], lowercase)",
            toml.display()
        )
    );
    let upper = TARBALL_TOML
        .replace("SHA", &"0".repeat(64))
        .replace("cradle-test", "Cradle");
    assert!(builder::ImageDef::load(&write_toml(&ws, &upper)).is_err());
}

#[test]
fn refuses_an_unsupported_url_scheme() {
    let ws = Workspace::new();
    let toml = write_toml(
        &ws,
        &TARBALL_TOML
            .replace("SHA", &"0".repeat(64))
            .replace("rootfs.tar.gz", "ftp://example.com/rootfs.tar.gz"),
    );
    let err = builder::ImageDef::load(&toml).unwrap_err().to_string();
    assert!(
        err.contains("unsupported source scheme `ftp://` in `ftp://example.com/rootfs.tar.gz`"),
        "{err}"
    );
}

#[test]
fn accepts_an_uppercase_sha256() {
    let ws = Workspace::new();
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    let upper = sha256_hex(&body).to_ascii_uppercase();
    let toml = write_toml(&ws, &TARBALL_TOML.replace("SHA", &upper));
    let def = builder::ImageDef::load(&toml).unwrap();
    let lower = builder::build(&tarball_def(&ws), &ws.options("lower.tar")).unwrap();
    let built = builder::build(&def, &ws.options("upper.tar")).unwrap();
    let image = builder::inspect::inspect(&built.output).unwrap();
    let lower_image = builder::inspect::inspect(&lower.output).unwrap();
    // The same rootfs layer, recorded under the same (lowercase) digest.
    assert_eq!(image.layers[0].digest, lower_image.layers[0].digest);
}

#[cfg(feature = "fetch")]
#[test]
fn a_corrupt_cache_entry_is_fetched_again() {
    let body = rootfs_tar_gz();
    let server = crate::support::Server::start(body.clone());
    let ws = Workspace::new();
    let hex = sha256_hex(&body);
    let def = ws.def(&server.url("/rootfs.tar.gz"), &hex);
    let first = builder::build(&def, &ws.options("first.tar")).unwrap();
    let entry = ws.cache().join("sha256").join(&hex);
    let mut bytes = std::fs::read(&entry).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&entry, bytes).unwrap();
    let second = builder::build(&def, &ws.options("second.tar")).unwrap();
    assert_eq!(first.digest, second.digest);
    assert_eq!(server.hits("/rootfs.tar.gz"), 2);
    assert_eq!(sha256_hex(&std::fs::read(&entry).unwrap()), hex);
}

#[test]
fn archives_are_readable_by_everyone_whatever_the_umask() {
    let ws = Workspace::new();
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    let toml = write_toml(&ws, &TARBALL_TOML.replace("SHA", &sha256_hex(&body)));
    let output = ws.out().join("image.tar");
    // umask 077 as root's often is: the image must still be 0644.
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$@\"")
        .arg("sh")
        .arg(builder_bin())
        .arg("build")
        .arg(&toml)
        .arg("-o")
        .arg(&output)
        .arg("--init")
        .arg(ws.dir.path().join("init"))
        .env("CRADLE_CACHE_DIR", ws.cache())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&output).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "{mode:o}");
    assert_eq!(ws.files_in(&ws.out()), ["image.tar"]);
}
