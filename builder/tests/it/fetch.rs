//! Fetching against a real HTTP server on 127.0.0.1: success, a cached
//! second build, 404, a redirect, a connection dropped mid-body and a
//! wrong sha256. Each failure leaves nothing behind and names the cause.

use crate::support::{Server, Workspace, rootfs_tar_gz, sha256_hex};
use builder::Error;

#[test]
fn downloads_verifies_and_caches() {
    let body = rootfs_tar_gz();
    let server = Server::start(body.clone());
    let ws = Workspace::new();
    let def = ws.def(&server.url("/rootfs.tar.gz"), &sha256_hex(&body));
    let first = builder::build(&def, &ws.options("first.tar")).unwrap();
    let second = builder::build(&def, &ws.options("second.tar")).unwrap();
    assert_eq!(
        server.hits("/rootfs.tar.gz"),
        1,
        "the second build downloaded again"
    );
    assert_eq!(first.digest, second.digest);
    assert_eq!(
        ws.files_in(&ws.cache()),
        [format!("sha256/{}", sha256_hex(&body))]
    );
    assert_eq!(ws.files_in(&ws.out()), ["first.tar", "second.tar"]);
}

#[test]
fn follows_redirects() {
    let body = rootfs_tar_gz();
    let server = Server::start(body.clone());
    let ws = Workspace::new();
    let def = ws.def(&server.url("/redirect"), &sha256_hex(&body));
    builder::build(&def, &ws.options("image.tar")).unwrap();
    assert_eq!(
        (server.hits("/redirect"), server.hits("/rootfs.tar.gz")),
        (1, 1)
    );
}

#[test]
fn reports_404_and_leaves_nothing() {
    let server = Server::start(rootfs_tar_gz());
    let ws = Workspace::new();
    let url = server.url("/missing.tar.gz");
    let err = builder::build(&ws.def(&url, &"0".repeat(64)), &ws.options("image.tar")).unwrap_err();
    assert!(
        matches!(err, Error::HttpStatus { status: 404, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("downloading `{url}`: the server answered 404")
    );
    assert_eq!(server.hits("/missing.tar.gz"), 1, "a 404 is not retried");
    assert!(ws.files_in(&ws.cache()).is_empty());
    assert!(ws.files_in(&ws.out()).is_empty());
}

#[test]
fn retries_a_dropped_connection_then_gives_up() {
    let body = rootfs_tar_gz();
    let server = Server::start(body.clone());
    let ws = Workspace::new();
    let url = server.url("/drop");
    let opts = ws.options("image.tar");
    let err = builder::build(&ws.def(&url, &sha256_hex(&body)), &opts).unwrap_err();
    assert!(
        matches!(err, Error::Download { .. } | Error::Fetch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(server.hits("/drop") as u32, opts.fetch.attempts);
    assert!(
        ws.files_in(&ws.cache()).is_empty(),
        "{:?}",
        ws.files_in(&ws.cache())
    );
    assert!(ws.files_in(&ws.out()).is_empty());
}

#[test]
fn refuses_a_wrong_sha256_and_keeps_nothing() {
    let body = rootfs_tar_gz();
    let server = Server::start(body.clone());
    let ws = Workspace::new();
    let wrong = "ab".repeat(32);
    let url = server.url("/rootfs.tar.gz");
    let err = builder::build(&ws.def(&url, &wrong), &ws.options("image.tar")).unwrap_err();
    let actual = sha256_hex(&body);
    assert_eq!(
        err.to_string(),
        format!("sha256 of `{url}` is {actual}, the definition says {wrong}")
    );
    assert!(ws.files_in(&ws.cache()).is_empty());
    assert!(ws.files_in(&ws.out()).is_empty());
}

#[test]
fn reads_file_urls_and_paths() {
    let body = rootfs_tar_gz();
    let ws = Workspace::new();
    let path = ws.dir.path().join("rootfs.tar.gz");
    std::fs::write(&path, &body).unwrap();
    let sha = sha256_hex(&body);
    let by_url = builder::build(
        &ws.def(&format!("file://{}", path.display()), &sha),
        &ws.options("a.tar"),
    )
    .unwrap();
    let by_path = builder::build(&ws.def("rootfs.tar.gz", &sha), &ws.options("b.tar")).unwrap();
    assert_eq!(by_url.digest, by_path.digest);
    assert!(
        ws.files_in(&ws.cache()).is_empty(),
        "local files are not cached"
    );
}

#[test]
fn times_out_on_a_silent_server() {
    let body = rootfs_tar_gz();
    let server = Server::start(body.clone());
    let ws = Workspace::new();
    let url = server.url("/hang");
    let mut opts = ws.options("image.tar");
    opts.fetch.timeout = std::time::Duration::from_millis(300);
    opts.fetch.attempts = 2;
    let start = std::time::Instant::now();
    let err = builder::build(&ws.def(&url, &sha256_hex(&body)), &opts).unwrap_err();
    assert!(
        start.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(
        matches!(&err, Error::Fetch { source, .. } if source.is_timeout()),
        "{err:?}"
    );
    assert!(ws.files_in(&ws.cache()).is_empty());
    assert!(ws.files_in(&ws.out()).is_empty());
}
