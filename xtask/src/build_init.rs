//! `cargo xtask build-init`: the static init (musl, size-tuned `small`
//! profile), checked to have no program interpreter.

use anyhow::{Result, bail};
use std::path::PathBuf;

pub fn run(_args: &[String]) -> Result<PathBuf> {
    build()
}

/// Builds the static init and returns its path. Other tasks (build-image,
/// bench, test) call this.
pub fn build() -> Result<PathBuf> {
    bail!("`build-init` is not implemented yet")
}
