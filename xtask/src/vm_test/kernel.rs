//! The guest's kernel: Debian's cloud kernel package, the one
//! `linux-image-cloud-amd64` currently depends on, downloaded with
//! `apt-get download` and unpacked with `dpkg-deb -x` under
//! `<target>/vm/`, where both stay for the next run. Nothing is installed.

use crate::util::run_cmd;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metapackage that names the current cloud kernel.
const META: &str = "linux-image-cloud-amd64";

/// An unpacked kernel package.
pub struct Kernel {
    /// The kernel release, as in `/lib/modules/RELEASE` (`6.1.0-57-cloud-amd64`).
    pub release: String,
    pub vmlinuz: PathBuf,
    /// `lib/modules/RELEASE` of the package.
    pub modules: PathBuf,
}

/// The package's kernel, unpacked into `vm_dir/kernel-RELEASE/` unless it is
/// there from an earlier run.
pub fn fetch(vm_dir: &Path) -> Result<Kernel> {
    let package = current_package()?;
    let release = package
        .strip_prefix("linux-image-")
        .with_context(|| format!("`{META}` depends on `{package}`, not a linux-image-* package"))?
        .to_string();
    let dir = vm_dir.join(format!("kernel-{release}"));
    if !dir.join(".complete").exists() {
        let deb = download(vm_dir, &package)?;
        unpack(&deb, &dir)?;
    }
    let kernel = Kernel {
        vmlinuz: dir.join("boot").join(format!("vmlinuz-{release}")),
        modules: modules_dir(&dir, &release)?,
        release,
    };
    if !kernel.vmlinuz.is_file() {
        bail!("the kernel package has no `{}`", kernel.vmlinuz.display());
    }
    Ok(kernel)
}

/// `linux-image-6.1.0-57-cloud-amd64` from `apt-cache depends linux-image-cloud-amd64`.
fn current_package() -> Result<String> {
    let mut cmd = Command::new("apt-cache");
    cmd.args(["depends", META]);
    let out = cmd.output().with_context(|| {
        format!("starting {cmd:?} (the VM's kernel comes from Debian's archive)")
    })?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    depends_on(&text).with_context(|| format!("no linux-image dependency in {cmd:?}: {text}"))
}

/// The first `Depends: linux-image-…` of `apt-cache depends` output.
fn depends_on(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
}

/// `vm_dir/PACKAGE_*.deb`, downloaded when none is there.
fn download(vm_dir: &Path, package: &str) -> Result<PathBuf> {
    if let Some(deb) = find_deb(vm_dir, package)? {
        return Ok(deb);
    }
    std::fs::create_dir_all(vm_dir).with_context(|| format!("creating `{}`", vm_dir.display()))?;
    eprintln!("xtask: downloading {package}");
    run_cmd(
        Command::new("apt-get")
            .args(["download", "-q", package])
            .current_dir(vm_dir),
    )?;
    find_deb(vm_dir, package)?.with_context(|| {
        format!(
            "`apt-get download {package}` left no .deb in `{}`",
            vm_dir.display()
        )
    })
}

fn find_deb(vm_dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(vm_dir) else {
        return Ok(None);
    };
    let prefix = format!("{package}_");
    for entry in entries {
        let entry = entry.with_context(|| format!("listing `{}`", vm_dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}

/// `dpkg-deb -x` into a temporary directory renamed to `dir` when complete,
/// so that an interrupted run never leaves half a kernel to reuse.
fn unpack(deb: &Path, dir: &Path) -> Result<()> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.with_file_name(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing `{}`", tmp.display()))?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing `{}`", dir.display()))?;
    }
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp))?;
    std::fs::write(tmp.join(".complete"), b"")
        .with_context(|| format!("marking `{}` complete", tmp.display()))?;
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("renaming `{}` to `{}`", tmp.display(), dir.display()))
}

/// `lib/modules/RELEASE`, or `usr/lib/modules/RELEASE` in packages for
/// merged-/usr systems.
fn modules_dir(dir: &Path, release: &str) -> Result<PathBuf> {
    ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|base| dir.join(base).join(release))
        .find(|path| path.is_dir())
        .with_context(|| format!("no lib/modules/{release} in `{}`", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_package_the_metapackage_depends_on() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            depends_on(text).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        assert_eq!(depends_on("linux-image-cloud-amd64\n"), None);
    }
}
