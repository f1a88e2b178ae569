//! A `builder build` killed with SIGKILL at random moments leaves its
//! half download and its work directory behind; the next build reclaims
//! them (their flocks died with the process) and its image is whole.
#![cfg(feature = "fetch")]

use crate::support::{Tar, Workspace, builder_bin, sha256_hex};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Bytes a serve takes at least `CHUNKS * PAUSE` to send: 640 ms.
const CHUNKS: usize = 64;
const CHUNK: usize = 32 << 10;
const PAUSE: Duration = Duration::from_millis(10);

/// A rootfs whose tarball does not compress away: 2 MiB of xorshift bytes.
fn big_rootfs() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..CHUNKS * CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Tar::new()
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .file_mode("bin/hello", 0o755, b"#!/bin/sh\necho hello\n")
        .dir("var/empty/", 0o555)
        .file("noise", &noise)
        .gzip()
}

/// Serves `body` at any path, slowly (a pause between chunks), so that a
/// kill lands in the middle of the download; each request is announced on
/// the returned channel once its headers are read.
fn slow_server(body: Vec<u8>) -> (String, mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/rootfs.tar.gz", listener.local_addr().unwrap());
    let body = std::sync::Arc::new(body);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let (body, tx) = (body.clone(), tx.clone());
            // One thread per request: a killed client must not hold up the next.
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let _ = tx.send(());
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for chunk in body.chunks(CHUNK) {
                    std::thread::sleep(PAUSE);
                    if stream.write_all(chunk).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// Names in `dir` starting with `prefix`.
fn entries(dir: &Path, prefix: &str) -> Vec<String> {
    let Ok(list) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    list.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

fn build_command(ws: &Workspace, toml: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(builder_bin());
    cmd.arg("build")
        .arg(toml)
        .arg("-o")
        .arg(out)
        .arg("--init")
        .arg(ws.dir.path().join("init"))
        .arg("--cache")
        .arg(ws.cache())
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn builds_killed_at_random_moments_leave_nothing_once_one_completes() {
    let body = big_rootfs();
    let sha = sha256_hex(&body);
    let (url, requests) = slow_server(body);
    let ws = Workspace::new();
    let toml = ws.dir.path().join("image.toml");
    std::fs::write(
        &toml,
        format!(
            "tag = \"localhost/cradle-test/killed:latest\"\n[rootfs]\nsource = \"{url}\"\nsha256 = \"{sha}\"\n[config]\ncmd = [\"/bin/hello\"]\n"
        ),
    )
    .unwrap();
    let out = ws.out().join("killed.tar");
    let partials = ws.cache().join("sha256");
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut left_behind = 0;
    for round in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 300);
        let mut child = build_command(&ws, &toml, &out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Every third round waits for the request first: the kill then lands
        // inside the download, whose temporary file and work directory exist
        // and stay (the server takes 640 ms to send the body).
        let mid_download = round % 3 == 0;
        if mid_download {
            requests.recv().unwrap();
        }
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        while requests.try_recv().is_ok() {}
        let stale = entries(&partials, ".partial-").len() + entries(&ws.out(), ".cradle-").len();
        if mid_download {
            assert!(stale >= 2, "round {round}: nothing left behind to reclaim");
        }
        left_behind += stale;
        assert!(!out.exists(), "round {round}: an image from a killed build");
    }
    assert!(left_behind > 0);

    let done = build_command(&ws, &toml, &out).output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(entries(&partials, ".partial-"), Vec::<String>::new());
    assert_eq!(entries(&ws.out(), "."), Vec::<String>::new());
    assert_eq!(entries(&ws.cache().join("sha256"), ""), vec![sha.clone()]);

    // The same definition built undisturbed gives the same bytes.
    let fresh = Workspace::new();
    let expected = build_command(&fresh, &toml, &fresh.out().join("fresh.tar"))
        .output()
        .unwrap();
    assert!(expected.status.success());
    assert_eq!(done.stdout, expected.stdout);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(fresh.out().join("fresh.tar")).unwrap()
    );
}
