//! The command line as a Unix tool: quiet when its reader goes away.

use crate::support::{Workspace, builder_bin, rootfs_tar_gz, sha256_hex};
use std::os::fd::{FromRawFd, OwnedFd};

/// A pipe whose read end is already closed: writing to it fails (EPIPE,
/// or SIGPIPE where it is not ignored).
fn pipe_without_reader() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    let ws = Workspace::new();
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    let def = ws.def("rootfs.tar.gz", &sha256_hex(&body));
    let built = builder::build(&def, &ws.options("image.tar")).unwrap();
    let out = std::process::Command::new(builder_bin())
        .arg("inspect")
        .arg(&built.output)
        .stdout(pipe_without_reader())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).as_ref()
        ),
        (Some(0), "")
    );
}

/// `builder build image.toml` from the definition's own folder: its
/// parent is "", which is the current directory, not a context named ``.
#[test]
fn a_definition_named_without_a_folder_builds_from_the_current_directory() {
    let ws = Workspace::new();
    let body = rootfs_tar_gz();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    std::fs::write(ws.dir.path().join("note.txt"), "hello\n").unwrap();
    std::fs::write(
        ws.dir.path().join("image.toml"),
        format!(
            "tag = \"localhost/t:1\"\n[base]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{}\"\n\
             [[copy]]\nsrc = \"note.txt\"\ndest = \"/note.txt\"\n",
            sha256_hex(&body)
        ),
    )
    .unwrap();
    let opts = ws.options("image.tar");
    let out = std::process::Command::new(builder_bin())
        .current_dir(ws.dir.path())
        .args(["build", "image.toml", "-o", "out.tar", "--init"])
        .arg(&opts.init)
        .env("CRADLE_CACHE_DIR", ws.dir.path().join("cache"))
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(ws.dir.path().join("out.tar").is_file());
}
