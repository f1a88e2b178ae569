//! `cargo xtask build-probe`.

use anyhow::{Result, bail};
use std::path::PathBuf;

pub fn run(_args: &[String]) -> Result<PathBuf> {
    bail!("`build-probe` is not implemented yet")
}
