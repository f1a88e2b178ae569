//! `cargo xtask build-image [NAME [--containerfile]]`: the static init,
//! then the image defined in `images/NAME/image.toml` (default: `default`),
//! or with `--containerfile` in `images/NAME/Containerfile` (its `BASE`
//! the default image, built first), built by the `builder` binary into
//! `target/images/NAME.tar`; prints the image digest.
//!
//! The builder runs as a program rather than a library so that xtask, which
//! every chore compiles, does not carry the builder's HTTP and OCI crates.

use crate::util::{cargo, run_cmd, target_dir, workspace_root};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::{Command, Stdio};

pub fn run(args: &[String]) -> Result<PathBuf> {
    let (name, containerfile) = match args {
        [] => ("default", false),
        [name] => (name.as_str(), false),
        [name, flag] if flag == "--containerfile" => (name.as_str(), true),
        _ => bail!("usage: cargo xtask build-image [NAME [--containerfile]]"),
    };
    let dir = workspace_root().join("images").join(name);
    let definition = dir.join(if containerfile {
        "Containerfile"
    } else {
        "image.toml"
    });
    if !definition.is_file() {
        bail!("no image definition at `{}`", definition.display());
    }
    let init = crate::build_init::build()?;
    let builder = build_builder()?;
    let images = target_dir().join("images");
    let output = images.join(format!("{name}.tar"));
    let digest = if containerfile {
        // A Containerfile names no definition: its base, the default
        // image, is built first and given by path.
        let base = images.join("default.tar");
        let toml = workspace_root().join("images/default/image.toml");
        build(&builder, &[toml.as_os_str()], &init, &base)?;
        let arg = format!("BASE=oci-archive:{}", base.display());
        let tag = format!("localhost/cradle/{name}:latest");
        let args = [
            "-t".as_ref(),
            tag.as_ref(),
            "-f".as_ref(),
            definition.as_os_str(),
            "--build-arg".as_ref(),
            arg.as_ref(),
            dir.as_os_str(),
        ];
        build(&builder, &args, &init, &output)?
    } else {
        build(&builder, &[definition.as_os_str()], &init, &output)?
    };
    println!("{digest}  {}", output.display());
    Ok(output)
}

/// Builds the `builder` binary (dev profile: its hot crates are optimised
/// there too, and it shares its build with `cargo test`) and returns it.
pub fn build_builder() -> Result<PathBuf> {
    run_cmd(cargo().args(["build", "--package", "builder", "--bin", "builder"]))?;
    Ok(target_dir().join("debug").join("builder"))
}

/// Runs `builder build ARGS…`; returns the digest it prints.
fn build(
    builder: &PathBuf,
    args: &[&std::ffi::OsStr],
    init: &PathBuf,
    output: &PathBuf,
) -> Result<String> {
    let mut cmd = Command::new(builder);
    cmd.arg("build")
        .args(args)
        .arg("--output")
        .arg(output)
        .arg("--init")
        .arg(init)
        .stderr(Stdio::inherit());
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "building `{}` failed: {}",
            args[args.len() - 1].display(),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
