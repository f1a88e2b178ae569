//! The guest's initramfs: busybox (static) for a shell and its tools,
//! cradle-init as `/init`, the launcher and `nft` with their shared
//! libraries (as `ldd` resolves them), the probe, the test image, the
//! kernel modules in load order, and the checks' script.

use super::cpio::{Kind, Writer};
use super::kernel::Kernel;
use super::modules;
use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the guest runs, built on this machine.
pub struct Artifacts {
    pub init: PathBuf,
    pub launcher: PathBuf,
    pub probe: PathBuf,
    pub image: PathBuf,
    /// `--bench`: the release launchers (static, glibc), and crun.
    pub bench: Option<BenchPrograms>,
}

pub struct BenchPrograms {
    pub static_launcher: PathBuf,
    pub glibc_launcher: PathBuf,
}

/// Where things are in the guest; the script uses the same paths.
pub const GUEST_IMAGE: &str = "images/default.tar";
pub const GUEST_SCRIPT: &str = "run-checks.sh";
/// The module names, one a line, in the order to load them from /lib/modules.
pub const GUEST_MODULE_LIST: &str = "lib/modules/load-order";

/// overlay for the container's root, veth and bridge for `--network
/// veth|bridge`, nf_tables and the expressions of the launcher's rules
/// (network/firewall.rs: nat chains, masquerade, dnat, `fib daddr type
/// local`), loop for a block device the devices check can open.
const MODULES: &[&str] = &[
    "overlay",
    "veth",
    "bridge",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nft_fib_ipv4",
    "nft_reject_ipv4",
    "loop",
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n";
const GROUP: &str = "root:x:0:\nuser:x:1000:\n";

/// Writes the archive to `output` (the stripped launcher passes through a
/// file next to it).
pub fn assemble(output: &Path, kernel: &Kernel, artifacts: &Artifacts, script: &str) -> Result<()> {
    let file = std::fs::File::create(output)
        .with_context(|| format!("creating `{}`", output.display()))?;
    let mut tree = Tree::new(BufWriter::new(file));
    add_base(&mut tree)?;
    add_cradle(&mut tree, artifacts, output)?;
    add_program(&mut tree, &find_program("nft")?, "usr/sbin/nft")?;
    // busybox's setpriv lacks --reuid, --regid, --clear-groups.
    add_program(&mut tree, &find_program("setpriv")?, "usr/bin/setpriv")?;
    if let Some(bench) = &artifacts.bench {
        tree.file(
            "usr/bin/launcher-static",
            0o755,
            &read(&bench.static_launcher)?,
        )?;
        add_program(&mut tree, &bench.glibc_launcher, "usr/bin/launcher-glibc")?;
        add_program(&mut tree, &find_program("crun")?, "usr/bin/crun")?;
    }
    add_busybox(&mut tree)?;
    add_modules(&mut tree, kernel)?;
    tree.file(GUEST_SCRIPT, 0o755, script.as_bytes())?;
    tree.finish()
        .with_context(|| format!("writing `{}`", output.display()))
}

/// The directories the script mounts on, the console, users for the rootless check.
fn add_base(tree: &mut Tree<impl Write>) -> Result<()> {
    for dir in [
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "root",
        "var/lib",
        "home/user",
    ] {
        tree.dir(dir)?;
    }
    // The kernel opens /dev/console for the init's stdio before anything
    // is mounted on /dev.
    tree.add("dev/console", 0o600, Kind::CharDev { major: 5, minor: 1 })?;
    tree.file("etc/passwd", 0o644, PASSWD.as_bytes())?;
    tree.file("etc/group", 0o644, GROUP.as_bytes())
}

/// `/bin/busybox` and a symlink for each of its applets but those whose
/// name is taken by a real program already.
fn add_busybox(tree: &mut Tree<impl Write>) -> Result<()> {
    let path = find_program("busybox")?;
    let elf = read(&path)?;
    if crate::build_init::has_interpreter(&elf) != Some(false) {
        bail!(
            "`{}` is not a static busybox (Debian: apt-get install busybox-static)",
            path.display()
        );
    }
    tree.file("bin/busybox", 0o755, &elf)?;
    let mut cmd = Command::new(&path);
    cmd.arg("--list-full");
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if !applet.is_empty() && !tree.has(applet) && applet != "bin/busybox" {
            tree.add(applet, 0o777, Kind::Symlink("/bin/busybox"))?;
        }
    }
    Ok(())
}

/// cradle-init as `/init` and next to the launcher (where the launcher
/// looks for it), the launcher without its debug info (a sixth of the
/// size) and its libraries, the probe, the image, readable by the
/// rootless check's user.
fn add_cradle(tree: &mut Tree<impl Write>, artifacts: &Artifacts, output: &Path) -> Result<()> {
    let init = read(&artifacts.init)?;
    tree.file("init", 0o755, &init)?;
    tree.file("usr/bin/cradle-init", 0o755, &init)?;
    let stripped = output.with_file_name("launcher.stripped");
    crate::util::run_cmd(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(&artifacts.launcher),
    )
    .context("stripping the launcher (strip is in binutils)")?;
    let launcher = read(&stripped);
    let _ = std::fs::remove_file(&stripped);
    tree.file("usr/bin/launcher", 0o755, &launcher?)?;
    add_libraries(tree, &artifacts.launcher)?;
    tree.file("probe", 0o755, &read(&artifacts.probe)?)?;
    tree.file(GUEST_IMAGE, 0o644, &read(&artifacts.image)?)
}

/// A dynamically linked program at `guest` and its libraries.
fn add_program(tree: &mut Tree<impl Write>, host: &Path, guest: &str) -> Result<()> {
    tree.file(guest, 0o755, &read(host)?)?;
    add_libraries(tree, host)
}

/// The shared libraries and loader of `program`, at the paths `ldd` names.
fn add_libraries(tree: &mut Tree<impl Write>, program: &Path) -> Result<()> {
    let mut cmd = Command::new("ldd");
    cmd.arg(program);
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for lib in libraries(&text).with_context(|| format!("{cmd:?}: {text}"))? {
        let guest = lib.trim_start_matches('/');
        if !tree.has(guest) {
            tree.file(guest, 0o755, &read(Path::new(&lib))?)?;
        }
    }
    Ok(())
}

/// The paths in `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)` and
/// the loader's `/lib64/ld-linux-x86-64.so.2 (0x…)`; the vDSO has none.
fn libraries(ldd: &str) -> Result<Vec<String>> {
    let mut paths = Vec::new();
    for line in ldd.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, rest)) if rest.trim() == "not found" => {
                bail!("library `{}` not found", name.trim())
            }
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            paths.push(path.to_string());
        }
    }
    Ok(paths)
}

/// The modules as /lib/modules/NAME.ko and their load order.
fn add_modules(tree: &mut Tree<impl Write>, kernel: &Kernel) -> Result<()> {
    let modules = modules::resolve(&kernel.modules, MODULES)
        .with_context(|| format!("resolving modules of kernel {}", kernel.release))?;
    let mut order = String::new();
    for m in &modules {
        tree.file(&format!("lib/modules/{}.ko", m.name), 0o644, &m.object)?;
        order += &format!("{}\n", m.name);
    }
    tree.file(GUEST_MODULE_LIST, 0o644, order.as_bytes())
}

/// `name` in PATH, or in /usr/sbin and /sbin, which a non-root PATH lacks.
fn find_program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` is not installed (see .ci/run's package list)"))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))
}

/// The archive, adding each parent directory once, before its entries.
struct Tree<W: Write> {
    writer: Writer<W>,
    names: BTreeSet<String>,
}

impl<W: Write> Tree<W> {
    fn new(out: W) -> Self {
        Self {
            writer: Writer::new(out),
            names: BTreeSet::new(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    fn dir(&mut self, name: &str) -> Result<()> {
        self.add(name, 0o755, Kind::Dir)
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result<()> {
        self.add(name, perm, Kind::File(data))
    }

    /// Adds `name` after its missing parents; a name already there is an
    /// error, but for directories.
    fn add(&mut self, name: &str, perm: u32, kind: Kind) -> Result<()> {
        let mut parent = String::new();
        for part in name
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if self.names.insert(parent.clone()) {
                self.writer.add(&parent, 0o755, Kind::Dir)?;
            }
        }
        let is_dir = matches!(kind, Kind::Dir);
        if !self.names.insert(name.to_string()) {
            if is_dir {
                return Ok(());
            }
            bail!("`{name}` is twice in the initramfs");
        }
        self.writer.add(name, perm, kind)?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.writer.finish()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_library_paths_from_ldd_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f9b)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f9b)\n";
        assert_eq!(
            libraries(text).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
        assert!(libraries("\tlibedit.so.2 => not found\n").is_err());
    }

    #[test]
    fn parents_come_first_and_once() {
        let mut tree = Tree::new(Vec::new());
        tree.file("usr/bin/a", 0o755, b"a").unwrap();
        tree.file("usr/bin/b", 0o755, b"b").unwrap();
        tree.dir("usr").unwrap();
        assert!(tree.file("usr/bin/a", 0o755, b"again").is_err());
        let names: Vec<&String> = tree.names.iter().collect();
        assert_eq!(names, ["usr", "usr/bin", "usr/bin/a", "usr/bin/b"]);
    }
}
