//! `cargo xtask build-image`.

use anyhow::{Result, bail};
use std::path::PathBuf;

pub fn run(_args: &[String]) -> Result<PathBuf> {
    bail!("`build-image` is not implemented yet")
}
