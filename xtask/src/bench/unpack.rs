//! `cargo xtask bench unpack`: our unpack of a ~150 MB rootfs `.tar.gz`
//! against GNU `tar xzf` and `pigz -dc | tar x`, on the same tarball in the
//! same run, as ratios. Also holds what `bench build` shares: the tarball,
//! made deterministically from this machine's `/usr`, and the release
//! `builder`.

use crate::util::{cargo, run_cmd, target_dir};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Host directories that make the tarball: binaries, headers, scripts — a
/// mix of large and small files like a distribution's rootfs.
const SOURCES: [&str; 3] = ["usr/bin", "usr/include", "usr/libexec"];

pub fn run(args: &[String]) -> Result<()> {
    let rounds = rounds(args)?;
    let dir = bench_dir()?;
    let tarball = rootfs_tarball(&dir)?;
    let builder = release_builder()?;
    let size = std::fs::metadata(&tarball)?.len();
    println!(
        "unpacking {} ({} MB), {rounds} rounds, median:",
        tarball.display(),
        size >> 20
    );
    // On disk, and in memory: a VM's throttled disk can make every tool
    // wait for it alike, which hides the CPU cost that tmpfs shows.
    let mut places = vec![("on disk", dir.join("unpacked"))];
    if is_tmpfs(Path::new("/dev/shm")) {
        places.push(("in tmpfs", PathBuf::from("/dev/shm/cradle-bench-unpack")));
    }
    for (place, out) in places {
        println!(" {place} ({}):", out.display());
        let mut contenders = contenders(&builder, &tarball, &out);
        let times = race(&mut contenders, &out, rounds)?;
        report(&times);
    }
    Ok(())
}

fn contenders<'a>(builder: &Path, tarball: &Path, out: &Path) -> Vec<(&'a str, Command)> {
    let mut contenders: Vec<(&str, Command)> = Vec::new();
    let mut ours = Command::new(builder);
    ours.arg("unpack").arg(tarball).arg(out);
    contenders.push(("builder unpack", ours));
    let mut tar = Command::new("tar");
    tar.arg("xzf").arg(tarball).arg("-C").arg(out);
    contenders.push(("tar xzf", tar));
    if which("pigz") {
        let mut pigz = Command::new("sh");
        pigz.arg("-c")
            .arg(r#"pigz -dc "$1" | tar x -C "$2""#)
            .arg("sh")
            .arg(tarball)
            .arg(out);
        contenders.push(("pigz -dc | tar x", pigz));
    }
    contenders
}

/// Whether `dir` is a tmpfs mount (from /proc/mounts).
fn is_tmpfs(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next(), fields.next(), fields.next());
            point == dir.to_str() && kind == Some("tmpfs")
        })
    })
}

/// `--rounds N` (default 3).
pub fn rounds(args: &[String]) -> Result<usize> {
    match args {
        [] => Ok(3),
        [flag, n] if flag == "--rounds" => n.parse().context("--rounds takes a number"),
        _ => bail!("usage: cargo xtask bench unpack|build [--rounds N]"),
    }
}

pub fn bench_dir() -> Result<PathBuf> {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs every contender `rounds` times, each into a fresh `out`, after a
/// `sync` so that one's dirty pages are not written back on the next one's
/// clock; returns the median times, in the order given.
pub fn race(
    contenders: &mut [(&str, Command)],
    out: &Path,
    rounds: usize,
) -> Result<Vec<(String, Duration)>> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); contenders.len()];
    for _ in 0..rounds {
        for (i, (name, cmd)) in contenders.iter_mut().enumerate() {
            fresh_dir(out)?;
            run_cmd(&mut Command::new("sync"))?;
            let start = Instant::now();
            let status = cmd.status().with_context(|| format!("starting {name}"))?;
            let took = start.elapsed();
            if !status.success() {
                bail!("{name} failed: {status}");
            }
            times[i].push(took);
        }
    }
    let _ = std::fs::remove_dir_all(out);
    Ok(contenders
        .iter()
        .zip(times)
        .map(|((name, _), mut t)| {
            t.sort();
            (name.to_string(), t[t.len() / 2])
        })
        .collect())
}

/// Prints each time and its ratio to the first (ours): above 1 means ours
/// is faster.
pub fn report(times: &[(String, Duration)]) {
    let ours = times[0].1.as_secs_f64();
    for (name, time) in times {
        let ratio = time.as_secs_f64() / ours;
        println!(
            "  {name:<20} {:>7.2} s   {ratio:>5.2}x ours",
            time.as_secs_f64()
        );
    }
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing `{}`", dir.display()))?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

pub fn which(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

/// The benchmark tarball, made once: GNU tar with sorted names, mtime 0 and
/// numeric root owners, gzip -6 without name or time (pigz when present: the
/// same stream whatever the number of threads).
pub fn rootfs_tarball(dir: &Path) -> Result<PathBuf> {
    let tarball = dir.join("rootfs.tar.gz");
    if tarball.exists() {
        return Ok(tarball);
    }
    let partial = dir.join("rootfs.tar.gz.partial");
    let gzip = if which("pigz") {
        "pigz -6 -n"
    } else {
        "gzip -6 -n"
    };
    let script = format!(
        "tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - -C / {} 2>/dev/null | {gzip} > \"$1\"",
        SOURCES.join(" ")
    );
    eprintln!(
        "xtask: making the benchmark tarball from /{{{}}}",
        SOURCES.join(",")
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .arg(&partial)
        .status()?;
    // GNU tar exits 1 when files changed while it read them; the tarball is still whole.
    if status.code().is_none_or(|c| c > 1) {
        bail!("making the benchmark tarball failed: {status}");
    }
    std::fs::rename(&partial, &tarball)?;
    Ok(tarball)
}

/// The `builder` binary, release profile, without the HTTP client (the
/// benchmarks read local files; reqwest would only lengthen the build).
pub fn release_builder() -> Result<PathBuf> {
    run_cmd(cargo().args([
        "build",
        "--release",
        "--package",
        "builder",
        "--bin",
        "builder",
        "--no-default-features",
        "--features",
        "xz,zstd",
    ]))?;
    Ok(target_dir().join("release").join("builder"))
}
