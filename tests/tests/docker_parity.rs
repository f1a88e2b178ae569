//! End to end: what a docker user meets first, run through the launcher as
//! they would type it (issue 12, "Defects"): naming one image of a `docker
//! save` archive, PID 1 with and without the init, the working directory of
//! a non-root user, docker's validation of flags and env files, messages
//! that say what is wrong, help text and exit codes.

mod common;

use common::{Kit, entries, report, value};
use std::path::{Path, PathBuf};
use std::process::Output;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a refusal of the launcher itself: 125, `what` on stderr, and
/// no container state left behind.
#[track_caller]
fn refused(kit: &Kit, out: &Output, what: &str) {
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = stderr(out);
    assert!(err.contains(what), "`{what}` not in: {err}");
    let containers = kit.root.path().join("containers");
    if containers.exists() {
        let left = entries(&containers);
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// A busybox image without our init (a foreign one), with `config`.
fn foreign_image(kit: &Kit, name: &str, config: serde_json::Value) -> PathBuf {
    let busybox = testkit::which("busybox").expect("busybox");
    let image = kit.root.path().join(name);
    common::write_image_with(&image, &[common::busybox_layer(&busybox)], config);
    image
}

fn has_busybox() -> bool {
    testkit::require_tool("busybox").is_some()
}

// `FILE.tar:NAME` was split at the last colon: no name with a colon (every
// `docker save` tag, a registry with a port) could be picked, and an
// archive of several images ran the first silently.
#[test]
fn names_with_colons_pick_their_image_and_several_images_need_a_name() {
    let Some(kit) = Kit::new() else { return };
    if !has_busybox() {
        return;
    }
    let busybox = testkit::which("busybox").unwrap();
    let saved = kit.root.path().join("saved.tar");
    let config = |mark: &str| serde_json::json!({"Entrypoint": ["/bin/sh", "-c", "echo $MARK"], "Env": [format!("MARK={mark}")]});
    common::write_docker_save_images(
        &saved,
        &[common::busybox_layer(&busybox)],
        &[
            (
                config("first"),
                &["docker.io/library/first:1.0", "first:latest"],
            ),
            (config("second"), &["localhost:5000/team/second:v2"]),
        ],
    );
    let run = |image: &str| kit.cmd(&[]).arg(image).output().unwrap();
    let at = |name: &str| format!("{}:{name}", saved.display());
    for (name, mark) in [
        ("localhost:5000/team/second:v2", "second"),
        ("docker.io/library/first:1.0", "first"),
        // As docker writes it for `docker save first:1.0`.
        ("first:1.0", "first"),
        ("first", "first"),
    ] {
        let out = run(&at(name));
        assert!(out.status.success(), "{name}: {out:?}");
        assert_eq!(stdout(&out), format!("{mark}\n"), "{name}");
    }
    let out = run(&saved.display().to_string());
    refused(&kit, &out, "holds several images");
    let err = stderr(&out);
    for name in [
        "docker.io/library/first:1.0",
        "localhost:5000/team/second:v2",
    ] {
        assert!(err.contains(name), "{name} not listed: {err}");
    }
    let out = run(&at("localhost:5000/team/third:v1"));
    refused(
        &kit,
        &out,
        "has no image named `localhost:5000/team/third:v1`",
    );
    assert!(
        stderr(&out).contains("`localhost:5000/team/second:v2`"),
        "{out:?}"
    );
}

/// `pid1` of a probe report run with `flags`, the probe given as
/// `--entrypoint` when `entrypoint`, else as the command.
fn pid1(kit: &Kit, image: &Path, flags: &[&str], entrypoint: bool) -> String {
    let mut cmd = kit.cmd(flags);
    if entrypoint {
        cmd.args(["--entrypoint", "/probe"])
            .arg(image)
            .arg("report");
    } else {
        cmd.arg(image).args(["/probe", "report"]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{flags:?} {entrypoint}: {out:?}");
    value(&report(&out), "pid1")
}

// docker: `--entrypoint` replaces the Entrypoint, our init's included; the
// init stays PID 1 unless --no-init, where the command is PID 1. Every
// combination, for our image (the init in its Entrypoint) and a foreign one,
// under `run` and in `bundle`'s config.json.
#[test]
fn pid1_is_the_init_unless_no_init_whatever_the_entrypoint() {
    let Some(kit) = Kit::new() else { return };
    if !has_busybox() {
        return;
    }
    let foreign = foreign_image(
        &kit,
        "foreign.tar",
        serde_json::json!({"Cmd": ["/probe", "report"]}),
    );
    let with_init = "/sbin/cradle-init -- /probe report";
    let without = "/probe report";
    for image in [&kit.image, &foreign] {
        for entrypoint in [false, true] {
            let shown = format!("{} entrypoint={entrypoint}", image.display());
            assert_eq!(pid1(&kit, image, &[], entrypoint), with_init, "{shown}");
            assert_eq!(
                pid1(&kit, image, &["--no-init"], entrypoint),
                without,
                "{shown} --no-init"
            );
        }
    }
    // The foreign image's own Cmd.
    let out = kit.cmd(&["--no-init"]).arg(&foreign).output().unwrap();
    assert_eq!(value(&report(&out), "pid1"), without, "{out:?}");

    // `bundle` writes the same command lines.
    for image in [&kit.image, &foreign] {
        for (flags, args) in [
            (
                &[][..],
                &["/sbin/cradle-init", "--", "/probe", "report"][..],
            ),
            (&["--no-init"][..], &["/probe", "report"][..]),
            (
                &["--entrypoint", "/probe"][..],
                &["/sbin/cradle-init", "--", "/probe", "report"][..],
            ),
            (
                &["--entrypoint", "/probe", "--no-init"][..],
                &["/probe", "report"][..],
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let bundle = dir.path().join("b");
            let command: &[&str] = if flags.contains(&"--entrypoint") {
                &["report"]
            } else {
                &["/probe", "report"]
            };
            let out = bundle_cmd(&kit)
                .args(flags)
                .arg(image)
                .arg(&bundle)
                .args(command)
                .output()
                .unwrap();
            assert!(out.status.success(), "{flags:?}: {out:?}");
            let config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap())
                    .unwrap();
            assert_eq!(
                config["process"]["args"],
                serde_json::json!(args),
                "{} {flags:?}",
                image.display()
            );
        }
    }
}

fn bundle_cmd(kit: &Kit) -> std::process::Command {
    let mut cmd = std::process::Command::new(&kit.launcher);
    cmd.env("CRADLE_ROOT", kit.root.path())
        .env_remove("RUST_BACKTRACE")
        .arg("bundle")
        .stdin(std::process::Stdio::null());
    cmd
}

// The workdir was entered after the switch to the user: `-u nobody` on an
// image whose WorkingDir is root's 0700 home failed (125). runc and podman
// enter it first, as root.
#[test]
fn a_user_starts_in_a_workdir_only_root_may_enter() {
    let Some(kit) = Kit::new() else { return };
    if !has_busybox() {
        return;
    }
    let busybox = testkit::which("busybox").unwrap();
    let mut base = common::busybox_layer_without(&busybox, &["root"]);
    base.dir_mode("root", 0o700)
        .file("root/secret", b"s", 0o600);
    let image = kit.root.path().join("rootdir.tar");
    common::write_image_with(
        &image,
        &[base],
        serde_json::json!({"Cmd": ["/bin/sh"], "WorkingDir": "/root"}),
    );
    let out = kit
        .cmd(&["-u", "nobody"])
        .arg(&image)
        .args(["sh", "-c", "pwd; id -u; cat secret || echo denied"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // In it, but still without the right to read what root keeps there.
    assert_eq!(stdout(&out), "/root\n65534\ndenied\n", "{out:?}");
}

// Entered before the user switch, the workdir is still resolved inside the
// container's root: a WorkingDir that is a symlink to a host path, absolute
// or through `..`, lands in the container's own tree, never the host's.
#[test]
fn a_workdir_symlinked_out_of_the_root_stays_inside_it() {
    let Some(kit) = Kit::new() else { return };
    if !has_busybox() {
        return;
    }
    let busybox = testkit::which("busybox").unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("host-marker"), b"host").unwrap();
    let up = "../".repeat(30);
    for target in [
        host.path().display().to_string(),
        format!("{up}{}", host.path().display()),
    ] {
        let mut base = common::busybox_layer(&busybox);
        base.symlink("work", &target);
        let image = kit.root.path().join("symlinked-workdir.tar");
        common::write_image_with(
            &image,
            &[base],
            serde_json::json!({"Cmd": ["/bin/sh"], "WorkingDir": "/work"}),
        );
        // As root: the one who could write anywhere the directory led.
        let out = kit
            .cmd(&[])
            .arg(&image)
            .args(["sh", "-c", "ls -a; touch from-container"])
            .output()
            .unwrap();
        assert!(
            !stdout(&out).contains("host-marker"),
            "{target}: the host's directory: {out:?}"
        );
        // Made and entered in the container's own tree, empty.
        assert!(out.status.success(), "{target}: {out:?}");
        assert_eq!(stdout(&out), ".\n..\n", "{target}");
        let host_entries = entries(host.path());
        assert_eq!(host_entries, ["host-marker"], "{target}: {out:?}");
    }
}

// docker refuses these with 125 before anything runs; they ran (`--memory
// 1k` then reported an OOM), became `/relative`, or went in as they were.
#[test]
fn flags_docker_refuses_are_refused_before_anything_runs() {
    let Some(kit) = Kit::new() else { return };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let too_many = (cpus + 98).to_string();
    for (flags, what) in [
        (
            &["--memory", "1k"][..],
            "below the minimum memory limit of 6m",
        ),
        (
            &["--memory", "6291455b"][..],
            "below the minimum memory limit",
        ),
        (
            &["-w", "relative"][..],
            "`relative` is invalid: it must be an absolute path",
        ),
        (
            &["--cpus", &too_many][..],
            "the range of CPUs is from 0.01 to",
        ),
        (
            &["--cpus", "0.001"][..],
            "the range of CPUs is from 0.01 to",
        ),
        (&["--cpus", "nan"][..], "the range of CPUs"),
        (
            &["-e", "=x"][..],
            "invalid environment variable `=x`: the name is empty",
        ),
        (
            &["-e", "BAD NAME=x"][..],
            "the name `BAD NAME` contains whitespace",
        ),
    ] {
        let out = kit.cmd(flags).arg(&kit.image).arg("true").output().unwrap();
        refused(&kit, &out, what);
    }
    // At the limits, they run.
    let out = kit
        .cmd(&["--memory", "6m", "--cpus", "0.01", "-w", "/tmp/new"])
        .arg(&kit.image)
        .args(["sh", "-c", "pwd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "/tmp/new\n");
}

// docker's env-file rules (moby opts/envfile.go): leading whitespace goes,
// values are kept exactly (trailing blanks too), and a name with blanks
// (`export X`, `X `) is an error naming the line, not a variable.
#[test]
fn env_files_follow_dockers_rules() {
    let Some(kit) = Kit::new() else { return };
    let file = kit.root.path().join("env");
    let run = |text: &[u8]| {
        std::fs::write(&file, text).unwrap();
        kit.cmd(&["--env-file", file.to_str().unwrap()])
            .arg(&kit.image)
            .args(["sh", "-c", "printf '[%s]' \"$A\" \"$B\" \"$C\" \"$D\""])
            .output()
            .unwrap()
    };
    let out = run(b"\xEF\xBB\xBFA=x  \r\n   B=\t y \t\n# C=no\n  # also a comment\n\nC==c\nD\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "[x  ][\t y \t][=c][]");
    for (text, line, what) in [
        (
            &b"A=1\nexport X=1\n"[..],
            2,
            "the name `export X` contains whitespace",
        ),
        (
            &b"  SPACED = x\n"[..],
            1,
            "the name `SPACED ` contains whitespace",
        ),
        (&b"=x\n"[..], 1, "the name is empty"),
        (&b"A=\xff\n"[..], 1, "not UTF-8"),
    ] {
        let out = run(text);
        refused(
            &kit,
            &out,
            &format!("env file `{}` line {line}: ", file.display()),
        );
        assert!(stderr(&out).contains(what), "{what}: {out:?}");
    }
}

// A cut archive said "neither index.json nor manifest.json"; a random file
// printed its raw "header" bytes to the terminal.
#[test]
fn broken_archives_say_what_is_wrong_in_plain_text() {
    let Some(kit) = Kit::new() else { return };
    let image = std::fs::read(&kit.image).unwrap();
    let dir = kit.root.path();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let mut random = vec![0u8; 4096];
    // A fixed pseudo-random sequence (xorshift): any bytes but a tar header.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let cases = [
        (
            write("half.tar", &image[..image.len() / 2]),
            "it is truncated",
        ),
        // Cut at a block boundary, before the end-of-archive blocks.
        (
            write("blocks.tar", &image[..image.len() / 2 / 512 * 512]),
            "it is truncated",
        ),
        (write("random.tar", &random), "it is not a tar archive"),
        (
            write("tiny.tar", b"hello\n"),
            "shorter than one tar header: it looks like text",
        ),
        (
            write("zipped.tar", &[&[0x1f, 0x8b, 8, 0][..], &random].concat()),
            "gzip-compressed",
        ),
    ];
    for (path, what) in cases {
        let out = kit.cmd(&[]).arg(&path).arg("true").output().unwrap();
        refused(&kit, &out, what);
        let err = stderr(&out);
        assert!(err.contains(&format!("`{}`", path.display())), "{err}");
        assert!(
            out.stderr
                .iter()
                .all(|&b| b == b'\n' || (b' '..=b'~').contains(&b)),
            "not plain text: {err:?}"
        );
    }
}

#[test]
fn a_volume_that_is_not_absolute_says_which_side_and_why() {
    let Some(kit) = Kit::new() else { return };
    for (spec, what) in [
        // `data:/data` is the named volume `data`, as in docker.
        ("./data:/data", "the host path `./data` is not absolute"),
        ("/tmp:data", "the container path `data` is not absolute"),
        ("/tmp:/data:rx", "the mode `rx` is neither ro nor rw"),
        ("/tmp", "want HOST:CONTAINER[:ro|:rw]"),
    ] {
        let out = kit
            .cmd(&["-v", spec])
            .arg(&kit.image)
            .arg("true")
            .output()
            .unwrap();
        refused(&kit, &out, &format!("invalid volume `{spec}`: {what}"));
    }
}

// The wait of --stop-timeout was silent and a second ^C did nothing; docker
// kills at once on a second signal.
#[test]
fn stopping_says_so_and_a_second_signal_kills_at_once() {
    use std::io::BufRead;
    let Some(kit) = Kit::new() else { return };
    let mut child = kit
        .cmd(&["--stop-timeout", "60"])
        .arg(&kit.image)
        .args([
            "sh",
            "-c",
            "trap '' TERM INT; echo ready; while :; do sleep 1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut said = String::new();
    err.read_line(&mut said).unwrap();
    assert!(
        said.contains("stopping the container") && said.contains("60 s"),
        "{said}"
    );
    let start = std::time::Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{status:?}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

// Rootless, only the user's own id is mapped without a subordinate range:
// `-u 1000` failed with a bare EINVAL.
#[test]
fn rootless_user_without_subordinate_ids_is_told_what_to_configure() {
    let Some(kit) = Kit::new() else { return };
    let Some(setpriv) = testkit::require_tool("setpriv") else {
        return;
    };
    // A uid with no range in /etc/subuid (nobody has none on Debian).
    let uid = 65534;
    let listed = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("nobody:") || l.starts_with(&format!("{uid}:")))
    };
    assert!(!listed("/etc/subuid") && !listed("/etc/subgid"));
    let top = tempfile::Builder::new()
        .prefix("cradle-rootless-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(top.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = |from: &Path, name: &str, mode: u32| {
        let to = top.path().join(name);
        common::copy_file(from, &to, mode);
        to
    };
    copy(&common::init().unwrap(), "cradle-init", 0o755);
    let launcher = copy(&kit.launcher, "launcher", 0o755);
    let image = copy(&kit.image, "image.tar", 0o644);
    let cache = top.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::os::unix::fs::chown(&cache, Some(uid), Some(uid)).unwrap();
    let out = std::process::Command::new(setpriv)
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&launcher)
        .env("CRADLE_ROOT", &cache)
        .env_remove("RUST_BACKTRACE")
        .args(["run", "-u", "1000"])
        .arg(&image)
        .arg("true")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = stderr(&out);
    for what in [
        "switching to uid 1000",
        "/etc/subuid",
        "/etc/subgid",
        "EINVAL",
    ] {
        assert!(err.contains(what), "`{what}` not in: {err}");
    }
}

#[test]
fn help_names_registry_references_and_every_positional_argument() {
    let Some(launcher) = common::launcher() else {
        return;
    };
    let help = |args: &[&str]| {
        let out = std::process::Command::new(&launcher)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        stdout(&out)
    };
    let run = help(&["run", "--help"]);
    assert!(run.contains("registry reference"), "{run}");
    for args in [
        &["run", "--help"][..],
        &["export", "--help"][..],
        &["bundle", "--help"][..],
        &["image", "rm", "--help"][..],
    ] {
        let text = help(args);
        let section = text
            .split("Arguments:\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or_else(|| panic!("{args:?}: no Arguments section: {text}"));
        for line in section
            .lines()
            .filter(|l| l.trim_start().starts_with(['<', '[']))
        {
            let described = line
                .trim()
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            assert!(described, "{args:?}: `{line}` has no help text");
        }
    }
    let bundle = help(&["bundle", "--help"]);
    assert!(bundle.contains("--entrypoint"), "{bundle}");
    assert!(bundle.contains("--no-init"), "{bundle}");
}

// A mistyped flag was answered with a hidden, test-only one (`--mount` →
// "a similar argument exists: '--subnet'").
#[test]
fn suggestions_never_name_hidden_flags() {
    let Some(launcher) = common::launcher() else {
        return;
    };
    for (typo, hidden) in [
        ("--subnets", "--subnet"),
        ("--subne", "--subnet"),
        ("--bridge", "--bridge-name"),
    ] {
        let out = std::process::Command::new(&launcher)
            .args(["run", typo, "x", "image.tar"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("unexpected argument '{typo}'")),
            "{err}"
        );
        assert!(!err.contains(&format!("'{hidden}'")), "{typo}: {err}");
    }
    // A visible flag is still suggested.
    let out = std::process::Command::new(&launcher)
        .args(["run", "--entrypoin", "x", "image.tar"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("a similar argument exists: '--entrypoint'"),
        "{out:?}"
    );
}

// `export` exited 1 where run and bundle exit 125 for the same error.
#[test]
fn export_fails_with_125_like_run_and_bundle() {
    let Some(kit) = Kit::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&kit.launcher)
        .env("CRADLE_ROOT", kit.root.path())
        .args(["export", "/nonexistent/image.tar"])
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr(&out).contains("/nonexistent/image.tar"), "{out:?}");
}

// bundle bound /etc/hosts, /etc/hostname and /etc/resolv.conf read-only;
// under `launcher run`, docker and podman they are writable.
#[test]
fn bundle_etc_files_are_writable_as_under_run() {
    let Some(kit) = Kit::new() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    let out = bundle_cmd(&kit)
        .arg(&kit.image)
        .arg(&bundle)
        .arg("true")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let mounts = config["mounts"].as_array().unwrap();
    for file in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        let mount = mounts
            .iter()
            .find(|m| m["destination"] == file)
            .unwrap_or_else(|| panic!("no mount for {file}"));
        let options: Vec<&str> = mount["options"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.as_str())
            .collect();
        assert!(
            options.contains(&"rw") && !options.contains(&"ro"),
            "{file}: {options:?}"
        );
    }
    // And under run, where the image's own are covered too.
    let out = kit
        .cmd(&[])
        .arg(&kit.image)
        .args(["sh", "-c", "echo 10.0.0.9 extra >> /etc/hosts && echo ok"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "ok\n", "{out:?}");
}
