//! Attacks on `[[run]]` steps and the step cache (issue 14), as a hostile
//! image author (the step's own code writes the upper directory) and a
//! hostile local user (who can write a shared cache or plant files) would
//! make them. Each test is an attack that must be refused or contained;
//! the holes they found are fixed, and the one limit left (a step's disk
//! use is bounded when it ends, not while it runs) is SECURITY.md's.
//! These run the real `builder` and `launcher` binaries as root on the
//! default image with busybox added, like `run.rs`.

use crate::support::{Steps as Bench, Tar, sha256_hex};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

impl Bench {
    /// The step cache's entries (`<key>.json`), full paths, sorted.
    fn entries(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.path("cache/steps"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// The cached layer blobs, full paths.
    fn cached_blobs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path("cache/steps/blobs"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// The image's OCI layout, unpacked: (manifest, config) as JSON and a
/// function from digest to blob path, in `dir`.
fn open_image(image: &Path, dir: &Path) -> (serde_json::Value, serde_json::Value) {
    tar::Archive::new(std::fs::File::open(image).unwrap())
        .unpack(dir)
        .unwrap();
    let json = |path: PathBuf| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let index = json(dir.join("index.json"));
    let manifest = json(blob_path(
        dir,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    let config = json(blob_path(
        dir,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    (manifest, config)
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256").join(&digest[7..])
}

/// The names of layer `index` (0 = bottom) of the image, as stored.
fn layer_names(image: &Path, index: usize) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = open_image(image, dir.path());
    let digest = manifest["layers"][index]["digest"].as_str().unwrap();
    let gz =
        flate2::read::GzDecoder::new(std::fs::File::open(blob_path(dir.path(), digest)).unwrap());
    let mut layer = tar::Archive::new(gz);
    layer
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            String::from_utf8_lossy(&e.path_bytes()).into_owned()
        })
        .collect()
}

/// Makes a FIFO at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "{path:?}");
}

/// A layer of our own making, as a gzipped tar: (bytes, digest, diff id).
fn forged_layer(name: &str, data: &[u8]) -> (Vec<u8>, String, String) {
    let mut tar = Tar::new();
    tar.file(name, data);
    let plain = tar.bytes();
    let gz = tar.gzip();
    let digest = format!("sha256:{}", sha256_hex(&gz));
    let diff_id = format!("sha256:{}", sha256_hex(&plain));
    (gz, digest, diff_id)
}

/// Something done to the cache, given the bench and a host file.
type Attack = fn(&Bench, &Path);

const ONE_STEP: &str = "[[run]]\nshell = \"echo made > /made\"\n";

// ---------------------------------------------------------------------
// The step cache.
// ---------------------------------------------------------------------

/// A cache entry's file replaced by a FIFO (by a hostile user, or any
/// stray special file): the build must treat it as a miss, not block
/// forever in `read` waiting for a writer that never comes.
#[test]
fn a_fifo_as_a_cache_entry_is_a_miss_not_a_hang() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(ONE_STEP);
    bench.built("first", &[]);
    let entries = bench.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    std::fs::remove_file(&entries[0]).unwrap();
    mkfifo(&entries[0]);
    let out = bench
        .within(bench.command("second", &[]), Duration::from_secs(60))
        .expect("the build hung on a FIFO planted as a cache entry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 steps, 0 from the cache"), "{stderr}");
    bench.assert_nothing_left();
}

/// The same with the cached blob: `File::open` of a FIFO for reading
/// blocks until a writer opens it.
#[test]
fn a_fifo_as_a_cached_blob_is_a_miss_not_a_hang() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(ONE_STEP);
    bench.built("first", &[]);
    let blobs = bench.cached_blobs();
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    std::fs::remove_file(&blobs[0]).unwrap();
    mkfifo(&blobs[0]);
    let out = bench
        .within(bench.command("second", &[]), Duration::from_secs(60))
        .expect("the build hung on a FIFO planted as a cached blob");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("1 steps, 0 from the cache"), "{stderr}");
    bench.assert_nothing_left();
}

/// The entry and the blob replaced by symlinks to a host file (standing
/// in for /etc/shadow), and a truncated blob: each is a miss, the step
/// runs again, and the host file is neither changed, removed nor copied
/// into the image.
#[test]
fn a_cache_entry_or_blob_replaced_by_a_symlink_or_truncated_is_a_miss() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(ONE_STEP);
    let (first, _) = bench.built("first", &[]);
    let secret = bench.path("shadow");
    std::fs::write(&secret, "root:$6$secret-hash:19000:0:99999:7:::\n").unwrap();
    let attacks: [(&str, Attack); 3] = [
        ("entry -> host file", |bench, secret| {
            let entry = &bench.entries()[0];
            std::fs::remove_file(entry).unwrap();
            std::os::unix::fs::symlink(secret, entry).unwrap();
        }),
        ("blob -> host file", |bench, secret| {
            let blob = &bench.cached_blobs()[0];
            std::fs::remove_file(blob).unwrap();
            std::os::unix::fs::symlink(secret, blob).unwrap();
        }),
        ("truncated blob", |bench, _| {
            let blob = &bench.cached_blobs()[0];
            let len = std::fs::metadata(blob).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(blob).unwrap();
            file.set_len(len / 2).unwrap();
        }),
    ];
    for (i, (what, attack)) in attacks.iter().enumerate() {
        attack(&bench, &secret);
        let (again, stderr) = bench.built(&format!("again{i}"), &[]);
        assert!(
            stderr.contains("1 steps, 0 from the cache"),
            "{what}: {stderr}"
        );
        assert_eq!(
            std::fs::read(&first).unwrap(),
            std::fs::read(&again).unwrap(),
            "{what}"
        );
        assert_eq!(
            std::fs::read_to_string(&secret).unwrap(),
            "root:$6$secret-hash:19000:0:99999:7:::\n",
            "{what}"
        );
        // The next build finds the repaired entry.
        let (_, stderr) = bench.built(&format!("hit{i}"), &[]);
        assert!(
            stderr.contains("1 steps, 1 from the cache"),
            "{what}: {stderr}"
        );
    }
    bench.assert_nothing_left();
}

/// An entry whose blob is intact but whose diff id is wrong: the image
/// built from the hit must not carry a config whose diff id does not
/// match its layer (the digest of the blob is checked; the diff id, which
/// the config publishes, is taken on trust).
#[test]
fn a_cache_entry_with_a_wrong_diff_id_is_not_trusted() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(ONE_STEP);
    bench.built("first", &[]);
    let entry = &bench.entries()[0];
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap();
    json["diff_id"] = format!("sha256:{}", "e".repeat(64)).into();
    std::fs::write(entry, json.to_string()).unwrap();
    let (image, _) = bench.built("second", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (manifest, config) = open_image(&image, dir.path());
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let path = blob_path(dir.path(), layer["digest"].as_str().unwrap());
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(
            diff_id.as_str().unwrap(),
            format!("sha256:{}", sha256_hex(&plain)),
            "the config's diff id does not match layer {}",
            layer["digest"]
        );
    }
}

/// A cache directory another local user owns (they made it first at a
/// path the builder was going to use, or it is shared): they can write an
/// entry of their own for the key of a step they can predict (it is a
/// hash of the definition), and plant `steps.lock` as a symlink. The root
/// builder must refuse such a cache (or ignore it), not take their layer
/// nor create files where their symlink points.
#[test]
fn a_cache_directory_another_user_owns_is_not_trusted() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(ONE_STEP);
    bench.built("first", &[]);
    // The attacker's layer, under the key the definition hashes to.
    let (gz, digest, diff_id) = forged_layer("pwned", b"planted by another user\n");
    std::fs::write(bench.path("cache/steps/blobs").join(&digest[7..]), &gz).unwrap();
    let entry = serde_json::json!({ "digest": digest, "size": gz.len(), "diff_id": diff_id });
    for path in bench.entries() {
        std::fs::write(path, entry.to_string()).unwrap();
    }
    let lock = bench.path("cache/steps.lock");
    std::fs::remove_file(&lock).unwrap();
    let victim = bench.path("created-by-root");
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    // The cache is the other user's (uid 65534), and open to anyone.
    chown_tree(&bench.path("cache"), 65534);
    std::fs::set_permissions(bench.path("cache"), std::fs::Permissions::from_mode(0o777)).unwrap();

    let out = bench.build("second", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut holes = Vec::new();
    if victim.exists() {
        holes.push("steps.lock was followed: the builder created the symlink's target".into());
    }
    if out.status.success() {
        let names = layer_names(&bench.path("out/second.tar"), 2);
        if names.iter().any(|n| n == "pwned") {
            holes.push(format!("the planted layer was used: {names:?}"));
        }
    } else if !stderr.contains(&bench.path("cache").display().to_string()) {
        holes.push(format!("refused without naming the cache: {stderr}"));
    }
    assert!(holes.is_empty(), "{holes:#?}\n{stderr}");
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap().flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

/// The same command with a different env, user, workdir or network is a
/// different step: none may take another's layer. The control (the same
/// definition again) is a hit, so the misses are not vacuous.
#[test]
fn steps_differing_only_in_env_user_workdir_or_network_do_not_share_an_entry() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    let command = "shell = \"cat /proc/sys/kernel/random/uuid > /tmp/id-$(id -u)\"\n";
    let variants = [
        "",
        "env = [\"V=1\"]\n",
        "env = [\"V=2\"]\n",
        "user = \"1:1\"\n",
        "workdir = \"/tmp\"\n",
        "network = \"host\"\n",
    ];
    for (i, extra) in variants.iter().enumerate() {
        bench.define(&format!("[[run]]\n{command}{extra}"));
        let (_, stderr) = bench.built(&format!("v{i}"), &[]);
        assert!(
            stderr.contains("1 steps, 0 from the cache"),
            "variant {extra:?} took another's layer: {stderr}"
        );
    }
    assert_eq!(bench.entries().len(), variants.len());
    for (i, extra) in variants.iter().enumerate() {
        bench.define(&format!("[[run]]\n{command}{extra}"));
        let (_, stderr) = bench.built(&format!("again{i}"), &[]);
        assert!(
            stderr.contains("1 steps, 1 from the cache"),
            "{extra:?}: {stderr}"
        );
    }
}

/// Three builds of one definition at once, sharing a cache: all succeed
/// with the same bytes, one entry is left, and no temporary file.
#[test]
fn concurrent_builds_writing_one_entry_agree() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define("[[run]]\nshell = \"busybox sleep 1; echo x > /x\"\n");
    let children: Vec<_> = (0..3)
        .map(|i| {
            bench
                .command(&format!("c{i}"), &[])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let first = std::fs::read(bench.path("out/c0.tar")).unwrap();
    for i in 1..3 {
        assert!(std::fs::read(bench.path(&format!("out/c{i}.tar"))).unwrap() == first);
    }
    assert_eq!(bench.entries().len(), 1);
    assert_eq!(bench.cached_blobs().len(), 1, "{:?}", bench.cached_blobs());
    bench.assert_nothing_left();
}

// ---------------------------------------------------------------------
// The step's upper directory.
// ---------------------------------------------------------------------

// What holds today: past the size bound, the step's layer is refused,
// naming the bound, and nothing is kept. That the step could write the
// 64 MiB to the build's filesystem before the refusal is the limit
// SECURITY.md states (the bound is checked when the step has ended).
#[test]
fn a_step_that_writes_past_the_limit_is_refused_and_leaves_nothing() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(
        "[[run]]\nshell = \"busybox dd if=/dev/zero of=/big bs=1M count=64 2>/dev/null\"\n",
    );
    let out = bench
        .within(
            {
                let mut cmd = bench.command("image", &[]);
                cmd.env("CRADLE_MAX_COPY_SIZE", "4M");
                cmd
            },
            Duration::from_secs(300),
        )
        .expect("hung");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("past the limit of") && stderr.contains("CRADLE_MAX_COPY_SIZE"),
        "{stderr}"
    );
    bench.assert_nothing_left();
}

/// A directory replaced by a file and a file by a directory, a hard link
/// to a file of a lower layer, names with a newline, a byte that is not
/// UTF-8 and a leading `..`: the image shows exactly what the step's
/// container saw (the same listing, taken in the step and in the image).
#[test]
fn replaced_directories_links_and_odd_names_are_recorded_as_the_step_saw_them() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    let view = "cd /a && for f in * .??*; do printf '%s|' \\\"$f\\\"; busybox stat -c '%F' \\\"$f\\\"; done; [ /a/lower -ef /a/hl ] && echo linked; cat dir file/in";
    bench.define(&format!(
        r#"
[[run]]
shell = "mkdir -p /a/dir/sub && echo in-dir > /a/dir/sub/x && echo file > /a/file && echo lower > /a/lower"

[[run]]
shell = "rm -r /a/dir && echo now-a-file > /a/dir && rm /a/file && mkdir /a/file && echo now-a-dir > /a/file/in && ln /a/lower /a/hl && echo nl > \"$(printf '/a/new\\nline')\" && echo ff > \"$(printf '/a/\\377')\" && echo dots > '/a/..dots' && {{ {view}; }} > /seen"
"#
    ));
    let (image, _) = bench.built("image", &[]);
    let seen = bench.run_in(&image, "cat /seen");
    assert!(
        seen.contains("linked") && seen.contains("now-a-dir"),
        "{seen}"
    );
    let now = bench.run_in(&image, &view.replace("\\\"", "\""));
    assert_eq!(now, seen);
}

/// A directory nested deeper than PATH_MAX (4096 bytes of path): the
/// builder either records it or refuses it with an error naming the step;
/// it does not crash (stack, fds) nor leave anything behind.
#[test]
fn a_directory_deeper_than_path_max_is_recorded_or_refused_cleanly() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(
        &format!(
            "[[run]]\nshell = \"mkdir -p /a/{half} /b/{half} && echo deep > /a/{half}/f && mv /a /b/{half}/\"\n",
            half = "d/".repeat(1500)
        ),
    );
    let out = bench.build("image", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "killed by a signal: {stderr}");
    if out.status.success() {
        let names = layer_names(&bench.path("out/image.tar"), 2);
        let deepest = names.iter().map(|n| n.len()).max().unwrap_or(0);
        assert!(deepest > 6000, "{deepest}");
    } else {
        assert!(stderr.contains("step 1 (RUN"), "{stderr}");
    }
    bench.assert_nothing_left();
}

/// As real root a step may try to mknod a 0/0 character device,
/// overlayfs's own whiteout form, at a path no lower layer has. If it can,
/// the layer must say what the container saw there, and the image must
/// show the same; if it cannot, no whiteout may reach the layer.
#[test]
fn a_whiteout_made_by_the_step_at_a_new_path_means_what_the_container_saw() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(
        "[[run]]\nshell = \"{ busybox mknod /ghost c 0 0 && echo made || echo refused; [ -e /ghost ] && echo present || echo absent; } > /seen\"\n",
    );
    let (image, _) = bench.built("image", &[]);
    let seen = bench.run_in(&image, "cat /seen");
    let names = layer_names(&image, 2);
    if seen.starts_with("refused") {
        assert_eq!(names, ["seen"]);
    }
    let now = bench.run_in(&image, "[ -e /ghost ] && echo present || echo absent");
    assert_eq!(
        now,
        seen.lines().nth(1).unwrap().to_string() + "\n",
        "{names:?}"
    );
}

/// A layer made under a large CRADLE_MAX_COPY_SIZE, reused by a build
/// that sets a small one: the limit must hold for the reused layer too
/// (the cache key does not hold the limit).
#[test]
fn a_cached_layer_is_held_to_the_current_size_limit() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(
        "[[run]]\nshell = \"busybox dd if=/dev/urandom of=/big bs=1M count=8 2>/dev/null\"\n",
    );
    bench.built("large", &[]);
    let mut cmd = bench.command("small", &[]);
    cmd.env("CRADLE_MAX_COPY_SIZE", "4M");
    let out = bench.within(cmd, Duration::from_secs(300)).expect("hung");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("limit of 4194304 bytes"),
        "an 8 MiB layer came from the cache past a 4 MiB limit: {stderr}"
    );
}

// ---------------------------------------------------------------------
// Network.
// ---------------------------------------------------------------------

/// A step without `network` cannot reach a listener on the host's IPv6
/// loopback either (run.rs tests 127.0.0.1).
#[test]
fn a_step_cannot_reach_the_hosts_ipv6_loopback() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
        testkit::require(false, "no IPv6 loopback here");
        return;
    };
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    bench.define(&format!(
        "[[run]]\nshell = \"echo hi | busybox nc -w 3 ::1 {port}\"\n"
    ));
    let out = bench.build("image", &[]);
    assert!(!out.status.success(), "the step reached the host: {out:?}");
    assert!(listener.accept().is_err(), "a connection came in");
    // The control: the host itself reaches the listener.
    std::net::TcpStream::connect(("::1", port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while listener.accept().is_err() {
        assert!(Instant::now() < deadline, "the listener does not accept");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Work directories another local user planted beside the output (a
/// symlink and a directory named like a killed build's): the root build's
/// cleanup follows neither out of the output directory. And while a step
/// runs, what it made in its upper directory on the host (here a
/// setuid-root copy of busybox; a `b 8 0` node mode 0666 would be the
/// host's disk) must be reachable by no other local user: some directory
/// on its path must be closed to others, though the output directory
/// itself is an ordinary 0755 one.
#[test]
fn planted_work_directories_are_not_followed_and_the_upper_is_private() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(
        "[[run]]\nshell = \"cp /bin/busybox /suid && chmod 4755 /suid && busybox sleep 3\"\n",
    );
    for dir in [bench.dir.path().to_path_buf(), bench.path("out")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let target = bench.path("precious");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("file"), "keep").unwrap();
    std::os::unix::fs::symlink(&target, bench.path("out/.cradle-build-evil")).unwrap();
    let planted = bench.path("out/.cradle-build-planted");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::symlink(&target, planted.join("link")).unwrap();
    let mut child = bench
        .command("image", &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // (the setuid file's mode, whether every directory above it lets
    // others through)
    let mut seen = Vec::new();
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        for work in std::fs::read_dir(bench.path("out")).unwrap().flatten() {
            let Ok(steps) = std::fs::read_dir(work.path()) else {
                continue;
            };
            for step in steps.flatten() {
                let suid = step.path().join("writable/upper/suid");
                if let Ok(file) = std::fs::symlink_metadata(&suid) {
                    let open = suid
                        .ancestors()
                        .skip(1)
                        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 != 0));
                    seen.push((file.mode() & 0o7777, open));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(child.wait().unwrap().success());
    assert!(
        seen.iter().any(|&(mode, _)| mode & 0o4000 != 0),
        "never saw the step's setuid file: {seen:?}"
    );
    assert!(
        seen.iter().all(|&(_, open)| !open),
        "the step's setuid-root file is reachable by every local user"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("file")).unwrap(),
        "keep"
    );
    assert!(std::fs::symlink_metadata(bench.path("out/.cradle-build-evil")).is_ok());
}

/// The builder SIGKILLed just after its step ends, at several moments
/// while the layer is made and written to the cache: whatever entry is
/// left under its final name names a whole blob of the right digest, and
/// the next build reclaims the rest and succeeds.
#[test]
fn a_builder_killed_while_it_makes_or_caches_the_layer_leaves_no_half_entry() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    bench.define(
        "[[run]]\nshell = \"busybox dd if=/dev/urandom of=/noise bs=1M count=12 2>/dev/null; echo step-done >&2\"\n",
    );
    // Rounds killed before the entry was written: some must be, or the
    // kills came too late to test anything.
    let mut early = 0;
    for (round, delay) in [0u64, 150, 400, 900, 1600].into_iter().enumerate() {
        let _ = std::fs::remove_dir_all(bench.path("cache/steps"));
        let mut child = bench
            .command(&format!("k{round}"), &[])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("step-done") {
            if stderr.read(&mut byte).unwrap() == 0 {
                panic!("{}", String::from_utf8_lossy(&seen));
            }
            seen.push(byte[0]);
        }
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        early += usize::from(bench.entries().is_empty());
        for entry in bench.entries() {
            let json: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
            let digest = json["digest"].as_str().unwrap();
            let blob = bench.path("cache/steps/blobs").join(&digest[7..]);
            let bytes = std::fs::read(&blob)
                .unwrap_or_else(|e| panic!("round {round}: {entry:?} names a missing blob: {e}"));
            assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), digest);
        }
    }
    assert!(early > 0, "every kill came after the entry was written");
    bench.built("after", &[]);
    bench.assert_nothing_left();
}

/// A step that leaves a daemon behind (in the background, its own
/// session): the step ends when its command does, and nothing of it is
/// left running on the host to write into the upper while the layer is
/// made, or afterwards.
#[test]
fn a_daemon_left_by_a_step_does_not_outlive_it() {
    let Some(bench) = Bench::new("attack") else {
        return;
    };
    let marker = format!("cradle-attack-daemon-{}", std::process::id());
    bench.define(&format!(
        "[[run]]\nshell = \"busybox setsid busybox sh -c 'while :; do echo x >> /late; busybox sleep 1; done; : {marker}' </dev/null >/dev/null 2>&1 & busybox sleep 1\"\n"
    ));
    let started = Instant::now();
    let (image, _) = bench.built("image", &[]);
    assert!(started.elapsed() < Duration::from_secs(60));
    let running = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
    });
    assert!(!running, "the step's daemon outlived the build");
    assert!(layer_names(&image, 2).contains(&"late".to_string()));
    bench.assert_nothing_left();
}
