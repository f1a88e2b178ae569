//! `cargo xtask test [ARGS…]`: builds every artifact the tests need (the
//! static init, the probe, the default image, the launcher), then runs
//! `cargo test --workspace ARGS…`, failing when any step fails.

use crate::util;
use anyhow::{Context, Result};

pub fn run(args: &[String]) -> Result<()> {
    let init = crate::build_init::build().context("building the static init")?;
    let probe = crate::build_probe::run(&[]).context("building the probe")?;
    let image = crate::build_image::run(&[]).context("building the default image")?;
    util::run_cmd(util::cargo().args(["build", "--package", "launcher"]))
        .context("building the launcher")?;
    eprintln!(
        "xtask: testing with {}, {}, {}",
        init.display(),
        probe.display(),
        image.display()
    );
    util::run_cmd(util::cargo().args(["test", "--workspace"]).args(args))
}
