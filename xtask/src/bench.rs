//! `cargo xtask bench …`: measurements against the real alternatives, run in
//! the same invocation and printed as ratios.

use anyhow::{Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some(what) => bail!("benchmark `{what}` is not implemented yet"),
        None => bail!("usage: cargo xtask bench init|unpack|build|run"),
    }
}
