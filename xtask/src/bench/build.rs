//! `cargo xtask bench build`: our pack (sorted walk, tar, gzip and two
//! sha256s: a reproducible layer) of the unpacked benchmark rootfs against
//! `tar czf` (and `tar cf - | pigz`) of the same tree, in the same run, as
//! ratios; then a whole `builder build` from the benchmark tarball; then
//! image builds against `buildah bud` ([`super::buildah`]).
//! `--only pack` or `--only buildah` runs one part.

use super::unpack::{bench_dir, race, release_builder, report, rootfs_tarball, rounds, which};
use crate::util::run_cmd;
use anyhow::{Context, Result};
use std::process::Command;
use std::time::Instant;

pub fn run(args: &[String]) -> Result<()> {
    let (only, args) = match args {
        [flag, part, rest @ ..] if flag == "--only" => (Some(part.as_str()), rest),
        _ => (None, args),
    };
    let rounds = rounds(args)?;
    match only {
        None => {
            pack(rounds)?;
            super::buildah::run(rounds)
        }
        Some("pack") => pack(rounds),
        Some("buildah") => super::buildah::run(rounds),
        Some(other) => anyhow::bail!("--only takes `pack` or `buildah`, not `{other}`"),
    }
}

fn pack(rounds: usize) -> Result<()> {
    let dir = bench_dir()?;
    let tarball = rootfs_tarball(&dir)?;
    let builder = release_builder()?;
    let tree = dir.join("tree");
    if !tree.exists() {
        run_cmd(
            Command::new(&builder)
                .arg("unpack")
                .arg(&tarball)
                .arg(&tree),
        )?;
    }
    let out = dir.join("packed");
    let mut contenders: Vec<(&str, Command)> = Vec::new();
    let mut ours = Command::new(&builder);
    ours.arg("pack")
        .arg(&tree)
        .arg("-o")
        .arg(out.join("layer.tar.gz"));
    ours.stdout(std::process::Stdio::null());
    contenders.push(("builder pack", ours));
    let mut tar = Command::new("tar");
    tar.arg("czf")
        .arg(out.join("tree.tar.gz"))
        .arg("-C")
        .arg(&tree)
        .arg(".");
    contenders.push(("tar czf", tar));
    if which("pigz") {
        let mut pigz = Command::new("sh");
        pigz.arg("-c")
            .arg(r#"tar cf - -C "$1" . | pigz -6 > "$2""#)
            .arg("sh")
            .arg(&tree)
            .arg(out.join("tree.tar.gz"));
        contenders.push(("tar cf - | pigz", pigz));
    }
    println!("packing {} ({rounds} rounds, median):", tree.display());
    let times = race(&mut contenders, &out, rounds)?;
    report(&times);
    whole_build(&builder, &dir, &tarball)
}

/// `builder build` of a definition naming the benchmark tarball: verify,
/// unpack, layout, two layers, archive.
fn whole_build(
    builder: &std::path::Path,
    dir: &std::path::Path,
    tarball: &std::path::Path,
) -> Result<()> {
    let sha = Command::new("sha256sum")
        .arg(tarball)
        .output()
        .context("running sha256sum")?;
    let sha = String::from_utf8_lossy(&sha.stdout);
    let sha = sha.split_whitespace().next().unwrap_or_default();
    let definition = dir.join("image.toml");
    std::fs::write(
        &definition,
        format!(
            "tag = \"localhost/cradle/bench:latest\"\n[rootfs]\nsource = \"rootfs.tar.gz\"\nsha256 = \"{sha}\"\n[config]\ncmd = [\"/usr/bin/env\"]\n"
        ),
    )?;
    // The builder refuses anything but a static executable as the init.
    let init = crate::build_init::build()?;
    let output = dir.join("bench-image.tar");
    run_cmd(&mut Command::new("sync"))?;
    let start = Instant::now();
    let status = Command::new(builder)
        .arg("build")
        .arg(&definition)
        .arg("-o")
        .arg(&output)
        .arg("--init")
        .arg(&init)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "builder build failed: {status}");
    println!(
        "  builder build (verify, unpack, layout, layers, archive) {:>7.2} s",
        start.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&output);
    Ok(())
}
