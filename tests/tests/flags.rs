//! End to end: the `launcher run` flags docker users reach for (issue 12,
//! "Flags"), each with docker's meaning and its exit 125 for a bad value:
//! capabilities, `--privileged`, `--security-opt`, `--ulimit`, `--device`,
//! `/etc/hosts` and `/etc/resolv.conf` flags, `--mount` and named volumes,
//! `--sysctl`, `--shm-size`, `--group-add`, `--stop-signal`, `--label`,
//! `--pull`.

mod common;

use common::{Kit, Layer};
use std::path::{Path, PathBuf};
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `launcher run ARGS IMAGE sh -c SCRIPT`.
fn sh(kit: &Kit, args: &[&str], script: &str) -> Output {
    sh_in(kit, args, &kit.image, script)
}

fn sh_in(kit: &Kit, args: &[&str], image: &Path, script: &str) -> Output {
    kit.cmd(args)
        .arg(image)
        .args(["sh", "-c", script])
        .output()
        .expect("running the launcher")
}

/// A capability set of /proc/PID/status as a number.
fn caps(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("`{hex}` is not a capability set"))
}

/// Fails unless `out` is the launcher's exit 125 with `want` in its message.
#[track_caller]
fn refused(out: &Output, want: &str) {
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = stderr(out);
    assert!(err.contains(want), "wanted `{want}` in: {err}");
    assert!(err.starts_with("launcher: "), "{err}");
}

/// Nothing of a refused run stays in the store's container directory.
#[track_caller]
fn no_containers_left(kit: &Kit) {
    let dir = kit.root.path().join("containers");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// busybox, the init and `extra` on top; root's, bob's (1000) and wheel (10)
/// entries in /etc/passwd and /etc/group.
fn busybox_image(kit: &Kit, name: &str, extra: impl FnOnce(&mut Layer)) -> Option<PathBuf> {
    let busybox = testkit::require_tool("busybox")?;
    let init = common::init()?;
    let mut top = Layer::default();
    top.file("sbin/cradle-init", &std::fs::read(init).unwrap(), 0o755);
    extra(&mut top);
    let image = kit.root.path().join(format!("{name}.tar"));
    common::write_image(
        &image,
        &[common::busybox_layer(&busybox), top],
        &["/sbin/cradle-init", "--"],
        &["/bin/sh"],
    );
    Some(image)
}

// ---- capabilities ----------------------------------------------------------

const CAP_CHOWN: u64 = 1 << 0;
const CAP_KILL: u64 = 1 << 5;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_SYS_ADMIN: u64 = 1 << 21;
/// Docker's default set.
const DEFAULT_CAPS: u64 = 0xa80425fb;

#[test]
fn cap_add_and_cap_drop_change_the_workloads_capabilities() {
    let Some(kit) = Kit::new() else { return };
    let report = |args: &[&str]| {
        let out = kit.probe_run(args, &[]);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let r = common::report(&out);
        let (eff, bnd) = (
            caps(&common::value(&r, "CapEff")),
            caps(&common::value(&r, "CapBnd")),
        );
        assert_eq!(eff, bnd, "{args:?}");
        eff
    };
    assert_eq!(report(&[]), DEFAULT_CAPS);
    // Names with or without CAP_, in any case.
    let eff = report(&["--cap-add", "net_admin", "--cap-drop", "CAP_CHOWN"]);
    assert_eq!(eff, DEFAULT_CAPS & !CAP_CHOWN | CAP_NET_ADMIN);
    assert_eq!(
        report(&["--cap-drop", "ALL", "--cap-add", "Cap_Kill"]),
        CAP_KILL
    );
    let all = report(&["--cap-add", "all", "--cap-drop", "sys_admin"]);
    assert_eq!(all & CAP_SYS_ADMIN, 0);
    assert!(all.count_ones() >= 37, "{all:#x}");
}

#[test]
fn an_unknown_capability_is_refused_with_dockers_message() {
    let Some(kit) = Kit::new() else { return };
    for (flag, name) in [("--cap-add", "CAP_FLY"), ("--cap-drop", "bogus")] {
        let out = kit.probe_run(&[flag, name], &[]);
        refused(
            &out,
            &format!("invalid {flag}: unknown capability: \"{name}\""),
        );
    }
    no_containers_left(&kit);
}

/// Docker's profile lets CAP_SYS_ADMIN mount; our default filter alone
/// would have refused with EPERM whatever the capabilities.
#[test]
fn cap_add_sys_admin_widens_the_seccomp_filter_as_dockers_profile_does() {
    let Some(kit) = Kit::new() else { return };
    let script = "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t && echo mounted; \
                  grep -q ' /mnt/t ' /proc/self/mountinfo && echo listed";
    let out = sh(&kit, &["--cap-add", "SYS_ADMIN"], script);
    assert_eq!(stdout(&out), "mounted\nlisted\n", "{out:?}");
    let out = sh(&kit, &[], script);
    assert_eq!(stdout(&out), "", "{out:?}");
    assert!(stderr(&out).contains("ermission denied"), "{out:?}");
}

#[test]
fn privileged_has_every_capability_no_seccomp_and_no_no_new_privs() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&["--privileged"], &[]);
    assert!(out.status.success(), "{out:?}");
    let r = common::report(&out);
    // Every capability the launcher has (this test's own bounding set).
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|hex| caps(hex.trim()))
        .unwrap();
    assert_eq!(caps(&common::value(&r, "CapEff")), own & ((1 << 41) - 1));
    assert_eq!(common::value(&r, "Seccomp"), "0");
    assert_eq!(common::value(&r, "NoNewPrivs"), "0");
}

// ---- --security-opt ---------------------------------------------------------

#[test]
fn seccomp_unconfined_and_no_new_privileges_false_turn_each_off() {
    let Some(kit) = Kit::new() else { return };
    let status = |args: &[&str]| {
        let out = kit.probe_run(args, &[]);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let r = common::report(&out);
        (
            common::value(&r, "Seccomp"),
            common::value(&r, "NoNewPrivs"),
        )
    };
    assert_eq!(status(&[]), ("2".into(), "1".into()));
    let opt = ["--security-opt", "seccomp=unconfined"];
    assert_eq!(status(&opt), ("0".into(), "1".into()));
    for nnp in ["no-new-privileges=false", "no-new-privileges:false"] {
        assert_eq!(status(&["--security-opt", nnp]), ("2".into(), "0".into()));
    }
    let on = ["--privileged", "--security-opt", "no-new-privileges"];
    assert_eq!(status(&on).1, "1");
}

/// A setuid-root program run by bob: with no_new_privs (our default) it
/// gains nothing; with `no-new-privileges=false` it runs with root's
/// capabilities, as it does under docker.
#[test]
fn no_new_privileges_false_lets_a_setuid_program_gain_privileges() {
    let Some(kit) = Kit::new() else { return };
    let probe = std::fs::read(&kit.probe).unwrap();
    let Some(image) = busybox_image(&kit, "setuid", |l| {
        l.file("suid-probe", &probe, 0o4755);
    }) else {
        return;
    };
    let eff = |args: &[&str]| {
        let mut all = vec!["-u", "1000"];
        all.extend(args);
        let out = kit
            .cmd(&all)
            .arg(&image)
            .arg("/suid-probe")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let r = common::report(&out);
        assert_eq!(common::value(&r, "uid"), "1000");
        caps(&common::value(&r, "CapEff"))
    };
    assert_eq!(eff(&[]), 0);
    assert_eq!(
        eff(&["--security-opt", "no-new-privileges=false"]),
        DEFAULT_CAPS
    );
}

#[test]
fn a_seccomp_profile_in_dockers_format_is_enforced() {
    let Some(kit) = Kit::new() else { return };
    let profile = kit.root.path().join("profile.json");
    // Allow all but mkdir (EACCES), and kill(2) with signal 9 (EPERM);
    // chmod only for those holding a capability the container lacks.
    let json = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 9, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
             "excludes": {"caps": ["CAP_SYS_MODULE"]}},
        ]
    });
    std::fs::write(&profile, json.to_string()).unwrap();
    let opt = format!("seccomp={}", profile.display());
    let script = "mkdir /d 2>&1; sleep 30 & kill -9 $! 2>&1; kill -15 $! && echo term; \
                  touch /f; chmod 600 /f 2>&1; echo done";
    let out = sh(&kit, &["--security-opt", &opt], script);
    let text = stdout(&out);
    assert!(text.contains("Permission denied"), "{out:?}");
    assert!(text.contains("Operation not permitted"), "{out:?}");
    assert!(
        text.contains("term\n") && text.ends_with("done\n"),
        "{out:?}"
    );
    assert_eq!(text.matches("Operation not permitted").count(), 2, "{text}");
    // The same script without the profile meets none of it.
    let out = sh(&kit, &[], script);
    assert_eq!(stdout(&out), "term\ndone\n", "{out:?}");
}

#[test]
fn a_bad_security_opt_or_profile_is_refused_naming_it() {
    let Some(kit) = Kit::new() else { return };
    let profile = kit.root.path().join("bad.json");
    std::fs::write(&profile, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
    let opt = format!("seccomp={}", profile.display());
    refused(
        &kit.probe_run(&["--security-opt", &opt], &[]),
        "unsupported action `SCMP_ACT_NOPE`",
    );
    refused(
        &kit.probe_run(&["--security-opt", "seccomp=/nonexistent.json"], &[]),
        "`/nonexistent.json`",
    );
    refused(
        &kit.probe_run(&["--security-opt", "no-new-privileges=maybe"], &[]),
        "invalid --security-opt `no-new-privileges=maybe`",
    );
    no_containers_left(&kit);
}

// ---- --ulimit ----------------------------------------------------------------

#[test]
fn ulimits_are_set_for_the_workload() {
    let Some(kit) = Kit::new() else { return };
    let script = "echo $(ulimit -Sn) $(ulimit -Hn) $(ulimit -Sc) $(ulimit -Hc)";
    let args = ["--ulimit", "nofile=1024:4096", "--ulimit", "core=-1"];
    let out = sh(&kit, &args, script);
    assert_eq!(stdout(&out), "1024 4096 unlimited unlimited\n", "{out:?}");
    let out = sh(&kit, &["--ulimit", "nofile=15000"], script);
    assert!(stdout(&out).starts_with("15000 15000 "), "{out:?}");
    let out = sh(&kit, &[], script);
    assert!(!stdout(&out).starts_with("1024 4096"), "{out:?}");
}

#[test]
fn a_bad_ulimit_is_refused_with_dockers_message() {
    let Some(kit) = Kit::new() else { return };
    for (spec, want) in [
        (
            "nofile=20:10",
            "ulimit soft limit must be less than or equal to hard limit: 20 > 10",
        ),
        ("files=10", "invalid ulimit type: files"),
        ("nofile=ten", "invalid ulimit argument: ten"),
    ] {
        refused(&kit.probe_run(&["--ulimit", spec], &[]), want);
    }
    // Past fs.nr_open: the kernel refuses, the launcher says which limit.
    let out = kit.probe_run(&["--ulimit", "nofile=2000000000"], &[]);
    refused(&out, "--ulimit nofile=2000000000");
    no_containers_left(&kit);
}

// ---- --group-add, --stop-signal -------------------------------------------

#[test]
fn group_add_adds_groups_by_name_and_number() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = busybox_image(&kit, "groups", |_| {}) else {
        return;
    };
    let args = ["-u", "bob", "--group-add", "tty", "--group-add", "4242"];
    let out = sh_in(
        &kit,
        &args,
        &image,
        "id -G | tr ' ' '\\n' | sort -n | tr '\\n' ' '",
    );
    assert_eq!(stdout(&out), "5 10 1000 4242 ", "{out:?}");
    let out = sh_in(&kit, &["--group-add", "nosuch"], &image, "id -G");
    refused(&out, "unable to find group `nosuch`");
}

#[test]
fn stop_signal_overrides_the_images() {
    use std::io::{BufRead, Read};
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&["--stop-signal", "usr1"]);
    cmd.arg(&kit.image).args(["/probe", "wait-signal"]);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the launcher");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest.trim(), format!("got {}", libc::SIGUSR1));
    assert_eq!(status.code(), Some(0));
    refused(
        &kit.probe_run(&["--stop-signal", "SIGNOPE"], &[]),
        "invalid --stop-signal `SIGNOPE`: invalid signal",
    );
}

// ---- /etc/hosts and /etc/resolv.conf ------------------------------------------

#[test]
fn add_host_dns_and_dns_search_reach_the_generated_files() {
    let Some(kit) = Kit::new() else { return };
    let args = [
        "--add-host",
        "db.internal:10.1.2.3",
        "--add-host",
        "v6host=fd00::7",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:3",
    ];
    let script = "cat /etc/hosts; echo ---; cat /etc/resolv.conf";
    for net in [&["--network", "none"][..], &["--net", "host"]] {
        let mut all = args.to_vec();
        all.extend(net);
        let out = sh(&kit, &all, script);
        assert!(out.status.success(), "{out:?}");
        let text = stdout(&out);
        let (hosts, resolv) = text.split_once("---\n").unwrap();
        assert!(
            hosts.contains("10.1.2.3\tdb.internal\n"),
            "{net:?}: {hosts}"
        );
        assert!(hosts.contains("fd00::7\tv6host\n"), "{net:?}: {hosts}");
        let servers: Vec<&str> = resolv
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        assert_eq!(servers, ["nameserver 192.0.2.53"], "{net:?}: {resolv}");
        let search: Vec<&str> = resolv.lines().filter(|l| l.starts_with("search")).collect();
        assert_eq!(search, ["search corp.example"], "{net:?}: {resolv}");
        let options: Vec<&str> = resolv
            .lines()
            .filter(|l| l.starts_with("options"))
            .collect();
        assert_eq!(options, ["options ndots:3"], "{net:?}: {resolv}");
    }
}

#[test]
fn bad_add_host_and_dns_values_are_refused() {
    let Some(kit) = Kit::new() else { return };
    for (flag, value, want) in [
        ("--add-host", "justaname", "bad format for add-host"),
        ("--add-host", "db:10.1.2", "invalid IP address in add-host"),
        ("--add-host", "a b:10.1.2.3", "invalid host name"),
        ("--dns", "resolver.example", "not an IP address"),
        ("--dns-search", "bad domain", "not a valid domain name"),
    ] {
        let out = kit.probe_run(&[flag, value], &[]);
        refused(&out, &format!("invalid {flag} `{value}`: {want}"));
    }
    no_containers_left(&kit);
}

// ---- --device, --privileged's root, --sysctl, --shm-size ---------------------

/// A block node of loop device 7:99 made on the host for `--device`: not
/// on docker's allowlist, and harmless (an unbound loop device reads as
/// empty and refuses writes with ENXIO).
fn loop_node(kit: &Kit) -> PathBuf {
    let node = kit.root.path().join("loop99");
    let c = std::ffi::CString::new(node.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; makes one node in the test's own directory.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o640, libc::makedev(7, 99)) };
    assert_eq!(rc, 0, "mknod {}", node.display());
    node
}

/// Reads and writes `/dev/myloop`: `read=…` and `write=…`, ok or the error.
const READ_WRITE: &str = r#"try() { n=$1; shift; if e=$("$@" 2>&1 >/dev/null); then echo "$n=ok"; else echo "$n=$e"; fi; };
stat -c 'node=%F %t:%T %a' /dev/myloop; try read dd if=/dev/myloop of=/dev/null count=1;
try write dd if=/dev/zero of=/dev/myloop count=1"#;

#[test]
fn device_gives_the_container_a_host_node_with_the_access_asked_for() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = busybox_image(&kit, "devices", |_| {}) else {
        return;
    };
    let node = loop_node(&kit);
    let field = |out: &Output, key: &str| {
        stdout(out)
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key}= in {out:?}"))
    };
    let spec = format!("{}:/dev/myloop", node.display());
    let out = sh_in(&kit, &["--device", &spec], &image, READ_WRITE);
    assert_eq!(
        field(&out, "node"),
        "block special file 7:63 640",
        "{out:?}"
    );
    assert_eq!(field(&out, "read"), "ok", "{out:?}");
    let write = field(&out, "write");
    assert!(
        !write.contains("Operation not permitted") && write != "ok",
        "{write}"
    );
    // Read-only: the cgroup refuses opening it for writing.
    let out = sh_in(
        &kit,
        &["--device", &format!("{spec}:r")],
        &image,
        READ_WRITE,
    );
    assert_eq!(field(&out, "read"), "ok", "{out:?}");
    assert!(
        field(&out, "write").contains("Operation not permitted"),
        "{out:?}"
    );
    // Without the flag, the same node made inside cannot be opened; with
    // a --device-cgroup-rule, it can, for what the rule says.
    let script = format!("mknod -m 640 /dev/myloop b 7 99; {READ_WRITE}");
    let out = sh_in(&kit, &[], &image, &script);
    assert!(
        field(&out, "read").contains("Operation not permitted"),
        "{out:?}"
    );
    let out = sh_in(&kit, &["--device-cgroup-rule", "b 7:* r"], &image, &script);
    assert_eq!(field(&out, "read"), "ok", "{out:?}");
    assert!(
        field(&out, "write").contains("Operation not permitted"),
        "{out:?}"
    );
    refused(
        &kit.probe_run(&["--device-cgroup-rule", "c 1:3 rwx"], &[]),
        "invalid device cgroup format",
    );
    for (spec, want) in [
        ("/etc/hostname", "is not a device node"),
        ("/dev/null:/dev/n:rwx", "invalid device mode: rwx"),
        ("/nonexistent-device", "error gathering device information"),
    ] {
        refused(&kit.probe_run(&["--device", spec], &[]), want);
    }
    no_containers_left(&kit);
}

#[test]
fn privileged_gets_the_hosts_devices_and_writable_unmasked_proc_and_sys() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = busybox_image(&kit, "privileged", |_| {}) else {
        return;
    };
    let script = "grep -E ' /(proc/sys|proc/kcore|sys) ' /proc/self/mountinfo | cut -d' ' -f5,6; \
                  ls /dev; dd if=/dev/loop-control of=/dev/null count=0 2>&1 && echo opened";
    let out = sh_in(&kit, &["--privileged"], &image, script);
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    let mounts: Vec<&str> = text.lines().filter(|l| l.starts_with('/')).collect();
    assert_eq!(
        mounts.len(),
        1,
        "only /sys, no /proc/sys or /proc/kcore cover: {text}"
    );
    assert!(mounts[0].starts_with("/sys rw,"), "{text}");
    let host_only = std::fs::read_dir("/dev")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("loop") || n.starts_with("tty1"));
    if let Some(name) = host_only {
        assert!(text.lines().any(|l| l == name), "{name} missing: {text}");
    }
    if Path::new("/dev/loop-control").exists() {
        assert!(text.contains("opened"), "{text}");
    }
    // The default container has none of that.
    let out = sh_in(&kit, &[], &image, script);
    let text = stdout(&out);
    assert!(text.contains("/proc/sys ro,"), "{text}");
    assert!(text.contains("/sys ro,"), "{text}");
    assert!(!text.lines().any(|l| l == "loop-control"), "{text}");
    assert!(!text.contains("opened"), "{text}");
}

#[test]
fn namespaced_sysctls_are_set_and_others_refused() {
    let Some(kit) = Kit::new() else { return };
    let args = [
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=80",
        "--sysctl",
        "kernel.shmmni=1000",
    ];
    let script = "cat /proc/sys/net/ipv4/ip_unprivileged_port_start /proc/sys/kernel/shmmni";
    let out = sh(&kit, &args, script);
    assert_eq!(stdout(&out), "80\n1000\n", "{out:?}");
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host.trim(), "80", "the host's own value changed");
    refused(
        &kit.probe_run(&["--sysctl", "kernel.core_pattern=|/tmp/x"], &[]),
        "it would change the host",
    );
    refused(
        &kit.probe_run(&["--sysctl", "vm.swappiness=1"], &[]),
        "it would change the host",
    );
    refused(
        &kit.probe_run(
            &["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"],
            &[],
        ),
        "not allowed in the host's network namespace",
    );
    no_containers_left(&kit);
}

#[test]
fn shm_size_sizes_dev_shm() {
    let Some(kit) = Kit::new() else { return };
    let script = "grep ' /dev/shm ' /proc/self/mountinfo";
    let out = sh(&kit, &["--shm-size", "2m"], script);
    assert!(stdout(&out).contains("size=2048k"), "{out:?}");
    // Without it, and with 0 (docker's default too; never an uncapped tmpfs).
    for args in [&[][..], &["--shm-size", "0"]] {
        let out = sh(&kit, args, script);
        assert!(stdout(&out).contains("size=65536k"), "{args:?}: {out:?}");
    }
    let out = kit.probe_run(&["--shm-size", "lots"], &[]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr(&out).contains("`lots`"), "{out:?}");
}

// ---- named volumes and --mount -------------------------------------------------

/// The image's /data holds a file, a directory, and a symlink out of the
/// root; /escape is a symlink that climbs above the root to the host's /etc.
fn volume_image(kit: &Kit) -> Option<PathBuf> {
    busybox_image(kit, "volumes", |l| {
        l.dir("data")
            .file("data/seed.txt", b"from the image\n", 0o640)
            .dir("data/sub")
            .file("data/sub/deep.txt", b"deep\n", 0o600)
            .symlink("data/shadow", "/etc/shadow")
            .symlink("escape", "../../../../../../../../etc");
    })
}

#[test]
fn a_named_volume_is_made_on_first_use_with_the_images_content_and_kept() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = volume_image(&kit) else {
        return;
    };
    let dir = kit.root.path().join("volumes/appdata");
    let out = sh_in(
        &kit,
        &["-v", "appdata:/data"],
        &image,
        "cat /data/seed.txt /data/sub/deep.txt; echo written > /data/new.txt",
    );
    assert_eq!(stdout(&out), "from the image\ndeep\n", "{out:?}");
    assert_eq!(
        std::fs::read_to_string(dir.join("new.txt")).unwrap(),
        "written\n"
    );
    // Copied as a symlink, never followed to a file of the host.
    let link = std::fs::symlink_metadata(dir.join("shadow")).unwrap();
    assert!(link.file_type().is_symlink());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("seed.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // Kept, and not copied into again: what the container removed stays gone.
    let out = sh_in(
        &kit,
        &["--mount", "type=volume,source=appdata,target=/data"],
        &image,
        "rm /data/seed.txt; cat /data/new.txt",
    );
    assert_eq!(stdout(&out), "written\n", "{out:?}");
    let out = sh_in(
        &kit,
        &["-v", "appdata:/data:ro"],
        &image,
        "ls /data; touch /data/x",
    );
    assert_eq!(stdout(&out), "new.txt\nshadow\nsub\n", "{out:?}");
    assert!(stderr(&out).contains("Read-only file system"), "{out:?}");
}

/// A target that is the image's symlink climbing out of the root is
/// resolved inside it: the volume gets the image's /etc, not the host's.
#[test]
fn copy_up_through_a_symlink_out_of_the_root_copies_the_images_files() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = volume_image(&kit) else {
        return;
    };
    let out = sh_in(&kit, &["-v", "climb:/escape"], &image, "cat /escape/group");
    assert!(stdout(&out).contains("wheel:x:10:bob"), "{out:?}");
    let dir = kit.root.path().join("volumes/climb");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The image's /etc and the container's own files bound there; none of
    // the host's (fstab, shadow, …).
    assert_eq!(
        names,
        ["group", "hostname", "hosts", "passwd", "resolv.conf"],
        "only the container's /etc"
    );
    let hostname = std::fs::read_to_string(dir.join("hostname")).unwrap();
    assert_ne!(
        hostname,
        std::fs::read_to_string("/etc/hostname").unwrap_or_default()
    );
}

#[test]
fn mount_binds_and_tmpfs_read_like_dockers() {
    let Some(kit) = Kit::new() else { return };
    let host = kit.root.path().join("shared");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "host file\n").unwrap();
    let bind = format!("type=bind,src={},dst=/shared,readonly", host.display());
    let args = [
        "--mount",
        &bind,
        "--mount",
        "type=tmpfs,destination=/scratch,tmpfs-size=1m",
    ];
    let script = "cat /shared/in.txt; touch /shared/x 2>/dev/null || echo ro; \
                  grep ' /scratch ' /proc/self/mountinfo | grep -o 'size=[0-9a-z]*'";
    let out = sh(&kit, &args, script);
    assert_eq!(stdout(&out), "host file\nro\nsize=1024k\n", "{out:?}");
    for (spec, want) in [
        (
            "type=bind,src=/nonexistent-src,dst=/x",
            "bind source path does not exist",
        ),
        (
            "type=bind,src=/tmp,dst=/x,propagation=shared",
            "unexpected key",
        ),
        ("type=volume,dst=/x", "anonymous volumes are not supported"),
        ("type=overlay,src=a,dst=/x", "unknown mount type"),
        ("type=volume,src=../up,dst=/x", "invalid characters"),
    ] {
        refused(&kit.probe_run(&["--mount", spec], &[]), want);
    }
    refused(&kit.probe_run(&["-v", "b@d:/x"], &[]), "invalid characters");
    no_containers_left(&kit);
}

// ---- --pull, --ca-cert, --authfile, --tls-verify ----------------------------

/// A `docker-registry` on a free port of 127.0.0.1 (with htpasswd basic
/// auth for `user`, with TLS from a CA of its own), killed when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(user: Option<(&str, &str)>, tls: bool) -> Option<Registry> {
        let program = testkit::require_tool("docker-registry")?;
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if tls {
            let (cert, key) = certificates(dir.path());
            config += &format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
        }
        if let Some((user, password)) = user {
            let file = dir.path().join("htpasswd");
            let hash = bcrypt::hash(password, 5).unwrap();
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: flags\n    path: {}\n",
                file.display()
            );
        }
        let config_file = dir.path().join("config.yml");
        std::fs::write(&config_file, config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = std::process::Command::new(program)
            .arg("serve")
            .arg(&config_file)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "no registry on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Some(Registry { child, port, dir })
    }

    fn reference(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA (`DIR/ca.pem`) and a certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file)
}

/// An auth.json for `host` with `user:password`.
fn auth_file(dir: &Path, host: &str, user: &str, password: &str) -> PathBuf {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut b64 = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            b64.push(match i <= chunk.len() {
                true => ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char,
                false => '=',
            });
        }
    }
    let file = dir.join("auth.json");
    let json = serde_json::json!({"auths": {host: {"auth": b64}}});
    std::fs::write(&file, json.to_string()).unwrap();
    file
}

/// `builder push IMAGE REF [ARGS]`, with no credential file but `args`'.
fn push(image: &Path, reference: &str, args: &[&str]) -> Option<()> {
    let builder = testkit::require_artifact("debug/builder", "cargo build -p builder")?;
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(builder)
        .arg("push")
        .args(args)
        .arg(image)
        .arg(reference)
        .env("HOME", home.path())
        .env("CRADLE_CACHE_DIR", home.path())
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "push: {out:?}");
    Some(())
}

/// An image whose /marker says `text`.
fn marked_image(kit: &Kit, text: &str) -> Option<PathBuf> {
    busybox_image(kit, &format!("marked-{text}"), |l| {
        l.file("marker", format!("{text}\n").as_bytes(), 0o644);
    })
}

/// `launcher run ARGS REF cat /marker`, with no credential file.
fn run_reference(kit: &Kit, args: &[&str], reference: &str) -> Output {
    let home = kit.root.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    kit.cmd(args)
        .arg(reference)
        .args(["cat", "/marker"])
        .env("HOME", &home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("DOCKER_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn pull_always_refreshes_a_cached_tag_and_never_only_uses_the_store() {
    let Some(kit) = Kit::new() else { return };
    let Some(registry) = Registry::start(None, false) else {
        return;
    };
    let (Some(one), Some(two)) = (marked_image(&kit, "one"), marked_image(&kit, "two")) else {
        return;
    };
    let app = registry.reference("flags/app:v1");
    let Some(()) = push(&one, &app, &[]) else {
        return;
    };
    let out = run_reference(&kit, &[], &app);
    assert_eq!(stdout(&out), "one\n", "{out:?}");
    push(&two, &app, &[]);
    // missing (the default): the store's copy, as docker.
    assert_eq!(stdout(&run_reference(&kit, &[], &app)), "one\n");
    assert_eq!(
        stdout(&run_reference(&kit, &["--pull", "never"], &app)),
        "one\n"
    );
    let out = run_reference(&kit, &["--pull", "always"], &app);
    assert_eq!(stdout(&out), "two\n", "{out:?}");
    assert_eq!(stdout(&run_reference(&kit, &[], &app)), "two\n");
    let other = registry.reference("flags/other:v1");
    push(&one, &other, &[]);
    refused(
        &run_reference(&kit, &["--pull", "never"], &other),
        "is not in the store, and --pull=never forbids pulling it",
    );
    let out = run_reference(&kit, &["--pull", "sometimes"], &other);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
}

#[test]
fn authfile_and_ca_cert_reach_a_private_registry() {
    let Some(kit) = Kit::new() else { return };
    let Some(registry) = Registry::start(Some(("alice", "s3cret")), true) else {
        return;
    };
    let Some(one) = marked_image(&kit, "one") else {
        return;
    };
    let host = format!("127.0.0.1:{}", registry.port);
    let auth = auth_file(registry.dir.path(), &host, "alice", "s3cret");
    let ca = registry.dir.path().join("ca.pem");
    let (auth, ca) = (auth.to_str().unwrap(), ca.to_str().unwrap());
    let app = registry.reference("private/app:v1");
    let Some(()) = push(&one, &app, &["--authfile", auth, "--ca-cert", ca]) else {
        return;
    };
    // Neither the CA nor the credentials: refused, nothing cached.
    let out = run_reference(&kit, &["--authfile", auth], &app);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let out = run_reference(&kit, &["--ca-cert", ca], &app);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let out = run_reference(&kit, &["--ca-cert", ca, "--authfile", auth], &app);
    assert_eq!(stdout(&out), "one\n", "{out:?}");
}

#[test]
fn tls_verify_false_speaks_plain_http() {
    let Some(kit) = Kit::new() else { return };
    let Some(registry) = Registry::start(None, false) else {
        return;
    };
    let Some(one) = marked_image(&kit, "one") else {
        return;
    };
    // 127.1 is 127.0.0.1, but not a name the pull takes for this machine
    // (localhost, 127.0.0.1, [::1]), where plain http would be tried anyway.
    let app = format!("127.1:{}/plain/app:v1", registry.port);
    let Some(()) = push(&one, &app, &["--insecure"]) else {
        return;
    };
    let out = run_reference(&kit, &[], &app);
    assert_eq!(
        out.status.code(),
        Some(125),
        "https to a plain registry: {out:?}"
    );
    let out = run_reference(&kit, &["--tls-verify=false"], &app);
    assert_eq!(stdout(&out), "one\n", "{out:?}");
    let out = run_reference(&kit, &["--tls-verify=maybe"], &app);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
}

// ---- --label, --net ---------------------------------------------------------

#[test]
fn labels_are_kept_in_the_containers_record() {
    use std::io::BufRead;
    let Some(kit) = Kit::new() else { return };
    let mut cmd = kit.cmd(&["--name", "labelled", "-l", "tier=web", "--label", "flag"]);
    cmd.arg(&kit.image).args(["/probe", "wait-signal"]);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starting the launcher");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let record = kit.root.path().join("containers/labelled/config.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    child.wait().unwrap();
    assert_eq!(
        json["Labels"],
        serde_json::json!({"tier": "web", "flag": ""})
    );
    assert_eq!(json["Id"], "labelled");
    assert!(!record.exists(), "the record goes with the container");
    refused(
        &kit.probe_run(&["-l", "=x"], &[]),
        "invalid --label `=x`: the key is empty",
    );
    no_containers_left(&kit);
}

#[test]
fn net_is_network() {
    let Some(kit) = Kit::new() else { return };
    let netns = |args: &[&str]| {
        let out = kit.probe_run(args, &[]);
        assert!(out.status.success(), "{args:?}: {out:?}");
        common::value(&common::report(&out), "ns.net")
    };
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(netns(&["--net", "host"]), host.display().to_string());
    assert_eq!(netns(&["--net=host"]), host.display().to_string());
    assert_ne!(netns(&["--net", "none"]), host.display().to_string());
}

// ---- rootless ----------------------------------------------------------------

/// The launcher, init, probe and an image copied where user 65534 can run
/// them, with a state root it owns.
struct Rootless {
    dir: tempfile::TempDir,
    setpriv: PathBuf,
}

impl Rootless {
    fn new(kit: &Kit, image: &Path) -> Option<Rootless> {
        use std::os::unix::fs::PermissionsExt;
        let setpriv = testkit::require_tool("setpriv")?;
        let dir = tempfile::Builder::new()
            .prefix("cradle-flags-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for (from, name) in [
            (kit.launcher.clone(), "launcher"),
            (common::init()?, "cradle-init"),
            (kit.probe.clone(), "probe"),
            (image.to_path_buf(), "image.tar"),
        ] {
            let to = dir.path().join(name);
            common::copy_file(&from, &to, 0o755);
        }
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
        Some(Rootless { dir, setpriv })
    }

    fn sh(&self, args: &[&str], script: &str) -> Output {
        let d = self.dir.path();
        std::process::Command::new(&self.setpriv)
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(d.join("launcher"))
            .env("CRADLE_ROOT", d.join("state"))
            .env_remove("RUST_BACKTRACE")
            .arg("run")
            .args(args)
            .arg(d.join("image.tar"))
            .args(["sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }
}

#[test]
fn rootless_containers_take_the_flags_too() {
    let Some(kit) = Kit::new() else { return };
    let Some(image) = volume_image(&kit) else {
        return;
    };
    let Some(rootless) = Rootless::new(&kit, &image) else {
        return;
    };
    let args = [
        "--cap-drop",
        "ALL",
        "--cap-add",
        "chown",
        "-v",
        "data:/data",
        "--device",
        "/dev/null:/dev/mynull",
        "--sysctl",
        "kernel.shmmni=1000",
        "--ulimit",
        "nofile=100:200",
        "--add-host",
        "db:10.9.9.9",
    ];
    let script = "grep CapEff /proc/self/status; cat /data/seed.txt; echo x > /dev/mynull && echo dev; \
                  cat /proc/sys/kernel/shmmni; ulimit -n; grep db /etc/hosts";
    let out = rootless.sh(&args, script);
    assert_eq!(
        stdout(&out),
        "CapEff:\t0000000000000001\nfrom the image\ndev\n1000\n100\n10.9.9.9\tdb\n",
        "{out:?}"
    );
    let volume = rootless.dir.path().join("state/volumes/data");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(volume.join("seed.txt")).unwrap().uid(),
        65534
    );
    let out = rootless.sh(&["--sysctl", "kernel.core_pattern=x"], "true");
    refused(&out, "it would change the host");
}

/// A real profile of docker's format: podman's (containers-common), with
/// `defaultErrnoRet`, names of every architecture, argument conditions,
/// and rules that hold only with or without a capability. It compiles to
/// stacked filters: allowed or the default ENOSYS, its EPERM rules, and
/// its EINVAL rule for audit sockets, which holds only without
/// CAP_AUDIT_WRITE. sethostname, refused unless the container has
/// CAP_SYS_ADMIN, works once it has.
#[test]
fn podmans_own_seccomp_profile_loads_and_is_enforced() {
    let Some(kit) = Kit::new() else { return };
    let profile = Path::new("/usr/share/containers/seccomp.json");
    if !testkit::require(profile.exists(), "podman's seccomp.json is not installed") {
        return;
    }
    let Some(image) = busybox_image(&kit, "podman-profile", |_| {}) else {
        return;
    };
    let opt = format!("seccomp={}", profile.display());
    let script = "grep -E '^Seccomp(_filters)?:' /proc/self/status | tr -d '\\t'; \
                  hostname renamed 2>&1; hostname";
    let run = |extra: &[&str]| {
        let mut args = vec!["--security-opt", opt.as_str()];
        args.extend(extra);
        let out = sh_in(&kit, &args, &image, script);
        assert!(out.status.success(), "{out:?}");
        stdout(&out)
    };
    let text = run(&[]);
    assert!(text.starts_with("Seccomp:2\nSeccomp_filters:2\n"), "{text}");
    assert!(
        text.contains("sethostname: Operation not permitted"),
        "{text}"
    );
    let text = run(&["--cap-drop", "AUDIT_WRITE"]);
    assert!(text.starts_with("Seccomp:2\nSeccomp_filters:3\n"), "{text}");
    let text = run(&["--cap-add", "SYS_ADMIN"]);
    assert!(text.ends_with("\nrenamed\n"), "{text}");
}

// ---- --network slirp4netns ---------------------------------------------------

/// A port no one listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn slirp4netns_publishes_ports_and_keeps_the_hosts_loopback_out_of_reach() {
    use std::io::{BufRead, Read};
    let Some(kit) = Kit::new() else { return };
    if testkit::require_tool("slirp4netns").is_none() {
        return;
    }
    // A service on the host's loopback, which the container must not reach
    // through slirp's gateway (10.0.2.2 is the host's 127.0.0.1 without
    // --disable-host-loopback).
    let secret = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let secret_port = secret.local_addr().unwrap().port();
    let port = free_port();
    let publish = format!("{port}:8080");
    let script = format!(
        "grep nameserver /etc/resolv.conf; grep slirped /etc/hosts; \
         /probe connect 10.0.2.2 {secret_port}; exec /probe serve 8080 1"
    );
    let mut child = kit
        .cmd(&[
            "--network",
            "slirp4netns",
            "-p",
            &publish,
            "--hostname",
            "slirped",
        ])
        .arg(&kit.image)
        .args(["sh", "-c", &script])
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut before = Vec::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the server never got ready: {before:?} {err}");
        }
        if line.trim() == "ready" {
            break;
        }
        before.push(line.trim().to_string());
    }
    assert!(
        before.contains(&"nameserver 10.0.2.3".to_string()),
        "{before:?}"
    );
    assert!(
        before.contains(&"10.0.2.100\tslirped".to_string()),
        "{before:?}"
    );
    assert!(
        before.iter().any(|l| l.starts_with("connect err")),
        "the host's loopback answered: {before:?}"
    );
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from slirped\n");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    drop(secret);
    // slirp4netns went with the container, and its socket directory too.
    let marker = format!("cradle-slirp-{}-", child.id());
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&marker))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&marker))
        .collect();
    assert!(dirs.is_empty(), "{dirs:?}");
}

#[test]
fn systempaths_unconfined_unmasks_proc_and_sys() {
    let Some(kit) = Kit::new() else { return };
    let script = "grep -cE ' /(proc/kcore|proc/sys|proc/keys|sys/firmware) ' /proc/self/mountinfo; \
                  grep ' /sys ' /proc/self/mountinfo | cut -d' ' -f6 | cut -c1-2";
    let out = sh(&kit, &["--security-opt", "systempaths=unconfined"], script);
    assert_eq!(stdout(&out), "0\nro\n", "{out:?}");
    let out = sh(&kit, &[], script);
    let text = stdout(&out);
    let covered: u32 = text.lines().next().unwrap().parse().unwrap();
    assert!(covered >= 2, "{text}");
}

/// `--init` is what the launcher does anyway; docker users type it out of
/// habit. It still contradicts `--no-init`.
#[test]
fn init_is_accepted_as_the_default_it_is() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&["--init"], &[]);
    assert!(out.status.success(), "{out:?}");
    let r = common::report(&out);
    assert!(common::value(&r, "pid1").contains("cradle-init"), "{r:?}");
    let out = kit.probe_run(&["--init", "--no-init"], &[]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(stderr(&out).contains("cannot be used with"), "{out:?}");
}

/// A detached container keeps its privileges for `exec` (docker exec's
/// process has the container's capabilities, filter and limits), and
/// `inspect` shows them and its labels.
#[test]
fn exec_into_a_detached_container_gets_its_privileges_and_inspect_shows_them() {
    let Some(kit) = Kit::new() else { return };
    let launcher = |args: &[&str]| {
        std::process::Command::new(&kit.launcher)
            .env("CRADLE_ROOT", kit.root.path())
            .env_remove("RUST_BACKTRACE")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let image = kit.image.to_str().unwrap();
    let out = launcher(&[
        "run",
        "-d",
        "--name",
        "privs",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "CHOWN",
        "--ulimit",
        "nofile=512:1024",
        "--security-opt",
        "no-new-privileges=false",
        "-l",
        "tier=db",
        image,
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{out:?}");
    let script = "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status | tr -d '\\t'; ulimit -n";
    let out = launcher(&["exec", "privs", "sh", "-c", script]);
    let want = DEFAULT_CAPS & !CAP_CHOWN | CAP_NET_ADMIN;
    assert_eq!(
        stdout(&out),
        format!("CapEff:{want:016x}\nNoNewPrivs:0\n512\n"),
        "{out:?}"
    );
    let out = launcher(&["inspect", "privs"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json[0]["Config"]["Labels"],
        serde_json::json!({"tier": "db"})
    );
    assert_eq!(
        json[0]["HostConfig"]["CapAdd"],
        serde_json::json!(["NET_ADMIN"])
    );
    let out = launcher(&["rm", "-f", "privs"]);
    assert!(out.status.success(), "{out:?}");
}

/// The processes whose command line holds `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker))
        .collect()
}

/// A SIGKILLed launcher closes slirp4netns's exit pipe by dying: it goes
/// too; the socket directory it leaves is removed by the next slirp run.
#[test]
fn a_sigkilled_launcher_takes_slirp4netns_along_and_the_next_run_reclaims_its_directory() {
    use std::io::BufRead;
    let Some(kit) = Kit::new() else { return };
    if testkit::require_tool("slirp4netns").is_none() {
        return;
    }
    let mut child = kit
        .cmd(&["--network", "slirp4netns"])
        .arg(&kit.image)
        .args(["/probe", "wait-signal"])
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let marker = format!("cradle-slirp-{}-", child.id());
    assert_eq!(processes_with(&marker).len(), 1, "slirp4netns runs");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_with(&marker).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "slirp4netns outlived the launcher"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let dir = std::env::temp_dir().join(format!("{marker}0"));
    assert!(
        dir.exists(),
        "the SIGKILLed launcher's directory is there to reclaim"
    );
    let out = kit
        .cmd(&["--network", "slirp4netns"])
        .arg(&kit.image)
        .arg("true")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.exists(), "not reclaimed");
}
