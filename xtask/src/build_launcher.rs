//! `cargo xtask build-launcher`: the launcher as one static executable (musl,
//! release profile), checked to have no program interpreter, and copied to
//! `<target>/static/launcher`, beside the static init it finds there.
//!
//! The build to install, as runc ships a static runc: it needs no shared
//! library on the host, and it starts in a fraction of the time (the glibc
//! build's loader maps four libraries and resolves their symbols in each
//! process, 1 to 2 ms here, more than the rest of a container's start-up
//! in user space). `cargo build -p launcher` is the same code against glibc.

use crate::{build_init, util};
use anyhow::{Context, Result};
use std::path::PathBuf;

pub fn run(_args: &[String]) -> Result<PathBuf> {
    let path = build()?;
    let size = path
        .metadata()
        .with_context(|| format!("reading `{}`", path.display()))?
        .len();
    println!("{} ({size} bytes, static)", path.display());
    Ok(path)
}

/// Builds the static launcher (and the static init it runs) and returns
/// the launcher's path.
pub fn build() -> Result<PathBuf> {
    build_init::build()?;
    let built = util::build_static("launcher", "launcher", "release")?;
    build_init::check_static(&built)?;
    let dir = util::target_dir().join("static");
    let stable = dir.join("launcher");
    // As the init: a temporary name, then rename, so a running one is
    // never overwritten in place.
    let tmp = dir.join(".launcher.tmp");
    std::fs::copy(&built, &tmp)
        .with_context(|| format!("copying `{}` to `{}`", built.display(), tmp.display()))?;
    std::fs::rename(&tmp, &stable)
        .with_context(|| format!("renaming `{}` to `{}`", tmp.display(), stable.display()))?;
    Ok(stable)
}
