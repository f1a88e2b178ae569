//! `launcher run DIR`: an OCI image layout directory runs like its archive
//! (what the builder hands the launcher for each `[[run]]` step), with the
//! same digest checks, and a blob swapped for a symlink to a host file is
//! refused, not followed.

mod common;

use common::Kit;
use std::process::Command;

/// The default image's archive unpacked into a directory.
fn layout_dir(kit: &Kit) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(&kit.image)
        .arg("-C")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    dir
}

/// The largest blob: the image's biggest layer.
fn biggest_blob(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path()
}

#[test]
fn an_oci_layout_directory_runs_like_its_archive() {
    let Some(kit) = Kit::new() else { return };
    let dir = layout_dir(&kit);
    let out = kit
        .cmd(&[])
        .arg(dir.path())
        .args(["/probe", "report"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(common::value(&common::report(&out), "uid"), "0");
}

#[test]
fn a_layout_directory_whose_layer_is_a_symlink_out_is_refused() {
    let Some(kit) = Kit::new() else { return };
    let dir = layout_dir(&kit);
    let blob = biggest_blob(dir.path());
    // The same bytes, elsewhere: only the symlink makes it wrong.
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(&blob, outside.path()).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(outside.path(), &blob).unwrap();
    let out = kit.cmd(&[]).arg(dir.path()).arg("true").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains(&*dir.path().to_string_lossy()), "{stderr}");
    // And a layer changed in place fails its digest check.
    std::fs::remove_file(&blob).unwrap();
    let mut bytes = std::fs::read(outside.path()).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let out = kit.cmd(&[]).arg(dir.path()).arg("true").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{stderr}");
    assert!(stderr.contains("sha256"), "{stderr}");
}
