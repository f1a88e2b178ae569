//! `cargo xtask bench …`: measurements against the real alternatives, run in
//! the same invocation and printed as ratios.

mod build;
mod buildah;
mod init;
mod run;
mod supervise;
mod unpack;

use anyhow::{Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("unpack") => unpack::run(rest),
        Some("build") => build::run(rest),
        Some("init") => init::run(rest),
        Some("run") => run::run(rest),
        Some("supervise") => supervise::run(rest),
        Some(what) => bail!("benchmark `{what}` is not implemented yet"),
        None => bail!("usage: cargo xtask bench init|unpack|build|run|supervise"),
    }
}
