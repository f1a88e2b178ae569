//! `cargo xtask build-probe`: the static test probe (tests/probe), copied to
//! `<target>/static/probe` where the end-to-end tests look for it.

use anyhow::{Context, Result};
use std::path::PathBuf;

pub fn run(_args: &[String]) -> Result<PathBuf> {
    let built = crate::util::build_static("probe", "probe", "small")?;
    let dir = crate::util::target_dir().join("static");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating `{}`", dir.display()))?;
    let dest = dir.join("probe");
    // Copy to a temporary name and rename, so a running test never sees a
    // half-written probe.
    let tmp = dir.join(".probe.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("copying `{}` to `{}`", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("renaming to `{}`", dest.display()))?;
    eprintln!("xtask: probe at {}", dest.display());
    Ok(dest)
}
