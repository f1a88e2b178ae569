//! `[[copy]]`: files of the build context into the image, as one layer.
//! What is copied and how (dest, owner, mode, exclude, globs), then the
//! hostile context: each attack is refused or contained, and a refused
//! build leaves nothing; then reproducibility with a base archive.

use crate::bases::definition;
use crate::support::{Tar, Workspace, builder_bin, docker_save};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// An entry of a layer: kind, mode, uid, gid, mtime, contents or link target.
type Entry = (char, u32, u64, u64, u64, Vec<u8>);

/// The entries of layer `index` of the image at `archive`.
fn layer_entries(archive: &Path, index: usize) -> BTreeMap<String, Entry> {
    let image = builder::inspect::inspect(archive).unwrap();
    let mut outer = tar::Archive::new(std::fs::File::open(archive).unwrap());
    let mut out = BTreeMap::new();
    for entry in outer.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() != image.layers[index].entry {
            continue;
        }
        let mut inner = tar::Archive::new(flate2::read::GzDecoder::new(&mut entry));
        for file in inner.entries().unwrap() {
            let mut file = file.unwrap();
            let h = file.header().clone();
            let mut data = Vec::new();
            file.read_to_end(&mut data).unwrap();
            if let Some(link) = file.link_name_bytes() {
                data = link.to_vec();
            }
            out.insert(
                file.path().unwrap().display().to_string(),
                (
                    h.entry_type().as_byte() as char,
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mtime().unwrap(),
                    data,
                ),
            );
        }
    }
    out
}

fn write(path: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `images/app` on `scratch` with `copies` (TOML tables), its context
/// filled by `fill`.
fn app(ws: &Workspace, copies: &str) -> builder::ImageDef {
    let toml = definition(
        ws.dir.path(),
        "app",
        &format!(
            "tag = \"localhost/cradle-test/app:1\"\n[base]\nsource = \"scratch\"\n{copies}[config]\ncmd = [\"/app/run.sh\"]\n"
        ),
    );
    builder::ImageDef::load(&toml).unwrap()
}

fn context(ws: &Workspace) -> std::path::PathBuf {
    ws.dir.path().join("images/app")
}

#[test]
fn copies_files_directories_and_globs_with_owner_mode_and_exclude() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    write(&ctx.join("run.sh"), "#!/bin/sh\necho hi\n", 0o755);
    write(&ctx.join("conf/a.conf"), "a=1\n", 0o600);
    write(&ctx.join("conf/b.conf"), "b=2\n", 0o644);
    write(&ctx.join("conf/notes.txt"), "no\n", 0o644);
    write(&ctx.join("site/index.html"), "<p>hi</p>\n", 0o644);
    write(&ctx.join("site/cache/big.bin"), "cache\n", 0o644);
    std::os::unix::fs::symlink("index.html", ctx.join("site/home.html")).unwrap();
    let def = app(
        &ws,
        "[[copy]]\nsrc = \"run.sh\"\ndest = \"/app/\"\n\
         [[copy]]\nsrc = \"conf/*.conf\"\ndest = \"/etc/app\"\nowner = \"100:101\"\nmode = \"0640\"\n\
         [[copy]]\nsrc = \"site\"\ndest = \"/srv/www\"\nexclude = [\"cache\"]\n",
    );
    let built = builder::build(&def, &ws.options("app.tar")).unwrap();
    let entries = layer_entries(&built.output, 0);
    let names: Vec<&str> = entries.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "app",
            "app/run.sh",
            "etc",
            "etc/app",
            "etc/app/a.conf",
            "etc/app/b.conf",
            "srv",
            "srv/www",
            "srv/www/home.html",
            "srv/www/index.html",
        ]
    );
    let run = &entries["app/run.sh"];
    assert_eq!((run.0, run.1, run.2, run.3), ('0', 0o755, 0, 0));
    assert_eq!(run.5, b"#!/bin/sh\necho hi\n");
    let conf = &entries["etc/app/a.conf"];
    assert_eq!((conf.1, conf.2, conf.3), (0o640, 100, 101));
    assert_eq!(entries["srv/www/home.html"].0, '2');
    assert_eq!(entries["srv/www/home.html"].5, b"index.html");
    // Mtimes clamped to the epoch (0 here), whatever the files say.
    assert!(entries.values().all(|e| e.4 == 0));
}

/// Builds `def` and expects a refusal that contains `what`, leaving nothing
/// in the output directory.
fn refused(ws: &Workspace, def: &builder::ImageDef, what: &str) {
    let err = builder::build(def, &ws.options("app.tar")).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(what), "`{what}` not in: {text}");
    assert!(
        ws.files_in(&ws.out()).is_empty(),
        "{:?}",
        ws.files_in(&ws.out())
    );
}

#[test]
fn a_symlink_out_of_the_context_is_refused_as_a_source() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    std::fs::create_dir_all(&ctx).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", ctx.join("passwd")).unwrap();
    let def = app(&ws, "[[copy]]\nsrc = \"passwd\"\ndest = \"/x\"\n");
    refused(&ws, &def, "is a symlink; sources are not followed");
}

#[test]
fn a_symlinked_directory_on_the_way_is_refused() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    std::fs::create_dir_all(&ctx).unwrap();
    std::os::unix::fs::symlink("/etc", ctx.join("etc")).unwrap();
    let def = app(&ws, "[[copy]]\nsrc = \"etc/passwd\"\ndest = \"/x\"\n");
    refused(&ws, &def, "is a symlink; sources are not followed");
    let def = app(&ws, "[[copy]]\nsrc = \"e*/passwd\"\ndest = \"/x/\"\n");
    refused(&ws, &def, "is a symlink; sources are not followed");
}

/// Inside a copied directory, a symlink to the host's `/etc/shadow` is
/// copied as that symlink: the host file's contents never enter the image.
#[test]
fn a_symlink_inside_a_copied_directory_stays_a_symlink() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    write(&ctx.join("data/ok"), "ok\n", 0o644);
    std::os::unix::fs::symlink("/etc/shadow", ctx.join("data/shadow")).unwrap();
    let def = app(&ws, "[[copy]]\nsrc = \"data\"\ndest = \"/data\"\n");
    let built = builder::build(&def, &ws.options("app.tar")).unwrap();
    let entries = layer_entries(&built.output, 0);
    assert_eq!(entries["data/shadow"].0, '2');
    assert_eq!(entries["data/shadow"].5, b"/etc/shadow");
}

#[test]
fn dotdot_and_absolute_sources_are_refused_as_the_definition_is_read() {
    let ws = Workspace::new();
    std::fs::write(ws.dir.path().join("secret"), "secret\n").unwrap();
    for (src, what) in [
        ("../../secret", "has `..`"),
        (
            "/etc/passwd",
            "must be a path relative to the definition's folder",
        ),
    ] {
        let toml = definition(
            ws.dir.path(),
            "app",
            &format!(
                "tag = \"localhost/a:1\"\n[base]\nsource = \"scratch\"\n[[copy]]\nsrc = \"{src}\"\ndest = \"/x\"\n"
            ),
        );
        let err = builder::ImageDef::load(&toml).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
    let toml = definition(
        ws.dir.path(),
        "app",
        "tag = \"localhost/a:1\"\n[base]\nsource = \"scratch\"\n[[copy]]\nsrc = \"x\"\ndest = \"/a/../../b\"\n",
    );
    assert!(builder::ImageDef::load(&toml).is_err());
}

#[test]
fn fifos_and_devices_are_refused() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    std::fs::create_dir_all(ctx.join("dir")).unwrap();
    let fifo = ctx.join("dir/pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    // Named, or met inside a directory: refused either way, never opened
    // (opening a FIFO for reading would wait for a writer forever).
    let def = app(&ws, "[[copy]]\nsrc = \"dir/pipe\"\ndest = \"/x\"\n");
    refused(&ws, &def, "is a FIFO, socket or device");
    let def = app(&ws, "[[copy]]\nsrc = \"dir\"\ndest = \"/x\"\n");
    refused(&ws, &def, "is a FIFO, socket or device");
    std::fs::remove_file(&fifo).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let null = ctx.join("dir/null");
        let c = std::ffi::CString::new(null.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; /dev/null's numbers.
        let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        if made == 0 {
            refused(&ws, &def, "is a FIFO, socket or device");
        }
    }
}

/// A sparse file that claims more than the limit is refused before a byte
/// of it is read.
#[test]
fn files_past_the_size_limit_are_refused() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    std::fs::create_dir_all(&ctx).unwrap();
    let huge = std::fs::File::create(ctx.join("huge.bin")).unwrap();
    huge.set_len(1 << 40).unwrap();
    let toml = definition(
        ws.dir.path(),
        "app",
        "tag = \"localhost/a:1\"\n[base]\nsource = \"scratch\"\n[[copy]]\nsrc = \"huge.bin\"\ndest = \"/x\"\n",
    );
    let out = std::process::Command::new(builder_bin())
        .arg("build")
        .arg(&toml)
        .arg("-o")
        .arg(ws.out().join("app.tar"))
        .arg("--init")
        .arg(ws.dir.path().join("init"))
        .env("CRADLE_MAX_COPY_SIZE", "1M")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("huge.bin`: takes the copies past the limit of 1048576 bytes"),
        "{stderr}"
    );
    assert!(ws.files_in(&ws.out()).is_empty());
}

#[test]
fn a_source_that_matches_nothing_is_an_error() {
    let ws = Workspace::new();
    std::fs::create_dir_all(context(&ws)).unwrap();
    let def = app(&ws, "[[copy]]\nsrc = \"*.conf\"\ndest = \"/etc/\"\n");
    refused(&ws, &def, "matches nothing in the build context");
}

/// Same inputs, same digest: a base archive and copies built twice (the
/// copied files touched in between) give the same bytes; a changed copied
/// file changes the digest.
#[test]
fn archive_base_and_copies_build_reproducibly() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    let layer = Tar::new().dir("bin/", 0o755).file("bin/x", b"x\n").bytes();
    std::fs::create_dir_all(&ctx).unwrap();
    docker_save(
        &ctx.join("base.tar"),
        &layer,
        serde_json::json!({"Cmd": ["/bin/x"]}),
        "b:1",
    );
    write(&ctx.join("app/run.sh"), "#!/bin/sh\necho 1\n", 0o755);
    write(&ctx.join("app/conf.toml"), "a = 1\n", 0o644);
    let toml = definition(
        ws.dir.path(),
        "app",
        "tag = \"localhost/cradle-test/app:1\"\n[base]\nsource = \"base.tar\"\n[[copy]]\nsrc = \"app\"\ndest = \"/app\"\n",
    );
    let def = builder::ImageDef::load(&toml).unwrap();
    let opts = |name: &str| builder::Options {
        epoch: 1_700_000_000,
        run: Default::default(),
        no_init: false,
        ..ws.options(name)
    };
    let first = builder::build(&def, &opts("first.tar")).unwrap();
    // Touched: newer than the epoch, so clamped to it either way.
    std::fs::write(ctx.join("app/conf.toml"), "a = 1\n").unwrap();
    let second = builder::build(&def, &opts("second.tar")).unwrap();
    assert_eq!(first.digest, second.digest);
    assert!(std::fs::read(&first.output).unwrap() == std::fs::read(&second.output).unwrap());
    std::fs::write(ctx.join("app/conf.toml"), "a = 2\n").unwrap();
    let third = builder::build(&def, &opts("third.tar")).unwrap();
    assert_ne!(first.digest, third.digest);
    let image = builder::inspect::inspect(&third.output).unwrap();
    assert_eq!(image.layers.len(), 3, "base, copies, init");
}

/// A layer's directory entry hides the one below it: the parents a copy
/// needs are written as the base has them (`/tmp` stays 1777, a base's
/// 0700 directory stays 0700), and a parent that is a symlink in the base
/// is refused rather than replaced by a directory.
#[test]
fn parents_of_a_destination_keep_the_base_modes() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    write(&ctx.join("note"), "n\n", 0o644);
    let body = Tar::new()
        .dir("./", 0o755)
        .dir("srv/", 0o700)
        .symlink("lib64", "lib")
        .gzip();
    std::fs::write(ctx.join("rootfs.tar.gz"), &body).unwrap();
    let sha = crate::support::sha256_hex(&body);
    let toml = |dest: &str| {
        definition(
            ws.dir.path(),
            "app",
            &format!(
                "tag = \"localhost/a:1\"\n[base]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{sha}\"\n[[copy]]\nsrc = \"note\"\ndest = \"{dest}\"\n"
            ),
        )
    };
    let def = builder::ImageDef::load(&toml("/tmp/a/note")).unwrap();
    let built = builder::build(&def, &ws.options("tmp.tar")).unwrap();
    let entries = layer_entries(&built.output, 1);
    assert_eq!(entries["tmp"].1, 0o1777);
    assert_eq!(entries["tmp/a"].1, 0o755);
    let def = builder::ImageDef::load(&toml("/srv/note")).unwrap();
    let built = builder::build(&def, &ws.options("srv.tar")).unwrap();
    assert_eq!(layer_entries(&built.output, 1)["srv"].1, 0o700);
    std::fs::remove_file(&built.output).unwrap();
    std::fs::remove_file(ws.out().join("tmp.tar")).unwrap();
    let def = builder::ImageDef::load(&toml("/lib64/note")).unwrap();
    refused(&ws, &def, "`/lib64` is a symlink in the base");
    // On scratch, the usual modes.
    let def = app(&ws, "[[copy]]\nsrc = \"note\"\ndest = \"/tmp/note\"\n");
    let built = builder::build(&def, &ws.options("scratch.tar")).unwrap();
    assert_eq!(layer_entries(&built.output, 0)["tmp"].1, 0o1777);
}

/// The command check of a rootfs base sees the copies too: a command that
/// a `[[copy]]` puts in place is no warning, a missing one still is.
#[test]
fn a_copied_command_is_not_reported_missing() {
    let ws = Workspace::new();
    let ctx = context(&ws);
    write(&ctx.join("run.sh"), "#!/bin/sh\n", 0o755);
    let body = crate::support::rootfs_tar_gz();
    std::fs::write(ctx.join("rootfs.tar.gz"), &body).unwrap();
    let sha = crate::support::sha256_hex(&body);
    for (cmd, warned) in [("/app/run.sh", false), ("/app/other.sh", true)] {
        let toml = definition(
            ws.dir.path(),
            "app",
            &format!(
                "tag = \"localhost/a:1\"\n[base]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{sha}\"\n[[copy]]\nsrc = \"run.sh\"\ndest = \"/app/\"\n[config]\ncmd = [\"{cmd}\"]\n"
            ),
        );
        let def = builder::ImageDef::load(&toml).unwrap();
        let built = builder::build(&def, &ws.options("app.tar")).unwrap();
        assert_eq!(
            !built.warnings.is_empty(),
            warned,
            "{cmd}: {:?}",
            built.warnings
        );
    }
}
