//! `cargo xtask build-image [NAME]`: the static init, then the image
//! defined in `images/NAME/image.toml` (default: `default`), built by the
//! `builder` binary into `target/images/NAME.tar`; prints the image digest.
//!
//! The builder runs as a program rather than a library so that xtask, which
//! every chore compiles, does not carry the builder's HTTP and OCI crates.

use crate::util::{cargo, run_cmd, target_dir, workspace_root};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub fn run(args: &[String]) -> Result<PathBuf> {
    let name = match args {
        [] => "default",
        [name] => name.as_str(),
        _ => bail!("usage: cargo xtask build-image [NAME]"),
    };
    let definition = workspace_root()
        .join("images")
        .join(name)
        .join("image.toml");
    if !definition.is_file() {
        bail!("no image definition at `{}`", definition.display());
    }
    let init = crate::build_init::build()?;
    let builder = build_builder()?;
    let output = target_dir().join("images").join(format!("{name}.tar"));
    let digest = build(&builder, &definition, &init, &output)?;
    println!("{digest}  {}", output.display());
    Ok(output)
}

/// Builds the `builder` binary (dev profile: its hot crates are optimised
/// there too, and it shares its build with `cargo test`) and returns it.
pub fn build_builder() -> Result<PathBuf> {
    run_cmd(cargo().args(["build", "--package", "builder", "--bin", "builder"]))?;
    Ok(target_dir().join("debug").join("builder"))
}

/// Runs `builder build`; returns the digest it prints.
fn build(
    builder: &PathBuf,
    definition: &PathBuf,
    init: &PathBuf,
    output: &PathBuf,
) -> Result<String> {
    let mut cmd = Command::new(builder);
    cmd.arg("build")
        .arg(definition)
        .arg("--output")
        .arg(output)
        .arg("--init")
        .arg(init)
        .stderr(Stdio::inherit());
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("building `{}` failed: {}", definition.display(), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
