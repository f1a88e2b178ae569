//! `cargo xtask build-init`.

use anyhow::{Result, bail};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("`build-init` is not implemented yet")
}
