//! `cargo xtask build-probe`.

use anyhow::{Result, bail};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("`build-probe` is not implemented yet")
}
