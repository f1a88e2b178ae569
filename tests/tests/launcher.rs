//! End to end: images run by the launcher, probed from inside.

mod common;

use common::{Kit, report, value, values};

#[test]
fn probe_sees_its_own_namespaces_and_dockers_defaults() {
    let Some(kit) = Kit::new() else { return };
    let out = kit.probe_run(&["--hostname", "cradled"], &["report"]);
    assert!(out.status.success(), "{out:?}");
    let r = report(&out);
    assert_eq!(
        value(&r, "pid1"),
        "/sbin/cradle-init -- /probe report",
        "{r:?}"
    );
    assert_eq!(value(&r, "hostname"), "cradled");
    assert_eq!(value(&r, "netdevs"), "lo");
    assert_eq!(value(&r, "CapEff"), "00000000a80425fb");
    assert_eq!(value(&r, "CapBnd"), "00000000a80425fb");
    assert_eq!(value(&r, "CapAmb"), "0000000000000000");
    assert_eq!(value(&r, "Seccomp"), "2");
    assert_eq!(value(&r, "NoNewPrivs"), "1");
    let host = |ns: &str| {
        std::fs::read_link(format!("/proc/self/ns/{ns}"))
            .unwrap()
            .display()
            .to_string()
    };
    for ns in ["ipc", "net", "uts", "pid", "mnt", "cgroup"] {
        assert_ne!(
            value(&r, &format!("ns.{ns}")),
            host(ns),
            "{ns} namespace is the host's"
        );
    }
    let mounts = values(&r, "mount");
    assert!(
        mounts.iter().any(|m| m.starts_with("/ overlay ")),
        "{mounts:?}"
    );
    for masked in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if std::path::Path::new(masked).exists() {
            assert!(
                mounts.iter().any(|m| m.starts_with(&format!("{masked} "))),
                "{masked} not masked: {mounts:?}"
            );
        }
    }
    let sys = mounts
        .iter()
        .find(|m| m.starts_with("/sys sysfs"))
        .expect("sysfs mounted");
    assert!(
        sys.split(' ').nth(2).unwrap().split(',').any(|o| o == "ro"),
        "{sys}"
    );
    assert!(
        mounts.iter().any(|m| m.starts_with("/dev/pts devpts")),
        "{mounts:?}"
    );
}

#[test]
fn masked_kcore_reads_empty_and_sys_is_read_only() {
    let Some(kit) = Kit::new() else { return };
    // This kernel may be built without /proc/kcore; the masking is the same
    // for every masked file.
    for masked in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if !std::path::Path::new(masked).exists() {
            continue;
        }
        let out = kit.probe_run(&[], &["read", masked]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("read {masked} ok 0"),
            "{out:?}"
        );
    }
    let out = kit.probe_run(&[], &["write", "/sys/kernel/cradle-test"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("write /sys/kernel/cradle-test err {}", libc::EROFS),
        "{out:?}"
    );
}
