//! Helpers: hand-made tar entries (including the ones `tar::Builder` refuses
//! to write), and listing a directory tree.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A tar stream built entry by entry, names written verbatim.
#[derive(Default)]
pub struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    pub fn new() -> Tar {
        Tar::default()
    }

    fn header(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        mode: u32,
        size: u64,
        link: Option<&str>,
    ) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        let field = &mut header.as_old_mut().name;
        assert!(name.len() < field.len(), "name too long for this helper");
        field[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            let field = &mut header.as_old_mut().linkname;
            field[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_000_000);
        header
    }

    fn push(&mut self, mut header: tar::Header, data: &[u8]) -> &mut Tar {
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0, pad));
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        let h = self.header(
            name,
            tar::EntryType::Regular,
            0o644,
            data.len() as u64,
            None,
        );
        self.push(h, data)
    }

    pub fn file_mode(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Regular, mode, data.len() as u64, None);
        self.push(h, data)
    }

    /// A PAX extended header for the next entry, with `records` (key, value).
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + body.to_string().len();
            if len.to_string().len() != body.to_string().len() {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let h = self.header(
            "pax",
            tar::EntryType::XHeader,
            0o644,
            data.len() as u64,
            None,
        );
        self.push(h, &data)
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Directory, mode, 0, None);
        self.push(h, &[])
    }

    pub fn symlink(&mut self, name: &str, to: &str) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Symlink, 0o777, 0, Some(to));
        self.push(h, &[])
    }

    pub fn hardlink(&mut self, name: &str, to: &str) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Link, 0o644, 0, Some(to));
        self.push(h, &[])
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> &mut Tar {
        let mut h = self.header(name, tar::EntryType::Char, 0o666, 0, None);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.push(h, &[])
    }

    /// A directory with its own mtime.
    pub fn dir_mtime(&mut self, name: &str, mode: u32, mtime: u64) -> &mut Tar {
        let mut h = self.header(name, tar::EntryType::Directory, mode, 0, None);
        h.set_mtime(mtime);
        self.push(h, &[])
    }

    /// A FIFO as GNU tar's `--format=gnu` writes it: the device fields
    /// left blank (NUL-filled), which are no octal number.
    pub fn fifo_blank_devices(&mut self, name: &str) -> &mut Tar {
        let h = self.header(name, tar::EntryType::Fifo, 0o644, 0, None);
        assert!(h.as_gnu().unwrap().dev_major.iter().all(|&b| b == 0));
        self.push(h, &[])
    }

    /// A GNU sparse entry (`S`) of `size` bytes that are all a hole but for
    /// `data` at `offset` (a multiple of 512, as GNU tar writes them).
    pub fn sparse(&mut self, name: &str, size: u64, offset: u64, data: &[u8]) -> &mut Tar {
        let mut h = self.header(
            name,
            tar::EntryType::GNUSparse,
            0o644,
            data.len() as u64,
            None,
        );
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(offset);
        gnu.sparse[0].set_length(data.len() as u64);
        // A trailing hole is an empty region at the end, as GNU tar writes it.
        gnu.sparse[1].set_offset(size);
        gnu.sparse[1].set_length(0);
        gnu.set_real_size(size);
        self.push(h, data)
    }

    /// The finished archive (two zero blocks at the end).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out.extend(std::iter::repeat_n(0, 1024));
        out
    }

    pub fn gzip(&self) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.bytes()).unwrap();
        gz.finish().unwrap()
    }
}

/// Every path under `dir`, relative, sorted, directories marked with `/`.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if entry.file_type().unwrap().is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The `builder` binary built for these tests.
pub fn builder_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_builder"))
}

/// A tiny HTTP/1.1 server on 127.0.0.1 for fetch tests, counting requests
/// per path. Routes: `/rootfs.tar.gz` (the body), `/redirect` (302 to it),
/// `/drop` (announces the body, sends half, hangs up), `/hang` (answers
/// nothing for 3 s), anything else 404.
pub struct Server {
    pub base: String,
    hits: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl Server {
    pub fn start(body: Vec<u8>) -> Server {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                *counter.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
                let head = |status: &str, extra: &str, len: usize| {
                    format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n"
                    )
                };
                let _ = match path.as_str() {
                    "/rootfs.tar.gz" => stream
                        .write_all(head("200 OK", "", body.len()).as_bytes())
                        .and_then(|()| stream.write_all(&body)),
                    "/redirect" => stream
                        .write_all(head("302 Found", "Location: /rootfs.tar.gz\r\n", 0).as_bytes()),
                    "/hang" => {
                        std::thread::sleep(std::time::Duration::from_secs(3));
                        Ok(())
                    }
                    "/drop" => stream
                        .write_all(head("200 OK", "", body.len()).as_bytes())
                        .and_then(|()| stream.write_all(&body[..body.len() / 2])),
                    _ => stream.write_all(head("404 Not Found", "", 0).as_bytes()),
                };
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Server { base, hits }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// A small rootfs tarball: a shell script as `/bin/hello`, a config file,
/// a symlink and a directory; every mtime 1_000_000.
pub fn rootfs_tar_gz() -> Vec<u8> {
    Tar::new()
        .dir("./", 0o755)
        .dir("bin/", 0o755)
        .file_mode("bin/hello", 0o755, b"#!/bin/sh\necho hello\n")
        .symlink("bin/hi", "hello")
        .dir("etc/", 0o755)
        .file("etc/os-release", b"ID=test\n")
        .dir("var/empty/", 0o555)
        .gzip()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Writes the smallest static executable of this machine's architecture:
/// an ELF header, one loadable segment, and code that exits 0. The builder
/// refuses anything else as an init, and building the real one is an xtask.
pub fn write_static_elf(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    #[cfg(target_arch = "x86_64")]
    let (machine, code): (u16, &[u8]) = (
        62,
        // mov eax, 60 (exit); xor edi, edi; syscall
        &[0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05],
    );
    #[cfg(target_arch = "aarch64")]
    let (machine, code): (u16, &[u8]) = (
        183,
        // mov x8, #93 (exit); mov x0, #0; svc #0
        &[
            0xa8, 0x0b, 0x80, 0xd2, 0x00, 0x00, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4,
        ],
    );
    let base: u64 = 0x40_0000;
    let start = 64 + 56;
    let total = (start + code.len()) as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(base + start as u64).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for half in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&half.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for word in [0, base, base, total, total, 0x1000] {
        elf.extend_from_slice(&word.to_le_bytes());
    }
    elf.extend_from_slice(code);
    std::fs::write(path, elf).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A place to build: a definition naming `source`, a stand-in init, an
/// output path and a download cache, all in one temporary directory.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        write_static_elf(&dir.path().join("init"));
        Workspace { dir }
    }

    pub fn def(&self, source: &str, sha256: &str) -> builder::ImageDef {
        let text = format!(
            "tag = \"localhost/cradle-test/fetch:latest\"\n[rootfs]\nsource = \"{source}\"\nsha256 = \"{sha256}\"\n[config]\ncmd = [\"hello\"]\nenv = [\"PATH=/bin\"]\n"
        );
        builder::ImageDef::parse(
            &text,
            Path::new("image.toml"),
            self.dir.path().to_path_buf(),
        )
        .unwrap()
    }

    pub fn options(&self, name: &str) -> builder::Options {
        let mut fetch = builder::fetch::Options::new(self.cache());
        fetch.backoff = std::time::Duration::from_millis(10);
        fetch.timeout = std::time::Duration::from_secs(5);
        builder::Options {
            init: self.dir.path().join("init"),
            output: self.out().join(name),
            fetch,
            epoch: 0,
            run: Default::default(),
            no_init: false,
        }
    }

    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn cache(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// Files (not directories) under `dir`, if it exists.
    pub fn files_in(&self, dir: &Path) -> Vec<String> {
        if !dir.exists() {
            return Vec::new();
        }
        tree(dir)
            .into_iter()
            .filter(|p| !p.ends_with('/'))
            .collect()
    }
}

/// The OCI (Go) name of this machine's architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes a `docker save` archive in its legacy layout (`manifest.json`,
/// `<hex>.json`, `<id>/layer.tar`) of one image tagged `tag`: one layer,
/// the plain tar `layer`, and `settings` as its config's `config`.
pub fn docker_save(path: &Path, layer: &[u8], settings: serde_json::Value, tag: &str) {
    let diff_id = sha256_hex(layer);
    let config = serde_json::json!({
        "architecture": go_arch(),
        "os": "linux",
        "config": settings,
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created_by": "docker save test"}],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", sha256_hex(&config));
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]))
    .unwrap();
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in [
        (format!("{diff_id}/layer.tar"), layer),
        (config_name, config.as_slice()),
        ("manifest.json".to_string(), manifest.as_slice()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes).unwrap();
    }
    tar.finish().unwrap();
}

/// A build directory for `[[run]]` steps (definition, output, step cache)
/// and the binaries that run them: the real `builder` and `launcher` on the
/// default image with busybox added.
pub struct Steps {
    pub dir: tempfile::TempDir,
    pub launcher: PathBuf,
    pub base: PathBuf,
    tag: String,
}

impl Steps {
    /// A bench in a temporary directory named `cradle-NAME-…`, building
    /// `localhost/cradle-test/NAME:1`; None (after saying why) when the
    /// launcher, the default image, busybox or root are missing.
    pub fn new(name: &str) -> Option<Steps> {
        if !testkit::require(
            testkit::is_root(),
            "needs root to run the launcher's sandbox",
        ) {
            return None;
        }
        let launcher = testkit::require_artifact("debug/launcher", "cargo build -p launcher")?;
        let base = testkit::require_artifact("images/default.tar", "cargo xtask build-image")?;
        testkit::require_artifact("static/cradle-init", "cargo xtask build-init")?;
        testkit::require_tool("busybox")?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("cradle-{name}-"))
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Some(Steps {
            dir,
            launcher,
            base,
            tag: format!("localhost/cradle-test/{name}:1"),
        })
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes image.toml: the default image with busybox in /bin, then
    /// `steps` (TOML tables) in order.
    pub fn define(&self, steps: &str) {
        let text = format!(
            "tag = \"{}\"\n[base]\nsource = \"{}\"\nprograms = [\"busybox\"]\n\n{steps}",
            self.tag,
            self.base.display()
        );
        std::fs::write(self.path("image.toml"), text).unwrap();
    }

    /// `builder ARGS` with this bench's cache and launcher, not started.
    pub fn builder(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(builder_bin());
        cmd.env("CRADLE_CACHE_DIR", self.path("cache"))
            .env("CRADLE_LAUNCHER", &self.launcher)
            .env_remove("RUST_BACKTRACE")
            .env_remove("CRADLE_ROOT")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// `builder build image.toml -o out/NAME.tar ARGS`, not started.
    pub fn command(&self, name: &str, args: &[&str]) -> Command {
        let mut cmd = self.builder(&["build"]);
        cmd.arg(self.path("image.toml"))
            .arg("-o")
            .arg(self.path(&format!("out/{name}.tar")))
            .args(args);
        cmd
    }

    /// `cmd`, killed if it takes longer than `limit`: its output, or `None`
    /// when it had to be killed (it hung).
    pub fn within(&self, mut cmd: Command, limit: Duration) -> Option<Output> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + limit;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(child.wait_with_output().unwrap())
    }

    /// `builder build image.toml -o out/NAME.tar ARGS`, which must end
    /// within five minutes.
    pub fn build(&self, name: &str, args: &[&str]) -> Output {
        self.within(self.command(name, args), Duration::from_secs(300))
            .unwrap_or_else(|| panic!("build {name} hung"))
    }

    /// A build that must succeed: its archive and stderr.
    pub fn built(&self, name: &str, args: &[&str]) -> (PathBuf, String) {
        let out = self.build(name, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build {name} failed: {stderr}");
        (self.path(&format!("out/{name}.tar")), stderr)
    }

    /// `launcher run IMAGE sh -c SCRIPT` in a private store: its stdout.
    pub fn run_in(&self, image: &Path, script: &str) -> String {
        let store = tempfile::tempdir().unwrap();
        let out = Command::new(&self.launcher)
            .env("CRADLE_ROOT", store.path())
            .env_remove("RUST_BACKTRACE")
            .arg("run")
            .arg(image)
            .args(["/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "running {script}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Nothing the builds left behind: no container in the sandboxes'
    /// store (`launcher ps -a`) nor its state, no work directory beside the
    /// output, no `.partial-*` in the step cache, no mount under the bench.
    pub fn assert_nothing_left(&self) {
        let names = |dir: PathBuf| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let store = self.path("cache/sandbox");
        let ps = Command::new(&self.launcher)
            .env("CRADLE_ROOT", &store)
            .args(["ps", "-a", "-q"])
            .output()
            .unwrap();
        assert!(ps.status.success(), "{ps:?}");
        assert!(ps.stdout.is_empty(), "containers left: {ps:?}");
        let state = names(store.join("containers"));
        assert!(state.is_empty(), "sandbox state left: {state:?}");
        let out = names(self.path("out"));
        assert!(
            out.iter().all(|n| !n.starts_with(".cradle-build-")),
            "work directories left: {out:?}"
        );
        for dir in ["cache/steps", "cache/steps/blobs"] {
            let partial: Vec<String> = names(self.path(dir))
                .into_iter()
                .filter(|n| n.starts_with(".partial-"))
                .collect();
            assert!(partial.is_empty(), "{dir}: {partial:?}");
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mine = self.dir.path().to_string_lossy().into_owned();
        assert!(!mounts.contains(&mine), "mounts left under {mine}");
    }
}

/// A Debian minbase rootfs with the packages `include`, made once by
/// `debootstrap --variant=minbase` from the mirror apt uses here and kept as
/// `target/NAME.tar.gz` (CI makes it once per run). Manuals and
/// translations are left out: the tests do not read them.
pub fn debian_rootfs(name: &str, include: &[&str]) -> Option<PathBuf> {
    let tarball = testkit::target_dir().join(format!("{name}.tar.gz"));
    if tarball.is_file() {
        return Some(tarball);
    }
    let debootstrap = testkit::require_tool("debootstrap")?;
    let (mirror, suite) = debian_mirror_and_suite();
    let rootfs = tempfile::Builder::new()
        .prefix("cradle-debootstrap-")
        .tempdir_in(testkit::target_dir())
        .unwrap();
    let mut cmd = Command::new(debootstrap);
    cmd.arg("--variant=minbase");
    if !include.is_empty() {
        cmd.arg(format!("--include={}", include.join(",")));
    }
    let out = cmd
        .arg(&suite)
        .arg(rootfs.path())
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debootstrap {suite} {mirror}: {out:?}"
    );
    let partial = tarball.with_extension(format!("partial-{}", std::process::id()));
    let out = Command::new("tar")
        // The downloaded packages debootstrap keeps are not the rootfs.
        .args([
            "--numeric-owner",
            "--exclude=./var/cache/apt/archives/*.deb",
            "--exclude=./usr/share/man/*",
            "--exclude=./usr/share/locale/*",
            "--exclude=./usr/share/info/*",
            "-czf",
        ])
        .arg(&partial)
        .arg("-C")
        .arg(rootfs.path())
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "tar: {out:?}");
    std::fs::rename(&partial, &tarball).unwrap();
    Some(tarball)
}

/// The first Debian mirror in apt's sources, and this system's codename.
fn debian_mirror_and_suite() -> (String, String) {
    let mut texts = Vec::new();
    for dir in ["/etc/apt/sources.list.d"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            // apt reads only these; `x.sources.disabled` and the like are off.
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|e| e == "list" || e == "sources")
            {
                texts.push(std::fs::read_to_string(path).unwrap_or_default());
            }
        }
    }
    texts.push(std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
    let mirror = texts
        .iter()
        .flat_map(|t| t.lines())
        .find_map(|line| {
            let line = line.trim();
            let uri = line.strip_prefix("URIs:").map(str::trim).or_else(|| {
                line.strip_prefix("deb ")
                    .map(|rest| rest.split_whitespace().next().unwrap_or(""))
            })?;
            // Debian's own archive, not a third party's (nodesource, a
            // cloud SDK) that has no release of the suite.
            (uri.starts_with("http") && uri.trim_end_matches('/').ends_with("/debian"))
                .then(|| uri.to_string())
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let suite = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VERSION_CODENAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "bookworm".into());
    (mirror, suite)
}
