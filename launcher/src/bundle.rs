//! Bundle: an OCI runtime bundle for crun or runc (`config.json` and
//! `rootfs/`) from an image archive, with the defaults of `launcher run`:
//! its argv and env rules ([`image::argv`], [`image::env`]), the user from
//! the image's /etc/passwd ([`exec::resolve_user`]), docker's 14
//! capabilities ([`exec::DEFAULT_CAPS`]), masked and read-only paths
//! ([`rootfs::MASKED`], [`rootfs::READ_ONLY`]), the same namespaces and the
//! same /proc, /dev and /sys mounts, no_new_privs.
//!
//! The layers are unpacked in order into `rootfs/` with the builder's safe
//! unpacking, whiteouts applied. Our images start `/sbin/cradle-init`; for
//! another image the static init is bind-mounted read-only at that path by
//! a mount entry (as `launcher run` does), so the bundle names the init's
//! path on this machine. `/etc/hostname`, `/etc/hosts` and
//! `/etc/resolv.conf` are written to `DIR/etc/` and bound writable, and
//! `-v` volumes become bind mounts, as in `launcher run`. The seccomp
//! profile is [`seccomp`]'s, written as `linux.seccomp` for libseccomp.
//! The limits of `launcher run` (`--memory` …) become `linux.resources`,
//! with its device allowlist ([`cgroups::devices::ALLOWED`]) after a
//! deny-all, `--cgroup-parent` a `linux.cgroupsPath` below it, and
//! `/sys/fs/cgroup` is mounted read-only as in runc's default spec.

use crate::cgroups::{self, Limits};
use crate::{Error, Options, Result, exec, image, rootfs, seccomp, spawn};
use oci_spec::runtime::{
    Arch, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The hostname when none is given.
pub const DEFAULT_HOSTNAME: &str = "cradle";

/// Writes the bundle for `opts.image` into `dir` (created; must be empty or
/// absent). Returns the path of `config.json`.
pub fn write(opts: &Options, dir: &Path) -> Result<PathBuf> {
    let image = image::read(&opts.image)?;
    let root = dir.join("rootfs");
    make_empty_dir(dir)?;
    std::fs::create_dir(&root).map_err(Error::io("creating", &root))?;
    flatten_layers(&image, &root)?;
    let spec = runtime_spec(opts, &image, &root)?;
    let config = dir.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| Error::Io {
        op: "writing",
        path: config.clone(),
        source: e.into(),
    })?;
    std::fs::write(&config, json).map_err(Error::io("writing", &config))?;
    Ok(config)
}

fn make_empty_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
    let mut entries = std::fs::read_dir(dir).map_err(Error::io("listing", dir))?;
    if entries.next().is_some() {
        return Err(Error::Invalid {
            what: "bundle directory (it must be empty)",
            value: dir.display().to_string(),
        });
    }
    Ok(())
}

/// Unpacks every layer of `image` into `root`, bottom first, whiteouts
/// applied: the bundle's rootfs, and `launcher export`. Each blob is read
/// once, hashed as it is unpacked, and checked when its layer is done,
/// before the next one ([`builder::archive::LayerReader`]): a layer whose
/// bytes are not the manifest's is an error of the image naming the archive
/// and the layer; one that fails to unpack is named by its digest.
///
/// `root` is the user's. When it is missing or empty, the layers go into a
/// directory beside it, renamed over it once all are verified, so a failure
/// leaves nothing of the image. Into a `root` that has files (rename(2)
/// replaces only an empty directory) they go directly, and a failure leaves
/// what was unpacked so far, the failing layer's unverified bytes included.
pub fn flatten_layers(image: &image::Image, root: &Path) -> Result<()> {
    let has_files = std::fs::read_dir(root).is_ok_and(|mut d| d.next().is_some());
    let Some(staging) = root.file_name().filter(|_| !has_files).map(|name| {
        root.with_file_name(format!(".{}.cradle-{}", name.display(), std::process::id()))
    }) else {
        return unpack_verified_layers(image, root);
    };
    let _ = crate::cache::remove_tree(&staging);
    let flattened =
        unpack_verified_layers(image, &staging).and_then(|()| move_over(&staging, root));
    if flattened.is_err() {
        let _ = crate::cache::remove_tree(&staging);
    }
    flattened
}

fn unpack_verified_layers(image: &image::Image, root: &Path) -> Result<()> {
    let opts = builder::unpack::Options {
        whiteouts: true,
        ..Default::default()
    };
    let image_error = |source| Error::Image {
        path: image.archive.path().to_path_buf(),
        source: Box::new(source),
    };
    for layer in &image.layers {
        let mut blob = image.archive.layer_reader(layer).map_err(image_error)?;
        let unpacked = builder::unpack::extract(&mut blob, root, &opts);
        // Checked first: bytes that are not the manifest's are that error,
        // whatever unpacking them did.
        blob.finish().map_err(image_error)?;
        unpacked.map_err(|source| Error::Unpack {
            digest: layer.digest.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// Renames `staging` over `root` (missing or empty), with the mode `root`
/// had.
fn move_over(staging: &Path, root: &Path) -> Result<()> {
    std::fs::create_dir_all(staging).map_err(Error::io("creating", staging))?;
    if let Ok(meta) = std::fs::metadata(root) {
        std::fs::set_permissions(staging, meta.permissions())
            .map_err(Error::io("setting the mode of", staging))?;
    }
    std::fs::rename(staging, root).map_err(Error::io("renaming the flattened layers to", root))
}

/// `config.json`: the process, the root, the mounts and the Linux section.
pub fn runtime_spec(opts: &Options, image: &image::Image, root: &Path) -> Result<Spec> {
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| DEFAULT_HOSTNAME.to_string());
    let (argv, bind_init) = image::pid1_argv(image, opts)?;
    let mut mounts = default_mounts()?;
    if bind_init {
        let init = spawn::find_init(opts.init_path.as_deref())?;
        mounts.push(init_mount(&init)?);
    }
    mounts.extend(etc_mounts(&hostname, root)?);
    mounts.extend(volume_mounts(opts)?);
    let mut env = image::env(image, opts, &hostname)?;
    let user = exec::resolve_user(
        &root.join("etc"),
        opts.user.as_deref().or(image.user.as_deref()),
    )?;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let caps: HashSet<Capability> = exec::DEFAULT_CAPS
        .iter()
        .filter_map(|&n| CAP_NAMES.get(n as usize))
        .filter_map(|name| Capability::from_str(name).ok())
        .collect();
    // Non-root users get no effective or permitted capabilities, as in
    // docker (exec.rs drops them on the uid change).
    let own = if user.uid == 0 {
        caps.clone()
    } else {
        HashSet::new()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps)
        .effective(own.clone())
        .permitted(own)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(spec_error("capabilities"))?;
    let process = ProcessBuilder::default()
        .terminal(opts.tty)
        .args(argv)
        .env(env)
        .cwd(
            opts.workdir
                .clone()
                .or_else(|| image.workdir.clone())
                .unwrap_or_else(|| "/".into()),
        )
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.groups.clone())
                .build()
                .map_err(spec_error("user"))?,
        )
        .capabilities(capabilities)
        .no_new_privileges(true)
        // None: the runtime's own limits are inherited (crun refuses limits
        // above the current ones).
        .rlimits(vec![])
        .build()
        .map_err(spec_error("process"))?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| {
        LinuxNamespaceBuilder::default()
            .typ(typ)
            .build()
            .map_err(spec_error("namespace"))
    })
    .collect::<Result<Vec<_>>>()?;
    let mut linux = LinuxBuilder::default().resources(linux_resources(&opts.limits)?);
    if let Some(parent) = &opts.cgroup_parent {
        linux = linux.cgroups_path(cgroups_path(parent, root));
    }
    let linux = linux
        .namespaces(namespaces)
        .masked_paths(strings(rootfs::MASKED))
        .readonly_paths(strings(rootfs::READ_ONLY))
        .seccomp(seccomp_profile()?)
        .build()
        .map_err(spec_error("linux"))?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(opts.read_only)
                .build()
                .map_err(spec_error("root"))?,
        )
        .hostname(hostname)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_error("spec"))
}

/// The rules of [`seccomp::default_profile`] in the runtime spec's terms:
/// the allowlist, `socket` unless AF_VSOCK, `personality` for moby's
/// personas, `clone` without namespace flags, `clone3` failing with ENOSYS
/// (so that libcs fall back to `clone`), anything else EPERM.
fn seccomp_profile() -> Result<LinuxSeccomp> {
    let allow = |names: Vec<String>, args: Vec<(u64, Option<u64>, LinuxSeccompOperator)>| {
        let args = args
            .into_iter()
            .map(|(value, two, op)| {
                let mut arg = LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(value)
                    .op(op);
                if let Some(two) = two {
                    arg = arg.value_two(two);
                }
                arg.build().map_err(spec_error("seccomp argument"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut rule = LinuxSyscallBuilder::default()
            .names(names)
            .action(LinuxSeccompAction::ScmpActAllow);
        if !args.is_empty() {
            rule = rule.args(args);
        }
        rule.build().map_err(spec_error("seccomp rule"))
    };
    let mut rules: Vec<LinuxSyscall> = vec![allow(syscall_names(seccomp::ALLOWED), vec![])?];
    rules.push(allow(
        syscall_names(&[libc::SYS_socket]),
        vec![(seccomp::AF_VSOCK, None, LinuxSeccompOperator::ScmpCmpNe)],
    )?);
    // Arguments of one rule must all match; the personas are one rule each.
    for &persona in seccomp::PERSONAS {
        rules.push(allow(
            syscall_names(&[libc::SYS_personality]),
            vec![(persona, None, LinuxSeccompOperator::ScmpCmpEq)],
        )?);
    }
    rules.push(allow(
        syscall_names(&[libc::SYS_clone]),
        vec![(
            seccomp::CLONE_NAMESPACES,
            Some(0),
            LinuxSeccompOperator::ScmpCmpMaskedEq,
        )],
    )?);
    rules.push(
        LinuxSyscallBuilder::default()
            .names(syscall_names(&[libc::SYS_clone3]))
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()
            .map_err(spec_error("seccomp rule"))?,
    );
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(vec![seccomp_arch()])
        .syscalls(rules)
        .build()
        .map_err(spec_error("seccomp"))
}

/// The names libseccomp knows the syscalls of this architecture by.
fn syscall_names(numbers: &[i64]) -> Vec<String> {
    numbers
        .iter()
        .filter_map(|&nr| syscalls::Sysno::new(usize::try_from(nr).ok()?))
        .map(|sysno| sysno.name().to_string())
        .collect()
}

fn seccomp_arch() -> Arch {
    #[cfg(target_arch = "aarch64")]
    return Arch::ScmpArchAarch64;
    #[cfg(not(target_arch = "aarch64"))]
    Arch::ScmpArchX86_64
}

/// /proc, /dev (tmpfs, devpts of its own, shm, mqueue) and /sys read-only,
/// with the options `launcher run` mounts them with (rootfs.rs).
/// `linux.resources`: the device allowlist, and the limits. The spec's
/// fields are cgroup v1's files (runtimes translate them for v2), so they
/// are read off the v1 settings `launcher run` would write: one validation
/// and one arithmetic (the `--cpus` quota, the memory+swap total) for both.
fn linux_resources(limits: &Limits) -> Result<LinuxResources> {
    let settings = limits.settings(false)?;
    // Only what the user asked for: the implied swap total (docker's twice
    // --memory) is left to the runtime, which may run where the kernel
    // does not account swap and the file is missing.
    let value = |file: &str| {
        settings
            .iter()
            .find(|s| s.file == file && !s.optional)
            .map(|s| s.value.as_str())
    };
    let number = |file: &str| value(file).and_then(|v| v.parse::<i64>().ok());
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules()?);
    if let Some(limit) = number("memory.limit_in_bytes") {
        let mut memory = LinuxMemoryBuilder::default().limit(limit);
        if let Some(swap) = number("memory.memsw.limit_in_bytes") {
            memory = memory.swap(swap);
        }
        resources = resources.memory(memory.build().map_err(spec_error("memory"))?);
    }
    if let Some(pids) = value("pids.max") {
        // "max" is docker's 0 or -1: unlimited, which the spec writes -1.
        let limit = pids.parse().unwrap_or(-1);
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(spec_error("pids"))?,
        );
    }
    let shares = number("cpu.shares");
    let quota = number("cpu.cfs_quota_us");
    if shares.is_some() || quota.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(shares) = shares {
            cpu = cpu.shares(shares as u64);
        }
        if let Some(quota) = quota {
            cpu = cpu.quota(quota);
        }
        if let Some(period) = number("cpu.cfs_period_us") {
            cpu = cpu.period(period as u64);
        }
        resources = resources.cpu(cpu.build().map_err(spec_error("cpu"))?);
    }
    resources.build().map_err(spec_error("resources"))
}

/// `linux.resources.devices`: deny all, then allow [`cgroups::devices::ALLOWED`],
/// as `launcher run` does and in runc's order (moby's default spec starts
/// with the deny-all). An empty list leaves the runtime's own defaults,
/// which with crun on cgroup v1 let root in the container open any device.
fn device_rules() -> Result<Vec<LinuxDeviceCgroup>> {
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(spec_error("device rule"))?;
    let mut rules = vec![deny_all];
    for rule in &cgroups::devices::ALLOWED {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(match rule.kind {
                cgroups::devices::Kind::Char => LinuxDeviceType::C,
                cgroups::devices::Kind::Block => LinuxDeviceType::B,
            })
            .access(rule.access_letters());
        if let Some(major) = rule.major {
            b = b.major(i64::from(major));
        }
        if let Some(minor) = rule.minor {
            b = b.minor(i64::from(minor));
        }
        rules.push(b.build().map_err(spec_error("device rule"))?);
    }
    Ok(rules)
}

/// `--cgroup-parent` and a name of the bundle's own (its directory's), as
/// podman names `libpod-ID` below the parent: absolute from the hierarchy's
/// root, or relative to the runtime's cgroup, as in `launcher run`.
fn cgroups_path(parent: &str, root: &Path) -> PathBuf {
    let name: String = root
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '_',
            },
        )
        .collect();
    Path::new(parent).join(format!("{}{name}", crate::resources::CGROUP_PREFIX))
}

fn default_mounts() -> Result<Vec<Mount>> {
    let nosuid_noexec_nodev = ["nosuid", "noexec", "nodev"];
    let table: [(&str, &str, &str, Vec<&str>); 7] = [
        ("/proc", "proc", "proc", nosuid_noexec_nodev.to_vec()),
        (
            "/dev",
            "tmpfs",
            "tmpfs",
            vec!["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        (
            "/dev/pts",
            "devpts",
            "devpts",
            vec![
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        (
            "/dev/shm",
            "tmpfs",
            "shm",
            vec!["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        (
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            nosuid_noexec_nodev.to_vec(),
        ),
        (
            "/sys",
            "sysfs",
            "sysfs",
            vec!["nosuid", "noexec", "nodev", "ro"],
        ),
        // runc's default spec: the runtime mounts the container's own
        // cgroup (in its cgroup namespace) read-only, v1 or v2.
        (
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            vec!["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];
    table
        .into_iter()
        .map(|(destination, typ, source, options)| {
            MountBuilder::default()
                .destination(destination)
                .typ(typ)
                .source(source)
                .options(strings(&options))
                .build()
                .map_err(spec_error("mount"))
        })
        .collect()
}

/// /etc/hostname, /etc/hosts and /etc/resolv.conf, written beside the
/// rootfs (`DIR/etc/`) as `launcher run` writes them, and bound over the
/// image's.
fn etc_mounts(hostname: &str, root: &Path) -> Result<Vec<Mount>> {
    let dir = root.with_file_name("etc");
    std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
    spawn::etc_files(hostname, crate::Network::None)
        .into_iter()
        .map(|(name, content)| {
            let host = dir.join(name);
            std::fs::write(&host, content).map_err(Error::io("writing", &host))?;
            let host = std::fs::canonicalize(&host).map_err(Error::io("finding", &host))?;
            bind_mount(
                &host,
                &Path::new("/etc").join(name),
                // Writable, as under `launcher run`, docker and podman:
                // programs rewrite /etc/hosts and /etc/resolv.conf.
                &["rbind", "rw", "nosuid", "nodev", "noexec"],
            )
        })
        .collect()
}

/// `-v HOST:CTR[:ro]`, parsed as `launcher run` parses them.
fn volume_mounts(opts: &Options) -> Result<Vec<Mount>> {
    opts.volumes
        .iter()
        .map(|spec| {
            let v = spawn::parse_volume(spec)?;
            let options: &[&str] = if v.read_only {
                &["rbind", "ro"]
            } else {
                &["rbind", "rw"]
            };
            bind_mount(&v.host, &v.target, options)
        })
        .collect()
}

fn bind_mount(host: &Path, target: &Path, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(target)
        .typ("bind")
        .source(host)
        .options(strings(options))
        .build()
        .map_err(spec_error("bind mount"))
}

/// The host's static init, bound read-only over /sbin/cradle-init.
fn init_mount(init: &Path) -> Result<Mount> {
    let init = std::fs::canonicalize(init).map_err(Error::io("finding the init", init))?;
    MountBuilder::default()
        .destination(image::INIT_IN_IMAGE)
        .typ("bind")
        .source(init)
        .options(strings(&["bind", "ro", "nosuid", "nodev"]))
        .build()
        .map_err(spec_error("init mount"))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn spec_error(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> Error {
    move |source| Error::Spec { what, source }
}

/// Capability names by number, as oci-spec parses them (`CAP_` added).
use crate::capabilities::NAMES as CAP_NAMES;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{image_with_layer, image_with_layer_stored_as, tar_with};

    #[test]
    fn export_names_the_archive_when_a_layer_blob_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("image.tar");
        let layer = tar_with(&[("etc/motd", b"hello")]);
        let mut tampered = layer.clone();
        tampered[512] ^= 1; // the first byte of the file's data, same size
        image_with_layer_stored_as(&archive, &layer, &tampered);
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        let err = crate::export(&archive, &root).unwrap_err();
        let Error::Image { path, source } = &err else {
            panic!("not an image error: {err:?}");
        };
        assert_eq!(path, &archive);
        let hex = layer_hex(&layer);
        assert!(source.to_string().contains(&hex), "{source}");
        assert!(!root.join("etc/motd").exists());
    }

    #[test]
    fn export_names_the_layer_that_fails_to_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("image.tar");
        // A layer that is not a tar archive: verified, then unpacking fails.
        let layer = vec![0x5a; 2048];
        image_with_layer(&archive, &layer);
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        let err = crate::export(&archive, &root).unwrap_err();
        let Error::Unpack { digest, .. } = &err else {
            panic!("not an unpack error: {err:?}");
        };
        assert_eq!(digest, &format!("sha256:{}", layer_hex(&layer)));
    }

    fn layer_hex(layer: &[u8]) -> String {
        use sha2::{Digest as _, Sha256};
        hex::encode(Sha256::digest(layer))
    }

    #[test]
    fn default_caps_have_names_oci_spec_knows() {
        let names: Vec<String> = exec::DEFAULT_CAPS
            .iter()
            .map(|&n| {
                let cap = Capability::from_str(CAP_NAMES[n as usize]).unwrap();
                serde_json::to_value(cap)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(names.len(), 14);
        assert!(names.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(names.contains(&"CAP_SETFCAP".to_string()));
        assert!(names.contains(&"CAP_AUDIT_WRITE".to_string()));
    }

    #[test]
    fn seccomp_names_every_allowed_syscall() {
        assert_eq!(
            syscall_names(seccomp::ALLOWED).len(),
            seccomp::ALLOWED.len()
        );
        let profile = seccomp_profile().unwrap();
        let json = serde_json::to_value(&profile).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], libc::EPERM);
        let names = json["syscalls"][0]["names"].as_array().unwrap();
        assert!(names.iter().any(|n| n == "execve"));
        assert!(!names.iter().any(|n| n == "mount"));
        let clone3 = json["syscalls"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(clone3["names"][0], "clone3");
        assert_eq!(clone3["errnoRet"], libc::ENOSYS);
    }

    #[test]
    fn mounts_match_the_launchers() {
        let mounts = default_mounts().unwrap();
        let dests: Vec<String> = mounts
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/dev/shm",
                "/dev/mqueue",
                "/sys",
                "/sys/fs/cgroup"
            ]
        );
    }

    #[test]
    fn limits_become_v1_style_resources() {
        let limits = Limits {
            memory: Some(64 << 20),
            memory_swap: Some(128 << 20),
            pids: Some(20),
            cpus: Some(0.5),
            cpu_shares: Some(512),
        };
        let mut resources = serde_json::to_value(linux_resources(&limits).unwrap()).unwrap();
        resources.as_object_mut().unwrap().remove("devices");
        assert_eq!(
            resources,
            serde_json::json!({
                "memory": { "limit": 67108864, "swap": 134217728 },
                "pids": { "limit": 20 },
                "cpu": { "shares": 512, "quota": 50000, "period": 100000 },
            })
        );
    }

    #[test]
    fn implied_swap_and_no_limits_are_left_to_the_runtime() {
        let devices_only = serde_json::to_value(linux_resources(&Limits::default()).unwrap());
        assert_eq!(devices_only.unwrap().as_object().unwrap().len(), 1);
        let memory_only = Limits {
            memory: Some(1 << 20),
            pids: Some(-1),
            ..Default::default()
        };
        let mut resources = serde_json::to_value(linux_resources(&memory_only).unwrap()).unwrap();
        resources.as_object_mut().unwrap().remove("devices");
        assert_eq!(
            resources,
            serde_json::json!({ "memory": { "limit": 1048576 }, "pids": { "limit": -1 } })
        );
    }

    #[test]
    fn devices_are_denied_but_the_allowlist_with_or_without_limits() {
        let resources = serde_json::to_value(linux_resources(&Limits::default()).unwrap());
        let devices = &resources.unwrap()["devices"];
        assert_eq!(
            devices[0],
            serde_json::json!({ "allow": false, "access": "rwm" })
        );
        assert_eq!(
            devices[1],
            serde_json::json!({ "allow": true, "type": "c", "access": "m" })
        );
        assert_eq!(
            devices[3],
            serde_json::json!({ "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" })
        );
        assert_eq!(
            devices[11],
            serde_json::json!({ "allow": true, "type": "c", "major": 136, "access": "rwm" })
        );
        assert_eq!(devices.as_array().unwrap().len(), 13);
    }

    #[test]
    fn invalid_limits_are_refused_as_in_run() {
        let swap_alone = Limits {
            memory_swap: Some(1 << 20),
            ..Default::default()
        };
        let err = linux_resources(&swap_alone).unwrap_err();
        assert!(err.to_string().contains("memory-swap"), "{err}");
    }

    #[test]
    fn cgroups_path_is_below_the_parent_named_after_the_bundle() {
        assert_eq!(
            cgroups_path("/ci", Path::new("/tmp/my bundle/rootfs")),
            Path::new("/ci/cradle-my_bundle")
        );
    }
}
