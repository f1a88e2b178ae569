//! Safe unpacking: a corpus of hostile archives is refused with the entry
//! named, nothing appears outside the target, and ordinary archives keep
//! modes, links and times.

use crate::support::{Tar, tree};
use builder::unpack::{self, Options};
use builder::{Error, Refusal};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A scratch directory holding `target/` and, next to it, `outside/` with
/// one file in it: what a hostile archive would like to reach.
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), "secret").unwrap();
        Scene { dir }
    }
    fn target(&self) -> std::path::PathBuf {
        self.dir.path().join("target")
    }
    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }
    fn extract(&self, archive: &[u8], opts: &Options) -> builder::Result<unpack::Stats> {
        let file = self.dir.path().join("archive");
        std::fs::write(&file, archive).unwrap();
        let result = unpack::extract_file(&file, &self.target(), opts);
        std::fs::remove_file(&file).unwrap();
        result
    }
    /// Nothing but `target/` and the untouched `outside/secret`.
    fn assert_outside_untouched(&self) {
        let mut top: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        top.sort();
        assert!(
            top == ["outside", "target"] || top == ["outside"],
            "{top:?}"
        );
        assert_eq!(tree(&self.outside()), ["secret"]);
        assert_eq!(
            std::fs::read_to_string(self.outside().join("secret")).unwrap(),
            "secret"
        );
        let meta = std::fs::metadata(self.outside().join("secret")).unwrap();
        assert_eq!(meta.nlink(), 1, "something hardlinked the secret");
    }
}

fn refused(result: builder::Result<unpack::Stats>) -> (std::path::PathBuf, Refusal) {
    match result {
        Err(Error::Refused { entry, reason }) => (entry, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn refuses_absolute_name() {
    let scene = Scene::new();
    let evil = scene.outside().join("evil");
    let archive = Tar::new()
        .file("ok", b"ok")
        .file(evil.to_str().unwrap(), b"x")
        .bytes();
    let (entry, reason) = refused(scene.extract(&archive, &Options::default()));
    assert_eq!(
        (entry.as_path(), reason),
        (evil.as_path(), Refusal::Absolute)
    );
    scene.assert_outside_untouched();
}

#[test]
fn refuses_dotdot() {
    let scene = Scene::new();
    let archive = Tar::new()
        .dir("a/", 0o755)
        .file("a/../../outside/evil", b"x")
        .bytes();
    let (entry, reason) = refused(scene.extract(&archive, &Options::default()));
    assert_eq!(
        (entry.as_path(), reason),
        (Path::new("a/../../outside/evil"), Refusal::DotDot)
    );
    scene.assert_outside_untouched();
}

#[test]
fn refuses_symlink_parent_escape() {
    let scene = Scene::new();
    let outside = scene.outside();
    for (link, name) in [
        (outside.to_str().unwrap(), "link/evil"),
        ("../outside", "link/evil"),
    ] {
        let archive = Tar::new().symlink("link", link).file(name, b"x").bytes();
        let (entry, reason) = refused(scene.extract(&archive, &Options::default()));
        assert_eq!(
            (entry.as_path(), reason),
            (Path::new(name), Refusal::SymlinkParent)
        );
        scene.assert_outside_untouched();
    }
    // Deeper: the symlink is a middle component and the rest must be created.
    let archive = Tar::new()
        .symlink("l", "../outside")
        .file("l/new/dir/evil", b"x")
        .bytes();
    let (entry, reason) = refused(scene.extract(&archive, &Options::default()));
    assert_eq!(
        (entry.as_path(), reason),
        (Path::new("l/new/dir/evil"), Refusal::SymlinkParent)
    );
    scene.assert_outside_untouched();
}

#[test]
fn refuses_hardlink_to_outside() {
    let scene = Scene::new();
    let secret = scene.outside().join("secret");
    let cases = [
        Tar::new().hardlink("h", secret.to_str().unwrap()).bytes(),
        Tar::new().hardlink("h", "../outside/secret").bytes(),
        Tar::new()
            .symlink("s", "../outside")
            .hardlink("h", "s/secret")
            .bytes(),
    ];
    for archive in cases {
        let (entry, reason) = refused(scene.extract(&archive, &Options::default()));
        assert_eq!(entry, Path::new("h"));
        assert!(matches!(reason, Refusal::LinkOutside(_)), "{reason:?}");
        scene.assert_outside_untouched();
    }
}

#[test]
fn refuses_device_when_not_allowed() {
    let scene = Scene::new();
    let archive = Tar::new().char_device("dev/mem", 1, 1).bytes();
    let opts = Options {
        allow_devices: false,
        ..Options::default()
    };
    let (entry, reason) = refused(scene.extract(&archive, &opts));
    assert_eq!(
        (entry.as_path(), reason),
        (Path::new("dev/mem"), Refusal::Device)
    );
    assert!(!scene.target().join("dev/mem").exists());
}

#[test]
fn refuses_truncated_gzip() {
    let scene = Scene::new();
    let big: Vec<u8> = (0..400_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let gz = Tar::new().file("big", &big).file("after", b"x").gzip();
    let err = scene
        .extract(&gz[..gz.len() / 2], &Options::default())
        .unwrap_err();
    assert!(matches!(err, Error::Archive { .. }), "{err:?}");
    assert!(!scene.target().join("after").exists());
}

#[test]
fn replaces_a_planted_symlink_instead_of_writing_through_it() {
    let scene = Scene::new();
    let archive = Tar::new()
        .symlink("x", "../outside/secret")
        .file("x", b"inside")
        .bytes();
    scene.extract(&archive, &Options::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(scene.target().join("x")).unwrap(),
        "inside"
    );
    scene.assert_outside_untouched();
}

#[test]
fn no_file_appears_outside_the_target() {
    let scene = Scene::new();
    let outside = scene.outside();
    let corpus = [
        Tar::new()
            .file(outside.join("evil").to_str().unwrap(), b"x")
            .bytes(),
        Tar::new().file("../outside/evil", b"x").bytes(),
        Tar::new().file("./a/../../outside/evil", b"x").bytes(),
        Tar::new()
            .symlink("l", outside.to_str().unwrap())
            .file("l/evil", b"x")
            .bytes(),
        Tar::new()
            .symlink("l", "..")
            .file("l/outside/evil", b"x")
            .bytes(),
        Tar::new()
            .symlink("l", "../outside")
            .dir("l/evil/", 0o755)
            .bytes(),
        Tar::new()
            .symlink("l", "../outside")
            .symlink("l/evil", "/")
            .bytes(),
        Tar::new()
            .symlink("l", "../outside")
            .hardlink("l/evil", "l")
            .bytes(),
        Tar::new().hardlink("evil", "../outside/secret").bytes(),
        Tar::new()
            .symlink("s", "../outside")
            .hardlink("evil", "s/secret")
            .bytes(),
    ];
    for archive in &corpus {
        let result = scene.extract(archive, &Options::default());
        assert!(matches!(result, Err(Error::Refused { .. })), "{result:?}");
    }
    scene.assert_outside_untouched();
}

#[test]
fn keeps_modes_links_and_times() {
    let scene = Scene::new();
    let archive = Tar::new()
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .file_mode("bin/tool", 0o4755, b"#!/bin/sh\n")
        .hardlink("bin/again", "bin/tool")
        .symlink("bin/sh", "/bin/tool")
        .dir("ro/", 0o555)
        .file("ro/inside", b"x")
        .dir("tmp/", 0o1777)
        .file("implied/parent/file", b"y")
        .gzip();
    let stats = scene.extract(&archive, &Options::default()).unwrap();
    assert_eq!((stats.files, stats.hardlinks, stats.symlinks), (3, 1, 1));
    let t = scene.target();
    let mode = |p: &str| {
        std::fs::symlink_metadata(t.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/tool"), 0o4755);
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("tmp"), 0o1777);
    assert_eq!(
        std::fs::read_link(t.join("bin/sh")).unwrap(),
        Path::new("/bin/tool")
    );
    let tool = std::fs::metadata(t.join("bin/tool")).unwrap();
    assert_eq!(
        tool.ino(),
        std::fs::metadata(t.join("bin/again")).unwrap().ino()
    );
    assert_eq!(tool.mtime(), 1_000_000);
    assert_eq!(std::fs::metadata(t.join("ro")).unwrap().mtime(), 1_000_000);
    assert_eq!(std::fs::read(t.join("implied/parent/file")).unwrap(), b"y");
}

#[test]
fn applies_whiteouts() {
    let scene = Scene::new();
    let lower = Tar::new()
        .file("etc/gone", b"x")
        .file("etc/kept", b"x")
        .file("opq/old", b"x")
        .bytes();
    let upper = Tar::new()
        .file("etc/.wh.gone", b"")
        .file("opq/new", b"x")
        .file("opq/.wh..wh..opq", b"")
        .bytes();
    let opts = Options {
        whiteouts: true,
        ..Options::default()
    };
    scene.extract(&lower, &opts).unwrap();
    let stats = scene.extract(&upper, &opts).unwrap();
    assert_eq!(stats.whiteouts, 2);
    assert_eq!(
        tree(&scene.target()),
        ["etc/", "etc/kept", "opq/", "opq/new"]
    );
}

#[test]
fn unpack_command_names_the_refused_entry() {
    let scene = Scene::new();
    let file = scene.dir.path().join("evil.tar");
    std::fs::write(&file, Tar::new().file("../outside/evil", b"x").bytes()).unwrap();
    let out = std::process::Command::new(crate::support::builder_bin())
        .args([
            "unpack".as_ref(),
            file.as_os_str(),
            scene.target().as_os_str(),
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing archive entry `../outside/evil`: `..` in the name"),
        "{stderr}"
    );
    std::fs::remove_file(&file).unwrap();
    scene.assert_outside_untouched();
}

#[cfg(all(feature = "xz", feature = "zstd"))]
#[test]
fn unpacks_xz_and_zstd() {
    use std::io::Write;
    let tar = Tar::new().file("etc/hello", b"hello").bytes();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&tar).unwrap();
    let xz = xz.finish().unwrap();
    let zst = zstd::encode_all(tar.as_slice(), 3).unwrap();
    for compressed in [xz, zst] {
        let dir = tempfile::tempdir().unwrap();
        unpack::extract(compressed.as_slice(), dir.path(), &Options::default()).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("etc/hello")).unwrap(),
            b"hello"
        );
    }
}

#[test]
fn refuses_whiteouts_of_dot_and_dotdot() {
    let scene = Scene::new();
    for overlay in [false, true] {
        let opts = Options {
            whiteouts: true,
            overlay_whiteouts: overlay,
            ..Options::default()
        };
        for name in [".wh..", ".wh...", "etc/.wh..", "etc/.wh..."] {
            let archive = Tar::new().file("etc/kept", b"x").file(name, b"").bytes();
            let (entry, reason) = refused(scene.extract(&archive, &opts));
            assert_eq!(
                (entry.as_path(), reason),
                (Path::new(name), Refusal::DotDot)
            );
            assert!(scene.target().join("etc/kept").exists());
            scene.assert_outside_untouched();
        }
    }
}

#[test]
fn keeps_xattrs_but_not_overlay_ones() {
    let scene = Scene::new();
    let archive = Tar::new()
        .pax(&[
            ("SCHILY.xattr.user.cradle", b"kept"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ])
        .file("f", b"x")
        .bytes();
    scene.extract(&archive, &Options::default()).unwrap();
    let path = std::ffi::CString::new(scene.target().join("f").to_str().unwrap()).unwrap();
    let get = |name: &std::ffi::CStr| {
        let mut buf = [0u8; 64];
        // SAFETY: both strings are NUL-terminated; buf is a live buffer.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };
    let user = get(c"user.cradle");
    if !testkit::require(
        user.is_some(),
        "the filesystem of the temporary directory has no user xattrs",
    ) {
        return;
    }
    assert_eq!(user.as_deref(), Some(b"kept".as_slice()));
    assert_eq!(get(c"trusted.overlay.redirect"), None);
}

/// Everything `ls -lR` would show, plus contents and hardlink groups: name
/// → (type, mode, uid, gid, mtime, contents or link target, link group).
fn snapshot(root: &Path) -> Vec<String> {
    let mut inodes = std::collections::HashMap::new();
    let mut out = Vec::new();
    for rel in tree(root) {
        let path = root.join(rel.trim_end_matches('/'));
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let body = if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_file() {
            crate::support::sha256_hex(&std::fs::read(&path).unwrap())
        } else {
            String::new()
        };
        let next = inodes.len();
        let group = if meta.is_file() && meta.nlink() > 1 {
            *inodes.entry(meta.ino()).or_insert(next)
        } else {
            usize::MAX
        };
        let mtime = meta.mtime();
        out.push(format!(
            "{rel} {:o} {}:{} {mtime} {body} {group}",
            meta.mode(),
            meta.uid(),
            meta.gid()
        ));
    }
    out
}

#[test]
fn matches_gnu_tar_on_a_gnu_tar_archive() {
    let Some(tar) = testkit::require_tool("tar") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let deep = src.join("a".repeat(60)).join("b".repeat(60));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("long-name-file"), "deep").unwrap();
    std::fs::create_dir(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::hard_link(src.join("bin/tool"), src.join("bin/tool-again")).unwrap();
    std::os::unix::fs::symlink("tool", src.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", src.join("dangling")).unwrap();
    std::fs::create_dir(src.join("tmp")).unwrap();
    std::fs::set_permissions(src.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::create_dir(src.join("ro")).unwrap();
    std::fs::write(src.join("ro/file"), "ro").unwrap();
    std::fs::set_permissions(src.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::write(src.join("empty"), "").unwrap();
    let archive = dir.path().join("src.tar.gz");
    let status = std::process::Command::new(&tar)
        .args(["--numeric-owner", "-czf"])
        .arg(&archive)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    let status = std::process::Command::new(&tar)
        .args(["--numeric-owner", "--same-permissions", "-xzf"])
        .arg(&archive)
        .arg("-C")
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(status.success());
    let ours = dir.path().join("ours");
    unpack::extract_file(&archive, &ours, &Options::default()).unwrap();
    assert_eq!(snapshot(&ours), snapshot(&theirs));
    for d in [&src, &ours, &theirs] {
        std::fs::set_permissions(d.join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

const GIB: u64 = 1 << 30;

/// Bytes the file at `path` takes on disk.
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn sparse_entry_unpacks_sparse() {
    let scene = Scene::new();
    let data = [b'x'; 512];
    let gz = Tar::new().sparse("huge", 2 * GIB, GIB, &data).gzip();
    assert!(gz.len() < 2048, "{} bytes", gz.len());
    let stats = scene.extract(&gz, &Options::default()).unwrap();
    let path = scene.target().join("huge");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 2 * GIB);
    assert!(
        allocated(&path) < 1 << 20,
        "{} bytes allocated",
        allocated(&path)
    );
    assert_eq!(meta.mtime(), 1_000_000);
    assert_eq!(stats.size, 2 * GIB);
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(&path).unwrap();
    let mut buf = [1u8; 1024];
    file.read_exact_at(&mut buf, GIB - 512).unwrap();
    assert!(buf[..512].iter().all(|&b| b == 0));
    assert_eq!(buf[512..], data);
}

#[test]
fn refuses_a_sparse_entry_past_the_size_limit() {
    let scene = Scene::new();
    let gz = Tar::new()
        .file("first", b"x")
        .sparse("huge", 2 * GIB, 0, &[b'x'; 512])
        .gzip();
    let opts = Options {
        max_size: GIB,
        ..Options::default()
    };
    let err = scene.extract(&gz, &opts).unwrap_err();
    let Error::TooLarge {
        archive,
        entry,
        limit,
    } = &err
    else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert_eq!(
        (archive.as_path(), entry.as_path(), *limit),
        (
            scene.dir.path().join("archive").as_path(),
            Path::new("huge"),
            GIB
        )
    );
    assert_eq!(
        err.to_string(),
        format!(
            "refusing archive `{}`: entry `huge` takes its files past the limit of {GIB} bytes",
            archive.display()
        )
    );
    assert!(!scene.target().join("huge").exists());
    scene.assert_outside_untouched();
}

#[test]
fn refuses_a_bomb_whose_files_add_up_past_the_limit() {
    // 64 × 1 MiB of zeros, gzipped 100 to 1: a bomb in miniature.
    let scene = Scene::new();
    let zeros = vec![0u8; 1 << 20];
    let mut tar = Tar::new();
    for i in 0..64 {
        tar.file(&format!("zeros/{i}"), &zeros);
    }
    let gz = tar.gzip();
    let opts = Options {
        max_size: 10 << 20,
        ..Options::default()
    };
    let err = scene.extract(&gz, &opts).unwrap_err();
    assert!(
        matches!(&err, Error::TooLarge { entry, limit, .. } if entry == Path::new("zeros/10") && *limit == 10 << 20),
        "{err:?}"
    );
    assert!(!scene.target().join("zeros/10").exists());
    // Exactly at the limit is allowed.
    let scene = Scene::new();
    let opts = Options {
        max_size: 64 << 20,
        ..Options::default()
    };
    assert_eq!(scene.extract(&gz, &opts).unwrap().size, 64 << 20);
}

#[test]
fn refuses_an_archive_past_the_entry_limit() {
    let scene = Scene::new();
    let mut tar = Tar::new();
    for i in 0..11 {
        tar.file(&format!("empty{i}"), b"");
    }
    let opts = Options {
        max_entries: 10,
        ..Options::default()
    };
    let err = scene.extract(&tar.bytes(), &opts).unwrap_err();
    assert!(
        matches!(&err, Error::TooManyEntries { limit: 10, .. }),
        "{err:?}"
    );
    assert!(!scene.target().join("empty10").exists());
}

#[test]
fn unpacks_a_fifo_whose_device_fields_are_blank() {
    let scene = Scene::new();
    let archive = Tar::new().fifo_blank_devices("run/pipe").bytes();
    scene.extract(&archive, &Options::default()).unwrap();
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(scene.target().join("run/pipe")).unwrap();
    assert!(meta.file_type().is_fifo(), "{meta:?}");
    assert_eq!(meta.mode() & 0o7777, 0o644);
}

#[test]
fn unpacks_fifos_from_gnu_tar_in_gnu_and_posix_formats() {
    let Some(tar) = testkit::require_tool("tar") else {
        return;
    };
    let Some(mkfifo) = testkit::require_tool("mkfifo") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("run")).unwrap();
    let status = std::process::Command::new(&mkfifo)
        .arg("-m")
        .arg("0620")
        .arg(src.join("run/pipe"))
        .status()
        .unwrap();
    assert!(status.success());
    for format in ["gnu", "posix"] {
        let archive = dir.path().join(format!("{format}.tar"));
        let status = std::process::Command::new(&tar)
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        let target = dir.path().join(format!("{format}-out"));
        unpack::extract_file(&archive, &target, &Options::default())
            .unwrap_or_else(|e| panic!("{format}: {e:#}"));
        use std::os::unix::fs::FileTypeExt;
        let meta = std::fs::symlink_metadata(target.join("run/pipe")).unwrap();
        assert!(meta.file_type().is_fifo(), "{format}: {meta:?}");
        assert_eq!(meta.mode() & 0o7777, 0o620, "{format}");
    }
}

#[test]
fn directory_keeps_its_mtime_after_whiteouts_in_it() {
    let lower = Tar::new()
        .file("etc/gone", b"x")
        .file("etc/kept", b"x")
        .file("opq/old", b"x")
        .bytes();
    let upper = Tar::new()
        .dir_mtime("etc/", 0o755, 1000)
        .file("etc/.wh.gone", b"")
        .dir_mtime("opq/", 0o755, 1000)
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"x")
        .bytes();
    let applied = Options {
        whiteouts: true,
        ..Options::default()
    };
    // As the launcher's cache unpacks a layer: each in a directory of its
    // own, whiteouts made overlayfs ones, the user namespace's opaque xattr.
    let overlay = Options {
        overlay_whiteouts: true,
        overlay_opaque_xattrs: &["user.overlay.opaque"],
        ..Options::default()
    };
    for (what, opts) in [("applied", applied), ("overlay", overlay)] {
        let scene = Scene::new();
        if what == "overlay"
            && !testkit::require(
                set_xattr(scene.dir.path(), c"user.cradle-probe"),
                "the filesystem of the temporary directory has no user xattrs",
            )
        {
            continue;
        }
        scene.extract(&lower, &opts).unwrap();
        scene.extract(&upper, &opts).unwrap();
        for dir in ["etc", "opq"] {
            let meta = std::fs::metadata(scene.target().join(dir)).unwrap();
            assert_eq!(meta.mtime(), 1000, "{what}: {dir}");
        }
        if what == "overlay" {
            use std::os::unix::fs::FileTypeExt;
            let gone = std::fs::symlink_metadata(scene.target().join("etc/gone")).unwrap();
            assert!(gone.file_type().is_char_device() && gone.rdev() == 0);
            assert_eq!(
                get_xattr(&scene.target().join("opq"), c"user.overlay.opaque").as_deref(),
                Some(b"y".as_slice())
            );
        }
    }
}

fn get_xattr(path: &Path, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated; buf is a live buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

fn set_xattr(path: &Path, name: &std::ffi::CStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: both strings are NUL-terminated; the value is a live buffer.
    unsafe { libc::lsetxattr(path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) == 0 }
}

#[test]
fn unpack_command_takes_the_size_limit_from_the_environment() {
    let scene = Scene::new();
    let file = scene.dir.path().join("big.tar");
    std::fs::write(&file, Tar::new().file("big", &[b'x'; 2048]).bytes()).unwrap();
    let out = std::process::Command::new(crate::support::builder_bin())
        .arg("unpack")
        .arg(&file)
        .arg(scene.target())
        .env("CRADLE_MAX_LAYER_SIZE", "1K")
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "builder: refusing archive `{}`: entry `big` takes its files past the limit of 1024 bytes\n",
            file.display()
        )
    );
    assert!(!scene.target().join("big").exists());
}

#[test]
fn unpacks_gnu_tar_sparse_files_sparse_and_refuses_its_pax_ones() {
    let Some(tar) = testkit::require_tool("tar") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let file = std::fs::File::create(src.join("huge")).unwrap();
    file.set_len(GIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"hello", 1 << 20).unwrap();
    for format in ["gnu", "posix"] {
        let archive = dir.path().join(format!("{format}.tar.gz"));
        let status = std::process::Command::new(&tar)
            .arg(format!("--format={format}"))
            .arg("--sparse")
            .arg("-czf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .arg("huge")
            .status()
            .unwrap();
        assert!(status.success());
        let target = dir.path().join(format!("{format}-out"));
        let result = unpack::extract_file(&archive, &target, &Options::default());
        if format == "posix" {
            let (entry, reason) = refused(result);
            assert!(entry.ends_with("huge"), "{}", entry.display());
            assert_eq!(reason, Refusal::PaxSparse);
            continue;
        }
        result.unwrap();
        let huge = target.join("huge");
        assert_eq!(std::fs::metadata(&huge).unwrap().len(), GIB);
        assert!(allocated(&huge) < 1 << 20, "{} bytes", allocated(&huge));
        let mut buf = [0; 5];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(&huge).unwrap(),
            &mut buf,
            1 << 20,
        )
        .unwrap();
        assert_eq!(&buf, b"hello");
    }
}
