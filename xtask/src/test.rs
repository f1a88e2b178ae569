//! `cargo xtask test`.

use anyhow::{Result, bail};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("`test` is not implemented yet")
}
