//! `[[run]]` steps: run by the launcher over the image so far, each one
//! layer, reused from the step cache. These run the real `builder` and
//! `launcher` binaries (root, or user namespaces for the rootless one) on
//! the default image with busybox added, and attack: a step that fails, one
//! that leaves hostile files, one killed mid-run, one that reaches for the
//! host's loopback.

use crate::support::{Steps as Bench, builder_bin};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

impl Bench {
    /// The step cache's entries.
    fn cache_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path("cache/steps"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".json") || n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// The entries of the image's layer `index` (0 = bottom), each as `TYPE
/// NAME[ -> TARGET]` with its uid and mode: `f etc/x 0 644`.
fn layer_entries(image: &Path, index: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    tar::Archive::new(std::fs::File::open(image).unwrap())
        .unpack(dir.path())
        .unwrap();
    let json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let blob = |digest: &str| dir.path().join("blobs/sha256").join(&digest[7..]);
    let index_json = json(dir.path().join("index.json"));
    let manifest = json(blob(index_json["manifests"][0]["digest"].as_str().unwrap()));
    let digest = manifest["layers"][index]["digest"].as_str().unwrap();
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(blob(digest)).unwrap());
    let mut layer = tar::Archive::new(gz);
    let mut out = Vec::new();
    for entry in layer.entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => "f",
            tar::EntryType::Directory => "d",
            tar::EntryType::Symlink => "l",
            tar::EntryType::Link => "h",
            tar::EntryType::Fifo => "p",
            tar::EntryType::Char => "c",
            tar::EntryType::Block => "b",
            _ => "?",
        };
        let mut text = format!(
            "{kind} {name} {} {:o}",
            h.uid().unwrap(),
            h.mode().unwrap() & 0o7777
        );
        if let Ok(Some(target)) = entry.link_name() {
            text += &format!(" -> {}", target.display());
        }
        if matches!(kind, "c" | "b") {
            text += &format!(
                " {}:{}",
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap()
            );
        }
        if kind == "f" {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            text += &format!(" {}", String::from_utf8_lossy(&data).trim_end());
        }
        out.push(text);
    }
    out
}

/// Layers of the image (base, busybox, the steps…, the init).
fn layer_count(image: &Path) -> usize {
    let out = Command::new(builder_bin())
        .arg("inspect")
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("sha256:") && l.contains("bytes"))
        .count()
}

#[test]
fn run_steps_write_layers_the_launcher_runs_and_two_builds_are_identical() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define(
        r#"
[[run]]
shell = "echo one >> /log && mkdir -p /srv/app"

[[run]]
command = ["/bin/sh", "-c", "echo two >> /log; echo \"$GREETING from $(pwd) as $(id -u)\" > greeting"]
env = ["GREETING=hello"]
workdir = "/srv/app"
"#,
    );
    let (first, stderr) = bench.built("first", &[]);
    assert!(stderr.contains("2 steps, 0 from the cache"), "{stderr}");
    assert_eq!(
        bench.run_in(&first, "cat /log /srv/app/greeting"),
        "one\ntwo\nhello from /srv/app as 0\n"
    );
    // base, busybox, two steps, the init.
    assert_eq!(layer_count(&first), 5);
    // Only what the step changed, with no trace of the launcher's mount
    // points (/etc/hosts, /sbin/cradle-init, /proc …).
    assert_eq!(
        layer_entries(&first, 2),
        ["f log 0 644 one", "d srv 0 755", "d srv/app 0 755"]
    );

    let (second, stderr) = bench.built("second", &[]);
    assert!(stderr.contains("2 steps, 2 from the cache"), "{stderr}");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap()
    );
    // Without the cache the steps run again and make the same bytes.
    let (third, stderr) = bench.built("third", &["--no-cache"]);
    assert!(stderr.contains("2 steps, 0 from the cache"), "{stderr}");
    assert_eq!(
        std::fs::read(&first).unwrap(),
        std::fs::read(&third).unwrap()
    );
    bench.assert_nothing_left();
}

#[test]
fn deletions_become_whiteouts_and_a_replaced_directory_opaque() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define(
        r#"
[[run]]
shell = "mkdir -p /data/dir/sub && echo a > /data/dir/a && echo b > /data/dir/sub/b && echo x > /data/gone && echo k > /data/kept"

[[run]]
shell = "rm /data/gone && rm -r /data/dir && mkdir /data/dir && echo c > /data/dir/c"
"#,
    );
    let (image, _) = bench.built("image", &[]);
    assert_eq!(
        layer_entries(&image, 3),
        [
            "d data 0 755",
            "d data/dir 0 755",
            "f data/dir/.wh..wh..opq 0 644 ",
            "f data/dir/c 0 644 c",
            "f data/.wh.gone 0 644 ",
        ]
    );
    assert_eq!(
        bench.run_in(&image, "cd /data && ls -a . dir"),
        ".:\n.\n..\ndir\nkept\n\ndir:\n.\n..\nc\n"
    );
}

/// Each step writes a random id: one taken from the cache keeps its id,
/// one run again gets a new one. The copied file sits between steps 1 and 2.
#[test]
fn a_changed_input_runs_again_only_the_steps_after_it() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    let steps = |third: &str| {
        format!(
            r#"
[[run]]
shell = "cat /proc/sys/kernel/random/uuid > /one"

[[copy]]
src = "input.txt"
dest = "/input.txt"

[[run]]
shell = "cat /proc/sys/kernel/random/uuid > /two"

[[run]]
shell = "{third}; cat /proc/sys/kernel/random/uuid > /three"
"#
        )
    };
    let ids = |image: &Path| bench.run_in(image, "cat /one /two /three");
    std::fs::write(bench.path("input.txt"), "first\n").unwrap();
    bench.define(&steps("true"));
    let (a, stderr) = bench.built("a", &[]);
    assert!(stderr.contains("4 steps, 0 from the cache"), "{stderr}");
    let a_ids: Vec<String> = ids(&a).lines().map(String::from).collect();
    assert_eq!(a_ids.len(), 3);

    // The copied file changes: step 1 is reused, 3 and 4 run again.
    std::fs::write(bench.path("input.txt"), "second\n").unwrap();
    let (b, stderr) = bench.built("b", &[]);
    assert!(stderr.contains("4 steps, 1 from the cache"), "{stderr}");
    let b_ids: Vec<String> = ids(&b).lines().map(String::from).collect();
    assert_eq!(b_ids[0], a_ids[0]);
    assert_ne!(b_ids[1], a_ids[1]);
    assert_ne!(b_ids[2], a_ids[2]);

    // The last step's command changes: only it runs.
    bench.define(&steps("echo changed"));
    let (c, stderr) = bench.built("c", &[]);
    assert!(stderr.contains("4 steps, 2 from the cache"), "{stderr}");
    let c_ids: Vec<String> = ids(&c).lines().map(String::from).collect();
    assert_eq!(c_ids[..2], b_ids[..2]);
    assert_ne!(c_ids[2], b_ids[2]);

    // --no-cache runs everything.
    let (d, stderr) = bench.built("d", &["--no-cache"]);
    assert!(stderr.contains("4 steps, 0 from the cache"), "{stderr}");
    let d_ids: Vec<String> = ids(&d).lines().map(String::from).collect();
    assert!(
        d_ids.iter().zip(&c_ids).all(|(d, c)| d != c),
        "{d_ids:?} {c_ids:?}"
    );

    // prune empties the cache, saying how much it freed.
    let out = bench.builder(&["prune"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let freed: u64 = stderr
        .split_whitespace()
        .rev()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {stderr}"));
    assert!(freed > 0, "{stderr}");
    assert!(bench.cache_entries().is_empty());
    let (_, stderr) = bench.built("e", &[]);
    assert!(stderr.contains("4 steps, 0 from the cache"), "{stderr}");
}

/// A damaged cache entry is found by its digest and the step runs again.
#[test]
fn a_corrupt_cache_entry_is_rebuilt() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define("[[run]]\nshell = \"echo x > /x\"\n");
    let (first, _) = bench.built("first", &[]);
    for entry in std::fs::read_dir(bench.path("cache/steps/blobs")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let (second, stderr) = bench.built("second", &[]);
    assert!(stderr.contains("1 steps, 0 from the cache"), "{stderr}");
    assert_eq!(
        std::fs::read(first).unwrap(),
        std::fs::read(second).unwrap()
    );
    let (_, stderr) = bench.built("third", &[]);
    assert!(stderr.contains("1 steps, 1 from the cache"), "{stderr}");
}

#[test]
fn a_failing_step_is_named_with_its_status_and_leaves_nothing() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define(
        "[[run]]\nshell = \"echo ok > /ok\"\n\n[[run]]\ncommand = [\"/bin/sh\", \"-c\", \"echo partial > /partial; exit 3\"]\n",
    );
    let out = bench.build("image", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "builder: step 2 (RUN /bin/sh -c echo partial > /partial; exit 3) failed: exit status 3"
        ),
        "{stderr}"
    );
    assert!(!bench.path("out/image.tar").exists());
    // The first step's layer is cached; nothing of the failed one.
    assert_eq!(
        bench.cache_entries().len(),
        1,
        "{:?}",
        bench.cache_entries()
    );
    bench.assert_nothing_left();

    // A command that does not exist: the launcher's 127, named.
    bench.define("[[run]]\ncommand = [\"/no/such/program\"]\n");
    let out = bench.build("image", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("step 1 (RUN /no/such/program) failed: exit status 127"),
        "{stderr}"
    );
    bench.assert_nothing_left();
}

/// What a hostile step leaves is recorded as what it is: symlinks as their
/// text (never followed to the host's /etc/shadow), a hard link as a link,
/// a FIFO as a FIFO (never opened); a device node made by the root of a
/// root build is kept with its numbers, and still cannot be opened in a
/// container.
#[test]
fn a_hostile_steps_links_fifos_and_devices_are_contained() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define(
        r#"
[[run]]
shell = "mkdir /h && cd /h && ln -s /etc/shadow shadow && ln -s ../../../../etc/passwd up && echo data > file && ln file link && busybox mkfifo fifo && busybox mknod disk b 8 0 && ln -s /proc/self/root root"
"#,
    );
    let (image, _) = bench.built("image", &[]);
    let entries = layer_entries(&image, 2);
    assert_eq!(
        entries,
        [
            "d h 0 755",
            "b h/disk 0 644 8:0",
            "p h/fifo 0 644",
            "f h/file 0 644 data",
            "h h/link 0 644 -> h/file",
            "l h/root 0 777 -> /proc/self/root",
            "l h/shadow 0 777 -> /etc/shadow",
            "l h/up 0 777 -> ../../../../etc/passwd",
        ]
    );
    let shadow = std::fs::read_to_string("/etc/shadow").unwrap_or_default();
    let root_line = shadow.lines().next().unwrap_or("root:");
    assert!(!entries.iter().any(|e| e.contains(root_line)));
    // The device's cgroup rules keep the node unusable in a container.
    let out = bench.run_in(
        &image,
        "cat /h/disk >/dev/null 2>&1 && echo opened || echo refused",
    );
    assert_eq!(out, "refused\n");
}

#[test]
fn a_huge_sparse_file_is_refused_by_size_naming_step_and_file() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define("[[run]]\nshell = \"busybox truncate -s 1099511627776 /huge\"\n");
    let started = Instant::now();
    let out = bench
        .builder(&["build"])
        .arg(bench.path("image.toml"))
        .args(["-o"])
        .arg(bench.path("out/image.tar"))
        .env("CRADLE_MAX_COPY_SIZE", "64M")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 1 (RUN busybox truncate -s 1099511627776 /huge): refusing `/huge`")
            && stderr.contains("limit of 67108864 bytes"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(bench.cache_entries().is_empty());
    bench.assert_nothing_left();
}

/// A step's sandbox has only its own loopback unless the step asks for the
/// host's network: it cannot reach a listener on the host's 127.0.0.1.
#[test]
fn a_step_cannot_reach_the_hosts_loopback_unless_it_asks_for_host_network() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Each connection's bytes, read to the end and then closed, so that
    // the step's nc ends.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut text = String::new();
            let _ = stream.and_then(|mut s| s.read_to_string(&mut text));
            let _ = tx.send(text);
        }
    });
    let script = format!("echo hi | busybox nc -w 5 127.0.0.1 {port}");
    bench.define(&format!("[[run]]\nshell = \"{script}\"\n"));
    let out = bench.build("none", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the step reached the host: {stderr}");
    assert!(stderr.contains("step 1 (RUN echo hi"), "{stderr}");
    assert!(rx.try_recv().is_err(), "a connection came in");

    // The control: with network = "host" the same step reaches it.
    bench.define(&format!(
        "[[run]]\nshell = \"{script}\"\nnetwork = \"host\"\n"
    ));
    let out = bench.build("host", &[]);
    assert!(out.status.success(), "{out:?}");
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no connection with network = host");
    assert_eq!(got, "hi\n");
}

/// The builder SIGKILLed while a step runs: the launcher and the step die
/// with it (no process of the step is left), no cache entry or temporary
/// file is half-written, and the next build cleans up and succeeds.
#[test]
fn a_builder_killed_mid_step_leaves_no_sandbox_running() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    let marker = format!("cradle-run-kill-{}", std::process::id());
    bench.define(&format!(
        "[[run]]\nshell = \"echo started > /dev/stderr; exec busybox sleep 60 {marker}\"\n"
    ));
    let mut child = bench
        .builder(&["build"])
        .arg(bench.path("image.toml"))
        .arg("-o")
        .arg(bench.path("out/image.tar"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("started") {
        assert_eq!(
            stderr.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&seen)
        );
        seen.push(byte[0]);
    }
    assert!(running_with(&marker), "the step is not running");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running_with(&marker) {
        assert!(Instant::now() < deadline, "the step outlived the builder");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        bench.cache_entries().is_empty(),
        "{:?}",
        bench.cache_entries()
    );
    // The next build reclaims the killed one's work directory and state.
    bench.define("[[run]]\nshell = \"true\"\n");
    bench.built("image", &[]);
    bench.assert_nothing_left();
}

/// True when a process has `marker` in its command line.
fn running_with(marker: &str) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
    })
}

/// A user without privileges builds with `[[run]]` steps: the step runs in
/// a user namespace as its root, and the files it made are root's in the
/// image, as the container saw them.
#[test]
fn a_rootless_build_records_the_owners_the_container_saw() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    let Some(setpriv) = testkit::require_tool("setpriv") else {
        return;
    };
    let uid = 1000;
    for path in [bench.dir.path().to_path_buf(), bench.path("out")] {
        std::fs::create_dir_all(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
    }
    // The default image and the binaries must be reachable by the user.
    let base_copy = bench.path("base.tar");
    std::fs::copy(&bench.base, &base_copy).unwrap();
    std::fs::set_permissions(&base_copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "tag = \"localhost/cradle-test/rootless:1\"\n[base]\nsource = \"{}\"\nprograms = [\"busybox\"]\n\n[[run]]\nshell = \"mkdir /made && echo $(id -u) > /made/by && chmod 0600 /made/by && busybox chown 0:0 /made/by\"\n",
        base_copy.display()
    );
    std::fs::write(bench.path("image.toml"), text).unwrap();
    let out = Command::new(&setpriv)
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg("--")
        .arg(builder_bin())
        .arg("build")
        .arg(bench.path("image.toml"))
        .arg("-o")
        .arg(bench.path("out/image.tar"))
        .env("HOME", bench.dir.path())
        .env("CRADLE_CACHE_DIR", bench.path("cache"))
        .env("CRADLE_LAUNCHER", &bench.launcher)
        .env("XDG_RUNTIME_DIR", bench.dir.path())
        .env_remove("CRADLE_ROOT")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !testkit::require(
        !stderr.contains("user namespace") && !stderr.contains("EPERM"),
        &format!("rootless sandboxes do not work here: {stderr}"),
    ) {
        return;
    }
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        layer_entries(&bench.path("out/image.tar"), 2),
        ["d made 0 755", "f made/by 0 600 0"]
    );
}

/// Two builds of one definition at once, on a cold cache: both succeed with
/// the same image, and what they left in the cache is whole (a third build
/// takes every step from it).
#[test]
fn concurrent_builds_share_the_cache_without_corrupting_it() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define("[[run]]\nshell = \"echo a > /a\"\n\n[[run]]\nshell = \"echo b > /b\"\n");
    let spawn = |name: &str| {
        bench
            .builder(&["build"])
            .arg(bench.path("image.toml"))
            .arg("-o")
            .arg(bench.path(&format!("out/{name}.tar")))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (one, two) = (spawn("one"), spawn("two"));
    let (one, two) = (
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    );
    assert!(
        one.status.success() && two.status.success(),
        "{one:?} {two:?}"
    );
    assert_eq!(one.stdout, two.stdout);
    let (three, stderr) = bench.built("three", &[]);
    assert!(stderr.contains("2 steps, 2 from the cache"), "{stderr}");
    assert_eq!(
        std::fs::read(bench.path("out/one.tar")).unwrap(),
        std::fs::read(three).unwrap()
    );
    assert_eq!(
        bench.cache_entries().len(),
        2,
        "{:?}",
        bench.cache_entries()
    );
    bench.assert_nothing_left();
}

/// On a terminal each step shows as buildah shows it, and whether it came
/// from the cache; off a terminal only the summary.
#[test]
fn progress_shows_each_step_on_a_terminal_only() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    let Some(script) = testkit::require_tool("script") else {
        return;
    };
    bench.define(
        "[[copy]]\nsrc = \"image.toml\"\ndest = \"/def\"\n\n[[run]]\nshell = \"echo a > /a\"\n",
    );
    let on_terminal = || {
        let line = format!(
            "CRADLE_CACHE_DIR={} CRADLE_LAUNCHER={} {} build {} -o {}",
            bench.path("cache").display(),
            bench.launcher.display(),
            builder_bin().display(),
            bench.path("image.toml").display(),
            bench.path("out/tty.tar").display()
        );
        let out = Command::new(&script)
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    let first = on_terminal();
    assert!(
        first.contains("STEP 1/2: COPY image.toml\n--> sha256:"),
        "{first}"
    );
    assert!(
        first.contains("STEP 2/2: RUN echo a > /a\n--> sha256:"),
        "{first}"
    );
    assert!(
        first.contains("builder: 2 steps, 0 from the cache"),
        "{first}"
    );
    let second = on_terminal();
    assert!(
        second.contains("STEP 2/2: RUN echo a > /a\n--> Using cache sha256:"),
        "{second}"
    );
    let (_, quiet) = bench.built("quiet", &[]);
    assert!(!quiet.contains("STEP"), "{quiet}");
    assert!(
        quiet.contains("builder: 2 steps, 1 from the cache"),
        "{quiet}"
    );
}

/// The issue's real parts: a Debian minbase base served from 127.0.0.1, an
/// app and its config copied in, steps that use the image's own dpkg and
/// sh (and delete a whole directory of the base); the image runs, and a
/// second build is the same bytes, every step from the cache.
#[test]
fn a_debian_minbase_base_runs_steps_with_its_own_dpkg_and_sh() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    let Some(tarball) = crate::support::debian_rootfs("debian-minbase", &[]) else {
        return;
    };
    let bytes = std::fs::read(&tarball).unwrap();
    let sha = crate::support::sha256_hex(&bytes);
    let server = crate::support::Server::start(bytes);
    std::fs::write(
        bench.path("app.sh"),
        "#!/bin/sh\n. /etc/app.conf\necho \"$GREETING from $(. /etc/os-release; echo $ID)\"\n",
    )
    .unwrap();
    std::fs::write(bench.path("app.conf"), "GREETING=hello\n").unwrap();
    let text = format!(
        r#"tag = "localhost/cradle-test/debian-app:1"
[base]
source = "{}"
sha256 = "{sha}"

[[copy]]
src = "app.sh"
dest = "/usr/local/bin/app"
mode = "0755"

[[copy]]
src = "app.conf"
dest = "/etc/app.conf"

[[run]]
shell = "dpkg-query -W -f='${{Package}}\n' | sort > /installed && grep -qx dpkg /installed"

[[run]]
shell = "rm -rf /usr/share/doc && dpkg -s coreutils | grep -qx 'Status: install ok installed' && app > /app-out"

[config]
cmd = ["app"]
"#,
        server.url("/rootfs.tar.gz")
    );
    std::fs::write(bench.path("image.toml"), text).unwrap();
    let (first, stderr) = bench.built("first", &[]);
    assert!(stderr.contains("3 steps, 0 from the cache"), "{stderr}");
    let out = bench.run_in(
        &first,
        "cat /app-out; test -e /usr/share/doc || echo no-doc; grep -c . /installed",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["hello from debian", "no-doc"], "{out}");
    let packages: usize = lines[2].parse().unwrap();
    assert!(packages > 50, "{out}");
    let (second, stderr) = bench.built("second", &[]);
    assert!(stderr.contains("3 steps, 2 from the cache"), "{stderr}");
    assert_eq!(
        std::fs::read(first).unwrap(),
        std::fs::read(second).unwrap()
    );
}

/// A step another build of the launcher or of the init ran is not taken
/// from the cache: what runs a step is part of what it makes.
#[test]
fn another_launcher_or_init_runs_the_steps_again() {
    let Some(bench) = Bench::new("run") else {
        return;
    };
    bench.define("[[run]]\nshell = \"echo $RANDOM$$ > /id\"\n");
    let (_, stderr) = bench.built("first", &[]);
    assert!(stderr.contains("1 steps, 0 from the cache"), "{stderr}");
    let (_, stderr) = bench.built("same", &[]);
    assert!(stderr.contains("1 steps, 1 from the cache"), "{stderr}");

    // The same programs, one byte longer: another build of them.
    let init = testkit::require_artifact("static/cradle-init", "cargo xtask build-init").unwrap();
    for (what, original) in [("launcher", bench.launcher.clone()), ("init", init.clone())] {
        let copy = bench.path(what);
        let mut bytes = std::fs::read(&original).unwrap();
        bytes.push(0);
        std::fs::write(&copy, bytes).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = bench.path("out/launcher.tar");
    let run = bench
        .builder(&["build"])
        .arg(bench.path("image.toml"))
        .arg("-o")
        .arg(&out)
        .env("CRADLE_LAUNCHER", bench.path("launcher"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("1 steps, 0 from the cache"), "{stderr}");
    let (_, stderr) = bench.built("init", &["--init", bench.path("init").to_str().unwrap()]);
    assert!(stderr.contains("1 steps, 0 from the cache"), "{stderr}");
    bench.assert_nothing_left();
}
