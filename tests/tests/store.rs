//! End to end: the image store under `CRADLE_ROOT`. Only its user can reach
//! it, a root others can write is refused, `launcher image ls|rm|prune`
//! show and remove images and their layers, and whatever moment a launcher
//! is SIGKILLed at, the next run leaves nothing of it behind.

mod common;

use common::{CgroupParent, Kit, Layer};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `launcher image ARGS` with the kit's store.
fn image_cmd(kit: &Kit, root: &Path, args: &[&str]) -> Output {
    Command::new(&kit.launcher)
        .env("CRADLE_ROOT", root)
        .env_remove("RUST_BACKTRACE")
        .arg("image")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the launcher")
}

fn run_true(kit: &Kit, image: &Path) {
    let out = kit.cmd(&[]).arg(image).arg("true").output().unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// [`names`] but the lock files a layer or an image keeps while it is
/// there (`<layer>.lock` beside its directory, `<key>.lock` beside its
/// record): a lock file without its layer or image still shows.
fn store_names(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| {
            let Some(stem) = n.strip_suffix(".lock") else {
                return true;
            };
            !(dir.join(stem).is_dir() || dir.join(format!("{stem}.json")).is_file())
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

/// The layer digests (hex) the store's records name.
fn recorded_layers(root: &Path) -> Vec<String> {
    let mut layers: Vec<String> = names(&root.join("images"))
        .iter()
        .filter(|n| n.ends_with(".json"))
        .flat_map(|n| {
            let text = std::fs::read(root.join("images").join(n)).unwrap();
            let record: serde_json::Value = serde_json::from_slice(&text).unwrap();
            record["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    l.as_str()
                        .unwrap()
                        .trim_start_matches("sha256:")
                        .to_string()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    layers.sort();
    layers.dedup();
    layers
}

/// Two images sharing their busybox layer, each with a top layer of its own.
fn two_images(kit: &Kit) -> Option<(PathBuf, PathBuf)> {
    let busybox = testkit::require_tool("busybox")?;
    let init = std::fs::read(common::init()?).unwrap();
    let mut made = vec![];
    for name in ["one", "two"] {
        let mut top = Layer::default();
        top.file("sbin/cradle-init", &init, 0o755)
            .file("etc/which", name.as_bytes(), 0o644);
        let path = kit.root.path().join(format!("{name}.tar"));
        common::write_image(
            &path,
            &[common::busybox_layer(&busybox), top],
            &["/sbin/cradle-init", "--"],
            &["/bin/sh"],
        );
        made.push(path);
    }
    Some((made[0].clone(), made[1].clone()))
}

#[test]
fn image_ls_shows_images_and_rm_removes_them_and_the_layers_only_they_use() {
    let Some(kit) = Kit::new() else { return };
    let Some((one, two)) = two_images(&kit) else {
        return;
    };
    let root = kit.root.path();
    run_true(&kit, &one);
    run_true(&kit, &two);
    let layers = store_names(&root.join("layers/sha256"));
    assert_eq!(layers.len(), 3, "a shared base and two tops: {layers:?}");
    // Each layer and image keeps its lock file: a warm run makes none.
    let lock_inodes = |dir: &str| -> Vec<u64> {
        names(&root.join(dir))
            .iter()
            .filter(|n| n.ends_with(".lock"))
            .map(|n| std::fs::metadata(root.join(dir).join(n)).unwrap().ino())
            .collect()
    };
    let (layer_locks, image_locks) = (lock_inodes("layers/sha256"), lock_inodes("images"));
    assert_eq!((layer_locks.len(), image_locks.len()), (3, 2));
    run_true(&kit, &two);
    assert_eq!(lock_inodes("layers/sha256"), layer_locks);
    assert_eq!(lock_inodes("images"), image_locks);
    let out = image_cmd(&kit, root, &["ls"]);
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["IMAGE", "ID", "LAYERS", "SIZE", "LAST", "USED"]);
    let row_of = |path: &Path| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&path.display().to_string()))
            .unwrap_or_else(|| panic!("{} not listed:\n{table}", path.display()));
        line.split_whitespace().map(String::from).collect()
    };
    let row = row_of(&two);
    assert_eq!(row[1].len(), 12, "{row:?}");
    assert_eq!(row[2], "2", "{row:?}");
    assert!(
        row[3].ends_with("MB"),
        "busybox is over a megabyte: {row:?}"
    );
    assert_eq!(row[4..], ["just", "now"]);
    let id_of_two = row[1].clone();
    row_of(&one);

    let out = image_cmd(&kit, root, &["rm", &one.display().to_string()]);
    assert!(out.status.success(), "{out:?}");
    assert!(one.exists(), "rm never removes the user's archive");
    let left = store_names(&root.join("layers/sha256"));
    assert_eq!(left.len(), 2, "the shared layer stays: {left:?}");
    assert_eq!(left, recorded_layers(root));
    let out = image_cmd(&kit, root, &["rm", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "launcher: no image `nope` in the store\n"
    );

    // In use: refused, nothing removed.
    let mut cmd = kit.cmd(&["-i"]);
    cmd.arg(&two)
        .args(["sh", "-c", "echo ready; cat >/dev/null"]);
    let mut running = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(running.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let out = image_cmd(&kit, root, &["rm", &id_of_two]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "launcher: image `{}` is used by a running container\n",
            two.display()
        )
    );
    drop(running.stdin.take());
    assert!(running.wait().unwrap().success());
    assert_eq!(store_names(&root.join("layers/sha256")).len(), 2);

    let out = image_cmd(&kit, root, &["rm", &id_of_two]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("removed {}", two.display())),
        "{out:?}"
    );
    // Their lock files went with them.
    assert_eq!(names(&root.join("layers/sha256")), Vec::<String>::new());
    assert_eq!(names(&root.join("images")), Vec::<String>::new());
    let out = image_cmd(&kit, root, &["ls"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

/// A lock file the test holds, as a live launcher would.
fn hold(path: &Path) -> std::fs::File {
    let file = std::fs::File::create(path).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    file
}

#[test]
fn image_prune_leaves_only_what_images_reference_and_live_launchers_hold() {
    let Some(kit) = Kit::new() else { return };
    let root = kit.root.path();
    run_true(&kit, &kit.image);
    let referenced = recorded_layers(root);
    assert!(!referenced.is_empty());
    assert_eq!(store_names(&root.join("layers/sha256")), referenced);
    // What dead launchers and interrupted pulls leave, and an old layer.
    let junk_layer = "a".repeat(64);
    for dir in [
        format!("layers/sha256/{junk_layer}/bin"),
        "tmp/0123-77/etc".into(),
        "images/.cradle-pull-x1/blobs/sha256".into(),
        "containers/dead/upper".into(),
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    for file in [
        format!("layers/sha256/{junk_layer}.lock"),
        format!("layers/sha256/{}.lock", referenced[0]),
        "tmp/0123-77.lock".into(),
        "tmp/container-ab.lock".into(),
        "images/.image-y2".into(),
        "images/pull.lock".into(),
        "images/0000.json".into(),
        "containers/dead/lock".into(),
    ] {
        std::fs::write(root.join(file), "").unwrap();
    }
    // A live launcher's unpack in progress.
    std::fs::create_dir_all(root.join("tmp/beef-1/etc")).unwrap();
    let live = hold(&root.join("tmp/beef-1.lock"));

    let out = image_cmd(&kit, root, &["prune"]);
    assert!(out.status.success(), "{out:?}");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains(&format!("removed layer sha256:{junk_layer}")),
        "{report}"
    );
    assert_eq!(store_names(&root.join("layers/sha256")), referenced);
    assert_eq!(names(&root.join("tmp")), ["beef-1", "beef-1.lock"]);
    assert_eq!(names(&root.join("containers")), Vec::<String>::new());
    let images = store_names(&root.join("images"));
    assert!(
        images.len() == 1 && images[0].ends_with(".json"),
        "{images:?}"
    );
    drop(live);

    // -a: an image a container runs stays, with its layers.
    let mut cmd = kit.cmd(&["-i"]);
    cmd.arg(&kit.image)
        .args(["sh", "-c", "echo ready; cat >/dev/null"]);
    let mut running = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(running.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let out = image_cmd(&kit, root, &["prune", "-a"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        store_names(&root.join("layers/sha256"))
            .into_iter()
            .filter(|n| !n.ends_with(".lock"))
            .collect::<Vec<_>>(),
        referenced
    );
    drop(running.stdin.take());
    assert!(running.wait().unwrap().success());
    let out = image_cmd(&kit, root, &["prune", "-a"]);
    assert!(out.status.success(), "{out:?}");
    for sub in ["layers/sha256", "images", "tmp", "containers"] {
        assert_eq!(names(&root.join(sub)), Vec::<String>::new(), "{sub}");
    }
}

/// SIGKILL at 30 random moments of a cold run (the store pruned before
/// each, so the kill falls in unpacking, in staging the container, in its
/// setup, while it runs or while it is cleaned up). The next run reclaims
/// all of it: no state directory, unpack, record or lock file, mount,
/// process or cgroup is left, and the layers are the ones its image needs.
#[test]
fn a_launcher_killed_at_30_random_moments_leaves_nothing_after_the_next_run() {
    let Some(kit) = Kit::new() else { return };
    let root = kit.root.path();
    let root_mode = mode(root);
    let parent = CgroupParent::new();
    let limits = ["--memory", "64m", "--cgroup-parent", &parent.name];
    let marker = format!("0.3{:05}", std::process::id() % 100000);
    let started = Instant::now();
    run_true(&kit, &kit.image);
    let cold = started.elapsed().max(Duration::from_millis(100));
    let mut delays = vec![];
    for _ in 0..30 {
        let out = image_cmd(&kit, root, &["prune", "-a"]);
        assert!(out.status.success(), "{out:?}");
        let mut random = [0u8; 8];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").unwrap(),
            &mut random,
        )
        .unwrap();
        // Up to twice a cold run: some kills land after the container ended.
        let delay = u64::from_le_bytes(random) % (2 * cold.as_millis() as u64);
        delays.push(delay);
        let mut child = kit
            .cmd(&limits)
            .arg(&kit.image)
            .args(["sleep", &marker])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        child.wait().unwrap();
    }
    let out = kit
        .cmd(&limits)
        .arg(&kit.image)
        .arg("true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with(&format!("sleep {marker}")) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let context = format!("kills after {delays:?} ms");
    assert_eq!(processes_with(&format!("sleep {marker}")), 0, "{context}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let at = root.display().to_string();
    assert!(!mounts.contains(&at), "mounts left, {context}:\n{mounts}");
    for sub in ["containers", "tmp"] {
        assert_eq!(
            names(&root.join(sub)),
            Vec::<String>::new(),
            "{sub}, {context}"
        );
    }
    assert_eq!(
        store_names(&root.join("layers/sha256")),
        recorded_layers(root),
        "{context}"
    );
    let images = store_names(&root.join("images"));
    assert!(
        images.iter().all(|n| n.ends_with(".json")),
        "{images:?}, {context}"
    );
    assert_eq!(
        parent.containers(),
        Vec::<String>::new(),
        "cgroups, {context}"
    );
    assert_eq!(mode(root), root_mode, "{context}");
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(marker)
            })
        })
        .count()
}

/// The default image's layers hold programs, setuid-root `bin/mount` among
/// them: through a cache others can traverse (0711, as it was), any local
/// user could run them, as root (CVE-2021-41091). The store the launcher
/// makes is 0700: `nobody` gets EACCES, and root's containers,
/// `--userns=auto` ones too, still run.
#[test]
fn a_user_other_than_root_cannot_execute_anything_from_the_store() {
    let Some(kit) = Kit::new() else { return };
    let Some(setpriv) = testkit::require_tool("setpriv") else {
        return;
    };
    let top = tempfile::Builder::new()
        .prefix("cradle-store-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = top.path().join("store");
    let out = kit
        .cmd(&[])
        .env("CRADLE_ROOT", &root)
        .arg(&kit.image)
        .arg("true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for sub in ["", "layers", "layers/sha256", "images", "tmp", "containers"] {
        assert_eq!(mode(&root.join(sub)), 0o700, "{sub}");
    }
    let program = store_names(&root.join("layers/sha256"))
        .into_iter()
        .flat_map(|d| {
            let bin = root.join("layers/sha256").join(d).join("bin");
            ["mount", "busybox", "cat"].map(|p| bin.join(p))
        })
        .find(|p| p.is_file())
        .expect("a layer with bin/mount, bin/busybox or bin/cat");
    // Through a shell: setpriv's own execve still has root's capabilities
    // while it looks the path up (they go at the exec), so it would
    // traverse anything.
    let as_nobody = |script: &str, path: &Path| {
        Command::new(&setpriv)
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .args(["/bin/sh", "-c", script])
            .arg(path)
            .output()
            .unwrap()
    };
    let out = as_nobody(r#"exec "$0" --version"#, &program);
    assert_eq!(
        out.status.code(),
        Some(126),
        "nobody ran {}: {out:?}",
        program.display()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");
    let out = as_nobody(r#"exec ls "$0""#, &root);
    assert!(!out.status.success(), "nobody listed the store: {out:?}");
    for args in [&[][..], &["--userns", "auto"][..]] {
        let out = kit
            .cmd(args)
            .env("CRADLE_ROOT", &root)
            .arg(&kit.image)
            .args(["sh", "-c", "echo ran"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    }
    assert_eq!(
        mode(&root),
        0o700,
        "the auto container's search entry went with it"
    );
    assert_eq!(mode(&root.join("containers")), 0o700);
}

/// `CRADLE_ROOT=/tmp/x` with mode 1777 became 0711: anyone could have
/// planted layers there first. Refused, and left as it was; so is a
/// directory of another user.
#[test]
fn a_state_directory_others_can_write_or_own_is_refused_unchanged() {
    let Some(kit) = Kit::new() else { return };
    let shared = tempfile::Builder::new()
        .prefix("cradle-1777-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let theirs = tempfile::Builder::new()
        .prefix("cradle-nobody-")
        .tempdir()
        .unwrap();
    std::os::unix::fs::chown(theirs.path(), Some(65534), Some(65534)).unwrap();
    for (dir, why) in [
        (shared.path(), "is writable by others".to_string()),
        (
            theirs.path(),
            "belongs to uid 65534, not to uid 0".to_string(),
        ),
    ] {
        let before = mode(dir);
        let expected = format!(
            "launcher: state directory `{}` {why}; use a directory only you can write\n",
            dir.display()
        );
        let out = kit
            .cmd(&[])
            .env("CRADLE_ROOT", dir)
            .arg(&kit.image)
            .arg("true")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
        let out = image_cmd(&kit, dir, &["ls"]);
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
        assert_eq!(mode(dir), before, "{}", dir.display());
        assert_eq!(names(dir), Vec::<String>::new(), "{}", dir.display());
    }
}
