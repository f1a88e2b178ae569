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

/// A `docker-registry` on a free port of 127.0.0.1 with its storage in
/// `dir`; None (after [`testkit::require_tool`]) when it is missing.
fn start_registry(dir: &Path) -> Option<(KillOnDrop, u16)> {
    let program = testkit::require_tool("docker-registry")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let child = Command::new(program)
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let registry = KillOnDrop(child);
    // Started when it accepts connections; bounded, not a timed assertion.
    for _ in 0..400 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((registry, port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry does not listen on port {port}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP proxy on 127.0.0.1 to `upstream` that passes the answers on
/// slowly (a pause every `CHUNK / 2` bytes), so that a pull is killed in
/// the middle of a blob; each connection is announced on the channel.
fn slow_proxy(upstream: u16) -> (u16, mpsc::Receiver<()>) {
    use std::io::Read;
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let _ = tx.send(());
            let pipe = |mut from: TcpStream, mut to: TcpStream, slow: bool| {
                move || {
                    let mut buf = vec![0; CHUNK / 2];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        if slow {
                            std::thread::sleep(PAUSE);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                }
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(pipe(client, server, false));
            std::thread::spawn(pipe(s2, c2, true));
        }
    });
    (port, rx)
}

#[test]
fn pulls_killed_at_random_moments_leave_nothing_once_one_completes() {
    let registry_dir = tempfile::tempdir().unwrap();
    let Some((_registry, port)) = start_registry(registry_dir.path()) else {
        return;
    };
    let ws = Workspace::new();
    let body = big_rootfs();
    std::fs::write(ws.dir.path().join("rootfs.tar.gz"), &body).unwrap();
    let mut opts = ws.options("pushed.tar");
    opts.output = ws.dir.path().join("pushed.tar");
    let built = builder::build(&ws.def("rootfs.tar.gz", &sha256_hex(&body)), &opts).unwrap();
    let home = ws.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let builder = |args: &[&std::ffi::OsStr]| {
        let mut cmd = Command::new(builder_bin());
        cmd.args(args)
            .env("CRADLE_CACHE_DIR", home.join("cache"))
            .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
            .env("HOME", &home)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG")
            .stdin(Stdio::null());
        cmd
    };
    let pushed = builder(&[
        "push".as_ref(),
        opts.output.as_os_str(),
        format!("127.0.0.1:{port}/cradle/killed:v1").as_ref(),
    ])
    .output()
    .unwrap();
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let (proxy, connections) = slow_proxy(port);
    let reference = format!("127.0.0.1:{proxy}/cradle/killed:v1");
    let out = ws.out().join("pulled.tar");
    let pull = || {
        builder(&[
            "pull".as_ref(),
            reference.as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ])
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut left_behind = 0;
    for round in 0..30 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut child = pull()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Every third round waits for a connection first, so that the kill
        // lands in the middle of the pull (the proxy takes 1.3 s per blob).
        if round % 3 == 0 {
            connections.recv().unwrap();
        }
        std::thread::sleep(Duration::from_millis(seed % 300));
        child.kill().unwrap();
        child.wait().unwrap();
        while connections.try_recv().is_ok() {}
        left_behind += entries(&ws.out(), ".cradle-").len();
        assert!(!out.exists(), "round {round}: an image from a killed pull");
    }
    assert!(left_behind > 0, "no kill landed in the middle of a pull");

    let done = pull().output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(entries(&ws.out(), "."), Vec::<String>::new());
    assert_eq!(String::from_utf8_lossy(&done.stdout).trim(), built.digest);
    let pulled = builder::archive::ImageArchive::open(&out)
        .unwrap()
        .image(None)
        .unwrap();
    assert_eq!(pulled.id, built.digest);
}
