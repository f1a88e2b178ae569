//! The mount sequence against the recording fake.

use super::*;
use crate::sys::fake::{Call, Fake};
use crate::sys::{Node, Resolve};

fn plan() -> Plan {
    Plan {
        state: "/c".into(),
        in_memory: true,
        storage_size: "1073741824".into(),
        root: "/c/rootfs".into(),
        overlay: Overlay {
            lower: vec!["/l/a".into(), "/l/b".into()],
            upper: "/c/upper".into(),
            work: "/c/work".into(),
            userxattr: false,
        },
        volumes: vec![],
        tmpfs: vec![],
        init: None,
        etc: vec![("hostname", "box\n".into())],
        read_only: false,
        fresh_sysfs: true,
        tty_gid: Some(5),
        dev_nodes: DevNodes::Mknod,
        workdir: None,
        idmapped_layers: None,
        cgroup_fs: CgroupFs::Skip,
        flags: Flags::default(),
    }
}

fn mount(
    src: Option<&str>,
    dst: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Call {
    Call::Mount {
        src: src.map(PathBuf::from),
        dst: dst.into(),
        fstype: fstype.map(String::from),
        flags,
        data: data.map(String::from),
    }
}

/// 128 layers of full cache paths would pass a page; their short links fit.
/// overlayfs cuts its options at `,`: an upper directory outside the
/// state directory (the builder's `--upper-dir`) with one in its path
/// would smuggle in options of its own.
#[test]
fn an_upper_directory_whose_path_holds_a_comma_is_refused() {
    let sys = Fake::default();
    let mut p = plan();
    p.overlay.upper = "/b/x,lowerdir=/etc/upper".into();
    let err = prepare(&sys, &p).unwrap_err().to_string();
    assert!(err.contains("overlayfs cannot take a path with"), "{err}");
    assert!(
        !sys.calls()
            .iter()
            .any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "overlay")),
        "{:?}",
        sys.calls()
    );
}

#[test]
fn overlay_options_of_128_layers_fit_in_a_page() {
    let fake = Fake::default();
    let mut p = plan();
    p.overlay.lower = (0..128)
        .map(|i| format!("/var/lib/cradle/layers/sha256/{i:064x}").into())
        .collect();
    prepare(&fake, &p).unwrap();
    let data = fake
        .calls()
        .into_iter()
        .find_map(|c| match c {
            Call::Mount {
                fstype: Some(t),
                data: Some(d),
                ..
            } if t == "overlay" => Some(d),
            _ => None,
        })
        .unwrap();
    assert!(data.starts_with("lowerdir=l/127:l/126:"), "{data}");
    assert!(data.len() < 4096, "{}", data.len());
}

#[test]
fn overlay_lists_top_layer_first() {
    let p = plan();
    assert_eq!(
        overlay_options(&p.overlay),
        "lowerdir=/l/b:/l/a,upperdir=/c/upper,workdir=/c/work"
    );
}

fn remount(dst: &str, extra: MsFlags) -> Call {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra;
    mount(None, dst, None, flags, None)
}

/// The whole sequence, in order: base, the image's own files, then the
/// system mounts, each at a real directory.
#[test]
fn mounts_base_then_files_then_system_mounts_in_order() {
    let fake = Fake::default();
    prepare(&fake, &plan()).unwrap();
    let r = |p: &str| format!("/c/rootfs{p}");
    let mut want = vec![
        mount(None, "/", None, MsFlags::MS_REC | MsFlags::MS_SLAVE, None),
        mount(
            Some("tmpfs"),
            "/c",
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=700,size=1073741824"),
        ),
        Call::Mkdir("/c/upper".into()),
        Call::Mkdir("/c/work".into()),
        Call::Mkdir("/c/rootfs".into()),
        Call::Mkdir("/c/etc".into()),
        Call::Mkdir("/c/l".into()),
        Call::Symlink {
            target: "/l/a".into(),
            link: "/c/l/0".into(),
        },
        Call::Symlink {
            target: "/l/b".into(),
            link: "/c/l/1".into(),
        },
        Call::Write("/c/etc/hostname".into(), "box\n".into()),
        Call::Chdir("/c".into()),
        mount(
            Some("overlay"),
            "/c/rootfs",
            Some("overlay"),
            MsFlags::empty(),
            Some("lowerdir=l/1:l/0,upperdir=upper,workdir=work"),
        ),
        mount(
            Some("/c/rootfs"),
            "/c/rootfs",
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ),
        mount(
            Some("/c/etc/hostname"),
            &r("/etc/hostname"),
            None,
            MsFlags::MS_BIND,
            None,
        ),
        mount(
            Some("tmpfs"),
            &r("/dev"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        ),
    ];
    for (name, major, minor) in dev::DEVICES {
        want.push(Call::Mknod(
            r(&format!("/dev/{name}")).into(),
            0o666,
            libc::makedev(*major as u32, *minor as u32),
        ));
    }
    want.extend([
        mount(
            Some("devpts"),
            &r("/dev/pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ),
        mount(
            Some("shm"),
            &r("/dev/shm"),
            Some("tmpfs"),
            NOSUID_NODEV_NOEXEC,
            Some("mode=1777,size=65536k"),
        ),
        mount(
            Some("mqueue"),
            &r("/dev/mqueue"),
            Some("mqueue"),
            NOSUID_NODEV_NOEXEC,
            None,
        ),
    ]);
    for (target, link) in [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        want.push(Call::Symlink {
            target: target.into(),
            link: r(link).into(),
        });
    }
    want.push(mount(
        Some("proc"),
        &r("/proc"),
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    ));
    let null = r("/dev/null");
    let mask = |want: &mut Vec<Call>, path: &str| {
        want.push(mount(Some(&null), &r(path), None, MsFlags::MS_BIND, None));
        want.push(remount(&r(path), MsFlags::MS_NOSUID));
    };
    for path in MASKED.iter().filter(|p| p.starts_with("/proc")) {
        mask(&mut want, path);
    }
    for path in READ_ONLY {
        let at = r(path);
        want.push(mount(
            Some(&at),
            &at,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        ));
        want.push(remount(&at, NOSUID_NODEV_NOEXEC));
    }
    want.push(mount(
        Some("sysfs"),
        &r("/sys"),
        Some("sysfs"),
        MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        None,
    ));
    for path in MASKED.iter().filter(|p| p.starts_with("/sys")) {
        mask(&mut want, path);
    }
    assert_eq!(fake.calls(), want);
}

#[test]
fn system_mounts_follow_no_symlink_and_image_paths_stay_in_root() {
    let fake = Fake::default();
    let mut p = plan();
    p.volumes.push(Volume {
        host: "/h".into(),
        target: "/data".into(),
        read_only: false,
        node: Node::Dir,
        locked: MsFlags::empty(),
        copy_up: false,
    });
    p.init = Some(("/i".into(), MsFlags::empty()));
    prepare(&fake, &p).unwrap();
    for (target, resolve) in fake.resolved.borrow().iter() {
        let system = ["/proc", "/dev", "/sys"]
            .iter()
            .any(|s| target.starts_with(s));
        let want = if system {
            Resolve::NoSymlinks
        } else {
            Resolve::InRoot
        };
        assert_eq!(*resolve, want, "{}", target.display());
    }
}

/// The image made /proc a symlink (`proc -> /d/x/..`): nothing is mounted
/// through it, and the error says why.
#[test]
fn proc_symlinked_through_its_mount_point_is_refused() {
    let fake = Fake {
        symlinked: vec!["/proc".into()],
        ..Default::default()
    };
    let err = prepare(&fake, &plan()).unwrap_err().to_string();
    assert!(err.contains("`/proc` in the image is a symlink"), "{err}");
    assert!(
        !fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "proc"))
    );
}

#[test]
fn procfs_that_is_not_there_after_mounting_is_refused() {
    let fake = Fake {
        impostors: vec!["/proc".into()],
        ..Default::default()
    };
    let err = prepare(&fake, &plan()).unwrap_err().to_string();
    assert!(err.contains("is not `proc`"), "{err}");
}

/// A mask whose path cannot be resolved is an error, never "absent, skip".
#[test]
fn mask_behind_a_symlink_fails_closed() {
    let fake = Fake {
        symlinked: vec!["/sys/firmware".into()],
        ..Default::default()
    };
    let err = prepare(&fake, &plan()).unwrap_err().to_string();
    assert!(err.contains("masking `/sys/firmware`"), "{err}");
}

/// In a user namespace the host's nodes are bound (mknod is refused there)
/// and the masks are not remounted (the bound host node's locked flags).
#[test]
fn user_namespace_binds_host_nodes() {
    let fake = Fake::default();
    let mut p = plan();
    p.dev_nodes = DevNodes::Bind;
    prepare(&fake, &p).unwrap();
    let calls = fake.calls();
    assert!(!calls.iter().any(|c| matches!(c, Call::Mknod(..))));
    assert!(calls.contains(&mount(
        Some("/dev/null"),
        "/c/rootfs/dev/null",
        None,
        MsFlags::MS_BIND,
        None
    )));
    assert!(!calls.contains(&remount("/c/rootfs/proc/kcore", MsFlags::MS_NOSUID)));
}

/// Volumes come last: nothing the launcher makes afterwards can land in a
/// volume's host directory.
#[test]
fn volumes_are_mounted_after_everything_but_the_read_only_root() {
    let fake = Fake::default();
    let mut p = plan();
    p.read_only = true;
    p.volumes.push(Volume {
        host: "/h".into(),
        target: "/data".into(),
        read_only: false,
        node: Node::Dir,
        locked: MsFlags::empty(),
        copy_up: false,
    });
    prepare(&fake, &p).unwrap();
    let calls = fake.calls();
    let n = calls.len();
    assert_eq!(
        calls[n - 2..],
        [
            mount(
                Some("/h"),
                "/c/rootfs/data",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None
            ),
            mount(
                None,
                "/c/rootfs",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None
            ),
        ]
    );
}

#[test]
fn masks_directories_with_read_only_tmpfs() {
    let fake = Fake {
        dirs: vec!["/proc/acpi".into()],
        ..Default::default()
    };
    proc::mask_paths(&fake, Path::new("/r"), "/proc", DevNodes::Mknod).unwrap();
    assert!(fake.calls().contains(&mount(
        Some("tmpfs"),
        "/r/proc/acpi",
        Some("tmpfs"),
        MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
        Some("size=0")
    )));
}

#[test]
fn read_only_volume_and_root_are_remounted() {
    let fake = Fake::default();
    let mut p = plan();
    p.read_only = true;
    p.volumes.push(Volume {
        host: "/h".into(),
        target: "/data".into(),
        read_only: true,
        node: Node::Dir,
        locked: MsFlags::MS_NOSUID,
        copy_up: false,
    });
    prepare(&fake, &p).unwrap();
    let calls = fake.calls();
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    let bind = calls
        .iter()
        .position(|c| {
            *c == mount(
                Some("/h"),
                "/c/rootfs/data",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )
        })
        .unwrap();
    assert_eq!(
        calls[bind + 1],
        mount(None, "/c/rootfs/data", None, ro | MsFlags::MS_NOSUID, None)
    );
    assert_eq!(
        calls.last(),
        Some(&mount(None, "/c/rootfs", None, ro, None))
    );
}
#[test]
fn v1_cgroup_fs_is_populated_then_made_read_only() {
    let fake = Fake::default();
    let fs = CgroupFs::Legacy {
        hierarchies: names(&[("cpu,cpuacct", "cpu,cpuacct"), ("systemd", "name=systemd")]),
        links: names(&[("cpu", "cpu,cpuacct")]),
    };
    cgroup::mount_cgroup_fs(&fake, Path::new("/r"), &fs, false).unwrap();
    let ro = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
    assert_eq!(
        fake.calls(),
        [
            mount(
                Some("tmpfs"),
                "/r/sys/fs/cgroup",
                Some("tmpfs"),
                NOSUID_NODEV_NOEXEC,
                Some("mode=755")
            ),
            mount(
                Some("cgroup"),
                "/r/sys/fs/cgroup/cpu,cpuacct",
                Some("cgroup"),
                ro,
                Some("cpu,cpuacct")
            ),
            mount(
                Some("cgroup"),
                "/r/sys/fs/cgroup/systemd",
                Some("cgroup"),
                ro,
                Some("name=systemd")
            ),
            Call::Symlink {
                target: "cpu,cpuacct".into(),
                link: "/r/sys/fs/cgroup/cpu".into()
            },
            mount(
                None,
                "/r/sys/fs/cgroup",
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
                None
            ),
        ]
    );
}

#[test]
fn cgroup_fs_is_mounted_after_sys_and_its_masks() {
    let fake = Fake::default();
    let mut p = plan();
    p.cgroup_fs = CgroupFs::Unified;
    prepare(&fake, &p).unwrap();
    let calls = fake.calls();
    let sys_at = calls
        .iter()
        .position(|c| matches!(c, Call::Mount { fstype: Some(t), .. } if t == "sysfs"))
        .unwrap();
    let mask = |path: &str| {
        mount(
            Some("/c/rootfs/dev/null"),
            path,
            None,
            MsFlags::MS_BIND,
            None,
        )
    };
    assert_eq!(
        calls[sys_at + 1..],
        [
            mask("/c/rootfs/sys/firmware"),
            remount("/c/rootfs/sys/firmware", MsFlags::MS_NOSUID),
            mask("/c/rootfs/sys/devices/virtual/powercap"),
            remount("/c/rootfs/sys/devices/virtual/powercap", MsFlags::MS_NOSUID),
            mount(
                Some("cgroup2"),
                "/c/rootfs/sys/fs/cgroup",
                Some("cgroup2"),
                MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC,
                None
            )
        ]
    );
}

fn names(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `--network host` binds the host's /sys, whose /sys/fs/cgroup is the
/// host's tree: it is covered before cgroup2 goes on top (cgroup2 on the
/// host's own cgroup2 mount point was EBUSY), and covered even when nothing
/// is mounted there.
#[test]
fn host_sys_gets_its_cgroup_tree_covered_before_cgroup2() {
    let ro = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
    let cover = mount(
        Some("tmpfs"),
        "/r/sys/fs/cgroup",
        Some("tmpfs"),
        ro,
        Some("mode=755"),
    );
    let fake = Fake::default();
    cgroup::mount_cgroup_fs(&fake, Path::new("/r"), &CgroupFs::Unified, true).unwrap();
    assert_eq!(
        fake.calls(),
        [
            cover.clone(),
            mount(
                Some("cgroup2"),
                "/r/sys/fs/cgroup",
                Some("cgroup2"),
                ro,
                None
            ),
        ]
    );
    let fake = Fake::default();
    cgroup::mount_cgroup_fs(&fake, Path::new("/r"), &CgroupFs::Skip, true).unwrap();
    assert_eq!(fake.calls(), [cover]);
    let fake = Fake::default();
    cgroup::mount_cgroup_fs(&fake, Path::new("/r"), &CgroupFs::Skip, false).unwrap();
    assert_eq!(fake.calls(), []);
}

/// `--privileged`: no masks, no read-only paths, a writable sysfs; the
/// devices and sysctls are made before /proc/sys could turn read-only.
#[test]
fn privileged_skips_masks_and_makes_devices_and_sysctls() {
    let fake = Fake::default();
    let mut p = plan();
    p.flags = Flags {
        privileged: true,
        unmasked: false,
        devices: vec![devices::Device {
            host: "/dev/loop7".into(),
            target: "/dev/disk/x".into(),
            kind: crate::cgroups::devices::Kind::Block,
            major: 7,
            minor: 7,
            mode: 0o660,
            access: crate::cgroups::devices::RWM,
        }],
        shm_size: Some(1 << 20),
        sysctls: vec![("/proc/sys/kernel/shmmax".into(), "4096".into())],
    };
    prepare(&fake, &p).unwrap();
    let calls = fake.calls();
    let at = |call: &Call| calls.iter().position(|c| c == call).unwrap();
    let made = at(&Call::Mknod(
        "/c/rootfs/dev/disk/x".into(),
        libc::S_IFBLK | 0o660,
        libc::makedev(7, 7),
    ));
    assert!(at(&Call::Mkdir("/c/rootfs/dev/disk".into())) < made);
    let proc = at(&mount(
        Some("proc"),
        "/c/rootfs/proc",
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None,
    ));
    assert!(made < proc);
    assert_eq!(
        calls[proc + 1],
        Call::Write("/c/rootfs/proc/sys/kernel/shmmax".into(), "4096".into())
    );
    assert!(calls.contains(&mount(
        Some("sysfs"),
        "/c/rootfs/sys",
        Some("sysfs"),
        NOSUID_NODEV_NOEXEC,
        None
    )));
    assert!(calls.contains(&mount(
        Some("shm"),
        "/c/rootfs/dev/shm",
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
        Some("mode=1777,size=1048576")
    )));
    let remounts = calls
        .iter()
        .filter(|c| matches!(c, Call::Mount { flags, .. } if flags.contains(MsFlags::MS_RDONLY)))
        .count();
    assert_eq!(remounts, 0, "{calls:#?}");
}
