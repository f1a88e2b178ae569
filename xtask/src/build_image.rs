//! `cargo xtask build-image`.

use anyhow::{Result, bail};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("`build-image` is not implemented yet")
}
