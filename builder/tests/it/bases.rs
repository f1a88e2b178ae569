//! `[base]`: what an image starts from. An OCI or `docker save` archive
//! gives its layers as they are and its settings as defaults; another
//! definition is built and used the same way; `scratch` gives nothing;
//! host programs go on any base; `[rootfs]` still reads as before.

use crate::support::{Tar, Workspace, docker_save, rootfs_tar_gz, sha256_hex};
use std::path::{Path, PathBuf};

/// Writes `DIR/images/NAME/image.toml` and returns its path.
pub fn definition(dir: &Path, name: &str, text: &str) -> PathBuf {
    let folder = dir.join("images").join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let toml = folder.join("image.toml");
    std::fs::write(&toml, text).unwrap();
    toml
}

fn load(toml: &Path) -> builder::ImageDef {
    builder::ImageDef::load(toml).unwrap()
}

fn settings(image: &builder::inspect::Inspection) -> oci_spec::image::Config {
    image.config.config().clone().unwrap()
}

/// A `docker save` archive in the build context of `images/app`.
fn saved_base(ws: &Workspace) -> (PathBuf, Vec<u8>) {
    let layer = Tar::new()
        .dir("app/", 0o755)
        .file_mode("app/run", 0o755, b"#!/bin/sh\necho run\n")
        .bytes();
    let folder = ws.dir.path().join("images/app");
    std::fs::create_dir_all(&folder).unwrap();
    let saved = folder.join("saved.tar");
    docker_save(
        &saved,
        &layer,
        serde_json::json!({
            "Env": ["PATH=/app:/bin", "MODE=base", "KEEP=1"],
            "WorkingDir": "/app",
            "User": "7:7",
            "Entrypoint": ["/app/run"],
            "Cmd": ["--help"],
            "Labels": {"from": "base"},
        }),
        "saved:v1",
    );
    (saved, layer)
}

#[test]
fn a_docker_save_base_gives_its_layers_and_its_settings_as_defaults() {
    let ws = Workspace::new();
    let (_, layer) = saved_base(&ws);
    let toml = definition(
        ws.dir.path(),
        "app",
        "tag = \"localhost/cradle-test/app:1\"\n[base]\nsource = \"saved.tar\"\n[config]\nenv = [\"MODE=app\"]\n",
    );
    let built = builder::build(&load(&toml), &ws.options("app.tar")).unwrap();
    let image = builder::inspect::inspect(&built.output).unwrap();
    assert_eq!(image.layers.len(), 2, "the base's layer, then the init");
    assert_eq!(
        image.layers[0].digest,
        format!("sha256:{}", sha256_hex(&layer))
    );
    let config = settings(&image);
    assert_eq!(
        config.entrypoint().clone().unwrap(),
        ["/sbin/cradle-init", "--", "/app/run"]
    );
    assert_eq!(config.cmd().clone().unwrap(), ["--help"]);
    assert_eq!(
        config.env().clone().unwrap(),
        ["PATH=/app:/bin", "KEEP=1", "MODE=app"]
    );
    assert_eq!(config.working_dir().as_deref(), Some("/app"));
    assert_eq!(config.user().as_deref(), Some("7:7"));
    assert_eq!(config.labels().clone().unwrap()["from"], "base");
    // The base's history line stays, ours follows.
    let history: Vec<_> = image
        .config
        .history()
        .clone()
        .unwrap()
        .iter()
        .map(|h| h.created_by().clone().unwrap_or_default())
        .collect();
    assert_eq!(
        history,
        ["docker save test", "cradle builder: /sbin/cradle-init"]
    );

    // An entrypoint of the definition's drops the base's cmd with it.
    let toml = definition(
        ws.dir.path(),
        "app",
        "tag = \"localhost/cradle-test/app:2\"\n[base]\nsource = \"saved.tar\"\n[config]\nentrypoint = [\"/bin/other\"]\n",
    );
    let built = builder::build(&load(&toml), &ws.options("app2.tar")).unwrap();
    let config = settings(&builder::inspect::inspect(&built.output).unwrap());
    assert_eq!(
        config.entrypoint().clone().unwrap(),
        ["/sbin/cradle-init", "--", "/bin/other"]
    );
    assert_eq!(config.cmd().clone(), None);
}

#[test]
fn a_base_archive_with_a_wrong_sha256_is_refused() {
    let ws = Workspace::new();
    let (saved, _) = saved_base(&ws);
    let good = sha256_hex(&std::fs::read(&saved).unwrap());
    for (sha, ok) in [(good.clone(), true), ("0".repeat(64), false)] {
        let toml = definition(
            ws.dir.path(),
            "app",
            &format!(
                "tag = \"localhost/cradle-test/app:1\"\n[base]\nsource = \"saved.tar\"\nsha256 = \"{sha}\"\n[config]\ncmd = [\"x\"]\n"
            ),
        );
        let result = builder::build(&load(&toml), &ws.options("app.tar"));
        assert_eq!(result.is_ok(), ok, "{result:?}");
    }
}

#[test]
fn another_definition_as_base_is_built_and_its_init_replaced() {
    let ws = Workspace::new();
    let body = rootfs_tar_gz();
    let base_toml = definition(
        ws.dir.path(),
        "base",
        &format!(
            "tag = \"localhost/cradle-test/base:1\"\n[rootfs]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{}\"\n[config]\ncmd = [\"hello\"]\nenv = [\"PATH=/bin\"]\n",
            sha256_hex(&body)
        ),
    );
    std::fs::write(ws.dir.path().join("images/base/rootfs.tar.gz"), &body).unwrap();
    let app_toml = definition(
        ws.dir.path(),
        "app",
        "tag = \"localhost/cradle-test/app:1\"\n[base]\nsource = \"images/base\"\n[config]\nworkdir = \"/etc\"\n",
    );
    let base = builder::build(&load(&base_toml), &ws.options("base.tar")).unwrap();
    let app = builder::build(&load(&app_toml), &ws.options("app.tar")).unwrap();
    let base_image = builder::inspect::inspect(&base.output).unwrap();
    let app_image = builder::inspect::inspect(&app.output).unwrap();
    // The same two layers: the base's rootfs, and one init (not two).
    assert_eq!(app_image.layers.len(), 2);
    assert_eq!(app_image.layers[0].digest, base_image.layers[0].digest);
    assert_eq!(app_image.layers[1].digest, base_image.layers[1].digest);
    let config = settings(&app_image);
    assert_eq!(
        config.entrypoint().clone().unwrap(),
        ["/sbin/cradle-init", "--"]
    );
    assert_eq!(config.cmd().clone().unwrap(), ["hello"]);
    assert_eq!(config.working_dir().as_deref(), Some("/etc"));
    assert_eq!(ws.files_in(&ws.out()), ["app.tar", "base.tar"]);
}

#[test]
fn definitions_based_on_each_other_are_refused() {
    let ws = Workspace::new();
    let a = definition(
        ws.dir.path(),
        "a",
        "tag = \"localhost/a:1\"\n[base]\nsource = \"images/b\"\n",
    );
    definition(
        ws.dir.path(),
        "b",
        "tag = \"localhost/b:1\"\n[base]\nsource = \"images/a\"\n",
    );
    let err = builder::build(&load(&a), &ws.options("a.tar")).unwrap_err();
    assert!(err.to_string().contains("nest deeper than 8"), "{err}");
    assert!(
        ws.files_in(&ws.out()).is_empty(),
        "{:?}",
        ws.files_in(&ws.out())
    );
}

#[test]
fn scratch_with_host_programs_is_those_programs_and_the_init() {
    let ws = Workspace::new();
    let toml = definition(
        ws.dir.path(),
        "tiny",
        "tag = \"localhost/cradle-test/tiny:1\"\n[base]\nsource = \"scratch\"\nprograms = [\"true\"]\n[config]\ncmd = [\"/bin/true\"]\n",
    );
    let built = builder::build(&load(&toml), &ws.options("tiny.tar")).unwrap();
    let image = builder::inspect::inspect(&built.output).unwrap();
    assert_eq!(image.layers.len(), 2, "the programs, then the init");
    let mut names = Vec::new();
    let mut outer = tar::Archive::new(std::fs::File::open(&built.output).unwrap());
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == image.layers[0].entry {
            let mut inner = tar::Archive::new(flate2::read::GzDecoder::new(&mut entry));
            for file in inner.entries().unwrap() {
                names.push(file.unwrap().path().unwrap().display().to_string());
            }
        }
    }
    assert!(names.contains(&"bin/true".to_string()), "{names:?}");
}

#[test]
fn rootfs_and_base_tables_read_the_same() {
    let sha = "a".repeat(64);
    let parse = |table: &str| {
        builder::ImageDef::parse(
            &format!("tag = \"t\"\n[{table}]\nsource = \"r.tar.gz\"\nsha256 = \"{sha}\"\n"),
            Path::new("image.toml"),
            PathBuf::from("/defs"),
        )
        .unwrap()
    };
    assert_eq!(parse("rootfs"), parse("base"));
    // Both at once is one too many.
    assert!(
        builder::ImageDef::parse(
            "tag = \"t\"\n[rootfs]\nsource = \"scratch\"\n[base]\nsource = \"scratch\"\n",
            Path::new("image.toml"),
            PathBuf::from("/defs"),
        )
        .is_err()
    );
}

/// A base archive is untrusted: a layer whose bytes no longer hash to its
/// digest is refused while it is copied, and nothing is left behind.
#[test]
fn a_base_archive_with_a_tampered_layer_is_refused() {
    let ws = Workspace::new();
    let (saved, _) = saved_base(&ws);
    let mut bytes = std::fs::read(&saved).unwrap();
    let at = bytes
        .windows(8)
        .position(|w| w == b"echo run")
        .expect("the layer's file is in the archive");
    bytes[at] = b'E';
    std::fs::write(&saved, bytes).unwrap();
    let toml = definition(
        ws.dir.path(),
        "app",
        "tag = \"localhost/cradle-test/app:1\"\n[base]\nsource = \"saved.tar\"\n",
    );
    let err = builder::build(&load(&toml), &ws.options("app.tar")).unwrap_err();
    assert!(
        matches!(err, builder::Error::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(
        ws.files_in(&ws.out()).is_empty(),
        "{:?}",
        ws.files_in(&ws.out())
    );
}
