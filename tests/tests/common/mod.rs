//! Shared by the end-to-end tests: where the launcher, probe, init and
//! images are, a small OCI image writer (so tests can make multi-layer
//! images with whiteouts), and running the launcher with a private cache.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The launcher binary (`cargo build -p launcher`, done by `cargo xtask test`).
/// Copies `from` to `to` with `mode`, by `install`, in a process of its
/// own: a file this (multi-threaded) test process had open for writing
/// would be inherited by any child another test forks meanwhile, and
/// executing the copy then fails with ETXTBSY ("Text file busy").
pub fn copy_file(from: &Path, to: &Path, mode: u32) {
    let out = Command::new("install")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg(from)
        .arg(to)
        .output()
        .expect("running install");
    assert!(out.status.success(), "install {from:?} {to:?}: {out:?}");
}

pub fn launcher() -> Option<PathBuf> {
    testkit::require_artifact("debug/launcher", "cargo build -p launcher")
}

/// The static probe.
pub fn probe() -> Option<PathBuf> {
    testkit::require_artifact("static/probe", "cargo xtask build-probe")
}

/// The static init.
pub fn init() -> Option<PathBuf> {
    testkit::require_artifact("static/cradle-init", "cargo xtask build-init")
}

/// Everything a container test needs: root, the launcher, the probe, and an
/// image (the default one, or one made here from busybox-static + the init).
pub struct Kit {
    pub launcher: PathBuf,
    pub probe: PathBuf,
    pub image: PathBuf,
    pub root: tempfile::TempDir,
}

impl Kit {
    /// None (after saying why) when something is missing.
    pub fn new() -> Option<Kit> {
        if !testkit::require(testkit::is_root(), "needs root to create namespaces") {
            return None;
        }
        let launcher = launcher()?;
        let probe = probe()?;
        let image = default_image()?;
        let root = tempfile::Builder::new()
            .prefix("cradle-e2e-")
            .tempdir()
            .ok()?;
        Some(Kit {
            launcher,
            probe,
            image,
            root,
        })
    }

    /// `launcher run` with a private cache, the probe at /probe, and `args`.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.launcher);
        cmd.env("CRADLE_ROOT", self.root.path())
            .env_remove("RUST_BACKTRACE")
            .arg("run")
            .arg("-v")
            .arg(format!("{}:/probe:ro", self.probe.display()))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `launcher run [args] IMAGE /probe probe_args`.
    pub fn probe_run(&self, args: &[&str], probe_args: &[&str]) -> Output {
        let mut cmd = self.cmd(args);
        cmd.arg(&self.image).arg("/probe").args(probe_args);
        cmd.output().expect("running the launcher")
    }
}

/// `key=value` lines of a probe report.
pub fn report(out: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn value(report: &[(String, String)], key: &str) -> String {
    report
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

pub fn values(report: &[(String, String)], key: &str) -> Vec<String> {
    report
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The default image (`cargo xtask build-image`), else one made here once
/// per test binary from busybox-static and the static init.
pub fn default_image() -> Option<PathBuf> {
    static IMAGE: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut made = IMAGE.lock().unwrap_or_else(|e| e.into_inner());
    if made.is_none() {
        *made = make_default_image();
    }
    made.clone()
}

/// `images/default` built by the builder under `tag` with `--sbom` into
/// `dir`: the archive's path.
pub fn default_built_with_sbom(dir: &Path, tag: &str) -> Option<PathBuf> {
    let builder = testkit::require_artifact("debug/builder", "cargo build -p builder")?;
    let init = init()?;
    let definition = dir.join("image.toml");
    let default = testkit::workspace_root().join("images/default/image.toml");
    let text = std::fs::read_to_string(default)
        .unwrap()
        .replace("localhost/cradle/default:latest", tag);
    std::fs::write(&definition, text).unwrap();
    let archive = dir.join("sbom.tar");
    let out = Command::new(builder)
        .args(["build", "--sbom", "--init"])
        .arg(init)
        .arg("--cache")
        .arg(dir.join("cache"))
        .arg("-o")
        .arg(&archive)
        .arg(&definition)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(archive)
}

fn make_default_image() -> Option<PathBuf> {
    let built = testkit::target_dir().join("images/default.tar");
    if built.exists() {
        return Some(built);
    }
    let busybox = testkit::require_tool("busybox")?;
    let init = init()?;
    let out = testkit::target_dir().join(format!("e2e-images/busybox-{}.tar", std::process::id()));
    if !out.exists() {
        let base = busybox_layer(&busybox);
        let mut top = Layer::default();
        top.file("sbin/cradle-init", &std::fs::read(init).ok()?, 0o755);
        write_image(
            &out,
            &[base, top],
            &["/sbin/cradle-init", "--"],
            &["/bin/sh"],
        );
    }
    Some(out)
}

/// A layer: entries in order.
#[derive(Default)]
pub struct Layer {
    builder: Option<tar::Builder<Vec<u8>>>,
}

impl Layer {
    /// The layer as a finished tar archive.
    fn tar_bytes(&self) -> Vec<u8> {
        let mut bytes = self
            .builder
            .as_ref()
            .map(|b| b.get_ref().clone())
            .unwrap_or_default();
        // End of archive: two zero blocks.
        bytes.extend_from_slice(&[0u8; 1024]);
        bytes
    }
    fn b(&mut self) -> &mut tar::Builder<Vec<u8>> {
        self.builder
            .get_or_insert_with(|| tar::Builder::new(Vec::new()))
    }
    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }
    pub fn dir(&mut self, path: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, 0, 0o755);
        self.b()
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }
    /// A directory with `mode` ([`Layer::dir`] makes them 0755).
    pub fn dir_mode(&mut self, path: &str, mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Directory, 0, mode);
        self.b()
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Regular, data.len() as u64, mode);
        self.b().append_data(&mut h, path, data).unwrap();
        self
    }
    /// A character (`kind` `c`) or block (`b`) device node, mode 0666.
    pub fn node(&mut self, path: &str, kind: char, major: u32, minor: u32) -> &mut Self {
        let kind = match kind {
            'c' => tar::EntryType::Char,
            'b' => tar::EntryType::Block,
            other => panic!("device kind `{other}` is neither c nor b"),
        };
        let mut h = Self::header(kind, 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.b()
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0, 0o777);
        self.b().append_link(&mut h, path, target).unwrap();
        self
    }
    pub fn fifo(&mut self, path: &str) -> &mut Self {
        let mut h = Self::header(tar::EntryType::Fifo, 0, 0o644);
        h.set_device_major(0).unwrap();
        h.set_device_minor(0).unwrap();
        self.b()
            .append_data(&mut h, path, std::io::empty())
            .unwrap();
        self
    }
    pub fn bytes(mut self) -> Vec<u8> {
        self.b();
        self.builder.take().unwrap().into_inner().unwrap()
    }
}

/// busybox at /bin/busybox with its applets linked in /bin, a passwd and
/// group file, and the usual empty directories.
pub fn busybox_layer(busybox: &Path) -> Layer {
    busybox_layer_without(busybox, &[])
}

/// [`busybox_layer`] without the top-level directories in `skip`, for a
/// hostile layer to put something else there.
pub fn busybox_layer_without(busybox: &Path, skip: &[&str]) -> Layer {
    let mut l = Layer::default();
    for d in [
        "bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "tmp", "usr", "usr/bin", "var",
    ] {
        if !skip.contains(&d) {
            l.dir(d);
        }
    }
    l.file("bin/busybox", &std::fs::read(busybox).unwrap(), 0o755);
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            l.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    l.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\nbob:x:1000:1000:bob:/home/bob:/bin/sh\n",
        0o644,
    );
    l.file(
        "etc/group",
        b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\nbob:x:1000:\nwheel:x:10:bob\n",
        0o644,
    );
    l
}

fn sha(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Writes an OCI image layout archive with uncompressed `layers` (bottom
/// first) to `out`, atomically.
pub fn write_image(out: &Path, layers: &[Layer], entrypoint: &[&str], cmd: &[&str]) {
    let config = serde_json::json!({"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]});
    write_image_with(out, layers, config);
}

/// [`write_image`] with the image config's `config` object given whole.
pub fn write_image_with(out: &Path, layers: &[Layer], config: serde_json::Value) {
    let layers: Vec<Vec<u8>> = layers.iter().map(Layer::tar_bytes).collect();
    let mut blobs: Vec<(String, Vec<u8>)> = vec![];
    let mut descs = vec![];
    let mut diff_ids = vec![];
    for l in &layers {
        let d = sha(l);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
        diff_ids.push(d.clone());
        blobs.push((d, l.clone()));
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let cd = sha(&config);
    blobs.push((cd.clone(), config.clone()));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = sha(&manifest);
    blobs.push((md.clone(), manifest.clone()));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "test"}}],
    }))
    .unwrap();
    let mut t = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = Layer::header(tar::EntryType::Regular, data.len() as u64, 0o644);
        t.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for (d, data) in &blobs {
        add(
            &format!("blobs/sha256/{}", d.trim_start_matches("sha256:")),
            data,
        );
    }
    add("index.json", &index);
    let bytes = t.into_inner().unwrap();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, out).unwrap();
}

/// Mount points, overlay mounts and state entries, to compare before and
/// after runs.
pub fn host_state(root: &Path) -> (usize, usize, usize) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let overlays = mounts.lines().filter(|l| l.contains(" - overlay ")).count();
    let containers = std::fs::read_dir(root.join("containers"))
        .map(|d| d.count())
        .unwrap_or(0)
        + std::fs::read_dir(root.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
    (mounts.lines().count(), overlays, containers)
}

/// Writes a `docker save` archive (legacy layout: `<id>/layer.tar`, a config
/// named by its digest, manifest.json).
pub fn write_docker_save(out: &Path, layers: &[Layer], entrypoint: &[&str], cmd: &[&str]) {
    let layers: Vec<Vec<u8>> = layers.iter().map(Layer::tar_bytes).collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", sha(&config).trim_start_matches("sha256:"));
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("layer{i}/layer.tar"))
        .collect();
    let manifest = serde_json::to_vec(
        &serde_json::json!([{"Config": config_name, "RepoTags": ["test:latest"], "Layers": names}]),
    )
    .unwrap();
    let mut t = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = Layer::header(tar::EntryType::Regular, data.len() as u64, 0o644);
        t.append_data(&mut h, name, data).unwrap();
    };
    add(&config_name, &config);
    for (name, data) in names.iter().zip(&layers) {
        add(name, data);
    }
    add("manifest.json", &manifest);
    std::fs::write(out, t.into_inner().unwrap()).unwrap();
}

/// Writes a `docker save` archive of several images over the same `layers`
/// (newer layout: blobs named by digest), one per `(config, tags)`: the
/// image config's `config` object, and its RepoTags.
pub fn write_docker_save_images(
    out: &Path,
    layers: &[Layer],
    images: &[(serde_json::Value, &[&str])],
) {
    let layers: Vec<Vec<u8>> = layers.iter().map(Layer::tar_bytes).collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let mut t = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = Layer::header(tar::EntryType::Regular, data.len() as u64, 0o644);
        t.append_data(&mut h, name, data).unwrap();
    };
    let layer_names: Vec<String> = diff_ids
        .iter()
        .map(|d| format!("blobs/sha256/{}", d.trim_start_matches("sha256:")))
        .collect();
    for (name, data) in layer_names.iter().zip(&layers) {
        add(name, data);
    }
    let mut manifest = Vec::new();
    for (config, tags) in images {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let config_name = format!(
            "blobs/sha256/{}",
            sha(&config).trim_start_matches("sha256:")
        );
        add(&config_name, &config);
        manifest.push(
            serde_json::json!({"Config": config_name, "RepoTags": tags, "Layers": layer_names}),
        );
    }
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    std::fs::write(out, t.into_inner().unwrap()).unwrap();
}

/// A `--cgroup-parent` of a test's own, absolute (so the same in v1 and
/// v2), where the launcher makes its containers' cgroups; removed with
/// whatever is left in it when dropped.
pub struct CgroupParent {
    /// The flag's value: `/cradle-e2e-PID-N`.
    pub name: String,
    /// Controller (`""` in v2) → the parent's directory in its hierarchy.
    pub dirs: Vec<(String, PathBuf)>,
}

impl CgroupParent {
    /// The hierarchies as the launcher picks them: the v1 trees of memory,
    /// pids, cpu, cpuacct and devices when mounted (hybrid layouts too),
    /// else cgroup2.
    pub fn new() -> CgroupParent {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("/cradle-e2e-{}-{n}", std::process::id());
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut v1 = Vec::new();
        let mut v2 = None;
        for line in info.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let point = pre.split(' ').nth(4).unwrap_or("");
            let post: Vec<&str> = post.split(' ').collect();
            match post[..] {
                ["cgroup", _, options, ..] => {
                    for c in options.split(',') {
                        if ["memory", "pids", "cpu", "cpuacct", "devices"].contains(&c) {
                            v1.push((c.to_string(), Path::new(point).join(&name[1..])));
                        }
                    }
                }
                ["cgroup2", ..] if v2.is_none() || point == "/sys/fs/cgroup" => {
                    v2 = Some(Path::new(point).join(&name[1..]));
                }
                _ => {}
            }
        }
        let dirs = match (v1.is_empty(), v2) {
            (false, _) => v1,
            (true, Some(dir)) => vec![(String::new(), dir)],
            (true, None) => Vec::new(),
        };
        CgroupParent { name, dirs }
    }

    /// The containers' cgroups in it, by name (one per container, whatever
    /// the number of hierarchies).
    pub fn containers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .dirs
            .iter()
            .filter_map(|(_, d)| std::fs::read_dir(d).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("cradle-"))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The directory of the only container cgroup for `controller` (its v1
    /// tree, or the v2 one), when there is exactly one.
    pub fn container_dir(&self, controller: &str) -> Option<PathBuf> {
        let [name] = &self.containers()[..] else {
            return None;
        };
        let (_, dir) = self
            .dirs
            .iter()
            .find(|(c, _)| c == controller || c.is_empty())?;
        Some(dir.join(name))
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        let mut dirs: Vec<PathBuf> = self.dirs.iter().map(|(_, d)| d.clone()).collect();
        dirs.dedup();
        for dir in dirs {
            let children = std::fs::read_dir(&dir).into_iter().flatten().flatten();
            for child in children.filter(|e| e.path().is_dir()) {
                remove_cgroup(&child.path());
            }
            remove_cgroup(&dir);
        }
    }
}

/// Kills what is in the cgroup, then removes it, retrying while it drains.
fn remove_cgroup(dir: &Path) {
    for _ in 0..100 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) of a process left in the test's own cgroup.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The names in directory `dir` (which must exist).
pub fn entries(dir: &Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("reading `{}`: {err}", dir.display()))
        .map(|e| e.unwrap().file_name())
        .collect()
}

/// A tmux server of its own (`-L socket`), for tests of a real terminal:
/// one session `t`, 100x30, running `script` under sh. Killed when dropped.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    pub fn start(socket: String, script: &Path) -> Tmux {
        let tmux = Tmux { socket };
        let ok = tmux
            .cmd()
            .args([
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "100",
                "-y",
                "30",
                "sh",
            ])
            .arg(script)
            .status()
            .unwrap();
        assert!(ok.success());
        tmux
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    pub fn send(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn screen(&self) -> String {
        let out = self
            .cmd()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen once it shows `what`; fails after `secs`.
    pub fn wait_for(&self, what: &str, secs: u64) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let screen = self.screen();
            if screen.contains(what) || std::time::Instant::now() > deadline {
                assert!(
                    screen.contains(what),
                    "`{what}` not on the screen:\n{screen}"
                );
                return screen;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// A command's stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls `check` every 50 ms for up to `secs`, failing the test naming
/// `what` when it never holds.
pub fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A private state root, and every detached container in it removed (with
/// its monitor) when the test ends, passed or not.
pub struct Detached {
    pub kit: Kit,
}

impl Detached {
    pub fn new() -> Option<Detached> {
        Some(Detached { kit: Kit::new()? })
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.kit.launcher);
        cmd.env("CRADLE_ROOT", self.kit.root.path())
            .env_remove("RUST_BACKTRACE")
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running the launcher")
    }

    /// `launcher run -d [args] IMAGE CMD…`: the id it printed.
    pub fn detach(&self, args: &[&str], image: &Path, command: &[&str]) -> String {
        let started = std::time::Instant::now();
        let out = self
            .cmd(&["run", "-d"])
            .args(args)
            .arg(image)
            .args(command)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "run -d did not return at once"
        );
        let id = stdout(&out).trim().to_string();
        assert!(
            id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "not an id: {out:?}"
        );
        id
    }

    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.run(&["inspect", name]);
        assert!(out.status.success(), "{out:?}");
        let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        all[0].clone()
    }

    pub fn record_dir(&self, id: &str) -> PathBuf {
        self.kit.root.path().join("detached").join(id)
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let dir = self.kit.root.path().join("detached");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !id.starts_with('.') {
                let _ = self.run(&["rm", "-f", &id]);
            }
        }
    }
}
